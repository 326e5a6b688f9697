// The bias + dropout + residual kernels of training/kernels/bias-dropout-residual.ts on webgpu:
// one thread per entry; the dropout mask's hash is computed in place (forward and gradient), so
// no mask is drawn, uploaded or kept.
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs';
import { BIAS_DROPOUT_RESIDUAL_GRAD_KERNEL, BIAS_DROPOUT_RESIDUAL_KERNEL, type BiasDropoutResidualAttrs } from '../../kernels/bias-dropout-residual.ts';
import type { Tf } from '../common.ts';
import { DROPOUT_HASH_WGSL, DROPOUT_UNIFORM_FIELDS, dropoutUniforms, type KernelArgs, type WebGpuBackendLike } from './row-program.ts';

class BiasDropoutResidualProgram {
  readonly variableNames: string[];
  readonly outputShape: number[];
  readonly shaderKey: string;
  readonly uniforms = DROPOUT_UNIFORM_FIELDS;
  readonly workgroupSize: [number, number, number] = [64, 1, 1];
  readonly size = true;
  readonly dispatchLayout: { x: number[] };
  readonly dispatch: [number, number, number];

  constructor(
    shape: number[],
    private readonly grad: boolean,
    private readonly dropout: boolean,
  ) {
    this.outputShape = shape;
    this.variableNames = grad ? ['dy'] : ['x', 'bias', 'residual'];
    this.dispatchLayout = { x: shape.map((_, i) => i) };
    this.dispatch = [Math.ceil(shape[0] * shape[1] / 64), 1, 1]; // runWebGPUProgram folds it under the device's limit
    this.shaderKey = `mlmkitBiasDropoutResidual${grad ? 'Grad' : ''}_${dropout ? 'drop' : 'nodrop'}`;
  }

  getUserCode(): string {
    const keep = (v: string) => (this.dropout ? `select(${v} * uniforms.keepScale, 0.0, mlmkitDropped(u32(index)))` : v);
    const value = this.grad ? keep('dy[index]') : `${keep('(x[index] + bias[index % uniforms.biasShape])')} + residual[index]`;
    return `
    ${DROPOUT_HASH_WGSL}
    fn main(index : i32) {
      if (index < uniforms.size) {
        result[index] = ${value};
      }
    }`;
  }
}

function run(args: KernelArgs, grad: boolean): TensorInfo {
  const a = args.attrs as unknown as BiasDropoutResidualAttrs;
  const inputs = grad ? [args.inputs.dy] : [args.inputs.x, args.inputs.bias, args.inputs.residual];
  const program = new BiasDropoutResidualProgram(inputs[0].shape, grad, a.dropout === 1);
  return (args.backend as WebGpuBackendLike).runWebGPUProgram(program, inputs, 'float32', dropoutUniforms(a));
}

/** Registers both kernels for the webgpu backend (once; later calls do nothing). */
export function registerWebGpuBiasDropoutResidual(tf: Tf): void {
  for (const [kernelName, grad] of [
    [BIAS_DROPOUT_RESIDUAL_KERNEL, false],
    [BIAS_DROPOUT_RESIDUAL_GRAD_KERNEL, true],
  ] as const) {
    if (tf.getKernel(kernelName, 'webgpu') !== undefined) continue;
    const kernelFunc = (args: KernelArgs) => run(args, grad);
    tf.registerKernel({ kernelName, backendName: 'webgpu', kernelFunc: kernelFunc as unknown as KernelConfig['kernelFunc'] });
  }
}
