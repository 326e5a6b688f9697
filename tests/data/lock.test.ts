// data/lock.ts: one process at a time per output folder. A real second process holds the lock while
// this one tries (refused, one line naming it); a lock left by a dead process is taken over with a
// note; the lock is gone after release and after the holder is ended by SIGTERM.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { InputError } from '../../common/errors.ts';
import { acquireLock, lockPath } from '../../data/lock.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-lock-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

/**
 * A node process (tsx) that takes the lock of `dir`, prints "held", and waits to be killed. With
 * `graceful`, it first installs a Ctrl-C handler that removes itself when called, as mlm train's.
 */
function holder(dir: string, graceful = false) {
  const handler = graceful ? `const h = () => { console.log('first'); process.removeListener('SIGINT', h); }; process.on('SIGINT', h);` : '';
  const code = `import { acquireLock } from ${JSON.stringify(path.join(ROOT, 'data/lock.ts'))};
${handler} acquireLock(${JSON.stringify(dir)}, 'run folder'); console.log('held'); setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => { if (d.toString().includes('held')) resolve(); });
    child.on('exit', (c) => reject(new Error(`holder exited with ${c}`)));
  });
  return { child, ready };
}

test('a second process is refused while the first holds the lock; SIGTERM releases it', async () => {
  const dir = path.join(tmp, 'run');
  const { child, ready } = holder(dir);
  await ready;
  const info = JSON.parse(fs.readFileSync(lockPath(dir), 'utf8'));
  assert.equal(info.pid, child.pid);
  assert.equal(info.hostname, os.hostname());
  assert.ok(!Number.isNaN(Date.parse(info.started)));
  assert.throws(() => acquireLock(dir, 'run folder'), (err: unknown) => {
    assert.ok(err instanceof InputError);
    assert.match(err.message, new RegExp(`^the run folder ${dir} is in use by another process \\(pid ${child.pid} on ${os.hostname()}: \`.*\`, since ${info.started}\\); wait for it to finish or choose another --out \\(if that process is gone, delete .*\\.run\\.lock\\)$`));
    return true;
  });
  // The same folder through a link (`current -> run`) is the same lock.
  fs.mkdirSync(dir, { recursive: true });
  fs.symlinkSync(dir, path.join(tmp, 'current'));
  assert.equal(lockPath(path.join(tmp, 'current')), lockPath(dir));
  assert.throws(() => acquireLock(path.join(tmp, 'current'), 'run folder'), /in use by another process/);
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_c, sig) => resolve(sig)));
  child.kill('SIGTERM');
  assert.equal(await exited, 'SIGTERM'); // re-raised: the exit status stays the signal's
  assert.equal(fs.existsSync(lockPath(dir)), false);
  const release = acquireLock(dir, 'run folder');
  release();
  assert.equal(fs.existsSync(lockPath(dir)), false);
});

test('a stale lock (its pid no longer runs on this host) is taken over with a note', () => {
  const dir = path.join(tmp, 'stale');
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  const pid = Number(dead.stdout);
  fs.writeFileSync(lockPath(dir), JSON.stringify({ pid, hostname: os.hostname(), command: 'mlm train --out x', started: '2026-01-01T00:00:00.000Z' }));
  const notes: string[] = [];
  const release = acquireLock(dir, 'run folder', (l) => notes.push(l));
  assert.equal(notes.length, 1);
  assert.match(notes[0], new RegExp(`^note: taking over the stale lock .*\\.stale\\.lock of pid ${pid} \\(\`mlm train --out x\`, since 2026-01-01T00:00:00.000Z\\), which no longer runs$`));
  assert.equal(JSON.parse(fs.readFileSync(lockPath(dir), 'utf8')).pid, process.pid);
  release();
  assert.equal(fs.existsSync(lockPath(dir)), false);
});

test('a lock from another host is never taken over; an --out through a file is bad input', () => {
  const dir = path.join(tmp, 'remote');
  fs.writeFileSync(lockPath(dir), JSON.stringify({ pid: 1, hostname: 'elsewhere', command: 'mlm prepare', started: '2026-01-01T00:00:00.000Z' }));
  assert.throws(() => acquireLock(dir, 'prepared-data folder'), /in use by another process \(pid 1 on elsewhere: `mlm prepare`/);
  fs.writeFileSync(path.join(tmp, 'file'), 'x');
  assert.throws(() => acquireLock(path.join(tmp, 'file', 'sub', 'run'), 'run folder'), (err: unknown) => {
    assert.ok(err instanceof InputError);
    assert.match(err.message, /^--out .*file\/sub\/run: a file is in the way \(a part of the path is a file, not a folder\); choose another path or move the file$/);
    return true;
  });
});

test('beside a Ctrl-C handler of its own (as mlm train has): the first SIGINT keeps the lock, the second releases it', async () => {
  const dir = path.join(tmp, 'graceful');
  const { child, ready } = holder(dir, true);
  await ready;
  const first = new Promise<void>((resolve) => child.stdout.on('data', (d: Buffer) => { if (d.toString().includes('first')) resolve(); }));
  child.kill('SIGINT');
  await first;
  assert.equal(child.exitCode, null);
  assert.equal(JSON.parse(fs.readFileSync(lockPath(dir), 'utf8')).pid, child.pid);
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_c, sig) => resolve(sig)));
  child.kill('SIGINT');
  assert.equal(await exited, 'SIGINT');
  assert.equal(fs.existsSync(lockPath(dir)), false);
});
