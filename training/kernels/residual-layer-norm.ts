// The end of an encoder layer's residual branch, fused: y = LayerNorm(dropout(x + bias) + residual)
// (x: the branch's last product, x W), and its gradient. In a post-LayerNorm layer both branches
// end this way (transformers' BertSelfOutput and BertOutput after their dense); as two ops,
// bias-dropout-residual.ts then layer-norm.ts, it costs two kernels forward and three or more
// backward, fused one forward and two backward (webgpu).
//
// Contract (webgpu: training/backend/webgpu/layer-norm.ts, with the plain LayerNorm):
//   RESIDUAL_LAYER_NORM_KERNEL       inputs { x [N, H], bias [H], residual [N, H], gamma [H], beta [H] },
//                                    attrs ResidualLayerNormAttrs
//                                    -> [y [N, H], sum [N, H], stats [N, 2]]
//   RESIDUAL_LAYER_NORM_GRAD_KERNEL  inputs { dy [N, H], sum [N, H], stats [N, 2], gamma [H] }, the same attrs
//                                    -> [dx [N, H], dbias [H], dresidual [N, H], dgamma [H], dbeta [H]]
// sum = dropout(x + bias) + residual (LayerNorm's input, kept for the backward); stats: each row's
// mean and rstd, as layer-norm.ts. Backward: ds = LayerNorm's dx of dy (layer-norm.ts), dresidual =
// ds, dx = ds * mask, dbias = the column sums of dx, dgamma and dbeta as layer-norm.ts. The mask is
// bias-dropout-residual.ts's (the keyed hash of each entry's flat index, redrawn by the backward).
//
// `residualLayerNormReference` and `residualLayerNormGradReference` are the composites of the two
// ops' references (the tests' oracle); `residualLayerNorm` is the op on the kernels. Backends
// without them run the two ops in turn (training/models/ops.ts), each on its own kernels where it
// has them.
import type { NamedAttrMap, Tensor, Tensor1D, Tensor2D } from '@tensorflow/tfjs';
import { biasDropoutResidualGradSumReference, biasDropoutResidualReference } from './bias-dropout-residual.ts';
import { customOp, type Tf } from './custom-op.ts';
import { kernelDropout, type DropoutOptions, type KernelDropout } from './kernel-dropout.ts';
import { layerNormGradReference, layerNormReference } from './layer-norm.ts';

export const RESIDUAL_LAYER_NORM_KERNEL = 'MlmkitResidualLayerNorm';
export const RESIDUAL_LAYER_NORM_GRAD_KERNEL = 'MlmkitResidualLayerNormGrad';

/** The kernels' attributes: LayerNorm's eps and the dropout mask (kernel-dropout.ts). */
export interface ResidualLayerNormAttrs extends KernelDropout {
  eps: number;
}

export interface ResidualLayerNormOptions extends DropoutOptions {
  eps: number;
}

function checkShapes(x: Tensor, bias: Tensor, residual: Tensor, gamma: Tensor, beta: Tensor): void {
  const [N, H] = x.shape;
  const ok =
    x.rank === 2 &&
    residual.rank === 2 &&
    residual.shape[0] === N &&
    residual.shape[1] === H &&
    [bias, gamma, beta].every((t) => t.rank === 1 && t.shape[0] === H);
  if (!ok) {
    const shapes = [x, bias, residual, gamma, beta].map((t) => `[${t.shape.join(', ')}]`).join(', ');
    throw new Error(`residualLayerNorm: x [N, H], bias [H], residual [N, H], gamma [H], beta [H] expected, got ${shapes}`);
  }
}

/** Forward, composite of the two references: [y, sum, stats]. */
export function residualLayerNormReference(
  tf: Tf,
  x: Tensor2D,
  bias: Tensor1D,
  residual: Tensor2D,
  gamma: Tensor1D,
  beta: Tensor1D,
  opts: ResidualLayerNormOptions,
): [Tensor2D, Tensor2D, Tensor2D] {
  checkShapes(x, bias, residual, gamma, beta);
  return tf.tidy(() => {
    const sum = biasDropoutResidualReference(tf, x, bias, residual, opts);
    const [y, stats] = layerNormReference(tf, sum, gamma, beta, opts.eps);
    return [y, sum, stats];
  });
}

/** Backward, composite of the two references: [dx, dbias, dresidual, dgamma, dbeta]. */
export function residualLayerNormGradReference(
  tf: Tf,
  dy: Tensor2D,
  sum: Tensor2D,
  stats: Tensor2D,
  gamma: Tensor1D,
  opts: DropoutOptions,
): [Tensor2D, Tensor1D, Tensor2D, Tensor1D, Tensor1D] {
  return tf.tidy(() => {
    const [ds, dgamma, dbeta] = layerNormGradReference(tf, dy, sum, stats, gamma);
    const [dx, dbias] = biasDropoutResidualGradSumReference(tf, ds, opts);
    return [dx, dbias, ds, dgamma, dbeta];
  });
}

/** The attributes of `opts` for the kernels. */
export function residualLayerNormAttrs(opts: ResidualLayerNormOptions): ResidualLayerNormAttrs {
  return { ...kernelDropout(opts), eps: opts.eps };
}

/**
 * LayerNorm(dropout(x + bias) + residual) with its gradient, on the kernels (the backend must have
 * both). Keeps sum and stats for the backward; the mask is redrawn there.
 */
export function residualLayerNorm(
  tf: Tf,
  x: Tensor2D,
  bias: Tensor1D,
  residual: Tensor2D,
  gamma: Tensor1D,
  beta: Tensor1D,
  opts: ResidualLayerNormOptions,
): Tensor2D {
  checkShapes(x, bias, residual, gamma, beta);
  const attrs = residualLayerNormAttrs(opts) as unknown as NamedAttrMap;
  return customOp<Tensor2D>(tf, ([x_, b_, r_, g_, be_], save) => {
    const [y, sum, stats] = tf.engine().runKernel(RESIDUAL_LAYER_NORM_KERNEL, { x: x_, bias: b_, residual: r_, gamma: g_, beta: be_ }, attrs) as Tensor2D[];
    save([sum, stats, g_]);
    return {
      value: y,
      gradFunc: (dy, [ssum, sstats, sgamma]) =>
        tf.engine().runKernel(RESIDUAL_LAYER_NORM_GRAD_KERNEL, { dy, sum: ssum, stats: sstats, gamma: sgamma }, attrs) as Tensor[],
    };
  })(x, bias, residual, gamma, beta);
}
