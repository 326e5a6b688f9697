// Dynamic masking for masked-language-model training (docs/architecture.md, "Masking"): turns one batch of token
// ids into model inputs and labels, drawing fresh masks from a seeded Rng every time it is called.
// A pure function of (ids, options, rng state): it never touches Math.random or module state, so
// saving the Rng's state in a checkpoint is enough to redraw exactly the masks an uninterrupted
// run would have drawn.
//
// References: Devlin et al. 2019 (BERT, section 3.1 and appendix A.1: 15% of tokens, of which
// 80% [MASK] / 10% random / 10% unchanged); transformers' DataCollatorForLanguageModeling
// (`torch_mask_tokens`) and its whole-word variants (DataCollatorForWholeWordMask, and
// DataCollatorForLanguageModeling(whole_word_mask=True) since transformers PR #39485, 2025).
//
// Which tokens take part. A position is ELIGIBLE when its id is not the pad id and not marked in
// `specials` (a table indexed by token id). Ineligible positions are copied through unchanged,
// get label -100 and draw nothing from the Rng. Build the table with `specialIdTable` from the
// tokenizer's special ids: [CLS] [SEP] [PAD] [MASK] and [UNK] (<s> </s> <pad> <mask> <unk>).
// Porting note: transformers' collator, when it computes the special-token mask itself, uses
// `get_special_tokens_mask(already_has_special_tokens=True)`, i.e. membership in
// `tokenizer.all_special_ids`, which includes the unknown token, so [UNK] is never selected; we
// follow that. (run_mlm.py instead passes the tokenizer's `special_tokens_mask`, which flags only
// the tokens its template added, so there an [UNK] inside the text can be selected.)
//
// Random replacements are drawn uniformly from [0, vocabSize), special ids included, as
// transformers does with `torch.randint(len(tokenizer))`. Pass the tokenizer's size, not a
// model's vocabulary padded to a multiple of 8, to keep the unused rows out of the inputs.
//
// DRAW ORDER (fixed: changing it changes every mask a given seed produces, so treat it as part of
// the format of a saved run). Positions are visited row by row, left to right (row-major).
//   selection draw  u = rng.next(); the unit (token or word) is selected iff u < mlmProbability.
//   treatment draw  for each selected token, v = rng.next():
//                     v < maskReplaceProb                       -> maskTokenId
//                     v < maskReplaceProb + randomReplaceProb   -> rng.int(vocabSize) (one more
//                                                                  draw, rejection-sampled)
//                     otherwise                                 -> unchanged
// Token-level: at each eligible position, its selection draw, then (if selected) its treatment
//   draw(s), before moving to the next position.
// Whole-word, 'independent' (default): a word's selection draw is taken at its first token and
//   applies to all its tokens; each token of a selected word then takes its own treatment draw
//   as it is visited, so draws interleave in position order exactly as in the token-level scheme.
// Whole-word, 'budget': per row, (1) the row's words are listed in position order, (2) that list
//   is shuffled with `rng.shuffle` (Fisher-Yates from the end, j = rng.int(i + 1)), (3) words are
//   taken greedily (no draws), (4) treatment draws for the selected tokens in position order.
// Porting note: transformers (torch path) draws three full [B, T] Bernoulli tensors (selection,
// replace-with-mask, random-vs-keep) plus a [B, T] tensor of random ids, whatever is selected; we
// draw one uniform per eligible unit and per selected token, and decide the three-way treatment
// from one uniform (P(mask) = 0.8, P(random) = 0.1, P(keep) = 0.1 exactly as in HF's two
// chained Bernoullis). Same distribution, far fewer draws; not the same stream.
//
// WHOLE-WORD MASKING (`wholeWord: true`, needs `wordStarts`, 1 where a token begins a word,
// computed at prepare time from the tokenizer's word ids). A word is a maximal run of eligible
// tokens that begins at a token with wordStarts = 1, or at any eligible token whose predecessor
// in the row is ineligible (special, padding) or absent (first position), and continues over
// eligible tokens with wordStarts = 0. So a continuation piece right after [CLS] (a block cut in
// the middle of a word) or after [SEP] forms a word of its own.
// Porting note: transformers' old DataCollatorForWholeWordMask skipped [CLS]/[SEP] and attached a
// "##" piece that follows them to the word before the separator; here separators end words.
// Two selection schemes (`wholeWordSelection`):
//   'independent' (default): each word is selected with probability p, independently, as in
//     DataCollatorForLanguageModeling(whole_word_mask=True). Every token is then selected with
//     probability exactly p, so E[selected tokens] = p x eligible tokens, in every row.
//   'budget': per row, words in random order are taken until a budget of max(1, round(p x
//     eligible tokens)) tokens is reached, skipping any word that would overshoot it, as in
//     DataCollatorForWholeWordMask and BERT's create_pretraining_data.py. A row then ends with
//     between budget - (longest word - 1) and budget tokens selected: slightly under p on
//     average, and long words are picked less often than short ones. Porting note: HF counts
//     [CLS]/[SEP] in the budget (round(p x len(tokens)), capped at 512) and rounds halves to
//     even; we count eligible tokens only, round halves up, and have no cap.
// Porting note: in both schemes the 80/10/10 treatment is decided per TOKEN, not per word (a
// selected word can come out as "[MASK] ##ing"), as both transformers implementations do.

import { check } from '../common/errors.ts';
import { IGNORE_INDEX } from '../common/labels.ts';
import type { Rng } from '../common/rng.ts';

export { IGNORE_INDEX };

/** BERT's share of tokens selected for prediction: the default of every command that masks. */
export const MLM_PROBABILITY = 0.15;

export type WholeWordSelection = 'independent' | 'budget';

export interface MaskingOptions {
  /** Probability that an eligible token (or word) is selected for prediction; BERT: 0.15. */
  mlmProbability: number;
  /** Id written in place of 80% (maskReplaceProb) of the selected tokens. */
  maskTokenId: number;
  /** Random replacements are drawn uniformly from [0, vocabSize); also the size of `specials`. */
  vocabSize: number;
  /** Share of selected tokens replaced by the mask id; default 0.8. */
  maskReplaceProb?: number;
  /** Share of selected tokens replaced by a random id; default 0.1 (the rest stay unchanged). */
  randomReplaceProb?: number;
  /** Select whole words (all their pieces together); needs `wordStarts`. Default false. */
  wholeWord?: boolean;
  /** How whole words are selected; default 'independent'. See the file header. */
  wholeWordSelection?: WholeWordSelection;
}

export interface MlmBatch {
  batchSize: number; // B
  seqLen: number; // T
  inputIds: Int32Array; // [B*T] ids after masking
  attentionMask: Int32Array; // [B*T] 1 for real tokens, 0 for padding
  tokenTypeIds: Int32Array; // [B*T] zeros (one segment)
  labels: Int32Array; // [B*T] original id where selected, IGNORE_INDEX (-100) elsewhere
}

/** Token ids as read from a shard: uint16 or uint32 on disk, or already widened. */
export type TokenIds = Uint16Array | Uint32Array | Int32Array;

/** Allocates an empty batch, to be filled by maskTokens (reuse it across steps to avoid garbage). */
export function allocMlmBatch(batchSize: number, seqLen: number): MlmBatch {
  const n = batchSize * seqLen;
  return {
    batchSize,
    seqLen,
    inputIds: new Int32Array(n),
    attentionMask: new Int32Array(n),
    tokenTypeIds: new Int32Array(n),
    labels: new Int32Array(n),
  };
}

/** The `specials` table for maskTokens: 1 at each of `ids`, 0 elsewhere. Pass every special id, [UNK] included. */
export function specialIdTable(vocabSize: number, ids: Iterable<number>): Uint8Array {
  check(Number.isInteger(vocabSize) && vocabSize > 0, `vocabSize must be a positive integer, got ${vocabSize}`);
  const table = new Uint8Array(vocabSize);
  for (const id of ids) {
    check(Number.isInteger(id) && id >= 0 && id < vocabSize, `special token id ${id} is outside the vocabulary [0, ${vocabSize})`);
    table[id] = 1;
  }
  return table;
}

/**
 * Masks one batch of B rows of length seqLen (row-major `ids`, B*T long). Pure apart from
 * advancing `rng`. `specials` is indexed by token id (1 = never selected); positions holding
 * `padId` are padding (attention 0, never selected). `wordStarts` (B*T, 1 where a token begins a
 * word) is needed only for whole-word masking. Pass `out` (from allocMlmBatch, same B and T) to
 * fill it instead of allocating; it is returned.
 */
export function maskTokens(
  ids: TokenIds,
  seqLen: number,
  padId: number,
  specials: Uint8Array,
  opts: MaskingOptions,
  rng: Rng,
  wordStarts?: Uint8Array,
  out?: MlmBatch,
): MlmBatch {
  const V = opts.vocabSize;
  const p = opts.mlmProbability;
  const pMask = opts.maskReplaceProb ?? 0.8;
  const pRandom = opts.randomReplaceProb ?? 0.1;
  const maskId = opts.maskTokenId;
  const wholeWord = opts.wholeWord ?? false;
  const selection = opts.wholeWordSelection ?? 'independent';

  check(Number.isInteger(seqLen) && seqLen > 0, `seqLen must be a positive integer, got ${seqLen}`);
  check(ids.length % seqLen === 0, `batch of ${ids.length} token ids is not a whole number of rows of ${seqLen}`);
  // Int32 outputs and Rng.int bound the vocabulary.
  check(Number.isInteger(V) && V > 0 && V <= 0x7fffffff, `vocabSize must be a positive integer below 2^31, got ${V}`);
  check(specials.length === V, `specials table has ${specials.length} entries but vocabSize is ${V}: build it with specialIdTable(vocabSize, ids)`);
  check(Number.isInteger(maskId) && maskId >= 0 && maskId < V, `mask token id ${maskId} is outside the vocabulary [0, ${V})`);
  check(Number.isInteger(padId) && padId >= 0 && padId < V, `pad token id ${padId} is outside the vocabulary [0, ${V})`);
  check(p >= 0 && p <= 1, `mlm probability must be in [0, 1], got ${p}`);
  check(pMask >= 0 && pMask <= 1, `mask replace probability must be in [0, 1], got ${pMask}`);
  check(pRandom >= 0 && pRandom <= 1, `random replace probability must be in [0, 1], got ${pRandom}`);
  check(pMask + pRandom <= 1 + 1e-12, `mask (${pMask}) and random (${pRandom}) replace probabilities add up to more than 1`);
  check(selection === 'independent' || selection === 'budget', `whole-word selection must be 'independent' or 'budget', got '${selection}'`);
  if (wholeWord) {
    check(wordStarts !== undefined, 'whole-word masking needs word starts: prepare the data with a tokenizer that reports word ids');
    check(wordStarts.length === ids.length, `word starts have ${wordStarts.length} entries but the batch has ${ids.length} tokens`);
  }

  const n = ids.length;
  const B = n / seqLen;
  const T = seqLen;
  let batch: MlmBatch;
  if (out) {
    check(
      out.batchSize === B && out.seqLen === T && out.inputIds.length === n && out.attentionMask.length === n &&
        out.tokenTypeIds.length === n && out.labels.length === n,
      `preallocated batch is ${out.batchSize}x${out.seqLen} but the ids make ${B}x${T}`,
    );
    batch = out;
  } else {
    batch = allocMlmBatch(B, T);
  }
  const { inputIds, attentionMask, tokenTypeIds, labels } = batch;
  tokenTypeIds.fill(0);

  // Treatment thresholds on one uniform draw; see DRAW ORDER in the header.
  const tMask = pMask;
  const tRandom = pMask + pRandom;

  // Copy-through pass shared by all schemes: inputs, attention, default labels, id range check.
  for (let i = 0; i < n; i++) {
    const id = ids[i];
    if (!(id >= 0 && id < V)) {
      throw new Error(`token id ${id} at row ${Math.floor(i / T)}, position ${i % T} is outside the vocabulary [0, ${V}): the data and the tokenizer do not match`);
    }
    inputIds[i] = id;
    attentionMask[i] = id === padId ? 0 : 1;
    labels[i] = IGNORE_INDEX;
  }

  if (!wholeWord) {
    for (let i = 0; i < n; i++) {
      const id = ids[i];
      if (id === padId || specials[id] !== 0) continue;
      if (rng.next() < p) {
        labels[i] = id;
        const v = rng.next();
        if (v < tMask) inputIds[i] = maskId;
        else if (v < tRandom) inputIds[i] = rng.int(V);
      }
    }
    return batch;
  }

  const starts = wordStarts as Uint8Array;
  if (selection === 'independent') {
    for (let r = 0; r < B; r++) {
      let prevEligible = false;
      let selected = false;
      for (let i = r * T, end = i + T; i < end; i++) {
        const id = ids[i];
        if (id === padId || specials[id] !== 0) {
          prevEligible = false;
          continue;
        }
        if (!prevEligible || starts[i] !== 0) selected = rng.next() < p; // a new word begins
        prevEligible = true;
        if (selected) {
          labels[i] = id;
          const v = rng.next();
          if (v < tMask) inputIds[i] = maskId;
          else if (v < tRandom) inputIds[i] = rng.int(V);
        }
      }
    }
    return batch;
  }

  // 'budget': per-row word lists in scratch arrays (at most T words per row).
  const wordStart = new Int32Array(T); // position in row of each word's first token
  const wordLen = new Int32Array(T);
  const order = new Int32Array(T); // word indices, shuffled
  const take = new Uint8Array(T); // 1 for words taken
  for (let r = 0; r < B; r++) {
    const base = r * T;
    let words = 0;
    let eligible = 0;
    let prevEligible = false;
    for (let t = 0; t < T; t++) {
      const id = ids[base + t];
      if (id === padId || specials[id] !== 0) {
        prevEligible = false;
        continue;
      }
      if (!prevEligible || starts[base + t] !== 0) {
        wordStart[words] = t;
        wordLen[words] = 0;
        words++;
      }
      wordLen[words - 1]++;
      eligible++;
      prevEligible = true;
    }
    if (eligible === 0) continue;
    const budget = p > 0 ? Math.max(1, Math.round(p * eligible)) : 0;
    for (let w = 0; w < words; w++) {
      order[w] = w;
      take[w] = 0;
    }
    const shuffled = order.subarray(0, words);
    rng.shuffle(shuffled);
    let chosen = 0;
    for (let k = 0; k < words && chosen < budget; k++) {
      const w = shuffled[k];
      if (chosen + wordLen[w] > budget) continue;
      take[w] = 1;
      chosen += wordLen[w];
    }
    for (let w = 0; w < words; w++) {
      if (take[w] === 0) continue;
      for (let i = base + wordStart[w], end = i + wordLen[w]; i < end; i++) {
        labels[i] = ids[i];
        const v = rng.next();
        if (v < tMask) inputIds[i] = maskId;
        else if (v < tRandom) inputIds[i] = rng.int(V);
      }
    }
  }
  return batch;
}
