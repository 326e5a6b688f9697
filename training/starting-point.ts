// What a training run starts from (docs/architecture.md, "Training"): a checkpoint to resume
// (weights, optimizer and trainer state follow in the trainer), a model folder to adapt (--from),
// or a config to pretrain from random init (--config, with the data's tokenizer), each checked
// against the prepared data: the same tokenizer, rows no longer than the model's positions.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { firstNames, InputError } from '../common/errors.ts';
import { realPathOf, within } from '../common/paths.ts';
import type { Manifest } from '../data/shards.ts';
import { MlmTokenizer } from '../data/tokenizer.ts';
import { loadModelFolder, maxSequenceLength, readConfigArgument } from './checkpoint.ts';
import { checkDataTokenizer } from './evaluate.ts';
import { updateModelConfig, type ModelConfig } from './models/config.ts';
import { initialWeights, type ModelWeights } from './models/weights.ts';
import { localAttention } from './init-attention.ts';
import { loadResumable } from './run-folder.ts';
import { checkResumable, continuedOptions, type TrainOptions } from './train-options.ts';
import { listCheckpoints, type TrainerState } from './train-state.ts';

export interface StartingPoint {
  config: ModelConfig;
  tokenizer: MlmTokenizer;
  /** Random init from a seed (pretraining), or weights to load. */
  init: { seed: number } | { weights: ModelWeights };
  /** The trainer state of the checkpoint resumed from, or null. */
  state: TrainerState | null;
  /** What the model is called in messages and report.md: the checkpoint, the --from name or the --config file. */
  modelLabel: string;
  /** The run's options: those given, or on --resume those of training/train-options.ts continuedOptions. */
  options: TrainOptions;
}

/**
 * The model a run trains: the checkpoint `resumeFrom` (checked with `checkResumable`), else the
 * --from model, else a fresh model of the --config file. InputError when the options and the
 * run folder leave nothing to start from, or the data does not fit the model.
 */
export async function startingPoint(o: TrainOptions, manifest: Manifest, resumeFrom: string | null, log: (line: string) => void): Promise<StartingPoint> {
  if (resumeFrom === null && o.config === undefined && o.from === undefined) {
    throw new InputError('nothing to resume: give --config FILE to pretrain from scratch or --from MODEL to adapt a checkpoint');
  }
  let start: StartingPoint;
  if (resumeFrom !== null) {
    const { folder, trainerState } = await loadResumable(resumeFrom);
    const options = continuedOptions(o, trainerState, resumeFrom, log);
    const changed = checkResumable(trainerState, options, manifest, resumeFrom, log);
    if (changed.length > 0) refuseMixedBranches(options.out, resumeFrom, trainerState.global_step, changed);
    checkDataTokenizer(manifest, o.data, folder.tokenizer, resumeFrom);
    log(`resuming from ${resumeFrom} (step ${trainerState.global_step})`);
    start = { config: folder.config, tokenizer: folder.tokenizer, init: { weights: folder.weights }, state: trainerState, modelLabel: resumeFrom, options };
  } else if (o.from !== undefined) {
    const modelLabel = o.fromSource ?? o.from;
    const folder = await loadModelFolder(o.from, { source: modelLabel });
    checkDataTokenizer(manifest, o.data, folder.tokenizer, modelLabel);
    start = { config: folder.config, tokenizer: folder.tokenizer, init: { weights: folder.weights }, state: null, modelLabel, options: o };
  } else {
    const tokenizer = await loadDataTokenizer(manifest, o.data);
    const config = await pretrainConfig(o.config!, tokenizer, log);
    start = { config, tokenizer, init: pretrainInit(config, o, log), state: null, modelLabel: o.config!, options: o };
  }
  const maxT = maxSequenceLength(start.config);
  if (manifest.seq_len > maxT) {
    throw new InputError(
      `the data's rows have ${manifest.seq_len} tokens but the model has ${maxT} positions (max_position_embeddings); prepare the data with --seq-len ${maxT} or less`,
    );
  }
  return start;
}

/**
 * A run resumed with other options from an earlier checkpoint of its own folder would leave the
 * later checkpoints of the old options beside its own, and a bare --resume (the newest step) or
 * --save-total-limit would take them for this run's: refused, the folder as it is.
 */
function refuseMixedBranches(out: string, resumeFrom: string, step: number, changed: string[]): void {
  if (!fs.existsSync(out) || !within(realPathOf(resumeFrom), realPathOf(out))) return;
  const later = listCheckpoints(out).filter((c) => c.step > step).map((c) => path.basename(c.dir));
  if (later.length === 0) return;
  throw new InputError(`cannot go on from ${resumeFrom} inside ${out} with ${firstNames(changed)}: the run's later checkpoints (${firstNames(later)}) were trained with the old options and would be mixed with this run's; give a new --out to branch from that checkpoint, or remove them to go on here`);
}

/** A fresh model's weights: transformers' init from the seed, with --init-attention local applied. */
function pretrainInit(config: ModelConfig, o: TrainOptions, log: (line: string) => void): StartingPoint['init'] {
  if (o.initAttention !== 'local') return { seed: o.seed };
  const { weights, plan } = localAttention(config, initialWeights(config, o.seed));
  const heads = plan.offsets.map((d, h) => `head ${h} ${d > 0 ? '+' : ''}${d}`).join(', ');
  log(`init: layer ${plan.layer} attends by offset (${heads}); position embeddings sinusoidal (--init-attention local)`);
  if (o.lr > 1e-3) {
    log(`note: --init-attention local held at --lr 1e-3 in every run measured; above it, it depends on the start of the schedule (bert-mini at 2e-3 held with 10% warmup, not with 5%): if the loss stays near the unigram level, lower --lr or lengthen --warmup (training/init-attention.ts)`);
  }
  return { weights };
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
  const config = readConfigArgument(file);
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
