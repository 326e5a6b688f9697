// Tests for an OpenBLAS built with 64-bit integers (ILP64; Debian: libopenblas64-0-pthread, whose
// libopenblas64.so.0 exports plain `cblas_sgemm` symbols that take int64_t dimensions):
//   - it is opened with 64-bit integers, on this thread and in the worker threads (blas.ts reads
//     the width from the build's configuration, not from the symbol names), and its name says so;
//   - its products equal float64 sums and the LP64 library's (every transpose flag, odd shapes);
//   - a batch cut between the calling thread and the workers gives every slice the bits of one
//     single-threaded call;
//   - as the wasm backend's library (MLM_BLAS=libopenblas64.so.0), a tiny BERT's loss and
//     gradients equal those on the LP64 library.
// Skipped with the reason where libopenblas64.so.0 cannot be opened, unless MLM_REQUIRE_BLAS=1 (CI,
// which installs it), which makes them fail.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../../common/rng.ts';
import { selectBackend } from '../../../training/backend.ts';
import { openBlas } from '../../../training/backend/blas.ts';
import { setWasmBlas } from '../../../training/backend/matmul-blas.ts';
import { startSimdPool } from '../../../training/backend/simd-pool.ts';
import { SIMD_FUNCTIONS } from '../../../training/backend/simd-wasm.ts';
import { batchJob, float64Product, gradientDifferences, library, skip as noLp64, tinyBertConfig, tinyBertGradients } from './blas-helpers.ts';

const ILP64 = 'libopenblas64.so.0';
const found64 = process.platform === 'linux' ? openBlas({ library: ILP64, threads: 1 }) : { blas: null, reason: 'Linux only' };
const skip = noLp64 || (found64.blas !== null || process.env.MLM_REQUIRE_BLAS === '1' ? false : `no ILP64 OpenBLAS: ${found64.reason}`);

function ilp64() {
  assert.ok(found64.blas !== null, found64.blas === null ? found64.reason : '');
  return found64.blas;
}

test('an ILP64 OpenBLAS is called with 64-bit integers here and in the workers; its products equal float64 sums and the LP64 library\'s', { skip }, () => {
  const blas = ilp64();
  assert.deepEqual([blas.worker.library, blas.worker.suffix, blas.worker.int], [ILP64, '', 'int64_t']);
  assert.match(blas.name, /^OpenBLAS \S+ ILP64/);
  assert.doesNotMatch(library().name, /ILP64/);
  const lp64 = library();
  const rng = new Rng(9);
  for (const [M, N, K] of [[1, 1, 1], [7, 13, 5], [33, 17, 65], [130, 3, 129]] as const) {
    for (const ta of [false, true]) {
      for (const tb of [false, true]) {
        const a = Float32Array.from({ length: M * K }, () => rng.next() * 2 - 1);
        const b = Float32Array.from({ length: K * N }, () => rng.next() * 2 - 1);
        const got = new Float32Array(M * N).fill(Number.NaN);
        const want = new Float32Array(M * N);
        blas.sgemm(ta, tb, M, N, K, 1, a, ta ? M : K, b, tb ? K : N, 0, got, N);
        lp64.sgemm(ta, tb, M, N, K, 1, a, ta ? M : K, b, tb ? K : N, 0, want, N);
        const { sum, abs } = float64Product(ta, tb, M, N, K, a, b);
        for (let e = 0; e < M * N; e++) {
          const at = `${M}x${N}x${K} ta=${ta} tb=${tb} [${Math.floor(e / N)},${e % N}]`;
          assert.ok(Math.abs(got[e]! - sum[e]!) <= 1e-6 * abs[e]! + 1e-30, `${at}: ${got[e]} vs ${sum[e]}`);
          assert.ok(Math.abs(got[e]! - want[e]!) <= 1e-6 * abs[e]! + 1e-30, `${at}: ILP64 ${got[e]} vs LP64 ${want[e]}`);
        }
      }
    }
  }
});

test('an ILP64 OpenBLAS in the worker threads: a batch cut between threads gives each slice the bits of one call', { skip }, async () => {
  const blas = ilp64();
  const memory = new WebAssembly.Memory({ initial: 256, maximum: 256, shared: true });
  const pool = await startSimdPool({ bytes: null, memory, names: SIMD_FUNCTIONS, threads: 2, blas: blas.worker });
  try {
    assert.notEqual(pool.blasSlices, null, pool.blasNote);
    const f32 = new Float32Array(memory.buffer);
    const rng = new Rng(6);
    for (let i = 0; i < 1_000_000; i++) f32[i] = rng.next() * 2 - 1;
    const S = 9;
    for (const [M, K, N] of [[128, 64, 128], [7, 5, 3]] as const) {
      for (const ta of [false, true]) {
        for (const tb of [false, true]) {
          const d = { ta, tb, M, N, K, a: 4 * 3, aStep: M * K * 4, b: 4 * (5 + S * M * K), bStep: K * N * 4, c: 4 * 1_000_001 };
          const wantAt = d.c + S * M * N * 4 + 64;
          batchJob(blas, memory.buffer, { ...d, c: wantAt }).run(0, S);
          f32.fill(Number.NaN, d.c / 4, d.c / 4 + S * M * N);
          const got = batchJob(blas, memory.buffer, d);
          pool.blasSlices!(S, 1, got.job, got.run, 2);
          assert.equal(got.ownSlices(), Math.ceil(S / 2), 'the worker ran its share');
          assert.deepEqual(f32.subarray(d.c / 4, d.c / 4 + S * M * N), f32.subarray(wantAt / 4, wantAt / 4 + S * M * N), `${M}x${K}x${N} ta=${ta} tb=${tb}`);
        }
      }
    }
  } finally {
    await pool.close();
  }
});

test('MLM_BLAS=libopenblas64.so.0: the backend line says ILP64, and a tiny BERT\'s loss and gradients equal those on the LP64 library', { skip }, async () => {
  const lines: string[] = [];
  const { tf, device } = await selectBackend('wasm', { log: (l) => lines.push(l), blas: ILP64 });
  assert.match(device, /; matmuls: OpenBLAS \S+ ILP64/);
  const bert = tinyBertGradients(tf, tinyBertConfig(), { seed: 2, dataSeed: 31, dropoutSeed: 7, batch: 3, seqLen: 20 });
  try {
    const got = bert.gradients();
    setWasmBlas(tf, library());
    const want = bert.gradients();
    for (const [k, d] of gradientDifferences(got, want)) assert.ok(d < 1e-5, `${k}: ILP64 differs from LP64 by ${d.toExponential(2)} of the tensor's largest`);
  } finally {
    bert.dispose();
  }
});
