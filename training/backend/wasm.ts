// The wasm backend (@tensorflow/tfjs-backend-wasm, XNNPACK) in Node.js.
//
// The .wasm binaries are located in node_modules next to the package's main file, so the
// backend loads wherever mlmkit is installed or run from. SIMD is used when the runtime validates
// it (Node 20 does). Threads: see `threadedInit` below; MLM_WASM_THREADS=1 keeps one thread. The
// device string says how many threads XNNPACK got. The missing UnsortedSegmentSum kernel
// (the gradient of gather) is registered before the backend starts (segment-sum-wasm.ts), and
// GatherV2 with batchDims > 0, wrong as shipped, is routed to a correct version (gather-wasm.ts),
// which also serves every other gather of numbers, faster. Matrix products go to the machine's BLAS
// library when one is found (blas.ts, matmul-blas.ts; the device string names it, and a note says
// why not), else batched and transposed ones through XNNPACK (batch-matmul-wasm.ts). Sums over
// leading axes add rows in place (sum-wasm.ts); a clone shares its input's memory instead of copying
// it (identity-wasm.ts). mlmkit's fused kernels run in a WebAssembly SIMD
// module of its own on the backend's memory (simd-wasm.ts), on as many threads (simd-pool.ts),
// whose workers also take ranges of the attention's batches of small BLAS products.
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import workerThreads, { type Worker } from 'node:worker_threads';
import path from 'node:path';
import { InputError } from '../../common/errors.ts';
import { BackendUnavailable, assertSharedCore, firstLine, resolveInstalled, type LoadedBackend, type Tf } from './common.ts';
import { registerWasmBatchMatMul, SingleThreadXnn } from './batch-matmul-wasm.ts';
import { fixWasmGatherBatchDims } from './gather-wasm.ts';
import { registerWasmUnsortedSegmentSum } from './segment-sum-wasm.ts';
import { registerWasmSumLeadingAxes } from './sum-wasm.ts';
import { registerWasmSharedIdentity } from './identity-wasm.ts';
import { blasOverrides, openBlas, type Blas } from './blas.ts';
import { setWasmBlas } from './matmul-blas.ts';
import { backendMemory, clearSimdKernels, loadSimdKernels, onThisThread, registerSimdKernels, SIMD_FUNCTIONS } from './simd-wasm.ts';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { startSimdPool, type SimdPool } from './simd-pool.ts';

const PKG = '@tensorflow/tfjs-backend-wasm';
const BINARIES = ['tfjs-backend-wasm.wasm', 'tfjs-backend-wasm-simd.wasm', 'tfjs-backend-wasm-threaded-simd.wasm'] as const;

export interface WasmOptions {
  /** The BLAS library for matrix products: a file, 'none', or undefined to search (blas.ts). */
  blas?: string;
  /** BLAS threads; default one per CPU this process may use, at most 8. */
  blasThreads?: number;
}

export async function loadWasm(tf: Tf, opts: WasmOptions = {}): Promise<LoadedBackend> {
  const hint = `reinstall it: npm install ${PKG}`;
  const main = resolveInstalled(PKG);
  if (main === null) throw new BackendUnavailable(`${PKG} not installed`, hint);
  assertSharedCore(PKG, main);
  const dir = path.dirname(main);
  const missing = BINARIES.filter((b) => !existsSync(path.join(dir, b)));
  if (missing.length > 0) {
    throw new BackendUnavailable(`${PKG} is missing ${missing.join(', ')} in ${dir}`, hint);
  }

  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  let threads = wasmThreads(process.env);
  let note: string | undefined;
  // The threaded build needs a folder for its worker scripts, and gets a single-threaded module
  // beside it for products of small slices; if either cannot be had, one thread it is.
  let folder: string | null = null;
  let single: SingleThreadXnn | null = null;
  if (threads > 1) {
    try {
      folder = workerFolder();
      single = await SingleThreadXnn.create(main);
    } catch (err) {
      note = `wasm runs on one thread: its threaded build could not be prepared (${firstLine(err)})`;
      threads = 1;
    }
  }
  registerWasmUnsortedSegmentSum(tf);
  fixWasmGatherBatchDims(tf);
  registerWasmBatchMatMul(tf, single);
  registerWasmSumLeadingAxes(tf);
  registerWasmSharedIdentity(tf);
  try {
    // Harmless once the backend is up; throws only after an earlier failed initialisation.
    wasm.setWasmPaths(dir + path.sep);
  } catch (err) {
    throw new BackendUnavailable(`wasm: ${firstLine(err)}`, hint);
  }
  const ok = threads > 1 ? await threadedInit(tf, wasm, threads, folder!) : await tf.setBackend('wasm');
  if (!ok) throw new BackendUnavailable('the wasm module failed to initialise (TF.js printed why above)', hint);
  const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
  const actual = wasm.getThreadsCount();
  const { blas, matmuls, blasNote } = startBlas(tf, opts.blas, opts.blasThreads ?? defaultBlasThreads());
  const { fused, fusedNote } = await startSimdKernels(tf, actual, blas);
  const notes = [note, blasNote, fusedNote].filter((n): n is string => n !== undefined);
  return {
    tfBackend: tf.getBackend(),
    device: `CPU (wasm, ${simd ? 'SIMD' : 'no SIMD'}, ${actual} thread${actual === 1 ? '' : 's'}; matmuls: ${matmuls}; fused kernels: ${fused})`,
    note: notes.length > 0 ? notes.join('; ') : undefined,
  };
}

/** The BLAS library's threads unless told otherwise: one per CPU this process may use, at most 8. */
export function defaultBlasThreads(): number {
  return Math.max(1, Math.min(8, os.availableParallelism()));
}

/**
 * Opens the BLAS library for the wasm backend's matrix products (blas.ts, matmul-blas.ts) with
 * `threads` threads, or leaves them on XNNPACK; says which for the device string, and why in a note
 * when BLAS is not used or runs with OpenBLAS's kernel choice overridden by the environment.
 */
function startBlas(tf: Tf, library: string | undefined, threads: number): { blas: Blas | null; matmuls: string; blasNote?: string } {
  const opened = openBlas({ library, threads });
  // No split until startSimdKernels has the new pool's threads (the old pool is about to close).
  setWasmBlas(tf, opened.blas, null);
  if (opened.blas === null) {
    return { blas: null, matmuls: 'XNNPACK', blasNote: `matmuls on XNNPACK: ${opened.reason}` };
  }
  const t = opened.blas.threads;
  const matmuls = `${opened.blas.name}${t === null ? '' : `, ${t} thread${t === 1 ? '' : 's'}`}`;
  // OpenBLAS reads these from the process environment when it is loaded.
  const overrides = /OpenBLAS/.test(opened.blas.name) ? blasOverrides(process.env) : [];
  return {
    blas: opened.blas,
    matmuls,
    blasNote: overrides.length > 0 ? `${overrides.join(' and ')} set in the environment: OpenBLAS uses those instead of its choice for this CPU (unset them for full speed)` : undefined,
  };
}

let simdPool: SimdPool | null = null;

/**
 * Loads mlmkit's SIMD kernels (simd-wasm.ts) on the backend's memory and registers them, or
 * leaves the composites in place (unregistering kernels a previous backend instance registered)
 * and says why in a note. On the threaded build a pool of as many threads (simd-pool.ts) runs
 * them, and its workers open `blas` too when it runs on several threads, taking ranges of the
 * batches of small products (matmul-blas.ts).
 */
async function startSimdKernels(tf: Tf, threads: number, blas: Blas | null): Promise<{ fused: string; fusedNote?: string }> {
  await simdPool?.close();
  simdPool = null;
  const loaded = loadSimdKernels(tf, process.env);
  const memory = 'kernels' in loaded ? loaded.memory : backendMemory(tf.backend() as unknown as BackendWasm);
  const shared = memory !== null && typeof SharedArrayBuffer !== 'undefined' && memory.buffer instanceof SharedArrayBuffer;
  const blasThreads = blas?.threads ?? 1;
  const notes: string[] = [];
  if (shared && threads > 1 && ('kernels' in loaded || blasThreads > 1)) {
    try {
      simdPool = await startSimdPool({
        bytes: 'kernels' in loaded ? loaded.bytes : null,
        memory,
        names: SIMD_FUNCTIONS,
        threads,
        blas: blas !== null && blasThreads > 1 ? blas.worker : null,
      });
      if (simdPool.blasNote !== undefined) notes.push(`attention's products on the calling thread only: ${simdPool.blasNote}`);
    } catch (err) {
      notes.push(`${'kernels' in loaded ? "mlmkit's SIMD kernels and the attention's products run" : "the attention's products run"} on one thread: ${firstLine(err)}`);
    }
  }
  if (blas !== null) setWasmBlas(tf, blas, simdPool?.blasSlices ?? null);
  if ('kernels' in loaded) {
    registerSimdKernels(tf, loaded.kernels, simdPool?.split ?? onThisThread);
    const t = simdPool?.threads ?? 1;
    return { fused: `mlmkit SIMD, ${t} thread${t === 1 ? '' : 's'}`, fusedNote: notes.length > 0 ? notes.join('; ') : undefined };
  }
  clearSimdKernels(tf);
  notes.unshift(`mlmkit's SIMD kernels not loaded (${loaded.reason}): TF.js composites instead`);
  return { fused: 'none', fusedNote: notes.join('; ') };
}

/**
 * XNNPACK threads for the wasm backend: MLM_WASM_THREADS when set (1 = the single-threaded build),
 * else one per CPU the process may use; never more than those CPUs (the module's own cap) or 8
 * (the pool the package's build starts).
 */
export function wasmThreads(env: NodeJS.ProcessEnv): number {
  const raw = env.MLM_WASM_THREADS?.trim();
  if (raw !== undefined && raw !== '') {
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 1 || n > 8) {
      throw new InputError(`MLM_WASM_THREADS must be a whole number from 1 to 8, got '${raw}'`);
    }
    return Math.min(n, os.availableParallelism());
  }
  return Math.max(1, Math.min(8, os.availableParallelism()));
}

/**
 * The folder for the worker scripts: one per user in the temp folder, reused across runs, if it is
 * a real folder that this user owns and nobody else may write to; else a private one for this
 * process (removed at exit), since a script there is run.
 */
function workerFolder(): string {
  const uid = process.getuid?.() ?? -1;
  const shared = path.join(os.tmpdir(), `mlmkit-wasm-${uid >= 0 ? uid : 'user'}`);
  try {
    mkdirSync(shared, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const st = lstatSync(shared);
  if (st.isDirectory() && (uid < 0 || (st.uid === uid && (st.mode & 0o022) === 0))) return shared;
  const own = mkdtempSync(path.join(os.tmpdir(), 'mlmkit-wasm-'));
  process.on('exit', () => rmSync(own, { recursive: true, force: true }));
  return own;
}

/**
 * Starts the package's threaded build (XNNPACK on a pthread pool of worker_threads) in Node.js,
 * which the package itself never picks there (its WASM_HAS_MULTITHREAD_SUPPORT flag answers false
 * under Node, tfjs issue 3830). Three things stand in the way, each bridged for the duration of
 * `setBackend` only:
 *   - the pthread worker script and the module source reach the workers as Blob URLs, which Node's
 *     Worker cannot open: the Blob parts are written once to files (named by their hash, in a
 *     per-user temp folder) and the "Blob" handed on is a plain object carrying that path, which a
 *     prologue in each file turns back into the path on the worker side;
 *   - the module source is a bundle fragment that refers to the bundle's `require$$N` imports and
 *     `commonjsGlobal`: the prologue defines them;
 *   - the C++ side caps the pool at half the logical CPUs (it assumes two hyper-threads per core),
 *     so on a 2-CPU machine it would take one thread: `os.cpus()` reports each CPU twice meanwhile;
 *   - the workers would inherit this process's Node flags, which are not meant for them.
 */
async function threadedInit(tf: Tf, wasm: typeof import('@tensorflow/tfjs-backend-wasm'), threads: number, folder: string): Promise<boolean> {
  const prologue = 'var require$$0=require("fs"),require$$1=require("path"),require$$3=require("perf_hooks"),'
    + 'require$$4=require("os"),commonjsGlobal=globalThis;'
    + 'if(typeof URL!=="undefined"){URL.createObjectURL=function(o){return o.mlmkitPath};URL.revokeObjectURL=function(){}}\n';
  class FileBlob {
    readonly mlmkitPath: string;
    constructor(parts: unknown[]) {
      const text = prologue + parts.map(String).join('');
      const file = path.join(folder, `${createHash('sha256').update(text).digest('hex').slice(0, 16)}.cjs`);
      if (!existsSync(file) || readFileSync(file, 'utf8') !== text) {
        const temp = `${file}.${process.pid}.tmp`;
        writeFileSync(temp, text);
        renameSync(temp, file);
      }
      this.mlmkitPath = file;
    }
  }
  const g = globalThis as { Worker?: unknown };
  const saved = {
    blob: globalThis.Blob, createObjectURL: URL.createObjectURL, cpus: os.cpus, Worker: workerThreads.Worker,
    hadGlobalWorker: 'Worker' in g, globalWorker: g.Worker,
  };
  tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', true);
  wasm.setThreadsCount(threads);
  (globalThis as { Blob: unknown }).Blob = FileBlob;
  URL.createObjectURL = (b: unknown) => (b as FileBlob).mlmkitPath;
  os.cpus = () => { const c = saved.cpus(); return [...c, ...c]; };
  // Workers inherit the process's Node flags by default; flags such as --input-type=module (or a
  // loader) are for the main script and break the plain CommonJS worker script.
  workerThreads.Worker = class extends saved.Worker {
    constructor(file: string | URL, options?: workerThreads.WorkerOptions) { super(file, { ...options, execArgv: [] }); }
  };
  let ok = false;
  try {
    ok = await tf.setBackend('wasm');
    if (ok) {
      // The pthread pool's workers would keep Node's event loop alive after the work is done
      // (the process would never exit): they only serve XNNPACK calls made from this thread.
      const pool = (tf.backend() as unknown as { wasm: { PThread?: { unusedWorkers: Worker[]; runningWorkers: Worker[] } } }).wasm.PThread;
      for (const w of [...(pool?.unusedWorkers ?? []), ...(pool?.runningWorkers ?? [])]) w.unref();
    }
    return ok;
  } finally {
    globalThis.Blob = saved.blob;
    URL.createObjectURL = saved.createObjectURL;
    os.cpus = saved.cpus;
    workerThreads.Worker = saved.Worker;
    // The module's glue sets a global Worker (to the class above) for its own use.
    if (saved.hadGlobalWorker) g.Worker = saved.globalWorker;
    else delete g.Worker;
    if (!ok) tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
  }
}
