// mlmkit's SIMD kernels on the wasm backend (training/backend/simd-wasm.ts, simd/kernels.c):
//   - the module, on a memory of its own filled with a sentinel, writes exactly its outputs (tails
//     of 1-3 lanes included) for every function, in both builds (plain and shared memory), and
//     gives the same bits whether a range runs whole or cut in pieces, and on the thread pool;
//   - each contract's kernels, registered on the wasm backend, against the reference composite
//     run on the cpu backend: values, and the gradients of sum(output * w) for a random w, on
//     shapes that do not divide 4 (1, 7, 129 rows; 1, 5, 33, 768 columns), with dropout;
//   - the dropout masks and the AdamW update bit for bit (the composite's own float32 operations),
//     the sum of squares against float64, splits along the last axis, column sums;
//   - the attention-heads kernels: tests/training/kernels/attention-heads.test.ts (bit for bit);
//   - the accuracy of the exact GELU against GELU in float64 over [-10, 10];
//   - MLM_SIMD_KERNELS=0 leaves the composites in place and says so.
// The composites are the oracle. Tolerance 2e-6 relative to the reference's largest magnitude
// (the kernels' exp and erf agree with TF.js's to a few float32 ulps).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Tensor, Tensor1D, Tensor2D, Tensor4D } from '@tensorflow/tfjs';
import { Rng } from '../../../common/rng.ts';
import { selectBackend, type Tf } from '../../../training/backend.ts';
import { instantiateSimdKernels, SIMD_FUNCTIONS, SIMD_KERNEL_NAMES, type SimdExports } from '../../../training/backend/simd-wasm.ts';
import { startSimdPool } from '../../../training/backend/simd-pool.ts';
import { attentionSoftmax, attentionSoftmaxReference } from '../../../training/kernels/attention-softmax.ts';
import { biasDropoutResidual, biasDropoutResidualReference } from '../../../training/kernels/bias-dropout-residual.ts';
import { biasGelu, biasGeluReference } from '../../../training/kernels/bias-gelu.ts';
import { DROPOUT_MASK_KERNEL, dropoutKeys, dropoutMask, dropoutThreshold } from '../../../training/kernels/dropout-mask.ts';
import { layerNorm } from '../../../training/kernels/layer-norm.ts';
import { crossEntropySum, crossEntropySumReference } from '../../../training/kernels/masked-cross-entropy.ts';
import { adamwKernel, adamwReference, sumOfSquares, type AdamWKernelAttrs } from '../../../training/kernels/adamw.ts';
import { relativeDiff } from '../kernels/kernel-helpers.ts';

const ROOT = path.join(import.meta.dirname, '../../..');
const TOL = 2e-6;
const quiet = { log: (_line: string) => {} };

const wasm = await selectBackend('wasm', quiet);
const tf: Tf = wasm.tf;

function randomArray(rng: Rng, n: number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => (rng.next() * 2 - 1) * scale);
}

// -------------------------------------------------------------------------------------------------
// The module on a memory of its own

/** A 4 MiB memory (plain or shared) filled with a sentinel, the module on it, and a bump allocator of floats. */
function arena(shared: boolean) {
  const memory = new WebAssembly.Memory({ initial: 64, maximum: 64, ...(shared ? { shared: true } : {}) });
  const mod = instantiateSimdKernels(memory);
  if (!('kernels' in mod)) throw new Error(mod.reason);
  const f32 = new Float32Array(memory.buffer);
  const SENTINEL = -12345.678;
  f32.fill(SENTINEL);
  let next = 1024; // in floats; 16-byte aligned blocks with a gap between them
  const outputs: [number, number][] = [];
  return {
    k: mod.kernels,
    memory,
    f32,
    /** Places `data` (or n sentinel floats) and returns its byte offset. */
    put(data: Float32Array | Int32Array | number, output = false): number {
      const n = typeof data === 'number' ? data : data.length;
      const at = next;
      if (typeof data !== 'number') (data instanceof Int32Array ? new Int32Array(memory.buffer) : f32).set(data as never, at);
      if (output) outputs.push([at, at + n]);
      next += Math.ceil((n + 7) / 4) * 4;
      return at * 4;
    },
    /** Every float outside the outputs still holds the sentinel or what was put there. */
    untouchedOutside(before: Float32Array): number[] {
      const bad: number[] = [];
      const isOut = (i: number) => outputs.some(([a, b]) => i >= a && i < b);
      for (let i = 0; i < f32.length && bad.length < 5; i++) if (!isOut(i) && !Object.is(f32[i], before[i])) bad.push(i);
      return bad;
    },
    read(byteOffset: number, n: number): Float32Array {
      return f32.slice(byteOffset / 4, byteOffset / 4 + n);
    },
  };
}

/**
 * Runs every exported function once on odd shapes, each range cut in `pieces`; returns each
 * output's contents. `dry`: the same placements, no call (the memory as it was before the calls).
 */
function runAll(a: ReturnType<typeof arena>, rng: Rng, pieces: number, dry = false): Map<string, Float32Array> {
  const k: SimdExports = dry ? (new Proxy({}, { get: () => () => 0 }) as SimdExports) : a.k;
  const results = new Map<string, Float32Array>();
  // Runs f over [0, n) in `pieces` pieces (the same call as a thread's share).
  const cut = (n: number, f: (lo: number, hi: number) => void) => {
    const step = Math.max(1, Math.ceil(n / pieces));
    for (let lo = 0; lo < n; lo += step) f(lo, Math.min(n, lo + step));
  };
  const R = 7;
  const C = 33;
  const x = a.put(randomArray(rng, R * C, 3));
  const b = a.put(randomArray(rng, C));
  const dy = a.put(randomArray(rng, R * C));
  const res = a.put(randomArray(rng, R * C));
  const out = (name: string, n: number) => {
    const at = a.put(n, true);
    return { at, done: () => results.set(name, a.read(at, n)) };
  };
  for (const tanh of [0, 1]) {
    const y = out(`bias_gelu ${tanh}`, R * C);
    cut(R, (lo, hi) => k.bias_gelu(x, b, y.at, C, tanh, lo, hi));
    y.done();
    const dx = out(`bias_gelu_grad ${tanh}`, R * C);
    cut(R, (lo, hi) => k.bias_gelu_grad(dy, x, b, dx.at, C, tanh, lo, hi));
    dx.done();
  }
  const cs = out('column_sums', C);
  cut(C, (lo, hi) => k.column_sums(x, cs.at, R, C, lo, hi));
  cs.done();
  const y = out('layer_norm y', R * C);
  const stats = out('layer_norm stats', 2 * R);
  cut(R, (lo, hi) => k.layer_norm(x, b, res, y.at, stats.at, C, 1e-12, lo, hi));
  y.done();
  stats.done();
  const dx = out('layer_norm_grad_rows', R * C);
  cut(R, (lo, hi) => k.layer_norm_grad_rows(dy, x, stats.at, b, dx.at, C, lo, hi));
  dx.done();
  const dg = out('layer_norm_grad_columns dgamma', C);
  const db = out('layer_norm_grad_columns dbeta', C);
  cut(Math.ceil(C / 4), (lo, hi) => k.layer_norm_grad_columns(dy, x, stats.at, dg.at, db.at, R, C, 4 * lo, Math.min(C, 4 * hi)));
  dg.done();
  db.done();
  const keys = dropoutKeys('simd-test');
  const threshold = dropoutThreshold(0.3);
  const keep = Math.fround(1 / 0.7);
  const n = R * C;
  const mask = out('dropout_mask', n);
  cut(Math.ceil(n / 4), (lo, hi) => k.dropout_mask(mask.at, ...keys, threshold, keep, 4 * lo, Math.min(n, 4 * hi)));
  mask.done();
  const applied = out('dropout_apply', n);
  cut(Math.ceil(n / 4), (lo, hi) => k.dropout_apply(dy, applied.at, ...keys, threshold, keep, 4 * lo, Math.min(n, 4 * hi)));
  applied.done();
  const bdr = out('bias_dropout_residual', n);
  cut(R, (lo, hi) => k.bias_dropout_residual(x, b, res, bdr.at, C, 1, ...keys, threshold, keep, lo, hi));
  bdr.done();
  // Attention: [B 1, heads 1, Tq 7, Tk 33] with a [1, 33] bias.
  const probs = out('attention_softmax', n);
  cut(R, (lo, hi) => k.attention_softmax(x, b, probs.at, R, C, 0.3, 1, ...keys, threshold, keep, lo, hi));
  probs.done();
  const dz = out('attention_softmax_grad', n);
  cut(R, (lo, hi) => k.attention_softmax_grad(x, b, dy, dz.at, R, C, 0.3, 1, ...keys, threshold, keep, lo, hi));
  dz.done();
  const targets = a.put(Int32Array.from({ length: R }, (_, i) => (i * 5) % C));
  const weights = a.put(Float32Array.from({ length: R }, (_, i) => (i % 3) / 2));
  const one = a.put(Float32Array.of(0.75));
  const loss = out('masked_cross_entropy', R);
  cut(R, (lo, hi) => k.masked_cross_entropy(x, targets, weights, loss.at, C, lo, hi));
  loss.done();
  const dl = out('masked_cross_entropy_grad', n);
  cut(R, (lo, hi) => k.masked_cross_entropy_grad(x, targets, weights, one, dl.at, C, lo, hi));
  dl.done();
  const v = a.put(Float32Array.from(randomArray(rng, n), Math.abs));
  const outs = [out('adamw p', n), out('adamw m', n), out('adamw v', n)];
  cut(n, (lo, hi) => k.adamw(x, res, v, dy, outs[0]!.at, outs[1]!.at, outs[2]!.at, 0.9, 0.999, 0.1, 0.001, 1.2, 1e-8, -1e-3, 0.99, 1, lo, hi));
  outs.forEach((o) => o.done());
  const cols = out('copy_columns', R * 10);
  cut(R, (lo, hi) => k.copy_columns(x, cols.at, C, 11, 10, lo, hi));
  cols.done();
  // Attention heads: rows [B 2 x T 3, 3 parts x 2 heads x hs 5] (a one-lane tail); part 1 out as
  // [2, 2, 3, 5], and three such parts back into rows, each into its columns.
  const [hB, hT, hH, hs] = [2, 3, 2, 5];
  const hC = 3 * hH * hs;
  const rows = a.put(randomArray(rng, hB * hT * hC));
  const heads = out('rows_to_heads', hB * hH * hT * hs);
  cut(hB * hT, (lo, hi) => k.rows_to_heads(rows, heads.at, hC, hH * hs, hT, hH, hs, lo, hi));
  heads.done();
  const parts = [0, 1, 2].map(() => a.put(randomArray(rng, hB * hH * hT * hs)));
  const back = out('heads_to_rows', hB * hT * hC);
  parts.forEach((part, p) => cut(hB * hT, (lo, hi) => k.heads_to_rows(part, back.at, hC, p * hH * hs, hT, hH, hs, lo, hi)));
  back.done();
  results.set('sum_squares', Float32Array.of(k.sum_squares(x, n)));
  return results;
}

for (const shared of [false, true]) {
  test(`the ${shared ? 'shared-memory' : 'plain'} module writes only its outputs, and the same bits however a range is cut`, () => {
    const whole = arena(shared);
    const a = runAll(whole, new Rng(5), 1);
    const cut = arena(shared);
    const b = runAll(cut, new Rng(5), 3);
    for (const [name, values] of a) {
      assert.ok(values.every((v) => v !== Math.fround(-12345.678) && Number.isFinite(v)), `${name}: every output entry written, finite`);
      assert.deepEqual(b.get(name), values, `${name}: whole and in 3 pieces differ`);
    }
    const dry = arena(shared);
    runAll(dry, new Rng(5), 1, true);
    const bad = whole.untouchedOutside(dry.f32);
    assert.deepEqual(bad, [], `floats written outside the outputs (float index): ${bad.join(', ')}`);
    for (const fn of [...SIMD_FUNCTIONS, 'sum_squares']) assert.ok([...a.keys()].some((key) => key.startsWith(fn)), `${fn} is exercised`);
  });
}

// -------------------------------------------------------------------------------------------------
// The kernels on the wasm backend against the composites on cpu

await selectBackend('cpu', quiet);
await tf.setBackend('wasm');

type Input = { data: Float32Array | Int32Array; shape: number[] };

/** Values and the gradients (of sum(out * w)) of `f` on `backend` for the inputs numbered in `wrt`. */
async function evaluate(backend: 'wasm' | 'cpu', f: (xs: Tensor[]) => Tensor, inputs: Input[], wrt: number[]): Promise<Float32Array[]> {
  await tf.setBackend(backend);
  try {
    return await evaluateHere(backend, f, inputs, wrt);
  } finally {
    await tf.setBackend('wasm');
  }
}

async function evaluateHere(backend: string, f: (xs: Tensor[]) => Tensor, inputs: Input[], wrt: number[]): Promise<Float32Array[]> {
  const xs = inputs.map((i) => tf.tensor(i.data, i.shape, i.data instanceof Int32Array ? 'int32' : 'float32'));
  const y = f(xs);
  const w = tf.tensor(randomArray(new Rng(99), y.size), y.shape);
  const loss = (...vs: Tensor[]) => {
    const all = xs.slice();
    wrt.forEach((k, i) => (all[k] = vs[i]!));
    return tf.sum(tf.mul(f(all), w));
  };
  const before = tf.memory().numTensors;
  const grads = wrt.length > 0 ? tf.grads(loss)(wrt.map((k) => xs[k]!)) : [];
  assert.equal(tf.memory().numTensors, before + wrt.length, `${backend}: a gradient call leaves only its results`);
  const out = [(await y.data()) as Float32Array, ...(await Promise.all(grads.map(async (g) => (await g.data()) as Float32Array)))];
  tf.dispose([...xs, y, w, ...grads]);
  return out;
}

async function assertMatches(label: string, op: (xs: Tensor[]) => Tensor, ref: (xs: Tensor[]) => Tensor, inputs: Input[], wrt: number[], tol = TOL): Promise<void> {
  const got = await evaluate('wasm', op, inputs, wrt);
  const want = await evaluate('cpu', ref, inputs, wrt);
  got.forEach((g, i) => {
    const d = relativeDiff(g, want[i]!);
    assert.ok(d <= tol, `${label}: ${i === 0 ? 'values' : `gradient of input ${wrt[i - 1]}`} differ by ${d.toExponential(2)} relative (tolerance ${tol})`);
  });
}

const f32In = (rng: Rng, shape: number[], scale = 1): Input => ({ data: randomArray(rng, shape.reduce((a, b) => a * b, 1), scale), shape });

test('the SIMD kernels are registered for wasm, and the backend line names them', () => {
  for (const name of SIMD_KERNEL_NAMES) assert.ok(wasm.capabilities.kernels.has(name), `${name} registered`);
  assert.match(wasm.device, /fused kernels: mlmkit SIMD, \d threads?/);
});

test('bias + GELU (exact and tanh) against the composite, values and gradients', async () => {
  for (const [N, C] of [[1, 1], [7, 5], [129, 768], [1, 33]] as const) {
    for (const tanh of [false, true]) {
      const rng = new Rng(N * 31 + C);
      await assertMatches(`biasGelu ${tanh ? 'tanh' : 'exact'} [${N}, ${C}]`,
        ([x, b]) => biasGelu(tf, x as Tensor2D, b as Tensor1D, tanh),
        ([x, b]) => biasGeluReference(tf, x as Tensor2D, b as Tensor1D, tanh),
        [f32In(rng, [N, C], 4), f32In(rng, [C])], [0, 1]);
    }
  }
});

test('LayerNorm against the composite (TF.js autodiff of moments), values and gradients', async () => {
  for (const [N, H] of [[1, 1], [7, 5], [129, 768], [3, 33]] as const) {
    const rng = new Rng(N * 17 + H);
    const x = f32In(rng, [N, H], 3);
    // An offset per row, as activations have, so that the centring matters.
    for (let r = 0; r < N; r++) for (let c = 0; c < H; c++) (x.data as Float32Array)[r * H + c] += (r % 5) - 2;
    await assertMatches(`layerNorm [${N}, ${H}]`,
      ([a, g, b]) => layerNorm(tf, a as Tensor2D, g as Tensor1D, b as Tensor1D, 1e-12, true),
      ([a, g, b]) => {
        const { mean, variance } = tf.moments(a, -1, true);
        return tf.add(tf.mul(tf.mul(tf.sub(a, mean), tf.rsqrt(tf.add(variance, 1e-12))), g), b);
      },
      [x, f32In(rng, [H], 2), f32In(rng, [H])], [0, 1, 2], H === 1 ? 1e-5 : TOL);
  }
});

test('attention softmax with scale, padding bias and dropout against the composite', async () => {
  for (const [B, nh, Tq, Tk] of [[1, 1, 1, 1], [2, 3, 5, 7], [2, 2, 16, 33]] as const) {
    for (const seed of [null, 'attn-site']) {
      const rng = new Rng(B * 1000 + Tk);
      const bias = new Float32Array(B * Tk);
      for (let b = 0; b < B; b++) for (let k = Tk - b; k < Tk; k++) if (k > 0) bias[b * Tk + k] = -1e9; // padding keys
      const opts = { scale: 0.35, rate: 0.1, seed };
      await assertMatches(`attentionSoftmax [${B}, ${nh}, ${Tq}, ${Tk}] ${seed ?? 'no dropout'}`,
        ([s, b]) => attentionSoftmax(tf, s as Tensor4D, b as Tensor2D, opts, true),
        ([s, b]) => attentionSoftmaxReference(tf, s as Tensor4D, b as Tensor2D, opts),
        [f32In(rng, [B, nh, Tq, Tk], 5), { data: bias, shape: [B, Tk] }], [0]);
    }
  }
});

test('bias + dropout + residual against the composite', async () => {
  for (const [N, H] of [[1, 1], [7, 33], [129, 256]] as const) {
    const rng = new Rng(N + H);
    const opts = { rate: 0.1, seed: 'bdr-site' };
    await assertMatches(`biasDropoutResidual [${N}, ${H}]`,
      ([x, b, r]) => biasDropoutResidual(tf, x as Tensor2D, b as Tensor1D, r as Tensor2D, opts, true),
      ([x, b, r]) => biasDropoutResidualReference(tf, x as Tensor2D, b as Tensor1D, r as Tensor2D, opts),
      [f32In(rng, [N, H]), f32In(rng, [H]), f32In(rng, [N, H])], [0, 1, 2], 1e-6);
  }
});

test('masked cross-entropy (with and without row weights) against the composite', async () => {
  for (const [N, V] of [[1, 2], [7, 33], [64, 30522]] as const) {
    for (const weighted of [false, true]) {
      const rng = new Rng(N * V);
      const targets: Input = { data: Int32Array.from({ length: N }, (_, i) => (i * 7919) % V), shape: [N] };
      const weights: Input = { data: Float32Array.from({ length: N }, (_, i) => (i % 4 === 3 ? 0 : 1)), shape: [N] };
      const inputs = weighted ? [f32In(rng, [N, V], 8), targets, weights] : [f32In(rng, [N, V], 8), targets];
      await assertMatches(`crossEntropySum [${N}, ${V}]${weighted ? ' weighted' : ''}`,
        ([z, t, w]) => crossEntropySum(tf, z as Tensor2D, t as Tensor1D, w as Tensor1D | undefined, true),
        ([z, t, w]) => crossEntropySumReference(tf, z as Tensor2D, t as Tensor1D, w as Tensor1D | undefined),
        inputs, [0]);
    }
  }
});

test('the dropout mask kernel gives dropoutMask bit for bit', () => {
  for (const [n, rate, seed] of [[1, 0.1, 'a'], [7, 0.5, 'b'], [100_003, 0.1, 'embeddings']] as const) {
    const [k0, k1, k2] = dropoutKeys(seed);
    const attrs = { n, k0, k1, k2, threshold: dropoutThreshold(rate), scale: Math.fround(1 / (1 - rate)) };
    const t = tf.engine().runKernel(DROPOUT_MASK_KERNEL, {}, attrs as never) as Tensor;
    assert.deepEqual(t.dataSync(), dropoutMask(n, rate, seed), `n ${n}, rate ${rate}`);
    t.dispose();
  }
});

test('the AdamW kernel gives the composite\'s bits, with and without decay, over several steps', () => {
  const rng = new Rng(7);
  for (const [n, decay] of [[1, 1], [37, 0], [10_007, 1]] as const) {
    let pk = tf.tensor(randomArray(rng, n));
    let mk = tf.zeros([n]);
    let vk = tf.zeros([n]);
    let [pr, mr, vr] = [tf.clone(pk), tf.clone(mk), tf.clone(vk)];
    for (let t = 1; t <= 4; t++) {
      const g = tf.tensor(randomArray(rng, n, t));
      const scale = t === 3 ? 0.37 : 1;
      const lr = 1e-3;
      const a: AdamWKernelAttrs = {
        b1: 0.9, b2: 0.999, b1c: 0.1 * scale, b2c: 0.001 * scale * scale, inv: 1 / Math.sqrt(1 - 0.999 ** t),
        eps: 1e-8, negStep: -lr / (1 - 0.9 ** t), keep: 1 - lr * 0.01, decay,
      };
      const k = adamwKernel(tf, pk, mk, vk, g, a);
      const r = adamwReference(tf, pr, mr, vr, g, a);
      tf.dispose([pk, mk, vk, pr, mr, vr, g]);
      [pk, mk, vk] = k;
      [pr, mr, vr] = r;
      for (const [i, name] of ['param', 'm', 'v'].entries()) {
        assert.deepEqual(k[i]!.dataSync(), r[i]!.dataSync(), `${name} after step ${t} (n ${n}, decay ${decay})`);
      }
    }
    tf.dispose([pk, mk, vk, pr, mr, vr]);
  }
});

test('sum of squares against float64; splits along the last axis and column sums against cpu', async () => {
  const rng = new Rng(3);
  for (const n of [1, 7, 100_001]) {
    const data = randomArray(rng, n, 3);
    const t = tf.tensor(data);
    let want = 0;
    for (const v of data) want += Math.fround(v * v);
    const got = sumOfSquares(tf, t, true).dataSync()[0]!;
    assert.ok(Math.abs(got - want) <= 1e-7 * want, `n ${n}: ${got} against ${want}`);
    tf.dispose(t);
  }
  for (const [shape, sizes] of [[[4096, 768], [256, 256, 256]], [[5, 7], [3, 4]], [[3, 2, 9], [1, 8]], [[12], [4, 4, 4]]] as [number[], number[]][]) {
    const input = f32In(rng, shape);
    const [got] = await evaluate('wasm', ([x]) => tf.concat(tf.split(x!, sizes, -1).map((p) => tf.mul(p, 2)), -1), [input], []);
    const [want] = await evaluate('cpu', ([x]) => tf.concat(tf.split(x!, sizes, -1).map((p) => tf.mul(p, 2)), -1), [input], []);
    assert.deepEqual(got, want, `split [${shape}] into ${sizes}`);
  }
  for (const [shape, axes] of [[[4096, 256], [0]], [[7, 33], [0]], [[2, 3, 17], [0, 1]]] as [number[], number[]][]) {
    const input = f32In(rng, shape);
    const [got] = await evaluate('wasm', ([x]) => tf.sum(x!, axes), [input], []);
    const [want] = await evaluate('cpu', ([x]) => tf.sum(x!, axes), [input], []);
    assert.ok(relativeDiff(got!, want!) <= 1e-6, `sum of [${shape}] over ${axes}`);
  }
});

test('the exact GELU kernel within 3e-7 of GELU in float64 over [-10, 10]', () => {
  const n = 20_001;
  const z = Float32Array.from({ length: n }, (_, i) => -10 + (20 * i) / (n - 1));
  const y = biasGelu(tf, tf.tensor2d(z, [1, n]), tf.zeros([n]) as Tensor1D, false);
  const got = y.dataSync();
  y.dispose();
  let worst = 0;
  for (let i = 0; i < n; i++) {
    const zi = z[i]!;
    // GELU(z) = z Phi(z); Phi by the complementary error function's continued fraction for |z| > 3,
    // else 1/2 (1 + erf(z / sqrt 2)) by erf's Maclaurin series (both to ~1e-15).
    const a = Math.abs(zi) * Math.SQRT1_2;
    let tail: number; // Phi(-|z|)
    if (a < 2.2) {
      let term = a;
      let sum = a;
      for (let k = 1; k < 100; k++) {
        term *= (-a * a) / k;
        sum += term / (2 * k + 1);
      }
      tail = 0.5 * (1 - (2 / Math.sqrt(Math.PI)) * sum);
    } else {
      let f = a;
      for (let k = 200; k >= 1; k--) f = a + k / 2 / f;
      tail = (0.5 * Math.exp(-a * a)) / Math.sqrt(Math.PI) / f;
    }
    const want = zi * (zi < 0 ? tail : 1 - tail);
    worst = Math.max(worst, Math.abs(got[i]! - want) / Math.max(1, Math.abs(zi)));
  }
  assert.ok(worst <= 3e-7, `largest error ${worst.toExponential(2)} (relative to max(1, |z|))`);
});

test('the thread pool gives the bits of one thread', async () => {
  const memory = new WebAssembly.Memory({ initial: 64, maximum: 64, shared: true });
  const mod = instantiateSimdKernels(memory);
  assert.ok('kernels' in mod);
  const pool = await startSimdPool({ bytes: mod.bytes, memory, names: SIMD_FUNCTIONS, threads: 3 });
  try {
    const f32 = new Float32Array(memory.buffer);
    const R = 301;
    const C = 37;
    f32.set(randomArray(new Rng(11), R * C, 4), 0);
    f32.set(randomArray(new Rng(12), C), R * C);
    const out1 = (R * C + C + 64) * 4;
    const out2 = out1 + R * C * 4 + 256;
    mod.kernels.bias_gelu(0, R * C * 4, out1, C, 0, 0, R);
    pool.split(mod.kernels, 'bias_gelu', R, 10, [0, R * C * 4, out2, C, 0]);
    assert.deepEqual(f32.slice(out2 / 4, out2 / 4 + R * C), f32.slice(out1 / 4, out1 / 4 + R * C));
    assert.equal(pool.threads, 3);
  } finally {
    await pool.close();
  }
});

test('the thread pool: an error in the calling thread\'s piece waits for the workers, and the calls after it are right', async () => {
  // The caller's piece fails after the workers were started on theirs (here its range function
  // throws). The call must not return while a worker still runs: the next call would hand out its
  // pieces under a running worker. Pieces of ~1 ms each, so that a worker outlives the throw.
  const memory = new WebAssembly.Memory({ initial: 512, maximum: 512, shared: true });
  const mod = instantiateSimdKernels(memory);
  assert.ok('kernels' in mod);
  const pool = await startSimdPool({ bytes: mod.bytes, memory, names: SIMD_FUNCTIONS, threads: 3 });
  try {
    const f32 = new Float32Array(memory.buffer);
    const R = 30_000;
    const C = 64;
    f32.set(randomArray(new Rng(21), R * C, 4), 0);
    f32.set(randomArray(new Rng(22), C), R * C);
    const ref = (R * C + C + 64) * 4;
    const out = ref + R * C * 4 + 256;
    mod.kernels.bias_gelu(0, R * C * 4, ref, C, 0, 0, R);
    const args = [0, R * C * 4, out, C, 0];
    for (let round = 0; round < 5; round++) {
      const failing = (lo: number, hi: number): [number, number] => {
        if (lo === 0) throw new Error('the caller\'s piece failed');
        return [lo, hi];
      };
      assert.throws(() => pool.split(mod.kernels, 'bias_gelu', R, 10, args, failing), /the caller's piece failed/);
      f32.fill(0, out / 4, out / 4 + R * C);
      pool.split(mod.kernels, 'bias_gelu', R, 10, args);
      assert.deepEqual(f32.slice(out / 4, out / 4 + R * C), f32.slice(ref / 4, ref / 4 + R * C), `round ${round}`);
    }
  } finally {
    await pool.close();
  }
});

test('MLM_SIMD_KERNELS=0 leaves the composites in place and says why', () => {
  const script = `import { selectBackend } from './training/backend.ts';
const b = await selectBackend('wasm', { log: (l) => console.log(l) });
console.log(JSON.stringify({ device: b.device, kernels: [...b.capabilities.kernels] }));`;
  const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: ROOT, env: { ...process.env, MLM_SIMD_KERNELS: '0' }, encoding: 'utf8',
  });
  const last = JSON.parse(out.trim().split('\n').pop()!);
  assert.match(last.device, /fused kernels: none/);
  assert.deepEqual(last.kernels.filter((k: string) => (SIMD_KERNEL_NAMES as readonly string[]).includes(k)), []);
  assert.match(out, /SIMD kernels not loaded \(MLM_SIMD_KERNELS=0\)/);
});

test('the committed modules are built from kernels.c (rebuilt where clang is installed)', { skip: !hasClang() && (process.env.MLM_REQUIRE_CLANG ?? '') !== '1' ? 'no clang/wasm-ld/wasm-objdump here (CI installs them)' : false }, () => {
  const out = execFileSync('bash', [path.join(ROOT, 'scripts/build-simd-kernels.sh'), '--check'], { encoding: 'utf8' });
  assert.match(out, /match/);
  assert.ok(readFileSync(path.join(ROOT, 'training/backend/simd/kernels.wasm')).length > 0);
});

function hasClang(): boolean {
  try {
    execFileSync('bash', ['-c', 'command -v clang && command -v wasm-ld && command -v wasm-objdump'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
