// LayerNorm over the last axis with its gradient, as a backend-neutral contract.
//
// y = xhat gamma + beta, xhat = (x - mean) rstd, rstd = 1 / sqrt(var + eps) (mean and biased
// variance of each row, as transformers' nn.LayerNorm). Backward, per row, with g = dy gamma:
// dx = rstd (g - mean(g) - xhat mean(g xhat)); over rows: dgamma = sum dy xhat, dbeta = sum dy.
//
// Contract (training/backend/webgpu/layer-norm.ts implements it for webgpu):
//   LAYER_NORM_KERNEL       inputs { x [N, H], gamma [H], beta [H] }, attrs { eps }
//                           -> [y [N, H], stats [N, 2]] (stats: each row's mean and rstd)
//   LAYER_NORM_GRAD_KERNEL  inputs { dy [N, H], x [N, H], stats [N, 2], gamma [H] }
//                           -> [dx [N, H], dgamma [H], dbeta [H]]
// The forward keeps x and stats for the backward (the same size as the xhat and rstd a composite
// would keep).
//
// `layerNormReference` / `layerNormGradReference` are the plain TF.js composites: what backends
// without the kernels run, and the tests' oracle. `layerNorm` is the op the model's ops call.
import type { NamedAttrMap, Tensor, Tensor1D, Tensor2D } from '@tensorflow/tfjs';
import { customOp, type Tf } from './custom-op.ts';

export const LAYER_NORM_KERNEL = 'MlmkitLayerNorm';
export const LAYER_NORM_GRAD_KERNEL = 'MlmkitLayerNormGrad';

export interface LayerNormAttrs {
  eps: number;
}

/** Forward, plain composite: [y, stats] with stats [N, 2] = (mean, rstd) per row. */
export function layerNormReference(tf: Tf, x: Tensor2D, gamma: Tensor1D, beta: Tensor1D, eps: number): [Tensor2D, Tensor2D] {
  return tf.tidy(() => {
    const { mean, variance } = tf.moments(x, -1, true);
    const rstd = tf.rsqrt(tf.add(variance, eps)); // [N, 1]
    const y = tf.add(tf.mul(tf.mul(tf.sub(x, mean), rstd), gamma), beta) as Tensor2D;
    return [y, tf.concat([mean, rstd], 1) as Tensor2D];
  });
}

/** Backward, plain composite: [dx, dgamma, dbeta]. */
export function layerNormGradReference(tf: Tf, dy: Tensor2D, x: Tensor2D, stats: Tensor2D, gamma: Tensor1D): [Tensor2D, Tensor1D, Tensor1D] {
  return tf.tidy(() => {
    const [mean, rstd] = tf.split(stats, 2, 1);
    const xhat = tf.mul(tf.sub(x, mean), rstd);
    const g = tf.mul(dy, gamma);
    const centred = tf.sub(g, tf.mean(g, -1, true));
    const dx = tf.mul(tf.sub(centred, tf.mul(xhat, tf.mean(tf.mul(g, xhat), -1, true))), rstd) as Tensor2D;
    return [dx, tf.sum(tf.mul(dy, xhat), 0) as Tensor1D, tf.sum(dy, 0) as Tensor1D];
  });
}

function checkShapes(x: Tensor, gamma: Tensor, beta: Tensor): void {
  const H = x.shape[1];
  if (x.rank !== 2 || gamma.rank !== 1 || beta.rank !== 1 || gamma.shape[0] !== H || beta.shape[0] !== H) {
    throw new Error(`layerNorm: x [N, H], gamma [H], beta [H] expected, got [${x.shape.join(', ')}], [${gamma.shape.join(', ')}], [${beta.shape.join(', ')}]`);
  }
}

/** LayerNorm of x [N, H] with its gradient: the kernels when `fused` (the backend has them), else the composites. */
export function layerNorm(tf: Tf, x: Tensor2D, gamma: Tensor1D, beta: Tensor1D, eps: number, fused: boolean): Tensor2D {
  checkShapes(x, gamma, beta);
  const attrs = { eps } as unknown as NamedAttrMap;
  return customOp<Tensor2D>(tf, ([x_, gamma_, beta_], save) => {
    const [y, stats] = fused
      ? (tf.engine().runKernel(LAYER_NORM_KERNEL, { x: x_, gamma: gamma_, beta: beta_ }, attrs) as [Tensor2D, Tensor2D])
      : layerNormReference(tf, x_ as Tensor2D, gamma_ as Tensor1D, beta_ as Tensor1D, eps);
    save([x_, stats, gamma_]);
    return {
      value: y,
      gradFunc: (dy, [sx, sstats, sgamma]) =>
        fused
          ? (tf.engine().runKernel(LAYER_NORM_GRAD_KERNEL, { dy, x: sx, stats: sstats, gamma: sgamma }, {}) as Tensor[])
          : layerNormGradReference(tf, dy, sx as Tensor2D, sstats as Tensor2D, sgamma as Tensor1D),
    };
  })(x, gamma, beta);
}
