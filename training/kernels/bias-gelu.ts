// Bias + GELU with its gradient, as a backend-neutral contract: y = gelu(x + b) for x [N, C] and
// b [C] (the intermediate dense layer of every encoder layer, and the MLM head's transform).
//
// The two GELUs, with z = x + b:
// - exact ('gelu'): z Phi(z), Phi(z) = (1 + erf(z / sqrt 2)) / 2; y' = Phi(z) + z phi(z) with
//   phi(z) = exp(-z^2 / 2) / sqrt(2 pi);
// - tanh ('gelu_new', 'gelu_pytorch_tanh'): 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))),
//   computed as z sigmoid(u), u = 2 sqrt(2/pi) (z + 0.044715 z^3) (tanh w = 2 sigmoid(2w) - 1);
//   y' = s + z s (1 - s) 2 sqrt(2/pi) (1 + 3 0.044715 z^2), s = sigmoid(u).
//
// Contract (training/backend/webgpu/bias-gelu.ts implements it for webgpu):
//   BIAS_GELU_KERNEL       inputs { x [N, C], bias [C] }, attrs { tanh: 0 | 1 } -> y [N, C]
//   BIAS_GELU_GRAD_KERNEL  inputs { dy [N, C], x, bias }, attrs { tanh } -> [dx [N, C], dbias [C]]
// The forward keeps x and b; the backward recomputes z and y'(z).
//
// `gelu` (the activation alone) and `biasGeluReference` / `biasGeluGradReference` are the plain
// TF.js composites: the tests' oracle. `biasGelu` is the op the model's ops call when the backend
// has the kernels; without them the ops keep their Linear and GELU ops (training/models/ops.ts).
import type { NamedAttrMap, Tensor, Tensor1D, Tensor2D } from '@tensorflow/tfjs';
import { customOp, type Tf } from './custom-op.ts';

export const BIAS_GELU_KERNEL = 'MlmkitBiasGelu';
export const BIAS_GELU_GRAD_KERNEL = 'MlmkitBiasGeluGrad';

/** Which GELU: 0 exact (erf), 1 the tanh approximation. */
export interface BiasGeluAttrs {
  tanh: 0 | 1;
}

export const GELU_CUBIC = 0.044715;
/** 2 sqrt(2/pi): u = GELU_TANH_SCALE (z + GELU_CUBIC z^3). */
export const GELU_TANH_SCALE = 2 * Math.sqrt(2 / Math.PI);

/** GELU of z, plain composite: exact, or the tanh form written with sigmoid (~15x cheaper than tanh on wasm). */
export function gelu<T extends Tensor>(tf: Tf, z: T, tanh: boolean): T {
  if (!tanh) return tf.mul(tf.mul(z, 0.5), tf.add(tf.erf(tf.mul(z, Math.SQRT1_2)), 1));
  return tf.mul(z, tf.sigmoid(tf.mul(tf.add(z, tf.mul(tf.pow(z, 3), GELU_CUBIC)), GELU_TANH_SCALE)));
}

/** dy/dz of GELU at z, plain composite. */
export function geluDerivative<T extends Tensor>(tf: Tf, z: T, tanh: boolean): T {
  return tf.tidy(() => {
    if (!tanh) {
      const cdf = tf.mul(tf.add(tf.erf(tf.mul(z, Math.SQRT1_2)), 1), 0.5);
      return tf.add(cdf, tf.mul(z, tf.mul(tf.exp(tf.mul(tf.square(z), -0.5)), 1 / Math.sqrt(2 * Math.PI)))) as T;
    }
    const z2 = tf.square(z);
    const s = tf.sigmoid(tf.mul(tf.mul(z, tf.add(tf.mul(z2, GELU_CUBIC), 1)), GELU_TANH_SCALE));
    const du = tf.mul(tf.add(tf.mul(z2, 3 * GELU_CUBIC), 1), GELU_TANH_SCALE);
    return tf.add(s, tf.mul(tf.mul(tf.mul(z, s), tf.sub(1, s)), du)) as T;
  });
}

/** Forward, plain composite: gelu(x + b). */
export function biasGeluReference(tf: Tf, x: Tensor2D, b: Tensor1D, tanh: boolean): Tensor2D {
  return tf.tidy(() => gelu(tf, tf.add(x, b) as Tensor2D, tanh));
}

/** Backward, plain composite: [dx, db] = [dy y'(x + b), sum over rows of dx]. */
export function biasGeluGradReference(tf: Tf, dy: Tensor2D, x: Tensor2D, b: Tensor1D, tanh: boolean): [Tensor2D, Tensor1D] {
  return tf.tidy(() => {
    const dx = tf.mul(dy, geluDerivative(tf, tf.add(x, b) as Tensor2D, tanh)) as Tensor2D;
    return [dx, tf.sum(dx, 0) as Tensor1D];
  });
}

/** gelu(x + b) with its gradient through the kernels (the backend must have them). */
export function biasGelu(tf: Tf, x: Tensor2D, b: Tensor1D, tanh: boolean): Tensor2D {
  if (x.rank !== 2 || b.rank !== 1 || b.shape[0] !== x.shape[1]) {
    throw new Error(`biasGelu: x [N, C] and b [C] expected, got [${x.shape.join(', ')}] and [${b.shape.join(', ')}]`);
  }
  const attrs = { tanh: tanh ? 1 : 0 } as unknown as NamedAttrMap;
  return customOp<Tensor2D>(tf, ([x_, b_], save) => {
    save([x_, b_]);
    return {
      value: tf.engine().runKernel(BIAS_GELU_KERNEL, { x: x_, bias: b_ }, attrs) as Tensor2D,
      gradFunc: (dy, [sx, sb]) => tf.engine().runKernel(BIAS_GELU_GRAD_KERNEL, { dy, x: sx, bias: sb }, attrs) as Tensor[],
    };
  })(x, b);
}
