// What the BLAS tests share: the library found here (2 threads), the skip reason when there is
// none (not under MLM_REQUIRE_BLAS=1, CI, where the tests then fail), and a Blas that counts its
// sgemm calls, the idle-CPU measure of OpenBLAS's threads, and a batch of products as the worker
// threads' BLAS job describes it (simd-pool.ts), and a product's float64 reference.
import assert from 'node:assert/strict';
import { openBlas, type Blas } from '../../../training/backend/blas.ts';

export const found = openBlas({ threads: 2 });
export const skip = found.blas !== null || process.env.MLM_REQUIRE_BLAS === '1' ? false : `no BLAS library: ${found.reason}`;

/** The library, failing with the search's reason when there is none. */
export function library(): Blas {
  assert.ok(found.blas !== null, found.blas === null ? found.reason : '');
  return found.blas;
}

/** A Blas that counts its sgemm calls (made on the calling thread). */
export function counting(blas: Blas): Blas & { calls: number } {
  const c = {
    calls: 0,
    get name() { return blas.name; },
    get path() { return blas.path; },
    get threads() { return blas.threads; },
    get worker() { return blas.worker; },
    setThreads: (n: number) => blas.setThreads(n),
    sgemm(...args: Parameters<Blas['sgemm']>) {
      c.calls++;
      blas.sgemm(...args);
    },
  };
  return c;
}

/**
 * One 512^3 product on two library threads, then the CPU time (ms) the whole process uses while
 * this thread waits 80 ms: OpenBLAS threads that poll for work burn a core for ~0.1 s after a
 * call (sched_yield in a loop); asleep, next to none. `first` is the product's first entry (32).
 */
export function idleCpuAfterProduct(blas: Blas): { first: number; ms: number } {
  blas.setThreads(2);
  const n = 512;
  const x = new Float32Array(n * n).fill(0.25);
  const y = new Float32Array(n * n);
  blas.sgemm(false, false, n, n, n, 1, x, n, x, n, 0, y, n);
  const since = process.cpuUsage();
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 80);
  const used = process.cpuUsage(since);
  return { first: y[0]!, ms: (used.user + used.system) / 1000 };
}

/** One batch on `heap`: the job's numbers as matmul-blas.ts writes them, and its slices run here. */
export function batchJob(blas: Blas, heap: ArrayBufferLike, d: { ta: boolean; tb: boolean; M: number; N: number; K: number; a: number; aStep: number; b: number; bStep: number; c: number }) {
  const { ta, tb, M, N, K } = d;
  const lda = ta ? M : K;
  const ldb = tb ? K : N;
  const cStep = M * N * 4;
  const job = [Number(ta), Number(tb), M, N, K, lda, ldb, d.a, d.aStep, d.b, d.bStep, d.c, cStep];
  let own = 0;
  const run = (lo: number, hi: number) => {
    for (let i = lo; i < hi; i++) {
      own++;
      blas.sgemm(ta, tb, M, N, K, 1, new Float32Array(heap, d.a + i * d.aStep, M * K), lda, new Float32Array(heap, d.b + i * d.bStep, K * N), ldb, 0, new Float32Array(heap, d.c + i * cStep, M * N), N);
    }
  };
  return { job, run, ownSlices: () => own };
}

/**
 * The float64 sums of op(a) op(b) (row-major, m x n, stored transposed where the flag says, as
 * Blas.sgemm takes them) and, per entry, the sum of the products' magnitudes, the scale of the
 * rounding a float32 result may carry.
 */
export function float64Product(ta: boolean, tb: boolean, M: number, N: number, K: number, a: Float32Array, b: Float32Array): { sum: Float64Array; abs: Float64Array } {
  const sum = new Float64Array(M * N);
  const abs = new Float64Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = 0;
      let m = 0;
      for (let k = 0; k < K; k++) {
        const p = (ta ? a[k * M + i]! : a[i * K + k]!) * (tb ? b[j * K + k]! : b[k * N + j]!);
        s += p;
        m += Math.abs(p);
      }
      sum[i * N + j] = s;
      abs[i * N + j] = m;
    }
  }
  return { sum, abs };
}
