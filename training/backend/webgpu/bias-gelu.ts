// Bias + GELU on webgpu: BIAS_GELU_KERNEL and BIAS_GELU_GRAD_KERNEL of training/kernels/bias-gelu.ts.
// Forward: one thread per entry. Backward: dx and db = the column sums of dx from one pass over the
// entries (training/backend/webgpu/column-sums.ts, which writes dx as it sums): one dispatch, two
// when the rows need a second stage of column sums.
//
// WGSL has no erf. The exact GELU takes Phi(z) = erfc(-z / sqrt 2) / 2 from the Chebyshev fit of
// erfc in Numerical Recipes (2nd ed., section 6.2, `erfcc`): fractional error below 1.2e-7 for
// every z >= 0, so Phi is accurate relative to itself on the negative side too, where GELU tends
// to 0 (an absolute bound on erf, such as Abramowitz and Stegun 7.1.26's 1.5e-7, is not: at
// z = -5 GELU is -1.4e-6). Measured against float64 over [-10, 10] in
// tests/training/kernels/bias-gelu.test.ts.
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs';
import { BIAS_GELU_GRAD_KERNEL, BIAS_GELU_KERNEL, GELU_CUBIC, GELU_TANH_SCALE, type BiasGeluAttrs } from '../../kernels/bias-gelu.ts';
import type { Tf } from '../common.ts';
import { type KernelArgs, type Uniform, type WebGpuBackendLike } from './bias-grad.ts';
import { columnSumsRaw, type ColumnSumSpec } from './column-sums.ts';

/** WGSL: `mlmkitGelu(z)` and `mlmkitGeluDerivative(z)` for the GELU `tanh` selects. */
export function geluWgsl(tanh: boolean): string {
  const f = (v: number) => v.toPrecision(9);
  if (tanh) {
    return `
      fn mlmkitSigmoidU(z : f32) -> f32 {
        let u = ${f(GELU_TANH_SCALE)} * (z + ${f(GELU_CUBIC)} * z * z * z);
        return 1.0 / (1.0 + exp(-u));
      }
      fn mlmkitGelu(z : f32) -> f32 {
        return z * mlmkitSigmoidU(z);
      }
      fn mlmkitGeluDerivative(z : f32) -> f32 {
        let s = mlmkitSigmoidU(z);
        return s + z * s * (1.0 - s) * ${f(GELU_TANH_SCALE)} * (1.0 + ${f(3 * GELU_CUBIC)} * z * z);
      }
    `;
  }
  return `
    // erfc(a) for a >= 0 (Numerical Recipes' erfcc).
    fn mlmkitErfc(a : f32) -> f32 {
      let t = 1.0 / (1.0 + 0.5 * a);
      let p = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806
        + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
      return t * exp(p - a * a);
    }
    // The standard normal CDF.
    fn mlmkitPhi(z : f32) -> f32 {
      let half = 0.5 * mlmkitErfc(abs(z) * ${f(Math.SQRT1_2)});
      return select(1.0 - half, half, z < 0.0);
    }
    fn mlmkitGelu(z : f32) -> f32 {
      return z * mlmkitPhi(z);
    }
    fn mlmkitGeluDerivative(z : f32) -> f32 {
      return mlmkitPhi(z) + z * exp(-0.5 * z * z) * ${f(1 / Math.sqrt(2 * Math.PI))};
    }
  `;
}

/** The forward, one thread per entry of [rows, cols]: GELU(x + bias). */
class BiasGeluProgram {
  readonly outputShape: number[];
  readonly shaderKey: string;
  readonly uniforms = 'cols : i32,';
  readonly size = true;
  readonly workgroupSize: [number, number, number] = [64, 1, 1];
  readonly dispatchLayout = { x: [0, 1] };
  dispatch: [number, number, number];
  readonly variableNames = ['x', 'bias'];
  private readonly tanh: boolean;

  constructor(rows: number, cols: number, tanh: boolean) {
    this.outputShape = [rows, cols];
    this.dispatch = [Math.ceil((rows * cols) / 64), 1, 1];
    this.tanh = tanh;
    this.shaderKey = `mlmkitBiasGelu_${tanh ? 'tanh' : 'erf'}_forward`;
  }

  getUserCode(): string {
    return `
      ${geluWgsl(this.tanh)}
      fn main(index : i32) {
        if (index < uniforms.size) {
          let z = x[index] + bias[index % uniforms.cols];
          result[index] = mlmkitGelu(z);
        }
      }
    `;
  }
}

function run(tf: Tf, args: KernelArgs, grad: boolean): TensorInfo[] {
  const { x, bias, dy } = args.inputs;
  const { tanh } = args.attrs as BiasGeluAttrs;
  const backend = args.backend as WebGpuBackendLike;
  const [rows, cols] = x.shape;
  if (grad) {
    const spec: ColumnSumSpec = {
      key: `bias-gelu-grad/${tanh === 1 ? 'tanh' : 'erf'}`,
      inputs: ['dy', 'x', 'bias'],
      values: ['dy[r * cols + col] * mlmkitGeluDerivative(x[r * cols + col] + bias[col])'],
      preamble: geluWgsl(tanh === 1),
      elementwise: true,
    };
    return columnSumsRaw(tf, backend, spec, [dy, x, bias], rows, cols);
  }
  const cols32: Uniform = { type: 'int32', data: [cols] };
  return [backend.runWebGPUProgram(new BiasGeluProgram(rows, cols, tanh === 1), [x, bias], 'float32', [cols32])];
}

/** Registers BIAS_GELU_KERNEL and BIAS_GELU_GRAD_KERNEL for webgpu (once). */
export function registerWebGpuBiasGelu(tf: Tf): void {
  if (tf.getKernel(BIAS_GELU_KERNEL, 'webgpu') !== undefined) return;
  const forward = (args: KernelArgs) => run(tf, args, false)[0];
  const backward = (args: KernelArgs) => run(tf, args, true);
  tf.registerKernel({ kernelName: BIAS_GELU_KERNEL, backendName: 'webgpu', kernelFunc: forward as unknown as KernelConfig['kernelFunc'] });
  tf.registerKernel({ kernelName: BIAS_GELU_GRAD_KERNEL, backendName: 'webgpu', kernelFunc: backward as unknown as KernelConfig['kernelFunc'] });
}
