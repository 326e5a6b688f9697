#!/usr/bin/env node
// Runs every tests/**/*.test.ts file with node:test (Node 20's runner does not expand globs).
// Extra arguments are passed to `node --test` (e.g. --test-name-pattern=...); file paths given as
// arguments restrict the run to those files.
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const find = (dir) => readdirSync(dir).sort().flatMap((name) => {
  const p = join(dir, name);
  if (statSync(p).isDirectory()) return name === 'fixtures' ? [] : find(p);
  return name.endsWith('.test.ts') ? [relative(root, p)] : [];
});
const args = process.argv.slice(2);
const given = args.filter((a) => a.endsWith('.ts'));
const flags = args.filter((a) => !a.endsWith('.ts'));
const files = given.length ? given : find(join(root, 'tests'));
const r = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=1', ...flags, ...files], { cwd: root, stdio: 'inherit' });
process.exit(r.status ?? 1);
