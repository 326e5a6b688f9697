// Exact resume through the CLI: `mlm train` as a child process, SIGKILLed after a checkpoint (and,
// separately, stopped with SIGINT, which saves a checkpoint and exits 130), then `--resume`: the
// metrics.jsonl of the resumed run equals the uninterrupted run's at every step (losses, learning
// rates, gradient norms, evaluations; timings aside), and so do the final weights, bit for bit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { wasmThreads } from '../../training/backend/wasm.ts';
import { brownDocuments, MLM, preparedFixture, ROOT, writeTinyConfig, type PreparedFixture } from './train-helpers.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-resume-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
const env = { ...process.env, MLM_BACKEND: 'wasm' };

let fixture: Promise<PreparedFixture> | null = null;
const data = () => (fixture ??= preparedFixture(path.join(tmp, 'fx'), brownDocuments(100_000), { vocabSize: 400, seqLen: 32 }));
const config = writeTinyConfig(path.join(tmp, 'tiny.json'), { max_position_embeddings: 32 });

const STEPS = 150;
function trainArgs(dataDir: string, out: string): string[] {
  return ['train', '--config', config, '--data', dataDir, '--out', out, '--steps', String(STEPS), '--batch-size', '8', '--lr', '2e-3',
    '--log-every', '1', '--eval-every', '25', '--eval-batches', '2', '--save-every', '10', '--seed', '7', '--json', '--no-progress'];
}

function runSync(args: string[], extraEnv: Record<string, string> = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MLM, ...args], { cwd: ROOT, encoding: 'utf8', env: { ...env, ...extraEnv } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Starts `mlm train`, waits for `checkpoint-10` to be complete, sends `signal`; resolves with the exit. */
function runUntilCheckpoint(args: string[], out: string, signal: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MLM, ...args], { cwd: ROOT, env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const marker = path.join(out, 'checkpoint-10', 'trainer_state.json');
    const timer = setInterval(() => {
      if (fs.existsSync(marker)) {
        clearInterval(timer);
        child.kill(signal);
      }
    }, 5);
    child.on('error', reject);
    child.on('exit', (code, sig) => {
      clearInterval(timer);
      resolve({ code, signal: sig, stdout, stderr });
    });
  });
}

/** metrics.jsonl without the timing field. */
function metrics(out: string): unknown[] {
  return fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => {
    const e = JSON.parse(l);
    delete e.tokens_per_second;
    return e;
  });
}

let reference: Promise<{ out: string; result: Record<string, unknown> }> | null = null;
function uninterrupted() {
  reference ??= (async () => {
    const fx = await data();
    const out = path.join(tmp, 'uninterrupted');
    const r = runSync(trainArgs(fx.dataDir, out));
    assert.equal(r.status, 0, r.stderr);
    return { out, result: JSON.parse(r.stdout) };
  })();
  return reference;
}

function sameWeights(a: string, b: string): void {
  assert.ok(fs.readFileSync(path.join(a, 'model.safetensors')).equals(fs.readFileSync(path.join(b, 'model.safetensors'))), 'final weights differ');
  assert.ok(fs.readFileSync(path.join(a, 'optimizer.safetensors')).equals(fs.readFileSync(path.join(b, 'optimizer.safetensors'))), 'final optimizer state differs');
}

test('SIGKILL after a checkpoint, then --resume: the same metrics at every step and the same final weights', async () => {
  const fx = await data();
  const ref = await uninterrupted();
  const out = path.join(tmp, 'killed');
  const killed = await runUntilCheckpoint(trainArgs(fx.dataDir, out), out, 'SIGKILL');
  assert.equal(killed.signal, 'SIGKILL');
  assert.equal(fs.existsSync(path.join(out, `checkpoint-${STEPS}`)), false, 'the run was killed before its end');

  const resumed = runSync([...trainArgs(fx.dataDir, out), '--resume']);
  assert.equal(resumed.status, 0, resumed.stderr);
  assert.match(resumed.stderr, /resuming from .*checkpoint-\d+ \(step \d+\)/);
  assert.deepEqual(metrics(out), metrics(ref.out));
  const result = JSON.parse(resumed.stdout);
  for (const key of ['step', 'train_loss', 'eval_loss', 'eval_perplexity']) assert.equal(result[key], ref.result[key], key);
  sameWeights(path.join(ref.out, `checkpoint-${STEPS}`), path.join(out, `checkpoint-${STEPS}`));
});

test('SIGINT: the current step finishes, a checkpoint is saved, exit code 130; --resume continues exactly', async () => {
  const fx = await data();
  const ref = await uninterrupted();
  const out = path.join(tmp, 'interrupted');
  const stopped = await runUntilCheckpoint(trainArgs(fx.dataDir, out), out, 'SIGINT');
  assert.equal(stopped.code, 130, stopped.stderr);
  const doc = JSON.parse(stopped.stdout);
  assert.equal(doc.interrupted, true);
  assert.ok(doc.step >= 10 && doc.step < STEPS, `stopped at step ${doc.step}`);
  assert.equal(doc.checkpoint, path.join(out, `checkpoint-${doc.step}`));
  assert.ok(fs.existsSync(path.join(out, `checkpoint-${doc.step}`, 'trainer_state.json')));
  assert.match(fs.readFileSync(path.join(out, 'report.md'), 'utf8'), /interrupted at step \d+ of 150; continue with --resume/);

  const resumed = runSync([...trainArgs(fx.dataDir, out), '--resume']);
  assert.equal(resumed.status, 0, resumed.stderr);
  assert.deepEqual(metrics(out), metrics(ref.out));
  sameWeights(path.join(ref.out, `checkpoint-${STEPS}`), path.join(out, `checkpoint-${STEPS}`));
});

test('the number of wasm threads changes no number: the same metrics and weights with 1 and with 2+ threads', async () => {
  const fx = await data();
  const ref = await uninterrupted(); // default threads: one per CPU
  // The default is one thread per CPU; run the other way (on a one-CPU machine both are one thread).
  const other = wasmThreads(process.env) === 1 ? '2' : '1';
  const shown = wasmThreads({ MLM_WASM_THREADS: other });
  const out = path.join(tmp, `threads-${other}`);
  const r = runSync(trainArgs(fx.dataDir, out), { MLM_WASM_THREADS: other });
  assert.equal(r.status, 0, r.stderr);
  assert.match(fs.readFileSync(path.join(out, 'report.md'), 'utf8'), new RegExp(`wasm, SIMD, ${shown} threads?;`));
  assert.deepEqual(metrics(out), metrics(ref.out));
  sameWeights(path.join(ref.out, `checkpoint-${STEPS}`), path.join(out, `checkpoint-${STEPS}`));
});
