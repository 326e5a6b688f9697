// writeFolderAtomic's own guards, whatever its caller checked: an empty path (which resolves to the
// working folder) and a folder that is or holds the working folder are never replaced; an ordinary
// folder is replaced whole.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { removeStaleTemps, removeUnfinishedWrites, writeFileAtomic, writeFolderAtomic } from '../../common/atomic.ts';
import { InputError } from '../../common/errors.ts';

const tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-atomic-')));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

const fill = (name: string) => async (dir: string) => fs.writeFileSync(path.join(dir, name), 'new');

test('writeFolderAtomic refuses an empty path and a folder holding the working folder; it replaces any other folder whole', async () => {
  const home = path.join(tmp, 'home');
  fs.mkdirSync(path.join(home, 'sub'), { recursive: true });
  fs.writeFileSync(path.join(home, 'sub', 'keep.txt'), 'mine');
  const cwd = process.cwd();
  process.chdir(path.join(home, 'sub'));
  try {
    for (const dir of ['', ' ']) {
      await assert.rejects(writeFolderAtomic(dir, fill('x')), (e: unknown) => e instanceof InputError && /the output folder is an empty path; name a folder/.test(e.message));
    }
    for (const dir of ['.', '..', path.join(home, 'sub'), home]) {
      await assert.rejects(writeFolderAtomic(dir, fill('x')), (e: unknown) => e instanceof InputError && /is or holds the current working folder; refusing to replace it/.test(e.message), dir);
    }
  } finally {
    process.chdir(cwd);
  }
  assert.deepEqual(fs.readdirSync(home), ['sub']);
  assert.deepEqual(fs.readdirSync(tmp).filter((e) => e.startsWith('.')), [], 'no temporary folder made');
  assert.equal(fs.readFileSync(path.join(home, 'sub', 'keep.txt'), 'utf8'), 'mine');
  // Away from it, the same folder is replaced, and a new one made.
  await writeFolderAtomic(home, fill('new.txt'));
  assert.deepEqual(fs.readdirSync(home), ['new.txt']);
  await writeFolderAtomic(path.join(tmp, 'fresh'), fill('a.txt'));
  assert.deepEqual(fs.readdirSync(path.join(tmp, 'fresh')), ['a.txt']);
});

test('removeStaleTemps removes the temporaries of its own folder only, not those of a folder whose name starts alike', async () => {
  const dir = path.join(tmp, 'stale');
  fs.mkdirSync(dir);
  const mine = ['.data.prepare-tmp-123-abcdef', '.data.prepare-old-9-0a1b2c'];
  const others = ['.data.prepare-x.prepare-tmp-123-abcdef', '.data.prepare-tmp-123-abcdef-notes', 'data', '.datax.prepare-tmp-1-abcdef'];
  for (const n of [...mine, ...others]) fs.mkdirSync(path.join(dir, n));
  await removeStaleTemps(path.join(dir, 'data'), 'prepare');
  assert.deepEqual(fs.readdirSync(dir).sort(), [...others].sort());
});

test('replace: false puts the folder in place only while the target is still empty; files that appeared meanwhile are kept', async () => {
  const target = path.join(tmp, 'fresh-only');
  fs.mkdirSync(target);
  await writeFolderAtomic(target, fill('mine.txt'), 'extend', { replace: false });
  assert.deepEqual(fs.readdirSync(target), ['mine.txt'], 'an empty folder is filled');
  const raced = path.join(tmp, 'raced');
  // Another process writes there while this one fills its temporary folder.
  await assert.rejects(writeFolderAtomic(raced, async (dir) => {
    fs.mkdirSync(raced);
    fs.writeFileSync(path.join(raced, 'theirs.txt'), 'theirs');
    fs.writeFileSync(path.join(dir, 'mine.txt'), 'mine');
  }, 'extend', { replace: false }), (e: unknown) => e instanceof InputError && /received files while this command ran \(theirs\.txt\); nothing was replaced: choose another output folder$/.test(e.message));
  assert.deepEqual(fs.readdirSync(raced), ['theirs.txt']);
  assert.deepEqual(fs.readdirSync(tmp).filter((e) => e.includes('extend-')), [], 'no temporary folder left');
});

test('a write killed between its two renames: the previous folder is put back from its -old- name, the new half removed', async () => {
  const dir = path.join(tmp, 'killed');
  fs.mkdirSync(dir);
  // What a kill after `rename(target, old)` and before `rename(tmp, target)` leaves.
  fs.mkdirSync(path.join(dir, '.data.prepare-old-77-abcdef'));
  fs.writeFileSync(path.join(dir, '.data.prepare-old-77-abcdef', 'manifest.json'), 'previous');
  fs.mkdirSync(path.join(dir, '.data.prepare-tmp-77-012345'));
  await removeStaleTemps(path.join(dir, 'data'), 'prepare');
  assert.deepEqual(fs.readdirSync(dir), ['data']);
  assert.equal(fs.readFileSync(path.join(dir, 'data', 'manifest.json'), 'utf8'), 'previous');
  // With the target in place, an -old- folder is a leftover like the others.
  fs.mkdirSync(path.join(dir, '.data.prepare-old-78-abcdef'));
  await removeStaleTemps(path.join(dir, 'data'), 'prepare');
  assert.deepEqual(fs.readdirSync(dir), ['data']);
});

test('removeUnfinishedWrites takes away the temporaries of writes under way and puts back a folder caught between its renames', async () => {
  // A write still filling its temporary folder, and a single-file write.
  const fresh = path.join(tmp, 'unfinished-new');
  let release!: () => void;
  let started!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  const inFill = new Promise<void>((resolve) => (started = resolve));
  let nested!: Promise<void>;
  const filling = writeFolderAtomic(fresh, async (dir) => {
    fs.writeFileSync(path.join(dir, 'half'), 'x');
    // A file written atomically inside the temporary: it goes with the folder, unnamed.
    nested = writeFileAtomic(path.join(dir, 'weights'), (function* () { started(); yield new Uint8Array(4); })());
    await held;
  });
  await inFill;
  const temps = () => fs.readdirSync(tmp).filter((e) => e.startsWith('.unfinished-new.'));
  assert.equal(temps().length, 1);
  assert.deepEqual(removeUnfinishedWrites(), [fresh]);
  assert.deepEqual(temps(), []);
  assert.ok(!fs.existsSync(fresh));
  assert.deepEqual(removeUnfinishedWrites(), [], 'each write is listed once');
  release();
  // Both end in errors now (their temporaries are gone), caught together.
  await Promise.allSettled([nested, filling]);

  // A replaced folder moved aside, the new one not yet renamed in: the old one comes back.
  const kept = path.join(tmp, 'unfinished-old');
  fs.mkdirSync(kept);
  fs.writeFileSync(path.join(kept, 'mine'), 'old');
  const rename = fs.promises.rename;
  let calls = 0;
  let stopped!: () => void;
  const atSwap = new Promise<void>((resolve) => (stopped = resolve));
  fs.promises.rename = (async (from: fs.PathLike, to: fs.PathLike) => {
    await rename(from, to);
    if (++calls === 1) { // target -> its -old- name: stop here, as a signal would
      stopped();
      await new Promise(() => {});
    }
  }) as typeof fs.promises.rename;
  syncBuiltinESMExports(); // the module's `import * as fsp` sees the patched function
  try {
    void writeFolderAtomic(kept, fill('new'));
    await atSwap;
    assert.ok(!fs.existsSync(kept), 'between the two renames');
    assert.deepEqual(removeUnfinishedWrites(), [kept]);
  } finally {
    fs.promises.rename = rename;
    syncBuiltinESMExports();
  }
  assert.equal(fs.readFileSync(path.join(kept, 'mine'), 'utf8'), 'old');
  assert.deepEqual(fs.readdirSync(tmp).filter((e) => e.startsWith('.unfinished-old.')), []);
});
