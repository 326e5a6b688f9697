// The bias + dropout + residual kernels of training/kernels/bias-dropout-residual.ts on webgpu:
// one thread per entry; the dropout mask's hash is computed in place (forward and gradient), so
// no mask is drawn, uploaded or kept. The gradient with its column sums (dbias) is one pass of
// training/backend/webgpu/column-sums.ts that writes dx as it sums.
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs';
import {
  BIAS_DROPOUT_RESIDUAL_GRAD_KERNEL,
  BIAS_DROPOUT_RESIDUAL_GRAD_SUM_KERNEL,
  BIAS_DROPOUT_RESIDUAL_KERNEL,
  type BiasDropoutResidualAttrs,
} from '../../kernels/bias-dropout-residual.ts';
import type { Tf } from '../common.ts';
import { columnSumsRaw, type ColumnSumSpec } from './column-sums.ts';
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

/** dx = dy * mask and its column sums, from one pass (two dispatches when the rows need a second stage). */
function gradSum(tf: Tf, args: KernelArgs): TensorInfo[] {
  const a = args.attrs as unknown as BiasDropoutResidualAttrs;
  const { dy } = args.inputs;
  const [rows, cols] = dy.shape;
  const keep = a.dropout === 1 ? 'select(dy[r * cols + col] * u.keepScale, 0.0, mlmkitDropped(r * cols + col))' : 'dy[r * cols + col]';
  const spec: ColumnSumSpec = {
    key: `bias-dropout-residual-grad/${a.dropout === 1 ? 'drop' : 'nodrop'}`,
    inputs: ['dy'],
    values: [keep],
    preamble: DROPOUT_HASH_WGSL.replaceAll('uniforms.', 'u.'),
    elementwise: true,
    uniforms: {
      fields: DROPOUT_UNIFORM_FIELDS,
      values: dropoutUniforms(a).map((v) => ({ type: v.type === 'float32' ? 'float32' : 'uint32', value: v.data[0] })),
    },
  };
  return columnSumsRaw(tf, args.backend, spec, [dy], rows, cols);
}

/** Registers the kernels for the webgpu backend (once; later calls do nothing). */
export function registerWebGpuBiasDropoutResidual(tf: Tf): void {
  if (tf.getKernel(BIAS_DROPOUT_RESIDUAL_GRAD_SUM_KERNEL, 'webgpu') === undefined) {
    const kernelFunc = (args: KernelArgs) => gradSum(tf, args);
    tf.registerKernel({ kernelName: BIAS_DROPOUT_RESIDUAL_GRAD_SUM_KERNEL, backendName: 'webgpu', kernelFunc: kernelFunc as unknown as KernelConfig['kernelFunc'] });
  }
  for (const [kernelName, grad] of [
    [BIAS_DROPOUT_RESIDUAL_KERNEL, false],
    [BIAS_DROPOUT_RESIDUAL_GRAD_KERNEL, true],
  ] as const) {
    if (tf.getKernel(kernelName, 'webgpu') !== undefined) continue;
    const kernelFunc = (args: KernelArgs) => run(args, grad);
    tf.registerKernel({ kernelName, backendName: 'webgpu', kernelFunc: kernelFunc as unknown as KernelConfig['kernelFunc'] });
  }
}
