// Parity of mlmkit's BERT and RoBERTa forward pass with an independent PyTorch reference
// (scripts/reference/torch_bert_reference.py: torch.nn.TransformerEncoderLayer with the HF
// weights mapped in, hand-written embeddings and MLM head). The fixtures hold tiny random models
// (vocab 99, hidden 32, 2 layers, 4 heads) saved under Hugging Face names, and the logits on two
// rows, one padded. The weights go through weights.ts's importWeights; logits must match within
// 1e-4 absolute at every position (padded ones too: both sides compute them the same way) on the
// cpu and wasm backends, and webgpu where an adapter is present (software ones included; with
// MLM_REQUIRE_WEBGPU=1, as in CI, a missing adapter fails these tests instead of skipping). The
// RoBERTa fixture uses gelu_new in the encoder and exact GELU in its head, as transformers'
// RobertaLMHead does. Then the same against transformers itself (tests/fixtures/hf), and last the
// masked loss and its gradients on webgpu against cpu (docs/backends.md, "Determinism and agreement between backends").
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Tensor2D } from '@tensorflow/tfjs';
import { probeWebGpu, releaseWebGpu, selectBackend, type Tf } from '../../../training/backend.ts';
import { readConfigFile } from '../../../training/checkpoint.ts';
import { IGNORE_INDEX } from '../../../training/models/bert.ts';
import { parseModelConfig, type ModelConfig } from '../../../training/models/config.ts';
import { createMaskedLM } from '../../../training/models/roberta.ts';
import { importWeights, type ModelWeights, type NamedArray } from '../../../training/models/weights.ts';
import { loadSafetensorsF32 } from '../../../training/safetensors.ts';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../fixtures/reference');
const HF = path.join(FIXTURES, '../hf');

// A minimal safetensors reader for F32 files (training/safetensors.ts is the full one; this test
// stays independent of it).
function readSafetensorsF32(file: string): Map<string, NamedArray> {
  const bytes = readFileSync(file);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8')) as Record<
    string,
    { dtype: string; shape: number[]; data_offsets: [number, number] }
  >;
  const start = 8 + headerLength;
  const out = new Map<string, NamedArray>();
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    assert.equal(info.dtype, 'F32', name);
    const [b, e] = info.data_offsets;
    const data = new Float32Array((e - b) / 4);
    Buffer.from(data.buffer).set(bytes.subarray(start + b, start + e));
    out.set(name, { shape: info.shape, data });
  }
  return out;
}

interface Reference {
  input_ids: number[][];
  attention_mask: number[][];
  token_type_ids: number[][];
  last_hidden_state: number[][][];
  logits: number[][][];
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const probe = await probeWebGpu();
// With MLM_REQUIRE_WEBGPU=1 (CI) webgpu is tested without an adapter too, and fails with the reason.
const webgpuRequired = process.env.MLM_REQUIRE_WEBGPU?.trim() === '1';
const backends = probe.ok || webgpuRequired ? (['cpu', 'wasm', 'webgpu'] as const) : (['cpu', 'wasm'] as const);
const quiet = { log: (_line: string) => {} };

/** Back to cpu after webgpu, releasing the device (as tests/training/backend.test.ts does). */
async function leave(tf: Tf, backend: string): Promise<void> {
  if (backend !== 'webgpu') return;
  releaseWebGpu(tf);
  await selectBackend('cpu', quiet);
}

/**
 * Runs `weights` on `ref`'s rows on each backend and asserts logits and last hidden state within
 * 1e-4 absolute at every position (padded ones too: both sides compute them the same way).
 */
async function compareForward(
  t: { diagnostic: (line: string) => void },
  family: 'bert' | 'roberta',
  config: ModelConfig,
  weights: ModelWeights,
  ref: Reference,
  on: readonly ('cpu' | 'wasm' | 'webgpu')[],
  against: string,
): Promise<void> {
  const B = ref.input_ids.length;
  const T = ref.input_ids[0].length;
  const V = config.vocab_size;
  for (const backend of on) {
    const { tf, capabilities } = await selectBackend(backend, quiet);
    const model = createMaskedLM(tf, config, { weights, capabilities });
    const inputs = {
      inputIds: tf.tensor2d(ref.input_ids, [B, T], 'int32') as Tensor2D,
      attentionMask: tf.tensor2d(ref.attention_mask, [B, T], 'int32') as Tensor2D,
      // RoBERTa: left out, so the model's all-zero default is what is compared.
      ...(family === 'bert' ? { tokenTypeIds: tf.tensor2d(ref.token_type_ids, [B, T], 'int32') as Tensor2D } : {}),
    };
    const hidden = model.encode(inputs, { training: false });
    const logits = model.logits(inputs, { training: false });
    assert.deepEqual(logits.shape, [B, T, V]);
    const hiddenDiff = maxAbsDiff(await hidden.data(), ref.last_hidden_state.flat(2));
    const got = await logits.data();
    const logitsDiff = maxAbsDiff(got, ref.logits.flat(2));
    // The same at real positions only (row 1 is padded after position 8).
    const real = (i: number) => ref.attention_mask[Math.floor(i / (T * V))][Math.floor(i / V) % T];
    const realDiff = maxAbsDiff(
      Array.from({ length: B * T * V }, (_, i) => (real(i) ? got[i] : 0)),
      ref.logits.flat(2).map((v, i) => (real(i) ? v : 0)),
    );
    t.diagnostic(
      `${family} on ${backend}: max |logits - ${against}| ${logitsDiff.toExponential(2)} (real positions ${realDiff.toExponential(2)}), hidden ${hiddenDiff.toExponential(2)}`,
    );
    assert.ok(logitsDiff < 1e-4, `${family} ${backend}: logits differ from ${against} by ${logitsDiff}`);
    assert.ok(hiddenDiff < 1e-4, `${family} ${backend}: hidden states differ from ${against} by ${hiddenDiff}`);
    tf.dispose([hidden, logits, ...Object.values(inputs)]);
    model.dispose();
    await leave(tf, backend);
  }
}

for (const family of ['bert', 'roberta'] as const) {
  test(`${family}: logits match the PyTorch reference within 1e-4 on ${backends.join(', ')}`, async (t) => {
    const dir = path.join(FIXTURES, family);
    const config = parseModelConfig(JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8')), `${dir}/config.json`);
    const ref = JSON.parse(readFileSync(path.join(dir, 'reference.json'), 'utf8')) as Reference;
    const weights = importWeights(config, readSafetensorsF32(path.join(dir, 'model.safetensors')), dir);
    if (!probe.ok) t.diagnostic(`webgpu skipped: ${probe.reason}`);
    await compareForward(t, family, config, weights, ref, backends, 'torch');
  });
}

// Against transformers itself: tests/fixtures/hf/{bert,roberta} were written with transformers
// 5.17.0 and torch 2.11 by scripts/reference/hf_fixtures.py: a random BertForMaskedLM /
// RobertaForMaskedLM (the tiny configs, initializer_range 0.3 so the logits are far from zero)
// saved with save_pretrained, and its logits and last hidden state on the same two rows in eager
// attention. The folder goes through mlmkit's own readers (readConfigFile: transformers 5's
// config.json with `dtype`, `tie_word_embeddings`...; the safetensors reader; importWeights, which
// ties the decoder that save_pretrained leaves out).
for (const family of ['bert', 'roberta'] as const) {
  test(`${family}: a transformers 5.17 save_pretrained folder gives transformers' logits within 1e-4 (cpu, wasm)`, async (t) => {
    const dir = path.join(HF, family);
    const config = await readConfigFile(dir);
    const raw = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8')) as { transformers_version: string };
    assert.equal(raw.transformers_version, '5.17.0');
    const tensors = await loadSafetensorsF32(path.join(dir, 'model.safetensors'));
    // save_pretrained leaves the tied decoder out; importWeights ties it to the word embeddings.
    assert.equal([...tensors.keys()].some((k) => k.endsWith('decoder.weight')), false);
    const ref = JSON.parse(readFileSync(path.join(dir, 'reference.json'), 'utf8')) as Reference;
    const largest = Math.max(...ref.logits.flat(2).map(Math.abs));
    assert.ok(largest > 1, `reference logits up to ${largest}: far enough from zero to compare`);
    await compareForward(t, family, config, importWeights(config, tensors, dir), ref, ['cpu', 'wasm'], 'transformers');
  });
}

test('the tensor lists save_pretrained wrote (transformers 5.17.0) are the reference fixtures mlmkit exports against', () => {
  for (const name of ['bert-mini', 'distilroberta-base']) {
    const written = JSON.parse(readFileSync(path.join(HF, `state-dict-${name}.json`), 'utf8')) as Record<string, number[]>;
    const known = JSON.parse(readFileSync(path.join(HF, '../reference', `hf-state-dict-${name}.json`), 'utf8')) as { tensors: Record<string, number[]> };
    assert.deepEqual(written, known.tensors, name);
  }
});

test('webgpu: the masked loss and its gradients equal cpu (training, with dropout)', { skip: probe.ok || webgpuRequired ? false : `no WebGPU adapter: ${probe.reason}` }, async (t) => {
  const dir = path.join(FIXTURES, 'bert');
  const config = parseModelConfig(JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8')), dir);
  const weights = importWeights(config, readSafetensorsF32(path.join(dir, 'model.safetensors')), dir);
  const ref = JSON.parse(readFileSync(path.join(dir, 'reference.json'), 'utf8')) as Reference;
  const [B, T] = [ref.input_ids.length, ref.input_ids[0].length];
  const labels = new Int32Array(B * T).fill(IGNORE_INDEX);
  for (const [p, l] of [[1, 5], [3, 40], [7, 98], [13, 2], [19, 60]]) labels[p] = l;
  const run = async (backend: 'cpu' | 'webgpu'): Promise<{ loss: number; grads: Map<string, Float32Array> }> => {
    const { tf, capabilities } = await selectBackend(backend, quiet);
    const model = createMaskedLM(tf, config, { weights, capabilities });
    const inputs = {
      inputIds: tf.tensor2d(ref.input_ids, [B, T], 'int32') as Tensor2D,
      attentionMask: tf.tensor2d(ref.attention_mask, [B, T], 'int32') as Tensor2D,
      tokenTypeIds: tf.tensor2d(ref.token_type_ids, [B, T], 'int32') as Tensor2D,
    };
    const { value, grads } = tf.variableGrads(() => model.maskedLoss(inputs, labels, { training: true, dropoutSeed: 7 }).loss);
    const byName = new Map<string, Float32Array>();
    for (const [name, v] of model.variables) byName.set(name, (await grads[v.name].data()) as Float32Array);
    const loss = (await value.data())[0];
    tf.dispose([value, ...Object.values(grads), inputs.inputIds, inputs.attentionMask, inputs.tokenTypeIds]);
    model.dispose();
    await leave(tf, backend);
    return { loss, grads: byName };
  };
  const want = await run('cpu');
  const got = await run('webgpu');
  let worst = 0;
  for (const [name, g] of want.grads) {
    const scale = Math.max(1e-2, ...Array.from(g, Math.abs));
    worst = Math.max(worst, maxAbsDiff(got.grads.get(name)!, g) / scale);
  }
  t.diagnostic(`loss cpu ${want.loss} webgpu ${got.loss}; largest relative gradient difference ${worst.toExponential(2)}`);
  assert.ok(Math.abs(got.loss - want.loss) <= 1e-3 * Math.abs(want.loss));
  assert.ok(worst < 1e-3, `gradients differ by ${worst}`);
});
