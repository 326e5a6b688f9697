// Tests for training/models/weights.ts: the export of a bert-mini equals the tensor list that
// transformers' save_pretrained writes (a fixture written from knowledge of transformers), import
// and export are inverse, Linear weights are transposed, the init follows `_init_weights`, and
// every kind of mismatched checkpoint is refused with a message naming the tensors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { InputError } from '../../../common/errors.ts';
import { selectBackend } from '../../../training/backend.ts';
import { createBert } from '../../../training/models/bert.ts';
import { parseModelConfig, type ModelConfig } from '../../../training/models/config.ts';
import { createMaskedLM } from '../../../training/models/roberta.ts';
import {
  exportWeights,
  importWeights,
  initialWeights,
  packTensors,
  parameterTable,
  unpackTensors,
  type NamedArray,
} from '../../../training/models/weights.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const quiet = { log: (_line: string) => {} };

function readJson(rel: string): Record<string, unknown> {
  return JSON.parse(readFileSync(path.join(ROOT, rel), 'utf8')) as Record<string, unknown>;
}
function config(rel: string): ModelConfig {
  return parseModelConfig(readJson(rel), rel);
}
const tinyBert = config('tests/fixtures/reference/bert/config.json');
const tinyRoberta = config('tests/fixtures/reference/roberta/config.json');

/** A transformers-layout state dict for `cfg`: export of fresh weights, computed without a model. */
function hfTensors(cfg: ModelConfig, seed = 1): Map<string, NamedArray> {
  const ours = initialWeights(cfg, seed).tensors;
  const out = new Map<string, NamedArray>();
  for (const spec of parameterTable(cfg)) {
    const t = ours.get(spec.name)!;
    let data = t.data;
    if (spec.linear) {
      const [rows, cols] = spec.shape;
      data = new Float32Array(data.length);
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) data[c * rows + r] = t.data[r * cols + c];
    }
    out.set(spec.name, { shape: [...spec.hfShape], data });
  }
  return out;
}

function refuses(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof InputError, `expected InputError, got ${String(err)}`);
    assert.match(err.message, pattern);
    return true;
  });
}

test('the export of a bert-mini is exactly what save_pretrained writes', async () => {
  const fixture = readJson('tests/fixtures/reference/hf-state-dict-bert-mini.json') as {
    tensors: Record<string, number[]>;
    dropped_tied: Record<string, string>;
  };
  const { tf } = await selectBackend('cpu', quiet);
  const model = createBert(tf, config('configs/bert-mini.json'), { seed: 7 });
  const exported = await exportWeights(model);
  model.dispose();
  const ours = Object.fromEntries([...exported].map(([name, t]) => [name, t.shape]));
  assert.deepEqual(Object.keys(ours).sort(), Object.keys(fixture.tensors).sort());
  assert.deepEqual(ours, fixture.tensors);
  for (const dropped of Object.keys(fixture.dropped_tied)) assert.equal(exported.has(dropped), false, dropped);
});

test('the RoBERTa table matches the distilroberta-base list save_pretrained writes', () => {
  const fixture = readJson('tests/fixtures/reference/hf-state-dict-distilroberta-base.json') as { tensors: Record<string, number[]> };
  const table = parameterTable(config('configs/distilroberta-base.json'));
  assert.deepEqual(Object.fromEntries(table.map((s) => [s.name, [...s.hfShape]])), fixture.tensors);
});

test('import then export gives the checkpoint back; Linear weights are transposed', async () => {
  const { tf } = await selectBackend('cpu', quiet);
  for (const cfg of [tinyBert, tinyRoberta]) {
    const hf = hfTensors(cfg, 3);
    const imported = importWeights(cfg, hf, 'ckpt');
    const q = `${cfg.model_type}.encoder.layer.0.intermediate.dense.weight`; // HF [37, 32], ours [32, 37]
    assert.deepEqual(imported.tensors.get(q)!.shape, [32, 37]);
    assert.equal(imported.tensors.get(q)!.data[5 * 37 + 11], hf.get(q)!.data[11 * 32 + 5]);
    const model = createMaskedLM(tf, cfg, { weights: imported });
    const back = await exportWeights(model);
    model.dispose();
    assert.deepEqual([...back.keys()], [...hf.keys()]);
    for (const [name, t] of hf) {
      assert.deepEqual(back.get(name)!.shape, t.shape, name);
      assert.deepEqual(back.get(name)!.data, t.data, name);
    }
  }
});

test('weight decay applies to Linear and embedding weights, not to biases and LayerNorm weights', () => {
  const noDecay = parameterTable(tinyBert).filter((s) => !s.decay).map((s) => s.name);
  assert.ok(noDecay.every((n) => n.endsWith('.bias') || /LayerNorm\.weight$/.test(n)), noDecay.join());
  assert.equal(noDecay.length, parameterTable(tinyBert).filter((s) => s.name.endsWith('.bias') || s.name.endsWith('LayerNorm.weight')).length);
  assert.ok(parameterTable(tinyRoberta).find((s) => s.name === 'lm_head.layer_norm.weight')!.decay === false);
  assert.ok(parameterTable(tinyRoberta).find((s) => s.name === 'roberta.embeddings.word_embeddings.weight')!.decay);
});

test('fresh weights follow transformers _init_weights, from the seed alone', () => {
  const cfg = parseModelConfig({ ...readJson('configs/bert-tiny.json'), vocab_size: 3000 }, 'x');
  const a = initialWeights(cfg, 42).tensors;
  const words = a.get('bert.embeddings.word_embeddings.weight')!;
  let sum = 0;
  let sq = 0;
  for (const v of words.data) {
    sum += v;
    sq += v * v;
  }
  const n = words.data.length - 128; // the padding row is zero
  assert.ok(Math.abs(sum / n) < 1e-3, `mean ${sum / n}`);
  assert.ok(Math.abs(Math.sqrt(sq / n) - 0.02) < 5e-4, `std ${Math.sqrt(sq / n)}`);
  assert.ok(words.data.subarray(0, 128).every((v) => v === 0), 'pad row (pad_token_id 0) is zero');
  assert.ok(a.get('bert.encoder.layer.1.output.LayerNorm.weight')!.data.every((v) => v === 1));
  assert.ok(a.get('bert.encoder.layer.1.output.LayerNorm.bias')!.data.every((v) => v === 0));
  assert.ok(a.get('bert.encoder.layer.0.attention.self.query.bias')!.data.every((v) => v === 0));
  assert.ok(a.get('cls.predictions.bias')!.data.every((v) => v === 0));
  assert.ok(a.get('bert.encoder.layer.0.attention.self.query.weight')!.data.some((v) => v !== 0));
  // Deterministic per seed, different across seeds.
  assert.deepEqual(initialWeights(cfg, 42).tensors.get('bert.encoder.layer.0.output.dense.weight'), a.get('bert.encoder.layer.0.output.dense.weight'));
  assert.notDeepEqual(initialWeights(cfg, 43).tensors.get('bert.encoder.layer.0.output.dense.weight'), a.get('bert.encoder.layer.0.output.dense.weight'));
  // RoBERTa: the padding rows of the word and position embeddings (pad_token_id 1) are zero.
  const r = initialWeights(tinyRoberta, 1).tensors;
  for (const name of ['roberta.embeddings.word_embeddings.weight', 'roberta.embeddings.position_embeddings.weight']) {
    const t = r.get(name)!;
    assert.ok(t.data.subarray(32, 64).every((v) => v === 0), name);
    assert.ok(t.data.subarray(0, 32).some((v) => v !== 0), name);
  }
});

test('names transformers ignores for a masked LM are accepted; tied decoder names must equal their twins', () => {
  const hf = hfTensors(tinyBert);
  const words = hf.get('bert.embeddings.word_embeddings.weight')!;
  const bias = hf.get('cls.predictions.bias')!;
  const extra = new Map(hf);
  extra.set('bert.pooler.dense.weight', { shape: [32, 32], data: new Float32Array(1024) });
  extra.set('bert.pooler.dense.bias', { shape: [32], data: new Float32Array(32) });
  extra.set('cls.seq_relationship.weight', { shape: [2, 32], data: new Float32Array(64) });
  extra.set('cls.seq_relationship.bias', { shape: [2], data: new Float32Array(2) });
  extra.set('bert.embeddings.position_ids', { shape: [1, 64], data: new Float32Array(64) });
  extra.set('cls.predictions.decoder.weight', { shape: [...words.shape], data: words.data.slice() });
  extra.set('cls.predictions.decoder.bias', { shape: [...bias.shape], data: bias.data.slice() });
  const imported = importWeights(tinyBert, extra, 'ckpt');
  assert.equal(imported.tensors.size, parameterTable(tinyBert).length);

  const untied = new Map(extra);
  const changed = words.data.slice();
  changed[5] += 1;
  untied.set('cls.predictions.decoder.weight', { shape: [...words.shape], data: changed });
  refuses(() => importWeights(tinyBert, untied, 'ckpt'), /^ckpt: cls\.predictions\.decoder\.weight differs from bert\.embeddings\.word_embeddings\.weight: mlmkit ties/);

  // The bias under the decoder's name only (how a checkpoint may store it) is the bias.
  const onlyDecoderBias = new Map(hf);
  onlyDecoderBias.delete('cls.predictions.bias');
  onlyDecoderBias.set('cls.predictions.decoder.bias', bias);
  assert.deepEqual(importWeights(tinyBert, onlyDecoderBias, 'ckpt').tensors.get('cls.predictions.bias')!.data, bias.data);

  // RoBERTa's pooler and tied lm_head.decoder.* likewise.
  const rob = hfTensors(tinyRoberta);
  rob.set('roberta.pooler.dense.bias', { shape: [32], data: new Float32Array(32) });
  rob.set('lm_head.decoder.weight', rob.get('roberta.embeddings.word_embeddings.weight')!);
  rob.set('lm_head.decoder.bias', rob.get('lm_head.bias')!);
  assert.equal(importWeights(tinyRoberta, rob, 'ckpt').tensors.size, parameterTable(tinyRoberta).length);
});

test('missing, unexpected and misshapen tensors are refused, naming them', () => {
  const hf = hfTensors(tinyBert);
  const missing = new Map(hf);
  missing.delete('bert.encoder.layer.1.output.dense.bias');
  missing.delete('cls.predictions.transform.LayerNorm.weight');
  refuses(
    () => importWeights(tinyBert, missing, 'ckpt'),
    /^ckpt: the checkpoint lacks 2 weight\(s\) of a bert masked LM: bert\.encoder\.layer\.1\.output\.dense\.bias, cls\.predictions\.transform\.LayerNorm\.weight$/,
  );

  const unexpected = new Map(hf);
  unexpected.set('bert.encoder.layer.2.output.dense.bias', { shape: [32], data: new Float32Array(32) });
  refuses(() => importWeights(tinyBert, unexpected, 'ckpt'), /does not use: bert\.encoder\.layer\.2\.output\.dense\.bias$/);

  // A config with more layers than the checkpoint (10^8 here): said at once, before the table of
  // expected tensors is built (it ran out of memory).
  const deep = parseModelConfig({ ...readJson('tests/fixtures/reference/bert/config.json'), num_hidden_layers: 100_000_000 }, 'x');
  const t0 = Date.now();
  refuses(() => importWeights(deep, hf, 'ckpt'), /^ckpt: config\.json says num_hidden_layers 100000000 but the checkpoint holds the weights of 2 layer\(s\)$/);
  assert.ok(Date.now() - t0 < 1000, `took ${Date.now() - t0} ms`);

  const misshapen = new Map(hf);
  misshapen.set('bert.encoder.layer.0.intermediate.dense.weight', { shape: [32, 37], data: new Float32Array(32 * 37) });
  refuses(
    () => importWeights(tinyBert, misshapen, 'ckpt'),
    /^ckpt: bert\.encoder\.layer\.0\.intermediate\.dense\.weight has shape \[32, 37\] but the config implies \[37, 32\]$/,
  );

  const vocab = parseModelConfig({ ...readJson('configs/bert-mini.json') }, 'x');
  const small = new Map<string, NamedArray>([['bert.embeddings.word_embeddings.weight', { shape: [30000, 256], data: new Float32Array(0) }]]);
  refuses(
    () => importWeights(vocab, small, 'ckpt'),
    /^ckpt: config\.json says vocab_size 30522 but bert\.embeddings\.word_embeddings\.weight has 30000 rows$/,
  );

  // A RoBERTa checkpoint offered to a BERT config: every name is wrong.
  refuses(() => importWeights(tinyBert, hfTensors(tinyRoberta), 'ckpt'), /lacks \d+ weight\(s\) of a bert masked LM: bert\.embeddings\./);
});

test('a base-model checkpoint (no bert. prefix) is read as transformers does: the head is reported missing', () => {
  const hf = hfTensors(tinyBert);
  const base = new Map<string, NamedArray>();
  for (const [name, t] of hf) if (name.startsWith('bert.')) base.set(name.slice('bert.'.length), t);
  base.set('pooler.dense.weight', { shape: [32, 32], data: new Float32Array(1024) });
  refuses(
    () => importWeights(tinyBert, base, 'ckpt'),
    /lacks 5 weight\(s\) of a bert masked LM: cls\.predictions\.transform\.dense\.weight, cls\.predictions\.transform\.dense\.bias, cls\.predictions\.transform\.LayerNorm\.weight, cls\.predictions\.transform\.LayerNorm\.bias, cls\.predictions\.bias$/,
  );
  // With the head present (keys as a prefix-less MaskedLM save would have them) it loads.
  for (const [name, t] of hf) if (name.startsWith('cls.')) base.set(name, t);
  const imported = importWeights(tinyBert, base, 'ckpt');
  assert.deepEqual(imported.tensors.get('bert.embeddings.LayerNorm.weight')!.data, hf.get('bert.embeddings.LayerNorm.weight')!.data);
});

test('legacy LayerNorm.gamma / .beta names are read as .weight / .bias', () => {
  const hf = hfTensors(tinyBert);
  const legacy = new Map<string, NamedArray>();
  for (const [name, t] of hf) legacy.set(name.replace(/LayerNorm\.weight$/, 'LayerNorm.gamma').replace(/LayerNorm\.bias$/, 'LayerNorm.beta'), t);
  assert.ok(legacy.has('bert.embeddings.LayerNorm.gamma'));
  const imported = importWeights(tinyBert, legacy, 'ckpt');
  assert.deepEqual(imported.tensors.get('bert.embeddings.LayerNorm.bias')!.data, hf.get('bert.embeddings.LayerNorm.bias')!.data);
});

test('packed storage: query, key and value side by side per layer, cut back exactly; a missing part is named', () => {
  const cfg = config('configs/bert-tiny.json');
  const H = cfg.hidden_size;
  const weights = initialWeights(cfg, 3).tensors;
  const packed = packTensors(cfg, weights);
  const self = 'bert.encoder.layer.1.attention.self';
  assert.equal(packed.size, weights.size - 4 * cfg.num_hidden_layers, 'three weights and three biases become two tensors per layer');
  const w = packed.get(`${self}.qkv.weight`)!;
  assert.deepEqual(w.shape, [H, 3 * H]);
  // Row r of the packed weight is row r of query, then of key, then of value.
  for (const [k, part] of ['query', 'key', 'value'].entries()) {
    const src = weights.get(`${self}.${part}.weight`)!.data;
    for (const r of [0, 5, H - 1]) assert.deepEqual(w.data.subarray(r * 3 * H + k * H, r * 3 * H + (k + 1) * H), src.subarray(r * H, (r + 1) * H), `${part} row ${r}`);
    assert.deepEqual(packed.get(`${self}.qkv.bias`)!.data.subarray(k * H, (k + 1) * H), weights.get(`${self}.${part}.bias`)!.data);
  }
  const back = unpackTensors(cfg, packed);
  assert.deepEqual([...back.keys()].sort(), [...weights.keys()].sort());
  for (const [name, t] of weights) assert.deepEqual(back.get(name), t, name);
  const partial = new Map(weights);
  partial.delete(`${self}.value.bias`);
  assert.throws(() => packTensors(cfg, partial, 'model weights'), /model weights: bert\.encoder\.layer\.1\.attention\.self\.value\.bias is missing/);
  assert.throws(() => unpackTensors(cfg, new Map([[`${self}.qkv.bias`, { shape: [3 * H + 1], data: new Float32Array(3 * H + 1) }]])), /do not split into 3 parts/);
});
