// The optimizer step's kernels for one parameter tensor: the AdamW update in one pass, and the
// sum of squares of a gradient (the global norm's terms). The per-tensor AdamW
// (training/optimizer.ts) and `globalNorm` (training/train-step.ts) call them where the backend
// has them, else run the composites below. (webgpu has its own flat AdamW over the whole model,
// training/flat-adamw.ts; these are for backends that update tensor by tensor.)
//
// Contract:
//   ADAMW_KERNEL           inputs { param, m, v, grad } (same shape, float32), attrs AdamWKernelAttrs
//                          -> [param1, m1, v1], each float32 operation as `adamwReference` orders it,
//                          so that a kernel gives the composite's bits exactly:
//                            m1 = m b1 + g b1c;  v1 = v b2 + (g g) b2c;  denom = sqrt(v1) inv + eps;
//                            param1 = (decay ? param keep : param) + (m1 / denom) negStep
//   SUM_OF_SQUARES_KERNEL  inputs { x float32 } -> [] float32: the sum of x^2 (x^2 in float32, the
//                          sum in float64 in the kernel, then rounded; the composite sums in float32)
// The attributes are the update's coefficients as training/optimizer.ts computes them, each
// rounded to float32 where the kernel uses it (as tf.scalar(x, 'float32') would be).
import type { NamedAttrMap, Scalar, Tensor } from '@tensorflow/tfjs';
import type { Tf } from './custom-op.ts';

export const ADAMW_KERNEL = 'MlmkitAdamW';
export const SUM_OF_SQUARES_KERNEL = 'MlmkitSumOfSquares';

export interface AdamWKernelAttrs {
  b1: number;
  b2: number;
  /** (1 - beta1) times the gradient's scale (clipping folded in). */
  b1c: number;
  /** (1 - beta2) times the gradient's scale squared. */
  b2c: number;
  /** 1 / sqrt(1 - beta2^t). */
  inv: number;
  eps: number;
  /** -lr / (1 - beta1^t). */
  negStep: number;
  /** 1 - lr weight_decay. */
  keep: number;
  /** 1: weight decay applies to this parameter (param is multiplied by `keep` first). */
  decay: number;
}

/** The update as TF.js ops (the per-tensor AdamW's own): [param1, m1, v1]. */
export function adamwReference(tf: Tf, p: Tensor, m: Tensor, v: Tensor, g: Tensor, a: AdamWKernelAttrs): [Tensor, Tensor, Tensor] {
  return tf.tidy(() => {
    const s = (x: number): Scalar => tf.scalar(x, 'float32');
    const m1 = tf.add(tf.mul(m, s(a.b1)), tf.mul(g, s(a.b1c)));
    const v1 = tf.add(tf.mul(v, s(a.b2)), tf.mul(tf.square(g), s(a.b2c)));
    const denom = tf.add(tf.mul(tf.sqrt(v1), s(a.inv)), s(a.eps));
    const decayed = a.decay === 1 ? tf.mul(p, s(a.keep)) : p;
    return [tf.add(decayed, tf.mul(tf.div(m1, denom), s(a.negStep))), m1, v1];
  });
}

/** The update through the kernel (the backend must have it). */
export function adamwKernel(tf: Tf, p: Tensor, m: Tensor, v: Tensor, g: Tensor, a: AdamWKernelAttrs): [Tensor, Tensor, Tensor] {
  return tf.engine().runKernel(ADAMW_KERNEL, { param: p, m, v, grad: g }, a as unknown as NamedAttrMap) as unknown as [Tensor, Tensor, Tensor];
}

/** sum(x^2): the kernel when `fused`, else tf.sum(tf.square(x)). */
export function sumOfSquares(tf: Tf, x: Tensor, fused: boolean): Scalar {
  if (!fused) return tf.tidy(() => tf.sum(tf.square(x)) as Scalar);
  return tf.engine().runKernel(SUM_OF_SQUARES_KERNEL, { x }, {}) as Scalar;
}

/** Whether the active backend has mlmkit's kernel `name` registered. */
export function backendHas(tf: Tf, name: string): boolean {
  return tf.getKernel(name, tf.getBackend()) !== undefined;
}
