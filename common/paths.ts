// Path predicates every layer uses: a path's real location (links followed, also for a path not
// created yet) and whether one path lies inside another. The rules built on them are in
// data/paths.ts; common/atomic.ts checks with them that a folder it replaces is not where the
// command runs.
import * as fs from 'node:fs';
import * as path from 'node:path';

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
export function within(inner: string, outer: string): boolean {
  const rel = path.relative(outer, inner);
  // '..' or '../...' leaves `outer`; a name inside it may itself start with '..' ('..notes').
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel));
}
