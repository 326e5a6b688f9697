// LayerNorm on webgpu, plain and at the end of a residual branch: LAYER_NORM_KERNEL and
// LAYER_NORM_GRAD_KERNEL of training/kernels/layer-norm.ts, RESIDUAL_LAYER_NORM_KERNEL and
// RESIDUAL_LAYER_NORM_GRAD_KERNEL of training/kernels/residual-layer-norm.ts, through the raw seam
// (raw.ts: every one has several outputs). One shader template each way serves both forms; the
// residual form adds a prologue (forward) and two outputs (backward).
//
// Forward, one dispatch: one workgroup per row (a stride of the workgroup count past 65,535 rows).
// The residual form first forms the row's sum dropout(x + bias) + residual and writes it (the
// LayerNorm's input, kept for the backward). Then the mean, the variance as the mean of squared
// deviations (each a sum in workgroup memory), y and the row's (mean, rstd).
//
// Backward, two dispatches whatever the row count (one when the rows make one block). Stage 1: a
// workgroup takes a block of consecutive rows, in chunks of up to CHUNK rows: first the row sums
// of g = dy gamma and g xhat for each row of the chunk (one workgroup reduction per row, kept in
// workgroup memory), then, column by column (thread t takes columns t, t + WG, ...: adjacent
// threads read adjacent entries), ds = rstd (g - mean(g) - xhat mean(g xhat)) for each row of the
// chunk, while the column's sums of dy xhat and dy (and, residual form, of dx = ds * mask) over
// the block's rows build up in registers, then in the block's partial rows (only the thread that
// owns a column touches its partials). The plain form writes ds as dx; the residual form writes
// ds as dresidual and ds * mask as dx. Stage 2 adds the blocks' partial rows into the results
// (column-sums.ts, one stage).
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs';
import { LAYER_NORM_GRAD_KERNEL, LAYER_NORM_KERNEL, type LayerNormAttrs } from '../../kernels/layer-norm.ts';
import { RESIDUAL_LAYER_NORM_GRAD_KERNEL, RESIDUAL_LAYER_NORM_KERNEL, type ResidualLayerNormAttrs } from '../../kernels/residual-layer-norm.ts';
import type { KernelDropout } from '../../kernels/kernel-dropout.ts';
import type { Tf } from '../common.ts';
import { columnSumsRaw, type ColumnSumSpec } from './column-sums.ts';
import { rawWebGpu } from './raw.ts';
import { DROPOUT_HASH_WGSL, type KernelArgs } from './row-program.ts';

/** Threads per workgroup. */
const WG = 64;
/** Rows whose sums stage 1 keeps in workgroup memory at a time. */
const CHUNK = 64;
/** Most workgroups in one dispatch dimension. */
const MAX_WORKGROUPS = 65535;
/** Stage 1 makes at most this many blocks (stage 2 then sums this many partial rows). */
const MAX_BLOCKS = 1024;
/** Rows per stage-1 block at least (each block's partial row is one more for stage 2 to add). */
const MIN_BLOCK_ROWS = 16;

/** Uniform fields of both shaders; the dropout hash reads `u.k0` ... `u.threshold` (residual form). */
const UNIFORMS = `struct U { rows : u32, cols : u32, eps : f32, rowsPerBlock : u32, k0 : u32, k1 : u32, k2 : u32, threshold : u32, keepScale : f32, dropout : u32, pad0 : u32, pad1 : u32 }`;

const NO_DROPOUT: KernelDropout = { dropout: 0, k0: 0, k1: 0, k2: 0, threshold: 0, keepScale: 1 };

function uniforms(eps: number, d: KernelDropout, rows: number, cols: number, rowsPerBlock: number): ArrayBuffer {
  const data = new DataView(new ArrayBuffer(48));
  const u32 = (i: number, v: number) => data.setUint32(4 * i, v >>> 0, true);
  u32(0, rows);
  u32(1, cols);
  data.setFloat32(8, eps, true);
  u32(3, rowsPerBlock);
  [d.k0, d.k1, d.k2, d.threshold].forEach((v, i) => u32(4 + i, v));
  data.setFloat32(32, d.keepScale, true);
  u32(9, d.dropout === 1 ? 1 : 0);
  return data.buffer;
}

/** WGSL: `keep(v, i)`, v times entry i's dropout mask (v itself without dropout). */
const KEEP_WGSL = `
${DROPOUT_HASH_WGSL.replaceAll('uniforms.', 'u.')}
fn keep(v : f32, i : u32) -> f32 {
  if (u.dropout == 0u) {
    return v;
  }
  return select(v * u.keepScale, 0.0, mlmkitDropped(i));
}`;

/** WGSL: `wgSum2(v, tid)`, the sum of a vec2 over the workgroup (every thread gets it). */
const WG_SUM_WGSL = `
var<workgroup> red : array<vec2<f32>, ${WG}>;
fn wgSum2(v : vec2<f32>, tid : u32) -> vec2<f32> {
  red[tid] = v;
  workgroupBarrier();
  for (var stride = ${WG / 2}u; stride > 0u; stride = stride / 2u) {
    if (tid < stride) {
      red[tid] = red[tid] + red[tid + stride];
    }
    workgroupBarrier();
  }
  let total = red[0];
  workgroupBarrier();
  return total;
}`;

/** Storage declarations at bindings 0, 1, ...: read-only `inputs`, then read-write `outputs`, then the uniforms. */
function bindings(inputs: string[], outputs: string[]): string {
  const all = [...inputs.map((n) => `var<storage, read> ${n} : array<f32>;`), ...outputs.map((n) => `var<storage, read_write> ${n} : array<f32>;`), 'var<uniform> u : U;'];
  return all.map((d, i) => `@group(0) @binding(${i}) ${d}`).join('\n');
}

/** The forward shader. Residual: LayerNorm of `total` = dropout(x + bias) + residual, written; plain: of x. */
function forwardWgsl(residual: boolean): string {
  const io = residual
    ? bindings(['x', 'bias', 'residual', 'gamma', 'beta'], ['y', 'total', 'stats'])
    : bindings(['x', 'gamma', 'beta'], ['y', 'stats']);
  const input = residual ? 'total' : 'x';
  const firstPass = residual
    ? `let i = base + c;
      let v = keep(x[i] + bias[c], i) + residual[i];
      total[i] = v;
      s = s + v;`
    : 's = s + x[base + c];';
  return /* wgsl */ `
${UNIFORMS}
${io}
${residual ? KEEP_WGSL : ''}
${WG_SUM_WGSL}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(num_workgroups) nwg : vec3<u32>, @builtin(local_invocation_id) lid : vec3<u32>) {
  let n = f32(u.cols);
  for (var row = wid.x; row < u.rows; row = row + nwg.x) {
    let base = row * u.cols;
    var s = 0.0;
    for (var c = lid.x; c < u.cols; c = c + ${WG}u) {
      ${firstPass}
    }
    let mean = wgSum2(vec2<f32>(s, 0.0), lid.x).x / n;
    var d = 0.0;
    for (var c = lid.x; c < u.cols; c = c + ${WG}u) {
      let t = ${input}[base + c] - mean;
      d = d + t * t;
    }
    let rstd = inverseSqrt(wgSum2(vec2<f32>(d, 0.0), lid.x).x / n + u.eps);
    for (var c = lid.x; c < u.cols; c = c + ${WG}u) {
      y[base + c] = (${input}[base + c] - mean) * rstd * gamma[c] + beta[c];
    }
    if (lid.x == 0u) {
      stats[2u * row] = mean;
      stats[2u * row + 1u] = rstd;
    }
  }
}`;
}

/**
 * Stage 1 of the backward (see the header). The column sums go to the partial rows [blocks, cols]
 * (with one block, the results themselves): residual form pbias, pgamma, pbeta; plain pgamma, pbeta.
 */
function gradWgsl(residual: boolean): string {
  const io = residual
    ? bindings(['dy', 'x', 'stats', 'gamma'], ['dx', 'dres', 'pbias', 'pgamma', 'pbeta'])
    : bindings(['dy', 'x', 'stats', 'gamma'], ['dx', 'pgamma', 'pbeta']);
  const sums = residual ? ['pbias', 'pgamma', 'pbeta'] : ['pgamma', 'pbeta'];
  const acc = residual ? 'vec3<f32>(kept, d * xhat, d)' : 'vec2<f32>(d * xhat, d)';
  const write = residual
    ? `let kept = keep(ds, i);
        dres[i] = ds;
        dx[i] = kept;`
    : 'dx[i] = ds;';
  const lanes = ['x', 'y', 'z'];
  return /* wgsl */ `
${UNIFORMS}
${io}
${residual ? KEEP_WGSL : ''}
${WG_SUM_WGSL}
var<workgroup> means : array<vec2<f32>, ${CHUNK}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_id) lid : vec3<u32>) {
  let cols = u.cols;
  let n = f32(cols);
  let block = wid.x;
  let first = block * u.rowsPerBlock;
  let end = min(first + u.rowsPerBlock, u.rows);
  for (var start = first; start < end; start = start + ${CHUNK}u) {
    let stop = min(start + ${CHUNK}u, end);
    // The row sums of the chunk's rows.
    for (var r = start; r < stop; r = r + 1u) {
      let mean = stats[2u * r];
      let rstd = stats[2u * r + 1u];
      var s = vec2<f32>(0.0, 0.0);
      for (var c = lid.x; c < cols; c = c + ${WG}u) {
        let g = dy[r * cols + c] * gamma[c];
        let xhat = (x[r * cols + c] - mean) * rstd;
        s = s + vec2<f32>(g, g * xhat);
      }
      let m = wgSum2(s, lid.x) / n;
      if (lid.x == 0u) {
        means[r - start] = m;
      }
    }
    workgroupBarrier();
    // Column by column: the gradient entries and the column sums over the chunk.
    for (var c = lid.x; c < cols; c = c + ${WG}u) {
      var acc = vec${sums.length}<f32>();
      let gc = gamma[c];
      for (var r = start; r < stop; r = r + 1u) {
        let i = r * cols + c;
        let rstd = stats[2u * r + 1u];
        let xhat = (x[i] - stats[2u * r]) * rstd;
        let m = means[r - start];
        let d = dy[i];
        let ds = rstd * (d * gc - m.x - xhat * m.y);
        ${write}
        acc = acc + ${acc};
      }
      let p = block * cols + c;
      if (start == first) {
        ${sums.map((name, q) => `${name}[p] = acc.${lanes[q]};`).join('\n        ')}
      } else {
        ${sums.map((name, q) => `${name}[p] = ${name}[p] + acc.${lanes[q]};`).join('\n        ')}
      }
    }
    workgroupBarrier();
  }
}`;
}

type Backend = { makeTensorInfo(shape: number[], dtype: 'float32'): TensorInfo; disposeData(dataId: object, force?: boolean): boolean };

/** The forward of either form: returns [y, stats] (plain) or [y, sum, stats] (residual). */
function forward(tf: Tf, args: KernelArgs, residual: boolean): TensorInfo[] {
  const { x } = args.inputs;
  const eps = (args.attrs as LayerNormAttrs).eps;
  const dropout = residual ? (args.attrs as ResidualLayerNormAttrs) : NO_DROPOUT;
  const names = residual ? ['x', 'bias', 'residual', 'gamma', 'beta'] : ['x', 'gamma', 'beta'];
  const backend = args.backend as Backend;
  const [rows, cols] = x.shape;
  const big = () => backend.makeTensorInfo([rows, cols], 'float32');
  const outs = residual ? [big(), big(), backend.makeTensorInfo([rows, 2], 'float32')] : [big(), backend.makeTensorInfo([rows, 2], 'float32')];
  if (rows === 0 || cols === 0) return outs;
  const raw = rawWebGpu(tf);
  const key = residual ? 'mlmkit-residual-layer-norm' : 'mlmkit-layer-norm';
  const pipeline = raw.pipeline(key, forwardWgsl(residual));
  const buffers = [...names.map((n) => args.inputs[n]), ...outs].map((t) => raw.bufferOf(t));
  raw.dispatch(pipeline, raw.bindGroup(key, pipeline, [...buffers, raw.uniform(uniforms(eps, dropout, rows, cols, 0))]), [Math.min(rows, MAX_WORKGROUPS)]);
  for (const t of outs) raw.written(t);
  return outs;
}

/** Rows per stage-1 block for `rows` rows: at least MIN_BLOCK_ROWS, at most MAX_BLOCKS blocks. */
function gradRowsPerBlock(rows: number): number {
  return Math.max(MIN_BLOCK_ROWS, Math.ceil(rows / MAX_BLOCKS));
}

/**
 * The backward of either form. Inputs dy, x (the residual form's `sum`), stats, gamma; returns
 * [dx, dgamma, dbeta] (plain) or [dx, dbias, dresidual, dgamma, dbeta] (residual).
 */
function backward(tf: Tf, args: KernelArgs, residual: boolean): TensorInfo[] {
  const { dy, stats, gamma } = args.inputs;
  const x = residual ? args.inputs.sum : args.inputs.x;
  const dropout = residual ? (args.attrs as ResidualLayerNormAttrs) : NO_DROPOUT;
  const backend = args.backend as Backend;
  const [rows, cols] = dy.shape;
  const big = residual ? [0, 1] : [0];
  const entries = big.map(() => backend.makeTensorInfo([rows, cols], 'float32')); // dx (, dresidual)
  const per = gradRowsPerBlock(rows);
  const blocks = Math.max(1, Math.ceil(rows / per));
  const K = residual ? 3 : 2;
  // The column sums: the results with one block, else the blocks' partial rows.
  const sums = Array.from({ length: K }, () => backend.makeTensorInfo(blocks === 1 ? [cols] : [blocks, cols], 'float32'));
  const ordered = (s: TensorInfo[]) => (residual ? [entries[0], s[0], entries[1], s[1], s[2]] : [entries[0], s[0], s[1]]);
  if (cols === 0) return ordered(sums);
  const raw = rawWebGpu(tf);
  if (rows === 0) {
    for (const t of sums) raw.clear(raw.bufferOf(t), 0, cols * 4);
    for (const t of sums) raw.written(t);
    return ordered(sums);
  }
  const key = residual ? 'mlmkit-residual-layer-norm-grad' : 'mlmkit-layer-norm-grad';
  const pipeline = raw.pipeline(key, gradWgsl(residual));
  const buffers = [dy, x, stats, gamma, ...entries, ...sums].map((t) => raw.bufferOf(t));
  raw.dispatch(pipeline, raw.bindGroup(key, pipeline, [...buffers, raw.uniform(uniforms(0, dropout, rows, cols, per))]), [blocks]);
  for (const t of [...entries, ...sums]) raw.written(t);
  if (blocks === 1) return ordered(sums);
  const names = sums.map((_, q) => `p${q}`);
  const spec: ColumnSumSpec = { key: `layer-norm-partials/${K}`, inputs: names, values: names.map((p) => `${p}[r * cols + col]`) };
  const results = columnSumsRaw(tf, backend, spec, sums, blocks, cols, { oneStage: true });
  for (const p of sums) backend.disposeData(p.dataId);
  return ordered(results);
}

/** Registers the four kernels (LayerNorm and residual LayerNorm, forward and backward) for webgpu (once). */
export function registerWebGpuLayerNorm(tf: Tf): void {
  for (const [kernelName, f, residual] of [
    [LAYER_NORM_KERNEL, forward, false],
    [LAYER_NORM_GRAD_KERNEL, backward, false],
    [RESIDUAL_LAYER_NORM_KERNEL, forward, true],
    [RESIDUAL_LAYER_NORM_GRAD_KERNEL, backward, true],
  ] as const) {
    if (tf.getKernel(kernelName, 'webgpu') !== undefined) continue;
    const kernelFunc = (args: KernelArgs) => f(tf, args, residual);
    tf.registerKernel({ kernelName, backendName: 'webgpu', kernelFunc: kernelFunc as unknown as KernelConfig['kernelFunc'] });
  }
}
