// LayerNorm on webgpu: LAYER_NORM_KERNEL and LAYER_NORM_GRAD_KERNEL of training/kernels/layer-norm.ts.
//
// Forward, two dispatches: `RowStatsProgram` (one workgroup per row: the mean, then the variance
// as the mean of squared deviations, each a sum in workgroup memory; writes mean and rstd) and
// `LayerNormApplyProgram` (one thread per entry). Backward, four: `LayerNormGradProgram` (one
// workgroup per row: the row sums of g and g xhat, then dx) and the column sums of dy xhat and dy
// (training/backend/webgpu/bias-grad.ts `columnSums`: one stage-1 pass for both, one stage-2 pass
// each).
//
// Row programs: a dispatch of more rows than one dimension takes is folded by TF.js into two or
// three dimensions, rounded up; the row is then taken from the flat invocation index, clamped for
// the reads, and workgroups past the last row write nothing (every thread reaches every barrier).
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs';
import { LAYER_NORM_GRAD_KERNEL, LAYER_NORM_KERNEL, type LayerNormAttrs } from '../../kernels/layer-norm.ts';
import type { Tf } from '../common.ts';
import { columnSums, type KernelArgs, type Uniform, type WebGpuBackendLike } from './bias-grad.ts';

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

class RowStatsProgram extends RowProgram {
  readonly variableNames = ['x'];
  readonly shaderKey = 'mlmkitLayerNormStats';
  readonly uniforms = 'rows : i32, cols : i32, eps : f32,';

  constructor(rows: number) {
    super([rows, 2]);
  }

  protected rowBody(): string {
    return `
        let n = f32(uniforms.cols);
        var s = 0.0;
        for (var c = i32(localId.x); c < uniforms.cols; c = c + ${WG}) {
          s = s + x[base + c];
        }
        let mean = rowSum2(vec2<f32>(s, 0.0)).x / n;
        var d = 0.0;
        for (var c = i32(localId.x); c < uniforms.cols; c = c + ${WG}) {
          let t = x[base + c] - mean;
          d = d + t * t;
        }
        let variance = rowSum2(vec2<f32>(d, 0.0)).x / n;
        if (localId.x == 0u && row < uniforms.rows) {
          result[2 * row] = mean;
          result[2 * row + 1] = inverseSqrt(variance + uniforms.eps);
        }
    `;
  }
}

class LayerNormApplyProgram {
  readonly variableNames = ['x', 'stats', 'gamma', 'beta'];
  readonly outputShape: number[];
  readonly shaderKey = 'mlmkitLayerNormApply';
  readonly uniforms = 'cols : i32,';
  readonly size = true;
  readonly workgroupSize: [number, number, number] = [64, 1, 1];
  readonly dispatchLayout: { x: number[] };
  dispatch: [number, number, number];

  constructor(rows: number, cols: number) {
    this.outputShape = [rows, cols];
    this.dispatchLayout = { x: [0, 1] };
    this.dispatch = [Math.ceil((rows * cols) / 64), 1, 1];
  }

  getUserCode(): string {
    return `
      fn main(index : i32) {
        if (index < uniforms.size) {
          let r = index / uniforms.cols;
          let c = index - r * uniforms.cols;
          result[index] = (x[index] - stats[2 * r]) * stats[2 * r + 1] * gamma[c] + beta[c];
        }
      }
    `;
  }
}

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

function layerNormWebgpu(args: KernelArgs): TensorInfo[] {
  const { x, gamma, beta } = args.inputs;
  const { eps } = args.attrs as LayerNormAttrs;
  const backend = args.backend as WebGpuBackendLike;
  const [rows, cols] = x.shape;
  const int = (v: number): Uniform => ({ type: 'int32', data: [v] });
  const stats = backend.runWebGPUProgram(new RowStatsProgram(rows), [x], 'float32', [int(rows), int(cols), { type: 'float32', data: [eps] }]);
  const y = backend.runWebGPUProgram(new LayerNormApplyProgram(rows, cols), [x, stats, gamma, beta], 'float32', [int(cols)]);
  return [y, stats];
}

function layerNormGradWebgpu(args: KernelArgs): TensorInfo[] {
  const { dy, x, stats, gamma } = args.inputs;
  const backend = args.backend as WebGpuBackendLike;
  const [rows, cols] = x.shape;
  const int = (v: number): Uniform => ({ type: 'int32', data: [v] });
  const dx = backend.runWebGPUProgram(new LayerNormGradProgram(rows, cols), [dy, x, stats, gamma], 'float32', [int(rows), int(cols)]);
  const [dgamma, dbeta] = columnSums(backend, 'layerNorm', [dy, x, stats], rows, cols);
  return [dx, dgamma, dbeta];
}

/** Registers LAYER_NORM_KERNEL and LAYER_NORM_GRAD_KERNEL for webgpu (once). */
export function registerWebGpuLayerNorm(tf: Tf): void {
  if (tf.getKernel(LAYER_NORM_KERNEL, 'webgpu') !== undefined) return;
  tf.registerKernel({ kernelName: LAYER_NORM_KERNEL, backendName: 'webgpu', kernelFunc: layerNormWebgpu as unknown as KernelConfig['kernelFunc'] });
  tf.registerKernel({ kernelName: LAYER_NORM_GRAD_KERNEL, backendName: 'webgpu', kernelFunc: layerNormGradWebgpu as unknown as KernelConfig['kernelFunc'] });
}
