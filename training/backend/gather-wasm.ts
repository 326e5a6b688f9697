// GatherV2 for the wasm backend, over the wasm heap: a fix for batchDims > 0, and faster.
//
// tfjs-backend-wasm 4.22's C++ Gather steps through the indices of batch b at b * batchSize
// instead of b * (indices per batch), so `tf.gather(x, indices, axis, batchDims)` with
// batchDims >= 1 returns wrong values, and so does its gradient (tensorflow/tfjs issue 8658,
// open at the time of writing). It is also slow: it computes every output element's source
// index on its own, ~45 ms to look up 4096 rows of 256 floats (the word, position and type
// embeddings of a batch of 32 x 128: ~0.12 s of a bert-mini step). The wrapper below computes
// every gather of numbers here, copying whole slices (1.8 ms for the same lookup):
//   x viewed as [batch, outer, dim, slice], indices as [batch, n];
//   out[b, o, i, :] = x[b, o, indices[b, i], :]  ->  reshaped to the op's output shape.
// Only string tensors go to the shipped kernel. A copy is exact: values equal the shipped kernel's.
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { TensorInfo } from '@tensorflow/tfjs';
import type { Tf } from './common.ts';
import { wrapWasmKernel, type WasmKernelArgs } from './wrap-wasm-kernel.ts';

const WRAPPED = Symbol.for('mlmkit.wasmGatherBatchDims');

type KernelArgs = WasmKernelArgs;

function batchedGather(tf: Tf, args: KernelArgs, batchDims: number): TensorInfo {
  const backend = args.backend as BackendWasm;
  const x = args.inputs.x!;
  const indices = args.inputs.indices!;
  const axis = tf.util.parseAxisParam(args.attrs?.axis as number, x.shape)[0];
  const info = tf.backend_util.segment_util.collectGatherOpShapeInfo(x, indices, axis, batchDims);
  const { batchSize, outerSize, dimSize, sliceSize } = info;

  const out = backend.makeOutput(info.outputShape, x.dtype);
  const total = tf.util.sizeFromShape(info.outputShape);
  if (total === 0) return out;
  // Heap views after makeOutput, whose malloc may replace the heap.
  const outVals = backend.typedArrayFromHeap(out);
  const xVals = backend.typedArrayFromHeap(x);
  const idx = backend.typedArrayFromHeap(indices) as Int32Array;
  const perBatch = idx.length / batchSize;
  for (let i = 0; i < idx.length; i++) {
    const v = idx[i];
    if (v < 0 || v >= dimSize) {
      backend.disposeData(out.dataId);
      throw new Error(`GatherV2: the index value ${v} is not in [0, ${dimSize - 1}]`);
    }
  }
  let o = 0;
  for (let b = 0; b < batchSize; b++) {
    for (let outer = 0; outer < outerSize; outer++) {
      const base = (b * outerSize + outer) * dimSize;
      if (sliceSize === 1) {
        for (let i = 0; i < perBatch; i++) outVals[o++] = xVals[base + idx[b * perBatch + i]];
        continue;
      }
      for (let i = 0; i < perBatch; i++) {
        const src = (base + idx[b * perBatch + i]) * sliceSize;
        outVals.set(xVals.subarray(src, src + sliceSize), o);
        o += sliceSize;
      }
    }
  }
  return out;
}

/**
 * Wraps the registered wasm GatherV2 so that gathers of numbers run here (batchDims > 0 computed
 * correctly, and every gather faster). Call after importing tfjs-backend-wasm (which registers the
 * kernel); calling it again does nothing.
 */
export function fixWasmGatherBatchDims(tf: Tf): void {
  wrapWasmKernel(tf, 'GatherV2', WRAPPED, (args, shipped) => {
    const batchDims = (args.attrs?.batchDims as number | undefined) ?? 0;
    if (args.inputs.x?.dtype === 'string') return shipped(args);
    return batchedGather(tf, args, batchDims);
  });
}
