// `mlm prepare`: corpus -> tokenized, fixed-length rows in token shards + manifest.json
// (docs/formats.md, "Prepared data"). Memory stays flat in the corpus size: documents stream from the readers,
// are tokenized in batches of about 1 MB (the native tokenizer runs while the next batch is read),
// and rows go straight to shard files.
//
// Modes
//   blocks: documents are concatenated with [SEP] (</s>) after each one and cut into rows of
//           seq_len tokens, each row starting with [CLS] (<s>). A document that fills its row to
//           the end gets no [SEP]: the row's end separates it, and so every row holds text right
//           after its [CLS]. The tail row is padded, never dropped, so a small corpus still gives
//           one example.
//           Porting note: transformers' run_mlm.py `group_texts` drops the remainder, which turns
//           a corpus smaller than one block into an empty dataset without a word.
//   lines:  every non-blank line of a document is one example, [CLS] line [SEP], truncated to
//           seq_len and padded.
//
// Output is written into a temporary sibling folder and renamed onto --out when complete, so an
// interrupted run leaves no manifest that claims complete data. Nothing depends on time or
// on the machine, so two runs over the same inputs give byte-identical folders. The manifest keeps
// the SHA-256 of every input's whole content, so a rerun notices an input edited since (even to the
// same size). Aborting `signal` (Ctrl-C in the CLI) stops between batches and removes the temporary
// folder.
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import * as aq from 'arquero';
import { removeStaleTemps, writeFolderAtomic } from '../common/atomic.ts';
import { firstNames, InputError, requireChoice, requireSeed } from '../common/errors.ts';
import { chooseValidation, isPlainTextFile, readDocuments, resolveCorpusFiles, sortedHas, totalBytes, unreadableCorpusFile, type CorpusOptions } from './corpus.ts';
import { corpusInputs, realPathOf, refuseForeignEntries, refuseOutputOverInputs, type NamedInput } from './paths.ts';
import { MLM_PROBABILITY } from './masking.ts';
import { formatTable, Progress } from './progress.ts';
import {
  dtypeFor, fileSha256, FORMAT, FORMAT_VERSION, MANIFEST, ShardWriter,
  type Manifest, type PrepareMode, type SplitInfo, type SplitName, type TokenDtype,
} from './shards.ts';
import type { EncodedText, MlmTokenizer } from './tokenizer.ts';

export interface PrepareOptions extends CorpusOptions {
  corpus: string[];
  tokenizer: MlmTokenizer;
  tokenizerSource: string;            // as the user named it (folder or Hub id)
  tokenizerRevision?: string | null;
  inputFolders?: NamedInput[];        // folders read besides the corpus (the tokenizer's, the model's): --out may not touch them
  out: string;
  seqLen: number;
  mode: PrepareMode;
  validationSplit: number;            // fraction of documents, used when `validation` is absent
  validation?: string[];              // a given held-out set instead of a split
  seed: number;
  overwrite: boolean;
  maxPositions?: number;              // the model's usable positions, when a model is given
  log: (line: string) => void;        // warnings and notes (stderr)
  readerLog?: (line: string) => void; // the text readers' notes (rows with no text); default: log
  progress: boolean;
  batchBytes?: number;                // text per tokenizer call (default 1 MB)
  shardBytes?: number;                // token bytes per shard (default 64 MiB)
  version?: string;                   // written as created_by
  signal?: AbortSignal;               // aborting stops the run between batches: PrepareInterrupted, nothing written
}

/** Thrown when `signal` aborts a run; the temporary folder is gone and --out is as it was. */
export class PrepareInterrupted extends Error {
  constructor(readonly out: string) {
    super(`interrupted; nothing written to ${out}`);
    this.name = 'PrepareInterrupted';
  }
}

export interface PrepareResult {
  manifest: Manifest;
  reused: boolean;
  summary: string;                    // the summary table, Markdown
  seconds: number;
  bytes: number;
}

/** Runs the whole preparation. Throws InputError for bad input, before anything is written. */
export async function prepare(opts: PrepareOptions): Promise<PrepareResult> {
  const t0 = performance.now();
  checkPrepareOptions(opts);
  const trainFiles = await resolveCorpusFiles(opts.corpus, opts.log);
  const validFiles = opts.validation ? await resolveCorpusFiles(opts.validation, opts.log) : [];
  const allFiles = [...trainFiles, ...validFiles];
  // Held-out text that is also trained on would make the validation loss meaningless.
  const trainReal = new Set(trainFiles.map((f) => realPathOf(f)));
  const both = validFiles.find((f) => trainReal.has(realPathOf(f)));
  if (both !== undefined) {
    throw new InputError(`${both} is in --validation and also in --corpus: held-out text must not be trained on; leave it out of --corpus (a folder of its own, or a glob that skips it)`);
  }
  refuseOutputOverInputs(opts.out, [
    ...corpusInputs(opts.corpus, trainFiles, '--corpus'),
    ...corpusInputs(opts.validation ?? [], validFiles, '--validation'),
    ...(opts.inputFolders ?? []),
  ]);
  const inputs = [];
  for (const p of allFiles) {
    try {
      inputs.push({ path: p, bytes: (await fsp.stat(p)).size, sha256: await fileSha256(p) });
    } catch (err) {
      throw unreadableCorpusFile(p, err) ?? err;
    }
  }
  // A copy of a training file given as held-out text (same bytes, another path) is the same mistake.
  const trainSums = new Map(inputs.slice(0, trainFiles.length).filter((f) => f.bytes > 0).map((f) => [f.sha256, f.path]));
  const copy = inputs.slice(trainFiles.length).find((f) => trainSums.has(f.sha256));
  if (copy !== undefined) {
    throw new InputError(`${copy.path} (--validation) has the same content as ${trainSums.get(copy.sha256)} (--corpus): held-out text must not be trained on; give other text as --validation`);
  }
  const tok = opts.tokenizer;
  const dtype = dtypeFor(tok.vocabSize);

  const skeleton: Omit<Manifest, 'splits'> = {
    format: FORMAT,
    version: FORMAT_VERSION,
    created_by: `mlmkit ${opts.version ?? ''}`.trim(),
    tokenizer: {
      source: opts.tokenizerSource,
      revision: opts.tokenizerRevision ?? null,
      sha256: tok.sha256,
      family: tok.family,
      vocab_size: tok.vocabSize,
      pad_token_id: tok.specialIds.pad,
      cls_token_id: tok.specialIds.cls,
      sep_token_id: tok.specialIds.sep,
      mask_token_id: tok.specialIds.mask,
      unk_token_id: tok.specialIds.unk,
    },
    seq_len: opts.seqLen,
    mode: opts.mode,
    dtype,
    seed: opts.seed,
    validation: opts.validation ? { files: validFiles } : { split: opts.validationSplit },
    options: {
      split_paragraphs: Boolean(opts.splitParagraphs),
      text_field: opts.textField ?? 'text',
      on_invalid_utf8: opts.onInvalidUtf8 ?? 'error',
    },
    inputs,
  };

  const stopIfAborted = () => {
    if (opts.signal?.aborted) throw new PrepareInterrupted(opts.out);
  };
  const reused = await checkOutputFolder(opts.out, skeleton, opts.overwrite);
  if (reused) {
    return { manifest: reused, reused: true, summary: summaryTable(reused), seconds: 0, bytes: 0 };
  }

  // Pass 1 (only for a split of the corpus itself): count documents, so that the validation
  // set is an exact, seeded share of them. It also reports bad input before any work is done.
  // With --validation-split 0 nothing is held out and the corpus is read once.
  const corpusOpts: CorpusOptions = { splitParagraphs: opts.splitParagraphs, textField: opts.textField, onInvalidUtf8: opts.onInvalidUtf8 };
  let isValidation: (docIndex: number) => boolean = () => false;
  let trainDocs = 0;
  // The readers' notes (rows with no text) come once per file: from the first pass that reads it.
  const scanned = !opts.validation && opts.validationSplit > 0;
  if (scanned) {
    const counter = new Progress({ label: 'prepare: scanning', unit: 'bytes', total: await totalBytes(trainFiles), enabled: opts.progress });
    let bytes = 0;
    const log = (line: string) => {
      counter.clear();
      (opts.readerLog ?? opts.log)(line);
    };
    for await (const doc of readDocuments(trainFiles, { ...corpusOpts, log })) {
      stopIfAborted();
      trainDocs++;
      bytes += doc.bytes;
      counter.update(bytes, `${trainDocs} documents`);
    }
    counter.complete(`${trainDocs} documents`);
    if (trainDocs === 0) throw new InputError(`corpus is empty: no non-blank document in ${trainFiles.join(', ')}; check --text-field or the files`);
    const chosen = chooseValidation(trainDocs, opts.validationSplit, opts.seed);
    isValidation = (i) => chosen.has(i);
    if (opts.validationSplit > 0 && chosen.size === 0) {
      opts.log(`warning: the corpus has ${trainDocs} document(s), too few to hold out a validation split; the validation split is empty${fewDocumentsAdvice(trainFiles, opts)}`);
    }
  }

  await removeStaleTemps(opts.out, 'prepare'); // left by a killed run
  const total = inputs.reduce((s, f) => s + f.bytes, 0);
  let manifest: Manifest | null = null;
  await writeFolderAtomic(opts.out, async (tmp) => {
    const builders: Record<SplitName, RowBuilder> = {
      train: new RowBuilder(tmp, 'train', opts, dtype),
      validation: new RowBuilder(tmp, 'validation', opts, dtype),
    };
    const bar = new Progress({ label: 'prepare: tokenizing', unit: 'bytes', total, enabled: opts.progress });
    const batchBytes = opts.batchBytes ?? 1 << 20;
    let bytesDone = 0;

    // One batch is tokenized (native threads) while the next one is read.
    let batch: { text: string; split: SplitName; newDoc: boolean }[] = [];
    let batchLen = 0;
    let pending: Promise<void> = Promise.resolve();
    const flush = async () => {
      const items = batch;
      batch = [];
      batchLen = 0;
      const encoded = tok.encodeBatch(items.map((x) => x.text));
      await pending;
      pending = encoded.then((enc: EncodedText[]) => {
        for (let i = 0; i < items.length; i++) builders[items[i].split].add(enc[i], items[i].newDoc);
      });
      // Surface a rejected encode at once rather than at the next flush.
      pending.catch(() => undefined);
    };

    // Documents held out that are also trained on, word for word (a corpus with duplicates, split
    // by document): a digest of each document, 8 bytes in a flat array, compared at the end for a
    // warning.
    const seen: Record<SplitName, DigestList> = { train: new DigestList(), validation: new DigestList() };

    const sources: { files: string[]; split: SplitName | null }[] = opts.validation
      ? [{ files: trainFiles, split: 'train' }, { files: validFiles, split: 'validation' }]
      : [{ files: trainFiles, split: null }];
    const log = (line: string) => {
      bar.clear();
      (opts.readerLog ?? opts.log)(line);
    };
    for (const source of sources) {
      let docIndex = 0;
      let docsHere = 0;
      for await (const doc of readDocuments(source.files, { ...corpusOpts, log: scanned ? undefined : log })) {
        stopIfAborted();
        const split: SplitName = source.split ?? (isValidation(docIndex) ? 'validation' : 'train');
        docIndex++;
        docsHere++;
        seen[split].add(documentDigest(doc.text));
        const pieces = opts.mode === 'lines' ? nonBlankLines(doc.text) : [doc.text];
        let first = true;
        for (const text of pieces) {
          batch.push({ text, split, newDoc: first });
          first = false;
          batchLen += text.length;
        }
        if (pieces.length === 0) builders[split].emptyDocument();
        bytesDone += doc.bytes;
        if (batchLen >= batchBytes) {
          await flush();
          bar.update(bytesDone, `${builders.train.info.tokens + builders.validation.info.tokens} tokens`);
        }
      }
      if (docsHere === 0) {
        const which = source.split === 'validation' ? 'validation set' : 'corpus';
        throw new InputError(`${which} is empty: no non-blank document in ${source.files.join(', ')}; check --text-field or the files`);
      }
    }
    if (batch.length) await flush();
    await pending;
    stopIfAborted();
    bar.complete(`${builders.train.info.tokens + builders.validation.info.tokens} tokens`);

    const splits = { train: builders.train.finish(), validation: builders.validation.finish() };
    warnSmall(splits, opts);
    const heldOut = seen.validation.distinct();
    const trained = seen.train.distinct();
    const shared = heldOut.filter((h) => sortedHas(trained, h)).length;
    if (shared > 0) {
      opts.log(`warning: ${shared} of the ${heldOut.length} distinct held-out documents are copies of training documents (the same length and the same first and last 256 characters: the corpus holds duplicates); the validation loss will be optimistic: remove the duplicates from the corpus`);
    }
    manifest = { ...skeleton, splits };
    await fsp.writeFile(path.join(tmp, MANIFEST), JSON.stringify(manifest, null, 2) + '\n');
  }, 'prepare');
  const seconds = (performance.now() - t0) / 1000;
  return { manifest: manifest!, reused: false, summary: summaryTable(manifest!), seconds, bytes: total };
}

/**
 * Refuses unusable options (InputError naming the CLI flag). Needs no files: `prepare` calls it
 * first, and the CLI before it fetches a Hub tokenizer (the model's positions are checked once known).
 */
export function checkPrepareOptions(opts: Pick<PrepareOptions, 'seqLen' | 'maxPositions' | 'validationSplit' | 'seed'> & { mode?: string }): void {
  const { seqLen } = opts;
  if (opts.mode !== undefined) requireChoice(opts.mode, ['blocks', 'lines'], 'mode');
  if (!Number.isInteger(seqLen) || seqLen < 8 || seqLen > 1 << 16) {
    throw new InputError(`--seq-len must be an integer between 8 and 65536, got ${seqLen}`);
  }
  if (opts.maxPositions !== undefined && seqLen > opts.maxPositions) {
    throw new InputError(`--seq-len ${seqLen} is above the model's ${opts.maxPositions} positions (max_position_embeddings); use --seq-len ${opts.maxPositions} or less`);
  }
  if (!(opts.validationSplit >= 0 && opts.validationSplit < 1)) {
    throw new InputError(`--validation-split must be in [0, 1), got ${opts.validationSplit}`);
  }
  requireSeed(opts.seed);
}

/**
 * Why a corpus may hold fewer documents than expected, and what to do: a .txt file is one
 * document unless --split-paragraphs, and the split stays by document with --line-by-line
 * (Hugging Face's run_mlm --line_by_line splits lines instead).
 */
function fewDocumentsAdvice(files: string[], opts: Pick<PrepareOptions, 'splitParagraphs' | 'mode'>): string {
  const wholeText = !opts.splitParagraphs && files.some(isPlainTextFile);
  const why = [
    ...(wholeText ? ['a .txt file is one document unless --split-paragraphs (one per blank-line-separated paragraph)'] : []),
    ...(opts.mode === 'lines' ? ['with --line-by-line the split is still by document, not by line'] : []),
  ];
  const todo = wholeText ? 'pass --split-paragraphs, or give --validation FILES for a held-out set' : 'give --validation FILES for a held-out set';
  return why.length > 0 ? `: ${why.join(', and ')}; ${todo}` : ` (${todo})`;
}

/** Splits a document into its non-blank lines (lines mode). */
function nonBlankLines(text: string): string[] {
  return text.split(/\r?\n|\r/).filter((line) => /\S/.test(line));
}

/** Accumulates tokenized documents into fixed-length rows for one split. */
class RowBuilder {
  readonly info: SplitInfo = { documents: 0, rows: 0, tokens: 0, words: 0, unknown_tokens: 0, truncated: 0, shards: [] };
  private readonly writer: ShardWriter;
  private readonly row: Uint32Array;
  private readonly words: Uint8Array;
  private pos = 0;
  private readonly T: number;
  private readonly cls: number;
  private readonly sep: number;
  private readonly pad: number;
  private readonly unk: number;

  constructor(dir: string, split: SplitName, private readonly opts: PrepareOptions, dtype: TokenDtype) {
    this.T = opts.seqLen;
    this.writer = new ShardWriter(dir, split, opts.seqLen, dtype, opts.shardBytes);
    this.row = new Uint32Array(this.T);
    this.words = new Uint8Array(this.T);
    const s = opts.tokenizer.specialIds;
    this.cls = s.cls;
    this.sep = s.sep;
    this.pad = s.pad;
    this.unk = s.unk;
    this.startRow();
  }

  /** A document with no example in it (lines mode: only blank lines). */
  emptyDocument(): void {
    this.info.documents++;
  }

  add(enc: EncodedText, newDoc: boolean): void {
    if (newDoc) this.info.documents++;
    const { ids, wordStarts } = enc;
    // A line keeps at most seq_len - 2 tokens; the counts are of the tokens written.
    const kept = this.opts.mode === 'lines' ? Math.min(ids.length, this.T - 2) : ids.length;
    this.info.tokens += kept;
    for (let i = 0; i < kept; i++) {
      if (ids[i] === this.unk) this.info.unknown_tokens++;
      this.info.words += wordStarts[i];
    }
    if (this.opts.mode === 'lines') {
      const n = kept;
      if (n < ids.length) this.info.truncated++;
      this.row.set(ids.subarray(0, n), 1);
      this.words.set(wordStarts.subarray(0, n), 1);
      this.row[1 + n] = this.sep;
      this.words[1 + n] = 0;
      this.pos = 2 + n;
      this.emitPadded();
      return;
    }
    let off = 0;
    while (off < ids.length) {
      const n = Math.min(ids.length - off, this.T - this.pos);
      this.row.set(ids.subarray(off, off + n), this.pos);
      this.words.set(wordStarts.subarray(off, off + n), this.pos);
      this.pos += n;
      off += n;
      if (this.pos === this.T) this.emit();
    }
    // A document that ended a row is separated from the next by the row's end: its [SEP] would
    // open the next row ([CLS] [SEP] ...) or, at the end of the corpus, make a row with no text.
    if (this.pos > 1) this.push(this.sep, 0);
  }

  finish(): SplitInfo {
    if (this.opts.mode === 'blocks' && this.pos > 1) this.emitPadded();
    this.info.shards = this.writer.finish();
    this.info.rows = this.writer.rows;
    return this.info;
  }

  private push(id: number, wordStart: number): void {
    this.row[this.pos] = id;
    this.words[this.pos] = wordStart;
    this.pos++;
    if (this.pos === this.T) this.emit();
  }

  private emitPadded(): void {
    this.row.fill(this.pad, this.pos);
    this.words.fill(0, this.pos);
    this.pos = this.T;
    this.emit();
  }

  private emit(): void {
    this.writer.writeRow(this.row, this.words);
    this.startRow();
  }

  private startRow(): void {
    this.row[0] = this.cls;
    this.words[0] = 0;
    this.pos = 1;
  }
}

/**
 * A 52-bit digest of a document for the duplicate count: its length and its first and last 256
 * characters, through two 32-bit FNV-1a lanes with different offsets. Sampling keeps it cheap on
 * the reading thread (an md5 of every whole document slowed a 1 GB prepare by 15-25%); two
 * documents of the same length that agree on both ends are taken for one, which is what a copy is.
 */
export function documentDigest(text: string): number {
  let a = 0x811c9dc5 ^ text.length;
  let b = 0x01000193 ^ Math.imul(text.length, 0x9e3779b1);
  const mix = (c: number) => {
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
  };
  if (text.length <= 512) {
    for (let i = 0; i < text.length; i++) mix(text.charCodeAt(i));
  } else {
    for (let i = 0; i < 256; i++) mix(text.charCodeAt(i));
    for (let i = text.length - 256; i < text.length; i++) mix(text.charCodeAt(i));
  }
  return (a >>> 0) * 0x100000 + ((b >>> 0) & 0xfffff);
}

/** A growing list of document digests (whole numbers below 2^52, exact in a float64). */
class DigestList {
  private data = new Float64Array(1024);
  private n = 0;

  add(h: number): void {
    if (this.n === this.data.length) {
      const next = new Float64Array(this.data.length * 2);
      next.set(this.data);
      this.data = next;
    }
    this.data[this.n++] = h;
  }

  /** The digests sorted, each once. */
  distinct(): Float64Array {
    const sorted = this.data.slice(0, this.n).sort();
    let k = 0;
    for (let i = 0; i < sorted.length; i++) if (i === 0 || sorted[i] !== sorted[i - 1]) sorted[k++] = sorted[i];
    return sorted.subarray(0, k);
  }
}

/** Below this many masked tokens an evaluation's loss has a standard error of about 0.08 or more. */
const SMALL_EVAL_MASKED = 1000;

function warnSmall(splits: Record<SplitName, SplitInfo>, opts: PrepareOptions): void {
  const train = splits.train;
  if (opts.mode === 'blocks' && train.tokens + train.documents < opts.seqLen - 1) {
    opts.log(`warning: the training split has ${train.tokens} tokens, less than one block of ${opts.seqLen}; it was kept as ${train.rows} padded block (a bigger corpus or a smaller --seq-len gives real training data)`);
  } else if (train.rows < 32) {
    opts.log(`warning: the training split has only ${train.rows} rows of ${opts.seqLen} tokens; training will repeat them many times`);
  }
  const held = splits.validation;
  if (held.rows === 0 && (opts.validation || opts.validationSplit > 0)) {
    opts.log('warning: the validation split is empty; `mlm train` will not be able to evaluate on it');
  } else if (held.rows > 0 && held.tokens * MLM_PROBABILITY < SMALL_EVAL_MASKED) {
    // The loss is a mean over the masked tokens: its standard error is the per-token spread over
    // the square root of their count (a spread of ~2.5 nats is typical of a model in training).
    const masked = Math.max(1, Math.round(held.tokens * MLM_PROBABILITY));
    opts.log(`note: the validation split has ${held.tokens} tokens, so an evaluation masks about ${masked} of them (${+(100 * MLM_PROBABILITY).toFixed(2)}%): its loss is a rough figure (standard error ~${(2.5 / Math.sqrt(masked)).toFixed(2)} at a typical spread of 2.5 nats a token); hold out more text (a larger --validation-split, or --validation FILES) for figures that tell models apart`);
  }
  if (splits.train.truncated + splits.validation.truncated > 0) {
    opts.log(`note: ${splits.train.truncated + splits.validation.truncated} line(s) were longer than ${opts.seqLen - 2} tokens and were truncated`);
  }
}

/** The end-of-run table: documents, tokens, rows, unknown-token rate, tokens per word. */
export function summaryTable(m: Manifest): string {
  const names = ['train', 'validation'] as const;
  const s = names.map((n) => m.splits[n]);
  const table = aq
    .table({
      split: [...names],
      documents: s.map((x) => x.documents),
      tokens: s.map((x) => x.tokens),
      words: s.map((x) => x.words),
      unknown: s.map((x) => x.unknown_tokens),
      [m.mode === 'blocks' ? 'blocks' : 'examples']: s.map((x) => x.rows),
    })
    .derive({
      unk_rate: (d: { unknown: number; tokens: number }) => (d.tokens > 0 ? d.unknown / d.tokens : 0),
      tokens_per_word: (d: { words: number; tokens: number }) => (d.words > 0 ? d.tokens / d.words : 0),
    })
    .select(aq.not('words', 'unknown'));
  return formatTable(table.objects() as Record<string, unknown>[], { unk_rate: 5, tokens_per_word: 3 });
}

/** The names a prepared-data folder holds (data/shards.ts): --overwrite replaces only such a folder. */
function isPreparedEntry(name: string, isDir: boolean): boolean {
  return !isDir && (name === MANIFEST || /^(train|validation)-\d{5}(\.words)?\.bin$/.test(name));
}

/**
 * Decides what to do with an existing --out. Returns the existing manifest when it was made
 * from the same inputs and options (the run is a no-op), null when the folder may be written:
 * it is new or empty, or --overwrite is given and it holds prepared data and nothing else.
 */
async function checkOutputFolder(out: string, wanted: Omit<Manifest, 'splits'>, overwrite: boolean): Promise<Manifest | null> {
  let entries: string[];
  try {
    const st = await fsp.stat(out);
    if (!st.isDirectory()) throw new InputError(`--out ${out} is a file, not a folder; choose another --out`);
    entries = await fsp.readdir(out);
  } catch (err) {
    if (err instanceof InputError) throw err;
    return null;
  }
  if (entries.length === 0) return null;
  let existing: Manifest | null = null;
  if (entries.includes(MANIFEST)) {
    try {
      const m = JSON.parse(await fsp.readFile(path.join(out, MANIFEST), 'utf8')) as Manifest;
      if (m !== null && typeof m === 'object' && m.format === FORMAT) existing = m;
    } catch {
      // Not a manifest of ours (or damaged): the folder holds no prepared data mlm can vouch for.
    }
  }
  if (!existing) {
    // A damaged manifest among shard files: a prepared folder all the same, which --overwrite replaces.
    if (overwrite && entries.includes(MANIFEST) && entries.every((e) => isPreparedEntry(e, false))) return null;
    const shown = firstNames(entries);
    throw new InputError(`--out ${out} is not empty and holds no prepared data (${shown}); choose an empty or new folder (--overwrite replaces only a prepared-data folder)`);
  }
  const differences = manifestDifferences(existing, wanted);
  if (!overwrite && differences.length === 0) return existing;
  // The folder is to be replaced (now, or with --overwrite next time): only prepared data may be there.
  refuseForeignEntries(out, isPreparedEntry, 'prepared-data folder');
  if (overwrite) return null;
  const why = differences.length > 0 ? ` (${differences.join('; ')})` : '';
  throw new InputError(`--out ${out} holds data prepared with other inputs or options${why}; pass --overwrite to replace it, or choose another --out`);
}

type Input = Manifest['inputs'][number];

/**
 * What makes a prepared folder's data differ from what `wanted` would write, in the words of the
 * options (`--seq-len 16 then, 24 now`, an input added, removed or changed); empty when the data
 * would be the same. Paths are kept in the manifest as given, relative to the folder the command
 * ran in, so they are not compared: the inputs are the same when the same contents (size and
 * SHA-256) come in the same order, as many of them held out; the tokenizer is the same when its
 * hash is, however it was named. So the same prepare run from another folder is still a no-op.
 */
function manifestDifferences(have: Manifest, want: Omit<Manifest, 'splits'>): string[] {
  const out: string[] = [];
  const option = (name: string, then: unknown, now: unknown) => {
    if (JSON.stringify(then) !== JSON.stringify(now)) out.push(`${name} ${String(then)} then, ${String(now)} now`);
  };
  if (have.format !== want.format || have.version !== want.version) out.push(`written as ${have.format} version ${have.version}`);
  const { source: _a, revision: _b, ...tokHave } = have.tokenizer ?? ({} as Manifest['tokenizer']);
  const { source: _c, revision: _d, ...tokWant } = want.tokenizer;
  if (JSON.stringify(tokHave) !== JSON.stringify(tokWant)) out.push(`another tokenizer (${have.tokenizer?.source ?? '?'} then, ${want.tokenizer.source} now)`);
  option('--seq-len', have.seq_len, want.seq_len);
  option('--line-by-line', have.mode === 'lines', want.mode === 'lines');
  if (have.dtype !== want.dtype && have.tokenizer?.sha256 === want.tokenizer.sha256) out.push(`token ids stored as ${have.dtype}`);
  option('--seed', have.seed, want.seed);
  const heldFiles = (v: Manifest['validation']) => ('files' in v ? v.files.length : -1);
  if ('split' in have.validation && 'split' in want.validation) option('--validation-split', have.validation.split, want.validation.split);
  else if (heldFiles(have.validation) !== heldFiles(want.validation)) {
    const describe = (v: Manifest['validation']) => ('files' in v ? `--validation with ${v.files.length} file(s)` : `--validation-split ${v.split}`);
    out.push(`${describe(have.validation)} then, ${describe(want.validation)} now`);
  }
  const names: Record<string, string> = { split_paragraphs: '--split-paragraphs', text_field: '--text-field', on_invalid_utf8: '--on-invalid-utf8' };
  for (const key of new Set([...Object.keys(have.options ?? {}), ...Object.keys(want.options)])) {
    option(names[key] ?? key, have.options?.[key], want.options[key]);
  }
  out.push(...inputDifferences(have.inputs ?? [], want.inputs));
  return out;
}

/** The inputs added, removed or changed (see manifestDifferences); empty when the same. */
function inputDifferences(then: Input[], now: Input[]): string[] {
  const content = (f: Input) => `${f.bytes}:${f.sha256}`;
  if (then.length === now.length && then.every((f, i) => content(f) === content(now[i]))) return [];
  // For the message only: the same file named from another folder ends with the other's spelling
  // ("c.txt" then, "sub/c.txt" now).
  const parts = (p: string) => path.normalize(p).split(path.sep).filter((x) => x !== '' && x !== '.' && x !== '..');
  const sameFile = (a: string, b: string) => {
    if (path.resolve(a) === path.resolve(b)) return true;
    const [x, y] = [parts(a), parts(b)];
    const n = Math.min(x.length, y.length);
    return n > 0 && x.slice(-n).join('/') === y.slice(-n).join('/');
  };
  const out: string[] = [];
  const changed = now.filter((f) => then.some((g) => sameFile(g.path, f.path) && content(g) !== content(f)));
  if (changed.length > 0) out.push(`${firstNames(changed.map((f) => f.path))} changed since it was prepared`);
  // Contents are matched as multisets: a copy of a file given beside it is one input more.
  const unmatched = (from: Input[], against: Input[]) => {
    const left = new Map<string, number>();
    for (const g of against) left.set(content(g), (left.get(content(g)) ?? 0) + 1);
    return from.filter((f) => {
      const n = left.get(content(f)) ?? 0;
      left.set(content(f), n - 1);
      return n <= 0;
    });
  };
  const added = unmatched(now, then).filter((f) => !changed.includes(f));
  const removed = unmatched(then, now).filter((g) => !changed.some((f) => sameFile(g.path, f.path)));
  if (added.length > 0) out.push(`input ${firstNames(added.map((f) => f.path))} added`);
  if (removed.length > 0) out.push(`input ${firstNames(removed.map((f) => f.path))} (as named then) no longer given`);
  if (out.length === 0) out.push('the inputs come in another order, or another share of them is held out');
  return out;
}
