// Tests for the attention's batches of small BLAS products on several threads (simd-pool.ts's
// `blasSlices`, matmul-blas.ts) and for OpenBLAS's idle threads (blas.ts):
//   - a batch cut between the calling thread and two workers gives every slice the bits of one
//     single-threaded sgemm call (transpose flags, one operand shared by every slice), the workers
//     really take their share, and a thread cap gives fewer pieces;
//   - a slice a worker cannot reach fails the call with a clear error, and the next call is right
//     (also when the calling thread's piece failed too);
//     a library the workers cannot open leaves the pool without BLAS and says why;
//   - on the wasm backend, batched products and their gradients, and a small BERT's loss and
//     gradients, are the same bits with and without the workers; the backend as set up by
//     selectBackend hands batches to them;
//   - after a 2-thread product, OpenBLAS's threads sleep instead of polling (they took a core from
//     the workers), and the setting that makes them is not left in the environment (an empty
//     value, no setting of the process's own, is put back as it was);
//   - a closed pool runs every slice on the calling thread, a failure never carries over to the
//     next call, and switching BLAS off forgets the pool.
// Needs a BLAS library (Debian: libopenblas0-pthread); without one these are skipped with the
// reason, unless MLM_REQUIRE_BLAS=1 (CI), which makes them fail.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Tensor, Tensor2D } from '@tensorflow/tfjs';
import { Rng } from '../../../common/rng.ts';
import { selectBackend } from '../../../training/backend.ts';
import type { Blas } from '../../../training/backend/blas.ts';
import { batchJob, counting, found, idleCpuAfterProduct, library, skip } from './blas-helpers.ts';
import { setWasmBlas } from '../../../training/backend/matmul-blas.ts';
import { startSimdPool } from '../../../training/backend/simd-pool.ts';
import { backendMemory, SIMD_FUNCTIONS } from '../../../training/backend/simd-wasm.ts';
import { createBert, IGNORE_INDEX, type MlmInputs } from '../../../training/models/bert.ts';
import { parseModelConfig } from '../../../training/models/config.ts';

const quiet = { log: (_line: string) => {} };
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

test('a batch cut between threads: each slice the bits of one sgemm call, the workers take their share, the cap holds', { skip }, async () => {
  const blas = library();
  const memory = new WebAssembly.Memory({ initial: 256, maximum: 256, shared: true });
  const pool = await startSimdPool({ bytes: null, memory, names: SIMD_FUNCTIONS, threads: 3, blas: blas.worker });
  const threads = blas.threads;
  blas.setThreads(1);
  try {
    assert.notEqual(pool.blasSlices, null, pool.blasNote);
    const f32 = new Float32Array(memory.buffer);
    const rng = new Rng(5);
    for (let i = 0; i < 2_000_000; i++) f32[i] = rng.next() * 2 - 1;
    const S = 13;
    for (const [M, K, N] of [[128, 64, 128], [7, 5, 3]] as const) {
      for (const ta of [false, true]) {
        for (const tb of [false, true]) {
          for (const sharedB of [false, true]) {
            // Operands at odd float offsets; the outputs far past them.
            const d = { ta, tb, M, N, K, a: 4 * 3, aStep: M * K * 4, b: 4 * (5 + S * M * K), bStep: sharedB ? 0 : K * N * 4, c: 4 * 1_000_001 };
            const wantAt = d.c + S * M * N * 4 + 64;
            const want = batchJob(blas, memory.buffer, { ...d, c: wantAt });
            want.run(0, S);
            for (const [maxThreads, ownShare] of [[3, Math.ceil(S / 3)], [2, Math.ceil(S / 2)]] as const) {
              f32.fill(Number.NaN, d.c / 4, d.c / 4 + S * M * N);
              const got = batchJob(blas, memory.buffer, d);
              pool.blasSlices!(S, 1, got.job, got.run, maxThreads);
              assert.equal(got.ownSlices(), ownShare, `${maxThreads} threads: the calling thread ran its share only`);
              assert.deepEqual(f32.subarray(d.c / 4, d.c / 4 + S * M * N), f32.subarray(wantAt / 4, wantAt / 4 + S * M * N), `${M}x${K}x${N} ta=${ta} tb=${tb} shared b=${sharedB}, ${maxThreads} threads`);
            }
            // Under two grains: all on the calling thread.
            const alone = batchJob(blas, memory.buffer, d);
            pool.blasSlices!(S, 7, alone.job, alone.run, 3);
            assert.equal(alone.ownSlices(), S);
          }
        }
      }
    }
  } finally {
    if (threads !== null) blas.setThreads(threads);
    await pool.close();
  }
});

test('a slice a worker cannot reach fails the call, and the next call is right; a library the workers cannot open: no BLAS pool, and why', { skip }, async () => {
  const blas = library();
  const memory = new WebAssembly.Memory({ initial: 16, maximum: 16, shared: true });
  const pool = await startSimdPool({ bytes: null, memory, names: SIMD_FUNCTIONS, threads: 2, blas: blas.worker });
  try {
    const f32 = new Float32Array(memory.buffer);
    f32.fill(0.5, 0, 8 * 8);
    const cStep = 8 * 8 * 4;
    // Slices 2 and 3 (the worker's) would end past the memory's 1 MiB.
    const past = [0, 0, 8, 8, 8, 8, 8, 0, 0, 0, 0, 16 * 65536 - 3 * cStep, cStep];
    assert.throws(() => pool.blasSlices!(4, 1, past, () => {}, 2), /^Error: a thread of mlmkit's kernels failed in a batch of BLAS products; MLM_BLAS_THREADS=1 runs every product on one thread$/);
    // The calling thread's piece and a worker's failing together: the calling thread's error, and
    // the worker's failure does not carry over to the next call.
    assert.throws(() => pool.blasSlices!(4, 1, past, () => { throw new Error('own piece'); }, 2), /^Error: own piece$/);
    const ok = batchJob(blas, memory.buffer, { ta: false, tb: false, M: 8, N: 8, K: 8, a: 0, aStep: 0, b: 0, bStep: 0, c: 4096 });
    pool.blasSlices!(4, 1, ok.job, ok.run, 2);
    assert.equal(ok.ownSlices(), 2);
    assert.deepEqual(Array.from(f32.subarray(1024, 1024 + 4 * 64)), new Array(4 * 64).fill(2));
    // A closed pool (a backend set up again closes the old one) runs every slice here, at once.
    await pool.close();
    f32.fill(0, 1024, 1024 + 4 * 64);
    const after = batchJob(blas, memory.buffer, { ta: false, tb: false, M: 8, N: 8, K: 8, a: 0, aStep: 0, b: 0, bStep: 0, c: 4096 });
    const since = Date.now();
    pool.blasSlices!(4, 1, after.job, after.run, 2);
    assert.ok(Date.now() - since < 5000, 'the call waited for terminated workers');
    assert.equal(after.ownSlices(), 4);
    assert.deepEqual(Array.from(f32.subarray(1024, 1024 + 4 * 64)), new Array(4 * 64).fill(2));
  } finally {
    await pool.close();
  }
  const broken = await startSimdPool({ bytes: null, memory, names: SIMD_FUNCTIONS, threads: 2, blas: { ...blas.worker, library: '/nonexistent/libopenblas.so.0' } });
  try {
    assert.equal(broken.blasSlices, null);
    assert.match(broken.blasNote ?? '', /^a worker thread could not open \/nonexistent\/libopenblas\.so\.0 \(.+\)$/);
  } finally {
    await broken.close();
  }
});

const multiCore = os.availableParallelism() >= 2 ? false : 'one CPU: the wasm backend runs single-threaded, on memory no worker can share';

test('wasm: batched products, their gradients and a small BERT give the same bits with and without the workers; selectBackend sets them up', { skip: skip || multiCore }, async () => {
  const { tf } = await selectBackend('wasm', quiet);
  const blas = counting(library());
  // As selectBackend left it: the pool's split stays while the library is the same one.
  setWasmBlas(tf, blas);
  const a = tf.randomUniform([4, 4, 128, 64], -1, 1, 'float32', 1);
  const b = tf.randomUniform([4, 4, 128, 64], -1, 1, 'float32', 2);
  const calls = blas.calls;
  tf.tidy(() => tf.matMul(a, b, false, true).dataSync());
  assert.ok(blas.calls - calls < 16, `the calling thread ran ${blas.calls - calls} of 16 slices: the workers took none`);
  // Switching BLAS off forgets the pool: switched on again without one, every slice runs here.
  setWasmBlas(tf, null);
  setWasmBlas(tf, blas);
  const again = blas.calls;
  tf.tidy(() => tf.matMul(a, b, false, true).dataSync());
  assert.equal(blas.calls - again, 16, 'a pool from before BLAS was switched off was used again');

  const memory = backendMemory(tf.backend() as never);
  assert.ok(memory !== null && memory.buffer instanceof SharedArrayBuffer, 'the threaded build\'s memory is shared');
  const pool = await startSimdPool({ bytes: null, memory, names: SIMD_FUNCTIONS, threads: 2, blas: blas.worker });
  const cfg = parseModelConfig({
    model_type: 'bert', vocab_size: 61, hidden_size: 128, num_attention_heads: 2, num_hidden_layers: 1, intermediate_size: 96,
    max_position_embeddings: 128, type_vocab_size: 2, hidden_act: 'gelu', layer_norm_eps: 1e-12, initializer_range: 0.3,
    hidden_dropout_prob: 0.1, attention_probs_dropout_prob: 0.1, pad_token_id: 0,
  }, 'test bert');
  const m = createBert(tf, cfg, { seed: 8 });
  const rng = new Rng(4);
  const ids = Array.from({ length: 2 * 128 }, () => 1 + rng.int(60));
  const labels = Int32Array.from(ids, (id) => (rng.next() < 0.2 ? id : IGNORE_INDEX));
  const inputs: MlmInputs = { inputIds: tf.tensor2d(ids, [2, 128], 'int32') as Tensor2D, attentionMask: tf.ones([2, 128], 'int32') as Tensor2D };
  const everything = (): Float32Array[] => {
    const products = tf.tidy(() => {
      const w = tf.randomUniform([4, 4, 128, 128], -1, 1, 'float32', 3);
      const loss = (p: Tensor, q: Tensor) => tf.sum(tf.mul(tf.matMul(p, q, false, true), w));
      const s = tf.matMul(a, b, false, true);
      return [s, tf.matMul(s, b), tf.matMul(s, a, true, false), ...tf.grads(loss)([a, b])].map((t) => t.dataSync() as Float32Array);
    });
    const { value, grads } = tf.variableGrads(() => m.maskedLoss(inputs, labels, { training: true, dropoutSeed: 5 }).loss);
    const model = [value, ...Object.keys(grads).sort().map((k) => grads[k]!)].map((t) => t.dataSync() as Float32Array);
    tf.dispose([value, ...Object.values(grads)]);
    return [...products, ...model];
  };
  try {
    const before = tf.memory().numTensors;
    setWasmBlas(tf, blas, pool.blasSlices);
    const start = blas.calls;
    const split = everything();
    const splitCalls = blas.calls - start;
    setWasmBlas(tf, blas, null);
    const mid = blas.calls;
    const alone = everything();
    assert.ok(splitCalls < blas.calls - mid, `the workers ran some slices (${splitCalls} calls here with them, ${blas.calls - mid} without)`);
    assert.equal(split.length, alone.length);
    for (let i = 0; i < split.length; i++) assert.deepEqual(split[i], alone[i], `output ${i}: the same bits`);
    assert.equal(tf.memory().numTensors, before, 'no tensors left behind');
  } finally {
    setWasmBlas(tf, found.blas, null);
    tf.dispose([a, b, inputs.inputIds, inputs.attentionMask]);
    m.dispose();
    await pool.close();
  }
});

const openBlasOnly = skip || (found.blas !== null && !/OpenBLAS/.test(found.blas.name) ? `${found.blas.name} is no OpenBLAS` : false);

test('after a product on two threads OpenBLAS\'s threads sleep instead of polling, and OPENBLAS_THREAD_TIMEOUT is not left set', { skip: openBlasOnly }, () => {
  const blas = library();
  assert.equal(process.env.OPENBLAS_THREAD_TIMEOUT, undefined);
  const { first, ms } = idleCpuAfterProduct(blas);
  assert.equal(first, 512 / 16);
  assert.ok(ms < 30, `${ms.toFixed(1)} ms of CPU time while idle for 80 ms: OpenBLAS's threads kept polling`);
});

test('an empty OPENBLAS_THREAD_TIMEOUT is no timeout of the process: OpenBLAS still loads with its threads asleep, and the empty value is put back', { skip: openBlasOnly }, () => {
  // In a child: the library is loaded once per process, and this one has loaded it already
  // (blas-helpers.ts opens it when imported, there too).
  const code = `
    import { found, idleCpuAfterProduct } from ${JSON.stringify(pathToFileURL(path.join(root, 'tests', 'training', 'backend', 'blas-helpers.ts')).href)};
    const { first, ms } = idleCpuAfterProduct(found.blas);
    console.log(JSON.stringify({ env: process.env.OPENBLAS_THREAD_TIMEOUT ?? null, first, ms }));`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
    cwd: root, encoding: 'utf8', env: { ...process.env, OPENBLAS_THREAD_TIMEOUT: '' },
  });
  assert.equal(r.status, 0, r.stderr);
  const got = JSON.parse(r.stdout.trim().split('\n').pop()!) as { env: string | null; first: number; ms: number };
  assert.equal(got.env, '');
  assert.equal(got.first, 512 / 16);
  assert.ok(got.ms < 30, `${got.ms.toFixed(1)} ms of CPU time while idle for 80 ms: OpenBLAS's threads kept polling`);
});
