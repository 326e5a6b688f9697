// training/kernels/split-columns.ts: the webgpu kernel (training/backend/webgpu/split-columns.ts)
// against tf.split, bit for bit (it only moves floats): 2, 3 and 7 parts, one row and one column,
// sizes off the 64-thread workgroup, and an input whose entries outnumber 65,535 workgroups of 64
// (the grid-stride loop); and `concatColumns` (the op the model calls for query, key and value):
// its value is tf.concat and its gradients equal tf.concat's on cpu and on webgpu with the kernel.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Tensor, Tensor2D } from '@tensorflow/tfjs';
import { Rng } from '../../../common/rng.ts';
import { capabilitiesOf, releaseWebGpu } from '../../../training/backend.ts';
import { concatColumns, SPLIT_COLUMNS_KERNEL, splitColumns, splitColumnsReference } from '../../../training/kernels/split-columns.ts';
import { backendTf, random, webgpuSkip } from './kernel-helpers.ts';

const skip = await webgpuSkip();

/** The value and the gradients of sum(f(xs) * w) for a fixed random w, as arrays. */
async function valueAndGrads(tf: Awaited<ReturnType<typeof backendTf>>, f: (xs: Tensor[]) => Tensor, xs: Tensor[]): Promise<Float32Array[]> {
  const y = f(xs);
  const w = random(tf, new Rng(7), y.shape);
  const before = tf.memory().numTensors;
  const gs = tf.grads((...args: Tensor[]) => tf.sum(tf.mul(f(args), w)))(xs);
  assert.equal(tf.memory().numTensors, before + xs.length, 'a gradient call leaves only its results');
  const out = [(await y.data()) as Float32Array, ...(await Promise.all(gs.map((g) => g.data() as Promise<Float32Array>)))];
  tf.dispose([y, w, ...gs]);
  return out;
}

/** concatColumns of three parts of each shape equals tf.concat, value and gradients, bit for bit. */
async function assertLikeConcat(tf: Awaited<ReturnType<typeof backendTf>>, shapes: number[][], fused: boolean, seed: number): Promise<void> {
  const rng = new Rng(seed);
  for (const shape of shapes) {
    const xs = [0, 1, 2].map(() => random(tf, rng, shape));
    const got = await valueAndGrads(tf, (p) => concatColumns(tf, p, fused), xs);
    const want = await valueAndGrads(tf, (p) => tf.concat(p, -1), xs);
    assert.deepEqual(got, want, `[${shape.join(', ')}]`);
    tf.dispose(xs);
  }
}

test('concatColumns on cpu: the value and gradients of tf.concat along the last axis, 1-D and 2-D', async () => {
  const tf = await backendTf('cpu');
  await assertLikeConcat(tf, [[5], [4, 3]], false, 1);
  assert.throws(() => concatColumns(tf, [tf.zeros([2, 3]), tf.zeros([3, 2])], false), /parts have shapes \[2, 3\] and \[3, 2\]/);
  assert.throws(() => splitColumns(tf, tf.zeros([2, 7]), 3, false), /7 columns do not split into 3 equal parts/);
});

test('webgpu: the split-columns kernel equals tf.split bit for bit', { skip }, async (t) => {
  const tf = await backendTf('webgpu');
  try {
    assert.ok(capabilitiesOf(tf, 'webgpu').kernels.has(SPLIT_COLUMNS_KERNEL), 'registered when webgpu loads');
    for (const [R, C, parts] of [[1, 1, 2], [1, 33, 3], [7, 1, 3], [65, 129, 3], [3, 10, 7], [4200, 1000, 3]] as const) {
      const x = random(tf, new Rng(R * C + parts), [R, C * parts]) as Tensor2D;
      const before = tf.memory().numTensors;
      const got = splitColumns(tf, x, parts, true);
      assert.equal(tf.memory().numTensors, before + parts, 'the kernel leaves its results only');
      const want = splitColumnsReference(tf, x, parts);
      for (let p = 0; p < parts; p++) {
        assert.deepEqual(got[p].shape, [R, C]);
        assert.deepEqual(await got[p].data(), await want[p].data(), `[${R}, ${C} x ${parts}], part ${p}`);
      }
      t.diagnostic(`[${R}, ${C} x ${parts}]: equal`);
      tf.dispose([x, ...got, ...want]);
    }
  } finally {
    releaseWebGpu(tf);
  }
});

test('webgpu: concatColumns with the kernel has the value and gradients of tf.concat, bit for bit', { skip }, async () => {
  const tf = await backendTf('webgpu');
  try {
    await assertLikeConcat(tf, [[96], [33, 96]], true, 2);
  } finally {
    releaseWebGpu(tf);
  }
});
