// `mlm prepare` end to end: rows rebuilt from shards equal the tokenizer's own encoding of the
// documents, blocks/lines layouts, seeded split, byte-identical reruns, reuse, small corpora,
// interrupted runs, and every bad input with its exit code and message.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MlmTokenizer } from '../../data/tokenizer.ts';
import { readManifest, SplitReader, verifyShards } from '../../data/shards.ts';
import { documentDigest } from '../../data/prepare.ts';
import { Rng } from '../../common/rng.ts';
import { chooseValidation } from '../../data/corpus.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const mlm = path.join(root, 'scripts', 'mlm.mjs');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'mlm-prepare-'));
const tokDir = path.join(work, 'tok');
const corpusDir = path.join(work, 'corpus');

function run(args: string[], opts: { cwd?: string } = {}) {
  const r = spawnSync(process.execPath, [mlm, ...args], { cwd: opts.cwd ?? work, encoding: 'utf8', env: { ...process.env, MLM_DEBUG: '' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Deterministic prose-like documents with some variety (accents, digits, punctuation). */
function documents(n: number, seed: number): string[] {
  const rng = new Rng(seed);
  const words = ['the', 'patient', 'was', 'treated', 'with', 'antibiotics', 'for', 'acute', 'bronchitis', 'and', 'café', 'naïve',
    'dose', 'of', '250', 'mg', 'daily', 'fever', 'resolved', 'after', 'three', 'days', 'hypertension', 'cardiomyopathy', 'x-ray'];
  const docs: string[] = [];
  for (let d = 0; d < n; d++) {
    const sentences: string[] = [];
    const ns = 1 + rng.int(6);
    for (let s = 0; s < ns; s++) {
      const len = 3 + rng.int(15);
      const ws = Array.from({ length: len }, () => words[rng.int(words.length)]);
      sentences.push(ws.join(' ') + (rng.int(3) === 0 ? '!' : '.'));
    }
    docs.push(sentences.join(rng.int(2) ? ' ' : '\n'));
  }
  return docs;
}

before(() => {
  fs.mkdirSync(corpusDir, { recursive: true });
  const docs = documents(120, 1);
  docs.slice(0, 60).forEach((d, i) => fs.writeFileSync(path.join(corpusDir, `doc-${String(i).padStart(3, '0')}.txt`), d));
  fs.writeFileSync(path.join(corpusDir, 'more.jsonl'), docs.slice(60).map((text, i) => JSON.stringify({ id: i, text })).join('\n') + '\n');
  const r = run(['tokenizer', 'train', '--corpus', corpusDir, '--vocab-size', '200', '--lowercase', '--out', tokDir]);
  assert.equal(r.code, 0, r.stderr);
});

/** Documents in reading order, as the reader yields them (files sorted by path). */
function corpusDocs(): string[] {
  const txt = fs.readdirSync(corpusDir).filter((f) => f.endsWith('.txt')).sort().map((f) => fs.readFileSync(path.join(corpusDir, f), 'utf8'));
  const jsonl = fs.readFileSync(path.join(corpusDir, 'more.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).text as string);
  return [...txt, ...jsonl];
}

function readRows(dir: string, split: 'train' | 'validation') {
  return readManifest(dir).then((m) => {
    const reader = new SplitReader(dir, m, split);
    const rows: number[][] = [];
    const words: number[][] = [];
    for (let r = 0; r < reader.rows; r++) {
      const ids = new Uint32Array(m.seq_len), ws = new Uint8Array(m.seq_len);
      reader.readRow(r, ids, ws, 0);
      rows.push([...ids]);
      words.push([...ws]);
    }
    reader.close();
    return { m, rows, words };
  });
}

test('blocks mode: rows are [CLS] + the token stream with [SEP] after each document (none after one that ends a row), tail padded', async () => {
  const out = path.join(work, 'blocks');
  const r = run(['prepare', '--corpus', corpusDir, '--tokenizer', tokDir, '--out', out, '--seq-len', '32', '--validation-split', '0.1', '--no-progress']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^split +documents +tokens +blocks +unk_rate +tokens_per_word$/m);
  assert.match(r.stdout, /unk_rate/);
  const tok = await MlmTokenizer.load(tokDir);
  const { m, rows, words } = await readRows(out, 'train');
  await verifyShards(out, m);
  assert.equal(m.splits.validation.documents, 12, 'round(120 * 0.1) documents held out');
  assert.equal(m.splits.train.documents, 108);
  assert.equal(m.dtype, 'uint16');
  // Rebuild the expected stream from the tokenizer itself, skipping the held-out documents.
  const { cls, sep, pad } = tok.specialIds;
  const held = chooseValidation(120, 0.1, 42);
  const stream: number[] = [];
  const starts: number[] = [];
  let trainDocs = 0;
  let seps = 0;
  const docs = corpusDocs();
  for (let i = 0; i < docs.length; i++) {
    if (held.has(i)) continue;
    const enc = await tok.encode(docs[i]);
    trainDocs++;
    stream.push(...enc.ids);
    starts.push(...enc.wordStarts);
    // A document that ends at a row's end (31 stream tokens a row) is separated by it: no [SEP].
    if (stream.length % 31 !== 0) {
      stream.push(sep);
      starts.push(0);
      seps++;
    }
  }
  assert.equal(trainDocs, 108);
  const got: number[] = [];
  const gotStarts: number[] = [];
  rows.forEach((row, i) => {
    assert.equal(row[0], cls, `row ${i} starts with [CLS]`);
    got.push(...row.slice(1));
    gotStarts.push(...words[i].slice(1));
  });
  const lastReal = got.length - got.slice().reverse().findIndex((id) => id !== pad);
  assert.deepEqual(got.slice(0, lastReal), stream, 'the rows hold exactly the encoded training documents in order');
  assert.deepEqual(gotStarts.slice(0, lastReal), starts, 'word starts come from the tokenizer');
  assert.ok(got.slice(lastReal).every((id) => id === pad), 'only the tail is padded');
  assert.equal(m.splits.train.tokens, stream.length - seps);
  assert.ok(rows.every((row) => row[1] !== sep && row[1] !== pad), 'every row holds text after its [CLS]');
});

test('two runs over the same inputs give byte-identical folders; a third run reuses the data', () => {
  const a = path.join(work, 'same-a'), b = path.join(work, 'same-b');
  for (const out of [a, b]) {
    const r = run(['prepare', '--corpus', corpusDir, '--tokenizer', tokDir, '--out', out, '--seq-len', '16', '--no-progress']);
    assert.equal(r.code, 0, r.stderr);
  }
  const files = fs.readdirSync(a).sort();
  assert.deepEqual(fs.readdirSync(b).sort(), files);
  for (const f of files) assert.ok(fs.readFileSync(path.join(a, f)).equals(fs.readFileSync(path.join(b, f))), `${f} identical`);
  const again = run(['prepare', '--corpus', corpusDir, '--tokenizer', tokDir, '--out', a, '--seq-len', '16', '--no-progress']);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stderr, /reusing it/);
  const other = run(['prepare', '--corpus', corpusDir, '--tokenizer', tokDir, '--out', a, '--seq-len', '24', '--no-progress']);
  assert.equal(other.code, 2);
  assert.match(other.stderr, /holds data prepared with other inputs or options \(--seq-len 16 then, 24 now\); pass --overwrite/);
});

test('lines mode: one example per non-blank line, [CLS] line [SEP], truncated and padded', async () => {
  const file = path.join(work, 'lines.txt');
  const long = Array.from({ length: 40 }, () => 'antibiotics').join(' ');
  fs.writeFileSync(file, `the patient was treated\n\n  \nfever resolved after three days\n${long}\n`);
  const out = path.join(work, 'lines');
  const r = run(['prepare', '--corpus', file, '--tokenizer', tokDir, '--out', out, '--seq-len', '12', '--line-by-line', '--validation-split', '0', '--no-progress']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /1 line\(s\) were longer than 10 tokens and were truncated/);
  const tok = await MlmTokenizer.load(tokDir);
  const { rows, m } = await readRows(out, 'train');
  assert.equal(rows.length, 3);
  assert.equal(m.splits.train.documents, 1);
  const { cls, sep, pad } = tok.specialIds;
  const lines = ['the patient was treated', 'fever resolved after three days', long];
  for (let i = 0; i < 3; i++) {
    const ids = [...(await tok.encode(lines[i])).ids].slice(0, 10);
    const expected = [cls, ...ids, sep];
    while (expected.length < 12) expected.push(pad);
    assert.deepEqual(rows[i], expected, `line ${i}`);
  }
});

test('a corpus smaller than one block is kept as one padded block, with a warning', async () => {
  const file = path.join(work, 'tiny.txt');
  fs.writeFileSync(file, 'the patient was treated.');
  const out = path.join(work, 'tiny');
  const r = run(['prepare', '--corpus', file, '--tokenizer', tokDir, '--out', out, '--seq-len', '64', '--no-progress']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /less than one block of 64; it was kept as 1 padded block/);
  assert.match(r.stderr, /too few to hold out a validation split/);
  const { rows } = await readRows(out, 'train');
  assert.equal(rows.length, 1);
});

test('--validation FILES gives a held-out set instead of a split', async () => {
  const held = path.join(work, 'held.txt');
  fs.writeFileSync(held, documents(3, 9).join('\n\n'));
  const out = path.join(work, 'given');
  const r = run(['prepare', '--corpus', corpusDir, '--validation', held, '--split-paragraphs', '--tokenizer', tokDir, '--out', out, '--seq-len', '32', '--no-progress']);
  assert.equal(r.code, 0, r.stderr);
  const m = await readManifest(out);
  assert.equal(m.splits.train.documents, 120);
  assert.ok(m.splits.validation.documents >= 3);
  assert.deepEqual(m.validation, { files: [held] });
});

test('held-out documents that are copies of training documents are counted in a warning', () => {
  // Every document twice: a split by document puts copies on both sides.
  const docs = documents(30, 17);
  const file = path.join(work, 'duplicated.txt');
  fs.writeFileSync(file, [...docs, ...docs].join('\n\n'));
  const r = run(['prepare', '--corpus', file, '--split-paragraphs', '--validation-split', '0.3', '--tokenizer', tokDir, '--out', path.join(work, 'duplicated'), '--seq-len', '32', '--no-progress']);
  assert.equal(r.code, 0, r.stderr);
  const m = /warning: (\d+) of the (\d+) distinct held-out documents are copies of training documents \(the same length and the same first and last 256 characters: the corpus holds duplicates\); the validation loss will be optimistic/.exec(r.stderr);
  assert.ok(m, r.stderr);
  assert.ok(Number(m[1]) > 0 && Number(m[1]) <= Number(m[2]));
  // A corpus without duplicates gets no such warning.
  const clean = run(['prepare', '--corpus', corpusDir, '--tokenizer', tokDir, '--out', path.join(work, 'no-duplicates'), '--seq-len', '32', '--no-progress']);
  assert.equal(clean.code, 0, clean.stderr);
  assert.doesNotMatch(clean.stderr, /copies of training documents/);
  // The digest: whole short documents, the length and both ends of long ones.
  assert.equal(documentDigest('the same text'), documentDigest('the same text'));
  assert.notEqual(documentDigest('the same text'), documentDigest('the same texT'));
  assert.notEqual(documentDigest('a'.repeat(600)), documentDigest('a'.repeat(601)));
  const long = (middle: string) => 'b'.repeat(300) + middle + 'c'.repeat(300);
  assert.equal(documentDigest(long('x')), documentDigest(long('y')), 'only the ends of a long document are read');
  assert.notEqual(documentDigest('d' + long('x').slice(1)), documentDigest(long('x')));
  assert.ok(Number.isSafeInteger(documentDigest(long('x'))));
});

test('a prepare killed half way leaves no manifest, and the next run completes', async () => {
  const big = path.join(work, 'big');
  fs.mkdirSync(big, { recursive: true });
  const docs = documents(4000, 5).join('\n\n');
  for (let i = 0; i < 12; i++) fs.writeFileSync(path.join(big, `part-${i}.txt`), docs);
  const out = path.join(work, 'killed');
  const child = spawn(process.execPath, [mlm, 'prepare', '--corpus', big, '--split-paragraphs', '--tokenizer', tokDir, '--out', out, '--seq-len', '32'],
    { cwd: work, stdio: ['ignore', 'ignore', 'pipe'] });
  await new Promise<void>((resolve) => {
    child.stderr!.on('data', (chunk: Buffer) => {
      if (/prepare: tokenizing/.test(chunk.toString())) {
        child.kill('SIGKILL');
        resolve();
      }
    });
    child.on('exit', () => resolve());
  });
  await new Promise((r) => child.on('exit', r));
  assert.ok(!fs.existsSync(path.join(out, 'manifest.json')), 'no manifest claims complete data');
  const r = run(['prepare', '--corpus', big, '--split-paragraphs', '--tokenizer', tokDir, '--out', out, '--seq-len', '32', '--no-progress']);
  assert.equal(r.code, 0, r.stderr);
  await verifyShards(out, await readManifest(out));
});

// Bad input: exit code 2 and a one-line message naming the problem.
const bad: [string, () => string[], RegExp][] = [
  ['a missing path', () => ['prepare', '--corpus', 'nope/missing.txt', '--tokenizer', tokDir, '--out', 'o1'], /not found: nope\/missing\.txt/],
  ['a glob matching nothing', () => ['prepare', '--corpus', 'corpus/*.parquet', '--tokenizer', tokDir, '--out', 'o2'], /glob matched nothing: corpus\/\*\.parquet/],
  ['an empty corpus', () => { fs.writeFileSync(path.join(work, 'empty.txt'), '  \n\n'); return ['prepare', '--corpus', 'empty.txt', '--tokenizer', tokDir, '--out', 'o3']; }, /corpus is empty/],
  ['a binary file', () => { fs.writeFileSync(path.join(work, 'bin.txt'), Buffer.from([0x50, 0x4b, 3, 4, 0, 0, 1, 2])); return ['prepare', '--corpus', 'bin.txt', '--tokenizer', tokDir, '--out', 'o4']; }, /bin\.txt looks binary \(NUL byte at offset 4\)/],
  ['invalid UTF-8', () => { fs.writeFileSync(path.join(work, 'latin1.txt'), Buffer.from('caf\xe9 au lait', 'latin1')); return ['prepare', '--corpus', 'latin1.txt', '--tokenizer', tokDir, '--out', 'o5']; }, /latin1\.txt: invalid UTF-8 at byte offset 3.*--on-invalid-utf8 replace/],
  ['a table without the text field', () => { fs.writeFileSync(path.join(work, 't.csv'), 'id,body\n1,hello\n'); return ['prepare', '--corpus', 't.csv', '--tokenizer', tokDir, '--out', 'o6']; }, /t\.csv.*"text".*id, body/],
  ['--seq-len above the model positions', () => {
    const model = path.join(work, 'model');
    fs.mkdirSync(model, { recursive: true });
    fs.cpSync(tokDir, model, { recursive: true });
    fs.writeFileSync(path.join(model, 'config.json'), JSON.stringify({ model_type: 'bert', max_position_embeddings: 64 }));
    return ['prepare', '--corpus', corpusDir, '--model', model, '--out', 'o7', '--seq-len', '128'];
  }, /--seq-len 128 is above the model's 64 positions/],
  ['an output folder holding something else', () => { fs.mkdirSync(path.join(work, 'o8'), { recursive: true }); fs.writeFileSync(path.join(work, 'o8', 'notes.txt'), 'mine'); return ['prepare', '--corpus', corpusDir, '--tokenizer', tokDir, '--out', 'o8']; }, /--out o8 is not empty.*--overwrite/],
  ['a missing tokenizer folder', () => ['prepare', '--corpus', corpusDir, '--tokenizer', './no-tok', '--out', 'o9'], /tokenizer folder not found: \.\/no-tok/],
  ['--vocab-size below the special tokens plus the alphabet', () => ['tokenizer', 'train', '--corpus', corpusDir, '--vocab-size', '10', '--out', 'o10'], /vocab-size 10 .*minimum/i],
];
for (const [name, args, message] of bad) {
  test(`bad input: ${name} -> exit 2 and a clear one-line message`, () => {
    const r = run(args());
    assert.equal(r.code, 2, `exit code (stderr: ${r.stderr})`);
    assert.match(r.stderr, message);
    assert.equal(r.stderr.trim().split('\n').filter((l) => l.startsWith('mlm: error')).length, 1, 'one error line');
  });
}

test('--on-invalid-utf8 replace reads the file with U+FFFD', async () => {
  const out = path.join(work, 'replaced');
  const r = run(['prepare', '--corpus', 'latin1.txt', '--tokenizer', tokDir, '--out', out, '--on-invalid-utf8', 'replace', '--no-progress']);
  assert.equal(r.code, 0, r.stderr);
  const m = await readManifest(out);
  assert.ok(m.splits.train.tokens > 0);
  assert.equal(fs.existsSync(path.join(work, 'o8', 'manifest.json')), false, 'the refused folder was left alone');
  assert.equal(fs.readFileSync(path.join(work, 'o8', 'notes.txt'), 'utf8'), 'mine');
});

test('files of other types in a corpus folder are named in a note, and a small held-out split gets one', async () => {
  const mixed = path.join(work, 'mixed');
  fs.mkdirSync(mixed, { recursive: true });
  corpusDocs().slice(0, 40).forEach((d, i) => fs.writeFileSync(path.join(mixed, `d${i}.txt`), d));
  fs.writeFileSync(path.join(mixed, 'paper.pdf'), '%PDF-1.7');
  fs.writeFileSync(path.join(mixed, 'README.md'), '# notes');
  fs.writeFileSync(path.join(mixed, '.DS_Store'), 'x'); // hidden: skipped without a word
  const r = run(['prepare', '--corpus', mixed, '--tokenizer', tokDir, '--out', path.join(work, 'mixed-out'), '--seq-len', '32', '--no-progress']);
  assert.equal(r.code, 0, r.stderr);
  const note = r.stderr.split('\n').filter((l) => l.includes('left out of the corpus'));
  assert.equal(note.length, 1, r.stderr);
  assert.equal(note[0], `note: left out of the corpus from ${mixed}: 2 file(s) of other types (${path.join(mixed, 'README.md')}, ${path.join(mixed, 'paper.pdf')}); corpus files are .txt, .text, .jsonl, .ndjson, .csv, .tsv, .parquet, .arrow, .feather: convert the others to one of these to use them`);
  // 2 of 40 short documents held out: far below 1,000 masked tokens.
  assert.match(r.stderr, /^note: the validation split has \d+ tokens, so an evaluation masks about \d+ of them \(15%\): its loss is a rough figure/m);

  // A held-out set of ~7,000+ tokens (1,000 masked) gets no such note.
  const big = path.join(work, 'big-held.txt');
  fs.writeFileSync(big, documents(400, 11).join('\n\n'));
  const r2 = run(['prepare', '--corpus', corpusDir, '--validation', big, '--split-paragraphs', '--tokenizer', tokDir, '--out', path.join(work, 'big-held-out'), '--seq-len', '32', '--no-progress', '--json']);
  assert.equal(r2.code, 0, r2.stderr);
  const manifest = await readManifest(path.join(work, 'big-held-out'));
  assert.deepEqual(JSON.parse(r2.stdout), manifest, '--json prints manifest.json (docs/formats.md, "Command output")');
  const held = manifest.splits.validation.tokens;
  assert.ok(held * 0.15 >= 1000, `held-out tokens ${held}`);
  assert.doesNotMatch(r2.stderr, /left out of the corpus|validation split has/);
});
