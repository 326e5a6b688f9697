// `mlm train` (and its aliases `mlm pretrain`, which requires --config, and `mlm finetune`, which
// requires --from): pretrain a masked LM from a config or adapt a checkpoint to prepared data
// (docs/architecture.md, "Training"; docs/formats.md, "The run folder"). The loop is training/trainer.ts; this file maps flags to its
// options, picks the backend, wires Ctrl-C, and prints the result.
//
// Ctrl-C (SIGINT): the current step finishes, a checkpoint is saved, report.md is written, and the
// command exits with code 130 (the shell's code for "ended by SIGINT", so scripts can tell an
// interrupted run from a finished one); `--resume` continues it. A second Ctrl-C ends at once.
import * as fs from 'node:fs';
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { InputError } from '../../common/errors.ts';
import { formatTable } from '../../data/progress.ts';
import { blasOptions, resolveBackendName, selectBackend } from '../../training/backend.ts';
import { resolveModel } from '../../training/hub.ts';
import { shellCommand } from '../../training/model-card.ts';
import { checkPushTarget, pushModel, type PushResult } from '../../training/push.ts';
import { INIT_ATTENTION_CHOICES, requireEvenHeadSize, type InitAttention } from '../../training/init-attention.ts';
import { INIT_BIAS_CHOICES, type InitBias } from '../../training/init-bias.ts';
import { checkPrecisionName } from '../../training/precision.ts';
import { SCHEDULES, type ScheduleName } from '../../training/schedule.ts';
import { train, TRAIN_DEFAULTS, type TrainOptions } from '../../training/trainer.ts';
import { checkTrainOptions } from '../../training/train-options.ts';
import { readConfigArgument } from '../../training/checkpoint.ts';
import { VERSION } from '../../common/version.ts';
import { withConfigFile } from '../config-file.ts';

interface TrainArgs {
  config?: string;
  from?: string;
  revision?: string;
  data: string;
  out: string;
  steps?: number;
  epochs?: number;
  'batch-size': number;
  lr: number;
  warmup: number;
  schedule: ScheduleName;
  'weight-decay': number;
  'adam-beta1': number;
  'adam-beta2': number;
  'adam-epsilon': number;
  'mlm-probability': number;
  'whole-word-mask': boolean;
  'whole-word-selection'?: 'independent' | 'budget';
  'init-bias': InitBias;
  'init-attention': InitAttention;
  'grad-accum': number;
  'max-grad-norm': number;
  'eval-every': number;
  'eval-batches': number;
  'log-every': number;
  'save-every': number;
  'save-total-limit': number;
  resume?: string;
  seed: number;
  'rows-per-pass': number;
  precision: string;
  'load-best-at-end': boolean;
  'metric-for-best': string;
  'early-stopping-patience': number;
  'early-stopping-threshold': number;
  'eval-on-start'?: boolean;
  backend: string;
  'push-to-hub'?: string;
  'hub-private': boolean;
  json: boolean;
  progress: boolean;
}

type Variant = 'train' | 'pretrain' | 'finetune';

function builder(variant: Variant) {
  const d = TRAIN_DEFAULTS;
  return (y: Argv) => {
    let b = y
      .option('config', { type: 'string', describe: 'model config.json to pretrain from scratch (vocab_size and special ids come from the data\'s tokenizer)' })
      .option('from', { type: 'string', describe: 'model folder (or Hugging Face Hub id) to adapt; the data must use its tokenizer' })
      .option('revision', { type: 'string', describe: 'Hub revision for --from' })
      .option('data', { type: 'string', demandOption: true, describe: 'prepared data folder (`mlm prepare --out`)' })
      .option('out', { type: 'string', demandOption: true, describe: 'run folder: checkpoint-STEP/, metrics.jsonl, report.md, and at the end the final model and *_results.json' })
      .option('steps', { type: 'number', describe: 'optimizer steps (default: one epoch)' })
      .option('epochs', { type: 'number', describe: 'epochs over the training split instead of --steps' })
      .option('batch-size', { type: 'number', default: d.batchSize, describe: 'rows per micro-batch' })
      .option('lr', { type: 'number', default: d.lr, describe: 'peak learning rate' })
      .option('warmup', { type: 'number', default: d.warmup, describe: 'warmup: a fraction of the steps if < 1, else steps' })
      .option('schedule', { choices: SCHEDULES, default: d.schedule, describe: 'learning-rate decay after warmup' })
      .option('weight-decay', { type: 'number', default: d.weightDecay, describe: 'AdamW decoupled weight decay (not on biases and LayerNorm weights)' })
      .option('adam-beta1', { type: 'number', default: d.adamBeta1, describe: 'AdamW decay rate of the gradient mean' })
      .option('adam-beta2', { type: 'number', default: d.adamBeta2, describe: 'AdamW decay rate of the squared-gradient mean' })
      .option('adam-epsilon', { type: 'number', default: d.adamEpsilon, describe: 'AdamW term added to the root of the squared-gradient mean' })
      .option('mlm-probability', { type: 'number', default: d.mlmProbability, describe: 'share of tokens selected for prediction' })
      .option('whole-word-mask', { type: 'boolean', default: d.wholeWordMask, describe: 'select whole words' })
      .option('whole-word-selection', {
        choices: ['independent', 'budget'] as const,
        describe: 'with --whole-word-mask: each word with probability p (independent, the default, as transformers) or words in random order up to round(p x tokens) a row (budget, as BERT\'s create_pretraining_data.py)',
      })
      .option('init-bias', {
        choices: INIT_BIAS_CHOICES, default: d.initBias,
        describe: 'pretraining from --config: the output bias at step 0, zeros (as Hugging Face) or the log unigram frequencies of the training tokens (skips the first hundreds of steps of a small run)',
      })
      .option('init-attention', {
        choices: INIT_ATTENTION_CHOICES, default: d.initAttention,
        describe: 'pretraining from --config: the attention at step 0, standard (random, as Hugging Face) or local (layer 0\'s first heads look at the tokens 1 and 2 before and after; a small run leaves the bag-of-words plateau within hundreds of steps instead of many millions of tokens; --lr 1e-3 held in every run measured; higher rates need a longer --warmup)',
      })
      .option('grad-accum', { type: 'number', default: d.gradAccum, describe: 'micro-batches per optimizer step' })
      .option('max-grad-norm', { type: 'number', default: d.maxGradNorm, describe: 'clip the global gradient norm (0: off)' })
      .option('eval-every', { type: 'number', default: d.evalEvery, describe: 'evaluate every N steps (0: only at the end)' })
      .option('eval-batches', { type: 'number', default: d.evalBatches, describe: 'validation batches of --batch-size rows per evaluation (0: the whole split); runs with different batch sizes score different rows, so compare them with mlm evaluate' })
      .option('log-every', { type: 'number', default: d.logEvery, describe: 'a metrics.jsonl line every N steps' })
      .option('save-every', { type: 'number', default: d.saveEvery, describe: 'checkpoint every N steps (0: only at the end)' })
      .option('save-total-limit', { type: 'number', default: d.saveTotalLimit, describe: 'keep the newest K checkpoints plus the best (0: all)' })
      .option('resume', { type: 'string', describe: 'continue from the newest checkpoint in --out, or from the checkpoint folder given' })
      .option('seed', { type: 'number', default: d.seed, describe: 'seeds init, data order, masks and dropout' })
      .option('rows-per-pass', { type: 'number', default: 0, describe: 'rows per forward/backward pass, to bound memory (0: as many as fit the backend)' })
      .option('backend', { type: 'string', default: 'auto', describe: 'auto|tensorflow-gpu|tensorflow|webgpu|wasm|cpu (or MLM_BACKEND)' })
      .option('precision', {
        type: 'string', default: d.precision,
        describe: 'fp32, fp16 (webgpu: f16 matmul operands, f32 accumulation and master weights, dynamic loss scaling) or auto (fp16 where the GPU has f16 subgroup matrices)',
      })
      .option('load-best-at-end', { type: 'boolean', default: false, describe: 'the final model (at --out) is the best checkpoint by --metric-for-best, not the last' })
      .option('metric-for-best', { type: 'string', default: 'eval_loss', describe: 'eval_loss, eval_perplexity (lower is better) or eval_accuracy (higher is better)' })
      .option('early-stopping-patience', { type: 'number', default: 0, describe: 'stop after N evaluations without improvement of --metric-for-best (0: never)' })
      .option('early-stopping-threshold', { type: 'number', default: 0, describe: 'the least improvement that resets the patience' })
      .option('push-to-hub', { type: 'string', describe: 'at the end, push the final model with a model card to this Hub repo (owner/name or name; see mlm push)' })
      .option('hub-private', { type: 'boolean', default: false, describe: 'with --push-to-hub: create the repo private' })
      .option('eval-on-start', {
        type: 'boolean',
        describe: 'evaluate before the first step (the base model\'s scores, the "before" in report.md); default: on with --from, off with --config; never on --resume',
      })
      .option('json', { type: 'boolean', default: false, describe: 'print the final result as JSON on stdout' })
      .option('progress', { type: 'boolean', default: true, describe: 'progress bar on stderr (--no-progress to silence)' });
    b = withConfigFile(b, variant, { paths: ['config', 'data', 'out', 'resume'], models: ['from'], flags: ['resume'] });
    if (variant !== 'finetune') {
      b = b.example('$0 pretrain --config configs/bert-mini.json --data data/med --out runs/med-mini --steps 2000', 'pretrain BERT-mini from scratch on prepared data');
    }
    if (variant !== 'pretrain') {
      b = b.example('$0 finetune --from bert-base-uncased --data data/med-bert --out runs/med-adapt --epochs 1 --lr 5e-5', 'adapt a Hub checkpoint to a domain (data prepared with --model bert-base-uncased)');
    }
    b = b.example(`$0 ${variant} ... --out runs/med-mini --resume`, 'continue an interrupted run from its newest checkpoint');
    return b as unknown as Argv<TrainArgs>;
  };
}

function handler(variant: Variant) {
  return async (args: ArgumentsCamelCase<TrainArgs>): Promise<void> => {
    if (variant === 'pretrain' && args.config === undefined && args.resume === undefined) {
      throw new InputError('mlm pretrain needs --config FILE (a model config.json); to adapt a checkpoint use `mlm finetune --from MODEL`');
    }
    if (variant === 'finetune' && args.from === undefined && args.resume === undefined) {
      throw new InputError('mlm finetune needs --from MODEL (a model folder or Hub id); to pretrain from scratch use `mlm pretrain --config FILE`');
    }
    if (variant === 'pretrain' && args.from !== undefined) throw new InputError('mlm pretrain starts from --config; use `mlm finetune --from` to adapt a checkpoint');
    if (variant === 'finetune' && args.config !== undefined) throw new InputError('mlm finetune starts from --from; use `mlm pretrain --config` to start from scratch');
    const pushTo = args['push-to-hub'];
    // A bad repo name or a missing token fails now, not after the run.
    if (pushTo !== undefined) checkPushTarget({ repo: pushTo, env: process.env });
    if (!fs.existsSync(args.data)) throw new InputError(`--data ${args.data} not found; prepare it with \`mlm prepare --out ${args.data}\``);

    const log = (line: string) => process.stderr.write(line + '\n');
    const options: TrainOptions = {
      config: args.config,
      from: args.from, // resolved below, once the options are checked
      data: args.data,
      out: args.out,
      steps: args.steps,
      epochs: args.epochs,
      batchSize: args['batch-size'],
      lr: args.lr,
      warmup: args.warmup,
      schedule: args.schedule,
      weightDecay: args['weight-decay'],
      adamBeta1: args['adam-beta1'],
      adamBeta2: args['adam-beta2'],
      adamEpsilon: args['adam-epsilon'],
      mlmProbability: args['mlm-probability'],
      wholeWordMask: args['whole-word-mask'],
      wholeWordSelection: args['whole-word-selection'],
      initBias: args['init-bias'],
      initAttention: args['init-attention'],
      gradAccum: args['grad-accum'],
      maxGradNorm: args['max-grad-norm'],
      evalEvery: args['eval-every'],
      evalBatches: args['eval-batches'],
      logEvery: args['log-every'],
      saveEvery: args['save-every'],
      saveTotalLimit: args['save-total-limit'],
      resume: args.resume === undefined ? false : args.resume === '' ? true : args.resume,
      seed: args.seed,
      rowsPerPass: args['rows-per-pass'],
      precision: checkPrecisionName(args.precision),
      loadBestAtEnd: args['load-best-at-end'],
      metricForBest: args['metric-for-best'],
      earlyStoppingPatience: args['early-stopping-patience'],
      earlyStoppingThreshold: args['early-stopping-threshold'],
      evalOnStart: args['eval-on-start'],
    };

    // Bad options and a missing or malformed --config (or one --init-attention local cannot use)
    // fail before a download and before the backend line (train() checks and reads them again; a
    // resumed run reads its checkpoint's config instead).
    checkTrainOptions(options);
    if (options.config !== undefined && options.resume === false) {
      const config = readConfigArgument(options.config);
      if (options.initAttention === 'local') requireEvenHeadSize(config);
    }
    if (args.from !== undefined) {
      // A local folder as it is; a Hub id through the Hugging Face cache (downloaded when needed).
      const from = await resolveModel(args.from, { revision: args.revision, log });
      options.from = from.dir;
      options.fromSource = from.source;
    }
    const backend = await selectBackend(resolveBackendName(args.backend, process.env), { log, ...blasOptions(process.env) });
    const controller = new AbortController();
    const onSigint = () => {
      log('\nCtrl-C: finishing the current step and saving a checkpoint (press Ctrl-C again to stop at once)');
      controller.abort();
      process.removeListener('SIGINT', onSigint);
    };
    process.on('SIGINT', onSigint);
    let result;
    try {
      result = await train(options, {
        tf: backend.tf,
        backend: { name: backend.name, device: backend.device, capabilities: backend.capabilities },
        version: VERSION,
        log,
        progress: args.progress,
        signal: controller.signal,
        commandLine: shellCommand(['mlm', ...process.argv.slice(2)]),
      });
    } finally {
      process.removeListener('SIGINT', onSigint);
    }

    // --push-to-hub: the final model, once the run has one.
    let pushed: PushResult | null = null;
    if (pushTo !== undefined && (result.interrupted || result.model === null)) {
      log(`note: not pushed to ${pushTo}: the run has no final model yet; push it when done with \`mlm push --model ${args.out} --repo ${pushTo}\``);
    } else if (pushTo !== undefined) {
      try {
        pushed = await pushModel({ model: result.model!, repo: pushTo, private: args['hub-private'], env: process.env, log });
      } catch (err) {
        const again = `retry with \`mlm push --model ${args.out} --repo ${pushTo}\``;
        const message = `the run finished (final model in ${args.out}) but the push failed: ${(err as Error).message}; ${again}`;
        throw err instanceof InputError ? new InputError(message) : new Error(message);
      }
    }

    const { interrupted, ...shown } = result;
    if (args.json) {
      const hub = pushed ? { pushed_to: { repo: pushed.repo, url: pushed.url, commit: pushed.commit } } : {};
      process.stdout.write(JSON.stringify(interrupted ? { ...shown, ...hub, interrupted } : { ...shown, ...hub }) + '\n');
    } else {
      const row: Record<string, unknown> = {
        step: shown.step,
        train_loss: shown.train_loss ?? '',
        eval_loss: shown.eval_loss ?? '',
        eval_perplexity: shown.eval_perplexity ?? '',
        'tokens/s': shown.tokens_per_second === null ? '' : Math.round(shown.tokens_per_second),
      };
      process.stdout.write(`\n${formatTable([row], { train_loss: 4, eval_loss: 4, eval_perplexity: 2 })}\n\n`);
      const where = shown.model !== null ? `model: ${shown.model}` : `checkpoint: ${shown.checkpoint ?? '(none)'}`;
      process.stdout.write(`${interrupted ? 'interrupted; ' : ''}${shown.stopped_early_at !== null ? `stopped early at step ${shown.stopped_early_at}; ` : ''}${where}; report: ${args.out}/report.md\n`);
      if (pushed) process.stdout.write(`pushed to ${pushed.url}\n`);
    }
    if (interrupted) process.exitCode = 130;
  };
}

export const trainCommand: CommandModule<object, TrainArgs> = {
  command: 'train',
  describe: 'Pretrain a masked LM from a config, or adapt a checkpoint, on prepared data',
  builder: builder('train'),
  handler: handler('train'),
};

export const pretrainCommand: CommandModule<object, TrainArgs> = {
  command: 'pretrain',
  describe: '`mlm train` from scratch: requires --config',
  builder: builder('pretrain'),
  handler: handler('pretrain'),
};

export const finetuneCommand: CommandModule<object, TrainArgs> = {
  command: 'finetune',
  describe: '`mlm train` from a checkpoint (domain adaptation): requires --from',
  builder: builder('finetune'),
  handler: handler('finetune'),
};
