// The fused bias + dropout + residual (training/kernels/bias-dropout-residual.ts) against its
// reference composite: on webgpu the kernels (values; gradients of x, bias and residual), on cpu
// the op's own gradient; rows 1, 7 and 65, widths 1, 33 and 128 (entries past one workgroup and
// not a multiple of it), dropout 0 and 0.1 with the same dropped entries as the reference's mask.
// Tolerance 1e-5 relative (the bias gradient sums rows in another order). The gradient-with-sums
// kernel: dx equal (up to the sign of zero) and dbias within the tolerance against its composite, 130 rows included.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { NamedAttrMap, Tensor, Tensor1D, Tensor2D } from '@tensorflow/tfjs';
import { Rng } from '../../../common/rng.ts';
import type { Tf } from '../../../training/backend.ts';
import {
  BIAS_DROPOUT_RESIDUAL_GRAD_SUM_KERNEL,
  biasDropoutResidual,
  biasDropoutResidualGradSumReference,
  biasDropoutResidualReference,
  type DropoutOptions,
} from '../../../training/kernels/bias-dropout-residual.ts';
import { kernelDropout } from '../../../training/kernels/kernel-dropout.ts';
import { dropoutMask } from '../../../training/kernels/dropout-mask.ts';
import { assertSameOp, backendTf, random, relativeDiff, webgpuSkip, zeros } from './kernel-helpers.ts';

const TOL = 1e-5;

async function check(tf: Tf, fused: boolean, gradSums = false): Promise<void> {
  const rng = new Rng(3);
  // 130 rows: the grad-sum kernel's column sums take a second stage past 64 rows.
  for (const [N, H] of gradSums ? [[1, 1], [7, 33], [65, 128], [130, 33]] : [[1, 1], [7, 33], [65, 128]]) {
    for (const rate of [0, 0.1]) {
      for (const zeroResidual of [true, false]) {
        const opts: DropoutOptions = { rate, seed: rate > 0 ? `7/layer.0.output.${N}` : null };
        const x = random(tf, rng, [N, H], 2);
        const b = random(tf, rng, [H]);
        // With a zero residual the exact zeros of y are the dropped entries (x + b is never 0 here).
        const r = zeroResidual ? tf.zeros([N, H]) : random(tf, rng, [N, H], 3);
        const label = `${fused ? (gradSums ? 'kernel with grad sums' : 'kernel') : 'op'} N=${N} H=${H} rate=${rate}${zeroResidual ? ' zero residual' : ''}`;
        const { got, want } = await assertSameOp(
          tf,
          label,
          (x_, b_, r_) => biasDropoutResidual(tf, x_ as Tensor2D, b_ as Tensor1D, r_ as Tensor2D, opts, fused, undefined, gradSums),
          (x_, b_, r_) => biasDropoutResidualReference(tf, x_ as Tensor2D, b_ as Tensor1D, r_ as Tensor2D, opts),
          [x, b, r],
          [0, 1, 2],
          TOL,
        );
        if (zeroResidual) {
          assert.deepEqual(zeros(got), zeros(want), `${label}: dropped entries`);
          if (rate > 0) assert.deepEqual(zeros(got), zeros(dropoutMask(N * H, rate, opts.seed!)), `${label}: dropped entries are dropoutMask's`);
        }
        tf.dispose([x, b, r] as Tensor[]);
      }
    }
  }
}

test('cpu: the bias + dropout + residual op and its gradient equal the plain composite', async () => {
  const tf = await backendTf('cpu');
  const before = tf.memory().numTensors;
  await check(tf, false);
  assert.equal(tf.memory().numTensors, before, 'no tensor left behind');
});

test('webgpu: the bias + dropout + residual kernels equal the plain composite', { skip: await webgpuSkip() }, async () => {
  const tf = await backendTf('webgpu');
  const before = tf.memory().numTensors;
  await check(tf, true);
  assert.equal(tf.memory().numTensors, before, 'no tensor left behind');
  await backendTf('cpu');
});

test('webgpu: the gradient-with-sums kernel equals its composite, and the op with it the plain composite', { skip: await webgpuSkip() }, async () => {
  const tf = await backendTf('webgpu');
  const before = tf.memory().numTensors;
  await check(tf, true, true);
  const rng = new Rng(9);
  for (const [N, H, rate] of [[1, 1, 0.1], [130, 33, 0.1], [65, 7, 0]] as const) {
    const opts: DropoutOptions = { rate, seed: rate > 0 ? `3/grad.${N}` : null };
    const dy = random(tf, rng, [N, H]) as Tensor2D;
    const got = tf.engine().runKernel(BIAS_DROPOUT_RESIDUAL_GRAD_SUM_KERNEL, { dy }, kernelDropout(opts) as unknown as NamedAttrMap) as Tensor[];
    const want = biasDropoutResidualGradSumReference(tf, dy, opts);
    // Equal values (a dropped entry is +0 from the kernel, -0 from the composite's product for dy < 0).
    assert.equal(relativeDiff((await got[0].data()) as Float32Array, (await want[0].data()) as Float32Array), 0, `dx, N=${N} H=${H} rate=${rate}`);
    assert.ok(relativeDiff((await got[1].data()) as Float32Array, (await want[1].data()) as Float32Array) <= TOL, `dbias, N=${N} H=${H} rate=${rate}`);
    tf.dispose([dy, ...got, ...want]);
  }
  assert.equal(tf.memory().numTensors, before, 'no tensor left behind');
  await backendTf('cpu');
});
