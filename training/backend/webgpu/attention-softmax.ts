// The attention softmax kernels of training/kernels/attention-softmax.ts on webgpu: one
// workgroup per row of scores (a query of a head of a sequence), the row's maximum and sum of
// exponentials in one pass (a running maximum, combined in workgroup memory), then the
// probabilities with the dropout mask's hash computed in place. The gradient kernel recomputes
// the row's softmax the same way, reduces sum(p * g), and writes scale * p * (g - that sum).
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs';
import { ATTENTION_SOFTMAX_GRAD_KERNEL, ATTENTION_SOFTMAX_KERNEL, type AttentionSoftmaxAttrs } from '../../kernels/attention-softmax.ts';
import type { Tf } from '../common.ts';
import {
  DROPOUT_HASH_WGSL,
  DROPOUT_UNIFORM_FIELDS,
  dropoutUniforms,
  rowDispatch,
  rowReductionsWgsl,
  workgroupFor,
  type KernelArgs,
  type Uniform,
  type WebGpuBackendLike,
} from './row-program.ts';

// Shared by both programs: row setup, and the running max / sum of exp over the row.
const ROW_SOFTMAX = `
  fn rowBase(index : i32) -> vec3<i32> {
    let rows = uniforms.scoresShape.x * uniforms.scoresShape.y * uniforms.scoresShape.z;
    let raw = index / WG;
    let row = min(raw, rows - 1);
    return vec3<i32>(row, row / (uniforms.scoresShape.y * uniforms.scoresShape.z), select(0, 1, raw < rows));
  }
  fn logit(row : i32, batch : i32, col : i32) -> f32 {
    let cols = uniforms.scoresShape.w;
    return scores[row * cols + col] * uniforms.scale + bias[batch * cols + col];
  }
  fn rowMaxSum(row : i32, batch : i32) -> vec2<f32> {
    let cols = uniforms.scoresShape.w;
    var m = -3.402823e+38f;
    var s = 0.0;
    for (var c = i32(localId.x); c < cols; c = c + WG) {
      let z = logit(row, batch, c);
      let top = max(m, z);
      s = s * exp(m - top) + exp(z - top);
      m = top;
    }
    return reduceMaxSum(m, s);
  }
`;

class AttentionSoftmaxProgram {
  readonly variableNames: string[];
  readonly outputShape: number[];
  readonly shaderKey: string;
  readonly uniforms = `scale : f32, ${DROPOUT_UNIFORM_FIELDS}`;
  readonly dispatchLayout: { x: number[] };
  readonly dispatch: [number, number, number];
  readonly workgroupSize: [number, number, number];

  constructor(
    shape: number[],
    private readonly grad: boolean,
    private readonly dropout: boolean,
  ) {
    this.outputShape = shape;
    this.variableNames = grad ? ['scores', 'bias', 'dy'] : ['scores', 'bias'];
    const wg = workgroupFor(shape[3], 32, 128);
    ({ dispatchLayout: this.dispatchLayout, dispatch: this.dispatch, workgroupSize: this.workgroupSize } = rowDispatch(shape, shape[0] * shape[1] * shape[2], wg));
    this.shaderKey = `mlmkitAttentionSoftmax${grad ? 'Grad' : ''}_${dropout ? 'drop' : 'nodrop'}_${wg}`;
  }

  getUserCode(): string {
    const wg = this.workgroupSize[0];
    const keep = (value: string, i: string) => (this.dropout ? `select(${value} * uniforms.keepScale, 0.0, mlmkitDropped(u32(${i})))` : value);
    const body = this.grad
      ? `
      var dot = 0.0;
      for (var c = i32(localId.x); c < cols; c = c + WG) {
        let p = exp(logit(row, batch, c) - ms.x) / ms.y;
        dot = dot + p * ${keep('dy[row * cols + c]', 'row * cols + c')};
      }
      dot = reduceSum(dot);
      if (valid) {
        for (var c = i32(localId.x); c < cols; c = c + WG) {
          let p = exp(logit(row, batch, c) - ms.x) / ms.y;
          let g = ${keep('dy[row * cols + c]', 'row * cols + c')};
          result[row * cols + c] = uniforms.scale * p * (g - dot);
        }
      }`
      : `
      if (valid) {
        for (var c = i32(localId.x); c < cols; c = c + WG) {
          let p = exp(logit(row, batch, c) - ms.x) / ms.y;
          result[row * cols + c] = ${keep('p', 'row * cols + c')};
        }
      }`;
    return `
    ${rowReductionsWgsl(wg)}
    ${DROPOUT_HASH_WGSL}
    ${ROW_SOFTMAX}
    fn main(index : i32) {
      let rb = rowBase(index);
      let row = rb.x;
      let batch = rb.y;
      let valid = rb.z == 1;
      let cols = uniforms.scoresShape.w;
      let ms = rowMaxSum(row, batch);
      ${body}
    }`;
  }
}

function uniformsOf(a: AttentionSoftmaxAttrs): Uniform[] {
  return [{ type: 'float32', data: [a.scale] }, ...dropoutUniforms(a)];
}

function forward({ inputs, backend, attrs }: KernelArgs): TensorInfo {
  const a = attrs as unknown as AttentionSoftmaxAttrs;
  const program = new AttentionSoftmaxProgram(inputs.scores.shape, false, a.dropout === 1);
  return (backend as WebGpuBackendLike).runWebGPUProgram(program, [inputs.scores, inputs.bias], 'float32', uniformsOf(a));
}

function backward({ inputs, backend, attrs }: KernelArgs): TensorInfo {
  const a = attrs as unknown as AttentionSoftmaxAttrs;
  const program = new AttentionSoftmaxProgram(inputs.scores.shape, true, a.dropout === 1);
  return (backend as WebGpuBackendLike).runWebGPUProgram(program, [inputs.scores, inputs.bias, inputs.dy], 'float32', uniformsOf(a));
}

/** Registers both kernels for the webgpu backend (once; later calls do nothing). */
export function registerWebGpuAttentionSoftmax(tf: Tf): void {
  for (const [kernelName, kernelFunc] of [
    [ATTENTION_SOFTMAX_KERNEL, forward],
    [ATTENTION_SOFTMAX_GRAD_KERNEL, backward],
  ] as const) {
    if (tf.getKernel(kernelName, 'webgpu') !== undefined) continue;
    tf.registerKernel({ kernelName, backendName: 'webgpu', kernelFunc: kernelFunc as unknown as KernelConfig['kernelFunc'] });
  }
}
