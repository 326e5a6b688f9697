// The fused masked-position cross-entropy (training/kernels/masked-cross-entropy.ts) against its
// reference composite: on webgpu the kernels (loss and gradient), on cpu the op's own gradient;
// rows 1 and 65, vocabularies of 33 and 1,000 (neither a multiple of the workgroup size), with
// and without row weights, padding rows of weight 0 (whose gradient must be exactly 0).
// Tolerance 1e-5 relative (f32 log-sum-exp in different summation orders).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Tensor, Tensor1D, Tensor2D } from '@tensorflow/tfjs';
import { Rng } from '../../../common/rng.ts';
import type { Tf } from '../../../training/backend.ts';
import { crossEntropySum, crossEntropySumReference } from '../../../training/kernels/masked-cross-entropy.ts';
import { assertSameOp, backendTf, random, webgpuSkip } from './kernel-helpers.ts';

const TOL = 1e-5;

async function check(tf: Tf, fused: boolean): Promise<void> {
  const rng = new Rng(11);
  for (const [N, V] of [[1, 33], [65, 33], [1, 1000], [65, 1000]]) {
    for (const weighted of [false, true]) {
      const logits = random(tf, rng, [N, V], 5);
      const targets = tf.tensor1d(Array.from({ length: N }, () => Math.floor(rng.next() * V)), 'int32');
      // The last third of the rows are padding (weight 0), as the model pads them.
      const real = Math.max(1, Math.ceil((2 * N) / 3));
      const weights = weighted ? tf.tensor1d(Array.from({ length: N }, (_, i) => (i < real ? 1 : 0)), 'float32') : undefined;
      const label = `${fused ? 'kernel' : 'op'} N=${N} V=${V}${weighted ? ' weighted' : ''}`;
      await assertSameOp(
        tf,
        label,
        (z) => crossEntropySum(tf, z as Tensor2D, targets, weights, fused),
        (z) => crossEntropySumReference(tf, z as Tensor2D, targets, weights),
        [logits],
        [0],
        TOL,
      );
      if (weighted && real < N) {
        const g = tf.grad((z: Tensor) => crossEntropySum(tf, z as Tensor2D, targets, weights, fused))(logits);
        const rows = (await g.data()).subarray(real * V);
        assert.ok(rows.every((v) => v === 0), `${label}: padding rows get no gradient`);
        g.dispose();
      }
      tf.dispose([logits, targets, ...(weights ? [weights] : [])] as Tensor[]);
    }
  }
  // The gradient scales with dy.
  const z = random(tf, rng, [3, 40], 3);
  const t = tf.tensor1d([0, 39, 7], 'int32') as Tensor1D;
  const g1 = tf.grad((x: Tensor) => tf.mul(crossEntropySum(tf, x as Tensor2D, t, undefined, fused), 2.5))(z);
  const g2 = tf.grad((x: Tensor) => tf.mul(crossEntropySumReference(tf, x as Tensor2D, t), 2.5))(z);
  const a = await g1.data();
  const b = await g2.data();
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) <= 1e-5 * 2.5, `dy scaling at ${i}`);
  tf.dispose([z, t, g1, g2]);
}

test('cpu: the cross-entropy op and its gradient equal the plain composite', async () => {
  const tf = await backendTf('cpu');
  const before = tf.memory().numTensors;
  await check(tf, false);
  assert.equal(tf.memory().numTensors, before, 'no tensor left behind');
});

test('webgpu: the cross-entropy kernels equal the plain composite', { skip: await webgpuSkip() }, async () => {
  const tf = await backendTf('webgpu');
  const before = tf.memory().numTensors;
  await check(tf, true);
  assert.equal(tf.memory().numTensors, before, 'no tensor left behind');
  await backendTf('cpu');
});
