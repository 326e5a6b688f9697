// An exclusive lock on an output folder, so that two commands never write one folder at once
// (`mlm train --out RUN` twice would interleave checkpoints and metrics; two `mlm prepare --out`
// would race on the same rename).
//
// The lock is a sibling file `.NAME.lock` beside the folder (not inside it: `mlm prepare` replaces
// its folder by renaming a new one onto it, which would carry a lock inside away). It is created
// with O_CREAT|O_EXCL (`wx`), so exactly one process can create it, and holds one JSON object:
// pid, hostname, command and start time. A second process is refused (InputError, exit 2) with a
// line naming the holder. A lock whose pid no longer runs on this host (a killed run) is stale: it
// is taken over, with a note. A lock from another host is never taken over (its pid cannot be
// checked from here): the message says how to remove it.
//
// Release: the function returned, and also on process exit and on SIGINT/SIGTERM when no other
// handler deals with the signal (the handler then re-raises it, so the exit status stays the
// signal's). A command with its own graceful SIGINT handling (mlm train) exits normally later,
// which releases the lock through the exit hook.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { realPathOf } from './paths.ts';
import { InputError, systemError } from '../common/errors.ts';

export interface LockInfo {
  pid: number;
  hostname: string;
  command: string;
  started: string;
}

/** The lock file of folder `dir`: `.NAME.lock` beside it. */
export function lockPath(dir: string): string {
  // The real path: a run folder reached through a link (`current -> runF`) takes runF's lock.
  const abs = realPathOf(dir);
  return path.join(path.dirname(abs), `.${path.basename(abs)}.lock`);
}

function readLock(file: string): LockInfo | null {
  try {
    const v = JSON.parse(fs.readFileSync(file, 'utf8'));
    return v && typeof v.pid === 'number' && typeof v.hostname === 'string' ? (v as LockInfo) : null;
  } catch {
    return null;
  }
}

/** Whether process `pid` runs on this host (EPERM: it runs, as another user). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The command line of this process, as a user typed it (`mlm train --out ...`). */
function thisCommand(): string {
  const [, script, ...args] = process.argv;
  const name = script ? path.basename(script).replace(/\.(m?js|ts)$/, '') : 'node';
  return [name, ...args].join(' ');
}

/**
 * Takes the lock of folder `dir` (`what` names it in messages, e.g. "run folder") and returns the
 * function that releases it. Creates the folder's parent when missing. Throws an InputError (exit
 * 2) when another live process holds it, or when the path cannot be written (a file in the way,
 * read-only, no permission): checked here, before any work.
 */
export function acquireLock(dir: string, what: string, log: (line: string) => void = () => {}): () => void {
  const file = lockPath(dir);
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true });
  } catch (err) {
    throw systemError(err, { where: dir, flag: '--out' }) ?? err;
  }
  const mine: LockInfo = { pid: process.pid, hostname: os.hostname(), command: thisCommand(), started: new Date().toISOString() };
  for (let attempt = 0; ; attempt++) {
    let fd: number;
    try {
      fd = fs.openSync(file, 'wx');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw systemError(err, { where: dir, flag: '--out' }) ?? err;
      const other = readLock(file);
      const stale = other !== null && other.hostname === os.hostname() && other.pid !== process.pid && !pidAlive(other.pid);
      if (stale && attempt === 0) {
        log(`note: taking over the stale lock ${file} of pid ${other.pid} (\`${other.command}\`, since ${other.started}), which no longer runs`);
        fs.rmSync(file, { force: true });
        continue;
      }
      const who = other === null
        ? `another process (its lock ${file} is unreadable)`
        : `another process (pid ${other.pid} on ${other.hostname}: \`${other.command}\`, since ${other.started})`;
      throw new InputError(`the ${what} ${dir} is in use by ${who}; wait for it to finish or choose another --out (if that process is gone, delete ${file})`);
    }
    try {
      fs.writeSync(fd, JSON.stringify(mine) + '\n');
    } finally {
      fs.closeSync(fd);
    }
    break;
  }

  let held = true;
  const release = (): void => {
    if (!held) return;
    held = false;
    process.removeListener('exit', release);
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    const now = readLock(file);
    if (now !== null && now.pid === mine.pid && now.started === mine.started) fs.rmSync(file, { force: true });
  };
  // Only when nobody else handles the signal: release, then die of it as Node would have.
  function onSignal(signal: NodeJS.Signals): void {
    if (process.listenerCount(signal) > 1) return;
    release();
    process.kill(process.pid, signal);
  }
  process.on('exit', release);
  // First in line, so that the count above still includes a handler that removes itself when
  // called (mlm train's Ctrl-C handler does, to let a second Ctrl-C stop at once).
  process.prependListener('SIGINT', onSignal);
  process.prependListener('SIGTERM', onSignal);
  return release;
}
