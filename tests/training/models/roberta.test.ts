// Tests for training/models/roberta.ts: position ids as transformers'
// create_position_ids_from_input_ids makes them, the sequence-length limit they imply, the
// family checks, and the masked loss of a tiny RoBERTa on cpu and wasm.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Tensor2D } from '@tensorflow/tfjs';
import { InputError } from '../../../common/errors.ts';
import { selectBackend } from '../../../training/backend.ts';
import { createBert, IGNORE_INDEX } from '../../../training/models/bert.ts';
import { parseModelConfig } from '../../../training/models/config.ts';
import { createMaskedLM, createRoberta, robertaPositionIds } from '../../../training/models/roberta.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const quiet = { log: (_line: string) => {} };
const config = parseModelConfig(
  JSON.parse(readFileSync(path.join(ROOT, 'tests/fixtures/reference/roberta/config.json'), 'utf8')),
  'tiny roberta',
);

test('position ids count real tokens from pad_token_id + 1; padding gets pad_token_id', async () => {
  for (const name of ['cpu', 'wasm'] as const) {
    const { tf } = await selectBackend(name, quiet);
    // pad = 1. Row 0: no padding. Row 1: right padding. Row 2: a padding id in the middle.
    const ids = tf.tensor2d([[0, 5, 6, 7, 2], [0, 9, 2, 1, 1], [0, 1, 8, 2, 1]], [3, 5], 'int32') as Tensor2D;
    const positions = robertaPositionIds(tf, ids, 1);
    assert.equal(positions.dtype, 'int32');
    assert.deepEqual(await positions.array(), [[2, 3, 4, 5, 6], [2, 3, 4, 1, 1], [2, 1, 3, 4, 1]]);
    tf.dispose([ids, positions]);
  }
});

test('sequences longer than max_position_embeddings - pad_token_id - 1 are refused', async () => {
  const { tf } = await selectBackend('cpu', quiet);
  const m = createRoberta(tf, config, { seed: 1 });
  const ok = tf.fill([1, 62], 5, 'int32') as Tensor2D;
  const t = m.encode({ inputIds: ok, attentionMask: ok }, { training: false });
  assert.deepEqual(t.shape, [1, 62, 32]);
  const long = tf.fill([1, 63], 5, 'int32') as Tensor2D;
  assert.throws(
    () => m.encode({ inputIds: long, attentionMask: long }, { training: false }),
    (err: unknown) => err instanceof InputError && /63 tokens are longer than this roberta model's 62 positions/.test(err.message),
  );
  tf.dispose([ok, long, t]);
  m.dispose();
});

test('each family builds only from its own config; createMaskedLM picks the family', async () => {
  const { tf } = await selectBackend('cpu', quiet);
  assert.throws(() => createBert(tf, config, { seed: 1 }), /a roberta config cannot build a bert model/);
  const m = createMaskedLM(tf, config, { seed: 1 });
  assert.equal(m.family, 'roberta');
  assert.ok(m.variables.has('lm_head.layer_norm.weight'));
  assert.ok(m.variables.has('roberta.embeddings.token_type_embeddings.weight'));
  assert.equal(m.variables.has('lm_head.decoder.weight'), false, 'the decoder is the word embeddings');
  m.dispose();
});

test('the masked loss of a RoBERTa agrees on cpu and wasm, with a flat tensor count', async () => {
  const losses: number[] = [];
  for (const name of ['cpu', 'wasm'] as const) {
    const { tf } = await selectBackend(name, quiet);
    const m = createRoberta(tf, config, { seed: 4 });
    const ids = tf.tensor2d([[0, 10, 11, 12, 13, 2], [0, 20, 21, 2, 1, 1]], [2, 6], 'int32') as Tensor2D;
    const mask = tf.tensor2d([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], [2, 6], 'int32') as Tensor2D;
    const labels = new Int32Array(12).fill(IGNORE_INDEX);
    labels[2] = 50;
    labels[7] = 60;
    const step = (): number => {
      const { value, grads } = tf.variableGrads(() => m.maskedLoss({ inputIds: ids, attentionMask: mask }, labels, { training: true, dropoutSeed: 3 }).loss);
      const v = value.dataSync()[0];
      tf.dispose([value, ...Object.values(grads)]);
      return v;
    };
    losses.push(step());
    const count = tf.memory().numTensors;
    step();
    assert.equal(tf.memory().numTensors, count);
    tf.dispose([ids, mask]);
    m.dispose();
  }
  // With init std 0.02 the logits are near uniform: the loss is about ln(99).
  assert.ok(Math.abs(losses[0] - Math.log(99)) < 0.3, `loss ${losses[0]}`);
  assert.ok(Math.abs(losses[0] - losses[1]) < 1e-4, `cpu ${losses[0]} vs wasm ${losses[1]}`);
});
