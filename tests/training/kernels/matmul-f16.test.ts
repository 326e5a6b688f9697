// The f16-operand matrix product (training/kernels/matmul.ts, training/backend/webgpu/matmul-f16.ts)
// on the webgpu backend: the scalar inner product (what runs on Mesa llvmpipe, CI's adapter)
// against tf.matMul in float32, entry by entry within `f16ErrorBound` (derived there from K, the
// entry's sum of |a||b| and the largest operands), for shapes that divide none of the tile sizes
// (M, N, K among 1, 17, 130, 257; the tiles are 128 x 64 x 32), every transpose combination, and a
// batched product; the epilogue (a bias and an addend added in the kernel) against the same
// reference plus the adds; an inner size K = 0 (zeros, plus the adds, as the reference on cpu). Also:
// operands are really rounded to f16 (a product that f32 would not round),
// values beyond f16's range give infinity (what dynamic loss scaling detects), and the
// subgroup-matrix WGSL is generated for the H200's configurations (compiled only where the adapter
// has them: scripts/check-fp16.ts on the GPU machine).
//
// Without a WebGPU adapter these skip (fail with MLM_REQUIRE_WEBGPU=1): tests/training/webgpu-gate.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { NamedAttrMap, Tensor } from '@tensorflow/tfjs';
import type { Tf } from '../../../training/backend.ts';
import { activeWebGpuFeatures } from '../../../training/backend/webgpu.ts';
import { matmulShader } from '../../../training/backend/webgpu/matmul-tiling.ts';
import { availableVariants, subgroupMatrixInner } from '../../../training/backend/webgpu/matmul-f16.ts';
import { F32_UNIT, f16ErrorBound, MATMUL_F16_KERNEL, matMulF16, matMulReference, type MatMulF16Attrs } from '../../../training/kernels/matmul.ts';
import { Rng } from '../../../common/rng.ts';
import { useWebGpuForFile, webgpuSkip } from '../webgpu-gate.ts';

const skip = await webgpuSkip('f16 matmul');
let tf: Tf;
useWebGpuForFile(skip, (t) => (tf = t));
const webgpu = async (): Promise<Tf> => tf;

function randomTensor(tf: Tf, shape: number[], rng: Rng, scale: number): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = (rng.next() * 2 - 1) * scale;
  return tf.tensor(data, shape, 'float32');
}

function f16MatMul(tf: Tf, a: Tensor, b: Tensor, attrs: MatMulF16Attrs): Tensor {
  return tf.engine().runKernel(MATMUL_F16_KERNEL, { a, b }, attrs as unknown as NamedAttrMap) as Tensor;
}

/** Largest |got - ref| / bound over the entries (<= 1 passes), and the largest |got - ref|. */
async function againstReference(tf: Tf, a: Tensor, b: Tensor, ta: boolean, tb: boolean, K: number): Promise<{ ratio: number; maxErr: number }> {
  const [got, ref, absProd, maxes] = tf.tidy(() => [
    f16MatMul(tf, a, b, { transposeA: ta, transposeB: tb, variant: 'scalar' }),
    tf.matMul(a, b, ta, tb),
    tf.matMul(tf.abs(a), tf.abs(b), ta, tb),
    tf.stack([tf.max(tf.abs(a)), tf.max(tf.abs(b))]),
  ]);
  const [g, r, p, [maxA, maxB]] = await Promise.all([got.data(), ref.data(), absProd.data(), maxes.data()]);
  tf.dispose([got, ref, absProd, maxes]);
  assert.equal(g.length, r.length);
  let ratio = 0;
  let maxErr = 0;
  for (let i = 0; i < g.length; i++) {
    const err = Math.abs(g[i] - r[i]);
    assert.ok(Number.isFinite(g[i]), `entry ${i} is ${g[i]}`);
    maxErr = Math.max(maxErr, err);
    ratio = Math.max(ratio, err / f16ErrorBound(K, p[i], maxA, maxB));
  }
  return { ratio, maxErr };
}

const SIZES = [1, 17, 130, 257];

test('scalar f16 matmul equals tf.matMul within the f16 bound: shapes off the tiles, every transpose', { skip }, async (t) => {
  const tf = await webgpu();
  assert.ok(availableVariants(activeWebGpuFeatures(tf)!).includes('scalar'), 'the adapter has shader-f16');
  const rng = new Rng(7);
  const before = tf.memory().numTensors;
  let worst = 0;
  // Each size in each role (M, N, K) against the others, both magnitudes of operands.
  const shapes: [number, number, number][] = [];
  for (const M of SIZES) for (const N of SIZES) shapes.push([M, N, SIZES[(SIZES.indexOf(M) + SIZES.indexOf(N)) % 4]]);
  for (const [M, N, K] of shapes) {
    for (const [ta, tb] of [[false, false], [false, true], [true, false], [true, true]] as const) {
      const scale = (M + N + K) % 2 === 0 ? 1 : 30;
      const a = randomTensor(tf, ta ? [K, M] : [M, K], rng, scale);
      const b = randomTensor(tf, tb ? [N, K] : [K, N], rng, 0.05);
      const { ratio } = await againstReference(tf, a, b, ta, tb, K);
      tf.dispose([a, b]);
      assert.ok(ratio <= 1, `M ${M} N ${N} K ${K} transposeA ${ta} transposeB ${tb}: error ${ratio.toFixed(2)}x the bound`);
      worst = Math.max(worst, ratio);
    }
  }
  t.diagnostic(`worst error: ${worst.toFixed(3)} of the bound over ${shapes.length * 4} products`);
  assert.equal(tf.memory().numTensors, before, 'no tensor left behind');
});

test('batched f16 matmul ([B, M, K] x [B, N, K]^T, as attention scores) equals tf.matMul within the bound', { skip }, async () => {
  const tf = await webgpu();
  const rng = new Rng(8);
  for (const [ta, tb] of [[false, true], [false, false], [true, false]] as const) {
    const [B, M, N, K] = [3, 33, 17, 40];
    const a = randomTensor(tf, ta ? [B, K, M] : [B, M, K], rng, 2);
    const b = randomTensor(tf, tb ? [B, N, K] : [B, K, N], rng, 2);
    const { ratio } = await againstReference(tf, a, b, ta, tb, K);
    tf.dispose([a, b]);
    assert.ok(ratio <= 1, `transposeA ${ta} transposeB ${tb}: error ${ratio.toFixed(2)}x the bound`);
  }
});

test('the epilogue: bias and addend added in the product\'s own pass, every transpose, shapes off the tiles, batched', { skip }, async () => {
  const tf = await webgpu();
  const rng = new Rng(9);
  const before = tf.memory().numTensors;
  const EXTRA = 50;
  // [M, N, K, batch]: off the 128 x 64 x 32 tiles, one whole block (edge stores and the
  // block-straight path of the subgroup-matrix store), and a batch.
  for (const [M, N, K, batch] of [[130, 17, 40, 1], [128, 64, 64, 1], [1, 257, 3, 1], [33, 70, 24, 3]]) {
    for (const [ta, tb] of [[false, false], [false, true], [true, false], [true, true]] as const) {
      for (const extras of ['bias', 'addend', 'both'] as const) {
        const lead = batch > 1 ? [batch] : [];
        const a = randomTensor(tf, [...lead, ...(ta ? [K, M] : [M, K])], rng, 1);
        const b = randomTensor(tf, [...lead, ...(tb ? [N, K] : [K, N])], rng, 1);
        // Large enough against the product (~sqrt(K)) that a missing or misplaced add shows.
        const bias = extras === 'addend' ? undefined : randomTensor(tf, [N], rng, EXTRA);
        const addend = extras === 'bias' ? undefined : randomTensor(tf, [...lead, M, N], rng, EXTRA);
        const attrs: MatMulF16Attrs = { transposeA: ta, transposeB: tb, variant: 'scalar' };
        const [got, ref, absProd, maxes] = tf.tidy(() => [
          matMulF16(tf, a, b, attrs, { bias, addend }),
          matMulReference(tf, a, b, ta, tb, { bias, addend }),
          tf.matMul(tf.abs(a), tf.abs(b), ta, tb),
          tf.stack([tf.max(tf.abs(a)), tf.max(tf.abs(b))]),
        ]);
        assert.deepEqual(got.shape, ref.shape);
        const [g, r, p, [maxA, maxB]] = await Promise.all([got.data(), ref.data(), absProd.data(), maxes.data()]);
        for (let i = 0; i < g.length; i++) {
          // The f16 bound of the product, plus one f32 rounding per add on each side (each at most
          // u32 times |product| + |bias| + |addend|).
          const bound = f16ErrorBound(K, p[i], maxA, maxB) + 4 * F32_UNIT * (p[i] + 2 * EXTRA);
          assert.ok(Math.abs(g[i] - r[i]) <= bound, `[${M}, ${N}, ${K}] x ${batch}, ${ta}/${tb}, ${extras}: entry ${i} is ${g[i]}, reference ${r[i]}`);
        }
        tf.dispose([a, b, got, ref, absProd, maxes, ...(bias ? [bias] : []), ...(addend ? [addend] : [])]);
      }
    }
  }
  assert.equal(tf.memory().numTensors, before, 'no tensor left behind');
});

test('an epilogue input of the wrong shape is an error naming the shapes', { skip }, async () => {
  const tf = await webgpu();
  const [a, b, bias, addend] = [tf.zeros([3, 4]), tf.zeros([4, 5]), tf.zeros([4]), tf.zeros([5, 3])];
  const attrs: MatMulF16Attrs = { transposeA: false, transposeB: false, variant: 'scalar' };
  assert.throws(() => matMulF16(tf, a, b, attrs, { bias }), /the bias must be \[5\], got \[4\]/);
  assert.throws(() => matMulF16(tf, a, b, attrs, { addend }), /the addend must be the result's shape \[3,5\], got \[5,3\]/);
  tf.dispose([a, b, bias, addend]);
});

test('the operands are rounded to f16, and values beyond its range give infinity', { skip }, async () => {
  const tf = await webgpu();
  const attrs: MatMulF16Attrs = { transposeA: false, transposeB: false, variant: 'scalar' };
  // 1 + 2^-12 is an f32 but not an f16 (which rounds it to 1): f32 would give 1.000244.
  const a = tf.tensor2d([[1 + 2 ** -12, 3]], [1, 2]);
  const b = tf.tensor2d([[1], [0]], [2, 1]);
  const rounded = f16MatMul(tf, a, b, attrs);
  assert.deepEqual(Array.from(await rounded.data()), [1]);
  // 70000 overflows f16 (max 65504): the product is infinite, with its sign.
  const big = tf.tensor2d([[70000, 1], [-70000, 1]], [2, 2]);
  const ones = tf.tensor2d([[1], [0]], [2, 1]);
  const inf = f16MatMul(tf, big, ones, attrs);
  assert.deepEqual(Array.from(await inf.data()), [Infinity, -Infinity]);
  // 65504 itself is f16's largest finite value.
  const edge = tf.tensor2d([[65504]], [1, 1]);
  const one = tf.tensor2d([[1]], [1, 1]);
  const fin = f16MatMul(tf, edge, one, attrs);
  assert.deepEqual(Array.from(await fin.data()), [65504]);
  tf.dispose([a, b, rounded, big, ones, inf, edge, one, fin]);
});

test('an inner size K = 0 gives zeros, plus the bias and the addend, as the reference does', { skip }, async () => {
  const tf = await webgpu();
  const rng = new Rng(11);
  const before = tf.memory().numTensors;
  for (const [M, N, batch] of [[5, 3, 1], [130, 70, 2]]) {
    for (const [ta, tb] of [[false, false], [false, true], [true, false], [true, true]] as const) {
      for (const extras of ['none', 'bias', 'addend', 'both'] as const) {
        const lead = batch > 1 ? [batch] : [];
        const a = tf.zeros([...lead, ...(ta ? [0, M] : [M, 0])]);
        const b = tf.zeros([...lead, ...(tb ? [N, 0] : [0, N])]);
        const bias = extras === 'bias' || extras === 'both' ? randomTensor(tf, [N], rng, 50) : undefined;
        const addend = extras === 'addend' || extras === 'both' ? randomTensor(tf, [...lead, M, N], rng, 50) : undefined;
        // A pooled buffer holding an earlier tensor's values must not show through.
        tf.dispose(tf.tidy(() => tf.add(tf.ones([...lead, M, N]), 7)));
        const attrs: MatMulF16Attrs = { transposeA: ta, transposeB: tb, variant: 'scalar' };
        const got = matMulF16(tf, a, b, attrs, { bias, addend });
        assert.deepEqual(got.shape, [...lead, M, N]);
        // The reference's values (tf.matMul's zeros, then the adds) worked out here: TF.js's own
        // webgpu matMul binds the empty operand, which WebGPU refuses, voiding the command buffer.
        const g = Array.from(await got.data());
        const [bv, av] = [bias ? await bias.data() : null, addend ? await addend.data() : null];
        const expected = g.map((_, i) => Math.fround((bv?.[i % N] ?? 0) + (av?.[i] ?? 0)));
        assert.deepEqual(g, expected, `[${M}, ${N}, 0] x ${batch}, ${ta}/${tb}, ${extras}`);
        tf.dispose([a, b, got, ...(bias ? [bias] : []), ...(addend ? [addend] : [])]);
      }
    }
  }
  assert.equal(tf.memory().numTensors, before, 'no tensor left behind');
});

test('a shape mismatch is an error naming both shapes', { skip }, async () => {
  const tf = await webgpu();
  const a = tf.zeros([3, 4]);
  const b = tf.zeros([5, 2]);
  assert.throws(() => f16MatMul(tf, a, b, { transposeA: false, transposeB: false, variant: 'scalar' }), /inner sizes 4 and 5 differ/);
  tf.dispose([a, b]);
});

test('subgroup-matrix WGSL for the H200 configurations: current builtins, tiles of the configuration', () => {
  for (const cfg of [{ M: 16, N: 16, K: 16 }, { M: 16, N: 8, K: 16 }, { M: 16, N: 8, K: 8 }]) {
    const inner = subgroupMatrixInner({ componentType: 'f16', resultComponentType: 'f32', ...cfg }, 32);
    const code = matmulShader({ transposeA: false, transposeB: true, inner });
    assert.match(code, /enable chromium_experimental_subgroup_matrix;/);
    assert.match(code, new RegExp(`subgroupMatrixLoad<subgroup_matrix_left<f16, ${cfg.K}, ${cfg.M}>, row_major>`));
    assert.match(code, new RegExp(`var acc0_0 = subgroup_matrix_result<f32, ${cfg.N}, ${cfg.M}>\\(\\);`));
    assert.match(code, /@workgroup_size\(128\)/);
    // 4 subgroups, each (128/2) x (64/2) of C in M x N tiles.
    const tiles = (64 / cfg.M) * (32 / cfg.N);
    assert.equal(code.match(/var acc\d+_\d+ = /g)?.length, tiles);
    assert.doesNotMatch(code, /, false, /, 'no deprecated form');
    const legacy = matmulShader({ transposeA: false, transposeB: false, inner: subgroupMatrixInner({ componentType: 'f16', resultComponentType: 'f32', ...cfg }, 32, true) });
    assert.match(legacy, /subgroupMatrixStore\(&c, .*, false, dims\.N\);/);
  }
});
