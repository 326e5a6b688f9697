// `train()`: masked-language-model pretraining (random init from a config) and domain adaptation
// (from a checkpoint), one readable loop (docs/architecture.md, "Training"):
//
//   for each step: draw grad_accum masked batches -> lr at step -> forward + loss + gradients
//   (tf.variableGrads, per micro-batch, summed) -> read loss and gradient norm (one read; on
//   webgpu one step late, after the next step is queued: training/pending-step.ts) ->
//   stop on NaN/Inf -> clip by global norm -> AdamW -> log -> evaluate every N -> checkpoint every N
//
// Loss. The model's `maskedLossSum` runs the MLM head on the masked positions only (cramming's
// sparse prediction; equal to the full-logits loss, tests/training/models/bert.test.ts). Each
// micro-batch's SUM is divided by the masked-token count of the WHOLE accumulated batch, and the
// gradients are summed, so a step over 4 micro-batches equals one step over the 4x batch.
//
// Exact resume. Everything a step depends on is either saved or a function of (seed, step):
// weights and AdamW moments (float32, bit-exact), the data position and masking RNG
// (MaskedBatches.getState, restored, not replayed), the learning rate (a function of the step) and
// the dropout masks (seeded from (seed, step, micro-batch)). A resumed run therefore computes the
// same losses at every later step as the uninterrupted run, on the same backend.
//
// The run folder (--out): checkpoint-STEP/ (a Hugging Face model folder + trainer_state.json +
// optimizer.safetensors, written atomically by checkpoint.ts), metrics.jsonl, run.json, and at the
// end report.md with loss.svg and perplexity.svg. A run that finishes (not interrupted) also gets,
// as transformers' output_dir, the final model at its root (`publishFinalModel`: the last
// checkpoint's model files, or the best checkpoint's with --load-best-at-end; config.json last, so
// that a folder with config.json at its root is a finished run) and train_results.json,
// eval_results.json and all_results.json (`writeResults`). A resumed run that trains on removes the
// root model first. A folder holding anything else is refused. The
// folder is locked for the run (data/lock.ts), and a model too large for the machine's memory is
// refused before anything is allocated (`checkTrainingMemory`).
//
// Stopping. `signal` (SIGINT in the CLI) ends the run after the current step, with a checkpoint.
// --early-stopping-patience ends it after that many evaluations without improvement of
// --metric-for-best (training/best-model.ts), with a checkpoint; the counter is recomputed from the
// metric history on --resume, so a resumed run stops at the same step.
// A NaN or infinite loss or gradient norm stops the run before the update is applied, naming the
// step and the last good checkpoint (nothing is saved from the broken state). So does divergence
// (`divergence` below): a non-finite evaluation loss, or a training or evaluation loss above
// 3 x ln(vocab_size), three times the loss of guessing uniformly over the vocabulary.
//
// References: transformers `Trainer` (its step order, logging and checkpoint layout, trainer_state
// keys), `run_mlm.py`; PyTorch `clip_grad_norm_` (coefficient max_norm / (norm + 1e-6), capped at 1).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import type { Scalar, Tensor } from '@tensorflow/tfjs';
import { MaskedBatches, RowStream } from '../data/batches.ts';
import { InputError, requireInteger, requireOpenFraction, requireRegularFile } from '../common/errors.ts';
import { acquireLock } from '../data/lock.ts';
import { IGNORE_INDEX, type MlmBatch } from '../data/masking.ts';
import { Progress } from '../data/progress.ts';
import { Rng } from '../common/rng.ts';
import { readManifest, SplitReader, type Manifest } from '../data/shards.ts';
import { MlmTokenizer } from '../data/tokenizer.ts';
import { capabilitiesOf, type Tf } from './backend.ts';
import { CONFIG_FILE, loadModelFolder, maxSequenceLength, TOKENIZER_FILES, WEIGHTS_FILE, writeModelFolder } from './checkpoint.ts';
import {
  batchInputs, checkDataTokenizer, describeTokenizer, evaluateMasked, maskingFor, passBudgetBytes, rowBytes, rowsPerPass, splitBatch, type EvalResult,
} from './evaluate.ts';
import type { MaskedLM } from './models/bert.ts';
import { parameterCount, parseModelConfig, updateModelConfig, type ModelConfig } from './models/config.ts';
import type { ModelCapabilities } from './models/ops.ts';
import { createMaskedLM } from './models/roberta.ts';
import { unigramLogPrior, type InitBias } from './init-bias.ts';
import { afterEvaluation, earlyStoppingState, greaterIsBetter, improves, parseBestMetric } from './best-model.ts';
import { exportWeights, parameterTable, type ModelWeights } from './models/weights.ts';
import { DynamicLossScale } from './loss-scale.ts';
import { createAdamW, FlatAdamW, type TrainingOptimizer } from './flat-adamw.ts';
import { PendingStep, type IssuedStep } from './pending-step.ts';
import { describePrecision, resolvePrecision, withPrecision, type PrecisionName } from './precision.ts';
import { appendMetrics, writeMetrics, writeReport, type EvalLogEntry, type MetricsEntry, type TrainLogEntry } from './report.ts';
import { writeFileAtomic } from '../common/atomic.ts';
import { makeSchedule, type ScheduleName } from './schedule.ts';
import {
  checkpointName, listCheckpoints, newestCheckpoint, pruneCheckpoints, readOptimizerState, readTrainerState, STATE_FORMAT, STATE_VERSION,
  TRAINER_STATE, writeTrainerState, type TrainerState, type Window,
} from './train-state.ts';

export interface TrainOptions {
  /** --config FILE: pretrain from random init. */
  config?: string;
  /** --from DIR: adapt this local model folder (the CLI resolves Hub ids to their cache folder). */
  from?: string;
  /** What the user named for --from (a Hub id), for messages. */
  fromSource?: string;
  data: string;
  out: string;
  steps?: number;
  epochs?: number;
  batchSize: number;
  lr: number;
  /** A fraction of the steps when < 1, else steps. */
  warmup: number;
  schedule: ScheduleName;
  weightDecay: number;
  adamBeta1: number;
  adamBeta2: number;
  adamEpsilon: number;
  mlmProbability: number;
  wholeWordMask: boolean;
  /** Pretraining from --config only: the MLM head's output bias at step 0 (training/init-bias.ts). */
  initBias?: InitBias;
  gradAccum: number;
  /** 0 switches clipping off. */
  maxGradNorm: number;
  /** Evaluate every N steps (0: only at the end). */
  evalEvery: number;
  /** Batches of the validation split per evaluation (0: all). */
  evalBatches: number;
  logEvery: number;
  /** Save every N steps (0: only at the end). */
  saveEvery: number;
  /** Keep the newest K checkpoints plus the best (0: keep all). */
  saveTotalLimit: number;
  /** true: the newest complete checkpoint in --out; a string: that checkpoint folder. */
  resume: boolean | string;
  seed: number;
  /** Rows per forward/backward pass (memory; see evaluate.ts `rowsPerPass`); 0 or absent: automatic. */
  rowsPerPass?: number;
  /** Matrix-product precision (training/precision.ts); absent: fp32. fp16 scales the loss (training/loss-scale.ts). */
  precision?: PrecisionName;
  /** At the end, the best checkpoint (by `metricForBest`) becomes the final model (transformers' load_best_model_at_end). */
  loadBestAtEnd?: boolean;
  /** The evaluation metric that picks the best checkpoint (training/best-model.ts); default eval_loss. */
  metricForBest?: string;
  /** Stop after this many evaluations without improvement (0 or absent: never); EarlyStoppingCallback. */
  earlyStoppingPatience?: number;
  /** The improvement an evaluation must make to reset the patience (absolute; default 0). */
  earlyStoppingThreshold?: number;
}

/** Defaults of the CLI (transformers' where they exist; see scripts/commands/train.ts). */
export const TRAIN_DEFAULTS = {
  batchSize: 32,
  lr: 5e-4,
  warmup: 0.06,
  schedule: 'linear' as ScheduleName,
  weightDecay: 0.01,
  adamBeta1: 0.9,
  adamBeta2: 0.999,
  adamEpsilon: 1e-8,
  mlmProbability: 0.15,
  wholeWordMask: false,
  initBias: 'zeros' as InitBias,
  gradAccum: 1,
  maxGradNorm: 1.0,
  evalEvery: 500,
  evalBatches: 100,
  logEvery: 10,
  saveEvery: 500,
  saveTotalLimit: 0,
  resume: false as boolean | string,
  seed: 42,
  precision: 'fp32' as PrecisionName,
};

export interface StepInfo {
  step: number;
  loss: number;
  gradNorm: number;
  lr: number;
  seconds: number;
  /** Masked (scored) tokens in the step's batch. */
  masked: number;
}

export interface TrainContext {
  tf: Tf;
  /** `capabilities`: what the model's ops may use (BackendInfo's); by default `capabilitiesOf(tf, name)`. */
  backend: { name: string; device: string; capabilities?: ModelCapabilities };
  /** mlmkit's version, recorded in checkpoints. */
  version: string;
  /** Notes and warnings (stderr in the CLI). */
  log: (line: string) => void;
  progress: boolean;
  /** Aborting ends the run after the current step, with a checkpoint (SIGINT in the CLI). */
  signal?: AbortSignal;
  /** Called after every step (tests and benchmarks). */
  onStep?: (info: StepInfo) => void;
}

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

/** A failure while running (exit 1), e.g. a NaN loss; its message is one line. */
export class TrainingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TrainingError';
  }
}

// -------------------------------------------------------------------------------------------------
// The step's pieces (exported for tests)

/** Positions with a label in a batch. */
export function maskedCount(batch: MlmBatch): number {
  let n = 0;
  for (let i = 0; i < batch.labels.length; i++) if (batch.labels[i] !== IGNORE_INDEX) n++;
  return n;
}

/** The dropout seed of micro-batch `micro` of step `step` (1-based): a function of the run's seed only. */
export function dropoutSeed(seed: number, step: number, micro: number): number {
  return Rng.derive(seed, 0xd40f, step, micro).nextU32();
}

/**
 * Loss and gradients of one optimizer step over `batches` (the micro-batches of an accumulated
 * batch): each micro-batch's loss SUM is divided by the masked-token count of all of them, and
 * the gradients are added, so the result equals the full batch's mean loss and its gradients.
 * Gradients are keyed by Hugging Face name (a weight no micro-batch reaches has none). The caller
 * disposes `loss` and `grads`.
 */
export function computeGradients(
  tf: Tf,
  model: MaskedLM,
  batches: MlmBatch[],
  opts: { training: boolean; dropoutSeeds?: number[]; lossScale?: number },
): { loss: Scalar; grads: Map<string, Tensor>; maskedCount: number } {
  const scale = opts.lossScale ?? 1; // loss and gradients come out this many times larger
  const counts = batches.map(maskedCount);
  const total = counts.reduce((a, b) => a + b, 0);
  const varList = [...model.variables.values()];
  const nameOf = new Map<string, string>();
  for (const [name, v] of model.variables) nameOf.set(v.name, name);

  let loss: Scalar | null = null;
  const grads = new Map<string, Tensor>();
  for (let i = 0; i < batches.length; i++) {
    const batch = batches[i];
    if (counts[i] === 0) continue; // nothing to score in this micro-batch
    const { value, grads: g } = tf.tidy(() => {
      const inputs = batchInputs(tf, batch);
      return tf.variableGrads(() => {
        const sum = model.maskedLossSum(inputs, batch.labels, { training: opts.training, dropoutSeed: opts.dropoutSeeds?.[i] }).loss;
        const mean = tf.div(sum, total) as Scalar;
        return scale === 1 ? mean : (tf.mul(mean, scale) as Scalar);
      }, varList);
    });
    if (loss === null) {
      loss = value;
    } else {
      const next: Scalar = tf.add(loss, value);
      tf.dispose([loss, value]);
      loss = next;
    }
    for (const [tfName, t] of Object.entries(g)) {
      const name = nameOf.get(tfName)!;
      const prev = grads.get(name);
      if (prev === undefined) {
        grads.set(name, t);
      } else {
        grads.set(name, tf.add(prev, t));
        tf.dispose([prev, t]);
      }
    }
  }
  return { loss: loss ?? tf.scalar(0), grads, maskedCount: total };
}

/** sqrt(sum of squares) over all gradients, as a scalar tensor (the caller disposes it). */
export function globalNorm(tf: Tf, grads: ReadonlyMap<string, Tensor>): Scalar {
  if (grads.size === 0) return tf.scalar(0);
  return tf.tidy(() => {
    // Summed in groups of at most 8: one addN over every gradient needs one storage buffer per
    // input, and WebGPU allows 16 per shader, so Dawn would reject it (and the read gave 0).
    let terms: Tensor[] = [...grads.values()].map((g) => tf.sum(tf.square(g)));
    while (terms.length > 1) {
      const next: Tensor[] = [];
      for (let i = 0; i < terms.length; i += 8) next.push(terms.length - i === 1 ? terms[i] : tf.addN(terms.slice(i, i + 8)));
      terms = next;
    }
    return tf.sqrt(terms[0]) as Scalar;
  });
}

/** How many times the uniform guess's loss ln(V) a loss may reach before the run counts as diverged. */
export const DIVERGENCE_FACTOR = 3;

/**
 * Why a loss (`what`: "loss" for a training step, "evaluation loss") shows a diverged run, or null.
 * Non-finite: diverged. Finite: diverged above DIVERGENCE_FACTOR x ln(vocabSize). A model at
 * initialisation (weights ~ N(0, 0.02)) predicts nearly uniformly, so its loss is about ln(V);
 * training only lowers it. A loss of 3 ln(V) means the model gives the right token a geometric-mean
 * probability of V^-3, far worse than not having learnt at all, which no healthy run reaches (a
 * learning rate that is too high drives it to 1e3..1e18 within a few steps).
 */
export function divergence(what: string, loss: number, vocabSize: number): string | null {
  if (!Number.isFinite(loss)) return `${what} became ${loss}`;
  const limit = DIVERGENCE_FACTOR * Math.log(vocabSize);
  if (loss > limit) return `${what} exploded to ${loss.toPrecision(3)} (above ${limit.toFixed(2)} = ${DIVERGENCE_FACTOR} x ln(${vocabSize}), ${DIVERGENCE_FACTOR} times the loss of a uniform guess)`;
  return null;
}

/** The TrainingError that stops a diverged run at `step`, naming the last good checkpoint. */
export function divergedError(why: string, step: number, lastCheckpoint: string | null): TrainingError {
  const last = lastCheckpoint ? `the last good checkpoint is ${lastCheckpoint}` : 'no checkpoint was saved before it';
  return new TrainingError(`${why} at step ${step}; ${last}; lower --lr or check the data`);
}

/** PyTorch's clip_grad_norm_ coefficient: max_norm / (norm + 1e-6), capped at 1; 1 when off. */
export function clipScale(norm: number, maxNorm: number): number {
  return maxNorm > 0 ? Math.min(1, maxNorm / (norm + 1e-6)) : 1;
}

/** Reads the given scalars in one transfer (async: the only way to read on webgpu). */
async function readScalars(tf: Tf, scalars: Scalar[]): Promise<number[]> {
  const packed = tf.tidy(() => tf.stack(scalars));
  try {
    return Array.from(await packed.data());
  } finally {
    packed.dispose();
  }
}

export interface StepResult {
  loss: number;     // the batch's mean masked-token loss
  norm: number;     // global gradient norm before clipping
  masked: number;   // masked tokens in the batch
  applied: boolean; // false when the loss or the norm was not finite: nothing was changed
  /** With loss scaling: the scaled gradients overflowed (finite loss); the step was skipped and the scale lowered. */
  overflow?: boolean;
  /** With loss scaling: the scale the step ran at. */
  scale?: number;
  /** Held on the GPU because the step before it was not applied (see training/pending-step.ts): run it again. */
  held?: boolean;
}

/**
 * One optimizer step over the passes of a batch: gradients (summed over passes, normalised by the
 * batch's masked-token count), the global norm, one read of loss and norm, then AdamW with
 * clipping, unless either value is NaN or infinite. The trainer and `mlm bench` both run this.
 * The flat AdamW (webgpu) does the norm, the check and the update on the GPU and reads loss and
 * norm after the whole step is queued (training/flat-adamw.ts); the result is the same.
 */
export async function optimizerStep(
  tf: Tf,
  model: MaskedLM,
  optimizer: TrainingOptimizer,
  passes: MlmBatch[],
  o: { seed: number; step: number; lr: number; maxGradNorm: number; lossScale?: DynamicLossScale },
): Promise<StepResult> {
  return (await issueOptimizerStep(tf, model, optimizer, passes, o)).result;
}

/**
 * `optimizerStep` without waiting for the read where it can wait: with the flat AdamW the step is
 * queued on the GPU when this returns, and `late` is true (its result is read when awaited; the
 * caller may queue the next step first, see training/pending-step.ts). The per-tensor AdamW (the
 * CPU backends) needs the norm on the host before the update, so there `result` is already known.
 */
export async function issueOptimizerStep(
  tf: Tf,
  model: MaskedLM,
  optimizer: TrainingOptimizer,
  passes: MlmBatch[],
  o: { seed: number; step: number; lr: number; maxGradNorm: number; lossScale?: DynamicLossScale },
): Promise<IssuedStep<StepResult>> {
  const seeds = passes.map((_, i) => dropoutSeed(o.seed, o.step, i));
  // With loss scaling the loss, gradients and norm come out S times larger (S a power of two: the
  // division back is exact), and 1/S joins the clipping factor.
  const S = o.lossScale?.scale ?? 1;
  const { loss, grads, maskedCount: masked } = computeGradients(tf, model, passes, { training: true, dropoutSeeds: seeds, lossScale: S });
  // An overflow (gradients not finite, loss finite) under loss scaling skips the step and lowers S.
  // A held step (flat AdamW) says nothing about the scale: it is run again.
  const finish = (lossValue: number, norm: number, applied: boolean, held = false): StepResult => {
    const scale = o.lossScale === undefined ? {} : { scale: S };
    if (held) return { loss: lossValue, norm, masked, applied: false, held, ...scale };
    if (o.lossScale === undefined || !Number.isFinite(lossValue)) return { loss: lossValue, norm, masked, applied, ...scale };
    const kept = o.lossScale.update(Number.isFinite(norm));
    return kept ? { loss: lossValue, norm, masked, applied, ...scale } : { loss: lossValue, norm, masked, applied: false, overflow: true, ...scale };
  };
  if (optimizer instanceof FlatAdamW) {
    // Norm, clip, finite check and update queued on the GPU (1/S applied there); one read once the step is queued.
    const read = optimizer.update(grads, loss, o.lr, o.maxGradNorm, S);
    tf.dispose([loss, ...grads.values()]);
    return { late: true, result: read.then((r) => finish(r.loss, r.norm, r.applied, r.held)) };
  }
  const normT = globalNorm(tf, grads);
  const [scaledLoss, scaledNorm] = await readScalars(tf, [loss, normT]);
  tf.dispose([loss, normT]);
  const lossValue = scaledLoss / S;
  const norm = scaledNorm / S;
  const result = finish(lossValue, norm, Number.isFinite(lossValue) && Number.isFinite(norm));
  if (result.applied) optimizer.apply(grads, o.lr, clipScale(norm, o.maxGradNorm) / S);
  tf.dispose([...grads.values()]);
  return { late: false, result: Promise.resolve(result) };
}

// -------------------------------------------------------------------------------------------------
// Setting up: the run folder, the data's tokenizer, the model

/** The JSON results written at the run folder's root at the end, as transformers' Trainer names them. */
export const RESULT_FILES = ['train_results.json', 'eval_results.json', 'all_results.json'] as const;

/** The files of the final model at the run folder's root, config.json last (see `publishFinalModel`). */
export function finalModelFiles(): string[] {
  return [WEIGHTS_FILE, ...TOKENIZER_FILES, CONFIG_FILE];
}

/** Entries that a run folder may hold besides its checkpoints (and their temporary siblings). */
const RUN_ENTRY = new RegExp(
  '^(checkpoint-\\d+|\\.checkpoint-\\d+\\.ckpt-(tmp|old)-.*|' +
  `(metrics\\.jsonl|report\\.md|run\\.json|loss\\.svg|perplexity\\.svg|${[...RESULT_FILES, ...finalModelFiles()].map((f) => f.replace(/\./g, '\\.')).join('|')})(\\.tmp)?)$`,
);

/**
 * The final model at the run folder's root, as transformers' `output_dir`: the model files of the
 * checkpoint `from` are copied in, each under a temporary name then renamed, config.json last.
 * A folder with config.json at its root is a finished run (training/hub.ts `runFolderModel`); so a
 * crash part way leaves a run that still reads as unfinished, never a mix presented as final.
 */
export async function publishFinalModel(out: string, from: string): Promise<void> {
  await unpublishFinalModel(out);
  for (const name of finalModelFiles()) {
    const src = path.join(from, name);
    if (!fs.existsSync(src)) continue;
    const tmp = path.join(out, `${name}.tmp`);
    await fsp.copyFile(src, tmp);
    const fh = await fsp.open(tmp, 'r+');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, path.join(out, name));
  }
}

/** Removes the final model from the run folder's root, config.json first (the run reads as unfinished). */
export async function unpublishFinalModel(out: string): Promise<void> {
  for (const name of [...finalModelFiles()].reverse()) {
    await fsp.rm(path.join(out, name), { force: true });
    await fsp.rm(path.join(out, `${name}.tmp`), { force: true });
  }
}

/** Names in `out` that no training run wrote; throws when `out` is a file. */
function foreignEntries(out: string): { entries: string[]; foreign: string[] } {
  let st: fs.Stats;
  try {
    st = fs.statSync(out);
  } catch {
    return { entries: [], foreign: [] };
  }
  if (!st.isDirectory()) throw new InputError(`--out ${out} is a file; choose a folder for the run`);
  const entries = fs.readdirSync(out);
  return { entries, foreign: entries.filter((e) => !RUN_ENTRY.test(e)) };
}

/**
 * Runs `read` on checkpoint `dir`; when it finds the checkpoint damaged (an InputError), the error
 * names the previous complete checkpoint beside it, which `--resume` can use instead: resuming from
 * any complete checkpoint reproduces the run exactly (see the file header).
 */
async function adviseOnDamage<T>(dir: string, read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (err) {
    if (!(err instanceof InputError)) throw err;
    const here = /^checkpoint-(\d+)$/.exec(path.basename(path.resolve(dir)));
    if (here === null) throw err;
    const previous = listCheckpoints(path.dirname(path.resolve(dir))).filter((c) => c.complete && c.step < Number(here[1])).pop();
    const why = err.message.replace(/[;:]? ?re-download or re-export the checkpoint\.?$/, '');
    const instead = previous
      ? `resume from the previous complete checkpoint instead: --resume ${path.join(path.dirname(dir), path.basename(previous.dir))}`
      : 'no earlier complete checkpoint is there: start the run again without --resume';
    throw new InputError(`the checkpoint ${dir} is damaged (${why}); ${instead}`);
  }
}

/** The model folder and trainer state of the checkpoint to resume from. */
async function loadResumable(dir: string): Promise<{ folder: Awaited<ReturnType<typeof loadModelFolder>>; trainerState: TrainerState }> {
  return adviseOnDamage(dir, async () => ({ folder: await loadModelFolder(dir), trainerState: await readTrainerState(dir) }));
}

/** The TrainingError (exit 1) for a checkpoint that could not be written, saying what to do. */
export function saveError(err: unknown, dir: string, out: string, lastCheckpoint: string | null): TrainingError {
  const code = (err as NodeJS.ErrnoException).code;
  const why = code === 'ENOSPC' || code === 'EDQUOT' ? 'no space left on the device' : (err as Error).message.split('\n')[0];
  const todo = code === 'ENOSPC' || code === 'EDQUOT' ? `free space at ${out}` : code === 'EROFS' || code === 'EACCES' || code === 'EPERM' ? `make ${out} writable` : `free space at ${out} or fix its permissions`;
  const previous = lastCheckpoint ? `the previous checkpoint ${lastCheckpoint} is intact` : 'no checkpoint was saved before it';
  return new TrainingError(`could not save ${dir} (${why}); ${previous}; ${todo}, then run again with --resume`);
}

/** The folder to resume from: `resume` as given (a checkpoint, or a run folder), or the newest in `out`. */
function resumeFolder(resume: boolean | string, out: string): string | null {
  if (resume === false) return null;
  if (resume === true) return newestCheckpoint(out)?.dir ?? null;
  if (fs.existsSync(path.join(resume, TRAINER_STATE))) return resume;
  const newest = newestCheckpoint(resume);
  if (newest) return newest.dir;
  throw new InputError(`--resume ${resume} is not a complete checkpoint (no ${TRAINER_STATE}) and holds none; give a checkpoint-STEP folder`);
}

/**
 * The tokenizer the data was prepared with, from the path its manifest records (relative paths
 * are tried from here and from beside the data folder), checked against the recorded hash.
 */
export async function loadDataTokenizer(manifest: Manifest, dataDir: string): Promise<MlmTokenizer> {
  const src = manifest.tokenizer.source;
  const candidates = path.isAbsolute(src) ? [src] : [path.resolve(src), path.resolve(dataDir, '..', src), path.resolve(dataDir, src)];
  const found = candidates.find((c) => fs.existsSync(c));
  if (found === undefined) {
    throw new InputError(
      `the data in ${dataDir} was prepared with the tokenizer at ${src}, which is not there any more; put it back, or prepare the data again with \`mlm prepare --tokenizer DIR\``,
    );
  }
  const tokenizer = await MlmTokenizer.load(found);
  if (tokenizer.sha256 !== manifest.tokenizer.sha256) {
    throw new InputError(
      `the tokenizer at ${found} changed since ${dataDir} was prepared (sha256 ${tokenizer.sha256.slice(0, 12)}, the data records ${manifest.tokenizer.sha256.slice(0, 12)}); restore it, or prepare the data again`,
    );
  }
  return tokenizer;
}

/** A config file for pretraining, with vocab_size and special ids taken from the tokenizer. */
async function pretrainConfig(file: string, tokenizer: MlmTokenizer, log: (line: string) => void): Promise<ModelConfig> {
  requireRegularFile(file, '--config file');
  let json: unknown;
  try {
    json = JSON.parse(await fsp.readFile(file, 'utf8'));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new InputError(code === 'ENOENT'
      ? `--config ${file} not found; give a model config.json (see configs/)`
      : `--config ${file} cannot be read as JSON (${(err as Error).message.split('\n')[0]})`);
  }
  const config = parseModelConfig(json, file);
  const ids = tokenizer.specialIds;
  const wanted: Record<string, number | null> = { vocab_size: tokenizer.vocabSize, pad_token_id: ids.pad };
  if (config.model_type === 'roberta' || config.bos_token_id !== null) wanted.bos_token_id = ids.cls;
  if (config.model_type === 'roberta' || config.eos_token_id !== null) wanted.eos_token_id = ids.sep;
  const changed = Object.entries(wanted).filter(([k, v]) => (config as unknown as Record<string, unknown>)[k] !== v);
  if (changed.length > 0) {
    const what = changed.map(([k, v]) => `${k} ${(config as unknown as Record<string, unknown>)[k]} -> ${v}`).join(', ');
    log(`note: from the data's tokenizer: ${what} (overriding ${file})`);
  }
  if (tokenizer.family !== config.model_type) {
    log(`note: a ${config.model_type} config with a ${tokenizer.family === 'bert' ? 'WordPiece (bert)' : 'byte-level BPE (roberta)'} tokenizer`);
  }
  return updateModelConfig(config, wanted, file);
}

/** The memory this process may use: os.totalmem(), or a smaller cgroup limit (containers). */
function machineMemory(): number {
  const constrained = (process as { constrainedMemory?: () => number | undefined }).constrainedMemory?.();
  return constrained !== undefined && constrained > 0 && constrained < os.totalmem() ? constrained : os.totalmem();
}

/**
 * Refuses (InputError, exit 2) a model that cannot be trained in this machine's memory, before
 * anything is allocated: a config of 100,000 layers would otherwise allocate for minutes and die.
 * The rule: 16 bytes per parameter (float32 weights, gradients and two AdamW moments) plus the
 * activations of one row of the data (training/evaluate.ts `rowBytes`) must fit in os.totalmem()
 * (or the process's cgroup limit when smaller).
 * On webgpu, each tensor is one GPU buffer: the largest (the word embeddings V x H, or a
 * feed-forward weight H x I) must also fit the device's maxStorageBufferBindingSize.
 */
export function checkTrainingMemory(tf: Tf, config: ModelConfig, seqLen: number, backend: string, label: string, totalBytes = machineMemory()): void {
  const params = parameterCount(config);
  const need = 16 * params + rowBytes(config, seqLen, true);
  const gb = (b: number) => `${(b / 1e9).toFixed(b < 1e10 ? 1 : 0)} GB`;
  if (need > totalBytes) {
    throw new InputError(
      `${label}: training this model needs about ${gb(need)} (${params.toExponential(2)} parameters x 16 bytes for weights, gradients and AdamW moments, plus activations), more than this machine's ${gb(totalBytes)} of memory; use a smaller config (fewer layers, a smaller hidden_size)`,
    );
  }
  if (backend === 'webgpu') {
    const limits = (tf.backend() as unknown as { device?: { limits?: { maxStorageBufferBindingSize?: number } } }).device?.limits;
    const maxBinding = limits?.maxStorageBufferBindingSize;
    const largest = 4 * Math.max(config.vocab_size * config.hidden_size, config.hidden_size * config.intermediate_size, config.max_position_embeddings * config.hidden_size);
    if (maxBinding !== undefined && largest > maxBinding) {
      throw new InputError(
        `${label}: its largest weight needs ${gb(largest)} in one GPU buffer but this WebGPU device allows ${gb(maxBinding)} per buffer; use a smaller vocab_size or hidden_size, or a CPU backend`,
      );
    }
  }
}

/** The training arguments by CLI name, as saved in trainer_state.json and shown in report.md. */
function argsRecord(o: TrainOptions): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) {
    if (v === undefined) continue;
    out[k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)] = v;
  }
  return out;
}

/** Arguments that decide the stream of batches and masks: a resumed run must keep them. */
const RESUME_FIXED = ['batch_size', 'grad_accum', 'seed', 'mlm_probability', 'whole_word_mask'] as const;

function checkResumable(state: TrainerState, o: TrainOptions, manifest: Manifest, from: string, log: (line: string) => void): void {
  const now = argsRecord(o);
  for (const key of RESUME_FIXED) {
    if (state.args[key] !== now[key]) {
      throw new InputError(
        `cannot resume from ${from}: it was trained with --${key.replace(/_/g, '-')} ${JSON.stringify(state.args[key])}, this run asks for ${JSON.stringify(now[key])}; use the same value or start a new run`,
      );
    }
  }
  const d = state.data;
  if (d.tokenizer_sha256 !== manifest.tokenizer.sha256 || d.seq_len !== manifest.seq_len || d.train_rows !== manifest.splits.train.rows) {
    throw new InputError(
      `cannot resume from ${from}: it was trained on other data (${d.train_rows} rows of ${d.seq_len} tokens from ${d.dir}); give the same --data or start a new run`,
    );
  }
  const changed = ['steps', 'epochs', 'lr', 'warmup', 'schedule', 'weight_decay', 'adam_beta1', 'adam_beta2', 'adam_epsilon', 'max_grad_norm', 'rows_per_pass', 'precision']
    .filter((k) => state.args[k] !== now[k])
    .map((k) => `--${k.replace(/_/g, '-')} ${JSON.stringify(now[k])} (was ${JSON.stringify(state.args[k])})`);
  if (changed.length > 0) log(`note: resuming with ${changed.join(', ')}: the run will no longer match an uninterrupted one`);
}

function checkOptions(o: TrainOptions): void {
  if (o.config !== undefined && o.from !== undefined) throw new InputError('give either --config (pretrain from scratch) or --from (adapt a checkpoint), not both');
  if (o.config === undefined && o.from === undefined && o.resume === false) throw new InputError('give --config FILE to pretrain from scratch or --from MODEL to adapt a checkpoint');
  if (o.steps !== undefined && o.epochs !== undefined) throw new InputError('give either --steps or --epochs, not both');
  if (o.steps !== undefined) requireInteger(o.steps, 'steps', 1);
  if (o.epochs !== undefined && !(Number.isFinite(o.epochs) && o.epochs > 0)) throw new InputError(`--epochs must be a positive number, got ${o.epochs}`);
  requireInteger(o.batchSize, 'batch-size', 1);
  requireInteger(o.gradAccum, 'grad-accum', 1);
  requireInteger(o.evalEvery, 'eval-every', 0);
  requireInteger(o.evalBatches, 'eval-batches', 0);
  requireInteger(o.logEvery, 'log-every', 1);
  requireInteger(o.saveEvery, 'save-every', 0);
  requireInteger(o.saveTotalLimit, 'save-total-limit', 0);
  if (o.rowsPerPass !== undefined) requireInteger(o.rowsPerPass, 'rows-per-pass', 0);
  if (!Number.isInteger(o.seed)) throw new InputError(`--seed must be an integer, got ${o.seed}`);
  requireOpenFraction(o.mlmProbability, 'mlm-probability');
  if (!(o.weightDecay >= 0)) throw new InputError(`--weight-decay must be >= 0, got ${o.weightDecay}`);
  if (!(o.adamBeta1 >= 0 && o.adamBeta1 < 1) || !(o.adamBeta2 >= 0 && o.adamBeta2 < 1)) throw new InputError(`--adam-beta1 and --adam-beta2 must be in [0, 1), got ${o.adamBeta1} and ${o.adamBeta2}`);
  if (!(o.adamEpsilon > 0)) throw new InputError(`--adam-epsilon must be positive, got ${o.adamEpsilon}`);
  if (!(o.maxGradNorm >= 0)) throw new InputError(`--max-grad-norm must be >= 0 (0 switches clipping off), got ${o.maxGradNorm}`);
  if (!(Number.isFinite(o.lr) && o.lr > 0)) throw new InputError(`--lr must be a positive number, got ${o.lr}`);
  if (o.metricForBest !== undefined) parseBestMetric(o.metricForBest);
  if (o.earlyStoppingPatience !== undefined) requireInteger(o.earlyStoppingPatience, 'early-stopping-patience', 0);
  if (o.earlyStoppingThreshold !== undefined && !(o.earlyStoppingThreshold >= 0)) {
    throw new InputError(`--early-stopping-threshold must be >= 0, got ${o.earlyStoppingThreshold}`);
  }
  if ((o.earlyStoppingPatience ?? 0) > 0 && o.evalEvery === 0) {
    throw new InputError('--early-stopping-patience needs evaluations during the run: give --eval-every N');
  }
  if (o.loadBestAtEnd && o.evalEvery > 0 && o.saveEvery % o.evalEvery !== 0) {
    throw new InputError(`--load-best-at-end needs a checkpoint at evaluations: --save-every (${o.saveEvery}) must be a multiple of --eval-every (${o.evalEvery})`);
  }
}

const emptyWindow = (): Window => ({ steps: 0, loss_sum: 0, masked_tokens: 0, tokens: 0, seconds: 0 });

/** Optimizer moments are stored like model.safetensors: Linear weights transposed to [out, in]. */
export function optimizerLayout(tf: Tf, config: ModelConfig) {
  const linear = new Set(parameterTable(config).filter((s) => s.linear).map((s) => s.name));
  return {
    toFile: (name: string, t: Tensor): Tensor => (linear.has(name) ? tf.transpose(t) : t),
    fromFile: (name: string, a: { shape: number[]; data: Float32Array }): Tensor =>
      tf.tidy(() => {
        const t = tf.tensor(a.data, a.shape, 'float32');
        return linear.has(name) ? tf.transpose(t) : t;
      }),
  };
}

/**
 * train_results.json, eval_results.json (when evaluated) and all_results.json at the run folder's
 * root, as transformers' `Trainer.save_metrics` writes them (run_mlm.py adds `perplexity` to the
 * evaluation's; mlmkit logs it as eval_perplexity and writes both names there).
 */
async function writeResults(out: string, r: TrainResult, ev: EvalLogEntry | null): Promise<void> {
  const trainResults = {
    epoch: r.epoch, train_loss: r.train_loss, train_runtime: r.train_runtime,
    train_samples_per_second: r.train_samples_per_second, train_steps_per_second: r.train_steps_per_second, tokens_per_second: r.tokens_per_second,
  };
  const evalResults = ev === null ? null : {
    epoch: ev.epoch, eval_loss: ev.eval_loss, eval_perplexity: ev.eval_perplexity, perplexity: ev.eval_perplexity,
    eval_accuracy: ev.eval_accuracy, eval_masked_tokens: ev.eval_masked_tokens, eval_step: ev.step,
  };
  const write = (name: string, obj: object) => writeFileAtomic(path.join(out, name), [Buffer.from(JSON.stringify(obj, null, 2) + '\n', 'utf8')]);
  await write('train_results.json', trainResults);
  if (evalResults !== null) await write('eval_results.json', evalResults);
  else await fsp.rm(path.join(out, 'eval_results.json'), { force: true });
  await write('all_results.json', { ...trainResults, ...(evalResults ?? {}) });
}

// -------------------------------------------------------------------------------------------------
// The run

export async function train(o: TrainOptions, ctx: TrainContext): Promise<TrainResult> {
  checkOptions(o);
  // One run per folder at a time (data/lock.ts): a second `mlm train --out` on it is refused.
  const release = acquireLock(o.out, 'run folder', ctx.log);
  try {
    return await runLocked(o, ctx);
  } finally {
    release();
  }
}

async function runLocked(o: TrainOptions, ctx: TrainContext): Promise<TrainResult> {
  const { tf } = ctx;
  let bar: Progress | null = null;
  // Notes and evaluation lines erase the progress bar's line first (data/progress.ts).
  const log = (line: string): void => {
    bar?.clear();
    ctx.log(line);
  };

  // 1. The run folder: ours or new; earlier checkpoints only with --resume.
  const { entries, foreign } = foreignEntries(o.out);
  if (foreign.length > 0) {
    throw new InputError(
      `--out ${o.out} holds files that are not from an mlm train run (${foreign.slice(0, 3).join(', ')}${foreign.length > 3 ? ', ...' : ''}); choose an empty or new folder`,
    );
  }
  if (o.resume === false && entries.some((e) => /^(checkpoint-\d+|metrics\.jsonl)$/.test(e))) {
    throw new InputError(`--out ${o.out} holds an earlier run; pass --resume to continue or choose another --out`);
  }
  const resumeFrom = resumeFolder(o.resume, o.out);
  if (o.resume === true && resumeFrom === null) log(`note: --resume: no complete checkpoint in ${o.out}; starting from scratch`);
  if (o.initBias === 'unigram' && o.from !== undefined) {
    throw new InputError('--init-bias unigram is for pretraining from --config; a model given with --from keeps its own output bias');
  }
  if (resumeFrom === null && o.config === undefined && o.from === undefined) {
    throw new InputError('nothing to resume: give --config FILE to pretrain from scratch or --from MODEL to adapt a checkpoint');
  }

  // 2. The data and the model (a checkpoint to resume, a model to adapt, or a config to pretrain).
  const manifest = await readManifest(o.data);
  let config: ModelConfig;
  let tokenizer: MlmTokenizer;
  let init: { seed: number } | { weights: ModelWeights };
  let state: TrainerState | null = null;
  let modelLabel: string;
  if (resumeFrom !== null) {
    const { folder, trainerState } = await loadResumable(resumeFrom);
    state = trainerState;
    checkResumable(state, o, manifest, resumeFrom, log);
    ({ config, tokenizer } = folder);
    init = { weights: folder.weights };
    modelLabel = resumeFrom;
    checkDataTokenizer(manifest, o.data, tokenizer, resumeFrom);
    log(`resuming from ${resumeFrom} (step ${state.global_step})`);
  } else if (o.from !== undefined) {
    const folder = await loadModelFolder(o.from, { source: o.fromSource ?? o.from });
    modelLabel = o.fromSource ?? o.from;
    checkDataTokenizer(manifest, o.data, folder.tokenizer, modelLabel);
    ({ config, tokenizer } = folder);
    init = { weights: folder.weights };
  } else {
    tokenizer = await loadDataTokenizer(manifest, o.data);
    config = await pretrainConfig(o.config!, tokenizer, log);
    init = { seed: o.seed };
    modelLabel = o.config!;
  }
  const maxT = maxSequenceLength(config);
  if (manifest.seq_len > maxT) {
    throw new InputError(
      `the data's rows have ${manifest.seq_len} tokens but the model has ${maxT} positions (max_position_embeddings); prepare the data with --seq-len ${maxT} or less`,
    );
  }
  checkTrainingMemory(tf, config, manifest.seq_len, ctx.backend.name, modelLabel);

  // 3. Batches (seeded order and masks), the model, the schedule, the optimizer.
  const trainReader = new SplitReader(o.data, manifest, 'train');
  const validReader = manifest.splits.validation.rows > 0 ? new SplitReader(o.data, manifest, 'validation') : null;
  if (validReader === null) log(`note: ${o.data} has no validation split; the run is not evaluated`);
  const masking = maskingFor(tokenizer, o.mlmProbability, o.wholeWordMask);
  const batches = new MaskedBatches(
    new RowStream(trainReader, { batchSize: o.batchSize, seed: o.seed, shuffle: true, dropLast: true }),
    masking.options, masking.padId, masking.specials, o.seed,
  );
  const perEpoch = batches.rows.batchesPerEpoch; // micro-batches per epoch
  const totalSteps = o.steps ?? Math.max(1, Math.ceil(((o.epochs ?? 1) * perEpoch) / o.gradAccum));
  const schedule = makeSchedule(o.schedule, o.lr, o.warmup, totalSteps);
  const precision = await resolvePrecision(tf, ctx.backend.name, o.precision ?? 'fp32', log);
  const lossScale = precision.name === 'fp16' ? new DynamicLossScale({}, state?.loss_scale ?? undefined) : undefined;
  const capabilities = withPrecision(ctx.backend.capabilities ?? capabilitiesOf(tf, ctx.backend.name), precision);
  const model = createMaskedLM(tf, config, { ...init, capabilities });
  if (o.initBias === 'unigram' && state === null && o.from === undefined) {
    const prior = unigramLogPrior(trainReader, config.vocab_size, masking.specials);
    tf.tidy(() => model.variables.get(model.outputBiasName)!.assign(tf.tensor1d(prior)));
    log(`init: ${model.outputBiasName} = log unigram frequencies of the training tokens (--init-bias unigram)`);
  }
  const budget = passBudgetBytes(ctx.backend.name);
  const trainRows = o.rowsPerPass || rowsPerPass(config, manifest.seq_len, { training: true, budgetBytes: budget });
  const evalRows = o.rowsPerPass || rowsPerPass(config, manifest.seq_len, { training: false, budgetBytes: budget });
  if (trainRows < o.batchSize) {
    const passes = Math.ceil(o.batchSize / trainRows);
    log(`note: each batch of ${o.batchSize} rows runs as ${passes} passes of up to ${Math.ceil(o.batchSize / passes)} rows to fit the ${ctx.backend.name} backend's memory (same loss and gradients; --rows-per-pass sets it)`);
  }
  const optimizer = createAdamW(tf, model.variables, { beta1: o.adamBeta1, beta2: o.adamBeta2, epsilon: o.adamEpsilon, weightDecay: o.weightDecay }, ctx.backend.name);
  const layout = optimizerLayout(tf, config);
  const epochAt = (s: number) => (s * o.gradAccum) / perEpoch;
  let interrupted = false;
  let sessionTokens = 0;
  let sessionSeconds = 0;
  let step = 0;
  let history: MetricsEntry[] = [];
  let totals = emptyWindow();
  // The best checkpoint by --metric-for-best, and the early-stopping counter (training/best-model.ts).
  const metric = parseBestMetric(o.metricForBest ?? 'eval_loss');
  const greater = greaterIsBetter(metric);
  const patience = o.earlyStoppingPatience ?? 0;
  const threshold = o.earlyStoppingThreshold ?? 0;
  let best: { value: number; step: number; checkpoint: string } | null = null;
  let stopping = { best: null as number | null, counter: 0 };
  let stoppedEarlyAt: number | null = null;
  let loopSeconds = 0;
  let sessionSteps = 0;
  let sessionRows = 0;
  let lastCheckpoint: string | null = null;
  let lastEval: EvalResult | null = null;
  try {
    // Run state: restored from the checkpoint, or fresh.
    let window = emptyWindow();
    await fsp.mkdir(o.out, { recursive: true });
    if (state !== null) {
      optimizer.setState(await adviseOnDamage(resumeFrom!, () => readOptimizerState(resumeFrom!)), layout.fromFile);
      batches.setState(state.data_state);
      step = state.global_step;
      history = state.log_history;
      window = state.log_window;
      totals = state.totals;
      if (state.best_step !== null && state.best_metric !== null && state.best_model_checkpoint !== null) {
        best = { value: state.best_metric, step: state.best_step, checkpoint: state.best_model_checkpoint };
      }
      stopping = earlyStoppingState(history, metric, threshold);
      if (patience > 0 && stopping.counter >= patience) stoppedEarlyAt = step;
      lastCheckpoint = path.join(o.out, checkpointName(step));
      if (!fs.existsSync(lastCheckpoint)) lastCheckpoint = resumeFrom;
      // Temporary folders of a checkpoint write that a killed run left behind.
      for (const e of fs.readdirSync(o.out)) if (/^\.checkpoint-\d+\.ckpt-(tmp|old)-/.test(e)) await fsp.rm(path.join(o.out, e), { recursive: true, force: true });
    }
    await writeMetrics(o.out, history); // a resumed run continues the history of its checkpoint
    const startStep = step;
    let lastSavedStep = state !== null ? step : -1;
    await writeFileAtomic(path.join(o.out, 'run.json'), [Buffer.from(JSON.stringify({
      args: argsRecord(o), model: modelLabel, config_vocab_size: config.vocab_size, total_steps: totalSteps,
      resumed_from: resumeFrom, start_step: startStep, backend: ctx.backend.name, device: ctx.backend.device, mlmkit_version: ctx.version,
    }, null, 2) + '\n', 'utf8')]);

    const evaluate = async (at: number): Promise<void> => {
      if (validReader === null) return;
      const r = await evaluateMasked(tf, model, validReader, masking, { batchSize: o.batchSize, seed: o.seed, maxBatches: o.evalBatches || undefined, rowsPerPass: evalRows });
      const diverged = divergence('evaluation loss', r.loss, config.vocab_size);
      if (diverged !== null) throw divergedError(diverged, at, lastCheckpoint); // before anything of this state is written
      lastEval = r;
      const entry: EvalLogEntry = {
        step: at, epoch: epochAt(at), eval_loss: r.loss, eval_perplexity: r.perplexity, eval_accuracy: r.accuracy, eval_masked_tokens: r.masked_tokens,
      };
      history.push(entry);
      stopping = afterEvaluation(stopping, entry[metric], greater, threshold);
      await appendMetrics(o.out, entry);
      log(`eval at step ${at}: loss ${r.loss.toFixed(4)}, perplexity ${r.perplexity.toFixed(2)}, accuracy ${(100 * r.accuracy).toFixed(1)}% (${r.masked_tokens} masked tokens)`);
    };

    const save = async (at: number, evaluatedHere: boolean): Promise<void> => {
      const dir = path.join(o.out, checkpointName(at));
      const ev = lastEval as EvalResult | null;
      const evEntry = history[history.length - 1] as EvalLogEntry | undefined;
      if (evaluatedHere && ev !== null && evEntry?.step === at && 'eval_loss' in evEntry && improves(evEntry[metric], best?.value ?? null, greater)) {
        best = { value: evEntry[metric], step: at, checkpoint: dir };
      }
      const trainerState: TrainerState = {
        format: STATE_FORMAT,
        version: STATE_VERSION,
        global_step: at,
        epoch: epochAt(at),
        max_steps: totalSteps,
        data_state: batches.getState(),
        best_metric: best?.value ?? null,
        best_step: best?.step ?? null,
        best_model_checkpoint: best?.checkpoint ?? null,
        log_history: history,
        log_window: window,
        totals,
        args: argsRecord(o),
        data: { dir: o.data, tokenizer_sha256: manifest.tokenizer.sha256, seq_len: manifest.seq_len, train_rows: manifest.splits.train.rows },
        mlmkit_version: ctx.version,
        backend: ctx.backend.name,
        device: ctx.backend.device,
        loss_scale: lossScale?.getState() ?? null,
      };
      try {
        const weights = await exportWeights(model);
        const optimizerState = await optimizer.getState(layout.toFile);
        await writeModelFolder(dir, { config, weights, tokenizer, extra: (tmp) => writeTrainerState(tmp, trainerState, optimizerState) });
      } catch (err) {
        throw saveError(err, dir, o.out, lastCheckpoint);
      }
      lastCheckpoint = dir;
      lastSavedStep = at;
      await pruneCheckpoints(o.out, o.saveTotalLimit, best?.step ?? null);
    };

    // 4. The loop.
    bar = new Progress({ label: startStep > 0 ? `train (from step ${startStep})` : 'train', total: totalSteps - startStep, enabled: ctx.progress });
    if (stoppedEarlyAt !== null) {
      log(`${resumeFrom} stopped early at step ${step} (--early-stopping-patience ${patience}); nothing to do`);
    } else if (startStep >= totalSteps) {
      log(`${resumeFrom} has already trained ${startStep} of ${totalSteps} steps; nothing to do`);
    } else {
      await unpublishFinalModel(o.out); // training goes on: the root holds no final model until the end
    }
    // Issues step s: grad_accum batches, each cut into passes that fit in memory; one dropout seed per pass.
    type Issued = PendingStep<StepResult, { micro: MlmBatch[]; lr: number }>;
    const issueStep = async (s: number): Promise<Issued> => {
      const micro: MlmBatch[] = [];
      for (let i = 0; i < o.gradAccum; i++) micro.push(...splitBatch(batches.next()!, trainRows)); // training streams never end
      const lr = schedule.lr(s - 1);
      return PendingStep.start({ micro, lr }, () => issueOptimizerStep(tf, model, optimizer, micro, { seed: o.seed, step: s, lr, maxGradNorm: o.maxGradNorm, lossScale }));
    };
    // Steps whose weights are used at once (evaluation, checkpoint, end, interrupt): nothing is issued ahead of them.
    const usesWeights = (s: number) => s === totalSteps || (o.saveEvery > 0 && s % o.saveEvery === 0)
      || (validReader !== null && o.evalEvery > 0 && s % o.evalEvery === 0) || ctx.signal?.aborted === true;
    let ahead: Issued | null = null;
    const loopStart = performance.now();
    while (step < totalSteps && stoppedEarlyAt === null) {
      const t0 = performance.now();
      step++;
      const current: Issued = ahead ?? (await issueStep(step));
      const { micro, lr } = current.info;
      // Read one step late where that overlaps (training/pending-step.ts): step + 1 is queued first.
      ahead = current.late && !usesWeights(step) ? await issueStep(step + 1) : null;
      const result = await current.read();
      if (result.overflow) await ahead?.reissue(); // the GPU held step + 1 back: run it at the lowered scale
      const { loss: lossValue, norm: normValue, masked, applied, overflow } = result;
      if (overflow) {
        log(`step ${step}: gradients overflowed at loss scale ${result.scale}; step skipped, loss scale now ${lossScale!.scale}`);
      } else if (!applied) {
        throw divergedError(Number.isFinite(lossValue) ? `gradient norm became ${normValue}` : `loss became ${lossValue}`, step, lastCheckpoint);
      }
      const diverged = divergence('loss', lossValue, config.vocab_size);
      if (diverged !== null) throw divergedError(diverged, step, lastCheckpoint);
      if (masked === 0) log(`warning: step ${step} drew no masked token; the weights were not updated`);
      const seconds = (performance.now() - t0) / 1000;

      const tokens = micro.reduce((a, b) => a + b.inputIds.length, 0);
      for (const w of [window, totals]) {
        w.steps++;
        w.loss_sum += lossValue;
        w.masked_tokens += masked;
        w.tokens += tokens;
        w.seconds += seconds;
      }
      sessionTokens += tokens;
      sessionSeconds += seconds;
      sessionSteps++;
      sessionRows += o.batchSize * o.gradAccum;
      ctx.onStep?.({ step, loss: lossValue, gradNorm: normValue, lr, seconds, masked });
      bar.update(step - startStep, `step ${step}/${totalSteps}  loss ${lossValue.toFixed(4)}  lr ${lr.toExponential(2)}  ${Math.round(window.tokens / Math.max(window.seconds, 1e-9))} tok/s`);

      const last = step === totalSteps;
      if (step % o.logEvery === 0 || last) {
        const entry: TrainLogEntry = {
          step, epoch: epochAt(step), loss: window.loss_sum / window.steps, lr, grad_norm: normValue,
          tokens_per_second: window.tokens / Math.max(window.seconds, 1e-9), masked_tokens: window.masked_tokens, tokens: window.tokens,
        };
        history.push(entry);
        await appendMetrics(o.out, entry);
        window = emptyWindow();
      }
      const evalNow = validReader !== null && ((o.evalEvery > 0 && step % o.evalEvery === 0) || last);
      if (evalNow) await evaluate(step);
      if ((o.saveEvery > 0 && step % o.saveEvery === 0) || last) await save(step, evalNow);
      if (evalNow && patience > 0 && stopping.counter >= patience && !last) {
        stoppedEarlyAt = step;
        log(`early stopping at step ${step}: ${metric} has not improved by more than ${threshold} for ${patience} evaluations (best ${stopping.best})`);
        if (lastSavedStep !== step) await save(step, evalNow);
        break;
      }

      // Let a pending SIGINT reach its handler, then stop after this step if asked.
      await new Promise((resolve) => setImmediate(resolve));
      if (ctx.signal?.aborted && !last && ahead === null) { // with a step ahead, stop after that one
        interrupted = true;
        log(`interrupted: saving a checkpoint at step ${step}`);
        if (lastSavedStep !== step) await save(step, evalNow);
        break;
      }
    }
    loopSeconds = (performance.now() - loopStart) / 1000;
  } finally {
    if (step >= totalSteps) bar?.complete(`step ${step}/${totalSteps}`);
    else bar?.finish(`step ${step}/${totalSteps}${stoppedEarlyAt !== null ? ' (stopped early)' : ''}`);
    optimizer.dispose();
    model.dispose();
    trainReader.close();
    validReader?.close();
  }

  // 5. The final model at the root (the best checkpoint's with --load-best-at-end), the results, the report.
  const finished = !interrupted && lastCheckpoint !== null;
  const finalFrom = o.loadBestAtEnd && best !== null ? best.checkpoint : lastCheckpoint;
  if (finished && finalFrom !== null) {
    if (o.loadBestAtEnd && best !== null) log(`loading the best model: ${best.checkpoint} (${metric} ${best.value.toFixed(4)} at step ${best.step})`);
    try {
      await publishFinalModel(o.out, finalFrom);
    } catch (err) {
      throw saveError(err, `the final model in ${o.out}`, o.out, lastCheckpoint);
    }
  }
  const evalEntries = history.filter((e): e is EvalLogEntry => 'eval_loss' in e);
  const finalEval = (o.loadBestAtEnd && best !== null ? evalEntries.find((e) => e.step === best!.step) : undefined) ?? evalEntries[evalEntries.length - 1] ?? null;
  const ev = lastEval as EvalResult | null;
  const lastEvalEntry = finalEval;
  const result: TrainResult = {
    step,
    train_loss: totals.steps > 0 ? totals.loss_sum / totals.steps : null,
    eval_loss: finalEval?.eval_loss ?? null,
    eval_perplexity: finalEval?.eval_perplexity ?? null,
    tokens_per_second: sessionSeconds > 0 ? sessionTokens / sessionSeconds : null,
    checkpoint: lastCheckpoint,
    // The documented keys (docs/formats.md) above; transformers' other names and the run's outcome below.
    epoch: epochAt(step),
    eval_accuracy: finalEval?.eval_accuracy ?? null,
    train_runtime: loopSeconds,
    train_samples_per_second: loopSeconds > 0 ? sessionRows / loopSeconds : null,
    train_steps_per_second: loopSeconds > 0 ? sessionSteps / loopSeconds : null,
    model: finished ? o.out : null,
    best_model_checkpoint: best?.checkpoint ?? null,
    stopped_early_at: stoppedEarlyAt,
    interrupted,
  };
  if (finished) await writeResults(o.out, result, finalEval);
  const lastTrain = [...history].reverse().find((e): e is TrainLogEntry => !('eval_loss' in e));
  await writeReport(o.out, {
    title: `mlm train: ${path.basename(path.resolve(o.out))}`,
    notes: [
      `model: ${resumeFrom !== null ? `resumed from ${resumeFrom}` : o.from !== undefined ? `adapted from ${modelLabel}` : `pretrained from scratch (${modelLabel})`}, ${config.model_type}, hidden ${config.hidden_size}, ${config.num_hidden_layers} layers, vocab ${config.vocab_size}`,
      `data: ${o.data} (${manifest.splits.train.rows} training rows of ${manifest.seq_len} tokens; tokenizer ${describeTokenizer(manifest.tokenizer.source, manifest.tokenizer.sha256)})`,
      `backend: ${ctx.backend.name} (${ctx.backend.device}), ${describePrecision(precision)}; mlmkit ${ctx.version}`,
      ...(interrupted ? [`interrupted at step ${step} of ${totalSteps}; continue with --resume`] : []),
    ],
    final: {
      step,
      total_steps: totalSteps,
      epoch: Number(epochAt(step).toFixed(3)),
      train_loss: result.train_loss,
      last_logged_loss: lastTrain?.loss ?? null,
      eval_loss: result.eval_loss,
      eval_perplexity: result.eval_perplexity,
      eval_accuracy: lastEvalEntry?.eval_accuracy ?? ev?.accuracy ?? null,
      tokens_per_second: result.tokens_per_second === null ? null : Math.round(result.tokens_per_second),
      checkpoint: result.checkpoint,
      best_model_checkpoint: best?.checkpoint ?? null,
    },
    args: argsRecord(o),
  });
  return result;
}
