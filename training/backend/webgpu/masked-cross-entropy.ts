// The masked-position cross-entropy kernels of training/kernels/masked-cross-entropy.ts on webgpu:
// one workgroup per row of logits, the row's maximum and sum of exponentials in one pass (a
// running maximum per thread, combined in workgroup memory), then the row's loss (forward) or
// softmax - onehot scaled by weight and dy (gradient). V = 30,522 for BERT's vocabulary: 256
// threads read ~120 logits each per pass.
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs';
import { MASKED_CROSS_ENTROPY_GRAD_KERNEL, MASKED_CROSS_ENTROPY_KERNEL } from '../../kernels/masked-cross-entropy.ts';
import type { Tf } from '../common.ts';
import { rowDispatch, rowReductionsWgsl, workgroupFor, type KernelArgs, type WebGpuBackendLike } from './row-program.ts';

class CrossEntropyProgram {
  readonly variableNames: string[];
  readonly outputShape: number[];
  readonly shaderKey: string;
  readonly dispatchLayout: { x: number[] };
  readonly dispatch: [number, number, number];
  readonly workgroupSize: [number, number, number];

  constructor(
    logitsShape: number[],
    private readonly grad: boolean,
    private readonly weighted: boolean,
  ) {
    const [N, V] = logitsShape;
    this.outputShape = grad ? [N, V] : [N];
    this.variableNames = ['logits', 'targets', ...(weighted ? ['weights'] : []), ...(grad ? ['dy'] : [])];
    const wg = workgroupFor(V, 32, 256);
    ({ dispatchLayout: this.dispatchLayout, dispatch: this.dispatch, workgroupSize: this.workgroupSize } = rowDispatch(this.outputShape, N, wg));
    this.shaderKey = `mlmkitCrossEntropy${grad ? 'Grad' : ''}_${weighted ? 'w' : 'nw'}_${wg}`;
  }

  getUserCode(): string {
    const weight = this.weighted ? 'weights[row]' : '1.0';
    const body = this.grad
      ? `
      if (valid) {
        let t = targets[row];
        let k = ${weight} * dy[0];
        for (var c = i32(localId.x); c < cols; c = c + WG) {
          let p = exp(logits[row * cols + c] - ms.x) / ms.y;
          result[row * cols + c] = (p - select(0.0, 1.0, c == t)) * k;
        }
      }`
      : `
      if (valid && localId.x == 0u) {
        let lse = ms.x + log(ms.y);
        result[row] = ${weight} * (lse - logits[row * cols + targets[row]]);
      }`;
    return `
    ${rowReductionsWgsl(this.workgroupSize[0])}
    fn main(index : i32) {
      let rows = uniforms.logitsShape.x;
      let cols = uniforms.logitsShape.y;
      let raw = index / WG;
      let row = min(raw, rows - 1);
      let valid = raw < rows;
      var m = -3.402823e+38f;
      var s = 0.0;
      for (var c = i32(localId.x); c < cols; c = c + WG) {
        let z = logits[row * cols + c];
        let top = max(m, z);
        s = s * exp(m - top) + exp(z - top);
        m = top;
      }
      let ms = reduceMaxSum(m, s);
      ${body}
    }`;
  }
}

function run(args: KernelArgs, grad: boolean): TensorInfo {
  const { logits, targets, weights, dy } = args.inputs;
  const program = new CrossEntropyProgram(logits.shape, grad, weights !== undefined);
  const inputs = [logits, targets, ...(weights !== undefined ? [weights] : []), ...(grad ? [dy] : [])];
  return (args.backend as WebGpuBackendLike).runWebGPUProgram(program, inputs, 'float32');
}

/** Registers both kernels for the webgpu backend (once; later calls do nothing). */
export function registerWebGpuMaskedCrossEntropy(tf: Tf): void {
  for (const [kernelName, grad] of [
    [MASKED_CROSS_ENTROPY_KERNEL, false],
    [MASKED_CROSS_ENTROPY_GRAD_KERNEL, true],
  ] as const) {
    if (tf.getKernel(kernelName, 'webgpu') !== undefined) continue;
    const kernelFunc = (args: KernelArgs) => run(args, grad);
    tf.registerKernel({ kernelName, backendName: 'webgpu', kernelFunc: kernelFunc as unknown as KernelConfig['kernelFunc'] });
  }
}
