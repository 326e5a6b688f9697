// Domain vocabulary extension: the N words of a domain corpus that an existing tokenizer cuts
// into the most pieces, added to that tokenizer so that each becomes one token, with every old
// id unchanged (new ids are appended after the old ones).
//
// Which words: the corpus is cut into words exactly as the tokenizer's model sees them (its
// normaliser, then its pre-tokenizer, through the `tokenizers` bindings; `MlmTokenizer.preTokenize`).
// Each distinct word is encoded alone once; adding it as one token saves (pieces - 1) tokens per
// occurrence, so words are ranked by count x (pieces - 1), ties broken by the word itself. Words
// seen fewer than `minFrequency` times, words already in the vocabulary, words the old tokenizer
// maps to [UNK] (they save nothing in count, though adding them would lower the unknown rate) and
// WordPiece words longer than its `max_input_chars_per_word` are not candidates.
//
// How a word is added, per algorithm:
// - WordPiece (BERT): a vocabulary entry for the word. WordPiece matches the longest entry first,
//   so the word now encodes to itself; longer words that begin with it may now start with it
//   (their remaining pieces take the `##` continuation entries the vocabulary already has).
// - Byte-level BPE (RoBERTa): BPE only produces a token that a merge builds. The word's old pieces
//   p1 ... pk get the merges (p1 p2), (p1p2 p3), ... appended after every old merge, and the
//   intermediate strings become vocabulary entries too (reported as `intermediate`). Old merges
//   keep their ranks, so they all apply first and leave exactly p1 ... pk; new merges of another
//   added word can still apply earlier to a pair inside this one, so every added word is encoded
//   again afterwards and, where it is not one token, merges joining what it became are appended
//   (at most a few rounds). With `ignore_merges` set, an entry alone suffices, as for WordPiece.
// The result is checked, not assumed: old ids unchanged, and each added word one token.
//
// Reference: Gee et al. 2022, "Fast Vocabulary Transfer for Language Model Compression" (the
// embedding initialisation that training/resize.ts applies to the new rows).
import { InputError } from '../common/errors.ts';
import { detach, MlmTokenizer } from './tokenizer.ts';

/** Word counts of a corpus, words as the tokenizer's model sees them. */
export class WordTally {
  /** piece (the pre-tokenized form) -> its surface text and count. */
  readonly words = new Map<string, { surface: string; count: number }>();
  total = 0;

  /**
   * `window`: the longest text (UTF-16 units) pre-tokenized at once; longer documents are taken
   * in windows cut at word boundaries (the bindings' memory grew with the text: a 60 MB one-line
   * document took 6.6 GB).
   */
  constructor(private readonly tokenizer: MlmTokenizer, private readonly window = 1 << 16) {}

  add(text: string): void {
    for (const [a, b] of this.tokenizer.windows(text, this.window)) {
      for (const { surface, piece } of this.tokenizer.preTokenize(a === 0 && b === text.length ? text : text.slice(a, b))) {
        if (surface.trim() === '') continue;
        const w = this.words.get(piece);
        if (w) w.count++;
        else this.words.set(piece, { surface: detach(surface), count: 1 });
        this.total++;
      }
    }
  }
}

export interface ExtendOptions {
  /** How many words to add. */
  add: number;
  /** Least count of a word to be a candidate (default 3). */
  minFrequency?: number;
}

export interface AddedWord {
  /** The new token as the vocabulary holds it (`hepatitis`, `Ġhepatitis`). */
  token: string;
  id: number;
  /** Occurrences in the corpus. */
  count: number;
  /** The old tokenizer's pieces of the word. */
  pieces: string[];
}

export interface FertilityFigures {
  words: number;
  tokens: number;
  tokensPerWord: number;
}

export interface ExtendResult {
  tokenizer: MlmTokenizer;
  added: AddedWord[];
  /** BPE only: strings that became entries because a merge chain passes through them. */
  intermediate: string[];
  /** Candidate words there were (before taking the first N). */
  candidates: number;
  before: FertilityFigures;
  after: FertilityFigures;
}

interface Candidate {
  piece: string;
  surface: string;
  count: number;
  pieces: string[];
  score: number;
}

const fertility = (words: number, tokens: number): FertilityFigures => ({ words, tokens, tokensPerWord: words === 0 ? 0 : tokens / words });

/** Each distinct word's pieces under `tokenizer` (surfaces encoded in batches). */
async function piecesOf(tokenizer: MlmTokenizer, surfaces: string[]): Promise<string[][]> {
  const out: string[][] = [];
  for (let i = 0; i < surfaces.length; i += 4096) out.push(...(await tokenizer.tokensOf(surfaces.slice(i, i + 4096))));
  return out;
}

interface ModelJson {
  type: string;
  vocab: Record<string, number>;
  merges?: Array<string | [string, string]>;
  ignore_merges?: boolean;
  max_input_chars_per_word?: number;
  unk_token?: string;
}

/**
 * The tokenizer `old` extended with the `opts.add` words of `tally` that save the most tokens
 * (see the file header). InputError when there are fewer candidates than asked for.
 */
export async function extendTokenizer(old: MlmTokenizer, tally: WordTally, opts: ExtendOptions): Promise<ExtendResult> {
  const minFrequency = opts.minFrequency ?? 3;
  if (!Number.isInteger(opts.add) || opts.add < 1) throw new InputError(`--add must be a positive integer, got ${opts.add}`);
  if (!Number.isInteger(minFrequency) || minFrequency < 1) throw new InputError(`--min-frequency must be an integer >= 1, got ${minFrequency}`);
  const json = JSON.parse(old.toJson()) as { model: ModelJson };
  const model = json.model;
  if (model.type !== 'WordPiece' && model.type !== 'BPE') {
    throw new InputError(`cannot extend a ${model.type} tokenizer; mlmkit extends WordPiece (BERT) and byte-level BPE (RoBERTa) tokenizers`);
  }
  const unk = old.specialTokens.unk;
  const maxChars = model.type === 'WordPiece' ? model.max_input_chars_per_word ?? 100 : Infinity;

  // 1. Every distinct word's old pieces; the candidates.
  const entries = [...tally.words.entries()];
  const oldPieces = await piecesOf(old, entries.map(([, w]) => w.surface));
  let tokensBefore = 0;
  const candidates: Candidate[] = [];
  for (let i = 0; i < entries.length; i++) {
    const [piece, { surface, count }] = entries[i];
    const pieces = oldPieces[i];
    tokensBefore += count * pieces.length;
    if (count < minFrequency || pieces.length < 2 || pieces.includes(unk)) continue;
    if (old.tokenToId(piece) !== undefined || [...piece].length > maxChars) continue;
    candidates.push({ piece, surface, count, pieces, score: count * (pieces.length - 1) });
  }
  if (candidates.length === 0) {
    throw new InputError(
      `the corpus has no word seen at least ${minFrequency} times that the tokenizer cuts into several pieces; nothing to add (lower --min-frequency, or give more domain text)`,
    );
  }
  if (candidates.length < opts.add) {
    throw new InputError(
      `only ${candidates.length} words qualify (seen at least ${minFrequency} times, cut into several pieces, not in the vocabulary); lower --add to at most ${candidates.length} or --min-frequency`,
    );
  }
  candidates.sort((a, b) => b.score - a.score || (a.piece < b.piece ? -1 : a.piece > b.piece ? 1 : 0));
  const chosen = candidates.slice(0, opts.add);

  // 2. The new entries (and merges, for BPE) after every old id.
  let nextId = old.vocabSize;
  for (const id of Object.values(model.vocab)) nextId = Math.max(nextId, id + 1);
  const intermediate: string[] = [];
  const entry = (token: string, isIntermediate: boolean): void => {
    if (token in model.vocab) return;
    model.vocab[token] = nextId++;
    if (isIntermediate) intermediate.push(token);
  };
  const needMerges = model.type === 'BPE' && model.ignore_merges !== true;
  const merges = model.merges ?? [];
  const pairForm = merges.length > 0 && Array.isArray(merges[0]);
  const seenMerges = new Set(merges.map((m) => (typeof m === 'string' ? m : `${m[0]} ${m[1]}`)));
  const chain = (pieces: string[], isFinal: (s: string) => boolean): void => {
    let left = pieces[0];
    for (let i = 1; i < pieces.length; i++) {
      const joined = left + pieces[i];
      entry(joined, !isFinal(joined));
      const key = `${left} ${pieces[i]}`;
      if (!seenMerges.has(key)) {
        seenMerges.add(key);
        merges.push(pairForm ? [left, pieces[i]] : key);
      }
      left = joined;
    }
  };
  const finals = new Set(chosen.map((c) => c.piece));
  for (const c of chosen) {
    entry(c.piece, false);
    if (needMerges) chain(c.pieces, (s) => finals.has(s));
  }
  if (needMerges) model.merges = merges;

  // 3. Build it, and repair BPE chains that other new merges cut differently.
  const rebuild = () => MlmTokenizer.fromJson(JSON.stringify(json), { specials: old.specialTokens, modelMaxLength: old.modelMaxLength });
  let tokenizer = rebuild();
  for (let round = 0; ; round++) {
    const now = await piecesOf(tokenizer, chosen.map((c) => c.surface));
    const broken = chosen.map((c, i) => ({ c, p: now[i] })).filter(({ c, p }) => p.length !== 1 || p[0] !== c.piece);
    if (broken.length === 0) break;
    if (!needMerges || round === 4) {
      throw new Error(`vocabulary extension: ${broken.length} added words still encode to several tokens (e.g. ${broken[0].c.piece} -> ${broken[0].p.join(' ')})`);
    }
    for (const { p } of broken) chain(p, (s) => finals.has(s));
    model.merges = merges;
    tokenizer = rebuild();
  }

  // 4. Old ids unchanged.
  for (let id = 0; id < old.vocabSize; id++) {
    if (tokenizer.idToToken(id) !== old.idToToken(id)) {
      throw new Error(`vocabulary extension changed id ${id}: ${old.idToToken(id)} -> ${tokenizer.idToToken(id)}`);
    }
  }

  // 5. Fertility on the same words after the extension.
  const newPieces = await piecesOf(tokenizer, entries.map(([, w]) => w.surface));
  let tokensAfter = 0;
  for (let i = 0; i < entries.length; i++) tokensAfter += entries[i][1].count * newPieces[i].length;
  return {
    tokenizer,
    added: chosen.map((c) => ({ token: c.piece, id: tokenizer.tokenToId(c.piece)!, count: c.count, pieces: c.pieces })),
    intermediate,
    candidates: candidates.length,
    before: fertility(tally.total, tokensBefore),
    after: fertility(tally.total, tokensAfter),
  };
}
