// Errors that the CLI turns into one line on stderr and an exit code.
// InputError: bad usage or bad input (exit 2). TrainingError, or anything else that escapes, is a
// failure while running (exit 1). Messages say what is wrong and what to do, on one line.
// Also: the refusal of non-regular files before they are opened (`requireRegularFile`), and the
// mapping of raw system errors (ENOSPC, EROFS, EEXIST...) to such lines (`systemErrorLine`).
import * as fs from 'node:fs';
import * as path from 'node:path';

export class InputError extends Error {
  readonly exitCode = 2;
  constructor(message: string) {
    super(message);
    this.name = 'InputError';
  }
}

/** A failure while running (exit 1), e.g. a NaN loss; its message is one line. */
export class TrainingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TrainingError';
  }
}

/** Throws an InputError unless `condition` holds. */
export function check(condition: unknown, message: string): asserts condition {
  if (!condition) throw new InputError(message);
}

/** Throws an InputError naming the flag unless `value` is an integer >= `min`. */
export function requireInteger(value: number, flag: string, min: number): void {
  if (!(Number.isInteger(value) && value >= min)) throw new InputError(`--${flag} must be an integer >= ${min}, got ${value}`);
}

/** Throws an InputError unless `value` is a seed: an integer from 0 to MAX_SEED. */
export function requireSeed(value: number, flag = 'seed'): void {
  // Seeds enter common/rng.ts as 32-bit words: a larger or negative one would alias another seed
  // (2**32 and 0, -1 and 4294967295) and give the same run without a word. numpy's rule.
  if (!(Number.isInteger(value) && value >= 0 && value <= MAX_SEED)) {
    throw new InputError(`--${flag} must be an integer from 0 to ${MAX_SEED} (seeds are 32-bit), got ${value}`);
  }
}

/** The largest seed: 2**32 - 1. */
export const MAX_SEED = 4294967295;

/** Throws an InputError naming the flag unless 0 < `value` < 1. */
export function requireOpenFraction(value: number, flag: string): void {
  if (!(value > 0 && value < 1)) throw new InputError(`--${flag} must be in (0, 1), got ${value}`);
}

/** Throws an InputError naming the flag unless `value` is one of `choices` (the library's callers pass unchecked strings). */
export function requireChoice(value: string, choices: readonly string[], flag: string): void {
  if (!choices.includes(value)) throw new InputError(`--${flag} must be ${choices.join(' or ')}, got ${JSON.stringify(value)}`);
}

/**
 * The first `n` names of a list for a one-line message: "a, b, c", or "a, b, c and 4 more", the
 * same way in every message that shows what a folder holds.
 */
export function firstNames(names: readonly string[], n = 3): string {
  return names.length <= n ? names.join(', ') : `${names.slice(0, n).join(', ')} and ${names.length - n} more`;
}

/**
 * An on/off environment variable: 1, true, yes, on (any case) or 0, false, no, off; unset or empty
 * gives `fallback`. Anything else is an InputError naming the variable (a value such as `off` was
 * read as "on" by a check for '0' alone).
 */
export function envSwitch(env: Readonly<Record<string, string | undefined>>, name: string, fallback: boolean): boolean {
  const raw = env[name]?.trim() ?? '';
  if (raw === '') return fallback;
  const v = raw.toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(v)) return true;
  if (['0', 'false', 'no', 'off'].includes(v)) return false;
  throw new InputError(`${name} must be 1 or 0 (or true/false, yes/no, on/off), got '${raw}'`);
}

/** Turns an error into the single line printed by the CLI (no stack, no newlines). */
export function oneLine(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.replace(/\s*\n\s*/g, ' ').trim();
}

/** What a non-regular file is, in words. */
function fileKind(st: fs.Stats): string {
  if (st.isFIFO()) return 'a named pipe (FIFO)';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  if (st.isDirectory()) return 'a folder';
  return 'not a regular file';
}

/**
 * Throws an InputError unless `file` (links followed) is a regular file. Called BEFORE opening:
 * opening a named pipe for reading blocks until a writer appears, so a FIFO named
 * model.safetensors or config.json would hang the command. A missing file passes (the caller's
 * open reports it in its own words).
 */
export function requireRegularFile(file: string, what: string): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    return;
  }
  if (!st.isFile()) throw new InputError(`${file} is ${fileKind(st)}, not a regular file; the ${what} must be a plain file: replace it with the real one`);
}

/** A system error's code and path, when it is one. */
function errnoOf(err: unknown): { code: string; path?: string; syscall?: string } | null {
  const e = err as NodeJS.ErrnoException | null;
  return e && typeof e === 'object' && typeof e.code === 'string' && /^E[A-Z]+$/.test(e.code) ? { code: e.code, path: e.path, syscall: e.syscall } : null;
}

/**
 * A path under a temporary sibling of common/atomic.ts (`.NAME.TAG-tmp-PID-RANDOM`) as the user
 * named it (`NAME`): messages then speak of the --out given, not of a hidden folder.
 */
export function outsideTemporary(p: string): string {
  return p
    .split(/([\\/])/)
    .map((part) => /^\.(.+)\.[a-z]+-(?:tmp|old)-\d+-[0-9a-f]{6}$/.exec(part)?.[1] ?? part)
    .join('');
}

/**
 * A raw system error (fs calls reject with `code` and `path`) as the one-line error the CLI
 * prints, or null when `err` is not one this knows. Where the path is an output the user chose,
 * the fault is bad input (InputError, exit 2): a file in the way (EEXIST, ENOTDIR), a read-only
 * file system (EROFS), no permission (EACCES, EPERM; a folder that cannot be listed is an input to
 * make readable), a link loop (ELOOP), a folder mkdir could not make because a folder on its way is
 * missing (ENOENT from mkdir: a dangling link). A full disk (ENOSPC, EDQUOT) is a failure while
 * running (exit 1). `where` overrides the path the error names; `flag` names the option.
 */
export function systemError(err: unknown, opts: { where?: string; flag?: string } = {}): Error | null {
  const e = errnoOf(err);
  if (e === null) {
    if (err instanceof RangeError && /Invalid typed array length|Array buffer allocation failed/.test(err.message)) {
      return new Error(`out of memory: ${err.message}; use a smaller model config or --batch-size, or a machine with more memory`);
    }
    return null;
  }
  const p = opts.where ?? (e.path !== undefined ? outsideTemporary(e.path) : undefined) ?? 'the output folder';
  const flag = opts.flag ? `${opts.flag} ` : '';
  switch (e.code) {
    case 'EEXIST':
    case 'ENOTDIR':
      return new InputError(`${flag}${p}: a file is in the way (a part of the path is a file, not a folder); choose another path or move the file`);
    case 'EROFS':
      return new InputError(`${flag}${p} is on a read-only file system; choose an output path on a writable disk`);
    case 'EACCES':
    case 'EPERM':
      // Listing or reading is an input that cannot be read; anything else, an output not writable.
      if (e.syscall === 'scandir' || e.syscall === 'opendir' || e.syscall === 'read') return new InputError(`${flag}${p}: permission denied, it cannot be read; fix its permissions`);
      return new InputError(`${flag}${p}: permission denied; choose a path you can write to, or fix its permissions`);
    case 'ELOOP':
      return new InputError(`${flag}${p}: too many levels of symbolic links (a link that leads back to itself?); fix the link or choose another path`);
    case 'ENOENT':
      // Only a folder that could not be made: a missing input is the reader's to report.
      if (e.syscall !== 'mkdir') return null;
      return new InputError(`${flag}${p} cannot be created: a folder on its way is missing (a link to a folder that is not there?); fix the link or choose another path`);
    case 'ENOSPC':
    case 'EDQUOT':
      if (opts.where === undefined && e.path === undefined) return new Error('no space left on the device while writing the output; free space on the disk it goes to (or choose another output path) and run again');
      return new Error(`no space left on the device while writing ${p}; free space at ${p} (or choose another path) and run again`);
    default:
      return null;
  }
}

/**
 * Throws the systemError line unless folder `dir` could be created or written: checks its nearest
 * existing ancestor (a file there is in the way; a read-only or forbidden folder is refused).
 * For commands that work long before they write (tokenizer training): fail before the work.
 */
export function requireWritableFolder(dir: string, flag: string): void {
  let p = dir;
  for (;;) {
    let st: fs.Stats | null = null;
    try {
      st = fs.statSync(p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ELOOP') throw systemError(err, { where: dir, flag })!;
      st = null;
    }
    // A link to a folder that is not there (an unmounted disk): mkdir would fail below it.
    let link = false;
    try {
      link = st === null && fs.lstatSync(p).isSymbolicLink();
    } catch {
      link = false; // not there at all (or a file on the way, found further up)
    }
    if (link) {
      throw systemError(Object.assign(new Error('dangling link'), { code: 'ENOENT', syscall: 'mkdir' }), { where: dir, flag })!;
    }
    if (st !== null) {
      if (!st.isDirectory()) throw systemError(Object.assign(new Error('not a folder'), { code: 'ENOTDIR' }), { where: dir, flag })!;
      try {
        fs.accessSync(p, fs.constants.W_OK);
      } catch (err) {
        throw systemError(err, { where: dir, flag }) ?? err;
      }
      return;
    }
    const up = path.dirname(p);
    if (up === p) return;
    p = up;
  }
}
