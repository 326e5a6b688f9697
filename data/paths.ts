// Path safety rules shared by the commands:
// - refuseOutputOverInputs: an output folder may not be, contain or lie inside one of the command's
//   inputs (with --overwrite it would delete them; inside a corpus folder it would be read back as
//   corpus next time).
// - refuseForeignEntries: --overwrite replaces only a folder holding nothing but what the command
//   writes.
// - insideRoot: a path built from outside data (a listing, an index file, an archive entry) must
//   stay inside the folder it is meant for.
// Both compare resolved paths before anything is written.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { firstNames, InputError } from '../common/errors.ts';
import { realPathOf, within } from '../common/paths.ts';

// The two path predicates live in common/ (writeFolderAtomic uses them too); the commands take them from here.
export { realPathOf, within };

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
 * Throws an InputError unless every entry of the existing folder `out` is one that `own` accepts
 * (what the command itself writes there): `--overwrite` replaces a folder the command wrote, never
 * one that also holds a user's files (`--out .` in a repository, `--out ~/papers`). `what` names
 * the folder kind ('prepared-data folder', 'model export'). A folder that does not exist passes.
 */
export function refuseForeignEntries(out: string, own: (name: string, isDir: boolean) => boolean, what: string, flag = '--out'): void {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(out, { withFileTypes: true });
  } catch {
    return;
  }
  const foreign = entries.filter((e) => !own(e.name, e.isDirectory())).map((e) => e.name).sort();
  if (foreign.length > 0) {
    const shown = firstNames(foreign);
    throw new InputError(`${flag} ${out} holds files that are not part of a ${what} (${shown}); --overwrite replaces only a ${what}: choose an empty or new folder, or move those files`);
  }
}

/**
 * `root`/`relPath` for a relative path taken from outside data (a Hub listing, an index file, a
 * ref, an archive entry): an InputError naming `what`, before anything touches the filesystem,
 * unless `relPath` is a plain relative path: not absolute, no drive letter, no backslash or NUL,
 * no empty, '.' or '..' component, and resolving below `root`. `hint` ends the message (what to
 * check; default: nothing is used).
 */
export function insideRoot(root: string, relPath: string, what: string, hint = 'refusing to use it'): string {
  const base = path.resolve(root);
  const plain = typeof relPath === 'string' && relPath !== '' && !relPath.includes('\0') && !relPath.includes('\\') &&
    !path.isAbsolute(relPath) && !/^[a-zA-Z]:/.test(relPath) && relPath.split('/').every((c) => c !== '' && c !== '.' && c !== '..');
  const full = path.resolve(base, plain ? relPath : '.');
  if (!plain || full === base || !within(full, base)) {
    throw new InputError(`${what} ${JSON.stringify(String(relPath).slice(0, 200))} is not a plain relative path inside ${root}; ${hint}`);
  }
  return full;
}
