// Attention heads out of rows and back: the fused query/key/value projection qkv [B*T, 3H] is cut
// into heads [B, heads, T, hs] (hs = H / heads) for the batched attention products, and the
// attention context [B, heads, T, hs] is put back into rows [B*T, H] for the output projection.
// Each is a pure permutation of floats, and each is the other's gradient.
//
// Contract (training/backend/webgpu/attention-heads.ts implements it for webgpu; for wasm,
// training/backend/simd-wasm.ts implements the first two, one pass over the rows per part):
//   ROWS_TO_HEADS_KERNEL  inputs { x [B*T, parts * H] float32 }, attrs HeadsAttrs
//                         -> parts outputs [B, heads, T, hs] float32; output p at [b, h, t, e]
//                         holds x[b T + t, p H + h hs + e].
//   HEADS_TO_ROWS_KERNEL  inputs { x0 .. x(parts-1), each [B, heads, T, hs] float32 }, attrs
//                         HeadsAttrs -> [B*T, parts * H] float32, the inverse placement.
//   HEADS_TO_ROWS_SUMS_KERNEL  as HEADS_TO_ROWS_KERNEL, and also the column sums of the rows:
//                         -> [rows [B*T, parts * H], sums [parts * H]] float32. The gradient of the
//                         projection that fills query, key and value needs both: dy for its
//                         products and sum over rows of dy for its bias (`linearToHeads`).
// Without them, TF.js needs a reshape, a transpose and an unstack for query, key and value (four
// programs; their gradient a stack and a transpose), and a transpose each way for the context;
// each kernel is one dispatch (the sums: two when the rows need a second stage, in place of the
// permutation's one and a bias gradient's two).
//
// `rowsToHeadsReference` / `headsToRowsReference` are the plain TF.js composites (the tests'
// oracle); `rowsToHeads` / `headsToRows` are the ops, with each other as gradient.
import type { NamedAttrMap, Tensor, Tensor1D, Tensor2D, Tensor4D } from '@tensorflow/tfjs';
import { customMultiOp, customOp, type Tf } from './custom-op.ts';

export const ROWS_TO_HEADS_KERNEL = 'MlmkitRowsToHeads';
export const HEADS_TO_ROWS_KERNEL = 'MlmkitHeadsToRows';
export const HEADS_TO_ROWS_SUMS_KERNEL = 'MlmkitHeadsToRowsSums';

/** Most parts one dispatch moves (the parts and the rows are storage bindings: WebGPU guarantees 8). */
export const MAX_HEAD_PARTS = 7;
/** Most parts the rows-and-sums kernel takes (the sums are one more storage binding). */
export const MAX_HEAD_SUM_PARTS = MAX_HEAD_PARTS - 1;

export interface HeadsAttrs {
  /** B: sequences in the batch (T = rows / B). */
  batch: number;
  heads: number;
  /** How many [B, heads, T, hs] tensors sit side by side in the rows (3 for query, key, value). */
  parts: number;
}

/**
 * The cut of rows x [B*T, parts H] that `attrs` describe: T and hs, or an error naming `name`. The
 * ops check with it, and so do the backends' kernels (with the kernel's name).
 */
export function checkRows(x: { shape: readonly number[] }, { batch, heads, parts }: HeadsAttrs, name = 'rowsToHeads'): { T: number; hs: number } {
  const [rows = 0, cols = 0] = x.shape;
  const ok =
    x.shape.length === 2 && [batch, heads, parts].every((v) => Number.isInteger(v) && v >= 1) && rows % batch === 0 && cols % (parts * heads) === 0;
  if (!ok) throw new Error(`${name}: cannot cut [${x.shape.join(', ')}] into ${parts} parts of ${heads} heads over ${batch} sequences`);
  return { T: rows / batch, hs: cols / (parts * heads) };
}

/**
 * The shape [B, heads, T, hs] that every part shares, or an error naming `name`; with `attrs` (a
 * kernel's inputs, some perhaps missing) B and heads must also be theirs.
 */
export function checkHeads(xs: readonly ({ shape: readonly number[] } | undefined)[], name = 'headsToRows', attrs?: HeadsAttrs): [number, number, number, number] {
  const shape = xs[0]?.shape ?? [];
  const oneShape = xs.length >= 1 && shape.length === 4 && xs.every((x) => x !== undefined && x.shape.length === 4 && x.shape.every((d, i) => d === shape[i]));
  if (!oneShape || (attrs !== undefined && (shape[0] !== attrs.batch || shape[1] !== attrs.heads))) {
    const want = attrs === undefined ? '' : ` (${attrs.parts} of [${attrs.batch}, ${attrs.heads}, T, hs])`;
    throw new Error(`${name}: parts must all be [B, heads, T, hs] of one shape${want}, got ${xs.map((x) => (x === undefined ? 'none' : `[${x.shape.join(', ')}]`)).join(', ')}`);
  }
  return shape as [number, number, number, number];
}

/** x [B*T, parts H] -> parts x [B, heads, T, hs]: the plain composite. */
export function rowsToHeadsReference(tf: Tf, x: Tensor2D, attrs: HeadsAttrs): Tensor4D[] {
  const { T, hs } = checkRows(x, attrs);
  const { batch: B, heads, parts } = attrs;
  // One part without an unstack: TF.js's Unstack gradient fails for a single output.
  if (parts === 1) return [tf.tidy(() => tf.transpose(tf.reshape(x, [B, T, heads, hs]), [0, 2, 1, 3]) as Tensor4D)];
  return tf.tidy(() => tf.unstack(tf.transpose(tf.reshape(x, [B, T, parts, heads, hs]), [2, 0, 3, 1, 4])) as Tensor4D[]);
}

/** parts x [B, heads, T, hs] -> [B*T, parts H]: the plain composite. */
export function headsToRowsReference(tf: Tf, xs: Tensor4D[]): Tensor2D {
  checkHeads(xs);
  const [B, heads, T, hs] = xs[0].shape;
  return tf.tidy(() => tf.reshape(tf.transpose(tf.stack(xs), [1, 3, 0, 2, 4]), [B * T, xs.length * heads * hs]) as Tensor2D);
}

/** parts x [B, heads, T, hs] -> [rows [B*T, parts H], their column sums [parts H]]: the plain composite. */
export function headsToRowsSumsReference(tf: Tf, xs: Tensor4D[]): [Tensor2D, Tensor1D] {
  const rows = headsToRowsReference(tf, xs);
  return [rows, tf.sum(rows, 0)];
}

/** The rows and their column sums: the kernel when `fused` (the backend has it), else the composite. No gradient (a gradient's helper). */
export function headsToRowsSums(tf: Tf, xs: Tensor4D[], fused: boolean): [Tensor2D, Tensor1D] {
  checkHeads(xs);
  const [B, heads] = xs[0].shape;
  if (!fused || xs.length > MAX_HEAD_SUM_PARTS) return headsToRowsSumsReference(tf, xs);
  const attrs: HeadsAttrs = { batch: B, heads, parts: xs.length };
  return tf.engine().runKernel(HEADS_TO_ROWS_SUMS_KERNEL, Object.fromEntries(xs.map((x, i) => [`x${i}`, x])), attrs as unknown as NamedAttrMap) as unknown as [Tensor2D, Tensor1D];
}

const kernelRowsToHeads = (tf: Tf, x: Tensor, attrs: HeadsAttrs): Tensor4D[] =>
  tf.engine().runKernel(ROWS_TO_HEADS_KERNEL, { x }, attrs as unknown as NamedAttrMap) as unknown as Tensor4D[];

const kernelHeadsToRows = (tf: Tf, xs: Tensor[], attrs: HeadsAttrs): Tensor2D =>
  tf.engine().runKernel(HEADS_TO_ROWS_KERNEL, Object.fromEntries(xs.map((x, i) => [`x${i}`, x])), attrs as unknown as NamedAttrMap) as Tensor2D;

/**
 * x [B*T, parts H] -> parts x [B, heads, T, hs] (B = `batch`) with its gradient: the kernels
 * when `fused` (the backend has both), else the composite with TF.js's gradients.
 */
export function rowsToHeads(tf: Tf, x: Tensor2D, attrs: HeadsAttrs, fused: boolean): Tensor4D[] {
  checkRows(x, attrs);
  if (!fused || attrs.parts > MAX_HEAD_PARTS) return rowsToHeadsReference(tf, x, attrs);
  return customMultiOp(tf, ([x_]) => ({
    value: kernelRowsToHeads(tf, x_, attrs),
    gradFunc: (dys) => [kernelHeadsToRows(tf, dys, attrs)],
  }))(x) as Tensor4D[];
}

/** parts x [B, heads, T, hs] -> [B*T, parts H] with its gradient: the kernels when `fused`, else the composite. */
export function headsToRows(tf: Tf, xs: Tensor4D[], fused: boolean): Tensor2D {
  checkHeads(xs);
  const [B, heads] = xs[0].shape;
  const attrs: HeadsAttrs = { batch: B, heads, parts: xs.length };
  if (!fused || xs.length > MAX_HEAD_PARTS) return headsToRowsReference(tf, xs);
  if (xs.length === 1) {
    return customOp<Tensor2D>(tf, ([x_]) => ({ value: kernelHeadsToRows(tf, [x_], attrs), gradFunc: (dy) => kernelRowsToHeads(tf, dy, attrs) }))(xs[0]);
  }
  return customMultiOp(tf, (parts) => ({
    value: [kernelHeadsToRows(tf, parts, attrs)],
    gradFunc: ([dy]) => kernelRowsToHeads(tf, dy, attrs),
  }))(...xs)[0] as Tensor2D;
}
