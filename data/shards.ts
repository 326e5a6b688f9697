// Prepared-data format: flat token shards plus manifest.json (docs/formats.md, "Prepared data").
//
// Layout of a prepared folder:
//   manifest.json                  written last; its presence means the folder is complete
//   train-00000.bin ...            token ids, little-endian uint16 (vocab < 65,536) or uint32,
//                                  rows of exactly seq_len tokens (row-major), padded with pad id
//   train-00000.words.bin ...      word starts, one bit per token, ceil(seq_len / 8) bytes per row,
//                                  least significant bit first (bit t of a row: token t begins a word
//                                  by the tokenizer's word ids); used by --whole-word-mask
//   validation-00000.bin ...       the same for the validation split
//
// Reading a shard elsewhere: numpy.memmap(path, dtype='<u2', mode='r').reshape(-1, seq_len).
// Attention mask of a row: token != pad_token_id.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { endianness } from 'node:os';
import { InputError } from '../common/errors.ts';
import { insideRoot } from './paths.ts';

const LITTLE_ENDIAN = endianness() === 'LE';

export const MANIFEST = 'manifest.json';
export const FORMAT = 'mlmkit-shards';
export const FORMAT_VERSION = 1;

export type TokenDtype = 'uint16' | 'uint32';
export type PrepareMode = 'blocks' | 'lines';
export type SplitName = 'train' | 'validation';

export interface ShardInfo {
  file: string;          // token file, relative to the folder
  words_file: string;    // word-start bitmask file
  rows: number;
  sha256: string;        // of the token file
  words_sha256: string;  // of the word-start file
}

export interface SplitInfo {
  documents: number;
  rows: number;          // blocks (blocks mode) or examples (lines mode)
  tokens: number;        // text tokens, without the added special tokens and padding
  words: number;
  unknown_tokens: number;
  truncated: number;     // lines mode: examples cut at seq_len
  shards: ShardInfo[];
}

export interface TokenizerRef {
  source: string;        // as given by the user (folder or Hub id)
  revision: string | null;
  sha256: string;        // hash of the tokenizer (see data/tokenizer.ts)
  family: string;
  vocab_size: number;
  pad_token_id: number;
  cls_token_id: number;
  sep_token_id: number;
  mask_token_id: number;
  unk_token_id: number;
}

export interface Manifest {
  format: typeof FORMAT;
  version: number;
  created_by: string;
  tokenizer: TokenizerRef;
  seq_len: number;
  mode: PrepareMode;
  dtype: TokenDtype;
  seed: number;
  validation: { split: number } | { files: string[] };
  options: Record<string, unknown>;
  inputs: { path: string; bytes: number; sha256: string }[];   // sha256 of each input's whole content
  splits: Record<SplitName, SplitInfo>;
}

export function dtypeFor(vocabSize: number): TokenDtype {
  return vocabSize <= 65536 ? 'uint16' : 'uint32';
}

export function bytesPerToken(dtype: TokenDtype): number {
  return dtype === 'uint16' ? 2 : 4;
}

export function wordBytesPerRow(seqLen: number): number {
  return Math.ceil(seqLen / 8);
}

/**
 * Writes fixed-length rows into numbered shard files, hashing as it goes.
 * Rows are buffered and flushed in large writes; a shard is closed after `rowsPerShard` rows.
 */
export class ShardWriter {
  private readonly tokenBytes: number;
  private readonly wordBytes: number;
  private readonly rowsPerShard: number;
  private buf: Buffer;
  private wbuf: Buffer;
  private view: Uint16Array | Uint32Array;
  private bufRows = 0;
  private fd = -1;
  private wfd = -1;
  private hash = createHash('sha256');
  private whash = createHash('sha256');
  private shardRows = 0;
  readonly shards: ShardInfo[] = [];
  rows = 0;

  constructor(
    private readonly dir: string,
    private readonly prefix: SplitName,
    private readonly seqLen: number,
    private readonly dtype: TokenDtype,
    shardBytes = 64 * 1024 * 1024,
  ) {
    this.tokenBytes = seqLen * bytesPerToken(dtype);
    this.wordBytes = wordBytesPerRow(seqLen);
    this.rowsPerShard = Math.max(1, Math.floor(shardBytes / this.tokenBytes));
    const flushRows = Math.max(1, Math.min(this.rowsPerShard, Math.floor((4 << 20) / this.tokenBytes)));
    this.buf = Buffer.alloc(flushRows * this.tokenBytes);
    this.wbuf = Buffer.alloc(flushRows * this.wordBytes);
    this.view = dtype === 'uint16'
      ? new Uint16Array(this.buf.buffer, this.buf.byteOffset, this.buf.length / 2)
      : new Uint32Array(this.buf.buffer, this.buf.byteOffset, this.buf.length / 4);
  }

  /** Appends one row: `ids` and `wordStarts` hold exactly seq_len entries. */
  writeRow(ids: Uint32Array | Int32Array, wordStarts: Uint8Array): void {
    if (this.fd < 0) this.openShard();
    const base = this.bufRows * this.seqLen;
    if (LITTLE_ENDIAN) {
      this.view.set(ids, base);
    } else {
      const b = base * bytesPerToken(this.dtype);
      for (let t = 0; t < this.seqLen; t++) {
        if (this.dtype === 'uint16') this.buf.writeUInt16LE(ids[t], b + 2 * t);
        else this.buf.writeUInt32LE(ids[t], b + 4 * t);
      }
    }
    const wbase = this.bufRows * this.wordBytes;
    this.wbuf.fill(0, wbase, wbase + this.wordBytes);
    for (let t = 0; t < this.seqLen; t++) {
      if (wordStarts[t]) this.wbuf[wbase + (t >> 3)] |= 1 << (t & 7);
    }
    this.bufRows++;
    this.shardRows++;
    this.rows++;
    if (this.bufRows * this.tokenBytes === this.buf.length) this.flush();
    if (this.shardRows === this.rowsPerShard) this.closeShard();
  }

  /** Flushes and closes the last shard. */
  finish(): ShardInfo[] {
    if (this.fd >= 0) this.closeShard();
    return this.shards;
  }

  private shardName(i: number, words: boolean): string {
    return `${this.prefix}-${String(i).padStart(5, '0')}${words ? '.words' : ''}.bin`;
  }

  private openShard(): void {
    const i = this.shards.length;
    this.fd = fs.openSync(path.join(this.dir, this.shardName(i, false)), 'w');
    this.wfd = fs.openSync(path.join(this.dir, this.shardName(i, true)), 'w');
    this.hash = createHash('sha256');
    this.whash = createHash('sha256');
    this.shardRows = 0;
  }

  private flush(): void {
    if (this.bufRows === 0) return;
    const tokens = this.buf.subarray(0, this.bufRows * this.tokenBytes);
    const words = this.wbuf.subarray(0, this.bufRows * this.wordBytes);
    writeAll(this.fd, tokens);
    writeAll(this.wfd, words);
    this.hash.update(tokens);
    this.whash.update(words);
    this.bufRows = 0;
  }

  private closeShard(): void {
    this.flush();
    fs.fsyncSync(this.fd);
    fs.fsyncSync(this.wfd);
    fs.closeSync(this.fd);
    fs.closeSync(this.wfd);
    const i = this.shards.length;
    this.shards.push({
      file: this.shardName(i, false),
      words_file: this.shardName(i, true),
      rows: this.shardRows,
      sha256: this.hash.digest('hex'),
      words_sha256: this.whash.digest('hex'),
    });
    this.fd = this.wfd = -1;
  }
}

function writeAll(fd: number, data: Uint8Array): void {
  let off = 0;
  while (off < data.length) off += fs.writeSync(fd, data, off, data.length - off);
}

/**
 * Reads and validates manifest.json of a prepared folder: shards present, of the right size, and
 * (unless `verify` is false) matching their SHA-256 checksums (see verifyShards).
 */
export async function readManifest(dir: string, { verify = true }: { verify?: boolean } = {}): Promise<Manifest> {
  const file = path.join(dir, MANIFEST);
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    if (!fs.existsSync(dir)) throw new InputError(`prepared data not found: ${dir} does not exist; run \`mlm prepare --out ${dir}\` first`);
    throw new InputError(`${file} is missing: ${dir} is not a complete prepared folder (an interrupted \`mlm prepare\`?); run \`mlm prepare\` again`);
  }
  let m: Manifest;
  try {
    m = JSON.parse(text) as Manifest;
  } catch (err) {
    throw new InputError(`${file} is not valid JSON (${(err as Error).message}); run \`mlm prepare\` again`);
  }
  if (m?.format !== FORMAT) throw new InputError(`${file} is not an mlmkit manifest (format ${JSON.stringify(m?.format)})`);
  if (m.version !== FORMAT_VERSION) throw new InputError(`${file} has format version ${m.version}; this mlmkit reads version ${FORMAT_VERSION}; prepare the data again`);
  const damaged = (what: string) => new InputError(`${file} ${what}; the folder is damaged or edited, prepare the data again`);
  if (!Number.isInteger(m.seq_len) || m.seq_len < 1) throw damaged(`has seq_len ${JSON.stringify(m.seq_len)}, not a whole number above 0`);
  if (m.dtype !== 'uint16' && m.dtype !== 'uint32') throw damaged(`has dtype ${JSON.stringify(m.dtype)}, not uint16 or uint32`);
  for (const split of ['train', 'validation'] as const) {
    const s = m.splits?.[split];
    if (!s || !Array.isArray(s.shards)) throw new InputError(`${file} has no "${split}" split; prepare the data again`);
    const rowBytes = m.seq_len * bytesPerToken(m.dtype);
    for (const shard of s.shards) {
      // Shard names come from the file: plain names inside the folder only (data/paths.ts).
      if (shard === null || typeof shard !== 'object') throw damaged(`lists a ${split} shard that is not an object`);
      for (const name of [shard.file, shard.words_file]) insideRoot(dir, name, `the ${split} shard file named in ${file},`, 'prepare the data again');
      if (!Number.isInteger(shard.rows) || shard.rows < 0) throw damaged(`gives ${split} shard ${shard.file} ${JSON.stringify(shard.rows)} rows`);
      if (typeof shard.sha256 !== 'string' || typeof shard.words_sha256 !== 'string') throw damaged(`gives ${split} shard ${shard.file} no SHA-256`);
      const p = path.join(dir, shard.file);
      let size: number;
      try {
        size = (await fsp.stat(p)).size;
      } catch {
        throw new InputError(`shard ${p} listed in the manifest is missing; prepare the data again`);
      }
      if (size !== shard.rows * rowBytes) {
        throw new InputError(`shard ${p} has ${size} bytes, the manifest says ${shard.rows} rows of ${rowBytes} bytes; the folder is damaged, prepare the data again`);
      }
    }
  }
  if (verify) await verifyShards(dir, m);
  return m;
}

/** SHA-256 of a file's whole content, streamed (about 1.5 GB/s on this project's machines). */
export async function fileSha256(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Files whose checksum this process has already verified: real path, size, mtime and the
 * expected hash. A file is hashed once per process (run) unless it changes on disk. */
const verified = new Set<string>();

/** Recomputes every shard checksum (once per process for an unchanged file, see `verified`);
 * throws InputError naming the first damaged file. */
export async function verifyShards(dir: string, m: Manifest): Promise<void> {
  for (const split of ['train', 'validation'] as const) {
    for (const shard of m.splits[split].shards) {
      for (const [file, expected] of [[shard.file, shard.sha256], [shard.words_file, shard.words_sha256]]) {
        const p = path.join(dir, file);
        let key: string;
        try {
          const st = await fsp.stat(p);
          key = `${await fsp.realpath(p)}\0${st.size}\0${st.mtimeMs}\0${expected}`;
        } catch {
          throw new InputError(`shard ${p} listed in the manifest is missing; run \`mlm prepare\` again`);
        }
        if (verified.has(key)) continue;
        if ((await fileSha256(p)) !== expected) {
          throw new InputError(`shard ${p} does not match its SHA-256 in ${path.join(dir, MANIFEST)} (damaged or edited); run \`mlm prepare\` again to rebuild ${dir}`);
        }
        verified.add(key);
      }
    }
  }
}

/** Random access to the rows of one split, reading from disk on demand (memory stays flat). */
export class SplitReader {
  readonly rows: number;
  private readonly starts: number[] = [];   // first global row of each shard
  private readonly fds: number[] = [];
  private readonly wfds: number[] = [];
  private readonly rowBytes: number;
  private readonly wordBytes: number;
  private readonly scratch: Buffer;
  private readonly wscratch: Buffer;
  private readonly view16: Uint16Array;
  private readonly view32: Uint32Array;

  constructor(readonly dir: string, readonly manifest: Manifest, readonly split: SplitName) {
    const info = manifest.splits[split];
    this.rowBytes = manifest.seq_len * bytesPerToken(manifest.dtype);
    this.wordBytes = wordBytesPerRow(manifest.seq_len);
    let total = 0;
    for (const shard of info.shards) {
      this.starts.push(total);
      total += shard.rows;
      this.fds.push(fs.openSync(path.join(dir, shard.file), 'r'));
      this.wfds.push(fs.openSync(path.join(dir, shard.words_file), 'r'));
    }
    this.rows = total;
    this.scratch = Buffer.alloc(this.rowBytes);
    this.wscratch = Buffer.alloc(this.wordBytes);
    this.view16 = new Uint16Array(this.scratch.buffer, this.scratch.byteOffset, this.manifest.dtype === 'uint16' ? manifest.seq_len : 0);
    this.view32 = new Uint32Array(this.scratch.buffer, this.scratch.byteOffset, this.manifest.dtype === 'uint32' ? manifest.seq_len : 0);
  }

  get seqLen(): number {
    return this.manifest.seq_len;
  }

  /** Copies row `row` into ids[offset .. offset+seqLen) and its word starts into words (0/1 per token). */
  readRow(row: number, ids: Int32Array | Uint32Array, words: Uint8Array | null, offset: number): void {
    if (!(row >= 0 && row < this.rows)) throw new RangeError(`row ${row} outside [0, ${this.rows})`);
    let s = this.starts.length - 1;
    let lo = 0;
    while (lo < s) {
      const mid = (lo + s + 1) >> 1;
      if (this.starts[mid] <= row) lo = mid; else s = mid - 1;
    }
    const local = row - this.starts[lo];
    readExactly(this.fds[lo], this.scratch, local * this.rowBytes);
    const T = this.manifest.seq_len;
    if (LITTLE_ENDIAN) {
      ids.set(this.manifest.dtype === 'uint16' ? this.view16 : this.view32, offset);
    } else {
      for (let t = 0; t < T; t++) {
        ids[offset + t] = this.manifest.dtype === 'uint16' ? this.scratch.readUInt16LE(2 * t) : this.scratch.readUInt32LE(4 * t);
      }
    }
    const V = this.manifest.tokenizer.vocab_size;
    for (let t = 0; t < T; t++) {
      if (ids[offset + t] >= V || ids[offset + t] < 0) {
        const file = path.join(this.dir, this.manifest.splits[this.split].shards[lo].file);
        throw new InputError(`shard ${file} holds token id ${ids[offset + t]} (row ${local}, position ${t}), outside the tokenizer's vocabulary of ${V}; the folder is damaged, run \`mlm prepare\` again`);
      }
    }
    if (words) {
      readExactly(this.wfds[lo], this.wscratch, local * this.wordBytes);
      for (let t = 0; t < T; t++) words[offset + t] = (this.wscratch[t >> 3] >> (t & 7)) & 1;
    }
  }

  close(): void {
    for (const fd of [...this.fds, ...this.wfds]) fs.closeSync(fd);
    this.fds.length = 0;
    this.wfds.length = 0;
  }
}

function readExactly(fd: number, buf: Buffer, position: number): void {
  let off = 0;
  while (off < buf.length) {
    const n = fs.readSync(fd, buf, off, buf.length - off, position + off);
    if (n === 0) throw new Error(`unexpected end of shard at byte ${position + off}`);
    off += n;
  }
}
