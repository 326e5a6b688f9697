// The command line's own checks, run before and after yargs parses it (scripts/cli.ts wires them
// in): empty arguments, negative numbers in exponent form, option and command names (with the
// nearest known name), `--no-<value option>`, words after `--`, options given twice or without
// a value. Each refuses with one InputError line (exit 2).
import { InputError } from '../common/errors.ts';
import { DECIMAL, lacksValue, nearestName } from './script-args.ts';

/**
 * Refuses an empty or blank argument (`--lr ''`, `--out=`, `--validation a.txt ' '`). yargs reads
 * such a value as 0 for a number option and as '' for a string one, which a path option resolves to
 * the working folder: no option of mlm means anything by an empty value.
 */
export function checkEmptyArguments(argv: string[]): void {
  // Words after `--` are text (fill-mask's), not option values: the command judges them.
  optionWords(argv).forEach((token, i) => {
    const eq = token.startsWith('--') ? token.indexOf('=') : -1;
    const value = eq >= 0 ? token.slice(eq + 1) : token;
    if (value.trim() !== '') return;
    const before = argv[i - 1];
    const option = eq >= 0 ? token.slice(0, eq) : before?.startsWith('-') && !before.includes('=') ? before : null;
    throw new InputError(option
      ? `${option} was given an empty value; give a value or leave the option out`
      : `argument ${i + 1} is empty; remove it or give a value (an unset shell variable?)`);
  });
}

/** The words of a command line before `--`: options, their values and the command's words. */
export function optionWords(argv: readonly string[]): readonly string[] {
  const end = argv.indexOf('--');
  return end < 0 ? argv : argv.slice(0, end);
}

/**
 * A negative number that yargs reads as a group of short options (`-1e-3` as -1 and -e), where
 * it reads `-0.5` and `-.5` as a value: an exponent or a point with no digit after it.
 */
const SHREDDED_NEGATIVE = /^-(\d+\.\d*|\.\d+|\d+)[eE][+-]?\d+$|^-\d+\.$/;

/**
 * Joins such a number to the option before it (`--lr -1e-3` becomes `--lr=-1e-3`), so that it
 * reaches the option, whose own check then judges it. Words after `--` are left as they are.
 */
export function joinNegativeValues(argv: readonly string[]): string[] {
  const end = argv.indexOf('--');
  const out: string[] = [];
  argv.forEach((token, i) => {
    const before = out[out.length - 1];
    const joins = (end < 0 || i < end) && SHREDDED_NEGATIVE.test(token) && before !== undefined && before.startsWith('--') && before !== '--' && !before.includes('=');
    if (joins) out[out.length - 1] = `${before}=${token}`;
    else out.push(token);
  });
  return out;
}

/** Options that mean something given alone: `--resume` continues from the newest checkpoint. */
const BARE_OPTIONS: ReadonlySet<string> = new Set(['resume']);

/** What `checkOptionValues` and `checkCommandLine` need of yargs' option table (`getOptions()`). */
export interface DeclaredOptions {
  key: Record<string, unknown>;
  boolean: string[];
  array: string[];
  number?: string[];
  choices?: Record<string, readonly unknown[]>;
  demandedOptions?: Record<string, unknown>;
  alias?: Record<string, string[]>;
}

/** An option's name as yargs' table spells it: `--batchSize` and `--batch-size=8` name batch-size. */
const optionKey = (token: string): string => token.replace(/^--?/, '').split('=')[0]!.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

/** What a value option takes, in words, for the line that refuses `--no-<option>`. */
function valueKind(key: string, declared: DeclaredOptions): string {
  const choices = declared.choices?.[key];
  if (choices && choices.length > 0) return `one of ${choices.join(', ')}`;
  if (declared.array.includes(key)) return 'one or more values';
  if (declared.number?.includes(key)) return 'a number';
  return 'a value';
}

/** Commands that take free text: the words after `--` are theirs (`fill-mask -- "- [MASK]"`). */
const TEXT_COMMANDS: ReadonlySet<string> = new Set(['fill-mask']);

/** Where on the command line yargs is: the command's words (`['tokenizer', 'train']`). */
export interface CommandPlace {
  commands: readonly string[];
}

/**
 * Checks the words of the command line against the command's options before yargs validates them
 * (and before its handler runs):
 * - `--config-file` is given once;
 * - the value of a number option is a decimal number as typed: yargs reads `3abc` and `1_000` as
 *   NaN (which the command's check would show as "got NaN"), and `0x10` and `0b1` as 16 and 1;
 * - `--flag=VALUE` of a boolean is true or false (yargs reads any other value as false);
 * - `--no-<option>` of an option that takes a value: yargs' negation of booleans would pass false
 *   (or 0) where the command expects a string, a list or a number;
 * - an unknown option is named with its dashes and the option it most likely meant, where yargs
 *   says "Unknown argument: topk"; a word that starts with - but is no option name (a text such as
 *   "- [MASK] ...") is pointed after `--` where the command takes text;
 * - words after `--` are refused by a command that takes no text, where yargs would drop them
 *   without a word.
 */
export function checkCommandLine(line: readonly string[], declared: DeclaredOptions, place: CommandPlace): void {
  const name = place.commands.join(' ');
  const words = optionWords(line);
  // yargs cannot open a --config-file given twice, and says "Invalid JSON config file: [ ... ]".
  const files = words.flatMap((t, i) => (t.startsWith('--') && optionKey(t) === 'config-file' ? [t.includes('=') ? t.slice(t.indexOf('=') + 1) : words[i + 1] ?? ''] : []));
  if (files.length > 1) throw new InputError(`--config-file was given ${files.length} times (${files.join(', ')}); give it once`);
  words.forEach((token, i) => {
    if (!token.startsWith('--') || token === '--') return;
    const key = optionKey(token);
    const eq = token.indexOf('=');
    const value = eq >= 0 ? token.slice(eq + 1) : words[i + 1];
    if (declared.number?.includes(key) && value !== undefined && !lacksValue(value) && !DECIMAL.test(value.trim())) {
      throw new InputError(`--${key} takes a decimal number (like 20, 0.5 or 1e-3), got '${value}'`);
    }
    if (declared.boolean.includes(key) && eq >= 0 && !/^(true|false)$/.test(value!)) {
      throw new InputError(`--${key} is a switch: give --${key} or --no-${key}, not --${key}=${value}`);
    }
  });
  for (const token of words) {
    if (!token.startsWith('--no-')) continue;
    const key = optionKey(token);
    const base = key.slice('no-'.length);
    if (key in declared.key || !(base in declared.key) || declared.boolean.includes(base) || BARE_OPTIONS.has(base)) continue;
    const instead = declared.demandedOptions && base in declared.demandedOptions ? `give --${base} a value` : `give --${base} a value or leave it out`;
    throw new InputError(`--${base} takes ${valueKind(base, declared)}, so --${key} is not an option; ${instead}`);
  }
  const help = `see mlm ${name} --help`;
  const aliases = Object.values(declared.alias ?? {}).flat();
  // yargs negates a switch spelled --no-json only: --noJson is no option of its.
  const known = (key: string, token: string) => key in declared.key || aliases.includes(key) || (token.startsWith('--no-') && declared.boolean.includes(key.slice(3)));
  for (const token of words) {
    // '-' alone is a word, and a negative number a value.
    if (!token.startsWith('-') || token === '-' || Number.isFinite(Number(token))) continue;
    const long = token.startsWith('--');
    const typed = token.slice(long ? 2 : 1).split('=')[0]!;
    if (!(long ? /^[A-Za-z][\w-]*$/ : /^[A-Za-z]+$/).test(typed)) {
      if (TEXT_COMMANDS.has(name)) {
        throw new InputError(`${JSON.stringify(token)} starts with - and so reads as an option; put a text that starts with - after --: mlm ${name} [options] -- ${JSON.stringify(token)}`);
      }
      throw new InputError(`unknown option ${JSON.stringify(token)}; ${help}`);
    }
    // -abc is three short options; mlm has one, -h.
    const unknown = long ? (known(optionKey(token), token) ? undefined : typed) : [...typed].find((c) => !known(c, token));
    if (unknown === undefined) continue;
    const flag = (k: string) => (k.length === 1 ? `-${k}` : `--${k}`);
    const names = Object.keys(declared.key).filter((k) => k.length > 1).concat(declared.boolean.map((k) => `no-${k}`));
    const meant = long ? nearestName(unknown, names) : undefined;
    throw new InputError(`unknown option ${flag(unknown)}${meant ? ` (did you mean --${meant}?)` : ''}; ${help}`);
  }
  const end = line.indexOf('--');
  const afterDashes = end < 0 ? [] : line.slice(end + 1);
  if (afterDashes.length > 0 && !TEXT_COMMANDS.has(name)) {
    throw new InputError(`unknown argument ${JSON.stringify(afterDashes[0])} after --: mlm ${name} takes no text; give its options before --, see mlm ${name} --help`);
  }
}

/**
 * Refuses a command name that is not one of `names` (those of mlm, or of a group such as `mlm
 * tokenizer`), with the nearest one, where yargs says "Did you mean train?".
 */
export function checkCommandName(parsed: { _: readonly (string | number)[] }, place: CommandPlace, names: readonly string[]): void {
  const typed = parsed._[place.commands.length];
  if (typed === undefined || names.includes(String(typed))) return;
  const meant = nearestName(String(typed), names);
  const group = place.commands.join(' ');
  throw new InputError(`unknown ${group ? `${group} ` : ''}command ${JSON.stringify(String(typed))}${meant ? ` (did you mean ${meant}?)` : ''}; ${group ? `the ${group} commands: ${names.join(', ')}` : '`mlm --help` lists the commands'}`);
}


/**
 * Refuses, after yargs has parsed them, values it would otherwise pass on in a form no command
 * expects: an option given twice (yargs makes a list of it: `--out a --out b`), an option given
 * without a value (`... --out` at the end reads as '', the working folder, which `prepare
 * --overwrite` would replace; a number or choices option without one silently keeps its default),
 * and a list option with no values.
 */
export function checkOptionValues(line: readonly string[], argv: Record<string, unknown>, declared: DeclaredOptions): void {
  const raw = optionWords(line);
  const flag = (key: string) => (key.length === 1 ? `-${key}` : `--${key}`);
  const noValue = (key: string) => new InputError(`${flag(key)} was given no value; give a value or leave the option out`);
  // The options named on the line, before `--` (a command's positional words, `fill-mask
  // [text..]`, are in the table too, and may be empty when the text comes after `--`).
  const named = new Set(raw.filter((t) => t.startsWith('--')).map(optionKey));
  for (const key of Object.keys(declared.key)) {
    const v = argv[key];
    if (v === undefined) continue;
    if (Array.isArray(v)) {
      if (!declared.array.includes(key)) throw new InputError(`${flag(key)} was given ${v.length} times (${v.join(', ')}); give it once`);
      if (v.length === 0 && named.has(key)) throw noValue(key);
    } else if (v === '' && !BARE_OPTIONS.has(key)) {
      throw noValue(key);
    }
  }
  // yargs gives a number or choices option without a value its default: find those in the tokens.
  raw.forEach((token, i) => {
    if (!token.startsWith('--') || token.includes('=')) return;
    const key = optionKey(token);
    if (!(key in declared.key) || declared.boolean.includes(key) || BARE_OPTIONS.has(key)) return;
    if (lacksValue(raw[i + 1])) throw noValue(key);
  });
}
