// The best checkpoint and early stopping, as transformers' Trainer does them
// (`metric_for_best_model`, `greater_is_better`, `load_best_model_at_end`, EarlyStoppingCallback):
//
// - The metric is an evaluation metric by its logged name (eval_loss, eval_perplexity,
//   eval_accuracy); a name without the `eval_` prefix gets it, as transformers adds it.
// - Whether greater is better is inferred from the name, as transformers does (a name ending in
//   "loss" is lower-is-better) and, since mlmkit also logs perplexity, "perplexity" likewise.
// - Early stopping: after each evaluation the value is compared with the best of the EARLIER
//   evaluations; it counts as an improvement when it is better by more than the threshold
//   (absolute difference), which resets the patience counter, otherwise the counter grows; the
//   run stops once the counter reaches the patience. The first evaluation always improves.
//
// The counter is a pure function of the evaluation entries of the metric history, which every
// checkpoint's trainer_state.json holds (log_history): a resumed run recomputes it from there and
// therefore stops at the same step as the uninterrupted run.
import { InputError } from '../common/errors.ts';
import type { EvalLogEntry, MetricsEntry } from './report.ts';

/** The metrics an evaluation logs that can choose the best model. */
export const BEST_METRICS = ['eval_loss', 'eval_perplexity', 'eval_accuracy'] as const;
export type BestMetric = (typeof BEST_METRICS)[number];

/** `--metric-for-best` by its logged name (the `eval_` prefix added when missing); InputError for others. */
export function parseBestMetric(name: string): BestMetric {
  const full = name.startsWith('eval_') ? name : `eval_${name}`;
  if (!(BEST_METRICS as readonly string[]).includes(full)) {
    throw new InputError(`--metric-for-best ${name} is not an evaluation metric; use one of ${BEST_METRICS.join(', ')}`);
  }
  return full as BestMetric;
}

/** transformers' inference: names ending in "loss" (here also "perplexity") are lower-is-better. */
export function greaterIsBetter(metric: BestMetric): boolean {
  return !(metric.endsWith('loss') || metric.endsWith('perplexity'));
}

/** Whether `value` beats `best` (null: nothing yet) by more than `threshold`. */
export function improves(value: number, best: number | null, greater: boolean, threshold = 0): boolean {
  if (best === null) return true;
  return (greater ? value > best : value < best) && Math.abs(value - best) > threshold;
}

export interface EarlyStoppingState {
  /** The best value over the evaluations seen (null: none). */
  best: number | null;
  /** Evaluations since the last improvement. */
  counter: number;
}

/** The early-stopping counter after the evaluations of `history` (see the file header). */
export function earlyStoppingState(history: readonly MetricsEntry[], metric: BestMetric, threshold: number): EarlyStoppingState {
  const greater = greaterIsBetter(metric);
  let state: EarlyStoppingState = { best: null, counter: 0 };
  for (const e of history) {
    if (!('eval_loss' in e)) continue;
    state = afterEvaluation(state, (e as EvalLogEntry)[metric], greater, threshold);
  }
  return state;
}

/** The counter after one more evaluation with value `value`. */
export function afterEvaluation(state: EarlyStoppingState, value: number, greater: boolean, threshold: number): EarlyStoppingState {
  if (improves(value, state.best, greater, threshold)) return { best: value, counter: 0 };
  const best = state.best !== null && improves(value, state.best, greater, 0) ? value : state.best;
  return { best, counter: state.counter + 1 };
}

/**
 * The best evaluation of `history` by `metric` among the steps that still have a checkpoint
 * (`checkpointAt` gives its folder, or null), as the run would have chosen it had it used `metric`
 * from the start: a later value must improve on the best so far (equal values keep the earlier).
 */
export function bestOfHistory(
  history: readonly MetricsEntry[],
  metric: BestMetric,
  checkpointAt: (step: number) => string | null,
): { value: number; step: number; checkpoint: string } | null {
  const greater = greaterIsBetter(metric);
  let best: { value: number; step: number; checkpoint: string } | null = null;
  for (const e of history) {
    if (!('eval_loss' in e)) continue;
    const value = (e as EvalLogEntry)[metric];
    const checkpoint = checkpointAt(e.step);
    if (checkpoint !== null && improves(value, best?.value ?? null, greater)) best = { value, step: e.step, checkpoint };
  }
  return best;
}
