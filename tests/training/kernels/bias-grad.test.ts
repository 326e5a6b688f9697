// training/kernels/bias-grad.ts: the webgpu column reduction (training/backend/webgpu/bias-grad.ts)
// against tf.sum over rows computed in float64 on the host, and against the reference (tf.sum on
// webgpu): one stage (at most 64 rows), two stages (65 and 1,100 rows), columns that do not divide
// the 64-column tile (1, 33, 5,000), a tall input whose blocks grow past 64 rows (70,000 rows), and
// the model's use: the Linear op's db on webgpu with the kernel equals the one without.
// Tolerance 1e-5 relative to the largest |sum| (float32 sums in another order).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Tensor, Tensor1D, Tensor2D } from '@tensorflow/tfjs';
import { Rng } from '../../../common/rng.ts';
import { capabilitiesOf, releaseWebGpu } from '../../../training/backend.ts';
import { BIAS_GRAD_KERNEL, biasGrad, biasGradReference } from '../../../training/kernels/bias-grad.ts';
import { makeOps } from '../../../training/models/ops.ts';
import { assertSameOp, backendTf, random, relativeDiff, webgpuSkip } from './kernel-helpers.ts';

const skip = await webgpuSkip();
const TOL = 1e-5;

test('webgpu: the bias-gradient kernel equals float64 column sums and tf.sum', { skip }, async (t) => {
  const tf = await backendTf('webgpu');
  try {
    assert.ok(capabilitiesOf(tf, 'webgpu').kernels.has(BIAS_GRAD_KERNEL), 'registered when webgpu loads');
    for (const [N, C] of [[1, 1], [7, 33], [64, 33], [65, 33], [1100, 33], [129, 768], [300, 5000], [70_000, 3]] as const) {
      const rng = new Rng(N + C);
      const values = Float32Array.from({ length: N * C }, () => rng.next() * 2 - 1);
      const dy = tf.tensor2d(values, [N, C]);
      const before = tf.memory().numTensors;
      const got = biasGrad(tf, dy, true);
      assert.equal(tf.memory().numTensors, before + 1, 'the kernel leaves its result only');
      assert.deepEqual(got.shape, [C]);
      const ref = biasGradReference(tf, dy);
      const want = new Float64Array(C);
      for (let i = 0; i < N * C; i++) want[i % C] += values[i];
      const g = await got.data();
      const d64 = relativeDiff(g, want);
      const dRef = relativeDiff(g, await ref.data());
      t.diagnostic(`[${N}, ${C}]: against float64 ${d64.toExponential(1)}, against tf.sum ${dRef.toExponential(1)}`);
      assert.ok(d64 <= TOL && dRef <= TOL, `[${N}, ${C}]: ${d64}, ${dRef}`);
      tf.dispose([dy, got, ref]);
    }
  } finally {
    releaseWebGpu(tf);
  }
});

test("webgpu: the Linear op's gradients with the bias kernel and transpose flags equal the reference op's", { skip }, async () => {
  const tf = await backendTf('webgpu');
  try {
    const fast = makeOps(tf, capabilitiesOf(tf, 'webgpu'));
    const plain = makeOps(tf);
    const rng = new Rng(4);
    // x W + b with x [129, 33], W [33, 70]; the tied decoder h E^T + b with h [65, 33], E [1000, 33].
    const cases = [
      { label: 'linear', shapes: [[129, 33], [33, 70], [70]], op: 'linear' as const },
      { label: 'tiedDecoder', shapes: [[65, 33], [1000, 33], [1000]], op: 'tiedDecoder' as const },
    ];
    for (const { label, shapes, op } of cases) {
      const xs: Tensor[] = shapes.map((shape) => random(tf, rng, shape));
      await assertSameOp(
        tf,
        label,
        (a, w, b) => fast[op](a as Tensor2D, w as Tensor2D, b as Tensor1D),
        (a, w, b) => plain[op](a as Tensor2D, w as Tensor2D, b as Tensor1D),
        xs,
        [0, 1, 2],
        TOL,
      );
      tf.dispose(xs);
    }
  } finally {
    releaseWebGpu(tf);
  }
});
