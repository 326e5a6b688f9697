// `mlm prepare` and `mlm tokenizer train` keep their inputs safe: an --out that is, contains or lies
// inside an input is refused before anything is written; an input edited without changing its size
// is noticed; Ctrl-C removes the temporary folder. Also the path helpers of data/paths.ts.
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

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const mlm = path.join(root, 'scripts', 'mlm.mjs');
const work = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'mlm-prepare-safety-')));
const tokDir = path.join(work, 'tok');
const corpusDir = path.join(work, 'corpus');

function run(args: string[]) {
  const r = spawnSync(process.execPath, [mlm, ...args], { cwd: work, encoding: 'utf8', env: { ...process.env, MLM_DEBUG: '' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Every file below `dir` with its content, to prove nothing changed. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of fs.readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (e.isFile()) out[path.relative(dir, path.join(e.parentPath, e.name))] = fs.readFileSync(path.join(e.parentPath, e.name), 'latin1');
  }
  return out;
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
