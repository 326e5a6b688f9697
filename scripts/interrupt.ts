// Ctrl-C (SIGINT) and SIGTERM for the commands that do not stop gracefully on their own (export,
// evaluate, tokenizer train/extend, model resize, compare, fill-mask, download, push, bench):
// the folders and files being written atomically lose their temporaries (a folder caught between
// its two renames is put back: common/atomic.ts), one line says so, and the exit status is the
// shell's 128 + signal (130, 143). Without it Node would die at once and leave the temporaries,
// which nothing removes later. prepare, train (and its aliases) and serve handle the signals
// themselves: prepare stops at the next batch, train saves a checkpoint, serve removes its export.
import { firstNames } from '../common/errors.ts';
import { removeUnfinishedWrites } from '../common/atomic.ts';

/** The commands that handle SIGINT/SIGTERM themselves. */
export const OWN_SIGNAL_HANDLING: ReadonlySet<string> = new Set(['prepare', 'train', 'pretrain', 'finetune', 'serve']);

/** Installs the handler for this process (the CLI calls it once, for a command not in the set above). */
export function installInterruptHandler(): void {
  const onSignal = (signal: NodeJS.Signals): void => {
    const targets = removeUnfinishedWrites();
    process.stderr.write(`\nmlm: interrupted${targets.length > 0 ? `; nothing written to ${firstNames(targets)}` : ''}\n`);
    process.exit(signal === 'SIGTERM' ? 143 : 130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
}
