// Matrix products of the wasm backend through the machine's BLAS (blas.ts), on the backend's own
// heap: BatchMatMul (every transpose flag, batched operands, one side broadcast) and _FusedMatMul
// (with a bias and any activation but prelu).
//
// The wasm backend keeps every tensor in its module's linear memory (a SharedArrayBuffer in the
// threaded build). A product here takes Float32Array views of the operands and of a fresh output
// at their heap offsets and hands them to `cblas_sgemm`, which reads and writes that memory in
// place: no copies, and the transpose flags are the library's own (a transposed operand is read
// with the other leading dimension, never copied). A batch of products is one sgemm call per
// slice. Batches of small slices (attention, [T, hs] x [hs, T]) run each slice on one library
// thread, and where a pool of worker threads that opened the same library is given
// (`setWasmBlas`'s `split`, simd-pool.ts) the batch is cut into ranges of slices, one range per
// thread, up to the library's thread count: each slice is still one single-threaded sgemm call, so
// its bits do not depend on where it ran.
//
// Anything else (other dtypes, broadcasting of both sides, prelu, a bias that is not one value per
// output column) is left to the kernel registered before (XNNPACK, see
// batch-matmul-wasm.ts), as is everything while no library is active (`setWasmBlas(tf, null)`).
// Results equal the XNNPACK kernels' up to float32 summation order
// (tests/training/backend/blas.test.ts compares both).
import type { KernelConfig, KernelFunc, NamedAttrMap, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { productOfNothing, productPlan, SMALL_SLICE_MACS, type ProductPlan } from './batch-matmul-wasm.ts';
import type { Blas } from './blas.ts';
import type { Tf } from './common.ts';

const WRAPPED = Symbol.for('mlmkit.wasmBlasMatMul');

type KernelArgs = { inputs: NamedTensorInfoMap; backend: unknown; attrs?: NamedAttrMap };

/** The parts of BackendWasm and its Emscripten module used here (not in the typings). */
interface WasmBackendInternals {
  wasm: { HEAPF32: Float32Array; wasmMemory?: WebAssembly.Memory };
  dataIdMap: { get(dataId: object): { memoryOffset: number } };
  makeOutput(shape: number[], dtype: 'float32'): TensorInfo;
}

/**
 * Runs slices [0, total) of a batch of products in ranges of at least `grain` slices, at most
 * `maxThreads` of them: `own(lo, hi)` on the calling thread, the other ranges on worker threads
 * that run the same product on their range (`job`: transA, transB, M, N, K, lda, ldb, and the byte
 * offset and per-slice byte step of a, b and c; see simd-pool.ts).
 */
export type SliceSplit = (total: number, grain: number, job: number[], own: (lo: number, hi: number) => void, maxThreads: number) => void;

/** The library products go to; null: the previously registered kernels run. */
let active: Blas | null = null;
/** Worker threads for batches of small slices and the library they opened, or null: the calling thread runs them all. */
let slices: { split: SliceSplit; library: string } | null = null;

/**
 * The least work (multiply-adds) worth waking a worker thread for: a range of slices is at least
 * this much (~0.05 ms at one thread's 40 GFLOP/s on [128, 64] x [64, 128] slices).
 */
const SPLIT_MACS = 1 << 20;

/**
 * The wasm module's memory as it is now. The threaded build's module refreshes its HEAP views
 * lazily after the memory grows, so its Memory object is asked first.
 */
function heapBuffer(backend: WasmBackendInternals): ArrayBufferLike {
  return backend.wasm.wasmMemory?.buffer ?? backend.wasm.HEAPF32.buffer;
}

/**
 * Runs the planned product into a new output tensor; `prepare(c, i)` may fill slice i of the
 * output before the product is added to it (beta = 1), for a bias.
 */
function run(
  blas: Blas, backend: WasmBackendInternals, a: TensorInfo, b: TensorInfo, transposeA: boolean, transposeB: boolean,
  p: ProductPlan, prepare?: (c: Float32Array) => void,
): TensorInfo {
  const nothing = productOfNothing(backend as unknown as BackendWasm, p, prepare);
  if (nothing !== null) return nothing;
  const { M, K, N, batchA, batchB, batch } = p;
  const out = backend.makeOutput([batch, M, N], 'float32');
  // Views after makeOutput: its allocation may have grown (and so replaced) the memory's buffer.
  const buffer = heapBuffer(backend);
  const at = (x: TensorInfo) => backend.dataIdMap.get(x.dataId).memoryOffset >>> 0;
  const aAt = at(a);
  const bAt = at(b);
  const cAt = at(out);
  const lda = transposeA ? M : K;
  const ldb = transposeB ? K : N;
  // Many small slices (attention): one library thread each, since waking the library's other
  // threads for every slice costs more than it saves. OpenBLAS 0.3.21, [128, 64] x [64, 128], 2-core
  // EPYC: 0.07-0.08 ms on one thread, 0.28-0.37 ms on two. The batch is cut between threads instead.
  const macs = M * K * N;
  const threads = batch > 1 && macs <= SMALL_SLICE_MACS ? blas.threads : null;
  if (threads !== null && threads > 1) blas.setThreads(1);
  const aStep = batchA === 1 ? 0 : M * K * 4;
  const bStep = batchB === 1 ? 0 : K * N * 4;
  const cStep = M * N * 4;
  const own = (lo: number, hi: number) => {
    for (let i = lo; i < hi; i++) {
      const av = new Float32Array(buffer, aAt + i * aStep, M * K);
      const bv = new Float32Array(buffer, bAt + i * bStep, K * N);
      const cv = new Float32Array(buffer, cAt + i * cStep, M * N);
      prepare?.(cv);
      blas.sgemm(transposeA, transposeB, M, N, K, 1, av, lda, bv, ldb, prepare ? 1 : 0, cv, N);
    }
  };
  try {
    // Only with workers that opened this same library (a test may switch libraries).
    if (slices !== null && slices.library === blas.worker.library && threads !== null && threads > 1 && prepare === undefined) {
      const job = [Number(transposeA), Number(transposeB), M, N, K, lda, ldb, aAt, aStep, bAt, bStep, cAt, cStep];
      slices.split(batch, Math.ceil(SPLIT_MACS / macs), job, own, threads);
    } else {
      own(0, batch);
    }
  } finally {
    if (threads !== null && threads > 1) blas.setThreads(threads);
  }
  return { ...out, shape: p.outShape };
}

function batchMatMulBlas(tf: Tf, blas: Blas, args: KernelArgs): TensorInfo | null {
  const transposeA = Boolean(args.attrs?.transposeA);
  const transposeB = Boolean(args.attrs?.transposeB);
  const a = args.inputs.a!;
  const b = args.inputs.b!;
  const p = productPlan(tf, a, b, transposeA, transposeB);
  if (p === null) return null;
  return run(blas, args.backend as WasmBackendInternals, a, b, transposeA, transposeB, p);
}

/** The activations of _FusedMatMul applied here, in place, as TF.js defines them. */
const ACTIVATIONS: Record<string, (c: Float32Array, alpha: number) => void> = {
  linear: () => {},
  relu: (c) => { for (let i = 0; i < c.length; i++) if (c[i]! < 0) c[i] = 0; },
  relu6: (c) => { for (let i = 0; i < c.length; i++) c[i] = Math.min(Math.max(c[i]!, 0), 6); },
  elu: (c) => { for (let i = 0; i < c.length; i++) if (c[i]! < 0) c[i] = Math.expm1(c[i]!); },
  sigmoid: (c) => { for (let i = 0; i < c.length; i++) c[i] = 1 / (1 + Math.exp(-c[i]!)); },
  leakyrelu: (c, alpha) => { for (let i = 0; i < c.length; i++) if (c[i]! < 0) c[i] = c[i]! * alpha; },
};

function fusedMatMulBlas(tf: Tf, blas: Blas, args: KernelArgs): TensorInfo | null {
  const { a, b, bias, preluActivationWeights } = args.inputs;
  const activation = ACTIVATIONS[String(args.attrs?.activation ?? 'linear')];
  if (preluActivationWeights != null || activation === undefined) return null;
  const transposeA = Boolean(args.attrs?.transposeA);
  const transposeB = Boolean(args.attrs?.transposeB);
  const p = productPlan(tf, a!, b!, transposeA, transposeB);
  if (p === null) return null;
  const backend = args.backend as WasmBackendInternals;
  let prepare: ((c: Float32Array) => void) | undefined;
  if (bias != null) {
    const size = tf.util.sizeFromShape(bias.shape);
    if (bias.dtype !== 'float32' || !(size === p.N || size === 1) || bias.shape.length > 1) return null;
    const biasAt = backend.dataIdMap.get(bias.dataId).memoryOffset >>> 0;
    // The bias row, copied out once (the heap's buffer may change when the output is allocated).
    const row = new Float32Array(p.N);
    const src = new Float32Array(heapBuffer(backend), biasAt, size);
    if (size === 1) row.fill(src[0]!);
    else row.set(src);
    prepare = (c) => {
      for (let r = 0; r < p.M; r++) c.set(row, r * p.N);
    };
  }
  const out = run(blas, backend, a!, b!, transposeA, transposeB, p, prepare);
  const at = backend.dataIdMap.get(out.dataId).memoryOffset >>> 0;
  activation(new Float32Array(heapBuffer(backend), at, p.batch * p.M * p.N), Number(args.attrs?.leakyreluAlpha ?? 0.2));
  return out;
}

/** Wraps the registered wasm kernel `name` once, so that `take` runs first while a library is active. */
function wrapKernel(tf: Tf, name: string, take: (tf: Tf, blas: Blas, args: KernelArgs) => TensorInfo | null): void {
  const registered = tf.getKernel(name, 'wasm');
  if (registered === undefined) return;
  const previous = registered.kernelFunc as KernelFunc & { [WRAPPED]?: true };
  if (previous[WRAPPED]) return;
  const kernelFunc = ((args: KernelArgs) => {
    const out = active !== null ? take(tf, active, args) : null;
    return out ?? previous(args as Parameters<KernelFunc>[0]);
  }) as KernelFunc & { [WRAPPED]?: true };
  kernelFunc[WRAPPED] = true;
  const config: KernelConfig = { ...registered, kernelFunc };
  tf.unregisterKernel(name, 'wasm');
  tf.registerKernel(config);
}

/**
 * Routes the wasm backend's BatchMatMul and _FusedMatMul to `blas` (null: back to the kernels
 * registered before, XNNPACK), with `split` cutting batches of small slices between threads that
 * opened `blas`'s library (null: all on the calling thread; left out: the threads set before, used
 * while the library is theirs). Call after the other wasm kernels are registered; the wrappers are
 * installed once per process, later calls only switch the library.
 */
export function setWasmBlas(tf: Tf, blas: Blas | null, split?: SliceSplit | null): void {
  wrapKernel(tf, 'BatchMatMul', batchMatMulBlas);
  wrapKernel(tf, '_FusedMatMul', fusedMatMulBlas);
  active = blas;
  if (blas === null) slices = null;
  else if (split !== undefined) slices = split !== null ? { split, library: blas.worker.library } : null;
}

/** The library the wasm products currently go to, or null. */
export function wasmBlas(): Blas | null {
  return active;
}
