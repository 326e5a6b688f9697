// Shared by the LayerNorm, bias + GELU and bias-gradient kernel tests: the check that a forward
// pass run in a tidy leaves its output only (what the op saves for its gradient goes with the tidy).
import assert from 'node:assert/strict';
import type { Tensor } from '@tensorflow/tfjs';
import type { Tf } from '../../../training/backend.ts';

export function assertForwardLeavesOne(tf: Tf, f: () => Tensor): void {
  const before = tf.memory().numTensors;
  const out = tf.tidy(f);
  assert.equal(tf.memory().numTensors, before + 1, 'a forward pass in a tidy leaves its output only');
  out.dispose();
}
