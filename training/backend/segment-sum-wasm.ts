// UnsortedSegmentSum for the wasm backend, written in TypeScript over the wasm heap.
//
// tfjs-backend-wasm 4.22 ships no UnsortedSegmentSum kernel, and that kernel is the gradient of
// `tf.gather` (tfjs-core's GatherV2 gradient calls `unsortedSegmentSum`), so an embedding lookup
// cannot be trained on wasm as shipped. This kernel fills the gap.
//
// Semantics follow tfjs-backend-cpu's kernel (the reference backend) for the op's documented
// contract: x [N, ...inner], segmentIds [N] int32 -> out [numSegments, ...inner] with
// out[s] = sum of x[n] over the n with segmentIds[n] = s; ids < 0 or >= numSegments are dropped.
// Porting notes: for int32 and bool x the cpu kernel returns float32; this one returns int32, as
// tf.sum, the webgl kernel and TensorFlow do (same values). Segment ids of rank > 1, outside the
// op's contract and treated inconsistently by the cpu kernel, are refused.
//
// Method: the embedding case is x [B*T, H] with numSegments = vocab size (30522), so the output is
// mostly zero rows. Rows of x are bucketed by segment with a counting sort (stable, so a segment
// still sums its rows in ascending n, the cpu kernel's order), each touched segment is summed in
// float64 as the cpu kernel does, and the rest of the output is zero-filled.
// Cost: one pass over x, one zero-fill of the output, O(N + numSegments) for the sort.
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { KernelConfig, NamedAttrMap, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs';
import type { Tf } from './common.ts';

function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** The kernel function; `backend` is the wasm backend instance the engine passes in. */
export function unsortedSegmentSumWasm(args: {
  inputs: NamedTensorInfoMap;
  backend: unknown;
  attrs?: NamedAttrMap;
}): TensorInfo {
  const backend = args.backend as BackendWasm;
  const x = args.inputs.x;
  const segmentIds = args.inputs.segmentIds;
  const numSegments = args.attrs?.numSegments;
  if (x === undefined || segmentIds === undefined) {
    throw new Error('UnsortedSegmentSum: expected inputs x and segmentIds');
  }
  if (typeof numSegments !== 'number' || !Number.isInteger(numSegments) || numSegments < 0) {
    throw new Error(`UnsortedSegmentSum: numSegments must be a non-negative integer, got ${String(numSegments)}`);
  }
  if (x.dtype !== 'float32' && x.dtype !== 'int32' && x.dtype !== 'bool') {
    throw new Error(`UnsortedSegmentSum on wasm: unsupported dtype ${x.dtype}`);
  }
  if (segmentIds.dtype !== 'int32') {
    throw new Error(`UnsortedSegmentSum: segmentIds must be int32, got ${segmentIds.dtype}`);
  }
  const rows = x.shape[0] ?? 0;
  if (segmentIds.shape.length !== 1 || x.shape.length === 0 || segmentIds.shape[0] !== rows) {
    throw new Error(
      `UnsortedSegmentSum: segmentIds must be 1-D with one id per row of x; got [${segmentIds.shape}] for x [${x.shape}]`,
    );
  }

  const outDtype = x.dtype === 'float32' ? 'float32' : 'int32';
  const innerShape = x.shape.slice(1);
  const inner = sizeOf(innerShape); // elements per row of x and of out
  const out = backend.makeOutput([numSegments, ...innerShape], outDtype);
  if (numSegments * inner === 0) return out;

  // Heap views are taken after makeOutput: its malloc may grow (and so replace) the heap.
  const outVals = backend.typedArrayFromHeap(out);
  outVals.fill(0);
  if (rows === 0) return out;
  const xVals = backend.typedArrayFromHeap(x);
  const ids = backend.typedArrayFromHeap(segmentIds) as Int32Array;

  // Counting sort of row numbers by segment; out-of-range ids are dropped.
  const start = new Int32Array(numSegments + 1);
  for (let n = 0; n < rows; n++) {
    const id = ids[n];
    if (id >= 0 && id < numSegments) start[id + 1] += 1;
  }
  for (let s = 0; s < numSegments; s++) start[s + 1] += start[s];
  const order = new Int32Array(start[numSegments]);
  const next = start.slice(0, numSegments);
  for (let n = 0; n < rows; n++) {
    const id = ids[n];
    if (id >= 0 && id < numSegments) order[next[id]++] = n;
  }

  // Sum each touched segment in float64, rows in ascending order, then store it once.
  const acc = new Float64Array(inner);
  for (let s = 0; s < numSegments; s++) {
    const from = start[s];
    const to = start[s + 1];
    if (from === to) continue;
    acc.fill(0);
    for (let r = from; r < to; r++) {
      const src = order[r] * inner;
      for (let k = 0; k < inner; k++) acc[k] += xVals[src + k];
    }
    outVals.set(acc, s * inner);
  }
  return out;
}

/** The kernel's registration record. */
export const unsortedSegmentSumWasmConfig: KernelConfig = {
  kernelName: 'UnsortedSegmentSum',
  backendName: 'wasm',
  kernelFunc: unsortedSegmentSumWasm as unknown as KernelConfig['kernelFunc'],
};

/**
 * Registers the kernel for the wasm backend unless one is registered already (a later
 * tfjs-backend-wasm that ships its own keeps it). Safe to call more than once.
 */
export function registerWasmUnsortedSegmentSum(tf: Tf): void {
  if (tf.getKernel('UnsortedSegmentSum', 'wasm') !== undefined) return;
  tf.registerKernel(unsortedSegmentSumWasmConfig);
}
