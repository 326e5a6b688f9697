// Errors that the CLI turns into one line on stderr and an exit code.
// InputError: bad usage or bad input (exit 2). Anything else that escapes is a failure while
// running (exit 1). Messages say what is wrong and what to do, on one line.

export class InputError extends Error {
  readonly exitCode = 2;
  constructor(message: string) {
    super(message);
    this.name = 'InputError';
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

/** Throws an InputError naming the flag unless 0 < `value` < 1. */
export function requireOpenFraction(value: number, flag: string): void {
  if (!(value > 0 && value < 1)) throw new InputError(`--${flag} must be in (0, 1), got ${value}`);
}

/** Turns an error into the single line printed by the CLI (no stack, no newlines). */
export function oneLine(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.replace(/\s*\n\s*/g, ' ').trim();
}
