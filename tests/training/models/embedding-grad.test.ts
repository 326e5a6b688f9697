// The 'matmul' gradient of embedding rows (makeOps's embeddingRows; what webgpu uses, since its
// UnsortedSegmentSum serialises repeated ids on atomics) against tf.gather's own gradient, on cpu:
// small tables in several chunks, a large table with host ids in several chunks, repeated ids,
// and a whole training step of bert-tiny (every weight's gradient) with each method.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Scalar, Tensor1D, Tensor2D } from '@tensorflow/tfjs';
import { selectBackend } from '../../../training/backend.ts';
import { distinctIds, makeOps, type EmbeddingGrad } from '../../../training/models/bert.ts';
import { parseModelConfig } from '../../../training/models/config.ts';
import { createMaskedLM } from '../../../training/models/roberta.ts';
import { SyntheticBatches } from '../../../training/bench.ts';
import { batchInputs } from '../../../training/evaluate.ts';
import { Rng } from '../../../data/rng.ts';

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

for (const [label, S, withHost] of [
  ['small table (one-hot over the table)', 40, false],
  ['large table (distinct ids from the host)', 5000, true],
  ['large table without host ids (gather fallback)', 5000, false],
] as const) {
  test(`embeddingRows 'matmul' gradient equals tf.gather's: ${label}`, () => {
    const N = 300;
    const H = 8;
    const rng = new Rng(S);
    const rand = () => rng.next();
    // Skewed ids: half the rows take one of 3 ids, so repeats are many.
    const ids = Int32Array.from({ length: N }, () => (rand() < 0.5 ? Math.floor(rand() * 3) : Math.floor(rand() * S)));
    const table = tf.tensor2d(Float32Array.from({ length: S * H }, () => rand() - 0.5), [S, H]);
    const up = tf.tensor2d(Float32Array.from({ length: N * H }, () => rand() - 0.5), [N, H]);
    const idsT = tf.tensor1d(ids, 'int32') as Tensor1D;
    const grad = (mode: EmbeddingGrad, entries?: number) => {
      // A small one-hot budget forces several chunks (small table: 25 rows each; large: ~5).
      const ops = makeOps(tf, { embeddingGrad: mode, oneHotEntries: entries });
      const before = tf.memory().numTensors;
      const [value, g] = tf.tidy(() => {
        const f = (t: Tensor2D) => tf.sum(tf.mul(ops.embeddingRows(t, idsT, withHost ? ids : undefined), up)) as Scalar;
        const { value, grads } = tf.variableGrads(() => f(v), [v]);
        return [value, grads[v.name]];
      });
      assert.equal(tf.memory().numTensors, before + 2, 'only the value and the gradient remain');
      const out = { value: value.dataSync().slice(), grad: g.dataSync() as Float32Array };
      tf.dispose([value, g]);
      return out;
    };
    const v = tf.variable(table);
    const want = grad('gather');
    for (const entries of [undefined, 1000]) {
      const got = grad('matmul', entries);
      assert.equal(got.value[0], want.value[0]);
      const rel = maxRel(got.grad, want.grad);
      assert.ok(rel < 1e-6, `gradient differs by ${rel} (relative to its largest entry), one-hot budget ${entries ?? 'default'}`);
    }
    tf.dispose([table, up, idsT, v]);
  });
}

test("bert-tiny: one step's gradients are the same with 'matmul' and 'gather' embedding gradients", () => {
  const config = parseModelConfig({
    model_type: 'bert', vocab_size: 500, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2,
    intermediate_size: 32, max_position_embeddings: 64, type_vocab_size: 2,
  }, 'test');
  const batch = new SyntheticBatches(config, 4, 32, 7, 0.15).next();
  const grads = (mode: EmbeddingGrad) => {
    const model = createMaskedLM(tf, config, { seed: 3, embeddingGrad: mode });
    const vars = [...model.variables.values()];
    const before = tf.memory().numTensors;
    const out = new Map<string, Float32Array>();
    tf.tidy(() => {
      const inputs = batchInputs(tf, batch);
      const { grads } = tf.variableGrads(() => model.maskedLossSum(inputs, batch.labels, { training: false }).loss, vars);
      for (const [name, v] of model.variables) out.set(name, grads[v.name].dataSync() as Float32Array);
    });
    assert.equal(tf.memory().numTensors, before, `no tensors left behind (${mode})`);
    model.dispose();
    return out;
  };
  const want = grads('gather');
  const got = grads('matmul');
  for (const [name, g] of want) {
    const rel = maxRel(got.get(name)!, g);
    assert.ok(rel < 1e-5, `${name}: gradient differs by ${rel}`);
  }
  assert.ok(want.has('bert.embeddings.word_embeddings.weight'));
});
