// A small seeded random number generator with serialisable state.
// Algorithm: xoshiro128** (Blackman and Vigna, 2018), 32-bit words, period 2^128 - 1.
// Seeding: splitmix32 expands one integer seed into the four state words, so nearby seeds give
// unrelated streams. Never use Math.random in the pipeline: every draw goes through an Rng whose
// state can be saved into a checkpoint and restored for an exact resume.

export type RngState = [number, number, number, number];

/** The splitmix32 stream from one 32-bit seed: well-mixed words from nearby seeds. */
export function splitmix32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/** The 32-bit FNV-1a hash of a string's UTF-16 code units: a seed from a name. */
export function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

export class Rng {
  private s: Uint32Array;

  constructor(seed: number | RngState) {
    this.s = new Uint32Array(4);
    if (Array.isArray(seed)) {
      this.setState(seed);
    } else {
      if (!Number.isInteger(seed)) throw new Error(`seed must be an integer, got ${seed}`);
      const next = splitmix32(seed);
      for (let i = 0; i < 4; i++) this.s[i] = next();
      if ((this.s[0] | this.s[1] | this.s[2] | this.s[3]) === 0) this.s[0] = 1;
    }
  }

  /** A generator for a named sub-stream, independent of this one's future draws. */
  static derive(seed: number, ...path: number[]): Rng {
    let h = seed >>> 0;
    for (const p of path) h = splitmix32(h ^ Math.imul(p >>> 0, 0x27d4eb2f))();
    return new Rng(h);
  }

  /** Next 32-bit unsigned integer. */
  nextU32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** Uniform float in [0, 1) with 32 bits of resolution. */
  next(): number {
    return this.nextU32() / 4294967296;
  }

  /** Uniform integer in [0, n), without modulo bias (n <= 2^32). */
  int(n: number): number {
    if (!(n > 0 && n <= 4294967296)) throw new Error(`Rng.int: n must be in (0, 2^32], got ${n}`);
    const limit = 4294967296 - (4294967296 % n);
    for (;;) {
      const x = this.nextU32();
      if (x < limit) return x % n;
    }
  }

  /** Fisher-Yates shuffle in place. */
  shuffle<T>(a: { length: number; [i: number]: T }): void {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const tmp = a[i];
      a[i] = a[j];
      a[j] = tmp;
    }
  }

  getState(): RngState {
    return [this.s[0], this.s[1], this.s[2], this.s[3]];
  }

  setState(state: RngState): void {
    if (state.length !== 4 || state.some((x) => !Number.isInteger(x) || x < 0 || x > 0xffffffff)) {
      throw new Error(`invalid RNG state ${JSON.stringify(state)}: expected four 32-bit unsigned integers`);
    }
    // xoshiro never reaches the all-zero state, and never leaves it: every draw would be 0 (in
    // masking, every eligible token selected). Only a damaged saved state holds it. (A plain
    // Error: this module is shared with the browser build and imports nothing from Node.)
    if (state.every((x) => x === 0)) {
      throw new Error('invalid RNG state [0,0,0,0]: all four words are zero, which xoshiro128** never reaches (every draw would be 0); the saved state is damaged (data_state.rng in a checkpoint\'s trainer_state.json): resume from another checkpoint');
    }
    for (let i = 0; i < 4; i++) this.s[i] = state[i];
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
