// Tests for the ONNX export (training/onnx-export.ts, `mlm export --format onnx`) on tiny random
// BERT (erf GELU and tanh GELU) and RoBERTa models:
// - ONNX Runtime (onnxruntime-node, CPU) runs onnx/model.onnx on a padded batch of two texts of
//   different lengths and its logits equal mlmkit's own (cpu backend) within 1e-4 at every
//   position, padding included (RoBERTa's position ids are computed in the graph from input_ids);
// - transformers.js's pipeline('fill-mask') on the exported folder, loaded locally with remote
//   models off, returns the same tokens, strings and sequences as `mlm fill-mask --json`, scores
//   within 1e-4;
// - a model the writer cannot express is a one-line InputError, and a bad --format is exit 2.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { InputError } from '../../common/errors.ts';
import { selectBackend, type Tf } from '../../training/backend.ts';
import { loadModelFolder, writeModelFolder } from '../../training/checkpoint.ts';
import { exportModel } from '../../training/export-model.ts';
import { encodeForFillMask } from '../../training/fill-mask.ts';
import { parseModelConfig, type ModelConfig } from '../../training/models/config.ts';
import { createMaskedLM } from '../../training/models/roberta.ts';
import { checkOnnxSupport } from '../../training/onnx-export.ts';
import { makeTinyCheckpoint, ROOT, runMlm } from './tiny-checkpoint.ts';

const TOLERANCE = 1e-4;
let tmp: string;
let tf: Tf;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-onnx-test-'));
  tf = (await selectBackend('cpu', { log: () => {} })).tf;
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

const cases = [
  { name: 'bert', family: 'bert' as const, act: 'gelu' },
  { name: 'bert-tanh-gelu', family: 'bert' as const, act: 'gelu_new' },
  { name: 'roberta', family: 'roberta' as const, act: 'gelu' },
];

/** A tiny checkpoint of `family` whose config says `act` (same random weights). */
async function checkpoint(name: string, family: 'bert' | 'roberta', act: string): Promise<string> {
  const ck = await makeTinyCheckpoint(path.join(tmp, `${name}-src`), family, { seed: 11 });
  if (act === 'gelu') return ck.dir;
  const json = JSON.parse(fs.readFileSync(path.join(ck.dir, 'config.json'), 'utf8'));
  const config = parseModelConfig({ ...json, hidden_act: act }, 'test');
  const dir = path.join(tmp, name);
  await writeModelFolder(dir, { config, weights: ck.hf, tokenizer: ck.tokenizer });
  return dir;
}

for (const c of cases) {
  describe(`ONNX export: ${c.name}`, () => {
    let src: string;
    let out: string;
    before(async () => {
      src = await checkpoint(c.name, c.family, c.act);
      out = path.join(tmp, `${c.name}-onnx`);
      const summary = await exportModel({ model: src, out, format: 'onnx' });
      assert.ok(summary.files.includes('onnx/model.onnx') && summary.files.includes('config.json') && summary.files.includes('tokenizer.json'), summary.files.join(' '));
    });

    test('ONNX Runtime logits equal mlmkit\'s on a padded batch of two lengths', async () => {
      const folder = await loadModelFolder(src);
      const mask = folder.tokenizer.maskToken;
      const texts = [`the ${mask} sat on the mat and looked at the door .`, `a ${mask} .`];
      const rows = await Promise.all(texts.map(async (t) => (await encodeForFillMask(folder.tokenizer, folder.config, t)).ids));
      const T = Math.max(...rows.map((r) => r.length));
      assert.ok(rows[1].length < T, 'the second row is padded');
      const B = rows.length;
      const ids = new Int32Array(B * T).fill(folder.config.pad_token_id);
      const attn = new Int32Array(B * T);
      rows.forEach((r, b) => r.forEach((id, t) => { ids[b * T + t] = id; attn[b * T + t] = 1; }));
      const types = new Int32Array(B * T);
      if (c.family === 'bert') rows.forEach((r, b) => { for (let t = Math.floor(r.length / 2); t < r.length; t++) types[b * T + t] = 1; });

      const model = createMaskedLM(tf, folder.config, { weights: folder.weights });
      const want = tf.tidy(() => model.logits({
        inputIds: tf.tensor2d(ids, [B, T], 'int32'),
        attentionMask: tf.tensor2d(attn, [B, T], 'int32'),
        ...(c.family === 'bert' ? { tokenTypeIds: tf.tensor2d(types, [B, T], 'int32') } : {}),
      }, { training: false }));
      const wantData = await want.data() as Float32Array;
      want.dispose();
      model.dispose();

      const session = await ort.InferenceSession.create(path.join(out, 'onnx/model.onnx'));
      assert.deepEqual([...session.inputNames].sort(), (c.family === 'bert' ? ['attention_mask', 'input_ids', 'token_type_ids'] : ['attention_mask', 'input_ids']));
      const i64 = (a: Int32Array) => new ort.Tensor('int64', BigInt64Array.from(a, (v) => BigInt(v)), [B, T]);
      const feeds: Record<string, ort.Tensor> = { input_ids: i64(ids), attention_mask: i64(attn) };
      if (c.family === 'bert') feeds.token_type_ids = i64(types);
      const got = (await session.run(feeds)).logits;
      await session.release();
      assert.deepEqual(got.dims, [B, T, folder.config.vocab_size]);
      const gotData = got.data as Float32Array;
      let maxDiff = 0;
      for (let i = 0; i < wantData.length; i++) maxDiff = Math.max(maxDiff, Math.abs(gotData[i] - wantData[i]));
      console.log(`# ${c.name}: max |logit difference| ONNX Runtime vs mlmkit = ${maxDiff.toExponential(2)} over ${wantData.length} logits`);
      assert.ok(maxDiff <= TOLERANCE, `max difference ${maxDiff}`);
    });

    test('transformers.js\'s default file choice finds onnx/model.onnx in the browser too; mlmkit loads the folder back', async () => {
      const config = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
      const custom = (config['transformers.js_config'] ?? {}) as { dtype?: string };
      // transformers.js (its models/session.js getSession) picks the file onnx/model{suffix}.onnx from
      // the dtype option, else config.json's transformers.js_config.dtype, else the device's
      // default: q8 (model_quantized.onnx) for wasm, the browser's default device.
      const { selectDtype, DEFAULT_DTYPE_SUFFIX_MAPPING } = await import(path.join(ROOT, 'node_modules/@huggingface/transformers/src/utils/dtypes.js')) as {
        selectDtype: (dtype: unknown, fileName: string, device: string, opts: { configDtype: unknown }) => string;
        DEFAULT_DTYPE_SUFFIX_MAPPING: Record<string, string>;
      };
      for (const device of ['wasm', 'webgpu', 'cpu']) {
        const dtype = selectDtype(custom.dtype, 'model', device, { configDtype: custom.dtype ?? null });
        const file = `onnx/model${DEFAULT_DTYPE_SUFFIX_MAPPING[dtype]}.onnx`;
        assert.ok(fs.existsSync(path.join(out, file)), `transformers.js on ${device} picks dtype ${dtype}: ${file}, which the export lacks`);
      }
      const back = await loadModelFolder(out);
      assert.equal(back.config.vocab_size, (await loadModelFolder(src)).config.vocab_size);
    });

    test('transformers.js pipeline(\'fill-mask\') on the folder equals mlm fill-mask --json', async () => {
      const folder = await loadModelFolder(src);
      const mask = folder.tokenizer.maskToken;
      const text = `the ${mask} sat on the mat .`;
      const cli = await runMlm(['fill-mask', '--model', src, '--backend', 'cpu', '--top-k', '5', '--json', text]);
      assert.equal(cli.code, 0, cli.stderr);
      const want = JSON.parse(cli.stdout) as { score: number; token: number; token_str: string; sequence: string }[];

      const { env, pipeline } = await import('@huggingface/transformers');
      env.allowRemoteModels = false;
      env.allowLocalModels = true;
      env.localModelPath = path.dirname(out);
      const fill = await pipeline('fill-mask', path.basename(out), { dtype: 'fp32' });
      const got = (await fill(text, { top_k: 5 })) as typeof want;
      await fill.dispose();
      assert.deepEqual(got.map((g) => g.token), want.map((w) => w.token));
      assert.deepEqual(got.map((g) => g.token_str), want.map((w) => w.token_str));
      assert.deepEqual(got.map((g) => g.sequence), want.map((w) => w.sequence));
      const maxDiff = Math.max(...got.map((g, i) => Math.abs(g.score - want[i].score)));
      console.log(`# ${c.name}: max |score difference| transformers.js vs mlm fill-mask = ${maxDiff.toExponential(2)}`);
      assert.ok(maxDiff <= TOLERANCE, `max difference ${maxDiff}`);
    });
  });
}

test('a family or activation the ONNX writer lacks is a one-line InputError', () => {
  const base = { model_type: 'bert', hidden_act: 'gelu' } as ModelConfig;
  assert.throws(() => checkOnnxSupport({ ...base, model_type: 'electra' } as unknown as ModelConfig), (e: unknown) =>
    e instanceof InputError && e.message === 'ONNX export supports model_type bert and roberta, not "electra"; export it with --format hf or tfjs');
  assert.throws(() => checkOnnxSupport({ ...base, hidden_act: 'silu' } as unknown as ModelConfig), (e: unknown) =>
    e instanceof InputError && /^ONNX export supports hidden_act gelu, gelu_new, gelu_pytorch_tanh, relu, not "silu"/.test(e.message));
});

test('mlm export --format onnx of a config with an unsupported activation: exit 2, one line, nothing written', async () => {
  const ck = await makeTinyCheckpoint(path.join(tmp, 'silu'), 'bert', { seed: 2 });
  const json = JSON.parse(fs.readFileSync(path.join(ck.dir, 'config.json'), 'utf8'));
  fs.writeFileSync(path.join(ck.dir, 'config.json'), JSON.stringify({ ...json, hidden_act: 'silu' }));
  const out = path.join(tmp, 'silu-onnx');
  const r = await runMlm(['export', '--model', ck.dir, '--format', 'onnx', '--out', out]);
  assert.equal(r.code, 2);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, /hidden_act "silu" is not supported/);
  assert.equal(fs.existsSync(out), false);
});
