// Finding and calling the machine's BLAS library (single-precision GEMM) from Node.js.
//
// The library is opened with koffi (an FFI package that ships prebuilt binaries for Linux, macOS
// and Windows inside its npm package, so no compiler or install script is needed). `cblas_sgemm`
// receives Float32Array views straight into the caller's memory (the wasm backend's heap): koffi
// passes a typed array's data pointer, byte offset included, without copying in either direction.
//
// Discovery, first that loads wins:
//   Linux   libopenblas.so.0, libopenblas.so, libopenblas64.so.0 (Debian's and Ubuntu's build with
//           64-bit integers), libopenblas64_.so.0 (Fedora's), libmkl_rt.so.2, libmkl_rt.so
//   macOS   the Accelerate framework (always present)
//   Windows openblas.dll, libopenblas.dll, mkl_rt.2.dll (where on the DLL search path)
// or the one file the caller names (`library`: a path), or none at all (`library: 'none'`). The
// choice is an option: environment variables are read at the command line's edge, not here.
// Nothing found is not an error: the caller keeps its own matmuls and says why (`reason`).
//
// Integer width: an OpenBLAS built with 64-bit integers (ILP64) takes every dimension and leading
// dimension as int64_t. Its symbols may carry a `64_` suffix (Fedora, Julia) or none (Debian's
// libopenblas64.so.0 exports plain `cblas_sgemm`), so the width is read from the build itself
// (`openblas_get_config()` lists USE64BITINT), and a `64_` suffix alone also means 64 bits. Passing
// 32-bit integers to such a build is undefined behaviour that often happens to work on x86-64.
// MKL's single library (mkl_rt) picks its integer width at its first call: LP64 unless the
// environment sets MKL_INTERFACE_LAYER=ILP64. mlmkit asks for LP64 with MKL_Set_Interface_Layer
// before any other MKL call, and reads the width from what it answers (the layer in force), so an
// MKL already set to ILP64 is called with 64-bit integers rather than misread. Tested with a small
// stand-in library that behaves as mkl_rt does here (tests/training/backend/blas-mkl.test.ts); no
// real MKL is installable on the development machine.
//
// Idle threads: after a call on several threads, OpenBLAS's own threads keep polling for work
// (sched_yield in a loop) for 2^28 cycles, about 0.1 s, before they sleep. On a machine with as
// many cores as threads that polling takes a core from mlmkit's own worker threads (simd-pool.ts),
// which run right after: on the 2-core EPYC a bert-mini step's SIMD kernels took about twice as
// long beside it (bias + GELU gradient 66 -> 34 ms, the attention's products split between two
// threads no faster than on one). So a library is loaded with OPENBLAS_THREAD_TIMEOUT=4 (2^4
// cycles: sleep at once; OpenBLAS reads it only when it is loaded), unless the process
// environment sets it already to a non-empty value; the variable is restored after loading, so
// nothing the process starts inherits mlmkit's value. Waking the sleeping threads costs nothing
// measurable: 2-thread sgemm on [4096, 256-1024] x [256-1024, 256-1024] ran at 247-351 GFLOP/s
// either way.
import { createRequire } from 'node:module';
import { resolve as resolvePath } from 'node:path';
import { firstLine } from './common.ts';

/** Row-major, no-transpose and transpose codes of the CBLAS interface. */
const ROW_MAJOR = 101;
const NO_TRANS = 111;
const TRANS = 112;

export interface BlasOptions {
  /** A library file to open instead of searching, or 'none' to use no BLAS. */
  library?: string;
  /** Threads for the library (where it lets them be set); default 1. */
  threads?: number;
}

/** An opened BLAS library. */
export interface Blas {
  /** What it is, e.g. 'OpenBLAS 0.3.21 (Cooperlake kernels)'. */
  readonly name: string;
  /** The file or name it was opened from. */
  readonly path: string;
  /** Its thread count (null where the library manages threads itself, e.g. Accelerate). */
  readonly threads: number | null;
  /**
   * c = alpha op(a) op(b) + beta c, row-major: op(a) is m x k, op(b) k x n, c m x n; a transposed
   * operand is stored as its transpose (k x m, n x k). The arrays may be views of any memory.
   */
  sgemm(
    transA: boolean, transB: boolean, m: number, n: number, k: number,
    alpha: number, a: Float32Array, lda: number, b: Float32Array, ldb: number,
    beta: number, c: Float32Array, ldc: number,
  ): void;
  /** Sets the library's thread count (no-op where it cannot be set). */
  setThreads(n: number): void;
  /** How another thread of this process opens the same library (simd-pool.ts). */
  readonly worker: WorkerBlas;
}

/** What a worker thread needs to open a library found here: koffi's file, the library, its symbols. */
export interface WorkerBlas {
  /** The koffi package's main file (a worker's `require` does not search from here). */
  koffi: string;
  library: string;
  /** Symbol suffix and integer type (`64_`, int64_t for ILP64 OpenBLAS). */
  suffix: string;
  int: 'int' | 'int64_t';
}

export type BlasResult = { blas: Blas; note?: string } | { blas: null; reason: string };

type Koffi = typeof import('koffi');
type KoffiLib = ReturnType<Koffi['load']>;

/** The library files searched on `platform`, in order (see the file header). */
function blasCandidates(platform: NodeJS.Platform): string[] {
  switch (platform) {
    case 'linux':
      return ['libopenblas.so.0', 'libopenblas.so', 'libopenblas64.so.0', 'libopenblas64_.so.0', 'libmkl_rt.so.2', 'libmkl_rt.so'];
    case 'darwin':
      return ['/System/Library/Frameworks/Accelerate.framework/Accelerate'];
    case 'win32':
      return ['openblas.dll', 'libopenblas.dll', 'mkl_rt.2.dll'];
    default:
      return ['libopenblas.so.0', 'libopenblas.so'];
  }
}

/** MKL_Set_Interface_Layer's values (mkl_service.h): 0 LP64, bit 0 ILP64 (bit 1: the GNU Fortran flag). */
const MKL_INTERFACE_LP64 = 0;
const MKL_INTERFACE_ILP64 = 1;

/** Symbol suffixes tried in each library: plain, then ILP64 OpenBLAS's `64_`. */
const SUFFIXES = ['', '64_'] as const;

/** koffi and its main file, or the reason it cannot be loaded (not installed, no binary for this platform). */
function loadKoffi(): { koffi: Koffi; file: string } | string {
  try {
    const require = createRequire(import.meta.url);
    return { koffi: require('koffi') as Koffi, file: require.resolve('koffi') };
  } catch (err) {
    return `the koffi package cannot be loaded (${firstLine(err)}); reinstall mlmkit's dependencies (npm ci)`;
  }
}

/** A function of `lib`, or null when the library has no such symbol. */
function optional(lib: KoffiLib, signature: string): ((...args: unknown[]) => unknown) | null {
  try {
    return lib.func(signature) as (...args: unknown[]) => unknown;
  } catch {
    return null;
  }
}

/** Wraps an opened library whose `cblas_sgemm<suffix>` exists; null when it does not. */
function wrap(lib: KoffiLib, path: string, s: string, threads: number, koffiFile: string): Blas | null {
  if (optional(lib, `void cblas_sgemm${s}()`) === null) return null;
  // MKL first: its interface layer can be chosen only before any other call into it.
  const mklLayer = optional(lib, 'int MKL_Set_Interface_Layer(int)');
  const layer = mklLayer !== null ? (mklLayer(MKL_INTERFACE_LP64) as number) : null;
  const openblasCore = optional(lib, `const char *openblas_get_corename${s}()`);
  const openblasConfig = optional(lib, `const char *openblas_get_config${s}()`);
  const config = openblasConfig !== null ? String(openblasConfig()) : null;
  const i = s === '64_' || (config !== null && /\bUSE64BITINT\b/.test(config)) || (layer !== null && layer > 0 && (layer & MKL_INTERFACE_ILP64) !== 0) ? 'int64_t' : 'int';
  const gemm = lib.func(`void cblas_sgemm${s}(int, int, int, ${i}, ${i}, ${i}, float, const float *, ${i}, const float *, ${i}, float, float *, ${i})`) as (...args: unknown[]) => unknown;
  const big = i === 'int64_t';
  const n = (x: number) => (big ? BigInt(x) : x);
  const openblasSet = optional(lib, `void openblas_set_num_threads${s}(int)`);
  const openblasGet = optional(lib, `int openblas_get_num_threads${s}()`);
  const mklSet = optional(lib, 'void MKL_Set_Num_Threads(int)');
  const mklGet = optional(lib, 'int MKL_Get_Max_Threads()');
  const mklVersion = optional(lib, 'void MKL_Get_Version_String(_Out_ char *buf, int len)');

  let name: string;
  let setThreads: (t: number) => void = () => {};
  let getThreads: () => number | null = () => null;
  if (config !== null) {
    const core = openblasCore !== null ? String(openblasCore()) : '';
    name = `${config.split(' ').slice(0, 2).join(' ')}${big ? ' ILP64' : ''}${core ? ` (${core} kernels)` : ''}`;
    if (openblasSet !== null && openblasGet !== null) {
      setThreads = (t) => openblasSet(t);
      getThreads = () => openblasGet() as number;
    }
  } else if (mklSet !== null && mklGet !== null) {
    const buf = Buffer.alloc(200);
    mklVersion?.(buf, buf.length);
    const text = buf.toString('latin1').replace(/\0.*$/s, '').trim();
    name = `${text ? text.replace(/^Intel\(R\) /, '').split(' Product')[0]! : 'Intel MKL'}${big ? ' ILP64' : ''}`;
    setThreads = (t) => mklSet(t);
    getThreads = () => mklGet() as number;
  } else if (/Accelerate/.test(path)) {
    name = 'Apple Accelerate';
  } else {
    name = `CBLAS from ${path}`;
  }
  setThreads(threads);
  return {
    name,
    path,
    get threads() { return getThreads(); },
    setThreads,
    worker: { koffi: koffiFile, library: path, suffix: s, int: i },
    sgemm(transA, transB, m, nn, k, alpha, a, lda, b, ldb, beta, c, ldc) {
      gemm(ROW_MAJOR, transA ? TRANS : NO_TRANS, transB ? TRANS : NO_TRANS, n(m), n(nn), n(k), alpha, a, n(lda), b, n(ldb), beta, c, n(ldc));
    },
  };
}

/**
 * Opens `file` with OPENBLAS_THREAD_TIMEOUT=4 in the process environment while it loads, unless
 * the process sets a timeout of its own (see the file header); other libraries ignore it. An empty
 * value is no timeout of its own (OpenBLAS reads it as 0, its default) and is put back after.
 * (OpenBLAS 0.3 reads no GOTO_ spelling of this variable.)
 */
function loadQuietly(koffi: Koffi, file: string): KoffiLib {
  const before = process.env.OPENBLAS_THREAD_TIMEOUT;
  const own = before !== undefined && before.trim() !== '';
  if (!own) process.env.OPENBLAS_THREAD_TIMEOUT = '4';
  try {
    return koffi.load(file);
  } finally {
    if (before === undefined) delete process.env.OPENBLAS_THREAD_TIMEOUT;
    else process.env.OPENBLAS_THREAD_TIMEOUT = before;
  }
}

const opened = new Map<string, Blas>();

/**
 * Opens the BLAS library the options ask for (see the file header). Never throws for a missing or
 * unusable library: the result says why there is none. Libraries stay loaded for the process;
 * asking again returns the same one (with `threads` applied).
 */
export function openBlas(opts: BlasOptions = {}, platform: NodeJS.Platform = process.platform): BlasResult {
  const threads = opts.threads ?? 1;
  const wanted = opts.library?.trim();
  if (wanted === 'none') return { blas: null, reason: 'BLAS switched off (none asked for)' };
  const loaded = loadKoffi();
  if (typeof loaded === 'string') return { blas: null, reason: loaded };
  const { koffi, file: koffiFile } = loaded;
  // A path is made absolute, so that the worker threads (simd-pool.ts) open the same file whatever
  // the working directory is by then; a bare name is left to the loader's search, as here.
  const file = wanted && /[\\/]/.test(wanted) ? resolvePath(wanted) : wanted;
  const failures: string[] = [];
  for (const f of file ? [file] : blasCandidates(platform)) {
    const known = opened.get(f);
    if (known !== undefined) {
      known.setThreads(threads);
      return { blas: known };
    }
    let lib: KoffiLib;
    try {
      lib = loadQuietly(koffi, f);
    } catch (err) {
      if (wanted) return { blas: null, reason: `${wanted} cannot be opened (${firstLine(err)})` };
      failures.push(f);
      continue;
    }
    let blas: Blas | null = null;
    for (const suffix of SUFFIXES) blas ??= wrap(lib, f, suffix, threads, koffiFile);
    if (blas !== null) {
      opened.set(f, blas);
      return { blas };
    }
    if (!wanted) failures.push(`${f} (no cblas_sgemm)`);
  }
  if (wanted) return { blas: null, reason: `${wanted} has no cblas_sgemm` };
  const install = platform === 'linux' ? '; install libopenblas0-pthread (Debian/Ubuntu) or openblas for fast matmuls' : '';
  return { blas: null, reason: `no BLAS library found (tried ${failures.join(', ')})${install}` };
}

/**
 * The settings in `env` that make OpenBLAS use another kernel or cache size than it would pick for
 * this CPU (it reads them when it is loaded), worth a note when set.
 */
export function blasOverrides(env: Readonly<Record<string, string | undefined>>): string[] {
  return ['OPENBLAS_CORETYPE', 'OPENBLAS_L2_SIZE']
    .filter((k) => env[k] !== undefined && env[k] !== '')
    .map((k) => `${k}=${env[k]}`);
}
