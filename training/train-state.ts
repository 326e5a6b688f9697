// The training part of a checkpoint folder (docs/formats.md, "Checkpoints"), beside the Hugging Face model
// files that checkpoint.ts writes:
//   trainer_state.json     step, epoch, data position + masking RNG state, best metric, metric
//                          history, the full training arguments, mlmkit version, backend
//   optimizer.safetensors  AdamW moments, float32, `<name>.exp_avg` / `<name>.exp_avg_sq` for
//                          every weight in the layout of model.safetensors (Linear weights
//                          [out, in]), plus `step` (I64 scalar)
// and the listing of a run folder's checkpoints (`checkpoint-STEP`, complete when it holds
// trainer_state.json: checkpoint folders are written under a temporary name and renamed whole).
import * as fsp from 'node:fs/promises';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { InputError, requireRegularFile } from '../common/errors.ts';
import type { DataPosition } from '../data/batches.ts';
import type { RngState } from '../common/rng.ts';
import type { Tensor } from '@tensorflow/tfjs';
import type { Tf } from './backend.ts';
import type { LossScaleState } from './loss-scale.ts';
import type { ModelConfig } from './models/config.ts';
import { fromHfLayout, toHfLayout, type NamedArray } from './models/weights.ts';
import type { AdamWState } from './optimizer.ts';
import type { MetricsEntry } from './report.ts';
import { writeFileAtomic } from '../common/atomic.ts';
import { loadSafetensorsF32, saveSafetensors, type WritableTensor } from './safetensors.ts';

export const TRAINER_STATE = 'trainer_state.json';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const STATE_FORMAT = 'mlmkit-trainer-state';
export const STATE_VERSION = 1;

/** Sums over the steps of a log window (or of the whole run) that are not logged yet. */
export interface Window {
  steps: number;
  loss_sum: number;
  masked_tokens: number;
  tokens: number;
  seconds: number;
}

export interface TrainerState {
  format: typeof STATE_FORMAT;
  version: number;
  /** Optimizer updates done. */
  global_step: number;
  /** Epochs done, fractional (batches drawn / batches per epoch). */
  epoch: number;
  max_steps: number;
  /** Where the batch stream stands and its masking RNG: MaskedBatches.getState(). */
  data_state: { position: DataPosition; rng: RngState };
  /** The best --metric-for-best value at a saved checkpoint (lowest eval loss by default), and where. */
  best_metric: number | null;
  best_step: number | null;
  best_model_checkpoint: string | null;
  /** Every metrics.jsonl entry up to this step. */
  log_history: MetricsEntry[];
  /** The current log window (steps since the last log line). */
  log_window: Window;
  /** The whole run so far (train_loss in the final result is loss_sum / steps). */
  totals: Window;
  /** The training arguments, by CLI name (snake_case). */
  args: Record<string, unknown>;
  data: { dir: string; tokenizer_sha256: string; seq_len: number; train_rows: number };
  mlmkit_version: string;
  backend: string;
  device: string;
  /** Dynamic loss scaling with --precision fp16 (training/loss-scale.ts); null or absent otherwise. */
  loss_scale?: LossScaleState | null;
  /** The model the run adapts (what --from named), null when pretrained from a config; absent in older states. */
  base_model?: string | null;
  /** Wall-clock seconds spent to reach this checkpoint, over every session that led to it; absent in older states. */
  wall_seconds?: number;
}

export async function writeTrainerState(dir: string, state: TrainerState, optimizer: AdamWState): Promise<void> {
  const tensors = new Map<string, WritableTensor>();
  for (const [name, t] of optimizer.tensors) tensors.set(name, { dtype: 'F32', shape: t.shape, data: t.data });
  tensors.set('step', { dtype: 'I64', shape: [], data: new BigInt64Array([BigInt(optimizer.step)]) });
  await saveSafetensors(path.join(dir, OPTIMIZER_FILE), tensors, { step: String(optimizer.step), optimizer: 'AdamW' });
  // trainer_state.json last: its presence marks the training part complete.
  await writeFileAtomic(path.join(dir, TRAINER_STATE), [Buffer.from(JSON.stringify(state, null, 2) + '\n', 'utf8')]);
}

export async function readTrainerState(dir: string): Promise<TrainerState> {
  const file = path.join(dir, TRAINER_STATE);
  let state: TrainerState;
  requireRegularFile(file, 'trainer state');
  try {
    state = JSON.parse(await fsp.readFile(file, 'utf8')) as TrainerState;
  } catch (err) {
    throw new InputError(`cannot read ${file} (${(err as Error).message}); resume from a complete checkpoint folder (checkpoint-STEP with ${TRAINER_STATE})`);
  }
  if (state?.format !== STATE_FORMAT) throw new InputError(`${file} is not an mlmkit trainer state; resume from a checkpoint written by \`mlm train\``);
  if (state.version !== STATE_VERSION) throw new InputError(`${file} has version ${state.version}; this mlmkit reads version ${STATE_VERSION}`);
  return state;
}

export async function readOptimizerState(dir: string): Promise<AdamWState> {
  const file = path.join(dir, OPTIMIZER_FILE);
  if (!fs.existsSync(file)) throw new InputError(`${file} is missing: ${dir} holds no optimizer state to resume from`);
  const loaded = await loadSafetensorsF32(file);
  const stepTensor = loaded.get('step');
  if (stepTensor === undefined) throw new InputError(`${file} has no "step" tensor; it was not written by \`mlm train\``);
  loaded.delete('step');
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, t] of loaded) tensors.set(name, { shape: t.shape, data: t.data });
  return { step: stepTensor.data[0], tensors };
}

// -------------------------------------------------------------------------------------------------
// A run folder's checkpoints

export interface CheckpointEntry {
  step: number;
  dir: string;
  /** Holds trainer_state.json (folders are renamed into place only once complete). */
  complete: boolean;
}

export const CHECKPOINT_RE = /^checkpoint-(\d+)$/;

export function checkpointName(step: number): string {
  return `checkpoint-${step}`;
}

/** The checkpoint-STEP folders of `out`, oldest first (none when `out` does not exist). */
export function listCheckpoints(out: string): CheckpointEntry[] {
  let names: string[];
  try {
    names = fs.readdirSync(out);
  } catch {
    return [];
  }
  const found: CheckpointEntry[] = [];
  for (const name of names) {
    const m = CHECKPOINT_RE.exec(name);
    if (!m) continue;
    const dir = path.join(out, name);
    if (!fs.statSync(dir).isDirectory()) continue;
    found.push({ step: Number(m[1]), dir, complete: fs.existsSync(path.join(dir, TRAINER_STATE)) });
  }
  return found.sort((a, b) => a.step - b.step);
}

/** The newest complete checkpoint of `out`, or null. */
export function newestCheckpoint(out: string): CheckpointEntry | null {
  const complete = listCheckpoints(out).filter((c) => c.complete);
  return complete.length > 0 ? complete[complete.length - 1] : null;
}

/**
 * --save-total-limit: removes complete checkpoints of `out` but the newest `limit` and the one
 * at `bestStep` (when given). Returns the folders removed.
 */
export async function pruneCheckpoints(out: string, limit: number, bestStep: number | null, upTo = Infinity): Promise<string[]> {
  if (limit <= 0) return [];
  // Checkpoints past `upTo` (the step just saved) are from a continuation of the run that a resume
  // from an earlier checkpoint left behind: neither counted among the newest nor removed.
  const complete = listCheckpoints(out).filter((c) => c.complete && c.step <= upTo);
  const keep = new Set(complete.slice(-limit).map((c) => c.step));
  if (bestStep !== null) keep.add(bestStep);
  const removed: string[] = [];
  for (const c of complete) {
    if (keep.has(c.step)) continue;
    await fsp.rm(c.dir, { recursive: true, force: true });
    removed.push(c.dir);
  }
  return removed;
}

/**
 * Optimizer moments are stored like model.safetensors: under Hugging Face names (query, key and
 * value apart, though the model packs them) with Linear weights [out, in]. `toFile` and
 * `fromFile` convert a whole state (`AdamW.getState()` without a `toFile` of its own, and what
 * `setState` takes); `tensor` is the `fromFile` that setState then needs, a plain upload.
 */
export function optimizerLayout(tf: Tf, config: ModelConfig) {
  const convert = (state: AdamWState, f: (moments: Map<string, NamedArray>, what: string) => Map<string, NamedArray>): AdamWState => {
    const tensors = new Map<string, NamedArray>();
    for (const suffix of ['exp_avg', 'exp_avg_sq']) {
      const end = `.${suffix}`;
      const moments = new Map([...state.tensors].filter(([k]) => k.endsWith(end)).map(([k, t]) => [k.slice(0, -end.length), t]));
      for (const [name, t] of f(moments, `optimizer state (${suffix})`)) tensors.set(`${name}${end}`, t);
    }
    return { step: state.step, tensors };
  };
  return {
    toFile: (state: AdamWState): AdamWState => convert(state, (m, what) => toHfLayout(config, m, what)),
    fromFile: (state: AdamWState): AdamWState => convert(state, (m, what) => fromHfLayout(config, m, what)),
    tensor: (_name: string, a: NamedArray): Tensor => tf.tensor(a.data, a.shape, 'float32'),
  };
}
