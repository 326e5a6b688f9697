// A faster BatchMatMul for the wasm backend: every product goes through XNNPACK.
//
// tfjs-backend-wasm 4.22's C++ BatchMatMul (batch_mat_mul_impl.cc) uses XNNPACK's fully-connected
// operator only for one 2-D product without transpose flags; everything else (a batch of
// products, or either transpose flag) falls to `slow_batch_matmul`, a scalar blocked loop that
// runs at ~1.5 GFLOP/s against ~25 GFLOP/s for XNNPACK. BERT's attention products
// [B*nh, T, hs] x [B*nh, hs, T] and their gradients are all batched, and took a third of a
// bert-mini training step (3.2 of 9.9 s at batch 32 x 128).
//
// This kernel runs such a product as `batch` 2-D XNNPACK products on the wasm heap, without copying
// the operands: each slice of a, b and the output is registered with the wasm module as a tensor
// of its own (an id pointing into the batched tensor's memory), multiplied by the module's own
// BatchMatMul entry point (which takes its XNNPACK path for [1, M, K] x [1, K, N]), and the ids are
// released again (which also frees the XNNPACK operator cached on the slice of b). A transposed
// operand is first transposed into a temporary by the wasm Transpose kernel (a copy, ~7 ms per
// million elements) so that every product is flag-free.
// Measured on bert-mini, batch 32 x 128 (2-core EPYC, shared): the 24 attention products of a
// training step (forward and backward) 3.2 s -> 0.4 s, transposes included; the step ~9.9 s -> ~7 s.
//
// With the threaded build (wasm.ts), each XNNPACK call splits its work over the pthread pool and
// waits for every worker, which costs more than the work itself for the small slices of attention
// ([T, hs] x [hs, T]): a [32, 4, 128, 64] x [32, 4, 64, 128] product took ~100 ms on 2 threads
// against ~17 ms on one, on a 2-core machine with another process running. Products whose slices
// are that small therefore run on a second, single-threaded instance of the package's SIMD module
// (`SingleThreadXnn`), the operands copied in and the result copied out (~1 ms per 4 MB).
//
// Products with nothing to multiply (an empty output, or K = 0: zeros) are answered here, since the
// shipped kernel gets both wrong (`productOfNothing`). Everything else (non-float32 operands,
// broadcasting other than one side with batch 1) is left to the shipped kernel. Results equal the
// shipped kernel's up to float32 summation order (tests/training/backend.test.ts compares both).
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { KernelConfig, KernelFunc, NamedAttrMap, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { Tf } from './common.ts';

const WRAPPED = Symbol.for('mlmkit.wasmBatchMatMul');

type KernelArgs = { inputs: NamedTensorInfoMap; backend: unknown; attrs?: NamedAttrMap };

/** The parts of the Emscripten module and of BackendWasm this kernel uses (not in the typings). */
interface WasmModule {
  cwrap(name: string, ret: null, args: string[]): (...args: number[]) => void;
  _malloc(bytes: number): number;
  _free(ptr: number): void;
  HEAP32: Int32Array;
  HEAPF32: Float32Array;
  tfjs: { registerTensor(id: number, size: number, offset: number): void; disposeData(id: number): void };
}
interface WasmBackendInternals {
  wasm: WasmModule;
  dataIdNextNumber: number;
  dataIdMap: { get(dataId: object): { memoryOffset: number } };
  makeOutput(shape: number[], dtype: 'float32'): TensorInfo;
  disposeData(dataId: object, force?: boolean): boolean;
}

// The module's `BatchMatMul(a_id, a_shape*, a_rank, b_id, b_shape*, b_rank, transpose_a,
// transpose_b, out_id)`, with the shapes passed as heap pointers, one wrapper per module.
const entryPoints = new WeakMap<WasmModule, (...args: number[]) => void>();
function batchMatMulEntry(wasm: WasmModule): (...args: number[]) => void {
  let f = entryPoints.get(wasm);
  if (f === undefined) {
    f = wasm.cwrap('BatchMatMul', null, ['number', 'number', 'number', 'number', 'number', 'number', 'number', 'number', 'number']);
    entryPoints.set(wasm, f);
  }
  return f;
}

/**
 * out[i] = a[i] b[i] for i < batch, all row-major float32 on the wasm heap at the given byte
 * offsets: a [batch or 1, M, K], b [batch or 1, K, N], out [batch, M, N]. A side with batch 1 is
 * used for every i.
 */
function xnnSlices(
  wasm: WasmModule,
  nextId: () => number,
  a: { offset: number; batch: number },
  b: { offset: number; batch: number },
  out: number,
  dims: { batch: number; M: number; K: number; N: number },
): void {
  const { batch, M, K, N } = dims;
  const matMul = batchMatMulEntry(wasm);
  const shapes = wasm._malloc(24) >>> 0; // int32 [1, M, K] then [1, K, N]
  wasm.HEAP32.set([1, M, K, 1, K, N], shapes >>> 2);
  const register = (offset: number, size: number): number => {
    const id = nextId();
    wasm.tfjs.registerTensor(id, size, offset);
    return id;
  };
  // A b shared by every slice keeps one id, so XNNPACK packs it once.
  const sharedB = b.batch === 1 ? register(b.offset, K * N) : 0;
  try {
    for (let i = 0; i < batch; i++) {
      const aId = register(a.offset + (a.batch === 1 ? 0 : i * M * K * 4), M * K);
      const bId = sharedB || register(b.offset + i * K * N * 4, K * N);
      const outId = register(out + i * M * N * 4, M * N);
      matMul(aId, shapes, 3, bId, shapes + 12, 3, 0, 0, outId);
      // Unregistering only drops the ids (and the XNNPACK operator cached on bId): the memory
      // belongs to the batched tensors.
      wasm.tfjs.disposeData(aId);
      if (!sharedB) wasm.tfjs.disposeData(bId);
      wasm.tfjs.disposeData(outId);
    }
  } finally {
    if (sharedB) wasm.tfjs.disposeData(sharedB);
    wasm._free(shapes);
  }
}

/** Slices of at most this many multiply-adds go to the single-threaded module (see the header). */
export const SMALL_SLICE_MACS = 1 << 21;

/**
 * A private single-threaded instance of tfjs-backend-wasm's SIMD module, used only for products of
 * many small slices: operands are copied into its heap (into scratch buffers that grow as needed),
 * multiplied slice by slice through XNNPACK, and the result copied back.
 */
export class SingleThreadXnn {
  private scratch = 0;
  private scratchBytes = 0;
  private ids = 1;
  private constructor(private readonly wasm: WasmModule & { HEAPF32: Float32Array }) {}

  private static instance: Promise<SingleThreadXnn> | null = null;

  /** The process's one instance (a few ms to start; the .wasm file sits in the package). */
  static create(packageMain: string): Promise<SingleThreadXnn> {
    SingleThreadXnn.instance ??= SingleThreadXnn.instantiate(packageMain).catch((err: unknown) => {
      SingleThreadXnn.instance = null; // a later call may try again
      throw err;
    });
    return SingleThreadXnn.instance;
  }

  private static async instantiate(packageMain: string): Promise<SingleThreadXnn> {
    const require = createRequire(packageMain);
    const glue = require.resolve('@tensorflow/tfjs-backend-wasm/wasm-out/tfjs-backend-wasm-simd.js');
    const factory = require(glue) as (m: object) => Promise<WasmModule & { HEAPF32: Float32Array; _init(): void }>;
    // The glue's epilogue looks for a global of its own name (it expects to be the bundle's).
    const g = globalThis as { WasmBackendModule?: unknown };
    const had = 'WasmBackendModule' in g;
    if (!had) g.WasmBackendModule = {};
    try {
      const wasm = await factory({ locateFile: (file: string) => path.join(path.dirname(glue), file) });
      wasm._init();
      // The tfjs entry points the backend normally wraps (backend_wasm.ts does the same).
      const entry = (name: string) => wasm.cwrap(name, null, ['number', 'number', 'number']);
      wasm.tfjs = { registerTensor: entry('register_tensor'), disposeData: entry('dispose_data') };
      return new SingleThreadXnn(wasm);
    } finally {
      if (!had) delete g.WasmBackendModule;
    }
  }

  /** out[i] = a[i] b[i] as in xnnSlices, with a, b and out given as views of the caller's heap. */
  run(a: Float32Array, aBatch: number, b: Float32Array, bBatch: number, out: Float32Array, dims: { batch: number; M: number; K: number; N: number }): void {
    const bytes = (a.length + b.length + out.length) * 4;
    if (bytes > this.scratchBytes) {
      if (this.scratch) this.wasm._free(this.scratch);
      this.scratch = 0;
      this.scratchBytes = 0;
      const at = this.wasm._malloc(bytes) >>> 0;
      if (at === 0) throw new Error(`wasm: cannot allocate ${bytes} bytes for a batched matMul`);
      this.scratch = at;
      this.scratchBytes = bytes;
    }
    const aAt = this.scratch;
    const bAt = aAt + a.length * 4;
    const outAt = bAt + b.length * 4;
    this.wasm.HEAPF32.set(a, aAt >>> 2);
    this.wasm.HEAPF32.set(b, bAt >>> 2);
    xnnSlices(this.wasm, () => this.ids++, { offset: aAt, batch: aBatch }, { offset: bAt, batch: bBatch }, outAt, dims);
    out.set(this.wasm.HEAPF32.subarray(outAt >>> 2, (outAt >>> 2) + out.length));
  }
}

/** The dimensions of a (batched) product: op(a) is [.., M, K], op(b) [.., K, N]. */
export interface ProductPlan {
  M: number; K: number; N: number;
  batchA: number; batchB: number; batch: number;
  outShape: number[];
}

/**
 * The dimensions of `a` x `b` with the transpose flags, or null for what the kernels here leave to
 * the shipped one: other dtypes than float32, and batch dims other than equal ones or one side
 * without batch (size 1, broadcast). Products with nothing to multiply are planned too (see
 * `productOfNothing`).
 */
export function productPlan(tf: Tf, a: TensorInfo, b: TensorInfo, transposeA: boolean, transposeB: boolean): ProductPlan | null {
  if (a.dtype !== 'float32' || b.dtype !== 'float32' || a.shape.length < 2 || b.shape.length < 2) return null;
  const ra = a.shape.length;
  const rb = b.shape.length;
  const M = transposeA ? a.shape[ra - 1]! : a.shape[ra - 2]!;
  const K = transposeA ? a.shape[ra - 2]! : a.shape[ra - 1]!;
  const kb = transposeB ? b.shape[rb - 1]! : b.shape[rb - 2]!;
  const N = transposeB ? b.shape[rb - 2]! : b.shape[rb - 1]!;
  const outerA = a.shape.slice(0, -2);
  const outerB = b.shape.slice(0, -2);
  const batchA = tf.util.sizeFromShape(outerA);
  const batchB = tf.util.sizeFromShape(outerB);
  const sameOuter = outerA.length === outerB.length && outerA.every((d, i) => d === outerB[i]);
  if (K !== kb || !(sameOuter || batchA === 1 || batchB === 1)) return null;
  // A side with no batch at all (a 0 among its batch dims) leaves none, even against a batch of 1.
  const batch = batchA === 0 || batchB === 0 ? 0 : Math.max(batchA, batchB);
  const outShape = tf.backend_util.assertAndGetBroadcastShape(outerA, outerB).concat([M, N]);
  return { M, K, N, batchA, batchB, batch, outShape };
}

/**
 * The output of a planned product with nothing to multiply, or null when there is something: an
 * empty output (batch, M or N of 0) as it is, and for K = 0 every entry a sum of no terms, 0, or
 * what `fill` writes into each [M, N] slice (a bias row). tfjs-backend-wasm 4.22's BatchMatMul
 * traps on an empty batch (remainder by zero) and leaves a K = 0 output unwritten (whatever the
 * heap held); BLAS refuses a leading dimension of 0.
 */
export function productOfNothing(backend: BackendWasm, p: ProductPlan, fill?: (c: Float32Array) => void): TensorInfo | null {
  const { batch, M, N, K } = p;
  const size = batch * M * N;
  if (size !== 0 && K !== 0) return null;
  const out = backend.makeOutput([batch, M, N], 'float32');
  if (size !== 0) {
    // A view after makeOutput, whose malloc may grow the heap.
    const c = backend.typedArrayFromHeap(out) as Float32Array;
    if (fill === undefined) c.fill(0);
    else for (let i = 0; i < batch; i++) fill(c.subarray(i * M * N, (i + 1) * M * N));
  }
  return { ...out, shape: p.outShape };
}

function batchMatMulXnn(tf: Tf, args: KernelArgs, transposeKernel: KernelFunc, single: SingleThreadXnn | null): TensorInfo | null {
  const backend = args.backend as WasmBackendInternals;
  const a = args.inputs.a!;
  const b = args.inputs.b!;
  const transposeA = Boolean(args.attrs?.transposeA);
  const transposeB = Boolean(args.attrs?.transposeB);
  const p = productPlan(tf, a, b, transposeA, transposeB);
  if (p === null) return null;
  const nothing = productOfNothing(args.backend as BackendWasm, p);
  if (nothing !== null) return nothing;
  const { M, K, N, batchA, batchB, batch, outShape } = p;
  // One flag-free 2-D product: the shipped kernel already takes XNNPACK's path.
  if (batch === 1 && !transposeA && !transposeB) return null;

  // Flag-free operands: transposed copies where a flag is set.
  const temporaries: TensorInfo[] = [];
  const flagFree = (x: TensorInfo, rows: number, cols: number, xBatch: number, transposed: boolean): TensorInfo => {
    if (!transposed) return x;
    // x holds [xBatch, cols, rows]; make [xBatch, rows, cols].
    const t = transposeKernel({
      inputs: { x: { dataId: x.dataId, shape: [xBatch, cols, rows], dtype: x.dtype } },
      backend: args.backend as BackendWasm,
      attrs: { perm: [0, 2, 1] },
    }) as TensorInfo;
    temporaries.push(t);
    return t;
  };
  try {
    const a2 = flagFree(a, M, K, batchA, transposeA);
    const b2 = flagFree(b, K, N, batchB, transposeB);
    const out = backend.makeOutput([batch, M, N], 'float32');
    // Offsets after makeOutput (its malloc may grow the heap; offsets stay valid, views would not).
    const offset = (x: TensorInfo) => backend.dataIdMap.get(x.dataId).memoryOffset >>> 0;
    const dims = { batch, M, K, N };
    if (single !== null && batch > 1 && M * K * N <= SMALL_SLICE_MACS) {
      const view = (x: TensorInfo, n: number) => new Float32Array(backend.wasm.HEAPF32.buffer, offset(x), n);
      single.run(view(a2, batchA * M * K), batchA, view(b2, batchB * K * N), batchB, view(out, batch * M * N), dims);
    } else {
      xnnSlices(backend.wasm, () => backend.dataIdNextNumber++, { offset: offset(a2), batch: batchA }, { offset: offset(b2), batch: batchB }, offset(out), dims);
    }
    return { ...out, shape: outShape };
  } finally {
    for (const t of temporaries) backend.disposeData(t.dataId);
  }
}

let singleThread: SingleThreadXnn | null = null;

/**
 * Wraps the registered wasm BatchMatMul so that batched and transposed products run through
 * XNNPACK (see the file header), small slices on `single` when given (the threaded build). Call
 * after importing tfjs-backend-wasm; calling it again only updates `single`.
 */
export function registerWasmBatchMatMul(tf: Tf, single: SingleThreadXnn | null = null): void {
  singleThread = single;
  const registered = tf.getKernel('BatchMatMul', 'wasm');
  const transpose = tf.getKernel('Transpose', 'wasm');
  if (registered === undefined || transpose === undefined) return;
  const shippedFunc = registered.kernelFunc as KernelFunc & { [WRAPPED]?: true };
  if (shippedFunc[WRAPPED]) return;
  const transposeFunc = transpose.kernelFunc;
  const kernelFunc = ((args: KernelArgs) =>
    batchMatMulXnn(tf, args, transposeFunc, singleThread) ?? shippedFunc(args as Parameters<KernelFunc>[0])) as KernelFunc & { [WRAPPED]?: true };
  kernelFunc[WRAPPED] = true;
  const config: KernelConfig = { ...registered, kernelFunc };
  tf.unregisterKernel('BatchMatMul', 'wasm');
  tf.registerKernel(config);
}
