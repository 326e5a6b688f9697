// Threads for mlmkit's CPU kernels on the wasm backend's memory: worker threads that each
// instantiate mlmkit's SIMD module (simd-wasm.ts) on that shared memory and, where a BLAS library is
// in use (blas.ts), open the same library, and a `WorkSplit` that cuts a kernel's range into one
// piece per thread, runs the first on the calling thread and waits for the rest. The BLAS side
// serves matmul-blas.ts: a batch of small products (attention) is cut into ranges of slices, each
// slice one single-threaded sgemm call wherever it runs (`blasSlices`).
//
// The hand-off goes through a small SharedArrayBuffer of its own, not through messages: the
// caller writes the function's index, its arguments and each worker's piece, bumps a sequence
// number and wakes the workers with Atomics.notify; each worker runs its piece and then writes
// that sequence number into its own `done` word; the caller, done with its own piece, sleeps in
// Atomics.wait until every worker's `done` is the call's number. It waits even when its own piece
// throws, so no worker is ever still running a piece when the next call writes its arguments.
// (Until 2026-12-06 the workers counted down one shared word, and a throw in the caller's piece
// returned at once: the worker still running counted down into the next call, which then ended
// early, and the call after it waited for a count of -1 in vain. A bench run stopped that way once;
// what threw there was not found. Each call's own `done` number leaves nothing to drift.) Every
// kernel computes each row (column, entry, slice) the same way wherever the range is cut (kernels.c;
// one sgemm call per slice), so results do not depend on the number of threads.
//
// A piece is never smaller than the kernel's grain (a range under two grains runs on the calling
// thread alone: waking a worker costs tens of microseconds). The workers are unref'd: they never
// keep the process alive. Only for a shared memory (the backend's threaded build).
import { Worker } from 'node:worker_threads';
import type { WorkerBlas } from './blas.ts';
import type { SliceSplit } from './matmul-blas.ts';
import type { SimdExports, WorkSplit } from './simd-wasm.ts';

// Control words (Int32Array over CONTROL_BYTES): sequence, (unused), function index, argument
// count, failures, then per worker its [lo, hi), its state and the sequence number of the last
// call it finished; the arguments are float64s after them.
const SEQ = 0;
const FN = 2;
const NARGS = 3;
const FAILED = 4;
const RANGES = 5;
const MAX_THREADS = 8;
const STATES = RANGES + 2 * MAX_THREADS;
const DONE = STATES + MAX_THREADS;
const MAX_ARGS = 24;
const ARGS_AT = 8 * Math.ceil((4 * (DONE + MAX_THREADS)) / 8);
/** How long the caller waits for a piece before it reports the pool as stuck (a piece takes ms). */
const STUCK_MS = 60_000;
const CONTROL_BYTES = ARGS_AT + 8 * MAX_ARGS;

// The worker: compiles the SIMD module from its bytes (its own compiled code, shared with no other
// thread) on the memory it is sent, opens the BLAS library it is named (through koffi, from the
// path the main thread resolved), then serves pieces until exit. Functions: the module's, by
// index, then the BLAS slices (index `names.length`): slice i of a batch is
// c_i = op(a_i) op(b_i) at byte offsets a + i aStep, b + i bStep, c + i cStep (a step of 0: one
// operand shared by every slice), row-major, alpha 1, beta 0, as matmul-blas.ts runs it. Its state
// word: 1 waiting, 2 running a piece. A piece that throws counts as failed (the caller reports it)
// and is still marked done, so the caller never waits for it.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { bytes, memory, control, index, names, argsAt, maxArgs, blas } = workerData;
const calls = [];
if (bytes !== null) {
  const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory } });
  for (const n of names) calls.push(instance.exports[n]);
}
let blasError = null;
if (blas !== null) {
  try {
    const int = blas.int;
    const gemm = require(blas.koffi).load(blas.library).func(
      'void cblas_sgemm' + blas.suffix + '(int, int, int, ' + int + ', ' + int + ', ' + int +
      ', float, const float *, ' + int + ', const float *, ' + int + ', float, float *, ' + int + ')');
    const n = int === 'int64_t' ? BigInt : (x) => x;
    calls[names.length] = (ta, tb, M, N, K, lda, ldb, a, aStep, b, bStep, c, cStep, lo, hi) => {
      const buffer = memory.buffer;
      if (c + hi * cStep > buffer.byteLength) throw new RangeError('a slice lies past the memory');
      for (let i = lo; i < hi; i++) {
        gemm(101, ta ? 112 : 111, tb ? 112 : 111, n(M), n(N), n(K), 1,
          new Float32Array(buffer, a + i * aStep, M * K), n(lda),
          new Float32Array(buffer, b + i * bStep, K * N), n(ldb),
          0, new Float32Array(buffer, c + i * cStep, M * N), n(N));
      }
    };
  } catch (err) {
    blasError = String((err && err.message) || err).split('\\n')[0];
  }
}
const ctl = new Int32Array(control);
const args = new Float64Array(control, argsAt, maxArgs);
let seen = Atomics.load(ctl, ${SEQ});
parentPort.postMessage({ blasError });
for (;;) {
  Atomics.store(ctl, ${STATES} + index, 1);
  Atomics.wait(ctl, ${SEQ}, seen);
  seen = Atomics.load(ctl, ${SEQ});
  Atomics.store(ctl, ${STATES} + index, 2);
  const lo = ctl[${RANGES} + 2 * index], hi = ctl[${RANGES} + 2 * index + 1];
  try {
    if (hi > lo) {
      const n = ctl[${NARGS}];
      const a = [];
      for (let i = 0; i < n; i++) a.push(args[i]);
      calls[ctl[${FN}]](...a, lo, hi);
    }
  } catch (err) {
    Atomics.add(ctl, ${FAILED}, 1);
  }
  Atomics.store(ctl, ${DONE} + index, seen);
  Atomics.notify(ctl, ${DONE} + index);
}
`;

/** A pool of `threads - 1` workers beside the calling thread. */
export interface SimdPool {
  threads: number;
  /** Runs kernels of the SIMD module on this pool's threads (see WorkSplit). */
  split: WorkSplit;
  /** Runs batches of BLAS products on this pool's threads; null without a library (`blasNote`: why, if it failed). */
  blasSlices: SliceSplit | null;
  blasNote?: string;
  close(): Promise<void>;
}

export interface PoolOptions {
  /** The SIMD module's bytes, or null for a pool that serves BLAS products only. */
  bytes: Uint8Array | null;
  /** The wasm backend's memory (shared). */
  memory: WebAssembly.Memory;
  /** The module's functions the pool may run, in this order. */
  names: readonly (keyof SimdExports)[];
  threads: number;
  /** The BLAS library the workers open as well (a Blas's `worker`, blas.ts), if any. */
  blas?: WorkerBlas | null;
}

/**
 * Starts `threads - 1` workers on `memory` (which must be shared) running the module and the
 * library. Resolves once every worker has them ready; a library a worker cannot open leaves the
 * pool without `blasSlices` (and says why in `blasNote`).
 */
export async function startSimdPool(opts: PoolOptions): Promise<SimdPool> {
  const { bytes, memory, names } = opts;
  const blas = opts.blas ?? null;
  const n = Math.max(1, Math.min(MAX_THREADS, Math.floor(opts.threads)));
  const control = new SharedArrayBuffer(CONTROL_BYTES);
  const ctl = new Int32Array(control);
  const args = new Float64Array(control, ARGS_AT, MAX_ARGS);
  const workers: Worker[] = [];
  let blasNote: string | undefined;
  try {
    for (let index = 0; index < n - 1; index++) {
      const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { bytes, memory, control, index, names, argsAt: ARGS_AT, maxArgs: MAX_ARGS, blas }, execArgv: [] });
      workers.push(w);
      const ready = await new Promise<{ blasError: string | null }>((resolve, reject) => {
        w.once('message', resolve);
        w.once('error', reject);
        w.once('exit', (code) => reject(new Error(`a kernel worker exited with code ${code}`)));
      });
      if (ready.blasError !== null) blasNote ??= `a worker thread could not open ${blas?.library} (${ready.blasError})`;
      w.removeAllListeners('exit');
      w.removeAllListeners('error');
      w.unref();
    }
  } catch (err) {
    await Promise.all(workers.map((w) => w.terminate()));
    throw err;
  }
  const workerCount = workers.length;
  let closed = false;

  /**
   * Runs function `fnIndex` over [0, total) in pieces of at least `grain`, at most `maxPieces`:
   * the first through `own` here, the others on the workers with `a` and their piece's range.
   * `name` and `remedy` go into the errors.
   */
  const dispatch = (
    fnIndex: number, name: string, remedy: string, own: (lo: number, hi: number) => void, total: number, grain: number,
    a: readonly number[], toRange: (lo: number, hi: number) => [number, number], maxPieces: number,
  ): void => {
    if (total <= 0) return;
    // A closed pool (its workers terminated) runs everything here: same pieces' results, one thread.
    const pieces = closed ? 1 : Math.min(workerCount + 1, maxPieces, Math.floor(total / Math.max(1, grain)));
    if (pieces < 2) {
      own(...toRange(0, total));
      return;
    }
    if (a.length > MAX_ARGS) throw new Error(`simd pool: ${a.length} arguments, at most ${MAX_ARGS}`);
    const step = Math.ceil(total / pieces);
    ctl[FN] = fnIndex;
    ctl[NARGS] = a.length;
    for (let i = 0; i < a.length; i++) args[i] = a[i]!;
    // Piece 0 is this thread's; worker i gets piece i + 1 (or nothing).
    for (let i = 0; i < workerCount; i++) {
      const lo = Math.min(total, (i + 1) * step);
      const hi = Math.min(total, (i + 2) * step);
      const [rlo, rhi] = hi > lo && i + 1 < pieces ? toRange(lo, hi) : [0, 0];
      ctl[RANGES + 2 * i] = rlo;
      ctl[RANGES + 2 * i + 1] = rhi;
    }
    const seq = (Atomics.add(ctl, SEQ, 1) + 1) | 0; // the Int32 the workers will read
    Atomics.notify(ctl, SEQ);
    let ownError: { err: unknown } | null = null;
    try {
      own(...toRange(0, Math.min(total, step)));
    } catch (err) {
      ownError = { err };
    }
    // Every worker finishes this call before the caller goes on, even after an error here.
    const since = Date.now();
    for (let i = 0; i < workerCount; i++) {
      for (let d = Atomics.load(ctl, DONE + i); d !== seq; d = Atomics.load(ctl, DONE + i)) {
        if (Atomics.wait(ctl, DONE + i, d, STUCK_MS) === 'timed-out' && Date.now() - since >= STUCK_MS) {
          const states = Array.from({ length: workerCount }, (_, w) => `${ctl[STATES + w]}/${ctl[DONE + w]}`);
          throw new Error(`mlmkit's kernel threads did not finish ${name} within ${STUCK_MS / 1000} s (call ${seq}; worker state/last call done ${states.join(', ')}); ${remedy}`);
        }
      }
    }
    // Read and cleared before anything is thrown, so that a failure never carries over to the next call.
    const failed = Atomics.exchange(ctl, FAILED, 0);
    if (ownError !== null) throw ownError.err;
    if (failed > 0) throw new Error(`a thread of mlmkit's kernels failed in ${name}; ${remedy}`);
  };

  const whole = (lo: number, hi: number): [number, number] => [lo, hi];
  return {
    threads: n,
    split: (kernels, name, total, grain, a, toRange = whole) => {
      const fnIndex = bytes === null ? -1 : names.indexOf(name);
      if (fnIndex < 0) throw new Error(`simd pool: ${name} is not one of the pool's functions`);
      const fn = kernels[name] as unknown as (...a: number[]) => void;
      dispatch(fnIndex, name, 'MLM_SIMD_KERNELS=0 runs without them', (lo, hi) => fn(...a, lo, hi), total, grain, a, toRange, Infinity);
    },
    blasSlices: blas !== null && blasNote === undefined
      ? (total, grain, job, own, maxThreads) => dispatch(names.length, 'a batch of BLAS products', 'MLM_BLAS_THREADS=1 runs every product on one thread', own, total, grain, job, whole, maxThreads)
      : null,
    blasNote,
    async close() {
      closed = true;
      await Promise.all(workers.map((w) => w.terminate()));
    },
  };
}
