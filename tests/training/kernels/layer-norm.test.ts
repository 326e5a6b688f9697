// training/kernels/layer-norm.ts: the LayerNorm op's reference path on cpu against the plain
// composite with TF.js's own gradients, and the webgpu kernels (training/backend/webgpu/layer-norm.ts)
// against the reference composites: values, each row's mean and rstd, and the gradients of x,
// gamma and beta. Shapes whose rows and columns do not divide the workgroup sizes (64 threads a
// row; the backward's blocks of at least 16 rows, at most 1,024 blocks, in 64-row chunks): one
// row, 7 rows, 129 rows of 768, 1,100 rows, 70,000 rows of 3 (more rows than one dispatch
// dimension takes: the forward's workgroups loop; 69 rows a block: two chunks each), and
// padding-like rows (all zeros, constant: variance 0).
// Tolerance 1e-5 relative to the largest magnitude of the reference (float32 sums in another order).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Tensor, Tensor1D, Tensor2D } from '@tensorflow/tfjs';
import { Rng } from '../../../common/rng.ts';
import { capabilitiesOf, releaseWebGpu } from '../../../training/backend.ts';
import {
  LAYER_NORM_GRAD_KERNEL,
  LAYER_NORM_KERNEL,
  layerNorm,
  layerNormGradReference,
  layerNormReference,
} from '../../../training/kernels/layer-norm.ts';
import { layerNorm as plainLayerNorm } from '../../../training/models/ops.ts';
import { assertForwardLeavesOne } from './fused-helpers.ts';
import { assertSameOp, backendTf, random, relativeDiff, webgpuSkip } from './kernel-helpers.ts';

const skip = await webgpuSkip();
const TOL = 1e-5;
const EPS = 1e-12;
const SHAPES: [number, number][] = [[1, 33], [7, 33], [129, 768], [1100, 33], [70_000, 3]];

/** x of `shape` with row 0 all zeros and row 1 constant when there are enough rows (padding-like rows). */
function inputs(tf: Awaited<ReturnType<typeof backendTf>>, [N, H]: [number, number]): Tensor[] {
  const rng = new Rng(N * 1000 + H);
  const x = random(tf, rng, [N, H], 3);
  const rows = Array.from({ length: N }, (_, i) => i);
  const fixed = tf.tidy(() => {
    if (N < 3) return x.clone();
    const keep = tf.tensor2d(rows.map((i) => (i < 2 ? 0 : 1)), [N, 1]);
    const constant = tf.tensor2d(rows.map((i) => (i === 1 ? 0.75 : 0)), [N, 1]);
    return tf.add(tf.mul(x, keep), constant);
  });
  x.dispose();
  return [fixed, random(tf, rng, [H], 1), random(tf, rng, [H], 0.5)];
}

test('cpu: the layerNorm op (reference composites, hand-written gradient) equals the plain composite with TF.js gradients', async () => {
  const tf = await backendTf('cpu');
  for (const shape of SHAPES) {
    const xs = inputs(tf, shape);
    await assertSameOp(
      tf,
      `[${shape}]`,
      (x, g, b) => layerNorm(tf, x as Tensor2D, g as Tensor1D, b as Tensor1D, EPS, false),
      (x, g, b) => plainLayerNorm(tf, x as Tensor2D, g as Tensor1D, b as Tensor1D, EPS),
      xs,
      [0, 1, 2],
      TOL,
    );
    assertForwardLeavesOne(tf, () => layerNorm(tf, xs[0] as Tensor2D, xs[1] as Tensor1D, xs[2] as Tensor1D, EPS, false));
    tf.dispose(xs);
  }
});

test('webgpu: the LayerNorm kernels equal the reference composites (values, row statistics, gradients)', { skip }, async (t) => {
  const tf = await backendTf('webgpu');
  try {
    assert.ok(capabilitiesOf(tf, 'webgpu').kernels.has(LAYER_NORM_KERNEL), 'registered when webgpu loads');
    assert.ok(tf.getKernel(LAYER_NORM_GRAD_KERNEL, 'webgpu') !== undefined);
    for (const shape of SHAPES) {
      const [x, g, b] = inputs(tf, shape) as [Tensor2D, Tensor1D, Tensor1D];
      // The kernels' outputs one by one against the reference composites' (also run on webgpu).
      const [y, stats] = tf.engine().runKernel(LAYER_NORM_KERNEL, { x, gamma: g, beta: b }, { eps: EPS }) as Tensor[];
      const [yRef, statsRef] = layerNormReference(tf, x, g, b, EPS);
      const dy = random(tf, new Rng(5), shape);
      const grads = tf.engine().runKernel(LAYER_NORM_GRAD_KERNEL, { dy, x, stats, gamma: g }, {}) as Tensor[];
      const gradsRef = layerNormGradReference(tf, dy as Tensor2D, x, statsRef, g);
      const diffs = [relativeDiff(await y.data(), await yRef.data()), relativeDiff(await stats.data(), await statsRef.data())];
      for (let i = 0; i < 3; i++) diffs.push(relativeDiff(await grads[i].data(), await gradsRef[i].data()));
      t.diagnostic(`[${shape}]: relative differences y ${diffs[0].toExponential(1)}, stats ${diffs[1].toExponential(1)}, dx ${diffs[2].toExponential(1)}, dgamma ${diffs[3].toExponential(1)}, dbeta ${diffs[4].toExponential(1)}`);
      for (const d of diffs) assert.ok(d <= TOL, `[${shape}]: ${diffs.join(', ')}`);
      assert.deepEqual(grads.map((q) => q.shape), [shape, [shape[1]], [shape[1]]]);
      // The op with the kernels against the plain composite, through tf.grads.
      await assertSameOp(
        tf,
        `[${shape}] op`,
        (p, q, r) => layerNorm(tf, p as Tensor2D, q as Tensor1D, r as Tensor1D, EPS, true),
        (p, q, r) => plainLayerNorm(tf, p as Tensor2D, q as Tensor1D, r as Tensor1D, EPS),
        [x, g, b],
        [0, 1, 2],
        TOL,
      );
      assertForwardLeavesOne(tf, () => layerNorm(tf, x, g, b, EPS, true));
      tf.dispose([x, g, b, y, stats, yRef, statsRef, dy, ...grads, ...gradsRef]);
    }
  } finally {
    releaseWebGpu(tf);
  }
});
