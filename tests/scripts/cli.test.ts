// The `mlm` command line's own checks (scripts/command-line.ts) before a command runs: words after `--`,
// option values, option and command names. Each case runs main() in this process and reads its
// exit code and its one error line; every case here is refused before any model is read.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import yargs, { type CommandModule } from 'yargs';
import { main } from '../../scripts/cli.ts';
import { joinNegativeValues } from '../../scripts/command-line.ts';
import { nearestName } from '../../scripts/script-args.ts';
import { readOptionsFile } from '../../scripts/config-file.ts';
import { benchCommand } from '../../scripts/commands/bench.ts';
import { compareCommand } from '../../scripts/commands/compare.ts';
import { downloadCommand } from '../../scripts/commands/download.ts';
import { evaluateCommand } from '../../scripts/commands/evaluate.ts';
import { exportCommand } from '../../scripts/commands/export.ts';
import { fillMaskCommand } from '../../scripts/commands/fill-mask.ts';
import { modelCommand } from '../../scripts/commands/model.ts';
import { prepareCommand } from '../../scripts/commands/prepare.ts';
import { pushCommand } from '../../scripts/commands/push.ts';
import { serveCommand } from '../../scripts/commands/serve.ts';
import { tokenizerCommand } from '../../scripts/commands/tokenizer.ts';
import { finetuneCommand, pretrainCommand, trainCommand } from '../../scripts/commands/train.ts';
import { makeTinyCheckpoint, ROOT } from '../training/tiny-checkpoint.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-cli-test-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const tiny = makeTinyCheckpoint(path.join(tmp, 'tiny'));

/** Runs `mlm ARGS` in this process: its exit code and what it wrote on stderr. */
async function mlm(args: string[]): Promise<{ code: number; stderr: string }> {
  const write = process.stderr.write;
  let stderr = '';
  process.stderr.write = ((chunk: string | Uint8Array) => {
    stderr += String(chunk);
    return true;
  }) as typeof process.stderr.write;
  try {
    await main(args);
  } finally {
    process.stderr.write = write;
  }
  const code = Number(process.exitCode ?? 0);
  process.exitCode = undefined;
  return { code, stderr };
}

/** Exit 2 and one error line, all of stderr, matching `re`. */
async function refused(args: string[], re: RegExp): Promise<void> {
  const r = await mlm(args);
  assert.equal(r.code, 2, `mlm ${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
  assert.match(r.stderr, /^mlm: error: [^\n]+\n$/, r.stderr);
  assert.match(r.stderr, re);
}

test('words after -- are refused by a command that takes no text, not dropped', async () => {
  const { dir } = await tiny;
  const out = path.join(tmp, 'e1');
  await refused(['export', '--model', dir, '--out', out, '--json', '--', 'junk', '--format', 'onnx'],
    /^mlm: error: unknown argument "junk" after --: mlm export takes no text; give its options before --, see mlm export --help\n$/);
  assert.equal(fs.existsSync(out), false);
  await refused(['tokenizer', 'train', '--corpus', 'c.txt', '--vocab-size', '50', '--out', out, '--', 'x'], /unknown argument "x" after --: mlm tokenizer train takes no text/);
});

test('after --, fill-mask reads text: words that look like options are not checked as options', async () => {
  const { dir } = await tiny;
  // The text is read as text: the model's tokenizer refuses it for having no mask, not --top-k for
  // having no value.
  await refused(['fill-mask', '--model', dir, '--backend', 'cpu', '--', 'a sentence without a mask', '--top-k'], /no \[MASK\]|mask token/i);
  // An empty word after -- is text too: the command asks for the text, not for an option's value.
  await refused(['fill-mask', '--model', dir, '--backend', 'cpu', '--', ''], /^mlm: error: give the text to fill/);
});

test('--no-<option> of an option that takes a value is refused in one line; booleans keep their --no- form', async () => {
  const { dir } = await tiny;
  const out = path.join(tmp, 'e2');
  await refused(['export', '--model', dir, '--no-out'], /^mlm: error: --out takes a value, so --no-out is not an option; give --out a value\n$/);
  await refused(['export', '--model', dir, '--out', out, '--no-format'], /^mlm: error: --format takes one of hf, tfjs, onnx, so --no-format is not an option; give --format a value or leave it out\n$/);
  await refused(['prepare', '--no-corpus', '--out', out, '--tokenizer', dir], /^mlm: error: --corpus takes one or more values, so --no-corpus is not an option/);
  await refused(['fill-mask', '--model', dir, '[MASK] is', '--no-targets'], /^mlm: error: --targets takes one or more values, so --no-targets is not an option; give --targets a value or leave it out\n$/);
  await refused(['train', '--data', out, '--out', out, '--no-steps'], /^mlm: error: --steps takes a number, so --no-steps is not an option/);
  await refused(['train', '--data', out, '--out', out, '--no-lr'], /^mlm: error: --lr takes a number, so --no-lr is not an option/);
  // --no-json is a boolean's negation: the command goes on to its own checks.
  await refused(['train', '--data', path.join(tmp, 'absent'), '--out', out, '--no-json', '--no-progress'], /^mlm: error: --data .*absent not found/);
  assert.equal(fs.existsSync(out), false);
});

test('a number option takes a decimal number as typed: the message echoes it; 0x10, 0b1, 1_000 and Infinity are refused', async () => {
  const { dir } = await tiny;
  const out = path.join(tmp, 'n');
  const decimal = (flag: string, typed: string) => new RegExp(`^mlm: error: ${flag} takes a decimal number \\(like 20, 0\\.5 or 1e-3\\), got '${typed}'\n$`);
  await refused(['fill-mask', '--model', dir, '--top-k', '3abc', '[MASK] is'], decimal('--top-k', '3abc'));
  await refused(['train', '--data', out, '--out', out, '--steps', '1_000'], decimal('--steps', '1_000'));
  await refused(['tokenizer', 'train', '--corpus', 'c.txt', '--out', out, '--vocab-size', '8k'], decimal('--vocab-size', '8k'));
  await refused(['train', '--data', out, '--out', out, '--lr=1e-3x'], decimal('--lr', '1e-3x'));
  await refused(['train', '--data', out, '--out', out, '--steps', '0x10'], decimal('--steps', '0x10'));
  await refused(['train', '--data', out, '--out', out, '--steps=0b1'], decimal('--steps', '0b1'));
  await refused(['fill-mask', '--model', dir, '--topK', 'Infinity', '[MASK] is'], decimal('--top-k', 'Infinity'));
  // A switch given a value other than true or false (yargs reads it as false).
  await refused(['train', '--data', out, '--out', out, '--json=yes'], /^mlm: error: --json is a switch: give --json or --no-json, not --json=yes\n$/);
});

test('a negative number in exponent form reaches its option, whose own check refuses it', async () => {
  assert.deepEqual(joinNegativeValues(['train', '--lr', '-1e-3', '--seed', '-1', '--warmup', '-2.', '--', '--x', '-1e3']),
    ['train', '--lr=-1e-3', '--seed', '-1', '--warmup=-2.', '--', '--x', '-1e3']);
  const { dir } = await tiny;
  const out = path.join(tmp, 'neg');
  // Not "Unknown arguments: 1, e": --lr's own range check.
  await refused(['train', '--config', path.join(dir, 'config.json'), '--data', dir, '--out', out, '--lr', '-1e-3'], /^mlm: error: --lr must be a positive number, got -0\.001\n$/);
  assert.equal(fs.existsSync(out), false);
});

test('an unknown option is named with its dashes and the nearest option of the command', async () => {
  assert.equal(nearestName('topk', ['top-k', 'targets', 'model']), 'top-k');
  assert.equal(nearestName('stpes', ['steps', 'seed']), 'steps');
  assert.equal(nearestName('colour', ['steps', 'seed']), undefined);
  const { dir } = await tiny;
  const out = path.join(tmp, 'u');
  await refused(['fill-mask', '--model', dir, '--topk', '3', '[MASK] is'], /^mlm: error: unknown option --topk \(did you mean --top-k\?\); see mlm fill-mask --help\n$/);
  await refused(['train', '--data', out, '--out', out, '--stpes', '3'], /^mlm: error: unknown option --stpes \(did you mean --steps\?\); see mlm train --help\n$/);
  await refused(['train', '--data', out, '--out', out, '--no-progres'], /^mlm: error: unknown option --no-progres \(did you mean --no-progress\?\)/);
  // yargs negates a switch only as --no-progress; --noProgress would reach it as an unknown word.
  await refused(['train', '--data', out, '--out', out, '--noProgress'], /^mlm: error: unknown option --noProgress \(did you mean --no-progress\?\); see mlm train --help\n$/);
  await refused(['export', '--model', dir, '--out', out, '--colour'], /^mlm: error: unknown option --colour; see mlm export --help\n$/);
  await refused(['fill-mask', '--model', dir, '-k', '3', '[MASK] is'], /^mlm: error: unknown option -k; see mlm fill-mask --help\n$/);
  // A text that starts with a dash goes after --.
  await refused(['fill-mask', '--model', dir, '- [MASK] with a dash'], /^mlm: error: "- \[MASK\] with a dash" starts with - and so reads as an option; put a text that starts with - after --: mlm fill-mask \[options\] -- "- \[MASK\] with a dash"\n$/);
});

test('an unknown command is named with the nearest one; a command group without its command says which it has', async () => {
  await refused(['tokenizer', 'trian'], /^mlm: error: unknown tokenizer command "trian" \(did you mean train\?\); the tokenizer commands: train, extend\n$/);
  await refused(['model', 'rsize'], /^mlm: error: unknown model command "rsize" \(did you mean resize\?\); the model commands: resize\n$/);
  await refused(['trian'], /^mlm: error: unknown command "trian" \(did you mean train\?\); `mlm --help` lists the commands\n$/);
  await refused(['tokenizer'], /^mlm: error: Name a tokenizer command: train, extend\n$/);
  await refused(['model'], /^mlm: error: Name a model command: resize\n$/);
});

test('mlm --version prints the package version, exit 0', () => {
  // yargs ends the process after printing it: a child process.
  const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts/mlm.mjs'), '--version'], { encoding: 'utf8' });
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, `${pkg.version}\n`);
});

test('--config-file: given twice, .inf, a config-file key, YAML merge keys', async () => {
  const write = (name: string, text: string) => {
    fs.writeFileSync(path.join(tmp, name), text);
    return path.join(tmp, name);
  };
  await refused(['evaluate', '--config-file', write('a.json', '{}'), '--config-file=b.yaml'], /^mlm: error: --config-file was given 2 times \(.*a\.json, b\.yaml\); give it once\n$/);
  const known = { key: { seed: true, steps: true, 'batch-size': true, 'config-file': true }, string: ['config-file'], number: ['seed', 'steps', 'batch-size'], boolean: [], array: [], choices: {} };
  assert.throws(() => readOptionsFile(write('inf.yaml', 'seed: .inf\n'), known, 'train'), /key "seed" must be a finite number, got \.inf \(Infinity\)$/);
  assert.throws(() => readOptionsFile(write('nan.yaml', 'seed: .nan\n'), known, 'train'), /key "seed" must be a finite number, got \.nan \(NaN\)$/);
  assert.throws(() => readOptionsFile(write('nested.yaml', 'config-file: other.yaml\n'), known, 'train'),
    /key "config-file": a config file cannot name another one; put that file's options in this one$/);
  // A merge key takes the options of a mapping anchored under an x- key (which is no option).
  const merged = write('merge.yaml', 'x-base: &base\n  batch-size: 8\n  steps: 5\n<<: *base\nsteps: 3\n');
  assert.deepEqual(readOptionsFile(merged, known, 'train'), { 'batch-size': 8, steps: 3 });
});

/** The parts of a yargs instance the next test reads (not in yargs' typings). */
interface Built {
  getOptions(): { key: Record<string, unknown> };
  getInternalMethods(): {
    getUsageInstance(): { getDescriptions(): Record<string, unknown> };
    getCommandInstance(): { handlers: Record<string, { builder: (y: unknown) => unknown }> };
  };
}

test('every command takes --progress / --no-progress, and every option has a description', () => {
  const top: Record<string, CommandModule> = {
    prepare: prepareCommand, train: trainCommand, pretrain: pretrainCommand, finetune: finetuneCommand, evaluate: evaluateCommand,
    'fill-mask': fillMaskCommand, export: exportCommand, serve: serveCommand, download: downloadCommand, push: pushCommand,
    bench: benchCommand, compare: compareCommand,
  } as unknown as Record<string, CommandModule>;
  const build = (builder: unknown): Built => {
    const y = yargs([]) as unknown as Built;
    (builder as (y: unknown) => unknown)(y);
    return y;
  };
  const leaves: [string, unknown][] = Object.entries(top).map(([name, c]) => [name, c.builder]);
  for (const [group, c] of [['tokenizer', tokenizerCommand], ['model', modelCommand]] as const) {
    const handlers = build(c.builder).getInternalMethods().getCommandInstance().handlers;
    for (const [name, h] of Object.entries(handlers)) leaves.push([`${group} ${name}`, h.builder]);
  }
  assert.equal(leaves.length, 15);
  for (const [name, builder] of leaves) {
    const y = build(builder);
    assert.ok('progress' in y.getOptions().key, `mlm ${name} has no --progress`);
    const described = y.getInternalMethods().getUsageInstance().getDescriptions();
    const bare = Object.keys(y.getOptions().key).filter((k) => !described[k]);
    assert.deepEqual(bare, [], `mlm ${name}: options without a description`);
  }
});
