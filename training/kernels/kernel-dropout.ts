// The dropout attributes of mlmkit's fused kernels: a site's mask as key words, threshold and
// scale, so that a kernel computes training/kernels/dropout-mask.ts `dropoutMask` entry by entry (the same
// keyed hash of the flat index) instead of reading a mask tensor.
import type { Tensor } from '@tensorflow/tfjs';
import { dropoutKeys, dropoutMask, dropoutThreshold } from './dropout-mask.ts';
import type { Tf } from './custom-op.ts';

export interface KernelDropout {
  /** 1: apply dropout with the key words below; 0: none (the other fields are then ignored). */
  dropout: number;
  k0: number;
  k1: number;
  k2: number;
  /** Entries whose hash is below this are dropped (dropout-mask.ts `dropoutThreshold`). */
  threshold: number;
  /** What kept entries are multiplied by: 1 / (1 - rate) in float32. */
  keepScale: number;
}

export interface DropoutOptions {
  /** Dropout rate, in [0, 1). */
  rate: number;
  /** The dropout site's seed (see dropout-mask.ts `dropoutMask`); null: no dropout (not training). */
  seed: string | null;
}

/** The kernel attributes of `opts`: `dropout` 0 when the seed is null or the rate 0. */
export function kernelDropout(opts: DropoutOptions): KernelDropout {
  if (opts.seed === null || opts.rate === 0) return { dropout: 0, k0: 0, k1: 0, k2: 0, threshold: 0, keepScale: 1 };
  const [k0, k1, k2] = dropoutKeys(opts.seed);
  return { dropout: 1, k0, k1, k2, threshold: dropoutThreshold(opts.rate), keepScale: Math.fround(1 / (1 - opts.rate)) };
}

/** The mask of `opts` for a tensor of `shape`, drawn in JavaScript (the references); null without dropout. */
export function referenceMask(tf: Tf, shape: number[], opts: DropoutOptions): Tensor | null {
  if (opts.seed === null || opts.rate === 0) return null;
  return tf.tensor(dropoutMask(shape.reduce((a, b) => a * b, 1), opts.rate, opts.seed), shape, 'float32');
}
