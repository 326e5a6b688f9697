// The demo (`npm run demo`, scripts/demo.ts) end to end, with a few steps instead of its recipe's
// thousands: every stage runs and the outputs are there; a second run reuses what matches its
// recipe, trains again what was made with other steps, and with a new pretraining everything made
// from the old one.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
let out: string;

before(() => { out = fs.mkdtempSync(path.join(os.tmpdir(), 'mlm-demo-')); });
after(() => fs.rmSync(out, { recursive: true, force: true }));

function demo(...args: string[]): { stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'scripts', 'demo.ts'),
    '--out', out, '--backend', 'wasm', '--eval-batches', '2', '--extend-add', '20', ...args], { cwd: root, encoding: 'utf8' });
  assert.equal(r.status, 0, `demo ${args.join(' ')} exited ${r.status}:\n${r.stderr.slice(-3000)}`);
  return { stdout: r.stdout, stderr: r.stderr };
}

/** The modification time of a run folder's checkpoint-STEP trainer state (it is written last). */
function trainedAt(run: string, step: number): number {
  return fs.statSync(path.join(out, run, `checkpoint-${step}`, 'trainer_state.json')).mtimeMs;
}

test('the demo runs every stage; a second run reuses what matches its recipe, trains again what does not, and what derives from it', { timeout: 600_000 }, () => {
  const first = demo('--pretrain-steps', '3', '--adapt-steps', '2');
  assert.match(first.stdout, /held-out text +perplexity before +perplexity after/);
  assert.match(first.stdout, /^general +\d+\.\d +\d+\.\d /m);
  assert.match(first.stdout, /^adapted, extended \+ FVT +\d\.\d{3} /m);
  assert.match(first.stdout, /demo finished in \d+\.\d min/);
  for (const f of ['report.md', 'export/bert-mini-medical/config.json', 'compare/compare.md']) {
    assert.ok(fs.existsSync(path.join(out, f)), `${f} is missing`);
  }
  const general = trainedAt('general-model', 3);
  const resizedAt = () => fs.statSync(path.join(out, 'general-model-extended-fvt', 'config.json')).mtimeMs;
  const resized = resizedAt();

  // Other adaptation steps: the pretrained model stays, both adapted runs are trained again.
  const second = demo('--pretrain-steps', '3', '--adapt-steps', '3');
  assert.match(second.stderr, /reusing the tokenizer in /);
  assert.match(second.stderr, /reusing the pretrained model in .*checkpoint-3\n/);
  assert.match(second.stderr, /the adapted model in .*medical-model was trained with --steps 2 \(now 3\): training it again\n/);
  assert.match(second.stderr, /the adapted extended model in .*medical-model-extended-fvt was trained with --steps 2 \(now 3\): training it again\n/);
  assert.equal(trainedAt('general-model', 3), general);
  assert.ok(!fs.existsSync(path.join(out, 'medical-model', 'checkpoint-2')), 'the 2-step adapted run is still there');
  assert.ok(fs.existsSync(path.join(out, 'medical-model', 'checkpoint-3', 'trainer_state.json')));

  // Other pretraining steps: the pretrained model is trained again, and every model made from it.
  const extendedBefore = trainedAt('medical-model-extended-fvt', 3);
  const third = demo('--pretrain-steps', '4', '--adapt-steps', '3');
  assert.match(third.stderr, /the pretrained model in .*general-model was trained with --steps 3 \(now 4\): training it again\n/);
  assert.doesNotMatch(third.stderr, /reusing the adapted model/);
  assert.ok(!fs.existsSync(path.join(out, 'general-model', 'checkpoint-3')));
  assert.ok(trainedAt('medical-model-extended-fvt', 3) > extendedBefore, 'the extended model was not adapted again from the new pretrained model');
  assert.ok(resizedAt() > resized, 'the resized model was not made again from the new pretrained model');
});
