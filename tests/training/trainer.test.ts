// training/trainer.ts on a tiny BERT (hidden 32, 2 layers) and Brown-corpus shards (vocab 500,
// seq 32): gradient accumulation equals the full batch; the tensor count stays flat step after
// step; checkpoints hold what docs/formats.md ("Checkpoints") lists; --save-total-limit keeps the newest K plus
// the best; a failed save (disk full) leaves the previous checkpoint intact and the run resumable;
// the run folder rules; --whole-word-mask masks whole words (replayed from the trainer's stream). (That the masked-positions-only loss equals the full-logits loss, values
// and gradients, is tested with the model: tests/training/models/bert.test.ts.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Tensor } from '@tensorflow/tfjs';
import { MaskedBatches, RowStream } from '../../data/batches.ts';
import { InputError } from '../../common/errors.ts';
import { readManifest, SplitReader } from '../../data/shards.ts';
import { selectBackend, type Tf } from '../../training/backend.ts';
import { loadModelFolder } from '../../training/checkpoint.ts';
import { maskingFor } from '../../training/evaluate.ts';
import { splitBatch } from '../../training/passes.ts';
import { parseModelConfig, updateModelConfig } from '../../training/models/config.ts';
import { createMaskedLM } from '../../training/models/roberta.ts';
import { readMetrics } from '../../training/report.ts';
import { listCheckpoints, pruneCheckpoints, readOptimizerState, readTrainerState } from '../../training/train-state.ts';
import { train, TRAIN_DEFAULTS, TrainingError, type TrainOptions } from '../../training/trainer.ts';
import { computeGradients } from '../../training/train-step.ts';
import { brownDocuments, preparedFixture, writeTinyConfig, type PreparedFixture } from './train-helpers.ts';

const quiet = (_: string) => {};
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-trainer-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

let fixture: Promise<PreparedFixture> | null = null;
function data(): Promise<PreparedFixture> {
  fixture ??= preparedFixture(path.join(tmp, 'fx'), brownDocuments(120_000), { vocabSize: 500, seqLen: 32 });
  return fixture;
}
const configFile = writeTinyConfig(path.join(tmp, 'tiny.json'), { max_position_embeddings: 32 });
const noDropoutFile = writeTinyConfig(path.join(tmp, 'tiny-nodrop.json'), { max_position_embeddings: 32, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 });

let tfPromise: Promise<Tf> | null = null;
const wasm = () => (tfPromise ??= selectBackend('wasm', { log: quiet }).then((b) => b.tf));

function options(over: Partial<TrainOptions>): TrainOptions {
  return { ...TRAIN_DEFAULTS, config: configFile, data: '', out: '', steps: 6, batchSize: 8, logEvery: 1, evalEvery: 0, saveEvery: 0, evalBatches: 2, ...over };
}

async function run(o: TrainOptions, extra: { onStep?: (s: { step: number }) => void; signal?: AbortSignal } = {}) {
  const tf = await wasm();
  return train(o, { tf, backend: { name: 'wasm', device: 'test' }, version: 'test', log: quiet, progress: false, ...extra });
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

test('gradient accumulation: 4 micro-batches equal one batch of 4x (loss and gradients within 1e-5)', async () => {
  const tf = await wasm();
  const fx = await data();
  const manifest = await readManifest(fx.dataDir);
  const reader = new SplitReader(fx.dataDir, manifest, 'train');
  const masking = maskingFor(fx.tokenizer);
  const batches = new MaskedBatches(new RowStream(reader, { batchSize: 16, seed: 3, shuffle: true, dropLast: true }), masking.options, masking.padId, masking.specials, 3);
  const batch = batches.next()!;
  reader.close();
  const config = updateModelConfig(parseModelConfig(JSON.parse(fs.readFileSync(noDropoutFile, 'utf8')), 'tiny'), { vocab_size: fx.tokenizer.vocabSize }, 'tiny');
  const model = createMaskedLM(tf, config, { seed: 5 });

  const whole = computeGradients(tf, model, [batch], { training: false });
  const parts = splitBatch(batch, 4);
  assert.equal(parts.length, 4);
  const counts = parts.map((p) => p.labels.filter((l) => l !== -100).length);
  assert.ok(new Set(counts).size > 1, `micro-batches with different masked counts make the test meaningful: ${counts}`);
  const accumulated = computeGradients(tf, model, parts, { training: false });
  assert.equal(accumulated.maskedCount, whole.maskedCount);
  const [l1, l2] = [(await whole.loss.data())[0], (await accumulated.loss.data())[0]];
  assert.ok(Math.abs(l1 - l2) <= 1e-5 * l1, `loss ${l1} vs ${l2}`);
  assert.equal(accumulated.grads.size, model.variables.size);
  for (const [name, g] of whole.grads) {
    const a = (await g.data()) as Float32Array;
    const b = (await accumulated.grads.get(name)!.data()) as Float32Array;
    const scale = Math.max(...Array.from(a, Math.abs));
    assert.ok(maxAbsDiff(a, b) <= 1e-5 * Math.max(scale, 1e-3), `${name}: max diff ${maxAbsDiff(a, b)} (max |g| ${scale})`);
  }
  tf.dispose([whole.loss, accumulated.loss, ...whole.grads.values(), ...accumulated.grads.values()] as Tensor[]);
  model.dispose();

  // The same through the trainer: --batch-size 16 against --batch-size 4 --grad-accum 4 (same
  // rows, same masks: masks are drawn row by row), without dropout: the same loss at every step.
  const fxd = await data();
  const a = await run(options({ config: noDropoutFile, data: fxd.dataDir, out: path.join(tmp, 'acc-a'), batchSize: 16, steps: 3 }));
  const b = await run(options({ config: noDropoutFile, data: fxd.dataDir, out: path.join(tmp, 'acc-b'), batchSize: 4, gradAccum: 4, steps: 3 }));
  assert.equal(a.step, 3);
  const la = (await readMetrics(path.join(tmp, 'acc-a'))).filter((e) => 'loss' in e).map((e) => (e as { loss: number }).loss);
  const lb = (await readMetrics(path.join(tmp, 'acc-b'))).filter((e) => 'loss' in e).map((e) => (e as { loss: number }).loss);
  assert.equal(la.length, 3);
  la.forEach((x, i) => assert.ok(Math.abs(x - lb[i]) <= 1e-5 * x, `step ${i + 1}: ${x} vs ${lb[i]}`));
  void b;
});

test('no tensor leaks: the tensor count is the same after every step from the second on (eval and save included)', async () => {
  const tf = await wasm();
  const fx = await data();
  const counts: number[] = [];
  const result = await run(options({ data: fx.dataDir, out: path.join(tmp, 'leaks'), steps: 10, evalEvery: 3, saveEvery: 4 }), {
    onStep: () => counts.push(tf.memory().numTensors),
  });
  assert.equal(result.step, 10);
  assert.equal(counts.length, 10);
  assert.deepEqual(new Set(counts.slice(1)).size, 1, `tensor counts per step: ${counts.join(' ')}`);
  // Nothing is left once the run returns (model, optimizer and all freed).
  assert.ok(tf.memory().numTensors <= counts[0], `${tf.memory().numTensors} tensors after the run`);
});

test('a checkpoint is a Hugging Face folder plus trainer_state.json and optimizer.safetensors', async () => {
  const fx = await data();
  const out = path.join(tmp, 'ckpt');
  const result = await run(options({ data: fx.dataDir, out, steps: 4, saveEvery: 2, evalEvery: 2 }));
  assert.equal(result.checkpoint, path.join(out, 'checkpoint-4'));
  assert.deepEqual(listCheckpoints(out).map((c) => [c.step, c.complete]), [[2, true], [4, true]]);
  const dir = path.join(out, 'checkpoint-4');
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'vocab.txt', 'trainer_state.json', 'optimizer.safetensors']) {
    assert.ok(fs.existsSync(path.join(dir, f)), f);
  }
  const folder = await loadModelFolder(dir);
  assert.equal(folder.config.vocab_size, fx.tokenizer.vocabSize);
  assert.equal(folder.tokenizer.sha256, fx.tokenizer.sha256);
  const state = await readTrainerState(dir);
  assert.equal(state.global_step, 4);
  assert.equal(state.args.batch_size, 8);
  assert.equal(state.backend, 'wasm');
  assert.ok(state.data_state.rng.length === 4 && state.data_state.position.cursor > 0);
  assert.equal(state.best_step !== null, true);
  assert.ok(state.log_history.some((e) => 'eval_loss' in e));
  const opt = await readOptimizerState(dir);
  assert.equal(opt.step, 4);
  // Moments in the layout of model.safetensors: Linear weights [out, in].
  const q = opt.tensors.get('bert.encoder.layer.0.intermediate.dense.weight.exp_avg_sq')!;
  assert.deepEqual(q.shape, [64, 32]);
  assert.equal(opt.tensors.size, 2 * folder.weights.tensors.size);
  assert.ok(fs.existsSync(path.join(out, 'report.md')) && ['loss.svg', 'eval.svg', 'lr-grad-norm.svg'].every((f) => fs.existsSync(path.join(out, f))));
  const report = fs.readFileSync(path.join(out, 'report.md'), 'utf8');
  assert.match(report, /!\[loss\]\(loss\.svg\)/);
  assert.match(fs.readFileSync(path.join(out, 'loss.svg'), 'utf8'), /^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"[\s\S]*<polyline[\s\S]*<\/svg>\n$/);
});

test('--save-total-limit keeps the newest K checkpoints plus the best', async () => {
  const out = path.join(tmp, 'prune');
  for (const step of [10, 20, 30, 40, 50]) {
    fs.mkdirSync(path.join(out, `checkpoint-${step}`), { recursive: true });
    fs.writeFileSync(path.join(out, `checkpoint-${step}`, 'trainer_state.json'), '{}');
  }
  fs.mkdirSync(path.join(out, 'checkpoint-60')); // incomplete: not counted, not removed
  const removed = await pruneCheckpoints(out, 2, 20);
  assert.deepEqual(removed.map((d) => path.basename(d)), ['checkpoint-10', 'checkpoint-30']);
  assert.deepEqual(listCheckpoints(out).map((c) => c.step), [20, 40, 50, 60]);
  assert.deepEqual(await pruneCheckpoints(out, 0, null), []);

  // In a run: limit 1 leaves the last checkpoint and the best one.
  const fx = await data();
  const runOut = path.join(tmp, 'prune-run');
  await run(options({ data: fx.dataDir, out: runOut, steps: 6, saveEvery: 2, evalEvery: 2, saveTotalLimit: 1 }));
  const state = await readTrainerState(path.join(runOut, 'checkpoint-6'));
  const kept = listCheckpoints(runOut).map((c) => c.step);
  assert.deepEqual(kept, [...new Set([state.best_step!, 6])].sort((x, y) => x - y));
});

test('disk full while saving: the previous checkpoint stays intact and the run resumes from it', async () => {
  const fx = await data();
  const out = path.join(tmp, 'diskfull');
  // Make every write of model.safetensors inside a temporary checkpoint folder fail with ENOSPC
  // once step 4 is reached (the first save, at step 2, goes through).
  const fsp = createRequire(import.meta.url)('node:fs/promises') as typeof import('node:fs/promises');
  const realOpen = fsp.open;
  let failing = false;
  fsp.open = (async (file: fs.PathLike, ...rest: unknown[]) => {
    if (failing && String(file).includes('.ckpt-tmp-') && String(file).includes('model.safetensors')) {
      throw Object.assign(new Error(`ENOSPC: no space left on device, open '${String(file)}'`), { code: 'ENOSPC' });
    }
    return (realOpen as (...a: unknown[]) => unknown)(file, ...rest);
  }) as typeof fsp.open;
  syncBuiltinESMExports();
  try {
    await assert.rejects(
      run(options({ data: fx.dataDir, out, steps: 6, saveEvery: 2 }), { onStep: ({ step }) => { failing = step >= 4; } }),
      (err: unknown) => err instanceof TrainingError &&
        /^could not save .*checkpoint-4 \(no space left on the device\); the previous checkpoint .*checkpoint-2 is intact; free space at .*diskfull, then run again with --resume$/.test(err.message),
    );
  } finally {
    fsp.open = realOpen;
    syncBuiltinESMExports();
  }
  assert.deepEqual(listCheckpoints(out).map((c) => [c.step, c.complete]), [[2, true]]);
  assert.deepEqual(fs.readdirSync(out).filter((e) => e.startsWith('.')), [], 'no temporary folder is left');
  await loadModelFolder(path.join(out, 'checkpoint-2'));
  const resumed = await run(options({ data: fx.dataDir, out, steps: 6, saveEvery: 2, resume: true }));
  assert.equal(resumed.step, 6);
  assert.deepEqual(listCheckpoints(out).map((c) => c.step), [2, 4, 6]);
});

test('a read-only run folder: the save fails and the previous checkpoint stays intact', { skip: process.getuid?.() === 0 ? 'root ignores file permissions (the ENOSPC test covers this path)' : false }, async () => {
  const fx = await data();
  const out = path.join(tmp, 'readonly');
  await assert.rejects(
    run(options({ data: fx.dataDir, out, steps: 4, saveEvery: 2 }), { onStep: ({ step }) => { if (step === 3) fs.chmodSync(out, 0o555); } }),
    /could not save .*checkpoint-4 .*the previous checkpoint .*checkpoint-2 is intact/,
  );
  fs.chmodSync(out, 0o755);
  assert.deepEqual(listCheckpoints(out).map((c) => [c.step, c.complete]), [[2, true]]);
});

test('the run folder: unrelated files, an earlier run without --resume, bad options', async () => {
  const fx = await data();
  const foreign = path.join(tmp, 'foreign');
  fs.mkdirSync(foreign);
  fs.writeFileSync(path.join(foreign, 'notes.txt'), 'mine');
  await assert.rejects(run(options({ data: fx.dataDir, out: foreign })), (e: unknown) => e instanceof InputError && /holds files that are not from an mlm train run \(notes\.txt\)/.test(e.message));

  const earlier = path.join(tmp, 'earlier');
  const first = await run(options({ data: fx.dataDir, out: earlier, steps: 2 }));
  await assert.rejects(run(options({ data: fx.dataDir, out: earlier, steps: 2 })), /holds an earlier run; pass --resume to continue or choose another --out/);
  // --resume on a finished run: nothing to do; the results and report keep the training session's
  // figures (they were rewritten with this session's zero runtime before 2026-12-08).
  const records = ['train_results.json', 'all_results.json', 'report.md'].map((f) => fs.readFileSync(path.join(earlier, f), 'utf8'));
  const again = await run(options({ data: fx.dataDir, out: earlier, steps: 2, resume: true }));
  assert.equal(again.step, 2);
  assert.deepEqual(['train_results.json', 'all_results.json', 'report.md'].map((f) => fs.readFileSync(path.join(earlier, f), 'utf8')), records);
  assert.ok(first.train_runtime > 0);
  assert.equal(again.train_runtime, first.train_runtime);
  assert.equal(again.tokens_per_second, first.tokens_per_second);
  assert.equal(again.eval_loss, first.eval_loss);
  // Fewer steps than trained: still nothing to do, and the run's record keeps its own total.
  const record = fs.readFileSync(path.join(earlier, 'run.json'), 'utf8');
  assert.equal((await run(options({ data: fx.dataDir, out: earlier, steps: 1, resume: true }))).step, 2);
  assert.equal(fs.readFileSync(path.join(earlier, 'run.json'), 'utf8'), record);
  assert.equal(JSON.parse(record).total_steps, 2);
  // Changing what decides the batches is refused on resume.
  await assert.rejects(run(options({ data: fx.dataDir, out: earlier, steps: 4, resume: true, batchSize: 4 })), /cannot resume from .*--batch-size 8, this run asks for 4/);

  await assert.rejects(run(options({ data: fx.dataDir, out: path.join(tmp, 'x1'), steps: 3, epochs: 1 })), /either --steps or --epochs, not both/);
  await assert.rejects(run(options({ data: fx.dataDir, out: path.join(tmp, 'x2'), from: fx.root })), /either --config .* or --from .*, not both/);
  await assert.rejects(run(options({ data: fx.dataDir, out: path.join(tmp, 'x3'), config: path.join(tmp, 'nope.json') })), /--config .*nope\.json not found/);
  await assert.rejects(run(options({ data: fx.dataDir, out: path.join(tmp, 'x4'), config: writeTinyConfig(path.join(tmp, 'short.json'), { max_position_embeddings: 16 }) })),
    /rows have 32 tokens but the model has 16 positions/);
});

test('--epochs sets the number of steps from the data; --whole-word-mask masks whole words', async () => {
  const fx = await data();
  const manifest = await readManifest(fx.dataDir);
  const perEpoch = Math.floor(manifest.splits.train.rows / 8);
  const r = await run(options({ data: fx.dataDir, out: path.join(tmp, 'epochs'), steps: undefined, epochs: 0.1, gradAccum: 2, wholeWordMask: true }));
  assert.equal(r.step, Math.ceil((0.1 * perEpoch) / 2));
  const state = await readTrainerState(r.checkpoint!);
  assert.ok(Math.abs(state.epoch - (r.step * 2) / perEpoch) < 1e-12);
  assert.equal(state.args.whole_word_mask, true);
  assert.ok(Number.isFinite(r.train_loss));

  // That the masks were whole-word, not only that the flag was recorded: replay the batch stream
  // the trainer builds (same split, batch size, seed and masking) for the batches it drew, check
  // every word of every batch is selected whole, and check the replay ends where the trainer's
  // saved stream ended. The masking RNG's state after those batches depends on the scheme (one
  // selection draw per word, not per token), so a token-level run would not end in that state.
  const reader = new SplitReader(fx.dataDir, manifest, 'train');
  const replay = (wholeWord: boolean, selection: 'independent' | 'budget' = 'independent', steps = r.step) => {
    const masking = maskingFor(fx.tokenizer, TRAIN_DEFAULTS.mlmProbability, wholeWord, selection);
    const batches = new MaskedBatches(new RowStream(reader, { batchSize: 8, seed: TRAIN_DEFAULTS.seed, shuffle: true, dropLast: true }),
      masking.options, masking.padId, masking.specials, TRAIN_DEFAULTS.seed);
    const words = new RowStream(reader, { batchSize: 8, seed: TRAIN_DEFAULTS.seed, shuffle: true, dropLast: true });
    let split = 0; // words with some pieces selected and others not
    let selectedWords = 0;
    for (let b = 0; b < steps * 2; b++) {
      const batch = batches.next()!;
      const { ids, wordStarts } = words.next()!;
      const eligible = (i: number) => ids[i] !== masking.padId && masking.specials[ids[i]] === 0;
      for (let i = 0; i < ids.length;) {
        if (!eligible(i)) { i++; continue; }
        let end = i + 1;
        while (end < ids.length && end % batch.seqLen !== 0 && eligible(end) && wordStarts[end] === 0) end++;
        let selected = 0;
        for (let k = i; k < end; k++) if (batch.labels[k] !== -100) selected++;
        if (selected > 0 && selected < end - i) split++;
        if (selected === end - i && end - i > 1) selectedWords++;
        i = end;
      }
    }
    return { split, selectedWords, state: batches.getState() };
  };
  const whole = replay(true);
  assert.equal(whole.split, 0, 'every word is masked whole');
  assert.ok(whole.selectedWords > 0, 'multi-piece words were selected, so the check has something to check');
  assert.deepEqual(whole.state, state.data_state, 'the replay ends where the trainer\'s batch stream ended');
  // The same check fails for token-level masking: words are split and the stream ends elsewhere.
  const tokens = replay(false);
  assert.ok(tokens.split > 0, 'token-level masking splits some words');
  assert.notDeepEqual(tokens.state.rng, state.data_state.rng);

  // --whole-word-selection budget (BERT's scheme) reaches the masking: its run's stream ends where
  // a budget replay ends, words are whole, and not where an independent replay ends.
  const rb = await run(options({ data: fx.dataDir, out: path.join(tmp, 'budget'), steps: 2, gradAccum: 2, wholeWordMask: true, wholeWordSelection: 'budget' }));
  const budgetState = await readTrainerState(rb.checkpoint!);
  assert.equal(budgetState.args.whole_word_selection, 'budget');
  const budget = replay(true, 'budget', rb.step);
  assert.equal(budget.split, 0, 'every word is masked whole');
  assert.deepEqual(budget.state, budgetState.data_state);
  assert.notDeepEqual(replay(true, 'independent', rb.step).state.rng, budgetState.data_state.rng);
  reader.close();
});

test('--whole-word-selection without --whole-word-mask, or an unknown scheme, is refused', async () => {
  const fx = await data();
  await assert.rejects(run(options({ data: fx.dataDir, out: path.join(tmp, 'wws1'), wholeWordSelection: 'budget' })),
    (e: Error) => e instanceof InputError && /--whole-word-selection chooses how whole words are selected: give --whole-word-mask too/.test(e.message));
  await assert.rejects(run(options({ data: fx.dataDir, out: path.join(tmp, 'wws2'), wholeWordMask: true, wholeWordSelection: 'bogus' as 'budget' })),
    (e: Error) => e instanceof InputError && /--whole-word-selection must be independent or budget, got "bogus"/.test(e.message));
});
