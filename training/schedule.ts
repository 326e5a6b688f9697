// Learning-rate schedules with linear warmup, as transformers' `get_scheduler` defines them.
//
// `step` is the 0-based index of the optimizer update about to be made, the argument transformers'
// LambdaLR passes to its lambda (the scheduler is stepped after each update, so update k uses
// lambda(k)). With W warmup steps and S total steps:
//   warmup   (step < W):  lr = base * step / W   (so the very first update, step 0, has lr 0,
//                         exactly as in transformers; W = 0 skips warmup)
//   linear:               lr = base * max(0, (S - step) / max(1, S - W))
//   cosine:               lr = base * max(0, 0.5 * (1 + cos(pi * (step - W) / max(1, S - W))))
//   constant:             lr = base
// References: transformers `optimization.py` (`_get_linear_schedule_with_warmup_lr_lambda`,
// `_get_cosine_schedule_with_warmup_lr_lambda` with num_cycles 0.5, `get_constant_schedule_with_warmup`)
// and `TrainingArguments.get_warmup_steps` (a ratio becomes ceil(ratio * S) steps).
import { InputError } from '../common/errors.ts';

export type ScheduleName = 'linear' | 'cosine' | 'constant';
export const SCHEDULES: readonly ScheduleName[] = ['linear', 'cosine', 'constant'];

export interface Schedule {
  readonly name: ScheduleName;
  readonly baseLr: number;
  readonly warmupSteps: number;
  readonly totalSteps: number;
  /** The learning rate of update `step` (0-based). */
  lr(step: number): number;
}

/** --warmup: a fraction of the total steps when below 1 (rounded up), else a number of steps. */
export function warmupSteps(warmup: number, totalSteps: number): number {
  if (!(Number.isFinite(warmup) && warmup >= 0)) throw new InputError(`--warmup must be a fraction in [0, 1) or a number of steps, got ${warmup}`);
  if (warmup < 1) return Math.ceil(warmup * totalSteps);
  if (!Number.isInteger(warmup)) throw new InputError(`--warmup ${warmup} is above 1, so it counts steps and must be an integer`);
  return warmup;
}

export function makeSchedule(name: ScheduleName, baseLr: number, warmup: number, totalSteps: number): Schedule {
  if (!SCHEDULES.includes(name)) throw new InputError(`unknown --schedule '${name}': use one of ${SCHEDULES.join(', ')}`);
  if (!(Number.isFinite(baseLr) && baseLr > 0)) throw new InputError(`--lr must be a positive number, got ${baseLr}`);
  if (!(Number.isInteger(totalSteps) && totalSteps > 0)) throw new Error(`total steps must be a positive integer, got ${totalSteps}`);
  const W = warmupSteps(warmup, totalSteps);
  const S = totalSteps;
  const factor = (step: number): number => {
    if (step < W) return step / Math.max(1, W);
    switch (name) {
      case 'linear':
        return Math.max(0, (S - step) / Math.max(1, S - W));
      case 'cosine': {
        const progress = (step - W) / Math.max(1, S - W);
        return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
      }
      case 'constant':
        return 1;
    }
  };
  return { name, baseLr, warmupSteps: W, totalSteps: S, lr: (step) => baseLr * factor(step) };
}
