// A faster Sum over leading axes for the wasm backend (column sums), over the wasm heap.
//
// tfjs-backend-wasm 4.22's Sum reduces innermost axes only: for any other axis it first transposes
// the whole input (a copy), then reduces. Training reduces over rows all the time: every bias
// and LayerNorm gradient is `sum(dy, 0)` of a [B*T, H] or [B*T, I] tensor, 26 sums of [4096, 256]
// and 4 of [4096, 1024] in a bert-mini step at batch 32 x 128, which took ~0.5 s of a ~9.9 s step,
// mostly in the transposes. This kernel adds the rows in place instead (one pass, no copy):
// x viewed as [R, C] with R the product of the reduced leading axes, out[c] = sum_r x[r, c],
// accumulated in float64 in ascending r and rounded once (the shipped kernel sums in float32, so
// results agree up to float32 rounding; tests/training/backend.test.ts compares them).
// Every other case (innermost axes, int32, a mix of axes) goes to the shipped kernel.
// Where mlmkit's SIMD module is loaded (simd-wasm.ts) the column sums are its `column_sums`
// (the same float64 sums, four lanes at a time, on the kernel threads) instead of the loop here.
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { TensorInfo } from '@tensorflow/tfjs';
import type { Tf } from './common.ts';
import { wrapWasmKernel, type WasmKernelArgs } from './wrap-wasm-kernel.ts';

const WRAPPED = Symbol.for('mlmkit.wasmSumLeadingAxes');

/** Column sums of x viewed as [rows, cols] into out [cols], in place on the heap (simd-wasm.ts). */
export type ColumnSums = (backend: BackendWasm, x: TensorInfo, out: TensorInfo, rows: number, cols: number) => void;
let simdColumnSums: ColumnSums | null = null;

/** Where the SIMD module is loaded, leading-axes sums use its column sums; null: the loop below. */
export function setSimdColumnSums(f: ColumnSums | null): void {
  simdColumnSums = f;
}

type KernelArgs = WasmKernelArgs;

/** Column sums, or null when the shipped kernel should run (not a leading-axes float32 sum). */
function sumLeadingAxes(tf: Tf, args: KernelArgs): TensorInfo | null {
  const backend = args.backend as BackendWasm;
  const x = args.inputs.x!;
  if (x.dtype !== 'float32' || x.shape.length < 2) return null;
  const axes = tf.util.parseAxisParam(args.attrs?.axis as number | number[], x.shape).sort((p, q) => p - q);
  // The reduced axes must be 0..k-1 with k < rank (all axes, or innermost ones, need no transpose).
  if (axes.length === 0 || axes.length >= x.shape.length || axes.some((a, i) => a !== i)) return null;
  const k = axes.length;
  const R = tf.util.sizeFromShape(x.shape.slice(0, k));
  const innerShape = x.shape.slice(k);
  const C = tf.util.sizeFromShape(innerShape);
  if (R * C === 0) return null;
  const outShape = args.attrs?.keepDims ? [...x.shape.slice(0, k).map(() => 1), ...innerShape] : innerShape;
  const out = backend.makeOutput(outShape, 'float32');
  if (simdColumnSums !== null) {
    simdColumnSums(backend, x, out, R, C);
    return out;
  }
  // Heap views after makeOutput, whose malloc may replace the heap.
  const xs = backend.typedArrayFromHeap(x) as Float32Array;
  // Four rows per pass over the accumulator: a quarter of its loads and stores (~3x faster in V8).
  const acc = new Float64Array(C);
  let r = 0;
  for (; r + 4 <= R; r += 4) {
    const r0 = r * C;
    const r1 = r0 + C;
    const r2 = r1 + C;
    const r3 = r2 + C;
    for (let c = 0; c < C; c++) acc[c] += xs[r0 + c] + xs[r1 + c] + xs[r2 + c] + xs[r3 + c];
  }
  for (; r < R; r++) {
    const row = r * C;
    for (let c = 0; c < C; c++) acc[c] += xs[row + c];
  }
  (backend.typedArrayFromHeap(out) as Float32Array).set(acc);
  return out;
}

/**
 * Wraps the registered wasm Sum so that sums over leading axes add rows in place (see the file
 * header). Call after importing tfjs-backend-wasm; calling it again does nothing.
 */
export function registerWasmSumLeadingAxes(tf: Tf): void {
  wrapWasmKernel(tf, 'Sum', WRAPPED, (args, shipped) => sumLeadingAxes(tf, args) ?? shipped(args));
}
