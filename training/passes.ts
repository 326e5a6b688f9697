// Memory planning for training and evaluation: how many rows one forward(/backward) pass may take
// on a backend (`rowsPerPass`, `planPasses`), cutting a batch into such passes (`splitBatch`), and
// the refusal of a model that cannot be trained in this machine's memory (`checkTrainingMemory`).
//
// TF.js keeps every intermediate tensor of a forward pass until its tidy ends, and during a
// backward pass also every intermediate gradient until the whole backward pass ends (tfjs-core
// `backpropagateGradients`), so a pass holds memory in proportion to its rows plus a few times
// the parameter bytes (`rowBytes` and `rowsPerPass` give the estimate, fitted on wasm for
// BERT-tiny, mini and small). The wasm heap cannot grow past 4 GB (an abort kills the process), so large batches
// are cut into passes of at most `rowsPerPass` rows whose results are summed: the loss sums and
// the gradients of the loss sum are additive, so the numbers are those of the whole batch (up to
// float32 summation order).
import * as os from 'node:os';
import { InputError } from '../common/errors.ts';
import type { MlmBatch } from '../data/masking.ts';
import type { Tf } from './backend.ts';
import { parameterCount, type ModelConfig } from './models/config.ts';

/** Bytes one pass may hold, by backend: wasm's heap stops at 4 GB; the others get more room. */
export function passBudgetBytes(backend: string): number {
  return backend === 'wasm' || backend === 'cpu' ? 2e9 : 6e9;
}

/** Bytes one row of `seqLen` tokens holds during a pass (the fitted estimate `rowsPerPass` describes). */
export function rowBytes(
  config: { num_hidden_layers: number; hidden_size: number; intermediate_size: number; num_attention_heads: number; vocab_size: number },
  seqLen: number,
  training: boolean,
): number {
  const { num_hidden_layers: L, hidden_size: H, intermediate_size: I, num_attention_heads: nh, vocab_size: V } = config;
  return 4 * (seqLen * L * (20 * (H + I) + 18 * nh * seqLen) + 0.15 * seqLen * V * 4) * (training ? 1 : 0.5);
}

/**
 * The most rows of `seqLen` tokens one pass may take within `budgetBytes`, from an estimate of
 * what TF.js holds, fitted on wasm for BERT-tiny/mini/small (13 floats per token and layer per
 * hidden + intermediate unit, 11 per attention score, ~2 vocabulary rows per masked token, ~5x
 * the parameters for weights, AdamW moments, gradients and transposes) and taken ~1.6x larger
 * for margin. A forward pass alone (`training` false) holds well under half of it per row.
 */
export function rowsPerPass(
  config: { num_hidden_layers: number; hidden_size: number; intermediate_size: number; num_attention_heads: number; vocab_size: number; max_position_embeddings: number },
  seqLen: number,
  opts: { training: boolean; budgetBytes: number },
): number {
  const { num_hidden_layers: L, hidden_size: H, intermediate_size: I, vocab_size: V } = config;
  const perRow = rowBytes(config, seqLen, opts.training);
  const params = (V + config.max_position_embeddings + 2) * H + L * (4 * H * H + 2 * H * I + 9 * H + I) + H * H + 3 * H + V;
  const fixed = 4 * params * (opts.training ? 8 : 3);
  return Math.max(1, Math.floor((opts.budgetBytes - fixed) / perRow));
}

/** Rows [r0, r1) of a batch, as views (no copy). */
export function sliceBatch(batch: MlmBatch, r0: number, r1: number): MlmBatch {
  const T = batch.seqLen;
  return {
    batchSize: r1 - r0,
    seqLen: T,
    inputIds: batch.inputIds.subarray(r0 * T, r1 * T),
    attentionMask: batch.attentionMask.subarray(r0 * T, r1 * T),
    tokenTypeIds: batch.tokenTypeIds.subarray(r0 * T, r1 * T),
    labels: batch.labels.subarray(r0 * T, r1 * T),
  };
}

/** A batch cut into equal passes (sizes differ by at most one row) of at most `maxRows` rows. */
export function splitBatch(batch: MlmBatch, maxRows: number): MlmBatch[] {
  const B = batch.batchSize;
  if (B <= maxRows) return [batch];
  const passes = Math.ceil(B / maxRows);
  const out: MlmBatch[] = [];
  for (let p = 0; p < passes; p++) out.push(sliceBatch(batch, Math.floor((p * B) / passes), Math.floor(((p + 1) * B) / passes)));
  return out;
}

/** Rows per pass for training and for evaluation: `rowsPerPassOption` when given (> 0), else the estimate. */
export function planPasses(config: ModelConfig, seqLen: number, backend: string, rowsPerPassOption = 0): { trainRows: number; evalRows: number } {
  const budgetBytes = passBudgetBytes(backend);
  return {
    trainRows: rowsPerPassOption || rowsPerPass(config, seqLen, { training: true, budgetBytes }),
    evalRows: rowsPerPassOption || rowsPerPass(config, seqLen, { training: false, budgetBytes }),
  };
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
 * activations of one row of the data (`rowBytes` above) must fit in os.totalmem()
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
