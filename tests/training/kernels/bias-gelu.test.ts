// training/kernels/bias-gelu.ts: the reference gradient (biasGeluGradReference, the analytic
// derivative) against TF.js's own gradient of the plain composite on cpu, and the webgpu kernels
// (training/backend/webgpu/bias-gelu.ts) against the reference composites: values, and the
// gradients of x and b through tf.grads, for the exact and the tanh GELU, on shapes that do not
// divide the workgroup sizes (1, 7, 129, 1,100 rows; 33 and 768 columns). Tolerance 1e-5
// relative to the largest magnitude of the reference.
//
// And the accuracy of the kernel's exact GELU (WGSL has no erf; the kernel uses an erfc fit)
// against GELU in float64 over [-10, 10]: the largest absolute error, and the largest error
// relative to |GELU(z)| itself (which tends to 0 for negative z), beside the same figures for the
// reference composite (TF.js's erf).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Tensor, Tensor1D, Tensor2D } from '@tensorflow/tfjs';
import { Rng } from '../../../common/rng.ts';
import { capabilitiesOf, releaseWebGpu, type Tf } from '../../../training/backend.ts';
import { BIAS_GELU_GRAD_KERNEL, BIAS_GELU_KERNEL, biasGelu, biasGeluGradReference, biasGeluReference } from '../../../training/kernels/bias-gelu.ts';
import { assertForwardLeavesOne } from './fused-helpers.ts';
import { assertSameOp, backendTf, random, relativeDiff, webgpuSkip } from './kernel-helpers.ts';

const skip = await webgpuSkip();
const TOL = 1e-5;
const SHAPES: [number, number][] = [[1, 33], [7, 33], [129, 768], [1100, 33]];

/** erf in float64: its Maclaurin series below 3, the continued fraction of erfc above (both to ~1e-15). */
function erf64(z: number): number {
  const a = Math.abs(z);
  let r: number;
  if (a < 3) {
    let term = a;
    let sum = a;
    for (let n = 1; n < 200 && Math.abs(term) > 1e-18 * Math.abs(sum); n++) {
      term *= (-a * a) / n;
      sum += term / (2 * n + 1);
    }
    r = (2 / Math.sqrt(Math.PI)) * sum;
  } else {
    // erfc(a) = exp(-a^2) / sqrt(pi) * 1 / (a + (1/2) / (a + 1 / (a + (3/2) / (a + ...)))).
    let f = a;
    for (let k = 200; k >= 1; k--) f = a + k / 2 / f;
    r = 1 - Math.exp(-a * a) / Math.sqrt(Math.PI) / f;
  }
  return z < 0 ? -r : r;
}

function gelu64(z: number): number {
  // For z < 0 through erfc (1 + erf(z / sqrt 2) = erfc(|z| / sqrt 2)) without cancellation.
  const a = Math.abs(z) * Math.SQRT1_2;
  let erfc: number;
  if (a < 3) erfc = 1 - erf64(a);
  else {
    let f = a;
    for (let k = 200; k >= 1; k--) f = a + k / 2 / f;
    erfc = Math.exp(-a * a) / Math.sqrt(Math.PI) / f;
  }
  return z < 0 ? 0.5 * z * erfc : 0.5 * z * (2 - erfc);
}

function inputs(tf: Tf, [N, C]: [number, number]): [Tensor2D, Tensor1D] {
  const rng = new Rng(N * 1000 + C);
  return [random(tf, rng, [N, C], 4) as Tensor2D, random(tf, rng, [C], 1) as Tensor1D];
}

test('cpu: the reference gradient of bias + GELU equals TF.js gradient of the plain composite (exact and tanh)', async () => {
  const tf = await backendTf('cpu');
  for (const tanh of [false, true]) {
    for (const shape of SHAPES) {
      const [x, b] = inputs(tf, shape);
      const dy = random(tf, new Rng(3), shape) as Tensor2D;
      const [dx, db] = biasGeluGradReference(tf, dy, x, b, tanh);
      const [wantDx, wantDb] = tf.grads((p: Tensor, q: Tensor) => tf.sum(tf.mul(biasGeluReference(tf, p as Tensor2D, q as Tensor1D, tanh), dy)))([x, b]);
      const d = [relativeDiff(await dx.data(), await wantDx.data()), relativeDiff(await db.data(), await wantDb.data())];
      assert.ok(d[0] <= TOL && d[1] <= TOL, `${tanh ? 'tanh' : 'erf'} [${shape}]: dx ${d[0]}, db ${d[1]}`);
      tf.dispose([x, b, dy, dx, db, wantDx, wantDb]);
    }
  }
});

test('webgpu: the bias + GELU kernels equal the reference composites (values and gradients, exact and tanh)', { skip }, async (t) => {
  const tf = await backendTf('webgpu');
  try {
    assert.ok(capabilitiesOf(tf, 'webgpu').kernels.has(BIAS_GELU_KERNEL), 'registered when webgpu loads');
    assert.ok(tf.getKernel(BIAS_GELU_GRAD_KERNEL, 'webgpu') !== undefined);
    for (const tanh of [false, true]) {
      for (const shape of SHAPES) {
        const [x, b] = inputs(tf, shape);
        const { got, want } = await assertSameOp(
          tf,
          `${tanh ? 'tanh' : 'erf'} [${shape}]`,
          (p, q) => biasGelu(tf, p as Tensor2D, q as Tensor1D, tanh),
          (p, q) => biasGeluReference(tf, p as Tensor2D, q as Tensor1D, tanh),
          [x, b],
          [0, 1],
          TOL,
        );
        t.diagnostic(`${tanh ? 'tanh' : 'erf'} [${shape}]: values differ by ${relativeDiff(got, want).toExponential(1)} relative`);
        assertForwardLeavesOne(tf, () => biasGelu(tf, x, b, tanh));
        tf.dispose([x, b]);
      }
    }
  } finally {
    releaseWebGpu(tf);
  }
});

test("webgpu: the kernel's exact GELU against float64 over [-10, 10]", { skip }, async (t) => {
  const n = 20001;
  const z = Float64Array.from({ length: n }, (_, i) => -10 + (20 * i) / (n - 1));
  const exact = Array.from(z, gelu64);
  // Sanity of the float64 oracle: GELU(1) = 0.8413447460685429 (Phi(1) = 0.8413447460685429).
  assert.ok(Math.abs(gelu64(1) - 0.8413447460685429) < 1e-15);
  const errors = async (tf: Tf, f: (x: Tensor2D, b: Tensor1D) => Tensor) => {
    const x = tf.tensor2d(Float32Array.from(z), [1, n]);
    const b = tf.zeros([n]) as Tensor1D;
    const y = f(x, b);
    const got = await y.data();
    tf.dispose([x, b, y]);
    let abs = 0;
    let rel = 0;
    for (let i = 0; i < n; i++) {
      // The input itself is float32: compare against GELU at the float32 value.
      const want = gelu64(Math.fround(z[i]));
      abs = Math.max(abs, Math.abs(got[i] - want));
      if (Math.abs(want) > 1e-30) rel = Math.max(rel, Math.abs(got[i] - want) / Math.abs(want));
    }
    return { abs, rel };
  };
  assert.equal(exact.length, n);
  const tf = await backendTf('webgpu');
  try {
    const kernel = await errors(tf, (x, b) => biasGelu(tf, x, b, false));
    const reference = await errors(tf, (x, b) => biasGeluReference(tf, x, b, false));
    t.diagnostic(`exact GELU over [-10, 10], ${n} points: kernel max abs error ${kernel.abs.toExponential(2)}, max relative ${kernel.rel.toExponential(2)}; reference (tf.erf) max abs ${reference.abs.toExponential(2)}, max relative ${reference.rel.toExponential(2)}`);
    console.log(`bias-gelu: kernel abs ${kernel.abs.toExponential(2)} rel ${kernel.rel.toExponential(2)}; tf.erf reference abs ${reference.abs.toExponential(2)} rel ${reference.rel.toExponential(2)}`);
    // float32 rounding of GELU near 10 is 4.8e-7 (half an ulp); the fit adds ~1e-7 relative.
    assert.ok(kernel.abs <= 2e-6, `max abs error ${kernel.abs}`);
    assert.ok(kernel.rel <= 2e-5, `max relative error ${kernel.rel}`);
  } finally {
    releaseWebGpu(tf);
  }
});
