// One optimizer step (training/train-step.ts `optimizerStep`) on the cpu backend: a step whose
// batch holds no masked token has no gradient, and leaves the AdamW state as it was, its update
// count included, so that the next real update uses the bias corrections of torch.optim.AdamW,
// which counts a parameter's steps only when it has a gradient.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IGNORE_INDEX, type MlmBatch } from '../../data/masking.ts';
import { selectBackend } from '../../training/backend.ts';
import { SyntheticBatches } from '../../training/bench.ts';
import { parseModelConfig } from '../../training/models/config.ts';
import { createMaskedLM } from '../../training/models/roberta.ts';
import { decayedParameters } from '../../training/models/weights.ts';
import { ADAMW_DEFAULTS, AdamW } from '../../training/optimizer.ts';
import { optimizerStep } from '../../training/train-step.ts';

const config = parseModelConfig({
  model_type: 'bert', architectures: ['BertForMaskedLM'], vocab_size: 64, hidden_size: 16, num_hidden_layers: 1,
  num_attention_heads: 2, intermediate_size: 32, max_position_embeddings: 16, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0,
  pad_token_id: 0,
}, 'tiny');

test('a step with no masked token changes nothing, and the next update is AdamW\'s first (bias corrections of t = 1)', async () => {
  const { tf } = await selectBackend('cpu', { log: () => {} });
  const batch = new SyntheticBatches(config, 2, 8, 5).next();
  const empty: MlmBatch = { ...batch, labels: new Int32Array(batch.labels.length).fill(IGNORE_INDEX) };
  const o = { seed: 1, lr: 1e-2, maxGradNorm: 1 };

  const a = createMaskedLM(tf, config, { seed: 3 });
  const b = createMaskedLM(tf, config, { seed: 3 });
  const optA = new AdamW(tf, a.variables, decayedParameters(config), ADAMW_DEFAULTS);
  const optB = new AdamW(tf, b.variables, decayedParameters(config), ADAMW_DEFAULTS);
  const before = new Map([...a.variables].map(([n, v]) => [n, Float32Array.from(v.dataSync())]));

  const none = await optimizerStep(tf, a, optA, [empty], { ...o, step: 1 });
  assert.equal(none.masked, 0);
  assert.equal(optA.step, 0, 'no gradient, no update: the update count stays 0');
  for (const [n, v] of a.variables) assert.deepEqual(v.dataSync(), before.get(n), `${n} changed`);

  await optimizerStep(tf, a, optA, [batch], { ...o, step: 2 });
  await optimizerStep(tf, b, optB, [batch], { ...o, step: 2 });
  assert.equal(optA.step, 1);
  for (const [n, v] of a.variables) assert.deepEqual(v.dataSync(), b.variables.get(n)!.dataSync(), `${n} differs from a run without the empty step`);
  optA.dispose();
  optB.dispose();
  a.dispose();
  b.dispose();
});
