// Ctrl-C and closed output for the commands that do not stop on their own (scripts/interrupt.ts,
// scripts/cli.ts): an interrupted export leaves no temporary folder and says so in one line (exit
// 130); a reader that goes away ends the command quietly (exit 141, as SIGPIPE would); a full
// standard output is one line, exit 1.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { makeTinyCheckpoint, ROOT } from '../training/tiny-checkpoint.ts';

const MLM = path.join(ROOT, 'scripts', 'mlm.mjs');
const tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-interrupt-')));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

function start(args: string[], stdout: 'pipe' | number = 'pipe') {
  const child = spawn(process.execPath, [MLM, ...args], { cwd: tmp, stdio: ['ignore', stdout, 'pipe'], env: { ...process.env, MLM_DEBUG: '' } });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const done = new Promise<{ code: number | null; stderr: string }>((resolve) => child.on('close', (code) => resolve({ code, stderr })));
  return { child, done };
}

test('Ctrl-C during mlm export: exit 130, one line, no temporary folder left', async () => {
  // A large embedding (300,000 x 32) so that the export is still writing when the signal comes;
  // on a loaded machine it may still end first: then it is tried again (three times at most).
  const ck = await makeTinyCheckpoint(path.join(tmp, 'big'), 'bert', { padVocab: 300_000 });
  for (let attempt = 1; ; attempt++) {
    const name = `exported-${attempt}`;
    const out = path.join(tmp, name);
    const { child, done } = start(['export', '--model', ck.dir, '--format', 'onnx', '--out', out]);
    const temps = () => fs.readdirSync(tmp).filter((e) => e.startsWith(`.${name}.`));
    // Stopped as soon as its temporary folder appears, then interrupted and let go on.
    while (temps().length === 0 && child.exitCode === null) await new Promise((r) => setTimeout(r, 1));
    child.kill('SIGSTOP');
    child.kill('SIGINT');
    child.kill('SIGCONT');
    const r = await done;
    assert.deepEqual(temps(), [], 'no temporary is left, whenever the signal came');
    if (r.code === 0 || fs.existsSync(out)) {
      // The export was in place before the signal was handled: it ended, or says nothing false.
      assert.doesNotMatch(r.stderr, /nothing written/);
      assert.ok(attempt < 3, 'the export ended before the signal three times');
      continue;
    }
    assert.equal(r.code, 130, r.stderr);
    assert.match(r.stderr, new RegExp(`^mlm: interrupted; nothing written to ${out.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'));
    break;
  }
});

test('Ctrl-C during mlm evaluate on raw text: its scratch folder of prepared text is removed too', async () => {
  const ck = await makeTinyCheckpoint(path.join(tmp, 'eval-model'), 'bert');
  const text = path.join(tmp, 'held-out.txt');
  fs.writeFileSync(text, 'the cat sat on the mat . a dog ran in the park .\n\n'.repeat(40_000));
  const scratch = fs.mkdtempSync(path.join(tmp, 'tmpdir-'));
  const child = spawn(process.execPath, [MLM, 'evaluate', '--model', ck.dir, '--data', text, '--split-paragraphs', '--backend', 'cpu'], {
    cwd: tmp, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, MLM_DEBUG: '', TMPDIR: scratch },
  });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const done = new Promise<number | null>((resolve) => child.on('close', resolve));
  const evalDirs = () => fs.readdirSync(scratch).filter((e) => e.startsWith('mlmkit-eval-'));
  while (evalDirs().length === 0 && child.exitCode === null) await new Promise((r) => setTimeout(r, 1));
  child.kill('SIGINT');
  const code = await done;
  if (code === 130) assert.match(stderr, /^mlm: interrupted/m);
  assert.deepEqual(evalDirs(), [], `exit ${code}: ${stderr}`);
});

test('standard output closed early: exit 141 without a word; a full one: one line, exit 1', async () => {
  const ck = await makeTinyCheckpoint(path.join(tmp, 'tiny'), 'bert');
  const args = ['fill-mask', '--model', ck.dir, 'the [MASK] sat', '--json', '--backend', 'cpu'];
  const closed = start(args);
  closed.child.stdout!.destroy();
  const r = await closed.done;
  assert.equal(r.code, 141, r.stderr);
  assert.doesNotMatch(r.stderr, /EPIPE|Error|at /);
  if (fs.existsSync('/dev/full')) {
    const full = start(args, fs.openSync('/dev/full', 'w'));
    const f = await full.done;
    assert.equal(f.code, 1, f.stderr);
    assert.match(f.stderr, /^mlm: failed: could not write to standard output \(ENOSPC\); free space where it is redirected$/m);
    assert.doesNotMatch(f.stderr, /\n\s+at /);
  }
});
