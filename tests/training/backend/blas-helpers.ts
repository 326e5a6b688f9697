// What the BLAS tests share: the library found here (2 threads), the skip reason when there is
// none (not under MLM_REQUIRE_BLAS=1, CI, where the tests then fail), and a Blas that counts its
// sgemm calls, and the idle-CPU measure of OpenBLAS's threads.
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
