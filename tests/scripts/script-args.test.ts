// The repository's own scripts (scripts/script-args.ts): the option reader's rules (declared
// values, numbers and switches, --name value and --name=value, --help, and one line for an unknown
// option, one given twice or without a value, a non-number, a stray word), an option left without
// its value refused in one line with exit 2 before any work, and bench-memory refusing fewer steps
// than its measure needs; lacksValue is the rule mlm's command line shares.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { lacksValue, parseScriptArgs, ScriptArgumentError, type ScriptSpec, type ScriptOption } from '../../scripts/script-args.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
// The time limit stops a script that took its arguments for a real run (a benchmark, the demo).
const script = (name: string, args: string[]) =>
  spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'scripts', name), ...args], { cwd: root, encoding: 'utf8', timeout: 60_000 });

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

const spec = {
  program: 'demo',
  usage: 'usage: demo [--steps N] [--out DIR] [--json]',
  options: {
    steps: { type: 'number', default: 200 },
    rate: { type: 'number' },
    out: { type: 'string', default: 'runs/x' },
    data: { type: 'string' },
    json: { type: 'switch' },
  },
} as const satisfies ScriptSpec<Record<string, ScriptOption>>;

/** The line parseScriptArgs refuses `argv` with. */
function refusal(argv: string[], s: ScriptSpec<Record<string, ScriptOption>> = spec): string {
  try {
    parseScriptArgs(argv, s);
  } catch (err) {
    assert.ok(err instanceof ScriptArgumentError, String(err));
    return err.message;
  }
  assert.fail(`${JSON.stringify(argv)} was accepted`);
}

test('parseScriptArgs: defaults, --name value and --name=value, numbers and switches', () => {
  const read = (argv: string[]) => {
    const r = parseScriptArgs(argv, spec);
    if (r === 'help') return assert.fail(`${JSON.stringify(argv)} read as --help`);
    return r;
  };
  const defaults = { steps: 200, rate: undefined, out: 'runs/x', data: undefined, json: false };
  assert.deepEqual(read([]), { values: defaults, operands: [] });
  const some = read(['--steps', '50', '--rate=-1e-3', '--out=a=b', '--data', 'd', '--json']);
  assert.deepEqual(some, { values: { steps: 50, rate: -0.001, out: 'a=b', data: 'd', json: true }, operands: [] });
  // The types follow the declarations: a number, a string, a string or undefined, a boolean.
  const typed: { steps: number; rate: number | undefined; out: string; data: string | undefined; json: boolean } = some.values;
  assert.equal(typed.steps, 50);
  assert.deepEqual(read(['--rate', '-0.5']), { values: { ...defaults, rate: -0.5 }, operands: [] });
});

test('parseScriptArgs: --help or -h anywhere is help, before any other check', () => {
  for (const argv of [['--help'], ['-h'], ['--steps', '3', '--help'], ['--bogus', '-h'], ['stray', '--help']]) {
    assert.equal(parseScriptArgs(argv, spec), 'help', argv.join(' '));
  }
});

test('parseScriptArgs: an unknown option names the nearest declared one and --help', () => {
  assert.equal(refusal(['--step', '5']), 'unknown option --step (did you mean --steps?); see node --import tsx scripts/demo.ts --help');
  assert.equal(refusal(['--jsno']), 'unknown option --jsno (did you mean --json?); see node --import tsx scripts/demo.ts --help');
  assert.equal(refusal(['--hepl']), 'unknown option --hepl (did you mean --help?); see node --import tsx scripts/demo.ts --help');
  assert.equal(refusal(['--zzzzzz=1']), 'unknown option --zzzzzz; see node --import tsx scripts/demo.ts --help');
  assert.equal(refusal(['-x']), 'unknown option -x; see node --import tsx scripts/demo.ts --help');
  assert.equal(refusal(['--toString']), 'unknown option --toString; see node --import tsx scripts/demo.ts --help');
});

test('parseScriptArgs: an option given twice, without a value, a non-number, a switch with a value', () => {
  assert.equal(refusal(['--steps', '1', '--steps=2']), '--steps was given twice; give it once');
  assert.equal(refusal(['--json', '--json']), '--json was given twice; give it once');
  for (const argv of [['--out'], ['--out', ''], ['--out', ' '], ['--out='], ['--out', '--json'], ['--steps', '-x']]) {
    const name = argv[0]!.replace(/=.*/, '');
    assert.equal(refusal(argv), `${name} was given no value; give a value or leave the option out`, JSON.stringify(argv));
  }
  for (const bad of ['abc', '3abc', '0x10', '1_000', 'Infinity', 'NaN']) {
    assert.equal(refusal(['--steps', bad]), `--steps must be a number, got ${JSON.stringify(bad)}`);
  }
  assert.equal(refusal(['--json=false']), '--json takes no value; give --json alone or leave it out');
});

test('parseScriptArgs: a stray word is refused; declared operands are counted', () => {
  assert.equal(refusal(['stray']), 'unexpected argument "stray" (demo takes only options); see node --import tsx scripts/demo.ts --help');
  assert.equal(refusal(['--json', 'true']), 'unexpected argument "true" (demo takes only options); see node --import tsx scripts/demo.ts --help');
  assert.equal(refusal(['-5']), 'unexpected argument "-5" (demo takes only options); see node --import tsx scripts/demo.ts --help');
  assert.equal(refusal(['--']), 'unexpected argument --; demo takes nothing after it, see node --import tsx scripts/demo.ts --help');
  const two = { ...spec, operands: { min: 1, max: 2, name: 'RESULTS_DIR' } };
  assert.deepEqual(parseScriptArgs(['a', '--json', 'b'], two), { values: { steps: 200, rate: undefined, out: 'runs/x', data: undefined, json: true }, operands: ['a', 'b'] });
  assert.equal(refusal(['a', 'b', 'c'], two), 'unexpected argument "c"; see node --import tsx scripts/demo.ts --help');
  assert.equal(refusal(['--json'], two), 'RESULTS_DIR is missing; see node --import tsx scripts/demo.ts --help');
  assert.equal(refusal(['a', ''], two), 'argument 2 is empty; remove it or give a value (an unset shell variable?)');
});

// Each script that reads its options with readScriptArgs: --help prints its usage and exits 0, an
// unknown option is one line with exit 2 (the typo's nearest option where there is one), both
// before any work. `words` are the script's leading words (gpu-report's subcommand).
for (const [name, program, typo, meant] of [
  ['demo.ts', 'demo', '--pretrain-step', '--pretrain-steps'],
  ['bench-prepare.ts', 'bench-prepare', '--kep', '--keep'],
  ['profile-step.ts', 'profile-step', '--shape', '--shapes'],
  ['bench-peer.ts', 'bench-peer', '--run', '--runs'],
  ['bench-memory.ts', 'bench-memory', '--step', '--steps'],
  ['bigram-baseline.ts', 'bigram-baseline', '--position', '--positions'],
  ['check-fp16.ts', 'check-fp16', '--iter', '--iters'],
] as const) {
  test(`${name}: --help prints the usage, exit 0; an unknown option is one line, exit 2`, () => {
    const help = script(name, ['--help']);
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, /^usage: /);
    assert.ok(help.stdout.includes(`scripts/${name}`), help.stdout);
    assert.equal(help.stderr, '');
    const typed = script(name, [typo, '5']);
    assert.equal(typed.status, 2, typed.stderr);
    const see = `see ${program === 'demo' ? 'npm run demo --' : `node --import tsx scripts/${name}`} --help`;
    assert.equal(typed.stderr, `${program}: unknown option ${typo} (did you mean ${meant}?); ${see}\n`);
    assert.equal(typed.stdout, '');
    const stray = script(name, ['stray']);
    assert.equal(stray.status, 2, stray.stderr);
    assert.equal(stray.stderr, `${program}: unexpected argument "stray" (${program} takes only options); ${see}\n`);
  });
}

test('gpu-report.ts: --help prints the usage, exit 0; a misspelt option, a missing or stray operand is one line, exit 2', () => {
  for (const args of [['--help'], ['probe', '-h'], ['summary', 'results', '--help']]) {
    const help = script('gpu-report.ts', args);
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, /^usage: node --import tsx scripts\/gpu-report.ts probe FILE/);
    assert.equal(help.stderr, '');
  }
  for (const [args, line] of [
    [['probe', 'probe.json', '--alow-software'], 'gpu-report probe: unknown option --alow-software (did you mean --allow-software?); see node --import tsx scripts/gpu-report.ts probe --help\n'],
    [['probe'], 'gpu-report probe: FILE is missing; see node --import tsx scripts/gpu-report.ts probe --help\n'],
    [['probe', 'a.json', 'b.json'], 'gpu-report probe: unexpected argument "b.json"; see node --import tsx scripts/gpu-report.ts probe --help\n'],
    [['summary', 'results', 'out', 'more'], 'gpu-report summary: unexpected argument "more"; see node --import tsx scripts/gpu-report.ts summary --help\n'],
    [['--bogus'], 'gpu-report: unknown option --bogus; see node --import tsx scripts/gpu-report.ts --help\n'],
  ] as const) {
    const r = script('gpu-report.ts', [...args]);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.equal(r.stderr, line);
  }
});
