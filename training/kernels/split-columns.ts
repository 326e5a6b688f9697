// Column blocks side by side, and back: the query, key and value projections of an encoder layer
// run as one matrix product over their weights placed side by side (training/models/bert.ts), and
// the gradient of that placement hands each weight its block of columns again.
//
// Contract (training/backend/webgpu/split-columns.ts implements it for webgpu):
//   SPLIT_COLUMNS_KERNEL  inputs { x [R, parts * C] float32 }, attrs { parts } -> parts outputs
//                         [R, C] float32, output p holding columns [p C, (p + 1) C) of x.
// TF.js splits with one Slice program per part (3 dispatches for query, key, value; twice a
// layer, for the weights and the biases); the kernel writes every part in one dispatch.
//
// `concatColumns` is the op the model calls: tf.concat along the last axis (one dispatch), whose
// gradient is `splitColumns` (the kernel where the backend has it, else tf.split). 1-D inputs
// (biases) are one row.
import type { Tensor, Tensor2D } from '@tensorflow/tfjs';
import { customOp, type Tf } from './custom-op.ts';

export const SPLIT_COLUMNS_KERNEL = 'MlmkitSplitColumns';

/** Most parts one dispatch writes (the input and the parts are storage bindings: WebGPU guarantees 8). */
export const MAX_SPLIT_PARTS = 7;

export interface SplitColumnsAttrs {
  parts: number;
}

/** x [R, parts * C] -> parts x [R, C]: the plain composite. */
export function splitColumnsReference(tf: Tf, x: Tensor2D, parts: number): Tensor2D[] {
  return tf.split(x, parts, 1) as Tensor2D[];
}

/** x [R, parts * C] -> parts x [R, C]: the kernel when `fused` (the backend has it), else the reference. */
export function splitColumns(tf: Tf, x: Tensor2D, parts: number, fused: boolean): Tensor2D[] {
  if (x.rank !== 2) throw new Error(`splitColumns: x must be [R, parts * C], got [${x.shape.join(', ')}]`);
  if (!Number.isInteger(parts) || parts < 1 || x.shape[1] % parts !== 0) {
    throw new Error(`splitColumns: ${x.shape[1]} columns do not split into ${parts} equal parts`);
  }
  if (!fused || parts === 1 || parts > MAX_SPLIT_PARTS) return splitColumnsReference(tf, x, parts);
  return tf.engine().runKernel(SPLIT_COLUMNS_KERNEL, { x }, { parts } as unknown as Record<string, number>) as unknown as Tensor2D[];
}

/**
 * xs (all [R, C], or all [C]) side by side along the last axis -> [R, n C] (or [n C]), with
 * `splitColumns` as its gradient (`fused`: the backend has the kernel).
 */
export function concatColumns<T extends Tensor>(tf: Tf, xs: T[], fused: boolean): T {
  const shape = xs[0].shape;
  if (shape.length !== 1 && shape.length !== 2) throw new Error(`concatColumns: parts must be 1-D or 2-D, got [${shape.join(', ')}]`);
  for (const x of xs) {
    if (x.shape.length !== shape.length || x.shape.some((d, i) => d !== shape[i])) {
      throw new Error(`concatColumns: parts have shapes [${shape.join(', ')}] and [${x.shape.join(', ')}]`);
    }
  }
  const rows = shape.length === 1 ? 1 : shape[0];
  return customOp<T>(tf, (inputs) => ({
    value: tf.concat(inputs, -1) as T,
    gradFunc: (dy) => splitColumns(tf, tf.reshape(dy, [rows, -1]) as Tensor2D, inputs.length, fused).map((g) => tf.reshape(g, shape)),
  }))(...xs);
}
