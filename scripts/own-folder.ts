// The output folder of a script that replaces its own outputs on a second run (the demo, the
// prepare benchmark): such a script may write into a folder only when the folder is its own, so
// that a mistyped --out/--dir never replaces or removes a user's files. Its own: new, empty,
// holding the script's marker file (written when the script first uses it), or the script's
// default folder holding nothing but the names the script writes (as versions before the marker
// left it).
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface OwnFolder {
  /** The folder (absolute). */
  dir: string;
  /** The marker's file name, e.g. '.mlmkit-demo'. */
  marker: string;
  /** Every name the script writes at the top of the folder. */
  names: readonly string[];
  /** The script's default folder (absolute), or none. */
  defaultDir?: string;
  /** The option that names the folder, for the message ('--out'). */
  flag: string;
  /** The marker's text: what made the folder. */
  madeBy: string;
}

/**
 * Makes `f.dir` the script's (creating it and its marker), or returns the one-line reason it is
 * not: a file, or a folder holding something the script did not make. `shown` is how the message
 * writes the path.
 */
export function claimFolder(f: OwnFolder, shown: string = f.dir): string | null {
  let entries: string[] = [];
  if (fs.existsSync(f.dir)) {
    if (!fs.statSync(f.dir).isDirectory()) return `${f.flag} ${shown} is a file, not a folder: pass a new or empty folder`;
    entries = fs.readdirSync(f.dir);
  }
  const oldDefault = f.defaultDir !== undefined && path.resolve(f.dir) === path.resolve(f.defaultDir) && entries.every((e) => f.names.includes(e));
  if (entries.length > 0 && !entries.includes(f.marker) && !oldDefault) {
    return `${f.flag} ${shown} holds files this script did not make (no ${f.marker} there): pass a new or empty folder`;
  }
  fs.mkdirSync(f.dir, { recursive: true });
  fs.writeFileSync(path.join(f.dir, f.marker), `${f.madeBy}\n`);
  return null;
}

/** Removes the script's own names from its folder (after claimFolder); nothing else there. */
export function removeOwn(f: OwnFolder): void {
  for (const name of f.names) fs.rmSync(path.join(f.dir, name), { recursive: true, force: true });
}
