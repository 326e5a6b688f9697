// Tests for the fused operations of training/models/ops.ts (`makeOps`): each one's value and
// gradients against the plain TF.js composition it replaces, on cpu and wasm, and the tensor
// count left after a gradient call (their backward passes free their temporaries).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Scalar, Tensor, Tensor1D, Tensor2D } from '@tensorflow/tfjs';
import { Rng } from '../../../common/rng.ts';
import { capabilitiesOf, selectBackend, type Tf } from '../../../training/backend.ts';
import { dropoutKeys, dropoutMask, dropoutThreshold } from '../../../training/kernels/dropout-mask.ts';
import { activation, layerNorm, makeOps, maskedRowCount, MASKED_ROW_BUCKET } from '../../../training/models/ops.ts';

const quiet = { log: (_line: string) => {} };

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function random(tf: Tf, rng: Rng, shape: number[], scale = 1): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return tf.tensor(Float32Array.from({ length: n }, () => (rng.next() * 2 - 1) * scale), shape);
}

/**
 * Compares f and g (functions of the same inputs, returning same-shaped tensors): values, and the
 * gradients of sum(output * w) for a random w, within `tol` relative to the largest magnitude.
 */
async function same(tf: Tf, label: string, f: (...xs: Tensor[]) => Tensor, g: (...xs: Tensor[]) => Tensor, inputs: Tensor[], tol = 1e-5): Promise<void> {
  const a = f(...inputs);
  const b = g(...inputs);
  const rng = new Rng(9);
  const w = random(tf, rng, b.shape);
  const scale = (t: Float32Array | Int32Array | Uint8Array): number => Math.max(1, ...Array.from(t, Math.abs));
  const bv = await b.data();
  assert.ok(maxAbsDiff(await a.data(), bv) <= tol * scale(bv), `${label}: values differ by ${maxAbsDiff(await a.data(), bv)}`);
  const before = tf.memory().numTensors;
  const ga = tf.grads((...xs: Tensor[]) => tf.sum(tf.mul(f(...xs), w)))(inputs);
  assert.equal(tf.memory().numTensors, before + inputs.length, `${label}: a gradient call leaves only its results`);
  const gb = tf.grads((...xs: Tensor[]) => tf.sum(tf.mul(g(...xs), w)))(inputs);
  for (let i = 0; i < inputs.length; i++) {
    const want = await gb[i].data();
    const diff = maxAbsDiff(await ga[i].data(), want);
    assert.ok(diff <= tol * scale(want), `${label}: gradient ${i} differs by ${diff}`);
  }
  tf.dispose([a, b, w, ...ga, ...gb]);
}

for (const name of ['cpu', 'wasm'] as const) {
  test(`${name}: fused ops equal their plain forms, values and gradients`, async () => {
    const { tf } = await selectBackend(name, quiet);
    const ops = makeOps(tf);
    const rng = new Rng(1);
    const x = random(tf, rng, [6, 8], 2);
    const w = random(tf, rng, [8, 5]);
    const b = random(tf, rng, [5]);
    await same(tf, 'matMul', (p, q) => ops.matMul(p as Tensor2D, q as Tensor2D), (p, q) => tf.matMul(p as Tensor2D, q as Tensor2D), [x, w]);
    await same(
      tf,
      'linear',
      (p, q, r) => ops.linear(p as Tensor2D, q as Tensor2D, r as Tensor1D),
      (p, q, r) => tf.add(tf.matMul(p as Tensor2D, q as Tensor2D), r),
      [x, w, b],
    );
    const e = random(tf, rng, [11, 8]);
    const eb = random(tf, rng, [11]);
    await same(
      tf,
      'tiedDecoder',
      (p, q, r) => ops.tiedDecoder(p as Tensor2D, q as Tensor2D, r as Tensor1D),
      (p, q, r) => tf.add(tf.matMul(p as Tensor2D, q as Tensor2D, false, true), r),
      [x, e, eb],
    );
    const gamma = tf.add(random(tf, rng, [8], 0.5), 1);
    const beta = random(tf, rng, [8]);
    for (const eps of [1e-12, 1e-5]) {
      await same(
        tf,
        `layerNorm eps ${eps}`,
        (p, q, r) => ops.layerNorm(p as Tensor2D, q as Tensor1D, r as Tensor1D, eps),
        (p, q, r) => layerNorm(tf, p as Tensor2D, q as Tensor1D, r as Tensor1D, eps),
        [x, gamma, beta],
        1e-4,
      );
    }
    const wide = random(tf, rng, [7, 9], 4); // covers the GELU's curved part and both tails
    for (const act of ['gelu', 'gelu_new', 'gelu_pytorch_tanh', 'relu'] as const) {
      await same(tf, act, (p) => ops.activation(p as Tensor2D, act), (p) => activation(tf, p as Tensor2D, act), [wide]);
    }
    // Dropout: x times the mask dropoutMask draws for the site's seed, in value and gradient.
    const mask = tf.tensor(dropoutMask(wide.size, 0.3, 'seed/site'), wide.shape);
    await same(tf, 'dropout', (p) => ops.dropout(p, 0.3, 'seed/site'), (p) => tf.mul(p, mask), [wide]);
    mask.dispose();
    assert.equal(ops.dropout(wide, 0.3, null), wide);
    assert.equal(ops.dropout(wide, 0, 'seed'), wide);

    // Cross-entropy: against logsumexp - picked logit (targets fixed).
    const logits = random(tf, rng, [5, 13], 6);
    const targets = tf.tensor1d([0, 12, 3, 3, 7], 'int32');
    await same(
      tf,
      'crossEntropySum',
      (z) => ops.crossEntropySum(z as Tensor2D, targets),
      (z) => tf.sum(tf.sub(tf.logSumExp(z, 1), tf.sum(tf.mul(z, tf.oneHot(targets, 13).toFloat()), 1))) as Scalar,
      [logits],
    );
    // Row weights (padding rows on webgpu): weight 0 rows add nothing, to the loss or the gradient.
    const rowWeights = tf.tensor1d([1, 0, 1, 1, 0], 'float32');
    await same(
      tf,
      'crossEntropySum with row weights',
      (z) => ops.crossEntropySum(z as Tensor2D, targets, rowWeights),
      (z) => tf.sum(tf.mul(tf.sub(tf.logSumExp(z, 1), tf.sum(tf.mul(z, tf.oneHot(targets, 13).toFloat()), 1)), rowWeights)) as Scalar,
      [logits],
    );
    // Far-apart logits: the loss stays finite and exact where softmax probabilities underflow.
    const extreme = tf.tensor2d([[0, 200, -300], [50, 50, 50]]);
    const ce = await ops.crossEntropySum(extreme, tf.tensor1d([2, 1], 'int32')).data();
    // Row 0: lse = 200 (to float32), minus the target's -300 = 500. Row 1: log 3.
    assert.ok(Math.abs(ce[0] - (500 + Math.log(3))) < 1e-3, `${ce[0]}`);
    tf.dispose([x, w, b, e, eb, gamma, beta, wide, logits, targets, rowWeights, extreme]);
  });
}

test('maskedRowCount: padded to a multiple of MASKED_ROW_BUCKET on webgpu only (capabilitiesOf)', async () => {
  const { tf } = await selectBackend('cpu', { log: () => {} });
  assert.equal(MASKED_ROW_BUCKET, 64);
  const webgpu = capabilitiesOf(tf, 'webgpu');
  assert.equal(webgpu.maskedRowBucket, MASKED_ROW_BUCKET);
  assert.equal(webgpu.embeddingGrad, 'matmul');
  assert.deepEqual([0, 1, 63, 64, 65, 600].map((n) => maskedRowCount(n, webgpu.maskedRowBucket)), [0, 64, 64, 64, 128, 640]);
  for (const b of ['cpu', 'wasm', 'tensorflow']) {
    const caps = capabilitiesOf(tf, b);
    assert.equal(maskedRowCount(65, caps.maskedRowBucket), 65, b);
    assert.equal(caps.embeddingGrad, 'gather', b);
  }
});

// The hash of dropoutMask with BigInt arithmetic: independent of Math.imul and int32 coercions.
const WORD = 0xffffffffn;
function mixRef(v: bigint): bigint {
  let x = v & WORD;
  x ^= x >> 16n;
  x = (x * 0x7feb352dn) & WORD;
  x ^= x >> 15n;
  x = (x * 0x846ca68bn) & WORD;
  return x ^ (x >> 16n);
}
function hashRef(i: number, [k0, k1, k2]: [number, number, number]): bigint {
  return mixRef(mixRef(mixRef(BigInt(i) + BigInt(k0)) ^ BigInt(k1)) ^ BigInt(k2));
}

test('dropoutMask: the keyed hash as a BigInt implementation computes it, also where i + k0 wraps', () => {
  for (const rate of [0.1, 0.5]) {
    const seed = `7/bert.encoder.layer.0.output/${rate}`;
    const m = dropoutMask(20_000, rate, seed);
    const keys = dropoutKeys(seed);
    const threshold = BigInt(dropoutThreshold(rate));
    const scale = Math.fround(1 / (1 - rate));
    for (let i = 0; i < m.length; i++) assert.equal(m[i], hashRef(i, keys) < threshold ? 0 : scale, `rate ${rate}, entry ${i}`);
  }
  // A site whose k0 is within 300,000 of 2^32, so that i + k0 passes 2^32 inside the mask.
  let seed = '';
  for (let j = 0; ; j++) {
    if (dropoutKeys(`wrap/${j}`)[0] >= 2 ** 32 - 300_000) {
      seed = `wrap/${j}`;
      break;
    }
  }
  const keys = dropoutKeys(seed);
  const first = 2 ** 32 - keys[0];
  const m = dropoutMask(first + 1000, 0.3, seed);
  const threshold = BigInt(dropoutThreshold(0.3));
  for (let i = first - 1000; i < m.length; i++) assert.equal(m[i] === 0, hashRef(i, keys) < threshold, `entry ${i} (wraps at ${first})`);
  assert.equal(dropoutThreshold(0), 0);
  assert.throws(() => dropoutThreshold(1), /rate/);
});

test('dropoutMask: keep rate, values, independence of neighbours and of entries a row apart, within 4 sigma', () => {
  const rate = 0.1;
  const n = 1_000_000;
  const m = dropoutMask(n, rate, '7/bert.encoder.layer.0.output');
  const scale = Math.fround(1 / (1 - rate));
  const p = 1 - rate;
  // Only 0 and 1 / (1 - rate); the kept share within 4 sigma of 1 - rate (sigma = sqrt(p q / n)).
  let kept = 0;
  for (let i = 0; i < n; i++) {
    assert.ok(m[i] === 0 || m[i] === scale);
    if (m[i] !== 0) kept++;
  }
  assert.ok(Math.abs(kept / n - p) < 4 * Math.sqrt((p * rate) / n), `kept ${kept / n}`);
  // Entries d apart (neighbours, a 64-wide head, hidden 768 and intermediate 3072 rows, a 2^16
  // stride) independent: P(both kept) = p^2 within 4 sigma of a proportion over n - d pairs.
  for (const d of [1, 2, 64, 768, 3072, 65536]) {
    let both = 0;
    for (let i = d; i < n; i++) if (m[i] !== 0 && m[i - d] !== 0) both++;
    const pairs = n - d;
    const sigma = Math.sqrt((p * p * (1 - p * p)) / pairs);
    assert.ok(Math.abs(both / pairs - p * p) < 4 * sigma, `distance ${d}: both kept ${both / pairs} vs ${p * p}`);
  }
  // Deterministic per seed; another seed gives another mask (agreement p^2 + q^2 = 0.82 expected).
  assert.deepEqual(dropoutMask(1000, rate, 'a'), dropoutMask(1000, rate, 'a'));
  const a = dropoutMask(n, rate, 'a');
  const b = dropoutMask(n, rate, 'b');
  let same = 0;
  for (let i = 0; i < n; i++) if ((a[i] === 0) === (b[i] === 0)) same++;
  const agree = p * p + rate * rate;
  assert.ok(Math.abs(same / n - agree) < 4 * Math.sqrt((agree * (1 - agree)) / n), `agreement ${same / n}`);
  assert.throws(() => dropoutMask(10, 1, 'x'), /rate/);
});
