// `--config-file FILE` for the commands that take many options (mlm train / pretrain / finetune,
// mlm evaluate), as run_mlm.py takes a JSON file of its arguments: a JSON object (or, for a file
// named .yaml / .yml, a YAML mapping, read by the `yaml` package as YAML 1.2) whose keys are the
// command's option names, in kebab-case ("batch-size") or camelCase ("batchSize"), and whose
// values have the option's type. Flags on the command line override the file; the file overrides
// the defaults (yargs' own order for `.config()`). Relative paths in the file are resolved against
// the file's folder: always for the keys in `paths`, and for the keys in `models` (a folder or a
// Hub id) when that folder exists. An unknown key or a value of the wrong type is an InputError
// naming the key (exit 2). YAML merge keys (`<<: *base`) are read; top-level keys starting with
// x- are skipped, a place for the mappings they merge.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseDocument } from 'yaml';
import type { Argv } from 'yargs';
import { InputError } from '../common/errors.ts';

export interface ConfigFileKeys {
  /** Options whose values are paths (resolved against the file's folder). */
  paths?: readonly string[];
  /** Options that take a folder or a Hub id (resolved when the folder exists there). */
  models?: readonly string[];
  /** String options that may also be given as `true` (a flag without a value, like --resume). */
  flags?: readonly string[];
}

/** What yargs knows of a command's options (`getOptions()`, present in yargs 17-18 but not in its types). */
interface YargsOptions {
  key: Record<string, unknown>;
  string: string[];
  number: string[];
  boolean: string[];
  array: string[];
  choices: Record<string, readonly unknown[]>;
}

const NOT_IN_FILE = new Set(['config-file', 'help', 'version']);

const kebab = (k: string): string => k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

function describeValue(v: unknown): string {
  // YAML's .inf, -.inf and .nan: JSON would show them as null.
  if (typeof v === 'number' && !Number.isFinite(v)) return `${Number.isNaN(v) ? '.nan' : v > 0 ? '.inf' : '-.inf'} (${v})`;
  return JSON.stringify(v)?.slice(0, 60) ?? String(v);
}

/** Reads and checks a config file against the options yargs knows; returns kebab-case keys. */
export function readOptionsFile(file: string, known: YargsOptions, command: string, keys: ConfigFileKeys = {}): Record<string, unknown> {
  const relative = path.relative(process.cwd(), file);
  const shown = relative === '' || relative.startsWith('..') ? file : relative;
  const yaml = /\.ya?ml$/i.test(file);
  const kind = yaml ? 'YAML' : 'JSON';
  let text: string;
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) throw new InputError(`--config-file ${shown} is not a regular file; give a JSON or YAML file of option values`);
    const bytes = fs.readFileSync(file);
    if ((bytes[0] === 0xff && bytes[1] === 0xfe) || (bytes[0] === 0xfe && bytes[1] === 0xff)) {
      throw new InputError(`--config-file ${shown} is UTF-16 text; save it as UTF-8`);
    }
    text = bytes.toString('utf8');
  } catch (err) {
    if (err instanceof InputError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EACCES' || code === 'EPERM') throw new InputError(`--config-file ${shown} cannot be read (permission denied); fix its permissions`);
    throw new InputError(`--config-file ${shown} not found; give a JSON or YAML file of option values`);
  }
  let doc: unknown;
  const invalid = (why: string) => new InputError(
    // Control characters (a file in another encoding) would break the one line.
    `--config-file ${shown} is not valid ${kind} (${why.split('\n')[0]!.replace(/[\u0000-\u001f\u007f\ufffd]/g, '?').replace(/:\s*$/, '')}); write the options as one ${yaml ? 'YAML mapping' : 'JSON object'}`);
  if (yaml) {
    // Duplicate keys are an error (the package's default), like the repeated-key check below; a
    // warning (an unknown tag such as `!!float`, a %YAML directive of another version) is one too:
    // the value would not be what the file says (and the package would print it on stderr).
    // Merge keys (`<<: *base`) are read, as YAML 1.1 had them; the anchored mapping may sit under
    // a key starting with x- (docker compose's extension fields), which is not an option.
    const parsed = parseDocument(text, { merge: true });
    const problem = parsed.errors[0] ?? parsed.warnings[0];
    if (problem) throw invalid(problem.message);
    doc = parsed.toJS();
    if (doc !== null && typeof doc === 'object' && !Array.isArray(doc)) {
      doc = Object.fromEntries(Object.entries(doc as Record<string, unknown>).filter(([k]) => !k.startsWith('x-')));
    }
  } else {
    try {
      doc = JSON.parse(text);
    } catch (err) {
      throw invalid((err as Error).message);
    }
    // JSON.parse keeps the last of a repeated key without a word; JSON is YAML 1.2, whose parser
    // finds repeated keys (only that is asked of it here).
    const repeated = parseDocument(text).errors.find((e) => e.code === 'DUPLICATE_KEY');
    if (repeated) {
      const line = repeated.linePos?.[0].line;
      throw new InputError(`--config-file ${shown} gives a key twice${line ? ` (line ${line})` : ''}; give each option once`);
    }
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
    throw new InputError(yaml
      ? `--config-file ${shown} must hold one YAML mapping of option values, like "steps: 1000" and "batch-size: 32" on their own lines`
      : `--config-file ${shown} must hold one JSON object of option values, like {"steps": 1000, "batch-size": 32}`);
  }
  const dir = path.dirname(file);
  const out: Record<string, unknown> = {};
  const from = new Map<string, string>();
  for (const [rawKey, value] of Object.entries(doc as Record<string, unknown>)) {
    const key = kebab(rawKey);
    const where = `--config-file ${shown}: key "${rawKey}"`;
    if (key === 'config-file') throw new InputError(`${where}: a config file cannot name another one; put that file's options in this one`);
    if (NOT_IN_FILE.has(key) || !(key in known.key)) {
      throw new InputError(`${where} is not an option of mlm ${command}; use its option names (kebab-case like "batch-size" or camelCase like "batchSize"), see mlm ${command} --help`);
    }
    if (from.has(key)) throw new InputError(`${where} repeats "${from.get(key)}"; give each option once`);
    from.set(key, rawKey);
    if (value === null) throw new InputError(`${where} is null; give a value or leave the key out`);
    const choices = known.choices[key];
    let v: unknown = value;
    if (choices && choices.length > 0) {
      if (!choices.includes(v)) throw new InputError(`${where} must be one of ${choices.map((c) => JSON.stringify(c)).join(', ')}, got ${describeValue(v)}`);
    } else if (known.boolean.includes(key)) {
      if (typeof v !== 'boolean') throw new InputError(`${where} must be true or false, got ${describeValue(v)}`);
    } else if (known.number.includes(key)) {
      if (typeof v !== 'number') throw new InputError(`${where} must be a number, got ${describeValue(v)}`);
      if (!Number.isFinite(v)) throw new InputError(`${where} must be a finite number, got ${describeValue(v)}`);
    } else if (known.array.includes(key)) {
      if (typeof v === 'string') v = [v];
      if (!Array.isArray(v) || v.length === 0 || !v.every((x) => typeof x === 'string')) {
        throw new InputError(`${where} must be a string or a list of strings, got ${describeValue(value)}`);
      }
      if ((v as string[]).some((x) => x.trim() === '')) throw new InputError(`${where} holds an empty string; remove it or give a value`);
    } else if (keys.flags?.includes(key) && typeof v === 'boolean') {
      if (v === false) continue;
      v = '';
    } else if (typeof v !== 'string') {
      throw new InputError(`${where} must be a string, got ${describeValue(v)}`);
    } else if (v.trim() === '') {
      // An empty path would resolve to the working folder (the command line refuses it too, scripts/command-line.ts).
      throw new InputError(`${where} is empty; give a value or leave the key out`);
    }
    const resolve = (s: string): string => {
      if (s === '' || path.isAbsolute(s)) return s;
      if (keys.paths?.includes(key)) return path.resolve(dir, s);
      if (keys.models?.includes(key) && fs.existsSync(path.resolve(dir, s))) return path.resolve(dir, s);
      return s;
    };
    out[key] = Array.isArray(v) ? v.map((s: string) => resolve(s)) : typeof v === 'string' ? resolve(v) : v;
  }
  return out;
}

/** Adds `--config-file FILE` to a command's options (call after the options are declared). */
export function withConfigFile<T>(y: Argv<T>, command: string, keys: ConfigFileKeys = {}): Argv<T> {
  return y.config(
    'config-file',
    'JSON or YAML (.yaml, .yml) file of option values (keys: option names, kebab-case or camelCase; relative paths from the file\'s folder); flags given here override it',
    (file: string) => readOptionsFile(path.resolve(file), (y as unknown as { getOptions(): YargsOptions }).getOptions(), command, keys),
  );
}
