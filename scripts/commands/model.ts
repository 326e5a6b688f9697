// `mlm model resize`: a checkpoint grown to an extended tokenizer (training/resize.ts), written as a
// Hugging Face model folder with the new tokenizer and vocab_size.
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { requireSeed } from '../../common/errors.ts';
import { MlmTokenizer } from '../../data/tokenizer.ts';
import { hfWeightsOf, writeModelFolder } from '../../training/checkpoint.ts';
import { loadModel } from '../../training/hub.ts';
import { resizeModel, type ResizeInit } from '../../training/resize.ts';
import { requireFreshOut } from './tokenizer-extend.ts';
import { NO_BAR_PROGRESS_OPTION } from './progress-option.ts';

interface ResizeArgs {
  from: string;
  tokenizer: string;
  out: string;
  init: ResizeInit;
  seed: number;
  revision?: string;
  json: boolean;
}

const resizeCommand: CommandModule<object, ResizeArgs> = {
  command: 'resize',
  describe: 'Grow a checkpoint to an extended tokenizer (new rows: FVT means of old pieces, or random)',
  builder: (y: Argv) =>
    y
      .option('from', { type: 'string', demandOption: true, describe: 'model folder or Hub id' })
      .option('tokenizer', { type: 'string', demandOption: true, describe: "the extended tokenizer's folder (mlm tokenizer extend)" })
      .option('out', { type: 'string', demandOption: true, describe: 'new folder for the resized model' })
      .option('init', { choices: ['fvt', 'random'] as const, default: 'fvt' as const, describe: "new rows: mean of the old pieces' rows (fvt), or normal(0, initializer_range)" })
      .option('seed', { type: 'number', default: 42, describe: 'seed for --init random' })
      .option('revision', { type: 'string', describe: 'Hub revision for --from ids' })
      .option('json', { type: 'boolean', default: false, describe: 'print one JSON summary on stdout' })
      .option('progress', NO_BAR_PROGRESS_OPTION)
      .example('$0 model resize --from bert-base-uncased --tokenizer tok-med/ --out bert-med/', 'FVT initialisation of the new rows') as unknown as Argv<ResizeArgs>,
  handler: async (args: ArgumentsCamelCase<ResizeArgs>) => {
    requireSeed(args.seed);
    requireFreshOut(args.out, [{ path: args.from, flag: '--from' }, { path: args.tokenizer, flag: '--tokenizer' }]);
    const log = (line: string) => process.stderr.write(line + '\n');
    // The new tokenizer first: a wrong --tokenizer fails before a download of --from.
    const next = await MlmTokenizer.load(args.tokenizer);
    const model = await loadModel(args.from, { revision: args.revision, log });
    const r = await resizeModel(model.config, model.weights, model.tokenizer, next, { init: args.init, seed: args.seed });
    await writeModelFolder(args.out, { config: r.config, weights: await hfWeightsOf(r.config, r.weights), tokenizer: next, replace: false });
    const summary = {
      from: args.from,
      out: args.out,
      init: args.init,
      old_vocab_size: model.config.vocab_size,
      vocab_size: r.config.vocab_size,
      rows: r.rows.map((row) => ({ id: row.id, token: row.token, from: row.from.map((id) => model.tokenizer.idToToken(id)) })),
    };
    if (args.json) {
      process.stdout.write(JSON.stringify(summary) + '\n');
      return;
    }
    const example = r.rows.slice(0, 3).map((row) => (row.from.length ? `${row.token} <- mean(${row.from.map((id) => model.tokenizer.idToToken(id)).join(', ')})` : row.token)).join('; ');
    process.stdout.write(
      `resized ${args.from}: vocab_size ${model.config.vocab_size} -> ${r.config.vocab_size} (${r.rows.length} new rows, ${args.init} init${example ? `: ${example}` : ''})\nwrote ${args.out}\n`,
    );
  },
};

export const modelCommand: CommandModule = {
  command: 'model',
  describe: 'Model tools (resize to an extended tokenizer)',
  // No <command> positional: yargs would demand it before the message of demandCommand below.
  builder: (y: Argv) =>
    y
      .usage(`$0 model <command>\n\n${modelCommand.describe}`)
      .command(resizeCommand as unknown as CommandModule)
      .demandCommand(1, 'Name a model command: resize')
      .example('$0 model resize --from bert-base-uncased --tokenizer tok-med/ --out bert-med/', 'grow a checkpoint to an extended tokenizer'),
  handler: () => {},
};
