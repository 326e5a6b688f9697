// BERT for masked language modelling, written with plain TF.js ops (no tf.layers), read top to
// bottom: helpers, embeddings, one encoder layer, the MLM head, the model object.
// roberta.ts reuses every block here with RoBERTa's names and position ids.
//
// Numerics follow transformers' BertForMaskedLM (docs/architecture.md, "The model"): post-LayerNorm encoder
// layers, `gelu` = exact erf GELU, LayerNorm eps from the config, padding masked out of attention,
// the MLM decoder tied to the word embeddings with its own bias. Weights are `tf.Variable`s held
// in a map under their Hugging Face names (query, key and value packed side by side, as one
// `qkv`); their list, shapes, layouts, packing and init live in weights.ts.
// Hidden states are kept 2-D, [B*T, H], between blocks: every Linear is one plain 2-D matMul, the
// fast form on wasm. The operations with hand-written gradients (Linear, LayerNorm, GELU, dropout,
// cross-entropy, embedding rows) are in ops.ts; the model takes the backend's capabilities
// (`ModelInit.capabilities`) and passes them there, and never asks which backend runs.
//
// Porting notes (where mlmkit differs from transformers on purpose):
// - Masked attention adds -1e9 (transformers: float32's most negative value). Both underflow to
//   exactly 0 after softmax whenever a row has an unmasked key, and -1e9 cannot overflow to -inf
//   when summed with a score on any backend.
// - The padding rows of the embeddings are zero at init, as in transformers, but not frozen:
//   transformers' nn.Embedding(padding_idx) gives them no gradient from the lookup. Here they get
//   gradient only from padding positions, which attention masks out, so it is zero in practice.
// - Dropout masks are a keyed hash of each entry's index (`dropoutMask` in training/kernels/dropout-mask.ts, keyed by the
//   site's name with one seed per site derived from `ForwardOptions.dropoutSeed`): the same on
//   every backend, computed in JavaScript, or on the GPU by webgpu.
// - `maskedLoss` with no labelled position returns 0 (transformers returns NaN).
//
// References: transformers `models/bert/modeling_bert.py` (BertEmbeddings, BertSelfAttention,
// BertLayer, BertLMPredictionHead); Devlin et al. 2019; the sparse MLM prediction of cramming
// (Geiping and Goldstein 2022): the head runs on the labelled positions only.
import type { Scalar, Tensor1D, Tensor2D, Tensor3D, Tensor4D, Variable } from '@tensorflow/tfjs';
import { IGNORE_INDEX } from '../../common/labels.ts';
import { InputError } from '../../common/errors.ts';
import type { HiddenAct, ModelConfig, ModelFamily } from './config.ts';
import { makeOps, maskedRowCount, REFERENCE_CAPABILITIES, type ModelCapabilities, type Ops, type Tf } from './ops.ts';
import { checkModelWeights, initialWeights, packTensors, type ModelWeights } from './weights.ts';

export type { Tf };

/** One batch of token ids. `attentionMask` is 1 for real tokens and 0 for padding. */
export interface MlmInputs {
  inputIds: Tensor2D; // int32 [B, T]
  attentionMask: Tensor2D; // int32 or float32 [B, T]
  tokenTypeIds?: Tensor2D; // int32 [B, T]; zeros when left out, as transformers does
  /**
   * The same ids as `inputIds` on the host, row-major [B*T] (optional). On webgpu the word
   * embeddings' gradient uses them to sum repeated ids without atomics (see `embeddingRows`).
   */
  hostInputIds?: Int32Array;
}

export interface ForwardOptions {
  /** Dropout is applied only when training. */
  training: boolean;
  /**
   * Seed of this forward pass's dropout masks, required when training with dropout. The same seed
   * gives the same masks on every backend, so an exact resume redraws them.
   */
  dropoutSeed?: number;
}

export interface LossOptions extends ForwardOptions {
  /** Also count the labelled positions whose top-1 prediction is the label. */
  accuracy?: boolean;
}

export interface MaskedLossResult {
  /** Mean (`maskedLoss`) or sum (`maskedLossSum`) of the cross-entropy over labelled positions. */
  loss: Scalar;
  /** How many positions had a label (not -100). */
  maskedCount: number;
  /** With `accuracy: true`: how many of them were predicted right (float32 scalar). */
  correct?: Scalar;
}

/**
 * Random weights from `seed`, or given ones; `capabilities` of the backend the model runs on
 * (`capabilitiesOf` in training/backend.ts; the reference paths when left out).
 */
export type ModelInit = ({ seed: number } | { weights: ModelWeights }) & { capabilities?: ModelCapabilities };

export interface MaskedLM {
  readonly config: ModelConfig;
  readonly family: ModelFamily;
  /**
   * Every weight under its Hugging Face name (the tied decoder is the word embeddings), except that
   * each layer's query, key and value are one packed variable (weights.ts `packedGroups`);
   * `exportWeights` gives the Hugging Face tensors.
   */
  readonly variables: ReadonlyMap<string, Variable>;
  /** The Hugging Face name of the MLM head's output bias (a key of `variables`). */
  readonly outputBiasName: string;
  /** Final hidden states [B, T, H]. */
  encode(inputs: MlmInputs, opts: ForwardOptions): Tensor3D;
  /** MLM head on hidden states [N, H]: transform, tied decoder, bias -> logits [N, V]. */
  head(hidden: Tensor2D): Tensor2D;
  /** Logits at every position [B, T, V], what transformers returns. */
  logits(inputs: MlmInputs, opts: ForwardOptions): Tensor3D;
  /**
   * Mean cross-entropy over the positions whose label (`labels`, [B*T] row-major, -100 = ignore)
   * is set; the head runs on those positions only.
   */
  maskedLoss(inputs: MlmInputs, labels: Int32Array, opts: LossOptions): MaskedLossResult;
  /** As `maskedLoss` but summed, for a trainer that normalises over an accumulated batch. */
  maskedLossSum(inputs: MlmInputs, labels: Int32Array, opts: LossOptions): MaskedLossResult;
  dispose(): void;
}

/** What differs between BERT and RoBERTa besides the weight names' prefix. */
export interface FamilySpec {
  readonly family: ModelFamily;
  /** Names of the MLM head's modules. */
  readonly head: { dense: string; layerNorm: string; bias: string };
  /** Position ids [B, T] int32 for a batch of input ids. */
  positionIds(tf: Tf, inputIds: Tensor2D, config: ModelConfig): Tensor2D;
  /** The longest sequence the position table holds. */
  maxSequenceLength(config: ModelConfig): number;
  /** The head transform's activation. */
  headActivation(config: ModelConfig): HiddenAct;
}

// -------------------------------------------------------------------------------------------------
// Helpers

/** Large negative score added at masked keys (see the porting notes). */
export const MASKED_SCORE = -1e9;

export { IGNORE_INDEX };

/** Per-site dropout seeds for one forward pass: null everywhere when not training. */
function dropoutSites(opts: ForwardOptions, config: ModelConfig): (site: string) => string | null {
  if (!opts.training) return () => null;
  const anyDropout = config.hidden_dropout_prob > 0 || config.attention_probs_dropout_prob > 0;
  if (anyDropout && (opts.dropoutSeed === undefined || !Number.isInteger(opts.dropoutSeed))) {
    throw new Error('ForwardOptions.dropoutSeed (an integer) is required when training with dropout');
  }
  return (site) => `${opts.dropoutSeed}/${site}`;
}

/** Weight lookup by Hugging Face name; a missing name is a bug, not an input error. */
type Weights = (name: string) => Variable;

// -------------------------------------------------------------------------------------------------
// Embeddings: word + position + token type, LayerNorm, dropout. -> [B*T, H]

export function embeddings(
  ops: Ops,
  w: Weights,
  config: ModelConfig,
  base: string,
  inputs: { ids: Tensor1D; positions: Tensor1D; types: Tensor1D; hostIds?: Int32Array }, // int32 [B*T] each
  drop: (site: string) => string | null,
): Tensor2D {
  const { tf } = ops;
  const words = ops.embeddingRows(w(`${base}.embeddings.word_embeddings.weight`) as Tensor2D, inputs.ids, inputs.hostIds); // [B*T, H]
  const positions = ops.embeddingRows(w(`${base}.embeddings.position_embeddings.weight`) as Tensor2D, inputs.positions);
  const types = ops.embeddingRows(w(`${base}.embeddings.token_type_embeddings.weight`) as Tensor2D, inputs.types);
  const sum = tf.add(tf.add(words, positions), types) as Tensor2D; // [B*T, H]
  const normed = ops.layerNorm(
    sum,
    w(`${base}.embeddings.LayerNorm.weight`) as Tensor1D,
    w(`${base}.embeddings.LayerNorm.bias`) as Tensor1D,
    config.layer_norm_eps,
  );
  return ops.dropout(normed, config.hidden_dropout_prob, drop('embeddings'));
}

// -------------------------------------------------------------------------------------------------
// One encoder layer (post-LayerNorm): x = LN(x + attention(x)); x = LN(x + FFN(x)). [B*T, H] -> same

export function encoderLayer(
  ops: Ops,
  w: Weights,
  config: ModelConfig,
  prefix: string, // e.g. 'bert.encoder.layer.3'
  x: Tensor2D, // [B*T, H]
  maskBias: Tensor2D, // [B, T]: 0 at real keys, MASKED_SCORE at padding
  dims: { B: number; T: number },
  drop: (site: string) => string | null,
): Tensor2D {
  const { B, T } = dims;
  const H = config.hidden_size;
  const nh = config.num_attention_heads;
  const hs = H / nh;
  const weight = (name: string): Tensor2D => w(`${prefix}.${name}.weight`) as Tensor2D;
  const bias = (name: string): Tensor1D => w(`${prefix}.${name}.bias`) as Tensor1D;
  // LayerNorm(dropout(x W + b) + residual): the end of both residual branches.
  const branchEnd = (input: Tensor2D, name: string, residual: Tensor2D, site: string, normName: string): Tensor2D =>
    ops.residualNorm(
      ops.matMul(input, weight(name)),
      bias(name),
      residual,
      { gamma: w(`${prefix}.${normName}.weight`) as Tensor1D, beta: w(`${prefix}.${normName}.bias`) as Tensor1D, eps: config.layer_norm_eps },
      config.hidden_dropout_prob,
      drop(`${prefix}.${site}`),
    );

  // Self-attention. Query, key and value in one [H, 3H] Linear (one read of x, one saved copy), cut
  // into heads. The model stores the three side by side as `attention.self.qkv` (weights.ts,
  // "Packed storage"; the files keep transformers' query, key and value). The residual reads x
  // through that Linear (as `linearWithSkip`), so x's two gradients meet in one kernel.
  const [q, k, v, xSkip] = ops.linearToHeads(x, weight('attention.self.qkv'), bias('attention.self.qkv'), { B, T, heads: nh }); // [B, nh, T, hs] each, x
  const scores = ops.batchMatMul(q, k, false, true) as Tensor4D; // [B, nh, T, T]
  const probs = ops.attentionProbs(scores, maskBias, 1 / Math.sqrt(hs), config.attention_probs_dropout_prob, drop(`${prefix}.attention.probs`));
  const context = ops.mergeHeads(ops.batchMatMul(probs, v, false, false)); // [B*T, H]
  const h = branchEnd(context, 'attention.output.dense', xSkip, 'attention.output', 'attention.output.LayerNorm');

  // Feed-forward.
  const [inner, hSkip] = ops.linearWithSkip(h, weight('intermediate.dense'), bias('intermediate.dense'), config.hidden_act); // [B*T, I], h
  return branchEnd(inner, 'output.dense', hSkip, 'output', 'output.LayerNorm');
}

// -------------------------------------------------------------------------------------------------
// MLM head: dense, activation, LayerNorm, then logits = h E^T + b with E the word embeddings.

export function mlmHead(
  ops: Ops,
  w: Weights,
  config: ModelConfig,
  spec: FamilySpec,
  hidden: Tensor2D, // [N, H]
): Tensor2D {
  const { dense, layerNorm: norm, bias } = spec.head;
  const activated = ops.linear(hidden, w(`${dense}.weight`) as Tensor2D, w(`${dense}.bias`) as Tensor1D, spec.headActivation(config));
  const transformed = ops.layerNorm(
    activated,
    w(`${norm}.weight`) as Tensor1D,
    w(`${norm}.bias`) as Tensor1D,
    config.layer_norm_eps,
  );
  const words = w(`${spec.family}.embeddings.word_embeddings.weight`) as Tensor2D; // [V, H]
  return ops.tiedDecoder(transformed, words, w(bias) as Tensor1D); // [N, V]
}

// -------------------------------------------------------------------------------------------------
// The model

export const BERT_FAMILY: FamilySpec = {
  family: 'bert',
  head: { dense: 'cls.predictions.transform.dense', layerNorm: 'cls.predictions.transform.LayerNorm', bias: 'cls.predictions.bias' },
  // 0 .. T-1 in every row.
  positionIds: (tf, inputIds) => {
    const [B, T] = inputIds.shape;
    return tf.tile(tf.range(0, T, 1, 'int32').reshape([1, T]), [B, 1]) as Tensor2D;
  },
  maxSequenceLength: (config) => config.max_position_embeddings,
  headActivation: (config) => config.hidden_act,
};

function checkInputs(config: ModelConfig, spec: FamilySpec, inputs: MlmInputs): { B: number; T: number } {
  const { inputIds, attentionMask, tokenTypeIds } = inputs;
  if (inputIds.rank !== 2 || inputIds.dtype !== 'int32') {
    throw new Error(`inputIds must be an int32 [B, T] tensor, got ${inputIds.dtype} [${inputIds.shape.join(', ')}]`);
  }
  const [B, T] = inputIds.shape;
  for (const [name, t] of [['attentionMask', attentionMask], ['tokenTypeIds', tokenTypeIds]] as const) {
    if (t !== undefined && (t.shape[0] !== B || t.shape[1] !== T || t.rank !== 2)) {
      throw new Error(`${name} has shape [${t.shape.join(', ')}] but inputIds has [${B}, ${T}]`);
    }
  }
  const maxT = spec.maxSequenceLength(config);
  if (T > maxT) {
    throw new InputError(`sequences of ${T} tokens are longer than this ${spec.family} model's ${maxT} positions: use --seq-len ${maxT} or less`);
  }
  return { B, T };
}

/** Builds a masked LM of either family from `spec` (see createBert, and createRoberta in roberta.ts). */
export function buildMaskedLM(tf: Tf, config: ModelConfig, init: ModelInit, spec: FamilySpec): MaskedLM {
  if (config.model_type !== spec.family) {
    throw new InputError(`a ${config.model_type} config cannot build a ${spec.family} model`);
  }
  const weights = 'seed' in init ? initialWeights(config, init.seed) : init.weights;
  checkModelWeights(config, weights);
  // One variable per tensor of the table, but query, key and value packed (weights.ts, "Packed storage").
  const variables = new Map<string, Variable>();
  for (const [name, { shape, data }] of packTensors(config, weights.tensors, 'model weights')) {
    const initial = tf.tensor(data, shape, 'float32');
    variables.set(name, tf.variable(initial, true));
    initial.dispose();
  }
  const w: Weights = (name) => {
    const v = variables.get(name);
    if (v === undefined) throw new Error(`${spec.family} model has no weight ${name}`);
    return v;
  };
  const capabilities = init.capabilities ?? REFERENCE_CAPABILITIES;
  const ops = makeOps(tf, capabilities);
  const base = spec.family;
  const H = config.hidden_size;
  const V = config.vocab_size;

  // [B, T, H], inside the caller's tidy.
  const encodeRaw = (inputs: MlmInputs, opts: ForwardOptions): Tensor3D => {
    const { B, T } = checkInputs(config, spec, inputs);
    const drop = dropoutSites(opts, config);
    const flat = (t: Tensor2D): Tensor1D => tf.reshape(tf.cast(t, 'int32'), [B * T]);
    const ids = flat(inputs.inputIds);
    const positions = flat(spec.positionIds(tf, inputs.inputIds, config));
    const types = inputs.tokenTypeIds === undefined ? tf.zeros([B * T], 'int32') as Tensor1D : flat(inputs.tokenTypeIds);
    const mask = tf.cast(inputs.attentionMask, 'float32');
    const maskBias = tf.mul(tf.sub(1, mask), MASKED_SCORE) as Tensor2D; // [B, T]

    // One tidy per block: what a block computes but its gradient does not need is freed when the
    // block ends, not at the end of the pass (the ops keep what the backward pass needs).
    const hostIds = inputs.hostInputIds;
    if (hostIds !== undefined && hostIds.length !== B * T) {
      throw new Error(`hostInputIds has ${hostIds.length} entries for a [${B}, ${T}] batch`);
    }
    let x = tf.tidy(() => embeddings(ops, w, config, base, { ids, positions, types, hostIds }, drop));
    for (let i = 0; i < config.num_hidden_layers; i++) {
      const input = x;
      x = tf.tidy(() => encoderLayer(ops, w, config, `${base}.encoder.layer.${i}`, input, maskBias, { B, T }, drop));
    }
    return tf.reshape(x, [B, T, H]);
  };

  const head = (hidden: Tensor2D): Tensor2D => tf.tidy(() => mlmHead(ops, w, config, spec, hidden));

  // The cross-entropy over labelled positions, summed (or divided by their count when `mean`).
  const maskedLossOf = (inputs: MlmInputs, labels: Int32Array, opts: LossOptions, mean: boolean): MaskedLossResult => {
    const [B, T] = inputs.inputIds.shape;
    if (labels.length !== B * T) throw new Error(`labels has ${labels.length} entries for a [${B}, ${T}] batch`);
    // The labelled positions and their targets, gathered before the head runs.
    const where: number[] = [];
    const targets: number[] = [];
    for (let i = 0; i < labels.length; i++) {
      const label = labels[i];
      if (label === IGNORE_INDEX) continue;
      if (!(label >= 0 && label < V)) throw new Error(`label ${label} at position ${i} is outside the vocabulary [0, ${V})`);
      where.push(i);
      targets.push(label);
    }
    const N = where.length;
    const result = tf.tidy(() => {
      if (N === 0) {
        // Nothing to score: 0, still connected to a weight so a gradient call does not fail.
        const zero = tf.mul(tf.sum(w(spec.head.bias)), 0) as Scalar;
        return opts.accuracy ? { loss: zero, correct: tf.scalar(0) } : { loss: zero };
      }
      const hidden = tf.reshape(encodeRaw(inputs, opts), [B * T, H]) as Tensor2D;
      // On webgpu the head's [rows, V] buffers are pooled by exact size and never freed: a new
      // masked count each step would grow the pool by ~8 x rows x V x 4 bytes each time. Rows are
      // padded to a multiple of `capabilities.maskedRowBucket` (64 there; padding rows weigh 0),
      // so a run sees a handful of sizes.
      const rows = maskedRowCount(N, capabilities.maskedRowBucket);
      const padded = (xs: number[]) => (rows === N ? xs : xs.concat(new Array<number>(rows - N).fill(0)));
      // Padding rows take positions that are not labelled (distinct ones while there are enough):
      // where this gather's gradient is UnsortedSegmentSum, a repeated index is slow on webgpu.
      const rowIds = where.slice();
      if (rows > N) {
        const taken = new Set(where);
        for (let i = 0; rowIds.length < rows; i++) if (i >= B * T || !taken.has(i)) rowIds.push(i % (B * T));
      }
      const picked = ops.pickRows(hidden, Int32Array.from(rowIds)); // [rows, H]
      const logits = tf.tidy(() => mlmHead(ops, w, config, spec, picked)); // [rows, V]
      const targetIds = tf.tensor1d(padded(targets), 'int32');
      const weights = rows === N ? undefined : tf.tensor1d(Array.from({ length: rows }, (_, i) => (i < N ? 1 : 0)), 'float32');
      const sum = ops.crossEntropySum(logits, targetIds, weights);
      const loss = mean ? (tf.div(sum, N) as Scalar) : sum;
      if (!opts.accuracy) return { loss };
      const right = tf.cast(tf.equal(tf.argMax(logits, 1), targetIds), 'float32');
      return { loss, correct: tf.sum(weights === undefined ? right : tf.mul(right, weights)) as Scalar };
    });
    return { ...result, maskedCount: N };
  };

  return {
    config,
    family: spec.family,
    outputBiasName: spec.head.bias,
    variables,
    encode: (inputs, opts) => tf.tidy(() => encodeRaw(inputs, opts)),
    head,
    logits: (inputs, opts) =>
      tf.tidy(() => {
        const hidden = encodeRaw(inputs, opts);
        const [B, T] = hidden.shape;
        return tf.reshape(mlmHead(ops, w, config, spec, tf.reshape(hidden, [B * T, H])), [B, T, V]);
      }),
    maskedLoss: (inputs, labels, opts) => maskedLossOf(inputs, labels, opts, true),
    maskedLossSum: (inputs, labels, opts) => maskedLossOf(inputs, labels, opts, false),
    dispose: () => {
      for (const v of variables.values()) v.dispose();
      variables.clear();
    },
  };
}

/**
 * A BERT masked LM (transformers' BertForMaskedLM) on `tf`'s active backend: fresh weights from
 * `{ seed }`, or `{ weights }` from `importWeights` (weights.ts).
 */
export function createBert(tf: Tf, config: ModelConfig, init: ModelInit): MaskedLM {
  return buildMaskedLM(tf, config, init, BERT_FAMILY);
}
