// Corpus readers for `mlm prepare` and `mlm tokenizer train` (docs/architecture.md, "The data path").
//
// What it implements:
// - resolveCorpusFiles: files, folders (recursive) and globs -> a sorted, de-duplicated file list.
// - readDocuments: documents streamed from .txt (one per file, or one per blank-line-separated
//   paragraph), .jsonl (one JSON object per line) and tables (.csv, .tsv, .parquet, .arrow).
// - requireNonEmpty: the "corpus is empty" check, for callers that want it.
// - chooseValidation: an exact, seeded, document-level train/validation split.
//
// Text files are read in large chunks (1 MiB, two buffers alternating so that the next read
// overlaps parsing) and decoded by a streaming TextDecoder in 32 KiB slices (small strings die
// young in V8; chunk-sized ones would pile up in the large-object space until a full GC). So a
// multi-gigabyte .txt or .jsonl file is read with flat memory: only the document being built is
// held. UTF-8 validity is checked without the slower `fatal` decoder: the lenient decoder
// substitutes U+FFFD for every malformed sequence, so a slice whose text has no U+FFFD was valid;
// only when one shows up is the first bad byte located by a small validator (a U+FFFD really
// present in the file is then found valid, and reading goes on).
//
// Tables go through arquero: CSV/TSV via `fromCSVStream` fed by the same checked decoder (cut at
// record boundaries, as arquero 8.0.3 garbles quoted fields split across stream chunks), Arrow
// IPC via `fromArrow`, and Parquet via the `parquet-wasm` package (arquero 8 has no Parquet
// reader of its own), one row group at a time, reading only the text column, handed to
// `fromArrow` as Arrow IPC. Tables are held one at a time (Parquet: one row group at a time).
// CSV and TSV cells are kept as the strings in the file (no type inference), and TSV follows
// the same quoting rules as CSV. Strings inside Arrow and Parquet files are decoded by arquero
// (lenient), so the invalid-UTF-8 policy applies to the text formats and CSV/TSV only.
//
// Byte accounting (CorpusDocument.bytes, for MB/s progress): each document is credited with the
// input consumed since the previous document, interpolated within a chunk by character position
// (tables: the file size spread evenly over rows). Bytes of skipped blank documents and of
// files with no documents roll into the next document, so the sum over a full read equals
// totalBytes(files), except for whatever follows the last document of the whole corpus (trailing
// blank text, empty files at the end). Progress bars should finish on totalBytes.

import { constants as bufferConstants } from 'node:buffer';
import { openAsBlob, type Dirent } from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { fromArrow, fromCSVStream } from 'arquero';
import { InputError, check, firstNames } from '../common/errors.ts';
import { Rng } from '../common/rng.ts';

export type InvalidUtf8Policy = 'error' | 'replace';

export interface CorpusOptions {
  /** .txt: one document per blank-line-separated paragraph (default: one document per file). */
  splitParagraphs?: boolean;
  /** .jsonl/.csv/.tsv/.parquet/.arrow: the field or column holding the text (default 'text'). */
  textField?: string;
  /** What to do with bytes that are not UTF-8 (default 'error'). */
  onInvalidUtf8?: InvalidUtf8Policy;
  /** Bytes per read of a text file (default 1 MiB). Small values are for tests. */
  chunkSize?: number;
  /** Characters a whole .txt file may hold as one document (default MAX_DOCUMENT_CHARS). Small values are for tests. */
  maxDocumentChars?: number;
  /** Notes (stderr in the CLI): one per file with rows whose text is null, which are skipped. */
  log?: (line: string) => void;
}

/** The options of how raw text is read that every command reading it takes (scripts/commands/text-options.ts). */
export type RawTextOptions = Pick<CorpusOptions, 'splitParagraphs' | 'textField' | 'onInvalidUtf8'>;

type ReadOptions = Required<Omit<CorpusOptions, 'log'>> & Pick<CorpusOptions, 'log'>;

export interface CorpusDocument {
  /** The text exactly as in the file (a paragraph excludes its final line break). */
  text: string;
  /** Where it came from: "a.txt", "a.txt:17" (paragraph's first line), "b.jsonl:17", "t.csv#row 5". */
  source: string;
  /** Input bytes consumed since the previous document (see the header comment). */
  bytes: number;
}

/** File kinds and the extensions (lower case) that select them. */
type FileKind = 'txt' | 'jsonl' | 'csv' | 'tsv' | 'parquet' | 'arrow';
const KIND_BY_EXTENSION: Record<string, FileKind> = {
  '.txt': 'txt',
  '.text': 'txt',
  '.jsonl': 'jsonl',
  '.ndjson': 'jsonl',
  '.csv': 'csv',
  '.tsv': 'tsv',
  '.parquet': 'parquet',
  '.arrow': 'arrow',
  '.feather': 'arrow', // Feather v2 is the Arrow IPC file format
};

/**
 * Extensions read as corpus files (matched case-insensitively). `.text` is plain text, `.ndjson`
 * is JSON Lines, `.feather` is Arrow IPC. `.md` is deliberately not included: folders of data
 * often hold a README.md that is not corpus text; rename or list such files as .txt to use them.
 */
export const SUPPORTED_EXTENSIONS: string[] = Object.keys(KIND_BY_EXTENSION);

const SUPPORTED_LIST = SUPPORTED_EXTENSIONS.join(', ');
const DEFAULT_CHUNK = 1 << 20;
/** Bytes decoded into one string: at most 64 KB even as UTF-16, below V8's large-object size. */
const DECODE_SLICE = 32 << 10;
/**
 * The most characters (UTF-16 code units) of one .txt file read as one document: 500 MiB,
 * safely below V8's longest string (2^29 - 24 code units in Node 20 to 24), where joining the
 * file would fail with a bare "Invalid string length". A UTF-8 file has at least as many bytes
 * as code units, so a file refused holds more than 500 MiB.
 */
export const MAX_DOCUMENT_CHARS = Math.min(500 << 20, bufferConstants.MAX_STRING_LENGTH - (8 << 20));

function kindOf(file: string): FileKind | undefined {
  return KIND_BY_EXTENSION[path.extname(file).toLowerCase()];
}

/** Whether `file` is read as plain text (.txt, .text): one document per file unless split into paragraphs. */
export function isPlainTextFile(file: string): boolean {
  return kindOf(file) === 'txt';
}

// ---------------------------------------------------------------------------------------------
// Resolving files, folders and globs
// ---------------------------------------------------------------------------------------------

const GLOB_MAGIC = /[*?[]/;

/**
 * Expands files, folders (recursive, only supported extensions, hidden entries skipped) and globs
 * (`*`, `**`, `?`, `[...]`, `[!...]`) into a sorted (by code unit) list of files, each real file
 * once (the first spelling met is kept).
 * A path that exists is taken literally even if it holds glob characters. A folder matched by a
 * glob is expanded like a folder argument; files matched by a glob are kept only if their
 * extension is supported. Glob wildcards do not match names starting with '.' unless the pattern
 * segment itself starts with '.'. Throws InputError for a missing path, a glob matching no
 * supported file, a folder with no supported file, or a named file with an unsupported extension.
 */
export async function resolveCorpusFiles(patterns: string[], log?: (line: string) => void): Promise<string[]> {
  check(patterns.length > 0, 'no corpus given: pass one or more files, folders or globs with --corpus');
  const byResolved = new Map<string, string>();
  for (const pattern of patterns) {
    const skipped: string[] = [];
    for (const file of await expandPattern(pattern, skipped)) {
      // The same file reached twice (other spelling, symlink) is read once.
      const key = await fsp.realpath(file).catch(() => path.resolve(file));
      if (!byResolved.has(key)) byResolved.set(key, file);
    }
    // A folder of PDFs or Word files beside the text would otherwise vanish from the corpus unsaid.
    if (skipped.length > 0 && log) {
      log(`note: left out of the corpus from ${pattern}: ${skipped.length} file(s) of other types (${firstNames(skipped)}); corpus files are ${SUPPORTED_LIST}: convert the others to one of these to use them`);
    }
  }
  return [...byResolved.values()].sort(byCodeUnits);
}

function byCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

async function statOrNull(p: string) {
  try {
    return await fsp.stat(p);
  } catch {
    return null;
  }
}

/** The corpus files `pattern` names; files of other types met in its folders go to `skipped`. */
async function expandPattern(pattern: string, skipped: string[]): Promise<string[]> {
  check(pattern.trim() !== '', 'empty corpus path: pass a file, folder or glob');
  const st = await statOrNull(pattern);
  if (st?.isFile()) {
    const ext = path.extname(pattern);
    check(
      kindOf(pattern) !== undefined,
      `${pattern}: unsupported corpus file type '${ext || '(no extension)'}'; supported: ${SUPPORTED_LIST}`,
    );
    return [pattern];
  }
  if (st?.isDirectory()) {
    const files = await walkFolder(pattern, skipped);
    check(files.length > 0, `folder ${pattern} holds no corpus file (looked for ${SUPPORTED_LIST}, hidden files skipped)`);
    return files;
  }
  if (st) throw new InputError(`corpus path ${pattern} is neither a file nor a folder`);
  if (!GLOB_MAGIC.test(pattern)) {
    throw new InputError(`corpus path not found: ${pattern} (check the path; folders and globs such as 'data/**/*.jsonl' are also accepted)`);
  }
  const matched = await expandGlob(pattern);
  const files: string[] = [];
  for (const m of matched) {
    if (m.dir) files.push(...(await walkFolder(m.path, skipped)));
    else if (kindOf(m.path)) files.push(m.path);
    else skipped.push(m.path);
  }
  if (files.length === 0) {
    if (matched.length === 0) throw new InputError(`corpus glob matched nothing: ${pattern} (check the pattern; quote it so the shell does not expand it)`);
    throw new InputError(`corpus glob ${pattern} matched ${matched.length} path(s) but no corpus file; supported: ${SUPPORTED_LIST}`);
  }
  return files;
}

/**
 * All supported files under a folder, recursively, hidden entries skipped, symlink loops cut;
 * regular files of other types go to `skipped`.
 */
async function walkFolder(root: string, skipped: string[]): Promise<string[]> {
  const out: string[] = [];
  const seen = new Set<string>();
  const visit = async (dir: string): Promise<void> => {
    const real = await fsp.realpath(dir);
    if (seen.has(real)) return;
    seen.add(real);
    let entries: Dirent[];
    try {
      entries = await fsp.readdir(dir, { withFileTypes: true });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EACCES' && code !== 'EPERM') throw err;
      throw new InputError(`cannot list corpus folder ${dir} (${code}); make it readable, or leave it out of the corpus`);
    }
    for (const e of entries) {
      if (e.name.startsWith('.')) continue;
      const p = path.join(dir, e.name);
      let isDir = e.isDirectory();
      let isFile = e.isFile();
      if (e.isSymbolicLink()) {
        const st = await statOrNull(p);
        isDir = !!st?.isDirectory();
        isFile = !!st?.isFile();
      }
      if (isDir) await visit(p);
      else if (isFile) (kindOf(p) ? out : skipped).push(p);
    }
  };
  await visit(root);
  skipped.sort(byCodeUnits);
  return out.sort(byCodeUnits);
}

/** Converts one path segment of a glob into an anchored regular expression. */
function segmentRegExp(seg: string): RegExp {
  let re = '';
  for (let i = 0; i < seg.length; i++) {
    const c = seg[i];
    if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[') {
      // A ']' right after '[' (or '[!') is literal, as in shells.
      let j = i + 1;
      if (seg[j] === '!' || seg[j] === '^') j++;
      const close = seg.indexOf(']', j + 1);
      if (close < 0) {
        re += '\\[';
        continue;
      }
      let body = seg.slice(i + 1, close);
      let negate = false;
      if (body[0] === '!' || body[0] === '^') {
        negate = true;
        body = body.slice(1);
      }
      re += `[${negate ? '^' : ''}${body.replace(/[\\\]^[]/g, '\\$&')}]`;
      i = close;
    } else re += c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

interface GlobMatch {
  path: string;
  dir: boolean;
}

/** Matches a glob segment by segment from its literal base folder. */
async function expandGlob(pattern: string): Promise<GlobMatch[]> {
  const absolute = pattern.startsWith('/');
  const segs = pattern.split('/').filter((s) => s !== '');
  const first = segs.findIndex((s) => GLOB_MAGIC.test(s));
  if (first < 0) return []; // callers only pass patterns with glob characters
  const base = segs.slice(0, first).join('/');
  const start = absolute ? '/' + base : base === '' ? '.' : base;
  const out: GlobMatch[] = [];
  const join = (dir: string, name: string) => (dir === '.' && !base ? name : path.join(dir, name));
  const starSeen = new Set<string>();

  const match = async (dir: string, i: number): Promise<void> => {
    const seg = segs[i];
    const last = i === segs.length - 1;
    if (seg === '**') {
      // Each real folder is expanded once per '**' (symlink loops would never end otherwise).
      const key = `${i}:${await fsp.realpath(dir).catch(() => dir)}`;
      if (starSeen.has(key)) return;
      starSeen.add(key);
      // Zero folders...
      if (last) out.push({ path: dir, dir: true });
      else await match(dir, i + 1);
      // ...or one more (then '**' again).
      for (const e of await listDir(dir)) {
        if (!e.name.startsWith('.') && (await isDirectory(join(dir, e.name), e))) await match(join(dir, e.name), i);
      }
      return;
    }
    if (!GLOB_MAGIC.test(seg)) {
      const p = join(dir, seg);
      const st = await statOrNull(p);
      if (!st) return;
      if (last) out.push({ path: p, dir: st.isDirectory() });
      else if (st.isDirectory()) await match(p, i + 1);
      return;
    }
    const re = segmentRegExp(seg);
    const dotOk = seg.startsWith('.');
    for (const e of await listDir(dir)) {
      if ((e.name.startsWith('.') && !dotOk) || !re.test(e.name)) continue;
      const p = join(dir, e.name);
      const isDir = await isDirectory(p, e);
      if (last) out.push({ path: p, dir: isDir });
      else if (isDir) await match(p, i + 1);
    }
  };
  if ((await statOrNull(start))?.isDirectory()) await match(start, first);
  return out;
}

async function listDir(dir: string) {
  try {
    return await fsp.readdir(dir, { withFileTypes: true });
  } catch {
    return [];
  }
}

async function isDirectory(p: string, e: { isDirectory(): boolean; isSymbolicLink(): boolean }): Promise<boolean> {
  if (e.isDirectory()) return true;
  if (e.isSymbolicLink()) return !!(await statOrNull(p))?.isDirectory();
  return false;
}

/** Total input size in bytes (for progress bars). */
export async function totalBytes(files: string[]): Promise<number> {
  let total = 0;
  for (const f of files) total += (await fsp.stat(f)).size;
  return total;
}

// ---------------------------------------------------------------------------------------------
// Checked, streaming UTF-8 decoding
// ---------------------------------------------------------------------------------------------

interface TextChunk {
  text: string; // decoded text of this read (a multi-byte character split by the read is
  //               emitted with the chunk that completes it)
  bytes: number; // raw bytes of this read
}

/**
 * Reads a file in chunks and decodes it as UTF-8 (BOM dropped), checking for NUL bytes (binary
 * files) and for malformed UTF-8 according to the policy. Two buffers alternate so that the next
 * read is in flight while the current chunk is decoded and parsed.
 */
async function* decodeFile(file: string, policy: InvalidUtf8Policy, chunkSize: number): AsyncGenerator<TextChunk> {
  const fh = await openForReading(file);
  const bufs = [Buffer.allocUnsafe(chunkSize), Buffer.allocUnsafe(chunkSize)];
  let which = 0;
  let pending: Promise<{ bytesRead: number }> | null = fh.read(bufs[0], 0, chunkSize, null);
  try {
    const decoder = new TextDecoder('utf-8'); // lenient; drops a leading BOM
    let offset = 0; // file offset of the current chunk
    let tail: Uint8Array = new Uint8Array(0); // the last (up to 3) bytes decoded so far
    for (;;) {
      const { bytesRead } = await pending;
      pending = null;
      if (bytesRead === 0) break;
      const bytes = bufs[which].subarray(0, bytesRead);
      which ^= 1;
      pending = fh.read(bufs[which], 0, chunkSize, null);
      // UTF-16 text is full of NUL bytes; its byte order mark tells it from a binary file.
      if (offset === 0 && bytesRead >= 2 && ((bytes[0] === 0xff && bytes[1] === 0xfe) || (bytes[0] === 0xfe && bytes[1] === 0xff))) {
        throw new InputError(`${file} is UTF-16 text (it starts with a UTF-16 byte order mark); corpora must be UTF-8: convert it, for example with iconv -f UTF-16 -t UTF-8`);
      }
      const nul = bytes.indexOf(0);
      if (nul >= 0) {
        throw new InputError(`${file} looks binary (NUL byte at offset ${offset + nul}); corpora must be UTF-8 text`);
      }
      // Decoded in slices so that each string stays small enough for V8's young generation:
      // a chunk-sized string would go to the large-object space, which only a full GC frees,
      // and the heap would swell with dead chunks between full GCs.
      for (let lo = 0; lo < bytesRead; lo += DECODE_SLICE) {
        const piece = bytes.subarray(lo, Math.min(bytesRead, lo + DECODE_SLICE));
        const text = decoder.decode(piece, { stream: true });
        if (policy === 'error' && text.includes('\uFFFD')) {
          // Malformed input, or a U+FFFD that is really in the file: tell them apart.
          const carried = incompleteTail(tail);
          const bad = firstInvalidUtf8(concatBytes(carried, piece), false);
          if (bad >= 0) await throwInvalidUtf8(file, offset - carried.length + bad);
        }
        tail = lastBytes(tail, piece, 3);
        offset += piece.length;
        yield { text, bytes: piece.length };
      }
    }
    const rest = decoder.decode();
    if (rest.length > 0) {
      // Only a sequence left incomplete by the end of the file produces output here.
      if (policy === 'error') await throwInvalidUtf8(file, offset - incompleteTail(tail).length);
      yield { text: rest, bytes: 0 };
    }
  } finally {
    if (pending) await pending.catch(() => undefined);
    await fh.close();
  }
}

/** The last `n` bytes of the concatenation of `a` and `b` (a copy). */
function lastBytes(a: Uint8Array, b: Uint8Array, n: number): Uint8Array {
  if (b.length >= n) return b.slice(b.length - n);
  return concatBytes(a, b).slice(-n);
}

function concatBytes(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/** `err` from reading corpus file `file` as bad input when it says "not found" or "not allowed", else null. */
export function unreadableCorpusFile(file: string, err: unknown): InputError | null {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'EACCES' || code === 'EISDIR' || code === 'EPERM') {
    return new InputError(`cannot read corpus file ${file} (${code}); check that it exists and is readable`);
  }
  return null;
}

/** Opens a corpus file, turning "not found" and "not allowed" into InputErrors. */
async function openForReading(file: string): Promise<fsp.FileHandle> {
  try {
    return await fsp.open(file, 'r');
  } catch (err) {
    throw unreadableCorpusFile(file, err) ?? err;
  }
}

/** Length of the UTF-8 sequence a lead byte starts (0 for a continuation or invalid byte). */
function sequenceLength(b: number): number {
  if (b < 0x80) return 1;
  if (b >= 0xc2 && b <= 0xdf) return 2;
  if (b >= 0xe0 && b <= 0xef) return 3;
  if (b >= 0xf0 && b <= 0xf4) return 4;
  return 0;
}

/** The trailing bytes of `tail` that begin a multi-byte sequence not yet complete. */
function incompleteTail(tail: Uint8Array): Uint8Array {
  for (let k = 1; k <= Math.min(3, tail.length); k++) {
    const b = tail[tail.length - k];
    if ((b & 0xc0) === 0x80) continue; // continuation byte: look further back
    return sequenceLength(b) > k ? tail.subarray(tail.length - k) : new Uint8Array(0);
  }
  return new Uint8Array(0);
}

/**
 * Index of the first byte of the first malformed UTF-8 sequence in `a`, or -1. A sequence cut
 * off by the end of `a` counts as malformed only when `atEnd`. Follows the WHATWG decoder:
 * overlong forms, surrogates and code points above U+10FFFF are malformed.
 */
export function firstInvalidUtf8(a: Uint8Array, atEnd: boolean): number {
  const n = a.length;
  let i = 0;
  while (i < n) {
    const b = a[i];
    if (b < 0x80) {
      i++;
      continue;
    }
    const need = sequenceLength(b) - 1;
    if (need <= 0) return i;
    // Allowed range of the second byte (bounds of the WHATWG UTF-8 decoder).
    const lo = b === 0xe0 ? 0xa0 : b === 0xf0 ? 0x90 : 0x80;
    const hi = b === 0xed ? 0x9f : b === 0xf4 ? 0x8f : 0xbf;
    for (let k = 1; k <= need; k++) {
      if (i + k >= n) return atEnd ? i : -1;
      const c = a[i + k];
      if (k === 1 ? c < lo || c > hi : (c & 0xc0) !== 0x80) return i;
    }
    i += need + 1;
  }
  return -1;
}

/** Counts line breaks before `offset` (error path only: re-reads the file) and throws. */
async function throwInvalidUtf8(file: string, offset: number): Promise<never> {
  let line = 1;
  const fh = await fsp.open(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(DEFAULT_CHUNK);
    let pos = 0;
    while (pos < offset) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, offset - pos), pos);
      if (bytesRead === 0) break;
      for (let i = buf.indexOf(10); i >= 0 && i < bytesRead; i = buf.indexOf(10, i + 1)) line++;
      pos += bytesRead;
    }
  } finally {
    await fh.close();
  }
  throw new InputError(
    `${file}: invalid UTF-8 at byte offset ${offset} (line ${line}); convert the file to UTF-8, or pass --on-invalid-utf8 replace to substitute U+FFFD`,
  );
}

// ---------------------------------------------------------------------------------------------
// Byte accounting
// ---------------------------------------------------------------------------------------------

/** Credits consumed input bytes to documents (see the header comment). One per readDocuments. */
class ByteMeter {
  /** Bytes consumed so far over the whole corpus; fractional inside a chunk. */
  consumed = 0;
  private credited = 0;

  /** Bytes to credit to a document ending now. */
  take(): number {
    const at = Math.floor(this.consumed);
    const d = at - this.credited;
    this.credited = at;
    return d;
  }
}

/** Maps a character position in the current chunk of a text file to corpus bytes consumed. */
class ChunkClock {
  private base: number; // corpus bytes before the current chunk
  private bytes = 0;
  private chars = 0;
  constructor(private meter: ByteMeter) {
    this.base = meter.consumed;
  }
  chunk(c: TextChunk): void {
    this.base += this.bytes;
    this.bytes = c.bytes;
    this.chars = c.text.length;
  }
  /** Marks the input consumed up to character `pos` of the current chunk's text. */
  at(pos: number): void {
    this.meter.consumed = this.base + (this.chars > 0 ? (this.bytes * Math.min(pos, this.chars)) / this.chars : this.bytes);
  }
  /** Marks the whole file consumed (exact: an integer). */
  end(): void {
    this.base += this.bytes;
    this.bytes = 0;
    this.chars = 0;
    this.meter.consumed = this.base;
  }
}

// ---------------------------------------------------------------------------------------------
// Reading documents
// ---------------------------------------------------------------------------------------------

/**
 * Streams documents from the files, in order. Empty and whitespace-only documents are skipped, and
 * so are rows whose text is null (counted: one note per file through `opts.log`);
 * zero documents is not an error here (see requireNonEmpty). .txt and .jsonl are streamed with
 * flat memory; tables are loaded one at a time (Parquet one row group at a time).
 *
 * Each format reader yields batches of documents (those of one chunk read, or a slice of table
 * rows); DocumentIterator hands them out one at a time with a resolved promise, which costs
 * about half of what an async generator's yield does per document.
 *
 * Note: a document's text may be a slice of a larger decoded chunk and keep it alive while the
 * document is held; callers that keep many documents around should copy them.
 */
export function readDocuments(files: string[], opts: CorpusOptions = {}): AsyncIterable<CorpusDocument> {
  const o: ReadOptions = {
    splitParagraphs: opts.splitParagraphs ?? false,
    textField: opts.textField ?? 'text',
    onInvalidUtf8: opts.onInvalidUtf8 ?? 'error',
    chunkSize: opts.chunkSize ?? DEFAULT_CHUNK,
    maxDocumentChars: opts.maxDocumentChars ?? MAX_DOCUMENT_CHARS,
    log: opts.log,
  };
  check(o.onInvalidUtf8 === 'error' || o.onInvalidUtf8 === 'replace', `--on-invalid-utf8 must be 'error' or 'replace', got '${o.onInvalidUtf8}'`);
  check(Number.isInteger(o.chunkSize) && o.chunkSize >= 4, `chunk size must be an integer >= 4, got ${o.chunkSize}`);
  check(o.textField !== '', '--text-field must not be empty');
  return {
    [Symbol.asyncIterator]: () => new DocumentIterator(corpusBatches(files, o)),
  };
}

/** All files' documents, in batches. One ByteMeter runs over the whole corpus. */
async function* corpusBatches(files: string[], o: ReadOptions): AsyncGenerator<CorpusDocument[]> {
  const meter = new ByteMeter();
  for (const file of files) yield* fileBatches(file, o, meter);
}

/** Flattens batches of documents into an async iterator of documents. */
class DocumentIterator implements AsyncIterator<CorpusDocument> {
  private batch: CorpusDocument[] = [];
  private i = 0;
  private refilling: Promise<IteratorResult<CorpusDocument>> | null = null;

  constructor(private batches: AsyncGenerator<CorpusDocument[]>) {}

  next(): Promise<IteratorResult<CorpusDocument>> {
    // A caller that does not wait for one result before asking the next is served in order.
    if (this.refilling) return this.refilling.then(() => this.next());
    if (this.i < this.batch.length) return Promise.resolve({ value: this.batch[this.i++], done: false });
    const p = this.refill();
    this.refilling = p;
    const clear = () => {
      this.refilling = null;
    };
    p.then(clear, clear);
    return p;
  }

  private async refill(): Promise<IteratorResult<CorpusDocument>> {
    for (;;) {
      const r = await this.batches.next();
      if (r.done) {
        this.batch = [];
        this.i = 0;
        return { value: undefined, done: true };
      }
      this.batch = r.value;
      this.i = 0;
      if (this.batch.length > 0) return { value: this.batch[this.i++], done: false };
    }
  }

  /** Early exit (break, or an exception in the loop body): closes the open file. */
  async return(): Promise<IteratorResult<CorpusDocument>> {
    this.batch = [];
    this.i = 0;
    await this.batches.return(undefined);
    return { value: undefined, done: true };
  }
}

/** The documents of one file, in batches. Leaves meter.consumed exactly at the file's end. */
function fileBatches(file: string, o: ReadOptions, meter: ByteMeter): AsyncGenerator<CorpusDocument[]> {
  const kind = kindOf(file);
  switch (kind) {
    case 'txt':
      return readTextFile(file, o.splitParagraphs ? new ParagraphParser(file) : new WholeTextParser(file, o.maxDocumentChars), o, meter);
    case 'jsonl': {
      const parser = new JsonLinesParser(file, o.textField);
      return thenNote(readTextFile(file, parser, o, meter), () => noteNoText(file, o, parser.nulls));
    }
    case 'csv':
    case 'tsv':
      return readDelimited(file, kind === 'tsv' ? '\t' : ',', o, meter);
    case 'arrow':
      return readArrowFile(file, o, meter);
    case 'parquet':
      return readParquetFile(file, o, meter);
    default:
      throw new InputError(`${file}: unsupported corpus file type '${path.extname(file)}'; supported: ${SUPPORTED_LIST}`);
  }
}

/** The batches of `batches`, then `after()` once they are all read. */
async function* thenNote(batches: AsyncGenerator<CorpusDocument[]>, after: () => void): AsyncGenerator<CorpusDocument[]> {
  yield* batches;
  after();
}

/**
 * Rows whose text is null (JSON null, an empty CSV cell, an Arrow or Parquet null) are skipped in
 * every format, as blank text is; one note per file says how many, so that rows do not vanish
 * unsaid.
 */
function noteNoText(file: string, o: ReadOptions, rows: number): void {
  if (rows > 0 && o.log) o.log(`note: ${file}: ${rows} row(s) with no text ("${o.textField}" null or empty) were skipped`);
}

/**
 * Yields the documents of `docs` and throws InputError("corpus is empty: ...") after the end if
 * there were none. `files` only serves the message.
 */
export async function* requireNonEmpty(docs: AsyncIterable<CorpusDocument>, files: string[]): AsyncGenerator<CorpusDocument> {
  let n = 0;
  for await (const d of docs) {
    n++;
    yield d;
  }
  if (n === 0) {
    const shown = firstNames(files);
    throw new InputError(`corpus is empty: no non-blank documents in ${shown}; check the files (and --text-field for tables and JSON Lines)`);
  }
}

const NON_BLANK = /\S/;

/**
 * Reports a document found by a text parser. `end` is the character position in the current
 * chunk just after the document's input; omitted at the end of the file.
 */
type Emit = (text: string, source: string, end?: number) => void;

/** A text format's parser: fed the decoded chunks of one file in order. */
interface TextParser {
  push(text: string, emit: Emit): void;
  end(emit: Emit): void;
}

/** Runs a text parser over a decoded file, yielding the documents found in each chunk. */
async function* readTextFile(file: string, parser: TextParser, o: ReadOptions, meter: ByteMeter): AsyncGenerator<CorpusDocument[]> {
  const clock = new ChunkClock(meter);
  let batch: CorpusDocument[] = [];
  const emit: Emit = (text, source, end) => {
    if (end !== undefined) clock.at(end);
    batch.push({ text, source, bytes: meter.take() });
  };
  for await (const c of decodeFile(file, o.onInvalidUtf8, o.chunkSize)) {
    clock.chunk(c);
    parser.push(c.text, emit);
    if (batch.length) {
      yield batch;
      batch = [];
    }
  }
  clock.end();
  parser.end(emit);
  if (batch.length) yield batch;
}

/** .txt, one document per file: the decoded text, accumulated (up to `maxChars` characters). */
class WholeTextParser implements TextParser {
  private parts: string[] = [];
  private length = 0;
  constructor(
    private file: string,
    private maxChars: number,
  ) {}
  push(text: string): void {
    if (!text) return;
    this.length += text.length;
    if (this.length > this.maxChars) {
      // Refused as soon as it is known, before the rest of the file is read and held.
      const mb = Math.floor(this.maxChars / (1 << 20));
      const size = mb >= 1 ? `${mb} MB` : `${this.maxChars} characters`;
      throw new InputError(`${this.file} is one document of more than ${size}, which mlmkit cannot hold as one string; pass --split-paragraphs (one document per blank-line-separated paragraph) or split the file`);
    }
    this.parts.push(text);
  }
  end(emit: Emit): void {
    const text = this.parts.join('');
    this.parts = [];
    if (NON_BLANK.test(text)) emit(text, this.file);
  }
}

// A paragraph separator: the line break ending a paragraph's last line, then one or more blank
// lines (empty or whitespace-only; '\r' counts as whitespace, so "\r\n" endings work).
const PARAGRAPH_SEP = /\n(?:[^\S\n]*\n)+/g;
// Blank lines at the start of a paragraph (left when a separator was cut by a chunk boundary,
// or at the start of the file).
const LEADING_BLANK_LINES = /^(?:[^\S\n]*\n)+/;
// Whitespace other than '\n' from lastIndex to the end of the string.
const BLANK_TO_END = /[^\S\n]*$/y;

function countNewlines(s: string, from = 0, to = s.length): number {
  let n = 0;
  for (let i = s.indexOf('\n', from); i >= 0 && i < to; i = s.indexOf('\n', i + 1)) n++;
  return n;
}

/**
 * .txt, one document per blank-line-separated paragraph, streamed. A paragraph's text runs from
 * its first non-blank line to the end of its last line, without that line's break ("\n" or
 * "\r\n"); line breaks inside it are kept as in the file. Text between separators collects in
 * `pieces`; `carry` holds the end of the buffered text from its last '\n' when only whitespace
 * follows it (a separator may be starting there), so a long paragraph is never rescanned.
 */
class ParagraphParser implements TextParser {
  private pieces: string[] = [];
  private carry = '';
  private line = 1; // line number where the current paragraph's raw text starts

  constructor(private file: string) {}

  push(text: string, emit: Emit): void {
    const buf = this.carry + text;
    const shift = this.carry.length; // buf positions are chunk positions + shift
    let start = 0;
    PARAGRAPH_SEP.lastIndex = 0;
    for (let m = PARAGRAPH_SEP.exec(buf); m; m = PARAGRAPH_SEP.exec(buf)) {
      const end = m.index + m[0].length;
      if (this.pieces.length === 0) {
        this.paragraph(buf.slice(start, m.index), emit, end - shift);
        this.line += countNewlines(buf, start, end);
      } else {
        this.pieces.push(buf.slice(start, m.index));
        const raw = this.pieces.join('');
        this.pieces = [];
        this.paragraph(raw, emit, end - shift);
        this.line += countNewlines(raw) + countNewlines(m[0]);
      }
      start = end;
    }
    const nl = buf.lastIndexOf('\n');
    BLANK_TO_END.lastIndex = nl + 1;
    if (nl >= start && BLANK_TO_END.test(buf)) {
      if (nl > start) this.pieces.push(buf.slice(start, nl));
      this.carry = buf.slice(nl);
    } else {
      if (buf.length > start) this.pieces.push(buf.slice(start));
      this.carry = '';
    }
  }

  end(emit: Emit): void {
    // The last paragraph: drop its final line break and any blank remainder after it.
    let raw = this.pieces.join('') + this.carry;
    this.pieces = [];
    this.carry = '';
    const nl = raw.lastIndexOf('\n');
    if (nl >= 0 && !NON_BLANK.test(raw.slice(nl + 1))) raw = raw.slice(0, nl);
    this.paragraph(raw, emit, undefined);
  }

  /** Emits a paragraph from its raw text unless it is blank. */
  private paragraph(raw: string, emit: Emit, end: number | undefined): void {
    let line = this.line;
    const c0 = raw.charCodeAt(0);
    if (c0 <= 32 || c0 >= 0x80) {
      // Only then can it start with a blank line (every \s character is <= 32 or >= 0x80).
      const lead = LEADING_BLANK_LINES.exec(raw);
      if (lead) {
        line += countNewlines(lead[0]);
        raw = raw.slice(lead[0].length);
      }
    }
    if (raw.endsWith('\r')) raw = raw.slice(0, -1);
    if (NON_BLANK.test(raw)) emit(raw, `${this.file}:${line}`, end === undefined ? undefined : Math.max(0, end));
  }
}

/** .jsonl: one JSON object per line; blank lines skipped; the text field must be a string or null (skipped, counted). */
class JsonLinesParser implements TextParser {
  private partial: string[] = []; // pieces of a line cut by chunk boundaries
  private lineNo = 0;
  /** Lines whose text field is null. */
  nulls = 0;

  constructor(
    private file: string,
    private field: string,
  ) {}

  push(text: string, emit: Emit): void {
    let pos = 0;
    for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', pos)) {
      let line = text.slice(pos, nl);
      if (this.partial.length) {
        this.partial.push(line);
        line = this.partial.join('');
        this.partial = [];
      }
      pos = nl + 1;
      this.line(line, emit, pos);
    }
    if (pos < text.length) this.partial.push(text.slice(pos));
  }

  end(emit: Emit): void {
    if (this.partial.length) this.line(this.partial.join(''), emit, undefined);
    this.partial = [];
  }

  private line(line: string, emit: Emit, end: number | undefined): void {
    const lineNo = ++this.lineNo;
    if (line.length === 0 || !NON_BLANK.test(line)) return;
    const where = `${this.file}:${lineNo}`;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      throw new InputError(`${where}: invalid JSON (${why}); each line must hold one JSON object`);
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new InputError(`${where}: expected a JSON object, got ${describe(value)}; each line must hold one JSON object with a "${this.field}" field`);
    }
    const rec = value as Record<string, unknown>;
    const text = rec[this.field];
    if (typeof text === 'string') {
      if (NON_BLANK.test(text)) emit(text, where, end);
      return;
    }
    if (text === null) {
      this.nulls++;
      return;
    }
    if (!Object.prototype.hasOwnProperty.call(rec, this.field)) {
      const keys = Object.keys(rec);
      throw new InputError(`${where}: no field "${this.field}" (fields here: ${keys.length ? keys.join(', ') : 'none'}); choose the text field with --text-field`);
    }
    throw new InputError(`${where}: field "${this.field}" is ${describe(text)}, not a string; choose the text field with --text-field`);
  }
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : `a ${typeof v}`;
}

// ---------------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------------

/** Rows per batch yielded from a table. */
const TABLE_BATCH = 8192;

/** The column interface of an arquero table that we use. */
interface ColumnLike {
  length: number;
  at(row: number): unknown;
}

/**
 * Yields the non-blank string cells of a text column in batches and returns the number of null
 * cells skipped. Row numbers in sources are 1-based over the file, the column's first row being
 * `firstRow`; `bytesAfter(r)` is the corpus byte count consumed after 0-based file row r.
 */
function* columnBatches(
  file: string,
  field: string,
  column: ColumnLike,
  firstRow: number,
  bytesAfter: (row: number) => number,
  meter: ByteMeter,
): Generator<CorpusDocument[], number> {
  let nulls = 0;
  for (let lo = 0; lo < column.length; lo += TABLE_BATCH) {
    const hi = Math.min(column.length, lo + TABLE_BATCH);
    const batch: CorpusDocument[] = [];
    for (let i = lo; i < hi; i++) {
      const v = column.at(i);
      if (v === null || v === undefined) {
        nulls++;
        continue;
      }
      const row = firstRow + i;
      if (typeof v !== 'string') {
        throw new InputError(`${file}#row ${row}: column "${field}" holds ${describe(v)}, not text; choose a text column with --text-field`);
      }
      if (!NON_BLANK.test(v)) continue;
      meter.consumed = bytesAfter(row - 1);
      batch.push({ text: v, source: `${file}#row ${row}`, bytes: meter.take() });
    }
    if (batch.length) yield batch;
  }
  return nulls;
}

function missingColumn(file: string, field: string, names: string[]): InputError {
  return new InputError(`${file} has no column "${field}" (columns: ${names.length ? names.join(', ') : 'none'}); choose the text column with --text-field`);
}

/** Spreads `size` bytes evenly over `rows` rows, starting at corpus byte `base`. */
function spread(base: number, size: number, rows: number): (row: number) => number {
  return (row) => base + Math.floor((size * (row + 1)) / rows);
}

/**
 * Re-cuts CSV text into pieces that each end just after a line break outside quoted fields, so
 * that no quoted field spans two pieces. It reads fields as arquero's parser does (d3-dsv's
 * rules): a quote opens a quoted field only as a field's first character; inside one, `""` is a
 * quote and a lone `"` ends it (the character after it ends the field); anywhere else a quote is
 * an ordinary character. (Until 2026-12-07 the quote state was the parity of all quotes, and a
 * stray quote inside an unquoted field, as in `5" screen`, flipped it: pieces were then cut inside
 * later quoted fields and arquero lost their second lines.)
 *
 * Since it reads the fields anyway, it also refuses what arquero would lose without a word: a
 * record with more fields than the header (arquero keeps as many as the header names, so
 * `1,"Stop!" she said` loses ` she said`: the character after a closing quote starts another
 * field), and a quoted field still open at the end of the file (arquero would take every later
 * line into it). Records end at "\n", "\r\n" or a lone "\r" outside quotes, as in arquero; line
 * numbers in messages count the same breaks (and "\n" inside quoted fields).
 */
class RecordAligner {
  private pending: string[] = [];
  private state: 'start' | 'plain' | 'quoted' | 'quote' = 'start';
  private readonly delimiter: number;
  private line = 1; // line of the current position
  private recordLine = 1; // line where the current record starts
  private quoteLine = 0; // line where the quoted field now open starts
  private fields = 1; // fields of the current record so far
  private headerFields = 0; // fields of the first record (the header), once it has ended
  private afterReturn = false; // the last character was a "\r" that ended a record

  constructor(
    private readonly file: string,
    delimiter: string,
  ) {
    this.delimiter = delimiter.charCodeAt(0);
  }

  /** Feeds text; returns the text up to the last safe cut, or null when there is none yet. */
  push(text: string): string | null {
    const QUOTE = 34;
    const NEWLINE = 10;
    const RETURN = 13;
    const delim = this.delimiter;
    let st = this.state;
    let cut = -1;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (st === 'quoted') {
        // Skip to the next quote at once: nothing else matters inside a quoted field but the
        // line count.
        const q = text.indexOf('"', i);
        const stop = q < 0 ? text.length : q;
        this.line += countNewlines(text, i, stop);
        i = stop;
        if (q >= 0) st = 'quote';
        continue;
      }
      if (st === 'quote') {
        // After a quote inside a quoted field: a second one is an escaped quote; any other
        // character closed the field and ends it (arquero takes it as the separator, so a
        // character other than the delimiter or a line break starts one more field).
        if (c === QUOTE) {
          st = 'quoted';
          continue;
        }
        st = 'start';
        if (c !== NEWLINE && c !== RETURN) {
          this.fields++;
          continue;
        }
      }
      // 'start' or 'plain'
      if (c === NEWLINE) {
        cut = i;
        if (this.afterReturn) this.afterReturn = false; // "\r\n": the record ended at the "\r"
        else this.endRecord();
        st = 'start';
        continue;
      }
      this.afterReturn = false;
      if (c === RETURN) {
        this.endRecord();
        this.afterReturn = true;
        st = 'start';
      } else if (c === delim) {
        this.fields++;
        st = 'start';
      } else if (st === 'start' && c === QUOTE) {
        st = 'quoted';
        this.quoteLine = this.line;
      } else st = 'plain';
    }
    this.state = st;
    if (cut < 0) {
      this.pending.push(text);
      return null;
    }
    this.pending.push(text.slice(0, cut + 1));
    const out = this.pending.join('');
    this.pending = cut + 1 < text.length ? [text.slice(cut + 1)] : [];
    return out;
  }

  /** What is left at the end of the file. */
  end(): string {
    if (this.state === 'quoted') {
      throw new InputError(`${this.file}: the quoted field opened on line ${this.quoteLine} is never closed, so every line after it would be read into that field; close it with a quote (a quote inside a quoted field is written "")`);
    }
    this.checkFields();
    const out = this.pending.join('');
    this.pending = [];
    return out;
  }

  private endRecord(): void {
    if (this.headerFields === 0) this.headerFields = this.fields;
    else this.checkFields();
    this.line++;
    this.recordLine = this.line;
    this.fields = 1;
  }

  private checkFields(): void {
    if (this.headerFields === 0 || this.fields <= this.headerFields) return;
    const tsv = this.delimiter === 9;
    throw new InputError(
      `${this.file}, line ${this.recordLine}: ${this.fields} fields where the header has ${this.headerFields}, and the extra ones would be lost; ` +
        `quote a field that holds ${tsv ? 'a tab' : 'a comma'} or starts with a quote ("...", with "" for each quote inside), or give free text as .jsonl or .txt`,
    );
  }
}

/** .csv/.tsv through arquero's streaming CSV parser, fed by the checked decoder. */
async function* readDelimited(file: string, delimiter: string, o: ReadOptions, meter: ByteMeter): AsyncGenerator<CorpusDocument[]> {
  const base = meter.consumed;
  let size = 0;
  const chunks = decodeFile(file, o.onInvalidUtf8, o.chunkSize);
  // Find the first non-empty text: an empty file has no header and is simply no documents.
  let first = '';
  for (;;) {
    const r = await chunks.next();
    if (r.done) break;
    size += r.value.bytes;
    if (r.value.text) {
      first = r.value.text;
      break;
    }
  }
  if (first === '') {
    meter.consumed = base + size;
    return;
  }
  // arquero 8.0.3's streaming CSV parser garbles a quoted field that spans two chunks
  // (uwdata/arquero#395), so it is only given text cut at line breaks outside quotes.
  const aligner = new RecordAligner(file, delimiter);
  const stream = new ReadableStream<string>({
    start(ctl) {
      const out = aligner.push(first);
      if (out) ctl.enqueue(out);
    },
    async pull(ctl) {
      for (;;) {
        const r = await chunks.next();
        if (r.done) {
          const rest = aligner.end();
          if (rest) ctl.enqueue(rest);
          ctl.close();
          return;
        }
        size += r.value.bytes;
        const out = aligner.push(r.value.text);
        if (out) {
          ctl.enqueue(out);
          return;
        }
      }
    },
    async cancel() {
      await chunks.return(undefined);
    },
  });
  let table;
  try {
    // autoType off: every cell stays the string in the file (empty cells become null).
    table = await fromCSVStream(stream, { delimiter, autoType: false });
  } catch (err) {
    if (err instanceof InputError) throw err;
    throw new InputError(`${file}: could not parse as ${delimiter === '\t' ? 'TSV' : 'CSV'} (${err instanceof Error ? err.message : String(err)})`);
  } finally {
    await chunks.return(undefined);
  }
  const names = table.columnNames();
  if (!names.includes(o.textField)) throw missingColumn(file, o.textField, names);
  // arquero keeps the last of two columns of the same name: the other would be dropped unsaid.
  const times = names.filter((n) => n === o.textField).length;
  if (times > 1) {
    throw new InputError(`${file}: the header names ${times} columns "${o.textField}", and only one can be read as the text; rename the others (or choose another column with --text-field)`);
  }
  const nulls = yield* columnBatches(file, o.textField, table.column(o.textField) as ColumnLike, 1, spread(base, size, table.numRows()), meter);
  meter.consumed = base + size;
  noteNoText(file, o, nulls);
}

/** .arrow/.feather (Arrow IPC file or stream format) through arquero's fromArrow. */
async function* readArrowFile(file: string, o: ReadOptions, meter: ByteMeter): AsyncGenerator<CorpusDocument[]> {
  const base = meter.consumed;
  const bytes = await fsp.readFile(file);
  const field = o.textField;
  let names: string[] = [];
  let table;
  try {
    // Select only the text column; the selection callback also tells us the column names.
    table = fromArrow(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), {
      columns: (t: { columnNames(): string[] }) => {
        names = t.columnNames();
        return names.includes(field) ? [field] : [];
      },
    });
  } catch (err) {
    throw new InputError(`${file} is not a readable Arrow IPC file (${err instanceof Error ? err.message : String(err)}); check the file`);
  }
  if (!names.includes(field)) throw missingColumn(file, field, names);
  const nulls = yield* columnBatches(file, field, table.column(field) as ColumnLike, 1, spread(base, bytes.byteLength, table.numRows()), meter);
  meter.consumed = base + bytes.byteLength;
  noteNoText(file, o, nulls);
}

// The parts of parquet-wasm (0.8) that we use. It is loaded on first use, by a computed module
// name, so that the rest of the toolkit type-checks and runs without it installed.
interface ParquetWasmModule {
  ParquetFile: { fromFile(blob: Blob): Promise<ParquetWasmFile> };
}
interface ParquetWasmFile {
  metadata(): {
    numRowGroups(): number;
    rowGroup(i: number): { numRows(): number; columns(): { columnPath(): string[] }[] };
  };
  read(options: { rowGroups: number[]; columns: string[]; batchSize?: number }): Promise<{ intoIPCStream(): Uint8Array }>;
  free(): void;
}
const PARQUET_PACKAGE = 'parquet-wasm';

async function loadParquetWasm(file: string): Promise<ParquetWasmModule> {
  try {
    return (await import(PARQUET_PACKAGE)) as ParquetWasmModule;
  } catch (err) {
    throw new Error(`reading ${file} needs the ${PARQUET_PACKAGE} package, which could not be loaded (${err instanceof Error ? err.message : String(err)}); install it with npm install ${PARQUET_PACKAGE}`);
  }
}

/** .parquet via parquet-wasm, one row group at a time, only the text column, into arquero. */
async function* readParquetFile(file: string, o: ReadOptions, meter: ByteMeter): AsyncGenerator<CorpusDocument[]> {
  const base = meter.consumed;
  const size = (await fsp.stat(file)).size;
  const field = o.textField;
  const pq = await loadParquetWasm(file);
  let pf: ParquetWasmFile;
  try {
    pf = await pq.ParquetFile.fromFile(await openAsBlob(file));
  } catch (err) {
    throw new InputError(`${file} is not a readable Parquet file (${err instanceof Error ? err.message : String(err)}); check the file`);
  }
  try {
    const meta = pf.metadata();
    const groups = meta.numRowGroups();
    const groupRows: number[] = [];
    for (let g = 0; g < groups; g++) groupRows.push(meta.rowGroup(g).numRows());
    const rows = groupRows.reduce((a, b) => a + b, 0);
    if (groups > 0) {
      const names = [...new Set(meta.rowGroup(0).columns().map((c) => c.columnPath()[0]))];
      if (!names.includes(field)) throw missingColumn(file, field, names);
    }
    const bytesAt = spread(base, size, rows);
    let firstRow = 1;
    let nulls = 0;
    for (let g = 0; g < groups; g++) {
      let table;
      try {
        const wasmTable = await pf.read({ rowGroups: [g], columns: [field], batchSize: Math.max(1, groupRows[g]) });
        table = fromArrow(wasmTable.intoIPCStream());
      } catch (err) {
        throw new InputError(`${file}: could not read row group ${g} (${err instanceof Error ? err.message : String(err)}); check the file`);
      }
      nulls += yield* columnBatches(file, field, table.column(field) as ColumnLike, firstRow, bytesAt, meter);
      firstRow += groupRows[g];
    }
    noteNoText(file, o, nulls);
  } finally {
    pf.free();
  }
  meter.consumed = base + size;
}

// ---------------------------------------------------------------------------------------------
// Train/validation split
// ---------------------------------------------------------------------------------------------

/** Sub-stream tag so the split's draws are independent of other uses of the same seed. */
const SPLIT_STREAM = 0x73706c74; // 'splt'

export interface ValidationSet {
  /** Whether document index `i` (0-based, in readDocuments order) is held out. */
  has(i: number): boolean;
  /** Number of held-out documents. */
  size: number;
  /** The held-out indices, ascending. */
  indices: Uint32Array;
}

/**
 * Chooses exactly round(n * fraction) validation document indices (at least 1 when fraction > 0
 * and n >= 2; never all n, so n = 1 gives none), deterministically from the seed. Selection
 * sampling (Knuth's Algorithm S): one pass over 0..n-1 taking each index with probability
 * (still needed) / (still left), which yields a uniform k-subset already sorted. Memory is the
 * k indices (4 bytes each); time is O(n) draws.
 */
export function chooseValidation(n: number, fraction: number, seed: number): ValidationSet {
  check(Number.isInteger(n) && n >= 0 && n <= 0xffffffff, `document count must be an integer in [0, 2^32), got ${n}`);
  check(Number.isFinite(fraction) && fraction >= 0 && fraction < 1, `--validation-split must be in [0, 1), got ${fraction}`);
  let k = Math.round(n * fraction);
  if (fraction > 0 && n >= 2) k = Math.max(k, 1);
  k = Math.min(k, Math.max(0, n - 1));
  const indices = new Uint32Array(k);
  const rng = Rng.derive(seed, SPLIT_STREAM);
  let chosen = 0;
  for (let i = 0; i < n && chosen < k; i++) {
    if (rng.next() * (n - i) < k - chosen) indices[chosen++] = i;
  }
  return {
    size: k,
    indices,
    has: (i: number) => sortedHas(indices, i),
  };
}

/** Whether `sorted` (ascending) holds `x`: a binary search. */
export function sortedHas(sorted: ArrayLike<number>, x: number): boolean {
  let lo = 0;
  let hi = sorted.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const v = sorted[mid];
    if (v === x) return true;
    if (v < x) lo = mid + 1;
    else hi = mid - 1;
  }
  return false;
}
