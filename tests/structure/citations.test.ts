// Files of the repository cited by its code comments and docs exist: a comment that sends the
// reader to a test file under tests/ for the proof of a claim must name a file that is there
// (renames and moves leave such citations behind). Every tracked source file (.ts, .mjs, .sh,
// .py, .c) and Markdown file is read; a citation is a path under one of the repository's
// top-level folders with a file extension, not preceded by another path part (so
// `dist/training/x.d.ts` or `$B/data/...` inside a bundle are not read as citations).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));

/** Citations that name no file on purpose, each with why. */
const NOT_FILES: Record<string, string> = {
  'training/kernels/split-columns.ts': 'README.md tells the history of a kernel that is gone',
  'scripts/version.ts': 'tests/structure/layering.test.ts checks a made-up edge',
  'data/brown-128/manifest.json': 'the demo data inside the GPU bundle, made by scripts/gpu-bundle.sh',
};

const CITATION = /(?<![\w./$-])(?:tests|training|scripts|data|common|docs|configs)\/[\w./-]+\.(?:ts|mjs|md|json|sh|py|c)\b/g;

function trackedFiles(): string[] {
  const r = spawnSync('git', ['ls-files', '-z'], { cwd: root, encoding: 'utf8' });
  assert.equal(r.status, 0, `git ls-files failed: ${r.stderr}`);
  return r.stdout.split('\0').filter((f) => /\.(ts|mjs|sh|py|c|md)$/.test(f) && !f.startsWith('scripts/gpu-runs/'));
}

/** Every citation in `text` (a file's contents) as [path, line number]. */
export function citations(text: string): [string, number][] {
  const found: [string, number][] = [];
  text.split('\n').forEach((line, i) => {
    for (const m of line.matchAll(CITATION)) found.push([m[0], i + 1]);
  });
  return found;
}

test('the citation pattern: repository paths, not parts of longer paths', () => {
  assert.deepEqual(citations('see tests/data/corpus.test.ts and (training/trainer.ts).\ndist/training/fill-mask.d.ts $B/data/x.json ../data/y.ts'), [
    ['tests/data/corpus.test.ts', 1],
    ['training/trainer.ts', 1],
  ]);
});

test('every file the code comments and docs cite exists', () => {
  const missing: string[] = [];
  const cited = new Set<string>();
  for (const file of trackedFiles()) {
    for (const [p, line] of citations(fs.readFileSync(path.join(root, file), 'utf8'))) {
      cited.add(p);
      if (p in NOT_FILES || fs.existsSync(path.join(root, p))) continue;
      missing.push(`${file}:${line}: ${p}`);
    }
  }
  assert.deepEqual(missing, [], 'cited files that do not exist (rename the citation, or list it in NOT_FILES with why)');
  // The list of exceptions only shrinks: an entry no longer cited goes.
  assert.deepEqual(Object.keys(NOT_FILES).filter((p) => !cited.has(p)), []);
});
