// The run folder as Hugging Face's output_dir (training/trainer.ts, training/hub.ts
// `runFolderModel`, training/best-model.ts): the final model at the root at the end, a run folder
// accepted wherever a model is (its newest complete checkpoint while unfinished), the
// *_results.json files with transformers' metric names, --load-best-at-end and early stopping
// (also across a resume).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEvaluation, earlyStoppingState, greaterIsBetter, parseBestMetric } from '../../training/best-model.ts';
import { loadModel, resolveModel } from '../../training/hub.ts';
import { readMetrics, type EvalLogEntry } from '../../training/report.ts';
import { readTrainerState } from '../../training/train-state.ts';
import type { TrainOptions } from '../../training/trainer.ts';
import { tinyRuns, trainOnWasm } from './train-helpers.ts';

const quiet = (_: string) => {};
const { tmp, data, options } = tinyRuns('mlmkit-runfolder-');
async function run(o: TrainOptions, extra: { onStep?: (s: { step: number }) => void; signal?: AbortSignal; log?: (l: string) => void } = {}) {
  return trainOnWasm(o, extra);
}
const bytes = (dir: string, f = 'model.safetensors') => fs.readFileSync(path.join(dir, f));
const evals = async (out: string) => (await readMetrics(out)).filter((e): e is EvalLogEntry => 'eval_loss' in e);

test('the final model is saved at the run folder root (the last checkpoint); --model RUN loads it; *_results.json use the metric names of metrics.jsonl', async () => {
  const fx = await data();
  const out = path.join(tmp, 'final');
  const seen: string[] = [];
  const r = await run(options({ data: fx.dataDir, out }), {
    onStep: ({ step }) => {
      // While the run goes on, the root holds no config.json and --model RUN is the newest checkpoint.
      if (step === 5) seen.push(fs.existsSync(path.join(out, 'config.json')) ? 'final' : 'none');
    },
  });
  assert.deepEqual(seen, ['none']);
  assert.equal(r.model, out);
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'vocab.txt']) assert.ok(bytes(out, f).equals(bytes(path.join(out, 'checkpoint-8'), f)), f);
  assert.ok(!fs.existsSync(path.join(out, 'trainer_state.json')), 'the root is a model folder, not a checkpoint');
  const notes: string[] = [];
  assert.equal((await resolveModel(out, { log: (l) => notes.push(l) })).dir, out);
  assert.deepEqual(notes, []);
  const loaded = await loadModel(out, { log: quiet });
  assert.equal(loaded.config.hidden_size, 32);

  const lastEval = (await evals(out)).pop()!;
  const evalResults = JSON.parse(fs.readFileSync(path.join(out, 'eval_results.json'), 'utf8'));
  const trainResults = JSON.parse(fs.readFileSync(path.join(out, 'train_results.json'), 'utf8'));
  const all = JSON.parse(fs.readFileSync(path.join(out, 'all_results.json'), 'utf8'));
  for (const k of ['eval_loss', 'eval_perplexity', 'eval_accuracy', 'eval_masked_tokens', 'epoch'] as const) assert.equal(evalResults[k], lastEval[k], k);
  assert.equal(evalResults.perplexity, lastEval.eval_perplexity);
  for (const k of ['eval_loss', 'eval_perplexity', 'eval_accuracy'] as const) assert.equal(r[k], lastEval[k], k);
  assert.deepEqual(Object.keys(trainResults).sort(), ['epoch', 'tokens_per_second', 'train_loss', 'train_runtime', 'train_samples_per_second', 'train_steps_per_second']);
  assert.equal(trainResults.train_loss, r.train_loss);
  assert.ok(trainResults.train_runtime > 0 && Math.abs(trainResults.train_steps_per_second * trainResults.train_runtime - 8) < 1e-6);
  assert.ok(Math.abs(trainResults.train_samples_per_second - 8 * trainResults.train_steps_per_second) < 1e-6);
  assert.deepEqual(all, { ...trainResults, ...evalResults });
});

test('an interrupted run has no final model: --model RUN is its newest complete checkpoint, with a one-line note; --resume finishes and publishes it', async () => {
  const fx = await data();
  const out = path.join(tmp, 'interrupted');
  const controller = new AbortController();
  const r = await run(options({ data: fx.dataDir, out }), { signal: controller.signal, onStep: ({ step }) => { if (step === 3) controller.abort(); } });
  assert.equal(r.interrupted, true);
  assert.equal(r.model, null);
  assert.ok(!fs.existsSync(path.join(out, 'config.json')));
  assert.ok(!fs.existsSync(path.join(out, 'train_results.json')));
  const notes: string[] = [];
  const resolved = await resolveModel(out, { log: (l) => notes.push(l) });
  assert.equal(resolved.dir, path.join(out, 'checkpoint-3'));
  assert.equal(notes.length, 1);
  assert.match(notes[0], /unfinished training run .*checkpoint-3$/);
  assert.equal((await loadModel(out, { log: quiet })).dir, path.join(out, 'checkpoint-3'));

  // A folder that is neither a model nor a run keeps the loader's own message.
  const empty = path.join(tmp, 'empty');
  fs.mkdirSync(empty);
  await assert.rejects(loadModel(empty, { log: quiet }), /config\.json/);

  await run(options({ data: fx.dataDir, out, resume: true }));
  assert.ok(bytes(out).equals(bytes(path.join(out, 'checkpoint-8'))));
  // Resuming a finished run for more steps takes the final model away until the new end.
  const during: boolean[] = [];
  await run(options({ data: fx.dataDir, out, resume: true, steps: 10 }), { onStep: () => during.push(fs.existsSync(path.join(out, 'config.json'))) });
  assert.deepEqual(during, [false, false]);
  assert.ok(bytes(out).equals(bytes(path.join(out, 'checkpoint-10'))));
});

test('--load-best-at-end: the final model is the best checkpoint by the metric (eval_loss, or eval_accuracy, greater is better)', async () => {
  const fx = await data();
  for (const metric of ['eval_loss', 'eval_accuracy']) {
    const out = path.join(tmp, `best-${metric}`);
    // A large learning rate: the loss still falls to the end, but the accuracy peaks early (at step 4 of 12).
    const r = await run(options({ data: fx.dataDir, out, steps: 12, lr: 1e-1, warmup: 0, loadBestAtEnd: true, metricForBest: metric }));
    const greater = metric === 'eval_accuracy';
    const all = await evals(out);
    const bestEntry = all.reduce((a: EvalLogEntry, b: EvalLogEntry) => ((greater ? b[metric as 'eval_accuracy'] > a[metric as 'eval_accuracy'] : b[metric as 'eval_loss'] < a[metric as 'eval_loss']) ? b : a));
    const bestDir = path.join(out, `checkpoint-${bestEntry.step}`);
    assert.equal(r.best_model_checkpoint, bestDir);
    assert.ok(bytes(out).equals(bytes(bestDir)), 'final weights are the best checkpoint\'s');
    if (greater) {
      // Here the best is not the last checkpoint, so the comparison tells best from last.
      assert.notEqual(bestEntry.step, 12);
      assert.ok(!bytes(out).equals(bytes(path.join(out, 'checkpoint-12'))));
    }
    const state = await readTrainerState(path.join(out, 'checkpoint-12'));
    assert.equal(state.best_step, bestEntry.step);
    assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'eval_results.json'), 'utf8')).eval_step, bestEntry.step);
    assert.equal(r.eval_loss, bestEntry.eval_loss);
  }
});

test('--resume --load-best-at-end: the best model is this run\'s checkpoint of the best step; a path in the state file is not followed', async () => {
  const fx = await data();
  const out = path.join(tmp, 'best-resume');
  const other = path.join(tmp, 'best-resume-other');
  const opts = { data: fx.dataDir, steps: 6, lr: 1e-1, warmup: 0, loadBestAtEnd: true, metricForBest: 'eval_accuracy' };
  await run(options({ ...opts, out }));
  await run(options({ ...opts, out: other, seed: 7 }));
  // The newest checkpoint's state names a model outside the run (an edited or moved state file).
  const stateFile = path.join(out, 'checkpoint-6', 'trainer_state.json');
  const state = JSON.parse(fs.readFileSync(stateFile, 'utf8'));
  const elsewhere = path.join(other, 'checkpoint-6');
  state.best_model_checkpoint = elsewhere;
  fs.writeFileSync(stateFile, JSON.stringify(state));
  const r = await run(options({ ...opts, out, steps: 8, resume: true }));
  const bestStep = (await readTrainerState(path.join(out, 'checkpoint-8'))).best_step;
  assert.equal(r.best_model_checkpoint, path.join(out, `checkpoint-${bestStep}`));
  assert.ok(bytes(out).equals(bytes(path.join(out, `checkpoint-${bestStep}`))), 'the final model is the run\'s best checkpoint');
  assert.ok(!bytes(out).equals(bytes(elsewhere)), 'the final model came from outside the run');
});

test('best-model rules: metric names, greater_is_better inferred, the patience counter with a threshold', () => {
  assert.equal(parseBestMetric('loss'), 'eval_loss');
  assert.equal(parseBestMetric('eval_accuracy'), 'eval_accuracy');
  assert.throws(() => parseBestMetric('bleu'), /--metric-for-best bleu is not an evaluation metric; use one of eval_loss/);
  assert.equal(greaterIsBetter('eval_loss'), false);
  assert.equal(greaterIsBetter('eval_perplexity'), false);
  assert.equal(greaterIsBetter('eval_accuracy'), true);
  // Lower is better, threshold 0.1: 3.0 (best), 2.95 (better but by less than 0.1: counts), 2.8 (resets), 2.9, 2.85.
  let s = { best: null as number | null, counter: 0 };
  const counters: number[] = [];
  for (const v of [3.0, 2.95, 2.8, 2.9, 2.85]) {
    s = afterEvaluation(s, v, false, 0.1);
    counters.push(s.counter);
  }
  assert.deepEqual(counters, [0, 1, 0, 1, 2]);
  assert.equal(s.best, 2.8);
  const history = [3.0, 2.95, 2.8].map((v, i) => ({ step: i, epoch: 0, eval_loss: v, eval_perplexity: Math.exp(v), eval_accuracy: 0, eval_masked_tokens: 1 }));
  assert.deepEqual(earlyStoppingState(history, 'eval_loss', 0.1), { best: 2.8, counter: 0 });
});

test('early stopping stops after `patience` evaluations without improvement, and a resumed run stops at the same step', async () => {
  const fx = await data();
  // Threshold 100: only the first evaluation improves, so patience 2 stops at the third (step 6 of 20).
  const o = (out: string, over: Partial<TrainOptions> = {}) => options({ data: fx.dataDir, out, steps: 20, earlyStoppingPatience: 2, earlyStoppingThreshold: 100, loadBestAtEnd: true, ...over });
  const whole = path.join(tmp, 'early');
  const r = await run(o(whole));
  assert.equal(r.step, 6);
  assert.equal(r.stopped_early_at, 6);
  assert.equal(r.model, whole);
  assert.deepEqual((await evals(whole)).map((e) => e.step), [2, 4, 6]);
  assert.ok(fs.existsSync(path.join(whole, 'checkpoint-6', 'trainer_state.json')));

  const split = path.join(tmp, 'early-resumed');
  const controller = new AbortController();
  await run(o(split), { signal: controller.signal, onStep: ({ step }) => { if (step === 3) controller.abort(); } });
  const resumed = await run(o(split, { resume: true }));
  assert.equal(resumed.stopped_early_at, 6);
  const strip = async (out: string) => (await readMetrics(out)).map((e) => ({ ...e, tokens_per_second: 0 }));
  assert.deepEqual(await strip(split), await strip(whole));
  assert.ok(bytes(split).equals(bytes(whole)), 'same final model as the uninterrupted run');
  // Resuming a run that stopped early does nothing.
  const lines: string[] = [];
  const again = await run(o(split, { resume: true }), { log: (l) => lines.push(l) });
  assert.equal(again.step, 6);
  assert.ok(lines.some((l) => /stopped early at step 6 .*nothing to do/.test(l)), lines.join('\n'));

  await assert.rejects(run(o(path.join(tmp, 'early-bad'), { evalEvery: 0 })), /--early-stopping-patience needs evaluations/);
  await assert.rejects(run(o(path.join(tmp, 'early-bad2'), { saveEvery: 3 })), /--save-every \(3\) must be a multiple of --eval-every \(2\)/);
});

test('early stopping leaves out the base model\'s evaluation (step 0), as transformers\' eval_on_start; so does a resumed run', async () => {
  const fx = await data();
  // Threshold 100: no evaluation after the first counted one improves. With step 0 counted, patience 2 stopped at step 4.
  const o = (out: string, over: Partial<TrainOptions> = {}) => options({ data: fx.dataDir, out, steps: 20, evalOnStart: true, earlyStoppingPatience: 2, earlyStoppingThreshold: 100, ...over });
  const whole = path.join(tmp, 'early-start');
  const r = await run(o(whole));
  assert.deepEqual((await evals(whole)).map((e) => e.step), [0, 2, 4, 6]);
  assert.equal(r.stopped_early_at, 6);
  const split = path.join(tmp, 'early-start-resumed');
  const controller = new AbortController();
  await run(o(split), { signal: controller.signal, onStep: ({ step }) => { if (step === 3) controller.abort(); } });
  assert.equal((await run(o(split, { resume: true }))).stopped_early_at, 6);
});

test('removeCheckpointTemps puts back a checkpoint whose rewrite was killed between its two renames, and removes other leftovers', async () => {
  const { removeCheckpointTemps } = await import('../../training/run-folder.ts');
  const out = path.join(tmp, 'temps');
  fs.mkdirSync(path.join(out, 'checkpoint-2'), { recursive: true });
  const put = (name: string) => {
    fs.mkdirSync(path.join(out, name));
    fs.writeFileSync(path.join(out, name, 'trainer_state.json'), name);
  };
  put('.checkpoint-4.ckpt-old-55-abcdef'); // checkpoint-4 moved aside, its new version not yet in place
  put('.checkpoint-4.ckpt-tmp-55-012345');
  put('.checkpoint-2.ckpt-tmp-56-0a0b0c'); // a write of checkpoint-2 killed before its renames
  await removeCheckpointTemps(out);
  assert.deepEqual(fs.readdirSync(out).sort(), ['checkpoint-2', 'checkpoint-4']);
  assert.equal(fs.readFileSync(path.join(out, 'checkpoint-4', 'trainer_state.json'), 'utf8'), '.checkpoint-4.ckpt-old-55-abcdef');
});
