// Token shards: write/read round trips, manifest validation, checksums, and the seeded row order
// of RowStream with exact resume from a saved position.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  FORMAT, FORMAT_VERSION, MANIFEST, readManifest, ShardWriter, SplitReader, verifyShards,
  type Manifest, type SplitInfo, type TokenDtype,
} from '../../data/shards.ts';
import { RowStream } from '../../data/batches.ts';
import { Rng } from '../../common/rng.ts';
import { InputError } from '../../common/errors.ts';

const T = 16;

function makeFolder(rows: number, dtype: TokenDtype, vocab: number, validationRows = 3) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlm-shards-'));
  const rng = new Rng(1);
  const data: { ids: Uint32Array; words: Uint8Array }[] = [];
  const write = (split: 'train' | 'validation', n: number): SplitInfo => {
    // 10 rows per shard, so several shards are exercised.
    const w = new ShardWriter(dir, split, T, dtype, 10 * T * (dtype === 'uint16' ? 2 : 4));
    for (let r = 0; r < n; r++) {
      const ids = new Uint32Array(T).map(() => rng.int(vocab));
      const words = new Uint8Array(T).map(() => rng.int(2));
      if (split === 'train') data.push({ ids, words });
      w.writeRow(ids, words);
    }
    const shards = w.finish();
    return { documents: n, rows: w.rows, tokens: n * T, words: 0, unknown_tokens: 0, truncated: 0, shards };
  };
  const splits = { train: write('train', rows), validation: write('validation', validationRows) };
  const manifest: Manifest = {
    format: FORMAT, version: FORMAT_VERSION, created_by: 'test',
    tokenizer: { source: 'x', revision: null, sha256: 'x', family: 'bert', vocab_size: vocab, pad_token_id: 0, cls_token_id: 2, sep_token_id: 3, mask_token_id: 4, unk_token_id: 1 },
    seq_len: T, mode: 'blocks', dtype, seed: 42, validation: { split: 0.1 }, options: {}, inputs: [], splits,
  };
  fs.writeFileSync(path.join(dir, MANIFEST), JSON.stringify(manifest));
  return { dir, data, manifest };
}

for (const [dtype, vocab] of [['uint16', 30522], ['uint32', 250_002]] as const) {
  test(`${dtype} shards round trip rows and word starts across shard files`, async () => {
    const { dir, data } = makeFolder(35, dtype, vocab);
    const m = await readManifest(dir);
    assert.equal(m.splits.train.shards.length, 4);
    assert.equal(fs.statSync(path.join(dir, 'train-00000.bin')).size, 10 * T * (dtype === 'uint16' ? 2 : 4));
    await verifyShards(dir, m);
    const reader = new SplitReader(dir, m, 'train');
    assert.equal(reader.rows, 35);
    const ids = new Uint32Array(T), words = new Uint8Array(T);
    for (let r = 0; r < 35; r++) {
      reader.readRow(r, ids, words, 0);
      assert.deepEqual(ids, data[r].ids);
      assert.deepEqual(words, data[r].words);
    }
    reader.close();
  });
}

test('shards are plain little-endian arrays other tools can read', async () => {
  const { dir, data } = makeFolder(12, 'uint16', 1000);
  const buf = fs.readFileSync(path.join(dir, 'train-00001.bin'));
  assert.equal(buf.readUInt16LE(0), data[10].ids[0]);
  assert.equal(buf.readUInt16LE(2 * (T + 3)), data[11].ids[3]);
});

test('a damaged folder is refused with a clear error', async () => {
  const { dir, manifest } = makeFolder(12, 'uint16', 1000);
  // Checksum mismatch.
  const f = path.join(dir, 'train-00000.bin');
  const b = fs.readFileSync(f);
  b[5] ^= 0xff;
  fs.writeFileSync(f, b);
  await assert.rejects(verifyShards(dir, manifest), (e: Error) => e instanceof InputError && /train-00000\.bin does not match its SHA-256 in .*manifest\.json \(damaged or edited\); run `mlm prepare` again/.test(e.message));
  // Truncated shard.
  fs.truncateSync(f, 7);
  await assert.rejects(readManifest(dir), /train-00000\.bin has 7 bytes/);
  // Missing manifest (an interrupted prepare).
  fs.rmSync(path.join(dir, MANIFEST));
  await assert.rejects(readManifest(dir), (e: Error) => e instanceof InputError && /manifest\.json is missing/.test(e.message));
  await assert.rejects(readManifest(path.join(dir, 'nope')), /does not exist/);
});

test('a manifest naming a shard outside the folder, or with fields of the wrong type, is refused (InputError) before a shard is opened', async () => {
  const { dir, manifest } = makeFolder(12, 'uint16', 1000);
  // A shard moved out of the folder and named by a relative path, an absolute path, a number.
  const outside = path.join(path.dirname(dir), `${path.basename(dir)}-outside.bin`);
  fs.renameSync(path.join(dir, 'train-00000.bin'), outside);
  try {
    const shard0 = manifest.splits.train.shards[0]!;
    for (const file of [`../${path.basename(outside)}`, outside, 5, '', 'a/../../x.bin'] as unknown[]) {
      const edited = { ...manifest, splits: { ...manifest.splits, train: { ...manifest.splits.train, shards: [{ ...shard0, file }] } } };
      fs.writeFileSync(path.join(dir, MANIFEST), JSON.stringify(edited));
      await assert.rejects(readManifest(dir, { verify: false }), (e: Error) => e instanceof InputError &&
        /^the train shard file named in .*manifest\.json, .* is not a plain relative path inside .*; prepare the data again$/.test(e.message), String(file));
    }
    for (const [field, value, re] of [
      ['seq_len', '16', /has seq_len "16", not a whole number above 0/],
      ['dtype', 'float32', /has dtype "float32", not uint16 or uint32/],
    ] as const) {
      fs.writeFileSync(path.join(dir, MANIFEST), JSON.stringify({ ...manifest, [field]: value }));
      await assert.rejects(readManifest(dir, { verify: false }), (e: Error) => e instanceof InputError && re.test(e.message), field);
    }
    const rows = { ...manifest, splits: { ...manifest.splits, train: { ...manifest.splits.train, shards: [{ ...shard0, rows: -1 }] } } };
    fs.writeFileSync(path.join(dir, MANIFEST), JSON.stringify(rows));
    await assert.rejects(readManifest(dir, { verify: false }), (e: Error) => e instanceof InputError && /gives train shard train-00000\.bin -1 rows; the folder is damaged or edited, prepare the data again$/.test(e.message));
  } finally {
    fs.rmSync(outside, { force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('opening a folder verifies the shard checksums: one id changed to another valid id is refused (exit 2), naming the shard', async () => {
  const { dir } = makeFolder(25, 'uint16', 1000);
  assert.equal((await readManifest(dir)).splits.train.rows, 25); // intact: opens
  // Sparse corruption that no range check can see: one id in the second shard becomes another valid id.
  const f = path.join(dir, 'train-00001.bin');
  const b = fs.readFileSync(f);
  const v = b.readUInt16LE(2 * 37);
  b.writeUInt16LE((v + 1) % 1000, 2 * 37);
  fs.writeFileSync(f, b);
  await assert.rejects(readManifest(dir), (e: Error) => e instanceof InputError && e.exitCode === 2 &&
    e.message.includes(`shard ${f} does not match its SHA-256`) && /run `mlm prepare` again/.test(e.message));
  // The same folder without verification still opens (sizes are right).
  assert.equal((await readManifest(dir, { verify: false })).splits.train.rows, 25);
});

test('a shard id outside the vocabulary is bad input (InputError, exit 2) naming the shard, row and position', async () => {
  const { dir, manifest, data } = makeFolder(12, 'uint16', 1000);
  // Checksums match (the shard was written that way), but the manifest's tokenizer is smaller.
  const small = { ...manifest, tokenizer: { ...manifest.tokenizer, vocab_size: 500 } };
  const reader = new SplitReader(dir, small, 'train');
  const ids = new Uint32Array(T);
  let row = 0, pos = -1;
  for (; row < data.length && pos < 0; row++) pos = data[row].ids.findIndex((id) => id >= 500);
  row--;
  assert.ok(pos >= 0, 'the fixture holds an id >= 500');
  const shard = path.join(dir, `train-0000${Math.floor(row / 10)}.bin`);
  assert.throws(() => { for (let r = 0; r <= row; r++) reader.readRow(r, ids, null, 0); }, (e: Error) => e instanceof InputError && e.exitCode === 2 &&
    e.message === `shard ${shard} holds token id ${data[row].ids[pos]} (row ${row % 10}, position ${pos}), outside the tokenizer's vocabulary of 500; the folder is damaged, run \`mlm prepare\` again`);
  reader.close();
});

test('RowStream: a seeded permutation per epoch, different across epochs', async () => {
  const { dir, manifest } = makeFolder(40, 'uint16', 1000);
  const reader = new SplitReader(dir, manifest, 'train');
  const firstIds = (stream: RowStream, batches: number) => {
    const seen: number[] = [];
    for (let i = 0; i < batches; i++) {
      const b = stream.next()!;
      for (let r = 0; r < b.rows; r++) seen.push(b.ids[r * T] * 65536 + b.ids[r * T + 1]);
    }
    return seen;
  };
  const key = (r: number) => { const ids = new Uint32Array(T); reader.readRow(r, ids, null, 0); return ids[0] * 65536 + ids[1]; };
  const all = Array.from({ length: 40 }, (_, r) => key(r)).sort((a, b) => a - b);
  const s = new RowStream(reader, { batchSize: 8, seed: 3, shuffle: true, dropLast: true });
  assert.equal(s.batchesPerEpoch, 5);
  const epoch0 = firstIds(s, 5);
  const epoch1 = firstIds(s, 5);
  assert.deepEqual(epoch0.slice().sort((a, b) => a - b), all, 'epoch 0 visits every row once');
  assert.deepEqual(epoch1.slice().sort((a, b) => a - b), all, 'epoch 1 visits every row once');
  assert.notDeepEqual(epoch0, epoch1, 'the order changes between epochs');
  const again = new RowStream(reader, { batchSize: 8, seed: 3, shuffle: true, dropLast: true });
  assert.deepEqual(firstIds(again, 5), epoch0, 'same seed, same order');
});

test('RowStream: a restored position continues exactly like the uninterrupted stream', async () => {
  const { dir, manifest } = makeFolder(37, 'uint16', 1000);
  const reader = new SplitReader(dir, manifest, 'train');
  const opts = { batchSize: 6, seed: 11, shuffle: true, dropLast: true };
  const full = new RowStream(reader, opts);
  const seq: Uint32Array[] = [];
  for (let i = 0; i < 20; i++) seq.push(full.next()!.ids);
  const part = new RowStream(reader, opts);
  for (let i = 0; i < 9; i++) part.next();
  const saved = JSON.parse(JSON.stringify(part.position));
  const resumed = new RowStream(reader, opts);
  resumed.position = saved;
  for (let i = 9; i < 20; i++) assert.deepEqual(resumed.next()!.ids, seq[i], `batch ${i}`);
});

test('RowStream: one evaluation pass in file order, last batch smaller', async () => {
  const { dir, manifest } = makeFolder(13, 'uint16', 1000);
  const reader = new SplitReader(dir, manifest, 'train');
  const s = new RowStream(reader, { batchSize: 5, seed: 0, shuffle: false, dropLast: false });
  assert.deepEqual([s.next()!.rows, s.next()!.rows, s.next()!.rows], [5, 5, 3]);
  assert.equal(s.next(), null);
  s.rewind();
  assert.equal(s.next()!.rows, 5);
  assert.throws(() => new RowStream(reader, { batchSize: 14, seed: 0, shuffle: true, dropLast: true }), /fewer than --batch-size 14/);
});
