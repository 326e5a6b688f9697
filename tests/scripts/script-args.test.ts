// The repository's own scripts (scripts/script-args.ts): an option left without its value is
// refused in one line with exit 2 before any work, and bench-memory refuses fewer steps than its
// measure needs; lacksValue is the rule mlm's command line shares.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { lacksValue } from '../../scripts/script-args.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const script = (name: string, args: string[]) =>
  spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'scripts', name), ...args], { cwd: root, encoding: 'utf8' });

test('lacksValue: the end of the line, a blank or another option; a negative number is a value', () => {
  for (const next of [undefined, '', ' ', '--out', '-x']) assert.equal(lacksValue(next), true, String(next));
  for (const next of ['a', '-1', '-0.5', '1e-3', 'runs/x']) assert.equal(lacksValue(next), false, next);
});

test('bench-prepare, profile-step and bench-memory: an option without a value, or too few steps, is exit 2 with one line', () => {
  for (const [name, args, line] of [
    ['bench-prepare.ts', ['--dir'], 'bench-prepare: --dir was given no value; give a value or leave the option out\n'],
    ['profile-step.ts', ['--config', '--backend', 'wasm'], 'profile-step: --config was given no value; give a value or leave the option out\n'],
    ['bench-memory.ts', ['--steps', '50'], 'bench-memory: --steps must be an integer >= 200 (growth is measured over the second half, after two evaluation and checkpoint cycles), got 50\n'],
  ] as const) {
    const r = script(name, [...args]);
    assert.equal(r.status, 2, `${name}: ${r.stderr}`);
    assert.equal(r.stderr, line);
  }
});
