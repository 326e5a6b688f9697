// Rows added into a table at row indices known on the host: out[r] = the sum of x[j] over the rows
// j whose index is r, zero for rows no index names. What tf.unsortedSegmentSum computes for 2-D x
// and segment ids, and the gradient of picking rows (tf.gather of rows). Used for the word
// embeddings' gradient and the gradient of the head's gather of the labelled positions, whose
// indices the host knows (training/models/ops.ts).
//
// Why: TF.js's webgpu UnsortedSegmentSum is four dispatches for a 2-D input (it transposes the
// input, fills the [H, S] output with zeros, adds with float atomics, which WGSL lacks and
// emulates with compare-and-swap loops, and transposes back): for the word table at bert-base,
// passes over 30,522 x 768 floats. With the indices sorted on the host the sum needs no atomics:
// one thread per output entry adds its rows in a fixed order (deterministic), one dispatch.
//
// Contract (webgpu: training/backend/webgpu/scatter-rows.ts):
//   SCATTER_ROWS_KERNEL  inputs { x [M, H] float32, offsets [S + 1] int32, sources [M] int32 }
//                        -> out [S, H]: out[r] = sum over k in [offsets[r], offsets[r + 1]) of
//                        x[sources[k]], in that order (`scatterPlan` builds offsets and sources).
// `scatterRowsReference` is the plain composite (tf.unsortedSegmentSum), the tests' oracle.
import type { NamedAttrMap, Tensor, Tensor1D, Tensor2D } from '@tensorflow/tfjs';
import { customOp, type Tf } from './custom-op.ts';

export const SCATTER_ROWS_KERNEL = 'MlmkitScatterRows';

/** Where each of S output rows takes its sum from: a CSR layout of the inverse of `ids`. */
export interface ScatterPlan {
  /** [S + 1]: row r's sources are sources[offsets[r] .. offsets[r + 1]). */
  offsets: Int32Array;
  /** [M]: input rows, grouped by output row, in increasing order within a group. */
  sources: Int32Array;
}

/** The plan of `ids` (one output row in [0, rows) per input row), by counting sort. */
export function scatterPlan(ids: ArrayLike<number>, rows: number): ScatterPlan {
  const offsets = new Int32Array(rows + 1);
  for (let j = 0; j < ids.length; j++) {
    const r = ids[j]!;
    if (!(Number.isInteger(r) && r >= 0 && r < rows)) throw new Error(`scatterPlan: index ${r} at ${j} is outside [0, ${rows})`);
    offsets[r + 1]++;
  }
  for (let r = 0; r < rows; r++) offsets[r + 1] += offsets[r];
  const next = offsets.slice(0, rows);
  const sources = new Int32Array(ids.length);
  for (let j = 0; j < ids.length; j++) sources[next[ids[j]!]++] = j;
  return { offsets, sources };
}

/** The plain composite: tf.unsortedSegmentSum of x's rows at `ids` into `rows` rows. */
export function scatterRowsReference(tf: Tf, x: Tensor2D, ids: ArrayLike<number>, rows: number): Tensor2D {
  return tf.tidy(() => tf.unsortedSegmentSum(x, tf.tensor1d(Array.from(ids), 'int32'), rows) as Tensor2D);
}

/** x's rows added at `plan`'s rows, through the kernel (the backend must have it). */
export function scatterRows(tf: Tf, x: Tensor2D, plan: ScatterPlan): Tensor2D {
  if (x.rank !== 2 || x.shape[0] !== plan.sources.length) {
    throw new Error(`scatterRows: x [${plan.sources.length}, H] expected, got [${x.shape.join(', ')}]`);
  }
  return tf.tidy(() => {
    const offsets = tf.tensor1d(plan.offsets, 'int32');
    const sources = tf.tensor1d(plan.sources, 'int32');
    return tf.engine().runKernel(SCATTER_ROWS_KERNEL, { x, offsets, sources }, {} as NamedAttrMap) as Tensor2D;
  });
}

/**
 * Rows `ids` of x [S, H] (as tf.gather), with ids known on the host: the gradient is `scatterRows`
 * when `fused` (the backend has the kernel), else tf.gather's own (UnsortedSegmentSum).
 */
export function pickRows(tf: Tf, x: Tensor2D, ids: Int32Array, fused: boolean): Tensor2D {
  const index = (): Tensor1D => tf.tensor1d(ids, 'int32');
  if (!fused) return tf.tidy(() => tf.gather(x, index()) as Tensor2D);
  const plan = scatterPlan(ids, x.shape[0]);
  return customOp<Tensor2D>(tf, ([x_]) => ({
    value: tf.tidy(() => tf.gather(x_ as Tensor2D, index()) as Tensor2D),
    gradFunc: (dy) => [scatterRows(tf, dy, plan)] as Tensor[],
  }))(x);
}
