// Learning-rate schedules (training/schedule.ts) against their formulas at every step, and the
// values transformers' get_linear_schedule_with_warmup / get_cosine_schedule_with_warmup give.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InputError } from '../../common/errors.ts';
import { makeSchedule, warmupSteps } from '../../training/schedule.ts';

const close = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) <= 1e-12 * Math.max(1, Math.abs(b)), `${what}: ${a} != ${b}`);

test('--warmup: a fraction rounds up to steps (HF get_warmup_steps); >= 1 counts steps', () => {
  assert.equal(warmupSteps(0.06, 1000), 60);
  assert.equal(warmupSteps(0.06, 50), 3); // ceil(3.0)
  assert.equal(warmupSteps(0.1, 33), 4); // ceil(3.3)
  assert.equal(warmupSteps(0, 100), 0);
  assert.equal(warmupSteps(25, 100), 25);
  assert.throws(() => warmupSteps(2.5, 100), InputError);
  assert.throws(() => warmupSteps(-1, 100), InputError);
});

test('linear: warmup then linear decay to 0, at every step', () => {
  for (const [total, warmup] of [[100, 10], [37, 0], [20, 0.25], [5, 5]] as const) {
    const s = makeSchedule('linear', 3e-4, warmup, total);
    const W = s.warmupSteps;
    for (let step = 0; step <= total + 2; step++) {
      const want = step < W ? 3e-4 * (step / W) : 3e-4 * Math.max(0, (total - step) / Math.max(1, total - W));
      close(s.lr(step), want, `linear total ${total} warmup ${warmup} step ${step}`);
    }
    assert.equal(s.lr(total), 0);
  }
});

test('cosine: warmup then half a cosine to 0, at every step', () => {
  for (const [total, warmup] of [[100, 10], [40, 0], [12, 0.5]] as const) {
    const s = makeSchedule('cosine', 1e-3, warmup, total);
    const W = s.warmupSteps;
    for (let step = 0; step <= total; step++) {
      const want = step < W ? 1e-3 * (step / W) : 1e-3 * Math.max(0, 0.5 * (1 + Math.cos((Math.PI * (step - W)) / Math.max(1, total - W))));
      close(s.lr(step), want, `cosine total ${total} warmup ${warmup} step ${step}`);
    }
    close(s.lr(W), 1e-3, 'peak right after warmup');
    close(s.lr(total), 0, 'zero at the end');
  }
});

test('values transformers gives (LambdaLR lambdas, first update has lr 0 under warmup)', () => {
  const lin = makeSchedule('linear', 1, 4, 10);
  assert.deepEqual([0, 1, 2, 3, 4, 5, 9, 10].map((s) => lin.lr(s)), [0, 0.25, 0.5, 0.75, 1, 5 / 6, 1 / 6, 0]);
  const cos = makeSchedule('cosine', 1, 2, 6);
  close(cos.lr(3), 0.5 * (1 + Math.cos(Math.PI * 0.25)), 'cosine step 3');
  close(cos.lr(4), 0.5, 'cosine midpoint');
  const constant = makeSchedule('constant', 2, 2, 10);
  assert.deepEqual([0, 1, 2, 9].map((s) => constant.lr(s)), [0, 1, 2, 2]);
});

test('bad schedules are refused', () => {
  assert.throws(() => makeSchedule('step' as never, 1e-3, 0, 10), /unknown --schedule 'step'/);
  assert.throws(() => makeSchedule('linear', 0, 0, 10), /--lr must be a positive number/);
  assert.throws(() => makeSchedule('linear', Number.NaN, 0, 10), InputError);
});
