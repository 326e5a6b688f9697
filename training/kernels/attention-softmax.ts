// Attention softmax, fused: probabilities = dropout(softmax(scores * scale + bias)) over the key
// axis, with the padding-mask bias broadcast over heads and queries, in one kernel; its gradient in
// one kernel too.
//
// Contract (what a backend's kernels implement; training/backend/webgpu/attention-softmax.ts for
// webgpu):
//   ATTENTION_SOFTMAX_KERNEL      inputs { scores [B, heads, Tq, Tk] float32, bias [B, Tk] float32 }
//                                 -> probabilities [B, heads, Tq, Tk]
//   ATTENTION_SOFTMAX_GRAD_KERNEL inputs { scores, bias, dy [B, heads, Tq, Tk] } -> dScores
//   attrs (both): AttentionSoftmaxAttrs. With `dropout` 1, entry i (flat, row-major) of the
//   probabilities is multiplied by the mask of training/kernels/dropout-mask.ts `dropoutMask` with the
//   given keys: 0 where the keyed hash of i is below `threshold`, else `keepScale`; the very mask
//   the reference draws in JavaScript, so both agree bit for bit on the decisions.
// The gradient kernel recomputes the softmax and the mask from the scores instead of keeping
// them: the forward saves its inputs only. With p = softmax(z), g = mask * dy (dy without
// dropout): dScores = scale * p * (g - sum_keys(p * g)).
//
// The reference (`attentionSoftmaxReference`) is the plain TF.js composite, what other backends
// run and the tests' oracle. `attentionSoftmax` is the op the model calls: the kernels when
// `fused` (the backend has them), else the composite with a hand-written gradient that keeps the
// probabilities and the mask (as TF.js's softmax and multiply gradients would).
import type { NamedAttrMap, Tensor, Tensor2D, Tensor4D } from '@tensorflow/tfjs';
import { customOp, type Tf } from './custom-op.ts';
import { kernelDropout, referenceMask, type DropoutOptions, type KernelDropout } from './kernel-dropout.ts';

export const ATTENTION_SOFTMAX_KERNEL = 'MlmkitAttentionSoftmax';
export const ATTENTION_SOFTMAX_GRAD_KERNEL = 'MlmkitAttentionSoftmaxGrad';

/** The kernels' attributes: the score scale, and the dropout mask (see kernel-dropout.ts). */
export interface AttentionSoftmaxAttrs extends KernelDropout {
  /** Multiplies the scores before the bias is added. */
  scale: number;
}

export interface AttentionSoftmaxOptions extends DropoutOptions {
  scale: number;
}

function checkShapes(scores: Tensor, bias: Tensor): void {
  const [B, , , Tk] = scores.shape;
  if (scores.rank !== 4 || bias.rank !== 2 || bias.shape[0] !== B || bias.shape[1] !== Tk) {
    throw new Error(`attentionSoftmax: scores [B, heads, Tq, Tk] and bias [B, Tk] expected, got [${scores.shape.join(', ')}] and [${bias.shape.join(', ')}]`);
  }
}

/** The plain composite (TF.js's own gradients): the oracle of the kernels. */
export function attentionSoftmaxReference(tf: Tf, scores: Tensor4D, bias: Tensor2D, opts: AttentionSoftmaxOptions): Tensor4D {
  checkShapes(scores, bias);
  const [B, , , Tk] = scores.shape;
  return tf.tidy(() => {
    const probs = tf.softmax(tf.add(tf.mul(scores, opts.scale), tf.reshape(bias, [B, 1, 1, Tk])));
    const mask = referenceMask(tf, scores.shape, opts);
    return (mask === null ? probs : tf.mul(probs, mask)) as Tensor4D;
  });
}

/** The op: the kernels when `fused`, else the composite with a gradient that keeps p and the mask. */
export function attentionSoftmax(tf: Tf, scores: Tensor4D, bias: Tensor2D, opts: AttentionSoftmaxOptions, fused: boolean): Tensor4D {
  checkShapes(scores, bias);
  const [B, , , Tk] = scores.shape;
  if (fused) {
    const attrs = { scale: opts.scale, ...kernelDropout(opts) } as unknown as NamedAttrMap;
    return customOp<Tensor4D>(tf, ([s, b], save) => {
      save([s, b]);
      return {
        value: tf.engine().runKernel(ATTENTION_SOFTMAX_KERNEL, { scores: s, bias: b }, attrs) as Tensor4D,
        gradFunc: (dy, [ss, sb]) => [tf.engine().runKernel(ATTENTION_SOFTMAX_GRAD_KERNEL, { scores: ss, bias: sb, dy }, attrs) as Tensor4D, tf.zeros(sb.shape)],
      };
    })(scores, bias);
  }
  return customOp<Tensor4D>(tf, ([s, b], save) => {
    const p = tf.softmax(tf.add(tf.mul(s, opts.scale), tf.reshape(b, [B, 1, 1, Tk])));
    const mask = referenceMask(tf, s.shape, opts);
    save(mask === null ? [p] : [p, mask]);
    return {
      value: (mask === null ? p : tf.mul(p, mask)) as Tensor4D,
      gradFunc: (dy, [sp, smask]) => {
        const g = smask === undefined ? dy : tf.mul(dy, smask);
        const dz = tf.mul(tf.mul(sp, tf.sub(g, tf.sum(tf.mul(sp, g), -1, true))), opts.scale);
        return [dz as Tensor4D, tf.zeros(b.shape)];
      },
    };
  })(scores, bias);
}
