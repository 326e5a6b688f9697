// What changed between masked LMs on the same held-out text (`mlm compare`), including models whose
// tokenizers differ (a vocabulary extension, data/tokenizer-extend.ts).
//
// The tokenisation-independent figure is a whole-word pseudo-log-likelihood. Words are cut the
// same way for every model, at Unicode whitespace of the raw text (so `hepatitis,` is one word
// whatever the tokenizer does with it). For each word occurrence, every token of that word (the
// tokens whose first character other than whitespace lies inside the word) is replaced by the
// mask token, all other words stay visible, and the word's score is the sum of log p(token) over
// its tokens from that one forward pass. Its negative, summed over words and divided by their
// count, is nats per word; exp of it the word-level pseudo-perplexity; divided by ln 2 and the
// words' characters, bits per character. Porting note: Salazar et al. 2020 mask one token at a
// time; masking the whole word (as Kauf and Ivanova 2023 argue for multi-token words) keeps a
// word's own pieces from giving it away, so a model cannot look better merely because its
// tokenizer cuts words finer; the cost is that the pieces of a word are scored as if independent,
// which penalises finer cuts somewhat.
//
// Beside it: the usual masked-token loss, perplexity and accuracy (each model's own tokenizer,
// 15% random masks, fixed seed; not comparable across tokenizers), tokens per word and unknown
// rate per tokenizer, the distribution of per-document pseudo-perplexity, the words whose
// likelihood gained and lost most against the first model, and fill-mask on those words.
import type { Tensor2D } from '@tensorflow/tfjs';
import type { MlmTokenizer } from '../data/tokenizer.ts';
import type { Tf } from './backend.ts';
import { maxSequenceLength } from './checkpoint.ts';
import { fillMask, TextTooLongError } from './fill-mask.ts';
import type { MaskedLM } from './models/bert.ts';
import { lineChartSvg, type Series } from './charts.ts';

/** A word: its span in code points of the text and the text itself. */
export interface WordSpan {
  start: number;
  end: number;
  text: string;
}

/** Words at Unicode whitespace; offsets in code points (what the tokenizers bindings report). */
export function splitWords(cps: readonly string[]): WordSpan[] {
  const out: WordSpan[] = [];
  let start = -1;
  for (let i = 0; i <= cps.length; i++) {
    const space = i === cps.length || /^\s$/u.test(cps[i]);
    if (space && start >= 0) {
      out.push({ start, end: i, text: cps.slice(start, i).join('') });
      start = -1;
    } else if (!space && start < 0) start = i;
  }
  return out;
}

/** One scored word occurrence. */
export interface ScoredWord {
  doc: number;
  /** The word's index among its document's words. */
  index: number;
  text: string;
  /** Negative log-likelihood of the word's tokens with the whole word masked (nats). */
  nll: number;
  tokens: number;
  unk: number;
  chars: number;
}

export interface PllOptions {
  /** Stop after this many words (default 2000). */
  maxWords?: number;
  /** Words per context window before the token limit cuts it (default 48). */
  windowWords?: number;
  /** Rows (one per word) per forward pass (default 32). */
  batchRows?: number;
  /** Longest window in tokens, specials included (default min(128, the model's positions)). */
  maxTokens?: number;
  onProgress?: (words: number) => void;
  /** Called with each word occurrence left unscored (longer than a window, or no token of it reaches the model). */
  onUnscored?: (word: { doc: number; index: number }) => void;
}

interface Job {
  ids: number[];
  positions: number[];
  word: ScoredWord;
}

/** Whole-word pseudo-log-likelihood of every word of `docs` (see the file header), in order. */
export async function wordPseudoLogLikelihood(tf: Tf, model: MaskedLM, tokenizer: MlmTokenizer, docs: readonly string[], opts: PllOptions = {}): Promise<ScoredWord[]> {
  const maxWords = opts.maxWords ?? 2000;
  const maxTokens = Math.min(opts.maxTokens ?? 128, maxSequenceLength(model.config));
  const batchRows = opts.batchRows ?? 32;
  const maskId = tokenizer.specialIds.mask;
  const out: ScoredWord[] = [];
  let jobs: Job[] = [];

  const run = async (): Promise<void> => {
    if (jobs.length === 0) return;
    const T = Math.max(...jobs.map((j) => j.ids.length));
    const B = jobs.length;
    const ids = new Int32Array(B * T).fill(tokenizer.specialIds.pad);
    const mask = new Int32Array(B * T);
    const flat: number[] = [];
    const targets: number[] = [];
    jobs.forEach((j, b) => {
      for (let t = 0; t < j.ids.length; t++) {
        ids[b * T + t] = j.ids[t];
        mask[b * T + t] = 1;
      }
      for (const p of j.positions) {
        targets.push(j.ids[p]);
        ids[b * T + p] = maskId;
        flat.push(b * T + p);
      }
    });
    const picked = tf.tidy(() => {
      const inputs = { inputIds: tf.tensor2d(ids, [B, T], 'int32'), attentionMask: tf.tensor2d(mask, [B, T], 'int32') };
      const hidden = tf.reshape(model.encode(inputs, { training: false }), [B * T, model.config.hidden_size]) as Tensor2D;
      const logp = tf.logSoftmax(model.head(tf.gather(hidden, tf.tensor1d(flat, 'int32')) as Tensor2D));
      return tf.gatherND(logp, tf.tensor2d(targets.flatMap((t, i) => [i, t]), [targets.length, 2], 'int32'));
    });
    const lp = await picked.data();
    picked.dispose();
    let k = 0;
    for (const j of jobs) {
      let s = 0;
      for (let i = 0; i < j.positions.length; i++) s += lp[k++];
      j.word.nll = -s;
      out.push(j.word);
    }
    jobs = [];
    opts.onProgress?.(out.length);
  };

  let queued = 0;
  for (let d = 0; d < docs.length && queued < maxWords; d++) {
    const cps = Array.from(docs[d]);
    const words = splitWords(cps);
    let i = 0;
    let size = opts.windowWords ?? 48;
    while (i < words.length && queued < maxWords) {
      const j = Math.min(words.length, i + size);
      const w0 = words[i].start;
      const window = cps.slice(w0, words[j - 1].end);
      const enc = await tokenizer.encodeWithSpecials(window.join(''));
      if (enc.ids.length > maxTokens) {
        if (size > 1) {
          size = Math.max(1, Math.floor(size / 2));
          continue;
        }
        opts.onUnscored?.({ doc: d, index: i });
        i++; // one word longer than the window: left unscored
        size = opts.windowWords ?? 48;
        continue;
      }
      for (let w = i; w < j && queued < maxWords; w++) {
        const positions: number[] = [];
        let unk = 0;
        for (let t = 0; t < enc.ids.length; t++) {
          if (enc.specialTokensMask[t] && enc.ids[t] !== tokenizer.specialIds.unk) continue;
          // A token belongs to the word holding its first character other than whitespace: byte-level
          // BPE offsets that are not trimmed (trim_offsets false) start "Ġword" at the space before it.
          const end = enc.offsets[t][1];
          let start = enc.offsets[t][0];
          while (start < end && /^\s$/u.test(window[start])) start++;
          start += w0;
          if (start >= words[w].start && start < words[w].end) {
            positions.push(t);
            if (enc.ids[t] === tokenizer.specialIds.unk) unk++;
          }
        }
        if (positions.length === 0) {
          opts.onUnscored?.({ doc: d, index: w }); // nothing of the word reaches the model
          continue;
        }
        const word: ScoredWord = { doc: d, index: w, text: words[w].text, nll: 0, tokens: positions.length, unk, chars: words[w].end - words[w].start };
        jobs.push({ ids: enc.ids, positions, word });
        queued++;
        if (jobs.length >= batchRows) await run();
      }
      i = j;
      size = opts.windowWords ?? 48;
    }
  }
  await run();
  return out;
}

export interface ModelSummary {
  model: string;
  words: number;
  nats_per_word: number;
  word_pseudo_perplexity: number;
  bits_per_char: number;
  tokens_per_word: number;
  unk_rate: number;
  /** Masked-token figures with the model's own tokenizer (not comparable across tokenizers). */
  eval_loss?: number;
  eval_perplexity?: number;
  eval_accuracy?: number;
}

/**
 * The likelihood figures over `words` (the occurrences every model scored: `commonWords`), and the
 * tokenizer's figures (tokens per word, unknown-token rate) over `all` the words this model scored.
 * With no words, the likelihood figures are NaN (not the zero loss of a perfect model).
 */
export function summarise(model: string, words: readonly ScoredWord[], all: readonly ScoredWord[] = words): ModelSummary {
  const nll = words.reduce((s, w) => s + w.nll, 0);
  const tokens = all.reduce((s, w) => s + w.tokens, 0);
  const chars = words.reduce((s, w) => s + w.chars, 0);
  const n = words.length === 0 ? NaN : words.length;
  return {
    model,
    words: words.length,
    nats_per_word: nll / n,
    word_pseudo_perplexity: Math.exp(nll / n),
    bits_per_char: chars === 0 ? NaN : nll / Math.LN2 / chars,
    tokens_per_word: tokens / Math.max(1, all.length),
    unk_rate: tokens === 0 ? 0 : all.reduce((s, w) => s + w.unk, 0) / tokens,
  };
}

/** What `commonWords` kept and left out. */
export interface CommonWords {
  /** Each model's words restricted to the common occurrences, in its own order. */
  words: ScoredWord[][];
  /** Occurrences some model did not score (too long for its window, removed by its normalizer, or past its word limit). */
  notEveryModel: number;
  /** Occurrences scored by every model that hold an unknown token under one of them. */
  unknown: number;
}

/**
 * The word occurrences to compare models on: those every model scored, less those holding an
 * unknown token under any model. Totals over different sets of words are not comparable (a word
 * one tokenizer cannot fit in its window would count for one model only), and a word read as
 * [UNK] is charged only p([UNK]), however long and rare it is: a tokenizer that knows less would
 * look better. `unscored` (per model, from `onUnscored`) lets `notEveryModel` count the words no
 * model scored too.
 */
export function commonWords(scored: readonly (readonly ScoredWord[])[], unscored: readonly (readonly { doc: number; index: number }[])[] = []): CommonWords {
  const key = (w: { doc: number; index: number }) => `${w.doc}:${w.index}`;
  const counts = new Map<string, number>();
  const unknown = new Set<string>();
  for (const words of scored) {
    for (const w of words) {
      counts.set(key(w), (counts.get(key(w)) ?? 0) + 1);
      if (w.unk > 0) unknown.add(key(w));
    }
  }
  for (const words of unscored) for (const w of words) if (!counts.has(key(w))) counts.set(key(w), 0);
  const everyModel = new Set([...counts].filter(([, n]) => n === scored.length).map(([k]) => k));
  const keep = new Set([...everyModel].filter((k) => !unknown.has(k)));
  return {
    words: scored.map((words) => words.filter((w) => keep.has(key(w)))),
    notEveryModel: counts.size - everyModel.size,
    unknown: everyModel.size - keep.size,
  };
}

/** Per-document word pseudo-perplexity (documents with no scored word are left out). */
export function documentPerplexities(words: readonly ScoredWord[]): Map<number, number> {
  const sums = new Map<number, { nll: number; n: number }>();
  for (const w of words) {
    const s = sums.get(w.doc) ?? { nll: 0, n: 0 };
    s.nll += w.nll;
    s.n++;
    sums.set(w.doc, s);
  }
  return new Map([...sums].map(([d, s]) => [d, Math.exp(s.nll / s.n)]));
}

/** The key words are grouped by in the gain table: lowercased, outer punctuation removed. */
export function wordKey(text: string): string {
  const k = text.toLowerCase().replace(/^[\p{P}\p{S}]+|[\p{P}\p{S}]+$/gu, '');
  return k === '' ? text.toLowerCase() : k;
}

export interface WordChange {
  word: string;
  count: number;
  /** Mean NLL per occurrence under the baseline and under the other model. */
  before: number;
  after: number;
  /** before - after: positive = the other model finds the word likelier. */
  gain: number;
}

/**
 * Per-word change of mean NLL from `base` to `other` over the occurrences both scored (matched
 * by document and word index: both come from the same word cut), for words seen `minCount` times or more,
 * sorted by total gain (count x mean gain), largest first. `gainedAndLost` splits it.
 */
export function wordChanges(base: readonly ScoredWord[], other: readonly ScoredWord[], minCount = 2): WordChange[] {
  const byKey = new Map<string, { n: number; a: number; b: number }>();
  const otherAt = new Map(other.map((w) => [`${w.doc}:${w.index}`, w] as const));
  for (const w of base) {
    const o = otherAt.get(`${w.doc}:${w.index}`);
    if (!o) continue; // scored under one model only (a word too long for its window)
    const key = wordKey(w.text);
    const s = byKey.get(key) ?? { n: 0, a: 0, b: 0 };
    s.n++;
    s.a += w.nll;
    s.b += o.nll;
    byKey.set(key, s);
  }
  const out: WordChange[] = [];
  for (const [word, s] of byKey) {
    if (s.n < minCount) continue;
    out.push({ word, count: s.n, before: s.a / s.n, after: s.b / s.n, gain: (s.a - s.b) / s.n });
  }
  return out.sort((x, y) => y.gain * y.count - x.gain * x.count || (x.word < y.word ? -1 : 1));
}

/**
 * The words that gained (total gain > 0), most first, and those that lost (< 0), most first, at
 * most `n` of each, words of equal total in word order in both: a list never shows a change of the
 * other sign (a model against itself has neither).
 */
export function gainedAndLost(changes: readonly WordChange[], n: number): { gained: WordChange[]; lost: WordChange[] } {
  const byWord = (x: WordChange, y: WordChange) => (x.word < y.word ? -1 : x.word > y.word ? 1 : 0);
  const total = (c: WordChange) => c.gain * c.count;
  return {
    gained: changes.filter((c) => c.gain > 0).sort((x, y) => total(y) - total(x) || byWord(x, y)).slice(0, n),
    lost: changes.filter((c) => c.gain < 0).sort((x, y) => total(x) - total(y) || byWord(x, y)).slice(0, n),
  };
}

export interface FillMaskExample {
  word: string;
  text: string;
  predictions: Array<{ model: string; top: Array<{ token: string; score: number }> }>;
}

/**
 * For each word, its first occurrence's window of up to `context` words on each side with the
 * word replaced by each model's mask token, and each model's top 3.
 */
export async function fillMaskExamples(
  tf: Tf,
  models: ReadonlyArray<{ label: string; model: MaskedLM; tokenizer: MlmTokenizer }>,
  docs: readonly string[],
  words: readonly string[],
  context = 12,
): Promise<FillMaskExample[]> {
  const out: FillMaskExample[] = [];
  for (const target of words) {
    let found: { spans: ReturnType<typeof splitWords>; i: number } | null = null;
    for (const doc of docs) {
      const spans = splitWords(Array.from(doc));
      const i = spans.findIndex((s) => wordKey(s.text) === target);
      if (i >= 0) {
        found = { spans, i };
        break;
      }
    }
    if (!found) continue;
    const { spans, i } = found;
    const w = spans[i].text;
    const core = Math.max(0, w.toLowerCase().indexOf(target));
    // `ctx` words each side; fewer when the text is longer than a model's positions (a long URL
    // nearby), none at all and the example is left out when even the word alone is.
    for (let ctx = context; ctx >= 0; ctx = ctx > 0 ? Math.floor(ctx / 2) : -1) {
      const before = spans.slice(Math.max(0, i - ctx), i).map((s) => s.text).join(' ') + (i > 0 && ctx > 0 ? ' ' : '') + w.slice(0, core);
      const after = w.slice(core + target.length) + (i + 1 < spans.length && ctx > 0 ? ' ' : '') + spans.slice(i + 1, i + 1 + ctx).map((s) => s.text).join(' ');
      const predictions = [];
      try {
        for (const m of models) {
          const r = await fillMask(tf, m.model, m.tokenizer, `${before}${m.tokenizer.maskToken}${after}`, { topK: 3 });
          predictions.push({ model: m.label, top: (r.masks[0] ?? []).map((c) => ({ token: c.token_str, score: c.score })) });
        }
      } catch (err) {
        if (err instanceof TextTooLongError) continue;
        throw err;
      }
      out.push({ word: target, text: `${before}[${target}]${after}`, predictions });
      break;
    }
  }
  return out;
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b'];

/** Sorted per-document pseudo-perplexities per model (a quantile plot, log y). */
export function documentChartSvg(perModel: ReadonlyArray<{ model: string; perDoc: Map<number, number> }>): string {
  const series: Series[] = perModel.map((m, i) => {
    const values = [...m.perDoc.values()].sort((a, b) => a - b);
    const n = values.length;
    return { name: m.model, color: COLORS[i % COLORS.length], points: values.map((v, k) => [n === 1 ? 50 : (100 * k) / (n - 1), v] as [number, number]) };
  });
  return lineChartSvg({
    title: 'Per-document word pseudo-perplexity, sorted',
    xLabel: 'documents, percentile (lower = easier)',
    yLabel: 'word pseudo-perplexity (log)',
    series,
    logY: true,
  });
}
