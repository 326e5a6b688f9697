// Tests for the library entry (index.ts) beyond fill-mask and export (tests/scripts/package.test.ts):
// prepare from a tokenizer folder writes the same manifest as `mlm prepare` (line by line, a given
// held-out set), evaluate on that data equals `mlm evaluate --json` (same masks, same numbers),
// and train runs two steps into a checkpoint that fillMask then loads; bad input is an InputError.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { evaluate, exportModel, fillMask, InputError, loadModel, prepare, push, train } from '../index.ts';
import { makeTinyCheckpoint, ROOT, runMlm, type TinyCheckpoint } from './training/tiny-checkpoint.ts';

const PROSE = path.join(ROOT, 'tests/fixtures/tokenizers/prose.txt');
let tmp: string;
let ck: TinyCheckpoint;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-index-test-'));
  ck = await makeTinyCheckpoint(path.join(tmp, 'ck'), 'bert', { seed: 4 });
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('prepare, evaluate and train from the library equal the CLI', async () => {
  // Held-out text of its own: the prose's last 20 lines, the rest for training.
  const lines = fs.readFileSync(PROSE, 'utf8').trimEnd().split('\n');
  const [trainText, heldOut] = [path.join(tmp, 'train.txt'), path.join(tmp, 'held-out.txt')];
  fs.writeFileSync(trainText, lines.slice(0, -20).join('\n') + '\n');
  fs.writeFileSync(heldOut, lines.slice(-20).join('\n') + '\n');
  const lib = await prepare({ corpus: trainText, tokenizer: ck.dir, out: path.join(tmp, 'data-lib'), seqLen: 16, validation: [heldOut], mode: 'lines' });
  const cli = await runMlm(['prepare', '--corpus', trainText, '--tokenizer', ck.dir, '--out', path.join(tmp, 'data-cli'), '--seq-len', '16', '--validation', heldOut, '--line-by-line', '--json', '--no-progress']);
  assert.equal(cli.code, 0, cli.stderr);
  const strip = (m: Record<string, unknown>) => { const { created_at: _c, created_by: _b, ...rest } = m; return rest; };
  const cliManifest = JSON.parse(fs.readFileSync(path.join(tmp, 'data-cli', 'manifest.json'), 'utf8'));
  assert.deepEqual(strip(lib.manifest as unknown as Record<string, unknown>), strip(cliManifest));

  const rows = await evaluate({ models: ck.dir, data: path.join(tmp, 'data-lib'), backend: 'cpu', batchSize: 4 });
  assert.equal(rows.length, 1);
  const ev = await runMlm(['evaluate', '--model', ck.dir, '--data', path.join(tmp, 'data-lib'), '--backend', 'cpu', '--batch-size', '4', '--json', '--no-progress']);
  assert.equal(ev.code, 0, ev.stderr);
  const want = JSON.parse(ev.stdout);
  assert.equal(rows[0].result.loss, want.loss);
  assert.equal(rows[0].result.masked_tokens, want.masked_tokens);

  const result = await train({ from: ck.dir, data: path.join(tmp, 'data-lib'), out: path.join(tmp, 'run'), steps: 2, batchSize: 4, backend: 'cpu', evalBatches: 1 });
  assert.equal(result.step, 2);
  assert.ok(result.checkpoint && fs.existsSync(path.join(result.checkpoint, 'model.safetensors')));
  const after = await fillMask(result.checkpoint, 'the [MASK] sat .', { backend: 'cpu', topK: 2 });
  assert.equal((after as unknown[]).length, 2);
});

test('bad input is an InputError with one line', async () => {
  await assert.rejects(fillMask(ck.dir, 'no mask here', { backend: 'cpu' }), (e: unknown) => e instanceof InputError && !e.message.includes('\n'));
  await assert.rejects(fillMask(ck.dir, 'the [MASK]', { topK: 0 }), (e: unknown) => e instanceof InputError && e.message === 'fillMask: option topK must be a positive integer, got 0');
  await assert.rejects(evaluate({ models: path.join(tmp, 'missing'), data: PROSE, backend: 'cpu' }), InputError);
  // Options of the wrong value, named in one line (a TypeError, a silent empty result or another
  // option's message before 2026-12-07).
  const named = (re: RegExp) => (e: unknown) => e instanceof InputError && re.test(e.message) && !e.message.includes('\n');
  await assert.rejects(evaluate({ models: ck.dir, data: PROSE, split: 'foo' as never, backend: 'cpu' }), named(/^--split must be validation or train, got "foo"$/));
  await assert.rejects(evaluate({ models: [], data: PROSE, backend: 'cpu' }), named(/^no model to evaluate/));
  await assert.rejects(evaluate({ models: ck.dir, data: [], backend: 'cpu' }), named(/^no data to evaluate on/));
  // The data are checked before the models are resolved (a Hub id would be downloaded first).
  await assert.rejects(evaluate({ models: path.join(tmp, 'missing'), data: path.join(tmp, 'nowhere.txt'), backend: 'cpu' }), named(/^corpus path not found: .*nowhere\.txt/));
  await assert.rejects(prepare({ corpus: [PROSE], tokenizer: ck.dir, out: path.join(tmp, 'bad-mode'), mode: 'foo' as never }), named(/^--mode must be blocks or lines, got "foo"$/));
  assert.ok(!fs.existsSync(path.join(tmp, 'bad-mode')));
  // The tokenizer's folder is an input: out may not be it or lie in it, overwrite or not.
  const modelFiles = fs.readdirSync(ck.dir).sort();
  await assert.rejects(prepare({ corpus: [PROSE], tokenizer: ck.dir, out: ck.dir, overwrite: true }), named(/^--out .* is the input .* \(tokenizer\); writing there could delete or mix with the inputs/));
  await assert.rejects(prepare({ corpus: [PROSE], tokenizer: ck.dir, out: path.join(ck.dir, 'data') }), named(/is inside the input .* \(tokenizer\)/));
  assert.deepEqual(fs.readdirSync(ck.dir).sort(), modelFiles);
  await assert.rejects(train({ from: ck.dir, data: path.join(tmp, 'nowhere'), out: path.join(tmp, 'bad-run'), precision: 'foo' as never, backend: 'cpu' }), named(/^--precision must be one of fp32, fp16, auto, got "foo"$/));
  await assert.rejects(train({ from: ck.dir, data: path.join(tmp, 'nowhere'), out: path.join(tmp, 'bad-run'), warmup: -1, backend: 'cpu' }), named(/^--warmup must be a fraction in \[0, 1\) or a number of steps, got -1$/));
  assert.ok(!fs.existsSync(path.join(tmp, 'bad-run')));
});

test('options of the wrong type (a JavaScript caller, values from JSON) are an InputError naming the function and option, before any work', async () => {
  const named = (re: RegExp) => (e: unknown) => e instanceof InputError && re.test(e.message) && !e.message.includes('\n');
  const anyOf = <T>(v: unknown) => v as T;
  // A truthy string read as true replaced an export; a string of targets scored its letters.
  const exported = path.join(tmp, 'export-kept');
  await exportModel({ model: ck.dir, out: exported, format: 'tfjs' });
  const before = fs.readdirSync(exported).sort();
  fs.writeFileSync(path.join(exported, 'model.json'), '{"mine": true}');
  await assert.rejects(exportModel({ model: ck.dir, out: exported, format: 'tfjs', overwrite: anyOf('no') }), named(/^exportModel: option overwrite must be true or false, got the string "no"$/));
  assert.equal(fs.readFileSync(path.join(exported, 'model.json'), 'utf8'), '{"mine": true}');
  assert.deepEqual(fs.readdirSync(exported).sort(), before);
  await assert.rejects(exportModel(anyOf({ model: ck.dir })), named(/^exportModel: option out is required$/));
  await assert.rejects(exportModel(anyOf(undefined)), named(/^exportModel: the options must be an object, got undefined$/));
  await assert.rejects(fillMask(ck.dir, 'the [MASK] .', { targets: anyOf('cat') }), named(/^fillMask: option targets must be an array of strings, got the string "cat"$/));
  await assert.rejects(fillMask(ck.dir, 'the [MASK] .', { targets: anyOf([1]) }), named(/^fillMask: option targets must be an array of strings, got an array \(\[1\]\)$/));
  await assert.rejects(fillMask(ck.dir, anyOf(42)), named(/^fillMask: the text must be a string, got the number 42$/));
  await assert.rejects(fillMask(ck.dir, anyOf(undefined)), named(/^fillMask: the text must be a string, got undefined$/));
  await assert.rejects(fillMask(ck.dir, 'the [MASK] .', anyOf(null)), named(/^fillMask: the options must be an object, got null$/));
  await assert.rejects(fillMask(ck.dir, 'the [MASK] .', { topK: anyOf('3') }), named(/^fillMask: option topK must be a whole number, got the string "3"$/));
  await assert.rejects(fillMask(ck.dir, 'the [MASK] .', { revision: anyOf(null) }), named(/^fillMask: option revision is null; leave it out for its default, or give a string$/));
  await assert.rejects(loadModel(anyOf(undefined)), named(/^loadModel: the model \(a folder or Hub id\) must be a string, got undefined$/));
  for (const n of [-1, 0, 2.5, 1000]) {
    await assert.rejects(loadModel(ck.dir, { backend: 'wasm', blasThreads: n }), named(/^loadModel: option blasThreads must be a whole number/), String(n));
  }
  await assert.rejects(prepare(anyOf({ corpus: PROSE, tokenizer: 42, out: path.join(tmp, 'never') })), named(/^prepare: option tokenizer must be a tokenizer folder \(a string\) or a loaded MlmTokenizer, got the number 42$/));
  await assert.rejects(prepare({ corpus: PROSE, tokenizer: ck.dir, out: path.join(tmp, 'never'), seqLen: anyOf('32') }), named(/^prepare: option seqLen must be a whole number, got the string "32"$/));
  await assert.rejects(train({ from: ck.dir, data: path.join(tmp, 'nowhere'), out: path.join(tmp, 'never'), wholeWordMask: anyOf('false'), backend: 'cpu' }), named(/^train: option wholeWordMask must be true or false, got the string "false"$/));
  await assert.rejects(train({ from: ck.dir, data: path.join(tmp, 'nowhere'), out: path.join(tmp, 'never'), lr: anyOf('1e-3'), backend: 'cpu' }), named(/^train: option lr must be a number, got the string "1e-3"$/));
  await assert.rejects(train(anyOf({ from: ck.dir, out: path.join(tmp, 'never') })), named(/^train: option data is required$/));
  await assert.rejects(evaluate({ models: ck.dir, data: PROSE, pseudo: anyOf(1) }), named(/^evaluate: option pseudo must be true or false, got the number 1$/));
  await assert.rejects(push({ model: ck.dir, repo: 'org/x', private: anyOf('yes'), env: {} }), named(/^push: option private must be true or false, got the string "yes"$/));
  await assert.rejects(prepare({ corpus: PROSE, tokenizer: ck.dir, out: path.join(tmp, 'never'), validation: [PROSE], validationSplit: 0.1 }), named(/^prepare: give validation \(a held-out set\) or validationSplit/));
  assert.ok(!fs.existsSync(path.join(tmp, 'never')));
});

test('a model runs on the backend it was loaded on, after another model was loaded onto another backend', async () => {
  const a = await loadModel(ck.dir, { backend: 'cpu' });
  try {
    const first = await fillMask(a, 'the [MASK] sat .', { topK: 3 });
    const b = await loadModel(ck.dir, { backend: 'wasm', blas: 'none' });
    try {
      assert.equal(a.tf.getBackend(), 'wasm', 'loading b switched TF.js');
      assert.deepEqual(await fillMask(a, 'the [MASK] sat .', { topK: 3 }), first);
      assert.equal(a.tf.getBackend(), 'cpu');
      await fillMask(b, 'the [MASK] sat .', { topK: 3 });
      assert.equal(b.tf.getBackend(), 'wasm');
    } finally {
      b.dispose();
    }
  } finally {
    a.dispose();
  }
});
