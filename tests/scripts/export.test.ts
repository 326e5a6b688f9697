// Tests for `mlm export` (scripts/commands/export.ts) and the writers behind it
// (training/checkpoint.ts writeModelFolder, writeTfjsFolder):
// - hf: a clean folder (no trainer state), import -> export -> import bit-identical, also from a
//   checkpoint carrying the tied decoder names, a pooler and position_ids as transformers wrote
//   them; the tensor names and shapes of an exported bert-mini equal the reference list;
// - tfjs: model.json in TF.js's weights-manifest format whose shards tf.io loads (over HTTP from a
//   local server) into tensors bit-identical to the model's, split into shards of the given size;
// - the one-line errors for --out.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { hfWeightsOf, loadModelFolder, writeModelFolder, writeTfjsFolder } from '../../training/checkpoint.ts';
import { parseModelConfig } from '../../training/models/config.ts';
import { initialWeights } from '../../training/models/weights.ts';
import { openSafetensors, saveSafetensors, type WritableTensor } from '../../training/safetensors.ts';
import { makeTinyCheckpoint, ROOT, sameBits, tinyTokenizer, type TinyCheckpoint } from '../training/tiny-checkpoint.ts';

let tmp: string;
let ck: TinyCheckpoint;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-export-test-'));
  // A training checkpoint: model folder + trainer state + optimizer state.
  ck = await makeTinyCheckpoint(path.join(tmp, 'ckpt'), 'bert', { seed: 9 });
  await writeModelFolder(ck.dir, {
    config: ck.config,
    weights: ck.hf,
    tokenizer: ck.tokenizer,
    extra: async (dir) => {
      fs.writeFileSync(path.join(dir, 'trainer_state.json'), '{"step": 10}\n');
      await saveSafetensors(path.join(dir, 'optimizer.safetensors'), { 'm.x': { dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) } });
    },
  });
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function mlm(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(ROOT, 'scripts/mlm.mjs'), ...args], { cwd: ROOT, timeout: 45_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    );
  });
}

async function assertSameWeights(a: string, b: string): Promise<void> {
  const x = await loadModelFolder(a);
  const y = await loadModelFolder(b);
  assert.deepEqual([...x.weights.tensors.keys()].sort(), [...y.weights.tensors.keys()].sort());
  for (const [name, t] of x.weights.tensors) {
    const u = y.weights.tensors.get(name)!;
    assert.deepEqual(u.shape, t.shape, name);
    assert.ok(sameBits(u.data, t.data), `${name} differs`);
  }
  assert.equal(x.tokenizer.sha256, y.tokenizer.sha256);
}

describe('mlm export --format hf', () => {
  test('a clean inference folder; import -> export -> import is bit-identical', async () => {
    const out = path.join(tmp, 'hf-out');
    const r = await mlm(['export', '--model', ck.dir, '--format', 'hf', '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^exported .* as hf to .*: \d+ tensors, [\d.]+ MB of weights, 6 files\n$/);
    assert.deepEqual(fs.readdirSync(out).sort(), ['config.json', 'model.safetensors', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json', 'vocab.txt']);
    await assertSameWeights(ck.dir, out);
    // Written by the same writer from the same tensors: the very same bytes.
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'vocab.txt']) {
      assert.ok(fs.readFileSync(path.join(out, f)).equals(fs.readFileSync(path.join(ck.dir, f))), f);
    }
  });

  test('a checkpoint as transformers wrote it (tied decoder names, pooler, position_ids) exports the save_pretrained tensors', async () => {
    const src = path.join(tmp, 'foreign');
    fs.cpSync(ck.dir, src, { recursive: true });
    const tensors = new Map<string, WritableTensor>();
    for (const [n, t] of ck.hf) tensors.set(n, { dtype: 'F32', shape: t.shape, data: t.data });
    const words = ck.hf.get('bert.embeddings.word_embeddings.weight')!;
    tensors.set('cls.predictions.decoder.weight', { dtype: 'F32', shape: words.shape, data: words.data });
    tensors.set('cls.predictions.decoder.bias', { dtype: 'F32', shape: [ck.config.vocab_size], data: ck.hf.get('cls.predictions.bias')!.data });
    tensors.set('bert.pooler.dense.weight', { dtype: 'F32', shape: [32, 32], data: new Float32Array(32 * 32).fill(0.5) });
    tensors.set('bert.pooler.dense.bias', { dtype: 'F32', shape: [32], data: new Float32Array(32) });
    tensors.set('bert.embeddings.position_ids', { dtype: 'I64', shape: [1, 64], data: Int32Array.from({ length: 64 }, (_, i) => i) });
    await saveSafetensors(path.join(src, 'model.safetensors'), tensors);
    fs.rmSync(path.join(src, 'trainer_state.json'));
    fs.rmSync(path.join(src, 'optimizer.safetensors'));

    const out = path.join(tmp, 'foreign-out');
    const r = await mlm(['export', '--model', src, '--out', out, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const summary = JSON.parse(r.stdout);
    // The keys of docs/formats.md ("Command output"); bytes: the size of model.safetensors.
    assert.deepEqual(Object.keys(summary), ['format', 'model', 'revision', 'out', 'files', 'tensors', 'bytes']);
    assert.equal(summary.revision, null);
    assert.deepEqual([...summary.files].sort(), fs.readdirSync(out).sort());
    assert.equal(summary.bytes, fs.statSync(path.join(out, 'model.safetensors')).size);
    assert.equal(summary.format, 'hf');
    assert.equal(summary.tensors, ck.hf.size);
    const st = openSafetensors(path.join(out, 'model.safetensors'));
    assert.deepEqual(st.keys(), [...ck.hf.keys()].sort());
    st.close();
    await assertSameWeights(src, out);
    await assertSameWeights(ck.dir, out);
  });

  test('bert-mini: exported tensor names and shapes equal the reference list', async () => {
    const fixture = JSON.parse(fs.readFileSync(path.join(ROOT, 'tests/fixtures/reference/hf-state-dict-bert-mini.json'), 'utf8')) as { tensors: Record<string, number[]> };
    const config = parseModelConfig(JSON.parse(fs.readFileSync(path.join(ROOT, 'configs/bert-mini.json'), 'utf8')), 'configs/bert-mini.json');
    const src = path.join(tmp, 'bert-mini');
    // The tiny tokenizer has fewer ids than bert-mini's 30522 rows: allowed (a padded vocabulary).
    await writeModelFolder(src, { config, weights: await hfWeightsOf(config, initialWeights(config, 3)), tokenizer: await tinyTokenizer('bert') });
    const out = path.join(tmp, 'bert-mini-out');
    const r = await mlm(['export', '--model', src, '--format', 'hf', '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    const st = openSafetensors(path.join(out, 'model.safetensors'));
    const got: Record<string, number[]> = {};
    for (const name of st.keys()) {
      got[name] = st.info(name).shape;
      assert.equal(st.info(name).dtype, 'F32');
    }
    st.close();
    assert.deepEqual(got, fixture.tensors);
  });

  test('--out errors: not empty, the model folder itself; --overwrite replaces an export, never a folder holding other files', async () => {
    const out = path.join(tmp, 'busy');
    fs.mkdirSync(out);
    fs.writeFileSync(path.join(out, 'notes.txt'), 'mine');
    const busy = await mlm(['export', '--model', ck.dir, '--out', out]);
    assert.equal(busy.code, 2);
    assert.match(busy.stderr, /^mlm: error: --out .*busy is not empty; choose an empty or new folder, or pass --overwrite to replace it\n$/);
    const self = await mlm(['export', '--model', ck.dir, '--out', ck.dir, '--overwrite']);
    assert.equal(self.code, 2);
    assert.match(self.stderr, /^mlm: error: --out .* holds the model being exported; choose another folder\n$/);
    // A folder inside the model's (a run's checkpoint, say), existing or new: refused, nothing written.
    const modelFiles = fs.readdirSync(ck.dir).sort();
    fs.mkdirSync(path.join(ck.dir, 'checkpoint-4'));
    fs.writeFileSync(path.join(ck.dir, 'checkpoint-4', 'trainer_state.json'), '{}');
    for (const inside of [path.join(ck.dir, 'checkpoint-4'), path.join(ck.dir, 'new-export')]) {
      const r = await mlm(['export', '--model', ck.dir, '--out', inside, '--overwrite']);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /^mlm: error: --out .* lies inside the model folder .*; writing there could replace or mix with its files, choose a folder outside it\n$/);
    }
    assert.deepEqual(fs.readdirSync(path.join(ck.dir, 'checkpoint-4')), ['trainer_state.json']);
    fs.rmSync(path.join(ck.dir, 'checkpoint-4'), { recursive: true });
    assert.deepEqual(fs.readdirSync(ck.dir).sort(), modelFiles);
    const missing = await mlm(['export', '--model', path.join(tmp, 'nope/x'), '--out', path.join(tmp, 'x')]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /^mlm: error: model folder .*nope\/x not found; check the path\n$/);
    const foreign = await mlm(['export', '--model', ck.dir, '--out', out, '--overwrite', '--format', 'tfjs']);
    assert.equal(foreign.code, 2);
    assert.match(foreign.stderr, /^mlm: error: --out .*busy holds files that are not part of a model export \(notes\.txt\); --overwrite replaces only a model export: choose an empty or new folder, or move those files\n$/);
    assert.deepEqual(fs.readdirSync(out), ['notes.txt']);
    // An earlier export (hf) is replaced by the new one (tfjs): its files are gone.
    const earlier = path.join(tmp, 'earlier');
    assert.equal((await mlm(['export', '--model', ck.dir, '--out', earlier])).code, 0);
    // A model card written by hand beside an export is the user's: refused, kept.
    fs.writeFileSync(path.join(earlier, 'README.md'), '# my card\n');
    const card = await mlm(['export', '--model', ck.dir, '--out', earlier, '--overwrite', '--format', 'tfjs']);
    assert.equal(card.code, 2);
    assert.match(card.stderr, /holds files that are not part of a model export \(README\.md\)/);
    fs.rmSync(path.join(earlier, 'README.md'));
    const replaced = await mlm(['export', '--model', ck.dir, '--out', earlier, '--overwrite', '--format', 'tfjs']);
    assert.equal(replaced.code, 0, replaced.stderr);
    assert.ok(!fs.existsSync(path.join(earlier, 'model.safetensors')));
    assert.ok(fs.existsSync(path.join(earlier, 'model.json')));
  });
});

describe('mlm export --format tfjs', () => {
  let server: http.Server;
  let base: string;
  before(async () => {
    server = http.createServer((req, res) => {
      const file = path.join(tmp, decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname));
      if (!file.startsWith(tmp + path.sep) || !fs.existsSync(file)) return void res.writeHead(404).end();
      res.writeHead(200, { 'content-type': file.endsWith('.json') ? 'application/json' : 'application/octet-stream' }).end(fs.readFileSync(file));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  /** Loads model.json and its shards through tf.io over HTTP; returns the decoded tensors' data. */
  async function loadThroughTfIo(folder: string): Promise<Map<string, { shape: number[]; data: Float32Array }>> {
    const handler = tf.io.http(`${base}/${folder}/model.json`, { fetchFunc: fetch });
    assert.ok(handler.load, 'an IOHandler that loads');
    const artifacts = await handler.load();
    const named = tf.io.decodeWeights(artifacts.weightData!, artifacts.weightSpecs!);
    const out = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const [name, t] of Object.entries(named)) {
      out.set(name, { shape: t.shape, data: t.dataSync() as Float32Array });
      t.dispose();
    }
    return out;
  }

  test('model.json + shards that tf.io loads into tensors bit-identical to the model, with config and tokenizer', async () => {
    const out = path.join(tmp, 'web');
    const r = await mlm(['export', '--model', ck.dir, '--format', 'tfjs', '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(fs.readdirSync(out).sort(), ['config.json', 'group1-shard1of1.bin', 'model.json', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json', 'vocab.txt']);
    const modelJson = JSON.parse(fs.readFileSync(path.join(out, 'model.json'), 'utf8'));
    assert.equal(modelJson.format, 'mlmkit-bert');
    assert.equal(modelJson.modelTopology, null);
    assert.match(modelJson.generatedBy, /^mlmkit \d/);
    assert.equal(modelJson.weightsManifest.length, 1);
    assert.deepEqual(modelJson.weightsManifest[0].paths, ['group1-shard1of1.bin']);
    for (const w of modelJson.weightsManifest[0].weights) assert.deepEqual(Object.keys(w), ['name', 'shape', 'dtype']);

    const model = await loadModelFolder(ck.dir);
    const got = await loadThroughTfIo('web');
    assert.equal(got.size, model.weights.tensors.size);
    for (const [name, t] of model.weights.tensors) {
      const u = got.get(name)!;
      assert.deepEqual(u.shape, t.shape, name);
      assert.ok(sameBits(u.data, t.data), `${name} differs`);
    }
    // The config beside it builds the same model.
    const cfg = parseModelConfig(JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')), 'config.json');
    assert.equal(cfg.vocab_size, model.config.vocab_size);
  });

  test('weights are cut into shards of the given size across tensor boundaries', async () => {
    const model = await loadModelFolder(ck.dir);
    const out = path.join(tmp, 'web-sharded');
    const summary = await writeTfjsFolder(out, { config: model.config, weights: model.weights, tokenizer: model.tokenizer, generatedBy: 'test', shardBytes: 10_000 });
    const total = [...model.weights.tensors.values()].reduce((a, t) => a + t.data.byteLength, 0);
    assert.equal(summary.bytes, total);
    assert.equal(summary.shards.length, Math.ceil(total / 10_000));
    summary.shards.forEach((s, i) => {
      assert.equal(s, `group1-shard${i + 1}of${summary.shards.length}.bin`);
      const size = fs.statSync(path.join(out, s)).size;
      assert.equal(size, i < summary.shards.length - 1 ? 10_000 : total - 10_000 * (summary.shards.length - 1));
    });
    const got = await loadThroughTfIo('web-sharded');
    for (const [name, t] of model.weights.tensors) assert.ok(sameBits(got.get(name)!.data, t.data), `${name} differs`);
  });
});
