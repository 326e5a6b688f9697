// Bias + dropout + residual, fused: y = dropout(x + bias) + residual, the end of the attention
// output and FFN output paths of an encoder layer, before their LayerNorm; its gradient.
//
// Contract (webgpu: training/backend/webgpu/bias-dropout-residual.ts):
//   BIAS_DROPOUT_RESIDUAL_KERNEL      inputs { x [N, H], bias [H], residual [N, H] } -> y [N, H]
//   BIAS_DROPOUT_RESIDUAL_GRAD_KERNEL inputs { dy [N, H] } -> dx = dy * mask
//   attrs (both): BiasDropoutResidualAttrs. The mask of entry i (flat, row-major) is that of
//   training/kernels/dropout-mask.ts `dropoutMask` with the given keys, bit for bit: 0 where the keyed
//   hash of i is below `threshold`, else `keepScale`.
// Gradients: dx = dy * mask (the gradient kernel redraws the mask: nothing is kept from the
// forward), dbias = the column sums of dx, dresidual = dy.
//
// A further kernel gives the gradient and its column sums together (webgpu: one pass over dy):
//   BIAS_DROPOUT_RESIDUAL_GRAD_SUM_KERNEL inputs { dy [N, H] }, the same attrs
//                                         -> [dx = dy * mask, dbias = the column sums of dx].
// `biasDropoutResidualGradSumReference` is its composite.
//
// `biasDropoutResidualReference` is the plain composite, the tests' oracle; `biasDropoutResidual`
// is the op: the kernels when `fused`, else the composite with a gradient that keeps the mask.
import type { NamedAttrMap, Tensor, Tensor1D, Tensor2D } from '@tensorflow/tfjs';
import { customOp, type Tf } from './custom-op.ts';
import { kernelDropout, referenceMask, type DropoutOptions, type KernelDropout } from './kernel-dropout.ts';

export type { DropoutOptions };

export const BIAS_DROPOUT_RESIDUAL_KERNEL = 'MlmkitBiasDropoutResidual';
export const BIAS_DROPOUT_RESIDUAL_GRAD_KERNEL = 'MlmkitBiasDropoutResidualGrad';
export const BIAS_DROPOUT_RESIDUAL_GRAD_SUM_KERNEL = 'MlmkitBiasDropoutResidualGradSum';

/** The kernels' attributes: the dropout mask (see kernel-dropout.ts). */
export type BiasDropoutResidualAttrs = KernelDropout;

function checkShapes(x: Tensor, bias: Tensor, residual: Tensor): void {
  const [N, H] = x.shape;
  if (x.rank !== 2 || bias.rank !== 1 || bias.shape[0] !== H || residual.rank !== 2 || residual.shape[0] !== N || residual.shape[1] !== H) {
    throw new Error(`biasDropoutResidual: x [N, H], bias [H] and residual [N, H] expected, got [${x.shape.join(', ')}], [${bias.shape.join(', ')}] and [${residual.shape.join(', ')}]`);
  }
}

/** The plain composite (TF.js's own gradients): the oracle of the kernels. */
export function biasDropoutResidualReference(tf: Tf, x: Tensor2D, bias: Tensor1D, residual: Tensor2D, opts: DropoutOptions): Tensor2D {
  checkShapes(x, bias, residual);
  return tf.tidy(() => {
    const mask = referenceMask(tf, x.shape, opts);
    const h = tf.add(x, bias);
    return tf.add(mask === null ? h : tf.mul(h, mask), residual) as Tensor2D;
  });
}

/** dy [N, H] -> [dy * mask, column sums of that]: the composite of BIAS_DROPOUT_RESIDUAL_GRAD_SUM_KERNEL. */
export function biasDropoutResidualGradSumReference(tf: Tf, dy: Tensor2D, opts: DropoutOptions): [Tensor2D, Tensor1D] {
  return tf.tidy(() => {
    const mask = referenceMask(tf, dy.shape, opts);
    const dx = (mask === null ? tf.clone(dy) : tf.mul(dy, mask)) as Tensor2D;
    return [dx, tf.sum(dx, 0) as Tensor1D];
  });
}

/**
 * The op: the kernels when `fused`, else the composite with a gradient that keeps the mask.
 * `columnSums` computes dbias from dx [N, H] (default tf.sum over rows); with `gradSums` (the
 * backend has BIAS_DROPOUT_RESIDUAL_GRAD_SUM_KERNEL) a fused gradient with dropout takes dx and
 * dbias from that kernel instead.
 */
export function biasDropoutResidual(
  tf: Tf,
  x: Tensor2D,
  bias: Tensor1D,
  residual: Tensor2D,
  opts: DropoutOptions,
  fused: boolean,
  columnSums: (dx: Tensor2D) => Tensor1D = (dx) => tf.sum(dx, 0),
  gradSums = false,
): Tensor2D {
  checkShapes(x, bias, residual);
  const attrs = kernelDropout(opts);
  if (fused) {
    return customOp<Tensor2D>(tf, ([x_, b_, r_]) => ({
      value: tf.engine().runKernel(BIAS_DROPOUT_RESIDUAL_KERNEL, { x: x_, bias: b_, residual: r_ }, attrs as unknown as NamedAttrMap) as Tensor2D,
      gradFunc: (dy) => {
        if (gradSums && attrs.dropout === 1) {
          const [dx, db] = tf.engine().runKernel(BIAS_DROPOUT_RESIDUAL_GRAD_SUM_KERNEL, { dy }, attrs as unknown as NamedAttrMap) as Tensor[];
          return [dx, db, tf.clone(dy)];
        }
        const dx = attrs.dropout === 1 ? (tf.engine().runKernel(BIAS_DROPOUT_RESIDUAL_GRAD_KERNEL, { dy }, attrs as unknown as NamedAttrMap) as Tensor2D) : tf.clone(dy);
        return [dx, columnSums(dx), tf.clone(dy)];
      },
    }))(x, bias, residual);
  }
  return customOp<Tensor2D>(tf, ([x_, b_, r_], save) => {
    const mask = referenceMask(tf, x_.shape, opts);
    if (mask !== null) save([mask]);
    const h = tf.add(x_, b_);
    return {
      value: tf.add(mask === null ? h : tf.mul(h, mask), r_) as Tensor2D,
      gradFunc: (dy, [smask]) => {
        const dx = smask === undefined ? tf.clone(dy) : tf.mul(dy, smask);
        return [dx, columnSums(dx as Tensor2D), tf.clone(dy)];
      },
    };
  })(x, bias, residual);
}
