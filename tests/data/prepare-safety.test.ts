// `mlm prepare` and `mlm tokenizer train` keep their inputs safe: an --out that is, contains or lies
// inside an input is refused before anything is written; an input edited without changing its size
// is noticed; --overwrite replaces only a prepared-data folder (never a user's files or the working
// folder); Ctrl-C removes the temporary folder. Also the path helpers of data/paths.ts.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { InputError } from '../../common/errors.ts';
import { insideRoot, realPathOf, refuseOutputOverInputs } from '../../data/paths.ts';
import { readManifest } from '../../data/shards.ts';
import { snapshot } from '../helpers/snapshot.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const mlm = path.join(root, 'scripts', 'mlm.mjs');
const work = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'mlm-prepare-safety-')));
const tokDir = path.join(work, 'tok');
const corpusDir = path.join(work, 'corpus');

function run(args: string[], cwd = work) {
  const r = spawnSync(process.execPath, [mlm, ...args], { cwd, encoding: 'utf8', env: { ...process.env, MLM_DEBUG: '' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

before(() => {
  fs.mkdirSync(corpusDir, { recursive: true });
  for (let i = 0; i < 4; i++) {
    fs.writeFileSync(path.join(corpusDir, `doc-${i}.txt`), `document ${i}: the patient was treated with antibiotics for acute bronchitis.\nfever resolved after ${i + 2} days.\n`);
  }
  const r = run(['tokenizer', 'train', '--corpus', corpusDir, '--vocab-size', '120', '--lowercase', '--out', tokDir, '--no-progress']);
  assert.equal(r.code, 0, r.stderr);
});

function assertRefused(r: { code: number | null; stderr: string }, message: RegExp) {
  assert.equal(r.code, 2, `exit code (stderr: ${r.stderr})`);
  const lines = r.stderr.trim().split('\n').filter((l) => l.startsWith('mlm: error'));
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], message);
}

test('prepare --overwrite refuses an --out that is the corpus folder, the tokenizer folder, inside or above an input; inputs untouched', () => {
  const corpusBefore = snapshot(corpusDir);
  const tokBefore = snapshot(tokDir);
  fs.symlinkSync(corpusDir, path.join(work, 'corpus-link'));
  const cases: [string[], RegExp][] = [
    [['--out', corpusDir], /^mlm: error: --out .*corpus is the input .*corpus \(--corpus\); writing there could delete or mix with the inputs, choose an --out outside them$/],
    [['--out', tokDir], /--out .*tok is the input .*tok \(--tokenizer\)/],
    [['--out', 'corpus-link'], /--out corpus-link is the input .*corpus \(--corpus\)/],
    [['--out', path.join(corpusDir, 'prepared')], /--out .*corpus\/prepared is inside the input .*corpus \(--corpus\)/],
    [['--out', work], /--out .* contains the input .*corpus \(--corpus\)/],
  ];
  for (const [out, message] of cases) {
    assertRefused(run(['prepare', '--corpus', corpusDir, '--tokenizer', tokDir, ...out, '--overwrite', '--no-progress']), message);
  }
  // A single corpus file, and a --validation file.
  assertRefused(run(['prepare', '--corpus', path.join(corpusDir, 'doc-0.txt'), '--tokenizer', tokDir, '--out', corpusDir, '--overwrite', '--no-progress']),
    /--out .*corpus contains the input .*doc-0\.txt \(--corpus\)/);
  const valDir = path.join(work, 'val');
  fs.mkdirSync(valDir);
  fs.writeFileSync(path.join(valDir, 'held.txt'), 'a held-out document about fever.\n');
  assertRefused(run(['prepare', '--corpus', path.join(corpusDir, 'doc-0.txt'), '--validation', valDir, '--tokenizer', tokDir,
    '--out', path.join(valDir, 'x'), '--overwrite', '--no-progress']), /is inside the input .*val \(--validation\)/);
  assert.deepEqual(snapshot(corpusDir), corpusBefore);
  assert.deepEqual(snapshot(tokDir), tokBefore);
  assert.deepEqual(fs.readdirSync(work).filter((e) => e.startsWith('.')), [], 'no temporary folder was made');
});

test('tokenizer train --overwrite refuses an --out that is the corpus folder (a corpus file named vocab.txt survives)', () => {
  const dir = path.join(work, 'tcorpus');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'vocab.txt'), 'words that a user keeps in a file called vocab.txt\n');
  const r = run(['tokenizer', 'train', '--corpus', dir, '--vocab-size', '60', '--out', dir, '--overwrite', '--no-progress']);
  assertRefused(r, /--out .*tcorpus is the input .*tcorpus \(--corpus\)/);
  assert.equal(fs.readFileSync(path.join(dir, 'vocab.txt'), 'utf8'), 'words that a user keeps in a file called vocab.txt\n');
});

test('refuseOutputOverInputs compares real paths, also for an --out that does not exist yet under a link', () => {
  const real = path.join(work, 'real-parent');
  fs.mkdirSync(path.join(real, 'inputs'), { recursive: true });
  fs.symlinkSync(real, path.join(work, 'link-parent'));
  assert.equal(realPathOf(path.join(work, 'link-parent', 'not', 'yet')), path.join(real, 'not', 'yet'));
  assert.throws(() => refuseOutputOverInputs(path.join(work, 'link-parent', 'inputs', 'new'), [{ path: path.join(real, 'inputs'), flag: '--corpus' }]),
    (e: Error) => e instanceof InputError && / is inside the input /.test(e.message));
  // A sibling whose name only starts like the input is not inside it.
  refuseOutputOverInputs(path.join(real, 'inputs-out'), [{ path: path.join(real, 'inputs'), flag: '--corpus' }]);
  // A folder inside the input whose name starts with '..' is inside it.
  assert.throws(() => refuseOutputOverInputs(path.join(real, 'inputs', '..out'), [{ path: path.join(real, 'inputs'), flag: '--corpus' }]),
    (e: Error) => e instanceof InputError && / is inside the input /.test(e.message));
});

test('insideRoot keeps a path from outside data inside its root', () => {
  const rootDir = path.join(work, 'cache');
  assert.equal(insideRoot(rootDir, 'a/b.safetensors', 'shard'), path.join(rootDir, 'a', 'b.safetensors'));
  for (const bad of ['../x', 'a/../../x', '/etc/passwd', '', '.', 'C:\\x', 'a\0b']) {
    assert.throws(() => insideRoot(rootDir, bad, 'shard file'), (e: Error) => e instanceof InputError && /^shard file ".*" is not a plain relative path inside .*; refusing to use it$/.test(e.message), bad);
  }
});

test('an input edited without changing its size is noticed: refused without --overwrite, prepared again with it', async () => {
  const dir = path.join(work, 'edit');
  fs.mkdirSync(dir);
  const file = path.join(dir, 'a.txt');
  fs.writeFileSync(file, 'the patient was treated with antibiotics. fever resolved after three days.\n');
  const out = path.join(work, 'edit-out');
  const args = ['prepare', '--corpus', dir, '--tokenizer', tokDir, '--out', out, '--seq-len', '16', '--no-progress'];
  assert.equal(run(args).code, 0);
  const first = await readManifest(out);
  const { mtime, atime } = fs.statSync(file);
  // Same length, same modification time: only the content differs.
  fs.writeFileSync(file, 'the patient was treated with antibiotics. fever resolved after seven days.\n');
  fs.utimesSync(file, atime, mtime);
  assert.equal(fs.statSync(file).size, first.inputs[0].bytes);
  const again = run(args);
  assertRefused(again, new RegExp(`--out ${out} holds data prepared with other inputs or options \\(${file} changed since it was prepared\\); pass --overwrite to replace it, or choose another --out`));
  const redo = run([...args, '--overwrite']);
  assert.equal(redo.code, 0, redo.stderr);
  assert.doesNotMatch(redo.stderr, /reusing/);
  const second = await readManifest(out);
  assert.notEqual(second.inputs[0].sha256, first.inputs[0].sha256);
  assert.notEqual(second.splits.train.shards[0]?.sha256 ?? second.splits.validation.shards[0].sha256,
    first.splits.train.shards[0]?.sha256 ?? first.splits.validation.shards[0].sha256, 'the shards were rebuilt');
  // Unchanged now: reused.
  const reuse = run(args);
  assert.equal(reuse.code, 0);
  assert.match(reuse.stderr, /reusing it/);
});

test('prepare --overwrite replaces only a prepared-data folder: a folder with a user\'s files, the working folder and a model given with --model are refused and left whole', async () => {
  const base = ['prepare', '--corpus', corpusDir, '--tokenizer', tokDir, '--seq-len', '16', '--no-progress'];
  // A user's project: a repository with notes.
  const project = path.join(work, 'project');
  fs.mkdirSync(path.join(project, '.git'), { recursive: true });
  fs.writeFileSync(path.join(project, '.git', 'HEAD'), 'ref: refs/heads/main\n');
  fs.writeFileSync(path.join(project, 'notes.txt'), 'mine\n');
  const projectBefore = snapshot(project);
  const foreign = /--out .*project is not empty and holds no prepared data \(\.git, notes\.txt\); choose an empty or new folder \(--overwrite replaces only a prepared-data folder\)$/;
  assertRefused(run([...base, '--out', project, '--overwrite']), foreign);
  assertRefused(run([...base, '--out', project]), foreign);
  assertRefused(run([...base, '--out', '.', '--overwrite'], project), /--out \. is not empty and holds no prepared data \(\.git, notes\.txt\)/);
  // `--out` left without its value at the end of the line read as '', the working folder.
  assertRefused(run([...base, '--overwrite', '--out'], project), /^mlm: error: --out was given no value; give a value or leave the option out$/);
  assert.deepEqual(snapshot(project), projectBefore);

  // A prepared folder with a user's file in it: reused as it is, not replaced.
  const prepared = path.join(work, 'prepared-mixed');
  assert.equal(run([...base, '--out', prepared]).code, 0);
  fs.writeFileSync(path.join(prepared, 'README.md'), 'what this data is\n');
  assert.match(run([...base, '--out', prepared]).stderr, /reusing it/);
  assertRefused(run([...base, '--out', prepared, '--overwrite']), /prepared-mixed holds files that are not part of a prepared-data folder \(README\.md\); --overwrite replaces only a prepared-data folder: choose an empty or new folder, or move those files$/);
  assert.ok(fs.existsSync(path.join(prepared, 'README.md')));
  // More than three: the first three by name, then how many more.
  for (const f of ['a.txt', 'b.txt', 'c.txt']) fs.writeFileSync(path.join(prepared, f), '');
  assertRefused(run([...base, '--out', prepared, '--overwrite']), /prepared-mixed holds files that are not part of a prepared-data folder \(README\.md, a\.txt, b\.txt and 1 more\);/);
  for (const f of ['a.txt', 'b.txt', 'c.txt']) fs.rmSync(path.join(prepared, f));
  // Prepared data alone is replaced; from inside it (the working folder) it is not.
  fs.rmSync(path.join(prepared, 'README.md'));
  assert.equal(run([...base, '--out', prepared, '--overwrite']).code, 0);
  const inside = run([...base, '--out', '.', '--overwrite'], prepared);
  assertRefused(inside, /^mlm: error: \. is or holds the current working folder; refusing to replace it, choose another output folder$/);
  assert.ok(fs.existsSync(path.join(prepared, 'manifest.json')));

  // A model folder given with --model is an input, beside --tokenizer or alone (named by its flag).
  const { makeTinyCheckpoint } = await import('../training/tiny-checkpoint.ts');
  const model = (await makeTinyCheckpoint(path.join(work, 'model'))).dir;
  const modelBefore = snapshot(model);
  assertRefused(run([...base, '--model', model, '--out', model, '--overwrite']), /--out .*model is the input .*model \(--model\)/);
  assertRefused(run(['prepare', '--corpus', corpusDir, '--model', model, '--seq-len', '16', '--out', path.join(model, 'data'), '--overwrite', '--no-progress']),
    /--out .*model\/data is inside the input .*model \(--model\)/);
  assert.deepEqual(snapshot(model), modelBefore);
});

test('held-out text that is also trained on is refused: a --validation file inside --corpus, or a copy of a corpus file', () => {
  const out = path.join(work, 'overlap-out');
  const base = ['prepare', '--tokenizer', tokDir, '--out', out, '--seq-len', '16', '--no-progress'];
  assertRefused(run([...base, '--corpus', corpusDir, '--validation', path.join(corpusDir, 'doc-2.txt')]),
    /^mlm: error: .*corpus\/doc-2\.txt is in --validation and also in --corpus: held-out text must not be trained on; leave it out of --corpus/);
  const copy = path.join(work, 'held-copy.txt');
  fs.copyFileSync(path.join(corpusDir, 'doc-1.txt'), copy);
  assertRefused(run([...base, '--corpus', corpusDir, '--validation', copy]),
    /^mlm: error: .*held-copy\.txt \(--validation\) has the same content as .*corpus\/doc-1\.txt \(--corpus\): held-out text must not be trained on; give other text as --validation$/);
  assert.equal(fs.existsSync(out), false);
  // Other text is fine.
  fs.writeFileSync(copy, 'a held-out note: the cough resolved within a week.\n');
  const ok = run([...base, '--corpus', corpusDir, '--validation', copy]);
  assert.equal(ok.code, 0, ok.stderr);
});

// Permissions bind only a user other than root: run the CLI as `nobody` where this process is root.
// (and only where that user can read the repository: a clone under /root is out of its reach).
const asNobody = process.getuid?.() === 0 &&
  spawnSync('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', 'test', '-r', mlm]).status === 0;
test('an unreadable corpus file or folder is named as an input that cannot be read (not an output to make writable)', { skip: asNobody ? false : 'needs root, setpriv, and a checkout the user nobody can read (a clone under a private temporary folder is not), to run the CLI as another user' }, () => {
  const shared = fs.mkdtempSync(path.join(os.tmpdir(), 'mlm-perm-'));
  try {
    fs.chmodSync(shared, 0o777);
    const corpus = path.join(shared, 'corpus');
    fs.mkdirSync(path.join(corpus, 'locked'), { recursive: true });
    fs.writeFileSync(path.join(corpus, 'a.txt'), 'the patient was treated with antibiotics.\n');
    fs.writeFileSync(path.join(corpus, 'locked', 'b.txt'), 'fever resolved.\n');
    const tok = path.join(shared, 'tok');
    fs.cpSync(tokDir, tok, { recursive: true });
    for (const p of [shared, corpus, tok, path.join(corpus, 'a.txt'), ...fs.readdirSync(tok).map((f) => path.join(tok, f))]) fs.chmodSync(p, fs.statSync(p).isDirectory() ? 0o777 : 0o644);
    const nobody = (args: string[]) => {
      const r = spawnSync('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', process.execPath, mlm, ...args],
        { cwd: shared, encoding: 'utf8', env: { ...process.env, MLM_DEBUG: '', HOME: shared, TMPDIR: shared } });
      return { code: r.status, stdout: r.stdout, stderr: r.stderr };
    };
    const args = ['prepare', '--corpus', corpus, '--tokenizer', tok, '--seq-len', '16', '--no-progress'];
    fs.chmodSync(path.join(corpus, 'locked'), 0o000);
    assertRefused(nobody([...args, '--out', path.join(shared, 'o1')]), /^mlm: error: cannot list corpus folder .*corpus\/locked \(EACCES\); make it readable, or leave it out of the corpus$/);
    fs.chmodSync(path.join(corpus, 'locked'), 0o777);
    fs.chmodSync(path.join(corpus, 'locked', 'b.txt'), 0o000);
    assertRefused(nobody([...args, '--out', path.join(shared, 'o2')]), /^mlm: error: cannot read corpus file .*corpus\/locked\/b\.txt \(EACCES\); check that it exists and is readable$/);
  } finally {
    fs.rmSync(shared, { recursive: true, force: true });
  }
});

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  test(`${signal} during prepare removes the temporary folder, prints one line and exits ${signal === 'SIGINT' ? 130 : 143}`, async () => {
    const big = path.join(work, `big-${signal}`);
    fs.mkdirSync(big);
    const para = 'the patient was treated with antibiotics for acute bronchitis and the fever resolved.\n\n';
    // A number in every paragraph: pieces the cache has not seen, so tokenizing takes a while.
    for (let i = 0; i < 8; i++) fs.writeFileSync(path.join(big, `part-${i}.txt`), Array.from({ length: 40_000 }, (_, k) => `${i * 40_000 + k} ${para}`).join(''));
    const out = path.join(work, `stopped-${signal}`);
    const child = spawn(process.execPath, [mlm, 'prepare', '--corpus', big, '--split-paragraphs', '--tokenizer', tokDir, '--out', out, '--seq-len', '32', '--validation-split', '0'],
      { cwd: work, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    let sent = false;
    child.stderr!.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      if (!sent && /prepare: tokenizing/.test(stderr)) {
        sent = true;
        child.kill(signal);
      }
    });
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    assert.ok(sent, `the run reached tokenizing (stderr: ${stderr})`);
    assert.equal(code, signal === 'SIGINT' ? 130 : 143, stderr);
    const lines = stderr.split(/[\r\n]+/).filter((l) => l.startsWith('mlm:'));
    assert.deepEqual(lines, [`mlm: interrupted; nothing written to ${out}`]);
    assert.equal(fs.existsSync(out), false);
    assert.deepEqual(fs.readdirSync(work).filter((e) => e.startsWith(`.${path.basename(out)}.`)), [], 'no temporary folder left');
  });
}
