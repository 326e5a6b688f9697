// A folder's files and their bytes, to prove that a command left it as it was.
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Every file below `dir` (links read through) with its bytes, keyed by its path relative to `dir`. */
export function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of fs.readdirSync(dir, { recursive: true, withFileTypes: true })) {
    const p = path.join(e.parentPath, e.name);
    if (fs.statSync(p).isFile()) out[path.relative(dir, p)] = fs.readFileSync(p).toString('base64');
  }
  return out;
}
