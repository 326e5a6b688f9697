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
import { customMultiOp, customOp, type Tf } from './custom-op.ts';

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

// -------------------------------------------------------------------------------------------------
// Several groups at once: the query, key and value weights [H, H] and biases [H] of a layer go side
// by side as two groups, in one dispatch, and their gradients split back in one.
//
// Contract (training/backend/webgpu/split-columns.ts implements it for webgpu):
//   CONCAT_COLUMN_GROUPS_KERNEL  inputs { x0 .. x(G parts - 1) } float32, attrs { parts }; group g
//                                is x(g parts) .. x(g parts + parts - 1), all of one shape [R_g, C_g]
//                                (a 1-D [C_g] as one row) -> G outputs, output g [R_g, parts C_g]
//                                ([parts C_g] for 1-D) holding its group side by side.
//   SPLIT_COLUMN_GROUPS_KERNEL   inputs { x0 .. x(G - 1) }, x_g [R_g, parts C_g] (or 1-D) float32,
//                                attrs { parts } -> G parts outputs, output g parts + p holding
//                                columns [p C_g, (p + 1) C_g) of x_g, shaped [R_g, C_g] (or [C_g]).
// G (parts + 1) buffers are bound: at most MAX_GROUP_BINDINGS.

export const CONCAT_COLUMN_GROUPS_KERNEL = 'MlmkitConcatColumnGroups';
export const SPLIT_COLUMN_GROUPS_KERNEL = 'MlmkitSplitColumnGroups';

/** Most storage buffers one dispatch of the group kernels binds (WebGPU guarantees 8). */
export const MAX_GROUP_BINDINGS = 8;

/** The gradient of each group's concatenation: per group, `splitColumns` of it (the plain composite). */
export function splitColumnGroupsReference(tf: Tf, xs: Tensor[], parts: number): Tensor[] {
  return xs.flatMap((x) => {
    const shape = x.shape.length === 1 ? [x.shape[0] / parts] : [x.shape[0], x.shape[1]! / parts];
    return splitColumnsReference(tf, tf.reshape(x, [x.shape.length === 1 ? 1 : x.shape[0], -1]) as Tensor2D, parts).map((g) => tf.reshape(g, shape));
  });
}

/**
 * Each group (all [R, C] or all [C] within a group; every group the same number of parts) side by
 * side along the last axis, as `concatColumns` of each; with the kernels when `fused` (the backend
 * has both), one dispatch for all groups and one for their gradients.
 */
export function concatColumnGroups(tf: Tf, groups: Tensor[][], fused: boolean): Tensor[] {
  const parts = groups[0]?.length ?? 0;
  if (groups.some((g) => g.length !== parts)) throw new Error(`concatColumnGroups: every group needs ${parts} parts`);
  if (!fused || parts < 2 || groups.length * (parts + 1) > MAX_GROUP_BINDINGS) return groups.map((g) => concatColumns(tf, g, fused));
  for (const g of groups) {
    const shape = g[0].shape;
    if ((shape.length !== 1 && shape.length !== 2) || g.some((x) => x.shape.length !== shape.length || x.shape.some((d, i) => d !== shape[i]))) {
      throw new Error(`concatColumnGroups: parts of a group must be 1-D or 2-D of one shape, got ${g.map((x) => `[${x.shape.join(', ')}]`).join(', ')}`);
    }
  }
  const attrs = { parts } as unknown as Record<string, number>;
  const named = (xs: Tensor[]) => Object.fromEntries(xs.map((x, i) => [`x${i}`, x]));
  return customMultiOp(tf, (xs) => ({
    value: tf.engine().runKernel(CONCAT_COLUMN_GROUPS_KERNEL, named(xs), attrs) as unknown as Tensor[],
    gradFunc: (dys) => tf.engine().runKernel(SPLIT_COLUMN_GROUPS_KERNEL, named(dys), attrs) as unknown as Tensor[],
  }))(...groups.flat());
}
