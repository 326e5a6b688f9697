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
import {
  CONCAT_COLUMN_GROUPS_KERNEL,
  concatColumnGroups,
  concatColumns,
  SPLIT_COLUMN_GROUPS_KERNEL,
  SPLIT_COLUMNS_KERNEL,
  splitColumnGroupsReference,
  splitColumns,
  splitColumnsReference,
} from '../../../training/kernels/split-columns.ts';
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

// The group kernels: all groups side by side in one dispatch (the query, key and value weights and
// biases of a layer), and their gradients split back in one; against concatColumns of each group
// (tf.concat and tf.split), values and gradients bit for bit. Group shapes off the workgroup size,
// a 1-D group with a 2-D one, and one group large enough for the grid-stride loop.
const GROUP_CASES: { parts: number; shapes: number[][] }[] = [
  { parts: 3, shapes: [[33, 7], [7]] },
  { parts: 3, shapes: [[1, 1], [1]] },
  { parts: 2, shapes: [[5, 3], [3], [65]] },
  { parts: 3, shapes: [[1500, 1000]] },
];

async function assertGroups(tf: Awaited<ReturnType<typeof backendTf>>, fused: boolean): Promise<void> {
  for (const { parts, shapes } of GROUP_CASES) {
    const rng = new Rng(parts * 100 + shapes.length);
    const xs = shapes.flatMap((s) => Array.from({ length: parts }, () => random(tf, rng, s)));
    const grouped = (flat: Tensor[]) => shapes.map((_, g) => flat.slice(g * parts, (g + 1) * parts));
    // The gradient of sum over groups of sum(out_g * w_g): valueAndGrads takes one output, so the
    // groups' outputs are flattened and concatenated after the op under test.
    const cat = (outs: Tensor[]) => tf.concat(outs.map((o) => tf.reshape(o, [-1])));
    const got = await valueAndGrads(tf, (flat) => cat(concatColumnGroups(tf, grouped(flat), fused)), xs);
    const want = await valueAndGrads(tf, (flat) => cat(grouped(flat).map((g) => tf.concat(g, -1))), xs);
    assert.deepEqual(got, want, `${parts} parts of ${shapes.map((s) => `[${s.join(', ')}]`).join(', ')}`);
    const outs = concatColumnGroups(tf, grouped(xs), fused);
    for (let g = 0; g < shapes.length; g++) {
      const s = shapes[g];
      assert.deepEqual(outs[g].shape, s.length === 1 ? [parts * s[0]] : [s[0], parts * s[1]]);
    }
    const back = splitColumnGroupsReference(tf, outs, parts);
    for (let i = 0; i < xs.length; i++) assert.deepEqual(await back[i].data(), await xs[i].data(), 'the reference split inverts the concatenation');
    tf.dispose([...xs, ...outs, ...back]);
  }
}

test('concatColumnGroups on cpu: concatColumns of each group, values and gradients', async () => {
  const tf = await backendTf('cpu');
  await assertGroups(tf, false);
  assert.throws(() => concatColumnGroups(tf, [[tf.zeros([2])], [tf.zeros([2]), tf.zeros([2])]], true), /every group needs 1 parts/);
});

test('webgpu: the column group kernels equal concatColumns of each group bit for bit, values and gradients', { skip }, async () => {
  const tf = await backendTf('webgpu');
  try {
    const kernels = capabilitiesOf(tf, 'webgpu').kernels;
    assert.ok(kernels.has(CONCAT_COLUMN_GROUPS_KERNEL) && kernels.has(SPLIT_COLUMN_GROUPS_KERNEL), 'registered when webgpu loads');
    const xs = [0, 1, 2].map((i) => random(tf, new Rng(i), [4, 3]));
    const bs = [0, 1, 2].map((i) => random(tf, new Rng(i + 9), [3]));
    const before = tf.memory().numTensors;
    const outs = concatColumnGroups(tf, [xs, bs], true);
    assert.equal(tf.memory().numTensors, before + 2, 'the kernel leaves its results only');
    const direct = tf.engine().runKernel(SPLIT_COLUMN_GROUPS_KERNEL, { x0: outs[0], x1: outs[1] }, { parts: 3 } as unknown as Record<string, number>) as unknown as Tensor[];
    const want = splitColumnGroupsReference(tf, outs, 3);
    assert.equal(direct.length, 6);
    for (let i = 0; i < 6; i++) assert.deepEqual(await direct[i].data(), await want[i].data(), `split output ${i}`);
    tf.dispose([...xs, ...bs, ...outs, ...direct, ...want]);
    await assertGroups(tf, true);
  } finally {
    releaseWebGpu(tf);
  }
});
