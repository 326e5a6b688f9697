// The seeded RNG: reference vectors of xoshiro128**, state round trips, uniformity of int().
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../common/rng.ts';

test('xoshiro128** matches the reference output for state [1, 2, 3, 4]', () => {
  // Worked by hand from the published algorithm (Blackman and Vigna): 11520, 0, 5927040, 70819200.
  const rng = new Rng([1, 2, 3, 4]);
  assert.deepEqual([rng.nextU32(), rng.nextU32(), rng.nextU32(), rng.nextU32()], [11520, 0, 5927040, 70819200]);
});

test('state save and restore continue the same stream', () => {
  const a = new Rng(7);
  for (let i = 0; i < 100; i++) a.next();
  const saved = a.getState();
  const expected = Array.from({ length: 50 }, () => a.nextU32());
  const b = new Rng(saved);
  assert.deepEqual(Array.from({ length: 50 }, () => b.nextU32()), expected);
  assert.deepEqual(JSON.parse(JSON.stringify(saved)), saved, 'state is plain JSON');
});

test('different seeds and derived streams differ; same seed repeats', () => {
  const first = (r: Rng) => Array.from({ length: 8 }, () => r.nextU32());
  assert.deepEqual(first(new Rng(1)), first(new Rng(1)));
  assert.notDeepEqual(first(new Rng(1)), first(new Rng(2)));
  assert.notDeepEqual(first(Rng.derive(1, 0)), first(Rng.derive(1, 1)));
  assert.deepEqual(first(Rng.derive(5, 3, 9)), first(Rng.derive(5, 3, 9)));
});

test('int(n) is uniform within 4 standard deviations per bucket', () => {
  const rng = new Rng(123);
  const n = 10, draws = 200_000;
  const counts = new Array(n).fill(0);
  for (let i = 0; i < draws; i++) counts[rng.int(n)]++;
  const p = 1 / n, sd = Math.sqrt(draws * p * (1 - p));
  for (const c of counts) assert.ok(Math.abs(c - draws * p) < 4 * sd, `bucket count ${c} vs ${draws * p} +- ${4 * sd}`);
});

test('shuffle is a permutation and is seeded', () => {
  const a = Array.from({ length: 1000 }, (_, i) => i);
  const b = a.slice();
  new Rng(9).shuffle(a);
  new Rng(9).shuffle(b);
  assert.deepEqual(a, b);
  assert.deepEqual(a.slice().sort((x, y) => x - y), Array.from({ length: 1000 }, (_, i) => i));
  assert.notDeepEqual(a, Array.from({ length: 1000 }, (_, i) => i));
});

test('bad seeds and states are refused', () => {
  assert.throws(() => new Rng(1.5), /integer/);
  assert.throws(() => new Rng([1, 2, 3] as unknown as [number, number, number, number]), /invalid RNG state/);
  // All zero: every draw would be 0 forever (every token masked); a damaged trainer_state.json.
  assert.throws(() => new Rng([0, 0, 0, 0]), /invalid RNG state \[0,0,0,0\]: all four words are zero.*trainer_state\.json.*resume from another checkpoint/);
  assert.throws(() => new Rng(1).setState([0, 0, 0, 0]), /all four words are zero/);
  assert.doesNotThrow(() => new Rng([0, 0, 0, 1]));
});
