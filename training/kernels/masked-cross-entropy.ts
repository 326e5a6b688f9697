// The masked-position cross-entropy, fused: per row of logits [N, V], -log softmax(row)[target],
// times the row's weight (0 for the padding rows the model adds on webgpu, see bert.ts
// maskedLossOf), summed over rows; its gradient in one kernel.
//
// Contract (webgpu: training/backend/webgpu/masked-cross-entropy.ts):
//   MASKED_CROSS_ENTROPY_KERNEL      inputs { logits [N, V] float32, targets [N] int32,
//                                    weights [N] float32 (optional) } -> per-row losses [N]:
//                                    weight * (logsumexp(row) - row[target])
//   MASKED_CROSS_ENTROPY_GRAD_KERNEL inputs { logits, targets, weights (optional), dy [] float32 }
//                                    -> dLogits [N, V] = (softmax(row) - onehot(target)) * weight * dy
// No attributes. The op sums the per-row losses (one more dispatch); the gradient kernel
// recomputes the softmax from the logits instead of keeping it, so the forward saves its inputs.
//
// `crossEntropySumReference` is the plain composite (TF.js's own gradients), the tests' oracle;
// `crossEntropySum` is the op: the kernels when `fused`, else a composite with a hand-written
// gradient that keeps the softmax.
import type { NamedTensorMap, Scalar, Tensor, Tensor1D, Tensor2D } from '@tensorflow/tfjs';
import { customOp, type Tf } from './custom-op.ts';

export const MASKED_CROSS_ENTROPY_KERNEL = 'MlmkitMaskedCrossEntropy';
export const MASKED_CROSS_ENTROPY_GRAD_KERNEL = 'MlmkitMaskedCrossEntropyGrad';

function checkShapes(logits: Tensor, targets: Tensor, weights?: Tensor): void {
  const N = logits.shape[0];
  const ok = logits.rank === 2 && targets.rank === 1 && targets.shape[0] === N && targets.dtype === 'int32' && (weights === undefined || (weights.rank === 1 && weights.shape[0] === N));
  if (!ok) {
    const w = weights === undefined ? '' : ` and weights [${weights.shape.join(', ')}]`;
    throw new Error(`crossEntropySum: logits [N, V], int32 targets [N] and weights [N] expected, got [${logits.shape.join(', ')}], ${targets.dtype} [${targets.shape.join(', ')}]${w}`);
  }
}

/** The plain composite: sum over rows of weight * (logsumexp(row) - row[target]). */
export function crossEntropySumReference(tf: Tf, logits: Tensor2D, targets: Tensor1D, weights?: Tensor1D): Scalar {
  checkShapes(logits, targets, weights);
  return tf.tidy(() => {
    const picked = tf.sum(tf.mul(logits, tf.cast(tf.oneHot(targets, logits.shape[1]), 'float32')), 1);
    const perRow = tf.sub(tf.logSumExp(logits, 1), picked);
    return tf.sum(weights === undefined ? perRow : tf.mul(perRow, weights)) as Scalar;
  });
}

/** The op: the kernels when `fused`, else the composite with a gradient that keeps the softmax. */
export function crossEntropySum(tf: Tf, logits: Tensor2D, targets: Tensor1D, weights: Tensor1D | undefined, fused: boolean): Scalar {
  checkShapes(logits, targets, weights);
  if (fused) {
    // targets and weights are saved, not closed over: the caller's tidy may dispose them before
    // the backward pass runs.
    return customOp<Scalar>(tf, ([z], save) => {
      save(weights === undefined ? [z, targets] : [z, targets, weights]);
      const inputs: NamedTensorMap = weights === undefined ? { logits: z, targets } : { logits: z, targets, weights };
      const perRow = tf.engine().runKernel(MASKED_CROSS_ENTROPY_KERNEL, inputs) as Tensor1D;
      return {
        value: tf.sum(perRow) as Scalar,
        gradFunc: (dy, [sz, st, sw]) => {
          const inputs: NamedTensorMap = sw === undefined ? { logits: sz, targets: st, dy } : { logits: sz, targets: st, weights: sw, dy };
          return [tf.engine().runKernel(MASKED_CROSS_ENTROPY_GRAD_KERNEL, inputs) as Tensor2D];
        },
      };
    })(logits);
  }
  // -log softmax(z)[t] = lse(z) - z[t], with lse(z) = max(z) - log(max(softmax(z))) (the largest
  // probability is 1 / sum exp(z - max z) >= 1/V, so its log is finite): one fused softmax pass,
  // 3x cheaper on wasm than logSoftmax. Gradient: dy (softmax(z) - onehot(t)).
  return customOp<Scalar>(tf, ([z], save) => {
    const [N, V] = z.shape as [number, number];
    const probs = tf.softmax(z);
    save(weights === undefined ? [probs, targets] : [probs, targets, weights]);
    const flatTargets = tf.add(tf.mul(tf.range(0, N, 1, 'int32'), tf.scalar(V, 'int32')), targets);
    const picked = tf.gather(tf.reshape(z, [N * V]), flatTargets); // z[t] per row
    const lse = tf.sub(tf.max(z, 1), tf.log(tf.max(probs, 1)));
    const perRow = tf.sub(lse, picked);
    return {
      value: tf.sum(weights === undefined ? perRow : tf.mul(perRow, weights)) as Scalar,
      // oneHot as int32 then cast: the wasm OneHot kernel writes wrong float32 values.
      gradFunc: (dy, [sprobs, stargets, sweights]) => {
        const g = tf.mul(tf.sub(sprobs, tf.cast(tf.oneHot(stargets as Tensor1D, V), 'float32')), dy);
        return [sweights === undefined ? g : tf.mul(g, tf.reshape(sweights, [N, 1]))];
      },
    };
  })(logits);
}
