// Tests for training/safetensors.ts: bit-exact round trips, the writer's byte layout against a
// fixture built by hand, F16 (all 65,536 values) / BF16 / F64 / integer reading from hand-built
// files, one InputError per kind of bad input, a seeded fuzz of mutated files, sharded indexes,
// atomic writes, and the memory cost of reading a 200 MB tensor (in a child process).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { InputError } from '../../common/errors.ts';
import { Rng } from '../../common/rng.ts';
import {
  loadSafetensorsF32, openSafetensors, parseSafetensors, readShardedIndex, saveSafetensors,
  serializeSafetensors, MAX_HEADER_BYTES, SAFETENSORS_INDEX, type WritableTensor,
} from '../../training/safetensors.ts';

const enc = new TextEncoder();
const LABEL = 'bad.safetensors';

function tmpDir(t: { after: (fn: () => void) => void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlm-safetensors-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A safetensors file built by hand: u64 N (or an override), header text, data bytes. */
function fileBytes(header: string | object | Uint8Array, data: Uint8Array = new Uint8Array(0), n?: bigint): Uint8Array {
  const json = header instanceof Uint8Array ? header : enc.encode(typeof header === 'string' ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, n ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

function f32Bytes(values: number[]): Uint8Array {
  const b = new Uint8Array(values.length * 4);
  const v = new DataView(b.buffer);
  values.forEach((x, i) => v.setFloat32(i * 4, x, true));
  return b;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

function bitsOf(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

/** Asserts that fn throws a one-line InputError whose message matches every pattern. */
function assertInputError(fn: () => unknown, ...patterns: RegExp[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof InputError, `expected InputError, got ${String(err)}`);
    assert.ok(!/[\r\n]/.test(err.message), `message is not one line: ${err.message}`);
    for (const p of patterns) assert.match(err.message, p);
    return true;
  });
}

function specialFloats(): Float32Array {
  const a = new Float32Array(12);
  const bits = bitsOf(a);
  a.set([0, -0, Infinity, -Infinity, 1.5, -3.25e-39 /* subnormal */, 3.4028234663852886e38]);
  bits[7] = 0x7fc00001;   // quiet NaN with payload
  bits[8] = 0xffffffff;   // negative NaN, full payload
  bits[9] = 0x7f800001;   // signalling NaN
  bits[10] = 0x00000001;  // smallest subnormal
  bits[11] = 0x80000000;  // -0 again
  return a;
}

test('round trip F32 (and I64) is bit-identical: in memory, on disk, and via loadSafetensorsF32', async (t) => {
  const dir = tmpDir(t);
  const special = specialFloats();
  const big = new Float32Array(1000).map((_, i) => Math.sin(i) * 1e3);
  const tensors = new Map<string, WritableTensor>([
    ['z.special', { dtype: 'F32', shape: [3, 4], data: special }],
    ['a.big', { dtype: 'F32', shape: [10, 10, 10], data: big }],
    ['m.empty', { dtype: 'F32', shape: [0, 5], data: new Float32Array(0) }],
    ['s.scalar', { dtype: 'F32', shape: [], data: new Float32Array([7]) }],
    ['position_ids', { dtype: 'I64', shape: [1, 4], data: new BigInt64Array([0n, 1n, -5n, 16777216n]) }],
  ]);
  const bytes = serializeSafetensors(tensors, { note: 'x' });
  const r = parseSafetensors(bytes);
  assert.deepEqual(r.keys(), ['a.big', 'm.empty', 'position_ids', 's.scalar', 'z.special']);
  assert.deepEqual(r.metadata, { format: 'pt', note: 'x' });
  assert.deepEqual(bitsOf(r.readFloat32('z.special')), bitsOf(special));
  assert.deepEqual(r.readFloat32('a.big'), big);
  assert.deepEqual(r.info('m.empty'), { dtype: 'F32', shape: [0, 5], byteLength: 0 });
  assert.deepEqual(r.readFloat32('s.scalar'), new Float32Array([7]));
  assert.deepEqual(r.info('position_ids'), { dtype: 'I64', shape: [1, 4], byteLength: 32 });
  assert.deepEqual(r.readInt32('position_ids'), new Int32Array([0, 1, -5, 16777216]));

  const file = path.join(dir, 'model.safetensors');
  await saveSafetensors(file, tensors, { note: 'x' });
  assert.deepEqual(new Uint8Array(fs.readFileSync(file)), bytes, 'saveSafetensors writes what serializeSafetensors builds');
  assert.deepEqual(fs.readdirSync(dir), ['model.safetensors'], 'no temporary file left behind');
  const f = openSafetensors(file);
  assert.deepEqual(bitsOf(f.readFloat32('z.special')), bitsOf(special));
  assert.deepEqual(f.readBytes('z.special'), new Uint8Array(special.buffer));
  f.close();

  const loaded = await loadSafetensorsF32(file);
  assert.deepEqual(bitsOf(loaded.get('z.special')!.data), bitsOf(special));
  assert.deepEqual(loaded.get('z.special')!.shape, [3, 4]);
  assert.deepEqual(loaded.get('position_ids')!.data, new Float32Array([0, 1, -5, 16777216]));

  // A record works like a Map, Int32Array I64 data is widened, output is deterministic.
  const asRecord = serializeSafetensors({ b: { dtype: 'F32', shape: [1], data: new Float32Array([1]) }, a: { dtype: 'I64', shape: [2], data: new Int32Array([-1, 3]) } });
  const again = serializeSafetensors(new Map<string, WritableTensor>([['a', { dtype: 'I64', shape: [2], data: new BigInt64Array([-1n, 3n]) }], ['b', { dtype: 'F32', shape: [1], data: new Float32Array([1]) }]]));
  assert.deepEqual(asRecord, again);

  // Overwriting an existing file is atomic from a reader's point of view: old or new, never half.
  await saveSafetensors(file, { only: { dtype: 'F32', shape: [1], data: new Float32Array([2]) } });
  assert.deepEqual((await loadSafetensorsF32(file)).get('only')!.data, new Float32Array([2]));
  await assert.rejects(saveSafetensors(path.join(dir, 'missing', 'x.safetensors'), {}), /ENOENT/);

  // Writer misuse is a programming error (plain Error), not bad input.
  assert.throws(() => serializeSafetensors({ a: { dtype: 'F32', shape: [3], data: new Float32Array(2) } }), /3 elements/);
  assert.throws(() => serializeSafetensors({ __metadata__: { dtype: 'F32', shape: [0], data: new Float32Array(0) } }), /__metadata__/);
});

test('writer layout matches a byte-level fixture built by hand', () => {
  // Expected layout (the reference writer's): "__metadata__" first; tensors ordered by dtype size
  // (I64 before F32), then by name; compact JSON; header padded with spaces to a multiple of 8.
  const header =
    '{"__metadata__":{"format":"pt"},' +
    '"pos":{"dtype":"I64","shape":[3],"data_offsets":[0,24]},' +
    '"a.bias":{"dtype":"F32","shape":[2],"data_offsets":[24,32]},' +
    '"b.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[32,48]}}';
  const padded = header + ' '.repeat((8 - (header.length % 8)) % 8);
  assert.equal(padded.length % 8, 0);
  const expected = new Uint8Array(8 + padded.length + 48);
  const v = new DataView(expected.buffer);
  v.setUint32(0, padded.length, true);   // u64 little-endian: low word, high word 0
  v.setUint32(4, 0, true);
  for (let i = 0; i < padded.length; i++) expected[8 + i] = padded.charCodeAt(i);
  const d = 8 + padded.length;
  [0, 1, -2].forEach((x, i) => { v.setInt32(d + 8 * i, x, true); v.setInt32(d + 8 * i + 4, x < 0 ? -1 : 0, true); });
  [0.5, -1].forEach((x, i) => v.setFloat32(d + 24 + 4 * i, x, true));
  [1, 2, 3, 4].forEach((x, i) => v.setFloat32(d + 32 + 4 * i, x, true));

  const got = serializeSafetensors({
    'b.weight': { dtype: 'F32', shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) },
    pos: { dtype: 'I64', shape: [3], data: new BigInt64Array([0n, 1n, -2n]) },
    'a.bias': { dtype: 'F32', shape: [2], data: new Float32Array([0.5, -1]) },
  });
  assert.equal(Buffer.from(got.subarray(8, 8 + padded.length)).toString('latin1'), padded);
  assert.deepEqual(got, expected);

  // All-F32: plain name order, names compared as UTF-8 bytes ("Z" < "a" < "é").
  const names = Object.keys(JSON.parse(Buffer.from(serializeSafetensors({
    'é': { dtype: 'F32', shape: [1], data: new Float32Array(1) },
    a: { dtype: 'F32', shape: [1], data: new Float32Array(1) },
    Z: { dtype: 'F32', shape: [1], data: new Float32Array(1) },
  })).subarray(8).toString('utf8').split('}}')[0] + '}}'));
  assert.deepEqual(names.filter((n) => n !== '__metadata__'), ['Z', 'a', 'é']);
});

/** Independent IEEE binary16 decoder (arithmetic, not bit manipulation). */
function halfValue(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 31;
  const m = h & 1023;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m === 0 ? sign * Infinity : NaN;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

test('F16 -> F32 is exact for all 65,536 values, NaN payloads kept', () => {
  const n = 65536;
  const data = new Uint8Array(2 * n);
  for (let h = 0; h < n; h++) { data[2 * h] = h & 0xff; data[2 * h + 1] = h >> 8; }
  const r = parseSafetensors(fileBytes({ h: { dtype: 'F16', shape: [256, 256], data_offsets: [0, 2 * n] } }, data));
  assert.deepEqual(r.info('h'), { dtype: 'F16', shape: [256, 256], byteLength: 2 * n });
  const out = r.readFloat32('h');
  const bits = bitsOf(out);
  let nans = 0;
  for (let h = 0; h < n; h++) {
    const want = halfValue(h);
    if (Number.isNaN(want)) {
      nans++;
      assert.ok(Number.isNaN(out[h]), `h=${h}`);
      assert.equal(bits[h] >>> 31, h >> 15, `NaN sign, h=${h}`);
      assert.equal((bits[h] >>> 13) & 0x3ff, h & 0x3ff, `NaN payload, h=${h}`);
      assert.equal(bits[h] & 0x1fff, 0, `NaN low bits, h=${h}`);
    } else {
      assert.equal(Math.fround(want), want);
      assert.ok(Object.is(out[h], want), `h=0x${h.toString(16)}: got ${out[h]}, want ${want}`);
    }
  }
  assert.equal(nans, 2 * 1023);
});

test('BF16 -> F32 is exact for all 65,536 values; F64 rounds to nearest', () => {
  const n = 65536;
  const data = new Uint8Array(2 * n);
  for (let b = 0; b < n; b++) { data[2 * b] = b & 0xff; data[2 * b + 1] = b >> 8; }
  const r = parseSafetensors(fileBytes({ b: { dtype: 'BF16', shape: [n], data_offsets: [0, 2 * n] } }, data));
  const out = r.readFloat32('b');
  const bits = bitsOf(out);
  const view = new DataView(new ArrayBuffer(4));
  for (let b = 0; b < n; b++) {
    view.setUint16(0, b);   // big-endian: the bf16 bits are the top half of a float32
    view.setUint16(2, 0);
    assert.equal(bits[b], view.getUint32(0), `b=${b}`);
    const want = view.getFloat32(0);
    assert.ok(Number.isNaN(want) ? Number.isNaN(out[b]) : Object.is(out[b], want));
  }
  assert.equal(out[0x3f80], 1);
  assert.equal(out[0xc000], -2);
  assert.equal(out[0x0001], 2 ** -133);

  const f64 = [0.1, -1e300, 1e-320, Math.PI, -0, NaN];
  const d = new Uint8Array(8 * f64.length);
  f64.forEach((x, i) => new DataView(d.buffer).setFloat64(8 * i, x, true));
  const g = parseSafetensors(fileBytes({ d: { dtype: 'F64', shape: [6], data_offsets: [0, d.length] } }, d)).readFloat32('d');
  assert.deepEqual([...g].slice(0, 5), f64.slice(0, 5).map(Math.fround));
  assert.ok(Object.is(g[4], -0) && Number.isNaN(g[5]));
});

test('integer dtypes read as Int32Array; I64 outside int32 is refused; BOOL must be 0/1', async (t) => {
  const i64 = new BigInt64Array([0n, 1n, -1n, 2147483647n, -2147483648n, 512n]);
  const u64 = new BigUint64Array([0n, 2147483647n]);
  const parts: [string, string, number[], Uint8Array][] = [
    ['position_ids', 'I64', [1, 6], new Uint8Array(i64.buffer)],
    ['u64', 'U64', [2], new Uint8Array(u64.buffer)],
    ['i32', 'I32', [2], new Uint8Array(new Int32Array([-7, 2 ** 31 - 1]).buffer)],
    ['u32', 'U32', [2], new Uint8Array(new Uint32Array([0, 2 ** 31 - 1]).buffer)],
    ['i16', 'I16', [3], new Uint8Array(new Int16Array([-32768, 5, 32767]).buffer)],
    ['u16', 'U16', [3], new Uint8Array(new Uint16Array([0, 65535, 7]).buffer)],
    ['i8', 'I8', [3], new Uint8Array(new Int8Array([-128, 0, 127]).buffer)],
    ['u8', 'U8', [3], new Uint8Array([0, 200, 255])],
    ['mask', 'BOOL', [2, 2], new Uint8Array([1, 0, 0, 1])],
  ];
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let at = 0;
  for (const [name, dtype, shape, bytes] of parts) {
    header[name] = { dtype, shape, data_offsets: [at, at + bytes.length] };
    at += bytes.length;
  }
  const bytes = fileBytes(header, concat(...parts.map((p) => p[3])));
  const r = parseSafetensors(bytes);
  assert.deepEqual(r.readInt32('position_ids'), new Int32Array([0, 1, -1, 2147483647, -2147483648, 512]));
  assert.deepEqual(r.readInt32('u64'), new Int32Array([0, 2147483647]));
  assert.deepEqual(r.readInt32('i32'), new Int32Array([-7, 2 ** 31 - 1]));
  assert.deepEqual(r.readInt32('u32'), new Int32Array([0, 2 ** 31 - 1]));
  assert.deepEqual(r.readInt32('i16'), new Int32Array([-32768, 5, 32767]));
  assert.deepEqual(r.readInt32('u16'), new Int32Array([0, 65535, 7]));
  assert.deepEqual(r.readInt32('i8'), new Int32Array([-128, 0, 127]));
  assert.deepEqual(r.readInt32('u8'), new Int32Array([0, 200, 255]));
  const mask = r.read('mask');
  assert.deepEqual(mask, { dtype: 'BOOL', shape: [2, 2], data: new Int32Array([1, 0, 0, 1]) });
  assertInputError(() => r.readFloat32('position_ids'), /position_ids/, /has dtype I64, expected a float dtype/);

  // The same through a file, and loadSafetensorsF32 converting exact integers.
  const dir = tmpDir(t);
  const file = path.join(dir, 'ints.safetensors');
  fs.writeFileSync(file, bytes);
  const f = openSafetensors(file);
  assert.deepEqual(f.readInt32('i16'), new Int32Array([-32768, 5, 32767]));
  f.close();
  // 2^31 - 1 is not exact in float32, so loadSafetensorsF32 refuses this file (readInt32 is the way).
  await assert.rejects(loadSafetensorsF32(file), /"i32" \(I32\) holds 2147483647 at index 1, not exact in float32/);

  const out = (dtype: string, raw: bigint[]) => {
    const a = dtype === 'I64' ? new BigInt64Array(raw) : new BigUint64Array(raw);
    return parseSafetensors(fileBytes({ x: { dtype, shape: [raw.length], data_offsets: [0, 8 * raw.length] } }, new Uint8Array(a.buffer)), LABEL);
  };
  assertInputError(() => out('I64', [1n, 2147483648n]).readInt32('x'), /^bad\.safetensors: /, /"x"/, /2147483648 at index 1/, /outside the int32 range/);
  assertInputError(() => out('I64', [-2147483649n]).readInt32('x'), /-2147483649 at index 0/);
  assertInputError(() => out('U64', [2n ** 64n - 1n]).readInt32('x'), /18446744073709551615/);
  const u32 = parseSafetensors(fileBytes({ x: { dtype: 'U32', shape: [1], data_offsets: [0, 4] } }, new Uint8Array([0, 0, 0, 0x80])));
  assertInputError(() => u32.readInt32('x'), /2147483648 at index 0/);
  const bool = parseSafetensors(fileBytes({ x: { dtype: 'BOOL', shape: [2], data_offsets: [0, 2] } }, new Uint8Array([1, 2])));
  assertInputError(() => bool.readInt32('x'), /byte 2 at index 1, not 0 or 1/);
  const f32 = parseSafetensors(fileBytes({ x: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, f32Bytes([1])));
  assertInputError(() => f32.readInt32('x'), /has dtype F32, expected an integer dtype/);
  assertInputError(() => f32.info('y'), /no tensor named "y"/);
});

test('loadSafetensorsF32 refuses integers that float32 cannot hold exactly', async (t) => {
  const file = path.join(tmpDir(t), 'x.safetensors');
  await saveSafetensors(file, { ok: { dtype: 'I64', shape: [2], data: new BigInt64Array([16777216n, -16777216n]) } });
  assert.deepEqual((await loadSafetensorsF32(file)).get('ok')!.data, new Float32Array([16777216, -16777216]));
  await saveSafetensors(file, { big: { dtype: 'I64', shape: [1], data: new BigInt64Array([16777217n]) } });
  await assert.rejects(loadSafetensorsF32(file), (e: unknown) => e instanceof InputError && /16777217 at index 0, not exact in float32/.test(e.message));
});

test('bad inputs: each is a one-line InputError naming the file and the problem', async (t) => {
  const F = (begin: number, end: number, shape: number[] = [(end - begin) / 4]) => ({ dtype: 'F32', shape, data_offsets: [begin, end] });
  const parse = (b: Uint8Array) => () => parseSafetensors(b, LABEL);
  const fix = /re-download or re-export the checkpoint$/;
  const cases: [string, Uint8Array, RegExp][] = [
    ['empty file', new Uint8Array(0), /has 0 bytes, fewer than the 8-byte/],
    ['short file', new Uint8Array(5), /has 5 bytes, fewer than the 8-byte/],
    ['header length 0', fileBytes('', f32Bytes([1]), 0n), /header length is 0/],
    ['header too large', fileBytes('{}', new Uint8Array(0), BigInt(MAX_HEADER_BYTES + 1)), /header length 100000001 exceeds the 100000000-byte limit/],
    ['header length u64 max', fileBytes('{}', new Uint8Array(0), 2n ** 64n - 1n), /header length 18446744073709551615 exceeds/],
    ['header longer than file', fileBytes('{}', new Uint8Array(0), 100n), /header length 100 is larger than the file \(2 bytes after the 8-byte prefix\)/],
    ['invalid UTF-8', fileBytes(new Uint8Array([0x7b, 0xff, 0x7d])), /header is not valid UTF-8/],
    ['BOM', fileBytes(new Uint8Array([0xef, 0xbb, 0xbf, 0x7b, 0x7d])), /header is not valid JSON/],
    ['not JSON', fileBytes('{"a":'), /header is not valid JSON \(/],
    ['JSON array', fileBytes('[1]'), /header is not a JSON object/],
    ['JSON string', fileBytes('"{}"'), /header is not a JSON object/],
    ['NUL padding', fileBytes('{}\0\0\0\0\0\0'), /not valid JSON/],
    ['entry not an object', fileBytes({ a: 5 }), /entry for tensor "a" is not an object/],
    ['entry null', fileBytes({ a: null }), /entry for tensor "a" is not an object/],
    ['unknown field', fileBytes({ a: { ...F(0, 4), extra: 1 } }, f32Bytes([1])), /tensor "a" has unknown field "extra"/],
    ['missing field', fileBytes({ a: { dtype: 'F32', data_offsets: [0, 4] } }, f32Bytes([1])), /tensor "a" has no shape/],
    ['unknown dtype', fileBytes({ a: { ...F(0, 4), dtype: 'F8_E4M3', shape: [4] } }, f32Bytes([1])), /unsupported dtype "F8_E4M3" \(supported: F64, F32, F16, BF16, I64/],
    ['dtype not a string', fileBytes({ a: { ...F(0, 4), dtype: 4 } }, f32Bytes([1])), /unsupported dtype 4/],
    ['dtype from the prototype', fileBytes({ a: { ...F(0, 4), dtype: 'constructor' } }, f32Bytes([1])), /unsupported dtype "constructor"/],
    ['shape not an array', fileBytes({ a: { ...F(0, 4), shape: 1 } }, f32Bytes([1])), /shape 1, not an array of non-negative integers/],
    ['negative shape', fileBytes({ a: F(0, 4, [-1]) }, f32Bytes([1])), /shape \[-1\], not an array/],
    ['fractional shape', fileBytes({ a: F(0, 4, [1.5]) }, f32Bytes([1])), /shape \[1.5\], not an array/],
    ['float literal 1.0', fileBytes('{"a":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}', f32Bytes([1])), /the number "1.0" where only non-negative integers/],
    ['exponent literal', fileBytes('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4e0]}}', f32Bytes([1])), /the number "4e0"/],
    ['minus zero', fileBytes('{"a":{"dtype":"F32","shape":[1],"data_offsets":[-0,4]}}', f32Bytes([1])), /the number "-0"/],
    ['unsafe integer', fileBytes('{"a":{"dtype":"F32","shape":[9007199254740993],"data_offsets":[0,4]}}', f32Bytes([1])), /not an array of non-negative integers/],
    ['shape overflow', fileBytes({ a: F(0, 4, [2 ** 40, 2 ** 40]) }, f32Bytes([1])), /shape \[1099511627776, 1099511627776\] whose size overflows/],
    ['offsets not two', fileBytes({ a: { ...F(0, 4), data_offsets: [4] } }, f32Bytes([1])), /data_offsets \[4\], not two non-negative integers/],
    ['offsets reversed', fileBytes({ a: F(4, 0, [0]) }, f32Bytes([1])), /data_offsets \[4, 0\] with begin after end/],
    ['length mismatch', fileBytes({ a: F(0, 8, [3]) }, f32Bytes([1, 2])), /spanning 8 bytes, but shape \[3\] of F32 needs 12/],
    ['truncated body', fileBytes({ a: F(0, 8) }, f32Bytes([1])), /file is truncated: tensor "a" ends at byte 8 of the data buffer, which has 4 bytes/],
    ['overlap', fileBytes({ a: F(0, 8), b: F(4, 12) }, f32Bytes([1, 2, 3])), /tensor "b" \[4, 12\] overlaps tensor "a" \[0, 8\]/],
    ['same offsets twice', fileBytes({ a: F(0, 4), b: F(0, 4) }, f32Bytes([1])), /overlaps/],
    ['hole', fileBytes({ a: F(0, 4), b: F(8, 12) }, f32Bytes([1, 2, 3])), /bytes 4\.\.8 of the data buffer belong to no tensor/],
    ['not starting at 0', fileBytes({ a: F(4, 8) }, f32Bytes([1, 2])), /bytes 0\.\.4 of the data buffer belong to no tensor/],
    ['trailing bytes', fileBytes({ a: F(0, 4) }, f32Bytes([1, 2])), /4 bytes after the last tensor that belong to no tensor/],
    ['metadata not a map', fileBytes({ __metadata__: ['pt'] }), /__metadata__ is not a map of strings to strings/],
    ['metadata value not a string', fileBytes({ __metadata__: { format: 1 } }), /__metadata__ value for "format" is not a string/],
    ['duplicate tensor', fileBytes(`{"a":${JSON.stringify(F(0, 4))},"a":${JSON.stringify(F(0, 4))}}`, f32Bytes([1])), /duplicate key "a" in the header/],
    ['duplicate via escape', fileBytes(`{"a":${JSON.stringify(F(0, 4))},"\\u0061":${JSON.stringify(F(0, 4))}}`, f32Bytes([1])), /duplicate key "a"/],
    ['duplicate field', fileBytes('{"a":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}}', f32Bytes([1])), /duplicate key "dtype"/],
    ['duplicate metadata', fileBytes('{"__metadata__":{"format":"pt"},"__metadata__":{"format":"tf"}}'), /duplicate key "__metadata__"/],
  ];
  for (const [what, bytes, pattern] of cases) {
    await t.test(what, () => assertInputError(parse(bytes), /^bad\.safetensors: not a valid safetensors file: /, pattern, fix));
  }

  // Valid edge cases that must not be refused.
  assert.equal(parseSafetensors(fileBytes('{}')).keys().length, 0);
  assert.equal(parseSafetensors(fileBytes(' \n{}')).keys().length, 0);   // the reference accepts leading whitespace too
  assert.equal(parseSafetensors(fileBytes('{"__metadata__":null}        ')).metadata, null);
  assert.deepEqual(parseSafetensors(fileBytes('{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}} \t\n')).keys(), ['a']);
  assert.deepEqual(parseSafetensors(fileBytes({ '\n"odd"': F(0, 0, [0]), '': F(0, 0, [0]) })).keys(), ['', '\n"odd"']);
  assertInputError(() => parseSafetensors(fileBytes({ ['x\ny'.repeat(100)]: 1 })), /not an object/);   // odd names stay on one line

  // Through files: missing, a folder, and a file cut short after it was opened.
  const dir = tmpDir(t);
  assertInputError(() => openSafetensors(path.join(dir, 'nope.safetensors')), /nope\.safetensors: no such safetensors file; check the path/);
  assertInputError(() => openSafetensors(dir), /folder|not a regular file/);
  const file = path.join(dir, 'cut.safetensors');
  fs.writeFileSync(file, fileBytes({ a: F(0, 4), b: F(4, 4004) }, f32Bytes(new Array(1001).fill(1))));
  assertInputError(() => openSafetensors(file).info('zz'), /no tensor named "zz"/);
  fs.writeFileSync(path.join(dir, 'short.safetensors'), fs.readFileSync(file).subarray(0, 200));
  assertInputError(() => openSafetensors(path.join(dir, 'short.safetensors')), /short\.safetensors: not a valid safetensors file: the file is truncated: tensor "b"/);
  const r = openSafetensors(file);
  fs.truncateSync(file, 150);
  assertInputError(() => r.readFloat32('b'), /cut\.safetensors: the file ended while reading tensor "b"/);
  r.close();
  assert.throws(() => r.readFloat32('a'), /read after close/);
});

/** Seeded mutations of valid files: the parser may only throw InputError, and never hangs. */
test('fuzz: 20,000 mutated files give either a valid reader or an InputError', async (t) => {
  const rng = new Rng(20261126);
  const bases: Uint8Array[] = [];
  bases.push(serializeSafetensors({
    'bert.embeddings.word_embeddings.weight': { dtype: 'F32', shape: [4, 3], data: new Float32Array(12).map((_, i) => i) },
    'cls.predictions.bias': { dtype: 'F32', shape: [4], data: new Float32Array(4) },
    'bert.embeddings.position_ids': { dtype: 'I64', shape: [1, 3], data: new BigInt64Array([0n, 1n, 2n]) },
  }, { format: 'pt', note: 'fuzz' }));
  {
    const specs: [string, string, number[], number][] = [
      ['h', 'F16', [2, 3], 2], ['b', 'BF16', [4], 2], ['d', 'F64', [2], 8], ['m', 'BOOL', [3], 1], ['u', 'U8', [2], 1],
      ['s', 'I8', [2], 1], ['i', 'I16', [2], 2], ['w', 'U16', [2], 2], ['j', 'I32', [2], 4], ['k', 'U32', [1], 4],
      ['l', 'I64', [2], 8], ['v', 'U64', [1], 8], ['e', 'F32', [0, 2], 4],
    ];
    const header: Record<string, unknown> = {};
    const data: number[] = [];
    for (const [name, dtype, shape, size] of specs) {
      const bytes = shape.reduce((a, b) => a * b, 1) * size;
      header[name] = { dtype, shape, data_offsets: [data.length, data.length + bytes] };
      for (let i = 0; i < bytes; i++) data.push(dtype === 'BOOL' ? i & 1 : (i * 37) & (i % size === size - 1 ? 0x3f : 0xff));
    }
    bases.push(fileBytes(header, new Uint8Array(data)));
  }
  bases.push(fileBytes('{}      '));
  for (const b of bases) parseSafetensors(b);   // the bases are valid

  const tokens = ['{', '}', '[', ']', '"', ',', ':', '-1', '0', '1e309', '9007199254740993', '2.5', '"F32"', '"I64"', '"X"',
    'null', 'true', '\\u0000', '"__metadata__"', '"dtype"', '"shape"', '"data_offsets"', ' ', '\u00e9', '\ud800', '"a":1,'];
  const headerOf = (b: Uint8Array) => {
    const n = Number(new DataView(b.buffer, b.byteOffset).getBigUint64(0, true));
    return { text: Buffer.from(b.subarray(8, 8 + n)).toString('utf8'), data: b.subarray(8 + n) };
  };
  const withHeader = (text: string, data: Uint8Array) => fileBytes(text, data);
  const mutate = (src: Uint8Array): Uint8Array => {
    let b: Uint8Array = src.slice();
    const kind = rng.int(9);
    if (kind === 0) {                                      // bit flips, mostly in the header
      const flips = 1 + rng.int(4);
      const headerEnd = b.length < 8 ? b.length : Math.min(b.length, 8 + new DataView(b.buffer, b.byteOffset).getUint32(0, true));
      for (let i = 0; i < flips && b.length > 0; i++) {
        const at = rng.next() < 0.7 ? rng.int(Math.max(1, headerEnd)) : rng.int(b.length);
        b[Math.min(at, b.length - 1)] ^= 1 << rng.int(8);
      }
    } else if (kind === 1) {                               // truncation
      b = b.subarray(0, rng.int(b.length + 1));
    } else if (kind === 2) {                               // appended bytes
      const extra = new Uint8Array(1 + rng.int(16)).map(() => rng.int(256));
      b = concat(b, extra);
    } else if (kind === 3 && b.length >= 8) {              // header length changed
      const v = new DataView(b.buffer, b.byteOffset);
      const old = v.getUint32(0, true);
      const r = rng.int(4);
      if (r === 0) v.setUint32(0, Math.max(0, old + rng.int(33) - 16), true);
      else if (r === 1) v.setUint32(0, rng.nextU32(), true);
      else if (r === 2) v.setUint32(4, 1 + rng.int(0xffffffff), true);
      else v.setUint32(0, 0, true);
    } else if (kind <= 6 && b.length >= 8) {                // textual JSON edits, length kept right
      const { text, data } = headerOf(b);
      let s = text;
      const at = rng.int(s.length + 1);
      if (kind === 4) s = s.slice(0, at) + s.slice(at + 1 + rng.int(5));
      else if (kind === 5) s = s.slice(0, at) + tokens[rng.int(tokens.length)] + s.slice(at);
      else {
        const nums = [...s.matchAll(/\d+/g)];
        if (nums.length > 0) {
          const m = nums[rng.int(nums.length)];
          const repl = ['0', String(rng.int(100)), String(rng.nextU32()), '-4', '4.0', '1e2', '18446744073709551616', String(2 ** 53)][rng.int(8)];
          s = s.slice(0, m.index) + repl + s.slice(m.index! + m[0].length);
        }
      }
      b = withHeader(s, rng.next() < 0.2 ? data.subarray(0, rng.int(data.length + 1)) : data);
    } else if (kind === 7 && b.length >= 8) {               // structural edits of one entry
      const { text, data } = headerOf(b);
      let json: Record<string, Record<string, unknown>>;
      try {
        json = JSON.parse(text);
      } catch {
        return b;   // an earlier round broke the JSON already
      }
      if (!json || typeof json !== 'object') return b;
      const names = Object.keys(json);
      if (names.length > 0) {
        const name = names[rng.int(names.length)];
        const e = json[name];
        const r = rng.int(9);
        if (r === 8) {   // the same key twice, as JSON.parse would silently accept
          const text2 = JSON.stringify(json);
          return withHeader(`${text2.slice(0, -1)},${JSON.stringify(name)}:${JSON.stringify(e)}}`, data);
        }
        const anyValue = () => [null, 1, -1, 'F32', 'BF16', 'Q4', [], [1, 2], [3], { a: 'b' }, 2 ** 60, true][rng.int(12)];
        if (r === 0 && e && typeof e === 'object') e.dtype = ['F32', 'F16', 'BF16', 'F64', 'I64', 'I8', 'BOOL', 'U64', 'C64', 'f32', ''][rng.int(11)];
        else if (r === 1 && e && typeof e === 'object') e.shape = [[], [0], [1], [2, 2], [3], [2 ** 31], [1, 2, 3], [-2]][rng.int(8)];
        else if (r === 2 && e && typeof e === 'object') e.data_offsets = [rng.int(80), rng.int(80)];
        else if (r === 3 && e && typeof e === 'object') delete e[['dtype', 'shape', 'data_offsets'][rng.int(3)]];
        else if (r === 4 && e && typeof e === 'object') e[['extra', 'dtype', '__proto__'][rng.int(3)]] = anyValue() as never;
        else if (r === 5) json[name] = anyValue() as never;
        else if (r === 6) json.__metadata__ = anyValue() as never;
        else json[`${name}_copy`] = e;
      }
      b = withHeader(JSON.stringify(json) + ' '.repeat(rng.int(8)), data);
    } else if (b.length > 9) {                              // swap two header bytes
      const i = 8 + rng.int(b.length - 8), j = 8 + rng.int(b.length - 8);
      [b[i], b[j]] = [b[j], b[i]];
    }
    return b;
  };

  const tally = { accepted: 0, rejected: 0, tensorsRead: 0, readRejected: 0 };
  const reasons = new Map<string, number>();
  const tryAll = (b: Uint8Array, open: (b: Uint8Array) => ReturnType<typeof parseSafetensors>) => {
    let reader;
    try {
      reader = open(b);
    } catch (err) {
      if (!(err instanceof InputError)) throw new Error(`non-InputError ${String(err)} for ${JSON.stringify(Buffer.from(b.subarray(0, 300)).toString('latin1'))}`);
      assert.ok(!/[\r\n]/.test(err.message));
      tally.rejected++;
      const kind = err.message.replace(/^.*?not a valid safetensors file: /, '').replace(/; re-download.*$/, '')
        .replace(/"(?:[^"\\]|\\.)*"/g, 'S').replace(/\[[^\]]*\]?/g, '[.]').replace(/\d+/g, 'N').replace(/\(.*$/, '').slice(0, 40);
      reasons.set(kind, (reasons.get(kind) ?? 0) + 1);
      return;
    }
    tally.accepted++;
    try {
      for (const name of reader.keys()) {
        reader.info(name);
        reader.readBytes(name);
        try {
          const { data } = reader.read(name);
          assert.equal(data.length, reader.info(name).shape.reduce((a, c) => a * c, 1));
          tally.tensorsRead++;
        } catch (err) {
          if (!(err instanceof InputError)) throw err;
          tally.readRejected++;
        }
      }
    } finally {
      reader.close();
    }
  };

  const cases = 20_000;
  const start = performance.now();
  let slowest = 0;
  for (let c = 0; c < cases; c++) {
    let b = bases[rng.int(bases.length)];
    const rounds = 1 + rng.int(3);
    for (let r = 0; r < rounds; r++) b = mutate(b);
    const t0 = performance.now();
    tryAll(b, (x) => parseSafetensors(x, 'fuzz'));
    slowest = Math.max(slowest, performance.now() - t0);
  }
  // A few hundred through real files, to cover the file reader's paths as well.
  const dir = tmpDir(t);
  const file = path.join(dir, 'fuzz.safetensors');
  const fileCases = 300;
  for (let c = 0; c < fileCases; c++) {
    let b = bases[rng.int(bases.length)];
    b = mutate(b);
    fs.writeFileSync(file, b);
    tryAll(b, () => openSafetensors(file));
  }
  const ms = performance.now() - start;
  t.diagnostic(`fuzz: ${cases} in memory + ${fileCases} files in ${ms.toFixed(0)} ms (slowest case ${slowest.toFixed(1)} ms): ${JSON.stringify(tally)}`);
  t.diagnostic(`fuzz rejections by kind: ${JSON.stringify(Object.fromEntries([...reasons].sort((a, b) => b[1] - a[1])))}`);
  assert.ok(reasons.size >= 20, 'the mutations reach most checks');
  assert.ok(tally.accepted > 200 && tally.rejected > cases / 2, JSON.stringify(tally));
  assert.ok(slowest < 1000, `a case took ${slowest} ms`);
});

test('sharded checkpoints: index validated, tensors read across shards', async (t) => {
  const dir = tmpDir(t);
  const a = { dtype: 'F32' as const, shape: [2], data: new Float32Array([1, 2]) };
  const b = { dtype: 'F32' as const, shape: [1, 2], data: new Float32Array([3, 4]) };
  const c = { dtype: 'I64' as const, shape: [2], data: new BigInt64Array([5n, 6n]) };
  const s1 = 'model-00001-of-00002.safetensors', s2 = 'model-00002-of-00002.safetensors';
  await saveSafetensors(path.join(dir, s1), { 'x.a': a, 'x.b': b });
  await saveSafetensors(path.join(dir, s2), { 'y.c': c }, { format: 'pt', shard: '2' });
  const writeIndex = (index: unknown) => fs.writeFileSync(path.join(dir, SAFETENSORS_INDEX), typeof index === 'string' ? index : JSON.stringify(index));
  const good = { metadata: { total_size: 40 }, weight_map: { 'x.a': s1, 'x.b': s1, 'y.c': s2 } };
  writeIndex(good);

  const r = readShardedIndex(dir);
  assert.deepEqual(r.keys(), ['x.a', 'x.b', 'y.c']);
  assert.deepEqual(r.files, [path.join(dir, s1), path.join(dir, s2)]);
  assert.deepEqual(r.indexMetadata, { total_size: 40 });
  assert.deepEqual(r.metadata, { format: 'pt' });
  assert.deepEqual(r.info('x.b'), { dtype: 'F32', shape: [1, 2], byteLength: 8 });
  assert.deepEqual(r.readFloat32('x.b'), new Float32Array([3, 4]));
  assert.deepEqual(r.read('y.c'), { dtype: 'I64', shape: [2], data: new Int32Array([5, 6]) });
  assert.ok(r.has('x.a') && !r.has('z'));
  assertInputError(() => r.info('z'), /no tensor named "z" in the weight_map/);
  r.close();
  readShardedIndex(path.join(dir, SAFETENSORS_INDEX)).close();   // the index file itself works too

  const bad: [string, unknown, RegExp][] = [
    ['not JSON', '{"weight_map":', /not valid JSON/],
    ['duplicate key', `{"weight_map":{"x.a":"${s1}","x.a":"${s1}"}}`, /duplicate key "x.a"/],
    ['no weight_map', { metadata: {} }, /"weight_map" is missing or not an object/],
    ['empty weight_map', { weight_map: {} }, /"weight_map" is empty/],
    ['path traversal', { weight_map: { ...good.weight_map, 'x.a': `../${s1}` } }, /weight_map entry for "x.a" is "..\/model-00001/],
    ['not a string', { weight_map: { ...good.weight_map, 'x.a': 1 } }, /weight_map entry for "x.a" is 1/],
    ['missing shard', { weight_map: { ...good.weight_map, 'x.a': 'model-00003.safetensors' } }, /model-00003\.safetensors: shard listed in .* is missing/],
    ['name not in its shard', { weight_map: { ...good.weight_map, 'x.a': s2 } }, /tensor "x.a" is mapped to model-00002-of-00002.safetensors, which does not contain it/],
    ['unmapped shard tensor', { weight_map: { 'x.a': s1, 'y.c': s2 } }, /model-00001-of-00002.safetensors holds 1 tensor\(s\) not mapped to it, e.g. "x.b"/],
  ];
  for (const [what, index, pattern] of bad) {
    writeIndex(index);
    await t.test(what, () => assertInputError(() => readShardedIndex(dir), pattern));
  }
  writeIndex({ weight_map: { 'x.a': s1, 'y.c': s2 } });
  const lenient = readShardedIndex(dir, { unmapped: 'ignore' });
  assert.deepEqual(lenient.keys(), ['x.a', 'y.c']);
  lenient.close();
  fs.rmSync(path.join(dir, SAFETENSORS_INDEX));
  assertInputError(() => readShardedIndex(dir), /model\.safetensors\.index\.json: no such safetensors index file/);
  fs.writeFileSync(path.join(dir, s2), new Uint8Array([1, 2, 3]));
  writeIndex(good);
  assertInputError(() => readShardedIndex(dir), /model-00002-of-00002\.safetensors: not a valid safetensors file: the file has 3 bytes/);
});

test('memory: reading a 200 MB F32 tensor costs about 200 MB, not 400', async (t) => {
  const dir = tmpDir(t);
  const file = path.join(dir, 'big.safetensors');
  const n = 50_000_000;   // 200 MB of float32
  {
    const data = new Float32Array(n);
    for (let i = 0; i < n; i += 4096) data[i] = i;
    data[n - 1] = -1;
    await saveSafetensors(file, { w: { dtype: 'F32', shape: [n / 1000, 1000], data } });
  }
  const moduleUrl = pathToFileURL(path.resolve(import.meta.dirname, '../../training/safetensors.ts')).href;
  // Runs in a fresh process so that the peak RSS (getrusage maxrss) belongs to this read alone.
  const measure = (mode: 'ours' | 'naive') => {
    const script = `
      import * as fs from 'node:fs';
      const { openSafetensors } = await import(${JSON.stringify(moduleUrl)});
      const file = ${JSON.stringify(file)};
      const before = process.memoryUsage();
      let a;
      if (${JSON.stringify(mode)} === 'ours') {
        const r = openSafetensors(file); a = r.readFloat32('w'); r.close();
      } else {   // the naive way: whole file into a Buffer, then a copy into an aligned array
        const buf = fs.readFileSync(file); const n = Number(buf.readBigUInt64LE(0));
        a = new Float32Array(buf.buffer.slice(buf.byteOffset + 8 + n, buf.byteOffset + buf.length));
      }
      const after = process.memoryUsage();
      const peak = process.resourceUsage().maxRSS * 1024;
      const ok = a.length === ${n} && a[4096] === 4096 && a[${n - 1}] === -1;
      console.log(JSON.stringify({ ok, rss: after.rss - before.rss, arrayBuffers: after.arrayBuffers - before.arrayBuffers, peak: peak - before.rss }));
    `;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout.trim()) as { ok: boolean; rss: number; arrayBuffers: number; peak: number };
  };
  const MB = 2 ** 20;
  const size = 4 * n;
  const ours = measure('ours');
  const naive = measure('naive');
  const fmt = (m: typeof ours) => `rss +${(m.rss / MB).toFixed(0)} MiB, arrayBuffers +${(m.arrayBuffers / MB).toFixed(0)} MiB, peak rss +${(m.peak / MB).toFixed(0)} MiB`;
  t.diagnostic(`reading ${(size / MB).toFixed(0)} MiB: readFloat32 ${fmt(ours)}; naive readFileSync+copy ${fmt(naive)}`);
  assert.ok(ours.ok && naive.ok);
  assert.ok(Math.abs(ours.arrayBuffers - size) < 8 * MB, `arrayBuffers grew by ${ours.arrayBuffers}`);
  assert.ok(ours.peak < 1.3 * size, `peak RSS grew by ${(ours.peak / MB).toFixed(0)} MiB, more than 1.3 x the tensor`);
  assert.ok(ours.rss > 0.9 * size, `RSS grew by only ${(ours.rss / MB).toFixed(0)} MiB: was the tensor read at all?`);
  assert.ok(naive.peak > 1.7 * size, 'the measurement tells one copy from two');
});
