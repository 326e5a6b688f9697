// `mlm evaluate`: held-out masked-token loss, perplexity and accuracy of one or more models on one
// or more data sets (docs/architecture.md, "Evaluation and metrics"; docs/formats.md, "Command output"), or pseudo-perplexity with --pseudo.
//
// Each --model value is a model folder, an `mlm train` run folder, or a Hub id. Each --data value is one data set: a prepared
// folder (its --split, validation by default; its tokenizer must be the model's) or raw text
// (a file, folder or glob: tokenized with the model's tokenizer into --seq-len blocks, every
// document scored). One model on one data set prints one result (`--json`: the object of
// docs/formats.md, "Command output", with eval_loss, eval_perplexity and eval_accuracy: the names
// `mlm train` writes in metrics.jsonl and eval_results.json); more print a comparison table
// (`--json`: a list of those objects with "model" and "data" added). The loop is
// training/evaluate-models.ts evaluateModels.
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { MLM_PROBABILITY } from '../../data/masking.ts';
import { formatTable, Progress } from '../../data/progress.ts';
import type { SplitName } from '../../data/shards.ts';
import { blasOptions, resolveBackendName, selectBackend } from '../../training/backend.ts';
import { checkEvaluateOptions, evaluateModels, type EvaluationRow } from '../../training/evaluate-models.ts';
import { checkEvalData } from '../../training/evaluate.ts';
import { resolveModel } from '../../training/hub.ts';
import { VERSION } from '../../common/version.ts';
import { withConfigFile } from '../config-file.ts';
import { rawTextOptions, withRawTextOptions, type RawTextArgs } from './text-options.ts';
import { PROGRESS_OPTION } from './progress-option.ts';

interface EvaluateArgs extends RawTextArgs {
  model: string[];
  data: string[];
  split: SplitName;
  revision?: string;
  seed: number;
  'batch-size': number;
  'max-batches': number;
  'mlm-probability': number;
  'whole-word-mask': boolean;
  'whole-word-selection'?: 'independent' | 'budget';
  pseudo: boolean;
  'seq-len': number;
  backend: string;
  json: boolean;
  progress: boolean;
}

export const evaluateCommand: CommandModule<object, EvaluateArgs> = {
  command: 'evaluate',
  describe: 'Held-out loss, perplexity and accuracy of masked-LM models',
  builder: (y: Argv) =>
    withConfigFile(withRawTextOptions(y)
      .option('model', { type: 'string', array: true, demandOption: true, describe: 'model folders or Hugging Face Hub ids (several: a comparison table)' })
      .option('data', { type: 'string', array: true, demandOption: true, describe: 'prepared data folders, or raw text files / folders / globs (each value is one data set)' })
      .option('split', { choices: ['validation', 'train'] as const, default: 'validation' as const, describe: 'split of a prepared folder' })
      .option('revision', { type: 'string', describe: 'Hub revision for --model ids' })
      .option('seed', { type: 'number', default: 42, describe: 'seed of the evaluation masks (fixed: the same numbers every time)' })
      .option('batch-size', { type: 'number', default: 32, describe: 'rows per forward pass (--max-batches counts these batches)' })
      .option('max-batches', { type: 'number', default: 0, describe: 'stop after N batches of rows (0: the whole split)' })
      .option('mlm-probability', { type: 'number', default: MLM_PROBABILITY, describe: 'share of tokens masked' })
      .option('whole-word-mask', { type: 'boolean', default: false, describe: 'mask whole words' })
      .option('whole-word-selection', { choices: ['independent', 'budget'] as const, describe: 'with --whole-word-mask: as the run being reproduced selected words (see mlm train --help)' })
      .option('pseudo', { type: 'boolean', default: false, describe: 'pseudo-perplexity: mask every token in turn (slow: one pass per token)' })
      .option('seq-len', { type: 'number', default: 128, describe: 'tokens per block for raw text' })
      .option('backend', { type: 'string', default: 'auto', describe: 'auto|tensorflow-gpu|tensorflow|webgpu|wasm|cpu (or MLM_BACKEND)' })
      .option('json', { type: 'boolean', default: false, describe: 'print JSON on stdout' })
      .option('progress', PROGRESS_OPTION)
      .example('$0 evaluate --model runs/med/checkpoint-2000 --data data/med', 'perplexity on the validation split of prepared data')
      .example('$0 evaluate --model bert-base-uncased runs/med-adapt/checkpoint-500 --data notes/heldout.txt', 'compare two models on raw text')
      .example('$0 evaluate --model runs/med/checkpoint-2000 --data data/med --pseudo --max-batches 2 --json', 'pseudo-perplexity of the first 64 rows, as JSON'), 'evaluate', { paths: ['data'], models: ['model'] }) as unknown as Argv<EvaluateArgs>,
  handler: async (args: ArgumentsCamelCase<EvaluateArgs>) => {
    checkEvaluateOptions({
      batchSize: args['batch-size'], maxBatches: args['max-batches'], seqLen: args['seq-len'], seed: args.seed, mlmProbability: args['mlm-probability'],
      pseudo: args.pseudo, wholeWordMask: args['whole-word-mask'], wholeWordSelection: args['whole-word-selection'],
    });

    const log = (line: string) => process.stderr.write(line + '\n');
    // Check every data set and resolve every model first: a typo fails before any work.
    for (const d of args.data) await checkEvalData(d, log);
    const models = [];
    for (const m of args.model) models.push(await resolveModel(m, { revision: args.revision, log }));
    const backend = await selectBackend(resolveBackendName(args.backend, process.env), { log, ...blasOptions(process.env) });
    const { tf } = backend;

    let bar: Progress | null = null;
    const rows = await evaluateModels(tf, {
      models,
      data: args.data,
      split: args.split,
      seed: args.seed,
      batchSize: args['batch-size'],
      maxBatches: args['max-batches'],
      mlmProbability: args['mlm-probability'],
      wholeWordMask: args['whole-word-mask'],
      wholeWordSelection: args['whole-word-selection'],
      pseudo: args.pseudo,
      seqLen: args['seq-len'],
      text: rawTextOptions(args),
      version: VERSION,
      capabilities: backend.capabilities,
      log,
      onStart: (label, total) => {
        bar = new Progress({ label, total, enabled: args.progress });
      },
      onProgress: (done) => bar?.update(done, 'rows'),
      onFinish: (result) => bar?.complete(`${result.masked_tokens} tokens scored`),
    });

    const shape = (r: EvaluationRow, withNames: boolean) => ({
      ...(withNames ? { model: r.model, data: r.data } : {}),
      loss: r.result.loss,
      perplexity: r.result.perplexity,
      accuracy: r.result.accuracy,
      masked_tokens: r.result.masked_tokens,
      tokens: r.result.tokens,
      seed: r.result.seed,
      backend: backend.name,
      // The same figures under the names training logs them (metrics.jsonl, eval_results.json).
      ...(args.pseudo ? {} : { eval_loss: r.result.loss, eval_perplexity: r.result.perplexity, eval_accuracy: r.result.accuracy }),
      ...(args.pseudo ? { pseudo: true } : {}),
    });
    if (args.json) {
      const doc = rows.length === 1 ? shape(rows[0], false) : rows.map((r) => shape(r, true));
      process.stdout.write(JSON.stringify(doc) + '\n');
      return;
    }
    const table = rows.map((r) => ({
      model: r.model,
      data: r.data,
      loss: r.result.loss,
      [args.pseudo ? 'pseudo_ppl' : 'perplexity']: r.result.perplexity,
      accuracy: r.result.accuracy,
      masked_tokens: r.result.masked_tokens,
      tokens: r.result.tokens,
    }));
    process.stdout.write(`\n${formatTable(table, { loss: 4, perplexity: 2, pseudo_ppl: 2, accuracy: 4 })}\n\n`);
    process.stdout.write(`${args.pseudo ? 'pseudo-perplexity: every token masked in turn' : `masks drawn with --seed ${args.seed}`}; backend ${backend.name}\n`);
  },
};
