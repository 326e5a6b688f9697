// Dynamic loss scaling (training/loss-scale.ts): an overflowing step is skipped and halves the
// scale; growthInterval clean steps in a row double it (an overflow in between restarts the
// count); the state survives a JSON round trip and a restored scaler continues exactly as the
// original; a malformed saved state is an input error.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InputError } from '../../common/errors.ts';
import { DynamicLossScale, LOSS_SCALE_DEFAULTS } from '../../training/loss-scale.ts';

test('defaults are GradScaler\'s: 2^16, x2 after 2000 clean steps, x0.5 on overflow', () => {
  assert.deepEqual(LOSS_SCALE_DEFAULTS, { initScale: 65536, growthFactor: 2, backoffFactor: 0.5, growthInterval: 2000 });
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
