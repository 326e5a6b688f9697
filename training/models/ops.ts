// The model's building operations (training/models/bert.ts calls them), each with a hand-written
// gradient, and the capabilities of the backend that pick their fast paths.
//
// The model never asks which backend runs: the caller computes a `ModelCapabilities` once where the
// backend is loaded (`capabilitiesOf` in training/backend.ts) and passes it in; without one the
// ops take the reference paths, correct on every backend. What each capability switches:
// - `embeddingGrad`: how `embeddingRows` computes the tables' gradient ('matmul' on webgpu, whose
//   UnsortedSegmentSum queues on float atomics; see embeddingRows);
// - `maskedRowBucket`: the head's scored rows are padded to a multiple of it (webgpu's buffer pool
//   keeps every size it has seen; see bert.ts maskedLossOf);
// - `transposedMatMul`: gradients multiply with matMul's transpose flags, or transpose first;
// - `matMulBias`: a Linear's forward adds its bias inside the matMul kernel (tf.fused.matMul);
// - `matMulAddend`: that kernel also adds a whole matrix (`linearWithSkip`'s gradient);
// - `matmulF16`: every matrix product through the f16-operand kernel (--precision fp16), which
//   reads transposed operands and adds biases and whole matrices itself;
// - `kernels`: mlmkit's own kernels registered for the backend (dropout masks drawn on the GPU,
//   fused kernels behind the contracts in training/kernels/); an op calls its kernel when it is
//   there, else the plain composite.
//
// Also here: the plain forms of LayerNorm and the activations (the references the ops are tested
// against), and the dropout mask, a keyed hash of each entry's index.
import type { Tf } from '../../common/tf.ts';
import type { NamedAttrMap, Scalar, Tensor, Tensor1D, Tensor2D, Tensor4D } from '@tensorflow/tfjs';
import { HEADS_TO_ROWS_KERNEL, HEADS_TO_ROWS_SUMS_KERNEL, headsToRows, headsToRowsSums, ROWS_TO_HEADS_KERNEL, rowsToHeads } from '../kernels/attention-heads.ts';
import { ATTENTION_SOFTMAX_KERNEL, attentionSoftmax } from '../kernels/attention-softmax.ts';
import { BIAS_DROPOUT_RESIDUAL_GRAD_SUM_KERNEL, BIAS_DROPOUT_RESIDUAL_KERNEL, biasDropoutResidual } from '../kernels/bias-dropout-residual.ts';
import { BIAS_GELU_KERNEL, biasGelu, gelu, geluDerivative } from '../kernels/bias-gelu.ts';
import { BIAS_GRAD_KERNEL, biasGrad } from '../kernels/bias-grad.ts';
import { customMultiOp, customOp } from '../kernels/custom-op.ts';
import { DROPOUT_MASK_KERNEL, dropoutKeys, dropoutMask, dropoutThreshold } from '../kernels/dropout-mask.ts';
import { LAYER_NORM_KERNEL, layerNorm as fusedLayerNorm } from '../kernels/layer-norm.ts';
import { matMulF16, type MatMulExtras, type MatMulF16Variant } from '../kernels/matmul.ts';
import { crossEntropySum, MASKED_CROSS_ENTROPY_KERNEL } from '../kernels/masked-cross-entropy.ts';
import { pickRows, SCATTER_ROWS_KERNEL, scatterPlan, scatterRows } from '../kernels/scatter-rows.ts';
import { RESIDUAL_LAYER_NORM_GRAD_KERNEL, RESIDUAL_LAYER_NORM_KERNEL, residualLayerNorm } from '../kernels/residual-layer-norm.ts';
import type { HiddenAct } from './config.ts';

export type { Tf };

// -------------------------------------------------------------------------------------------------
// Capabilities of the backend

/**
 * How `embeddingRows` computes the table's gradient. 'gather': tf.gather's own gradient
 * (UnsortedSegmentSum). 'matmul': sums of one-hot products (see makeOps).
 */
export type EmbeddingGrad = 'gather' | 'matmul';

/** What the backend the model runs on does well or has; computed once where it is loaded. */
export interface ModelCapabilities {
  /** How `embeddingRows` computes the tables' gradient. */
  readonly embeddingGrad: EmbeddingGrad;
  /** The head's scored rows are padded to a multiple of this (1: not padded). */
  readonly maskedRowBucket: number;
  /**
   * matMul reads transposed operands as fast as plain ones (webgpu): gradients use its transpose
   * flags. When false (wasm: 10-40x slower with a flag) they transpose explicitly first.
   */
  readonly transposedMatMul: boolean;
  /** tf.fused.matMul adds a bias in the matMul's own kernel (webgpu): x W + b in one dispatch. */
  readonly matMulBias: boolean;
  /**
   * tf.fused.matMul also adds a whole [M, N] matrix in its kernel (webgpu): `linearWithSkip`'s
   * gradient adds the residual's there. (Through BLAS on wasm the bias must be one row.)
   */
  readonly matMulAddend: boolean;
  /** mlmkit kernels (names starting `Mlmkit`) registered for the backend. */
  readonly kernels: ReadonlySet<string>;
  /**
   * Set: the matrix products take f16 operands with f32 accumulation, through MlmkitMatMulF16 of
   * this variant (training/kernels/matmul.ts; --precision fp16). Absent: float32 tf.matMul.
   */
  readonly matmulF16?: MatMulF16Variant;
}

/** The reference paths: what every backend runs correctly. */
export const REFERENCE_CAPABILITIES: ModelCapabilities = Object.freeze({
  embeddingGrad: 'gather',
  maskedRowBucket: 1,
  transposedMatMul: false,
  matMulBias: false,
  matMulAddend: false,
  kernels: new Set<string>(),
});

/** Masked rows are padded to a multiple of this on webgpu (see bert.ts maskedLossOf). */
export const MASKED_ROW_BUCKET = 64;

/** How many rows the head scores for `n` labelled positions, padded to a multiple of `bucket`. */
export function maskedRowCount(n: number, bucket: number): number {
  return n > 0 ? Math.ceil(n / bucket) * bucket : n;
}

// -------------------------------------------------------------------------------------------------
// Plain forms

/** LayerNorm over the last axis, plain form: (x - mean) / sqrt(var + eps) * gamma + beta. */
export function layerNorm(tf: Tf, x: Tensor2D, gamma: Tensor1D, beta: Tensor1D, eps: number): Tensor2D {
  const { mean, variance } = tf.moments(x, -1, true);
  return tf.add(tf.mul(tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, eps))), gamma), beta);
}

/**
 * The activation, plain form. `gelu`: 0.5 x (1 + erf(x / sqrt 2)). `gelu_new` /
 * `gelu_pytorch_tanh`: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), computed as
 * x sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3)), the same function (tanh z = 2 sigmoid(2z) - 1) with
 * sigmoid, ~15x cheaper than tanh on wasm (a measurement on the development machine).
 */
export function activation<T extends Tensor>(tf: Tf, x: T, act: HiddenAct): T {
  return act === 'relu' ? tf.relu(x) : gelu(tf, x, act !== 'gelu');
}

// -------------------------------------------------------------------------------------------------
// Ops: the model's building operations, each with a hand-written gradient
//
// Why. TF.js records every op of a composite (LayerNorm is ~10 ops, GELU ~6) and keeps the inputs
// each op's gradient needs (as copies on wasm, whose Identity kernel copied until
// training/backend/identity-wasm.ts made clones share their input's memory). A bert-mini step at
// batch 32 x 128 then needed over 4 GB, the wasm heap's limit. Each op below saves only what its
// gradient uses (LayerNorm: x and each row's mean and 1/std; GELU: x; dropout: its mask; a Linear:
// x and W), so activation memory drops several-fold. And on wasm a matMul with either transpose
// flag runs 10-40x slower than the plain one (measured here: [4096,256]x[256,1024] 78 ms plain,
// 930 ms transposeB, 3.6 s transposeA), while TF.js's own matMul gradient uses both flags: there
// the gradients transpose explicitly (a cheap copy) and multiply without flags.
// Where the backend has mlmkit's fused kernels (training/kernels/: LayerNorm, bias + GELU, bias
// gradients, attention softmax, bias + dropout + residual, the residual LayerNorm, masked
// cross-entropy, the scatter of rows) the ops call them instead of the composites.
// Each op is tested against its plain form (values and gradients) in tests/training/models, each
// kernel against its reference in tests/training/kernels.

export interface Ops {
  tf: Tf;
  /** a [M, K] x b [K, N] -> [M, N]. */
  matMul(a: Tensor2D, b: Tensor2D): Tensor2D;
  /** y = x W + b, or act(x W + b) with `act`: x [N, in], W [in, out] (mlmkit layout), b [out]. */
  linear(x: Tensor2D, w: Tensor2D, b: Tensor1D, act?: HiddenAct): Tensor2D;
  /** The tied decoder: logits = h E^T + b, h [N, H], E [V, H] (the word embeddings), b [V]. */
  tiedDecoder(h: Tensor2D, e: Tensor2D, b: Tensor1D): Tensor2D;
  /** Batched products of the last two axes, op(a) op(b) (op: optional transpose), as tf.matMul (attention). */
  batchMatMul(a: Tensor4D, b: Tensor4D, transposeA: boolean, transposeB: boolean): Tensor4D;
  /** LayerNorm over the last axis of x [N, H]. */
  layerNorm(x: Tensor2D, gamma: Tensor1D, beta: Tensor1D, eps: number): Tensor2D;
  /** The activation `act` (see `activation`). */
  activation(x: Tensor2D, act: HiddenAct): Tensor2D;
  /** Inverted dropout with a seeded mask; `x` itself when `seed` is null (not training) or rate is 0. */
  dropout<T extends Tensor>(x: T, rate: number, seed: string | null): T;
  /** Sum over rows of -log softmax(logits)[target]; rows weighted by `weights` (0/1) when given. */
  crossEntropySum(logits: Tensor2D, targets: Tensor1D, weights?: Tensor1D): Scalar;
  /**
   * The attention's input projection, cut into heads: qkv = x W + b (x [B*T, H], W [H, 3H] with
   * the query, key and value weights side by side, b [3H]), then the query, key and value heads
   * [B, heads, T, H / heads] of qkv; and x itself, for the residual, as `linearWithSkip` gives it.
   * Where the backend has the heads kernels and adds a whole matrix inside its products, qkv is
   * freed once cut, and the gradient puts the heads' gradients back into rows and sums them for
   * db in one kernel (training/kernels/attention-heads.ts); elsewhere `linearWithSkip`, then the
   * cut.
   */
  linearToHeads(x: Tensor2D, w: Tensor2D, b: Tensor1D, dims: { B: number; T: number; heads: number }): [Tensor4D, Tensor4D, Tensor4D, Tensor2D];
  /** The heads [B, heads, T, hs] back side by side as rows [B*T, heads * hs] (the inverse of the cut in `linearToHeads`, for one part). */
  mergeHeads(context: Tensor4D): Tensor2D;
  /**
   * Attention probabilities: softmax over keys of scores [B, heads, T, T] * scale + maskBias [B, T]
   * (0 at real keys, MASKED_SCORE at padding), then dropout (`seed` null: none).
   */
  attentionProbs(scores: Tensor4D, maskBias: Tensor2D, scale: number, rate: number, seed: string | null): Tensor4D;
  /** dropout(x + b) + residual: x and residual [N, H], b [H] (`seed` null: no dropout). */
  biasDropoutResidual(x: Tensor2D, b: Tensor1D, residual: Tensor2D, rate: number, seed: string | null): Tensor2D;
  /**
   * LayerNorm(dropout(x + b) + residual) with gamma, beta and eps: the end of a residual branch.
   * One kernel forward where the backend has the fused one (training/kernels/residual-layer-norm.ts),
   * else `biasDropoutResidual` then `layerNorm`.
   */
  residualNorm(x: Tensor2D, b: Tensor1D, residual: Tensor2D, norm: { gamma: Tensor1D; beta: Tensor1D; eps: number }, rate: number, seed: string | null): Tensor2D;
  /**
   * `linear(x, w, b, act)` and x itself, for a residual connection that also reads x: use the
   * second output there. Where the backend adds a whole matrix inside a matMul kernel
   * (`capabilities.matMulAddend`), the gradient of x is then one kernel, dy W^T + (the residual's
   * gradient), instead of the product and TF.js's add of the two gradients; elsewhere the second
   * output is x and TF.js adds them, as with two plain uses.
   */
  linearWithSkip(x: Tensor2D, w: Tensor2D, b: Tensor1D, act?: HiddenAct): [Tensor2D, Tensor2D];
  /**
   * Rows `ids` of x [S, H] (as tf.gather), with the ids on the host: the gradient adds the rows
   * back in one kernel where the backend has the scatter kernel (training/kernels/scatter-rows.ts).
   */
  pickRows(x: Tensor2D, ids: Int32Array): Tensor2D;
  /**
   * Rows `ids` (int32 [N]) of `table` [S, H], as tf.gather; `hostIds` are the same ids on the host
   * when known. The gradient's method is `capabilities.embeddingGrad` (see makeOps).
   */
  embeddingRows(table: Tensor2D, ids: Tensor1D, hostIds?: Int32Array): Tensor2D;
}

/** Most entries of one one-hot matrix in the 'matmul' embedding gradient (2^25: 128 MB of float32). */
export const ONE_HOT_ENTRIES = 2 ** 25;

/** Tables up to this many rows get the one-hot gradient over all their rows (positions, token types). */
export const SMALL_TABLE_ROWS = 4096;

/** The distinct-id count of the word table's gradient is rounded up to a multiple of this. */
export const DISTINCT_BUCKET = 256;

/** `u` rounded up to a multiple of DISTINCT_BUCKET, at most `rows` (the table's size). */
export function bucketed(u: number, rows: number): number {
  return Math.min(rows, Math.ceil(u / DISTINCT_BUCKET) * DISTINCT_BUCKET);
}

/** `distinct` followed by the smallest ids in [0, rows) that it lacks, up to `size` entries. */
export function padDistinct(distinct: Int32Array, size: number, rows: number): number[] {
  const out = Array.from(distinct);
  if (out.length >= size) return out;
  const taken = new Set(out);
  for (let id = 0; out.length < size && id < rows; id++) if (!taken.has(id)) out.push(id);
  return out;
}

/** The distinct values of `ids` in order of first appearance, and where each id sits among them. */
export function distinctIds(ids: ArrayLike<number>): { distinct: Int32Array; inverse: Int32Array } {
  const slot = new Map<number, number>();
  const inverse = new Int32Array(ids.length);
  for (let i = 0; i < ids.length; i++) {
    let k = slot.get(ids[i]);
    if (k === undefined) {
      k = slot.size;
      slot.set(ids[i], k);
    }
    inverse[i] = k;
  }
  return { distinct: Int32Array.from(slot.keys()), inverse };
}

/**
 * The ops on `tf`'s active backend, taking the fast paths `capabilities` names (the reference
 * ones by default). `oneHotEntries` overrides ONE_HOT_ENTRIES (tests).
 */
export function makeOps(tf: Tf, capabilities: ModelCapabilities = REFERENCE_CAPABILITIES, opts: { oneHotEntries?: number } = {}): Ops {
  const custom = <T extends Tensor>(f: Parameters<typeof customOp<T>>[1]) => customOp<T>(tf, f);
  const has = (kernel: string) => capabilities.kernels.has(kernel);

  // The matrix products every product op below is built from: op(a) op(b) (+ bias [N])
  // (+ addend, the result's shape), op = optional transpose.
  // - float32: tf.matMul. Transposed operands through matMul's flags where the backend reads them
  //   at full speed (capabilities.transposedMatMul), else as an explicit transpose (a cheap copy)
  //   and a plain matMul, the fast form on wasm; the bias and the addend inside tf.fused.matMul's
  //   kernel where capabilities.matMulBias / matMulAddend say so, else TF.js's add after it.
  // - --precision fp16 (capabilities.matmulF16): MlmkitMatMulF16 (f16 operands, f32 sums;
  //   training/kernels/matmul.ts), which reads transposed operands and adds both in its own kernel.
  const variant = capabilities.matmulF16;
  const flags = variant !== undefined || capabilities.transposedMatMul;
  const fusesAddend = variant !== undefined || capabilities.matMulAddend;
  const product = (a: Tensor, b: Tensor, ta: boolean, tb: boolean, extras: MatMulExtras = {}): Tensor2D => {
    if (variant !== undefined) return matMulF16(tf, a, b, { transposeA: ta, transposeB: tb, variant }, extras) as Tensor2D;
    const { bias, addend } = extras;
    const fused = (bias !== undefined && capabilities.matMulBias && addend === undefined) || (addend !== undefined && capabilities.matMulAddend && bias === undefined);
    if (fused) return tf.fused.matMul({ a: a as Tensor2D, b: b as Tensor2D, transposeA: ta, transposeB: tb, bias: bias ?? addend }) as Tensor2D;
    let c: Tensor = flags ? tf.matMul(a as Tensor2D, b as Tensor2D, ta, tb) : tf.matMul(ta ? tf.transpose(a) : a, tb ? tf.transpose(b) : b);
    if (bias !== undefined) c = tf.add(c, bias);
    if (addend !== undefined) c = tf.add(c, addend);
    return c as Tensor2D;
  };
  // db of a bias added to every row: a column-reduction kernel where the backend has one.
  const biasGradOf = (dy: Tensor2D): Tensor1D => biasGrad(tf, dy, has(BIAS_GRAD_KERNEL));

  // op(a) op(b) as an op: dA and dB from dC with the flags of the four cases (as tf.matMul's
  // gradient). `matMul` is the plain case; with fp16, the batched products use all four.
  const productOp = (transposeA: boolean, transposeB: boolean) =>
    custom<Tensor>(([a, b], save) => {
      save([a, b]);
      return {
        value: product(a, b, transposeA, transposeB),
        gradFunc: (dc, [sa, sb]) => {
          if (!transposeA && !transposeB) return [product(dc, sb, false, true), product(sa, dc, true, false)];
          if (!transposeA && transposeB) return [product(dc, sb, false, false), product(dc, sa, true, false)];
          if (transposeA && !transposeB) return [product(sb, dc, false, true), product(sa, dc, false, false)];
          return [product(sb, dc, true, true), product(dc, sa, true, true)];
        },
      };
    });
  const plainProduct = productOp(false, false);
  const matMul = (a: Tensor2D, b: Tensor2D): Tensor2D => plainProduct(a, b) as Tensor2D;

  const linear = custom<Tensor2D>(([x, w, b], save) => {
    save([x, w]);
    return {
      value: product(x, w, false, false, { bias: b }),
      gradFunc: (dy, [sx, sw]) => [
        product(dy, sw, false, true), // dx = dy W^T
        product(sx, dy, true, false), // dW = x^T dy
        biasGradOf(dy), // db
      ],
    };
  });

  // Without transpose flags, the transpose of E [V, H] happens in the forward only; the gradients
  // need none of E^T: dh = dy E, dE = dy^T h. On wasm, for [614,256] x [30522,256]: 0.45 s forward
  // against 5.4 s for matMul(h, E, false, true).
  const tiedDecoder = custom<Tensor2D>(([h, e, b], save) => {
    save([h, e]);
    return {
      value: product(h, e, false, true, { bias: b }),
      gradFunc: (dy, [sh, se]) => [product(dy, se, false, false), product(dy, sh, true, false), biasGradOf(dy)],
    };
  });

  const layerNormOp = (x: Tensor2D, gamma: Tensor1D, beta: Tensor1D, eps: number): Tensor2D =>
    fusedLayerNorm(tf, x, gamma, beta, eps, has(LAYER_NORM_KERNEL));

  // gelu: y = x Phi(x), y' = Phi(x) + x phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2,
  //       phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
  // tanh form: y = x s, s = sigmoid(u), u = c (x + a x^3), y' = s + x s (1 - s) c (1 + 3 a x^2).
  // gelu saves y'(x) itself (computed in the forward, sharing its erf) instead of x: the backward is
  // one multiply, and the step computes erf 4 times instead of 8 (erf is ~25 ms per [4096, 1024] on
  // wasm); same saved size, same values as the plain form bit for bit.
  const gelu = custom<Tensor2D>(([x], save) => {
    const onePlusErf = tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1);
    const pdf = tf.mul(tf.exp(tf.mul(tf.square(x), -0.5)), 1 / Math.sqrt(2 * Math.PI));
    save([tf.add(tf.mul(onePlusErf, 0.5), tf.mul(x, pdf))]); // y'(x)
    return {
      value: tf.mul(tf.mul(x, 0.5), onePlusErf), // activation(tf, x, 'gelu') with its erf shared
      gradFunc: (dy, [dydx]) => [tf.mul(dy, dydx)],
    };
  });
  const geluTanh = custom<Tensor2D>(([x], save) => {
    save([x]);
    return {
      value: activation(tf, x as Tensor2D, 'gelu_new'),
      gradFunc: (dy, [sx]) => [tf.mul(dy, geluDerivative(tf, sx, true))],
    };
  });
  const activationOp = (x: Tensor2D, act: HiddenAct): Tensor2D => (act === 'gelu' ? gelu(x) : act === 'relu' ? tf.relu(x) : geluTanh(x));

  // act(x W + b): with a GELU and the bias + GELU kernel, x W then the kernel (its backward also
  // gives db); otherwise the Linear op, then the activation op.
  const dense = (x: Tensor2D, w: Tensor2D, b: Tensor1D, act?: HiddenAct): Tensor2D => {
    if (act === undefined) return linear(x, w, b);
    if (act !== 'relu' && has(BIAS_GELU_KERNEL)) return biasGelu(tf, matMul(x, w), b, act !== 'gelu');
    return activationOp(linear(x, w, b), act);
  };

  // The mask, 0 or 1 / (1 - rate): drawn on the GPU where the backend has the kernel (webgpu), else
  // in JavaScript (`dropoutMask`) and uploaded; the same numbers either way.
  const gpuMasks = capabilities.kernels.has(DROPOUT_MASK_KERNEL);
  const maskOf = (shape: number[], size: number, rate: number, seed: string): Tensor => {
    if (!gpuMasks) return tf.tensor(dropoutMask(size, rate, seed), shape, 'float32');
    const [k0, k1, k2] = dropoutKeys(seed);
    const attrs = { n: size, k0, k1, k2, threshold: dropoutThreshold(rate), scale: Math.fround(1 / (1 - rate)) };
    return tf.reshape(tf.engine().runKernel(DROPOUT_MASK_KERNEL, {}, attrs as unknown as NamedAttrMap) as Tensor, shape);
  };

  // On the GPU the backward pass draws the mask again (one cheap kernel) instead of keeping it
  // from the forward pass: for bert-base at 32 x 128 the masks are ~617 MB a step.
  const dropout = <T extends Tensor>(x: T, rate: number, seed: string | null): T => {
    if (seed === null || rate === 0) return x;
    return custom<T>(([x_], save) => {
      const mask = maskOf(x_.shape, x_.size, rate, seed);
      if (gpuMasks) {
        const shape = x_.shape;
        const size = x_.size;
        return { value: tf.mul(x_, mask) as T, gradFunc: (dy) => [tf.mul(dy, maskOf(shape, size, rate, seed))] };
      }
      save([mask]);
      return { value: tf.mul(x_, mask) as T, gradFunc: (dy, [smask]) => [tf.mul(dy, smask)] };
    })(x);
  };

  // The attention block and the ends of the encoder's residual branches: fused kernels where the
  // backend has them (training/kernels/), else their reference composites.
  const fusedAttention = has(ATTENTION_SOFTMAX_KERNEL);
  // The heads: one kernel each way where the backend has the heads kernels (webgpu: one dispatch
  // instead of a reshape, a transpose and an unstack, and one for the gradient instead of two;
  // wasm: one pass over the rows instead of a split and three transposes); elsewhere the plain form.
  const headKernels = has(ROWS_TO_HEADS_KERNEL) && has(HEADS_TO_ROWS_KERNEL);
  const splitHeads = (qkv: Tensor2D, { B, T, heads }: { B: number; T: number; heads: number }): [Tensor4D, Tensor4D, Tensor4D] => {
    if (headKernels) return rowsToHeads(tf, qkv, { batch: B, heads, parts: 3 }, true) as [Tensor4D, Tensor4D, Tensor4D];
    const hs = qkv.shape[1] / (3 * heads);
    const split = (t: Tensor2D): Tensor4D => tf.transpose(tf.reshape(t, [B, T, heads, hs]), [0, 2, 1, 3]);
    const [q, k, v] = tf.split(qkv, 3, 1) as Tensor2D[];
    return [split(q), split(k), split(v)];
  };
  const mergeHeads = (context: Tensor4D): Tensor2D => {
    if (headKernels) return headsToRows(tf, [context], true);
    const [B, heads, T, hs] = context.shape;
    return tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [B * T, heads * hs]) as Tensor2D;
  };
  const attentionProbs = (scores: Tensor4D, maskBias: Tensor2D, scale: number, rate: number, seed: string | null): Tensor4D =>
    attentionSoftmax(tf, scores, maskBias, { scale, rate, seed }, fusedAttention);
  const biasDropoutResidualOp = (x: Tensor2D, b: Tensor1D, residual: Tensor2D, rate: number, seed: string | null): Tensor2D =>
    biasDropoutResidual(tf, x, b, residual, { rate, seed }, has(BIAS_DROPOUT_RESIDUAL_KERNEL), biasGradOf, has(BIAS_DROPOUT_RESIDUAL_GRAD_SUM_KERNEL));
  const fusedResidualNorm = has(RESIDUAL_LAYER_NORM_KERNEL) && has(RESIDUAL_LAYER_NORM_GRAD_KERNEL);
  const residualNorm = (x: Tensor2D, b: Tensor1D, residual: Tensor2D, norm: { gamma: Tensor1D; beta: Tensor1D; eps: number }, rate: number, seed: string | null): Tensor2D =>
    fusedResidualNorm
      ? residualLayerNorm(tf, x, b, residual, norm.gamma, norm.beta, { eps: norm.eps, rate, seed })
      : layerNormOp(biasDropoutResidualOp(x, b, residual, rate, seed), norm.gamma, norm.beta, norm.eps);

  // Embedding rows. tf.gather's gradient is UnsortedSegmentSum, which TF.js's webgpu backend runs
  // as one float atomicAdd per element, and WGSL has no float atomics: each add is a
  // compare-and-swap loop, so ids repeated in a batch (token type 0 at every position, the same
  // positions in every row, [MASK]) queue on one address. On an H200 that kernel took 376 of the
  // 412 ms of GPU time of a bert-mini step (32 x 128; scripts/profile-step.ts). 'matmul' computes
  // the same sums with matrix products instead, in chunks of rows whose one-hot matrix has at most
  // ONE_HOT_ENTRIES entries (each chunk in its own tidy, so one chunk's temporaries live at a time):
  // - tables of at most SMALL_TABLE_ROWS rows (positions, token types; S rows):
  //   dTable = sum over chunks of onehot(ids, S)^T dy;
  // - larger tables (the words), with the ids known on the host: per chunk, its distinct ids and
  //   each row's index among them; onehot(index, U)^T dy [U, H] sums each id's rows, and one
  //   scatter of rows (training/kernels/scatter-rows.ts; UnsortedSegmentSum where the backend
  //   lacks it) puts the rows of every chunk in the table (an id repeats at most once per chunk).
  //   U is rounded up to a multiple of DISTINCT_BUCKET (the extra columns are all zero and land
  //   on unused ids): TF.js's webgpu buffer pool keeps freed buffers by exact size
  //   for good, and a new U every step would grow it by tens of MB each time.
  // Without host ids a large table keeps tf.gather's gradient.
  const maxEntries = opts.oneHotEntries ?? ONE_HOT_ENTRIES;
  // onehot(ids, depth)^T dy. OneHot as int32 then cast: the wasm kernel writes wrong float32 values.
  // A table of one row (RoBERTa's token types, type_vocab_size 1): every id is 0 and the product is
  // dy's column sums; tf.oneHot refuses a depth below 2.
  const oneHotProduct = (ids: Tensor1D, depth: number, dy: Tensor2D): Tensor2D =>
    depth === 1 ? tf.sum(dy, 0, true) : tf.matMul(tf.cast(tf.oneHot(ids, depth), 'float32') as Tensor2D, dy, true, false);
  const embeddingRows = (table: Tensor2D, ids: Tensor1D, hostIds?: Int32Array): Tensor2D => {
    const mode = capabilities.embeddingGrad;
    const [S, H] = table.shape;
    const N = ids.shape[0];
    const small = S <= SMALL_TABLE_ROWS;
    if (hostIds !== undefined && hostIds.length !== N) throw new Error(`embeddingRows: ${hostIds.length} host ids for ${N} ids`);
    if (mode === 'gather' || N === 0 || (!small && hostIds === undefined)) return tf.gather(table, ids);
    if (small) {
      const chunk = Math.max(1, Math.floor(maxEntries / S));
      return custom<Tensor2D>(([t], save) => {
        save([ids]);
        return {
          value: tf.gather(t as Tensor2D, ids),
          gradFunc: (dy, [sids]) => {
            let sum: Tensor2D | null = null;
            for (let r = 0; r < N; r += chunk) {
              const n = Math.min(chunk, N - r);
              const before: Tensor2D | null = sum;
              sum = tf.tidy((): Tensor2D => {
                const part = oneHotProduct(tf.slice(sids as Tensor1D, r, n), S, tf.slice(dy, [r, 0], [n, H]));
                return before === null ? part : (tf.add(before, part) as Tensor2D);
              });
              before?.dispose();
            }
            return [sum!];
          },
        };
      })(table);
    }
    // The word table. The ids are copied now: a batch's host buffers may be refilled before the
    // backward pass runs.
    const host = hostIds!.slice();
    return custom<Tensor2D>(([t]) => ({
      value: tf.gather(t as Tensor2D, ids),
      gradFunc: (dy) => {
        const rows: Tensor2D[] = [];
        const where: number[] = [];
        for (let r = 0; r < N; ) {
          // As many rows as keep n x (distinct ids, rounded up) within the one-hot budget.
          let n = N - r;
          let d = distinctIds(host.subarray(r, r + n));
          while (n > 1 && n * bucketed(d.distinct.length, S) > maxEntries) {
            n = Math.ceil(n / 2);
            d = distinctIds(host.subarray(r, r + n));
          }
          const U = bucketed(d.distinct.length, S);
          for (const id of padDistinct(d.distinct, U, S)) where.push(id);
          const start = r;
          rows.push(tf.tidy(() => oneHotProduct(tf.tensor1d(d.inverse, 'int32'), U, tf.slice(dy, [start, 0], [n, H]))));
          r += n;
        }
        const all = rows.length === 1 ? rows[0] : (tf.concat(rows, 0) as Tensor2D);
        // Each row of `all` added into the table at its id: the scatter kernel where the backend
        // has it (one dispatch, no atomics), else UnsortedSegmentSum.
        if (has(SCATTER_ROWS_KERNEL)) return [scatterRows(tf, all, scatterPlan(where, S))];
        return [tf.unsortedSegmentSum(all, tf.tensor1d(where, 'int32'), S) as Tensor2D];
      },
    }))(table);
  };

  // Batched products (attention): TF.js's own in float32 (its gradient uses the flags); with fp16,
  // MlmkitMatMulF16 through `productOp`.
  const batchProducts = [[plainProduct, productOp(false, true)], [productOp(true, false), productOp(true, true)]];
  const batchMatMul = (a: Tensor4D, b: Tensor4D, ta: boolean, tb: boolean): Tensor4D => {
    if (variant === undefined) return tf.matMul(a, b, ta, tb);
    const [B, nh, ar, ac] = a.shape;
    const [, , br, bc] = b.shape;
    const out = batchProducts[ta ? 1 : 0][tb ? 1 : 0](tf.reshape(a, [B * nh, ar, ac]), tf.reshape(b, [B * nh, br, bc]));
    return tf.reshape(out, [B, nh, out.shape[1]!, out.shape[2]!]) as Tensor4D;
  };

  // x W (+ b) and x (see Ops.linearWithSkip): dx = dy W^T + dskip in one product whose addend is
  // the skip's gradient; the rest of the gradient as `linear` and `matMul`.
  const productWithSkip = (withBias: boolean): ((...inputs: Tensor[]) => Tensor[]) =>
    customMultiOp(tf, ([x, w, b], save) => {
      save([x, w]);
      return {
        value: [product(x, w, false, false, withBias ? { bias: b } : {}), tf.clone(x)],
        gradFunc: ([dy, dskip], [sx, sw]) => {
          const dx = product(dy, sw, false, true, { addend: dskip });
          const dw = product(sx, dy, true, false);
          return withBias ? [dx, dw, biasGradOf(dy as Tensor2D)] : [dx, dw];
        },
      };
    });
  const linearSkip = productWithSkip(true);
  const matMulSkip = productWithSkip(false);
  const linearWithSkip = (x: Tensor2D, w: Tensor2D, b: Tensor1D, act?: HiddenAct): [Tensor2D, Tensor2D] => {
    if (!fusesAddend) return [dense(x, w, b, act), x];
    if (act === undefined) return linearSkip(x, w, b) as [Tensor2D, Tensor2D];
    if (act !== 'relu' && has(BIAS_GELU_KERNEL)) {
      const [xw, skip] = matMulSkip(x, w) as [Tensor2D, Tensor2D];
      return [biasGelu(tf, xw, b, act !== 'gelu'), skip];
    }
    const [y, skip] = linearSkip(x, w, b) as [Tensor2D, Tensor2D];
    return [activationOp(y, act), skip];
  };
  // linearToHeads (see Ops): the Linear's product and the cut in one op, so that its gradient
  // starts from the heads' gradients.
  const headsSums = headKernels && has(HEADS_TO_ROWS_SUMS_KERNEL) && fusesAddend;
  const linearToHeads = (x: Tensor2D, w: Tensor2D, b: Tensor1D, { B, T, heads }: { B: number; T: number; heads: number }): [Tensor4D, Tensor4D, Tensor4D, Tensor2D] => {
    if (!headsSums) {
      const [qkv, skip] = linearWithSkip(x, w, b);
      return [...splitHeads(qkv, { B, T, heads }), skip];
    }
    const attrs = { batch: B, heads, parts: 3 };
    return customMultiOp(tf, ([x_, w_, b_], save) => {
      save([x_, w_]);
      const qkv = product(x_, w_, false, false, { bias: b_ });
      const parts = rowsToHeads(tf, qkv, attrs, true);
      qkv.dispose();
      return {
        value: [...parts, tf.clone(x_)],
        gradFunc: ([dq, dk, dv, dskip], [sx, sw]) => {
          const [dy, db] = headsToRowsSums(tf, [dq, dk, dv] as Tensor4D[], true); // dqkv [B*T, 3H], its column sums
          return [product(dy, sw, false, true, { addend: dskip }), product(sx, dy, true, false), db];
        },
      };
    })(x, w, b) as [Tensor4D, Tensor4D, Tensor4D, Tensor2D];
  };
  return {
    tf,
    embeddingRows,
    layerNorm: layerNormOp,
    activation: activationOp,
    dropout,
    crossEntropySum: (logits: Tensor2D, targets: Tensor1D, weights?: Tensor1D) => crossEntropySum(tf, logits, targets, weights, has(MASKED_CROSS_ENTROPY_KERNEL)),
    mergeHeads,
    attentionProbs,
    biasDropoutResidual: biasDropoutResidualOp,
    residualNorm,
    pickRows: (x: Tensor2D, ids: Int32Array) => pickRows(tf, x, ids, has(SCATTER_ROWS_KERNEL)),
    linearToHeads,
    matMul: (a, b) => matMul(a, b),
    linear: dense,
    linearWithSkip,
    tiedDecoder: (h, e, b) => tiedDecoder(h, e, b),
    batchMatMul,
  };
}

