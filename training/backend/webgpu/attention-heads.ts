// ROWS_TO_HEADS_KERNEL and HEADS_TO_ROWS_KERNEL (training/kernels/attention-heads.ts) on webgpu:
// each in one dispatch. A TF.js program has one output, so both go through the raw seam (raw.ts),
// binding one buffer per part.
//
// One thread per entry (r, c) of a part's columns in the rows (r = b T + t, c = h hs + e), looping
// over the parts: the rows side is read or written at r parts H + p H + c, the heads side at
// ((b heads + h) T + t) hs + e. A grid-stride loop keeps the workgroup count under the device's
// limit.
// HEADS_TO_ROWS_SUMS_KERNEL is a column sum (column-sums.ts) whose quantity is the rows' entry,
// read from the heads side, with the entries written as it goes: the rows and their sums in one
// pass over the heads (plus the partials' stage when the rows need it).
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs';
import { checkHeads, checkRows, HEADS_TO_ROWS_KERNEL, HEADS_TO_ROWS_SUMS_KERNEL, MAX_HEAD_PARTS, MAX_HEAD_SUM_PARTS, ROWS_TO_HEADS_KERNEL, type HeadsAttrs } from '../../kernels/attention-heads.ts';
import { columnSumsRaw, type ColumnSumSpec } from './column-sums.ts';
import type { Tf } from '../common.ts';
import { rawWebGpu } from './raw.ts';

const WG = 64;
const MAX_WORKGROUPS = 65_535;

/** WGSL moving `parts` parts; `toHeads`: rows (binding 0) -> heads, else heads (bindings 0..) -> rows. */
function shader(parts: number, toHeads: boolean): string {
  const headBindings = Array.from({ length: parts }, (_, p) => p + (toHeads ? 1 : 0));
  const rowBinding = toHeads ? 0 : parts;
  const decl = [
    `@group(0) @binding(${rowBinding}) var<storage, ${toHeads ? 'read' : 'read_write'}> rows : array<f32>;`,
    ...headBindings.map((b, p) => `@group(0) @binding(${b}) var<storage, ${toHeads ? 'read_write' : 'read'}> h${p} : array<f32>;`),
  ];
  const moves = Array.from({ length: parts }, (_, p) =>
    toHeads ? `    h${p}[dst] = rows[src + ${p}u * width];` : `    rows[src + ${p}u * width] = h${p}[dst];`,
  );
  return /* wgsl */ `
struct U { seq : u32, heads : u32, hs : u32, total : u32 }
${decl.join('\n')}
@group(0) @binding(${parts + 1}) var<uniform> u : U;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid : vec3<u32>, @builtin(num_workgroups) nwg : vec3<u32>) {
  let stride = nwg.x * ${WG}u;
  let width = u.heads * u.hs;
  for (var i = gid.x; i < u.total; i = i + stride) {
    let r = i / width;
    let c = i - r * width;
    let b = r / u.seq;
    let t = r - b * u.seq;
    let h = c / u.hs;
    let e = c - h * u.hs;
    let dst = ((b * u.heads + h) * u.seq + t) * u.hs + e;
    let src = r * ${parts}u * width + c;
${moves.join('\n')}
  }
}`;
}

function checkAttrs(name: string, { batch, heads, parts }: HeadsAttrs): void {
  if (![batch, heads, parts].every((v) => Number.isInteger(v) && v >= 1) || parts > MAX_HEAD_PARTS) {
    throw new Error(`${name}: bad attributes batch ${batch}, heads ${heads}, parts ${parts}`);
  }
}

type Backend = { makeTensorInfo(shape: number[], dtype: 'float32'): TensorInfo };

function run(tf: Tf, toHeads: boolean, rows: TensorInfo | null, heads: TensorInfo[], B: number, T: number, nh: number, hs: number, parts: number): void {
  const total = B * T * nh * hs;
  if (total === 0) return;
  const raw = rawWebGpu(tf);
  const key = `mlmkit-${toHeads ? 'rows-to-heads' : 'heads-to-rows'}/${parts}`;
  const pipeline = raw.pipeline(key, shader(parts, toHeads));
  const uniform = raw.uniform(Uint32Array.from([T, nh, hs, total]).buffer);
  const headBuffers = heads.map((t) => raw.bufferOf(t));
  const rowBuffer = raw.bufferOf(rows!);
  const bindings = toHeads ? [rowBuffer, ...headBuffers, uniform] : [...headBuffers, rowBuffer, uniform];
  raw.dispatch(pipeline, raw.bindGroup(key, pipeline, bindings), [Math.min(MAX_WORKGROUPS, Math.ceil(total / WG))]);
  if (!toHeads) raw.written(rows!);
}

/** The rows and their column sums from `parts` heads tensors [B, nh, T, hs], through column-sums.ts. */
function toRowsSums(tf: Tf, backend: unknown, xs: TensorInfo[], B: number, T: number, nh: number, hs: number): TensorInfo[] {
  const parts = xs.length;
  const names = xs.map((_, p) => `h${p}`);
  const spec: ColumnSumSpec = {
    key: `heads-to-rows-sums/${parts}`,
    inputs: names,
    values: ['headsEntry(r, col)'],
    // Entry (r, col) of the rows: part p, head h, element e of row r = b T + t.
    preamble: `fn headsEntry(r : u32, col : u32) -> f32 {
  let width = u.heads * u.hs;
  let p = col / width;
  let c = col - p * width;
  let b = r / u.seq;
  let h = c / u.hs;
  let i = ((b * u.heads + h) * u.seq + (r - b * u.seq)) * u.hs + (c - h * u.hs);
${names.map((n, q) => (q < parts - 1 ? `  if (p == ${q}u) { return ${n}[i]; }` : `  return ${n}[i];`)).join('\n')}
}`,
    elementwise: true,
    uniforms: { fields: 'seq : u32, heads : u32, hs : u32,', values: [T, nh, hs].map((value) => ({ type: 'uint32' as const, value })) },
  };
  return columnSumsRaw(tf, backend, spec, xs, B * T, parts * nh * hs);
}

/** Registers the kernels for the webgpu backend (once; later calls do nothing). */
export function registerWebGpuAttentionHeads(tf: Tf): void {
  if (tf.getKernel(ROWS_TO_HEADS_KERNEL, 'webgpu') !== undefined) return;
  const toHeads = (args: { inputs: unknown; backend: unknown; attrs?: unknown }): TensorInfo[] => {
    const { x } = args.inputs as { x: TensorInfo };
    const attrs = args.attrs as unknown as HeadsAttrs;
    checkAttrs(ROWS_TO_HEADS_KERNEL, attrs);
    const { batch: B, heads: nh, parts } = attrs;
    const { T, hs } = checkRows(x, attrs, ROWS_TO_HEADS_KERNEL);
    const outs = Array.from({ length: parts }, () => (args.backend as Backend).makeTensorInfo([B, nh, T, hs], 'float32'));
    run(tf, true, x, outs, B, T, nh, hs, parts);
    return outs;
  };
  // The parts of a heads-to-rows kernel's inputs, checked.
  const headParts = (name: string, args: { inputs: unknown; attrs?: unknown }): { xs: TensorInfo[]; B: number; nh: number; T: number; hs: number } => {
    const attrs = args.attrs as unknown as HeadsAttrs;
    checkAttrs(name, attrs);
    const inputs = args.inputs as Record<string, TensorInfo>;
    const xs = Array.from({ length: attrs.parts }, (_, p) => inputs[`x${p}`]);
    const [B, nh, T, hs] = checkHeads(xs, name, attrs);
    return { xs: xs as TensorInfo[], B, nh, T, hs };
  };
  const toRows = (args: { inputs: unknown; backend: unknown; attrs?: unknown }): TensorInfo => {
    const { xs, B, nh, T, hs } = headParts(HEADS_TO_ROWS_KERNEL, args);
    const out = (args.backend as Backend).makeTensorInfo([B * T, xs.length * nh * hs], 'float32');
    run(tf, false, out, xs, B, T, nh, hs, xs.length);
    return out;
  };
  const toRowsAndSums = (args: { inputs: unknown; backend: unknown; attrs?: unknown }): TensorInfo[] => {
    const { xs, B, nh, T, hs } = headParts(HEADS_TO_ROWS_SUMS_KERNEL, args);
    if (xs.length > MAX_HEAD_SUM_PARTS) throw new Error(`${HEADS_TO_ROWS_SUMS_KERNEL}: at most ${MAX_HEAD_SUM_PARTS} parts, got ${xs.length}`);
    return toRowsSums(tf, args.backend, xs, B, T, nh, hs);
  };
  tf.registerKernel({ kernelName: ROWS_TO_HEADS_KERNEL, backendName: 'webgpu', kernelFunc: toHeads as unknown as KernelConfig['kernelFunc'] });
  tf.registerKernel({ kernelName: HEADS_TO_ROWS_KERNEL, backendName: 'webgpu', kernelFunc: toRows as unknown as KernelConfig['kernelFunc'] });
  tf.registerKernel({ kernelName: HEADS_TO_ROWS_SUMS_KERNEL, backendName: 'webgpu', kernelFunc: toRowsAndSums as unknown as KernelConfig['kernelFunc'] });
}
