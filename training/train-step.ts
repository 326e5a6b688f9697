// One optimizer step of the trainer, in pieces (docs/architecture.md, "Training"): the loss and
// gradients of an accumulated batch (`computeGradients`: each micro-batch's loss SUM over the
// masked-token count of all of them, gradients summed), the global gradient norm and the clip
// coefficient (PyTorch's clip_grad_norm_: max_norm / (norm + 1e-6), capped at 1), the divergence
// rule, and the step itself (`issueOptimizerStep`: the flat AdamW on webgpu queues norm, clip,
// finite check and update on the GPU and is read late, training/pending-step.ts; the per-tensor
// AdamW reads the loss and norm first). `mlm bench` times the same functions.
import type { Scalar, Tensor } from '@tensorflow/tfjs';
import { TrainingError } from '../common/errors.ts';
import { Rng } from '../common/rng.ts';
import { IGNORE_INDEX, type MlmBatch } from '../data/masking.ts';
import type { Tf } from './backend.ts';
import { batchInputs } from './evaluate.ts';
import { FlatAdamW, type TrainingOptimizer } from './flat-adamw.ts';
import type { DynamicLossScale } from './loss-scale.ts';
import type { MaskedLM } from './models/bert.ts';
import type { IssuedStep } from './pending-step.ts';
import { backendHas, SUM_OF_SQUARES_KERNEL, sumOfSquares } from './kernels/adamw.ts';

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
 * Gradients are keyed by the model's variable names (a weight no micro-batch reaches has none). The caller
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
    const fused = backendHas(tf, SUM_OF_SQUARES_KERNEL);
    let terms: Tensor[] = [...grads.values()].map((g) => sumOfSquares(tf, g, fused));
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
  return new TrainingError(`${why} at step ${step}; ${lastGood(lastCheckpoint)}; lower --lr or check the data`);
}

/** Where a stopped run can go on from, for its message. */
function lastGood(lastCheckpoint: string | null): string {
  return lastCheckpoint ? `the last good checkpoint is ${lastCheckpoint}` : 'no checkpoint was saved before it';
}

/**
 * The TrainingError that stops a run whose gradients overflowed at the loss scale's floor
 * (training/loss-scale.ts): not finite even unscaled, where a lower scale would drop the small
 * gradients instead.
 */
export function lossScaleFloorError(scale: number, step: number, lastCheckpoint: string | null): TrainingError {
  return new TrainingError(
    `gradients overflowed at step ${step} at loss scale ${scale}, the floor of --precision fp16's loss scaling: they are not finite even unscaled (a scale below 1 would drop the small gradients instead); ${lastGood(lastCheckpoint)}; lower --lr, train with --precision fp32, or check the data`,
  );
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

/** Steps read late (the flat AdamW) whose results have not come back yet, per loss scale: how many, and the last one settled. */
const lateReads = new WeakMap<DynamicLossScale, { count: number; last: Promise<void> }>();

function trackLateRead(scale: DynamicLossScale, result: Promise<unknown>): void {
  const entry = lateReads.get(scale) ?? { count: 0, last: Promise.resolve() };
  entry.count++;
  const settled = () => {
    entry.count--;
  };
  entry.last = result.then(settled, settled);
  lateReads.set(scale, entry);
}

/**
 * A step issued while earlier steps' reads are outstanding (training/pending-step.ts) would run at
 * the scale known before them. An overflow among them is repaired after the fact (the GPU holds
 * this step, which is issued again), but the scale's growth is not: if those reads, all clean,
 * would grow the scale, waits for them first, so that this step runs at the grown scale as it
 * would with in-step reads (once every `growthInterval` steps).
 */
async function lateReadsBeforeGrowth(scale: DynamicLossScale): Promise<void> {
  const pending = lateReads.get(scale);
  if (pending === undefined || pending.count === 0) return;
  if (scale.cleanSteps + pending.count >= scale.opts.growthInterval) await pending.last;
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
  if (o.lossScale !== undefined) await lateReadsBeforeGrowth(o.lossScale);
  const seeds = passes.map((_, i) => dropoutSeed(o.seed, o.step, i));
  // With loss scaling the loss, gradients and norm come out S times larger (S a power of two: the
  // division back is exact), and 1/S joins the clipping factor.
  const S = o.lossScale?.scale ?? 1;
  const { loss, grads, maskedCount: masked } = computeGradients(tf, model, passes, { training: true, dropoutSeeds: seeds, lossScale: S });
  if (grads.size === 0) {
    // No masked token in the batch: no parameter has a gradient, so nothing is updated and the
    // optimizer's update count (its bias corrections) stays, as torch.optim.AdamW counts a
    // parameter's steps only when it has a gradient. The loss scale is left as it is.
    loss.dispose();
    return { late: false, result: Promise.resolve({ loss: 0, norm: 0, masked, applied: true, ...(o.lossScale === undefined ? {} : { scale: S }) }) };
  }
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
    const result = read.then((r) => finish(r.loss, r.norm, r.applied, r.held));
    if (o.lossScale !== undefined) trackLateRead(o.lossScale, result);
    return { late: true, result };
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
