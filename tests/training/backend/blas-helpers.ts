// What the BLAS tests share: the library found here (2 threads), the skip reason when there is
// none (not under MLM_REQUIRE_BLAS=1, CI, where the tests then fail), and a Blas that counts its
// sgemm calls.
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
