// `mlm prepare`: tokenize a corpus into token shards + manifest.json (docs/formats.md, "Prepared data").
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { InputError, requireRegularFile } from '../../common/errors.ts';
import { resolveCorpusFiles } from '../../data/corpus.ts';
import { acquireLock } from '../../data/lock.ts';
import { checkPrepareOptions, prepare, PrepareInterrupted } from '../../data/prepare.ts';
import { MlmTokenizer } from '../../data/tokenizer.ts';
import { isHubId, resolveModel } from '../../training/hub.ts';
import { VERSION } from '../../common/version.ts';
import { rawTextOptions, withRawTextOptions, type RawTextArgs } from './text-options.ts';
import { PROGRESS_OPTION } from './progress-option.ts';

interface PrepareArgs extends RawTextArgs {
  corpus: string[];
  tokenizer?: string;
  model?: string;
  revision?: string;
  out: string;
  'seq-len': number;
  'validation-split'?: number;
  validation?: string[];
  'line-by-line': boolean;
  seed: number;
  overwrite: boolean;
  json: boolean;
  progress: boolean;
}

export const prepareCommand: CommandModule<object, PrepareArgs> = {
  command: 'prepare',
  describe: 'Tokenize a corpus into training-ready token shards',
  builder: (y: Argv) =>
    withRawTextOptions(y)
      .option('corpus', { type: 'string', array: true, demandOption: true, describe: 'files, folders or globs (.txt .jsonl .csv .tsv .parquet .arrow)' })
      .option('tokenizer', { type: 'string', describe: 'tokenizer folder (tokenizer.json, or vocab.txt, or vocab.json + merges.txt)' })
      .option('model', { type: 'string', describe: 'model folder or Hub id: its tokenizer is used and --seq-len is checked against its positions' })
      .option('revision', { type: 'string', describe: 'Hub revision when --tokenizer/--model is a Hub id' })
      .option('out', { type: 'string', demandOption: true, describe: 'output folder for shards + manifest.json' })
      .option('seq-len', { type: 'number', default: 128, describe: 'tokens per example' })
      .option('validation-split', { type: 'number', describe: 'share of documents held out (seeded, document level; default 0.05)' })
      .option('validation', { type: 'string', array: true, describe: 'a given held-out set instead of --validation-split' })
      .option('line-by-line', { type: 'boolean', default: false, describe: 'one example per non-blank line instead of packed blocks' })
      .option('seed', { type: 'number', default: 42, describe: 'seed of the --validation-split draw (which documents are held out)' })
      .option('overwrite', { type: 'boolean', default: false, describe: 'replace prepared data at --out made from other inputs or options (never a folder holding other files)' })
      .option('json', { type: 'boolean', default: false, describe: 'print the manifest as JSON on stdout' })
      .option('progress', PROGRESS_OPTION)
      .example('$0 prepare --corpus papers/ --tokenizer tok/ --out data/med', 'pack a folder of .txt files into 128-token blocks')
      .example('$0 prepare --corpus "notes/*.jsonl" --text-field body --tokenizer tok/ --out data/notes --seq-len 256', 'read the "body" field of JSON lines')
      .example('$0 prepare --corpus train.txt --validation heldout.txt --line-by-line --tokenizer tok/ --out data/lines', 'one example per line, a given held-out set') as unknown as Argv<PrepareArgs>,
  handler: async (args: ArgumentsCamelCase<PrepareArgs>) => {
    const given = args.tokenizer ?? args.model;
    if (!given) throw new InputError('give --tokenizer DIR (or --model DIR|HUB_ID whose tokenizer to use)');
    if (args.validation !== undefined && args['validation-split'] !== undefined) {
      throw new InputError('give --validation (a held-out set) or --validation-split (a share of the corpus held out), not both');
    }
    const validationSplit = args['validation-split'] ?? 0.05;
    checkPrepareOptions({ seqLen: args['seq-len'], validationSplit, seed: args.seed });
    // The corpus paths too (prepare resolves them again): a typo fails before a tokenizer download.
    await resolveCorpusFiles(args.corpus);
    if (args.validation !== undefined) await resolveCorpusFiles(args.validation);
    const log = (line: string) => process.stderr.write(line + '\n');
    // A local folder, or a Hub id (fetched into the Hugging Face cache).
    const isLocal = fs.existsSync(given) || /^[.~/\\]/.test(given) || !isHubId(given);
    if (isLocal && !fs.existsSync(given)) throw new InputError(`tokenizer folder not found: ${given}; train one with \`mlm tokenizer train\` or give a model folder`);
    const resolved = isLocal
      ? { dir: given, source: path.resolve(given), revision: null }
      : await resolveModel(given, { revision: args.revision, log });
    const tokenizer = await MlmTokenizer.load(resolved.dir);
    const maxPositions = args.model ? readMaxPositions(args.tokenizer ? args.model : resolved.dir) : undefined;
    // One writer per --out at a time (data/lock.ts); released when prepare ends, however it ends
    // (process.exit below included: the lock's exit hook releases it).
    const release = acquireLock(args.out, 'prepared-data folder', log);
    // Ctrl-C or SIGTERM: the run stops at the next batch, its temporary folder is removed, one line
    // says so, and the exit code is the shell's 128 + signal (130 for SIGINT, 143 for SIGTERM).
    // Registered after the lock, whose own signal handler then leaves the signal to this one.
    const controller = new AbortController();
    const onSignal = (sig: NodeJS.Signals) => controller.abort(sig);
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    const result = await prepare({
      corpus: args.corpus,
      tokenizer,
      tokenizerSource: resolved.source,
      tokenizerRevision: resolved.revision,
      // Folders read besides the corpus, which --out may not be, hold or lie in.
      inputFolders: [
        ...(isLocal ? [{ path: resolved.dir, flag: args.tokenizer ? '--tokenizer' : '--model' }] : []),
        ...(args.tokenizer && args.model && fs.existsSync(args.model) ? [{ path: args.model, flag: '--model' }] : []),
      ],
      out: args.out,
      seqLen: args['seq-len'],
      mode: args['line-by-line'] ? 'lines' : 'blocks',
      validationSplit,
      validation: args.validation,
      seed: args.seed,
      overwrite: args.overwrite,
      maxPositions,
      ...rawTextOptions(args),
      log,
      progress: args.progress,
      version: VERSION,
      signal: controller.signal,
    }).catch((err: unknown) => {
      if (!(err instanceof PrepareInterrupted)) throw err;
      release();
      log(`mlm: ${err.message}`);
      process.exit(controller.signal.reason === 'SIGTERM' ? 143 : 130);
    }).finally(() => {
      process.removeListener('SIGINT', onSignal);
      process.removeListener('SIGTERM', onSignal);
      release();
    });
    if (result.reused) log(`${args.out} already holds this corpus prepared with the same tokenizer and options: reusing it (--overwrite prepares again)`);
    if (args.json) {
      process.stdout.write(JSON.stringify(result.manifest, null, 2) + '\n');
      return;
    }
    const out = process.stdout;
    out.write(`\n${result.summary}\n\n`);
    if (!result.reused) {
      const mb = result.bytes / 1e6;
      out.write(`prepared ${mb.toFixed(1)} MB in ${result.seconds.toFixed(1)} s (${(mb / Math.max(result.seconds, 1e-9)).toFixed(1)} MB/s) into ${args.out}\n`);
    }
  },
};

/** Positions usable by a model folder's config.json (RoBERTa's ids start at pad_token_id + 1). */
function readMaxPositions(modelDir: string): number {
  const file = path.join(modelDir, 'config.json');
  let config: { max_position_embeddings?: number; model_type?: string; pad_token_id?: number };
  requireRegularFile(file, 'model config');
  try {
    config = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new InputError(`cannot read ${file} (${(err as Error).message}); --model must be a model folder with config.json`);
  }
  const mpe = config.max_position_embeddings;
  if (!Number.isInteger(mpe) || (mpe as number) <= 0) throw new InputError(`${file} has no valid max_position_embeddings`);
  return config.model_type === 'roberta' ? (mpe as number) - (config.pad_token_id ?? 1) - 1 : (mpe as number);
}
