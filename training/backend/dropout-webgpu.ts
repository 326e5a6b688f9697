// Dropout masks drawn on the GPU (webgpu). `dropoutMask` in training/kernels/dropout-mask.ts defines the
// mask as a function of each entry's index (a keyed hash, see there), so the GPU can compute the
// very same mask with one thread per entry instead of the host drawing it and uploading it: for
// bert-base at 32 x 128 that upload was 617 MB a step, and on an H200 a step with dropout took
// 1,309 ms against 350 ms without (drawing and uploading masks being the only difference).
//
// The program uses tfjs-backend-webgpu's program interface (runWebGPUProgram; uniform `size`,
// `setOutputAtIndex` and the `main(index)` entry point its shader prefix provides), as its own
// Fill program does. Integer arithmetic in WGSL wraps modulo 2^32 like Math.imul, and the drop
// decision compares integers, so the GPU's masks equal the JavaScript ones bit for bit (tested in
// tests/training/webgpu.test.ts on the software adapter).
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs';
import type { Tf } from './common.ts';
import { DROPOUT_HASH_WGSL, DROPOUT_UNIFORM_FIELDS, dropoutUniforms, type WebGpuBackendLike } from './webgpu/row-program.ts';

import { DROPOUT_MASK_KERNEL } from '../kernels/dropout-mask.ts';

export interface DropoutMaskAttrs {
  n: number;
  k0: number;
  k1: number;
  k2: number;
  threshold: number;
  scale: number;
}

const SHADER = `
  ${DROPOUT_HASH_WGSL}
  fn main(index : i32) {
    if (index < uniforms.size) {
      setOutputAtIndex(index, select(uniforms.keepScale, 0.0, mlmkitDropped(u32(index))));
    }
  }
`;

class DropoutMaskProgram {
  readonly variableNames: string[] = [];
  readonly outputShape: number[];
  readonly shaderKey = 'mlmkitDropoutMask';
  readonly uniforms = DROPOUT_UNIFORM_FIELDS;
  readonly workgroupSize: [number, number, number] = [64, 1, 1];
  readonly size = true;
  dispatchLayout: { x: number[] };
  dispatch: [number, number, number];

  constructor(n: number) {
    this.outputShape = [n];
    this.dispatchLayout = { x: [0] };
    this.dispatch = [Math.ceil(n / this.workgroupSize[0]), 1, 1]; // runWebGPUProgram folds it under the device's limit
  }

  getUserCode(): string {
    return SHADER;
  }
}

function dropoutMaskWebgpu(args: { backend: unknown; attrs?: unknown }): TensorInfo {
  const { n, k0, k1, k2, threshold, scale } = args.attrs as unknown as DropoutMaskAttrs;
  const backend = args.backend as WebGpuBackendLike;
  const uniforms = dropoutUniforms({ dropout: 1, k0, k1, k2, threshold, keepScale: scale });
  return backend.runWebGPUProgram(new DropoutMaskProgram(n), [], 'float32', uniforms);
}

/** Registers the kernel for the webgpu backend (once; later calls do nothing). */
export function registerWebGpuDropoutMask(tf: Tf): void {
  if (tf.getKernel(DROPOUT_MASK_KERNEL, 'webgpu') !== undefined) return;
  tf.registerKernel({
    kernelName: DROPOUT_MASK_KERNEL,
    backendName: 'webgpu',
    kernelFunc: dropoutMaskWebgpu as unknown as KernelConfig['kernelFunc'],
  });
}
