// The `mlm` command line (yargs). Each command lives in scripts/commands/<name>.ts and exports a
// yargs CommandModule. Exit codes: 0 done, 1 failed while running, 2 bad usage or bad input.
// Errors are printed as one line on stderr; MLM_DEBUG=1 adds the stack.
import yargs, { type MiddlewareFunction } from 'yargs';
import { envSwitch, InputError, oneLine, systemError } from '../common/errors.ts';
import { tokenizerCommand } from './commands/tokenizer.ts';
import { prepareCommand } from './commands/prepare.ts';
import { finetuneCommand, pretrainCommand, trainCommand } from './commands/train.ts';
import { evaluateCommand } from './commands/evaluate.ts';
import { downloadCommand } from './commands/download.ts';
import { exportCommand } from './commands/export.ts';
import { serveCommand } from './commands/serve.ts';
import { fillMaskCommand } from './commands/fill-mask.ts';
import { benchCommand } from './commands/bench.ts';
import { modelCommand } from './commands/model.ts';
import { compareCommand } from './commands/compare.ts';
import { pushCommand } from './commands/push.ts';
import { installInterruptHandler, OWN_SIGNAL_HANDLING } from './interrupt.ts';
import { removeUnfinishedWrites } from '../common/atomic.ts';
import { VERSION } from '../common/version.ts';
import { checkCommandLine, checkCommandName, checkEmptyArguments, checkOptionValues, joinNegativeValues, type DeclaredOptions } from './command-line.ts';

/** The parts of a yargs instance that the middleware reads (not in yargs' typings). */
interface YargsInternals {
  getOptions(): DeclaredOptions;
  getInternalMethods(): {
    getHasOutput(): boolean;
    getContext(): { commands: string[] };
    getCommandInstance(): { getCommands(): string[] };
  };
}

/**
 * Standard output that cannot be written: a reader that went away (`mlm ... --json | head -c 20`)
 * stops the command quietly, as SIGPIPE stops other programs (exit 141, unfinished writes
 * removed); any other failure (a full disk) is one line, exit 1. Standard error that went away
 * (`2>&1 | head -1`) drops the notes and progress, and the work goes on.
 */
function guardStandardStreams(): void {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    removeUnfinishedWrites();
    if (err.code === 'EPIPE') process.exit(141);
    process.stderr.write(`mlm: failed: could not write to standard output (${err.code ?? err.message}); ${err.code === 'ENOSPC' ? 'free space where it is redirected' : 'check where it is redirected'}\n`);
    process.exit(1);
  });
  process.stderr.on('error', () => {});
}

export async function main(argv: string[]): Promise<void> {
  guardStandardStreams();
  // What yargs parses (a negative number in exponent form joined to its option); argv as typed is
  // what the messages count words of.
  const line = joinNegativeValues(argv);
  const cli = yargs(line)
    // yargs passes its instance, with the command's option table, as a second argument that its
    // typings leave out. The first runs before yargs' validation, on the command being run (a
    // command group runs it again once its subcommand has run: then there is nothing to check).
    .middleware(((parsed: { _: (string | number)[] }, y: YargsInternals) => {
      const state = y.getInternalMethods();
      if (state.getHasOutput()) return;
      const { commands } = state.getContext();
      // mlm itself and a command group (tokenizer, model) run when no command of theirs matched.
      const subcommands = state.getCommandInstance().getCommands();
      if (subcommands.length > 0) checkCommandName(parsed, { commands }, subcommands);
      else if (commands.length > 0) checkCommandLine(line, y.getOptions(), { commands });
    }) as unknown as MiddlewareFunction, true)
    .middleware(((parsed: Record<string, unknown>, y: YargsInternals) => checkOptionValues(line, parsed, y.getOptions())) as unknown as MiddlewareFunction, false)
    // Ctrl-C: temporaries removed and one line, for the commands that do not stop on their own.
    .middleware((parsed) => {
      if (!OWN_SIGNAL_HANDLING.has(String(parsed._[0]))) installInterruptHandler();
    })
    .scriptName('mlm')
    .usage('$0 <command> [options]\n\nMasked-language-model pretraining and domain adaptation on TensorFlow.js.')
    .command(tokenizerCommand)
    .command(prepareCommand)
    .command(trainCommand)
    .command(pretrainCommand)
    .command(finetuneCommand)
    .command(evaluateCommand)
    .command(fillMaskCommand)
    .command(exportCommand)
    .command(serveCommand)
    .command(downloadCommand)
    .command(pushCommand)
    .command(benchCommand)
    .command(modelCommand)
    .command(compareCommand)
    .demandCommand(1, 'Name a command; `mlm --help` lists them.')
    .strict()
    .wrap(Math.min(110, process.stdout.columns || 110))
    .help()
    .alias('h', 'help')
    .version('version', 'print the version of mlmkit', VERSION)
    .fail((msg, err) => {
      // yargs reports usage problems as YError, also an InputError thrown while it parsed (the
      // --config-file reader, scripts/config-file.ts) with its message copied: bad usage, exit 2.
      if (err?.name === 'YError') throw new InputError(err.message);
      if (err) throw err;
      throw new InputError(msg);
    });
  try {
    checkEmptyArguments(argv);
    await cli.parseAsync();
  } catch (raw) {
    // Raw system errors (ENOSPC, EROFS, EEXIST...) become one line with the path and what to do.
    const err = raw instanceof InputError ? raw : (systemError(raw) ?? raw);
    let debug = false;
    try {
      debug = envSwitch(process.env, 'MLM_DEBUG', false);
    } catch {
      // A value that is no switch: the error at hand is the one to report.
    }
    const line = oneLine(err);
    if (err instanceof InputError) {
      process.stderr.write(`mlm: error: ${line}\n`);
      if (debug && err.stack) process.stderr.write(err.stack + '\n');
      process.exitCode = 2;
    } else {
      process.stderr.write(`mlm: failed: ${line}\n`);
      if (debug && raw instanceof Error && raw.stack) process.stderr.write(raw.stack + '\n');
      process.exitCode = 1;
    }
  }
}
