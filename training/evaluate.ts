// Held-out evaluation of a masked LM (docs/architecture.md, "Evaluation and metrics"): loss, perplexity, accuracy.
//
// Masked evaluation. Rows are read in file order (no shuffle) and masked with the training recipe
// (15%, 80/10/10, optionally whole words) by an Rng derived from the evaluation seed alone, so two
// evaluations of one model on one set draw the same masks, whatever any training run did. Loss is
// the mean cross-entropy over ALL masked tokens of the set (token-weighted: the per-batch sums
// are added in float64 and divided once), perplexity = exp(loss), accuracy = the share of masked
// tokens whose top-1 prediction is the original token.
//
// Pseudo-perplexity (`evaluatePseudo`, Salazar et al. 2020, "Masked Language Model Scoring"): every
// non-special token of every row is masked in turn (with the mask token, no 80/10/10) and scored
// given the rest of its row; PPPL = exp(-(1/N) sum_t log P(w_t | W without t)) over the N scored
// tokens of the whole set. No randomness. Batched: the copies of a row, each with one position
// masked, are packed batchSize at a time, and the MLM head runs on the masked positions only.
// A row of n scorable tokens costs n forward passes, so this is ~T times slower than `evaluateMasked`.
//
// Data. `openEvalData` takes a prepared folder (its validation split by default; the tokenizer hash
// must match the model's) or raw text (files, folders, globs), tokenized on the fly with the
// model's tokenizer by `data/prepare.ts` into a temporary prepared folder, removed after.
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Tensor2D } from '@tensorflow/tfjs';
import { InputError, requireInteger, requireSeed } from '../common/errors.ts';
import { RowStream } from '../data/batches.ts';
import { resolveCorpusFiles, type RawTextOptions } from '../data/corpus.ts';
import { allocMlmBatch, IGNORE_INDEX, maskTokens, MLM_PROBABILITY, type MaskingOptions, type MlmBatch, type WholeWordSelection } from '../data/masking.ts';
import { prepare } from '../data/prepare.ts';
import { Rng } from '../common/rng.ts';
import { MANIFEST, readManifest, SplitReader, type Manifest, type SplitName } from '../data/shards.ts';
import type { MlmTokenizer } from '../data/tokenizer.ts';
import type { Tf } from './backend.ts';
import type { MaskedLM } from './models/bert.ts';
import { passBudgetBytes, rowsPerPass, sliceBatch, splitBatch } from './passes.ts';

/** Tag of the evaluation masking stream: Rng.derive(seed, EVAL_STREAM). Training uses other tags. */
export const EVAL_STREAM = 0xe7a1;

/** How rows become masked inputs: the pad id, the special-id table and the masking recipe. */
export interface MaskingSetup {
  padId: number;
  specials: Uint8Array;
  options: MaskingOptions;
}

/** The masking of docs/architecture.md ("Masking") for a tokenizer. */
export function maskingFor(tokenizer: MlmTokenizer, mlmProbability = MLM_PROBABILITY, wholeWord = false, wholeWordSelection: WholeWordSelection = 'independent'): MaskingSetup {
  return {
    padId: tokenizer.specialIds.pad,
    specials: tokenizer.specialMask(),
    options: { mlmProbability, maskTokenId: tokenizer.specialIds.mask, vocabSize: tokenizer.vocabSize, wholeWord, wholeWordSelection },
  };
}

export interface EvalOptions {
  batchSize: number;
  seed: number;
  /** Stop after this many batches of rows (undefined or 0: the whole split). */
  maxBatches?: number;
  /** Called after each batch of rows with (rows done, rows to do). */
  onProgress?: (done: number, total: number) => void;
  /** Rows per forward pass (memory); default: `rowsPerPass` for the model with a 2 GB budget. */
  rowsPerPass?: number;
}

export interface EvalResult {
  /** Mean cross-entropy over every scored token (nats). */
  loss: number;
  perplexity: number;
  accuracy: number;
  /** Tokens scored. */
  masked_tokens: number;
  /** Non-padding tokens in the evaluated rows. */
  tokens: number;
  rows: number;
  seed: number;
  pseudo: boolean;
}

/** Batch -> int32 model inputs [B, T] (caller disposes, or creates them inside a tidy). */
export function batchInputs(
  tf: Tf,
  batch: MlmBatch,
): { inputIds: Tensor2D; attentionMask: Tensor2D; tokenTypeIds: Tensor2D; hostInputIds: Int32Array } {
  const shape: [number, number] = [batch.batchSize, batch.seqLen];
  return {
    hostInputIds: batch.inputIds,
    inputIds: tf.tensor2d(batch.inputIds, shape, 'int32'),
    attentionMask: tf.tensor2d(batch.attentionMask, shape, 'int32'),
    tokenTypeIds: tf.tensor2d(batch.tokenTypeIds, shape, 'int32'),
  };
}

/** Sum of the cross-entropy and count of top-1 hits over the labelled positions of one batch. */
async function scoreBatch(tf: Tf, model: MaskedLM, batch: MlmBatch, maxRows: number): Promise<{ lossSum: number; correct: number; count: number }> {
  let lossSum = 0;
  let correct = 0;
  let count = 0;
  for (const part of splitBatch(batch, maxRows)) {
    let n = 0;
    for (let i = 0; i < part.labels.length; i++) if (part.labels[i] !== IGNORE_INDEX) n++;
    if (n === 0) continue;
    const packed = tf.tidy(() => {
      const r = model.maskedLossSum(batchInputs(tf, part), part.labels, { training: false, accuracy: true });
      return tf.stack([r.loss, r.correct!]);
    });
    try {
      const [l, c] = await packed.data(); // one read per pass (async: webgpu-safe)
      lossSum += l;
      correct += c;
      count += n;
    } finally {
      packed.dispose();
    }
  }
  return { lossSum, correct, count };
}

function finish(lossSum: number, correct: number, count: number, tokens: number, rows: number, seed: number, pseudo: boolean): EvalResult {
  const loss = count > 0 ? lossSum / count : NaN;
  return {
    loss,
    perplexity: Math.exp(loss),
    accuracy: count > 0 ? correct / count : NaN,
    masked_tokens: count,
    tokens,
    rows,
    seed,
    pseudo,
  };
}

function rowsToDo(reader: SplitReader, opts: EvalOptions): number {
  return opts.maxBatches ? Math.min(reader.rows, opts.maxBatches * opts.batchSize) : reader.rows;
}

function checkEvalInput(reader: SplitReader, opts: EvalOptions): void {
  requireInteger(opts.batchSize, 'batch-size', 1);
  if (opts.maxBatches !== undefined) requireInteger(opts.maxBatches, 'max-batches', 0);
  requireSeed(opts.seed);
  if (reader.rows === 0) {
    throw new InputError(`the ${reader.split} split of ${reader.dir} has no rows; evaluate another split (--split) or prepare more data`);
  }
}

/** Masked-token loss, perplexity and accuracy over one split (see the file header). */
export async function evaluateMasked(tf: Tf, model: MaskedLM, reader: SplitReader, masking: MaskingSetup, opts: EvalOptions): Promise<EvalResult> {
  checkEvalInput(reader, opts);
  const stream = new RowStream(reader, { batchSize: opts.batchSize, seed: opts.seed, shuffle: false, dropLast: false });
  const rng = Rng.derive(opts.seed, EVAL_STREAM);
  const total = rowsToDo(reader, opts);
  const maxRows = opts.rowsPerPass ?? rowsPerPass(model.config, reader.seqLen, { training: false, budgetBytes: passBudgetBytes('wasm') });
  let lossSum = 0;
  let correct = 0;
  let count = 0;
  let tokens = 0;
  let rows = 0;
  for (let b = 0; !opts.maxBatches || b < opts.maxBatches; b++) {
    const raw = stream.next();
    if (raw === null) break;
    const T = raw.ids.length / raw.rows;
    const batch = maskTokens(raw.ids, T, masking.padId, masking.specials, masking.options, rng,
      masking.options.wholeWord ? raw.wordStarts : undefined);
    for (let i = 0; i < batch.attentionMask.length; i++) tokens += batch.attentionMask[i];
    const s = await scoreBatch(tf, model, batch, maxRows);
    lossSum += s.lossSum;
    correct += s.correct;
    count += s.count;
    rows += raw.rows;
    opts.onProgress?.(rows, total);
  }
  return finish(lossSum, correct, count, tokens, rows, opts.seed, false);
}

/** Pseudo-log-likelihood scoring over one split (see the file header). */
export async function evaluatePseudo(tf: Tf, model: MaskedLM, reader: SplitReader, masking: MaskingSetup, opts: EvalOptions): Promise<EvalResult> {
  checkEvalInput(reader, opts);
  const stream = new RowStream(reader, { batchSize: opts.batchSize, seed: opts.seed, shuffle: false, dropLast: false });
  const T = reader.seqLen;
  const B = opts.batchSize;
  const { padId, specials } = masking;
  const maskId = masking.options.maskTokenId;
  const total = rowsToDo(reader, opts);
  const maxRows = opts.rowsPerPass ?? rowsPerPass(model.config, T, { training: false, budgetBytes: passBudgetBytes('wasm') });

  // One batch of copies, filled row by row; flushed when full.
  const full: MlmBatch = allocMlmBatch(B, T);
  let filled = 0;
  let lossSum = 0;
  let correct = 0;
  let count = 0;
  let tokens = 0;
  let rows = 0;
  const flush = async (): Promise<void> => {
    if (filled === 0) return;
    const batch = filled === B ? full : sliceBatch(full, 0, filled);
    const s = await scoreBatch(tf, model, batch, maxRows);
    lossSum += s.lossSum;
    correct += s.correct;
    count += s.count;
    filled = 0;
  };

  for (let b = 0; !opts.maxBatches || b < opts.maxBatches; b++) {
    const raw = stream.next();
    if (raw === null) break;
    for (let r = 0; r < raw.rows; r++) {
      const row = raw.ids.subarray(r * T, (r + 1) * T);
      for (let t = 0; t < T; t++) {
        const id = row[t];
        if (id === padId) continue;
        tokens++;
        if (specials[id] !== 0) continue;
        // A copy of the row with position t masked; only t is scored.
        const base = filled * T;
        for (let k = 0; k < T; k++) {
          full.inputIds[base + k] = row[k];
          full.attentionMask[base + k] = row[k] === padId ? 0 : 1;
          full.labels[base + k] = IGNORE_INDEX;
        }
        full.inputIds[base + t] = maskId;
        full.labels[base + t] = id;
        filled++;
        if (filled === B) await flush();
      }
    }
    rows += raw.rows;
    opts.onProgress?.(rows, total);
  }
  await flush();
  return finish(lossSum, correct, count, tokens, rows, opts.seed, true);
}

// -------------------------------------------------------------------------------------------------
// Data for evaluation

/** A short name for a tokenizer in messages: its source and the start of its hash. */
export function describeTokenizer(source: string, sha256: string): string {
  return `${source || 'an in-memory tokenizer'} (sha256 ${sha256.slice(0, 12)})`;
}

/** InputError unless the prepared data was made with the model's tokenizer. */
export function checkDataTokenizer(manifest: Manifest, dataDir: string, tokenizer: MlmTokenizer, modelLabel: string): void {
  if (manifest.tokenizer.sha256 === tokenizer.sha256) return;
  throw new InputError(
    `the data in ${dataDir} was prepared with tokenizer ${describeTokenizer(manifest.tokenizer.source, manifest.tokenizer.sha256)} ` +
      `but the model ${modelLabel} uses ${describeTokenizer(tokenizer.source, tokenizer.sha256)}; ` +
      `prepare the data with --tokenizer MODEL_DIR (e.g. \`mlm prepare --model ${modelLabel} ...\`)`,
  );
}

export interface EvalData {
  /** What the user gave (a folder, or the raw-text paths). */
  label: string;
  reader: SplitReader;
  manifest: Manifest;
  prepared: boolean;
  /** Closes the files and removes a temporary folder. */
  close(): Promise<void>;
}

/**
 * The checks of `openEvalData` that need no model: `spec` is a prepared folder, or raw text paths
 * that resolve to files (InputError otherwise). The CLI runs it before it resolves (perhaps
 * downloads) the models; `log` gets the note on files of other types left out of raw text.
 */
export async function checkEvalData(spec: string, log?: (line: string) => void): Promise<void> {
  if (fs.existsSync(path.join(spec, MANIFEST))) return;
  refuseShardsWithoutManifest(spec);
  await resolveCorpusFiles([spec], log);
}

/** Shards with no manifest beside them (an interrupted `mlm prepare`) are not text to tokenize. */
function refuseShardsWithoutManifest(spec: string): void {
  if (fs.existsSync(spec) && fs.statSync(spec).isDirectory() && fs.readdirSync(spec).some((f) => /^(train|validation)-\d+\.bin$/.test(f))) {
    throw new InputError(`${spec} looks like prepared data but has no ${MANIFEST} (an interrupted \`mlm prepare\`?); prepare it again`);
  }
}

/**
 * The note for raw text cut into blocks shorter than --seq-len asked, at the model's positions
 * (each model of a comparison then scores other blocks, so other masks), or null.
 */
export function shorterBlocksNote(data: EvalData, seqLen: number, maxPositions: number, modelLabel: string): string | null {
  if (data.prepared || seqLen <= maxPositions) return null;
  return `note: ${data.label} is cut into blocks of ${maxPositions} tokens for ${modelLabel}, its positions, not the ${seqLen} of --seq-len`;
}

/**
 * Opens one data set for evaluation: a prepared folder (the `split` split) or raw text paths
 * (files, folders, globs: tokenized with `tokenizer` into `seqLen`-token blocks in a temporary
 * folder, every document scored). `maxPositions` is the model's usable sequence length; `log` gets
 * the text readers' notes (rows with no text, which are not scored).
 */
export async function openEvalData(
  spec: string,
  tokenizer: MlmTokenizer,
  opts: { split: SplitName; seqLen: number; maxPositions: number; modelLabel: string; version?: string; text?: RawTextOptions; log?: (line: string) => void },
): Promise<EvalData> {
  const isPrepared = fs.existsSync(path.join(spec, MANIFEST));
  if (isPrepared) {
    const manifest = await readManifest(spec);
    checkDataTokenizer(manifest, spec, tokenizer, opts.modelLabel);
    if (manifest.seq_len > opts.maxPositions) {
      throw new InputError(`${spec} holds rows of ${manifest.seq_len} tokens, more than the model's ${opts.maxPositions} positions; prepare it with --seq-len ${opts.maxPositions} or less`);
    }
    const reader = new SplitReader(spec, manifest, opts.split);
    return { label: spec, reader, manifest, prepared: true, close: async () => reader.close() };
  }
  refuseShardsWithoutManifest(spec); // the text paths are resolved by prepare below
  const seqLen = Math.min(opts.seqLen, opts.maxPositions);
  const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'mlmkit-eval-'));
  const out = path.join(tmp, 'data');
  // Also when the process ends before close() (Ctrl-C: scripts/interrupt.ts exits at once).
  const removeAtExit = () => fs.rmSync(tmp, { recursive: true, force: true });
  process.on('exit', removeAtExit);
  const remove = async () => {
    process.removeListener('exit', removeAtExit);
    await fsp.rm(tmp, { recursive: true, force: true });
  };
  try {
    const result = await prepare({
      corpus: [spec],
      tokenizer,
      tokenizerSource: tokenizer.source,
      out,
      seqLen,
      mode: 'blocks',
      ...opts.text,
      validationSplit: 0, // every document goes to the one split that is scored
      seed: 0,
      overwrite: false,
      log: () => {}, // prepare's warnings speak of training, not of this use
      readerLog: opts.log, // rows with no text, left out of the score
      progress: false,
      version: opts.version,
    });
    const reader = new SplitReader(out, result.manifest, 'train');
    return {
      label: spec,
      reader,
      manifest: result.manifest,
      prepared: false,
      close: async () => {
        reader.close();
        await remove();
      },
    };
  } catch (err) {
    await remove();
    throw err;
  }
}
