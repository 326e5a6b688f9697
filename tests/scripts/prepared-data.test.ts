// `mlm train` on a damaged prepared folder: a shard whose bytes no longer match the manifest's
// SHA-256 (one id changed to another valid id) and a shard holding ids outside the vocabulary
// (checksums made to match) are bad input: exit 2, one line naming the shard, advice to prepare again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { brownDocuments, MLM, preparedFixture, ROOT, writeTinyConfig } from '../training/train-helpers.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlm-prepared-data-'));
const config = writeTinyConfig(path.join(tmp, 'tiny.json'), { max_position_embeddings: 32 });

function train(data: string, out: string) {
  const r = spawnSync(process.execPath, [MLM, 'train', '--config', config, '--data', data, '--out', out, '--steps', '2', '--batch-size', '4', '--no-progress'],
    { cwd: ROOT, encoding: 'utf8', env: { ...process.env, MLM_BACKEND: 'wasm', MLM_DEBUG: '' } });
  const errors = r.stderr.split('\n').filter((l) => l.startsWith('mlm: '));
  return { status: r.status, errors, stderr: r.stderr };
}

test('mlm train refuses a shard that does not match its checksum, and one with out-of-vocabulary ids (exit 2, shard named)', async () => {
  const fx = await preparedFixture(path.join(tmp, 'fx'), brownDocuments(20_000), { vocabSize: 300, seqLen: 32 });
  const shard = path.join(fx.dataDir, 'train-00000.bin');
  const original = fs.readFileSync(shard);

  // Sparse corruption: one id becomes another valid id.
  const sparse = Buffer.from(original);
  sparse.writeUInt16LE((sparse.readUInt16LE(2 * 40) + 1) % 300, 2 * 40);
  fs.writeFileSync(shard, sparse);
  const a = train(fx.dataDir, path.join(tmp, 'run-a'));
  assert.equal(a.status, 2, a.stderr);
  assert.deepEqual(a.errors, [`mlm: error: shard ${shard} does not match its SHA-256 in ${path.join(fx.dataDir, 'manifest.json')} (damaged or edited); run \`mlm prepare\` again to rebuild ${fx.dataDir}`]);

  // Dense bad ids with a matching checksum (as a buggy writer would leave): caught when read.
  const dense = Buffer.from(original);
  for (let i = 0; i < dense.length; i += 2) dense.writeUInt16LE(60000, i);
  fs.writeFileSync(shard, dense);
  const manifestFile = path.join(fx.dataDir, 'manifest.json');
  const m = JSON.parse(fs.readFileSync(manifestFile, 'utf8'));
  m.splits.train.shards[0].sha256 = createHash('sha256').update(dense).digest('hex');
  fs.writeFileSync(manifestFile, JSON.stringify(m));
  const b = train(fx.dataDir, path.join(tmp, 'run-b'));
  assert.equal(b.status, 2, b.stderr);
  assert.equal(b.errors.length, 1, b.stderr);
  assert.match(b.errors[0], new RegExp(`^mlm: error: shard ${shard.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} holds token id 60000 \\(row \\d+, position \\d+\\), outside the tokenizer's vocabulary of \\d+; the folder is damaged, run \`mlm prepare\` again$`));
});
