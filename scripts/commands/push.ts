// `mlm push`: upload a model folder (or an `mlm train` run folder's final model) to the Hugging
// Face Hub with a generated model card (README.md, written into the folder when it has none). The
// work is training/push.ts pushModel; the token and endpoint come from HF_TOKEN (or the
// `huggingface-cli login` token file) and HF_ENDPOINT. Exit 2 for bad input, a missing or rejected
// token, or no write access; exit 1 when the Hub cannot be reached after the retries.
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { pushModel } from '../../training/push.ts';
import { NO_BAR_PROGRESS_OPTION } from './progress-option.ts';

interface PushArgs {
  model: string;
  repo: string;
  private: boolean;
  revision?: string;
  'include-report': boolean;
  'overwrite-card': boolean;
  license?: string;
  'commit-message'?: string;
  json: boolean;
}

export const pushCommand: CommandModule<object, PushArgs> = {
  command: 'push',
  describe: 'Upload a model folder or a training run\'s final model to the Hugging Face Hub, with a model card',
  builder: (y: Argv) =>
    y
      .option('model', { type: 'string', demandOption: true, describe: 'model folder, or `mlm train` run folder (its final model; its newest checkpoint while unfinished)' })
      .option('repo', { type: 'string', demandOption: true, describe: 'Hub repo: owner/name, or name (under the token\'s user); created when missing' })
      .option('private', { type: 'boolean', default: false, describe: 'create the repo private (an existing repo keeps its visibility)' })
      .option('revision', { type: 'string', describe: 'branch to commit to (default main; created when missing)' })
      .option('include-report', { type: 'boolean', default: false, describe: 'also upload the run\'s report.md and its charts' })
      .option('overwrite-card', { type: 'boolean', default: false, describe: 'replace the folder\'s own README.md with a generated model card' })
      .option('license', { type: 'string', describe: 'license id for the card\'s metadata (apache-2.0, mit, cc-by-4.0...)' })
      .option('commit-message', { type: 'string', describe: 'the commit\'s title' })
      .option('json', { type: 'boolean', default: false, describe: 'print the result as JSON on stdout' })
      .option('progress', NO_BAR_PROGRESS_OPTION)
      .example('$0 push --model runs/med-mini --repo my-org/med-bert-mini', 'the run\'s final model, its results and a generated model card')
      .example('$0 push --model runs/med-mini --repo med-bert-mini --private --include-report', 'a private repo under your user, with report.md and the charts') as unknown as Argv<PushArgs>,
  handler: async (args: ArgumentsCamelCase<PushArgs>) => {
    const r = await pushModel({
      model: args.model,
      repo: args.repo,
      private: args.private,
      revision: args.revision,
      includeReport: args['include-report'],
      overwriteCard: args['overwrite-card'],
      license: args.license,
      commitMessage: args['commit-message'],
      env: process.env,
      log: (line) => process.stderr.write(line + '\n'),
    });
    if (args.json) process.stdout.write(JSON.stringify(r, null, 2) + '\n');
    else process.stdout.write(`pushed ${r.files.length} files to ${r.repo}${r.commit ? ` (commit ${r.commit.slice(0, 12)})` : ''}: ${r.url}\n`);
  },
};
