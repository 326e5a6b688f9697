// The option reader of the repository's own scripts (demo.ts, corpora.ts, bench-*.ts, profile-step.ts,
// bigram-baseline.ts, check-fp16.ts, gpu-report.ts), which take a few options without
// yargs. Each script declares its options (a value, a number, or a switch) and its usage text; bad
// input gets one line on stderr saying what is wrong and what to do, with exit 2, as `mlm` does
// (scripts/command-line.ts, which shares its number pattern and nearest-name rule):
// - an unknown option, with the nearest declared name (`--pretrain-step` silently ignored would run
//   the default recipe);
// - an option given twice;
// - a value option without its value (the last word of the line, an empty string, or followed by
//   another option): read as a default or as '' it could point a script that replaces its outputs
//   at the wrong folder;
// - a number option whose value is not a decimal number;
// - a switch given a value (`--json=false`);
// - a word that is no option's value, beyond the operands a script declares, or an empty one.
// `--help` or `-h` anywhere prints the usage on stdout and exits 0, before any work.

/**
 * True when the token after an option cannot be its value: nothing (the end of the line), blank,
 * or another option (a negative number is a value). scripts/command-line.ts applies the same rule to mlm.
 */
export function lacksValue(next: string | undefined): boolean {
  return next === undefined || next.trim() === '' || (next.startsWith('-') && !Number.isFinite(Number(next)));
}

/** One option of a script: a value (`--out DIR`), a decimal number (`--steps 200`) or a switch (`--json`). */
export type ScriptOption =
  | { type: 'string'; default?: string }
  | { type: 'number'; default?: number }
  | { type: 'switch' };

/** What a script reads: its options by name (without the dashes), and how many operands it takes. */
export interface ScriptSpec<O extends Record<string, ScriptOption>> {
  /** The name its lines start with (`demo: ...`; `gpu-report probe` for a script's subcommand). */
  program: string;
  /** How the script is run, for the pointer to --help (default `node --import tsx scripts/<name>.ts`, with the subcommand). */
  run?: string;
  /** Printed by --help: the script's usage lines (its header comment points at this text). */
  usage: string;
  options: O;
  /** Words that are no option's value: at least `min` (default 0), at most `max` (default `min`). */
  operands?: { min?: number; max?: number; name?: string };
}

/** The value of each option: a switch is true or false; a value or number option without a default may be undefined. */
export type ScriptValues<O extends Record<string, ScriptOption>> = {
  -readonly [K in keyof O]: O[K] extends { type: 'switch' }
    ? boolean
    : O[K] extends { type: 'number' }
      ? O[K] extends { default: number } ? number : number | undefined
      : O[K] extends { default: string } ? string : string | undefined;
};

/** Bad input: `message` is the line to print after `PROGRAM: `. */
export class ScriptArgumentError extends Error {}

/** A number as typed, for the scripts and for mlm: decimal digits, a point, an exponent (not 0x10, 0b1, 1_000, Infinity or NaN). */
export const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/**
 * Reads `argv` against `spec`: the options' values (defaults where absent) and the operands, or
 * 'help' when `--help` or `-h` is among the words. Throws ScriptArgumentError on bad input.
 */
export function parseScriptArgs<const O extends Record<string, ScriptOption>>(
  argv: readonly string[],
  spec: ScriptSpec<O>,
): { values: ScriptValues<O>; operands: string[] } | 'help' {
  if (argv.includes('--help') || argv.includes('-h')) return 'help';
  const { program, options } = spec;
  const names = Object.keys(options);
  const [script, ...sub] = program.split(' ');
  const seeHelp = `see ${spec.run ?? ['node --import tsx', `scripts/${script}.ts`, ...sub].join(' ')} --help`;
  const given = new Map<string, string | true>();
  const operands: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i]!;
    // An operand: a word that is not an option (a negative number is not one, nor is a lone -).
    if (!word.startsWith('-') || word === '-' || Number.isFinite(Number(word))) {
      if (word.trim() === '') throw new ScriptArgumentError(`argument ${i + 1} is empty; remove it or give a value (an unset shell variable?)`);
      operands.push(word);
      continue;
    }
    if (word === '--') throw new ScriptArgumentError(`unexpected argument --; ${program} takes nothing after it, ${seeHelp}`);
    const long = word.startsWith('--');
    const eq = long ? word.indexOf('=') : -1;
    const name = long ? word.slice(2, eq >= 0 ? eq : undefined) : word.slice(1);
    const typed = eq >= 0 ? word.slice(0, eq) : word;
    const option = long && Object.hasOwn(options, name) ? options[name]! : undefined;
    if (option === undefined) {
      const meant = long ? nearestName(name, [...names, 'help']) : undefined;
      throw new ScriptArgumentError(`unknown option ${typed}${meant ? ` (did you mean --${meant}?)` : ''}; ${seeHelp}`);
    }
    if (given.has(name)) throw new ScriptArgumentError(`--${name} was given twice; give it once`);
    if (option.type === 'switch') {
      if (eq >= 0) throw new ScriptArgumentError(`--${name} takes no value; give --${name} alone or leave it out`);
      given.set(name, true);
      continue;
    }
    const value = eq >= 0 ? word.slice(eq + 1) : argv[i + 1];
    if (eq >= 0 ? value!.trim() === '' : lacksValue(value)) {
      throw new ScriptArgumentError(`--${name} was given no value; give a value or leave the option out`);
    }
    if (eq < 0) i++;
    if (option.type === 'number' && !DECIMAL.test(value!)) {
      throw new ScriptArgumentError(`--${name} must be a number, got ${JSON.stringify(value)}`);
    }
    given.set(name, value!);
  }
  const min = spec.operands?.min ?? 0;
  const max = spec.operands?.max ?? min;
  if (operands.length > max) {
    const extra = operands[max]!;
    throw new ScriptArgumentError(`unexpected argument ${JSON.stringify(extra)}${max === 0 ? ` (${program} takes only options)` : ''}; ${seeHelp}`);
  }
  if (operands.length < min) {
    throw new ScriptArgumentError(`${spec.operands?.name ?? 'an argument'} is missing; ${seeHelp}`);
  }
  const values: Record<string, string | number | boolean | undefined> = {};
  for (const [name, option] of Object.entries(options)) {
    const raw = given.get(name);
    if (option.type === 'switch') values[name] = raw === true;
    else if (raw === undefined) values[name] = option.default;
    else values[name] = option.type === 'number' ? Number(raw) : (raw as string);
  }
  return { values: values as ScriptValues<O>, operands };
}

/**
 * `parseScriptArgs` for a script's own command line: prints the usage and exits 0 on --help, and
 * prints the one line and exits 2 on bad input.
 */
export function readScriptArgs<const O extends Record<string, ScriptOption>>(
  argv: readonly string[],
  spec: ScriptSpec<O>,
): { values: ScriptValues<O>; operands: string[] } {
  let read: ReturnType<typeof parseScriptArgs<O>>;
  try {
    read = parseScriptArgs(argv, spec);
  } catch (err) {
    if (!(err instanceof ScriptArgumentError)) throw err;
    process.stderr.write(`${spec.program}: ${err.message}\n`);
    process.exit(2);
  }
  if (read === 'help') {
    process.stdout.write(spec.usage.endsWith('\n') ? spec.usage : `${spec.usage}\n`);
    process.exit(0);
  }
  return read;
}

/** `readScriptArgs` for a script that takes options only: their values. */
export function readScriptOptions<const O extends Record<string, ScriptOption>>(argv: readonly string[], spec: ScriptSpec<O>): ScriptValues<O> {
  return readScriptArgs(argv, spec).values;
}

/** The number of edits (insert, delete, replace, swap two neighbours) from `a` to `b`. */
function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i]![j] = Math.min(d[i]![j]!, d[i - 2]![j - 2]! + 1);
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * The name among `names` that `typed` most likely meant: the same letters without the dashes
 * (`topk`, `top_k` for top-k), or a name a few edits away (a third of its length at most).
 */
export function nearestName(typed: string, names: readonly string[]): string | undefined {
  const bare = (s: string) => s.toLowerCase().replace(/[-_]/g, '');
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const name of names) {
    const distance = bare(name) === bare(typed) ? 0 : editDistance(typed.toLowerCase(), name);
    if (distance < bestDistance) [best, bestDistance] = [name, distance];
  }
  return bestDistance <= Math.max(1, Math.floor(typed.length / 3)) ? best : undefined;
}
