// training/kernels/scatter-rows.ts: the host plan (offsets and sources by counting sort; an index
// outside the table is an error), and on webgpu the kernel (training/backend/webgpu/scatter-rows.ts)
// against tf.unsortedSegmentSum: repeated indices, rows no index names (zero), widths 1, 33 and
// 768, no input rows at all, and 70,000 x 64 outputs (more workgroups of 64 than one dispatch
// dimension takes: TF.js folds the dispatch). Rows added in another order than the reference's
// atomics: 1e-6 relative; distinct indices are copies, equal. pickRows (the head's gather of the
// labelled positions) against tf.gather: values equal, gradients within 1e-6.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Tensor, Tensor2D } from '@tensorflow/tfjs';
import { Rng } from '../../../common/rng.ts';
import { pickRows, scatterPlan, scatterRows, scatterRowsReference } from '../../../training/kernels/scatter-rows.ts';
import { assertSameOp, backendTf, random, relativeDiff, webgpuSkip } from './kernel-helpers.ts';

const skip = await webgpuSkip();

test('scatterPlan: each output row lists its input rows in increasing order; bad indices throw', () => {
  const plan = scatterPlan([2, 0, 2, 4, 0, 2], 6);
  assert.deepEqual(Array.from(plan.offsets), [0, 2, 2, 5, 5, 6, 6]);
  assert.deepEqual(Array.from(plan.sources), [1, 4, 0, 2, 5, 3]);
  assert.deepEqual(Array.from(scatterPlan([], 3).offsets), [0, 0, 0, 0]);
  assert.throws(() => scatterPlan([0, 3], 3), /index 3 at 1 is outside \[0, 3\)/);
  assert.throws(() => scatterPlan([-1], 3), /index -1 at 0/);
  assert.throws(() => scatterPlan([0.5], 3), /index 0.5 at 0/);
});

test('webgpu: the scatter kernel equals tf.unsortedSegmentSum', { skip }, async () => {
  const tf = await backendTf('webgpu');
  const before = tf.memory().numTensors;
  const rng = new Rng(31);
  const cases: { M: number; S: number; H: number; distinct?: boolean }[] = [
    { M: 1, S: 1, H: 1 },
    { M: 50, S: 7, H: 33 }, // every row repeated
    { M: 40, S: 1000, H: 768 }, // most rows empty
    { M: 0, S: 5, H: 3 },
    { M: 300, S: 70_000, H: 64, distinct: true },
  ];
  for (const { M, S, H, distinct } of cases) {
    const ids = Array.from({ length: M }, (_, j) => (distinct ? (j * 233) % S : Math.floor(rng.next() * S)));
    if (distinct) assert.equal(new Set(ids).size, M);
    const x = random(tf, rng, [M, H]) as Tensor2D;
    const got = scatterRows(tf, x, scatterPlan(ids, S));
    // (TF.js's UnsortedSegmentSum fails on an empty input: zeros are what it would give.)
    const want = M === 0 ? tf.zeros([S, H]) : scatterRowsReference(tf, x, ids, S);
    assert.deepEqual(got.shape, [S, H]);
    const d = relativeDiff((await got.data()) as Float32Array, (await want.data()) as Float32Array);
    if (distinct || M === 0) assert.equal(d, 0, `M=${M} S=${S} H=${H}: copies are exact`);
    else assert.ok(d <= 1e-6, `M=${M} S=${S} H=${H}: differs by ${d} relative`);
    tf.dispose([x, got, want] as Tensor[]);
  }
  assert.equal(tf.memory().numTensors, before, 'no tensor left behind');
  await backendTf('cpu');
});

test('webgpu: pickRows (gradient through the scatter kernel) equals tf.gather, repeated rows included', { skip }, async () => {
  const tf = await backendTf('webgpu');
  const rng = new Rng(37);
  for (const [S, H, ids] of [[9, 33, [3, 0, 8, 3, 3]], [130, 64, Array.from({ length: 64 }, (_, i) => (i * 7) % 130)]] as [number, number, number[]][]) {
    const x = random(tf, rng, [S, H]);
    const index = Int32Array.from(ids);
    await assertSameOp(
      tf,
      `S=${S} H=${H} ${ids.length} rows`,
      (t) => pickRows(tf, t as Tensor2D, index, true),
      (t) => tf.gather(t, tf.tensor1d(index, 'int32')),
      [x],
      [0],
      1e-6,
    );
    x.dispose();
  }
  await backendTf('cpu');
});
