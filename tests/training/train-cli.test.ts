// `mlm train` / `mlm pretrain` / `mlm finetune` from the command line: the --json result shape,
// adapting a checkpoint, a NaN loss (exit 1, the step and the last good checkpoint named), and bad
// input (exit 2, one line saying what is wrong and what to do).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { makeTinyCheckpoint } from './tiny-checkpoint.ts';
import { brownDocuments, MLM, preparedFixture, ROOT, writeTinyConfig, type PreparedFixture } from './train-helpers.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-train-cli-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

let fixture: Promise<PreparedFixture> | null = null;
const data = () => (fixture ??= preparedFixture(path.join(tmp, 'fx'), brownDocuments(60_000), { vocabSize: 300, seqLen: 32 }));
const config = writeTinyConfig(path.join(tmp, 'tiny.json'), { max_position_embeddings: 32 });

function mlm(args: string[], env: NodeJS.ProcessEnv = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MLM, ...args], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, MLM_BACKEND: 'wasm', ...env } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Exit 2 and exactly one `mlm: error:` line matching `re`. */
/** Exit 2, one error line, nothing on stdout; `alone`: refused before the backend line, so the error is all of stderr. */
function badInput(args: string[], re: RegExp, alone = false): void {
  const r = mlm(args);
  assert.equal(r.status, 2, `exit ${r.status}: ${r.stderr}`);
  const errors = r.stderr.split('\n').filter((l) => l.startsWith('mlm: error:'));
  assert.equal(errors.length, 1, r.stderr);
  assert.match(errors[0], re);
  assert.equal(r.stdout, '');
  if (alone) assert.equal(r.stderr, `${errors[0]}\n`);
}

test('pretrain --json prints the documented result (docs/formats.md); finetune adapts the checkpoint it wrote', async () => {
  const fx = await data();
  const out = path.join(tmp, 'pre');
  const r = mlm(['pretrain', '--config', config, '--data', fx.dataDir, '--out', out, '--steps', '4', '--batch-size', '8', '--json', '--no-progress']);
  assert.equal(r.status, 0, r.stderr);
  const doc = JSON.parse(r.stdout);
  // The documented keys (docs/formats.md) first, then transformers' other names and the run's outcome.
  assert.deepEqual(Object.keys(doc), [
    'step', 'train_loss', 'eval_loss', 'eval_perplexity', 'tokens_per_second', 'checkpoint',
    'epoch', 'eval_accuracy', 'train_runtime', 'train_samples_per_second', 'train_steps_per_second', 'model', 'best_model_checkpoint', 'stopped_early_at',
  ]);
  assert.equal(doc.step, 4);
  assert.equal(doc.checkpoint, path.join(out, 'checkpoint-4'));
  assert.equal(doc.model, out);
  assert.equal(doc.eval_perplexity, Math.exp(doc.eval_loss));
  // The same names and figures in eval_results.json and train_results.json.
  const evalResults = JSON.parse(fs.readFileSync(path.join(out, 'eval_results.json'), 'utf8'));
  for (const k of ['eval_loss', 'eval_perplexity', 'eval_accuracy', 'epoch']) assert.equal(evalResults[k], doc[k], k);
  assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'train_results.json'), 'utf8')).train_loss, doc.train_loss);
  // The run folder's files with the keys docs/formats.md lists ("The run folder", "Checkpoints").
  const read = (f: string) => JSON.parse(fs.readFileSync(path.join(out, f), 'utf8'));
  const trainResults = read('train_results.json');
  assert.deepEqual(Object.keys(trainResults), ['epoch', 'train_loss', 'train_runtime', 'train_samples_per_second', 'train_steps_per_second', 'tokens_per_second']);
  assert.deepEqual(Object.keys(evalResults), ['epoch', 'eval_loss', 'eval_perplexity', 'perplexity', 'eval_accuracy', 'eval_masked_tokens', 'eval_step']);
  assert.deepEqual(read('all_results.json'), { ...trainResults, ...evalResults });
  assert.deepEqual(Object.keys(read('run.json')), [
    'args', 'model', 'base_model', 'config_vocab_size', 'total_steps', 'resumed_from', 'start_step', 'backend', 'device', 'mlmkit_version', 'command_line',
  ]);
  const lines = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const trainKeys = ['step', 'epoch', 'loss', 'lr', 'grad_norm', 'tokens_per_second', 'masked_tokens', 'tokens'];
  const evalKeys = ['step', 'epoch', 'eval_loss', 'eval_perplexity', 'eval_accuracy', 'eval_masked_tokens'];
  for (const l of lines) assert.deepEqual(Object.keys(l), 'eval_loss' in l ? evalKeys : trainKeys);
  assert.equal(lines.at(-1).step, 4);
  assert.deepEqual(Object.keys(read('checkpoint-4/trainer_state.json')), [
    'format', 'version', 'global_step', 'epoch', 'max_steps', 'data_state', 'best_metric', 'best_step', 'best_model_checkpoint', 'log_history',
    'log_window', 'totals', 'args', 'data', 'mlmkit_version', 'backend', 'device', 'loss_scale', 'base_model', 'wall_seconds',
  ]);
  assert.match(r.stderr, /note: from the data's tokenizer: vocab_size 30522 -> \d+/);

  // --from RUN: the run folder's final model (its root), as with Hugging Face's output_dir.
  const adapted = mlm(['finetune', '--from', out, '--data', fx.dataDir, '--out', path.join(tmp, 'adapt'), '--steps', '2', '--batch-size', '8', '--lr', '5e-5', '--json', '--no-progress']);
  assert.equal(adapted.status, 0, adapted.stderr);
  assert.equal(JSON.parse(adapted.stdout).step, 2);
  assert.match(fs.readFileSync(path.join(tmp, 'adapt', 'report.md'), 'utf8'), /adapted from .*pre,/);
  // `mlm evaluate --model RUN` reads the same model: its loss equals training's final evaluation (same data, seed and batches).
  const ev = mlm(['evaluate', '--model', out, '--data', fx.dataDir, '--batch-size', '8', '--json', '--no-progress']);
  assert.equal(ev.status, 0, ev.stderr);
  assert.equal(JSON.parse(ev.stdout).eval_loss, doc.eval_loss);
});

test('a NaN or exploding loss stops the run: exit 1, the step and the last good checkpoint named', async () => {
  const fx = await data();
  const out = path.join(tmp, 'nan');
  const r = mlm(['train', '--config', config, '--data', fx.dataDir, '--out', out, '--steps', '20', '--batch-size', '8', '--lr', '1e30', '--warmup', '0', '--save-every', '1', '--no-progress']);
  assert.equal(r.status, 1, r.stderr);
  const line = r.stderr.split('\n').find((l) => l.startsWith('mlm: failed:'));
  const m = /^mlm: failed: (loss|gradient norm) (became NaN|became Infinity|became -Infinity|exploded to \S+ \(above [\d.]+ = 3 x ln\(\d+\), 3 times the loss of a uniform guess\)) at step (\d+); the last good checkpoint is (\S+); lower --lr or check the data$/.exec(line ?? '');
  assert.ok(m, r.stderr);
  const step = Number(m[3]);
  assert.equal(m[4], path.join(out, `checkpoint-${step - 1}`));
  assert.ok(fs.existsSync(path.join(m[4], 'trainer_state.json')));
  assert.equal(fs.existsSync(path.join(out, `checkpoint-${step}`)), false);
});

test('bad input: exit 2 with one line', async () => {
  const fx = await data();
  const out = (name: string) => path.join(tmp, name);
  badInput(['train', '--config', config, '--out', out('a')], /Missing required argument: data/);
  badInput(['train', '--config', config, '--data', path.join(tmp, 'missing'), '--out', out('b')], /--data .*missing not found; prepare it with `mlm prepare/);
  badInput(['train', '--config', config, '--data', fx.dataDir, '--out', out('c'), '--steps', '5', '--epochs', '1'], /give either --steps or --epochs, not both/);
  badInput(['pretrain', '--data', fx.dataDir, '--out', out('d')], /mlm pretrain needs --config FILE/);
  badInput(['finetune', '--data', fx.dataDir, '--out', out('e')], /mlm finetune needs --from MODEL/);
  badInput(['train', '--config', config, '--data', fx.dataDir, '--out', out('h'), '--mlm-probability', '1'], /--mlm-probability must be in \(0, 1\), got 1$/, true);
  badInput(['train', '--config', config, '--data', fx.dataDir, '--out', out('i'), '--batch-size', '0'], /--batch-size must be an integer >= 1, got 0$/, true);
  badInput(['pretrain', '--config', out('absent.json'), '--data', fx.dataDir, '--out', out('j')], /--config .*absent\.json not found; give a model config\.json/, true);
  fs.writeFileSync(out('broken-config.json'), '{"hidden_size": ');
  badInput(['pretrain', '--config', out('broken-config.json'), '--data', fx.dataDir, '--out', out('k')], /broken-config\.json is not valid JSON/, true);
  badInput(['evaluate', '--model', out('no-model'), '--data', fx.dataDir, '--mlm-probability', '0'], /--mlm-probability must be in \(0, 1\), got 0$/);
  // A held-out set and a held-out share: one of the two was ignored without a word.
  badInput(['prepare', '--corpus', fx.dataDir, '--out', out('s'), '--tokenizer', fx.tokenizerDir, '--validation', config, '--validation-split', '0.1'], /^mlm: error: give --validation \(a held-out set\) or --validation-split \(a share of the corpus held out\), not both$/, true);
  assert.equal(fs.existsSync(out('s')), false);
  // --pseudo masks every token in turn: the masking options would be ignored without a word.
  badInput(['evaluate', '--model', out('no-model'), '--data', fx.dataDir, '--pseudo', '--whole-word-mask'], /^mlm: error: --pseudo masks every token in turn, so --whole-word-mask does not apply to it; leave it out, or leave out --pseudo$/, true);
  badInput(['evaluate', '--model', out('no-model'), '--data', fx.dataDir, '--pseudo', '--mlm-probability', '0.3'], /^mlm: error: --pseudo masks every token in turn, so --mlm-probability does not apply to it/, true);
  badInput(['bench', '--config', 'bert-tiny', '--backend', 'wasm', '--steps', '1'], /--steps must be an integer >= 2, got 1$/);
  // Seeds are 32-bit words: 2**32 would silently be the run of seed 0.
  badInput(['train', '--config', config, '--data', fx.dataDir, '--out', out('q'), '--seed', '1e30'], /^mlm: error: --seed must be an integer from 0 to 4294967295 \(seeds are 32-bit\), got 1e\+30$/, true);
  badInput(['prepare', '--corpus', fx.dataDir, '--out', out('r'), '--tokenizer', fx.tokenizerDir, '--seed', '-1'], /^mlm: error: --seed must be an integer from 0 to 4294967295 \(seeds are 32-bit\), got -1$/, true);
  badInput(['bench', '--config', 'bert-tiny', '--backend', 'wasm', '--seed', '4294967296'], /^mlm: error: --seed must be an integer from 0 to 4294967295/, true);
  assert.equal(fs.existsSync(out('q')) || fs.existsSync(out('r')), false);
  badInput(['bench', '--config', 'bert-tiny', '--backend', 'wasm', '--seq-len', '1024'], /^mlm: error: --seq-len 1024 is longer than the model's 512 positions; use --seq-len 512 or less$/, true);
  // Empty values (an unset shell variable): yargs would read 0 for a number and '' (the working
  // folder) for a path.
  badInput(['train', '--config', config, '--data', fx.dataDir, '--out', out('l'), '--lr', ''], /^mlm: error: --lr was given an empty value; give a value or leave the option out$/, true);
  badInput(['train', '--config', config, '--data', fx.dataDir, '--out=', '--steps', '1'], /^mlm: error: --out was given an empty value/, true);
  badInput(['prepare', '--corpus', fx.dataDir, '--out', out('m'), '--tokenizer', fx.tokenizerDir, '--validation-split', ' '], /^mlm: error: --validation-split was given an empty value/, true);
  badInput(['evaluate', '--model', out('no-model'), '--data', 'a', ''], /^mlm: error: argument 6 is empty; remove it or give a value/, true);
  assert.equal(fs.existsSync(out('l')), false);
  // Left without a value (the last word of the line, or followed by another option), or given twice
  // (yargs makes a list of it, which the commands took for a path).
  badInput(['train', '--config', config, '--data', fx.dataDir, '--steps', '1', '--out'], /^mlm: error: --out was given no value; give a value or leave the option out$/, true);
  badInput(['train', '--config', config, '--data', fx.dataDir, '--out', out('n'), '--steps', '--lr', '1e-3'], /^mlm: error: --steps was given no value/, true);
  badInput(['train', '--config', config, '--data', fx.dataDir, '--out', out('n'), '--schedule'], /^mlm: error: --schedule was given no value/, true);
  badInput(['train', '--config', config, '--data', fx.dataDir, '--out', out('n'), '--out', out('o')], /^mlm: error: --out was given 2 times \(.*n, .*o\); give it once$/, true);
  badInput(['train', '--config', config, '--data', fx.dataDir, '--out', out('n'), '--batch-size', '4', '--batchSize', '8'], /^mlm: error: --batch-size was given 2 times \(4, 8\); give it once$/, true);
  badInput(['evaluate', '--model', out('no-model'), '--data'], /^mlm: error: --data was given no value/, true);
  assert.equal(fs.existsSync(out('n')), false);
  badInput(['serve', '--model', out('no-model'), '--port', '70000'], /^mlm: error: --port must be at most 65535, got 70000$/, true);
  // A model that fails to export for serving leaves no temporary export behind.
  const serveTmp = out('serve-tmp');
  fs.mkdirSync(out('not-a-model'));
  fs.mkdirSync(serveTmp);
  const served = mlm(['serve', '--model', out('not-a-model')], { TMPDIR: serveTmp });
  assert.equal(served.status, 2, served.stderr);
  assert.match(served.stderr, /^mlm: error: .*not-a-model has no config\.json/);
  assert.deepEqual(fs.readdirSync(serveTmp).filter((e) => e.startsWith('mlmkit-serve-')), []);
  badInput(['train', '--config', config, '--data', fx.dataDir, '--out', out('p'), '--steps', '1', '--resume', config], /^mlm: error: --resume .*tiny\.json is a file; give the checkpoint-STEP folder that holds it \(or the run folder\)$/);

  const unrelated = out('unrelated');
  fs.mkdirSync(unrelated);
  fs.writeFileSync(path.join(unrelated, 'thesis.tex'), '');
  badInput(['train', '--config', config, '--data', fx.dataDir, '--out', unrelated, '--steps', '1'], /--out .*unrelated holds files that are not from an mlm train run \(thesis\.tex\); choose an empty or new folder/);

  // A model with another tokenizer than the data's.
  const other = await makeTinyCheckpoint(out('other-model'));
  badInput(['finetune', '--from', other.dir, '--data', fx.dataDir, '--out', out('f'), '--steps', '1'],
    /the data in .* was prepared with tokenizer .* \(sha256 [0-9a-f]{12}\) but the model .*other-model uses .* \(sha256 [0-9a-f]{12}\); prepare the data with --tokenizer MODEL_DIR/);

  // Data whose tokenizer folder is gone.
  const moved = await preparedFixture(out('moved'), brownDocuments(20_000), { vocabSize: 200, seqLen: 32 });
  fs.rmSync(moved.tokenizerDir, { recursive: true });
  badInput(['pretrain', '--config', config, '--data', moved.dataDir, '--out', out('g'), '--steps', '1'],
    /the data in .* was prepared with the tokenizer at .*tok, which is not there any more; put it back, or prepare the data again/);
});

test('--config-file: option values from a JSON or YAML file (kebab-case or camelCase; relative paths from its folder), flags override it; unknown keys and wrong types are exit 2', async () => {
  const fx = await data();
  const dir = path.join(tmp, 'cfg');
  fs.mkdirSync(dir);
  fs.copyFileSync(config, path.join(dir, 'model.json'));
  const file = path.join(dir, 'run.json');
  fs.writeFileSync(file, JSON.stringify({
    config: 'model.json', data: path.relative(dir, fx.dataDir), out: 'runs/a', steps: 3, batchSize: 8, 'eval-every': 0, lr: 0.001, progress: false, json: true,
  }));
  const r = mlm(['pretrain', '--config-file', file, '--steps', '2']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).step, 2, 'the flag overrides the file');
  const run = JSON.parse(fs.readFileSync(path.join(dir, 'runs/a/run.json'), 'utf8'));
  assert.equal(run.args.batch_size, 8);
  assert.equal(run.args.lr, 0.001);
  assert.equal(run.args.config, path.join(dir, 'model.json'));
  assert.equal(run.args.data, fx.dataDir);
  assert.match(run.command_line, /^mlm pretrain --config-file .*run\.json --steps 2$/);

  // The same options as YAML (a .yaml or .yml file).
  fs.writeFileSync(path.join(dir, 'run.yaml'), [
    '# a run_mlm.py-style file of arguments', 'config: model.json', `data: ${JSON.stringify(path.relative(dir, fx.dataDir))}`,
    'out: runs/b', 'steps: 2', 'batchSize: 8', 'eval-every: 0', 'lr: 0.002', 'progress: false', 'json: true', '',
  ].join('\n'));
  const y = mlm(['pretrain', '--config-file', path.join(dir, 'run.yaml')]);
  assert.equal(y.status, 0, y.stderr);
  const yrun = JSON.parse(fs.readFileSync(path.join(dir, 'runs/b/run.json'), 'utf8'));
  assert.equal(yrun.args.batch_size, 8);
  assert.equal(yrun.args.lr, 0.002);
  assert.equal(yrun.args.config, path.join(dir, 'model.json'));

  const write = (name: string, doc: unknown) => {
    fs.writeFileSync(path.join(dir, name), typeof doc === 'string' ? doc : JSON.stringify(doc));
    return path.join(dir, name);
  };
  badInput(['pretrain', '--config-file', write('unknown.json', { data: 'x', out: 'y', bogus: 1 })],
    /^mlm: error: --config-file .*unknown\.json: key "bogus" is not an option of mlm pretrain; use its option names \(kebab-case like "batch-size" or camelCase like "batchSize"\), see mlm pretrain --help$/);
  badInput(['train', '--config-file', write('type.json', { steps: '3' })], /^mlm: error: --config-file .*type\.json: key "steps" must be a number, got "3"$/);
  badInput(['train', '--config-file', write('bool.json', { wholeWordMask: 'yes' })], /key "wholeWordMask" must be true or false, got "yes"$/);
  badInput(['train', '--config-file', write('choice.json', { schedule: 'cubic' })], /key "schedule" must be one of "linear", "cosine".*, got "cubic"$/);
  badInput(['train', '--config-file', write('twice.json', { 'batch-size': 8, batchSize: 4 })], /key "batchSize" repeats "batch-size"; give each option once$/);
  // The same key twice in JSON: JSON.parse would keep the last one silently.
  badInput(['train', '--config-file', write('dup.json', '{"steps": 3,\n "steps": 4}')], /^mlm: error: --config-file .*dup\.json gives a key twice \(line 2\); give each option once$/, true);
  badInput(['train', '--config-file', write('list.json', '[1, 2]')], /must hold one JSON object of option values/);
  badInput(['train', '--config-file', write('broken.json', '{"steps": ')], /--config-file .*broken\.json is not valid JSON/);
  badInput(['train', '--config-file', write('bad.yaml', 'steps: [3\n')], /--config-file .*bad\.yaml is not valid YAML \(.+\); write the options as one YAML mapping$/);
  badInput(['train', '--config-file', write('dup.yml', 'steps: 3\nsteps: 4\n')], /--config-file .*dup\.yml is not valid YAML \(.*[Uu]nique.*\)/);
  badInput(['train', '--config-file', write('list.yaml', '- 1\n- 2\n')], /must hold one YAML mapping of option values/);
  badInput(['train', '--config-file', write('ytype.yaml', 'steps: "3"\n')], /key "steps" must be a number, got "3"$/);
  // What the YAML package only warns about (an unknown tag, another YAML version) is refused in one
  // line, with no warning of Node's on stderr; a UTF-16 file is named as such.
  badInput(['train', '--config-file', write('tag.yaml', 'lr: !!float 1\n')], /^mlm: error: --config-file .*tag\.yaml is not valid YAML \(Unresolved tag: .* at line 1, column 5\); write the options as one YAML mapping$/, true);
  badInput(['train', '--config-file', write('version.yaml', '%YAML 1.3\n---\nlr: 1\n')], /is not valid YAML \(Unsupported YAML version 1\.3 at line 1, column 7\)/, true);
  fs.writeFileSync(path.join(dir, 'utf16.json'), Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('{"steps": 3}', 'utf16le')]));
  badInput(['train', '--config-file', path.join(dir, 'utf16.json')], /^mlm: error: --config-file .*utf16\.json is UTF-16 text; save it as UTF-8$/, true);
  badInput(['train', '--config-file', path.join(dir, 'absent.json')], /--config-file .*absent\.json not found/);
  badInput(['evaluate', '--config-file', write('eval.json', { model: 'm', data: 'd', steps: 3 })], /key "steps" is not an option of mlm evaluate/);
  // An empty path would resolve to the working folder.
  badInput(['train', '--config-file', write('empty.json', { config: 'model.json', data: 'd', out: '' })], /key "out" is empty; give a value or leave the key out$/, true);
  badInput(['evaluate', '--config-file', write('blank.json', { model: 'm', data: ['a', ' '] })], /key "data" holds an empty string; remove it or give a value$/, true);
});
