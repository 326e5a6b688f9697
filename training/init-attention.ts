// `--init-attention local`: start a model pretrained from scratch with some heads of its first
// encoder layer looking at fixed neighbours (the token before, the one after, two before, two
// after), instead of Hugging Face's random queries and keys everywhere.
//
// Why. A BERT pretrained from scratch on a few million tokens sits for a long time on a plateau
// where its attention reads the row by content only, as a bag of words: no head prefers the
// tokens next to the mask, so its predictions are the frequent tokens of the row's topic (for the
// demo's Brown text, "the , ." after every "of the"). Measured on the demo's data (README, "The
// demo", why the standard init gave frequent tokens): bert-tiny after 10 M tokens, and plain
// PyTorch with the same recipe, still give their neighbours the uniform share of attention.
// Position-based attention is what leaves the plateau, and learning it from random positions
// takes longer than a small run has. Only starting values change: the local heads are
// ordinary weights, trained like the rest, and the checkpoint is a plain BERT (or RoBERTa) that
// transformers loads.
//
// How. Let n = head_size / 2, and for k < n the frequencies w_k = pi (k + 1/2) / n.
// - Position embeddings: row t holds (sin t w_k, cos t w_k) in dimensions 2k, 2k+1 for k < n,
//   and, in the other dimension pairs, sin and cos at the Transformer's geometric frequencies
//   (10000^(-j/m) over the remaining m pairs) for coarse absolute position. Each entry has the
//   variance of a word embedding's (initializer_range^2), so words keep their share of the
//   embedding LayerNorm's output.
// - A local head with offset d: its key columns read the n pairs as they are and its query columns
//   read them rotated by d w_k, so the position part of query i . key j is, up to scale,
//   sum_k cos(w_k (i + d - j)) = sin(pi x) / (2 sin(pi x / 2n)) with x = i + d - j: n at j = i + d,
//   exactly 0 at every other key closer than 2n positions (2n = 64 for 64-wide heads), -n at
//   distance 2n. The scale gives the target a logit of LOCAL_PEAK_LOGIT above the others (words
//   add noise to both), about half the attention at step 0 in a 64-token row. The sum repeats
//   every 4n positions, so in rows longer than 4n (128 tokens for 64-wide heads) a local head
//   also starts on the keys 4n, 8n, ... beyond its target and shares its attention with them.
//   Measured in rows of 256 tokens (README, "Training runs"), it still gives most of its gain;
//   a variant with a quarter of the pairs on a broad distance envelope, which removes those
//   repeats from the position logits, trained worse there and was dropped.
// - Layer 0's first min(4, heads) heads get offsets -1, +1, -2, +2 in that order; every other
//   weight is transformers' init (training/models/weights.ts, `initialWeights`).
//
// What it needs: a gentle start of the schedule. bert-mini held at lr 1e-3 and at 2e-3 with 10%
// warmup; at 2e-3 with 5% warmup (50 steps), content attention displaced its local heads within
// ~150 steps and the run ended where the standard init ends (held-out 6.458 against 6.446).
// The word-order test's small model held at 1e-3 and 2e-3 with 5% warmup and at 3e-3 with 20%,
// not at 3e-3 with 5% or 10% (README, "Training runs").
import { InputError } from '../common/errors.ts';
import type { ModelConfig } from './models/config.ts';
import { basePrefix, type ModelWeights, type NamedArray } from './models/weights.ts';

export const INIT_ATTENTION_CHOICES = ['standard', 'local'] as const;
export type InitAttention = (typeof INIT_ATTENTION_CHOICES)[number];

/** Offsets given to the first layer's heads, in head order. */
export const LOCAL_OFFSETS = [-1, 1, -2, 2] as const;

/**
 * The target's expected logit at step 0 above the other keys' (position part; with
 * initializer_range-scaled words, position and token type each about a third of the embedding
 * LayerNorm's output). In a 64-token row e^5 / (e^5 + 63) ~ 0.7 before the words' noise.
 */
export const LOCAL_PEAK_LOGIT = 5;

/** What `localAttention` set up: for the log line and the tests. */
export interface LocalAttentionPlan {
  layer: number;
  /** Offset of each local head, by head index. */
  offsets: number[];
  /** Pairs of dimensions each local head reads (head_size / 2). */
  pairs: number;
  /** Query and key gain on those pairs. */
  gain: number;
}

/** Frequency of position-embedding pair `k` (of `pairs` in all; the first `n` are the local heads'). */
export function positionFrequency(k: number, n: number, pairs: number): number {
  if (k < n) return (Math.PI * (k + 0.5)) / n;
  const m = pairs - n;
  return Math.pow(10000, -(k - n) / m);
}

/** InputError unless `config`'s head size is even (the pairs need it): what `localAttention` checks first. */
export function requireEvenHeadSize(config: ModelConfig): void {
  const H = config.hidden_size;
  const heads = config.num_attention_heads;
  if ((H / heads) % 2 !== 0) {
    throw new InputError(`--init-attention local needs an even head size; this config has hidden_size ${H} over ${heads} heads: use --init-attention standard or change the config`);
  }
}

/**
 * Returns `weights` (fresh, from `initialWeights`) with the position embeddings and layer 0's first
 * heads set as the header says. The input's other tensors are shared, not copied. InputError when
 * the model's head size is odd (the pairs need it even).
 */
export function localAttention(config: ModelConfig, weights: ModelWeights): { weights: ModelWeights; plan: LocalAttentionPlan } {
  requireEvenHeadSize(config);
  const H = config.hidden_size;
  const heads = config.num_attention_heads;
  const dh = H / heads; // an integer: parseModelConfig refuses other configs
  const n = dh / 2;
  const pairs = H / 2;
  const sigma = config.initializer_range;
  const base = basePrefix(config.model_type);
  const tensors = new Map(weights.tensors);
  const copy = (name: string): NamedArray => {
    const t = tensors.get(name);
    if (t === undefined) throw new Error(`localAttention: the weights have no ${name}`);
    const c = { shape: [...t.shape], data: new Float32Array(t.data) };
    tensors.set(name, c);
    return c;
  };

  // Position embeddings: sin and cos with amplitude sigma sqrt(2) (variance sigma^2 each entry).
  const posName = `${base}.embeddings.position_embeddings.weight`;
  const pos = copy(posName);
  const rows = pos.shape[0];
  const amplitude = sigma * Math.SQRT2;
  for (let t = 0; t < rows; t++) {
    for (let k = 0; k < pairs; k++) {
      const w = positionFrequency(k, n, pairs);
      pos.data[t * H + 2 * k] = amplitude * Math.sin(w * t);
      pos.data[t * H + 2 * k + 1] = amplitude * Math.cos(w * t);
    }
  }
  // RoBERTa's position table has a padding row (pad_token_id), zero as transformers leaves it.
  if (config.model_type === 'roberta') pos.data.fill(0, config.pad_token_id * H, (config.pad_token_id + 1) * H);

  // After the embedding LayerNorm each entry has variance ~1 split three ways (word, position,
  // token type), so a pair's amplitude squared is ~2/3; the target's query . key is
  // n gain^2 (2/3), divided by sqrt(head_size) in the attention.
  const gain = Math.sqrt((LOCAL_PEAK_LOGIT * Math.sqrt(dh)) / (n * (2 / 3)));
  const offsets = LOCAL_OFFSETS.slice(0, Math.min(LOCAL_OFFSETS.length, heads));
  const layer = 0;
  const query = copy(`${base}.encoder.layer.${layer}.attention.self.query.weight`); // [in H, out H]
  const key = copy(`${base}.encoder.layer.${layer}.attention.self.key.weight`);
  offsets.forEach((d, h) => {
    for (let i = 0; i < H; i++) {
      query.data.fill(0, i * H + h * dh, i * H + (h + 1) * dh);
      key.data.fill(0, i * H + h * dh, i * H + (h + 1) * dh);
    }
    for (let k = 0; k < n; k++) {
      const a = positionFrequency(k, n, pairs) * d;
      const sin = 2 * k; // input dimensions of pair k
      const cos = 2 * k + 1;
      const c0 = h * dh + 2 * k; // output columns of the head
      const c1 = c0 + 1;
      // key j: (sin j w, cos j w); query i: (sin (i + d) w, cos (i + d) w), by the angle-sum rules.
      key.data[sin * H + c0] = gain;
      key.data[cos * H + c1] = gain;
      query.data[sin * H + c0] = gain * Math.cos(a);
      query.data[cos * H + c0] = gain * Math.sin(a);
      query.data[sin * H + c1] = -gain * Math.sin(a);
      query.data[cos * H + c1] = gain * Math.cos(a);
    }
  });
  return { weights: { layout: 'mlmkit', tensors }, plan: { layer, offsets: [...offsets], pairs: n, gain } };
}
