// Dynamic loss scaling (training/loss-scale.ts): an overflowing step is skipped and halves the
// scale; growthInterval clean steps in a row double it (an overflow in between restarts the
// count); the state survives a JSON round trip and a restored scaler continues exactly as the
// original; a malformed saved state is an input error; overflows in a row lower the scale to its
// floor (1) and no further, and an overflow there is a one-line TrainingError saying what to do.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InputError, TrainingError } from '../../common/errors.ts';
import { DynamicLossScale, LOSS_SCALE_DEFAULTS } from '../../training/loss-scale.ts';
import { lossScaleFloorError } from '../../training/train-step.ts';

test('defaults are GradScaler\'s: 2^16, x2 after 2000 clean steps, x0.5 on overflow', () => {
  assert.deepEqual(LOSS_SCALE_DEFAULTS, { initScale: 65536, growthFactor: 2, backoffFactor: 0.5, growthInterval: 2000, minScale: 1 });
  assert.equal(new DynamicLossScale().scale, 65536);
});

test('an overflowing step is skipped and halves the scale; the clean count restarts', () => {
  const s = new DynamicLossScale({ growthInterval: 3 });
  assert.equal(s.update(true), true);
  assert.equal(s.update(true), true);
  assert.equal(s.cleanSteps, 2);
  assert.equal(s.update(false), false, 'skipped');
  assert.equal(s.scale, 32768);
  assert.equal(s.cleanSteps, 0);
  assert.equal(s.update(false), false);
  assert.equal(s.scale, 16384);
});

test('growthInterval clean steps in a row double the scale, not fewer', () => {
  const s = new DynamicLossScale({ initScale: 8, growthInterval: 4 });
  for (let i = 0; i < 3; i++) s.update(true);
  assert.equal(s.scale, 8, 'three clean steps: unchanged');
  s.update(true);
  assert.equal(s.scale, 16, 'the fourth doubles it');
  assert.equal(s.cleanSteps, 0);
  for (let i = 0; i < 3; i++) s.update(true);
  s.update(false);
  for (let i = 0; i < 3; i++) s.update(true);
  assert.equal(s.scale, 8, 'an overflow between restarts the count');
});

test('the state round-trips through JSON and the restored scaler continues as the original', () => {
  const a = new DynamicLossScale({ growthInterval: 5 });
  const pattern = [true, true, false, true, true, true, true, true, true, false, true, true];
  for (const f of pattern.slice(0, 7)) a.update(f);
  const saved = JSON.parse(JSON.stringify(a.getState()));
  assert.deepEqual(saved, { scale: 32768, clean_steps: 4 });
  const b = new DynamicLossScale({ growthInterval: 5 }, saved);
  for (const f of pattern.slice(7)) assert.equal(b.update(f), a.update(f));
  assert.deepEqual(b.getState(), a.getState());
});

test('a malformed saved state is an input error', () => {
  for (const bad of [{ scale: 0, clean_steps: 0 }, { scale: 1, clean_steps: -1 }, { scale: Number.NaN, clean_steps: 0 }, { scale: 2, clean_steps: 1.5 }]) {
    assert.throws(() => new DynamicLossScale({}, bad), (err: unknown) => err instanceof InputError && /loss scale/.test((err as Error).message));
  }
});

test('overflows in a row lower the scale to its floor of 1 and no further; the floor is reported', () => {
  const s = new DynamicLossScale();
  const seen: number[] = [];
  for (let i = 0; i < 2000; i++) {
    assert.equal(s.update(false), false, 'every overflowing step is skipped');
    seen.push(s.scale);
  }
  assert.deepEqual(seen.slice(0, 17), Array.from({ length: 17 }, (_, i) => 2 ** (15 - Math.min(i, 15))), 'halved sixteen times, from 2^16 to 1');
  assert.ok(seen.every((x) => x === 2 ** Math.round(Math.log2(x)) && x >= 1), 'powers of two, never below 1 (nor subnormal, nor 0)');
  assert.equal(s.scale, 1);
  assert.equal(s.atFloor(1), true);
  assert.equal(s.atFloor(2), false);
  // A floor between two halvings is reached, not passed.
  const odd = new DynamicLossScale({ initScale: 8, minScale: 3 });
  odd.update(false);
  odd.update(false);
  assert.equal(odd.scale, 3);
  // Clean steps grow it again from the floor.
  const g = new DynamicLossScale({ initScale: 2, growthInterval: 2 });
  g.update(false);
  g.update(false);
  g.update(true);
  g.update(true);
  assert.equal(g.scale, 2);
});

test('an overflow at the floor is a one-line TrainingError: what happened and what to do', () => {
  const err = lossScaleFloorError(1, 17, null);
  assert.ok(err instanceof TrainingError);
  assert.doesNotMatch(err.message, /\n/);
  assert.match(err.message, /at step 17 at loss scale 1, the floor/);
  assert.match(err.message, /not finite even unscaled/);
  assert.match(err.message, /no checkpoint was saved/);
  assert.match(err.message, /lower --lr, train with --precision fp32, or check the data$/);
  assert.match(lossScaleFloorError(1, 9, 'out/checkpoint-8').message, /the last good checkpoint is out\/checkpoint-8/);
});
