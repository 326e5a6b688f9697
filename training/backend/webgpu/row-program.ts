// What mlmkit's WGSL programs for tfjs-backend-webgpu share: the slice of the backend's interface
// they call (`runWebGPUProgram`), the dropout hash in WGSL, and the skeleton of a program that runs
// one workgroup per row and reduces each row in workgroup memory.
//
// How TF.js runs such a program (@tensorflow/tfjs-backend-webgpu 4.22, dist/webgpu_program.js and
// backend_webgpu.js): it prepends declarations to `getUserCode()`'s WGSL: one read-only storage
// array per name in `variableNames` (in that order, bound after the output `result`), a `uniforms`
// struct holding each input's shape (`<name>Shape`), the output's (`outShape`) and the fields of
// the program's `uniforms` string, and an entry point that calls `main(index)` with the flat
// global invocation index. A dispatch over more workgroups than the device allows in one dimension
// is folded into two or three dimensions, rounded up: the flat index then runs past the end, so
// the row programs below clamp the row they read and skip the writes of workgroups past the last
// row (a workgroup returns or continues as a whole, keeping the barriers in uniform control flow).
import type { TensorInfo } from '@tensorflow/tfjs';
import type { KernelDropout } from '../../kernels/kernel-dropout.ts';

export interface Uniform {
  type: 'uint32' | 'int32' | 'float32';
  data: number[];
}

/** The part of tfjs-backend-webgpu's WebGPUBackend that mlmkit's kernels call. */
export interface WebGpuBackendLike {
  runWebGPUProgram(program: unknown, inputs: TensorInfo[], outputDtype: 'float32' | 'int32', uniforms?: Uniform[]): TensorInfo;
}

/** The arguments TF.js passes to a kernel function (see tf.registerKernel). */
export interface KernelArgs {
  inputs: Record<string, TensorInfo>;
  backend: unknown;
  attrs?: unknown;
}

/**
 * WGSL of the dropout hash of training/kernels/dropout-mask.ts `dropoutMask`: `mlmkitDropped(i)` is true
 * when entry i of a mask with the uniforms' keys (k0, k1, k2, threshold) is dropped. Unsigned
 * arithmetic in WGSL wraps modulo 2^32 as Math.imul does, so the decisions equal JavaScript's.
 */
export const DROPOUT_HASH_WGSL = `
  fn mlmkitMix(v : u32) -> u32 {
    var x = v;
    x = x ^ (x >> 16u);
    x = x * 0x7feb352du;
    x = x ^ (x >> 15u);
    x = x * 0x846ca68bu;
    x = x ^ (x >> 16u);
    return x;
  }
  fn mlmkitDropped(i : u32) -> bool {
    return mlmkitMix(mlmkitMix(mlmkitMix(i + uniforms.k0) ^ uniforms.k1) ^ uniforms.k2) < uniforms.threshold;
  }
`;

/** The uniform fields DROPOUT_HASH_WGSL reads, plus the kept entries' scale. */
export const DROPOUT_UNIFORM_FIELDS = 'k0 : u32, k1 : u32, k2 : u32, threshold : u32, keepScale : f32,';

/** Uniform values for DROPOUT_UNIFORM_FIELDS, in its order. */
export function dropoutUniforms(a: KernelDropout): Uniform[] {
  return [
    { type: 'uint32', data: [a.k0 >>> 0] },
    { type: 'uint32', data: [a.k1 >>> 0] },
    { type: 'uint32', data: [a.k2 >>> 0] },
    { type: 'uint32', data: [a.threshold >>> 0] },
    { type: 'float32', data: [a.keepScale] },
  ];
}

/** The smallest power of two >= n, within [lo, hi]. */
export function workgroupFor(n: number, lo: number, hi: number): number {
  let w = lo;
  while (w < n && w < hi) w *= 2;
  return w;
}

/**
 * WGSL helpers of a one-workgroup-per-row program with `wg` threads (a power of two): shared
 * arrays `redA`/`redB`, `reduceSum(v)` (every thread gets the row's sum) and
 * `reduceMaxSum(m, s)` (combines per-thread running maxima m and sums s of exp(x - m) into the
 * row's; every thread gets them). Each call ends with a barrier, so they can be called in turn.
 */
export function rowReductionsWgsl(wg: number): string {
  return `
  const WG : i32 = ${wg};
  var<workgroup> redA : array<f32, ${wg}>;
  var<workgroup> redB : array<f32, ${wg}>;
  fn reduceSum(v : f32) -> f32 {
    let tid = i32(localId.x);
    redA[tid] = v;
    workgroupBarrier();
    for (var stride = WG / 2; stride > 0; stride = stride / 2) {
      if (tid < stride) {
        redA[tid] = redA[tid] + redA[tid + stride];
      }
      workgroupBarrier();
    }
    let total = redA[0];
    workgroupBarrier();
    return total;
  }
  fn reduceMaxSum(m : f32, s : f32) -> vec2<f32> {
    let tid = i32(localId.x);
    redA[tid] = m;
    redB[tid] = s;
    workgroupBarrier();
    for (var stride = WG / 2; stride > 0; stride = stride / 2) {
      if (tid < stride) {
        let m1 = redA[tid];
        let m2 = redA[tid + stride];
        let top = max(m1, m2);
        redB[tid] = redB[tid] * exp(m1 - top) + redB[tid + stride] * exp(m2 - top);
        redA[tid] = top;
      }
      workgroupBarrier();
    }
    let r = vec2<f32>(redA[0], redB[0]);
    workgroupBarrier();
    return r;
  }
`;
}

/**
 * A row program's dispatch fields: one workgroup of `wg` threads per row (the layout is flat over
 * the output's axes, as TF.js's own softmax declares it).
 */
export function rowDispatch(
  outputShape: number[],
  rows: number,
  wg: number,
): { dispatchLayout: { x: number[] }; dispatch: [number, number, number]; workgroupSize: [number, number, number] } {
  return { dispatchLayout: { x: outputShape.map((_, i) => i) }, dispatch: [rows, 1, 1], workgroupSize: [wg, 1, 1] };
}
