// The CLI against broken runs, hostile files and impossible requests (the faults of the security
// review): each ends with its exit code and one line saying what is wrong and what to do, and
// leaves nothing wrong behind. Covered: a run folder locked by another process, divergence (training
// and evaluation loss), FIFOs where files are expected, NaN weights, an --out through a file, a config
// too large for memory, the advice for a damaged newest checkpoint, a `__proto__` key in a config.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { acquireLock } from '../../data/lock.ts';
import { loadSafetensorsF32, saveSafetensors } from '../../training/safetensors.ts';
import { DIVERGENCE_FACTOR, divergence } from '../../training/train-step.ts';
import { snapshot } from '../helpers/snapshot.ts';
import { makeTinyCheckpoint } from './tiny-checkpoint.ts';
import { brownDocuments, MLM, preparedFixture, ROOT, writeTinyConfig, type PreparedFixture } from './train-helpers.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-safety-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

let fixture: Promise<PreparedFixture> | null = null;
const data = () => (fixture ??= preparedFixture(path.join(tmp, 'fx'), brownDocuments(60_000), { vocabSize: 300, seqLen: 32 }));
const config = writeTinyConfig(path.join(tmp, 'tiny.json'), { max_position_embeddings: 32 });

function mlm(args: string[], timeout = 120_000): { status: number | null; stdout: string; stderr: string; ms: number } {
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [MLM, ...args], { cwd: ROOT, encoding: 'utf8', timeout, env: { ...process.env, MLM_BACKEND: 'wasm' } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, ms: Date.now() - t0 };
}

/** Asserts the exit code and exactly one `mlm: error:` (2) or `mlm: failed:` (1) line; returns it. */
function oneLine(r: { status: number | null; stderr: string }, status: 1 | 2, re: RegExp): string {
  assert.equal(r.status, status, `exit ${r.status}: ${r.stderr}`);
  const lines = r.stderr.split('\n').filter((l) => l.startsWith(status === 2 ? 'mlm: error:' : 'mlm: failed:'));
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], re);
  assert.doesNotMatch(r.stderr, /\n\s+at /); // no stack trace
  return lines[0];
}

const trainArgs = (fx: PreparedFixture, out: string, ...more: string[]) =>
  ['train', '--config', config, '--data', fx.dataDir, '--out', out, '--batch-size', '8', '--no-progress', ...more];

test('a run folder (or prepare --out) held by another live process: exit 2 naming it; nothing written', async () => {
  const fx = await data();
  const out = path.join(tmp, 'locked');
  const release = acquireLock(out, 'run folder'); // this test process is the other, live process
  try {
    const r = mlm(trainArgs(fx, out, '--steps', '2'));
    oneLine(r, 2, new RegExp(`^mlm: error: the run folder .*locked is in use by another process \\(pid ${process.pid} on .*: \`.*\`, since \\S+\\); wait for it to finish or choose another --out \\(if that process is gone, delete .*\\.locked\\.lock\\)$`));
    assert.equal(fs.existsSync(out), false);
    const prep = path.join(tmp, 'prep-locked');
    const releasePrep = acquireLock(prep, 'prepared-data folder');
    try {
      const p = mlm(['prepare', '--corpus', path.join(fx.root, 'corpus'), '--tokenizer', fx.tokenizerDir, '--out', prep, '--no-progress']);
      oneLine(p, 2, /^mlm: error: the prepared-data folder .*prep-locked is in use by another process \(pid \d+/);
    } finally {
      releasePrep();
    }
  } finally {
    release();
  }
});

test('divergence rule: non-finite, or above 3 ln(V)', () => {
  assert.equal(DIVERGENCE_FACTOR, 3);
  assert.equal(divergence('evaluation loss', NaN, 300), 'evaluation loss became NaN');
  assert.equal(divergence('loss', Infinity, 300), 'loss became Infinity');
  const limit = 3 * Math.log(300);
  assert.equal(divergence('loss', limit, 300), null);
  assert.equal(divergence('loss', Math.log(300), 300), null);
  assert.equal(divergence('loss', 2.4e18, 300), 'loss exploded to 2.40e+18 (above 17.11 = 3 x ln(300), 3 times the loss of a uniform guess)');
});

test('an exploding training loss stops the run: exit 1, the step and the last good checkpoint named, the bad state not saved', async () => {
  const fx = await data();
  const out = path.join(tmp, 'explode');
  // Warmup from lr 0: step 1 changes nothing, later steps at lr ~1e8 explode.
  const r = mlm(trainArgs(fx, out, '--steps', '20', '--lr', '1e9', '--warmup', '10', '--save-every', '1', '--eval-every', '0'));
  const line = oneLine(r, 1, /^mlm: failed: loss (exploded to \S+ \(above [\d.]+ = 3 x ln\(\d+\), 3 times the loss of a uniform guess\)|became NaN|became Infinity) at step (\d+); the last good checkpoint is (\S+); lower --lr or check the data$/);
  const m = / at step (\d+); the last good checkpoint is (\S+);/.exec(line)!;
  const step = Number(m[1]);
  assert.equal(m[2], path.join(out, `checkpoint-${step - 1}`));
  assert.ok(fs.existsSync(path.join(m[2], 'trainer_state.json')));
  assert.equal(fs.existsSync(path.join(out, `checkpoint-${step}`)), false);
  assert.equal(fs.existsSync(path.join(out, 'model.safetensors')), false); // no final model either
});

test('a diverged evaluation loss stops the run before the checkpoint of that step is written (--lr 1e9)', async () => {
  const fx = await data();
  const out = path.join(tmp, 'eval-diverged');
  const r = mlm(trainArgs(fx, out, '--steps', '20', '--lr', '1e9', '--warmup', '0', '--save-every', '1', '--eval-every', '1'));
  oneLine(r, 1, /^mlm: failed: evaluation loss (exploded to \S+ \(above [\d.]+ = 3 x ln\(\d+\), 3 times the loss of a uniform guess\)|became NaN|became Infinity) at step 1; no checkpoint was saved before it; lower --lr or check the data$/);
  assert.equal(fs.existsSync(path.join(out, 'checkpoint-1')), false);
});

test('FIFOs named model.safetensors, config.json or --config are refused at once (exit 2), not waited on', async () => {
  const ck = await makeTinyCheckpoint(path.join(tmp, 'fifo-model'));
  const weights = path.join(ck.dir, 'model.safetensors');
  fs.rmSync(weights);
  execFileSync('mkfifo', [weights]);
  const r = mlm(['fill-mask', '--model', ck.dir, 'the [MASK] is here'], 60_000);
  oneLine(r, 2, /^mlm: error: .*fifo-model\/model\.safetensors is a named pipe \(FIFO\), not a regular file; the safetensors file must be a plain file: replace it with the real one$/);

  const ck2 = await makeTinyCheckpoint(path.join(tmp, 'fifo-config'));
  fs.rmSync(path.join(ck2.dir, 'config.json'));
  execFileSync('mkfifo', [path.join(ck2.dir, 'config.json')]);
  oneLine(mlm(['fill-mask', '--model', ck2.dir, 'the [MASK] is here'], 60_000), 2, /^mlm: error: .*fifo-config\/config\.json is a named pipe \(FIFO\), not a regular file; the model config must be a plain file/);

  const fx = await data();
  const fifoConfig = path.join(tmp, 'config-fifo.json');
  execFileSync('mkfifo', [fifoConfig]);
  oneLine(mlm(['train', '--config', fifoConfig, '--data', fx.dataDir, '--out', path.join(tmp, 'fifo-run'), '--steps', '1'], 60_000), 2,
    /^mlm: error: .*config-fifo\.json is a named pipe \(FIFO\), not a regular file; the --config file must be a plain file/);
});

test('NaN weights are refused with the tensor name (exit 2): fill-mask scores nothing, export --overwrite keeps the good export', async () => {
  const good = await makeTinyCheckpoint(path.join(tmp, 'good'));
  const exported = path.join(tmp, 'exported');
  assert.equal(mlm(['export', '--model', good.dir, '--out', exported]).status, 0);
  const before = fs.readFileSync(path.join(exported, 'model.safetensors'));

  const bad = await makeTinyCheckpoint(path.join(tmp, 'nan-model'));
  const file = path.join(bad.dir, 'model.safetensors');
  const tensors = await loadSafetensorsF32(file);
  const name = 'bert.encoder.layer.1.output.dense.weight';
  tensors.get(name)!.data[5] = NaN;
  await saveSafetensors(file, new Map([...tensors].map(([k, t]) => [k, { dtype: 'F32' as const, shape: t.shape, data: t.data }])), { format: 'pt' });

  const re = new RegExp(`^mlm: error: .*nan-model: tensor ${name.replace(/\./g, '\\.')} holds 1 non-finite value \\(NaN at index 5\\); the checkpoint is broken \\(a diverged run\\?\\): use an earlier checkpoint or re-export it$`);
  const fm = mlm(['fill-mask', '--model', bad.dir, 'the [MASK] is here', '--json']);
  oneLine(fm, 2, re);
  assert.equal(fm.stdout, '');
  oneLine(mlm(['export', '--model', bad.dir, '--out', exported, '--overwrite']), 2, re);
  assert.deepEqual(fs.readFileSync(path.join(exported, 'model.safetensors')), before);
});

test('an --out that passes through a file is bad input (exit 2) for train, prepare and tokenizer train, before any work', async () => {
  const fx = await data();
  const file = path.join(tmp, 'a-file');
  fs.writeFileSync(file, 'x');
  const re = (sub: string) => new RegExp(`^mlm: error: --out .*a-file/${sub}: a file is in the way \\(a part of the path is a file, not a folder\\); choose another path or move the file$`);
  oneLine(mlm(trainArgs(fx, path.join(file, 'run'), '--steps', '1')), 2, re('run'));
  oneLine(mlm(['prepare', '--corpus', path.join(fx.root, 'corpus'), '--tokenizer', fx.tokenizerDir, '--out', path.join(file, 'data'), '--no-progress']), 2, re('data'));
  const tok = mlm(['tokenizer', 'train', '--corpus', path.join(fx.root, 'corpus'), '--vocab-size', '300', '--out', path.join(file, 'tok'), '--no-progress']);
  oneLine(tok, 2, re('tok'));
  assert.doesNotMatch(tok.stderr, /trained|vocabulary of/i); // refused before training
  assert.equal(fs.readFileSync(file, 'utf8'), 'x');
});

test('a train --out that is, contains or lies inside --from, --data or --config: exit 2 naming the input, before any work; the inputs untouched', async () => {
  const fx = await data();
  const model = (await makeTinyCheckpoint(path.join(tmp, 'base-model'), 'bert', { seed: 3 })).dir;
  const files = () => Object.fromEntries(fs.readdirSync(model).map((f) => [f, fs.readFileSync(path.join(model, f)).toString('base64')]));
  const before = files();
  const finetune = (out: string) => mlm(['finetune', '--from', model, '--data', fx.dataDir, '--out', out, '--steps', '2', '--batch-size', '8', '--no-progress']);
  const re = (how: string, input: string, flag: string) => new RegExp(`^mlm: error: --out \\S+ ${how} the input ${input.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} \\(${flag}\\); writing there could delete or mix with the inputs, choose an --out outside them$`);
  oneLine(finetune(model), 2, re('is', model, '--from'));
  oneLine(finetune(path.join(model, 'run')), 2, re('is inside', model, '--from'));
  oneLine(finetune(fx.dataDir), 2, re('is', fx.dataDir, '--data'));
  oneLine(finetune(path.dirname(fx.dataDir)), 2, re('contains', fx.dataDir, '--data'));
  const cfgDir = path.join(tmp, 'cfg-run');
  fs.mkdirSync(cfgDir);
  const cfg = path.join(cfgDir, 'tiny.json');
  fs.copyFileSync(config, cfg);
  oneLine(mlm(['train', '--config', cfg, '--data', fx.dataDir, '--out', cfgDir, '--steps', '1', '--no-progress']), 2, re('contains', cfg, '--config'));
  assert.deepEqual(files(), before, 'the base model changed');
  assert.deepEqual(fs.readdirSync(cfgDir), ['tiny.json']);
});

test('a config too large for memory (100,000 layers) is refused at once with the estimate (exit 2)', async () => {
  const fx = await data();
  const huge = path.join(tmp, 'huge.json');
  fs.writeFileSync(huge, JSON.stringify({ ...JSON.parse(fs.readFileSync(path.join(ROOT, 'configs/bert-tiny.json'), 'utf8')), num_hidden_layers: 100_000, max_position_embeddings: 32 }));
  const r = mlm(trainArgs(fx, path.join(tmp, 'huge-run'), '--steps', '1').map((a) => (a === config ? huge : a)));
  const line = oneLine(r, 2, /^mlm: error: .*huge\.json: training this model needs about (\d+) GB \((\S+) parameters x 16 bytes for weights, gradients and AdamW moments, plus activations\), more than this machine's (\d+) GB of memory; use a smaller config \(fewer layers, a smaller hidden_size\)$/);
  const [, needGb, params] = /about (\d+) GB \((\S+) parameters/.exec(line)!;
  // BERT-tiny's layer: 4 H^2 + 2 H I + 9 H + I with H 128, I 512 = 197,760 parameters.
  assert.ok(Math.abs(Number(params) / (100_000 * 197_760) - 1) < 0.01, params);
  assert.ok(Number(needGb) >= 16 * 100_000 * 197_760 / 1e9);
  assert.ok(r.ms < 60_000, `took ${r.ms} ms`);
  assert.equal(fs.existsSync(path.join(tmp, 'huge-run', 'run.json')), false);
});

test('a damaged newest checkpoint with --resume names the previous one, and resuming from it reproduces the run', async () => {
  const fx = await data();
  const out = path.join(tmp, 'resume');
  assert.equal(mlm(trainArgs(fx, out, '--steps', '4', '--save-every', '2', '--eval-every', '0')).status, 0);
  const newest = path.join(out, 'checkpoint-4', 'model.safetensors');
  const original = fs.readFileSync(newest);
  fs.truncateSync(newest, original.length - 100);

  const r = mlm(trainArgs(fx, out, '--steps', '4', '--save-every', '2', '--eval-every', '0', '--resume'));
  oneLine(r, 2, new RegExp(`^mlm: error: the checkpoint ${out}/checkpoint-4 is damaged \\(.*\\); resume from the previous complete checkpoint instead: --resume ${out}/checkpoint-2$`));
  assert.doesNotMatch(r.stderr, /re-download/);

  const again = mlm(trainArgs(fx, out, '--steps', '4', '--save-every', '2', '--eval-every', '0', '--resume', path.join(out, 'checkpoint-2')));
  assert.equal(again.status, 0, again.stderr);
  assert.deepEqual(fs.readFileSync(newest), original); // bit-identical to the uninterrupted run's
});

test('a __proto__ key in a config is named as an unknown key (exit 2)', async () => {
  const fx = await data();
  const proto = path.join(tmp, 'proto.json');
  fs.writeFileSync(proto, fs.readFileSync(config, 'utf8').replace('{', '{"__proto__": {"hidden_size": 64},'));
  oneLine(mlm(trainArgs(fx, path.join(tmp, 'proto-run'), '--steps', '1').map((a) => (a === config ? proto : a))), 2,
    /^mlm: error: .*proto\.json: unknown key '__proto__' in the model config: mlmkit does not know it; remove it or fix its spelling$/);
});

test('a run never replaces another folder\'s model or run: a model folder as --out, a bare --resume over a run without checkpoints, another run\'s checkpoint into a folder holding a run', async () => {
  const fx = await data();
  const run = (out: string, ...more: string[]) => mlm(trainArgs(fx, out, '--eval-every', '0', ...more));
  // A model folder (an export, a Hub cache snapshot): no run there, so training would replace it.
  const model = (await makeTinyCheckpoint(path.join(tmp, 'exported-model'))).dir;
  const modelBefore = snapshot(model);
  oneLine(run(model, '--steps', '1'), 2, /^mlm: error: --out .*exported-model holds a model or tokenizer \(.*config\.json.*\), not a training run; choose an empty or new folder for the run$/);
  assert.deepEqual(snapshot(model), modelBefore);

  // A finished run whose checkpoints were cleaned up: a bare --resume has nothing to continue from.
  const runA = path.join(tmp, 'run-a');
  assert.equal(run(runA, '--steps', '4', '--save-every', '2').status, 0);
  const runB = path.join(tmp, 'run-b');
  assert.equal(run(runB, '--steps', '2').status, 0);
  fs.rmSync(path.join(runB, 'checkpoint-2'), { recursive: true });
  const bBefore = snapshot(runB);
  oneLine(run(runB, '--steps', '4', '--resume'), 2, /^mlm: error: --resume: .*run-b holds an earlier run \(.*metrics\.jsonl.*\) but no complete checkpoint to continue from; starting from scratch would replace it: choose a new --out, or remove that run to start over$/);
  // Another run's checkpoint continued into a folder that holds a run.
  oneLine(run(runB, '--steps', '6', '--resume', path.join(runA, 'checkpoint-2')), 2, /^mlm: error: --out .*run-b holds another run; continuing .*run-a\/checkpoint-2 there would replace it: give a new --out to branch from that checkpoint, or the checkpoint's own run folder$/);
  assert.deepEqual(snapshot(runB), bBefore);
});

test('resuming from an earlier checkpoint of the same run: other options are refused there, the same ones compute the later checkpoints again; continued in a new folder, --load-best-at-end finds the best checkpoint beside the one resumed', async () => {
  const fx = await data();
  const out = path.join(tmp, 'branch');
  assert.equal(mlm(trainArgs(fx, out, '--steps', '6', '--save-every', '2', '--eval-every', '0')).status, 0);
  const stale = fs.readFileSync(path.join(out, 'checkpoint-6', 'model.safetensors'));
  // Other options: the later checkpoints would be of the old ones, beside this run's (until
  // 2026-12-08 this ran, and a bare --resume then took the old checkpoint-6 for this run's).
  const before = snapshot(out);
  oneLine(mlm(trainArgs(fx, out, '--steps', '4', '--save-every', '2', '--eval-every', '0', '--lr', '1e-4', '--resume', path.join(out, 'checkpoint-2'))), 2,
    /^mlm: error: cannot go on from .*branch\/checkpoint-2 inside .*branch with --steps 4 \(was 6\), --lr 0\.0001 \(was 0\.0005\): the run's later checkpoints \(checkpoint-4, checkpoint-6\) were trained with the old options and would be mixed with this run's; give a new --out to branch from that checkpoint, or remove them to go on here$/);
  assert.deepEqual(snapshot(out), before);
  // The same options: the run goes on from step 2 and computes checkpoint-4 and -6 again, exactly
  // (--save-total-limit is no option of the weights; tests/training/resume-options.test.ts shows
  // that it counts only the checkpoints up to the one just saved).
  const r = mlm(trainArgs(fx, out, '--steps', '6', '--save-every', '2', '--eval-every', '0', '--save-total-limit', '1', '--resume', path.join(out, 'checkpoint-2')));
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /note: resuming at step 2; checkpoint-4, checkpoint-6 in .*branch \(a later point of the run\) are left as they are, and replaced where this run saves the same step/);
  assert.deepEqual(fs.readdirSync(out).filter((e) => e.startsWith('checkpoint-')).sort(), ['checkpoint-6']);
  assert.deepEqual(fs.readFileSync(path.join(out, 'checkpoint-6', 'model.safetensors')), stale);
  assert.deepEqual(fs.readFileSync(path.join(out, 'model.safetensors')), stale);

  // Continued in a new folder with --load-best-at-end: the best so far is beside the checkpoint resumed.
  const first = path.join(tmp, 'best-first');
  const evalArgs = ['--save-every', '2', '--eval-every', '2', '--eval-batches', '2', '--load-best-at-end'];
  assert.equal(mlm(trainArgs(fx, first, '--steps', '4', ...evalArgs)).status, 0);
  const next = path.join(tmp, 'best-next');
  const cont = mlm(trainArgs(fx, next, '--steps', '6', ...evalArgs, '--lr', '1e-12', '--resume', path.join(first, 'checkpoint-4')));
  assert.equal(cont.status, 0, cont.stderr);
  const best = /loading the best model: (\S+) /.exec(cont.stderr)?.[1];
  assert.ok(best && fs.existsSync(path.join(best, 'model.safetensors')), `the best checkpoint named exists: ${best}`);
  assert.deepEqual(fs.readFileSync(path.join(next, 'model.safetensors')), fs.readFileSync(path.join(best, 'model.safetensors')));
});
