// Safetensors checkpoints (docs/formats.md, "Checkpoints"): a strict reader, a deterministic writer, and a
// reader over sharded checkpoints (`model.safetensors.index.json`).
//
// The format: an 8-byte little-endian u64 N, then N bytes of UTF-8 JSON (the header), then the data
// buffer. The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} with
// offsets relative to the start of the data buffer, plus an optional "__metadata__" string->string
// map. Tensors are little-endian and row-major. Reference: github.com/huggingface/safetensors.
//
// Validation follows the reference implementation's `read_metadata` + `Metadata::validate` (Rust),
// and is stricter where that one is silent:
//   - N must be 1..100,000,000 (the reference's MAX_HEADER_SIZE) and fit in the file;
//   - the header must be UTF-8 and a JSON object (surrounding JSON whitespace is allowed: writers
//     pad with trailing spaces); duplicate keys anywhere are refused (JSON.parse silently keeps the
//     last one; the reference refuses repeated fields but silently keeps one of two equal tensor
//     names);
//   - each entry has exactly dtype, shape and data_offsets; the dtype is one this reader reads;
//     shape and offsets are non-negative integers written without sign, fraction or exponent (the
//     reference refuses `1.0` too); unknown entry fields and dtypes this reader cannot convert
//     (F8_*, C64...) are refused here though the reference accepts them;
//   - like the reference, the tensors sorted by offset must tile the data buffer exactly: the first
//     begins at 0, each begins where the previous ends (no overlap, no hole) and the last ends at
//     the end of the file (no trailing bytes); each tensor's byte length is product(shape) x size;
//   - "__metadata__" is a map of strings. Porting note: `"__metadata__": null` is accepted as "no
//     metadata", as the reference does (it deserialises into an Option).
// Every failure is an InputError naming the file, the problem and what to do.
//
// Memory: Node has no mmap in its standard library, so the reader does the next best thing:
// `openSafetensors` reads only the 8 + N header bytes, and each tensor is later read once, with
// fs.readSync, straight into the buffer of the typed array that is returned (no intermediate
// Buffer). F32 and I32 land as they are; F16, BF16, 8- and 16-bit integers are read into the upper
// part of the destination buffer and widened in place, front to back (element i is read before
// the bytes of output i are written, and those never reach a later input); only F64 and I64/U64
// need a temporary of the stored size. A 440 MB F32 checkpoint thus costs 440 MB, not 880.
//
// Writer: F32 and I64 tensors, laid out as the reference writer (`prepare` in Rust, which the
// Python `save_file` calls) does: sorted by dtype size, largest first, then by name (UTF-8 bytes),
// so an all-F32 file is sorted by name; "__metadata__" first in the header, then the tensors in
// data order, each as {"dtype","shape","data_offsets"}, compact JSON; the header padded with spaces
// to a multiple of 8 bytes. Metadata defaults to {"format": "pt"}: `transformers` refuses to load
// a safetensors file whose metadata format is not one of pt/tf/flax/mlx (older versions also fail
// when metadata is missing). Metadata keys are written sorted, so output is byte-for-byte
// deterministic. Files are written atomically (FILE.tmp, fsync, rename, fsync of the folder).
//
// Sharded checkpoints: the index's weight_map is the contract. Every mapped file must exist and
// hold the tensors mapped to it; a tensor present in a shard but not mapped to that shard means
// the index and shards come from different exports, and is an error by default
// (`{ unmapped: 'ignore' }` skips such tensors instead). Unknown top-level index fields are ignored.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { endianness } from 'node:os';
import { writeFileAtomic } from '../common/atomic.ts';
import { InputError, requireRegularFile } from '../common/errors.ts';

const LITTLE_ENDIAN = endianness() === 'LE';

/** The reference implementation's limit on the JSON header's size. */
export const MAX_HEADER_BYTES = 100_000_000;
export const SAFETENSORS_INDEX = 'model.safetensors.index.json';

/** Dtypes this module reads, with their size in bytes. */
export const DTYPE_BYTES = {
  F64: 8, F32: 4, F16: 2, BF16: 2,
  I64: 8, I32: 4, I16: 2, I8: 1,
  U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
} as const;
export type SafetensorsDtype = keyof typeof DTYPE_BYTES;
export const FLOAT_DTYPES: readonly SafetensorsDtype[] = ['F64', 'F32', 'F16', 'BF16'];
export const INT_DTYPES: readonly SafetensorsDtype[] = ['I64', 'I32', 'I16', 'I8', 'U64', 'U32', 'U16', 'U8', 'BOOL'];
const SUPPORTED = Object.keys(DTYPE_BYTES).join(', ');

const FIX = 're-download or re-export the checkpoint';
const MAX_READ_CHUNK = 1 << 30;   // fs.readSync/write take at most 2^31 - 1 bytes per call

export interface TensorInfo {
  dtype: SafetensorsDtype;
  shape: number[];
  byteLength: number;
}

export type LoadedTensor =
  | { dtype: SafetensorsDtype; shape: number[]; data: Float32Array }
  | { dtype: SafetensorsDtype; shape: number[]; data: Int32Array };

/** What both a single file and a sharded checkpoint offer. */
export interface TensorReader {
  /** The file (or index file) named in error messages. */
  readonly source: string;
  /** The "__metadata__" map (of the first shard, for a sharded checkpoint), or null. */
  readonly metadata: Readonly<Record<string, string>> | null;
  /** Tensor names, sorted. */
  keys(): string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  /** F32, F16, BF16 (exact) or F64 (rounded) as float32. */
  readFloat32(name: string): Float32Array;
  /** Integer and BOOL dtypes as int32; a value outside the int32 range is an InputError. */
  readInt32(name: string): Int32Array;
  /** readFloat32 for float dtypes, readInt32 for the others. */
  read(name: string): LoadedTensor;
  /** The stored little-endian bytes. */
  readBytes(name: string): Uint8Array;
  close(): void;
}

// ---------------------------------------------------------------------------------------------
// Header validation (shared by the file reader and the whole-buffer parser)

interface Entry {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  numel: number;
  begin: number;   // in the data buffer
  end: number;
}

interface Header {
  entries: Map<string, Entry>;
  metadata: Record<string, string> | null;
}

/** A tensor or key name, quoted and made one line and short, for messages. */
function q(name: string): string {
  const s = JSON.stringify(name);
  return s.length > 120 ? `${s.slice(0, 117)}..."` : s;
}

function invalid(label: string, what: string): InputError {
  return new InputError(`${label}: not a valid safetensors file: ${what}; ${FIX}`);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isJsonSpace(c: number): boolean {
  return c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;
}

/**
 * Walks JSON text that JSON.parse has already accepted and throws on a key repeated within one
 * object (JSON.parse keeps the last silently). Returns the first number literal that is not a plain
 * non-negative integer (`2.0`, `1e3`, `-0`...), or null.
 */
function scanJson(text: string, duplicate: (key: string) => InputError): string | null {
  const stack: (Set<string> | null)[] = [];
  let badNumber: string | null = null;
  const n = text.length;
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 0x7b) { stack.push(new Set()); i++; }            // {
    else if (c === 0x5b) { stack.push(null); i++; }            // [
    else if (c === 0x7d || c === 0x5d) { stack.pop(); i++; }   // } ]
    else if (c === 0x22) {                                     // a string: key or value
      let j = i + 1;
      let escaped = false;
      while (j < n) {
        const d = text.charCodeAt(j);
        if (d === 0x5c) { escaped = true; j += 2; } else if (d === 0x22) break; else j++;
      }
      let k = j + 1;
      while (k < n && isJsonSpace(text.charCodeAt(k))) k++;
      if (text.charCodeAt(k) === 0x3a) {                       // followed by ':' -> a key
        const key = escaped ? (JSON.parse(text.slice(i, j + 1)) as string) : text.slice(i + 1, j);
        const keys = stack[stack.length - 1];
        if (keys) {
          if (keys.has(key)) throw duplicate(key);
          keys.add(key);
        }
      }
      i = j + 1;
    } else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {      // a number
      let j = i + 1;
      while (j < n) {
        const d = text.charCodeAt(j);
        if ((d >= 0x30 && d <= 0x39) || d === 0x2e || d === 0x65 || d === 0x45 || d === 0x2b || d === 0x2d) j++;
        else break;
      }
      if (badNumber === null && !/^(?:0|[1-9][0-9]*)$/.test(text.slice(i, j))) badNumber = text.slice(i, j);
      i = j;
    } else i++;
  }
  return badNumber;
}

function oneLineJsonError(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  const flat = msg.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g, ' ').trim();
  return flat.length > 160 ? `${flat.slice(0, 157)}...` : flat;
}

/** Decodes and parses JSON bytes strictly; `what` names the document in messages. */
function parseJsonBytes(bytes: Uint8Array, label: string, what: string): { json: unknown; text: string } {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw invalid(label, `the ${what} is not valid UTF-8`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw invalid(label, `the ${what} is not valid JSON (${oneLineJsonError(err)})`);
  }
  return { json, text };
}

/** N from the 8-byte prefix, checked against the limit and the total length. */
function headerLength(prefix: Uint8Array, total: number, label: string): number {
  if (total < 8) throw invalid(label, `the file has ${total} bytes, fewer than the 8-byte header-length prefix (truncated or empty file)`);
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n === 0n) throw invalid(label, 'the header length is 0');
  if (n > BigInt(MAX_HEADER_BYTES)) {
    throw invalid(label, `the header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  }
  if (n > BigInt(total - 8)) {
    throw invalid(label, `the header length ${n} is larger than the file (${total - 8} bytes after the 8-byte prefix): truncated`);
  }
  return Number(n);
}

function checkCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function parseEntry(label: string, name: string, value: unknown): Entry {
  const t = `tensor ${q(name)}`;
  if (!isPlainObject(value)) throw invalid(label, `the header entry for ${t} is not an object with dtype, shape and data_offsets`);
  for (const key of Object.keys(value)) {
    if (key !== 'dtype' && key !== 'shape' && key !== 'data_offsets') {
      throw invalid(label, `${t} has unknown field ${q(key)} (expected dtype, shape, data_offsets)`);
    }
  }
  for (const key of ['dtype', 'shape', 'data_offsets']) {
    if (!(key in value)) throw invalid(label, `${t} has no ${key}`);
  }
  const dtype = value.dtype;
  if (typeof dtype !== 'string' || !Object.hasOwn(DTYPE_BYTES, dtype)) {
    const shown = typeof dtype === 'string' ? q(dtype) : JSON.stringify(dtype).slice(0, 40);
    throw invalid(label, `${t} has unknown or unsupported dtype ${shown} (supported: ${SUPPORTED})`);
  }
  const size = DTYPE_BYTES[dtype as SafetensorsDtype];
  const shape = value.shape;
  if (!Array.isArray(shape) || !shape.every(checkCount)) {
    throw invalid(label, `${t} has shape ${JSON.stringify(shape).slice(0, 60)}, not an array of non-negative integers`);
  }
  const offsets = value.data_offsets;
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(checkCount)) {
    throw invalid(label, `${t} has data_offsets ${JSON.stringify(offsets).slice(0, 60)}, not two non-negative integers [begin, end]`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) throw invalid(label, `${t} has data_offsets [${begin}, ${end}] with begin after end`);
  let numel = 1;
  for (const d of shape as number[]) numel *= d;
  if (!Number.isSafeInteger(numel) || !Number.isSafeInteger(numel * size)) {
    throw invalid(label, `${t} has shape [${shape.join(', ')}] whose size overflows`);
  }
  if (end - begin !== numel * size) {
    throw invalid(label, `${t} has data_offsets [${begin}, ${end}] spanning ${end - begin} bytes, but shape [${shape.join(', ')}] of ${dtype} needs ${numel * size}`);
  }
  return { name, dtype: dtype as SafetensorsDtype, shape: [...(shape as number[])], numel, begin, end };
}

/** Validates the header bytes against a data buffer of `dataLength` bytes. */
function parseHeader(bytes: Uint8Array, dataLength: number, label: string): Header {
  const { json, text } = parseJsonBytes(bytes, label, 'header');
  if (!isPlainObject(json)) throw invalid(label, 'the header is not a JSON object');
  const badNumber = scanJson(text, (key) => invalid(label, `duplicate key ${q(key)} in the header`));

  let metadata: Record<string, string> | null = null;
  const entries = new Map<string, Entry>();
  for (const [name, value] of Object.entries(json)) {
    if (name === '__metadata__') {
      if (value === null) continue;
      if (!isPlainObject(value)) throw invalid(label, '__metadata__ is not a map of strings to strings');
      for (const [k, v] of Object.entries(value)) {
        if (typeof v !== 'string') throw invalid(label, `__metadata__ value for ${q(k)} is not a string (__metadata__ must map strings to strings)`);
      }
      metadata = { ...(value as Record<string, string>) };
      continue;
    }
    entries.set(name, parseEntry(label, name, value));
  }
  if (badNumber !== null) {
    throw invalid(label, `the header writes the number ${q(badNumber)} where only non-negative integers without sign, fraction or exponent belong`);
  }

  // The tensors must tile the data buffer: sorted by offsets, contiguous, from 0 to its end.
  const sorted = [...entries.values()].sort((a, b) => a.begin - b.begin || a.end - b.end || compareUtf8(a.name, b.name));
  for (const e of sorted) {
    if (e.end > dataLength) {
      throw invalid(label, `the file is truncated: tensor ${q(e.name)} ends at byte ${e.end} of the data buffer, which has ${dataLength} bytes`);
    }
  }
  let pos = 0;
  let prev: Entry | null = null;
  for (const e of sorted) {
    if (e.begin < pos) {
      throw invalid(label, `tensor ${q(e.name)} [${e.begin}, ${e.end}] overlaps tensor ${q(prev!.name)} [${prev!.begin}, ${prev!.end}]`);
    }
    if (e.begin > pos) {
      throw invalid(label, `bytes ${pos}..${e.begin} of the data buffer belong to no tensor (the format requires tensors packed without holes)`);
    }
    pos = e.end;
    prev = e;
  }
  if (pos !== dataLength) {
    throw invalid(label, `the data buffer has ${dataLength - pos} bytes after the last tensor that belong to no tensor`);
  }
  return { entries, metadata };
}

function compareUtf8(a: string, b: string): number {
  return a === b ? 0 : Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

// ---------------------------------------------------------------------------------------------
// Reading tensors

/** Fills `dst` with data-buffer bytes starting at `offset`. */
type ReadAt = (dst: Uint8Array, offset: number, name: string) => void;

function bytesOf(a: ArrayBufferView, byteOffset = 0, byteLength = a.byteLength - byteOffset): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset + byteOffset, byteLength);
}

/** Reverses the byte order of each `size`-byte element (only used on big-endian machines). */
function swapBytes(b: Uint8Array, size: number): void {
  for (let i = 0; i < b.length; i += size) {
    for (let lo = i, hi = i + size - 1; lo < hi; lo++, hi--) {
      const t = b[lo]; b[lo] = b[hi]; b[hi] = t;
    }
  }
}

/** Converts IEEE binary16 bits to binary32 bits, exactly (subnormals, infinities, NaN payloads). */
function halfToSingleBits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >> 10) & 0x1f;
  let mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0;         // inf, NaN
  if (exp !== 0) return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;  // normal: rebias 15 -> 127
  if (mant === 0) return sign >>> 0;                                          // +-0
  let e = 113;                                                                // subnormal: normalise
  while ((mant & 0x400) === 0) { mant <<= 1; e--; }
  return (sign | (e << 23) | ((mant & 0x3ff) << 13)) >>> 0;
}

export class SafetensorsFile implements TensorReader {
  readonly metadata: Readonly<Record<string, string>> | null;
  private readonly entries: Map<string, Entry>;
  private readonly sortedNames: string[];
  private closed = false;

  /** Use openSafetensors or parseSafetensors. */
  constructor(
    readonly source: string,
    header: Header,
    private readonly readAt: ReadAt,
    private readonly onClose: () => void,
  ) {
    this.entries = header.entries;
    this.metadata = header.metadata;
    this.sortedNames = [...header.entries.keys()].sort(compareUtf8);
  }

  keys(): string[] {
    return [...this.sortedNames];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  info(name: string): TensorInfo {
    const e = this.entry(name);
    return { dtype: e.dtype, shape: [...e.shape], byteLength: e.end - e.begin };
  }

  readBytes(name: string): Uint8Array {
    const e = this.entry(name);
    const out = this.alloc(Uint8Array, e.end - e.begin, e);
    this.load(out, e);
    return out;
  }

  readFloat32(name: string): Float32Array {
    const e = this.entry(name);
    const n = e.numel;
    switch (e.dtype) {
      case 'F32': {
        const out = this.alloc(Float32Array, n, e);
        this.load(bytesOf(out), e, 4);
        return out;
      }
      case 'F16':
      case 'BF16': {
        // Read the 2n stored bytes into the upper half of the output and widen in place.
        const out = this.alloc(Float32Array, n, e);
        this.load(bytesOf(out, 2 * n), e, 2);
        const src = new Uint16Array(out.buffer, 2 * n, n);
        const bits = new Uint32Array(out.buffer, 0, n);
        if (e.dtype === 'BF16') for (let i = 0; i < n; i++) bits[i] = src[i] << 16;
        else for (let i = 0; i < n; i++) bits[i] = halfToSingleBits(src[i]);
        return out;
      }
      case 'F64': {
        const tmp = this.alloc(Float64Array, n, e);
        this.load(bytesOf(tmp), e, 8);
        const out = this.alloc(Float32Array, n, e);
        out.set(tmp);   // rounds to nearest float32
        return out;
      }
      default:
        throw new InputError(`${this.source}: tensor ${q(name)} has dtype ${e.dtype}, expected a float dtype (${FLOAT_DTYPES.join(', ')}); check that this is the right checkpoint`);
    }
  }

  readInt32(name: string): Int32Array {
    const e = this.entry(name);
    const n = e.numel;
    const range = (i: number, value: bigint | number) => new InputError(
      `${this.source}: tensor ${q(name)} (${e.dtype}) holds ${value} at index ${i}, outside the int32 range this reader supports; ${FIX} or convert the tensor`);
    switch (e.dtype) {
      case 'I32':
      case 'U32': {
        const out = this.alloc(Int32Array, n, e);
        this.load(bytesOf(out), e, 4);
        if (e.dtype === 'U32') for (let i = 0; i < n; i++) if (out[i] < 0) throw range(i, out[i] >>> 0);
        return out;
      }
      case 'I64':
      case 'U64': {
        const tmp = this.alloc(Int32Array, 2 * n, e);   // (low, high) word pairs
        this.load(bytesOf(tmp), e, 8);
        const out = this.alloc(Int32Array, n, e);
        const signed = e.dtype === 'I64';
        for (let i = 0; i < n; i++) {
          const lo = tmp[2 * i], hi = tmp[2 * i + 1];
          if (signed ? hi !== lo >> 31 : hi !== 0 || lo < 0) {
            const v = (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
            throw range(i, signed ? BigInt.asIntN(64, v) : v);
          }
          out[i] = lo;
        }
        return out;
      }
      case 'I16':
      case 'U16':
      case 'I8':
      case 'U8':
      case 'BOOL': {
        // Read the stored bytes into the tail of the output and widen in place, front to back.
        const size = DTYPE_BYTES[e.dtype];
        const out = this.alloc(Int32Array, n, e);
        const at = (4 - size) * n;
        this.load(bytesOf(out, at, size * n), e, size);
        const src = e.dtype === 'I16' ? new Int16Array(out.buffer, at, n)
          : e.dtype === 'U16' ? new Uint16Array(out.buffer, at, n)
          : e.dtype === 'I8' ? new Int8Array(out.buffer, at, n)
          : new Uint8Array(out.buffer, at, n);
        if (e.dtype === 'BOOL') {
          for (let i = 0; i < n; i++) {
            const v = src[i];
            if (v > 1) throw new InputError(`${this.source}: tensor ${q(name)} (BOOL) holds byte ${v} at index ${i}, not 0 or 1; ${FIX}`);
            out[i] = v;
          }
        } else {
          for (let i = 0; i < n; i++) out[i] = src[i];
        }
        return out;
      }
      default:
        throw new InputError(`${this.source}: tensor ${q(name)} has dtype ${e.dtype}, expected an integer dtype (${INT_DTYPES.join(', ')}); check that this is the right checkpoint`);
    }
  }

  read(name: string): LoadedTensor {
    const e = this.entry(name);
    const shape = [...e.shape];
    return FLOAT_DTYPES.includes(e.dtype)
      ? { dtype: e.dtype, shape, data: this.readFloat32(name) }
      : { dtype: e.dtype, shape, data: this.readInt32(name) };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.onClose();
  }

  private entry(name: string): Entry {
    if (this.closed) throw new Error(`${this.source}: read after close()`);
    const e = this.entries.get(name);
    if (!e) throw new InputError(`${this.source}: no tensor named ${q(name)} in this file; check the tensor name or the checkpoint`);
    return e;
  }

  private alloc<T>(ctor: new (n: number) => T, n: number, e: Entry): T {
    try {
      return new ctor(n);
    } catch (err) {
      if (err instanceof RangeError) {
        throw new InputError(`${this.source}: tensor ${q(e.name)} (${e.numel} elements of ${e.dtype}) is too large for one array in this runtime`);
      }
      throw err;
    }
  }

  /** Reads the tensor's stored bytes into `dst` and fixes the byte order on big-endian machines. */
  private load(dst: Uint8Array, e: Entry, size = 1): void {
    this.readAt(dst, e.begin, e.name);
    if (!LITTLE_ENDIAN && size > 1) swapBytes(dst, size);
  }
}

function readFully(fd: number, dst: Uint8Array, position: number): number {
  let done = 0;
  while (done < dst.length) {
    const got = fs.readSync(fd, dst, done, Math.min(dst.length - done, MAX_READ_CHUNK), position + done);
    if (got === 0) break;
    done += got;
  }
  return done;
}

function openError(file: string, err: unknown, what: string): Error {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return new InputError(`${file}: no such ${what}; check the path`);
  if (code === 'EISDIR') return new InputError(`${file}: is a folder, not a ${what}; check the path`);
  if (code === 'EACCES' || code === 'EPERM') return new InputError(`${file}: permission denied; check the file's permissions`);
  return err as Error;
}

/**
 * Opens a safetensors file: reads and validates only its header. Tensors are read on demand, each
 * once into its final array. Call close() when done.
 */
export function openSafetensors(file: string): SafetensorsFile {
  requireRegularFile(file, 'safetensors file'); // stat before open: opening a FIFO blocks
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (err) {
    throw openError(file, err, 'safetensors file');
  }
  try {
    const stat = fs.fstatSync(fd);
    if (!stat.isFile()) throw new InputError(`${file}: not a regular file; check the path`);
    const size = stat.size;
    const prefix = new Uint8Array(8);
    if (size >= 8 && readFully(fd, prefix, 0) < 8) throw invalid(file, 'the file ended while reading the header length');
    const n = headerLength(prefix, size, file);
    const bytes = new Uint8Array(n);
    if (readFully(fd, bytes, 8) < n) throw invalid(file, 'the file ended while reading the header (it changed while being read?)');
    const header = parseHeader(bytes, size - 8 - n, file);
    const dataStart = 8 + n;
    const readAt: ReadAt = (dst, offset, name) => {
      if (readFully(fd, dst, dataStart + offset) < dst.length) {
        throw new InputError(`${file}: the file ended while reading tensor ${q(name)} (it was truncated after being opened?); ${FIX}`);
      }
    };
    return new SafetensorsFile(file, header, readAt, () => fs.closeSync(fd));
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
}

/** Parses a whole safetensors file held in memory, with the same validation as openSafetensors. */
export function parseSafetensors(bytes: Uint8Array, label = '<buffer>'): SafetensorsFile {
  const n = headerLength(bytes.subarray(0, 8), bytes.length, label);
  const header = parseHeader(bytes.subarray(8, 8 + n), bytes.length - 8 - n, label);
  const data = bytes.subarray(8 + n);
  const readAt: ReadAt = (dst, offset) => dst.set(data.subarray(offset, offset + dst.length));
  return new SafetensorsFile(label, header, readAt, () => {});
}

/**
 * Reads every tensor of a file as float32: float dtypes as readFloat32 does, integer dtypes (e.g.
 * the I64 `position_ids` buffers of older BERT checkpoints) converted when exact (|v| <= 2^24).
 */
export async function loadSafetensorsF32(file: string): Promise<Map<string, { shape: number[]; data: Float32Array; dtype: SafetensorsDtype }>> {
  const reader = openSafetensors(file);
  try {
    const out = new Map<string, { shape: number[]; data: Float32Array; dtype: SafetensorsDtype }>();
    for (const name of reader.keys()) {
      const t = reader.read(name);
      let data: Float32Array;
      if (t.data instanceof Float32Array) {
        data = t.data;
      } else {
        const ints = t.data;
        const i = ints.findIndex((v) => Math.abs(v) > 1 << 24);
        if (i >= 0) {
          throw new InputError(`${file}: tensor ${q(name)} (${t.dtype}) holds ${ints[i]} at index ${i}, not exact in float32; read it with openSafetensors(...).readInt32`);
        }
        data = Float32Array.from(ints);
      }
      out.set(name, { shape: t.shape, data, dtype: t.dtype });
    }
    return out;
  } finally {
    reader.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Sharded checkpoints

export interface ShardedSafetensors extends TensorReader {
  /** The shard files, sorted, as full paths. */
  readonly files: string[];
  /** Tensor name -> shard file name (as written in the index). */
  readonly weightMap: ReadonlyMap<string, string>;
  /** The index's "metadata" object (e.g. {"total_size": ...}), or {}. */
  readonly indexMetadata: Readonly<Record<string, unknown>>;
}

class ShardedReader implements ShardedSafetensors {
  constructor(
    readonly source: string,
    readonly files: string[],
    readonly weightMap: ReadonlyMap<string, string>,
    readonly indexMetadata: Readonly<Record<string, unknown>>,
    private readonly shards: Map<string, SafetensorsFile>,   // by file name in the index
  ) {}

  get metadata(): Readonly<Record<string, string>> | null {
    const first = [...this.shards.keys()].sort()[0];
    return first === undefined ? null : this.shards.get(first)!.metadata;
  }

  keys(): string[] { return [...this.weightMap.keys()].sort(compareUtf8); }
  has(name: string): boolean { return this.weightMap.has(name); }
  info(name: string): TensorInfo { return this.shard(name).info(name); }
  readFloat32(name: string): Float32Array { return this.shard(name).readFloat32(name); }
  readInt32(name: string): Int32Array { return this.shard(name).readInt32(name); }
  read(name: string): LoadedTensor { return this.shard(name).read(name); }
  readBytes(name: string): Uint8Array { return this.shard(name).readBytes(name); }
  close(): void { for (const s of this.shards.values()) s.close(); }

  private shard(name: string): SafetensorsFile {
    const file = this.weightMap.get(name);
    if (file === undefined) throw new InputError(`${this.source}: no tensor named ${q(name)} in the weight_map; check the tensor name or the checkpoint`);
    return this.shards.get(file)!;
  }
}

/**
 * Opens a sharded checkpoint from its folder (or the index file itself): validates the index, opens
 * every shard's header, and checks that each mapped tensor is in its shard and (unless
 * `unmapped: 'ignore'`) that no shard holds a tensor the index does not map to it.
 */
export function readShardedIndex(dirOrIndex: string, options: { unmapped?: 'error' | 'ignore' } = {}): ShardedSafetensors {
  const indexFile = dirOrIndex.endsWith('.json') ? dirOrIndex : path.join(dirOrIndex, SAFETENSORS_INDEX);
  const dir = path.dirname(indexFile);
  const bad = (what: string) => new InputError(`${indexFile}: not a valid safetensors index: ${what}; ${FIX}`);
  requireRegularFile(indexFile, 'safetensors index file');
  let bytes: Uint8Array;
  try {
    bytes = fs.readFileSync(indexFile);
  } catch (err) {
    throw openError(indexFile, err, 'safetensors index file');
  }
  let text: string;
  let json: unknown;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw bad('it is not valid UTF-8');
  }
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw bad(`it is not valid JSON (${oneLineJsonError(err)})`);
  }
  if (!isPlainObject(json)) throw bad('it is not a JSON object');
  scanJson(text, (key) => bad(`duplicate key ${q(key)}`));
  const meta = json.metadata ?? {};
  if (!isPlainObject(meta)) throw bad('"metadata" is not an object');
  const wm = json.weight_map;
  if (!isPlainObject(wm)) throw bad('"weight_map" is missing or not an object');
  const weightMap = new Map<string, string>();
  for (const [name, file] of Object.entries(wm)) {
    if (typeof file !== 'string' || file === '' || file === '.' || file === '..' || /[/\\]/.test(file) || file.includes('\0')) {
      throw bad(`weight_map entry for ${q(name)} is ${JSON.stringify(file).slice(0, 60)}, not a file name in the checkpoint folder`);
    }
    weightMap.set(name, file);
  }
  if (weightMap.size === 0) throw bad('"weight_map" is empty');

  const shards = new Map<string, SafetensorsFile>();
  try {
    for (const file of [...new Set(weightMap.values())].sort()) {
      const full = path.join(dir, file);
      if (!fs.existsSync(full)) throw new InputError(`${full}: shard listed in ${indexFile} is missing; ${FIX}`);
      shards.set(file, openSafetensors(full));
    }
    for (const [name, file] of weightMap) {
      if (!shards.get(file)!.has(name)) {
        throw bad(`tensor ${q(name)} is mapped to ${file}, which does not contain it`);
      }
    }
    if (options.unmapped !== 'ignore') {
      for (const [file, shard] of shards) {
        const stray = shard.keys().filter((name) => weightMap.get(name) !== file);
        if (stray.length > 0) {
          throw bad(`${file} holds ${stray.length} tensor(s) not mapped to it, e.g. ${q(stray[0])}; index and shards come from different exports`);
        }
      }
    }
  } catch (err) {
    for (const s of shards.values()) s.close();
    throw err;
  }
  const files = [...shards.keys()].map((f) => path.join(dir, f));
  return new ShardedReader(indexFile, files, weightMap, { ...meta }, shards);
}

// ---------------------------------------------------------------------------------------------
// Writing

export type WritableTensor =
  | { dtype: 'F32'; shape: readonly number[]; data: Float32Array }
  | { dtype: 'I64'; shape: readonly number[]; data: BigInt64Array | Int32Array };
export type TensorsToWrite = ReadonlyMap<string, WritableTensor> | Readonly<Record<string, WritableTensor>>;

/** The header (padded) and each tensor's little-endian bytes, in file order. */
function layout(tensors: TensorsToWrite, metadata?: Record<string, string>): Uint8Array[] {
  const list: [string, WritableTensor][] = tensors instanceof Map
    ? [...(tensors as ReadonlyMap<string, WritableTensor>).entries()]
    : Object.entries(tensors as Readonly<Record<string, WritableTensor>>);
  const items = list.map(([name, t]) => {
    if (name === '__metadata__') throw new Error('safetensors: a tensor cannot be named "__metadata__"');
    if (t.dtype !== 'F32' && t.dtype !== 'I64') throw new Error(`safetensors: tensor ${q(name)} has dtype ${String((t as { dtype: unknown }).dtype)}; the writer supports F32 and I64`);
    if (!t.shape.every((d) => checkCount(d))) throw new Error(`safetensors: tensor ${q(name)} has shape [${t.shape.join(', ')}], not non-negative integers`);
    const numel = t.shape.reduce((a, b) => a * b, 1);
    if (numel !== t.data.length) throw new Error(`safetensors: tensor ${q(name)} has shape [${t.shape.join(', ')}] (${numel} elements) but ${t.data.length} values`);
    return { name, t, size: DTYPE_BYTES[t.dtype], key: Buffer.from(name, 'utf8') };
  });
  // The reference writer's order: larger dtypes first, then by name (bytes).
  items.sort((a, b) => b.size - a.size || Buffer.compare(a.key, b.key));

  const meta: Record<string, string> = { format: 'pt', ...metadata };
  const metaKeys = Object.keys(meta).sort(compareUtf8);
  for (const k of metaKeys) {
    if (typeof meta[k] !== 'string') throw new Error(`safetensors: metadata value for ${q(k)} is not a string`);
  }
  const parts = [`"__metadata__":{${metaKeys.map((k) => `${JSON.stringify(k)}:${JSON.stringify(meta[k])}`).join(',')}}`];
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const { name, t } of items) {
    let bytes: Uint8Array;
    if (t.dtype === 'F32') {
      bytes = bytesOf(t.data);
    } else if (t.data instanceof BigInt64Array) {
      bytes = bytesOf(t.data);
    } else {
      const wide = new BigInt64Array(t.data.length);
      for (let i = 0; i < wide.length; i++) wide[i] = BigInt(t.data[i]);
      bytes = bytesOf(wide);
    }
    if (!LITTLE_ENDIAN) { bytes = bytes.slice(); swapBytes(bytes, DTYPE_BYTES[t.dtype]); }
    parts.push(`${JSON.stringify(name)}:{"dtype":"${t.dtype}","shape":[${t.shape.join(',')}],"data_offsets":[${offset},${offset + bytes.length}]}`);
    offset += bytes.length;
    chunks.push(bytes);
  }
  const json = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const n = Math.ceil(json.length / 8) * 8;
  const head = new Uint8Array(8 + n).fill(0x20, 8 + json.length);
  new DataView(head.buffer).setBigUint64(0, BigInt(n), true);
  head.set(json, 8);
  return [head, ...chunks];
}

/** The bytes of a safetensors file (for tests and small files; saveSafetensors streams). */
export function serializeSafetensors(tensors: TensorsToWrite, metadata?: Record<string, string>): Uint8Array {
  const chunks = layout(tensors, metadata);
  const out = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0));
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return out;
}

/**
 * Writes a safetensors file atomically, straight from the tensors' buffers. Metadata is merged
 * over {"format": "pt"}. Do not modify the arrays until the promise settles.
 */
export async function saveSafetensors(file: string, tensors: TensorsToWrite, metadata?: Record<string, string>): Promise<void> {
  await writeFileAtomic(file, layout(tensors, metadata));
}
