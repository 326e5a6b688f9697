// Tests for training/push.ts, training/model-card.ts and `mlm push` / `mlm train --push-to-hub`,
// against the local imitation of the Hugging Face Hub in ./fake-hub.ts (the upload endpoints the
// real @huggingface/hub client calls). What arrives at the imitation is compared byte for byte with
// the folder pushed; the failures: no token, a rejected token (401), no write access (403), a bad
// repo name, and connections dropped in the middle of an LFS upload (retried, or failing with what
// was uploaded and then resumed by a re-run). Nothing leaves 127.0.0.1.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { InputError } from '../../common/errors.ts';
import { push } from '../../index.ts';
import { downloadModel } from '../../training/hub.ts';
import { CARD_MARKER, collectCardFacts, modelCard, type CardFacts } from '../../training/model-card.ts';
import { pushModel, type PushOptions } from '../../training/push.ts';
import { FakeHub, GOOD_TOKEN, READ_TOKEN, repoFile, repoFromFolder } from './fake-hub.ts';
import { makeTinyCheckpoint, runMlm, type TinyCheckpoint } from './tiny-checkpoint.ts';
import { brownDocuments, preparedFixture, writeTinyConfig } from './train-helpers.ts';

let tmp: string;
let hub: FakeHub;
let ck: TinyCheckpoint;
let n = 0;

/** A fresh copy of the tiny model folder (pushing writes README.md into it). */
function modelCopy(): string {
  const dir = path.join(tmp, `model-${++n}`);
  fs.cpSync(ck.dir, dir, { recursive: true });
  return dir;
}

/** A finished run folder, as training/trainer.ts leaves it, around a copy of the tiny model. */
function runFolder(opts: { from?: string; fromSource?: string } = {}): string {
  const run = modelCopy();
  const args = {
    ...(opts.from ? { from: opts.from, from_source: opts.fromSource } : { config: 'configs/bert-mini.json' }),
    data: path.join(tmp, 'no-data-here'), out: run, steps: 4, batch_size: 8, lr: 0.0005, seed: 42,
  };
  fs.writeFileSync(path.join(run, 'run.json'), JSON.stringify({ args, model: opts.fromSource ?? 'configs/bert-mini.json', mlmkit_version: '9.9.9', backend: 'wasm', device: 'cpu', command_line: 'mlm pretrain --config configs/bert-mini.json --steps 4' }));
  fs.writeFileSync(path.join(run, 'eval_results.json'), JSON.stringify({ epoch: 0.5, eval_loss: 4.25, eval_perplexity: Math.exp(4.25), perplexity: Math.exp(4.25), eval_accuracy: 0.125, eval_masked_tokens: 640, eval_step: 4 }));
  fs.writeFileSync(path.join(run, 'train_results.json'), JSON.stringify({ epoch: 0.5, train_loss: 5.5, train_runtime: 3.25, train_samples_per_second: 9.85, train_steps_per_second: 1.23, tokens_per_second: 315 }));
  fs.writeFileSync(path.join(run, 'report.md'), '# report\n![loss](loss.svg)\n');
  fs.writeFileSync(path.join(run, 'loss.svg'), '<svg xmlns="http://www.w3.org/2000/svg"></svg>\n');
  const state = path.join(run, 'checkpoint-4');
  fs.mkdirSync(state);
  fs.writeFileSync(path.join(state, 'trainer_state.json'), JSON.stringify({ global_step: 4, args, data: { dir: args.data, seq_len: 32, train_rows: 120 }, log_history: [] }));
  return run;
}

function opts(model: string, repo: string, extra: Partial<PushOptions> = {}): PushOptions {
  return { model, repo, env: { HF_ENDPOINT: hub.url, HF_TOKEN: GOOD_TOKEN, HF_HOME: path.join(tmp, 'hf-home') }, retryDelayMs: 0, ...extra };
}

/** Every file pushed equals the local one, byte for byte. */
function assertArrived(repo: string, dir: string, names: string[], branch = 'main'): void {
  const r = hub.repos.get(repo);
  assert.ok(r, `${repo} not created`);
  const files = branch === 'main' ? r.files : r.branches!.get(branch)!.files;
  for (const f of names) {
    const got = files.get(f);
    assert.ok(got, `${f} not in ${repo}@${branch}; has ${[...files.keys()].join(', ')}`);
    assert.ok(got.bytes.equals(fs.readFileSync(path.join(dir, f))), `${f} differs`);
  }
}

function oneLine(err: unknown, re: RegExp, kind: 'input' | 'failure' = 'input'): true {
  assert.ok(err instanceof Error);
  assert.equal(err instanceof InputError, kind === 'input', `${kind} expected, got ${err.constructor.name}: ${err.message}`);
  assert.match(err.message, re);
  assert.ok(!err.message.includes('\n'), err.message);
  return true;
}

const MODEL_FILES = ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.txt'];

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-push-test-'));
  ck = await makeTinyCheckpoint(path.join(tmp, 'src'), 'bert', { seed: 5 });
  hub = new FakeHub();
  await hub.start();
});

after(async () => {
  await hub?.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('model card', () => {
  const facts = (over: Partial<CardFacts> = {}): CardFacts => ({
    repo: 'org/med-mini', modelType: 'bert', hiddenSize: 32, layers: 2, heads: 2, intermediateSize: 64, vocabSize: 200, maxPositions: 64,
    parameters: 30_000, maskToken: '[MASK]', baseModel: null, baseModelLocal: null, fromScratch: true,
    evalResults: { eval_loss: 4.25, eval_perplexity: 70.105, eval_accuracy: 0.125, eval_masked_tokens: 640, eval_step: 4 },
    trainResults: { train_loss: 5.5, epoch: 0.5 }, args: { config: 'configs/bert-mini.json', steps: 4, batch_size: 8 },
    commandLine: 'mlm pretrain --config configs/bert-mini.json --steps 4', data: { dir: 'data/med', seqLen: 32, trainRows: 120 },
    step: 4, mlmkitVersion: '1.2.3', backend: 'wasm (cpu)', license: null, ...over,
  });

  test('YAML metadata: library, pipeline tag, tags, model-index with the evaluation metrics', () => {
    const card = modelCard(facts({ license: 'apache-2.0' }));
    const yaml = card.split('\n---\n')[0];
    assert.equal(yaml, [
      '---',
      'library_name: transformers',
      'pipeline_tag: fill-mask',
      'license: "apache-2.0"',
      'tags:',
      '- "mlmkit"',
      '- "fill-mask"',
      '- "masked-lm"',
      '- "bert"',
      'model-index:',
      '- name: "med-mini"',
      '  results:',
      '  - task:',
      '      type: fill-mask',
      '      name: Masked Language Modeling',
      '    dataset:',
      '      name: "med (validation split)"',
      '      type: "med"',
      '    metrics:',
      '    - type: loss',
      '      value: 4.25',
      '      name: "Eval loss"',
      '    - type: perplexity',
      '      value: 70.105',
      '      name: "Perplexity"',
      '    - type: accuracy',
      '      value: 0.125',
      '      name: "Accuracy (masked tokens)"',
    ].join('\n'));
    assert.ok(!/^base_model:/m.test(yaml), 'no base model for a model pretrained from scratch');
    assert.match(card, new RegExp(`---\\n\\n${CARD_MARKER.replace(/[()]/g, '\\$&')}\\n\\n# med-mini\\n`));
  });

  test('body: the metrics table, the training arguments, the command line, the data', () => {
    const card = modelCard(facts());
    assert.match(card, /A BERT masked language model, pretrained from scratch, trained with mlmkit 1\.2\.3 on TensorFlow\.js\./);
    assert.match(card, /with 15% of the tokens masked by a fixed seed\./);
    assert.match(card, /^- mlmkit 1\.2\.3, trained on the wasm \(cpu\) backend$/m);
    assert.match(card, /fill = pipeline\("fill-mask", model="org\/med-mini"\)\nfill\("Paris is the \[MASK\] of France\."\)/);
    assert.match(card, /\| eval_loss \| 4\.2500 \|\n\| eval_perplexity \| 70\.11 \|\n\| eval_accuracy \| 12\.50% \|/);
    assert.match(card, /\(at step 4, over 640 masked tokens\)/);
    assert.match(card, /\| --config \| configs\/bert-mini\.json \|\n\| --steps \| 4 \|\n\| --batch-size \| 8 \|/);
    assert.match(card, /```sh\nmlm pretrain --config configs\/bert-mini\.json --steps 4\n```/);
    assert.match(card, /Prepared with `mlm prepare` into `data\/med`: 120 training rows of 32 tokens\./);
    assert.match(card, /\| train_loss \| 5\.5000 \|\n\| epoch \| 0\.5 \|/);
  });

  test('an adapted Hub model is the base_model; no evaluation leaves model-index without results', () => {
    const card = modelCard(facts({ baseModel: 'google/bert_uncased_L-2_H-128_A-2', fromScratch: false, evalResults: null, license: null }));
    assert.match(card, /^base_model: "google\/bert_uncased_L-2_H-128_A-2"$/m);
    assert.match(card, /^model-index:\n- name: "med-mini"\n {2}results: \[\]$/m);
    assert.match(card, /adapted from \[google\/bert_uncased_L-2_H-128_A-2\]\(https:\/\/huggingface\.co\/google\/bert_uncased_L-2_H-128_A-2\)/);
    assert.ok(!card.includes('## Evaluation'));
    assert.ok(!/^license:/m.test(card));
  });

  test('collectCardFacts reads the run folder: results, arguments, command line; a Hub --from is the base model', async () => {
    const cache = path.join(tmp, 'hf-home', 'hub', 'models--google--bert_uncased_L-2_H-128_A-2', 'snapshots', 'a'.repeat(40));
    const hubRun = await collectCardFacts(runFolder({ from: cache, fromSource: 'google/bert_uncased_L-2_H-128_A-2' }), { repo: 'org/x' });
    assert.equal(hubRun.baseModel, 'google/bert_uncased_L-2_H-128_A-2');
    assert.equal(hubRun.fromScratch, false);
    assert.equal(hubRun.evalResults?.eval_loss, 4.25);
    assert.equal(hubRun.trainResults?.train_loss, 5.5);
    assert.equal(hubRun.commandLine, 'mlm pretrain --config configs/bert-mini.json --steps 4');
    assert.deepEqual(hubRun.data, { dir: path.join(tmp, 'no-data-here'), seqLen: 32, trainRows: 120 });
    assert.equal(hubRun.vocabSize, ck.config.vocab_size);
    // A local --from is named in the body, not as base_model (the Hub would read it as a repo id).
    const local = await collectCardFacts(runFolder({ from: '/work/models/x', fromSource: '/work/models/x' }), { repo: 'org/x' });
    assert.equal(local.baseModel, null);
    assert.equal(local.baseModelLocal, '/work/models/x');
    // A session that resumed has no --from in its arguments; run.json's base_model names the model.
    const resumed = runFolder();
    const runJson = JSON.parse(fs.readFileSync(path.join(resumed, 'run.json'), 'utf8'));
    fs.writeFileSync(path.join(resumed, 'run.json'), JSON.stringify({ ...runJson, args: { ...runJson.args, config: undefined, resume: true }, base_model: 'google/bert_uncased_L-2_H-128_A-2' }));
    const resumedFacts = await collectCardFacts(resumed, { repo: 'org/x' });
    assert.equal(resumedFacts.baseModel, 'google/bert_uncased_L-2_H-128_A-2');
    assert.equal(resumedFacts.baseModelLocal, null);
    // A bare model folder: the config only.
    const bare = await collectCardFacts(modelCopy(), { repo: 'org/x' });
    assert.equal(bare.args, null);
    assert.equal(bare.evalResults, null);
    assert.equal(bare.fromScratch, null);
  });
});

describe('push', () => {
  test('creates the repo and uploads the folder in one commit; the files arrive byte-identical; the card is written into the folder', async () => {
    const run = runFolder();
    const weightsSha = createHash('sha256').update(fs.readFileSync(path.join(run, 'model.safetensors'))).digest('hex');
    const logs: string[] = [];
    const r = await push({ ...opts(run, 'org/tiny', { license: 'mit' }), log: (l) => logs.push(l) });
    assert.equal(r.repo, 'org/tiny');
    assert.equal(r.created, true);
    assert.equal(r.card, 'generated');
    assert.equal(r.url, `${hub.url}/org/tiny`);
    assert.equal(r.commit, hub.repos.get('org/tiny')!.sha);
    const pushed = [...MODEL_FILES, 'README.md', 'train_results.json', 'eval_results.json'];
    assert.deepEqual(r.files.map((f) => f.path), [...pushed].sort((a, b) => a.localeCompare(b)));
    assertArrived('org/tiny', run, pushed);
    // Never the run's own files: checkpoints, run.json, report unless asked.
    const remote = [...hub.repos.get('org/tiny')!.files.keys()];
    for (const f of ['run.json', 'report.md', 'loss.svg', 'checkpoint-4/trainer_state.json']) assert.ok(!remote.includes(f), f);
    const commit = hub.commits.at(-1)!;
    assert.equal(commit.files.find((f) => f.path === 'model.safetensors')?.via, 'lfs');
    assert.equal(commit.files.find((f) => f.path === 'config.json')?.via, 'inline');
    assert.equal(hub.lfsPuts.filter((s) => s === weightsSha).length, 1);
    const card = fs.readFileSync(path.join(run, 'README.md'), 'utf8');
    assert.match(card, /^license: "mit"$/m);
    assert.match(card, /^- name: "tiny"$/m);
    assert.ok(logs.some((l) => l.startsWith('created repo org/tiny')), logs.join('\n'));

    // What the Hub now holds downloads back through training/hub.ts.
    const back = await downloadModel('org/tiny', { env: { HF_ENDPOINT: hub.url, HF_HOME: path.join(tmp, 'dl-home') }, log: () => {} });
    for (const f of ['config.json', 'model.safetensors', 'vocab.txt']) assert.ok(fs.readFileSync(path.join(back.dir, f)).equals(fs.readFileSync(path.join(run, f))), f);

    // Pushing again: the repo exists (409 is fine), the README.md now in the folder is kept, and
    // the weights are not sent again (the Hub already stores them).
    const again = await pushModel(opts(run, 'org/tiny'));
    assert.equal(again.created, false);
    assert.equal(again.card, 'kept');
    assert.equal(hub.lfsPuts.filter((s) => s === weightsSha).length, 1);
    assert.equal(hub.commits.length, 2);
  });

  test('a README.md of the user is uploaded as it is, unless overwriteCard', async () => {
    const dir = modelCopy();
    fs.writeFileSync(path.join(dir, 'README.md'), '# my own card\n');
    const kept = await pushModel(opts(dir, 'org/own-card'));
    assert.equal(kept.card, 'kept');
    assert.equal(fs.readFileSync(path.join(dir, 'README.md'), 'utf8'), '# my own card\n');
    assertArrived('org/own-card', dir, ['README.md']);
    const replaced = await pushModel(opts(dir, 'org/own-card', { overwriteCard: true }));
    assert.equal(replaced.card, 'replaced');
    assert.ok(fs.readFileSync(path.join(dir, 'README.md'), 'utf8').includes(CARD_MARKER));
    assertArrived('org/own-card', dir, ['README.md']);
  });

  test('a card the repo already has on the Hub, not generated by mlmkit, is not replaced by a generated one unless overwriteCard', async () => {
    const handWritten = Buffer.from('# the team\'s own card\n');
    const seed = (repo: string) => {
      hub.repos.set(repo, repoFromFolder(modelCopy(), repo.split('/')[1], {}));
      hub.repos.get(repo)!.files.set('README.md', repoFile(handWritten, false));
    };
    const hubCard = (repo: string, branch = 'main') => {
      const r = hub.repos.get(repo)!;
      return (branch === 'main' ? r.files : r.branches!.get(branch)!.files).get('README.md')!.bytes.toString('utf8');
    };
    // A folder without README.md: the model goes up, the Hub's card stays, no card is written locally.
    seed('org/has-card');
    const dir = modelCopy();
    const logs: string[] = [];
    const r = await pushModel({ ...opts(dir, 'org/has-card'), log: (l) => logs.push(l) });
    assert.equal(r.created, false);
    assert.equal(r.card, 'hub');
    assert.ok(!r.files.some((f) => f.path === 'README.md'));
    assert.equal(hubCard('org/has-card'), handWritten.toString('utf8'));
    assertArrived('org/has-card', dir, MODEL_FILES);
    assert.ok(!fs.existsSync(path.join(dir, 'README.md')), 'no generated card written into the folder');
    assert.ok(logs.includes('note: org/has-card has a model card of its own on the Hub; it is kept, and the generated one is not uploaded (--overwrite-card replaces it)'), logs.join('\n'));
    assert.deepEqual(hub.commits.at(-1)!.files.map((f) => f.path).filter((f) => f === 'README.md'), []);
    // A card an earlier push generated into the folder is not uploaded over it either.
    const generated = modelCopy();
    fs.writeFileSync(path.join(generated, 'README.md'), modelCard(await collectCardFacts(generated, { repo: 'org/has-card' })));
    assert.equal((await pushModel(opts(generated, 'org/has-card'))).card, 'hub');
    assert.equal(hubCard('org/has-card'), handWritten.toString('utf8'));
    // On a new branch made from main, whose card is the team's.
    const branch = await pushModel(opts(modelCopy(), 'org/has-card', { revision: 'adapted' }));
    assert.equal(branch.card, 'hub');
    assert.equal(hubCard('org/has-card', 'adapted'), handWritten.toString('utf8'));
    // The user's own README.md in the folder is what they asked to upload: it replaces the Hub's.
    const own = modelCopy();
    fs.writeFileSync(path.join(own, 'README.md'), '# newer card\n');
    assert.equal((await pushModel(opts(own, 'org/has-card'))).card, 'kept');
    assert.equal(hubCard('org/has-card'), '# newer card\n');
    // overwriteCard: the generated card replaces the Hub's, and is written into the folder.
    seed('org/has-card-2');
    const forced = await pushModel(opts(dir, 'org/has-card-2', { overwriteCard: true }));
    assert.equal(forced.card, 'generated');
    assert.ok(hubCard('org/has-card-2').includes(CARD_MARKER));
    assertArrived('org/has-card-2', dir, ['README.md']);
    // A card on the Hub that mlmkit generated is replaced by the new generated one (newer metrics).
    const newer = runFolder();
    const again = await pushModel(opts(newer, 'org/has-card-2', { license: 'mit' }));
    assert.equal(again.card, 'generated');
    assert.match(hubCard('org/has-card-2'), /^license: "mit"$/m);
  });

  test('a bare name goes under the token\'s user; --revision commits to a new branch; --include-report adds report.md and the charts', async () => {
    const run = runFolder();
    const r = await pushModel(opts(run, 'bare-name', { revision: 'dev', includeReport: true, private: true }));
    assert.equal(r.repo, 'alice/bare-name');
    assert.equal(r.url, `${hub.url}/alice/bare-name/tree/dev`);
    assert.equal(hub.repos.get('alice/bare-name')!.private, true);
    assertArrived('alice/bare-name', run, [...MODEL_FILES, 'README.md', 'report.md', 'loss.svg'], 'dev');
    assert.ok(!hub.repos.get('alice/bare-name')!.files.has('config.json'), 'main stays as created');
    // A run folder without report.md: refused before anything is sent.
    const noReport = modelCopy();
    await assert.rejects(pushModel(opts(noReport, 'org/no-report', { includeReport: true })), (e) => oneLine(e, /--include-report: .* has no report\.md/));
    assert.ok(!hub.repos.has('org/no-report'));
  });

  test('a link in the folder leading outside it is refused, naming it, before anything goes up; the Hub cache\'s links into blobs/ are fine', async () => {
    const secret = path.join(tmp, 'secret.txt');
    fs.writeFileSync(secret, 'not for the Hub\n');
    for (const [name, includeReport] of [['train_results.json', false], ['vocab.txt', false], ['loss.png', true]] as const) {
      const run = runFolder();
      fs.rmSync(path.join(run, name), { force: true });
      fs.symlinkSync(secret, path.join(run, name));
      const repo = `org/link-${name.replace('.', '-')}`;
      await assert.rejects(pushModel(opts(run, repo, { includeReport })), (e) => oneLine(e, new RegExp(`^\\S+/${name.replace('.', '\\.')} leads to .*secret\\.txt, outside \\S+; push uploads no file from outside the folder \\(copy it in, or remove the link\\)$`)));
      assert.ok(!hub.repos.has(repo), name);
    }
    // A folder laid out as the Hub cache: every file of the snapshot a link into ../../blobs.
    const repoDir = path.join(tmp, 'cache-layout', 'models--org--cached');
    const snapshot = path.join(repoDir, 'snapshots', 'a'.repeat(40));
    fs.mkdirSync(snapshot, { recursive: true });
    fs.mkdirSync(path.join(repoDir, 'blobs'));
    const src = modelCopy();
    for (const f of fs.readdirSync(src)) {
      fs.copyFileSync(path.join(src, f), path.join(repoDir, 'blobs', `blob-${f}`));
      fs.symlinkSync(path.join('..', '..', 'blobs', `blob-${f}`), path.join(snapshot, f));
    }
    const r = await pushModel(opts(snapshot, 'org/from-cache'));
    assertArrived('org/from-cache', src, MODEL_FILES);
    assert.equal(r.repo, 'org/from-cache');
  });

  test('bad input and refusals: one line, InputError', async () => {
    const dir = modelCopy();
    const env = (extra: Record<string, string>) => ({ env: { HF_ENDPOINT: hub.url, HF_HOME: path.join(tmp, 'empty-home'), ...extra } });
    await assert.rejects(pushModel(opts(dir, 'org/x', env({}))), (e) => oneLine(e, /^pushing needs a Hugging Face token with write access: set HF_TOKEN \(create one at http:\/\/127\.0\.0\.1:\d+\/settings\/tokens\) or run `huggingface-cli login`$/));
    await assert.rejects(pushModel(opts(dir, 'org/x', env({ HF_TOKEN: 'hf_wrong' }))), (e) => oneLine(e, /^http:\/\/127\.0\.0\.1:\d+ rejected the token from HF_TOKEN \(401 Invalid credentials in Authorization header\): check or renew it at .*\/settings\/tokens$/));
    await assert.rejects(pushModel(opts(dir, 'org/x', env({ HF_TOKEN: READ_TOKEN }))), (e) => oneLine(e, /^no write access to org\/x on .* \(403 You don't have the rights to write to org\): the token from HF_TOKEN needs write permission there/));
    await assert.rejects(pushModel(opts(dir, 'org/x', env({ HF_TOKEN: 'not-a-token' }))), (e) => oneLine(e, /the token from HF_TOKEN does not start with hf_/));
    await assert.rejects(pushModel(opts(dir, 'org/bad name')), (e) => oneLine(e, /^--repo "org\/bad name" is not a valid Hub repo name/));
    await assert.rejects(pushModel(opts(dir, 'a/b/c')), (e) => oneLine(e, /not a valid Hub repo name/));
    await assert.rejects(pushModel(opts(dir, 'org/x', { revision: 'a'.repeat(40) })), (e) => oneLine(e, /--revision a{40} is a commit id; push commits onto a branch/));
    await assert.rejects(pushModel(opts(path.join(tmp, 'nope'), 'org/x')), (e) => oneLine(e, /--model .*nope not found/));
    const empty = path.join(tmp, 'empty-folder');
    fs.mkdirSync(empty);
    await assert.rejects(pushModel(opts(empty, 'org/x')), (e) => oneLine(e, /is not a model folder \(no config\.json\)/));
    assert.ok(!hub.repos.has('org/x'));
    assert.ok(!fs.existsSync(path.join(dir, 'README.md')), 'no card written when the push is refused early');
  });

  test('a connection dropped mid-upload is retried; when it keeps failing: one line saying what was uploaded, and a re-run resumes', async () => {
    hub.lfsThreshold = 1000; // tokenizer.json and others through LFS too: several LFS files
    try {
      // One drop: retried within the push.
      const dir = modelCopy();
      const logs: string[] = [];
      hub.dropUploads = 1;
      await pushModel({ ...opts(dir, 'org/flaky'), log: (l) => logs.push(l) });
      assert.equal(hub.dropUploads, 0);
      assert.ok(logs.some((l) => /^push: cannot reach the Hugging Face Hub at .* while uploading to org\/flaky \(.+\); retrying in 0\.0 s \(1 of 3 retries\)$/.test(l)), logs.join('\n'));
      assertArrived('org/flaky', dir, [...MODEL_FILES, 'README.md']);

      // The weights' upload always dropped: the push fails (exit 1 in the CLI), nothing committed,
      // the other large files stored.
      hub.lfsThreshold = 600; // README.md, tokenizer.json, tokenizer_config.json, vocab.txt through LFS too
      const fresh = await makeTinyCheckpoint(path.join(tmp, 'fresh-drop'), 'bert', { seed: 77 });
      const weights = createHash('sha256').update(fs.readFileSync(path.join(fresh.dir, 'model.safetensors'))).digest('hex');
      const commits = hub.commits.length;
      hub.dropObject = weights;
      await assert.rejects(pushModel(opts(fresh.dir, 'org/dropped', { retries: 1 })), (e) => oneLine(e,
        /^cannot reach the Hugging Face Hub at .* while uploading to org\/dropped \(.+\); gave up after 2 tries: nothing was committed to org\/dropped, but README\.md, tokenizer\.json, tokenizer_config\.json, vocab\.txt reached the Hub's storage and will not be sent again; run the same push again to resume$/, 'failure'));
      assert.equal(hub.commits.length, commits);
      assert.ok(!fs.existsSync(path.join(fresh.dir, 'README.md')), 'the card is written once pushed');
      // The re-run sends only the weights, and succeeds.
      hub.dropObject = null;
      const putsBefore = hub.lfsPuts.length;
      await pushModel(opts(fresh.dir, 'org/dropped'));
      assert.deepEqual(hub.lfsPuts.slice(putsBefore), [weights]);
      assertArrived('org/dropped', fresh.dir, [...MODEL_FILES, 'README.md']);
    } finally {
      hub.lfsThreshold = 10 * 1024 * 1024;
      hub.dropUploads = 0;
      hub.dropObject = null;
    }
  });

  test('a 503 on the commit is retried', async () => {
    const dir = modelCopy();
    hub.failCommits = 2;
    const r = await pushModel(opts(dir, 'org/busy'));
    assert.equal(hub.failCommits, 0);
    assert.equal(r.commit, hub.repos.get('org/busy')!.sha);
  });
});

describe('mlm push and mlm train --push-to-hub', () => {
  const env = (extra: Record<string, string> = {}): NodeJS.ProcessEnv => {
    const e: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!/^(HF_|HUGGING_FACE_|HUGGINGFACE_|MLM_)/.test(k)) e[k] = v;
    return { ...e, HF_ENDPOINT: hub.url, HF_HOME: path.join(tmp, 'cli-home'), MLM_BACKEND: 'wasm', ...extra };
  };
  const errorLine = (stderr: string) => stderr.split('\n').filter((l) => l.startsWith('mlm: '));

  test('exit codes: 0 pushed, 2 for no token, a rejected token or no access, 1 when the network keeps failing', async () => {
    const dir = modelCopy();
    const ok = await runMlm(['push', '--model', dir, '--repo', 'org/cli', '--json'], { env: env({ HF_TOKEN: GOOD_TOKEN }) });
    assert.equal(ok.code, 0, ok.stderr);
    const doc = JSON.parse(ok.stdout);
    // The keys of docs/formats.md ("Command output").
    assert.deepEqual(Object.keys(doc), ['repo', 'url', 'revision', 'commit', 'folder', 'files', 'card', 'created']);
    for (const f of doc.files) assert.deepEqual(Object.keys(f), ['path', 'bytes']);
    assert.deepEqual([doc.revision, doc.folder, doc.card, doc.created], ['main', dir, 'generated', true]);
    assert.equal(doc.repo, 'org/cli');
    assert.equal(doc.commit, hub.repos.get('org/cli')!.sha);
    assertArrived('org/cli', dir, [...MODEL_FILES, 'README.md']);

    for (const [extra, re] of [
      [{}, /^mlm: error: pushing needs a Hugging Face token with write access: set HF_TOKEN/],
      [{ HF_TOKEN: 'hf_wrong' }, /^mlm: error: .* rejected the token from HF_TOKEN \(401/],
      [{ HF_TOKEN: READ_TOKEN }, /^mlm: error: no write access to org\/cli2 on .* \(403/],
    ] as const) {
      const r = await runMlm(['push', '--model', dir, '--repo', 'org/cli2'], { env: env(extra) });
      assert.equal(r.code, 2, r.stderr);
      assert.equal(errorLine(r.stderr).length, 1, r.stderr);
      assert.match(errorLine(r.stderr)[0], re);
    }

    // Every try dropped (the CLI's retries: 1 s, 2 s, 4 s).
    // Weights the Hub does not store yet, so that they must be uploaded.
    const fresh = await makeTinyCheckpoint(path.join(tmp, 'fresh'), 'bert', { seed: 99 });
    hub.dropUploads = 100;
    try {
      const r = await runMlm(['push', '--model', fresh.dir, '--repo', 'org/cli-drop'], { env: env({ HF_TOKEN: GOOD_TOKEN }) });
      assert.equal(r.code, 1, r.stderr);
      assert.equal(errorLine(r.stderr).length, 1, r.stderr);
      assert.match(errorLine(r.stderr)[0], /^mlm: failed: cannot reach the Hugging Face Hub at .* while uploading to org\/cli-drop \(.+\); gave up after 4 tries: nothing was committed to org\/cli-drop; run the same push again to resume$/);
      assert.equal((r.stderr.match(/retrying in/g) ?? []).length, 3);
    } finally {
      hub.dropUploads = 0;
    }
  });

  test('train --push-to-hub pushes the final model with its card at the end; a bad --push-to-hub fails before training', async () => {
    const fx = await preparedFixture(path.join(tmp, 'fx'), brownDocuments(20_000), { vocabSize: 200, seqLen: 32 });
    const config = writeTinyConfig(path.join(tmp, 'tiny.json'), { max_position_embeddings: 32 });
    const out = path.join(tmp, 'run-pushed');
    const r = await runMlm(['pretrain', '--config', config, '--data', fx.dataDir, '--out', out, '--steps', '2', '--batch-size', '8', '--eval-every', '0', '--no-progress', '--json', '--push-to-hub', 'lab/run-pushed'], { env: env({ HF_TOKEN: GOOD_TOKEN }) });
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout);
    assert.deepEqual(doc.pushed_to, { repo: 'lab/run-pushed', url: `${hub.url}/lab/run-pushed`, commit: hub.repos.get('lab/run-pushed')!.sha });
    assertArrived('lab/run-pushed', out, [...MODEL_FILES, 'README.md', 'eval_results.json', 'train_results.json']);
    const card = fs.readFileSync(path.join(out, 'README.md'), 'utf8');
    assert.match(card, /pretrained from scratch/);
    assert.match(card, /```sh\nmlm pretrain --config .*tiny\.json --data .* --push-to-hub lab\/run-pushed\n```/);
    assert.match(card, /\| --steps \| 2 \|/);
    assert.match(card, /^ {4}- type: loss\n {6}value: [\d.]+$/m);

    // The card is part of the final model: a resumed run that trains on removes it with the model.
    const more = await runMlm(['pretrain', '--config', config, '--data', fx.dataDir, '--out', out, '--steps', '3', '--batch-size', '8', '--eval-every', '0', '--no-progress', '--resume'], { env: env() });
    assert.equal(more.code, 0, more.stderr);
    assert.ok(!fs.existsSync(path.join(out, 'README.md')));

    const bad = await runMlm(['pretrain', '--config', config, '--data', fx.dataDir, '--out', path.join(tmp, 'never'), '--steps', '2', '--push-to-hub', 'lab/x'], { env: env() });
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(errorLine(bad.stderr)[0], /^mlm: error: pushing needs a Hugging Face token/);
    assert.ok(!fs.existsSync(path.join(tmp, 'never')), 'refused before the run started');
  });
});
