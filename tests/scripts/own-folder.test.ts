// Tests for scripts/own-folder.ts (the output folders of the demo and the prepare benchmark) and
// the same rule in scripts/gpu-run.sh: a script writes only into a folder that is new, empty, marked
// as its own, or its default folder holding only its own names; anything else is refused before
// a file is written, and removing its outputs leaves every other file.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { claimFolder, removeOwn, type OwnFolder } from '../../scripts/own-folder.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlm-own-folder-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function folder(name: string, defaultDir?: string): OwnFolder {
  return { dir: path.join(tmp, name), marker: '.mine', names: ['out', 'report.md'], defaultDir, flag: '--out', madeBy: 'made by the test' };
}

function tree(dir: string): string[] {
  return fs.readdirSync(dir, { recursive: true, encoding: 'utf8' }).sort();
}

test('a new or empty folder is claimed: created, with the marker', () => {
  const fresh = folder('new/nested');
  assert.equal(claimFolder(fresh), null);
  assert.deepEqual(tree(fresh.dir), ['.mine']);
  assert.equal(fs.readFileSync(path.join(fresh.dir, '.mine'), 'utf8'), 'made by the test\n');
  const empty = folder('empty');
  fs.mkdirSync(empty.dir);
  assert.equal(claimFolder(empty), null);
  assert.deepEqual(tree(empty.dir), ['.mine']);
});

test('a folder holding anything without the marker, even only the script\'s names, or a file: refused, nothing written', () => {
  const foreign = folder('foreign');
  fs.mkdirSync(path.join(foreign.dir, 'out'), { recursive: true });
  fs.writeFileSync(path.join(foreign.dir, 'out', 'data.txt'), 'mine');
  assert.equal(claimFolder(foreign, 'F'), '--out F holds files this script did not make (no .mine there): pass a new or empty folder');
  assert.deepEqual(tree(foreign.dir), ['out', path.join('out', 'data.txt')]);
  const file = folder('a-file');
  fs.writeFileSync(file.dir, 'mine');
  assert.equal(claimFolder(file, 'F'), '--out F is a file, not a folder: pass a new or empty folder');
  assert.equal(fs.readFileSync(file.dir, 'utf8'), 'mine');
});

test('the default folder holding only the script\'s names is adopted; holding anything else, refused', () => {
  const old = folder('default-old');
  const withOld = { ...old, defaultDir: old.dir };
  fs.mkdirSync(path.join(old.dir, 'out'), { recursive: true });
  fs.writeFileSync(path.join(old.dir, 'report.md'), 'an old report');
  assert.equal(claimFolder(withOld), null);
  assert.ok(fs.existsSync(path.join(old.dir, '.mine')));
  const mixed = folder('default-mixed');
  fs.mkdirSync(mixed.dir);
  fs.writeFileSync(path.join(mixed.dir, 'report.md'), 'r');
  fs.writeFileSync(path.join(mixed.dir, 'notes.txt'), 'mine');
  assert.match(claimFolder({ ...mixed, defaultDir: mixed.dir }) ?? '', /holds files this script did not make/);
  assert.deepEqual(tree(mixed.dir), ['notes.txt', 'report.md']);
});

test('a marked folder is claimed again; removeOwn removes the script\'s names only', () => {
  const f = folder('marked');
  assert.equal(claimFolder(f), null);
  fs.mkdirSync(path.join(f.dir, 'out', 'deep'), { recursive: true });
  fs.writeFileSync(path.join(f.dir, 'out', 'deep', 'x.bin'), 'x');
  fs.writeFileSync(path.join(f.dir, 'report.md'), 'r');
  fs.writeFileSync(path.join(f.dir, 'notes.txt'), 'mine');
  assert.equal(claimFolder(f), null);
  removeOwn(f);
  assert.deepEqual(tree(f.dir), ['.mine', 'notes.txt']);
});

function gpuRun(...args: string[]) {
  return spawnSync('bash', [path.join(root, 'scripts', 'gpu-run.sh'), ...args], { cwd: tmp, encoding: 'utf8', env: { ...process.env, OUT: '' } });
}

test('scripts/gpu-run.sh: a --out folder it did not make, or a file, is refused with exit 2 before anything is written; a bad option too', () => {
  const bundle = path.join(tmp, 'bundle.tar.xz');
  fs.writeFileSync(bundle, '');
  const dir = path.join(tmp, 'gpu-foreign');
  fs.mkdirSync(path.join(dir, 'results'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'results', 'mine.txt'), 'mine');
  const r = gpuRun(bundle, '--out', dir);
  assert.equal(r.status, 2, r.stderr);
  assert.equal(r.stderr, `gpu-run: error: --out ${dir} holds files this script did not make (no .mlmkit-gpu-run there): pass a new or empty folder\n`);
  assert.deepEqual(tree(dir), ['results', path.join('results', 'mine.txt')]);
  const file = gpuRun(bundle, '--out', bundle);
  assert.equal(file.status, 2);
  assert.equal(file.stderr, `gpu-run: error: --out ${bundle} is a file, not a folder: pass a new or empty folder\n`);
  const bad = gpuRun('--bogus');
  assert.equal(bad.status, 2);
  assert.equal(bad.stderr, 'gpu-run: error: unknown option \'--bogus\' (see --help)\n');
});
