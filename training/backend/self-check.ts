// A tiny self-check run on a freshly started backend before it is trusted: a matMul with its
// gradient, and an embedding lookup (gather) with its gradient, compared with values worked out
// by hand. The gather gradient is the one the wasm backend lacks as shipped.
import type { Tensor } from '@tensorflow/tfjs';
import type { Tf } from './common.ts';

// A [2,3] @ B [3,2] = C [[4,5],[10,11]]; loss = sum(C^2)/2 = 131; dloss/dA = C @ B^T.
const A = [[1, 2, 3], [4, 5, 6]];
const B = [[1, 0], [0, 1], [1, 1]];
const MATMUL_LOSS = 131;
const MATMUL_GRAD = [4, 5, 9, 10, 11, 21];

// E [3,2], ids [2,0,2], W [2,1]; loss = sum(gather(E, ids) @ W) = 17 + 5 + 17 = 39;
// dloss/dE adds W^T = [1,2] once per use of a row: row 0 once, row 1 never, row 2 twice.
const E = [[1, 2], [3, 4], [5, 6]];
const IDS = [2, 0, 2];
const W = [[1], [2]];
const GATHER_LOSS = 39;
const GATHER_GRAD = [1, 2, 0, 0, 2, 4];

function close(got: ArrayLike<number>, want: readonly number[]): boolean {
  if (got.length !== want.length) return false;
  for (let i = 0; i < want.length; i++) {
    if (!(Math.abs(got[i] - want[i]) <= 1e-4 * Math.max(1, Math.abs(want[i])))) return false;
  }
  return true;
}

/**
 * Throws an Error naming the failed check unless the active backend computes both losses and
 * gradients correctly. Reads results asynchronously (webgpu in Node.js cannot read synchronously).
 * Leaves no tensors behind.
 */
export async function backendSelfCheck(tf: Tf): Promise<void> {
  const outputs = tf.tidy(() => {
    const a = tf.tensor2d(A);
    const b = tf.tensor2d(B);
    const mm = tf.valueAndGrad((x: Tensor) => tf.matMul(x, b).square().sum().div(2))(a);
    const e = tf.tensor2d(E);
    const ids = tf.tensor1d(IDS, 'int32');
    const w = tf.tensor2d(W);
    const ga = tf.valueAndGrad((x: Tensor) => tf.matMul(tf.gather(x, ids), w).sum())(e);
    return [mm.value, mm.grad, ga.value, ga.grad];
  });
  try {
    const [mmLoss, mmGrad, gaLoss, gaGrad] = await Promise.all(outputs.map((t) => t.data()));
    const backend = tf.getBackend();
    if (!close(mmLoss, [MATMUL_LOSS]) || !close(mmGrad, MATMUL_GRAD)) {
      throw new Error(`self-check failed on ${backend}: matMul loss/gradient ${String(mmLoss)} / ${String(mmGrad)}`);
    }
    if (!close(gaLoss, [GATHER_LOSS]) || !close(gaGrad, GATHER_GRAD)) {
      throw new Error(`self-check failed on ${backend}: gather loss/gradient ${String(gaLoss)} / ${String(gaGrad)}`);
    }
  } finally {
    tf.dispose(outputs);
  }
}
