// The fused attention softmax (training/kernels/attention-softmax.ts) against its reference
// composite: on webgpu the kernels (values and gradients), on cpu the op's own gradient; key
// lengths that do not divide the workgroup sizes (1, 7, 129), padding keys (and a sequence whose
// keys are all padding), dropout 0 and 0.1 with the same dropped entries as the reference.
// Tolerance 1e-5 relative to the largest magnitude (f32 softmax, different summation orders).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Tensor, Tensor2D, Tensor4D } from '@tensorflow/tfjs';
import { Rng } from '../../../common/rng.ts';
import type { Tf } from '../../../training/backend.ts';
import { attentionSoftmax, attentionSoftmaxReference, type AttentionSoftmaxOptions } from '../../../training/kernels/attention-softmax.ts';
import { MASKED_SCORE } from '../../../training/models/bert.ts';
import { assertSameOp, backendTf, random, webgpuSkip, zeros } from './kernel-helpers.ts';

const TOL = 1e-5;

/** Padding bias [B, T]: sequence b keeps its first max(1, T - 2b) keys; with `allPadded` the last sequence has none. */
function paddingBias(tf: Tf, B: number, T: number, allPadded: boolean): Tensor2D {
  const v = new Float32Array(B * T);
  for (let b = 0; b < B; b++) {
    const real = allPadded && b === B - 1 ? 0 : Math.max(1, T - 2 * b);
    for (let t = real; t < T; t++) v[b * T + t] = MASKED_SCORE;
  }
  return tf.tensor2d(v, [B, T]);
}

async function check(tf: Tf, fused: boolean): Promise<void> {
  const rng = new Rng(5);
  for (const [B, nh, T] of [[2, 2, 1], [3, 3, 7], [2, 2, 129]]) {
    for (const rate of [0, 0.1]) {
      for (const allPadded of [false, true]) {
        const opts: AttentionSoftmaxOptions = { scale: 1 / Math.sqrt(8), rate, seed: rate > 0 ? `7/layer.${T}.probs` : null };
        const scores = random(tf, rng, [B, nh, T, T], 4);
        const bias = paddingBias(tf, B, T, allPadded);
        const label = `${fused ? 'kernel' : 'op'} B=${B} heads=${nh} T=${T} rate=${rate}${allPadded ? ' all-padded sequence' : ''}`;
        const { got, want } = await assertSameOp(
          tf,
          label,
          (s, b) => attentionSoftmax(tf, s as Tensor4D, b as Tensor2D, opts, fused),
          (s, b) => attentionSoftmaxReference(tf, s as Tensor4D, b as Tensor2D, opts),
          [scores, bias],
          [0],
          TOL,
        );
        // The same dropped entries (and no others: a kept probability is never exactly 0 here
        // except at padded keys, which both sides share).
        assert.deepEqual(zeros(got), zeros(want), `${label}: zero entries`);
        if (rate > 0 && T > 1) assert.ok(zeros(want).length > 0, `${label}: some entries dropped`);
        tf.dispose([scores, bias] as Tensor[]);
      }
    }
  }
}

test('cpu: the attention softmax op and its gradient equal the plain composite', async () => {
  const tf = await backendTf('cpu');
  const before = tf.memory().numTensors;
  await check(tf, false);
  assert.equal(tf.memory().numTensors, before, 'no tensor left behind');
});

test('webgpu: the attention softmax kernels equal the plain composite', { skip: await webgpuSkip() }, async () => {
  const tf = await backendTf('webgpu');
  const before = tf.memory().numTensors;
  await check(tf, true);
  assert.equal(tf.memory().numTensors, before, 'no tensor left behind');
  await backendTf('cpu');
});
