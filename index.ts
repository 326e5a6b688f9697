// mlmkit's library entry (`import { ... } from 'mlmkit'`): the functions behind the `mlm` CLI,
// for programs that train, evaluate, export and query masked language models on TensorFlow.js.
// Every function throws InputError (common/errors.ts) for bad input, with a one-line message.
//
//   import { loadModel, fillMask } from 'mlmkit';
//   const model = await loadModel('checkpoints/med', { backend: 'cpu' });
//   console.log(await fillMask(model, 'The patient was given [MASK] for the pain.'));
//   model.dispose();
import { InputError } from './common/errors.ts';
import { checkArgument, checkOptions, describeValue, kindsOfDefaults, type OptionKind } from './common/options.ts';
import { prepare as prepareShards, type PrepareOptions, type PrepareResult } from './data/prepare.ts';
import type { PrepareMode } from './data/shards.ts';
import { MlmTokenizer } from './data/tokenizer.ts';
import { VERSION } from './common/version.ts';
import { blasOptions, resolveBackendName, selectBackend, type BackendInfo, type BackendName, type Tf } from './training/backend.ts';
import { evaluateModels, type EvaluateModelsOptions, type EvaluationRow } from './training/evaluate-models.ts';
import { checkEvalData } from './training/evaluate.ts';
import { exportModel as exportModelFolder, type ExportOptions, type ExportSummary } from './training/export-model.ts';
import { fillMask as fillMaskWith, pipelineOutput, type FillMaskCandidate, type FillMaskResult } from './training/fill-mask.ts';
import { loadModel as loadModelFolderOrHub, resolveModel } from './training/hub.ts';
import type { MaskedLM } from './training/models/bert.ts';
import type { ModelConfig } from './training/models/config.ts';
import { createMaskedLM } from './training/models/roberta.ts';
import { pushModel, type PushedFile, type PushOptions, type PushResult } from './training/push.ts';
import { TRAIN_DEFAULTS, train as trainLoop, type StepInfo, type TrainOptions, type TrainResult } from './training/trainer.ts';

export { InputError, MlmTokenizer, VERSION, pipelineOutput, createMaskedLM, selectBackend };
export { TrainingError } from './training/trainer.ts';
export type {
  BackendInfo, BackendName, EvaluationRow, ExportSummary, FillMaskCandidate, FillMaskResult, MaskedLM,
  ModelConfig, PrepareResult, PushedFile, PushOptions, PushResult, StepInfo, Tf, TrainOptions, TrainResult,
};

/** Where a function logs notes and warnings; the default is silence. */
export type Log = (line: string) => void;
const quiet: Log = () => {};

/** Options shared by the functions that run a model. */
export interface BackendOptions {
  /** 'auto' (default: the fastest that starts; MLM_BACKEND in `env` when given), 'tensorflow-gpu', 'tensorflow', 'webgpu', 'wasm' or 'cpu'. */
  backend?: BackendName;
  /** The wasm backend's BLAS library (a file, or 'none'); searched for when absent. */
  blas?: string;
  /** Its thread count; one per CPU this process may use (at most 8) when absent. */
  blasThreads?: number;
  /**
   * Environment the CLI's defaults are read from (MLM_BACKEND for 'auto', MLM_BLAS,
   * MLM_BLAS_THREADS): none by default; pass `process.env` to behave as the `mlm` command does.
   */
  env?: Readonly<Record<string, string | undefined>>;
  log?: Log;
}

const BACKEND_KINDS: Record<string, OptionKind> = { backend: 'string', blas: 'string', blasThreads: 'integer', env: 'object', log: 'function' };
const LOAD_KINDS: Record<string, OptionKind> = { ...BACKEND_KINDS, revision: 'string' };

/** The library's own checks of a backend's options (the CLI's come from blasOptions). */
function checkBackendOptions(fn: string, opts: BackendOptions): void {
  if (opts.blasThreads !== undefined && !(opts.blasThreads >= 1 && opts.blasThreads <= 64)) {
    throw new InputError(`${fn}: option blasThreads must be a whole number from 1 to 64, got ${opts.blasThreads}`);
  }
}

async function startBackend(opts: BackendOptions): Promise<BackendInfo> {
  const log = opts.log ?? quiet;
  const env = opts.env ?? {};
  const fromEnv = blasOptions(env);
  return selectBackend(resolveBackendName(opts.backend ?? 'auto', env), {
    log,
    blas: opts.blas ?? fromEnv.blas,
    blasThreads: opts.blasThreads ?? fromEnv.blasThreads,
  });
}

/** A model ready to run: its config and tokenizer, and the TF.js model on a started backend. */
export interface LoadedModel {
  /** What was named: the folder or the Hub id. */
  source: string;
  /** The Hub commit; null for a local folder. */
  revision: string | null;
  config: ModelConfig;
  tokenizer: MlmTokenizer;
  /** The TF.js masked LM (`model.logits(...)`, see training/models/bert.ts). */
  model: MaskedLM;
  tf: Tf;
  /** The backend the model runs on. */
  backend: string;
  /** Frees the model's tensors. */
  dispose(): void;
}

export interface LoadModelOptions extends BackendOptions {
  /** Hub branch, tag or commit (default main). */
  revision?: string;
}

/**
 * The TF.js backend each loaded model was built on. TF.js has one active backend per process and
 * loading another model onto another backend switches it; a model's weights stay where they were
 * made, so fillMask switches back to the model's backend before it runs (else TF.js would run it on
 * the other one, reading its weights across).
 */
const builtOn = new WeakMap<LoadedModel, string>();

/**
 * Loads a model folder (config.json, model.safetensors, tokenizer files; a training checkpoint is
 * fine) or a Hugging Face Hub id (downloaded into the Hugging Face cache when missing) and builds
 * it on a TF.js backend. Call `dispose()` when done.
 */
export async function loadModel(source: string, opts: LoadModelOptions = {}): Promise<LoadedModel> {
  checkArgument('loadModel', 'the model (a folder or Hub id)', source, 'string');
  checkOptions('loadModel', opts, LOAD_KINDS);
  checkBackendOptions('loadModel', opts);
  const log = opts.log ?? quiet;
  const folder = await loadModelFolderOrHub(source, { revision: opts.revision, log });
  const backend = await startBackend(opts);
  const model = createMaskedLM(backend.tf, folder.config, { weights: folder.weights, capabilities: backend.capabilities });
  const loaded: LoadedModel = {
    source: folder.source,
    revision: folder.revision ?? null,
    config: folder.config,
    tokenizer: folder.tokenizer,
    model,
    tf: backend.tf,
    backend: backend.name,
    dispose: () => model.dispose(),
  };
  builtOn.set(loaded, backend.tf.getBackend());
  return loaded;
}

export interface FillMaskOptions extends LoadModelOptions {
  /** Candidates per mask (default 5). */
  topK?: number;
  /** Only score these words. */
  targets?: string[];
}

/**
 * The Hugging Face fill-mask pipeline: for each mask token in `text` ([MASK] for BERT, <mask> for
 * RoBERTa), the top-k candidates, best first. `model` is a LoadedModel, or a folder / Hub id that
 * is loaded for this call and disposed after. Returns transformers' pipeline output: a list of
 * {score, token, token_str, sequence} for one mask, a list of such lists for several.
 */
export async function fillMask(model: LoadedModel | string, text: string, opts: FillMaskOptions = {}): Promise<FillMaskCandidate[] | FillMaskCandidate[][]> {
  if (typeof model !== 'string') checkArgument('fillMask', 'the model (a LoadedModel, a folder or a Hub id)', model, 'object');
  checkArgument('fillMask', 'the text', text, 'string');
  checkOptions('fillMask', opts, { ...LOAD_KINDS, topK: 'integer', targets: 'strings' });
  const topK = opts.topK ?? 5;
  if (topK < 1) throw new InputError(`fillMask: option topK must be a positive integer, got ${topK}`);
  const loaded = typeof model === 'string' ? await loadModel(model, opts) : model;
  const home = builtOn.get(loaded);
  if (home !== undefined && loaded.tf.getBackend() !== home) await loaded.tf.setBackend(home);
  try {
    const warn = opts.log ?? quiet;
    const result: FillMaskResult = await fillMaskWith(loaded.tf, loaded.model, loaded.tokenizer, text, { topK, targets: opts.targets, warn: (w) => warn(`warning: ${w}`) });
    return pipelineOutput(result);
  } finally {
    if (typeof model === 'string') loaded.dispose();
  }
}

export interface PrepareCorpusOptions extends Partial<Omit<PrepareOptions, 'tokenizer' | 'log' | 'corpus' | 'out' | 'tokenizerSource'>> {
  /** Files, folders or globs (.txt .jsonl .csv .tsv .parquet .arrow). */
  corpus: string | string[];
  /** A tokenizer folder (tokenizer.json, or vocab.txt, or vocab.json + merges.txt), or a loaded tokenizer. */
  tokenizer: string | MlmTokenizer;
  /** Output folder for the shards and manifest.json. */
  out: string;
  log?: Log;
}

/**
 * Tokenizes a corpus into training-ready token shards + manifest.json (what `mlm prepare` does).
 * Defaults as the CLI's: 128-token packed blocks, 5% of documents held out, seed 42.
 */
export async function prepare(opts: PrepareCorpusOptions): Promise<PrepareResult> {
  checkOptions('prepare', opts, {
    corpus: 'string|strings', out: 'string', seqLen: 'integer', mode: 'string', validationSplit: 'number', validation: 'strings',
    seed: 'integer', overwrite: 'boolean', maxPositions: 'integer', log: 'function', progress: 'boolean', batchBytes: 'integer',
    shardBytes: 'integer', version: 'string', tokenizerRevision: 'string',
  }, ['corpus', 'out', 'tokenizer']);
  if (opts.validation !== undefined && opts.validationSplit !== undefined) {
    throw new InputError('prepare: give validation (a held-out set) or validationSplit (a share of the corpus held out), not both');
  }
  if (typeof opts.tokenizer !== 'string' && !(opts.tokenizer instanceof MlmTokenizer)) {
    throw new InputError(`prepare: option tokenizer must be a tokenizer folder (a string) or a loaded MlmTokenizer, got ${describeValue(opts.tokenizer)}`);
  }
  const tokenizer = typeof opts.tokenizer === 'string' ? await MlmTokenizer.load(opts.tokenizer) : opts.tokenizer;
  const mode: PrepareMode = opts.mode ?? 'blocks';
  return prepareShards({
    ...opts,
    corpus: typeof opts.corpus === 'string' ? [opts.corpus] : opts.corpus,
    tokenizer,
    tokenizerSource: typeof opts.tokenizer === 'string' ? opts.tokenizer : opts.tokenizer.source ?? 'tokenizer',
    // out may not be, hold or lie in the tokenizer's folder (overwrite would delete it).
    inputFolders: typeof opts.tokenizer === 'string' ? [{ path: opts.tokenizer, flag: 'tokenizer' }] : [],
    out: opts.out,
    seqLen: opts.seqLen ?? 128,
    mode,
    validationSplit: opts.validationSplit ?? 0.05,
    seed: opts.seed ?? 42,
    overwrite: opts.overwrite ?? false,
    log: opts.log ?? quiet,
    progress: opts.progress ?? false,
    version: opts.version ?? VERSION,
  });
}

export interface TrainRunOptions extends Partial<Omit<TrainOptions, 'data' | 'out' | 'from'>>, BackendOptions {
  /** A prepared data folder (see `prepare`). */
  data: string;
  /** The run folder: checkpoints, metrics.jsonl, report.md. */
  out: string;
  /** Adapt this model folder or Hub id (else `config`: pretrain from random init). */
  from?: string;
  /** Hub revision for `from`. */
  revision?: string;
  /** Show a progress bar on stderr (default false). */
  progress?: boolean;
  /** Aborting ends the run after the current step, with a checkpoint. */
  signal?: AbortSignal;
  /** Called after every optimizer step. */
  onStep?: (info: StepInfo) => void;
}

/**
 * Pretrains (`config`: a model config.json file) or adapts (`from`: a model folder or Hub id) a
 * masked LM on prepared data (what `mlm train` does). Other options default as the CLI's
 * (TRAIN_DEFAULTS). Resolves with the final losses and the last checkpoint folder.
 */
export async function train(opts: TrainRunOptions): Promise<TrainResult> {
  const { resume: _resume, ...defaults } = TRAIN_DEFAULTS;
  checkOptions('train', opts, {
    ...kindsOfDefaults(defaults), ...BACKEND_KINDS, data: 'string', out: 'string', from: 'string', config: 'string', revision: 'string',
    steps: 'integer', epochs: 'number', wholeWordSelection: 'string', rowsPerPass: 'integer', loadBestAtEnd: 'boolean', metricForBest: 'string',
    earlyStoppingPatience: 'integer', earlyStoppingThreshold: 'number', evalOnStart: 'boolean', progress: 'boolean', onStep: 'function',
  }, ['data', 'out']);
  if (opts.resume !== undefined && typeof opts.resume !== 'boolean' && typeof opts.resume !== 'string') {
    throw new InputError(`train: option resume must be true, false or a checkpoint folder (a string), got ${typeof opts.resume}`);
  }
  checkBackendOptions('train', opts);
  const log = opts.log ?? quiet;
  const from = opts.from === undefined ? undefined : await resolveModel(opts.from, { revision: opts.revision, log });
  const { backend: _b, log: _l, revision: _r, progress, signal, onStep, ...rest } = opts;
  const options: TrainOptions = {
    ...TRAIN_DEFAULTS,
    resume: false,
    ...rest,
    from: from?.dir,
    fromSource: from?.source,
  };
  const backend = await startBackend(opts);
  return trainLoop(options, { tf: backend.tf, backend: { name: backend.name, device: backend.device }, version: VERSION, log, progress: progress ?? false, signal, onStep });
}

export interface EvaluateOptions extends Omit<EvaluateModelsOptions, 'models' | 'data' | 'version'>, BackendOptions {
  /** Model folders or Hub ids. */
  models: string | string[];
  /** Prepared data folders, or raw text files / folders / globs (each one data set). */
  data: string | string[];
  /** Hub revision for the model ids. */
  revision?: string;
}

/**
 * Held-out masked-token loss, perplexity and accuracy (or pseudo-perplexity with `pseudo`) of
 * each model on each data set (what `mlm evaluate` does): one row per pair, models outer.
 */
export async function evaluate(opts: EvaluateOptions): Promise<EvaluationRow[]> {
  checkOptions('evaluate', opts, {
    ...BACKEND_KINDS, models: 'string|strings', data: 'string|strings', revision: 'string', split: 'string', seed: 'integer', batchSize: 'integer',
    maxBatches: 'integer', mlmProbability: 'number', wholeWordMask: 'boolean', wholeWordSelection: 'string', pseudo: 'boolean', seqLen: 'integer', text: 'object',
    onStart: 'function', onProgress: 'function', onFinish: 'function',
  }, ['models', 'data']);
  checkBackendOptions('evaluate', opts);
  const log = opts.log ?? quiet;
  const data = typeof opts.data === 'string' ? [opts.data] : opts.data;
  // The data first, as the CLI does: a wrong path fails before a model is downloaded.
  for (const d of data) await checkEvalData(d, log);
  const names = typeof opts.models === 'string' ? [opts.models] : opts.models;
  const models = [];
  for (const m of names) models.push(await resolveModel(m, { revision: opts.revision, log }));
  const backend = await startBackend(opts);
  return evaluateModels(backend.tf, { ...opts, models, data, version: VERSION, capabilities: backend.capabilities });
}

/**
 * Writes a model folder or Hub id as a clean inference checkpoint (what `mlm export` does):
 * format 'hf' (config.json + model.safetensors + tokenizer) or 'tfjs' (model.json + weight shards).
 */
export async function exportModel(opts: ExportOptions): Promise<ExportSummary> {
  checkOptions('exportModel', opts, { model: 'string', out: 'string', format: 'string', revision: 'string', overwrite: 'boolean', generatedBy: 'string', log: 'function' }, ['model', 'out']);
  return exportModelFolder({ generatedBy: `mlmkit ${VERSION}`, log: quiet, ...opts });
}
export type { ExportOptions };

/**
 * Uploads a model folder (or a training run's final model) to the Hugging Face Hub in one commit,
 * creating the repo when missing, with a generated model card (README.md, written into the folder
 * when it has none). The token is `token`, else HF_TOKEN in `env` (or the token file under HF_HOME
 * from `env`); the endpoint `endpoint`, else HF_ENDPOINT in `env`, else https://huggingface.co.
 * Nothing is read from the process's environment unless `env: process.env` is passed.
 */
export async function push(opts: PushOptions): Promise<PushResult> {
  checkOptions('push', opts, {
    model: 'string', repo: 'string', private: 'boolean', revision: 'string', includeReport: 'boolean', overwriteCard: 'boolean', license: 'string',
    commitMessage: 'string', env: 'object', token: 'string', endpoint: 'string', retries: 'integer', retryDelayMs: 'number', log: 'function',
  }, ['model', 'repo']);
  return pushModel({ log: quiet, env: {}, ...opts });
}
