// LayerNorm on webgpu: LAYER_NORM_KERNEL and LAYER_NORM_GRAD_KERNEL of training/kernels/layer-norm.ts.
//
// Forward, one dispatch through the raw seam (raw.ts; the kernel has two outputs, y and stats):
// one workgroup per row computes the mean, then the variance as the mean of squared deviations,
// each a sum in workgroup memory, and writes the row's y and (mean, rstd). Backward, two
// dispatches (three when the rows need a second stage of column sums): `LayerNormGradProgram`
// (one workgroup per row: the row sums of g and g xhat, then dx) and the column sums of dy xhat
// and dy into dgamma and dbeta (training/backend/webgpu/column-sums.ts).
//
// Row programs: a dispatch of more rows than one dimension takes is folded by TF.js into two or
// three dimensions, rounded up; the row is then taken from the flat invocation index, clamped for
// the reads, and workgroups past the last row write nothing (every thread reaches every barrier).
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs';
import { LAYER_NORM_GRAD_KERNEL, LAYER_NORM_KERNEL, type LayerNormAttrs } from '../../kernels/layer-norm.ts';
import type { Tf } from '../common.ts';
import { type KernelArgs, type Uniform, type WebGpuBackendLike } from './bias-grad.ts';
import { columnSumsRaw, LAYER_NORM_SUMS } from './column-sums.ts';
import { rawWebGpu } from './raw.ts';

/** Threads per row. */
const WG = 64;

/** WGSL: `rowSum2(v)` sums a vec2 over the workgroup (every thread gets the sums), and the row index. */
const ROW_WGSL = `
  var<workgroup> rowRed : array<vec2<f32>, ${WG}>;
  fn rowSum2(v : vec2<f32>) -> vec2<f32> {
    let tid = localId.x;
    rowRed[tid] = v;
    workgroupBarrier();
    for (var stride = ${WG / 2}u; stride > 0u; stride = stride / 2u) {
      if (tid < stride) {
        rowRed[tid] = rowRed[tid] + rowRed[tid + stride];
      }
      workgroupBarrier();
    }
    let total = rowRed[0];
    workgroupBarrier();
    return total;
  }
`;

/** A program of one workgroup of WG threads per row, writing `outputShape` ([rows, ...]). */
abstract class RowProgram {
  readonly workgroupSize: [number, number, number] = [WG, 1, 1];
  readonly dispatchLayout: { x: number[] };
  dispatch: [number, number, number];

  constructor(readonly outputShape: number[]) {
    this.dispatchLayout = { x: outputShape.map((_, i) => i) };
    this.dispatch = [outputShape[0], 1, 1];
  }

  /** WGSL run for one row: `row` (may be past the last), `r` (clamped: for reads), `base` (r's first entry). */
  protected abstract rowBody(): string;

  getUserCode(): string {
    return `
      ${ROW_WGSL}
      fn main(index : i32) {
        let row = index / ${WG};
        let r = min(row, uniforms.rows - 1);
        let base = r * uniforms.cols;
        ${this.rowBody()}
      }
    `;
  }
}

/** WGSL of the forward: workgroups loop over the rows (a stride of the workgroup count). */
const FORWARD_WGSL = /* wgsl */ `
struct U { rows : u32, cols : u32, eps : f32, pad : u32 }
@group(0) @binding(0) var<storage, read> x : array<f32>;
@group(0) @binding(1) var<storage, read> gamma : array<f32>;
@group(0) @binding(2) var<storage, read> beta : array<f32>;
@group(0) @binding(3) var<storage, read_write> y : array<f32>;
@group(0) @binding(4) var<storage, read_write> stats : array<f32>;
@group(0) @binding(5) var<uniform> u : U;
var<workgroup> red : array<f32, ${WG}>;
fn rowSum(v : f32, tid : u32) -> f32 {
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
}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(num_workgroups) nwg : vec3<u32>, @builtin(local_invocation_id) lid : vec3<u32>) {
  let n = f32(u.cols);
  for (var row = wid.x; row < u.rows; row = row + nwg.x) {
    let base = row * u.cols;
    var s = 0.0;
    for (var c = lid.x; c < u.cols; c = c + ${WG}u) {
      s = s + x[base + c];
    }
    let mean = rowSum(s, lid.x) / n;
    var d = 0.0;
    for (var c = lid.x; c < u.cols; c = c + ${WG}u) {
      let t = x[base + c] - mean;
      d = d + t * t;
    }
    let rstd = inverseSqrt(rowSum(d, lid.x) / n + u.eps);
    for (var c = lid.x; c < u.cols; c = c + ${WG}u) {
      y[base + c] = (x[base + c] - mean) * rstd * gamma[c] + beta[c];
    }
    if (lid.x == 0u) {
      stats[2u * row] = mean;
      stats[2u * row + 1u] = rstd;
    }
  }
}`;

/** Most workgroups the forward dispatches (the rows beyond loop). */
const MAX_ROW_WORKGROUPS = 65535;

class LayerNormGradProgram extends RowProgram {
  readonly variableNames = ['dy', 'x', 'stats', 'gamma'];
  readonly shaderKey = 'mlmkitLayerNormGrad';
  readonly uniforms = 'rows : i32, cols : i32,';

  constructor(rows: number, cols: number) {
    super([rows, cols]);
  }

  protected rowBody(): string {
    return `
        let mean = stats[2 * r];
        let rstd = stats[2 * r + 1];
        var s = vec2<f32>(0.0, 0.0);
        for (var c = i32(localId.x); c < uniforms.cols; c = c + ${WG}) {
          let g = dy[base + c] * gamma[c];
          let xhat = (x[base + c] - mean) * rstd;
          s = s + vec2<f32>(g, g * xhat);
        }
        let means = rowSum2(s) / f32(uniforms.cols);
        if (row < uniforms.rows) {
          for (var c = i32(localId.x); c < uniforms.cols; c = c + ${WG}) {
            let g = dy[base + c] * gamma[c];
            let xhat = (x[base + c] - mean) * rstd;
            result[base + c] = rstd * (g - means.x - xhat * means.y);
          }
        }
    `;
  }
}

function layerNormWebgpu(tf: Tf, args: KernelArgs): TensorInfo[] {
  const { x, gamma, beta } = args.inputs;
  const { eps } = args.attrs as LayerNormAttrs;
  const backend = args.backend as { makeTensorInfo(shape: number[], dtype: 'float32'): TensorInfo };
  const [rows, cols] = x.shape;
  const y = backend.makeTensorInfo([rows, cols], 'float32');
  const stats = backend.makeTensorInfo([rows, 2], 'float32');
  if (rows === 0) return [y, stats];
  const raw = rawWebGpu(tf);
  const pipeline = raw.pipeline('mlmkit-layer-norm', FORWARD_WGSL);
  const uniforms = new ArrayBuffer(16);
  new Uint32Array(uniforms, 0, 2).set([rows, cols]);
  new Float32Array(uniforms, 8, 1)[0] = eps;
  const group = raw.bindGroup('mlmkit-layer-norm', pipeline, [x, gamma, beta, y, stats].map((t) => raw.bufferOf(t)).concat(raw.uniform(uniforms)));
  raw.dispatch(pipeline, group, [Math.min(rows, MAX_ROW_WORKGROUPS)]);
  raw.written(y);
  raw.written(stats);
  return [y, stats];
}

function layerNormGradWebgpu(tf: Tf, args: KernelArgs): TensorInfo[] {
  const { dy, x, stats, gamma } = args.inputs;
  const backend = args.backend as WebGpuBackendLike;
  const [rows, cols] = x.shape;
  const int = (v: number): Uniform => ({ type: 'int32', data: [v] });
  const dx = backend.runWebGPUProgram(new LayerNormGradProgram(rows, cols), [dy, x, stats, gamma], 'float32', [int(rows), int(cols)]);
  const [dgamma, dbeta] = columnSumsRaw(tf, backend, LAYER_NORM_SUMS, [dy, x, stats], rows, cols);
  return [dx, dgamma, dbeta];
}

/** Registers LAYER_NORM_KERNEL and LAYER_NORM_GRAD_KERNEL for webgpu (once). */
export function registerWebGpuLayerNorm(tf: Tf): void {
  if (tf.getKernel(LAYER_NORM_KERNEL, 'webgpu') !== undefined) return;
  tf.registerKernel({ kernelName: LAYER_NORM_KERNEL, backendName: 'webgpu', kernelFunc: ((args: KernelArgs) => layerNormWebgpu(tf, args)) as unknown as KernelConfig['kernelFunc'] });
  tf.registerKernel({ kernelName: LAYER_NORM_GRAD_KERNEL, backendName: 'webgpu', kernelFunc: ((args: KernelArgs) => layerNormGradWebgpu(tf, args)) as unknown as KernelConfig['kernelFunc'] });
}
