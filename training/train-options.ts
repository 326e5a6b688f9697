// The options of a training run (`TrainOptions`, with the CLI's defaults), their validation
// (`checkTrainOptions`: every option is checked here once, the CLI only parses), their record by
// CLI name in trainer_state.json and report.md (`argsRecord`), and what a resumed run must keep
// (`checkResumable`).
import * as path from 'node:path';
import { InputError, requireChoice, requireInteger, requireOpenFraction, requireSeed } from '../common/errors.ts';
import { MLM_PROBABILITY, type WholeWordSelection } from '../data/masking.ts';
import type { Manifest } from '../data/shards.ts';
import { parseBestMetric } from './best-model.ts';
import { INIT_ATTENTION_CHOICES, type InitAttention } from './init-attention.ts';
import { INIT_BIAS_CHOICES, type InitBias } from './init-bias.ts';
import { checkPrecisionName, type PrecisionName } from './precision.ts';
import { warmupSteps, type ScheduleName } from './schedule.ts';
import type { TrainerState } from './train-state.ts';

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
  /**
   * With wholeWordMask: 'independent' (default: each word with probability p, as transformers'
   * DataCollatorForLanguageModeling) or 'budget' (words in random order up to round(p x tokens) a
   * row, as BERT's create_pretraining_data.py); data/masking.ts describes both.
   */
  wholeWordSelection?: WholeWordSelection;
  /** Pretraining from --config only: the MLM head's output bias at step 0 (training/init-bias.ts). */
  initBias?: InitBias;
  /** Pretraining from --config only: layer 0's first heads start attending to fixed neighbours (training/init-attention.ts). */
  initAttention?: InitAttention;
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
  /** Evaluate before the first step (step 0: the base model); absent: when adapting (--from). Never on --resume. */
  evalOnStart?: boolean;
}

/**
 * Defaults of the CLI (scripts/commands/train.ts). transformers' TrainingArguments defaults for AdamW's
 * betas and epsilon, --max-grad-norm, --save-every and --seed; mlmkit's own for the rest: --lr 5e-4
 * (HF 5e-5), --warmup 0.06 (HF none), --weight-decay 0.01 (HF 0), --batch-size 32 (HF 8),
 * --log-every 10 (HF 500), --eval-every 500 (HF: no evaluation unless asked).
 */
export const TRAIN_DEFAULTS = {
  batchSize: 32,
  lr: 5e-4,
  warmup: 0.06,
  schedule: 'linear' as ScheduleName,
  weightDecay: 0.01,
  adamBeta1: 0.9,
  adamBeta2: 0.999,
  adamEpsilon: 1e-8,
  mlmProbability: MLM_PROBABILITY,
  wholeWordMask: false,
  initBias: 'zeros' as InitBias,
  initAttention: 'standard' as InitAttention,
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

/** The training arguments by CLI name, as saved in trainer_state.json and shown in report.md. */
export function argsRecord(o: TrainOptions): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) {
    if (v === undefined) continue;
    out[k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)] = v;
  }
  return out;
}

/** The model a resumed run adapts: recorded in its checkpoint (older ones: the --from it was started with), or null. */
export function baseModelOf(state: TrainerState): string | null {
  if (state.base_model !== undefined) return state.base_model;
  const from = state.args.from_source ?? state.args.from;
  return typeof from === 'string' ? from : null;
}

/** Arguments that decide the stream of batches and masks: a resumed run must keep them. */
const RESUME_FIXED = ['batch_size', 'grad_accum', 'seed', 'mlm_probability', 'whole_word_mask', 'whole_word_selection'] as const;

/**
 * The options of a run resumed from `state`: its length (--steps or --epochs) is the run's own
 * unless one is given, and the model it started from (--from, --config) is the recorded one: the
 * checkpoint's weights continue the run, so a different --from or --config is not used (a note
 * says so) and is not recorded as if it were.
 */
export function continuedOptions(o: TrainOptions, state: TrainerState, from: string, log: (line: string) => void): TrainOptions {
  const next: TrainOptions = { ...o };
  const text = (v: unknown) => (typeof v === 'string' ? v : undefined);
  if (o.steps === undefined && o.epochs === undefined) {
    const { steps, epochs } = state.args;
    if (typeof steps === 'number') next.steps = steps;
    else if (typeof epochs === 'number') next.epochs = epochs;
  }
  const given = o.config !== undefined ? ['--config', o.config] : o.from !== undefined ? ['--from', o.fromSource ?? o.from] : null;
  const recorded = text(state.args.from_source) ?? text(state.args.from) ?? text(state.args.config);
  if (given !== null && (recorded === undefined || (given[1] !== recorded && path.resolve(given[1]) !== path.resolve(recorded)))) {
    const base = baseModelOf(state);
    log(`note: ${given[0]} ${given[1]} is not used: the run continues from ${from}, ${base !== null ? `which adapts ${base}` : 'pretrained from scratch'}`);
  }
  next.from = text(state.args.from);
  next.fromSource = text(state.args.from_source);
  next.config = text(state.args.config);
  return next;
}

/**
 * Refuses to resume `state` with arguments that change the stream of batches, or on other data;
 * notes other changes and returns them (empty: the run goes on as an uninterrupted one would).
 */
export function checkResumable(state: TrainerState, o: TrainOptions, manifest: Manifest, from: string, log: (line: string) => void): string[] {
  const now = argsRecord(o);
  for (const key of RESUME_FIXED) {
    // whole_word_selection is recorded only when given; absent means the default.
    const [was, is] = key === 'whole_word_selection' ? [state.args[key] ?? 'independent', now[key] ?? 'independent'] : [state.args[key], now[key]];
    if (was !== is) {
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
  const shown = (v: unknown) => (v === undefined ? 'unset' : JSON.stringify(v));
  const changed = RESUME_CHANGEABLE
    .filter((k) => state.args[k] !== now[k])
    .map((k) => `--${k.replace(/_/g, '-')} ${shown(now[k])} (was ${shown(state.args[k])})`);
  if (changed.length > 0) log(`note: resuming with ${changed.join(', ')}: the run will no longer match an uninterrupted one`);
  return changed;
}

/** Arguments a resumed run may change (with a note): the steps after the checkpoint differ then. */
const RESUME_CHANGEABLE = [
  'steps', 'epochs', 'lr', 'warmup', 'schedule', 'weight_decay', 'adam_beta1', 'adam_beta2', 'adam_epsilon', 'max_grad_norm',
  'rows_per_pass', 'precision', 'eval_batches',
];

/**
 * Refuses unusable options (InputError naming the CLI flag). Needs no files and no backend: `train`
 * calls it before anything else, and the CLI before it picks the backend, so that a bad option is the
 * only line it prints.
 */
export function checkTrainOptions(o: TrainOptions): void {
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
  requireSeed(o.seed);
  requireOpenFraction(o.mlmProbability, 'mlm-probability');
  if (o.wholeWordSelection !== undefined) {
    requireChoice(o.wholeWordSelection, ['independent', 'budget'], 'whole-word-selection');
    if (!o.wholeWordMask) throw new InputError('--whole-word-selection chooses how whole words are selected: give --whole-word-mask too');
  }
  if (o.initBias !== undefined) requireChoice(o.initBias, INIT_BIAS_CHOICES, 'init-bias');
  if (o.initAttention !== undefined) requireChoice(o.initAttention, INIT_ATTENTION_CHOICES, 'init-attention');
  if (o.initBias === 'unigram' && o.from !== undefined) {
    throw new InputError('--init-bias unigram is for pretraining from --config; a model given with --from keeps its own output bias');
  }
  if (o.initAttention === 'local' && o.from !== undefined) {
    throw new InputError('--init-attention local is for pretraining from --config; a model given with --from keeps its own attention');
  }
  if (!(o.weightDecay >= 0)) throw new InputError(`--weight-decay must be >= 0, got ${o.weightDecay}`);
  if (!(o.adamBeta1 >= 0 && o.adamBeta1 < 1) || !(o.adamBeta2 >= 0 && o.adamBeta2 < 1)) throw new InputError(`--adam-beta1 and --adam-beta2 must be in [0, 1), got ${o.adamBeta1} and ${o.adamBeta2}`);
  if (!(o.adamEpsilon > 0)) throw new InputError(`--adam-epsilon must be positive, got ${o.adamEpsilon}`);
  if (!(o.maxGradNorm >= 0)) throw new InputError(`--max-grad-norm must be >= 0 (0 switches clipping off), got ${o.maxGradNorm}`);
  if (!(Number.isFinite(o.lr) && o.lr > 0)) throw new InputError(`--lr must be a positive number, got ${o.lr}`);
  // Checked here too (the schedule is built once the data is read): a bad value fails before any work.
  warmupSteps(o.warmup, 1);
  if (o.precision !== undefined) checkPrecisionName(o.precision);
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
