// The end of a training run (docs/formats.md, "The run folder"): the final model published at the
// run folder's root (the best checkpoint's with --load-best-at-end), the `--json` result and the
// *_results.json files of a finished run, and report.md with its charts (also for an interrupted
// run, which says how to continue).
import * as path from 'node:path';
import { readJson } from './model-card.ts';
import type { EvalLogEntry, MetricsEntry, TrainLogEntry } from './report.ts';
import { writeReport } from './report.ts';
import { publishFinalModel, saveError, writeResults } from './run-folder.ts';
import { argsRecord, type TrainOptions } from './train-options.ts';
import type { Window } from './train-state.ts';

/**
 * The `--json` result (docs/formats.md, "Command output": step, train_loss, eval_loss, eval_perplexity,
 * tokens_per_second, checkpoint), with transformers' other metric names, plus whether the run was
 * interrupted. The eval_ metrics are those of the final model (the best checkpoint's with
 * --load-best-at-end).
 */
export interface TrainResult {
  step: number;
  epoch: number;
  /** Mean training loss over every step of the run (as transformers' final train_loss). */
  train_loss: number | null;
  eval_loss: number | null;
  eval_perplexity: number | null;
  eval_accuracy: number | null;
  tokens_per_second: number | null;
  /** Wall-clock seconds of this session's training loop (a resumed run counts from the resume). */
  train_runtime: number;
  train_samples_per_second: number | null;
  train_steps_per_second: number | null;
  checkpoint: string | null;
  /** The folder of the final model: the run folder itself (null when the run did not finish). */
  model: string | null;
  best_model_checkpoint: string | null;
  /** The step early stopping ended the run at, or null. */
  stopped_early_at: number | null;
  interrupted: boolean;
}

/** What the loop leaves for the end of the run. */
export interface RunEnd {
  interrupted: boolean;
  step: number;
  totalSteps: number;
  epochAt: (step: number) => number;
  lastCheckpoint: string | null;
  best: { value: number; step: number; checkpoint: string } | null;
  /** --metric-for-best's name, for the message when the best model is loaded. */
  metric: string;
  history: MetricsEntry[];
  /** Sums over every step of the run, resumed sessions included. */
  totals: Window;
  stoppedEarlyAt: number | null;
  /** A resume that found the run already trained (or stopped early): no step ran in this session. */
  nothingToDo: boolean;
  /** This session: tokens and seconds in steps, steps, rows, the loop's wall seconds, and when the session began (performance.now()). */
  session: { tokens: number; seconds: number; steps: number; rows: number; loopSeconds: number; startedAt: number };
  /** Wall seconds of the run over every session. */
  wallSeconds: number;
  /** The report's lines about the model, the data and the backend. */
  notes: string[];
}

/** Publishes the final model, writes the results and the report, and returns the run's result. */
export async function finishRun(o: TrainOptions, log: (line: string) => void, e: RunEnd): Promise<TrainResult> {
  const { best, history, totals, session, step } = e;
  const finished = !e.interrupted && e.lastCheckpoint !== null;
  const finalFrom = o.loadBestAtEnd && best !== null ? best.checkpoint : e.lastCheckpoint;
  if (finished && finalFrom !== null) {
    if (o.loadBestAtEnd && best !== null) log(`loading the best model: ${best.checkpoint} (${e.metric} ${best.value.toFixed(4)} at step ${best.step})`);
    try {
      await publishFinalModel(o.out, finalFrom);
    } catch (err) {
      throw saveError(err, `the final model in ${o.out}`, o.out, e.lastCheckpoint);
    }
  }
  const evalEntries = history.filter((h): h is EvalLogEntry => 'eval_loss' in h);
  const finalEval = (o.loadBestAtEnd && best !== null ? evalEntries.find((h) => h.step === best.step) : undefined) ?? evalEntries[evalEntries.length - 1] ?? null;
  const loopSeconds = session.loopSeconds;
  const result: TrainResult = {
    step,
    train_loss: totals.steps > 0 ? totals.loss_sum / totals.steps : null,
    eval_loss: finalEval?.eval_loss ?? null,
    eval_perplexity: finalEval?.eval_perplexity ?? null,
    tokens_per_second: session.seconds > 0 ? session.tokens / session.seconds : null,
    checkpoint: e.lastCheckpoint,
    // The documented keys (docs/formats.md) above; transformers' other names and the run's outcome below.
    epoch: e.epochAt(step),
    eval_accuracy: finalEval?.eval_accuracy ?? null,
    train_runtime: loopSeconds,
    train_samples_per_second: loopSeconds > 0 ? session.rows / loopSeconds : null,
    train_steps_per_second: loopSeconds > 0 ? session.steps / loopSeconds : null,
    model: finished ? o.out : null,
    best_model_checkpoint: best?.checkpoint ?? null,
    stopped_early_at: e.stoppedEarlyAt,
    interrupted: e.interrupted,
  };
  // A resume with nothing to do keeps the run's record: its results and report describe the
  // sessions that trained, and this one's zero runtime would replace their figures.
  const recorded = e.nothingToDo ? readJson(path.join(o.out, 'train_results.json')) : null;
  if (recorded !== null) {
    for (const k of RECORDED_KEYS) if (typeof recorded[k] === 'number' || recorded[k] === null) (result[k] as number | null) = recorded[k] as number | null;
    return result;
  }
  if (finished) await writeResults(o.out, result, finalEval);
  const lastTrain = [...history].reverse().find((h): h is TrainLogEntry => !('eval_loss' in h));
  await writeReport(o.out, {
    title: `mlm train: ${path.basename(path.resolve(o.out))}`,
    notes: [...e.notes, ...(e.interrupted ? [`interrupted at step ${step} of ${e.totalSteps}; continue with --resume`] : [])],
    final: {
      step,
      total_steps: e.totalSteps,
      epoch: Number(e.epochAt(step).toFixed(3)),
      train_loss: result.train_loss,
      last_logged_loss: lastTrain?.loss ?? null,
      eval_loss: result.eval_loss,
      eval_perplexity: result.eval_perplexity,
      eval_accuracy: finalEval?.eval_accuracy ?? null,
      tokens_per_second: result.tokens_per_second === null ? null : Math.round(result.tokens_per_second),
      checkpoint: result.checkpoint,
      best_model_checkpoint: best?.checkpoint ?? null,
    },
    args: argsRecord(o),
    timing: { wall_seconds: e.wallSeconds, session_seconds: (performance.now() - session.startedAt) / 1000, step_seconds: totals.seconds, tokens: totals.tokens },
    finalEvalStep: finalEval?.step ?? null,
  });
  return result;
}

/** The throughput figures a finished run recorded in train_results.json (the rest is recomputed). */
const RECORDED_KEYS = ['train_runtime', 'train_samples_per_second', 'train_steps_per_second', 'tokens_per_second'] as const;
