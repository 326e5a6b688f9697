// The main job, end to end on the bundled corpora (`npm run demo`):
//   1. extract the corpora (Brown = general English, WordNet medical glosses = the domain)
//   2. train a WordPiece vocabulary on the general corpus
//   3. prepare general and medical data (train + held-out)
//   4. pretrain bert-mini on general text (its first layer's heads started on neighbouring tokens,
//      `--init-attention local`: without it, 1,000 steps give only frequent-token predictions)
//   5. evaluate held-out perplexity on general and medical text
//   6. adapt the model on the medical training split
//   7. evaluate again, export a Hugging Face checkpoint, run fill-mask with both models
//   8. extend the vocabulary with medical words (FVT rows), adapt that model with the same steps,
//      and compare the three models on held-out medical text (`mlm compare`)
//   9. print a before/after table and write checkpoints/demo/report.md
// Every stage is a real `mlm` command, printed before it runs, so the demo doubles as a recipe.
// A second run reuses what is already complete (prepared data, trained models) and says so; a model
// trained with another recipe (steps, batch size, sequence length) is trained again, with what derives from it.
// Its options: USAGE below (`npm run demo -- --help` prints it).
//
// --out (default checkpoints/demo) is a new or empty folder, or one the demo made (it leaves a
// .mlmkit-demo file there); a folder holding anything else is refused (exit 2), since the demo
// replaces what it finds under its own names. --fresh removes only those names.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatTable } from '../data/progress.ts';
import { MANIFEST } from '../data/shards.ts';
import { readScriptOptions } from './script-args.ts';
import { claimFolder, removeOwn, type OwnFolder } from './own-folder.ts';

const USAGE = `usage: npm run demo [-- OPTIONS]   (or: node --import tsx scripts/demo.ts [OPTIONS])
  --pretrain-steps N   steps of pretraining on general text (default 2000)
  --adapt-steps N      steps of each adaptation to medical text (default 200)
  --backend NAME       the backend of every stage (default $MLM_BACKEND, else auto)
  --seq-len N          tokens per row of the prepared data (default 64)
  --batch-size N       rows per training step (default 16)
  --eval-batches N     batches of each held-out evaluation (default 20)
  --extend-add N       medical words added to the vocabulary (default 300)
  --random-init-too    also adapt the extended model with random new rows (FVT's comparison)
  --out DIR            the demo's folder (default checkpoints/demo): new, empty, or made by the demo
  --fresh              remove what the demo made in --out first
  --help, -h           print this and exit`;

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const options = readScriptOptions(process.argv.slice(2), {
  program: 'demo',
  run: 'npm run demo --',
  usage: USAGE,
  options: {
    'pretrain-steps': { type: 'number', default: 2000 },
    'adapt-steps': { type: 'number', default: 200 },
    backend: { type: 'string', default: process.env.MLM_BACKEND ?? 'auto' },
    'seq-len': { type: 'number', default: 64 },
    'batch-size': { type: 'number', default: 16 },
    'eval-batches': { type: 'number', default: 20 },
    'extend-add': { type: 'number', default: 300 },
    'random-init-too': { type: 'switch' },
    out: { type: 'string', default: 'checkpoints/demo' },
    fresh: { type: 'switch' },
  },
});
const PRETRAIN_STEPS = options['pretrain-steps'];
const ADAPT_STEPS = options['adapt-steps'];
const BACKEND = options.backend;
const SEQ_LEN = options['seq-len'];
const BATCH = options['batch-size'];
const EVAL_BATCHES = options['eval-batches'];
const EXTEND_ADD = options['extend-add'];
// Also adapt the extended model with random new rows (the comparison FVT is measured against).
const RANDOM_TOO = options['random-init-too'];
const out = path.resolve(root, options.out);
const corpora = path.join(root, 'data', 'corpora');
const rel = (p: string) => path.relative(process.cwd(), p) || '.';
// The run folders: the pretrained model, and the runs and models made from it.
type VocabInit = 'fvt' | 'random';
const runs = {
  general: path.join(out, 'general-model'),
  medical: path.join(out, 'medical-model'),
  resized: (init: VocabInit) => path.join(out, `general-model-extended-${init}`),
  extended: (init: VocabInit) => path.join(out, `medical-model-extended-${init}`),
};

/** The demo's folder: the names it writes at the top of --out are all it ever replaces or removes there. */
const demoFolder: OwnFolder = {
  dir: out,
  marker: '.mlmkit-demo',
  names: [
    'tokenizer', 'data', 'general-model', 'medical-model', 'export', 'tokenizer-medical', 'tokenizer-medical.json',
    ...(['fvt', 'random'] as const).flatMap((i) => [path.basename(runs.resized(i)), path.basename(runs.extended(i))]),
    'compare', 'report.md',
  ],
  defaultDir: path.join(root, 'checkpoints', 'demo'),
  flag: '--out',
  madeBy: 'This folder is the output of mlmkit\'s demo (npm run demo): a second run replaces what it made here.',
};

const started = performance.now();
let stage = 0;
const STAGES = 10;

function banner(title: string): void {
  stage++;
  const secs = ((performance.now() - started) / 1000).toFixed(0);
  process.stderr.write(`\n=== [${stage}/${STAGES}] ${title}  (${secs} s elapsed)\n`);
}

/** Runs `mlm ARGS`, echoing the command; returns stdout. Exits the demo on failure. */
function mlm(args: string[], opts: { capture?: boolean } = {}): string {
  process.stderr.write(`$ mlm ${args.map((a) => (/[\s"*]/.test(a) ? JSON.stringify(a) : a)).join(' ')}\n`);
  const r = spawnSync(process.execPath, [path.join(root, 'scripts', 'mlm.mjs'), ...args], {
    cwd: root,
    stdio: ['ignore', opts.capture ? 'pipe' : 'inherit', 'inherit'],
    encoding: 'utf8',
    env: { ...process.env, MLM_BACKEND: BACKEND },
  });
  if (r.status !== 0) {
    process.stderr.write(`demo: the command above failed (exit ${r.status}); fix what it says and run \`npm run demo\` again\n`);
    process.exit(r.status ?? 1);
  }
  return r.stdout ?? '';
}

function node(script: string, args: string[]): void {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, script), ...args], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

interface EvalResult { loss: number; perplexity: number; accuracy: number; masked_tokens: number }

/** Held-out perplexity of one model on both domains, in one `mlm evaluate` call. */
function evaluateBoth(model: string, data: { general: string; medical: string }): { general: EvalResult; medical: EvalResult } {
  const rows = JSON.parse(mlm(['evaluate', '--model', model, '--data', data.general, data.medical, '--json',
    '--batch-size', '32', '--max-batches', String(EVAL_BATCHES)], { capture: true })) as EvalResult[];
  return { general: rows[0], medical: rows[1] };
}

/**
 * A fill-mask probe: a sentence in the style of the medical glosses, and candidate words for its
 * mask, half medical and half general, each one token of the demo's vocabulary.
 */
interface Probe { sentence: string; medical: string[]; general: string[] }

interface ProbeResult {
  /** The model's top 3 over the whole vocabulary, "token (score)". */
  top: string;
  /** The best of the six candidates. */
  best: string;
  /** Share of the candidates' probability that goes to the medical ones. */
  medicalShare: number;
}

/** Fill-mask (transformers' pipeline: top_k, and targets) for each probe and model, in this process. */
async function fillMasks(models: string[], probes: Probe[]): Promise<ProbeResult[][]> {
  const { blasOptions, resolveBackendName, selectBackend } = await import('../training/backend.ts');
  const { loadModelFolder } = await import('../training/checkpoint.ts');
  const { createMaskedLM } = await import('../training/models/roberta.ts');
  const { fillMask } = await import('../training/fill-mask.ts');
  const { tf, capabilities } = await selectBackend(resolveBackendName(BACKEND, process.env), { log: () => {}, ...blasOptions(process.env) });
  const out: ProbeResult[][] = [];
  for (const dir of models) {
    const folder = await loadModelFolder(dir);
    const model = createMaskedLM(tf, folder.config, { weights: folder.weights, capabilities });
    const results: ProbeResult[] = [];
    for (const p of probes) {
      const top = await fillMask(tf, model, folder.tokenizer, p.sentence, { topK: 3 });
      const targets = [...p.medical, ...p.general];
      // A candidate that is not one token of the vocabulary would be replaced by its first piece.
      const warn = (line: string) => { throw new Error(`fill-mask candidate for "${p.sentence}": ${line}`); };
      const scored = (await fillMask(tf, model, folder.tokenizer, p.sentence, { topK: targets.length, targets, warn })).masks[0];
      const mass = (words: string[]) => scored.filter((c) => words.includes(c.token_str)).reduce((a, c) => a + c.score, 0);
      results.push({
        top: top.masks[0].map((c) => `${c.token_str} (${c.score.toFixed(2)})`).join(', '),
        best: scored[0].token_str,
        medicalShare: mass(p.medical) / (mass(p.medical) + mass(p.general)),
      });
    }
    model.dispose();
    out.push(results);
  }
  return out;
}

/** `mlm finetune` with the demo's adaptation recipe (the same for every adapted model); its final checkpoint. */
function adapt(from: string, dataDir: string, runDir: string): string {
  mlm(['finetune', '--from', from, '--data', dataDir, '--out', runDir, '--steps', String(ADAPT_STEPS),
    '--batch-size', String(BATCH), '--lr', '1e-3', '--warmup', '0.1', '--mlm-probability', '0.3', '--eval-every', '25', '--eval-batches', '10',
    '--save-every', '50', '--save-total-limit', '1', '--log-every', '5',
    ...(fs.existsSync(runDir) ? ['--resume'] : [])]);
  return finalCheckpoint(runDir, ADAPT_STEPS)!;
}

/** The checkpoint a finished run of `steps` steps leaves, or null while the run is incomplete. */
function finalCheckpoint(runDir: string, steps: number): string | null {
  const p = path.join(runDir, `checkpoint-${steps}`);
  return fs.existsSync(path.join(p, 'trainer_state.json')) ? p : null;
}

/**
 * How the newest checkpoint of a run folder differs from the recipe the demo would train it with
 * ("--steps 1000 (now 2000)", ...), or null when it matches or the folder holds no checkpoint. A run
 * made with another recipe is not resumed (a longer --steps would change its schedule from the
 * start, and another --batch-size cannot resume): the demo trains it again.
 */
async function recipeChanges(runDir: string, want: { steps: number; init_attention?: string }): Promise<string | null> {
  const { newestCheckpoint, readTrainerState } = await import('../training/train-state.ts');
  const newest = newestCheckpoint(runDir);
  if (newest === null) return null;
  const state = await readTrainerState(newest.dir);
  // Checkpoints from before --init-attention existed were trained with the standard init.
  const had: Record<string, unknown> = { ...state.args, init_attention: state.args.init_attention ?? 'standard', seq_len: state.data.seq_len };
  const wanted: Record<string, unknown> = { ...want, batch_size: BATCH, seq_len: SEQ_LEN };
  const changed = Object.keys(wanted).filter((k) => wanted[k] !== undefined && had[k] !== wanted[k])
    .map((k) => `--${k.replace(/_/g, '-')} ${String(had[k])} (now ${String(wanted[k])})`);
  return changed.length > 0 ? changed.join(', ') : null;
}

/** Removes `runDir` when its checkpoints were trained with another recipe, saying so; true if it did. */
async function dropIfOtherRecipe(runDir: string, want: { steps: number; init_attention?: string }, what: string): Promise<boolean> {
  const changes = await recipeChanges(runDir, want);
  if (changes === null) return false;
  process.stderr.write(`the ${what} in ${rel(runDir)} was trained with ${changes}: training it again\n`);
  fs.rmSync(runDir, { recursive: true, force: true });
  return true;
}

/** --overwrite when `dir` holds data prepared with another --seq-len (the demo's own output, made again), else nothing. */
function overwriteOtherSeqLen(dir: string): string[] {
  const manifest = path.join(dir, MANIFEST);
  if (!fs.existsSync(manifest)) return [];
  const seqLen = (JSON.parse(fs.readFileSync(manifest, 'utf8')) as { seq_len?: number }).seq_len;
  if (seqLen === SEQ_LEN) return [];
  process.stderr.write(`${rel(dir)} holds rows of ${seqLen} tokens; preparing it again with --seq-len ${SEQ_LEN}\n`);
  return ['--overwrite'];
}

async function main(): Promise<void> {
  const refused = claimFolder(demoFolder, rel(out));
  if (refused !== null) {
    process.stderr.write(`demo: ${refused}\n`);
    process.exit(2);
  }
  if (options.fresh) removeOwn(demoFolder);

  banner('extract the bundled corpora');
  node('scripts/corpora.ts', ['--out', corpora]);

  banner('train a WordPiece vocabulary on general English (Brown corpus)');
  const tok = path.join(out, 'tokenizer');
  if (fs.existsSync(path.join(tok, 'tokenizer.json'))) {
    process.stderr.write(`reusing the tokenizer in ${rel(tok)}\n`);
  } else {
    mlm(['tokenizer', 'train', '--corpus', path.join(corpora, 'general', 'train'), '--vocab-size', '8000', '--lowercase', '--out', tok]);
  }

  banner('prepare general and medical data');
  const data = { general: path.join(out, 'data', 'general'), medical: path.join(out, 'data', 'medical') };
  for (const domain of ['general', 'medical'] as const) {
    mlm(['prepare', '--corpus', path.join(corpora, domain, 'train'), '--validation', path.join(corpora, domain, 'heldout'),
      '--split-paragraphs', '--tokenizer', tok, '--out', data[domain], '--seq-len', String(SEQ_LEN), ...overwriteOtherSeqLen(data[domain])]);
  }

  banner(`pretrain bert-mini on general text (${PRETRAIN_STEPS} steps)`);
  const generalRun = runs.general;
  if (await dropIfOtherRecipe(generalRun, { steps: PRETRAIN_STEPS, init_attention: 'local' }, 'pretrained model')) {
    // Everything after the pretraining derives from it, so it all runs again. Only the demo's own outputs go.
    const inits: VocabInit[] = ['fvt', 'random'];
    for (const dir of [runs.medical, ...inits.flatMap((i) => [runs.resized(i), runs.extended(i)])]) {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  let generalModel = finalCheckpoint(generalRun, PRETRAIN_STEPS);
  if (generalModel) {
    process.stderr.write(`reusing the pretrained model in ${rel(generalModel)}\n`);
  } else {
    mlm(['pretrain', '--config', path.join(root, 'configs', 'bert-mini.json'), '--data', data.general, '--out', generalRun,
      '--steps', String(PRETRAIN_STEPS), '--batch-size', String(BATCH), '--lr', '1e-3', '--warmup', '0.1', '--eval-every', '0',
      '--init-bias', 'unigram', '--init-attention', 'local', '--mlm-probability', '0.3',
      '--eval-batches', '10', '--save-every', '100', '--save-total-limit', '1', '--log-every', '5', ...(fs.existsSync(generalRun) ? ['--resume'] : [])]);
    generalModel = finalCheckpoint(generalRun, PRETRAIN_STEPS)!;
  }

  banner('evaluate the general model on held-out general and medical text');
  const before = evaluateBoth(generalModel, data);

  banner(`adapt the model on medical text (${ADAPT_STEPS} steps)`);
  const medicalRun = runs.medical;
  await dropIfOtherRecipe(medicalRun, { steps: ADAPT_STEPS }, 'adapted model');
  let medicalModel = finalCheckpoint(medicalRun, ADAPT_STEPS);
  if (medicalModel) {
    process.stderr.write(`reusing the adapted model in ${rel(medicalModel)}\n`);
  } else {
    medicalModel = adapt(generalModel, data.medical, medicalRun);
  }

  banner('evaluate the adapted model');
  const after = evaluateBoth(medicalModel, data);

  banner('export a Hugging Face checkpoint');
  const exported = path.join(out, 'export', 'bert-mini-medical');
  mlm(['export', '--model', medicalModel, '--format', 'hf', '--out', exported, '--overwrite']);

  banner('fill-mask with both models');
  const probes: Probe[] = [
    { sentence: 'inflammation of the [MASK] caused by a virus.', medical: ['skin', 'brain', 'heart'], general: ['house', 'city', 'car'] },
    { sentence: 'a drug used in the treatment of [MASK].', medical: ['cancer', 'fever', 'pain'], general: ['war', 'money', 'school'] },
    { sentence: 'an abnormal condition of the [MASK].', medical: ['blood', 'skin', 'body'], general: ['government', 'water', 'food'] },
    { sentence: 'the patient was taken to the [MASK].', medical: ['hospital', 'doctor', 'medicine'], general: ['church', 'city', 'school'] },
  ];
  const [generalFills, adaptedFills] = await fillMasks([generalModel, medicalModel], probes);
  const pct = (x: number) => `${(100 * x).toFixed(0)}%`;
  const fills = probes.map((p, i) => ({ sentence: p.sentence, candidates: p, general: generalFills[i], adapted: adaptedFills[i] }));
  const fillLines = fills.flatMap((f) => [
    f.sentence,
    `  top 3    general model: ${f.general.top}`,
    `           adapted model: ${f.adapted.top}`,
    `  candidates ${[...f.candidates.medical, ...f.candidates.general].join(' ')}: best ${f.general.best} -> ${f.adapted.best}; medical share ${pct(f.general.medicalShare)} -> ${pct(f.adapted.medicalShare)}`,
  ]);
  process.stderr.write(`${fillLines.join('\n')}\n`);

  banner(`extend the vocabulary with ${EXTEND_ADD} medical words, adapt again (${ADAPT_STEPS} steps), compare the models`);
  const medCorpus = { train: path.join(corpora, 'medical', 'train'), heldout: path.join(corpora, 'medical', 'heldout') };
  const tokMed = path.join(out, 'tokenizer-medical');
  let extension: { tokens_per_word_before: number; tokens_per_word_after: number; added: number } | null = null;
  const extensionJson = path.join(out, 'tokenizer-medical.json');
  if (fs.existsSync(path.join(tokMed, 'tokenizer.json')) && fs.existsSync(extensionJson)) {
    process.stderr.write(`reusing the extended tokenizer in ${rel(tokMed)}\n`);
  } else {
    fs.rmSync(tokMed, { recursive: true, force: true });
    fs.writeFileSync(extensionJson, mlm(['tokenizer', 'extend', '--from', generalModel, '--corpus', medCorpus.train, '--split-paragraphs',
      '--add', String(EXTEND_ADD), '--out', tokMed, '--json', '--no-progress'], { capture: true }));
  }
  extension = JSON.parse(fs.readFileSync(extensionJson, 'utf8'));
  const variants: Array<{ init: VocabInit; label: string }> = [{ init: 'fvt', label: 'extended + FVT' }, ...(RANDOM_TOO ? [{ init: 'random' as const, label: 'extended + random rows' }] : [])];
  const dataExt = path.join(out, 'data', 'medical-extended');
  mlm(['prepare', '--corpus', medCorpus.train, '--validation', medCorpus.heldout, '--split-paragraphs', '--tokenizer', tokMed, '--out', dataExt, '--seq-len', String(SEQ_LEN), ...overwriteOtherSeqLen(dataExt)]);
  const extendedModels: Array<{ label: string; dir: string }> = [];
  for (const v of variants) {
    const resized = runs.resized(v.init);
    if (!fs.existsSync(path.join(resized, 'config.json'))) {
      fs.rmSync(resized, { recursive: true, force: true });
      mlm(['model', 'resize', '--from', generalModel, '--tokenizer', tokMed, '--out', resized, '--init', v.init]);
    }
    const run = runs.extended(v.init);
    await dropIfOtherRecipe(run, { steps: ADAPT_STEPS }, 'adapted extended model');
    extendedModels.push({ label: v.label, dir: finalCheckpoint(run, ADAPT_STEPS) ?? adapt(resized, dataExt, run) });
  }
  const compareDir = path.join(out, 'compare');
  fs.rmSync(compareDir, { recursive: true, force: true }); // the demo's own output, made again
  const comparison = JSON.parse(mlm(['compare', '--model', generalModel, medicalModel, ...extendedModels.map((m) => m.dir), '--data', medCorpus.heldout,
    '--split-paragraphs', '--max-words', '1500', '--out', compareDir, '--json', '--no-progress'], { capture: true })) as {
    models: Array<{ model: string; nats_per_word: number; word_pseudo_perplexity: number; bits_per_char: number; tokens_per_word: number }>;
  };
  const labels = ['general model', 'adapted', ...extendedModels.map((m) => `adapted, ${m.label}`)];
  const compareRows = comparison.models.map((m, i) => ({
    model: labels[i],
    'tokens/word': m.tokens_per_word,
    'nats/word': m.nats_per_word,
    'word pseudo-ppl': m.word_pseudo_perplexity,
    'bits/char': m.bits_per_char,
  }));
  const compareTable = formatTable(compareRows, { 'tokens/word': 3, 'nats/word': 3, 'word pseudo-ppl': 1, 'bits/char': 3 });
  // Shown once, in the summary that follows at once (the fill-mask lines above are printed at their
  // stage too: the extension stage takes minutes after them).
  const extensionLine = `vocabulary extension: ${extension!.added} medical words added; tokens per word on the medical training text ${extension!.tokens_per_word_before.toFixed(3)} -> ${extension!.tokens_per_word_after.toFixed(3)}`;

  const rows = (['general', 'medical'] as const).map((d) => ({
    'held-out text': d,
    'perplexity before': before[d].perplexity,
    'perplexity after': after[d].perplexity,
    change: `${(((after[d].perplexity - before[d].perplexity) / before[d].perplexity) * 100).toFixed(1)}%`,
    'accuracy before': before[d].accuracy,
    'accuracy after': after[d].accuracy,
  }));
  const table = formatTable(rows, { 'perplexity before': 1, 'perplexity after': 1, 'accuracy before': 3, 'accuracy after': 3 });
  const seconds = (performance.now() - started) / 1000;
  process.stdout.write(`\nbert-mini, pretrained on Brown (general English), adapted on WordNet medical glosses\n\n${table}\n\n`);
  process.stdout.write(`fill-mask, general model -> adapted model\n${fillLines.join('\n')}\n`);
  process.stdout.write(`\nheld-out medical text, whole-word pseudo-likelihood (comparable across tokenizers; ${rel(path.join(compareDir, 'compare.md'))})\n${extensionLine}\n\n${compareTable}\n`);
  process.stdout.write(`\nexported: ${rel(exported)}\ndemo finished in ${(seconds / 60).toFixed(1)} min\n`);

  const report = [
    '# mlmkit demo: domain adaptation of bert-mini',
    '',
    `Backend: ${BACKEND}. Sequence length ${SEQ_LEN}, batch ${BATCH}; ${PRETRAIN_STEPS} pretraining steps on Brown, ${ADAPT_STEPS} adaptation steps on WordNet medical glosses, both with 30% of tokens selected for prediction (\`--mlm-probability 0.3\`), pretraining from a unigram output bias (\`--init-bias unigram\`) and local attention in the first layer (\`--init-attention local\`). Perplexities are evaluated with the usual 15%. Wall time ${(seconds / 60).toFixed(1)} min.`,
    '',
    '## Held-out perplexity',
    '',
    '```',
    table,
    '```',
    '',
    '## Fill-mask',
    '',
    'Top 3 over the whole vocabulary, then six candidate words (`targets`, as in the transformers pipeline):',
    'three medical, three general; "medical share" is the part of the six candidates\' probability that the',
    'medical ones get.',
    '',
    '| sentence | general model, top 3 | adapted model, top 3 | best candidate | medical share |',
    '| --- | --- | --- | --- | --- |',
    ...fills.map((f) => `| ${f.sentence} | ${f.general.top} | ${f.adapted.top} | ${f.general.best} -> ${f.adapted.best} | ${pct(f.general.medicalShare)} -> ${pct(f.adapted.medicalShare)} |`),
    '',
    `Candidates: ${probes.map((p) => `${p.medical.join('/')} vs ${p.general.join('/')}`).join('; ')}.`,
    '',
    '## Vocabulary extension',
    '',
    `${extensionLine} (\`mlm tokenizer extend --add ${EXTEND_ADD}\`); the extended model's new rows start as the mean of the rows of the pieces they replace (FVT), then it is adapted with the same ${ADAPT_STEPS} steps and seed. On held-out medical text, each whitespace-separated word masked in full and its tokens scored in one pass (\`mlm compare\`; [full report](compare/compare.md)):`,
    '',
    '```',
    compareTable,
    '```',
    '',
    '## Training curves',
    '',
    `Pretraining: [report](${path.relative(out, path.join(generalRun, 'report.md'))}). Adaptation: [report](${path.relative(out, path.join(medicalRun, 'report.md'))}).`,
    '',
    ...[runs.general, runs.medical].flatMap((dir) => {
      const run = path.relative(out, dir);
      const svgs = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith('.svg')).sort() : [];
      return svgs.map((f) => `![${run} ${f}](${run}/${f})`);
    }),
    '',
    `Exported Hugging Face checkpoint: \`${path.relative(out, exported)}\`.`,
    '',
  ].join('\n');
  fs.writeFileSync(path.join(out, 'report.md'), report);
  process.stdout.write(`report: ${rel(path.join(out, 'report.md'))}\n`);
}

main().catch((err) => {
  process.stderr.write(`demo: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
