// The 'matmul' gradient of embedding rows (makeOps's embeddingRows; what webgpu uses, since its
// UnsortedSegmentSum serialises repeated ids on atomics) against tf.gather's own gradient, on cpu:
// small tables in several chunks, a large table with host ids in several chunks, repeated ids,
// which method each case runs (the OneHot kernel in tf.profile), and a whole training step of a
// small BERT whose vocabulary takes the host-ids path (every weight's gradient) with each method.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Scalar, Tensor, Tensor1D } from '@tensorflow/tfjs';
import { selectBackend } from '../../../training/backend.ts';
import { bucketed, distinctIds, DISTINCT_BUCKET, makeOps, padDistinct, REFERENCE_CAPABILITIES, SMALL_TABLE_ROWS, type EmbeddingGrad } from '../../../training/models/ops.ts';
import { parseModelConfig } from '../../../training/models/config.ts';
import { createMaskedLM } from '../../../training/models/roberta.ts';
import { SyntheticBatches } from '../../../training/bench.ts';
import { batchInputs } from '../../../training/evaluate.ts';
import { Rng } from '../../../common/rng.ts';

const { tf } = await selectBackend('cpu', { log: () => {} });

function maxRel(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let scale = 1e-6;
  for (const v of b) scale = Math.max(scale, Math.abs(v));
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst / scale;
}

test('distinctIds: first-appearance order and the inverse map', () => {
  const { distinct, inverse } = distinctIds([7, 3, 7, 7, 0, 3]);
  assert.deepEqual(Array.from(distinct), [7, 3, 0]);
  assert.deepEqual(Array.from(inverse), [0, 1, 0, 0, 2, 1]);
  for (let i = 0; i < 6; i++) assert.equal(distinct[inverse[i]], [7, 3, 7, 7, 0, 3][i]);
});

test('bucketed and padDistinct: the distinct-id count rounded up, padded with unused ids', () => {
  assert.equal(DISTINCT_BUCKET, 256);
  assert.deepEqual([1, 256, 257, 1500].map((u) => bucketed(u, 30522)), [256, 256, 512, 1536]);
  assert.equal(bucketed(300, 400), 400, 'never more than the table has');
  assert.deepEqual(padDistinct(Int32Array.from([2, 0, 5]), 6, 10), [2, 0, 5, 1, 3, 4]);
  assert.deepEqual(padDistinct(Int32Array.from([2, 0]), 2, 10), [2, 0]);
});

for (const [label, S, withHost, method] of [
  ['small table (one-hot over the table)', 40, false, 'one-hot'],
  ['large table (distinct ids from the host)', 5000, true, 'one-hot'],
  ['large table without host ids (falls back to gather)', 5000, false, 'gather'],
] as const) {
  test(`embeddingRows 'matmul' gradient equals tf.gather's: ${label}`, async () => {
    const N = 300;
    const H = 8;
    const rng = new Rng(S);
    const rand = () => rng.next();
    // Skewed ids: half the rows take one of 3 ids, so repeats are many.
    const ids = Int32Array.from({ length: N }, () => (rand() < 0.5 ? Math.floor(rand() * 3) : Math.floor(rand() * S)));
    const table = tf.tensor2d(Float32Array.from({ length: S * H }, () => rand() - 0.5), [S, H]);
    const up = tf.tensor2d(Float32Array.from({ length: N * H }, () => rand() - 0.5), [N, H]);
    const idsT = tf.tensor1d(ids, 'int32') as Tensor1D;
    const v = tf.variable(table);
    const grad = async (mode: EmbeddingGrad, entries?: number) => {
      const ops = makeOps(tf, { ...REFERENCE_CAPABILITIES, embeddingGrad: mode }, { oneHotEntries: entries });
      const before = tf.memory().numTensors;
      let out: Tensor[] = [];
      const profile = await tf.profile(() => {
        out = tf.tidy(() => {
          const f = () => tf.sum(tf.mul(ops.embeddingRows(v, idsT, withHost ? ids : undefined), up)) as Scalar;
          const { value, grads } = tf.variableGrads(f, [v]);
          return [value, grads[v.name]];
        });
      });
      assert.equal(tf.memory().numTensors, before + 2, 'only the value and the gradient remain');
      const [value, g] = out;
      const result = { value: value.dataSync()[0], grad: g.dataSync() as Float32Array, kernels: new Set(profile.kernels.map((k) => k.name)) };
      tf.dispose(out);
      return result;
    };
    const want = await grad('gather');
    assert.ok(!want.kernels.has('OneHot'));
    // The default budget (one chunk), then a small one: several chunks (small table: 64 rows
    // each; large: at most 10 rows, since the distinct count is rounded up to 256).
    for (const entries of [undefined, 2560]) {
      const got = await grad('matmul', entries);
      assert.equal(got.value, want.value);
      assert.equal(got.kernels.has('OneHot'), method === 'one-hot', `the ${method} method ran`);
      const rel = maxRel(got.grad, want.grad);
      assert.ok(rel < 1e-6, `gradient differs by ${rel} (relative to its largest entry), one-hot budget ${entries ?? 'default'}`);
    }
    assert.throws(() => makeOps(tf, { ...REFERENCE_CAPABILITIES, embeddingGrad: 'matmul' }).embeddingRows(v, idsT, ids.subarray(1)), /299 host ids for 300 ids/);
    tf.dispose([table, up, idsT, v]);
  });
}

test("a small BERT, vocabulary 5,000: one training step's gradients with 'matmul' and 'gather' embedding gradients", () => {
  // A vocabulary above SMALL_TABLE_ROWS, so the word table takes the host-ids path through
  // batchInputs (hostInputIds); dropout on. Only the three embedding tables' gradients are computed
  // differently; every other gradient must be the same bit for bit.
  const config = parseModelConfig({
    model_type: 'bert', vocab_size: 5000, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2,
    intermediate_size: 32, max_position_embeddings: 64, type_vocab_size: 2,
  }, 'test');
  assert.ok(config.vocab_size > SMALL_TABLE_ROWS);
  const batch = new SyntheticBatches(config, 4, 32, 7, 0.15).next();
  const grads = (mode: EmbeddingGrad) => {
    const model = createMaskedLM(tf, config, { seed: 3, capabilities: { ...REFERENCE_CAPABILITIES, embeddingGrad: mode } });
    const vars = [...model.variables.values()];
    const before = tf.memory().numTensors;
    const out = new Map<string, Float32Array>();
    tf.tidy(() => {
      const inputs = batchInputs(tf, batch);
      const { grads } = tf.variableGrads(() => model.maskedLossSum(inputs, batch.labels, { training: true, dropoutSeed: 11 }).loss, vars);
      for (const [name, v] of model.variables) out.set(name, grads[v.name].dataSync() as Float32Array);
    });
    assert.equal(tf.memory().numTensors, before, `no tensors left behind (${mode})`);
    model.dispose();
    return out;
  };
  const want = grads('gather');
  const got = grads('matmul');
  const tables = ['word_embeddings', 'position_embeddings', 'token_type_embeddings'].map((t) => `bert.embeddings.${t}.weight`);
  for (const [name, g] of want) {
    if (tables.includes(name)) {
      const rel = maxRel(got.get(name)!, g);
      assert.ok(rel < 1e-5, `${name}: gradient differs by ${rel}`);
    } else {
      assert.deepEqual(got.get(name), g, `${name}: not the same bit for bit`);
    }
  }
  for (const name of tables) assert.ok(want.has(name), name);

  // Host ids that do not fit the batch are an error, not a silent fallback.
  const model = createMaskedLM(tf, config, { seed: 3, capabilities: { ...REFERENCE_CAPABILITIES, embeddingGrad: 'matmul' } });
  const before = tf.memory().numTensors;
  tf.tidy(() => {
    const inputs = { ...batchInputs(tf, batch), hostInputIds: batch.inputIds.subarray(1) };
    assert.throws(() => model.maskedLossSum(inputs, batch.labels, { training: false }), /hostInputIds has 127 entries for a \[4, 32\] batch/);
  });
  assert.equal(tf.memory().numTensors, before);
  model.dispose();
});

test("a table of one row (RoBERTa's token types, type_vocab_size 1): the 'matmul' gradient is tf.gather's", () => {
  // One-hot products over one row would need tf.oneHot with depth 1, which TF.js refuses (depth >= 2).
  const H = 6;
  const ids = tf.tensor1d([0, 0, 0, 0, 0], 'int32') as Tensor1D;
  const up = tf.tensor2d(Float32Array.from({ length: 5 * H }, (_, i) => Math.sin(i + 1)), [5, H]);
  const v = tf.variable(tf.tensor2d(Float32Array.from({ length: H }, (_, i) => i / 10), [1, H]));
  const grad = (mode: EmbeddingGrad) => tf.tidy(() => {
    const ops = makeOps(tf, { ...REFERENCE_CAPABILITIES, embeddingGrad: mode });
    const { grads } = tf.variableGrads(() => tf.sum(tf.mul(ops.embeddingRows(v, ids), up)) as Scalar, [v]);
    return grads[v.name].dataSync() as Float32Array;
  });
  const want = grad('gather');
  assert.ok(maxRel(grad('matmul'), want) < 1e-6);

  // A whole RoBERTa step with the released checkpoints' type_vocab_size of 1, as webgpu runs it.
  const config = parseModelConfig({
    model_type: 'roberta', vocab_size: 60, hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2,
    intermediate_size: 32, max_position_embeddings: 40, type_vocab_size: 1, layer_norm_eps: 1e-5,
  }, 'test');
  const batch = new SyntheticBatches(config, 2, 16, 5, 0.3).next();
  const tokenTypes = (mode: EmbeddingGrad) => {
    const model = createMaskedLM(tf, config, { seed: 3, capabilities: { ...REFERENCE_CAPABILITIES, embeddingGrad: mode } });
    const table = model.variables.get('roberta.embeddings.token_type_embeddings.weight')!;
    const g = tf.tidy(() => {
      const inputs = batchInputs(tf, batch);
      const { grads } = tf.variableGrads(() => model.maskedLossSum(inputs, batch.labels, { training: false }).loss, [...model.variables.values()]);
      return grads[table.name].dataSync() as Float32Array;
    });
    model.dispose();
    return g;
  };
  assert.ok(maxRel(tokenTypes('matmul'), tokenTypes('gather')) < 1e-5);
  tf.dispose([ids, up, v]);
});
