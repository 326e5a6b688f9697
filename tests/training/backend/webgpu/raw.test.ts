// The raw WebGPU seam (training/backend/webgpu/raw.ts) on the webgpu backend (llvmpipe in CI):
//   - an in-place kernel on a tensor's buffer, encoded between TF.js ops, sees the op before it and
//     is seen by the op after it (same command stream, no explicit sync), on a size that does not
//     divide the workgroup, with a uniform; reading the tensor through TF.js gives the new values
//     even when TF.js had cached the old ones on the CPU;
//   - copies into a storage buffer at offsets, read back;
//   - pipelines and bind groups are cached by key, a bind group is remade when a buffer changes;
//   - a WGSL module that starts with `enable f16;` compiles where the device has shader-f16;
//   - on another backend the seam refuses with a message naming the backend.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { releaseWebGpu, selectBackend, type Tf } from '../../../../training/backend.ts';
import { rawWebGpu } from '../../../../training/backend/webgpu/raw.ts';
import { webgpuSkip } from '../../webgpu-gate.ts';

const skip = await webgpuSkip('raw WebGPU seam');
let tf: Tf;

before(async () => {
  if (skip !== false) return;
  tf = (await selectBackend('webgpu', { log: () => {} })).tf;
});

after(async () => {
  if (skip !== false) return;
  releaseWebGpu(tf);
  await selectBackend('cpu', { log: () => {} });
});

// y[i] = y[i] * a + b over n entries, in place.
const AXPB = `
struct U { n : u32, a : f32, b : f32 }
@group(0) @binding(0) var<storage, read_write> y : array<f32>;
@group(0) @binding(1) var<uniform> u : U;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id : vec3<u32>) {
  if (id.x < u.n) { y[id.x] = y[id.x] * u.a + u.b; }
}`;

function axpbInPlace(t: import('@tensorflow/tfjs').Tensor, a: number, b: number): void {
  const raw = rawWebGpu(tf);
  const n = t.size;
  const u = new ArrayBuffer(12);
  new Uint32Array(u, 0, 1)[0] = n;
  new Float32Array(u, 4, 2).set([a, b]);
  const pipeline = raw.pipeline('test-axpb', AXPB);
  const group = raw.bindGroup('test-axpb', pipeline, [raw.bufferOf(t), raw.uniform(u)]);
  raw.dispatch(pipeline, group, [Math.ceil(n / 64)]);
  raw.written(t);
}

test('an in-place raw kernel runs in order with TF.js ops before and after it', { skip }, async () => {
  const n = 1000; // not a multiple of 64
  const x = tf.range(0, n, 1, 'float32');
  const y = tf.mul(x, 2); // TF.js op before: y = 2i
  axpbInPlace(y, 10, 1); // y = 20i + 1
  const z = tf.add(y, 0.5); // TF.js op after: 20i + 1.5
  const [yv, zv] = await Promise.all([y.data(), z.data()]);
  for (let i = 0; i < n; i++) {
    assert.equal(yv[i], 20 * i + 1, `y[${i}]`);
    assert.equal(zv[i], 20 * i + 1.5, `z[${i}]`);
  }
  // y's values are now cached on the CPU; a second in-place write must show in the next read.
  axpbInPlace(y, 1, -1);
  const again = await y.data();
  for (let i = 0; i < n; i++) assert.equal(again[i], 20 * i, `y[${i}] after the second write`);
  tf.dispose([x, y, z]);
});

test('copies into a storage buffer at offsets, read back in order', { skip }, async () => {
  const raw = rawWebGpu(tf);
  const a = tf.tensor1d([1, 2, 3]);
  const b = tf.tensor1d([4, 5]);
  const flat = raw.createStorage(8 * 4);
  raw.copy(raw.bufferOf(a), 0, flat, 1 * 4, 3 * 4);
  raw.copy(raw.bufferOf(b), 0, flat, 5 * 4, 2 * 4);
  const copiesBefore = raw.counts.copies;
  const data = new Float32Array(await raw.read(flat));
  assert.deepEqual(Array.from(data), [0, 1, 2, 3, 0, 4, 5, 0]);
  assert.equal(raw.counts.copies, copiesBefore);
  raw.releaseStorage(flat);
  tf.dispose([a, b]);
});

test('pipelines and bind groups are cached by key; a changed buffer makes a new bind group', { skip }, () => {
  const raw = rawWebGpu(tf);
  assert.equal(rawWebGpu(tf), raw, 'one seam per backend');
  const p1 = raw.pipeline('test-axpb', AXPB);
  assert.equal(raw.pipeline('test-axpb', AXPB), p1);
  const s1 = raw.createStorage(64);
  const s2 = raw.createStorage(64);
  const u = raw.uniform(new ArrayBuffer(16));
  const g1 = raw.bindGroup('k', p1, [s1, u]);
  assert.equal(raw.bindGroup('k', p1, [s1, u]), g1);
  assert.notEqual(raw.bindGroup('k', p1, [s2, u]), g1);
  raw.releaseStorage(s1);
  raw.releaseStorage(s2);
});

test('a module that starts with `enable f16;` compiles where the device has shader-f16', { skip }, async (t) => {
  const raw = rawWebGpu(tf);
  if (!raw.hasFeature('shader-f16')) {
    t.skip('this device was created without shader-f16');
    return;
  }
  const code = `enable f16;
@group(0) @binding(0) var<storage, read_write> y : array<f32>;
@compute @workgroup_size(1) fn main() { let h : f16 = f16(y[0]); y[0] = f32(h * 2.0h); }`;
  const x = tf.tensor1d([1.5]);
  const y = tf.mul(x, 1);
  const p = raw.pipeline('test-f16', code);
  raw.dispatch(p, raw.bindGroup('test-f16', p, [raw.bufferOf(y)]), [1]);
  raw.written(y);
  assert.deepEqual(Array.from(await y.data()), [3]);
  tf.dispose([x, y]);
});

test('on another backend the seam refuses, naming it', async () => {
  const cpu = (await selectBackend('cpu', { log: () => {} })).tf;
  try {
    assert.throws(() => rawWebGpu(cpu), /needs the webgpu backend; the active one is cpu/);
  } finally {
    if (skip === false) tf = (await selectBackend('webgpu', { log: () => {} })).tf;
  }
});
