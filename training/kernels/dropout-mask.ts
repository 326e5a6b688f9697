// The dropout mask every backend draws: a keyed hash of each entry's index, so that a GPU can
// compute the very mask the host would (one thread per entry, no upload) and a fused kernel can
// apply it entry by entry. This file is the contract and its reference: the kernel name and
// attributes the webgpu backend implements (training/backend/dropout-webgpu.ts), and the
// JavaScript mask that is the oracle for it and the path on every other backend.
import { fnv1a, splitmix32 } from '../../common/rng.ts';

/** The GPU mask kernel's name; attrs: n (entries), k0, k1, k2 (key words), threshold (u32), scale (f32). */
export const DROPOUT_MASK_KERNEL = 'MlmkitDropoutMask';

/**
 * The three 32-bit key words of a dropout site's masks: the FNV-1a hash of `seed` expanded with
 * splitmix32.
 */
export function dropoutKeys(seed: string): [number, number, number] {
  const split = splitmix32(fnv1a(seed));
  return [split(), split(), split()];
}

/** Entries whose hash is below this are dropped: floor(rate x 2^32), so P(drop) = rate to 2^-32. */
export function dropoutThreshold(rate: number): number {
  if (!(rate >= 0 && rate < 1)) throw new Error(`dropout rate must be in [0, 1), got ${rate}`);
  return Math.floor(rate * 4294967296);
}

/**
 * An inverted-dropout mask of n entries for `rate`: entry i is 0 when hash(i) < dropoutThreshold,
 * else 1 / (1 - rate) in float32; deterministic in `seed`. hash(i) = mix(mix(mix(i + k0) ^ k1) ^
 * k2) over 32-bit words, with k0..k2 = dropoutKeys(seed) and mix Chris Wellons's "lowbias32"
 * integer hash (xor-shift 16, multiply 0x7feb352d, xor-shift 15, multiply 0x846ca68b, xor-shift
 * 16). A function of the index rather than a stream: the webgpu backend computes the same masks on
 * the GPU, one thread per entry (training/backend/dropout-webgpu.ts registers DROPOUT_MASK_KERNEL), instead of uploading them.
 * Tested for keep rate, independence of neighbours and of entries a row apart, and against a
 * BigInt implementation (tests/training/models/ops.test.ts).
 */
export function dropoutMask(n: number, rate: number, seed: string): Float32Array {
  const threshold = dropoutThreshold(rate);
  const [k0, k1, k2] = dropoutKeys(seed);
  const scale = Math.fround(1 / (1 - rate));
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let x = (i + k0) | 0;
    x ^= x >>> 16;
    x = Math.imul(x, 0x7feb352d);
    x ^= x >>> 15;
    x = Math.imul(x, 0x846ca68b);
    x ^= (x >>> 16) ^ k1;
    x ^= x >>> 16;
    x = Math.imul(x, 0x7feb352d);
    x ^= x >>> 15;
    x = Math.imul(x, 0x846ca68b);
    x ^= (x >>> 16) ^ k2;
    x ^= x >>> 16;
    x = Math.imul(x, 0x7feb352d);
    x ^= x >>> 15;
    x = Math.imul(x, 0x846ca68b);
    x ^= x >>> 16;
    out[i] = x >>> 0 < threshold ? 0 : scale;
  }
  return out;
}
