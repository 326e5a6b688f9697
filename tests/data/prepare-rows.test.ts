// `prepare` called in process (fast: no CLI start, a tokenizer trained here): what the manifest
// counts against what the shards hold, rows that hold text, how a rerun over a prepared folder is
// compared, and the notes and warnings about the corpus.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { InputError } from '../../common/errors.ts';
import { prepare, type PrepareOptions, type PrepareResult } from '../../data/prepare.ts';
import { readManifest, SplitReader } from '../../data/shards.ts';
import { trainTokenizer } from '../../data/tokenizer-train.ts';
import type { MlmTokenizer } from '../../data/tokenizer.ts';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'mlm-prepare-rows-'));
const words = ['the', 'patient', 'was', 'treated', 'with', 'antibiotics', 'for', 'acute', 'bronchitis', 'fever', 'resolved', 'after', 'three', 'days'];
let tok: MlmTokenizer;

before(async () => {
  const docs = Array.from({ length: 40 }, (_, i) => words.slice(i % 5).concat(words.slice(0, i % 5)).join(' ') + '.');
  tok = (await trainTokenizer(docs, { family: 'bert', vocabSize: 120, lowercase: true })).tokenizer;
});

after(() => fs.rmSync(work, { recursive: true, force: true }));

/** Writes a file under the work folder and returns its path. */
function put(name: string, text: string): string {
  const p = path.join(work, name);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, text);
  return p;
}

/** Runs prepare with quiet defaults; the lines it logged are returned beside the result. */
async function run(over: Partial<PrepareOptions> & Pick<PrepareOptions, 'corpus' | 'out'>): Promise<PrepareResult & { logged: string[] }> {
  const logged: string[] = [];
  const result = await prepare({
    tokenizer: tok,
    tokenizerSource: 'tok',
    seqLen: 16,
    mode: 'blocks',
    validationSplit: 0,
    seed: 42,
    overwrite: false,
    log: (line) => logged.push(line),
    progress: false,
    ...over,
  });
  return { ...result, logged };
}

test('a corpus of one .txt file: the warning says why (one document unless --split-paragraphs) and that --line-by-line splits by document', async () => {
  const text = put('one/notes.txt', Array.from({ length: 30 }, (_, i) => `${words[i % words.length]} ${words[(i * 3) % words.length]} fever`).join('\n') + '\n');
  const blocks = await run({ corpus: [text], out: path.join(work, 'one-blocks'), validationSplit: 0.1 });
  const warning = blocks.logged.filter((l) => l.includes('too few to hold out a validation split'));
  assert.equal(warning.length, 1, blocks.logged.join('\n'));
  assert.match(warning[0], /the corpus has 1 document\(s\).*a \.txt file is one document unless --split-paragraphs.*pass --split-paragraphs, or give --validation FILES/);
  assert.doesNotMatch(warning[0], /line-by-line/);

  const lines = await run({ corpus: [text], out: path.join(work, 'one-lines'), validationSplit: 0.1, mode: 'lines' });
  assert.match(lines.logged.join('\n'), /a \.txt file is one document unless --split-paragraphs.*with --line-by-line the split is still by document, not by line/);
  assert.equal(lines.manifest.splits.validation.rows, 0, 'the split is by document: one document, nothing held out');

  // JSON Lines hold one document per line already: no word about .txt files.
  const jsonl = put('one/one.jsonl', JSON.stringify({ text: 'the patient was treated' }) + '\n');
  const j = await run({ corpus: [jsonl], out: path.join(work, 'one-jsonl'), validationSplit: 0.1 });
  const w = j.logged.find((l) => l.includes('too few to hold out'));
  assert.ok(w && !w.includes('.txt') && w.includes('give --validation FILES'), j.logged.join('\n'));
});

/** Every row of a split, with its word-start bits. */
async function rowsOf(dir: string, split: 'train' | 'validation') {
  const m = await readManifest(dir);
  const reader = new SplitReader(dir, m, split);
  const rows: { ids: number[]; words: number[] }[] = [];
  for (let r = 0; r < reader.rows; r++) {
    const ids = new Uint32Array(m.seq_len), ws = new Uint8Array(m.seq_len);
    reader.readRow(r, ids, ws, 0);
    rows.push({ ids: [...ids], words: [...ws] });
  }
  reader.close();
  return { m, rows };
}

test('--line-by-line: tokens, words and unknown tokens of a split count what the shards hold, not the truncated rest', async () => {
  // Long lines (far over seq_len - 2 tokens) with characters the vocabulary lacks, in both halves.
  const long = (i: number) => `${words.join(' ')} ✓ ${words.slice(i).join(' ')} Ωmega ${words.join(' ')} ✓✓`;
  const file = put('long/lines.txt', [0, 1, 2, 3, 4, 5].map(long).join('\n') + '\nshort ✓ line\n');
  const out = path.join(work, 'long-lines');
  const { manifest } = await run({ corpus: [file], out, mode: 'lines' });
  const { cls, sep, pad, unk } = tok.specialIds;
  const { rows } = await rowsOf(out, 'train');
  const text = rows.flatMap((r) => r.ids.map((id, t) => ({ id, word: r.words[t] }))).filter((x) => x.id !== cls && x.id !== sep && x.id !== pad);
  const info = manifest.splits.train;
  assert.equal(info.truncated, 6);
  assert.ok(info.unknown_tokens > 0 && info.unknown_tokens < 14, `some [UNK] are written, some cut off: ${info.unknown_tokens}`);
  assert.equal(info.tokens, text.length, 'tokens: the text tokens in the shards');
  assert.equal(info.words, text.filter((x) => x.word === 1).length, 'words: the word starts in the shards');
  assert.equal(info.unknown_tokens, text.filter((x) => x.id === unk).length, 'unknown tokens: those in the shards');
});

test('a rerun from another working folder reuses the data; a refused rerun names what differs', async () => {
  const sub = path.join(work, 'cwd', 'sub');
  put('cwd/sub/c.txt', 'the patient was treated with antibiotics\n');
  const home = process.cwd();
  let first: PrepareResult;
  try {
    process.chdir(sub);
    first = await run({ corpus: ['c.txt'], out: 'p1', tokenizerSource: '../tok' });
    process.chdir(path.dirname(sub));
    const again = await run({ corpus: ['sub/c.txt'], out: 'sub/p1', tokenizerSource: 'tok' });
    assert.equal(again.reused, true, 'the same files and options, named from another folder');
    assert.deepEqual(again.manifest.inputs.map((f) => f.path), ['c.txt'], 'the manifest keeps the paths as first given');

    const refused = async (over: Partial<PrepareOptions>, ...fragments: string[]) => {
      await assert.rejects(run({ corpus: ['sub/c.txt'], out: 'sub/p1', ...over }), (err: unknown) => {
        assert.ok(err instanceof InputError, String(err));
        assert.match(err.message, /^--out sub\/p1 holds data prepared with other inputs or options \(.*\); pass --overwrite/);
        for (const f of fragments) assert.ok(err.message.includes(f), `"${err.message}" should name ${f}`);
        return true;
      });
    };
    await refused({ validationSplit: 0.1 }, '(--validation-split 0 then, 0.1 now)');
    await refused({ seqLen: 24, mode: 'lines' }, '--seq-len 16 then, 24 now', '--line-by-line false then, true now');
    await refused({ splitParagraphs: true, textField: 'body' }, '--split-paragraphs false then, true now', '--text-field text then, body now');
    put('cwd/sub/d.txt', 'the patient was treated with antibiotics\n'); // a copy is one input more
    await refused({ corpus: ['sub/c.txt', 'sub/d.txt'] }, '(input sub/d.txt added)');
    put('cwd/sub/c.txt', 'fever resolved after three days\n');
    await refused({}, '(sub/c.txt changed since it was prepared)');
  } finally {
    process.chdir(home);
  }
  assert.ok(first!.manifest.splits.train.rows > 0);
});

test('blocks: a document ending exactly at a row\'s end gets no [SEP], so no row is [CLS] [SEP] or holds no text', async () => {
  const { cls, sep, pad } = tok.specialIds;
  // A document of exactly seq_len - 1 = 15 tokens fills a row after its [CLS].
  let full = '';
  for (let i = 0; (await tok.encode(full)).ids.length < 15; i++) full = `${full} ${words[i % words.length]}`.trim();
  const fullIds = [...(await tok.encode(full)).ids];
  assert.equal(fullIds.length, 15, 'test setup: a document of 15 tokens');
  const shortIds = [...(await tok.encode('fever resolved')).ids];

  const both = put('full/both.jsonl', [full, 'fever resolved'].map((text) => JSON.stringify({ text })).join('\n') + '\n');
  await run({ corpus: [both], out: path.join(work, 'full-both') });
  const a = await rowsOf(path.join(work, 'full-both'), 'train');
  const padded = (ids: number[]) => [...ids, ...Array(16 - ids.length).fill(pad)];
  assert.deepEqual(a.rows.map((r) => r.ids), [[cls, ...fullIds], padded([cls, ...shortIds, sep])], 'the next row starts with text, not [SEP]');
  assert.equal(a.m.splits.train.tokens, 15 + shortIds.length);

  // At the end of the corpus: no row of [CLS] [SEP] and padding.
  const alone = put('full/alone.jsonl', JSON.stringify({ text: full }) + '\n');
  await run({ corpus: [alone], out: path.join(work, 'full-alone') });
  const b = await rowsOf(path.join(work, 'full-alone'), 'train');
  assert.deepEqual(b.rows.map((r) => r.ids), [[cls, ...fullIds]]);
});

test('rows with null text are skipped with one note per file, whether or not the corpus is read twice for a split', async () => {
  const rows = [...Array.from({ length: 20 }, (_, i) => ({ text: `${words[i % words.length]} was treated` })), { text: null }, { text: null }];
  const file = put('nulls/n.jsonl', rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  for (const validationSplit of [0, 0.1]) {
    const r = await run({ corpus: [file], out: path.join(work, `nulls-${validationSplit}`), validationSplit });
    assert.deepEqual(r.logged.filter((l) => l.includes('with no text')), [`note: ${file}: 2 row(s) with no text ("text" null or empty) were skipped`], `split ${validationSplit}`);
    assert.equal(r.manifest.splits.train.documents + r.manifest.splits.validation.documents, 20);
  }
});
