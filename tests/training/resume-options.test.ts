// What --resume does with the options of the call (training/train-options.ts continuedOptions and
// checkResumable, training/starting-point.ts, training/trainer.ts): the run's own length and
// starting model unless given, no mixing of two sets of options in one run folder, the best
// checkpoint chosen again when --metric-for-best changes, and the folders around a run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { InputError } from '../../common/errors.ts';
import { exportModel } from '../../training/export-model.ts';
import { readMetrics, type EvalLogEntry } from '../../training/report.ts';
import type { TrainOptions } from '../../training/trainer.ts';
import { tinyRuns, trainOnWasm, writeTinyConfig } from './train-helpers.ts';

const { tmp, data, configFile, options } = tinyRuns('mlmkit-resume-options-');
async function run(o: TrainOptions) {
  const lines: string[] = [];
  const result = await trainOnWasm(o, { log: (l) => lines.push(l) });
  return { result, lines };
}
const refused = (re: RegExp) => (e: unknown) => e instanceof InputError && re.test(e.message) && !e.message.includes('\n');
/** The run folder without the checkpoints after `step` (as if it had been killed there). */
function cutAfter(out: string, step: number): void {
  for (const e of fs.readdirSync(out)) {
    const m = /^checkpoint-(\d+)$/.exec(e);
    if (m && Number(m[1]) > step) fs.rmSync(path.join(out, e), { recursive: true });
  }
}

test('--resume without --steps or --epochs trains to the run\'s own length; a different --config is not used nor recorded', async () => {
  const fx = await data();
  const out = path.join(tmp, 'length');
  await run(options({ data: fx.dataDir, out }));
  cutAfter(out, 4);
  const otherConfig = writeTinyConfig(path.join(tmp, 'other.json'), { max_position_embeddings: 32, hidden_size: 48 });
  // Before 2026-12-08 this ran one epoch (the default) with a note "--steps undefined (was 8)".
  const { result, lines } = await run(options({ data: fx.dataDir, out, steps: undefined, resume: true, config: otherConfig }));
  assert.equal(result.step, 8);
  assert.ok(!lines.some((l) => /resuming with/.test(l)), lines.join('\n'));
  assert.ok(lines.includes(`note: --config ${otherConfig} is not used: the run continues from ${path.join(out, 'checkpoint-4')}, pretrained from scratch`), lines.join('\n'));
  const record = JSON.parse(fs.readFileSync(path.join(out, 'run.json'), 'utf8'));
  assert.equal(record.args.config, configFile);
  assert.equal(record.total_steps, 8);
  // A changed option that is unset now reads "unset", not "undefined".
  const epochs = await run(options({ data: fx.dataDir, out: path.join(tmp, 'length-epochs'), steps: undefined, epochs: 0.5, resume: path.join(out, 'checkpoint-4') }));
  assert.ok(epochs.lines.some((l) => l.startsWith('note: resuming with --steps unset (was 8), --epochs 0.5 (was unset):')), epochs.lines.join('\n'));
});

test('--resume from an earlier checkpoint with other options is refused where the run\'s later checkpoints are; same options or a new --out go on', async () => {
  const fx = await data();
  const out = path.join(tmp, 'branch');
  await run(options({ data: fx.dataDir, out }));
  const before = fs.readFileSync(path.join(out, 'checkpoint-8', 'model.safetensors'));
  await assert.rejects(
    run(options({ data: fx.dataDir, out, lr: 1e-3, resume: path.join(out, 'checkpoint-4') })),
    refused(/^cannot go on from .*checkpoint-4 inside .*branch with --lr 0\.001 \(was 0\.0005\): the run's later checkpoints \(checkpoint-6, checkpoint-8\) were trained with the old options .*give a new --out to branch from that checkpoint, or remove them to go on here$/),
  );
  assert.ok(fs.readFileSync(path.join(out, 'checkpoint-8', 'model.safetensors')).equals(before), 'the run is left as it was');
  // The same options: the later checkpoints are what this run computes again (exact resume).
  const same = await run(options({ data: fx.dataDir, out, resume: path.join(out, 'checkpoint-4') }));
  assert.equal(same.result.step, 8);
  assert.ok(fs.readFileSync(path.join(out, 'checkpoint-8', 'model.safetensors')).equals(before));
  // Other options into a new --out: a branch of its own.
  const branch = await run(options({ data: fx.dataDir, out: path.join(tmp, 'branch-2'), lr: 1e-3, resume: path.join(out, 'checkpoint-4') }));
  assert.equal(branch.result.step, 8);
  // With the later checkpoints removed, the same folder goes on with the new options.
  cutAfter(out, 4);
  assert.equal((await run(options({ data: fx.dataDir, out, lr: 1e-3, resume: true }))).result.step, 8);

  // --save-total-limit counts only the checkpoints up to the one just saved: at step 5 of a resume
  // from checkpoint-2, checkpoint-4 (this run's newest) is kept and checkpoint-6 (a later point)
  // is left until this run replaces it.
  const limited = path.join(tmp, 'limited');
  await run(options({ data: fx.dataDir, out: limited }));
  const seen: string[][] = [];
  await trainOnWasm(options({ data: fx.dataDir, out: limited, saveTotalLimit: 1, resume: path.join(limited, 'checkpoint-2') }), {
    log: () => {},
    onStep: ({ step }) => { if (step === 5) seen.push(fs.readdirSync(limited).filter((e) => e.startsWith('checkpoint-')).sort()); },
  });
  assert.deepEqual(seen, [['checkpoint-4', 'checkpoint-6', 'checkpoint-8']]);
  assert.ok(fs.readFileSync(path.join(limited, 'checkpoint-8', 'model.safetensors')).equals(before), 'the same run, computed again');
});

test('--resume with another --metric-for-best chooses the best checkpoint again by it, from the run\'s evaluations', async () => {
  const fx = await data();
  const out = path.join(tmp, 'metric');
  // Accuracy first: its best value cannot be compared with losses.
  await run(options({ data: fx.dataDir, out, steps: 6, lr: 1e-1, warmup: 0, metricForBest: 'eval_accuracy', loadBestAtEnd: true }));
  const { result, lines } = await run(options({ data: fx.dataDir, out, steps: 10, lr: 1e-1, warmup: 0, loadBestAtEnd: true, resume: true }));
  assert.ok(lines.some((l) => /^note: --metric-for-best eval_loss \(was eval_accuracy\): the best checkpoint so far is chosen again by it, checkpoint-\d+ \(eval_loss \d/.test(l)), lines.join('\n'));
  const all = (await readMetrics(out)).filter((e): e is EvalLogEntry => 'eval_loss' in e && e.step > 0);
  const best = all.reduce((a, b) => (b.eval_loss < a.eval_loss ? b : a));
  assert.equal(result.best_model_checkpoint, path.join(out, `checkpoint-${best.step}`));
  assert.equal(result.eval_loss, best.eval_loss);
});

test('an export inside a run folder is refused; --resume over a foreign entry says to move it; --resume with nothing to resume is one error', async () => {
  const fx = await data();
  const out = path.join(tmp, 'around');
  await run(options({ data: fx.dataDir, out, steps: 4 }));
  await assert.rejects(exportModel({ model: path.join(out, 'checkpoint-4'), out: path.join(out, 'exp'), format: 'hf' }),
    refused(/^--out .*around\/exp lies inside the training run folder .*around, which holds only what mlm train writes/));
  assert.ok(!fs.existsSync(path.join(out, 'exp')));
  await assert.rejects(run(options({ data: fx.dataDir, out: path.join(out, 'nested') })), refused(/^--out .*around\/nested lies inside the training run folder/));
  fs.mkdirSync(path.join(out, 'mine'));
  await assert.rejects(run(options({ data: fx.dataDir, out, steps: 6, resume: true })),
    refused(/holds files that are not from an mlm train run \(mine\); move them out of the run folder to resume it$/));
  const empty = path.join(tmp, 'empty');
  const lines: string[] = [];
  await assert.rejects(trainOnWasm(options({ data: fx.dataDir, out: empty, config: undefined, resume: true }), { log: (l) => lines.push(l) }),
    refused(/^--resume: .*empty holds no checkpoint to continue from; give --config FILE/));
  assert.deepEqual(lines, [], 'no "starting from scratch" note before the error');
});
