// training/kernels/residual-layer-norm.ts on webgpu (training/backend/webgpu/layer-norm.ts)
// against the plain composite, bias + dropout + residual then LayerNorm with TF.js's own
// gradients: values, and the gradients of x, bias, residual, gamma and beta. Shapes whose rows
// and columns do not divide the workgroup (64 threads) or the backward's blocks (16 rows at least,
// at most 1,024 blocks, 64-row chunks): one row, 7 rows, 130 rows of 33 (nine blocks), 40 rows of
// 768, and 70,000 rows of 3: more rows than one dispatch dimension takes (the forward's
// workgroups loop) and 69 rows a block (two chunks each); dropout 0 and 0.1, padding-like rows
// (all zeros; constant: variance 0). The kernels directly against the reference composites too:
// the sum and stats the forward keeps, and each of the backward's five outputs.
// Also Ops.linearWithSkip, whose gradient adds the residual's inside the matMul kernel on webgpu,
// against the plain use of x twice. Tolerance 1e-5 relative (float32 sums in another order).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { NamedAttrMap, Tensor, Tensor1D, Tensor2D } from '@tensorflow/tfjs';
import { Rng } from '../../../common/rng.ts';
import { capabilitiesOf, type Tf } from '../../../training/backend.ts';
import { biasDropoutResidualReference } from '../../../training/kernels/bias-dropout-residual.ts';
import {
  RESIDUAL_LAYER_NORM_GRAD_KERNEL,
  RESIDUAL_LAYER_NORM_KERNEL,
  residualLayerNorm,
  residualLayerNormAttrs,
  residualLayerNormGradReference,
  residualLayerNormReference,
  type ResidualLayerNormOptions,
} from '../../../training/kernels/residual-layer-norm.ts';
import { dropoutMask } from '../../../training/kernels/dropout-mask.ts';
import { layerNorm as plainLayerNorm, makeOps } from '../../../training/models/ops.ts';
import { assertForwardLeavesOne } from './fused-helpers.ts';
import { assertSameOp, backendTf, random, relativeDiff, webgpuSkip } from './kernel-helpers.ts';

const skip = await webgpuSkip();
const TOL = 1e-5;
const EPS = 1e-12;
const SHAPES: [number, number][] = [[1, 33], [7, 33], [130, 33], [40, 768], [70_000, 3]];

/** x, bias, residual, gamma, beta for `shape`; with 3 rows or more, the sums of rows 0 and 1 are exactly 0 and 0.75 (padding-like rows), dropout or not. */
function inputs(tf: Tf, [N, H]: [number, number]): Tensor[] {
  const rng = new Rng(N * 7 + H);
  const bias = random(tf, rng, [H], 0.5);
  const [x, residual] = tf.tidy(() => {
    const x0 = random(tf, rng, [N, H], 2);
    const r0 = random(tf, rng, [N, H], 3);
    if (N < 3) return [x0, r0];
    // Rows 0 and 1: x = -bias (x + bias is exactly 0, dropped or kept), residual 0 and 0.75.
    const rows = Array.from({ length: N }, (_, i) => i);
    const special = tf.tensor2d(rows.map((i) => (i < 2 ? 1 : 0)), [N, 1]);
    const constant = tf.tensor2d(rows.map((i) => (i === 1 ? 0.75 : 0)), [N, 1]);
    const x = tf.add(tf.mul(x0, tf.sub(1, special)), tf.mul(tf.neg(bias), special));
    const r = tf.add(tf.mul(r0, tf.sub(1, special)), constant);
    return [x, r];
  });
  return [x, bias, residual, random(tf, rng, [H], 1), random(tf, rng, [H], 0.5)];
}

/** The plain composite: bias + dropout + residual (reference), then LayerNorm's plain form, TF.js's gradients. */
function plain(tf: Tf, xs: Tensor[], opts: ResidualLayerNormOptions): Tensor2D {
  const [x, b, r, g, be] = xs as [Tensor2D, Tensor1D, Tensor2D, Tensor1D, Tensor1D];
  return tf.tidy(() => plainLayerNorm(tf, biasDropoutResidualReference(tf, x, b, r, opts), g, be, opts.eps));
}

test('webgpu: the fused residual LayerNorm and its gradient equal the plain composite', { skip }, async () => {
  const tf = await backendTf('webgpu');
  const before = tf.memory().numTensors;
  for (const shape of SHAPES) {
    for (const rate of shape[0] > 1000 ? [0.1] : [0, 0.1]) {
      const opts: ResidualLayerNormOptions = { eps: EPS, rate, seed: rate > 0 ? `5/layer.2.output.${shape[0]}` : null };
      const xs = inputs(tf, shape);
      await assertSameOp(
        tf,
        `[${shape}] rate ${rate}`,
        (...ts) => residualLayerNorm(tf, ...(ts as [Tensor2D, Tensor1D, Tensor2D, Tensor1D, Tensor1D]), opts),
        (...ts) => plain(tf, ts, opts),
        xs,
        [0, 1, 2, 3, 4],
        TOL,
      );
      assertForwardLeavesOne(tf, () => residualLayerNorm(tf, ...(xs as [Tensor2D, Tensor1D, Tensor2D, Tensor1D, Tensor1D]), opts));
      tf.dispose(xs);
    }
  }
  assert.equal(tf.memory().numTensors, before, 'no tensor left behind');
  await backendTf('cpu');
});

test('webgpu: the kernels equal the reference composites output by output (sum, stats; dx, dbias, dresidual, dgamma, dbeta), dropped entries included', { skip }, async () => {
  const tf = await backendTf('webgpu');
  const before = tf.memory().numTensors;
  const rng = new Rng(17);
  for (const shape of [[7, 33], [130, 33], [70_000, 3]] as [number, number][]) {
    const opts: ResidualLayerNormOptions = { eps: EPS, rate: 0.1, seed: `9/kernel.${shape[0]}` };
    const attrs = residualLayerNormAttrs(opts) as unknown as NamedAttrMap;
    const [x, bias, residual, gamma, beta] = inputs(tf, shape) as [Tensor2D, Tensor1D, Tensor2D, Tensor1D, Tensor1D];
    const got = tf.engine().runKernel(RESIDUAL_LAYER_NORM_KERNEL, { x, bias, residual, gamma, beta }, attrs) as Tensor[];
    const want = residualLayerNormReference(tf, x, bias, residual, gamma, beta, opts);
    const names = ['y', 'sum', 'stats'];
    for (let i = 0; i < 3; i++) {
      const d = relativeDiff((await got[i].data()) as Float32Array, (await want[i].data()) as Float32Array);
      // The sum is the same float32 operations in the same order: equal.
      assert.ok(i === 1 ? d === 0 : d <= TOL, `[${shape}] forward ${names[i]} differs by ${d} relative`);
    }
    const dy = random(tf, rng, shape) as Tensor2D;
    const grads = tf.engine().runKernel(RESIDUAL_LAYER_NORM_GRAD_KERNEL, { dy, sum: got[1], stats: got[2], gamma }, attrs) as Tensor[];
    const wantGrads = residualLayerNormGradReference(tf, dy, got[1] as Tensor2D, got[2] as Tensor2D, gamma, opts);
    const gradNames = ['dx', 'dbias', 'dresidual', 'dgamma', 'dbeta'];
    for (let i = 0; i < 5; i++) {
      assert.deepEqual(grads[i].shape, wantGrads[i].shape, `[${shape}] ${gradNames[i]} shape`);
      const d = relativeDiff((await grads[i].data()) as Float32Array, (await wantGrads[i].data()) as Float32Array);
      assert.ok(d <= TOL, `[${shape}] ${gradNames[i]} differs by ${d} relative`);
    }
    // dx is 0 exactly where the mask drops the entry (ds is never exactly 0 here).
    const dx = (await grads[0].data()) as Float32Array;
    const mask = dropoutMask(dx.length, opts.rate, opts.seed!);
    let wrong = 0;
    for (let i = 0; i < dx.length; i++) if ((dx[i] === 0) !== (mask[i] === 0)) wrong++;
    assert.equal(wrong, 0, `[${shape}] dx's zeros are the mask's`);
    tf.dispose([x, bias, residual, gamma, beta, dy, ...got, ...want, ...grads, ...wantGrads]);
  }
  assert.equal(tf.memory().numTensors, before, 'no tensor left behind');
  await backendTf('cpu');
});

test('webgpu: linearWithSkip (the residual gradient added in the matMul kernel) equals x used twice, with and without bias + GELU', { skip }, async () => {
  const tf = await backendTf('webgpu');
  const caps = capabilitiesOf(tf, 'webgpu');
  assert.ok(caps.matMulAddend, 'webgpu adds a whole matrix inside its matMul kernel');
  const ops = makeOps(tf, caps);
  const rng = new Rng(23);
  for (const act of [undefined, 'gelu', 'gelu_new', 'relu'] as const) {
    for (const [N, I, O] of [[7, 33, 40], [130, 64, 192]]) {
      const xs = [random(tf, rng, [N, I]), random(tf, rng, [I, O], 0.3), random(tf, rng, [O]), random(tf, rng, [N, I])];
      // Both outputs used: the Linear's and the skip's (through a product with r, so its gradient is not all ones).
      const use = (y: Tensor, skipped: Tensor, r: Tensor) => tf.concat([tf.reshape(y, [-1]), tf.reshape(tf.mul(skipped, r), [-1])]);
      await assertSameOp(
        tf,
        `act ${act ?? 'none'} [${N}, ${I}] x [${I}, ${O}]`,
        (x, w, b, r) => {
          const [y, skipped] = ops.linearWithSkip(x as Tensor2D, w as Tensor2D, b as Tensor1D, act);
          return use(y, skipped, r);
        },
        (x, w, b, r) => use(ops.linear(x as Tensor2D, w as Tensor2D, b as Tensor1D, act), x, r),
        xs,
        [0, 1, 2],
        TOL,
      );
      tf.dispose(xs);
    }
  }
  await backendTf('cpu');
});
