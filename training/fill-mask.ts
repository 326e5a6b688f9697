// Fill-mask inference: the Hugging Face `fill-mask` pipeline's behaviour and output shape
// (docs/formats.md, "Command output"), on an mlmkit masked LM.
//
// For a text holding the tokenizer's own mask token ([MASK] for BERT, <mask> for RoBERTa, whose
// lstrip flag absorbs the space before it: "Hello <mask>!" encodes as "Hello" + <mask> + "!"):
//   1. encode with the specials ([CLS] A [SEP] / <s> A </s>), no truncation;
//   2. at each mask position, a softmax over the whole vocabulary of the model's logits;
//   3. with `targets`, keep only those ids (scores are not renormalised, as in transformers);
//   4. the top_k candidates, best first, each {score, token, token_str, sequence}: token_str is
//      the decoded token, sequence the input ids with this one mask filled in, decoded.
// One mask gives one list; several give one list per mask, in text order. As in transformers,
// with several masks each sequence fills only its own mask and is decoded with the special
// tokens kept (`skip_special_tokens=single_mask`): "[CLS] paris is the [MASK] of france. [SEP]".
//
// Targets, as transformers' `get_target_ids`: a target that is a vocabulary entry is used as is;
// otherwise it is tokenized without specials and its first token used, with a warning; a target
// that gives no token is dropped with a warning; duplicates collapse.
//
// Porting notes:
// - The softmax is computed in float64 from the float32 logits (transformers: float32 softmax):
//   the scores agree within float32 rounding, and the top-k scores never sum past 1.
// - Ties are broken by the smaller id (torch.topk leaves their order unspecified).
// - When the embedding matrix has more rows than the tokenizer has ids (padded checkpoints), the
//   softmax still runs over all rows (so scores equal transformers'), but rows the tokenizer
//   cannot produce are never proposed (transformers could propose them, with an empty token_str).
//
// Reference: transformers `pipelines/fill_mask.py` (FillMaskPipeline.preprocess, postprocess,
// get_target_ids).
import type { Tensor1D, Tensor2D } from '@tensorflow/tfjs';
import { InputError, requireInteger } from '../common/errors.ts';
import { DEFAULT_SPECIALS, type MlmTokenizer } from '../data/tokenizer.ts';
import { maxSequenceLength } from './checkpoint.ts';
import type { MaskedLM, Tf } from './models/bert.ts';
import type { ModelConfig } from './models/config.ts';

/** A text with more tokens than the model has positions (bad input; callers that cut text catch it). */
export class TextTooLongError extends InputError {}

/** One proposal for one mask, as transformers' pipeline returns it. */
export interface FillMaskCandidate {
  score: number;
  token: number;
  token_str: string;
  sequence: string;
}

export interface FillMaskOptions {
  /** Candidates per mask (default 5); fewer when fewer targets or ids exist. */
  topK?: number;
  /** Restrict the candidates to these words (see the file header). */
  targets?: readonly string[];
  /** Receives the warnings about targets (default: none). */
  warn?: (line: string) => void;
}

export interface FillMaskResult {
  /** One list per mask token, in text order, each best first. */
  masks: FillMaskCandidate[][];
  /** The token positions of the masks in `inputIds`. */
  positions: number[];
  /** The encoded input, specials included. */
  inputIds: number[];
}

/** What transformers' pipeline returns: the list itself for one mask, a list of lists for several. */
export function pipelineOutput(result: FillMaskResult): FillMaskCandidate[] | FillMaskCandidate[][] {
  return result.masks.length === 1 ? result.masks[0] : result.masks;
}

/** The ids of `targets`, as transformers' get_target_ids finds them (see the file header). */
export async function targetIds(tokenizer: MlmTokenizer, targets: readonly string[], warn: (line: string) => void = () => {}): Promise<number[]> {
  const ids = new Set<number>();
  for (const target of targets) {
    let id = tokenizer.tokenToId(target);
    if (id === undefined) {
      const [enc] = await tokenizer.encodeWhole([target]);
      if (enc.ids.length === 0) {
        warn(`the target ${JSON.stringify(target)} does not exist in the model vocabulary and gives no token; ignoring it`);
        continue;
      }
      id = enc.ids[0];
      warn(`the target ${JSON.stringify(target)} does not exist in the model vocabulary; replacing it with ${JSON.stringify(tokenizer.idToToken(id) ?? String(id))}`);
    }
    ids.add(id);
  }
  if (ids.size === 0) throw new InputError('none of the targets gives a token of this model\'s vocabulary; give words the tokenizer knows');
  return [...ids].sort((a, b) => a - b);
}

/** The top `k` of `scores` among `candidates` (ids), best first, ties to the smaller id. */
function topK(scores: Float64Array, candidates: ArrayLike<number>, k: number): number[] {
  // A large k (up to the whole vocabulary): one sort, O(V log V), where the buffer below is O(k V).
  if (k > 64) return Array.from(candidates).sort((a, b) => scores[b] - scores[a] || a - b).slice(0, k);
  // A small sorted buffer: k is small next to the vocabulary.
  const best: number[] = [];
  const better = (a: number, b: number) => scores[a] > scores[b] || (scores[a] === scores[b] && a < b);
  for (let i = 0; i < candidates.length; i++) {
    const id = candidates[i];
    if (best.length === k && !better(id, best[k - 1])) continue;
    let at = best.length === k ? k - 1 : best.length;
    best[at] = id;
    while (at > 0 && better(best[at], best[at - 1])) {
      [best[at], best[at - 1]] = [best[at - 1], best[at]];
      at--;
    }
  }
  return best;
}

/** Softmax of one row of float32 logits, in float64. */
function softmaxRow(logits: Float32Array, offset: number, V: number): Float64Array {
  let max = -Infinity;
  for (let j = 0; j < V; j++) if (logits[offset + j] > max) max = logits[offset + j];
  const out = new Float64Array(V);
  let sum = 0;
  for (let j = 0; j < V; j++) {
    const e = Math.exp(logits[offset + j] - max);
    out[j] = e;
    sum += e;
  }
  for (let j = 0; j < V; j++) out[j] /= sum;
  return out;
}

/**
 * The text encoded with its specials and the positions of its mask tokens. InputError when it has
 * no mask token or does not fit the model's positions (a cheap check before building a model).
 */
export async function encodeForFillMask(tokenizer: MlmTokenizer, config: ModelConfig, text: string): Promise<{ ids: number[]; positions: number[] }> {
  const maskToken = tokenizer.maskToken;
  const maskId = tokenizer.specialIds.mask;
  const maxLen = maxSequenceLength(config);
  // A text far too long (a book pasted in) is refused before tokenizing it whole (17 s for a
  // million words): every run of non-space characters holding a letter or digit gives at least one
  // token, so their count bounds the length from below.
  let words = 0;
  for (const m of text.matchAll(/\S+/g)) if (/[\p{L}\p{N}]/u.test(m[0]) && ++words > 4 * maxLen) break;
  if (words > 4 * maxLen) {
    throw new TextTooLongError(`the text is more than ${4 * maxLen} tokens long, far more than the ${maxLen} positions of this model; shorten it`);
  }
  const enc = await tokenizer.encodeWithSpecials(text);
  const ids = enc.ids;
  const positions: number[] = [];
  ids.forEach((id, i) => {
    if (id === maskId) positions.push(i);
  });
  if (positions.length === 0) {
    const other = Object.values(DEFAULT_SPECIALS).map((s) => s.mask).find((m) => m !== maskToken && text.includes(m));
    const hint = other ? ` (this model's mask token is ${maskToken}, not ${other})` : '';
    throw new InputError(`no ${maskToken} token in the text${hint}; put ${maskToken} where a word should be predicted`);
  }
  if (ids.length > maxLen) {
    throw new TextTooLongError(`the text is ${ids.length} tokens long (specials included), more than the ${maxLen} positions of this model; shorten it`);
  }

  return { ids, positions };
}

/** Refuses unusable options (InputError); `fillMask` calls it, the CLI too before loading a model. */
export function checkFillMaskOptions(opts: FillMaskOptions): void {
  if (opts.topK !== undefined) requireInteger(opts.topK, 'top-k', 1);
}

/**
 * Runs the fill-mask pipeline on `text` (see the file header). InputError when the text holds no
 * mask token, or is longer than the model's positions, or top_k / targets are unusable.
 */
export async function fillMask(tf: Tf, model: MaskedLM, tokenizer: MlmTokenizer, text: string, opts: FillMaskOptions = {}): Promise<FillMaskResult> {
  checkFillMaskOptions(opts);
  const k = opts.topK ?? 5;
  const config = model.config;
  if (tokenizer.vocabSize > config.vocab_size) {
    throw new InputError(`the tokenizer has ${tokenizer.vocabSize} ids but the model's vocab_size is ${config.vocab_size}; use the model's own tokenizer`);
  }
  const { ids, positions } = await encodeForFillMask(tokenizer, config, text);

  const targets = opts.targets && opts.targets.length > 0 ? await targetIds(tokenizer, opts.targets, opts.warn) : null;
  // Ids that can be proposed: the targets, or every id the tokenizer knows.
  let candidates: ArrayLike<number>;
  if (targets) {
    candidates = targets;
  } else {
    const known: number[] = [];
    for (let id = 0; id < tokenizer.vocabSize; id++) if (tokenizer.idToToken(id) !== undefined) known.push(id);
    candidates = known;
  }
  const kk = Math.min(k, candidates.length);

  // Logits at the mask positions only: the encoder over the text, the MLM head on N rows.
  const T = ids.length;
  const V = config.vocab_size;
  const H = config.hidden_size;
  const logits = tf.tidy(() => {
    const inputIds = tf.tensor2d([ids], [1, T], 'int32') as Tensor2D;
    const attentionMask = tf.ones([1, T], 'int32') as Tensor2D;
    const hidden = model.encode({ inputIds, attentionMask }, { training: false }); // [1, T, H]
    const picked = tf.gather(tf.reshape(hidden, [T, H]) as Tensor2D, tf.tensor1d(positions, 'int32') as Tensor1D) as Tensor2D; // [N, H]
    return model.head(picked); // [N, V]
  });
  let data: Float32Array;
  try {
    data = (await logits.data()) as Float32Array;
  } finally {
    logits.dispose();
  }

  const single = positions.length === 1;
  const pad = tokenizer.specialIds.pad;
  const masks = positions.map((pos, n) => {
    const probs = softmaxRow(data, n * V, V);
    return topK(probs, candidates, kk).map((token) => {
      const filled = ids.slice();
      filled[pos] = token;
      return {
        score: probs[token],
        token,
        token_str: tokenizer.decode([token]),
        sequence: tokenizer.decode(filled.filter((id) => id !== pad), { skipSpecialTokens: single }),
      };
    });
  });
  return { masks, positions, inputIds: ids };
}
