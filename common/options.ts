// Type checks for the options a JavaScript caller passes to the library's functions (index.ts).
// TypeScript checks them at compile time; a JavaScript caller, or one holding values parsed from
// JSON or a form, gets none, and a wrong type is not always an error further down: a truthy
// string read as a boolean (`overwrite: 'no'` replaced an export), a string where a list belongs
// (`targets: 'cat'` scored the letters c, a and t). So each function checks its options' types at
// the door and throws an InputError naming the function, the option and what it got.
import { InputError } from './errors.ts';

/** What an option may hold. */
export type OptionKind =
  | 'string'
  | 'boolean'
  | 'number'
  | 'integer'
  | 'function'
  | 'object'
  /** A list of strings. */
  | 'strings'
  /** A string, or a list of strings. */
  | 'string|strings';

/** How a value reads in a message: its JSON (cut short) and its JavaScript type. */
export function describeValue(v: unknown): string {
  if (v === null || v === undefined || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return `an array (${JSON.stringify(v)?.slice(0, 60) ?? ''})`;
  const type = typeof v;
  if (type === 'object') return 'an object';
  if (type === 'function') return 'a function';
  if (type === 'string') return `the string ${JSON.stringify((v as string).slice(0, 60))}`;
  return `${type === 'number' || type === 'bigint' ? 'the number' : type} ${String(v)}`;
}

function fits(v: unknown, kind: OptionKind): boolean {
  switch (kind) {
    case 'string':
      return typeof v === 'string';
    case 'boolean':
      return typeof v === 'boolean';
    case 'number':
      return typeof v === 'number' && !Number.isNaN(v);
    case 'integer':
      return typeof v === 'number' && Number.isInteger(v);
    case 'function':
      return typeof v === 'function';
    case 'object':
      return typeof v === 'object' && v !== null && !Array.isArray(v);
    case 'strings':
      return Array.isArray(v) && v.every((x) => typeof x === 'string');
    case 'string|strings':
      return typeof v === 'string' || fits(v, 'strings');
  }
}

const NAMES: Record<OptionKind, string> = {
  string: 'a string',
  boolean: 'true or false',
  number: 'a number',
  integer: 'a whole number',
  function: 'a function',
  object: 'an object',
  strings: 'an array of strings',
  'string|strings': 'a string or an array of strings',
};

/** Throws an InputError unless `value` (the argument or option `name` of `fn`) is of `kind`. */
export function checkArgument(fn: string, name: string, value: unknown, kind: OptionKind): void {
  if (!fits(value, kind)) throw new InputError(`${fn}: ${name} must be ${NAMES[kind]}, got ${describeValue(value)}`);
}

/**
 * Throws an InputError unless `opts` is an object whose options named in `kinds` are absent or of
 * their kind, and which holds every option in `required`. Without required options, `opts` may
 * also be undefined. null is refused too (leave an option out for its default); options not named
 * in `kinds` are left to the callee.
 */
export function checkOptions(fn: string, opts: unknown, kinds: Readonly<Record<string, OptionKind>>, required: readonly string[] = []): void {
  if (opts === undefined && required.length === 0) return;
  if (typeof opts !== 'object' || opts === null || Array.isArray(opts)) {
    throw new InputError(`${fn}: the options must be an object, got ${describeValue(opts)}`);
  }
  for (const [name, kind] of Object.entries(kinds)) {
    const v = (opts as Record<string, unknown>)[name];
    if (v === undefined) continue;
    if (v === null) throw new InputError(`${fn}: option ${name} is null; leave it out for its default, or give ${NAMES[kind]}`);
    checkArgument(fn, `option ${name}`, v, kind);
  }
  for (const name of required) if ((opts as Record<string, unknown>)[name] === undefined) throw new InputError(`${fn}: option ${name} is required`);
}

/**
 * The kinds of an options object's fields, read from its defaults: each default's type (number,
 * boolean or string); defaults of other types are skipped.
 */
export function kindsOfDefaults(defaults: Readonly<Record<string, unknown>>): Record<string, OptionKind> {
  const kinds: Record<string, OptionKind> = {};
  for (const [name, v] of Object.entries(defaults)) {
    if (typeof v === 'number') kinds[name] = 'number';
    else if (typeof v === 'boolean') kinds[name] = 'boolean';
    else if (typeof v === 'string') kinds[name] = 'string';
  }
  return kinds;
}
