// Tests for training/models/bert.ts on a tiny BERT (vocab 99, hidden 32, 2 layers): shapes, the
// sparse masked loss against the full-logits loss (values and gradients), dropout determinism per
// seed (and across backends), padding invariance, activations against their formulas, input
// checks, and a flat tensor count across repeated forward and backward passes. Runs on cpu and
// wasm. The fused ops themselves are tested in ops.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Scalar, Tensor, Tensor2D, Tensor3D } from '@tensorflow/tfjs';
import { InputError } from '../../../common/errors.ts';
import { Rng } from '../../../common/rng.ts';
import { selectBackend, type Tf } from '../../../training/backend.ts';
import { createBert, IGNORE_INDEX, type MaskedLM, type MlmInputs } from '../../../training/models/bert.ts';
import { activation, layerNorm } from '../../../training/models/ops.ts';
import { parseModelConfig, updateModelConfig } from '../../../training/models/config.ts';
import { packedGroups, parameterTable } from '../../../training/models/weights.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const quiet = { log: (_line: string) => {} };
const config = parseModelConfig(
  JSON.parse(readFileSync(path.join(ROOT, 'tests/fixtures/reference/bert/config.json'), 'utf8')),
  'tiny bert',
);
const B = 3;
const T = 10;
const V = config.vocab_size;

async function backend(name: 'cpu' | 'wasm'): Promise<Tf> {
  return (await selectBackend(name, quiet)).tf;
}

/** A batch with padding in rows 1 and 2, and labels at about a third of the real positions. */
function batch(tf: Tf, seed = 5): { inputs: MlmInputs; labels: Int32Array; ids: number[][]; mask: number[][] } {
  const rng = new Rng(seed);
  const lengths = [T, 7, 4];
  const ids = lengths.map((len) => Array.from({ length: T }, (_, t) => (t < len ? 1 + rng.int(V - 1) : config.pad_token_id)));
  const mask = lengths.map((len) => Array.from({ length: T }, (_, t) => (t < len ? 1 : 0)));
  const types = lengths.map((len) => Array.from({ length: T }, (_, t) => (t >= len / 2 && t < len ? 1 : 0)));
  const labels = new Int32Array(B * T).fill(IGNORE_INDEX);
  for (let b = 0; b < B; b++) for (let t = 0; t < lengths[b]; t++) if (rng.next() < 0.35) labels[b * T + t] = rng.int(V);
  return {
    inputs: {
      inputIds: tf.tensor2d(ids, [B, T], 'int32') as Tensor2D,
      attentionMask: tf.tensor2d(mask, [B, T], 'int32') as Tensor2D,
      tokenTypeIds: tf.tensor2d(types, [B, T], 'int32') as Tensor2D,
    },
    labels,
    ids,
    mask,
  };
}

function disposeInputs(tf: Tf, inputs: MlmInputs): void {
  tf.dispose([inputs.inputIds, inputs.attentionMask, ...(inputs.tokenTypeIds ? [inputs.tokenTypeIds] : [])]);
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Mean cross-entropy and top-1 hits from full logits [B*T*V], in float64 JavaScript. */
function referenceLoss(logits: Float32Array, labels: Int32Array): { mean: number; count: number; correct: number } {
  let sum = 0;
  let count = 0;
  let correct = 0;
  for (let p = 0; p < labels.length; p++) {
    if (labels[p] === IGNORE_INDEX) continue;
    const row = logits.subarray(p * V, (p + 1) * V);
    let max = -Infinity;
    let arg = 0;
    for (let v = 0; v < V; v++) if (row[v] > max) [max, arg] = [row[v], v];
    let z = 0;
    for (let v = 0; v < V; v++) z += Math.exp(row[v] - max);
    sum += Math.log(z) + max - row[labels[p]];
    count++;
    if (arg === labels[p]) correct++;
  }
  return { mean: sum / count, count, correct };
}

// A model whose weights are not the tiny init (std 0.02 gives near-uniform logits): larger values.
function model(tf: Tf, seed = 11): MaskedLM {
  const m = createBert(tf, updateModelConfig(config, { initializer_range: 0.4 }, 'test'), { seed });
  return m;
}

for (const name of ['cpu', 'wasm'] as const) {
  test(`${name}: shapes, variables and the sparse masked loss equal the full-logits loss`, async () => {
    const tf = await backend(name);
    const m = model(tf);
    // The table's tensors, but each layer's query, key and value as one packed variable at the query's place.
    const packedAt = new Map(packedGroups(m.config).flatMap((g) => g.parts.map((p, k): [string, string | null] => [p, k === 0 ? g.name : null])));
    const names = parameterTable(m.config).map((s) => (packedAt.has(s.name) ? packedAt.get(s.name)! : s.name)).filter((n): n is string => n !== null);
    assert.deepEqual([...m.variables.keys()], names);
    const H = config.hidden_size;
    assert.deepEqual(m.variables.get('bert.encoder.layer.1.attention.self.qkv.weight')!.shape, [H, 3 * H]);
    assert.deepEqual(m.variables.get('bert.encoder.layer.1.attention.self.qkv.bias')!.shape, [3 * H]);
    assert.equal(m.family, 'bert');
    const { inputs, labels } = batch(tf);
    const hidden = m.encode(inputs, { training: false });
    assert.deepEqual(hidden.shape, [B, T, config.hidden_size]);
    const logits = m.logits(inputs, { training: false });
    assert.deepEqual(logits.shape, [B, T, V]);
    const headOnly = tf.tidy(() => m.head(tf.reshape(hidden, [B * T, config.hidden_size]) as Tensor2D));
    assert.ok(maxAbsDiff(await headOnly.data(), await logits.data()) < 1e-5);

    const ref = referenceLoss((await logits.data()) as Float32Array, labels);
    const mean = m.maskedLoss(inputs, labels, { training: false, accuracy: true });
    const sum = m.maskedLossSum(inputs, labels, { training: false });
    assert.equal(mean.maskedCount, ref.count);
    assert.equal(sum.maskedCount, ref.count);
    assert.ok(ref.count > 3);
    assert.ok(ref.mean > 1, `a meaningful loss (${ref.mean})`);
    assert.ok(Math.abs((await mean.loss.data())[0] - ref.mean) < 1e-5, `${(await mean.loss.data())[0]} vs ${ref.mean}`);
    assert.ok(Math.abs((await sum.loss.data())[0] - ref.mean * ref.count) < 1e-4);
    assert.equal((await mean.correct!.data())[0], ref.correct);
    assert.equal(sum.correct, undefined);
    tf.dispose([hidden, logits, headOnly, mean.loss, mean.correct!, sum.loss]);

    // No labelled position: loss 0, and a gradient call still works.
    const none = new Int32Array(B * T).fill(IGNORE_INDEX);
    const { value, grads } = tf.variableGrads(() => m.maskedLoss(inputs, none, { training: false }).loss);
    assert.equal((await value.data())[0], 0);
    tf.dispose([value, ...Object.values(grads)]);
    disposeInputs(tf, inputs);
    m.dispose();
  });

  test(`${name}: gradients of the sparse loss equal those of the full-logits loss`, async (t) => {
    const tf = await backend(name);
    const m = model(tf);
    const { inputs, labels } = batch(tf);
    const opts = { training: false };
    const sparse = tf.variableGrads(() => m.maskedLoss(inputs, labels, opts).loss);
    const full = tf.variableGrads(() => {
      const logits = tf.reshape(m.logits(inputs, opts), [B * T, V]);
      const picked = Array.from(labels).map((l, p) => [l, p] as const).filter(([l]) => l !== IGNORE_INDEX);
      const rows = tf.gather(logits, tf.tensor1d(picked.map(([, p]) => p), 'int32'));
      const onehot = tf.oneHot(tf.tensor1d(picked.map(([l]) => l), 'int32'), V);
      return tf.losses.softmaxCrossEntropy(onehot, rows) as Scalar;
    });
    assert.ok(Math.abs((await sparse.value.data())[0] - (await full.value.data())[0]) < 1e-5);
    let worst = 0;
    for (const key of Object.keys(full.grads)) {
      const a = await sparse.grads[key].data();
      const b = await full.grads[key].data();
      // Floored: some gradients are zero in exact arithmetic (a key bias shifts all of a query's
      // scores alike) and hold only rounding noise.
      const scale = Math.max(1e-2, ...Array.from(b, Math.abs));
      const rel = maxAbsDiff(a, b) / scale;
      const hfName = [...m.variables].find(([, v]) => v.name === key)?.[0];
      if (rel > worst) t.diagnostic(`${hfName}: ${rel.toExponential(2)} of ${scale.toExponential(2)}`);
      worst = Math.max(worst, rel);
    }
    assert.ok(worst < 1e-4, `largest relative gradient difference ${worst}`);
    tf.dispose([sparse.value, full.value, ...Object.values(sparse.grads), ...Object.values(full.grads)]);
    disposeInputs(tf, inputs);
    m.dispose();
  });

  test(`${name}: padding does not reach real positions; tensor count stays flat`, async () => {
    const tf = await backend(name);
    const m = model(tf);
    const { inputs, labels, ids, mask } = batch(tf);
    const before = await m.logits(inputs, { training: false }).data();
    const changedIds = ids.map((row, b) => row.map((id, t) => (mask[b][t] ? id : 1 + ((id + 7 * t) % (V - 1)))));
    const changed = { ...inputs, inputIds: tf.tensor2d(changedIds, [B, T], 'int32') as Tensor2D };
    const after = await m.logits(changed, { training: false }).data();
    let worst = 0;
    for (let i = 0; i < before.length; i++) if (mask[Math.floor(i / (T * V))][Math.floor(i / V) % T]) worst = Math.max(worst, Math.abs(before[i] - after[i]));
    assert.ok(worst < 1e-5, `real positions changed by ${worst}`);
    tf.dispose(changed.inputIds);

    // Forward and backward, repeatedly: nothing accumulates.
    const step = (seed: number): void => {
      const { value, grads } = tf.variableGrads(() => m.maskedLoss(inputs, labels, { training: true, dropoutSeed: seed }).loss);
      tf.dispose([value, ...Object.values(grads)]);
      tf.dispose([m.logits(inputs, { training: false }), m.encode(inputs, { training: true, dropoutSeed: seed })]);
      const r = m.maskedLossSum(inputs, labels, { training: false, accuracy: true });
      tf.dispose([r.loss, r.correct!]);
    };
    step(0);
    const count = tf.memory().numTensors;
    for (let i = 1; i <= 3; i++) step(i);
    assert.equal(tf.memory().numTensors, count);
    disposeInputs(tf, inputs);
    const beforeDispose = tf.memory().numTensors;
    const n = m.variables.size;
    m.dispose();
    assert.equal(tf.memory().numTensors, beforeDispose - n);
  });
}

test('dropout: only when training, the same masks for the same seed on cpu and wasm', async () => {
  const results: Record<string, Float32Array[]> = {};
  for (const name of ['cpu', 'wasm'] as const) {
    const tf = await backend(name);
    const m = model(tf);
    const { inputs } = batch(tf);
    const run = async (opts: { training: boolean; dropoutSeed?: number }): Promise<Float32Array> => {
      const t = m.logits(inputs, opts);
      const d = (await t.data()) as Float32Array;
      t.dispose();
      return d;
    };
    results[name] = [await run({ training: false }), await run({ training: true, dropoutSeed: 1 }), await run({ training: true, dropoutSeed: 1 }), await run({ training: true, dropoutSeed: 2 }), await run({ training: false, dropoutSeed: 1 })];
    assert.throws(() => m.logits(inputs, { training: true }), /dropoutSeed .* is required when training/);
    disposeInputs(tf, inputs);
    m.dispose();
  }
  for (const name of ['cpu', 'wasm']) {
    const [evalA, seed1, seed1again, seed2, evalB] = results[name];
    assert.deepEqual(seed1, seed1again, `${name}: same seed, same masks`);
    assert.ok(maxAbsDiff(seed1, seed2) > 1e-2, `${name}: another seed, other masks`);
    assert.ok(maxAbsDiff(evalA, seed1) > 1e-2, `${name}: dropout acts when training`);
    assert.deepEqual(evalA, evalB, `${name}: no dropout in evaluation`);
  }
  assert.ok(maxAbsDiff(results.cpu[1], results.wasm[1]) < 1e-4, 'the same dropout masks on both backends');
});

test('activations and LayerNorm match their formulas', async () => {
  const tf = await backend('cpu');
  const xs = [-3, -1, -0.1, 0, 0.5, 2];
  // Python's math.erf(x / sqrt(2)) at these points.
  const erf = [-0.9973002039367398, -0.6826894921370859, -0.07965567455405796, 0, 0.3829249225480262, 0.9544997361036416];
  const x = tf.tensor1d(xs);
  const exact = await activation(tf, x, 'gelu').data();
  xs.forEach((v, i) => assert.ok(Math.abs(exact[i] - 0.5 * v * (1 + erf[i])) < 1e-6, `gelu(${v})`));
  for (const act of ['gelu_new', 'gelu_pytorch_tanh'] as const) {
    const approx = await activation(tf, x, act).data();
    xs.forEach((v, i) => {
      const want = 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
      assert.ok(Math.abs(approx[i] - want) < 1e-6, `${act}(${v})`);
    });
  }
  assert.deepEqual(Array.from(await activation(tf, x, 'relu').data()), xs.map((v) => Math.max(0, v)));

  const rows = [[1, 2, 3, 4], [-1, 0.5, 0.25, 10]];
  const ln = await layerNorm(tf, tf.tensor2d(rows), tf.tensor1d([1, 2, 0.5, 1]), tf.tensor1d([0, 0.1, 0, -1]), 1e-5).data();
  rows.forEach((r, i) => {
    const mean = r.reduce((a, b) => a + b) / 4;
    const variance = r.reduce((a, b) => a + (b - mean) ** 2, 0) / 4;
    const want = r.map((v, j) => ((v - mean) / Math.sqrt(variance + 1e-5)) * [1, 2, 0.5, 1][j] + [0, 0.1, 0, -1][j]);
    want.forEach((w, j) => assert.ok(Math.abs(ln[i * 4 + j] - w) < 1e-5));
  });
  tf.dispose(x);
});

test('bad inputs are refused', async () => {
  const tf = await backend('cpu');
  const m = model(tf);
  const long = tf.zeros([1, 65], 'int32') as Tensor2D;
  assert.throws(
    () => m.encode({ inputIds: long, attentionMask: long }, { training: false }),
    (err: unknown) => err instanceof InputError && /sequences of 65 tokens are longer than this bert model's 64 positions/.test(err.message),
  );
  const floats = tf.zeros([1, 4]) as Tensor2D;
  assert.throws(() => m.encode({ inputIds: floats, attentionMask: floats }, { training: false }), /inputIds must be an int32/);
  const { inputs } = batch(tf);
  assert.throws(() => m.maskedLoss(inputs, new Int32Array(3), { training: false }), /labels has 3 entries for a \[3, 10\] batch/);
  const bad = new Int32Array(B * T).fill(IGNORE_INDEX);
  bad[4] = V;
  assert.throws(() => m.maskedLoss(inputs, bad, { training: false }), /label 99 at position 4 is outside the vocabulary/);
  assert.throws(
    () => m.encode({ ...inputs, attentionMask: tf.zeros([B, T + 1], 'int32') as Tensor2D }, { training: false }),
    /attentionMask has shape \[3, 11\] but inputIds has \[3, 10\]/,
  );
  tf.dispose([long, floats]);
  disposeInputs(tf, inputs);
  m.dispose();
});

test('the same seed gives the same model on cpu and wasm', async () => {
  const outs: Float32Array[] = [];
  for (const name of ['cpu', 'wasm'] as const) {
    const tf = await backend(name);
    const m = model(tf, 99);
    const { inputs } = batch(tf);
    const logits: Tensor3D = m.logits(inputs, { training: false });
    outs.push((await logits.data()) as Float32Array);
    tf.dispose(logits);
    disposeInputs(tf, inputs);
    m.dispose();
  }
  assert.ok(maxAbsDiff(outs[0], outs[1]) < 1e-4);
});
