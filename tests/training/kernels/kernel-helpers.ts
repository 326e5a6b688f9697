// Shared by the fused-kernel tests (tests/training/kernels): whether the webgpu side runs (an
// adapter, or MLM_REQUIRE_WEBGPU=1 to fail without one, as tests/training/webgpu.test.ts does),
// seeded random tensors, and the comparison of an op with its reference: values and the gradients
// of sum(output * w) for a random w, within a tolerance relative to the reference's largest
// magnitude, with the tensor count checked around each gradient call.
import assert from 'node:assert/strict';
import type { Tensor } from '@tensorflow/tfjs';
import { Rng } from '../../../common/rng.ts';
import { probeWebGpu, selectBackend, type Tf } from '../../../training/backend.ts';

const quiet = { log: (_line: string) => {} };

/** The `skip` option of webgpu tests: false to run, a reason to skip; throws when required and absent. */
export async function webgpuSkip(): Promise<false | string> {
  const probe = await probeWebGpu();
  if (probe.ok) return false;
  if ((process.env.MLM_REQUIRE_WEBGPU ?? '').trim() === '1') {
    throw new Error(`no WebGPU adapter, and MLM_REQUIRE_WEBGPU=1 requires one: ${probe.reason}`);
  }
  return `no WebGPU adapter: ${probe.reason}`;
}

export async function backendTf(name: 'cpu' | 'wasm' | 'webgpu'): Promise<Tf> {
  return (await selectBackend(name, quiet)).tf;
}

/** A tensor of uniform values in [-scale, scale), seeded. */
export function random(tf: Tf, rng: Rng, shape: number[], scale = 1): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return tf.tensor(Float32Array.from({ length: n }, () => (rng.next() * 2 - 1) * scale), shape, 'float32');
}

/** max_i |a_i - b_i| / max(1e-30, max_i |b_i|). */
export function relativeDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let d = 0;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return d / Math.max(m, 1e-30);
}

/**
 * Asserts that `op` and `ref` (functions of the same inputs) agree: values, and the gradients
 * with respect to the inputs numbered in `wrt`, within `tol` relative. Returns both outputs' values.
 */
export async function assertSameOp(
  tf: Tf,
  label: string,
  op: (...xs: Tensor[]) => Tensor,
  ref: (...xs: Tensor[]) => Tensor,
  inputs: Tensor[],
  wrt: number[],
  tol: number,
): Promise<{ got: Float32Array; want: Float32Array }> {
  const a = op(...inputs);
  const b = ref(...inputs);
  assert.deepEqual(a.shape, b.shape, `${label}: shapes`);
  const got = (await a.data()) as Float32Array;
  const want = (await b.data()) as Float32Array;
  const dv = relativeDiff(got, want);
  assert.ok(dv <= tol, `${label}: values differ by ${dv} relative (tolerance ${tol})`);
  const w = random(tf, new Rng(99), b.shape);
  const loss = (f: (...xs: Tensor[]) => Tensor) => (...xs: Tensor[]) => {
    const all = inputs.slice();
    wrt.forEach((k, i) => (all[k] = xs[i]));
    return tf.sum(tf.mul(f(...all), w));
  };
  const before = tf.memory().numTensors;
  const ga = tf.grads(loss(op))(wrt.map((k) => inputs[k]));
  assert.equal(tf.memory().numTensors, before + wrt.length, `${label}: a gradient call leaves only its results`);
  const gb = tf.grads(loss(ref))(wrt.map((k) => inputs[k]));
  for (let i = 0; i < wrt.length; i++) {
    const dg = relativeDiff(await ga[i].data(), await gb[i].data());
    assert.ok(dg <= tol, `${label}: gradient of input ${wrt[i]} differs by ${dg} relative (tolerance ${tol})`);
  }
  tf.dispose([a, b, w, ...ga, ...gb]);
  return { got, want };
}

/** Indices of the exact zeros of `v`. */
export function zeros(v: ArrayLike<number>): number[] {
  const out: number[] = [];
  for (let i = 0; i < v.length; i++) if (v[i] === 0) out.push(i);
  return out;
}
