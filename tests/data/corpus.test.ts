// Tests for data/corpus.ts: file resolution (files, folders, globs), every reader format (.txt
// whole and by paragraph, .jsonl, .csv, .tsv, .arrow, .parquet), streaming across chunk
// boundaries, every bad-input error, byte accounting, the empty-corpus check, and the seeded
// train/validation split. Corpora are written to a temporary folder; nothing touches the network.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { pathToFileURL } from 'node:url';
import { fromCSV, table, toArrowIPC } from 'arquero';
import { InputError } from '../../common/errors.ts';
import { Rng } from '../../common/rng.ts';
import {
  MAX_DOCUMENT_CHARS,
  SUPPORTED_EXTENSIONS,
  chooseValidation,
  firstInvalidUtf8,
  readDocuments,
  requireNonEmpty,
  resolveCorpusFiles,
  totalBytes,
  type CorpusDocument,
  type CorpusOptions,
} from '../../data/corpus.ts';

const execFileAsync = promisify(execFile);
const repoRoot = path.resolve(import.meta.dirname, '..', '..');
let dir: string;

before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'mlm-corpus-'));
});

after(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

/** Writes a file under the temp folder (creating folders) and returns its path. */
async function put(rel: string, data: string | Uint8Array): Promise<string> {
  const p = path.join(dir, rel);
  await fs.mkdir(path.dirname(p), { recursive: true });
  await fs.writeFile(p, data);
  return p;
}

async function readAll(files: string[], opts?: CorpusOptions): Promise<CorpusDocument[]> {
  const out: CorpusDocument[] = [];
  for await (const d of readDocuments(files, opts)) out.push(d);
  return out;
}

/** Asserts that `fn` rejects with an InputError whose message contains every fragment. */
async function rejectsWith(fn: () => Promise<unknown>, ...fragments: (string | RegExp)[]): Promise<string> {
  let message = '';
  await assert.rejects(fn, (err: unknown) => {
    assert.ok(err instanceof InputError, `expected InputError, got ${String(err)}`);
    message = err.message;
    assert.ok(!message.includes('\n'), `message should be one line: ${message}`);
    for (const f of fragments) {
      if (typeof f === 'string') assert.ok(message.includes(f), `"${message}" should contain "${f}"`);
      else assert.match(message, f);
    }
    return true;
  });
  return message;
}

// parquet-wasm is loaded the way the reader loads it; the Parquet tests skip when it is absent.
type ParquetWasm = {
  Table: { fromIPCStream(b: Uint8Array): unknown };
  WriterPropertiesBuilder: new () => { setMaxRowGroupSize(n: number): { build(): unknown } };
  writeParquet(t: unknown, props?: unknown): Uint8Array;
};
async function loadParquetWasm(): Promise<ParquetWasm | null> {
  const name = 'parquet-wasm';
  try {
    return (await import(name)) as ParquetWasm;
  } catch {
    return null;
  }
}

describe('memory', () => {
  // Measured in a child process: inside the test runner every promise is tracked by async
  // hooks, which changes the heap's growth in ways that have nothing to do with the reader.
  test('a large .txt split into paragraphs streams with flat memory', async () => {
    const size = 100 * 1e6;
    const p = path.join(dir, 'large', 'big.txt');
    await fs.mkdir(path.dirname(p), { recursive: true });
    const fh = await fs.open(p, 'w');
    const para = 'the quick brown fox jumps over the lazy dog, naïve café ✓\nand a second line of it\n\n';
    const block = para.repeat(Math.ceil((1 << 20) / para.length));
    let written = 0;
    while (written < size) written += (await fh.write(block)).bytesWritten;
    await fh.close();

    const script = path.join(dir, 'large', 'measure.mts');
    await fs.writeFile(
      script,
      `import { readDocuments } from ${JSON.stringify(pathToFileURL(path.join(repoRoot, 'data', 'corpus.ts')).href)};
const rss0 = process.memoryUsage().rss;
let peak = rss0, n = 0, bytes = 0;
const t0 = performance.now();
for await (const d of readDocuments([process.argv[2]], { splitParagraphs: true })) {
  bytes += d.bytes;
  if ((++n & 1023) === 0) peak = Math.max(peak, process.memoryUsage().rss);
}
console.log(JSON.stringify({ n, bytes, growth: peak - rss0, seconds: (performance.now() - t0) / 1000 }));
`,
    );
    const { stdout } = await execFileAsync(process.execPath, ['--import', 'tsx', script, p], { cwd: repoRoot });
    await fs.rm(p);
    const r = JSON.parse(stdout.trim().split('\n').pop()!) as { n: number; bytes: number; growth: number; seconds: number };
    assert.equal(r.n, written / Buffer.byteLength(para));
    assert.equal(r.bytes, written);
    // About 30 MB of V8 heap churn whatever the file size (the same for 50 MB and 200 MB).
    assert.ok(r.growth < written / 2, `RSS grew by ${(r.growth / 1e6).toFixed(1)} MB reading ${(written / 1e6).toFixed(0)} MB`);
    console.log(`# paragraphs: ${(written / 1e6 / r.seconds).toFixed(0)} MB/s, RSS growth ${(r.growth / 1e6).toFixed(1)} MB for ${(written / 1e6).toFixed(0)} MB`);
  });
});

describe('resolveCorpusFiles', () => {
  let root: string;
  before(async () => {
    root = path.join(dir, 'resolve');
    await put('resolve/b.txt', 'b');
    await put('resolve/a.jsonl', '{"text":"a"}\n');
    await put('resolve/notes.pdf', 'x');
    await put('resolve/README.md', '# readme');
    await put('resolve/.hidden.txt', 'hidden');
    await put('resolve/.git/x.txt', 'hidden folder');
    await put('resolve/sub/c.csv', 'text\nc\n');
    await put('resolve/sub/deep/d.TXT', 'd');
    await put('resolve/sub/deep/e1.tsv', 'text\ne\n');
    await put('resolve/sub/deep/e2.tsv', 'text\ne\n');
    await put('resolve/empty/readme.md', 'nothing');
    await put('resolve/lit[1].txt', 'literal brackets');
  });

  test('SUPPORTED_EXTENSIONS has the required formats', () => {
    for (const e of ['.txt', '.jsonl', '.csv', '.tsv', '.parquet', '.arrow']) assert.ok(SUPPORTED_EXTENSIONS.includes(e), e);
    assert.ok(!SUPPORTED_EXTENSIONS.includes('.md'));
  });

  test('a folder expands recursively, sorted, supported files only, hidden skipped', async () => {
    const files = await resolveCorpusFiles([root]);
    const rel = files.map((f) => path.relative(root, f));
    assert.deepEqual(rel, ['a.jsonl', 'b.txt', 'lit[1].txt', 'sub/c.csv', 'sub/deep/d.TXT', 'sub/deep/e1.tsv', 'sub/deep/e2.tsv']);
  });

  test('files and globs, de-duplicated and sorted', async () => {
    const files = await resolveCorpusFiles([
      path.join(root, 'sub/deep/e?.tsv'),
      path.join(root, 'b.txt'),
      path.join(root, '**/*.tsv'),
      path.join(root, '*.jsonl'),
      path.join(root, 'sub', '..', 'b.txt'), // same file, other spelling
    ]);
    const rel = files.map((f) => path.relative(root, f));
    assert.deepEqual(rel, ['a.jsonl', 'b.txt', 'sub/deep/e1.tsv', 'sub/deep/e2.tsv']);
  });

  test('glob forms: **, [...], [!...], and a folder matched by a glob', async () => {
    const rel = async (...p: string[]) => (await resolveCorpusFiles(p.map((x) => path.join(root, x)))).map((f) => path.relative(root, f));
    assert.deepEqual(await rel('**/*.txt'), ['b.txt', 'lit[1].txt']); // d.TXT does not match '*.txt'
    assert.deepEqual(await rel('sub/**/*.tsv'), ['sub/deep/e1.tsv', 'sub/deep/e2.tsv']);
    assert.deepEqual(await rel('sub/deep/e[1].tsv'), ['sub/deep/e1.tsv']);
    assert.deepEqual(await rel('sub/deep/e[!1].tsv'), ['sub/deep/e2.tsv']);
    assert.deepEqual(await rel('su?'), ['sub/c.csv', 'sub/deep/d.TXT', 'sub/deep/e1.tsv', 'sub/deep/e2.tsv']);
    assert.deepEqual(await rel('.*.txt'), ['.hidden.txt']); // an explicit leading dot matches hidden names
    assert.deepEqual(await rel('lit[1].txt'), ['lit[1].txt']); // an existing path is taken literally
  });

  test('a symlink loop ends', async (t) => {
    const loop = path.join(dir, 'loop');
    await put('loop/a/x.txt', 'x');
    try {
      await fs.symlink('..', path.join(loop, 'a', 'up'));
    } catch {
      return t.skip('cannot make symlinks here');
    }
    const rel = async (p: string) => (await resolveCorpusFiles([path.join(loop, p)])).map((f) => path.relative(loop, f));
    assert.deepEqual(await rel('.'), ['a/x.txt']);
    assert.deepEqual(await rel('**/*.txt'), ['a/x.txt']);
  });

  test('relative paths stay relative', async () => {
    const cwd = process.cwd();
    process.chdir(root);
    try {
      assert.deepEqual(await resolveCorpusFiles(['*.txt', 'sub']), ['b.txt', 'lit[1].txt', 'sub/c.csv', 'sub/deep/d.TXT', 'sub/deep/e1.tsv', 'sub/deep/e2.tsv']);
    } finally {
      process.chdir(cwd);
    }
  });

  test('errors: missing path, glob matching nothing, empty folder, unsupported extension', async () => {
    await rejectsWith(() => resolveCorpusFiles([path.join(root, 'nope.txt')]), 'corpus path not found', 'nope.txt');
    await rejectsWith(() => resolveCorpusFiles([path.join(root, '*.xml')]), 'matched nothing', '*.xml');
    await rejectsWith(() => resolveCorpusFiles([path.join(root, '*.md')]), 'no corpus file', '.jsonl', '.parquet');
    await rejectsWith(() => resolveCorpusFiles([path.join(root, 'empty')]), 'empty', 'holds no corpus file', '.txt');
    await rejectsWith(() => resolveCorpusFiles([path.join(root, 'notes.pdf')]), 'notes.pdf', "'.pdf'", '.txt', '.jsonl', '.csv', '.tsv', '.parquet', '.arrow');
    await rejectsWith(() => resolveCorpusFiles([]), 'no corpus given');
  });
});

describe('.txt', () => {
  test('one document per file, exactly as in the file, BOM dropped, blank files skipped', async () => {
    const a = await put('txt/a.txt', '\uFEFF  Hello,\r\nworld.\n\n  second paragraph  \n');
    const b = await put('txt/b.txt', ' \n\t\r\n');
    const c = await put('txt/c.txt', '');
    const docs = await readAll([a, b, c]);
    assert.deepEqual(docs.map((d) => [d.text, d.source]), [['  Hello,\r\nworld.\n\n  second paragraph  \n', a]]);
    assert.equal(docs[0].bytes, await totalBytes([a])); // blank b and c come after the last document
  });

  test('paragraphs: blank lines (with spaces, \\r\\n) separate; line numbers; no leading/trailing blank lines', async () => {
    const text = [
      '\r\n',
      '  \r\n',
      'First para line 1\r\n',
      'first para line 2 \r\n',
      '\r\n',
      ' \t \r\n',
      '\r\n',
      '  Second para (indented)\n',
      '\n',
      'Third\n',
      'para\n',
      '   \n',
      '\n',
    ].join('');
    const f = await put('txt/paras.txt', text);
    const docs = await readAll([f], { splitParagraphs: true });
    assert.deepEqual(
      docs.map((d) => [d.text, d.source]),
      [
        ['First para line 1\r\nfirst para line 2 ', `${f}:3`],
        ['  Second para (indented)', `${f}:8`],
        ['Third\npara', `${f}:10`],
      ],
    );
    assert.equal(docs.reduce((s, d) => s + d.bytes, 0), await totalBytes([f]));
  });

  test('paragraphs: last paragraph without final newline; whitespace-only paragraphs skipped', async () => {
    const f = await put('txt/last.txt', 'a\n \n   \n\n  \t\n\nb\nc');
    const docs = await readAll([f], { splitParagraphs: true });
    assert.deepEqual(docs.map((d) => [d.text, d.source]), [['a', `${f}:1`], ['b\nc', `${f}:7`]]);
  });

  test('paragraphs: every chunk size gives the same documents', async () => {
    const lines: string[] = [];
    for (let i = 0; i < 60; i++) {
      const sep = ['\n\n', '\r\n\r\n', '\n  \n\n', '\n', '\r\n', '\n\t\n'][i % 6];
      lines.push(`para ${i} ${'é東😀'.repeat(i % 4)} text${sep}`);
    }
    const f = await put('txt/chunks.txt', '\uFEFF' + lines.join(''));
    const ref = await readAll([f], { splitParagraphs: true });
    assert.ok(ref.length > 20);
    for (const chunkSize of [4, 5, 6, 7, 8, 11, 13, 64, 1000]) {
      const docs = await readAll([f], { splitParagraphs: true, chunkSize });
      assert.deepEqual(docs.map((d) => [d.text, d.source]), ref.map((d) => [d.text, d.source]), `chunkSize ${chunkSize}`);
      assert.equal(docs.reduce((s, d) => s + d.bytes, 0), await totalBytes([f]));
    }
  });

  test('a file too large to hold as one document is refused with advice, before it is read whole', async () => {
    assert.ok(MAX_DOCUMENT_CHARS >= 500 * 2 ** 20 && MAX_DOCUMENT_CHARS < 2 ** 29 - 24, 'the real limit lies below V8\'s longest string');
    const f = await put('txt/huge.txt', 'word '.repeat(40)); // 200 characters
    await rejectsWith(() => readAll([f], { maxDocumentChars: 150, chunkSize: 16 }), `${f} is one document of more than 150 characters`, 'cannot hold as one string', '--split-paragraphs', 'split the file');
    assert.equal((await readAll([f], { maxDocumentChars: 200 }))[0].text, 'word '.repeat(40), 'up to the limit is fine');
    assert.equal((await readAll([f], { maxDocumentChars: 150, splitParagraphs: true })).length, 1, 'paragraphs are not one file-sized document');
  });

  test('a multi-byte character split across chunk boundaries decodes intact', async () => {
    const text = 'aé東😀b'.repeat(50); // 1, 2, 3 and 4-byte characters
    const f = await put('txt/multibyte.txt', text);
    for (const chunkSize of [4, 5, 6, 7, 9, 10]) {
      const docs = await readAll([f], { chunkSize });
      assert.equal(docs.length, 1);
      assert.equal(docs[0].text, text, `chunkSize ${chunkSize}`);
    }
  });

  test('paragraph mode streams long paragraphs and lines in small chunks', async (t) => {
    // The time is reported, not asserted (it depends on the machine's load): a quadratic rescan of
    // the 2 MB line shows up as seconds here instead of milliseconds.
    const long = 'word '.repeat(400_000); // one 2 MB line
    const f = await put('txt/longline.txt', `${long}\n\nshort\n`);
    const t0 = performance.now();
    const docs = await readAll([f], { splitParagraphs: true, chunkSize: 4096 });
    t.diagnostic(`2 MB line in 4 KB chunks: ${(performance.now() - t0).toFixed(0)} ms`);
    assert.deepEqual(docs.map((d) => d.text.length), [long.length, 5]);
    assert.equal(docs[0].text, long);
  });
});

describe('.jsonl', () => {
  test('one object per line; blank lines skipped; \\r\\n; sources name the line', async () => {
    const f = await put('jsonl/a.jsonl', '\uFEFF{"text": "first", "id": 1}\r\n\r\n{"id": 2, "text": "  second\\nline "}\n   \n{"text": "   "}\n{"text": "last"}');
    const docs = await readAll([f]);
    assert.deepEqual(docs.map((d) => [d.text, d.source]), [['first', `${f}:1`], ['  second\nline ', `${f}:3`], ['last', `${f}:6`]]);
    assert.equal(docs.reduce((s, d) => s + d.bytes, 0), await totalBytes([f]));
    for (const chunkSize of [4, 7, 16]) {
      const small = await readAll([f], { chunkSize });
      assert.deepEqual(small.map((d) => [d.text, d.source]), docs.map((d) => [d.text, d.source]));
    }
  });

  test('a null text is skipped and counted, with one note per file, as in tables', async () => {
    const f = await put('jsonl/null.jsonl', '{"text": "a"}\n{"text": null}\n{"text": "b"}\n{"text": null, "id": 4}\n');
    const notes: string[] = [];
    for (const chunkSize of [5, 1 << 20]) {
      notes.length = 0;
      const docs = await readAll([f], { chunkSize, log: (line) => notes.push(line) });
      assert.deepEqual(docs.map((d) => [d.text, d.source]), [['a', `${f}:1`], ['b', `${f}:3`]]);
      assert.deepEqual(notes, [`note: ${f}: 2 row(s) with no text ("text" null or empty) were skipped`]);
      assert.equal(docs.reduce((s, d) => s + d.bytes, 0), (await totalBytes([f])) - Buffer.byteLength('{"text": null, "id": 4}\n'), 'bytes after the last document are not credited');
    }
    assert.equal((await readAll([f])).length, 2, 'without a log the rows are skipped all the same');
  });

  test('textField picks another field', async () => {
    const f = await put('jsonl/b.jsonl', '{"content": "x", "text": 3}\n');
    assert.deepEqual((await readAll([f], { textField: 'content' })).map((d) => d.text), ['x']);
  });

  test('errors: invalid JSON, missing field (lists fields), non-string non-null field, non-object line', async () => {
    const bad = await put('jsonl/bad.jsonl', '{"text": "ok"}\n\n{"text": "oops"\n');
    await rejectsWith(() => readAll([bad]), `${bad}:3`, 'invalid JSON');
    const missing = await put('jsonl/missing.jsonl', '{"text": "ok"}\n{"body": "x", "title": "y"}\n');
    await rejectsWith(() => readAll([missing]), `${missing}:2`, 'no field "text"', 'body, title', '--text-field');
    const num = await put('jsonl/num.jsonl', '{"text": 42}\n');
    await rejectsWith(() => readAll([num]), `${num}:1`, '"text" is a number, not a string');
    const obj = await put('jsonl/obj.jsonl', '{"text": "a"}\n\n{"text": {"en": "b"}}\n');
    await rejectsWith(() => readAll([obj]), `${obj}:3`, '"text" is an object, not a string');
    const arr = await put('jsonl/arr.jsonl', '["text"]\n');
    await rejectsWith(() => readAll([arr]), `${arr}:1`, 'expected a JSON object, got an array');
  });
});

describe('tables', () => {
  test('.csv: quoted fields, numbers kept as text, null and blank cells skipped, row sources', async () => {
    const f = await put('tables/a.csv', '\uFEFFid,text\r\n1,"Hello, ""world""\nsecond line"\r\n2,\r\n3,   \r\n4,0123\r\n5,plain\r\n');
    const notes: string[] = [];
    const docs = await readAll([f], { log: (line) => notes.push(line) });
    assert.deepEqual(notes, [`note: ${f}: 1 row(s) with no text ("text" null or empty) were skipped`], 'the empty cell; the blank one is blank text');
    assert.deepEqual(
      docs.map((d) => [d.text, d.source]),
      [
        ['Hello, "world"\nsecond line', `${f}#row 1`],
        ['0123', `${f}#row 4`],
        ['plain', `${f}#row 5`],
      ],
    );
    assert.equal(docs.reduce((s, d) => s + d.bytes, 0), await totalBytes([f]));
    // Small chunks give the same table.
    assert.deepEqual((await readAll([f], { chunkSize: 5 })).map((d) => d.text), docs.map((d) => d.text));
  });

  test('.csv: a quote inside an unquoted field is an ordinary character; later quoted fields with line breaks stay whole at every chunk size', async () => {
    // arquero parsing the whole text at once is the reference.
    // (3,000 rows: with the old quote-parity rule, arquero lost the second line of a few of them.)
    const rows = ['1,a 5" screen', ...Array.from({ length: 3000 }, (_, i) => `${i + 2},"line one of ${i + 2}\nline ""two"" of ${i + 2}"`), '9999,b "quoted" in the middle'];
    const text = `id,text\n${rows.join('\n')}\n`;
    const f = await put('tables/stray.csv', text);
    const want = (fromCSV(text, { autoType: false }).array('text') as string[]);
    assert.equal(want[1], 'line one of 2\nline "two" of 2');
    for (const chunkSize of [61, 1000, 1 << 20]) {
      assert.deepEqual((await readAll([f], { chunkSize })).map((d) => d.text), want, `chunkSize ${chunkSize}`);
    }
  });

  test('a row with more fields than the header is refused with its file and line, not cut short', async () => {
    // A quoted start closes at the second quote; arquero would keep "Stop!" and drop the rest.
    const tsv = await put('tables/extra.tsv', 'id\ttext\n0\tfine\n1\t"Stop!" she said, and left.\n');
    await rejectsWith(() => readAll([tsv]), `${tsv}, line 3: 3 fields where the header has 2`, 'would be lost', 'a tab', '.jsonl');
    const csv = await put('tables/extra.csv', 'id,text\r\n1,"two\r\nlines"\r\n2,a, b and c\r\n');
    for (const chunkSize of [5, 1 << 20]) {
      await rejectsWith(() => readAll([csv], { chunkSize }), `${csv}, line 4: 3 fields where the header has 2`, 'a comma');
    }
    // The last row, without a final line break, is checked too.
    const last = await put('tables/extra-last.csv', 'id,text\n1,a\n2,b,c');
    await rejectsWith(() => readAll([last]), `${last}, line 3: 3 fields`);
    // Fewer fields than the header lose nothing: the missing cells are empty.
    const fewer = await put('tables/fewer.csv', 'text,id\nalone\nboth,2\n');
    assert.deepEqual((await readAll([fewer])).map((d) => d.text), ['alone', 'both']);
  });

  test('a quoted field left open at the end of the file is refused, naming the line where it opened', async () => {
    const f = await put('tables/open.csv', 'id,text\n1,fine\n2,"never closed\n3,c\n4,d\n');
    for (const chunkSize of [4, 1 << 20]) await rejectsWith(() => readAll([f], { chunkSize }), f, 'opened on line 3 is never closed');
    // A closing quote as the very last character closes it.
    const closed = await put('tables/closed.csv', 'id,text\n1,"a\nb"');
    assert.deepEqual((await readAll([closed])).map((d) => d.text), ['a\nb']);
  });

  test('a header naming the text column twice is refused', async () => {
    const f = await put('tables/twice.csv', 'text,id,text\nA,1,B\n');
    await rejectsWith(() => readAll([f]), f, 'names 2 columns "text"', '--text-field');
    assert.deepEqual((await readAll([f], { textField: 'id' })).map((d) => d.text), ['1'], 'another column is read');
  });

  test('well-formed CSV and TSV read as arquero reads the whole text, at every chunk size (fuzzed)', async () => {
    const rng = new Rng(7);
    const pick = <T>(a: T[]) => a[rng.int(a.length)];
    for (const [ext, delim] of [['csv', ','], ['tsv', '\t']] as const) {
      for (let trial = 0; trial < 6; trial++) {
        const eol = pick(['\n', '\r\n', '\r']);
        const cell = () => {
          const parts = Array.from({ length: rng.int(4) }, () => pick(['a', 'b c', 'é東😀', ',', '\t', '"', '""', '\n', '\r\n', ' 5" x', '']));
          const raw = parts.join('');
          // Quote whatever needs it (and some cells that do not).
          return /[",\t\r\n]/.test(raw) || rng.int(3) === 0 ? `"${raw.replace(/"/g, '""')}"` : raw;
        };
        const rows = Array.from({ length: 40 + rng.int(40) }, () => [cell(), cell(), cell()].slice(0, 1 + rng.int(3)).join(delim));
        const text = `text${delim}x${delim}y${eol}${rows.join(eol)}${rng.int(2) ? eol : ''}`;
        const f = await put(`tables/fuzz-${trial}.${ext}`, text);
        const want = (fromCSV(text, { autoType: false, delimiter: delim }).array('text') as (string | null)[]).filter((v) => v !== null && /\S/.test(v));
        for (const chunkSize of [4, 7, 33, 1 << 20]) {
          assert.deepEqual((await readAll([f], { chunkSize })).map((d) => d.text), want, `${ext} trial ${trial} chunkSize ${chunkSize}`);
        }
      }
    }
  });

  test('.tsv with another text column; missing column lists the columns', async () => {
    const f = await put('tables/b.tsv', 'title\tbody\nA\tfirst body\nB\tsecond body\n');
    assert.deepEqual((await readAll([f], { textField: 'body' })).map((d) => [d.text, d.source]), [['first body', `${f}#row 1`], ['second body', `${f}#row 2`]]);
    await rejectsWith(() => readAll([f]), f, 'no column "text"', 'title, body', '--text-field');
  });

  test('an empty .csv has no documents', async () => {
    const f = await put('tables/empty.csv', '');
    assert.deepEqual(await readAll([f]), []);
  });

  test('.arrow in file and stream formats, dictionary-encoded or plain, nulls skipped', async () => {
    const t = table({ id: [1, 2, 3, 4], text: ['alpha', null, ' ', 'gamma ✓'] });
    for (const format of ['file', 'stream'] as const) {
      const f = await put(`tables/t-${format}.arrow`, toArrowIPC(t, { format }));
      const notes: string[] = [];
      const docs = await readAll([f], { log: (line) => notes.push(line) });
      assert.deepEqual(docs.map((d) => [d.text, d.source]), [['alpha', `${f}#row 1`], ['gamma ✓', `${f}#row 4`]], format);
      assert.deepEqual(notes, [`note: ${f}: 1 row(s) with no text ("text" null or empty) were skipped`]);
      assert.equal(docs.reduce((s, d) => s + d.bytes, 0), await totalBytes([f]));
      await rejectsWith(() => readAll([f], { textField: 'body' }), f, 'no column "body"', 'id, text');
      await rejectsWith(() => readAll([f], { textField: 'id' }), `${f}#row 1`, 'column "id"', 'not text');
    }
  });

  test('a broken .arrow file is an InputError naming it', async () => {
    const f = await put('tables/broken.arrow', new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]));
    await rejectsWith(() => readAll([f]), f, 'not a readable Arrow IPC file');
  });

  test('.parquet with several row groups, nulls skipped, rows numbered over the file', async (t) => {
    const pq = await loadParquetWasm();
    if (!pq) return t.skip('parquet-wasm is not installed');
    const tab = table({ text: ['r1', null, 'r3', '  ', 'r5', 'r6', 'r7'], n: [1, 2, 3, 4, 5, 6, 7] });
    const props = new pq.WriterPropertiesBuilder().setMaxRowGroupSize(3).build();
    const f = await put('tables/t.parquet', pq.writeParquet(pq.Table.fromIPCStream(toArrowIPC(tab, { format: 'stream' })), props));
    const notes: string[] = [];
    const docs = await readAll([f], { log: (line) => notes.push(line) });
    assert.deepEqual(
      docs.map((d) => [d.text, d.source]),
      [['r1', `${f}#row 1`], ['r3', `${f}#row 3`], ['r5', `${f}#row 5`], ['r6', `${f}#row 6`], ['r7', `${f}#row 7`]],
    );
    assert.deepEqual(notes, [`note: ${f}: 1 row(s) with no text ("text" null or empty) were skipped`], 'one note over all row groups');
    assert.equal(docs.reduce((s, d) => s + d.bytes, 0), await totalBytes([f]));
    await rejectsWith(() => readAll([f], { textField: 'body' }), f, 'no column "body"', 'text, n');
    await rejectsWith(() => readAll([f], { textField: 'n' }), `${f}#row 1`, 'not text');
  });

  test('a broken .parquet file is an InputError naming it', async (t) => {
    if (!(await loadParquetWasm())) return t.skip('parquet-wasm is not installed');
    const f = await put('tables/broken.parquet', 'not parquet at all');
    await rejectsWith(() => readAll([f]), f, 'not a readable Parquet file');
  });
});

describe('mixed corpora', () => {
  test('folders mixing every format read in path order; bytes sum to the total size', async () => {
    await put('mixed/1.txt', 'one\n\ntwo\n');
    await put('mixed/2.jsonl', '{"text":"three"}\n{"text":"four"}\n');
    await put('mixed/3.csv', 'text\nfive\n');
    await put('mixed/4.tsv', 'text\nsix\n');
    await put('mixed/5.arrow', toArrowIPC(table({ text: ['seven'] }), { format: 'file' }));
    const pq = await loadParquetWasm();
    if (pq) await put('mixed/6.parquet', pq.writeParquet(pq.Table.fromIPCStream(toArrowIPC(table({ text: ['eight'] })))));
    const files = await resolveCorpusFiles([path.join(dir, 'mixed')]);
    const docs = await readAll(files, { splitParagraphs: true });
    const expected = ['one', 'two', 'three', 'four', 'five', 'six', 'seven'].concat(pq ? ['eight'] : []);
    assert.deepEqual(docs.map((d) => d.text), expected);
    assert.equal(docs.reduce((s, d) => s + d.bytes, 0), await totalBytes(files));
    assert.ok(docs.every((d) => d.bytes >= 0));
  });

  test('breaking out of the loop early closes the files', async (t) => {
    const fdDir = '/proc/self/fd';
    if (!(await fs.stat(fdDir).catch(() => null))) return t.skip('needs /proc/self/fd');
    const f = await put('early/a.txt', 'a\n\nb\n\nc\n');
    const j = await put('early/b.jsonl', '{"text":"x"}\n{"text":"y"}\n');
    const before = (await fs.readdir(fdDir)).length;
    for (const files of [[f, f], [j, f]]) {
      for await (const d of readDocuments(files, { splitParagraphs: true, chunkSize: 4 })) {
        assert.ok(d.text === 'a' || d.text === 'x');
        break;
      }
    }
    await assert.rejects(async () => {
      for await (const _ of readDocuments([f], { splitParagraphs: true })) throw new Error('stop');
    }, /stop/);
    assert.equal((await fs.readdir(fdDir)).length, before);
  });

  test('a file that vanished after resolution is an InputError', async () => {
    await rejectsWith(() => readAll([path.join(dir, 'gone.txt')]), 'gone.txt', 'cannot read corpus file');
  });
});

describe('bad input', () => {
  test('a NUL byte in the first 8 KB: looks binary, with the offset', async () => {
    const f = await put('bad/bin.txt', Buffer.concat([Buffer.from('abc'), Buffer.from([0, 1, 2])]));
    await rejectsWith(() => readAll([f]), f, 'looks binary', 'offset 3', 'UTF-8 text');
    const c = await put('bad/bin.csv', Buffer.concat([Buffer.from('text\nx'), Buffer.from([0])]));
    await rejectsWith(() => readAll([c]), c, 'looks binary', 'offset 6');
  });

  test('a file starting with a UTF-16 byte order mark is named UTF-16, with advice to convert it', async () => {
    for (const [name, bytes] of [['le', Buffer.from('\uFEFFhello\n', 'utf16le')], ['be', Buffer.from('\uFEFFhello\n', 'utf16le').swap16()]] as const) {
      const f = await put(`bad/utf16-${name}.txt`, bytes);
      await rejectsWith(() => readAll([f]), `${f} is UTF-16 text`, 'must be UTF-8', 'convert it');
      await rejectsWith(() => readAll([f], { onInvalidUtf8: 'replace' }), `${f} is UTF-16 text`);
    }
  });

  test('a NUL byte later in streamed text (after many chunks)', async () => {
    const head = '{"text":"fine"}\n'.repeat(2000);
    const f = await put('bad/late.jsonl', Buffer.concat([Buffer.from(head), Buffer.from([0])]));
    await rejectsWith(() => readAll([f], { chunkSize: 4096 }), f, 'looks binary', `offset ${head.length}`);
  });

  test('invalid UTF-8: file, byte offset and line; suggests --on-invalid-utf8 replace', async () => {
    const bytes = Buffer.concat([Buffer.from('line one\nline twö\nbad '), Buffer.from([0xc3, 0x28]), Buffer.from(' here\n')]);
    const offset = Buffer.byteLength('line one\nline twö\nbad ');
    const f = await put('bad/latin.txt', bytes);
    for (const chunkSize of [4, 5, 1 << 20]) {
      await rejectsWith(() => readAll([f], { chunkSize }), f, `byte offset ${offset}`, 'line 3', '--on-invalid-utf8 replace');
      await rejectsWith(() => readAll([f], { chunkSize, splitParagraphs: true }), f, `byte offset ${offset}`, 'line 3');
    }
    const j = await put('bad/latin.jsonl', Buffer.concat([Buffer.from('{"text":"ok"}\n{"text":"caf'), Buffer.from([0xe9]), Buffer.from('"}\n')]));
    await rejectsWith(() => readAll([j]), j, 'byte offset 26', 'line 2');
  });

  test('invalid UTF-8 across a chunk boundary, and a sequence cut off by the end of the file', async () => {
    // A 3-byte lead with only one continuation byte, then ASCII; chunk boundary inside it.
    const f = await put('bad/split.txt', Buffer.concat([Buffer.from('abc'), Buffer.from([0xe6, 0x9d]), Buffer.from('xyz')]));
    for (const chunkSize of [4, 5, 6]) await rejectsWith(() => readAll([f], { chunkSize }), f, 'byte offset 3', 'line 1');
    const g = await put('bad/cut.txt', Buffer.concat([Buffer.from('ok\n'), Buffer.from([0xf0, 0x9f, 0x98])]));
    for (const chunkSize of [4, 1024]) await rejectsWith(() => readAll([g], { chunkSize }), g, 'byte offset 3', 'line 2');
  });

  test("'replace' substitutes U+FFFD; a real U+FFFD in the file is not an error", async () => {
    const f = await put('bad/replace.txt', Buffer.concat([Buffer.from('a'), Buffer.from([0xff]), Buffer.from('b\n\nc'), Buffer.from([0xe6, 0x9d])]));
    const docs = await readAll([f], { onInvalidUtf8: 'replace', splitParagraphs: true, chunkSize: 4 });
    assert.deepEqual(docs.map((d) => d.text), ['a\uFFFDb', 'c\uFFFD']);
    const real = await put('bad/real-fffd.txt', 'keep \uFFFD this');
    assert.deepEqual((await readAll([real], { chunkSize: 5 })).map((d) => d.text), ['keep \uFFFD this']);
  });

  test('firstInvalidUtf8 follows the WHATWG decoder', () => {
    const check = (bytes: number[], atEnd: boolean, want: number) => assert.equal(firstInvalidUtf8(Uint8Array.from(bytes), atEnd), want, bytes.join(' '));
    check([0x61, 0xe2, 0x82, 0xac], true, -1); // €
    check([0xc0, 0x80], true, 0); // overlong
    check([0xe0, 0x80, 0x80], true, 0); // overlong
    check([0xed, 0xa0, 0x80], true, 0); // surrogate
    check([0xf4, 0x90, 0x80, 0x80], true, 0); // > U+10FFFF
    check([0x61, 0x80], true, 1); // stray continuation
    check([0x61, 0xf0, 0x9f], false, -1); // cut off, more may come
    check([0x61, 0xf0, 0x9f], true, 1); // cut off at the end
  });

  test('bad options are InputErrors', () => {
    assert.throws(() => readDocuments([], { onInvalidUtf8: 'ignore' as never }), InputError);
    assert.throws(() => readDocuments([], { textField: '' }), InputError);
  });
});

describe('requireNonEmpty', () => {
  test('passes documents through; throws for an empty corpus', async () => {
    const a = await put('empty/a.txt', '  \n');
    const b = await put('empty/b.jsonl', '\n{"text": ""}\n');
    await rejectsWith(async () => {
      for await (const _ of requireNonEmpty(readDocuments([a, b]), [a, b])) void _;
    }, 'corpus is empty', a, b);
    const c = await put('empty/c.txt', 'x');
    const got: string[] = [];
    for await (const d of requireNonEmpty(readDocuments([a, c]), [a, c])) got.push(d.text);
    assert.deepEqual(got, ['x']);
  });
});

describe('chooseValidation', () => {
  test('exact counts: round(n * fraction), at least 1, never all', () => {
    const cases: [number, number, number][] = [
      [1000, 0.05, 50],
      [1001, 0.05, 50],
      [10, 0.25, 3], // round(2.5) = 3
      [100, 0.001, 1], // at least one
      [2, 0.5, 1],
      [2, 0.9, 1], // never all
      [1, 0.5, 0], // a single document cannot be split
      [0, 0.5, 0],
      [1000, 0, 0],
    ];
    for (const [n, fraction, k] of cases) {
      const v = chooseValidation(n, fraction, 42);
      assert.equal(v.size, k, `n=${n} fraction=${fraction}`);
      let count = 0;
      for (let i = 0; i < n; i++) if (v.has(i)) count++;
      assert.equal(count, k);
      assert.ok(!v.has(-1) && !v.has(n));
    }
  });

  test('deterministic per seed; another seed chooses differently; roughly uniform', () => {
    const a = chooseValidation(10_000, 0.1, 7);
    const b = chooseValidation(10_000, 0.1, 7);
    const c = chooseValidation(10_000, 0.1, 8);
    assert.deepEqual([...a.indices], [...b.indices]);
    assert.notDeepEqual([...a.indices], [...c.indices]);
    for (let i = 1; i < a.indices.length; i++) assert.ok(a.indices[i] > a.indices[i - 1]);
    const mean = a.indices.reduce((s, x) => s + x, 0) / a.size;
    assert.ok(Math.abs(mean - 5000) < 300, `mean index ${mean}`);
    const firstHalf = a.indices.filter((x) => x < 5000).length;
    assert.ok(Math.abs(firstHalf - 500) < 80, `first half holds ${firstHalf}`);
  });

  test('memory is O(validation count)', () => {
    const before = process.memoryUsage();
    const v = chooseValidation(20_000_000, 0.001, 1);
    const after = process.memoryUsage();
    assert.equal(v.size, 20_000);
    assert.equal(v.indices.byteLength, 80_000);
    const grown = after.heapUsed + after.arrayBuffers - (before.heapUsed + before.arrayBuffers);
    assert.ok(grown < 8e6, `grew ${grown} bytes`);
  });

  test('bad fractions are InputErrors', () => {
    assert.throws(() => chooseValidation(10, 1, 0), InputError);
    assert.throws(() => chooseValidation(10, -0.1, 0), InputError);
    assert.throws(() => chooseValidation(10, Number.NaN, 0), InputError);
  });
});
