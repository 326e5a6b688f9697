// Tests for training/backend.ts: name resolution, selection and its log line, the shared-core
// check, the wasm UnsortedSegmentSum kernel (against the cpu kernel), the embedding gradient on
// wasm and webgpu against cpu, and switching backends inside one process. The webgpu tests run
// when a WebGPU adapter is present (software adapters included) and are skipped with the reason
// otherwise, unless MLM_REQUIRE_WEBGPU=1 (CI), which makes them run and fail with that reason.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Tensor, Tensor1D } from '@tensorflow/tfjs';
import { InputError } from '../../common/errors.ts';
import { Rng } from '../../common/rng.ts';
import {
  AUTO_ORDER,
  backendSelfCheck,
  probeWebGpu,
  registerWasmUnsortedSegmentSum,
  releaseWebGpu,
  resolveBackendName,
  selectBackend,
  type Tf,
} from '../../training/backend.ts';
import { assertSharedCore, ourCorePath, resolveInstalled } from '../../training/backend/common.ts';
import { wasmThreads } from '../../training/backend/wasm.ts';
import { customOp } from '../../training/kernels/custom-op.ts';
import { SMALL_SLICE_MACS } from '../../training/backend/batch-matmul-wasm.ts';

const quiet = { log: (_line: string) => {} };

function floats(rng: Rng, n: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (rng.next() * 2 - 1) * scale;
  return out;
}

function ints(rng: Rng, n: number, below: number): Int32Array {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.int(below);
  return out;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

async function use(tf: Tf, name: string): Promise<void> {
  assert.equal(await tf.setBackend(name), true, `setBackend(${name})`);
}

// The embedding path of the model: word embeddings E [V, H] looked up by ids [B, T], then a dense
// layer and the tied decoder (logits = h E^T), so E's gradient gets both a gather and a matMul term.
// Returns [loss, dE] read asynchronously (webgpu in Node cannot read synchronously).
async function embeddingLossAndGrad(
  tf: Tf,
  shapes: { V: number; H: number; B: number; T: number },
  data: { E: Float32Array; ids: Int32Array; W: Float32Array },
): Promise<{ loss: number; grad: Float32Array }> {
  const { V, H, B, T } = shapes;
  const before = tf.memory().numTensors;
  const [loss, grad] = tf.tidy(() => {
    const E = tf.tensor2d(data.E, [V, H]);
    const ids = tf.tensor2d(data.ids, [B, T], 'int32');
    const W = tf.tensor2d(data.W, [H, H]);
    const f = (e: Tensor) => {
      const h = tf.gather(e, ids).reshape([B * T, H]); // [B*T, H]
      const z = tf.tanh(tf.matMul(h, W)); // [B*T, H]
      const logits = tf.matMul(z, e, false, true); // [B*T, V]
      return tf.mean(tf.square(logits)).add(tf.sum(h.mul(z)));
    };
    const { value, grad } = tf.valueAndGrad(f)(E);
    return [value, grad];
  });
  const [l, g] = await Promise.all([loss.data(), grad.data()]);
  tf.dispose([loss, grad]);
  assert.equal(tf.memory().numTensors, before, 'no tensors leaked');
  return { loss: l[0]!, grad: g as Float32Array };
}

function embeddingData(seed: number, V: number, H: number, B: number, T: number) {
  const rng = new Rng(seed);
  // ids drawn from a fifth of the vocabulary, so many rows are looked up several times.
  return { E: floats(rng, V * H, 0.1), ids: ints(rng, B * T, Math.floor(V / 5)), W: floats(rng, H * H, 0.2) };
}

test('resolveBackendName: the flag wins, MLM_BACKEND fills in auto, unknown names are InputErrors', () => {
  assert.equal(resolveBackendName(undefined, {}), 'auto');
  assert.equal(resolveBackendName('auto', {}), 'auto');
  assert.equal(resolveBackendName('wasm', { MLM_BACKEND: 'cpu' }), 'wasm');
  assert.equal(resolveBackendName('auto', { MLM_BACKEND: 'cpu' }), 'cpu');
  assert.equal(resolveBackendName(undefined, { MLM_BACKEND: ' webgpu ' }), 'webgpu');
  assert.equal(resolveBackendName(undefined, { MLM_BACKEND: '' }), 'auto');
  assert.throws(() => resolveBackendName('gpu', {}), (e: unknown) => e instanceof InputError && /--backend/.test(e.message));
  assert.throws(
    () => resolveBackendName('auto', { MLM_BACKEND: 'cuda' }),
    (e: unknown) => e instanceof InputError && /MLM_BACKEND/.test(e.message) && /tensorflow-gpu/.test(e.message),
  );
});

test('importing training/backend.ts loads no TF.js and registers nothing', () => {
  const modulePath = fileURLToPath(new URL('../../training/backend.ts', import.meta.url));
  const script =
    `await import(${JSON.stringify(modulePath)});` +
    `process.stdout.write(String(globalThis._tfengine === undefined));`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'true');
});

test('backend packages share our one @tensorflow/tfjs-core', () => {
  assert.match(ourCorePath(), /@tensorflow[\\/]tfjs-core[\\/]/);
  for (const pkg of ['@tensorflow/tfjs-backend-wasm', '@tensorflow/tfjs-backend-webgpu']) {
    const main = resolveInstalled(pkg);
    assert.ok(main !== null, `${pkg} is installed`);
    assert.doesNotThrow(() => assertSharedCore(pkg, main));
  }
  assert.equal(resolveInstalled('mlmkit-no-such-package'), null);
});

test('a package with its own copy of tfjs-core is refused before import', () => {
  // A fake install: /tmp/x/node_modules/fake-backend with a nested @tensorflow/tfjs-core.
  const root = mkdtempSync(path.join(os.tmpdir(), 'mlmkit-core-'));
  try {
    const pkgDir = path.join(root, 'node_modules', 'fake-backend');
    const coreDir = path.join(pkgDir, 'node_modules', '@tensorflow', 'tfjs-core');
    mkdirSync(coreDir, { recursive: true });
    writeFileSync(path.join(pkgDir, 'index.js'), '');
    writeFileSync(path.join(coreDir, 'package.json'), JSON.stringify({ name: '@tensorflow/tfjs-core', main: 'core.js' }));
    writeFileSync(path.join(coreDir, 'core.js'), '');
    assert.throws(
      () => assertSharedCore('fake-backend', path.join(pkgDir, 'index.js')),
      (e: unknown) => e instanceof Error && /second copy of @tensorflow\/tfjs-core/.test(e.message),
    );
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('selectBackend(cpu) starts cpu, logs one line and leaks nothing', async () => {
  const lines: string[] = [];
  const info = await selectBackend('cpu', { log: (l) => lines.push(l) });
  assert.equal(info.name, 'cpu');
  assert.equal(info.tfBackend, 'cpu');
  assert.equal(info.tf.getBackend(), 'cpu');
  assert.equal(info.reason, 'requested');
  assert.deepEqual(lines, ['backend: cpu (requested) on CPU (pure JavaScript)']);
  const before = info.tf.memory().numTensors;
  await backendSelfCheck(info.tf);
  assert.equal(info.tf.memory().numTensors, before);
});

test('selectBackend(wasm) reports SIMD and its XNNPACK threads (one per CPU by default)', async () => {
  const info = await selectBackend('wasm', quiet);
  assert.equal(info.tfBackend, 'wasm');
  const n = wasmThreads(process.env);
  if (!process.env.MLM_WASM_THREADS) assert.equal(n, Math.min(8, os.availableParallelism()));
  assert.match(info.device, new RegExp(`^CPU \\(wasm, (SIMD|no SIMD), ${n} threads?; matmuls: .+\\)$`));
});

test('MLM_WASM_THREADS: a whole number from 1 to 8, else a clear error', () => {
  const cpus = os.availableParallelism();
  assert.equal(wasmThreads({ MLM_WASM_THREADS: '1' }), 1);
  assert.equal(wasmThreads({ MLM_WASM_THREADS: ' 3 ' }), Math.min(3, cpus), 'at most one per CPU');
  assert.equal(wasmThreads({ MLM_WASM_THREADS: '8' }), Math.min(8, cpus));
  assert.equal(wasmThreads({ MLM_WASM_THREADS: '' }), wasmThreads({}));
  for (const bad of ['0', '9', '1.5', 'two', '-1']) {
    assert.throws(() => wasmThreads({ MLM_WASM_THREADS: bad }), (e: unknown) => e instanceof InputError && /MLM_WASM_THREADS/.test(e.message), bad);
  }
});

test('a bad MLM_WASM_THREADS is an InputError under auto too (not a reason to skip wasm)', async () => {
  const saved = process.env.MLM_WASM_THREADS;
  process.env.MLM_WASM_THREADS = 'many';
  try {
    await assert.rejects(selectBackend('auto', quiet), (e: unknown) => e instanceof InputError && /MLM_WASM_THREADS must be a whole number from 1 to 8, got 'many'/.test(e.message));
  } finally {
    if (saved === undefined) delete process.env.MLM_WASM_THREADS;
    else process.env.MLM_WASM_THREADS = saved;
  }
});

test('a process on threaded wasm exits by itself, and MLM_WASM_THREADS=1 takes the one-thread build', () => {
  const modulePath = fileURLToPath(new URL('../../training/backend.ts', import.meta.url));
  const script =
    `const { selectBackend } = await import(${JSON.stringify(modulePath)});` +
    `const { tf, device } = await selectBackend('wasm', { log: () => {} });` +
    `const a = tf.tensor2d(Array.from({ length: 256 * 256 }, (_, i) => (i % 17) / 17 - 0.5), [256, 256]);` +
    `const s = tf.matMul(a, a).sum().dataSync()[0];` +
    `process.stdout.write(JSON.stringify({ device, s }));`;
  const run = (threads: string) => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      encoding: 'utf8', timeout: 60_000, env: { ...process.env, MLM_WASM_THREADS: threads },
    });
    assert.equal(r.signal, null, `the process did not exit by itself (threads ${threads})`);
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as { device: string; s: number };
  };
  const one = run('1');
  const two = run('2');
  const expected = wasmThreads({ MLM_WASM_THREADS: '2' }); // 1 on a one-CPU machine
  assert.match(one.device, /, 1 thread; matmuls: /);
  assert.match(two.device, new RegExp(`, ${expected} threads?; matmuls: `));
  assert.equal(two.s, one.s);
});

test('the self-check catches wasm as shipped (no UnsortedSegmentSum kernel)', async () => {
  const { tf } = await selectBackend('wasm', quiet);
  tf.unregisterKernel('UnsortedSegmentSum', 'wasm');
  try {
    await assert.rejects(backendSelfCheck(tf), /UnsortedSegmentSum/);
  } finally {
    registerWasmUnsortedSegmentSum(tf);
  }
  await backendSelfCheck(tf);
});

test('tensorflow backends: "not installed" is an InputError saying how to install', async (t) => {
  for (const [name, pkg] of [['tensorflow', '@tensorflow/tfjs-node'], ['tensorflow-gpu', '@tensorflow/tfjs-node-gpu']] as const) {
    if (resolveInstalled(pkg) !== null) {
      t.diagnostic(`${pkg} is installed here; its not-installed message is not tested`);
      continue;
    }
    await assert.rejects(selectBackend(name, quiet), (e: unknown) => {
      return e instanceof InputError && e.message.includes(`${pkg} not installed`) && e.message.includes(`npm install ${pkg}`);
    });
  }
});

test('auto takes the first backend that starts and says why each faster one was skipped', async () => {
  const lines: string[] = [];
  const info = await selectBackend('auto', { log: (l) => lines.push(l) });
  assert.equal(lines.length, 1);
  assert.ok(lines[0]!.startsWith(`backend: ${info.name} (`), lines[0]);
  const faster = AUTO_ORDER.slice(0, AUTO_ORDER.indexOf(info.name));
  for (const name of faster) assert.ok(info.reason.includes(`${name}: `), `${name} in "${info.reason}"`);
  const probe = await probeWebGpu();
  if (probe.adapterInfo?.software) {
    assert.notEqual(info.name, 'webgpu');
    assert.match(info.reason, /webgpu: no hardware adapter \(.+ is software\)/);
  }
});

test('wasm UnsortedSegmentSum matches the cpu kernel: 3-D x, repeats, negative and out-of-range ids', async () => {
  const { tf } = await selectBackend('cpu', quiet);
  const rng = new Rng(11);
  const x = floats(rng, 7 * 3 * 4);
  const ids = new Int32Array([2, -1, 0, 2, 5, 4, 2]); // -1 and 5 are dropped with 5 segments
  const cases: Array<{ numSegments: number; ids: Int32Array }> = [
    { numSegments: 5, ids },
    { numSegments: 3, ids }, // 4 and 5 out of range
    { numSegments: 1, ids: new Int32Array([0, 0, 0, 0, 0, 0, 0]) },
  ];
  const run = () =>
    cases.map(({ numSegments, ids }) =>
      tf.tidy(() => {
        const out = tf.unsortedSegmentSum(tf.tensor3d(x, [7, 3, 4]), tf.tensor1d(ids, 'int32'), numSegments);
        return { shape: out.shape, values: out.dataSync() as Float32Array };
      }),
    );
  await use(tf, 'cpu');
  const want = run();
  await selectBackend('wasm', quiet);
  const got = run();
  for (let i = 0; i < cases.length; i++) {
    assert.deepEqual(got[i]!.shape, want[i]!.shape);
    assert.ok(maxAbsDiff(got[i]!.values, want[i]!.values) < 1e-6, `case ${i}`);
  }
  // Dropped ids contribute nothing: segment 1 of the first case is zero (no id 1 appears).
  assert.ok(got[0]!.values.slice(12, 24).every((v) => v === 0));
});

test('wasm UnsortedSegmentSum: int32 and bool x, zero segments, 2-D ids refused', async () => {
  const { tf } = await selectBackend('cpu', quiet);
  const run = () =>
    tf.tidy(() => {
      const a = tf.unsortedSegmentSum(tf.tensor2d([1, 2, 3, 4, 5, 6, 7, 8], [4, 2], 'int32'), tf.tensor1d([1, 1, -3, 0], 'int32'), 2);
      const b = tf.unsortedSegmentSum(tf.tensor1d([true, false, true], 'bool'), tf.tensor1d([0, 0, 1], 'int32'), 2);
      return [a, b].map((t) => ({ dtype: t.dtype, shape: t.shape, values: Array.from(t.dataSync()) }));
    });
  await use(tf, 'cpu');
  const want = run();
  await selectBackend('wasm', quiet);
  const got = run();
  for (let i = 0; i < want.length; i++) {
    assert.deepEqual(got[i]!.shape, want[i]!.shape, `case ${i}`);
    assert.deepEqual(got[i]!.values, want[i]!.values, `case ${i}`);
    // Porting note in the kernel: integer sums stay int32 on wasm (the cpu kernel gives float32).
    assert.equal(got[i]!.dtype, 'int32');
  }
  const empty = tf.tidy(() => tf.unsortedSegmentSum(tf.ones([3, 2]), tf.tensor1d([0, 1, 2], 'int32'), 0));
  assert.deepEqual(empty.shape, [0, 2]);
  tf.dispose(empty);
  assert.throws(
    () => tf.tidy(() => tf.unsortedSegmentSum(tf.ones([2, 2, 2]), tf.tensor2d([0, 1, 1, 1], [2, 2], 'int32') as Tensor as Tensor1D, 2)),
    /segmentIds must be 1-D/,
  );
});

test('embedding gradient on wasm equals cpu ([1000, 64] embedding, repeated ids, tied decoder)', async (t) => {
  const { tf } = await selectBackend('cpu', quiet);
  const shapes = { V: 1000, H: 64, B: 4, T: 32 };
  const data = embeddingData(5, shapes.V, shapes.H, shapes.B, shapes.T);
  const ref = await embeddingLossAndGrad(tf, shapes, data);
  await selectBackend('wasm', quiet);
  const got = await embeddingLossAndGrad(tf, shapes, data);
  assert.ok(Math.abs(got.loss - ref.loss) <= 1e-5 * Math.abs(ref.loss), `loss ${got.loss} vs ${ref.loss}`);
  const diff = maxAbsDiff(got.grad, ref.grad);
  t.diagnostic(`max |dE_wasm - dE_cpu| = ${diff}`);
  assert.ok(diff < 1e-5, `max |dE_wasm - dE_cpu| = ${diff}`);
  // The gather term reached rows used several times: the gradient is not the decoder term alone.
  assert.ok(ref.grad.some((v) => Math.abs(v) > 1e-3));
});

test('gather with batchDims 1 on wasm (wrong as shipped, tfjs issue 8658) equals cpu, forward and gradient', async () => {
  const { tf } = await selectBackend('cpu', quiet);
  const rng = new Rng(21);
  const x = floats(rng, 2 * 5 * 3);
  const run = () =>
    tf.tidy(() => {
      const X = tf.tensor3d(x, [2, 5, 3]);
      const idx = tf.tensor2d([[0, 4, 4], [1, 1, 2]], [2, 3], 'int32');
      const f = (v: Tensor) => tf.gather(v, idx, 1, 1);
      const grad = tf.grad((v: Tensor) => f(v).square().sum())(X);
      const flat = tf.gather(X, tf.tensor1d([2, 0], 'int32'), 2); // batchDims 0, another axis
      return [f(X), grad, flat].map((t) => ({ shape: t.shape, values: Array.from(t.dataSync()) }));
    });
  const want = run();
  await selectBackend('wasm', quiet);
  const got = run();
  for (let i = 0; i < want.length; i++) {
    assert.deepEqual(got[i]!.shape, want[i]!.shape, `output ${i}`);
    assert.ok(maxAbsDiff(got[i]!.values, want[i]!.values) < 1e-6, `output ${i}`);
  }
  assert.throws(() => tf.tidy(() => tf.gather(tf.ones([2, 3]), tf.tensor2d([[0], [3]], [2, 1], 'int32'), 1, 1)), /index value 3/);
});

test('wasm BatchMatMul through XNNPACK (batched, transposed, broadcast) equals cpu, forward and gradient', async () => {
  // Shapes: attention-like batches, every transpose flag, one side broadcast, sizes of 1, empty
  // products and products over K = 0 (zeros; the shipped kernel trapped on an empty batch and left
  // a K = 0 output unwritten), and one product of large slices.
  assert.ok(130 * 129 * 131 > SMALL_SLICE_MACS);
  const cases: [number[], number[], boolean, boolean][] = [
    [[2, 3, 5, 4], [2, 3, 5, 4], false, true], // Q K^T
    [[2, 3, 5, 5], [2, 3, 5, 4], false, false], // P V
    [[2, 3, 5, 5], [2, 3, 5, 4], true, false], // P^T dY
    [[4, 7, 3], [4, 2, 7], true, true],
    [[6, 5], [3, 5, 2], false, false], // a broadcast
    [[3, 6, 5], [5, 2], false, false], // b broadcast
    [[2, 3, 6, 5], [1, 5, 2], false, false],
    [[6, 5], [2, 5], false, true], // 2-D with a flag
    [[5, 6], [5, 2], true, false],
    [[1, 1], [1, 1], true, false],
    [[4, 1, 3], [4, 3, 1], false, false],
    [[2, 0, 3], [2, 3, 4], false, false],
    [[0, 2, 3], [3, 4], false, false], // no batch against b without one
    [[2, 3], [0, 4, 3], false, true],
    [[2, 0], [0, 4], false, false], // K = 0: zeros
    [[3, 0, 2], [3, 4, 0], true, true],
    // Slices above SMALL_SLICE_MACS (130 x 129 x 131 multiply-adds) stay on the main (threaded)
    // module; all the smaller batched ones above go to the single-threaded one when threads > 1.
    [[2, 130, 129], [2, 131, 129], false, true],
  ];
  const { tf } = await selectBackend('cpu', quiet);
  const rng = new Rng(5);
  const data = cases.map(([sa, sb]) => [floats(rng, tf.util.sizeFromShape(sa)), floats(rng, tf.util.sizeFromShape(sb))] as const);
  const run = () =>
    cases.map(([sa, sb, ta, tb], i) =>
      tf.tidy(() => {
        const a = tf.tensor(data[i]![0], sa);
        const b = tf.tensor(data[i]![1], sb);
        const y = tf.matMul(a, b, ta, tb);
        const weights = tf.tensor(floats(new Rng(100 + i), y.size), y.shape); // a loss with distinct gradients
        const f = (p: Tensor, q: Tensor) => tf.sum(tf.mul(tf.matMul(p, q, ta, tb), weights));
        // tfjs-core's BatchMatMul gradient does not reduce broadcast batch dims (any backend):
        // broadcast cases are checked forward only.
        const { value, grads } = sa.length === sb.length ? tf.valueAndGrads(f)([a, b]) : { value: f(a, b), grads: [] };
        return [y, value, ...grads].map((t) => ({ shape: t.shape, values: Array.from(t.dataSync()) }));
      }),
    );
  // The cpu backend's data for an empty batch holds a slice of values all the same: only its size counts.
  const want = run().map((outs) => outs.map((o) => ({ ...o, values: o.values.slice(0, o.shape.reduce((x, y) => x * y, 1)) })));
  // XNNPACK itself: no BLAS library (backend/blas.test.ts compares the BLAS kernels with these).
  await selectBackend('wasm', { ...quiet, blas: 'none' });
  const before = tf.memory().numTensors;
  const got = run();
  await selectBackend('wasm', quiet);
  assert.equal(tf.memory().numTensors, before, 'no tensors leaked');
  for (let i = 0; i < cases.length; i++) {
    for (let j = 0; j < want[i]!.length; j++) {
      assert.deepEqual(got[i]![j]!.shape, want[i]![j]!.shape, `case ${i} output ${j}`);
      assert.equal(got[i]![j]!.values.length, want[i]![j]!.values.length, `case ${i} output ${j}: as many values as the shape holds`);
      // Absolute 1e-5 at unit scale; relative to the largest value for the large sums.
      const scale = Math.max(1, ...want[i]![j]!.values.map(Math.abs));
      const diff = maxAbsDiff(got[i]![j]!.values, want[i]![j]!.values);
      assert.ok(diff < 1e-5 * scale, `case ${i} output ${j}: ${diff} (scale ${scale})`);
    }
  }
});

test('wasm Sum over leading axes (rows added in place) equals cpu; other axes unchanged', async () => {
  const cases: [number[], number | number[], boolean][] = [
    [[37, 11], 0, false],
    [[37, 11], 0, true],
    [[3, 4, 5], [0, 1], false],
    [[3, 4, 5], [1, 0], true],
    [[3, 4, 5], 1, false], // not leading: shipped kernel
    [[3, 4, 5], -1, true],
    [[7, 2], [0, 1], false],
    [[5], 0, false],
  ];
  const { tf } = await selectBackend('cpu', quiet);
  const rng = new Rng(8);
  const data = cases.map(([shape]) => floats(rng, tf.util.sizeFromShape(shape), 100));
  const run = () =>
    cases.map(([shape, axis, keepDims], i) =>
      tf.tidy(() => {
        const t = tf.sum(tf.tensor(data[i]!, shape), axis, keepDims);
        return { shape: t.shape, values: Array.from(t.dataSync()) };
      }),
    );
  const want = run();
  await selectBackend('wasm', quiet);
  const got = run();
  for (let i = 0; i < cases.length; i++) {
    assert.deepEqual(got[i]!.shape, want[i]!.shape, `case ${i}`);
    assert.ok(maxAbsDiff(got[i]!.values, want[i]!.values) < 1e-4, `case ${i}`);
  }
});

test('wasm Identity: a clone shares its input\'s memory and outlives it; strings still copy', async () => {
  const { tf } = await selectBackend('wasm', quiet);
  const backend = tf.backend() as unknown as { getMemoryOffset(dataId: object): number; refCount(dataId: object): number };
  const before = tf.memory().numDataBuffers;
  const x = tf.tensor2d([1, 2, 3, 4, 5, 6], [2, 3]);
  const y = tf.clone(x);
  assert.equal(backend.getMemoryOffset(y.dataId), backend.getMemoryOffset(x.dataId), 'no copy made');
  assert.equal(backend.refCount(x.dataId), 2);
  assert.equal(tf.memory().numDataBuffers, before + 1, 'one buffer for both');
  x.dispose();
  assert.equal(backend.refCount(y.dataId), 1);
  assert.deepEqual(tf.tidy(() => Array.from(tf.add(y, 1).dataSync())), [2, 3, 4, 5, 6, 7], 'the clone keeps its values');
  const ints = tf.tensor1d([7, 8], 'int32');
  const intsClone = tf.clone(ints);
  ints.dispose();
  assert.deepEqual(Array.from(intsClone.dataSync()), [7, 8]);
  const s = tf.tensor1d(['a', 'bc'], 'string');
  const sClone = tf.clone(s);
  s.dispose();
  assert.deepEqual(sClone.dataSync(), ['a', 'bc']);
  tf.dispose([y, intsClone, sClone]);
  assert.equal(tf.memory().numDataBuffers, before, 'every buffer freed with its last tensor');
  // Gradients saved through customGrad (clones) are unchanged by the sharing: d/dx sum(x * x) = 2x.
  const g = tf.tidy(() => {
    const f = customOp(tf, ([t], save) => {
      save([t!]);
      return { value: tf.sum(tf.mul(t!, t!)), gradFunc: (dy, saved) => [tf.mul(dy, tf.mul(saved[0]!, 2))] };
    });
    return tf.grad((a: Tensor) => f(a) as Tensor)(tf.tensor1d([1, -2, 3]));
  });
  assert.deepEqual(Array.from(g.dataSync()), [2, -4, 6]);
  g.dispose();
});

test('switching between cpu and wasm inside one process keeps tensors and results', async () => {
  const { tf } = await selectBackend('cpu', quiet);
  const a = tf.tensor2d([[1, 2], [3, 4]]);
  await selectBackend('wasm', quiet);
  const b = tf.matMul(a, a); // a moves to wasm
  assert.deepEqual(Array.from(b.dataSync()), [7, 10, 15, 22]);
  await use(tf, 'cpu');
  const c = tf.add(b, a); // b and a move back to cpu
  assert.deepEqual(Array.from(c.dataSync()), [8, 12, 18, 26]);
  await selectBackend('wasm', quiet);
  assert.equal(tf.getBackend(), 'wasm');
  assert.deepEqual(Array.from(tf.sum(c).dataSync()), [64]);
  tf.dispose([a, b, c]);
  const again = await selectBackend('cpu', quiet);
  assert.equal(again.tf, tf, 'one @tensorflow/tfjs module');
});

const probe = await probeWebGpu();
// With MLM_REQUIRE_WEBGPU=1 (CI) the webgpu tests run without an adapter too, and fail with the reason.
const webgpuSkip = probe.ok || process.env.MLM_REQUIRE_WEBGPU?.trim() === '1' ? false : `no WebGPU adapter: ${probe.reason}`;

test('probeWebGpu reports an adapter or why there is none', () => {
  if (probe.ok) {
    assert.ok(probe.adapterInfo !== null);
    assert.equal(typeof probe.adapterInfo.software, 'boolean');
  } else {
    assert.equal(probe.adapterInfo, null);
    assert.ok(probe.reason.length > 0);
  }
});

test('webgpu: selectBackend, matMul and gradient parity with cpu', { skip: webgpuSkip }, async (t) => {
  t.diagnostic(`adapter: ${probe.reason}`);
  const rng = new Rng(3);
  const a = floats(rng, 64 * 48);
  const b = floats(rng, 48 * 32);
  const run = async (tf: Tf) => {
    const outs = tf.tidy(() => {
      const A = tf.tensor2d(a, [64, 48]);
      const B = tf.tensor2d(b, [48, 32]);
      const { value, grad } = tf.valueAndGrad((x: Tensor) => tf.matMul(x, B).square().sum())(A);
      return [tf.matMul(A, B), value, grad];
    });
    const vals = await Promise.all(outs.map((o) => o.data()));
    tf.dispose(outs);
    return vals.map((v) => Float32Array.from(v));
  };
  const { tf } = await selectBackend('cpu', quiet);
  const want = await run(tf);
  const lines: string[] = [];
  const info = await selectBackend('webgpu', { log: (l) => lines.push(l) });
  try {
    assert.equal(info.tfBackend, 'webgpu');
    assert.ok(lines[0]!.startsWith('backend: webgpu (requested)'));
    const got = await run(info.tf);
    t.diagnostic(`max abs diff vs cpu: matMul ${maxAbsDiff(got[0]!, want[0]!)}, gradient ${maxAbsDiff(got[2]!, want[2]!)}`);
    assert.ok(maxAbsDiff(got[0]!, want[0]!) < 1e-4, 'matMul');
    assert.ok(Math.abs(got[1]![0]! - want[1]![0]!) <= 1e-5 * Math.abs(want[1]![0]!), 'loss');
    assert.ok(maxAbsDiff(got[2]!, want[2]!) < 1e-3, 'gradient');
  } finally {
    releaseWebGpu(tf);
    await use(tf, 'cpu');
  }
});

test('webgpu: embedding gradient equals cpu', { skip: webgpuSkip }, async (t) => {
  const { tf } = await selectBackend('cpu', quiet);
  const shapes = { V: 1000, H: 64, B: 4, T: 32 };
  const data = embeddingData(9, shapes.V, shapes.H, shapes.B, shapes.T);
  const ref = await embeddingLossAndGrad(tf, shapes, data);
  await selectBackend('webgpu', quiet);
  try {
    const got = await embeddingLossAndGrad(tf, shapes, data);
    assert.ok(Math.abs(got.loss - ref.loss) <= 1e-5 * Math.abs(ref.loss), `loss ${got.loss} vs ${ref.loss}`);
    const diff = maxAbsDiff(got.grad, ref.grad);
    t.diagnostic(`max |dE_webgpu - dE_cpu| = ${diff}`);
    assert.ok(diff < 1e-5, `max |dE_webgpu - dE_cpu| = ${diff}`);
  } finally {
    releaseWebGpu(tf);
    await use(tf, 'cpu');
  }
});
