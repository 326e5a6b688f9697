// training/evaluate.ts and `mlm evaluate`: the same numbers every time (fixed evaluation masks);
// loss is the token-weighted mean over all masked tokens and perplexity its exp; cutting batches
// into passes changes nothing; pseudo-perplexity equals masking each token in turn by hand; raw
// text is tokenized with the model's tokenizer; the CLI's --json shapes; a tokenizer mismatch is
// refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Tensor2D } from '@tensorflow/tfjs';
import { RowStream } from '../../data/batches.ts';
import { IGNORE_INDEX, maskTokens } from '../../data/masking.ts';
import { Rng } from '../../common/rng.ts';
import { readManifest, SplitReader } from '../../data/shards.ts';
import { selectBackend, type Tf } from '../../training/backend.ts';
import { loadModelFolder } from '../../training/checkpoint.ts';
import { batchInputs, EVAL_STREAM, evaluateMasked, evaluatePseudo, maskingFor, openEvalData } from '../../training/evaluate.ts';
import { evaluateModels } from '../../training/evaluate-models.ts';
import { InputError } from '../../common/errors.ts';
import type { MaskedLM } from '../../training/models/bert.ts';
import { createMaskedLM } from '../../training/models/roberta.ts';
import { train, TRAIN_DEFAULTS } from '../../training/trainer.ts';
import { makeTinyCheckpoint } from './tiny-checkpoint.ts';
import { brownDocuments, MLM, preparedFixture, ROOT, writeTinyConfig, type PreparedFixture } from './train-helpers.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-evaluate-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
const quiet = (_: string) => {};

interface Setup {
  tf: Tf;
  fx: PreparedFixture;
  checkpoint: string;
  model: MaskedLM;
}
let setup: Promise<Setup> | null = null;
/** Prepared Brown shards (vocab 400, seq 32) and a checkpoint trained for 20 steps on them. */
function get(): Promise<Setup> {
  setup ??= (async () => {
    const { tf } = await selectBackend('wasm', { log: quiet });
    const fx = await preparedFixture(path.join(tmp, 'fx'), brownDocuments(80_000), { vocabSize: 400, seqLen: 32, validationSplit: 0.2 });
    const out = path.join(tmp, 'run');
    const config = writeTinyConfig(path.join(tmp, 'tiny.json'), { max_position_embeddings: 32 });
    const r = await train({ ...TRAIN_DEFAULTS, config, data: fx.dataDir, out, steps: 20, batchSize: 8, lr: 3e-3, evalEvery: 0, saveEvery: 0 },
      { tf, backend: { name: 'wasm', device: 'test' }, version: 'test', log: quiet, progress: false });
    const folder = await loadModelFolder(r.checkpoint!);
    return { tf, fx, checkpoint: r.checkpoint!, model: createMaskedLM(tf, folder.config, { weights: folder.weights }) };
  })();
  return setup;
}

async function validation(fx: PreparedFixture): Promise<SplitReader> {
  return new SplitReader(fx.dataDir, await readManifest(fx.dataDir), 'validation');
}

test('two evaluations give identical numbers; perplexity = exp(token-weighted mean loss)', async () => {
  const { tf, fx, model } = await get();
  const reader = await validation(fx);
  const masking = maskingFor(fx.tokenizer);
  const opts = { batchSize: 8, seed: 42 };
  const a = await evaluateMasked(tf, model, reader, masking, opts);
  const b = await evaluateMasked(tf, model, reader, masking, opts);
  assert.deepEqual(a, b);
  assert.equal(a.perplexity, Math.exp(a.loss));
  assert.ok(a.masked_tokens > 100 && a.tokens > a.masked_tokens && a.rows === reader.rows);

  // Independently: the same masks (Rng.derive(seed, EVAL_STREAM), rows in file order), each
  // batch's mean loss times its masked count, summed in float64 and divided once.
  const rng = Rng.derive(42, EVAL_STREAM);
  const stream = new RowStream(reader, { batchSize: 8, seed: 42, shuffle: false, dropLast: false });
  let sum = 0;
  let count = 0;
  const means: number[] = [];
  for (let raw = stream.next(); raw !== null; raw = stream.next()) {
    const batch = maskTokens(raw.ids, 32, masking.padId, masking.specials, masking.options, rng);
    const n = batch.labels.filter((l) => l !== IGNORE_INDEX).length;
    const mean = tf.tidy(() => model.maskedLoss(batchInputs(tf, batch), batch.labels, { training: false }).loss);
    const m = (await mean.data())[0];
    mean.dispose();
    sum += m * n;
    count += n;
    means.push(m);
  }
  assert.equal(count, a.masked_tokens);
  assert.ok(Math.abs(sum / count - a.loss) <= 1e-6 * a.loss, `${sum / count} vs ${a.loss}`);
  const meanOfMeans = means.reduce((x, y) => x + y, 0) / means.length;
  assert.notEqual(meanOfMeans, a.loss, 'the loss is token-weighted, not a mean of batch means');

  // Cutting batches into passes of 3 rows gives the same numbers.
  const split = await evaluateMasked(tf, model, reader, masking, { ...opts, rowsPerPass: 3 });
  assert.ok(Math.abs(split.loss - a.loss) <= 1e-5 * a.loss);
  assert.equal(split.masked_tokens, a.masked_tokens);
  // Another seed draws other masks.
  const other = await evaluateMasked(tf, model, reader, masking, { ...opts, seed: 7 });
  assert.notEqual(other.loss, a.loss);
  // --max-batches stops early.
  const first = await evaluateMasked(tf, model, reader, masking, { ...opts, maxBatches: 1 });
  assert.equal(first.rows, Math.min(8, reader.rows));
  reader.close();
});

test('pseudo-perplexity equals masking every token in turn by hand', async () => {
  const { tf, fx, model } = await get();
  const reader = await validation(fx);
  const masking = maskingFor(fx.tokenizer);
  const r = await evaluatePseudo(tf, model, reader, masking, { batchSize: 2, seed: 0, maxBatches: 1, rowsPerPass: 16 });
  assert.equal(r.rows, 2);
  assert.equal(r.pseudo, true);

  // By hand: for each non-special token of the two rows, the row with that token masked, the
  // log-probability of the token from the full logits.
  const T = 32;
  const ids = new Int32Array(2 * T);
  reader.readRow(0, ids, null, 0);
  reader.readRow(1, ids, null, T);
  let nll = 0;
  let n = 0;
  let tokens = 0;
  for (let row = 0; row < 2; row++) {
    for (let t = 0; t < T; t++) {
      const id = ids[row * T + t];
      if (id === masking.padId) continue;
      tokens++;
      if (masking.specials[id]) continue;
      const input = Array.from(ids.subarray(row * T, row * T + T));
      input[t] = masking.options.maskTokenId;
      const logp = tf.tidy(() => {
        const logits = model.logits({ inputIds: tf.tensor2d([input], [1, T], 'int32') as Tensor2D, attentionMask: tf.tensor2d([input.map((x) => (x === masking.padId ? 0 : 1))], [1, T], 'int32') as Tensor2D }, { training: false });
        return tf.logSoftmax(logits.reshape([T, -1])).slice([t, id], [1, 1]);
      });
      nll -= (await logp.data())[0];
      logp.dispose();
      n++;
    }
  }
  assert.equal(r.masked_tokens, n);
  assert.equal(r.tokens, tokens);
  assert.ok(Math.abs(r.loss - nll / n) <= 1e-4 * (nll / n), `${r.loss} vs ${nll / n}`);
  assert.ok(Math.abs(r.perplexity - Math.exp(nll / n)) <= 1e-3 * Math.exp(nll / n));
  reader.close();
});

test('raw text is tokenized with the model tokenizer; prepared data of another tokenizer is refused', async () => {
  const { tf, fx, model } = await get();
  const folder = await loadModelFolder((await get()).checkpoint);
  const text = path.join(tmp, 'held-out.txt');
  fs.writeFileSync(text, brownDocuments(200_000).slice(-1)[0]);
  const raw = await openEvalData(text, folder.tokenizer, { split: 'validation', seqLen: 32, maxPositions: 32, modelLabel: 'ckpt' });
  assert.equal(raw.prepared, false);
  const r = await evaluateMasked(tf, model, raw.reader, maskingFor(folder.tokenizer), { batchSize: 8, seed: 42 });
  assert.ok(r.masked_tokens > 50 && Number.isFinite(r.loss));
  const tmpDir = path.dirname(raw.reader.dir);
  await raw.close();
  assert.equal(fs.existsSync(tmpDir), false, 'the temporary prepared folder is removed');

  const other = await makeTinyCheckpoint(path.join(tmp, 'other-model'));
  await assert.rejects(
    openEvalData(fx.dataDir, other.tokenizer, { split: 'validation', seqLen: 32, maxPositions: 64, modelLabel: 'other-model' }),
    /the data in .* was prepared with tokenizer .* but the model other-model uses .*; prepare the data with --tokenizer MODEL_DIR/,
  );
});

test('raw text with a --seq-len above the model\'s positions is cut at the positions, with a note saying so', async () => {
  const { tf } = await get();
  const ck = await makeTinyCheckpoint(path.join(tmp, 'seq-len-model'), 'bert', { seed: 6 }); // 64 positions
  const text = path.join(tmp, 'seq-len.txt');
  fs.writeFileSync(text, brownDocuments(50_000).slice(-1)[0]);
  const notes: string[] = [];
  const run = (seqLen: number) => evaluateModels(tf, { models: [{ dir: ck.dir, source: 'tiny', revision: null }], data: [text], seqLen, batchSize: 8, maxBatches: 2, log: (l) => notes.push(l) });
  const [asked] = await run(1000);
  assert.deepEqual(notes, [`note: ${text} is cut into blocks of 64 tokens for tiny, its positions, not the 1000 of --seq-len`]);
  const [fits] = await run(64);
  assert.equal(notes.length, 1, 'no note when --seq-len fits');
  assert.deepEqual(asked.result, fits.result);
});

test('rows with no text in raw text are not scored, and a note says so once for two models', async () => {
  const { tf } = await get();
  const ck = await makeTinyCheckpoint(path.join(tmp, 'null-rows-model'), 'bert', { seed: 7 });
  const docs = brownDocuments(20_000);
  const file = path.join(tmp, 'null-rows.jsonl');
  fs.writeFileSync(file, [...docs.slice(0, 3).map((text) => ({ text })), { text: null }, { text: null }].map((r) => JSON.stringify(r)).join('\n') + '\n');
  const notes: string[] = [];
  const model = { dir: ck.dir, source: 'tiny', revision: null };
  const rows = await evaluateModels(tf, { models: [model, model], data: [file], seqLen: 32, batchSize: 8, maxBatches: 1, log: (l) => notes.push(l) });
  assert.equal(rows.length, 2);
  assert.deepEqual(notes, [`note: ${file}: 2 row(s) with no text ("text" null or empty) were skipped`]);
});

test('text of which no token can be scored is refused in one line, not reported as a NaN loss', async () => {
  const { tf } = await get();
  const ck = await makeTinyCheckpoint(path.join(tmp, 'unscored-model'), 'bert', { seed: 8 });
  const file = path.join(tmp, 'emoji.txt');
  fs.writeFileSync(file, '\u{1F600} \u{1F601} \u{1F602}\n'); // [CLS] [UNK] [UNK] [UNK] [SEP]
  const model = { dir: ck.dir, source: 'tiny', revision: null };
  for (const pseudo of [false, true]) {
    await assert.rejects(evaluateModels(tf, { models: [model], data: [file], seqLen: 32, pseudo }), (err: Error) =>
      err instanceof InputError && err.message === `no token of ${file} was scored for tiny (5 token(s) in 1 row(s); ${pseudo ? 'they are all special or unknown tokens' : 'no mask was drawn: too few tokens, or only special or unknown ones'}); evaluate on text the model's tokenizer knows`);
  }
  // The command line: the same line, exit 2 (bad input).
  const r = mlm(['evaluate', '--model', ck.dir, '--data', file, '--seq-len', '32']);
  assert.equal(r.status, 2, r.stderr);
  assert.equal(r.stderr.split('\n').filter((l) => l.startsWith('mlm: ')).join('\n'), `mlm: error: no token of ${file} was scored for ${ck.dir} (5 token(s) in 1 row(s); no mask was drawn: too few tokens, or only special or unknown ones); evaluate on text the model's tokenizer knows`);
});

function mlm(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MLM, ...args], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, MLM_BACKEND: 'wasm' } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('mlm evaluate --json: the documented shape (docs/formats.md), the same twice; several models print a list and a table', async () => {
  const { fx, checkpoint } = await get();
  const args = ['evaluate', '--model', checkpoint, '--data', fx.dataDir, '--batch-size', '8', '--json', '--no-progress'];
  const a = mlm(args);
  assert.equal(a.status, 0, a.stderr);
  const b = mlm(args);
  assert.equal(a.stdout, b.stdout);
  const doc = JSON.parse(a.stdout);
  assert.deepEqual(Object.keys(doc), ['loss', 'perplexity', 'accuracy', 'masked_tokens', 'tokens', 'seed', 'backend', 'eval_loss', 'eval_perplexity', 'eval_accuracy']);
  assert.equal(doc.perplexity, Math.exp(doc.loss));
  // The documented keys and training's names (metrics.jsonl, eval_results.json) carry the same figures.
  assert.deepEqual([doc.eval_loss, doc.eval_perplexity, doc.eval_accuracy], [doc.loss, doc.perplexity, doc.accuracy]);
  assert.equal(doc.backend, 'wasm');
  assert.equal(doc.seed, 42);

  const text = path.join(tmp, 'cli-raw.txt');
  fs.writeFileSync(text, brownDocuments(100_000).slice(-1)[0]);
  const many = mlm(['evaluate', '--model', checkpoint, checkpoint, '--data', fx.dataDir, text, '--batch-size', '8', '--max-batches', '2', '--json', '--no-progress']);
  assert.equal(many.status, 0, many.stderr);
  const list = JSON.parse(many.stdout);
  assert.equal(list.length, 4);
  assert.deepEqual(list.map((x: { data: string }) => x.data), [fx.dataDir, text, fx.dataDir, text]);
  assert.equal(list[0].loss, list[2].loss);
  const table = mlm(['evaluate', '--model', checkpoint, '--data', fx.dataDir, text, '--batch-size', '8', '--max-batches', '1', '--no-progress']);
  assert.equal(table.status, 0, table.stderr);
  assert.match(table.stdout, /model\s+data\s+loss\s+perplexity\s+accuracy\s+masked_tokens\s+tokens/);
  // --pseudo: the same keys without training's names (it is not what training logs), then "pseudo": true.
  const pseudo = mlm(['evaluate', '--model', checkpoint, '--data', text, '--pseudo', '--seq-len', '16', '--batch-size', '1', '--max-batches', '1', '--json', '--no-progress']);
  assert.equal(pseudo.status, 0, pseudo.stderr);
  const p = JSON.parse(pseudo.stdout);
  assert.deepEqual(Object.keys(p), ['loss', 'perplexity', 'accuracy', 'masked_tokens', 'tokens', 'seed', 'backend', 'pseudo']);
  assert.equal(p.pseudo, true);

  const mismatch = await makeTinyCheckpoint(path.join(tmp, 'cli-other'));
  const bad = mlm(['evaluate', '--model', mismatch.dir, '--data', fx.dataDir, '--no-progress']);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /^mlm: error: the data in .* was prepared with tokenizer .* but the model .* uses .*$/m);
  assert.equal(bad.stderr.trim().split('\n').filter((l) => l.startsWith('mlm:')).length, 1);
});

test('--whole-word-selection budget: evaluate draws the masks a training run with it draws', async () => {
  const { tf, fx, checkpoint, model } = await get();
  const models = [{ dir: checkpoint, source: 'run', revision: null }];
  const rows = (selection?: 'independent' | 'budget') =>
    evaluateModels(tf, { models, data: [fx.dataDir], batchSize: 8, wholeWordMask: true, wholeWordSelection: selection });
  const reader = await validation(fx);
  const budget = await evaluateMasked(tf, model, reader, maskingFor(fx.tokenizer, 0.15, true, 'budget'), { batchSize: 8, seed: 42 });
  reader.close();
  const [viaOption] = await rows('budget');
  assert.equal(viaOption.result.loss, budget.loss);
  assert.equal(viaOption.result.masked_tokens, budget.masked_tokens);
  const [independent] = await rows();
  assert.notEqual(independent.result.masked_tokens, budget.masked_tokens, 'the two schemes select other words');
  await assert.rejects(evaluateModels(tf, { models, data: [fx.dataDir], wholeWordSelection: 'budget' }), /--whole-word-selection chooses how whole words are selected: give --whole-word-mask too/);
});
