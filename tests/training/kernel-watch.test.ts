// Tests for training/kernel-watch.ts (kernel calls, WebGPU dispatches, passes, submissions and GPU
// time of compute passes):
//   - on the cpu backend: N kernel calls counted as N, no dispatches, no GPU timer;
//   - on webgpu: N element-wise kernels are N kernels and N dispatches; a pipeline of the test's
//     own, encoded on the backend's device outside TF.js, counts its dispatches and its pass, and
//     its GPU time is attributed to its label; GPU time is positive, not quantized (the loader
//     turns Dawn's quantization off) and no more than the wall time around the work;
//   - stop() puts back every wrapped method.
// The webgpu part skips without an adapter unless MLM_REQUIRE_WEBGPU=1 (then it fails), as
// tests/training/webgpu.test.ts does; CI runs it on Mesa's llvmpipe, which has timestamp-query.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { probeWebGpu, releaseWebGpu, selectBackend } from '../../training/backend.ts';
import { watchKernels } from '../../training/kernel-watch.ts';

const own = (o: object, k: string) => Object.prototype.hasOwnProperty.call(o, k);

test('kernel-watch on cpu: kernel calls counted, no dispatches, no GPU timer', async () => {
  const { tf } = await selectBackend('cpu', { log: () => {} });
  const a = tf.ones([8]);
  const w = watchKernels(tf);
  const before = w.counts();
  const outs = [];
  for (let i = 0; i < 5; i++) outs.push(tf.add(a, a));
  const after = w.counts();
  assert.equal(after.kernels - before.kernels, 5);
  assert.deepEqual([after.dispatches, after.passes, after.submits], [null, null, null]);
  assert.match(w.gpuTimer, /^none: /);
  assert.equal(await w.takeGpuTime(), null);
  w.stop();
  assert.equal(own(tf.engine(), 'runKernelFunc'), false, 'runKernelFunc put back');
  tf.dispose([a, ...outs]);
});

const probe = await probeWebGpu();
const required = process.env.MLM_REQUIRE_WEBGPU === '1';

test('kernel-watch on webgpu: dispatches of TF.js and of a pipeline of its own, GPU time', { skip: !probe.ok && !required ? `no WebGPU adapter: ${probe.reason}` : false }, async (t) => {
  assert.ok(probe.ok, `MLM_REQUIRE_WEBGPU=1 and no WebGPU adapter: ${probe.reason}`);
  const { tf } = await selectBackend('webgpu', { log: () => {} });
  try {
    const backend = tf.backend() as unknown as { device: GPUDevice; queue: GPUQueue };
    const device = backend.device;
    const x = tf.randomUniform([64, 64]);
    await x.data();
    const w = watchKernels(tf, { attribute: true });
    assert.equal(w.gpuTimer === 'timestamp-query', device.features.has('timestamp-query'), w.gpuTimer);
    await w.takeGpuTime();

    // TF.js: 6 element-wise kernels, one dispatch each.
    const c0 = w.counts();
    let y = x;
    const made = [];
    for (let i = 0; i < 6; i++) made.push((y = tf.add(y, x)));
    const c1 = w.counts();
    assert.equal(c1.kernels - c0.kernels, 6);
    assert.equal(c1.dispatches! - c0.dispatches!, 6);

    // A pipeline of our own, on the backend's device, 3 dispatches in one pass of one encoder.
    const module = device.createShaderModule({
      code: '@group(0) @binding(0) var<storage, read_write> b: array<f32>;\n' +
        '@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {\n' +
        '  var v = b[g.x]; for (var i = 0; i < 64; i++) { v = v * 0.999 + 1.0; } b[g.x] = v; }',
    });
    const pipeline = device.createComputePipeline({ label: 'test-own-pipeline', layout: 'auto', compute: { module, entryPoint: 'main' } });
    const buffer = device.createBuffer({ size: 4 * 64 * 256, usage: GPUBufferUsage.STORAGE });
    const bindGroup = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer } }] });
    const t0 = performance.now();
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    for (let i = 0; i < 3; i++) pass.dispatchWorkgroups(256);
    pass.end();
    backend.queue.submit([encoder.finish()]);
    const c2 = w.counts();
    assert.equal(c2.dispatches! - c1.dispatches!, 3);
    assert.equal(c2.passes! - c1.passes!, 1);
    assert.equal(c2.submits! - c1.submits!, 1);

    const gpu = await w.takeGpuTime();
    const wall = performance.now() - t0;
    if (w.gpuTimer === 'timestamp-query') {
      assert.ok(gpu !== null);
      assert.equal(gpu.untimed, 0);
      assert.ok(gpu.passes >= 2, `${gpu.passes} passes timed`);
      assert.equal(gpu.quantized, false, 'timestamps quantized: the loader should disable timestamp_quantization');
      const own3 = gpu.byPipeline!.get('test-own-pipeline');
      assert.ok(own3 !== undefined && own3.dispatches === 3 && own3.ms > 0, JSON.stringify(own3));
      assert.equal(gpu.byKernel!.get('Add')?.dispatches, 6);
      assert.equal(gpu.byKernel!.get('(no kernel)')?.dispatches, 3);
      assert.ok(own3.ms <= wall, `GPU time ${own3.ms} ms of the own pipeline within the ${wall} ms around it`);
    } else {
      assert.equal(gpu, null);
      t.diagnostic(`GPU time not tested: ${w.gpuTimer}`);
    }
    buffer.destroy();
    tf.dispose(made);
    x.dispose();
    w.stop();
    for (const [o, k] of [[tf.engine(), 'runKernelFunc'], [device, 'createCommandEncoder'], [backend.queue, 'submit']] as const) {
      assert.equal(own(o, k), false, `${k} put back`);
    }
  } finally {
    releaseWebGpu(tf);
  }
});
