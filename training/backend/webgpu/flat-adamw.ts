// The WGSL kernels of the flat AdamW (training/flat-adamw.ts), encoded through the raw seam
// (training/backend/webgpu/raw.ts) into TF.js's command stream. Three dispatches a step (two
// more for each chunk after the first, see below):
//
//   1. sumSquares: each of PARTIALS workgroups sums g^2 over a grid-strided share of the flat
//      gradient buffer, then a tree reduction in workgroup memory writes one partial sum;
//   2. finalize (one workgroup): sums the partials in a fixed order, norm = sqrt(sum), the finite
//      flag (norm and loss neither NaN nor infinite, tested on the bits: WGSL compilers may assume
//      that floats are finite, so `x != x` cannot be trusted), and PyTorch's clip coefficient
//      min(1, max_norm / (norm + 1e-6)) (1 when clipping is off) into the 4-float stats buffer
//      [loss, norm, clip, state]; state (STEP_STATE) is 1 (apply), 0 (loss or norm not finite)
//      or -1 (held: the step was encoded `chained` to the previous one, whose state, still in the
//      buffer when this kernel starts, was not 1);
//   3. update: AdamW over a range of the flat buffers, reading clip and state from the stats
//      buffer (a step whose state is not 1 changes nothing); weight decay for the entries below
//      `decayEnd` (the flat layout puts every decayed parameter first).
//
// A storage binding may be smaller than the model (llvmpipe allows 128 MiB, bert-base needs
// 440 MB): the flat buffers are bound in chunks of at most the device's binding size, one
// sumSquares and one update dispatch per chunk, each writing its own partial sums.
//
// The update does the per-tensor AdamW's arithmetic (training/optimizer.ts) in its order, in f32:
//   m1 = m * beta1 + g * ((1 - beta1) * clip)
//   v1 = v * beta2 + g^2 * ((1 - beta2) * clip^2)
//   p1 = p * (1 - lr * wd)   [decayed entries]   + (m1 / (sqrt(v1) / sqrt(1 - beta2^t) + eps)) * -(lr / (1 - beta1^t))
// The step constants come from the host (computed in f64 as the per-tensor AdamW does); only the
// clip products are formed here, in f32, since the clip is known only on the GPU.
import type { RawWebGpu } from './raw.ts';

/** Workgroups of the first stage of the sum of squares per chunk (partial sums each). */
export const PARTIALS = 1024;
const WG = 256;
/** The update's workgroups at most; each thread strides over the range. */
const UPDATE_WORKGROUPS = 4096;

/** Floats in the stats buffer: loss, norm, clip coefficient, the step's state (STEP_STATE). */
export const STATS_FLOATS = 4;
export const STAT = { loss: 0, norm: 1, clip: 2, state: 3 } as const;
/** What the finalize kernel says of a step: applied, not finite, or held because the step before it was not applied. */
export const STEP_STATE = { applied: 1, notFinite: 0, held: -1 } as const;

const SUM_SQUARES = /* wgsl */ `
struct U { n : u32, base : u32 }
@group(0) @binding(0) var<storage, read> g : array<f32>;
@group(0) @binding(1) var<storage, read_write> partials : array<f32>;
@group(0) @binding(2) var<uniform> u : U;
var<workgroup> acc : array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_id) lid : vec3<u32>, @builtin(workgroup_id) wid : vec3<u32>,
        @builtin(num_workgroups) nwg : vec3<u32>) {
  var s = 0.0;
  let stride = nwg.x * ${WG}u;
  for (var i = wid.x * ${WG}u + lid.x; i < u.n; i += stride) {
    let x = g[i];
    s += x * x;
  }
  acc[lid.x] = s;
  workgroupBarrier();
  for (var k = ${WG / 2}u; k > 0u; k >>= 1u) {
    if (lid.x < k) { acc[lid.x] += acc[lid.x + k]; }
    workgroupBarrier();
  }
  if (lid.x == 0u) { partials[u.base + wid.x] = acc[0]; }
}`;

const FINALIZE = /* wgsl */ `
struct U { maxNorm : f32, count : u32, invScale : f32, chained : u32 }
@group(0) @binding(0) var<storage, read> partials : array<f32>;
@group(0) @binding(1) var<storage, read_write> stats : array<f32>;
@group(0) @binding(2) var<uniform> u : U;
var<workgroup> acc : array<f32, ${WG}>;
fn finite(x : f32) -> bool { return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u; }
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_id) lid : vec3<u32>) {
  var s = 0.0;
  for (var i = lid.x; i < u.count; i += ${WG}u) { s += partials[i]; }
  acc[lid.x] = s;
  workgroupBarrier();
  for (var k = ${WG / 2}u; k > 0u; k >>= 1u) {
    if (lid.x < k) { acc[lid.x] += acc[lid.x + k]; }
    workgroupBarrier();
  }
  if (lid.x == 0u) {
    // Loss scaling (training/loss-scale.ts): loss and gradients came S times larger; invScale = 1/S
    // (a power of two: exact) unscales the loss and the norm, and joins the clip factor.
    let norm = sqrt(acc[0]) * u.invScale;
    let loss = stats[${STAT.loss}] * u.invScale;
    let ok = finite(norm) && finite(loss);
    // Chained: the previous step's state is still here; unless it was applied, hold this step.
    let held = u.chained != 0u && stats[${STAT.state}] != ${STEP_STATE.applied}.0;
    var clip = 1.0;
    if (u.maxNorm > 0.0) { clip = min(1.0, u.maxNorm / (norm + 1e-6)); }
    stats[${STAT.loss}] = loss;
    stats[${STAT.norm}] = norm;
    stats[${STAT.clip}] = clip * u.invScale;
    stats[${STAT.state}] = select(select(${STEP_STATE.notFinite}.0, ${STEP_STATE.applied}.0, ok), ${STEP_STATE.held}.0, held);
  }
}`;

const UPDATE = /* wgsl */ `
struct U {
  begin : u32, end : u32, decayEnd : u32, pad : u32,
  beta1 : f32, beta2 : f32, oneMinusBeta1 : f32, oneMinusBeta2 : f32,
  eps : f32, invSqrtBc2 : f32, negStep : f32, keep : f32,
}
@group(0) @binding(0) var<storage, read_write> p : array<f32>;
@group(0) @binding(1) var<storage, read_write> m : array<f32>;
@group(0) @binding(2) var<storage, read_write> v : array<f32>;
@group(0) @binding(3) var<storage, read> g : array<f32>;
@group(0) @binding(4) var<storage, read> stats : array<f32>;
@group(0) @binding(5) var<uniform> u : U;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid : vec3<u32>, @builtin(num_workgroups) nwg : vec3<u32>) {
  if (stats[${STAT.state}] != ${STEP_STATE.applied}.0) { return; }
  let clip = stats[${STAT.clip}];
  let b1c = u.oneMinusBeta1 * clip;
  let b2c = u.oneMinusBeta2 * clip * clip;
  let stride = nwg.x * ${WG}u;
  for (var i = u.begin + gid.x; i < u.end; i += stride) {
    let gi = g[i];
    let m1 = m[i] * u.beta1 + gi * b1c;
    let v1 = v[i] * u.beta2 + (gi * gi) * b2c;
    let denom = sqrt(v1) * u.invSqrtBc2 + u.eps;
    var pi = p[i];
    if (i < u.decayEnd) { pi = pi * u.keep; }
    p[i] = pi + (m1 / denom) * u.negStep;
    m[i] = m1;
    v[i] = v1;
  }
}`;

/** The flat buffers the kernels work on (f32; `n` entries in p, m, v, g). */
export interface FlatBuffers {
  n: number;
  /** Entries per bound chunk (the last one may be shorter); a multiple of the offset alignment. */
  chunk: number;
  p: GPUBuffer;
  m: GPUBuffer;
  v: GPUBuffer;
  g: GPUBuffer;
  partials: GPUBuffer; // PARTIALS floats per chunk
  stats: GPUBuffer; // STATS_FLOATS floats
}

/**
 * Entries per chunk for a device: the largest multiple of the storage offset alignment whose
 * bytes fit in one storage binding (`maxBindingBytes` lower for tests).
 */
export function chunkEntries(device: GPUDevice, maxBindingBytes = Infinity): number {
  const align = device.limits.minStorageBufferOffsetAlignment / 4;
  const bytes = Math.min(device.limits.maxStorageBufferBindingSize, maxBindingBytes);
  return Math.max(align, Math.floor(bytes / 4 / align) * align);
}

/** The number of chunks of `b` (at least 1). */
export function chunkCount(n: number, chunk: number): number {
  return Math.max(1, Math.ceil(n / chunk));
}

/** Binding of chunk `k` of a flat buffer. */
function chunkOf(b: FlatBuffers, buffer: GPUBuffer, k: number): { buffer: GPUBuffer; offset: number; size: number } {
  const begin = k * b.chunk;
  return { buffer, offset: begin * 4, size: Math.max(1, Math.min(b.n, begin + b.chunk) - begin) * 4 };
}

/** The host-computed constants of one AdamW update (see the header). */
export interface UpdateConstants {
  beta1: number;
  beta2: number;
  epsilon: number;
  /** 1 / sqrt(1 - beta2^t) */
  invSqrtBc2: number;
  /** -(lr / (1 - beta1^t)) */
  negStep: number;
  /** 1 - lr * weight_decay */
  keep: number;
  /** Entries [0, decayEnd) are weight-decayed. */
  decayEnd: number;
}

/** Encodes the global norm, finite flag and clip coefficient into `b.stats` (stats[loss] set by the caller first). */
/**
 * Encodes the norm and clip dispatches. `chained`: the step is applied only if the previous one
 * (whose state the stats buffer still holds) was.
 */
export function encodeNormAndClip(raw: RawWebGpu, b: FlatBuffers, maxNorm: number, lossScale = 1, chained = false): void {
  const sq = raw.pipeline('mlmkit-flat-adamw-sumsq', SUM_SQUARES);
  const chunks = chunkCount(b.n, b.chunk);
  for (let k = 0; k < chunks; k++) {
    const n = Math.max(0, Math.min(b.n, (k + 1) * b.chunk) - k * b.chunk);
    const u1 = new Uint32Array([n, k * PARTIALS]);
    raw.dispatch(sq, raw.bindGroup(`mlmkit-flat-adamw-sumsq-${k}`, sq, [chunkOf(b, b.g, k), b.partials, raw.uniform(u1.buffer)]), [PARTIALS]);
  }
  const fin = raw.pipeline('mlmkit-flat-adamw-finalize', FINALIZE);
  const u2 = new ArrayBuffer(16);
  new Float32Array(u2, 0, 1)[0] = maxNorm;
  new Uint32Array(u2, 4, 1)[0] = chunks * PARTIALS;
  new Float32Array(u2, 8, 1)[0] = 1 / lossScale;
  new Uint32Array(u2, 12, 1)[0] = chained ? 1 : 0;
  raw.dispatch(fin, raw.bindGroup('mlmkit-flat-adamw-finalize', fin, [b.partials, b.stats, raw.uniform(u2)]), [1]);
}

/**
 * Encodes the AdamW update of entries [begin, end) (skipped on the GPU when stats say not
 * finite): one dispatch per chunk the range meets, indices relative to the chunk.
 */
export function encodeUpdate(raw: RawWebGpu, b: FlatBuffers, c: UpdateConstants, begin: number, end: number): void {
  const pipe = raw.pipeline('mlmkit-flat-adamw-update', UPDATE);
  for (let k = Math.floor(begin / b.chunk); k * b.chunk < end; k++) {
    const base = k * b.chunk;
    const from = Math.max(begin, base) - base;
    const to = Math.min(end, base + b.chunk) - base;
    if (to <= from) continue;
    const decayEnd = Math.min(Math.max(c.decayEnd - base, 0), to);
    const u = new ArrayBuffer(48);
    new Uint32Array(u, 0, 4).set([from, to, decayEnd, 0]);
    new Float32Array(u, 16, 8).set([c.beta1, c.beta2, 1 - c.beta1, 1 - c.beta2, c.epsilon, c.invSqrtBc2, c.negStep, c.keep]);
    const group = raw.bindGroup(`mlmkit-flat-adamw-update-${k}`, pipe, [
      chunkOf(b, b.p, k), chunkOf(b, b.m, k), chunkOf(b, b.v, k), chunkOf(b, b.g, k), b.stats, raw.uniform(u),
    ]);
    raw.dispatch(pipe, group, [Math.min(UPDATE_WORKGROUPS, Math.ceil((to - from) / WG))]);
  }
}
