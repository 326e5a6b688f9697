// training/kernels/attention-heads.ts: the webgpu kernels (training/backend/webgpu/attention-heads.ts)
// and the wasm SIMD ones (training/backend/simd-wasm.ts) against the reference composites, bit for bit (they only move floats), and the ops rowsToHeads /
// headsToRows against the composites, values and gradients (through every output of a
// several-output op), on cpu and on webgpu with the kernels. Shapes: one sequence and one head,
// head sizes and row counts off the 64-thread workgroup, 1, 3 and 7 parts, and one whose entries
// outnumber 65,535 workgroups of 64 (the grid-stride loop). The rows-and-sums kernel: its rows
// equal the composite's bit for bit and its sums tf.sum's within 1e-6 relative (another order),
// over the same shapes (row counts of one stage-1 block and of several; 7 parts are one binding
// more than it takes, so that shape checks the fallback to the composite). Ops.linearToHeads (the
// projection and the cut in one op, its gradient through the rows-and-sums kernel) against
// linear then the cut, values and gradients within 1e-5. Each backend's kernels refuse a bad cut, a
// part of another shape and a missing part with the kernel's name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { NamedAttrMap, Tensor, Tensor1D, Tensor2D, Tensor4D } from '@tensorflow/tfjs';
import { Rng } from '../../../common/rng.ts';
import { capabilitiesOf, releaseWebGpu, type Tf } from '../../../training/backend.ts';
import {
  HEADS_TO_ROWS_KERNEL,
  HEADS_TO_ROWS_SUMS_KERNEL,
  headsToRows,
  headsToRowsReference,
  headsToRowsSums,
  headsToRowsSumsReference,
  ROWS_TO_HEADS_KERNEL,
  rowsToHeads,
  rowsToHeadsReference,
} from '../../../training/kernels/attention-heads.ts';
import { makeOps } from '../../../training/models/ops.ts';
import { assertSameOp, backendTf, random, relativeDiff, webgpuSkip } from './kernel-helpers.ts';

const skip = await webgpuSkip();

/** [B, T, heads, hs, parts] */
const SHAPES: [number, number, number, number, number][] = [
  [1, 1, 1, 1, 3],
  [2, 5, 3, 7, 3],
  [3, 17, 2, 33, 1],
  [2, 9, 4, 5, 7],
  [2, 130, 12, 67, 3], // 2 * 130 * 12 * 67 * 3 entries: over 65,535 * 64
];

/** The value (all outputs) and the gradients of sum_i sum(f(xs)_i * w_i) for fixed random w_i. */
async function valueAndGrads(tf: Tf, f: (xs: Tensor[]) => Tensor[], xs: Tensor[], seed: number): Promise<Float32Array[]> {
  const ys = f(xs);
  const rng = new Rng(seed);
  const ws = ys.map((y) => random(tf, rng, y.shape));
  const before = tf.memory().numTensors;
  const gs = tf.grads((...args: Tensor[]) => tf.addN(f(args).map((y, i) => tf.sum(tf.mul(y, ws[i])))))(xs);
  assert.equal(tf.memory().numTensors, before + xs.length, 'a gradient call leaves only its results');
  const out = [...(await Promise.all(ys.map((y) => y.data() as Promise<Float32Array>))), ...(await Promise.all(gs.map((g) => g.data() as Promise<Float32Array>)))];
  tf.dispose([...ys, ...ws, ...gs]);
  return out;
}

/** The ops (kernels when `fused`) against the composites, values and gradients, both directions. */
async function assertOps(tf: Tf, fused: boolean): Promise<void> {
  for (const [B, T, heads, hs, parts] of SHAPES) {
    const label = `B ${B}, T ${T}, ${heads} heads of ${hs}, ${parts} parts`;
    const rows = random(tf, new Rng(B * T + hs), [B * T, parts * heads * hs]);
    const attrs = { batch: B, heads, parts };
    const got = await valueAndGrads(tf, ([x]) => rowsToHeads(tf, x as Tensor2D, attrs, fused), [rows], 1);
    const want = await valueAndGrads(tf, ([x]) => rowsToHeadsReference(tf, x as Tensor2D, attrs), [rows], 1);
    assert.deepEqual(got, want, `rowsToHeads, ${label}`);
    const hs4 = Array.from({ length: parts }, (_, p) => random(tf, new Rng(p + 11), [B, heads, T, hs]));
    const got2 = await valueAndGrads(tf, (xs) => [headsToRows(tf, xs as Tensor4D[], fused)], hs4, 2);
    const want2 = await valueAndGrads(tf, (xs) => [headsToRowsReference(tf, xs as Tensor4D[])], hs4, 2);
    assert.deepEqual(got2, want2, `headsToRows, ${label}`);
    tf.dispose([rows, ...hs4]);
  }
}

/** The backend registers both kernels, a call leaves only its results, and the ops with them equal the composites. */
async function assertKernels(tf: Tf, backend: 'wasm' | 'webgpu'): Promise<void> {
  const kernels = capabilitiesOf(tf, backend).kernels;
  assert.ok(kernels.has(ROWS_TO_HEADS_KERNEL) && kernels.has(HEADS_TO_ROWS_KERNEL), `registered when ${backend} loads`);
  const x = random(tf, new Rng(5), [2 * 7, 3 * 3 * 5]) as Tensor2D;
  const before = tf.memory().numTensors;
  const parts = rowsToHeads(tf, x, { batch: 2, heads: 3, parts: 3 }, true);
  assert.equal(tf.memory().numTensors, before + 3, 'the kernel leaves its results only');
  // The kernels check their inputs themselves (training/kernels/attention-heads.ts checkRows, checkHeads).
  const run = (name: string, inputs: Record<string, Tensor>, attrs: object) => tf.engine().runKernel(name, inputs, attrs as NamedAttrMap);
  assert.throws(() => run(ROWS_TO_HEADS_KERNEL, { x }, { batch: 4, heads: 3, parts: 3 }), /MlmkitRowsToHeads: cannot cut \[14, 45\] into 3 parts of 3 heads over 4 sequences/);
  assert.throws(() => run(HEADS_TO_ROWS_KERNEL, { x0: parts[0]!, x1: parts[1]! }, { batch: 2, heads: 3, parts: 3 }), /MlmkitHeadsToRows: (missing input|parts must all be \[B, heads, T, hs\] of one shape \(3 of \[2, 3, T, hs\]\), got \[2, 3, 7, 5\], \[2, 3, 7, 5\], none)$/);
  assert.throws(() => run(HEADS_TO_ROWS_KERNEL, { x0: parts[0]! }, { batch: 2, heads: 5, parts: 1 }), /MlmkitHeadsToRows: .* \(1 of \[2, 5, T, hs\]\)/);
  tf.dispose([x, ...parts]);
  await assertOps(tf, true);
}

test('cpu: the composites are inverse permutations, and the ops equal them', async () => {
  const tf = await backendTf('cpu');
  const x = random(tf, new Rng(3), [6, 3 * 2 * 4]) as Tensor2D; // B 2, T 3, 2 heads of 4
  const [q, k, v] = rowsToHeadsReference(tf, x, { batch: 2, heads: 2, parts: 3 });
  assert.deepEqual(q.shape, [2, 2, 3, 4]);
  // query of sequence 1, head 1, position 2, entry 3 is row 1 * 3 + 2, column 0 * 8 + 1 * 4 + 3;
  // value's is column 2 * 8 + 1 * 4 + 3.
  const xs = (await x.data()) as Float32Array;
  assert.equal((await q.data())[((1 * 2 + 1) * 3 + 2) * 4 + 3], xs[5 * 24 + 7]);
  assert.equal((await v.data())[((1 * 2 + 1) * 3 + 2) * 4 + 3], xs[5 * 24 + 16 + 7]);
  assert.deepEqual(await headsToRowsReference(tf, [q, k, v]).data(), xs);
  assert.throws(() => rowsToHeads(tf, x, { batch: 4, heads: 2, parts: 3 }, false), /cannot cut \[6, 24\]/);
  assert.throws(() => headsToRows(tf, [q, tf.zeros([2, 2, 3, 5]) as Tensor4D], false), /one shape/);
  tf.dispose([x, q, k, v]);
  await assertOps(tf, false);
});

test('wasm: the SIMD heads kernels equal the composites bit for bit, values and gradients, and the model uses them', async () => {
  const tf = await backendTf('wasm');
  await assertKernels(tf, 'wasm');
  // The model's cut into heads runs the kernels (one call each way), not a transpose.
  const ops = makeOps(tf, capabilitiesOf(tf, 'wasm'));
  const qkv = random(tf, new Rng(6), [2 * 4, 3 * 8]) as Tensor2D;
  const w = random(tf, new Rng(7), [24, 24]) as Tensor2D;
  const b = random(tf, new Rng(8), [24]) as Tensor1D;
  const profile = await tf.profile(() => {
    const [q, k, v, skip] = ops.linearToHeads(qkv, w, b, { B: 2, T: 4, heads: 2 });
    const merged = ops.mergeHeads(q!);
    tf.dispose([q!, k!, v!, skip!, merged]);
  });
  const names = profile.kernels.map((kernel) => kernel.name);
  assert.equal(names.filter((n) => n === ROWS_TO_HEADS_KERNEL).length, 1, names.join(', '));
  assert.equal(names.filter((n) => n === HEADS_TO_ROWS_KERNEL).length, 1, names.join(', '));
  assert.ok(!names.includes('Transpose'), names.join(', '));
  tf.dispose([qkv, w, b]);
});

test('webgpu: the heads kernels equal the composites bit for bit, values and gradients', { skip }, async (t) => {
  const tf = await backendTf('webgpu');
  try {
    await assertKernels(tf, 'webgpu');
    t.diagnostic(`${SHAPES.length} shapes: equal`);
  } finally {
    releaseWebGpu(tf);
  }
});

test('webgpu: the rows-and-sums kernel gives the composite\'s rows bit for bit and its column sums within 1e-6', { skip }, async () => {
  const tf = await backendTf('webgpu');
  try {
    assert.ok(capabilitiesOf(tf, 'webgpu').kernels.has(HEADS_TO_ROWS_SUMS_KERNEL), 'registered when webgpu loads');
    for (const [B, T, heads, hs, parts] of SHAPES) {
      const label = `B ${B}, T ${T}, ${heads} heads of ${hs}, ${parts} parts`;
      const xs = Array.from({ length: parts }, (_, p) => random(tf, new Rng(p + 31), [B, heads, T, hs]) as Tensor4D);
      const before = tf.memory().numTensors;
      const [rows, sums] = headsToRowsSums(tf, xs, true);
      assert.equal(tf.memory().numTensors, before + 2, `${label}: the kernel leaves its two results only`);
      const [wantRows, wantSums] = headsToRowsSumsReference(tf, xs);
      assert.deepEqual(rows.shape, wantRows.shape);
      assert.deepEqual(await rows.data(), await wantRows.data(), `${label}: rows`);
      assert.deepEqual(sums.shape, [parts * heads * hs]);
      const d = relativeDiff(await sums.data(), await wantSums.data());
      assert.ok(d <= 1e-6, `${label}: sums differ by ${d} relative`);
      tf.dispose([...xs, rows, sums, wantRows, wantSums]);
    }
  } finally {
    releaseWebGpu(tf);
  }
});

test('linearToHeads equals linear then the cut into heads, values and gradients (cpu: the composite; webgpu: the fused op)', async (t) => {
  for (const backend of ['cpu', 'webgpu'] as const) {
    if (backend === 'webgpu' && skip) {
      t.diagnostic(`webgpu skipped: ${skip}`);
      continue;
    }
    const tf = await backendTf(backend);
    const ops = makeOps(tf, capabilitiesOf(tf, backend));
    const plain = makeOps(tf);
    try {
      for (const [B, T, heads, hs] of [[1, 1, 1, 4], [2, 9, 3, 5], [3, 33, 4, 16]]) {
        const H = heads * hs;
        const rng = new Rng(B * 100 + T);
        const xs = [random(tf, rng, [B * T, H]), random(tf, rng, [H, 3 * H], 0.3), random(tf, rng, [3 * H]), random(tf, rng, [B * T, H])];
        // All four outputs feed the loss (the skip through a product with r, so its gradient is not all ones).
        const use = (outs: Tensor[], r: Tensor) => tf.concat([...outs.slice(0, 3).map((o) => tf.reshape(o, [-1])), tf.reshape(tf.mul(outs[3], r), [-1])]);
        const dims = { B, T, heads };
        await assertSameOp(
          tf,
          `${backend}: B ${B}, T ${T}, ${heads} heads of ${hs}`,
          (x, w, b, r) => use(ops.linearToHeads(x as Tensor2D, w as Tensor2D, b as Tensor1D, dims), r),
          (x, w, b, r) => {
            const y = plain.linear(x as Tensor2D, w as Tensor2D, b as Tensor1D);
            return use([...rowsToHeadsReference(tf, y, { batch: B, heads, parts: 3 }), x], r);
          },
          xs,
          [0, 1, 2],
          1e-5,
        );
        tf.dispose(xs);
      }
    } finally {
      if (backend === 'webgpu') releaseWebGpu(tf);
    }
  }
});
