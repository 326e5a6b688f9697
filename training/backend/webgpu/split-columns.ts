// SPLIT_COLUMNS_KERNEL (training/kernels/split-columns.ts) on webgpu: every part of x's columns in
// one dispatch. A TF.js program has one output, so the kernel goes through the raw seam (raw.ts):
// its outputs are fresh TF.js tensors whose buffers the shader binds one per part.
//
// One thread per entry of a part (r, c), looping over the parts: output p at r C + c takes x at
// r parts C + p C + c (a grid-stride loop: the workgroup count stays under the device's limit).
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs';
import {
  CONCAT_COLUMN_GROUPS_KERNEL,
  MAX_GROUP_BINDINGS,
  MAX_SPLIT_PARTS,
  SPLIT_COLUMN_GROUPS_KERNEL,
  SPLIT_COLUMNS_KERNEL,
  type SplitColumnsAttrs,
} from '../../kernels/split-columns.ts';
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

// CONCAT_COLUMN_GROUPS_KERNEL and SPLIT_COLUMN_GROUPS_KERNEL: every group in one dispatch. The
// threads run over the entries of all groups' parts in turn (group g's from `start` of g); a
// thread of group g moves entry (r, c) of each of its parts between the part (at r C + c) and the
// side-by-side tensor (at r parts C + p C + c).
function groupShader(groups: number, parts: number, concat: boolean): string {
  const decl: string[] = [];
  let binding = 0;
  const partAccess = concat ? 'read' : 'read_write';
  const wholeAccess = concat ? 'read_write' : 'read';
  // Bindings: the inputs first, then the outputs (as the kernel's inputs and outputs are listed).
  const partDecl = (g: number, p: number) => `@group(0) @binding(${binding++}) var<storage, ${partAccess}> p${g}_${p} : array<f32>;`;
  const wholeDecl = (g: number) => `@group(0) @binding(${binding++}) var<storage, ${wholeAccess}> w${g} : array<f32>;`;
  if (concat) {
    for (let g = 0; g < groups; g++) for (let p = 0; p < parts; p++) decl.push(partDecl(g, p));
    for (let g = 0; g < groups; g++) decl.push(wholeDecl(g));
  } else {
    for (let g = 0; g < groups; g++) decl.push(wholeDecl(g));
    for (let g = 0; g < groups; g++) for (let p = 0; p < parts; p++) decl.push(partDecl(g, p));
  }
  const branches = Array.from({ length: groups }, (_, g) => {
    const moves = Array.from({ length: parts }, (_, p) => (concat ? `w${g}[base + ${p}u * cols] = p${g}_${p}[j];` : `p${g}_${p}[j] = w${g}[base + ${p}u * cols];`));
    return `${g === 0 ? '' : 'else '}if (i < u.g[${g}].z + u.g[${g}].y) {
      let cols = u.g[${g}].x;
      let j = i - u.g[${g}].z;
      let r = j / cols;
      let base = r * cols * ${parts}u + (j - r * cols);
      ${moves.join('\n      ')}
    }`;
  });
  return /* wgsl */ `
struct U { g : array<vec4<u32>, ${groups}>, total : vec4<u32> }
${decl.join('\n')}
@group(0) @binding(${binding}) var<uniform> u : U;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid : vec3<u32>, @builtin(num_workgroups) nwg : vec3<u32>) {
  let stride = nwg.x * ${WG}u;
  for (var i = gid.x; i < u.total.x; i = i + stride) {
    ${branches.join(' ')}
  }
}`;
}

/** Registers both group kernels for the webgpu backend (once; later calls do nothing). */
export function registerWebGpuColumnGroups(tf: Tf): void {
  if (tf.getKernel(CONCAT_COLUMN_GROUPS_KERNEL, 'webgpu') !== undefined) return;
  const run = (concat: boolean) => (args: { inputs: unknown; backend: unknown; attrs?: unknown }): TensorInfo[] => {
    const name = concat ? CONCAT_COLUMN_GROUPS_KERNEL : SPLIT_COLUMN_GROUPS_KERNEL;
    const inputs = args.inputs as Record<string, TensorInfo>;
    const { parts } = args.attrs as unknown as SplitColumnsAttrs;
    const n = Object.keys(inputs).length;
    const xs = Array.from({ length: n }, (_, i) => inputs[`x${i}`]);
    const groups = concat ? n / parts : n;
    if (!Number.isInteger(parts) || parts < 2 || !Number.isInteger(groups) || groups < 1 || groups * (parts + 1) > MAX_GROUP_BINDINGS || xs.some((x) => x === undefined)) {
      throw new Error(`${name}: ${n} inputs x0.. in groups of ${parts} parts do not fit one dispatch`);
    }
    const be = args.backend as { makeTensorInfo(shape: number[], dtype: 'float32'): TensorInfo };
    const outs: TensorInfo[] = [];
    const info: number[] = [];
    let start = 0;
    for (let g = 0; g < groups; g++) {
      const shape = concat ? xs[g * parts].shape : xs[g].shape;
      const rows = shape.length === 1 ? 1 : shape[0];
      const last = shape[shape.length - 1];
      if (shape.length < 1 || shape.length > 2 || (!concat && last % parts !== 0)) throw new Error(`${name}: cannot split [${shape.join(', ')}] into ${parts} parts`);
      if (concat && xs.slice(g * parts, (g + 1) * parts).some((x) => x.shape.length !== shape.length || x.shape.some((d, i) => d !== shape[i]))) {
        throw new Error(`${name}: the parts of group ${g} differ in shape`);
      }
      const cols = concat ? last : last / parts;
      if (concat) outs.push(be.makeTensorInfo(shape.length === 1 ? [parts * cols] : [rows, parts * cols], 'float32'));
      else for (let p = 0; p < parts; p++) outs.push(be.makeTensorInfo(shape.length === 1 ? [cols] : [rows, cols], 'float32'));
      info.push(cols, rows * cols, start, 0);
      start += rows * cols;
    }
    if (start === 0) return outs;
    const raw = rawWebGpu(tf);
    const key = `mlmkit-${concat ? 'concat' : 'split'}-column-groups/${groups}x${parts}`;
    const pipeline = raw.pipeline(key, groupShader(groups, parts, concat));
    const uniform = raw.uniform(Uint32Array.from([...info, start, 0, 0, 0]).buffer);
    const group = raw.bindGroup(key, pipeline, [...xs.map((x) => raw.bufferOf(x)), ...outs.map((o) => raw.bufferOf(o)), uniform]);
    raw.dispatch(pipeline, group, [Math.min(MAX_WORKGROUPS, Math.ceil(start / WG))]);
    return outs;
  };
  tf.registerKernel({ kernelName: CONCAT_COLUMN_GROUPS_KERNEL, backendName: 'webgpu', kernelFunc: run(true) as unknown as KernelConfig['kernelFunc'] });
  tf.registerKernel({ kernelName: SPLIT_COLUMN_GROUPS_KERNEL, backendName: 'webgpu', kernelFunc: run(false) as unknown as KernelConfig['kernelFunc'] });
}
