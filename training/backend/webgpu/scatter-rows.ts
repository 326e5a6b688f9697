// SCATTER_ROWS_KERNEL of training/kernels/scatter-rows.ts on webgpu: one thread per output entry
// (row r, column c) adds x[sources[k], c] for k in [offsets[r], offsets[r + 1]), in that order, and
// writes the sum (0 for a row no source names): one dispatch, no atomics, the same sums every run.
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs';
import { SCATTER_ROWS_KERNEL } from '../../kernels/scatter-rows.ts';
import type { Tf } from '../common.ts';
import type { KernelArgs, WebGpuBackendLike } from './row-program.ts';

class ScatterRowsProgram {
  readonly variableNames = ['x', 'offsets', 'sources'];
  readonly outputShape: number[];
  readonly shaderKey = 'mlmkitScatterRows';
  readonly workgroupSize: [number, number, number] = [64, 1, 1];
  readonly size = true;
  readonly dispatchLayout: { x: number[] };
  readonly dispatch: [number, number, number];

  constructor(rows: number, cols: number) {
    this.outputShape = [rows, cols];
    this.dispatchLayout = { x: [0, 1] };
    this.dispatch = [Math.ceil((rows * cols) / 64), 1, 1]; // runWebGPUProgram folds it under the device's limit
  }

  getUserCode(): string {
    return `
    fn main(index : i32) {
      if (index < uniforms.size) {
        let cols = uniforms.outShape[1];
        let r = index / cols;
        let c = index - r * cols;
        var acc = 0.0;
        for (var k = offsets[r]; k < offsets[r + 1]; k = k + 1) {
          acc = acc + x[sources[k] * cols + c];
        }
        result[index] = acc;
      }
    }`;
  }
}

function scatterRowsWebgpu(args: KernelArgs): TensorInfo {
  const { x, offsets } = args.inputs;
  const backend = args.backend as WebGpuBackendLike & { makeTensorInfo(shape: number[], dtype: 'float32'): TensorInfo };
  const rows = offsets.shape[0] - 1;
  const cols = x.shape[1];
  if (rows * cols === 0) return backend.makeTensorInfo([rows, cols], 'float32');
  return backend.runWebGPUProgram(new ScatterRowsProgram(rows, cols), [x, offsets, args.inputs.sources], 'float32');
}

/** Registers SCATTER_ROWS_KERNEL for webgpu (once). */
export function registerWebGpuScatterRows(tf: Tf): void {
  if (tf.getKernel(SCATTER_ROWS_KERNEL, 'webgpu') !== undefined) return;
  tf.registerKernel({ kernelName: SCATTER_ROWS_KERNEL, backendName: 'webgpu', kernelFunc: scatterRowsWebgpu as unknown as KernelConfig['kernelFunc'] });
}
