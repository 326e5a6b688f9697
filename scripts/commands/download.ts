// `mlm download`: fetches a Hub model's config, safetensors weights and tokenizer files into the
// Hugging Face cache (shared with Python) and prints the snapshot folder.
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { downloadModel, validateSnapshot } from '../../training/hub.ts';
import { NO_BAR_PROGRESS_OPTION } from './progress-option.ts';

interface DownloadArgs {
  id: string;
  revision?: string;
  json: boolean;
}

export const downloadCommand: CommandModule<object, DownloadArgs> = {
  command: 'download <id>',
  describe: 'Download a Hugging Face Hub model into the Hugging Face cache and print its folder',
  builder: (y: Argv) =>
    y
      .positional('id', { type: 'string', demandOption: true, describe: 'Hub model id, e.g. bert-base-uncased or google/bert_uncased_L-4_H-256_A-4' })
      .option('revision', { type: 'string', default: 'main', describe: 'branch, tag or commit' })
      .option('json', { type: 'boolean', default: false, describe: 'print {"id", "revision", "commit", "folder"} as JSON' })
      .option('progress', NO_BAR_PROGRESS_OPTION)
      .epilogue(
        'Only config.json, model.safetensors (or its index and shards) and the tokenizer files are fetched. ' +
          'Environment: HF_TOKEN (private or gated repos), HF_ENDPOINT (a mirror), HF_HOME / HF_HUB_CACHE (the cache), ' +
          'HF_HUB_OFFLINE=1 (no network: resolve from the cache), HF_HUB_DOWNLOAD_TIMEOUT (seconds, default 10).',
      )
      .example('$0 download bert-base-uncased', 'the snapshot folder is printed; later commands find it offline too')
      .example('HF_TOKEN=hf_... $0 download my-org/private-bert --revision v1.0', 'a private repo at a tag') as unknown as Argv<DownloadArgs>,
  handler: async (args: ArgumentsCamelCase<DownloadArgs>) => {
    const log = (line: string) => process.stderr.write(line + '\n');
    const resolved = await downloadModel(args.id, { revision: args.revision, log });
    validateSnapshot(resolved);
    if (args.json) {
      process.stdout.write(JSON.stringify({ id: args.id, revision: args.revision ?? 'main', commit: resolved.revision, folder: resolved.dir }, null, 2) + '\n');
      return;
    }
    process.stdout.write(resolved.dir + '\n');
  },
};
