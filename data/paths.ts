// Path safety rules shared by the commands:
// - refuseOutputOverInputs: an output folder may not be, contain or lie inside one of the command's
//   inputs (with --overwrite it would delete them; inside a corpus folder it would be read back as
//   corpus next time).
// - insideRoot: a path built from outside data (a listing, an index file, an archive entry) must
//   stay inside the folder it is meant for.
// Both compare resolved paths before anything is written.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { InputError } from './errors.ts';

/** An input of a command: the path as the user gave it (or as expanded) and the flag it came from. */
export interface NamedInput {
  path: string;
  flag: string;   // e.g. '--corpus', '--validation', '--tokenizer'
}

/** The inputs named by corpus-style arguments: the given paths that exist (folders, files) and the
 * files they expanded to (globs included). */
export function corpusInputs(given: string[], files: string[], flag: string): NamedInput[] {
  return [...given.filter((p) => fs.existsSync(p)), ...files].map((p) => ({ path: p, flag }));
}

/**
 * The real path of `p` with links followed, also when `p` does not exist yet: its deepest existing
 * ancestor is resolved and the missing rest appended.
 */
export function realPathOf(p: string): string {
  const abs = path.resolve(p);
  const missing: string[] = [];
  let cur = abs;
  for (;;) {
    try {
      return path.join(fs.realpathSync.native(cur), ...missing.reverse());
    } catch {
      const parent = path.dirname(cur);
      if (parent === cur) return abs;
      missing.push(path.basename(cur));
      cur = parent;
    }
  }
}

/** True when `inner` is `outer` or lies below it (both absolute and normalised). */
function within(inner: string, outer: string): boolean {
  const rel = path.relative(outer, inner);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/**
 * Throws an InputError when the output folder `out` (given with `flag`) is one of the inputs,
 * contains one, or lies inside one. Real paths are compared, so links and `..` do not hide a match.
 */
export function refuseOutputOverInputs(out: string, inputs: NamedInput[], flag = '--out'): void {
  const o = realPathOf(out);
  for (const input of inputs) {
    const i = realPathOf(input.path);
    let how: string | null = null;
    if (o === i) how = 'is';
    else if (within(i, o)) how = 'contains';
    else if (within(o, i)) how = 'is inside';
    if (how) {
      throw new InputError(`${flag} ${out} ${how} the input ${input.path} (${input.flag}); writing there could delete or mix with the inputs, choose an ${flag} outside them`);
    }
  }
}

/**
 * Resolves `relPath` (taken from outside data) against `root` and returns the absolute path;
 * throws an InputError naming `what` when it is absolute or escapes `root` (`..`, drive letters).
 * Purely lexical: call it before creating anything, and create below `root` only.
 */
export function insideRoot(root: string, relPath: string, what: string): string {
  const base = path.resolve(root);
  if (typeof relPath !== 'string' || relPath === '' || relPath.includes('\0') || path.isAbsolute(relPath) || /^[a-zA-Z]:/.test(relPath)) {
    throw new InputError(`${what} ${JSON.stringify(relPath)} is not a relative path inside ${root}; refusing to use it`);
  }
  const full = path.resolve(base, relPath);
  if (full === base || !within(full, base)) {
    throw new InputError(`${what} ${JSON.stringify(relPath)} points outside ${root}; refusing to use it`);
  }
  return full;
}
