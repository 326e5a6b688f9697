// The gradient of a bias added to every row: db = sum over rows of dy, a column reduction.
//
// Contract (training/backend/webgpu/bias-grad.ts implements it for webgpu):
//   BIAS_GRAD_KERNEL  inputs { dy [N, C] float32 } -> db [C] float32.
// TF.js's webgpu Sum reduces a column as one workgroup per output looping over the rows, after a
// transpose of dy to put the reduced axis last; the kernel instead reads dy in place, in two
// stages (blocks of rows to partial sums, then the partials to the result).
//
// The reference (`biasGradReference`, tf.sum over axis 0) is what other backends run and the
// tests' oracle; `biasGrad` is what the ops call.
import type { Tensor1D, Tensor2D } from '@tensorflow/tfjs';
import type { Tf } from './custom-op.ts';

export const BIAS_GRAD_KERNEL = 'MlmkitBiasGrad';

/** sum over rows of dy [N, C] -> [C]: the plain composite. */
export function biasGradReference(tf: Tf, dy: Tensor2D): Tensor1D {
  return tf.sum(dy, 0);
}

/** db for dy [N, C]: the kernel when `fused` (the backend has it), else the reference. */
export function biasGrad(tf: Tf, dy: Tensor2D, fused: boolean): Tensor1D {
  if (dy.rank !== 2) throw new Error(`biasGrad: dy must be [N, C], got [${dy.shape.join(', ')}]`);
  if (!fused) return biasGradReference(tf, dy);
  return tf.engine().runKernel(BIAS_GRAD_KERNEL, { dy }, {}) as Tensor1D;
}
