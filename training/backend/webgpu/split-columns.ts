// SPLIT_COLUMNS_KERNEL (training/kernels/split-columns.ts) on webgpu: every part of x's columns in
// one dispatch. A TF.js program has one output, so the kernel goes through the raw seam (raw.ts):
// its outputs are fresh TF.js tensors whose buffers the shader binds one per part.
//
// One thread per entry of a part (r, c), looping over the parts: output p at r C + c takes x at
// r parts C + p C + c (a grid-stride loop: the workgroup count stays under the device's limit).
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs';
import { MAX_SPLIT_PARTS, SPLIT_COLUMNS_KERNEL, type SplitColumnsAttrs } from '../../kernels/split-columns.ts';
import type { Tf } from '../common.ts';
import { rawWebGpu } from './raw.ts';

const WG = 64;
const MAX_WORKGROUPS = 65_535;

function shader(parts: number): string {
  const outputs = Array.from({ length: parts }, (_, p) => `@group(0) @binding(${p + 1}) var<storage, read_write> o${p} : array<f32>;`);
  const writes = Array.from({ length: parts }, (_, p) => `    o${p}[i] = x[base + ${p}u * u.cols];`);
  return /* wgsl */ `
struct U { rows : u32, cols : u32, total : u32, pad : u32 }
@group(0) @binding(0) var<storage, read> x : array<f32>;
${outputs.join('\n')}
@group(0) @binding(${parts + 1}) var<uniform> u : U;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid : vec3<u32>, @builtin(num_workgroups) nwg : vec3<u32>) {
  let stride = nwg.x * ${WG}u;
  for (var i = gid.x; i < u.total; i = i + stride) {
    let r = i / u.cols;
    let base = r * u.cols * ${parts}u + (i - r * u.cols);
${writes.join('\n')}
  }
}`;
}

/** Registers the kernel for the webgpu backend (once; later calls do nothing). */
export function registerWebGpuSplitColumns(tf: Tf): void {
  if (tf.getKernel(SPLIT_COLUMNS_KERNEL, 'webgpu') !== undefined) return;
  const kernelFunc = (args: { inputs: unknown; backend: unknown; attrs?: unknown }): TensorInfo[] => {
    const { x } = args.inputs as { x: TensorInfo };
    const { parts } = args.attrs as unknown as SplitColumnsAttrs;
    if (x.shape.length !== 2 || !Number.isInteger(parts) || parts < 2 || parts > MAX_SPLIT_PARTS || x.shape[1] % parts !== 0) {
      throw new Error(`${SPLIT_COLUMNS_KERNEL}: cannot split [${x.shape.join(', ')}] into ${parts} parts`);
    }
    const rows = x.shape[0];
    const cols = x.shape[1] / parts;
    const be = args.backend as { makeTensorInfo(shape: number[], dtype: 'float32'): TensorInfo };
    const outs = Array.from({ length: parts }, () => be.makeTensorInfo([rows, cols], 'float32'));
    const total = rows * cols;
    if (total === 0) return outs;
    const raw = rawWebGpu(tf);
    const pipeline = raw.pipeline(`mlmkit-split-columns/${parts}`, shader(parts));
    const uniform = raw.uniform(Uint32Array.from([rows, cols, total, 0]).buffer);
    const group = raw.bindGroup(`mlmkit-split-columns/${parts}`, pipeline, [raw.bufferOf(x), ...outs.map((o) => raw.bufferOf(o)), uniform]);
    raw.dispatch(pipeline, group, [Math.min(MAX_WORKGROUPS, Math.ceil(total / WG))]);
    return outs;
  };
  tf.registerKernel({ kernelName: SPLIT_COLUMNS_KERNEL, backendName: 'webgpu', kernelFunc: kernelFunc as unknown as KernelConfig['kernelFunc'] });
}
