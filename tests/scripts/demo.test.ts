// The demo (`npm run demo`, scripts/demo.ts) end to end, with a few steps instead of its recipe's
// thousands: every stage runs and the outputs are there; a second run reuses what matches its
// recipe, trains again what was made with other steps, and with a new pretraining everything made
// from the old one; --fresh makes everything again and removes nothing but the demo's outputs; a
// --out folder the demo did not make is refused before anything is written or removed.
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

function runDemo(dir: string, args: string[]) {
  return spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'scripts', 'demo.ts'),
    '--out', dir, '--backend', 'wasm', '--eval-batches', '2', '--extend-add', '20', ...args], { cwd: root, encoding: 'utf8' });
}

function demo(...args: string[]): { stdout: string; stderr: string } {
  const r = runDemo(out, args);
  assert.equal(r.status, 0, `demo ${args.join(' ')} exited ${r.status}:\n${r.stderr.slice(-3000)}`);
  return { stdout: r.stdout, stderr: r.stderr };
}

/** What the demo leaves at the top of its folder (scripts/demo.ts's demoFolder names and its marker). */
const DEMO_FOLDER = [
  '.mlmkit-demo', 'compare', 'data', 'export', 'general-model', 'general-model-extended-fvt', 'medical-model',
  'medical-model-extended-fvt', 'report.md', 'tokenizer', 'tokenizer-medical', 'tokenizer-medical.json',
];

test('--out: a folder holding anything the demo did not make, or a file, is refused with exit 2, and nothing in it is touched', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlm-demo-foreign-'));
  try {
    fs.writeFileSync(path.join(dir, 'notes.txt'), 'mine');
    fs.mkdirSync(path.join(dir, 'data'));
    fs.writeFileSync(path.join(dir, 'data', 'corpus.txt'), 'mine too');
    const r = runDemo(dir, ['--fresh']);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /^demo: --out \S+ holds files this script did not make \(no \.mlmkit-demo there\): pass a new or empty folder\n$/);
    assert.deepEqual(fs.readdirSync(dir).sort(), ['data', 'notes.txt']);
    assert.equal(fs.readFileSync(path.join(dir, 'data', 'corpus.txt'), 'utf8'), 'mine too');
    const file = runDemo(path.join(dir, 'notes.txt'), []);
    assert.equal(file.status, 2, file.stderr);
    assert.match(file.stderr, /^demo: --out \S+notes\.txt is a file, not a folder: pass a new or empty folder\n$/);
    assert.equal(fs.readFileSync(path.join(dir, 'notes.txt'), 'utf8'), 'mine');
    // --out without a value (it read as the default or as the repository itself).
    for (const extra of [['--fresh', '--out'], ['--out', '', '--fresh']]) {
      const bare = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'scripts', 'demo.ts'), '--backend', 'wasm', ...extra], { cwd: root, encoding: 'utf8' });
      assert.equal(bare.status, 2, bare.stderr);
      assert.equal(bare.stderr, 'demo: --out was given no value; give a value or leave the option out\n');
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

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
  // The extension line and the comparison table: once, in the summary.
  assert.equal((first.stdout + first.stderr).match(/^vocabulary extension: /gm)?.length, 1);
  assert.equal((first.stdout + first.stderr).match(/^adapted, extended \+ FVT /gm)?.length, 1);
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
  assert.deepEqual(fs.readdirSync(out).sort(), DEMO_FOLDER, 'the demo wrote a name --fresh does not know (demoFolder.names)');

  // --fresh: everything made again; a file of the user's in the demo's folder stays.
  fs.writeFileSync(path.join(out, 'notes.txt'), 'mine');
  const fresh = demo('--pretrain-steps', '2', '--adapt-steps', '2', '--fresh');
  assert.doesNotMatch(fresh.stderr, /reusing|training it again/);
  assert.ok(!fs.existsSync(path.join(out, 'general-model', 'checkpoint-4')), 'the old pretrained run is still there');
  assert.ok(fs.existsSync(path.join(out, 'medical-model-extended-fvt', 'checkpoint-2', 'trainer_state.json')));
  assert.equal(fs.readFileSync(path.join(out, 'notes.txt'), 'utf8'), 'mine');
  assert.deepEqual(fs.readdirSync(out).sort(), [...DEMO_FOLDER, 'notes.txt'].sort());
});
