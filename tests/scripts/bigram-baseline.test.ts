// scripts/bigram-baseline.ts: on walks over a fixed successor map of 20 words (each word decides
// the next), both neighbours decide every word, so the two-neighbour count model gets nearly every
// held-out word right where the unigram distribution gets ~1 in 20; and a missing --data is
// refused with exit 2.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Rng } from '../../common/rng.ts';
import { preparedFixture, ROOT } from '../training/train-helpers.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-bigram-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
const script = path.join(ROOT, 'scripts', 'bigram-baseline.ts');
const run = (args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', script, ...args], { cwd: ROOT, encoding: 'utf8' });

test('bigram baseline: where the neighbours decide a word, the count model finds it; the unigram does not', async () => {
  const W = 20;
  const rng = new Rng(5);
  const next = Array.from({ length: W }, (_, i) => (i * 7 + 3) % W); // a permutation (7 is prime to 20)
  const docs = Array.from({ length: 200 }, () => {
    const words: string[] = [];
    for (let k = 0, w = Math.floor(rng.next() * W); k < 80; k++, w = next[w]) words.push(`w${w}`);
    return words.join(' ');
  });
  const fx = await preparedFixture(path.join(tmp, 'pairs'), docs, { vocabSize: 200, seqLen: 32 });
  const r = run(['--data', fx.dataDir, '--positions', '1000', '--json']);
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { positions: number; unigram: { loss: number; accuracy: number }; bigram_both_neighbours: { loss: number; accuracy: number } };
  assert.equal(out.positions, 1000);
  // With n = 1,000 positions a share's standard error is at most 1.6%: both bounds are far outside chance.
  assert.ok(out.bigram_both_neighbours.accuracy >= 0.9, `bigram accuracy ${out.bigram_both_neighbours.accuracy}`);
  assert.ok(out.unigram.accuracy <= 0.15, `unigram accuracy ${out.unigram.accuracy}`);
  assert.ok(Math.abs(out.unigram.loss - Math.log(W)) < 0.1, `unigram loss ${out.unigram.loss}, ln ${W} = ${Math.log(W).toFixed(3)}`);
  assert.ok(out.bigram_both_neighbours.loss < 0.5, `bigram loss ${out.bigram_both_neighbours.loss}`);
});

test('bigram baseline: without --data it says what to pass, exit 2', () => {
  const r = run([]);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /^bigram-baseline: --data DIR \(a folder written by `mlm prepare`\) is required\n$/);
});
