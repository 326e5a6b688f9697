// Tests for training/resize.ts and `mlm model resize`: FVT rows are the means of the right old rows,
// old rows are untouched, random rows have the init's spread, and the written folder is a normal
// Hugging Face folder with the new vocab_size (names and shapes as transformers expects).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { extendTokenizer, WordTally } from '../../data/tokenizer-extend.ts';
import { loadModelFolder } from '../../training/checkpoint.ts';
import { resizeModel } from '../../training/resize.ts';
import { openSafetensors } from '../../training/safetensors.ts';
import { parameterTable, tiedNames } from '../../training/models/weights.ts';
import { makeTinyCheckpoint, runMlm, type Family } from './tiny-checkpoint.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const WORDS = ['thrombocytopenia', 'hepatosplenomegaly', 'cholangitis'];
const lines = () => WORDS.flatMap((w, i) => Array.from({ length: 5 + i }, () => ` the ${w} the`));

for (const family of ['bert', 'roberta'] as Family[]) {
  describe(`resizeModel (${family})`, () => {
    test('FVT: each new row is the mean of its old pieces\' rows, the bias likewise; old rows unchanged', async () => {
      const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-resize-'));
      try {
        const ck = await makeTinyCheckpoint(path.join(tmp, 'm'), family, { seed: 5 });
        const model = await loadModelFolder(ck.dir);
        const tally = new WordTally(model.tokenizer);
        for (const l of lines()) tally.add(l);
        const ext = await extendTokenizer(model.tokenizer, tally, { add: 3 });
        const r = await resizeModel(model.config, model.weights, model.tokenizer, ext.tokenizer, { init: 'fvt' });
        const names = tiedNames(family);
        const H = model.config.hidden_size;
        const V = model.config.vocab_size;
        const oldE = model.weights.tensors.get(names.wordEmbeddings)!.data;
        const oldB = model.weights.tensors.get(names.bias)!.data;
        const newE = r.weights.tensors.get(names.wordEmbeddings)!;
        const newB = r.weights.tensors.get(names.bias)!.data;
        assert.equal(r.config.vocab_size, ext.tokenizer.vocabSize);
        assert.deepEqual(newE.shape, [ext.tokenizer.vocabSize, H]);
        assert.deepEqual([...newE.data.subarray(0, V * H)], [...oldE], 'old embedding rows unchanged');
        assert.deepEqual([...newB.subarray(0, V)], [...oldB], 'old bias entries unchanged');
        for (const a of ext.added) {
          // The pieces the old tokenizer makes of the word, found independently of resize.ts.
          const text = family === 'roberta' ? ' ' + a.token.slice(1) : a.token;
          const [pieces] = await model.tokenizer.tokensOf([text]);
          const ids = pieces.map((p) => model.tokenizer.tokenToId(p)!);
          assert.deepEqual(ids.map((i) => model.tokenizer.idToToken(i)), a.pieces);
          for (let h = 0; h < H; h++) {
            const mean = ids.reduce((s, i) => s + oldE[i * H + h], 0) / ids.length;
            assert.ok(Math.abs(newE.data[a.id * H + h] - mean) <= 1e-6 * Math.max(1, Math.abs(mean)), `${a.token} row ${h}`);
          }
          const meanB = ids.reduce((s, i) => s + oldB[i], 0) / ids.length;
          assert.ok(Math.abs(newB[a.id] - meanB) <= 1e-6, `${a.token} bias`);
        }
        // Every other tensor is the same object.
        for (const [name, t] of model.weights.tensors) if (name !== names.wordEmbeddings && name !== names.bias) assert.equal(r.weights.tensors.get(name), t);
      } finally {
        fs.rmSync(tmp, { recursive: true, force: true });
      }
    });
  });
}

test('a model with more rows than its tokenizer has ids: new ids on the unused rows get FVT rows too; the table grows only past them', async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-resize-pad-'));
  try {
    const ck = await makeTinyCheckpoint(path.join(tmp, 'm'), 'bert', { seed: 6, padVocab: 8 });
    const model = await loadModelFolder(ck.dir);
    const O = model.tokenizer.vocabSize;
    const V = model.config.vocab_size;
    assert.equal(V, O + 8, 'the fixture pads the table by 8 rows');
    const tally = new WordTally(model.tokenizer);
    for (const l of [...lines(), ...fs.readFileSync(path.join(ROOT, 'tests/fixtures/tokenizers/prose.txt'), 'utf8').split('\n')]) tally.add(l);
    const names = tiedNames('bert');
    const H = model.config.hidden_size;
    const oldE = model.weights.tensors.get(names.wordEmbeddings)!.data;
    const oldB = model.weights.tensors.get(names.bias)!.data;
    for (const add of [3, 12]) {
      const ext = await extendTokenizer(model.tokenizer, tally, { add, minFrequency: 1 });
      const r = await resizeModel(model.config, model.weights, model.tokenizer, ext.tokenizer, { init: 'fvt' });
      const V2 = Math.max(V, ext.tokenizer.vocabSize);
      assert.equal(r.config.vocab_size, V2);
      assert.deepEqual(r.rows.map((x) => x.id), ext.added.map((a) => a.id).sort((a, b) => a - b), 'every new id gets a row, also those below the old table size');
      const newE = r.weights.tensors.get(names.wordEmbeddings)!.data;
      const newB = r.weights.tensors.get(names.bias)!.data;
      assert.deepEqual([...newE.subarray(0, O * H)], [...oldE.subarray(0, O * H)], 'the tokenizer\'s rows unchanged');
      for (const row of r.rows) {
        for (let h = 0; h < H; h++) {
          const mean = row.from.reduce((sum, i) => sum + oldE[i * H + h], 0) / row.from.length;
          assert.ok(Math.abs(newE[row.id * H + h] - mean) <= 1e-6 * Math.max(1, Math.abs(mean)), `${row.token} row ${h}`);
        }
        assert.ok(row.from.every((i) => i < O), 'FVT sources are ids of the old tokenizer');
        assert.ok(Math.abs(newB[row.id] - row.from.reduce((sum, i) => sum + oldB[i], 0) / row.from.length) <= 1e-6);
      }
      // Padding rows no new id takes stay as they were.
      for (let id = ext.tokenizer.vocabSize; id < V; id++) assert.deepEqual([...newE.subarray(id * H, (id + 1) * H)], [...oldE.subarray(id * H, (id + 1) * H)]);
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

describe('resizeModel: random init and checks', () => {
  test('random rows: seeded, normal(0, initializer_range) within sampling error, bias 0', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-resize-r-'));
    try {
      const ck = await makeTinyCheckpoint(path.join(tmp, 'm'), 'bert', { seed: 5 });
      const model = await loadModelFolder(ck.dir);
      const tally = new WordTally(model.tokenizer);
      for (const l of lines()) tally.add(l);
      const ext = await extendTokenizer(model.tokenizer, tally, { add: 3 });
      const a = await resizeModel(model.config, model.weights, model.tokenizer, ext.tokenizer, { init: 'random', seed: 1 });
      const b = await resizeModel(model.config, model.weights, model.tokenizer, ext.tokenizer, { init: 'random', seed: 1 });
      const names = tiedNames('bert');
      const V = model.config.vocab_size;
      const H = model.config.hidden_size;
      const rows = a.weights.tensors.get(names.wordEmbeddings)!.data.subarray(V * H);
      assert.deepEqual([...rows], [...b.weights.tensors.get(names.wordEmbeddings)!.data.subarray(V * H)], 'same seed, same rows');
      const n = rows.length; // 3 rows x 32
      const sd = Math.sqrt(rows.reduce((s, x) => s + x * x, 0) / n);
      // The sample sd of n normal draws has a relative standard error of about 1/sqrt(2n): 4 of them.
      const tol = 4 / Math.sqrt(2 * n);
      assert.ok(Math.abs(sd / model.config.initializer_range - 1) < tol, `sd ${sd} vs ${model.config.initializer_range} (tolerance ${(tol * 100).toFixed(0)}%)`);
      assert.deepEqual([...a.weights.tensors.get(names.bias)!.data.subarray(V)], [0, 0, 0]);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  test('mlm model resize writes a Hugging Face folder: names, shapes, vocab_size; a tokenizer that moves old ids is refused', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-resize-cli-'));
    const run = (args: string[]) => runMlm(args);
    try {
      const ck = await makeTinyCheckpoint(path.join(tmp, 'm'), 'roberta', { seed: 5 });
      const corpus = path.join(tmp, 'domain.txt');
      fs.writeFileSync(corpus, lines().join('\n') + '\n');
      const tok = path.join(tmp, 'tok');
      const e = await run(['tokenizer', 'extend', '--from', ck.dir, '--corpus', corpus, '--add', '3', '--out', tok, '--no-progress']);
      assert.equal(e.code, 0, e.stderr);
      const out = path.join(tmp, 'resized');
      const r = await run(['model', 'resize', '--from', ck.dir, '--tokenizer', tok, '--out', out, '--json']);
      assert.equal(r.code, 0, r.stderr);
      const summary = JSON.parse(r.stdout);
      // The keys of docs/formats.md ("Command output"); one row per new id, with the old pieces it averages.
      assert.deepEqual(Object.keys(summary), ['from', 'out', 'init', 'old_vocab_size', 'vocab_size', 'rows']);
      assert.equal(summary.rows.length, summary.vocab_size - summary.old_vocab_size);
      for (const row of summary.rows) {
        assert.deepEqual(Object.keys(row), ['id', 'token', 'from']);
        assert.ok(row.from.length > 0 && row.from.every((t: unknown) => typeof t === 'string'), JSON.stringify(row));
      }
      const config = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
      assert.equal(config.vocab_size, summary.vocab_size);
      assert.ok(summary.vocab_size > ck.config.vocab_size);
      const loaded = await loadModelFolder(out);
      assert.equal(loaded.tokenizer.vocabSize, config.vocab_size);
      // The tensor names and shapes transformers' RobertaForMaskedLM has for that config.
      const f = openSafetensors(path.join(out, 'model.safetensors'));
      try {
        const want = new Map(parameterTable(loaded.config).map((s) => [s.name, [...s.hfShape]]));
        assert.deepEqual(new Set(f.keys()), new Set(want.keys()));
        for (const [name, shape] of want) assert.deepEqual(f.info(name).shape, shape, name);
      } finally {
        f.close();
      }
      // The model's own tokenizer trained again on other text does not extend it.
      const other = await makeTinyCheckpoint(path.join(tmp, 'other'), 'bert', { seed: 6 });
      const bad = await run(['model', 'resize', '--from', ck.dir, '--tokenizer', other.dir, '--out', path.join(tmp, 'bad')]);
      assert.equal(bad.code, 2, bad.stderr);
      assert.match(bad.stderr, /^mlm: error: the new tokenizer is bert, the model's is roberta; extend the model's own tokenizer/);
      assert.ok(!fs.existsSync(path.join(tmp, 'bad')));
      // The extension with another pre-tokenizer setting: the same ids, text split another way.
      const edited = path.join(tmp, 'tok-edited');
      fs.cpSync(tok, edited, { recursive: true });
      const json = JSON.parse(fs.readFileSync(path.join(edited, 'tokenizer.json'), 'utf8'));
      json.pre_tokenizer.add_prefix_space = !json.pre_tokenizer.add_prefix_space;
      fs.writeFileSync(path.join(edited, 'tokenizer.json'), JSON.stringify(json));
      for (const f of ['vocab.json', 'merges.txt']) fs.rmSync(path.join(edited, f), { force: true });
      const split = await run(['model', 'resize', '--from', ck.dir, '--tokenizer', edited, '--out', path.join(tmp, 'bad2')]);
      assert.equal(split.code, 2, split.stderr);
      assert.match(split.stderr, /^mlm: error: the new tokenizer splits text differently from the model's \(its pre_tokenizer differs\); extend the model's own tokenizer/);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});
