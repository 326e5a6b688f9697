// The measuring side of `mlm bench` (docs/formats.md, "Command output"): times training steps and evaluation
// steps of a masked LM on the active TF.js backend, on synthetic batches, and counts what a step
// leaves behind (tensors) and how often it reads data back from the backend.
//
// A training step here is the trainer's step: draw a masked batch -> cut it into passes that fit
// the backend's memory (`rowsPerPass`, `splitBatch`) -> `optimizerStep` from training/trainer.ts
// (forward + loss at the masked positions only + backward, dropout on, one seed per pass, global
// norm, ONE read of [loss, norm], AdamW with the clipping scale; on webgpu that read is awaited
// after the next step is queued, as the trainer does: a step's time is then the time from one
// read to the next, and the loss a line shows is the step's own). No checkpoints,
// no evaluation inside, a constant learning rate (the schedule costs nothing). An evaluation step
// is what `evaluateMasked` does per batch: forward + masked loss sum + top-1 hits, one read per pass.
//
// Data. Rows of `seqLen` random token ids, [CLS] first and [SEP] last, no padding (a full block as
// `mlm prepare` writes them), masked with data/masking.ts (15%, 80/10/10) by a seeded Rng: the
// same batches on every backend and every run.
//
// Model FLOPs (the "model FLOPs" of the PaLM paper's MFU, appendix B, adapted to an MLM head):
//   per trained token = 6 N + 12 L H T + 6 H V f
//   N  non-embedding parameters: every parameter but the word, position and token-type tables
//      (transformers' `num_parameters(exclude_embeddings=True)`): the encoder layers, the embedding
//      LayerNorm, the head's transform (dense + LayerNorm) and the decoder bias. 6 N = 2 N forward
//      + 4 N backward multiply-adds-as-2-FLOPs. The head transform runs at scored positions only
//      here, so 6 N over-counts it slightly (H^2 of ~12 L H^2: 2-4% for bert-tiny..small).
//   12 L H T  attention scores Q K^T and probs V (2 x 2 T H per token and layer forward, x3 with
//      the backward pass), for L layers, hidden H, sequence length T.
//   6 H V f   the tied decoder matmul [scored, H] x [H, V], forward and backward, at the share f of
//      tokens it scores (the masked fraction of the batch, ~0.15 x (T-2)/T). A model that computes
//      full-vocabulary logits at every position (transformers' BertForMaskedLM, the PyTorch peer)
//      has f = 1: it does ~6.7x more head work per token for the same loss.
// The embedding lookups, LayerNorms, softmax, GELU and AdamW are not counted (as in MFU).
//
// Reads. Every tensor read the step asks for is counted (`reads_per_step`, the engine's read and
// readSync: the step's synchronisation points; the trainer's step makes one). On webgpu, the
// GPU -> CPU buffer copies (also those kernels make) and the CPU -> GPU uploads of tensor data are
// counted too: the host <-> device round trips of a step (`watchBackendIo`).
//
// Dispatches, host and GPU time (training/kernel-watch.ts). On webgpu `dispatchesPerStep` counts
// the compute dispatches a training step encodes (at the WebGPU API: TF.js's programs and any
// pipeline of mlmkit's own alike), with the compute passes and queue submissions. On the other
// backends there is no dispatch: it is the number of TF.js kernel calls (`kernelsPerStep`, counted
// on every backend). Where the WebGPU device has `timestamp-query`, `gpuMsPerStep` is the GPU time
// of the step's compute passes (sum of end - begin), and
//   hostMsPerStep = (wall time of the measured steps + the final drain - their GPU time) / steps,
// the part of a step in which the GPU ran none of its passes: the host issuing work the GPU waits
// for, reads, uploads and copies outside passes. The final drain: after the last measured step,
// the time until the GPU has run everything submitted (0 for a step that ends with a read, as the
// trainer's does today; a step that reads its loss later would otherwise leave GPU work untimed).
// Both are means over the measured steps (the step-time spread is of the steps without the drain).
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import type { Tensor } from '@tensorflow/tfjs';
import { InputError, requireInteger, requireOpenFraction, requireSeed } from '../common/errors.ts';
import { allocMlmBatch, maskTokens, MLM_PROBABILITY, specialIdTable, type MaskingOptions, type MlmBatch } from '../data/masking.ts';
import { Rng } from '../common/rng.ts';
import { capabilitiesOf, type Tf } from './backend.ts';
import { maxSequenceLength } from './checkpoint.ts';
import { batchInputs } from './evaluate.ts';
import { planPasses, splitBatch } from './passes.ts';
import { type ModelConfig } from './models/config.ts';
import { createMaskedLM } from './models/roberta.ts';
import { decayedParameters, parameterTable } from './models/weights.ts';
import { DynamicLossScale } from './loss-scale.ts';
import { createAdamW } from './flat-adamw.ts';
import { watchKernels } from './kernel-watch.ts';
import { ADAMW_DEFAULTS } from './optimizer.ts';
import { describePrecision, resolvePrecision, withPrecision, type PrecisionName } from './precision.ts';
import { issueOptimizerStep, maskedCount, type StepResult } from './train-step.ts';
import { PendingStep } from './pending-step.ts';

// -------------------------------------------------------------------------------------------------
// Counting: parameters and model FLOPs

/** Names of the embedding tables, left out of the non-embedding count. */
function isEmbeddingTable(name: string): boolean {
  return /\.embeddings\.(word|position|token_type)_embeddings\.weight$/.test(name);
}

export interface ParameterCounts {
  /** Every parameter of the masked LM (the tied decoder counted once, as transformers does). */
  total: number;
  /** All but the word, position and token-type embedding tables. */
  nonEmbedding: number;
}

export function parameterCounts(config: ModelConfig): ParameterCounts {
  let total = 0;
  let nonEmbedding = 0;
  for (const { name, shape } of parameterTable(config)) {
    const n = shape.reduce((a, b) => a * b, 1);
    total += n;
    if (!isEmbeddingTable(name)) nonEmbedding += n;
  }
  return { total, nonEmbedding };
}

/**
 * Model FLOPs per trained token (see the file header): 6 N + 12 L H T + 6 H V f, where f is the
 * share of tokens the MLM head scores (1 for full-vocabulary logits).
 */
export function modelFlopsPerToken(config: ModelConfig, seqLen: number, scoredFraction: number): number {
  const { nonEmbedding } = parameterCounts(config);
  const L = config.num_hidden_layers;
  const H = config.hidden_size;
  const V = config.vocab_size;
  return 6 * nonEmbedding + 12 * L * H * seqLen + 6 * H * V * scoredFraction;
}

// -------------------------------------------------------------------------------------------------
// Statistics

export interface Spread {
  median: number;
  min: number;
  max: number;
  /** First and third quartiles (linear interpolation between order statistics). */
  q1: number;
  q3: number;
}

function quantile(sorted: number[], q: number): number {
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

export function spread(values: number[]): Spread {
  if (values.length === 0) return { median: NaN, min: NaN, max: NaN, q1: NaN, q3: NaN };
  const s = [...values].sort((a, b) => a - b);
  return { median: quantile(s, 0.5), min: s[0], max: s[s.length - 1], q1: quantile(s, 0.25), q3: quantile(s, 0.75) };
}

// -------------------------------------------------------------------------------------------------
// Synthetic data

/** Special ids for synthetic rows: the config's where it names them, the usual vocabularies' else. */
export function syntheticSpecialIds(config: ModelConfig): { pad: number; cls: number; sep: number; mask: number; unk: number } {
  const V = config.vocab_size;
  const pad = config.pad_token_id;
  if (config.model_type === 'roberta') {
    // roberta-base: <s> 0, <pad> 1, </s> 2, <unk> 3, <mask> V-1.
    return { pad, cls: config.bos_token_id ?? 0, sep: config.eos_token_id ?? 2, unk: 3, mask: V - 1 };
  }
  // bert-base-uncased: [PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103; a tiny vocabulary
  // takes the first ids after the pad id instead.
  if (V > 104) return { pad, unk: 100, cls: 101, sep: 102, mask: 103 };
  const free = [0, 1, 2, 3, 4].filter((i) => i !== pad);
  return { pad, unk: free[0], cls: free[1], sep: free[2], mask: free[3] };
}

/**
 * Draws masked batches of random rows ([CLS] ids... [SEP], no padding), seeded: the same sequence
 * of batches for the same (config, sizes, seed).
 */
export class SyntheticBatches {
  private readonly rng: Rng;
  private readonly ids: Int32Array;
  private readonly specials: Uint8Array;
  private readonly options: MaskingOptions;
  private readonly padId: number;
  private readonly normal: number[];

  constructor(config: ModelConfig, readonly batchSize: number, readonly seqLen: number, seed: number, mlmProbability = MLM_PROBABILITY) {
    const s = syntheticSpecialIds(config);
    this.rng = Rng.derive(seed, 0xbe7c);
    this.ids = new Int32Array(batchSize * seqLen);
    this.specials = specialIdTable(config.vocab_size, [s.pad, s.cls, s.sep, s.mask, s.unk]);
    this.options = { mlmProbability, maskTokenId: s.mask, vocabSize: config.vocab_size };
    this.padId = s.pad;
    this.normal = [s.cls, s.sep];
    if (config.vocab_size - 5 < 1) throw new InputError(`vocab_size ${config.vocab_size} leaves no ordinary token for synthetic data`);
  }

  /** A fresh batch (new ids and new masks). */
  next(): MlmBatch {
    const { batchSize: B, seqLen: T, rng, specials } = this;
    const [cls, sep] = this.normal;
    for (let r = 0; r < B; r++) {
      for (let t = 0; t < T; t++) {
        let id: number;
        if (t === 0) id = cls;
        else if (t === T - 1) id = sep;
        else do id = rng.int(specials.length); while (specials[id] !== 0);
        this.ids[r * T + t] = id;
      }
    }
    return maskTokens(this.ids, T, this.padId, specials, this.options, rng, undefined, allocMlmBatch(B, T));
  }
}

// -------------------------------------------------------------------------------------------------
// Counting reads and uploads on the active backend

export interface IoCounts {
  /** Tensor data reads the program asked for (`data()`, `dataSync()`, `array()`...: the engine's read/readSync). */
  reads: number;
  /** webgpu only: GPU -> CPU copies of buffer data, kernels' own included (null elsewhere). */
  deviceReads: number | null;
  /** webgpu only: CPU -> GPU uploads of tensor data (null elsewhere). */
  uploads: number | null;
  /** webgpu only: bytes those uploads carried. */
  uploadBytes: number | null;
}

export interface IoWatch {
  counts(): IoCounts;
  /** Puts the wrapped methods back. */
  stop(): void;
}

/**
 * Counts reads on `tf`'s engine and, on webgpu, the transfers of its backend, by wrapping their
 * methods until `stop()`. Kernels of the CPU backends read their inputs' memory with the backend's
 * `readSync` (wasm's Slice and Gather do): in-process memory reads, not counted; only the
 * engine's reads, which every program-level read goes through, are.
 */
export function watchBackendIo(tf: Tf): IoWatch {
  const engine = tf.engine() as unknown as Record<string, unknown>;
  const backend = tf.backend() as unknown as Record<string, unknown>;
  const webgpu = tf.getBackend() === 'webgpu';
  const c: IoCounts = { reads: 0, deviceReads: webgpu ? 0 : null, uploads: webgpu ? 0 : null, uploadBytes: webgpu ? 0 : null };
  const restore: (() => void)[] = [];
  const wrap = (target: Record<string, unknown>, method: string, count: (args: unknown[]) => void): void => {
    const original = target[method];
    if (typeof original !== 'function') return;
    const own = Object.prototype.hasOwnProperty.call(target, method);
    target[method] = function (this: unknown, ...args: unknown[]) {
      count(args);
      return (original as (...a: unknown[]) => unknown).apply(this, args);
    };
    restore.push(() => {
      if (own) target[method] = original;
      else delete target[method];
    });
  };
  wrap(engine, 'read', () => c.reads++);
  wrap(engine, 'readSync', () => c.reads++);
  if (webgpu) {
    // The backend's view of a tensor: `resource` on the GPU, `values` on the CPU (either or both).
    type Held = { resource?: unknown; values?: { byteLength?: number } | null };
    const tensorMap = backend.tensorMap as { get(id: unknown): Held | undefined } | undefined;
    const held = (dataId: unknown) => tensorMap?.get(dataId);
    wrap(backend, 'getBufferData', () => c.deviceReads!++); // what `read` does for GPU-held data
    wrap(backend, 'readSync', ([dataId]) => {
      const d = held(dataId);
      if (d !== undefined && d.values == null) c.deviceReads!++;
    });
    wrap(backend, 'uploadToGPU', ([dataId]) => {
      const d = held(dataId);
      if (d !== undefined && d.resource == null && d.values != null) {
        c.uploads!++;
        c.uploadBytes! += d.values.byteLength ?? 0;
      }
    });
  }
  return {
    counts: () => ({ ...c }),
    stop: () => {
      for (const r of restore.reverse()) r();
    },
  };
}

// -------------------------------------------------------------------------------------------------
// The benchmark of one model on the active backend

export interface BenchOptions {
  batchSize: number;
  seqLen: number;
  /** Measured training steps (at most; see maxSeconds). */
  steps: number;
  /** Training steps run first and not timed (compilation, allocation). */
  warmupSteps: number;
  /** Measured evaluation steps (at most). */
  evalSteps: number;
  /** Stop a phase's measured steps once they took this long (at least 2 steps); 0: no limit. */
  maxSeconds: number;
  seed: number;
  mlmProbability: number;
  lr: number;
  /** Rows per forward/backward pass; 0: as the trainer chooses for this backend. */
  rowsPerPass: number;
  /** Matrix-product precision (training/precision.ts); fp16 scales the loss as the trainer does. */
  precision: PrecisionName;
  /** Progress lines (stderr in the CLI). */
  log: (line: string) => void;
}

export const BENCH_DEFAULTS = {
  batchSize: 32,
  seqLen: 128,
  steps: 20,
  warmupSteps: 2,
  maxSeconds: 0,
  seed: 42,
  mlmProbability: MLM_PROBABILITY,
  lr: 5e-4,
  rowsPerPass: 0,
  precision: 'fp32' as PrecisionName,
};

/** What one (model, backend) run measured. */
export interface BenchMeasurement {
  params: number;
  nonEmbeddingParams: number;
  trainSteps: number;
  warmupSteps: number;
  trainStepMs: Spread;
  trainTokensPerSecond: number;
  /** Share of tokens the head scored over the measured steps. */
  scoredFraction: number;
  modelFlopsPerToken: number;
  modelTflopsPerSecond: number;
  evalSteps: number;
  evalStepMs: Spread;
  evalTokensPerSecond: number;
  passesPerStep: number;
  rowsPerPass: number;
  /** (tensors after the last training step - after the first) / (steps - 1), over every training step run. */
  tensorsLeakedPerStep: number;
  evalTensorsLeakedPerStep: number;
  readsPerStep: number;
  deviceReadsPerStep: number | null;
  uploadsPerStep: number | null;
  uploadBytesPerStep: number | null;
  evalReadsPerStep: number;
  /** webgpu: compute dispatches per training step; elsewhere the kernel calls (see the file header). */
  dispatchesPerStep: number;
  kernelsPerStep: number;
  /** webgpu: compute passes and queue submissions per training step (null elsewhere). */
  passesPerStepGpu: number | null;
  submitsPerStep: number | null;
  /** What `dispatchesPerStep` counts. */
  dispatchesCounted: 'compute dispatches' | 'kernel calls';
  /** GPU time of the step's compute passes and the rest of its wall time (null without a GPU timer). */
  gpuMsPerStep: number | null;
  hostMsPerStep: number | null;
  /** 'timestamp-query', or why no GPU time. */
  gpuTimer: string;
  /** Dawn quantized the timestamps (65.536 us): the sums are still unbiased, less exact. */
  gpuTimestampsQuantized: boolean | null;
  /** Measured steps' compute passes without timestamps (TF.js's own profiling, or past the query sets): a GPU time with any is a lower bound. */
  gpuUntimedPasses: number | null;
  /** Time from the end of the last measured step until the GPU had run all of it. */
  drainMs: number;
  evalDispatchesPerStep: number;
  lossFirst: number;
  lossLast: number;
  /** The precision the run used ('fp32', 'fp16 (subgroup-matrix)'...). */
  precision: string;
  /** Steps skipped because fp16 gradients overflowed at the loss scale (loss scaling only). */
  overflowSteps: number;
}

/** Refuses options `benchmarkModel` cannot run with, naming the CLI flag (InputError). */
export function checkBenchOptions(o: BenchOptions): void {
  requireInteger(o.batchSize, 'batch-size', 1);
  requireInteger(o.seqLen, 'seq-len', 4);
  requireInteger(o.steps, 'steps', 2);
  requireInteger(o.warmupSteps, 'warmup-steps', 0);
  requireInteger(o.evalSteps, 'eval-steps', 1);
  requireInteger(o.rowsPerPass, 'rows-per-pass', 0);
  if (!(o.maxSeconds >= 0)) throw new InputError(`--max-seconds must be >= 0, got ${o.maxSeconds}`);
  requireOpenFraction(o.mlmProbability, 'mlm-probability');
  requireSeed(o.seed);
}

/** Refuses a --seq-len longer than the model's positions. */
export function checkBenchSeqLen(config: ModelConfig, seqLen: number): void {
  const maxT = maxSequenceLength(config);
  if (seqLen > maxT) throw new InputError(`--seq-len ${seqLen} is longer than the model's ${maxT} positions; use --seq-len ${maxT} or less`);
}

/**
 * Times `steps` training steps (after `warmupSteps` untimed ones) and `evalSteps` evaluation
 * steps of a freshly initialised model of `config` on `tf`'s active backend.
 */
export async function benchmarkModel(tf: Tf, backendName: string, config: ModelConfig, o: BenchOptions): Promise<BenchMeasurement> {
  checkBenchOptions(o);
  checkBenchSeqLen(config, o.seqLen);
  const counts = parameterCounts(config);
  const { trainRows, evalRows } = planPasses(config, o.seqLen, backendName, o.rowsPerPass);
  const data = new SyntheticBatches(config, o.batchSize, o.seqLen, o.seed, o.mlmProbability);
  const tokensPerBatch = o.batchSize * o.seqLen;

  const precision = await resolvePrecision(tf, backendName, o.precision, o.log);
  const lossScale = precision.name === 'fp16' ? new DynamicLossScale() : undefined;
  let overflowSteps = 0;
  const model = createMaskedLM(tf, config, { seed: o.seed, capabilities: withPrecision(capabilitiesOf(tf, backendName), precision) });
  const optimizer = createAdamW(tf, model.variables, decayedParameters(config), ADAMW_DEFAULTS, backendName);
  const io = watchBackendIo(tf);
  const kernels = watchKernels(tf);
  try {
    // One training step, as trainer.ts runs it: where the read is late (webgpu), the next step is
    // queued before this one's loss is read, unless `last` (training/pending-step.ts).
    let stepNo = 0;
    let ahead: PendingStep<StepResult, { step: number; passes: number }> | null = null;
    const issue = async () => {
      const step = ++stepNo;
      const passes = splitBatch(data.next(), trainRows);
      return PendingStep.start({ step, passes: passes.length }, () => issueOptimizerStep(tf, model, optimizer, passes, { seed: o.seed, step, lr: o.lr, maxGradNorm: 1.0, lossScale }));
    };
    const trainStep = async (last: boolean): Promise<{ ms: number; loss: number; masked: number; passes: number }> => {
      const t0 = performance.now();
      const current = ahead ?? (await issue());
      ahead = current.late && !last ? await issue() : null;
      const r = await current.read();
      if (r.overflow) await ahead?.reissue();
      const { loss: lossValue, norm: normValue, masked, applied, overflow } = r;
      if (overflow) overflowSteps++;
      else if (!applied) {
        throw new Error(`training step ${current.info.step}: loss ${lossValue}, gradient norm ${normValue} (the ${backendName} backend computed a non-finite value)`);
      }
      return { ms: performance.now() - t0, loss: lossValue, masked, passes: current.info.passes };
    };

    // One evaluation step, as evaluate.ts scores a batch.
    const evalStep = async (): Promise<number> => {
      const t0 = performance.now();
      const batch = data.next();
      for (const part of splitBatch(batch, evalRows)) {
        const labels = part.labels;
        if (maskedCount(part) === 0) continue;
        const packed = tf.tidy(() => {
          const r = model.maskedLossSum(batchInputs(tf, part), labels, { training: false, accuracy: true });
          return tf.stack([r.loss, r.correct!]) as Tensor;
        });
        try {
          const [l] = await packed.data();
          if (!Number.isFinite(l)) throw new Error(`evaluation step: loss ${l} on the ${backendName} backend`);
        } finally {
          packed.dispose();
        }
      }
      return performance.now() - t0;
    };

    const enough = (times: number[], max: number) =>
      times.length >= max || (o.maxSeconds > 0 && times.length >= 2 && times.reduce((a, b) => a + b, 0) >= o.maxSeconds * 1000);

    // Training: warmup, then measured steps.
    let tensorsAfterFirst = -1;
    let lossFirst = NaN;
    let passesPerStep = 1;
    for (let i = 0; i < o.warmupSteps; i++) {
      const r = await trainStep(i === o.warmupSteps - 1);
      if (tensorsAfterFirst < 0) {
        tensorsAfterFirst = tf.memory().numTensors;
        lossFirst = r.loss;
      }
      o.log(`  warmup step ${i + 1}/${o.warmupSteps}: ${(r.ms / 1000).toFixed(2)} s, loss ${r.loss.toFixed(4)}`);
    }
    const trainTimes: number[] = [];
    let masked = 0;
    let lossLast = NaN;
    // GPU time of the warmup steps is dropped here (this also waits for them to finish).
    await kernels.takeGpuTime();
    const ioBefore = io.counts();
    const kBefore = kernels.counts();
    // The measured steps; one queued ahead when time ran out is run (and counted) too.
    while (!enough(trainTimes, o.steps) || ahead !== null) {
      const r = await trainStep(trainTimes.length + 1 >= o.steps || enough(trainTimes, o.steps));
      if (tensorsAfterFirst < 0) {
        tensorsAfterFirst = tf.memory().numTensors;
        lossFirst = r.loss;
      }
      trainTimes.push(r.ms);
      masked += r.masked;
      lossLast = r.loss;
      passesPerStep = r.passes;
      o.log(`  train step ${trainTimes.length}/${o.steps}: ${(r.ms / 1000).toFixed(2)} s, loss ${r.loss.toFixed(4)}`);
    }
    const ioAfter = io.counts();
    const kAfter = kernels.counts();
    const drainStart = performance.now();
    await kernels.drain();
    const drainMs = performance.now() - drainStart;
    const gpu = await kernels.takeGpuTime();
    const tensorsAfterLast = tf.memory().numTensors;
    const stepsRun = o.warmupSteps + trainTimes.length;

    // Evaluation: one untimed step (the forward-only graph is new), then measured steps.
    await evalStep();
    const evalTensorsStart = tf.memory().numTensors;
    const evalIoBefore = io.counts();
    const evalKBefore = kernels.counts();
    const evalTimes: number[] = [];
    while (!enough(evalTimes, o.evalSteps)) {
      evalTimes.push(await evalStep());
      o.log(`  eval step ${evalTimes.length}/${o.evalSteps}: ${(evalTimes[evalTimes.length - 1] / 1000).toFixed(2)} s`);
    }
    const evalIoAfter = io.counts();
    const evalKAfter = kernels.counts();
    const evalTensorsEnd = tf.memory().numTensors;

    const trainWallMs = trainTimes.reduce((a, b) => a + b, 0) + drainMs;
    const trainSeconds = trainWallMs / 1000;
    const evalSeconds = evalTimes.reduce((a, b) => a + b, 0) / 1000;
    const trainTokens = trainTimes.length * tokensPerBatch;
    const scoredFraction = masked / trainTokens;
    const flopsPerToken = modelFlopsPerToken(config, o.seqLen, scoredFraction);
    const tokensPerSecond = trainTokens / trainSeconds;
    const n = trainTimes.length;
    const per = (after: number | null, before: number | null, steps: number) => (after === null || before === null ? null : (after - before) / steps);
    return {
      params: counts.total,
      nonEmbeddingParams: counts.nonEmbedding,
      trainSteps: n,
      warmupSteps: o.warmupSteps,
      trainStepMs: spread(trainTimes),
      trainTokensPerSecond: tokensPerSecond,
      scoredFraction,
      modelFlopsPerToken: flopsPerToken,
      modelTflopsPerSecond: (tokensPerSecond * flopsPerToken) / 1e12,
      evalSteps: evalTimes.length,
      evalStepMs: spread(evalTimes),
      evalTokensPerSecond: (evalTimes.length * tokensPerBatch) / evalSeconds,
      passesPerStep,
      rowsPerPass: Math.min(trainRows, o.batchSize),
      tensorsLeakedPerStep: stepsRun > 1 ? (tensorsAfterLast - tensorsAfterFirst) / (stepsRun - 1) : 0,
      evalTensorsLeakedPerStep: evalTimes.length > 0 ? (evalTensorsEnd - evalTensorsStart) / evalTimes.length : 0,
      readsPerStep: per(ioAfter.reads, ioBefore.reads, n)!,
      deviceReadsPerStep: per(ioAfter.deviceReads, ioBefore.deviceReads, n),
      uploadsPerStep: per(ioAfter.uploads, ioBefore.uploads, n),
      uploadBytesPerStep: per(ioAfter.uploadBytes, ioBefore.uploadBytes, n),
      evalReadsPerStep: per(evalIoAfter.reads, evalIoBefore.reads, evalTimes.length)!,
      dispatchesPerStep: per(kAfter.dispatches ?? kAfter.kernels, kBefore.dispatches ?? kBefore.kernels, n)!,
      kernelsPerStep: per(kAfter.kernels, kBefore.kernels, n)!,
      passesPerStepGpu: per(kAfter.passes, kBefore.passes, n),
      submitsPerStep: per(kAfter.submits, kBefore.submits, n),
      dispatchesCounted: kAfter.dispatches === null ? 'kernel calls' : 'compute dispatches',
      gpuMsPerStep: gpu === null ? null : gpu.ms / n,
      hostMsPerStep: gpu === null ? null : (trainWallMs - gpu.ms) / n,
      gpuTimer: kernels.gpuTimer,
      gpuTimestampsQuantized: gpu === null ? null : gpu.quantized,
      gpuUntimedPasses: gpu === null ? null : gpu.untimed,
      drainMs,
      evalDispatchesPerStep: per(evalKAfter.dispatches ?? evalKAfter.kernels, evalKBefore.dispatches ?? evalKBefore.kernels, evalTimes.length)!,
      lossFirst,
      lossLast,
      precision: describePrecision(precision),
      overflowSteps,
    };
  } finally {
    kernels.stop();
    io.stop();
    optimizer.dispose();
    model.dispose();
  }
}

/**
 * What ran the matrix products, as the wasm backend's device line names it (`...; matmuls: OpenBLAS
 * 0.3.21 (Haswell kernels), 2 threads; fused kernels: ...)`, training/backend/wasm.ts), or null
 * where the line names nothing (other backends).
 */
export function deviceMatmuls(device: string): string | null {
  return /matmuls: ([^;]*?)(?:;|\)$)/.exec(device)?.[1] ?? null;
}

// -------------------------------------------------------------------------------------------------
// The machine's float32 matmul peak, measured with numpy (OpenBLAS here)
//
// A yardstick for model FLOP utilisation: the best GFLOP/s of numpy's float32 `a @ b` for square
// n = 512..2048 with the given number of BLAS threads, in a child python3. OPENBLAS_CORETYPE and
// OPENBLAS_L2_SIZE are removed from the child's environment so that OpenBLAS picks its kernel for
// this CPU itself; which kernel ran is read from threadpoolctl when installed, else from the
// loaded OpenBLAS library (`openblas_get_corename`), else `numpy.show_config()`.

export interface MatmulPeak {
  ok: true;
  /** Best GFLOP/s over every size. */
  gflops: number;
  /** Best GFLOP/s per n. */
  bySize: Record<string, number>;
  threads: number;
  /** Which BLAS and kernel ran, e.g. "OpenBLAS 0.3.21 ... (core Cooperlake, 2 threads)". */
  blas: string;
  numpy: string;
  python: string;
}

export interface MatmulPeakSkipped {
  ok: false;
  reason: string;
}

const PEAK_SCRIPT = String.raw`
import json, sys, time, ctypes, io, contextlib
try:
    import numpy as np
except ImportError:
    print(json.dumps({"error": "numpy is not installed for " + sys.executable + " (apt-get install python3-numpy)"}))
    sys.exit(0)
threads = int(sys.argv[1])
rng = np.random.default_rng(0)
best = {}
for n in (512, 1024, 1536, 2048):
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    reps = max(3, min(20, int(4e10 / (2 * n ** 3))))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    best[str(n)] = 2 * n ** 3 / min(times) / 1e9
blas = None
try:
    from threadpoolctl import threadpool_info
    infos = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    if infos:
        i = infos[0]
        blas = "%s %s (core %s, %s threads, %s)" % (i.get("internal_api"), i.get("version"), i.get("architecture"), i.get("num_threads"), i.get("filepath"))
except Exception:
    pass
if blas is None:
    try:
        paths = sorted({l.split()[-1] for l in open("/proc/self/maps") if "blas" in l.lower() and ".so" in l})
        for p in paths:
            try:
                lib = ctypes.CDLL(p)
                core = lib.openblas_get_corename; core.restype = ctypes.c_char_p
                conf = lib.openblas_get_config; conf.restype = ctypes.c_char_p
                blas = "%s (core %s, %d threads, %s)" % (conf().decode(), core().decode(), lib.openblas_get_num_threads(), p)
                break
            except (OSError, AttributeError):
                continue
    except OSError:
        pass
if blas is None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        np.show_config()
    blas = " ".join(l.strip() for l in out.getvalue().splitlines() if "librar" in l or "name" in l)[:300] or "unknown (numpy.show_config() says nothing)"
print(json.dumps({"best": best, "blas": blas, "numpy": np.__version__, "python": sys.version.split()[0]}))
`;

/** The python3 to use: MLM_PYTHON, else Debian's /usr/bin/python3, else python3 on PATH. */
export function pythonExecutable(env: Readonly<Record<string, string | undefined>> = process.env): string {
  if (env.MLM_PYTHON) return env.MLM_PYTHON;
  return fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
}

/** Measures the float32 matmul peak (see above); never throws: a missing python/numpy is a reason. */
export async function measureMatmulPeak(opts: { threads?: number; python?: string; timeoutMs?: number } = {}): Promise<MatmulPeak | MatmulPeakSkipped> {
  const threads = opts.threads ?? 2;
  const python = opts.python ?? pythonExecutable();
  const env: Record<string, string | undefined> = { ...process.env };
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  for (const k of ['OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS']) env[k] = String(threads);
  return new Promise((resolve) => {
    let out = '';
    let err = '';
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn(python, ['-c', PEAK_SCRIPT, String(threads)], { env, stdio: ['ignore', 'pipe', 'pipe'], timeout: opts.timeoutMs ?? 120_000 });
    } catch (e) {
      resolve({ ok: false, reason: `${python} cannot start (${(e as Error).message})` });
      return;
    }
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (err += d));
    child.on('error', (e) => resolve({ ok: false, reason: `${python} cannot start (${(e as NodeJS.ErrnoException).code ?? e.message}); install python3 and python3-numpy to measure the CPU's matmul peak` }));
    child.on('close', (code) => {
      let doc: { error?: string; best?: Record<string, number>; blas?: string; numpy?: string; python?: string };
      try {
        doc = JSON.parse(out.trim().split('\n').pop() ?? '');
      } catch {
        resolve({ ok: false, reason: `the numpy matmul probe failed (exit ${code}): ${err.trim().split('\n').pop() ?? ''}` });
        return;
      }
      if (doc.error !== undefined || doc.best === undefined) {
        resolve({ ok: false, reason: doc.error ?? 'the numpy matmul probe printed nothing' });
        return;
      }
      resolve({
        ok: true,
        gflops: Math.max(...Object.values(doc.best)),
        bySize: doc.best,
        threads,
        blas: doc.blas ?? 'unknown',
        numpy: doc.numpy ?? '?',
        python: doc.python ?? '?',
      });
    });
  });
}
