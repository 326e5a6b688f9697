// Threads for mlmkit's SIMD kernels (simd-wasm.ts): worker threads that each instantiate the same
// module on the wasm backend's shared memory, and a `WorkSplit` that cuts a kernel's range into
// one piece per thread, runs the first on the calling thread and waits for the rest.
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
// kernel computes each row (column, entry) the same way wherever the range is cut (kernels.c), so
// results do not depend on the number of threads.
//
// A piece is never smaller than the kernel's grain (a range under two grains runs on the calling
// thread alone: waking a worker costs tens of microseconds). The workers are unref'd: they never
// keep the process alive. Only for a shared memory (the backend's threaded build).
import { Worker } from 'node:worker_threads';
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

// The worker: compiles the module from its bytes (its own compiled code, shared with no other
// thread) on the memory it is sent, then serves pieces until exit. Its state word: 1 waiting, 2
// running a piece. A piece that throws counts as failed (the caller reports it) and is still
// marked done, so the caller never waits for it.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { bytes, memory, control, index, names, argsAt, maxArgs } = workerData;
const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory } });
const calls = names.map((n) => instance.exports[n]);
const ctl = new Int32Array(control);
const args = new Float64Array(control, argsAt, maxArgs);
let seen = Atomics.load(ctl, ${SEQ});
parentPort.postMessage('ready');
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
  /** Runs kernels on this pool's threads (see WorkSplit). */
  split: WorkSplit;
  close(): Promise<void>;
}

/**
 * Starts `threads - 1` workers on `memory` (which must be shared) running `module`. Resolves once
 * every worker has instantiated it.
 */
export async function startSimdPool(bytes: Uint8Array, memory: WebAssembly.Memory, names: readonly (keyof SimdExports)[], threads: number): Promise<SimdPool> {
  const n = Math.max(1, Math.min(MAX_THREADS, Math.floor(threads)));
  const control = new SharedArrayBuffer(CONTROL_BYTES);
  const ctl = new Int32Array(control);
  const args = new Float64Array(control, ARGS_AT, MAX_ARGS);
  const workers: Worker[] = [];
  try {
    for (let index = 0; index < n - 1; index++) {
      const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { bytes, memory, control, index, names, argsAt: ARGS_AT, maxArgs: MAX_ARGS }, execArgv: [] });
      workers.push(w);
      await new Promise<void>((resolve, reject) => {
        w.once('message', () => resolve());
        w.once('error', reject);
        w.once('exit', (code) => reject(new Error(`a SIMD kernel worker exited with code ${code}`)));
      });
      w.removeAllListeners('exit');
      w.removeAllListeners('error');
      w.unref();
    }
  } catch (err) {
    await Promise.all(workers.map((w) => w.terminate()));
    throw err;
  }
  const workerCount = workers.length;
  return {
    threads: n,
    split: (kernels, name, total, grain, a, toRange = (lo, hi) => [lo, hi]) => {
        const fnIndex = names.indexOf(name);
        if (fnIndex < 0) throw new Error(`simd pool: ${name} is not one of the pool's functions`);
        const own = kernels[name] as unknown as (...a: number[]) => void;
        if (total <= 0) return;
        const pieces = Math.min(workerCount + 1, Math.floor(total / Math.max(1, grain)));
        if (pieces < 2) {
          const [lo, hi] = toRange(0, total);
          own(...a, lo, hi);
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
          const [rlo, rhi] = hi > lo ? toRange(lo, hi) : [0, 0];
          ctl[RANGES + 2 * i] = rlo;
          ctl[RANGES + 2 * i + 1] = rhi;
        }
        const seq = (Atomics.add(ctl, SEQ, 1) + 1) | 0; // the Int32 the workers will read
        Atomics.notify(ctl, SEQ);
        let ownError: { err: unknown } | null = null;
        try {
          const [lo, hi] = toRange(0, Math.min(total, step));
          own(...a, lo, hi);
        } catch (err) {
          ownError = { err };
        }
        // Every worker finishes this call before the caller goes on, even after an error here.
        const since = Date.now();
        for (let i = 0; i < workerCount; i++) {
          for (let d = Atomics.load(ctl, DONE + i); d !== seq; d = Atomics.load(ctl, DONE + i)) {
            if (Atomics.wait(ctl, DONE + i, d, STUCK_MS) === 'timed-out' && Date.now() - since >= STUCK_MS) {
              const states = Array.from({ length: workerCount }, (_, w) => `${ctl[STATES + w]}/${ctl[DONE + w]}`);
              throw new Error(`mlmkit's SIMD kernel threads did not finish ${name} within ${STUCK_MS / 1000} s (call ${seq}; worker state/last call done ${states.join(', ')}); MLM_SIMD_KERNELS=0 runs without them`);
            }
          }
        }
        if (ownError !== null) throw ownError.err;
        if (Atomics.load(ctl, FAILED) > 0) {
          Atomics.store(ctl, FAILED, 0);
          throw new Error(`a thread of mlmkit's SIMD kernels failed in ${name}; MLM_SIMD_KERNELS=0 runs without them`);
        }
    },
    async close() {
      await Promise.all(workers.map((w) => w.terminate()));
    },
  };
}
