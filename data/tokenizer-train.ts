// Trains a tokenizer vocabulary on a corpus: WordPiece for the bert family, byte-level BPE for the
// roberta family. The result is a tokenizer.json that the `tokenizers` bindings load and use.
//
// Why our own trainer: the Node bindings expose `Tokenizer.train(files)` but not the trainer's
// options, so the vocabulary size could not be chosen. This file follows Hugging Face's BpeTrainer
// (tokenizers/src/models/bpe/trainer.rs), which WordPieceTrainer also runs with a '##'
// continuing-subword prefix:
//   1. count the words: documents are cut into pieces by the exact cut rules of the encoding path
//      (tokenizer.ts, pushTextPieces), the pieces are counted, and each distinct piece is
//      normalised and pre-tokenised once by the bindings' own normaliser and pre-tokeniser (taken
//      from a tokenizer.json with the final pipeline), so training sees exactly the words encoding
//      will see;
//   2. vocabulary = special tokens, then the alphabet (every character seen, by code point), then
//      (WordPiece) '##' + every character seen inside a word, by code point;
//   3. count adjacent symbol pairs over the distinct words, weighted by word frequency, and remember
//      which words hold each pair;
//   4. repeatedly merge the most frequent pair (ties: the smaller (left id, right id) first) in the
//      words that hold it, updating the pair counts incrementally; a max-heap with lazy
//      re-validation picks the next pair; stop at the vocabulary size, or when the best pair occurs
//      fewer than minFrequency times.
//
// Porting notes (deliberate differences from the Hugging Face trainers):
// - Deterministic: ids of '##' pieces are assigned by code point, not in hash-map order, so one
//   corpus always gives a byte-identical tokenizer.json.
// - Each pair keeps one complete list of the words holding it, so a merge applies to all of them at
//   once; a pair that reappears later (a merge can rebuild an existing token) is merged again but
//   listed once, so merges.txt has no duplicate lines.
// - WordPiece: words longer than 100 characters (WordPiece's max_input_chars_per_word, encoded as
//   [UNK]) and words with a character outside a limited alphabet (also [UNK]) are not trained on.
// - No alphabet limit by default (BertWordPieceTokenizer.train uses limit_alphabet=1000).

import { Tokenizer, byteLevelAlphabet, type Normalizer, type PreTokenizer } from 'tokenizers';
import { InputError, check } from '../common/errors.ts';
import {
  AddedTokenGuard,
  DEFAULT_SPECIALS,
  MlmTokenizer,
  addedToken,
  detach,
  pushTextPieces,
  type ChunkKind,
  bertTokenizerJson,
  robertaTokenizerJson,
  type SpecialTokens,
  type TokenizerFamily,
} from './tokenizer.ts';

export interface TrainTokenizerOptions {
  family: TokenizerFamily;
  /** Target vocabulary size, special tokens included. */
  vocabSize: number;
  /** bert: BertNormalizer lowercase; roberta: adds a Lowercase normaliser (off in RoBERTa). */
  lowercase: boolean;
  /** Pairs seen fewer times than this are not merged (default 2, as in Hugging Face). */
  minFrequency?: number;
  /** bert only; default: follow `lowercase` (BertNormalizer strip_accents=None). */
  stripAccents?: boolean;
  /** bert only: keep only the N most frequent characters in the alphabet (default: all). */
  limitAlphabet?: number;
  /** Called now and then while counting (per ~4 MB) and merging (per 1,000 merges). */
  onProgress?: (p: TrainProgress) => void;
}

export interface TrainProgress {
  phase: 'count' | 'merge';
  documents: number;
  characters: number;
  vocab: number;
}

export interface TrainTokenizerResult {
  tokenizer: MlmTokenizer;
  /** The size reached; smaller than requested when the corpus ran out of pairs (warn the user). */
  vocabSize: number;
  requestedVocabSize: number;
  /** Why merging stopped. */
  stoppedBecause: 'vocab-size' | 'min-frequency' | 'no-pairs';
  merges: number;
  /** Base symbols: characters (and '##' continuations for WordPiece, 256 bytes for BPE). */
  alphabetSize: number;
  documents: number;
  /** UTF-16 code units read. */
  characters: number;
  words: number;
  distinctWords: number;
  countSeconds: number;
  mergeSeconds: number;
}

/** Largest vocabulary the pair keys can address (two ids packed in one double). */
const MAX_VOCAB = 1 << 21;
const PAIR_SHIFT = 1 << 21;
const WORDPIECE_MAX_CHARS = 100;

function specialsList(family: TokenizerFamily): string[] {
  const s = DEFAULT_SPECIALS[family];
  // Hugging Face conventions for freshly trained tokenizers.
  return family === 'bert' ? [s.pad, s.unk, s.cls, s.sep, s.mask] : [s.cls, s.pad, s.sep, s.unk, s.mask];
}

/** tokenizer.json text for a trained vocabulary (ids = positions in `vocab`). */
function buildJson(family: TokenizerFamily, vocab: string[], merges: Array<[string, string]>, opts: TrainTokenizerOptions): string {
  const s: SpecialTokens = DEFAULT_SPECIALS[family];
  const ids = new Map(vocab.map((t, i) => [t, i]));
  const specials = { ...s, clsId: ids.get(s.cls)!, sepId: ids.get(s.sep)! };
  const entries = vocab.map((t, i) => [t, i] as [string, number]);
  if (family === 'bert') {
    const added = specialsList('bert').map((t) => addedToken(ids.get(t)!, t));
    return bertTokenizerJson(entries, specials, added, {
      lowercase: opts.lowercase,
      stripAccents: opts.stripAccents ?? null,
      handleChineseChars: true,
    });
  }
  const added = specialsList('roberta').map((t) => addedToken(ids.get(t)!, t, { lstrip: t === s.mask }));
  return robertaTokenizerJson(entries, merges, specials, added, { addPrefixSpace: false, trimOffsets: true, lowercase: opts.lowercase });
}

/** The normaliser and pre-tokeniser of the tokenizer being trained, from the bindings. */
export function trainingPipeline(family: TokenizerFamily, opts: TrainTokenizerOptions): { normalizer: Normalizer | null; preTokenizer: PreTokenizer } {
  const vocab = specialsList(family);
  const json = buildJson(family, vocab, [], opts);
  const engine = Tokenizer.fromString(json);
  const preTokenizer = engine.getPreTokenizer();
  if (!preTokenizer) throw new Error('internal: the training pipeline has no pre-tokenizer');
  return { normalizer: engine.getNormalizer(), preTokenizer };
}

/** Distinct pieces held before they are turned into words (bounds memory on large corpora). */
const PIECE_FLUSH = 1 << 20;

/**
 * Counts the pre-tokenised words of a stream of documents. Each document is cut into pieces with
 * the cut rules of the chunked encoding path (tokenizer.ts, pushTextPieces), which are exact for
 * these pipelines: a piece normalised and pre-tokenised alone gives the words it gives in its
 * document. Pieces are counted first, and each distinct piece goes through the bindings' normaliser
 * and pre-tokeniser once.
 */
export class WordCounter {
  documents = 0;
  characters = 0;
  words = 0;
  private readonly counts = new Map<string, number>();
  private pieceCounts = new Map<string, number>();
  private readonly pieces: string[] = [];
  private readonly kind: ChunkKind;
  private readonly guard = new AddedTokenGuard(); // training does not split out added tokens
  private readonly normalizer: Normalizer | null;
  private readonly preTokenizer: PreTokenizer;
  private readonly foldCase: boolean;

  constructor(family: TokenizerFamily, opts: TrainTokenizerOptions) {
    this.foldCase = opts.lowercase;
    const p = trainingPipeline(family, opts);
    this.normalizer = p.normalizer;
    this.preTokenizer = p.preTokenizer;
    this.kind = family === 'bert' ? 'whitespace' : 'space-prefix';
  }

  add(text: string): void {
    this.documents++;
    this.characters += text.length;
    const pieces = this.pieces;
    pieces.length = 0;
    pushTextPieces(text, this.kind, this.guard, pieces, this.foldCase);
    const counts = this.pieceCounts;
    for (let i = 0; i < pieces.length; i++) {
      const p = pieces[i];
      const c = counts.get(p);
      if (c === undefined) counts.set(detach(p), 1);
      else counts.set(p, c + 1);
    }
    if (counts.size >= PIECE_FLUSH) this.flush();
  }

  /** Word -> count over everything added so far. */
  finish(): Map<string, number> {
    this.flush();
    return this.counts;
  }

  private flush(): void {
    const counts = this.counts;
    for (const [piece, n] of this.pieceCounts) {
      const normalized = this.normalizer ? this.normalizer.normalizeString(piece) : piece;
      const pre = this.preTokenizer.preTokenizeString(normalized);
      this.words += n * pre.length;
      for (let i = 0; i < pre.length; i++) {
        const w = pre[i][0];
        counts.set(w, (counts.get(w) ?? 0) + n);
      }
    }
    this.pieceCounts = new Map();
  }
}

export interface LearnOptions {
  family: TokenizerFamily;
  vocabSize: number;
  minFrequency: number;
  limitAlphabet?: number;
  onMerge?: (vocab: number) => void;
}

export interface LearnResult {
  vocab: string[];
  merges: Array<[string, string]>;
  alphabetSize: number;
  stoppedBecause: TrainTokenizerResult['stoppedBecause'];
}

/** A max-heap of (count, pair key): larger count first, then smaller key (= smaller pair). */
class PairHeap {
  private cnt: number[] = [];
  private key: number[] = [];

  get size(): number {
    return this.cnt.length;
  }

  private before(i: number, j: number): boolean {
    const ci = this.cnt[i];
    const cj = this.cnt[j];
    return ci > cj || (ci === cj && this.key[i] < this.key[j]);
  }

  private swap(i: number, j: number): void {
    const c = this.cnt[i];
    this.cnt[i] = this.cnt[j];
    this.cnt[j] = c;
    const k = this.key[i];
    this.key[i] = this.key[j];
    this.key[j] = k;
  }

  push(count: number, key: number): void {
    this.cnt.push(count);
    this.key.push(key);
    let i = this.cnt.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.before(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }

  /** Removes the top; returns [count, key]. */
  pop(): [number, number] {
    const top: [number, number] = [this.cnt[0], this.key[0]];
    const lastC = this.cnt.pop()!;
    const lastK = this.key.pop()!;
    const n = this.cnt.length;
    if (n > 0) {
      this.cnt[0] = lastC;
      this.key[0] = lastK;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < n && this.before(l, m)) m = l;
        if (r < n && this.before(r, m)) m = r;
        if (m === i) break;
        this.swap(i, m);
        i = m;
      }
    }
    return top;
  }
}

/**
 * Learns the vocabulary (and, for BPE, the merges) from word counts. Throws an InputError when
 * vocabSize cannot even hold the specials and the alphabet.
 */
export function learnVocabulary(wordCounts: Map<string, number>, opts: LearnOptions): LearnResult {
  const wordPiece = opts.family === 'bert';
  const prefix = '##';
  const specials = specialsList(opts.family);
  const vocab: string[] = [...specials];
  const ids = new Map<string, number>(vocab.map((t, i) => [t, i]));
  const addToken = (t: string): number => {
    let id = ids.get(t);
    if (id === undefined) {
      id = vocab.length;
      vocab.push(t);
      ids.set(t, id);
    }
    return id;
  };

  // Words to train on, as arrays of characters (code points).
  const wordChars: string[][] = [];
  const wordFreq: number[] = [];
  const charFreq = new Map<string, number>();
  for (const [word, count] of wordCounts) {
    const chars = Array.from(word);
    if (chars.length === 0) continue;
    if (wordPiece && chars.length > WORDPIECE_MAX_CHARS) continue;
    wordChars.push(chars);
    wordFreq.push(count);
    for (const c of chars) charFreq.set(c, (charFreq.get(c) ?? 0) + count);
  }

  // Alphabet.
  let alphabet: string[];
  const byCodePoint = (a: string, b: string) => a.codePointAt(0)! - b.codePointAt(0)!;
  if (wordPiece) {
    let chars = [...charFreq.keys()];
    if (opts.limitAlphabet !== undefined && chars.length > opts.limitAlphabet) {
      chars.sort((a, b) => charFreq.get(b)! - charFreq.get(a)! || byCodePoint(a, b));
      chars = chars.slice(0, opts.limitAlphabet);
    }
    alphabet = chars.sort(byCodePoint);
  } else {
    alphabet = byteLevelAlphabet().sort(byCodePoint);
  }
  for (const c of alphabet) addToken(c);
  const inAlphabet = new Set(alphabet);

  // WordPiece: '##' + each character seen after the first position of a kept word.
  if (wordPiece) {
    const continuation = new Set<string>();
    for (const chars of wordChars) {
      if (!chars.every((c) => inAlphabet.has(c))) continue;
      for (let i = 1; i < chars.length; i++) continuation.add(chars[i]);
    }
    for (const c of [...continuation].sort(byCodePoint)) addToken(prefix + c);
  }
  const alphabetSize = vocab.length - specials.length;
  if (opts.vocabSize < vocab.length) {
    const parts = wordPiece
      ? `${specials.length} special tokens + ${alphabet.length} characters + ${alphabetSize - alphabet.length} '##' continuation pieces`
      : `${specials.length} special tokens + 256 byte symbols`;
    // k kept characters make at most 2k tokens (each and its '##' piece): the largest k that fits
    // always works; below one character and its piece, no alphabet does.
    const fits = Math.floor((opts.vocabSize - specials.length) / 2);
    throw new InputError(
      `--vocab-size ${opts.vocabSize} is below the minimum for this corpus, ${vocab.length} (${parts}); ask for at least ${vocab.length}` +
        (wordPiece && fits >= 1 ? `, or keep fewer characters (--limit-alphabet ${fits} fits any corpus)` : ''),
    );
  }

  // Words as symbol-id sequences.
  const words: Int32Array[] = [];
  const lens: number[] = [];
  const freqs: number[] = [];
  for (let w = 0; w < wordChars.length; w++) {
    const chars = wordChars[w];
    const syms = new Int32Array(chars.length);
    let ok = true;
    for (let i = 0; i < chars.length; i++) {
      const id = ids.get(i > 0 && wordPiece ? prefix + chars[i] : chars[i]);
      if (id === undefined) {
        ok = false; // a character outside the alphabet: the word encodes to [UNK]
        break;
      }
      syms[i] = id;
    }
    if (!ok) continue;
    words.push(syms);
    lens.push(syms.length);
    freqs.push(wordFreq[w]);
  }

  // Pair counts and the words holding each pair.
  const pairCount = new Map<number, number>();
  const pairWords = new Map<number, number[]>();
  const noteWord = (key: number, w: number) => {
    const list = pairWords.get(key);
    if (list === undefined) pairWords.set(key, [w]);
    else if (list[list.length - 1] !== w) list.push(w);
  };
  for (let w = 0; w < words.length; w++) {
    const s = words[w];
    const f = freqs[w];
    for (let i = 0; i + 1 < s.length; i++) {
      const key = s[i] * PAIR_SHIFT + s[i + 1];
      pairCount.set(key, (pairCount.get(key) ?? 0) + f);
      noteWord(key, w);
    }
  }
  const heap = new PairHeap();
  for (const [key, count] of pairCount) heap.push(count, key);

  const merges: Array<[string, string]> = [];
  const merged = new Set<number>();
  const touched = new Set<number>();
  let stoppedBecause: LearnResult['stoppedBecause'] = 'vocab-size';
  const add = (key: number, delta: number) => {
    pairCount.set(key, (pairCount.get(key) ?? 0) + delta);
  };

  while (vocab.length < opts.vocabSize) {
    if (heap.size === 0) {
      stoppedBecause = 'no-pairs';
      break;
    }
    const [count, key] = heap.pop();
    const current = pairCount.get(key) ?? 0;
    if (count !== current) {
      if (current > 0) heap.push(current, key); // stale entry: re-file under its true count
      continue;
    }
    if (count < opts.minFrequency) {
      stoppedBecause = 'min-frequency';
      break;
    }
    const a = Math.floor(key / PAIR_SHIFT);
    const b = key - a * PAIR_SHIFT;
    const left = vocab[a];
    const right = vocab[b];
    const z = addToken(left + (wordPiece && right.startsWith(prefix) ? right.slice(prefix.length) : right));
    if (!merged.has(key)) {
      merged.add(key);
      merges.push([left, right]);
    }

    // Replace every (a, b) in the words holding it, left to right, and update the counts of the
    // neighbouring pairs: (prev, a) -> (prev, z) and (b, next) -> (z, next).
    touched.clear();
    for (const w of pairWords.get(key) ?? []) {
      const s = words[w];
      const n = lens[w];
      const f = freqs[w];
      let r = 0;
      let j = 0;
      while (r < n) {
        if (r + 1 < n && s[r] === a && s[r + 1] === b) {
          if (j > 0) {
            const prev = s[j - 1];
            add(prev * PAIR_SHIFT + a, -f);
            const k = prev * PAIR_SHIFT + z;
            add(k, f);
            noteWord(k, w);
            touched.add(k);
          }
          if (r + 2 < n) {
            const next = s[r + 2];
            add(b * PAIR_SHIFT + next, -f);
            const k = z * PAIR_SHIFT + next;
            add(k, f);
            noteWord(k, w);
            touched.add(k);
          }
          s[j++] = z;
          r += 2;
        } else {
          s[j++] = s[r++];
        }
      }
      lens[w] = j;
    }
    pairCount.delete(key);
    pairWords.delete(key);
    for (const k of touched) {
      const c = pairCount.get(k) ?? 0;
      if (c > 0 && k !== key) heap.push(c, k);
    }
    if (opts.onMerge && merges.length % 1000 === 0) opts.onMerge(vocab.length);
  }
  return { vocab, merges: wordPiece ? [] : merges, alphabetSize, stoppedBecause };
}

/**
 * Trains a tokenizer on a stream of documents and returns it loaded in the bindings. The caller
 * saves it with `result.tokenizer.save(dir)` and warns when result.vocabSize < requested.
 */
export async function trainTokenizer(
  documents: AsyncIterable<string> | Iterable<string>,
  opts: TrainTokenizerOptions,
): Promise<TrainTokenizerResult> {
  const minFrequency = opts.minFrequency ?? 2;
  check(opts.family === 'bert' || opts.family === 'roberta', `unknown tokenizer family ${JSON.stringify(opts.family)}; use --family bert or roberta`);
  check(Number.isInteger(opts.vocabSize) && opts.vocabSize > 0 && opts.vocabSize < MAX_VOCAB, `--vocab-size must be an integer in [1, ${MAX_VOCAB}), got ${opts.vocabSize}`);
  check(Number.isInteger(minFrequency) && minFrequency >= 1, `--min-frequency must be an integer >= 1, got ${minFrequency}`);
  if (opts.limitAlphabet !== undefined) {
    check(opts.family === 'bert', '--limit-alphabet applies to WordPiece (bert) only: byte-level BPE always has 256 byte symbols');
    check(Number.isInteger(opts.limitAlphabet) && opts.limitAlphabet >= 1, `--limit-alphabet must be an integer >= 1, got ${opts.limitAlphabet}`);
  }
  if (opts.family === 'roberta') {
    const min = specialsList('roberta').length + 256;
    check(opts.vocabSize >= min, `--vocab-size ${opts.vocabSize} is below the minimum for byte-level BPE, ${min} (5 special tokens + 256 byte symbols); ask for at least ${min}`);
  }

  const t0 = performance.now();
  const counter = new WordCounter(opts.family, opts);
  let nextReport = 4 << 20;
  for await (const doc of documents) {
    counter.add(doc);
    if (opts.onProgress && counter.characters >= nextReport) {
      nextReport = counter.characters + (4 << 20);
      opts.onProgress({ phase: 'count', documents: counter.documents, characters: counter.characters, vocab: 0 });
    }
  }
  const wordCounts = counter.finish();
  check(wordCounts.size > 0, `the corpus holds no words to train on (${counter.documents} documents, ${counter.characters} characters)`);
  const t1 = performance.now();

  const learned = learnVocabulary(wordCounts, {
    family: opts.family,
    vocabSize: opts.vocabSize,
    minFrequency,
    limitAlphabet: opts.limitAlphabet,
    onMerge: opts.onProgress
      ? (vocab) => opts.onProgress!({ phase: 'merge', documents: counter.documents, characters: counter.characters, vocab })
      : undefined,
  });
  opts.onProgress?.({ phase: 'merge', documents: counter.documents, characters: counter.characters, vocab: learned.vocab.length });
  const json = buildJson(opts.family, learned.vocab, learned.merges, opts);
  const tokenizer = MlmTokenizer.fromJson(json);
  const t2 = performance.now();
  return {
    tokenizer,
    vocabSize: tokenizer.vocabSize,
    requestedVocabSize: opts.vocabSize,
    stoppedBecause: learned.stoppedBecause,
    merges: opts.family === 'bert' ? learned.vocab.length - specialsList('bert').length - learned.alphabetSize : learned.merges.length,
    alphabetSize: learned.alphabetSize,
    documents: counter.documents,
    characters: counter.characters,
    words: counter.words,
    distinctWords: wordCounts.size,
    countSeconds: (t1 - t0) / 1000,
    mergeSeconds: (t2 - t1) / 1000,
  };
}

