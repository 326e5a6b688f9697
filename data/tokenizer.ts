// Tokenizers for masked-language modelling: load, encode, decode and save BERT WordPiece and
// RoBERTa byte-level BPE tokenizers.
//
// The Hugging Face `tokenizers` Node bindings do all normalisation, pre-tokenisation and model work,
// so the ids equal Python's for the same tokenizer.json. This file only adds what the bindings lack:
// loading the older file layouts (vocab.txt, vocab.json + merges.txt) the way `transformers`'
// converters (BertConverter, RobertaConverter) turn them into a fast tokenizer, knowing which ids are
// special, typed-array output for the data pipeline, and writing the files `save_pretrained` writes.
//
// References: huggingface/tokenizers (tokenizer.json format), transformers
// `convert_slow_tokenizer.py`, `tokenization_bert.py`, `tokenization_roberta.py`.
//
// Porting notes:
// - Truncation and padding stored in a loaded tokenizer.json are switched off for encoding: the data
//   pipeline cuts blocks itself. They are kept in the saved tokenizer.json.
// - `sha256` hashes the canonical tokenizer.json text that the bindings themselves write for the
//   loaded tokenizer (`Tokenizer.save(path, pretty=true)`), not the bytes of the file read. A folder
//   holding only vocab.txt and one holding the equivalent tokenizer.json therefore hash alike.
//
// Speed: on this project's 2-core machines the bindings encode only about 2-4 MB of text per
// CPU-second (per-call and per-split bookkeeping), too slow for `mlm prepare`. For the pipelines
// mlmkit trains (and bert-base / roberta-base style tokenizer.json files) encodeBatch therefore cuts
// each text into pieces that no step of the pipeline looks across (ChunkKind, pushTextPieces), asks
// the bindings once per distinct piece, and caches each piece's ids and word starts. Every id still
// comes from the bindings; tests check this path against whole-text encoding on varied and fuzzed
// text. Any other pipeline (`chunkKind` null) is encoded as whole texts.

import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Tokenizer, type Decoder, type Encoding } from 'tokenizers';
import { InputError, check, requireRegularFile } from '../common/errors.ts';

export type TokenizerFamily = 'bert' | 'roberta';

/** roberta: cls = <s> (bos), sep = </s> (eos). */
export interface SpecialTokenIds {
  cls: number;
  sep: number;
  pad: number;
  mask: number;
  unk: number;
}
export interface SpecialTokens {
  cls: string;
  sep: string;
  pad: string;
  mask: string;
  unk: string;
}

/** One text without special tokens. wordStarts[i] = 1 when token i begins a new word according to
 * the tokenizer's word ids (pre-tokenizer pieces), not according to '##' or 'Ġ' prefixes. */
export interface EncodedText {
  ids: Uint32Array;
  wordStarts: Uint8Array;
}

/** The post-processed form: [CLS] A [SEP] (bert) or <s> A </s> (roberta), with pair support. */
export interface EncodingWithSpecials {
  ids: number[];
  tokens: string[];
  /** [start, end) in code points (not UTF-16 units) of the input; [0, 0] for added specials. */
  offsets: Array<[number, number]>;
  /** 1 for tokens the post-processor added ([CLS], [SEP]...). */
  specialTokensMask: number[];
  typeIds: number[];
  /** Word index per token within its sequence; null for the tokens the post-processor added. */
  wordIds: Array<number | null>;
}

/** An entry of tokenizer.json's `added_tokens`. */
export interface AddedTokenJson {
  id: number;
  content: string;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

/** Options that decide the BERT pipeline (BertNormalizer, BertPreTokenizer, WordPiece). */
export interface BertPipelineOptions {
  lowercase: boolean;
  /** null: follow `lowercase` (BertNormalizer's default, also transformers' strip_accents=None). */
  stripAccents: boolean | null;
  handleChineseChars: boolean;
}

/** Options that decide the RoBERTa pipeline (ByteLevel pre-tokenizer, BPE). */
export interface RobertaPipelineOptions {
  addPrefixSpace: boolean;
  trimOffsets: boolean;
  /** Not part of RoBERTa; adds a Lowercase normalizer (as ByteLevelBPETokenizer(lowercase=True)). */
  lowercase: boolean;
}

export const DEFAULT_SPECIALS: Record<TokenizerFamily, SpecialTokens> = {
  bert: { cls: '[CLS]', sep: '[SEP]', pad: '[PAD]', mask: '[MASK]', unk: '[UNK]' },
  roberta: { cls: '<s>', sep: '</s>', pad: '<pad>', mask: '<mask>', unk: '<unk>' },
};

/** model_max_length written to tokenizer_config.json when the source named none. */
export const DEFAULT_MODEL_MAX_LENGTH = 512;

const SPECIAL_KEYS = ['cls', 'sep', 'pad', 'mask', 'unk'] as const;
type SpecialKey = (typeof SPECIAL_KEYS)[number];

/** What a folder may hold, in order of preference. */
const LOOKED_FOR = 'tokenizer.json, vocab.txt (BERT WordPiece), or vocab.json + merges.txt (RoBERTa BPE)';

// ---------------------------------------------------------------------------------------------
// tokenizer.json builders (shared by the loaders of old layouts and by the trainer, so that a
// trained tokenizer and its vocab.txt / vocab.json+merges.txt reload to the same canonical JSON)
// ---------------------------------------------------------------------------------------------

/** A JSON object literal from [key, value] pairs, in the given order (a JS object would move
 * integer-like keys such as "10" first and would swallow a "__proto__" key). */
function jsonObject(entries: Iterable<[string, number]>): string {
  const parts: string[] = [];
  for (const [k, v] of entries) parts.push(`${JSON.stringify(k)}:${v}`);
  return `{${parts.join(',')}}`;
}

export function addedToken(id: number, content: string, opts: Partial<AddedTokenJson> = {}): AddedTokenJson {
  return {
    id,
    content,
    single_word: opts.single_word ?? false,
    lstrip: opts.lstrip ?? false,
    rstrip: opts.rstrip ?? false,
    normalized: opts.normalized ?? false,
    special: opts.special ?? true,
  };
}

/** tokenizer.json text of a BERT tokenizer as transformers' BertConverter builds it. */
export function bertTokenizerJson(
  vocab: Iterable<[string, number]>,
  specials: SpecialTokens & { clsId: number; sepId: number },
  added: AddedTokenJson[],
  opts: BertPipelineOptions,
): string {
  const cls = specials.cls;
  const sep = specials.sep;
  const tok = (id: string, typeId: number) => ({ SpecialToken: { id, type_id: typeId } });
  const seq = (id: string, typeId: number) => ({ Sequence: { id, type_id: typeId } });
  const head = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [...added].sort((a, b) => a.id - b.id),
    normalizer: {
      type: 'BertNormalizer',
      clean_text: true,
      handle_chinese_chars: opts.handleChineseChars,
      strip_accents: opts.stripAccents,
      lowercase: opts.lowercase,
    },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: {
      type: 'TemplateProcessing',
      single: [tok(cls, 0), seq('A', 0), tok(sep, 0)],
      pair: [tok(cls, 0), seq('A', 0), tok(sep, 0), seq('B', 1), tok(sep, 1)],
      special_tokens: {
        [cls]: { id: cls, ids: [specials.clsId], tokens: [cls] },
        [sep]: { id: sep, ids: [specials.sepId], tokens: [sep] },
      },
    },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
  };
  const model =
    `{"type":"WordPiece","unk_token":${JSON.stringify(specials.unk)},"continuing_subword_prefix":"##",` +
    `"max_input_chars_per_word":100,"vocab":${jsonObject(vocab)}}`;
  return JSON.stringify(head).slice(0, -1) + `,"model":${model}}`;
}

/** tokenizer.json text of a RoBERTa tokenizer as transformers' RobertaConverter builds it. */
export function robertaTokenizerJson(
  vocab: Iterable<[string, number]>,
  merges: Array<[string, string]>,
  specials: SpecialTokens & { clsId: number; sepId: number },
  added: AddedTokenJson[],
  opts: RobertaPipelineOptions,
): string {
  const head = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [...added].sort((a, b) => a.id - b.id),
    normalizer: opts.lowercase ? { type: 'Lowercase' } : null,
    pre_tokenizer: {
      type: 'ByteLevel',
      add_prefix_space: opts.addPrefixSpace,
      trim_offsets: opts.trimOffsets,
      use_regex: true,
    },
    post_processor: {
      type: 'RobertaProcessing',
      sep: [specials.sep, specials.sepId],
      cls: [specials.cls, specials.clsId],
      trim_offsets: opts.trimOffsets,
      add_prefix_space: opts.addPrefixSpace,
    },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
  };
  const model =
    `{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":"","end_of_word_suffix":"",` +
    `"fuse_unk":false,"byte_fallback":false,"ignore_merges":false,"vocab":${jsonObject(vocab)},` +
    `"merges":${JSON.stringify(merges)}}`;
  return JSON.stringify(head).slice(0, -1) + `,"model":${model}}`;
}

// ---------------------------------------------------------------------------------------------
// Chunking: cut points that no pipeline step looks across
// ---------------------------------------------------------------------------------------------

/**
 * 'whitespace' (BERT pipelines): cut at runs of ASCII ' ', '\t', '\n', '\r' and drop them. They are
 *   whitespace for BertNormalizer and BertPreTokenizer (always word boundaries, never tokens), and
 *   every normaliser admitted below works per character (or per character + following marks).
 * 'space-prefix' (byte-level BPE): cut before a ' ', '\t', '\n' or '\r' that follows a printable
 *   ASCII character (0x21-0x7E). No alternative of the GPT-2 pattern matches such a character
 *   followed by whitespace, so a match ends at every cut; the only look-ahead, `\s+(?!\S)`, ends
 *   inside its chunk because a chunk never ends with whitespace. The pattern therefore splits each
 *   chunk alone exactly as it splits the whole text.
 * null: encode whole texts in the bindings.
 */
export type ChunkKind = 'whitespace' | 'space-prefix';

/** Normalisers that work per character (or per character + its combining marks) and leave ASCII
 * alone but for case. BertNormalizer also turns '\t' '\n' '\r' into spaces, which the byte-level
 * pattern would see, so it is admitted for the BERT pipeline only. */
const LOCAL_NORMALIZERS = new Set(['Lowercase', 'NFC', 'NFD', 'NFKC', 'NFKD', 'StripAccents']);

function normalizerIsLocal(n: Record<string, unknown> | null | undefined, allowBert: boolean): boolean {
  if (!n) return true;
  if (n.type === 'Sequence' && Array.isArray(n.normalizers)) {
    return (n.normalizers as Array<Record<string, unknown>>).every((x) => normalizerIsLocal(x, allowBert));
  }
  return typeof n.type === 'string' && (LOCAL_NORMALIZERS.has(n.type) || (allowBert && n.type === 'BertNormalizer'));
}

/** Whether the normaliser folds case (then the byte-level contractions match 'S, 'LL...). */
function normalizerLowercases(n: Record<string, unknown> | null | undefined): boolean {
  if (!n) return false;
  if (n.type === 'Lowercase') return true;
  if (n.type === 'BertNormalizer') return n.lowercase === true;
  if (n.type === 'Sequence' && Array.isArray(n.normalizers)) return (n.normalizers as Array<Record<string, unknown>>).some(normalizerLowercases);
  return false;
}

/** Whether the normaliser is absent or only lowercases: each character is normalised alone, so the
 * byte-level pattern's class of its normalised form does not depend on its neighbours. */
function normalizerIsPerCharacter(n: Record<string, unknown> | null | undefined): boolean {
  if (!n) return true;
  if (n.type === 'Lowercase') return true;
  return n.type === 'Sequence' && Array.isArray(n.normalizers) && (n.normalizers as Array<Record<string, unknown>>).every(normalizerIsPerCharacter);
}

/** Whether a BertNormalizer (alone or in a Sequence) puts spaces around CJK ideographs. */
function normalizerIsolatesCjk(n: Record<string, unknown> | null | undefined): boolean {
  if (!n) return false;
  if (n.type === 'BertNormalizer') return n.handle_chinese_chars !== false;
  if (n.type === 'Sequence' && Array.isArray(n.normalizers)) return (n.normalizers as Array<Record<string, unknown>>).some(normalizerIsolatesCjk);
  return false;
}

/** Which cut rule is exact for a tokenizer.json, or null (with the reason) when none is. */
export function chunkKindFor(json: CanonicalJson): { kind: ChunkKind | null; reason: string } {
  const pre = json.pre_tokenizer;
  const model = json.model;
  for (const t of json.added_tokens ?? []) {
    if (/\s/.test(t.content)) return { kind: null, reason: `added token ${JSON.stringify(t.content)} holds whitespace` };
  }
  if (model.type === 'WordPiece' && pre?.type === 'BertPreTokenizer') {
    if (!normalizerIsLocal(json.normalizer, true)) return { kind: null, reason: 'normalizer not known to work per character' };
    return { kind: 'whitespace', reason: '' };
  }
  if (model.type === 'BPE' && pre?.type === 'ByteLevel' && pre.use_regex !== false) {
    if (!normalizerIsLocal(json.normalizer, false)) return { kind: null, reason: 'normalizer not known to work per character' };
    // A prefix space would be added to every piece that does not start with one.
    if (pre.add_prefix_space === true) return { kind: null, reason: 'add_prefix_space' };
    if ((model as { dropout?: unknown }).dropout != null) return { kind: null, reason: 'BPE dropout is random' };
    for (const t of json.added_tokens ?? []) {
      if (t.rstrip || t.single_word) return { kind: null, reason: `added token ${JSON.stringify(t.content)} strips or matches across spaces` };
    }
    return { kind: 'space-prefix', reason: '' };
  }
  return { kind: null, reason: `pipeline ${String(pre?.type)} + ${String(model.type)} has no known cut rule` };
}

/** ASCII character flags for the scanners below. */
const F_PUNCT = 1; // Rust's char::is_ascii_punctuation
const F_WS = 2; // ' ', '\t', '\n', '\r': whitespace for every pre-tokeniser and regex flavour
const F_CTRL = 4; // the other C0 controls and DEL
const ASCII_FLAGS: Uint8Array = (() => {
  const t = new Uint8Array(128);
  for (let c = 0; c < 128; c++) {
    if ((c >= 0x21 && c <= 0x2f) || (c >= 0x3a && c <= 0x40) || (c >= 0x5b && c <= 0x60) || (c >= 0x7b && c <= 0x7e)) t[c] |= F_PUNCT;
    if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) t[c] |= F_WS;
    else if (c < 0x20 || c === 0x7f) t[c] |= F_CTRL;
  }
  return t;
})();

/**
 * Tells whether a chunk may hold an added token. The bindings split added tokens out of the text
 * before pre-tokenising, so such a chunk must reach them whole.
 */
export class AddedTokenGuard {
  /** 1 at the ASCII first characters of added tokens (both cases). */
  readonly asciiStop = new Uint8Array(128);
  private readonly exact: string[] = [];
  private readonly folded: string[] = [];
  /** Too many added tokens to test one by one: any stop character refuses. */
  private readonly coarse: boolean;
  /** Never split: a normalised non-ASCII added token could match ASCII text after normalising. */
  private readonly never: boolean;

  constructor(tokens: Array<{ content: string; normalized: boolean }> = []) {
    let never = false;
    for (const t of tokens) {
      const first = t.content[0];
      if (first === undefined) continue;
      for (const v of [first, first.toLowerCase(), first.toUpperCase()]) {
        const c = v.charCodeAt(0);
        if (c < 128) this.asciiStop[c] = 1;
      }
      if (t.normalized) {
        if (/[^\x20-\x7e]/.test(t.content)) never = true;
        this.folded.push(t.content.toLowerCase());
      } else {
        this.exact.push(t.content);
      }
    }
    this.never = never;
    this.coarse = this.exact.length + this.folded.length > 64;
  }

  /** True when `chunk` (ASCII, holding a stop character) may hold an added token. */
  mayHold(chunk: string): boolean {
    if (this.never || this.coarse) return true;
    for (const t of this.exact) if (chunk.includes(t)) return true;
    if (this.folded.length > 0) {
      // A normaliser may drop control characters and fold case before matching.
      for (let i = 0; i < chunk.length; i++) if (ASCII_FLAGS[chunk.charCodeAt(i)] & F_CTRL) return true;
      const lower = chunk.toLowerCase();
      for (const t of this.folded) if (lower.includes(t)) return true;
    }
    return false;
  }

  /** True when no chunk may ever be split (see `never`). */
  get blocksAll(): boolean {
    return this.never;
  }
}

/**
 * Appends the pieces of a text to `out`. The text is first cut into chunks by the rule of `kind`
 * (see ChunkKind); an ASCII chunk is then cut further into the pre-tokeniser's own pieces, where
 * the rules are short and exact:
 * - 'whitespace' (BertPreTokenizer): each ASCII punctuation character is a piece of its own; the
 *   runs between them are pieces. Control characters stay inside pieces (the bindings drop them).
 * - 'space-prefix' (the GPT-2 pattern; printable ASCII, space, tab, LF, CR only): in order of
 *   preference at each position: 's 't 're 've 'm 'll 'd; an optional space + letters; an optional
 *   space + digits; an optional space + other non-space characters; a whitespace run that leaves
 *   its last character to the following word.
 * Other chunks (non-ASCII characters, controls for BPE, or a possible added token) stay whole.
 * Every piece, encoded alone by the bindings, gives the ids and word starts it has in the text.
 */
export function pushTextPieces(text: string, kind: ChunkKind, guard: AddedTokenGuard, out: string[], foldCase = false): void {
  const n = text.length;
  const stop = guard.asciiStop;
  const whole = guard.blocksAll;
  if (kind === 'whitespace') {
    let i = 0;
    while (i < n) {
      let c = text.charCodeAt(i);
      if (c < 128 && ASCII_FLAGS[c] & F_WS) {
        i++;
        continue;
      }
      const start = i;
      let nonAscii = false;
      let punct = false;
      let hasStop = false;
      for (; i < n; i++) {
        c = text.charCodeAt(i);
        if (c >= 128) {
          nonAscii = true;
          continue;
        }
        const f = ASCII_FLAGS[c];
        if (f & F_WS) break;
        if (f & F_PUNCT) punct = true;
        if (stop[c]) hasStop = true;
      }
      const end = i;
      if (nonAscii || !punct || whole || (hasStop && guard.mayHold(text.slice(start, end)))) {
        out.push(text.slice(start, end));
        continue;
      }
      let s = start;
      for (let j = start; j < end; j++) {
        if (ASCII_FLAGS[text.charCodeAt(j)] & F_PUNCT) {
          if (j > s) out.push(text.slice(s, j));
          out.push(text[j]);
          s = j + 1;
        }
      }
      if (s < end) out.push(text.slice(s, end));
    }
    return;
  }
  let start = 0;
  while (start < n) {
    // The chunk runs to the next whitespace character that follows a printable ASCII character.
    let i = start;
    let unsafe = whole;
    let hasStop = false;
    let prevPrintable = false;
    for (; i < n; i++) {
      const c = text.charCodeAt(i);
      if (c >= 128) {
        unsafe = true;
        prevPrintable = false;
        continue;
      }
      const f = ASCII_FLAGS[c];
      if (f & F_WS) {
        if (prevPrintable) break;
        continue;
      }
      if (f & F_CTRL) {
        unsafe = true;
        prevPrintable = false;
        continue;
      }
      if (stop[c]) hasStop = true;
      prevPrintable = true;
    }
    const end = i;
    if (unsafe || (hasStop && guard.mayHold(text.slice(start, end)))) out.push(text.slice(start, end));
    else pushGpt2Pieces(text, start, end, out, foldCase);
    start = end;
  }
}

/** The pieces of a text (see pushTextPieces). */
export function textPieces(text: string, kind: ChunkKind, guard: AddedTokenGuard = new AddedTokenGuard(), foldCase = false): string[] {
  const out: string[] = [];
  pushTextPieces(text, kind, guard, out, foldCase);
  return out;
}

/** The GPT-2 pattern on text[start, end): printable ASCII, space, tab, LF and CR only. With
 * `foldCase` (a lowercasing normaliser runs first) the contractions match in any case. */
function pushGpt2Pieces(text: string, start: number, end: number, out: string[], foldCase: boolean): void {
  let p = start;
  while (p < end) {
    const c = text.charCodeAt(p);
    let e = c === 0x27 /* ' */ ? contractionEnd(text, p, end, foldCase) : -1;
    if (e < 0) {
      const k = asciiClass(c);
      if (c === 0x20 && p + 1 < end && asciiClass(text.charCodeAt(p + 1)) !== SPACE) {
        // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+' with their optional leading space
        const k1 = asciiClass(text.charCodeAt(p + 1));
        e = p + 2;
        while (e < end && asciiClass(text.charCodeAt(e)) === k1) e++;
      } else if (k === SPACE) {
        // '\s+(?!\S)' then '\s+': a whitespace run, all of it at the end of the chunk, else all but
        // its last character (which goes with the following word), unless it is one character long.
        let r = p + 1;
        while (r < end && asciiClass(text.charCodeAt(r)) === SPACE) r++;
        e = r === end || r - p === 1 ? r : r - 1;
      } else {
        e = p + 1;
        while (e < end && asciiClass(text.charCodeAt(e)) === k) e++;
      }
    }
    out.push(text.slice(p, e));
    p = e;
  }
}

/** End of the contraction ('s 't 're 've 'm 'll 'd) starting at p (before end), or -1. */
function contractionEnd(text: string, p: number, end: number, foldCase: boolean): number {
  if (p + 1 >= end) return -1;
  const d = foldCase ? text[p + 1].toLowerCase() : text[p + 1];
  if (d === 's' || d === 't' || d === 'm' || d === 'd') return p + 2;
  if (p + 2 >= end) return -1;
  const two = foldCase ? text.slice(p + 1, p + 3).toLowerCase() : text.slice(p + 1, p + 3);
  if (two === 're' || two === 've' || two === 'll') return p + 3;
  return -1;
}

const LETTER = 1;
const DIGIT = 2;
const OTHER = 3;
const SPACE = 4;

/** The GPT-2 pattern's class of a printable ASCII character, space, tab, LF or CR. */
function asciiClass(c: number): number {
  if ((c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a)) return LETTER;
  if (c >= 0x30 && c <= 0x39) return DIGIT;
  if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) return SPACE;
  return OTHER;
}

// ---------------------------------------------------------------------------------------------
// Bounds for pathological text: long texts are taken in windows, long pieces in parts
// ---------------------------------------------------------------------------------------------
//
// The bindings bound nothing: one 20 MB word without whitespace costs them 1.4 GB and minutes. The
// chunked path therefore never hands them a string longer than MAX_PIECE_CHARS, and cuts texts
// longer than WINDOW_CHARS into windows so that the piece lists of one pass stay small. Cuts are
// made where the pipeline itself has a word boundary (exactCut), so ids stay exact. Only a run with
// no such boundary for MAX_PIECE_CHARS (or WINDOW_CHARS) characters gets a forced cut (forcedCut):
// - WordPiece: the run is one word longer than max_input_chars_per_word (100 by default), which HF's
//   WordPiece turns into a single [UNK] (models/wordpiece: `if char_len > max_input_chars_per_word`).
//   The part after a forced cut drops its first word, so the run still gives one [UNK], as in HF.
//   An ASCII run of letters and digits longer than that limit is [UNK] at once, without the bindings.
//   (A run made mostly of characters the normaliser deletes, such as combining marks with
//   strip_accents or control characters, can fall under the limit after normalising: there the
//   forced cut may differ from HF.)
// - Byte-level BPE: a word of over MAX_PIECE_CHARS characters is merged in parts: merges across a
//   forced cut are not made, so the tokens at each cut may differ from HF's; the part after a cut
//   continues the word (word start 0). Every other token is HF's. (With a normaliser other than
//   Lowercase, exactCut knows the classes of printable ASCII characters only, so a longer run
//   without them is cut as if it were one word.)

/** Texts longer than this (UTF-16 units) are encoded in windows cut at exact cuts. */
export const WINDOW_CHARS = 1 << 20;
/** Longest string the chunked path sends to the bindings. */
export const MAX_PIECE_CHARS = 1000;

const MARK = /^\p{M}$/u;
const PUNCT = /^\p{P}$/u;
const NON_ASCII_SPACE = /^\s$/u;

function isMark(text: string, p: number): boolean {
  const c = text.charCodeAt(p);
  return c >= 0x300 && MARK.test(String.fromCodePoint(text.codePointAt(p)!));
}

/** Punctuation for BertPreTokenizer (ASCII punctuation or a \p{P} character), not followed by a
 * combining mark (which a normaliser could compose with it). */
function isLonePunct(text: string, p: number): boolean {
  const c = text.charCodeAt(p);
  const punct = c < 128 ? (ASCII_FLAGS[c] & F_PUNCT) !== 0 : PUNCT.test(String.fromCodePoint(text.codePointAt(p)!));
  return punct && !(p + 1 < text.length && isMark(text, p + 1));
}

/** A CJK ideograph as the bindings' BertNormalizer (handle_chinese_chars) sees one: it puts spaces
 * around it. Its ranges are Python BertTokenizer's but for one: the bindings start the last astral
 * block at U+2B920, not U+2B820, so U+2B820-U+2B91F get no spaces (tests/data/tokenizer-cuts.test.ts). */
export function isCjk(cp: number): boolean {
  return (cp >= 0x4e00 && cp <= 0x9fff) || (cp >= 0x3400 && cp <= 0x4dbf) || (cp >= 0x20000 && cp <= 0x2a6df) || (cp >= 0x2a700 && cp <= 0x2b73f) ||
    (cp >= 0x2b740 && cp <= 0x2b81f) || (cp >= 0x2b920 && cp <= 0x2ceaf) || (cp >= 0xf900 && cp <= 0xfaff) || (cp >= 0x2f800 && cp <= 0x2fa1f);
}

/**
 * The byte-level pattern's classes of a character after the normaliser: LETTER, DIGIT or OTHER for
 * the first (bits 0-2) and the last (bits 3-5) character of its normalised form, 0 where that is
 * whitespace or unknown. See MlmTokenizer's gpt2Classes.
 */
export type Gpt2Classifier = (cp: number) => number;

/**
 * The largest p in (lo, hi] (hi < text.length) where the text may be cut without changing what
 * the pipeline does on either side, or -1.
 * 'whitespace' (WordPiece + BertPreTokenizer): before a whitespace character that no normaliser
 *   deletes (\s but for C0 controls other than tab, LF, CR, and U+FEFF); before or after lone
 *   punctuation (isLonePunct); before or after a CJK ideograph when `cjk` (handle_chinese_chars).
 * 'space-prefix' (byte-level BPE): the chunk borders of ChunkKind, and between two printable ASCII
 *   characters of different GPT-2 classes unless the first is an apostrophe (a contraction may
 *   follow it). Regex matches end at both. With `classify` (a normaliser that works strictly per
 *   character, or none), also between any two characters whose classes (after normalising) differ,
 *   and before an ASCII whitespace character that follows any non-whitespace character, so that
 *   text without ASCII letters (Chinese, Japanese, Thai, Korean) is cut where the pattern ends a
 *   match, not at a forced cut.
 */
export function exactCut(text: string, lo: number, hi: number, kind: ChunkKind, cjk = false, classify?: Gpt2Classifier): number {
  for (let p = hi; p > lo; p--) if (isExactCut(text, p, kind, cjk, classify)) return p;
  return -1;
}

/** Whether text may be cut before position p (0 < p < text.length); see exactCut. */
function isExactCut(text: string, p: number, kind: ChunkKind, cjk: boolean, classify?: Gpt2Classifier): boolean {
  const c = text.charCodeAt(p);
  const b = text.charCodeAt(p - 1);
  if (c >= 0xdc00 && c <= 0xdfff) return false; // inside a surrogate pair
  if (kind === 'space-prefix') {
    const ws = c < 128 && (ASCII_FLAGS[c] & F_WS) !== 0;
    if (b >= 0x21 && b <= 0x7e && (ws || (c >= 0x21 && c <= 0x7e))) return ws || (b !== 0x27 && asciiClass(c) !== asciiClass(b));
    // No match of the pattern runs from a non-whitespace character into whitespace, nor across a
    // change of class but for a contraction, which begins with an apostrophe (never cut after one).
    if (!classify || b === 0x27) return false;
    const kb = classify(text.codePointAt(b >= 0xdc00 && b <= 0xdfff ? p - 2 : p - 1)!) >> 3;
    if (kb === 0) return false;
    if (ws) return true;
    const kc = classify(text.codePointAt(p)!) & 7;
    return kc !== 0 && kc !== kb;
  }
  if (c < 128) {
    if (ASCII_FLAGS[c] & F_WS) return true;
  } else if (c !== 0xfeff && NON_ASCII_SPACE.test(text[p])) {
    return true;
  }
  if (isLonePunct(text, p)) return true;
  if (!isMark(text, p) && isLonePunct(text, p - 1)) return true;
  return cjk && (isCjk(text.codePointAt(p)!) || (!isMark(text, p) && isCjk(text.codePointAt(b >= 0xdc00 && b <= 0xdfff ? p - 2 : p - 1)!)));
}

const OTHER_CATEGORY = /^\p{C}$/u;

/** Whether a normaliser may delete the character at p: BertNormalizer's clean_text drops controls,
 * format, private-use and unassigned characters and U+FFFD. */
function mayVanish(text: string, p: number): boolean {
  const c = text.charCodeAt(p);
  if (c < 128) return c < 0x20 || c === 0x7f;
  return c === 0xfffd || OTHER_CATEGORY.test(String.fromCodePoint(text.codePointAt(p)!));
}

/** A cut at or just below hi that splits no surrogate pair and no character from its marks, and
 * that is not followed by a character a normaliser may delete: the part after a forced cut must
 * begin inside the word it continues (joinParts drops that word for WordPiece), not with characters
 * that vanish before a word boundary. */
function forcedCut(text: string, lo: number, hi: number): number {
  for (let p = hi; p > lo + 1; p--) {
    const c = text.charCodeAt(p);
    if (!(c >= 0xdc00 && c <= 0xdfff) && !isMark(text, p) && !mayVanish(text, p)) return p;
  }
  return hi;
}

/** Cuts text[lo, end) into parts of at most `max` units: [start, end, forced] triples, `forced`
 * telling that the part begins at a forced cut. */
function cutParts(text: string, lo: number, end: number, max: number, kind: ChunkKind, cjk: boolean, classify?: Gpt2Classifier): Array<[number, number, boolean]> {
  const parts: Array<[number, number, boolean]> = [];
  let forced = false;
  while (end - lo > max) {
    let p = exactCut(text, lo, lo + max, kind, cjk, classify);
    const wasForced = p < 0;
    if (wasForced) p = forcedCut(text, lo, lo + max);
    parts.push([lo, p, forced]);
    forced = wasForced;
    lo = p;
  }
  parts.push([lo, end, forced]);
  return parts;
}

/** A cached piece: a single id (one token, which starts a word) or ids with the word-start flag in
 * bit 31 (ids are far below 2^31). */
type PieceEntry = number | Uint32Array;
const START_BIT = 0x80000000;
/** Longest piece (UTF-16 units) kept in the cache. */
const CACHE_MAX_KEY = 64;

/** A copy of a string that does not keep a larger string alive (V8 slices point into their parent). */
export function detach(s: string): string {
  return s.length < 13 ? s : Buffer.from(s, 'utf16le').toString('utf16le');
}

/** Entries per generation of a cache (two generations at most are held). */
const CACHE_GENERATION = 1 << 18;

/**
 * A string-keyed cache in two generations: new entries go to the young one; when it is full it
 * becomes the old one (the previous old one is dropped), and old entries that are used again move
 * back to the young one. Frequent pieces therefore stay; memory stays bounded.
 */
class TwoGenerationCache {
  private young = new Map<string, PieceEntry>();
  private old = new Map<string, PieceEntry>();

  get(key: string): PieceEntry | undefined {
    const e = this.young.get(key);
    if (e !== undefined) return e;
    const o = this.old.get(key);
    if (o !== undefined) this.set(detach(key), o);
    return o;
  }

  has(key: string): boolean {
    return this.young.has(key) || this.old.has(key);
  }

  set(key: string, e: PieceEntry): void {
    if (this.young.size >= CACHE_GENERATION) {
      this.old = this.young;
      this.young = new Map();
    }
    this.young.set(key, e);
  }
}

// ---------------------------------------------------------------------------------------------
// The tokenizer
// ---------------------------------------------------------------------------------------------

/** Settings a source folder's tokenizer_config.json / special_tokens_map.json contribute. */
interface ConfigHints {
  specials: Partial<SpecialTokens>;
  modelMaxLength?: number;
  chunked?: boolean;
}

export interface FromJsonOptions {
  /** Shown in error messages; kept as `source`. */
  source?: string;
  modelMaxLength?: number;
  /** Special-token names that override the family's defaults. */
  specials?: Partial<SpecialTokens>;
  /** Use the chunked encoding path where exact (default true). */
  chunked?: boolean;
}

export interface LoadOptions {
  /** Use the chunked encoding path where exact (default true). */
  chunked?: boolean;
}

/** Parsed parts of the canonical tokenizer.json that this class reads. */
interface CanonicalJson {
  added_tokens?: AddedTokenJson[];
  normalizer?: Record<string, unknown> | null;
  pre_tokenizer?: Record<string, unknown> | null;
  post_processor?: Record<string, unknown> | null;
  model: {
    type?: string;
    unk_token?: string | null;
    vocab?: Record<string, number>;
    merges?: Array<string | [string, string]>;
  };
}

export class MlmTokenizer {
  readonly family: TokenizerFamily;
  /** Number of ids, added tokens included (max id + 1). */
  readonly vocabSize: number;
  readonly specialIds: SpecialTokenIds;
  readonly specialTokens: SpecialTokens;
  readonly maskToken: string;
  /** sha256 (hex) of the canonical tokenizer.json text; see the file header. */
  readonly sha256: string;
  /** model_max_length from the source's tokenizer_config.json, if it named one. */
  readonly modelMaxLength: number | undefined;
  /** Where it was loaded from ('' when trained in memory). */
  readonly source: string;

  private readonly engine: Tokenizer;
  private readonly canonicalText: string;
  private readonly json: CanonicalJson;
  private readonly idToTokenTable: Array<string | undefined>;
  private readonly special: Uint8Array;
  private readonly decoder: Decoder | null;
  /** The cut rule of the chunked encoding path, or null for whole-text encoding. */
  readonly chunkKind: ChunkKind | null;
  /** Why chunked encoding is off ('' when on). */
  readonly chunkReason: string;
  private readonly pieceCache = new TwoGenerationCache();
  /** Decides which chunks may hold an added token (those are not split further). */
  readonly addedGuard: AddedTokenGuard;
  /** The normaliser folds case (see pushTextPieces). */
  private readonly foldCase: boolean;
  /** BertNormalizer isolates CJK ideographs (exactCut may cut before one). */
  private readonly cjk: boolean;
  /** Byte-level BPE with no normaliser or Lowercase only: exactCut cuts at class changes of any
   * characters (see gpt2Classes); undefined otherwise. */
  private readonly classify: Gpt2Classifier | undefined;
  private readonly classCache = new Map<number, number>();
  /** WordPiece: the longest word not turned into [UNK], and the [UNK] id. */
  private readonly maxInputChars: number;
  private readonly wordPieceUnk: number | undefined;

  private constructor(engine: Tokenizer, canonicalText: string, hints: ConfigHints, source: string, chunked = true) {
    this.engine = engine;
    this.canonicalText = canonicalText;
    this.source = source;
    this.sha256 = createHash('sha256').update(canonicalText, 'utf8').digest('hex');
    this.json = JSON.parse(canonicalText) as CanonicalJson;
    this.modelMaxLength = hints.modelMaxLength;
    const where = source || 'the tokenizer';

    const modelType = this.json.model?.type;
    if (modelType === 'WordPiece') this.family = 'bert';
    else if (modelType === 'BPE') this.family = 'roberta';
    else {
      throw new InputError(
        `${where}: unsupported tokenizer model type ${JSON.stringify(modelType)}; mlmkit supports WordPiece (BERT) and BPE (RoBERTa) tokenizers`,
      );
    }

    // Ids as the engine resolves them (the engine may renumber added tokens listed with gaps).
    const n = engine.getVocabSize(true);
    const table: Array<string | undefined> = new Array(n);
    for (let i = 0; i < n; i++) table[i] = engine.idToToken(i) ?? undefined;
    this.idToTokenTable = table;
    this.vocabSize = n;

    const names = this.resolveSpecialNames(hints);
    const ids = {} as SpecialTokenIds;
    for (const key of SPECIAL_KEYS) {
      const id = engine.tokenToId(names[key]);
      if (id === null || id === undefined) {
        const all = SPECIAL_KEYS.map((k) => names[k]).join(' ');
        throw new InputError(
          `${where}: the ${key} token ${JSON.stringify(names[key])} is not in the vocabulary; an MLM tokenizer needs all of ${all}`,
        );
      }
      ids[key] = id;
    }
    this.specialTokens = names;
    this.specialIds = ids;
    this.maskToken = names.mask;

    const mask = new Uint8Array(n);
    for (const key of SPECIAL_KEYS) mask[ids[key]] = 1;
    for (const t of this.json.added_tokens ?? []) {
      if (!t.special) continue;
      const id = engine.tokenToId(t.content);
      if (id !== null && id !== undefined && id < n) mask[id] = 1;
    }
    this.special = mask;
    this.decoder = engine.getDecoder();
    const chunking = chunked ? chunkKindFor(this.json) : { kind: null, reason: 'switched off' };
    this.chunkKind = chunking.kind;
    this.chunkReason = chunking.reason;
    this.addedGuard = new AddedTokenGuard(this.json.added_tokens ?? []);
    this.foldCase = normalizerLowercases(this.json.normalizer);
    this.cjk = normalizerIsolatesCjk(this.json.normalizer);
    this.classify = this.chunkKind === 'space-prefix' && normalizerIsPerCharacter(this.json.normalizer) ? (cp) => this.gpt2Classes(cp) : undefined;
    const model = this.json.model as { max_input_chars_per_word?: number; unk_token?: string | null };
    this.maxInputChars = model.max_input_chars_per_word ?? 100;
    this.wordPieceUnk = modelType === 'WordPiece' && typeof model.unk_token === 'string' ? engine.tokenToId(model.unk_token) ?? undefined : undefined;
  }

  private resolveSpecialNames(hints: ConfigHints): SpecialTokens {
    const defaults = { ...DEFAULT_SPECIALS[this.family] };
    if (this.family === 'bert' && typeof this.json.model.unk_token === 'string') defaults.unk = this.json.model.unk_token;
    // The post-processor names the tokens it adds.
    const pp = this.json.post_processor;
    if (pp && (pp.type === 'RobertaProcessing' || pp.type === 'BertProcessing')) {
      const cls = pp.cls as [string, number] | undefined;
      const sep = pp.sep as [string, number] | undefined;
      if (cls) defaults.cls = cls[0];
      if (sep) defaults.sep = sep[0];
    } else if (pp && pp.type === 'TemplateProcessing' && Array.isArray(pp.single)) {
      const specials = (pp.single as Array<Record<string, { id: string }>>)
        .filter((p) => p.SpecialToken)
        .map((p) => p.SpecialToken.id);
      if (specials.length === 2) {
        defaults.cls = specials[0];
        defaults.sep = specials[1];
      }
    }
    return { ...defaults, ...hints.specials };
  }

  // ---- loading -------------------------------------------------------------------------------

  /**
   * Loads a tokenizer from a folder holding tokenizer.json (preferred), vocab.txt alone (BERT
   * WordPiece) or vocab.json + merges.txt (RoBERTa byte-level BPE), or from a tokenizer.json path.
   * tokenizer_config.json and special_tokens_map.json beside it are read when present.
   */
  static async load(pathOrDir: string, opts: LoadOptions = {}): Promise<MlmTokenizer> {
    let stat: fs.Stats;
    try {
      stat = await fsp.stat(pathOrDir);
    } catch {
      throw new InputError(`tokenizer path ${pathOrDir} does not exist; give a folder holding ${LOOKED_FOR}`);
    }
    const dir = stat.isDirectory() ? pathOrDir : path.dirname(pathOrDir);
    const found = await readConfigHints(dir);
    const hints = { ...found, hints: { ...found.hints, chunked: opts.chunked } };

    if (!stat.isDirectory()) return MlmTokenizer.loadTokenizerJson(pathOrDir, hints.hints);
    const has = (f: string) => fs.existsSync(path.join(dir, f));
    if (has('tokenizer.json')) return MlmTokenizer.loadTokenizerJson(path.join(dir, 'tokenizer.json'), hints.hints);
    if (has('vocab.txt')) return MlmTokenizer.loadVocabTxt(dir, hints.hints, hints.raw);
    if (has('vocab.json') || has('merges.txt')) {
      check(has('vocab.json') && has('merges.txt'), `${dir} holds ${has('vocab.json') ? 'vocab.json but no merges.txt' : 'merges.txt but no vocab.json'}; a RoBERTa BPE tokenizer needs both (or a tokenizer.json)`);
      return MlmTokenizer.loadVocabJsonMerges(dir, hints.hints, hints.raw);
    }
    throw new InputError(`no tokenizer files in ${dir}: looked for ${LOOKED_FOR}`);
  }

  /** Builds a tokenizer from tokenizer.json text (used by the trainer and the loaders). */
  static fromJson(text: string, opts: FromJsonOptions = {}): MlmTokenizer {
    const source = opts.source ?? '';
    const where = source || 'tokenizer.json';
    try {
      JSON.parse(text);
    } catch (err) {
      throw new InputError(`${where} is not valid JSON (${(err as Error).message}); replace it with a tokenizer.json saved by the tokenizers library`);
    }
    let engine: Tokenizer;
    try {
      engine = Tokenizer.fromString(text);
    } catch (err) {
      throw new InputError(`${where} was rejected by the tokenizers library (${(err as Error).message.split('\n')[0]!.replace(/\.$/, '')}); replace it with a tokenizer.json saved by the tokenizers library`);
    }
    const canonical = canonicalText(engine);
    engine.disableTruncation();
    engine.disablePadding();
    return new MlmTokenizer(engine, canonical, { specials: opts.specials ?? {}, modelMaxLength: opts.modelMaxLength }, source, opts.chunked ?? true);
  }

  private static async loadTokenizerJson(file: string, hints: ConfigHints): Promise<MlmTokenizer> {
    const text = await readUtf8(file);
    return MlmTokenizer.fromJson(text, { source: file, ...hints });
  }

  private static async loadVocabTxt(dir: string, hints: ConfigHints, config: Record<string, unknown>): Promise<MlmTokenizer> {
    const file = path.join(dir, 'vocab.txt');
    const text = await readUtf8(file);
    // transformers' load_vocab: universal newlines, one token per line, a later duplicate wins.
    const lines = text.split(/\r\n|\n|\r/);
    if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
    check(lines.length > 0, `${file} is empty; a BERT vocab.txt holds one token per line`);
    const vocab = new Map<string, number>();
    lines.forEach((tok, i) => vocab.set(tok, i));

    const names: SpecialTokens = { ...DEFAULT_SPECIALS.bert, ...hints.specials };
    const ids = specialIdsIn(vocab, names, file);
    const added = addedTokensFor(vocab, names, config, new Set());
    const bool = configFlags(config, path.join(dir, TOKENIZER_CONFIG));
    const json = bertTokenizerJson(vocab, { ...names, clsId: ids.cls, sepId: ids.sep }, added, {
      lowercase: bool('do_lower_case', true),
      stripAccents: bool('strip_accents', null),
      handleChineseChars: bool('tokenize_chinese_chars', true),
    });
    return MlmTokenizer.fromJson(json, { source: file, ...hints });
  }

  private static async loadVocabJsonMerges(dir: string, hints: ConfigHints, config: Record<string, unknown>): Promise<MlmTokenizer> {
    const vocabFile = path.join(dir, 'vocab.json');
    const mergesFile = path.join(dir, 'merges.txt');
    const vocabText = await readUtf8(vocabFile);
    let parsed: unknown;
    try {
      parsed = JSON.parse(vocabText);
    } catch (err) {
      throw new InputError(`${vocabFile} is not valid JSON (${(err as Error).message}); copy it again from where the tokenizer came from`);
    }
    check(parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed), `${vocabFile} must be a JSON object mapping tokens to ids`);
    const vocab = new Map<string, number>();
    for (const [tok, id] of Object.entries(parsed as Record<string, unknown>)) {
      check(Number.isInteger(id) && (id as number) >= 0, `${vocabFile}: the id of ${JSON.stringify(tok)} is ${JSON.stringify(id)}, expected a non-negative integer`);
      vocab.set(tok, id as number);
    }
    check(vocab.size > 0, `${vocabFile} is empty; copy it again from where the tokenizer came from`);

    const mergesText = await readUtf8(mergesFile);
    const merges: Array<[string, string]> = [];
    const lines = mergesText.split(/\r?\n/);
    lines.forEach((line, i) => {
      if (line === '' || (i === 0 && line.startsWith('#version'))) return;
      const parts = line.split(' ');
      check(parts.length === 2 && parts[0] !== '' && parts[1] !== '', `${mergesFile} line ${i + 1}: expected two tokens separated by one space, got ${JSON.stringify(line.slice(0, 80))}`);
      merges.push([parts[0], parts[1]]);
    });

    const names: SpecialTokens = { ...DEFAULT_SPECIALS.roberta, ...hints.specials };
    const ids = specialIdsIn(vocab, names, vocabFile);
    const added = addedTokensFor(vocab, names, config, new Set([names.mask]));
    const bool = configFlags(config, path.join(dir, TOKENIZER_CONFIG));
    const json = robertaTokenizerJson(vocab, merges, { ...names, clsId: ids.cls, sepId: ids.sep }, added, {
      addPrefixSpace: bool('add_prefix_space', false),
      trimOffsets: bool('trim_offsets', true),
      lowercase: false,
    });
    return MlmTokenizer.fromJson(json, { source: path.join(dir, 'vocab.json + merges.txt'), ...hints });
  }

  // ---- special tokens ------------------------------------------------------------------------

  /** True for the five MLM specials and every added token marked special. */
  isSpecial(id: number): boolean {
    return id >= 0 && id < this.special.length && this.special[id] === 1;
  }

  /** A fresh Uint8Array of length vocabSize with 1 at special ids. */
  specialMask(): Uint8Array {
    return this.special.slice();
  }

  // ---- encoding ------------------------------------------------------------------------------

  /** Encodes one text without special tokens. */
  async encode(text: string): Promise<EncodedText> {
    return (await this.encodeBatch([text]))[0];
  }

  /**
   * Encodes many texts without special tokens. With chunking on (see `chunkKind`), each distinct
   * piece goes to the bindings once (all of a batch's new pieces in one parallel encodeBatch call)
   * and later comes from a cache; otherwise whole texts go to the bindings' encodeBatch. About 1 MB
   * of text per call is a good batch. Runs synchronously up to the bindings call, so a caller can
   * read its next batch while the bindings work.
   */
  async encodeBatch(texts: string[]): Promise<EncodedText[]> {
    if (texts.length === 0) return [];
    const kind = this.chunkKind;
    if (kind === null) return this.encodeWhole(texts);
    if (texts.every((t) => t.length <= WINDOW_CHARS)) return this.encodeChunked(texts);
    // A text longer than a window is encoded a window at a time (see "Bounds for pathological text").
    const out = new Array<EncodedText>(texts.length);
    const short = texts.map((t, i) => i).filter((i) => texts[i].length <= WINDOW_CHARS);
    const encodedShort = this.encodeChunked(short.map((i) => texts[i]));
    for (let i = 0; i < texts.length; i++) {
      const text = texts[i];
      if (text.length <= WINDOW_CHARS) continue;
      const windows = cutParts(text, 0, text.length, WINDOW_CHARS, kind, this.cjk, this.classify);
      const parts: EncodedText[] = [];
      for (const [a, b] of windows) parts.push((await this.encodeChunked([text.slice(a, b)]))[0]);
      out[i] = joinParts(parts, windows.map((w) => w[2]), kind === 'whitespace');
    }
    const enc = await encodedShort;
    short.forEach((i, k) => (out[i] = enc[k]));
    return out;
  }

  /** The chunked path on texts of at most WINDOW_CHARS. */
  private async encodeChunked(texts: string[]): Promise<EncodedText[]> {
    if (texts.length === 0) return [];
    const kind = this.chunkKind!;
    const cache = this.pieceCache;
    const guard = this.addedGuard;

    // 1. Cut the texts into chunks and the chunks into pieces; look the pieces up. A piece not
    //    cached stays a string for now.
    const rows: Array<Array<PieceEntry | string>> = new Array(texts.length);
    const ask = new Set<string>(); // pieces for the bindings
    const pieces: string[] = [];
    for (let t = 0; t < texts.length; t++) {
      pieces.length = 0;
      pushTextPieces(texts[t], kind, guard, pieces, this.foldCase);
      const row: Array<PieceEntry | string> = new Array(pieces.length);
      for (let i = 0; i < pieces.length; i++) {
        const p = pieces[i];
        const e = cache.get(p);
        if (e !== undefined) row[i] = e;
        else {
          row[i] = p;
          ask.add(p);
        }
      }
      rows[t] = row;
    }

    // 2. One parallel call to the bindings for all new pieces; pieces over MAX_PIECE_CHARS in parts.
    const local = new Map<string, PieceEntry>();
    for (const p of ask) {
      if (p.length <= MAX_PIECE_CHARS) continue;
      local.set(p, await this.encodeLongPiece(p));
      ask.delete(p);
    }
    if (ask.size > 0) {
      const list = [...ask];
      const encs = await this.engine.encodeBatch(list, { addSpecialTokens: false });
      for (let i = 0; i < list.length; i++) {
        const e = toPieceEntry(encs[i]);
        local.set(list[i], e);
        // Long pieces rarely come back; a cached key must not pin the text it was sliced from.
        if (list[i].length <= CACHE_MAX_KEY) cache.set(detach(list[i]), e);
      }
    }

    // 3. Assemble.
    const out = new Array<EncodedText>(texts.length);
    for (let t = 0; t < texts.length; t++) {
      const row = rows[t];
      for (let i = 0; i < row.length; i++) if (typeof row[i] === 'string') row[i] = local.get(row[i] as string)!;
      out[t] = assemble(row as PieceEntry[]);
    }
    return out;
  }

  /**
   * A piece longer than MAX_PIECE_CHARS (see "Bounds for pathological text"): an ASCII word of
   * letters and digits longer than max_input_chars_per_word is WordPiece's [UNK] at once; any other
   * piece goes to the bindings in parts of at most MAX_PIECE_CHARS (cutParts), joined by joinParts.
   * (Cutting the parts further into cached small pieces measured slower on random text.) A piece
   * that may hold an added token is not cut (the bindings must see the token whole).
   */
  private async encodeLongPiece(piece: string): Promise<PieceEntry> {
    const guard = this.addedGuard;
    const kind = this.chunkKind!;
    const wordPiece = kind === 'whitespace';
    const held = guard.blocksAll || guard.mayHold(piece);
    if (wordPiece && !held && this.wordPieceUnk !== undefined && piece.length > this.maxInputChars && /^[A-Za-z0-9]+$/.test(piece)) {
      return this.wordPieceUnk;
    }
    const parts = held ? [[0, piece.length, false] as [number, number, boolean]] : cutParts(piece, 0, piece.length, MAX_PIECE_CHARS, kind, this.cjk, this.classify);
    const encoded: EncodedText[] = [];
    for (let i = 0; i < parts.length; i += 256) {
      const group = parts.slice(i, i + 256).map(([x, y]) => piece.slice(x, y));
      for (const e of await this.engine.encodeBatch(group, { addSpecialTokens: false })) encoded.push(toEncodedText(e));
    }
    const e = joinParts(encoded, parts.map((x) => x[2]), wordPiece);
    const packed = new Uint32Array(e.ids.length);
    for (let i = 0; i < packed.length; i++) packed[i] = (e.ids[i] | (e.wordStarts[i] ? START_BIT : 0)) >>> 0;
    return packed;
  }

  /**
   * The Gpt2Classifier of this tokenizer: the classes come from the bindings' own normaliser and
   * pre-tokenizer (a JS regex could differ: its Unicode tables are newer than the bindings' for
   * thousands of recently assigned characters), once per code point. A character's class is the
   * one of 'x', '1' or '-' that it stays in one pre-tokenizer match with.
   */
  private gpt2Classes(cp: number): number {
    const known = this.classCache.get(cp);
    if (known !== undefined) return known;
    const ch = String.fromCodePoint(cp);
    const norm = this.engine.getNormalizer()?.normalizeString(ch) ?? ch;
    const chars = [...norm];
    let v = 0;
    if (chars.length > 0) v = this.gpt2Class(chars[0]) | (this.gpt2Class(chars[chars.length - 1]) << 3);
    if ((v & 7) === 0 || v >> 3 === 0) v = 0;
    this.classCache.set(cp, v);
    return v;
  }

  private gpt2Class(ch: string): number {
    const c = ch.codePointAt(0)!;
    if (c >= 0x21 && c <= 0x7e) return asciiClass(c);
    const pre = this.engine.getPreTokenizer()!;
    const joins = (head: string) => pre.preTokenizeString(head + ch).length === 1;
    return joins('x') ? LETTER : joins('1') ? DIGIT : joins('-') ? OTHER : 0;
  }

  /** Whole texts through the bindings' parallel encodeBatch (the reference path). */
  async encodeWhole(texts: string[]): Promise<EncodedText[]> {
    if (texts.length === 0) return [];
    const encs = await this.engine.encodeBatch(texts, { addSpecialTokens: false });
    const out = new Array<EncodedText>(encs.length);
    for (let i = 0; i < encs.length; i++) out[i] = toEncodedText(encs[i]);
    return out;
  }

  /** The model-input form with the post-processor's specials ([CLS] A [SEP] / <s> A </s>). */
  async encodeWithSpecials(text: string, pair?: string): Promise<EncodingWithSpecials> {
    const enc = await this.engine.encode(text, pair ?? null, { addSpecialTokens: true });
    const wordIds = enc.getWordIds().map((w) => (w === undefined ? null : w));
    return {
      ids: enc.getIds(),
      tokens: enc.getTokens(),
      offsets: enc.getOffsets().map((o) => [o[0], o[1]] as [number, number]),
      specialTokensMask: enc.getSpecialTokensMask(),
      typeIds: enc.getTypeIds(),
      wordIds,
    };
  }

  /**
   * [start, end) ranges of at most `max` UTF-16 units that cover `text`, cut where the pipeline
   * has a word boundary (see "Bounds for pathological text"; a run with none for `max` units is
   * cut anyway): the ranges' words are the text's words. One range for a short text or a pipeline
   * mlmkit does not cut (chunkKind null).
   */
  windows(text: string, max: number = WINDOW_CHARS): Array<[number, number]> {
    const kind = this.chunkKind;
    if (kind === null || text.length <= max) return [[0, text.length]];
    return cutParts(text, 0, text.length, max, kind, this.cjk, this.classify).map(([a, b]) => [a, b]);
  }

  /**
   * The words the tokenizer's model sees in `text`: its normaliser, then its pre-tokenizer, as
   * the bindings run them. Each word comes as `surface` (its span of the normalised text, which
   * encodes alone to the same pieces when pre-tokenization is per word) and `piece` (what the
   * pre-tokenizer made of it: the same text for BERT, byte-level symbols like `Ġword` for RoBERTa).
   */
  preTokenize(text: string): Array<{ surface: string; piece: string }> {
    const normalized = this.engine.getNormalizer()?.normalizeString(text) ?? text;
    const pre = this.engine.getPreTokenizer();
    if (!pre) return normalized === '' ? [] : [{ surface: normalized, piece: normalized }];
    // The bindings' offsets count code points; a JS string is indexed in UTF-16 units, which differ
    // after any character outside the BMP (an emoji): map them first.
    const at = utf16Index(normalized);
    return pre.preTokenizeString(normalized).map(([piece, [start, end]]) => ({ surface: at === null ? normalized.slice(start, end) : normalized.slice(at[start], at[end]), piece }));
  }

  /** The token strings of `text` encoded alone (no specials), as the bindings give them. */
  async tokensOf(texts: string[]): Promise<string[][]> {
    if (texts.length === 0) return [];
    const encs = await this.engine.encodeBatch(texts, { addSpecialTokens: false });
    return encs.map((e) => e.getTokens());
  }

  tokenToId(token: string): number | undefined {
    return this.engine.tokenToId(token) ?? undefined;
  }

  idToToken(id: number): string | undefined {
    return Number.isInteger(id) && id >= 0 ? this.idToTokenTable[id] : undefined;
  }

  /** The tokenizer's decoder applied to the ids' tokens, as Tokenizer.decode does (unknown ids are
   * dropped). Synchronous: the bindings' Decoder.decode is. */
  decode(ids: ArrayLike<number>, opts: { skipSpecialTokens?: boolean } = {}): string {
    const tokens: string[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (opts.skipSpecialTokens && this.isSpecial(id)) continue;
      const t = this.idToToken(id);
      if (t !== undefined) tokens.push(t);
    }
    return this.decoder ? this.decoder.decode(tokens) : tokens.join(' ');
  }

  /** The canonical tokenizer.json text (what `save` writes). */
  toJson(): string {
    return this.canonicalText;
  }

  /** The lowercase setting of the normaliser (BertNormalizer.lowercase or a Lowercase step). */
  get lowercase(): boolean {
    const n = this.json.normalizer;
    const walk = (x: Record<string, unknown> | null | undefined): boolean => {
      if (!x) return false;
      if (x.type === 'BertNormalizer') return x.lowercase === true;
      if (x.type === 'Lowercase') return true;
      if (x.type === 'Sequence' && Array.isArray(x.normalizers)) return (x.normalizers as Array<Record<string, unknown>>).some(walk);
      return false;
    };
    return walk(n);
  }

  // ---- saving --------------------------------------------------------------------------------

  /**
   * Writes tokenizer.json, tokenizer_config.json, special_tokens_map.json and vocab.txt (bert) or
   * vocab.json + merges.txt (roberta), as transformers' save_pretrained lays them out.
   */
  async save(dir: string, opts: { modelMaxLength?: number } = {}): Promise<void> {
    await fsp.mkdir(dir, { recursive: true });
    const modelMaxLength = opts.modelMaxLength ?? this.modelMaxLength ?? DEFAULT_MODEL_MAX_LENGTH;
    const files: Array<[string, string]> = [['tokenizer.json', this.canonicalText]];
    files.push(['tokenizer_config.json', JSON.stringify(this.tokenizerConfig(modelMaxLength), null, 2) + '\n']);
    files.push(['special_tokens_map.json', JSON.stringify(this.specialTokensMap(), null, 2) + '\n']);
    const modelVocab = Object.entries(this.json.model.vocab ?? {}).sort((a, b) => a[1] - b[1]);
    if (this.family === 'bert') {
      // BertTokenizer.save_vocabulary: the model's tokens in id order, one per line.
      files.push(['vocab.txt', modelVocab.map(([t]) => t).join('\n') + '\n']);
    } else {
      // RobertaTokenizer.save_vocabulary: json.dumps(indent=2, sort_keys=True) and "#version: 0.2".
      const sorted = modelVocab.map(([t, id]) => [t, id] as [string, number]).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
      const body = sorted.map(([t, id]) => `  ${JSON.stringify(t)}: ${id}`).join(',\n');
      files.push(['vocab.json', `{\n${body}\n}\n`]);
      const merges = (this.json.model.merges ?? []).map((m) => (typeof m === 'string' ? m : `${m[0]} ${m[1]}`));
      files.push(['merges.txt', '#version: 0.2\n' + merges.map((m) => m + '\n').join('')]);
    }
    for (const [name, text] of files) await fsp.writeFile(path.join(dir, name), text, 'utf8');
  }

  private addedTokensDecoder(): Record<string, Omit<AddedTokenJson, 'id'>> {
    const out: Record<string, Omit<AddedTokenJson, 'id'>> = {};
    for (const t of [...(this.json.added_tokens ?? [])].sort((a, b) => a.id - b.id)) {
      out[String(t.id)] = {
        content: t.content,
        lstrip: t.lstrip,
        normalized: t.normalized,
        rstrip: t.rstrip,
        single_word: t.single_word,
        special: t.special,
      };
    }
    return out;
  }

  private tokenizerConfig(modelMaxLength: number): Record<string, unknown> {
    const s = this.specialTokens;
    if (this.family === 'bert') {
      const norm = findNormalizer(this.json.normalizer, 'BertNormalizer');
      return {
        added_tokens_decoder: this.addedTokensDecoder(),
        clean_up_tokenization_spaces: true,
        cls_token: s.cls,
        do_basic_tokenize: true,
        do_lower_case: this.lowercase,
        mask_token: s.mask,
        model_max_length: modelMaxLength,
        never_split: null,
        pad_token: s.pad,
        sep_token: s.sep,
        strip_accents: norm && typeof norm.strip_accents === 'boolean' ? norm.strip_accents : null,
        tokenize_chinese_chars: norm ? norm.handle_chinese_chars !== false : true,
        tokenizer_class: 'BertTokenizer',
        unk_token: s.unk,
      };
    }
    const pre = this.json.pre_tokenizer;
    const pp = this.json.post_processor;
    return {
      add_prefix_space: pre?.type === 'ByteLevel' ? pre.add_prefix_space === true : false,
      added_tokens_decoder: this.addedTokensDecoder(),
      bos_token: s.cls,
      clean_up_tokenization_spaces: false,
      cls_token: s.cls,
      eos_token: s.sep,
      errors: 'replace',
      mask_token: s.mask,
      model_max_length: modelMaxLength,
      pad_token: s.pad,
      sep_token: s.sep,
      tokenizer_class: 'RobertaTokenizer',
      trim_offsets: pp?.type === 'RobertaProcessing' ? pp.trim_offsets !== false : true,
      unk_token: s.unk,
    };
  }

  private specialTokensMap(): Record<string, unknown> {
    const s = this.specialTokens;
    const added = new Map((this.json.added_tokens ?? []).map((t) => [t.content, t]));
    // transformers writes an AddedToken dict where the token carries non-default flags.
    const entry = (content: string): unknown => {
      const t = added.get(content);
      if (t && (t.lstrip || t.rstrip || t.single_word)) {
        return { content, lstrip: t.lstrip, normalized: t.normalized, rstrip: t.rstrip, single_word: t.single_word };
      }
      return content;
    };
    if (this.family === 'bert') {
      return { cls_token: entry(s.cls), mask_token: entry(s.mask), pad_token: entry(s.pad), sep_token: entry(s.sep), unk_token: entry(s.unk) };
    }
    return {
      bos_token: entry(s.cls),
      cls_token: entry(s.cls),
      eos_token: entry(s.sep),
      mask_token: entry(s.mask),
      pad_token: entry(s.pad),
      sep_token: entry(s.sep),
      unk_token: entry(s.unk),
    };
  }
}

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

/** A piece's encoding as a cache entry (see PieceEntry). */
function toPieceEntry(enc: Encoding): PieceEntry {
  const e = toEncodedText(enc);
  if (e.ids.length === 1) return e.ids[0];
  const packed = new Uint32Array(e.ids.length);
  for (let i = 0; i < packed.length; i++) packed[i] = (e.ids[i] | (e.wordStarts[i] ? START_BIT : 0)) >>> 0;
  return packed;
}

/** The ids and word starts of a row of cached pieces. */
function assemble(row: PieceEntry[]): EncodedText {
  let n = 0;
  for (const e of row) n += typeof e === 'number' ? 1 : e.length;
  const ids = new Uint32Array(n);
  const wordStarts = new Uint8Array(n);
  let k = 0;
  for (const e of row) {
    if (typeof e === 'number') {
      ids[k] = e;
      wordStarts[k++] = 1;
    } else {
      for (let j = 0; j < e.length; j++) {
        const v = e[j];
        ids[k] = v & 0x7fffffff;
        wordStarts[k++] = v >>> 31;
      }
    }
  }
  return { ids, wordStarts };
}

/**
 * Concatenates the encodings of consecutive parts of one text. A part that begins at a forced cut
 * (see "Bounds for pathological text") continues the word before it: WordPiece drops the part's
 * first word (the part before ends in that word's [UNK]); BPE keeps the tokens, marked as not
 * starting a word.
 */
function joinParts(parts: EncodedText[], forced: boolean[], wordPiece: boolean): EncodedText {
  if (parts.length === 1) return parts[0];
  const from = parts.map((p, i) => {
    if (!forced[i] || !wordPiece) return 0;
    let j = 1;
    while (j < p.ids.length && !p.wordStarts[j]) j++;
    return Math.min(j, p.ids.length);
  });
  const n = parts.reduce((s, p, i) => s + p.ids.length - from[i], 0);
  const ids = new Uint32Array(n);
  const wordStarts = new Uint8Array(n);
  let k = 0;
  parts.forEach((p, i) => {
    ids.set(p.ids.subarray(from[i]), k);
    wordStarts.set(p.wordStarts.subarray(from[i]), k);
    if (forced[i] && !wordPiece && p.ids.length > 0) wordStarts[k] = 0;
    k += p.ids.length - from[i];
  });
  return { ids, wordStarts };
}

function toEncodedText(enc: Encoding): EncodedText {
  const ids = Uint32Array.from(enc.getIds());
  const words = enc.getWordIds();
  const n = ids.length;
  const starts = new Uint8Array(n);
  let prev: number | null | undefined = -1;
  for (let i = 0; i < n; i++) {
    const w = words[i];
    // A token without a word id (none occur without specials, but be safe) is its own word.
    if (w === null || w === undefined || w !== prev) starts[i] = 1;
    prev = w;
  }
  return { ids, wordStarts: starts };
}

/** The bindings' own serialisation of a tokenizer (pretty, as Python's Tokenizer.save writes). */
function canonicalText(engine: Tokenizer): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-tok-'));
  try {
    const file = path.join(dir, 'tokenizer.json');
    engine.save(file, true);
    return fs.readFileSync(file, 'utf8');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function findNormalizer(n: Record<string, unknown> | null | undefined, type: string): Record<string, unknown> | undefined {
  if (!n) return undefined;
  if (n.type === type) return n;
  if (n.type === 'Sequence' && Array.isArray(n.normalizers)) {
    for (const x of n.normalizers as Array<Record<string, unknown>>) {
      const found = findNormalizer(x, type);
      if (found) return found;
    }
  }
  return undefined;
}

/** Reads a file as UTF-8, refusing binary content (NUL bytes or invalid UTF-8). */
async function readUtf8(file: string): Promise<string> {
  requireRegularFile(file, 'tokenizer file'); // stat before open: opening a FIFO blocks
  let bytes: Buffer;
  try {
    bytes = await fsp.readFile(file);
  } catch (err) {
    throw new InputError(`cannot read ${file}: ${(err as Error).message}`);
  }
  check(bytes.length > 0, `${file} is empty (an interrupted copy?); copy it again from where the model came from`);
  const hint = `${file} looks binary, not a UTF-8 text file; expected a tokenizer file`;
  check(!bytes.includes(0), hint);
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new InputError(hint);
  }
}

const TOKENIZER_CONFIG = 'tokenizer_config.json';

/**
 * A reader of tokenizer_config.json's switches (do_lower_case...): a JSON boolean, else the default
 * when the key is absent or null; any other value is an InputError naming the file and key
 * (Python would take "false" for true, and a default here would silently change the tokenization).
 */
function configFlags(config: Record<string, unknown>, file: string): <D extends boolean | null>(key: string, d: D) => boolean | D {
  return (key, d) => {
    const v = config[key];
    if (v === undefined || v === null) return d;
    check(typeof v === 'boolean', `${file}: ${key} must be true or false, got ${JSON.stringify(v).slice(0, 80)}; fix the file (JSON booleans, unquoted)`);
    return v as boolean;
  };
}

/** A special token's name from a config value: "[CLS]" or {"content": "[CLS]", ...}. */
function tokenName(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return undefined;
}

async function readJsonIfPresent(file: string): Promise<Record<string, unknown> | undefined> {
  if (!fs.existsSync(file)) return undefined;
  const text = await readUtf8(file);
  try {
    const v = JSON.parse(text);
    check(v && typeof v === 'object' && !Array.isArray(v), `${file} must hold a JSON object`);
    return v as Record<string, unknown>;
  } catch (err) {
    if (err instanceof InputError) throw err;
    throw new InputError(`${file} is not valid JSON (${(err as Error).message}); fix it, or copy it again from where the model came from`);
  }
}

/** The UTF-16 index of each code-point index of `s` (one past the end included), or null when
 * every character of `s` is in the BMP (the two counts agree). */
function utf16Index(s: string): number[] | null {
  if (!/[\uD800-\uDFFF]/.test(s)) return null;
  const at: number[] = [];
  let i = 0;
  for (const ch of s) {
    at.push(i);
    i += ch.length;
  }
  at.push(i);
  return at;
}

/** Special-token names and model_max_length from tokenizer_config.json and special_tokens_map.json
 * (tokenizer_config.json wins, as in transformers' from_pretrained). */
async function readConfigHints(dir: string): Promise<{ hints: ConfigHints; raw: Record<string, unknown> }> {
  const configFile = path.join(dir, TOKENIZER_CONFIG);
  const mapFile = path.join(dir, 'special_tokens_map.json');
  const config = (await readJsonIfPresent(configFile)) ?? {};
  const map = (await readJsonIfPresent(mapFile)) ?? {};
  const specials: Partial<SpecialTokens> = {};
  const pick = (key: SpecialKey, ...names: string[]) => {
    for (const [src, file] of [[config, configFile], [map, mapFile]] as const) {
      for (const name of names) {
        if (src[name] === undefined || src[name] === null) continue;
        const v = tokenName(src[name]);
        // A number or a list where a token belongs: the file is wrong, and falling back to the
        // default name would tokenize with a special token the model was not trained with.
        check(v !== undefined, `${file}: ${name} must be a token (a string, or an object with a string "content"), got ${JSON.stringify(src[name]).slice(0, 80)}; fix the file or copy it again from where the model came from`);
        specials[key] = v;
        return;
      }
    }
  };
  pick('cls', 'cls_token', 'bos_token');
  pick('sep', 'sep_token', 'eos_token');
  pick('pad', 'pad_token');
  pick('mask', 'mask_token');
  pick('unk', 'unk_token');
  const mml = config.model_max_length;
  check(
    mml === undefined || mml === null || (typeof mml === 'number' && Number.isInteger(mml) && mml > 0),
    `${configFile}: model_max_length must be a positive integer, got ${JSON.stringify(mml)}; fix the file or leave the key out`,
  );
  // transformers writes a huge sentinel (1e30) when a tokenizer has no limit; ignore that.
  const modelMaxLength = typeof mml === 'number' && mml < 1e9 ? mml : undefined;
  return { hints: { specials, modelMaxLength }, raw: config };
}

function specialIdsIn(vocab: Map<string, number>, names: SpecialTokens, file: string): SpecialTokenIds {
  const ids = {} as SpecialTokenIds;
  for (const key of SPECIAL_KEYS) {
    const id = vocab.get(names[key]);
    if (id === undefined) {
      const all = SPECIAL_KEYS.map((k) => names[k]).join(' ');
      throw new InputError(`${file}: the ${key} token ${JSON.stringify(names[key])} is missing; an MLM tokenizer needs all of ${all}`);
    }
    ids[key] = id;
  }
  return ids;
}

/** Added tokens of a tokenizer built from an old layout: the five specials (lstrip for the names in
 * `lstrip`, as RoBERTa's <mask>) plus added_tokens_decoder entries of tokenizer_config.json. */
function addedTokensFor(vocab: Map<string, number>, names: SpecialTokens, config: Record<string, unknown>, lstrip: Set<string>): AddedTokenJson[] {
  const byContent = new Map<string, AddedTokenJson>();
  for (const key of SPECIAL_KEYS) {
    const name = names[key];
    byContent.set(name, addedToken(vocab.get(name)!, name, { lstrip: lstrip.has(name) }));
  }
  const decoder = config.added_tokens_decoder;
  if (decoder && typeof decoder === 'object') {
    let next = Math.max(...vocab.values()) + 1;
    for (const [idText, v] of Object.entries(decoder as Record<string, Record<string, unknown>>)) {
      const content = tokenName(v);
      if (content === undefined) continue;
      const id = vocab.get(content) ?? (Number.isInteger(Number(idText)) ? Number(idText) : next++);
      byContent.set(content, addedToken(id, content, {
        lstrip: v.lstrip === true,
        rstrip: v.rstrip === true,
        single_word: v.single_word === true,
        normalized: v.normalized === true,
        special: v.special !== false,
      }));
    }
  }
  return [...byContent.values()];
}
