// Bias + GELU on webgpu: BIAS_GELU_KERNEL and BIAS_GELU_GRAD_KERNEL of training/kernels/bias-gelu.ts.
// Forward: one thread per entry. Backward: dx one thread per entry, then db as a column sum of dx
// (training/backend/webgpu/bias-grad.ts `columnSums`): three dispatches.
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
import { columnSums, type KernelArgs, type Uniform, type WebGpuBackendLike } from './bias-grad.ts';

/** WGSL: `mlmkitGelu(z)` and `mlmkitGeluDerivative(z)` for the GELU `tanh` selects. */
function geluWgsl(tanh: boolean): string {
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

/** One thread per entry of [rows, cols]: `body` computes `result[index]` from z = x + bias. */
class BiasGeluProgram {
  readonly variableNames: string[];
  readonly outputShape: number[];
  readonly shaderKey: string;
  readonly uniforms = 'cols : i32,';
  readonly size = true;
  readonly workgroupSize: [number, number, number] = [64, 1, 1];
  readonly dispatchLayout = { x: [0, 1] };
  dispatch: [number, number, number];
  private readonly tanh: boolean;
  private readonly grad: boolean;

  constructor(rows: number, cols: number, tanh: boolean, grad: boolean) {
    this.variableNames = grad ? ['dy', 'x', 'bias'] : ['x', 'bias'];
    this.outputShape = [rows, cols];
    this.dispatch = [Math.ceil((rows * cols) / 64), 1, 1];
    this.tanh = tanh;
    this.grad = grad;
    this.shaderKey = `mlmkitBiasGelu_${tanh ? 'tanh' : 'erf'}_${grad ? 'grad' : 'forward'}`;
  }

  getUserCode(): string {
    const value = this.grad ? 'dy[index] * mlmkitGeluDerivative(z)' : 'mlmkitGelu(z)';
    return `
      ${geluWgsl(this.tanh)}
      fn main(index : i32) {
        if (index < uniforms.size) {
          let z = x[index] + bias[index % uniforms.cols];
          result[index] = ${value};
        }
      }
    `;
  }
}

function run(args: KernelArgs, grad: boolean): TensorInfo[] {
  const { x, bias, dy } = args.inputs;
  const { tanh } = args.attrs as BiasGeluAttrs;
  const backend = args.backend as WebGpuBackendLike;
  const [rows, cols] = x.shape;
  const cols32: Uniform = { type: 'int32', data: [cols] };
  const program = new BiasGeluProgram(rows, cols, tanh === 1, grad);
  const out = backend.runWebGPUProgram(program, grad ? [dy, x, bias] : [x, bias], 'float32', [cols32]);
  if (!grad) return [out];
  return [out, columnSums(backend, 'sum', [out], rows, cols)[0]];
}

/** Registers BIAS_GELU_KERNEL and BIAS_GELU_GRAD_KERNEL for webgpu (once). */
export function registerWebGpuBiasGelu(tf: Tf): void {
  if (tf.getKernel(BIAS_GELU_KERNEL, 'webgpu') !== undefined) return;
  const forward = (args: KernelArgs) => run(args, false)[0];
  const backward = (args: KernelArgs) => run(args, true);
  tf.registerKernel({ kernelName: BIAS_GELU_KERNEL, backendName: 'webgpu', kernelFunc: forward as unknown as KernelConfig['kernelFunc'] });
  tf.registerKernel({ kernelName: BIAS_GELU_GRAD_KERNEL, backendName: 'webgpu', kernelFunc: backward as unknown as KernelConfig['kernelFunc'] });
}
