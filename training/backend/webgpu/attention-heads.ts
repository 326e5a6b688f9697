// ROWS_TO_HEADS_KERNEL and HEADS_TO_ROWS_KERNEL (training/kernels/attention-heads.ts) on webgpu:
// each in one dispatch. A TF.js program has one output, so both go through the raw seam (raw.ts),
// binding one buffer per part.
//
// One thread per entry (r, c) of a part's columns in the rows (r = b T + t, c = h hs + e), looping
// over the parts: the rows side is read or written at r parts H + p H + c, the heads side at
// ((b heads + h) T + t) hs + e. A grid-stride loop keeps the workgroup count under the device's
// limit.
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs';
import { HEADS_TO_ROWS_KERNEL, MAX_HEAD_PARTS, ROWS_TO_HEADS_KERNEL, type HeadsAttrs } from '../../kernels/attention-heads.ts';
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

/** Registers both kernels for the webgpu backend (once; later calls do nothing). */
export function registerWebGpuAttentionHeads(tf: Tf): void {
  if (tf.getKernel(ROWS_TO_HEADS_KERNEL, 'webgpu') !== undefined) return;
  const toHeads = (args: { inputs: unknown; backend: unknown; attrs?: unknown }): TensorInfo[] => {
    const { x } = args.inputs as { x: TensorInfo };
    const attrs = args.attrs as unknown as HeadsAttrs;
    checkAttrs(ROWS_TO_HEADS_KERNEL, attrs);
    const { batch: B, heads: nh, parts } = attrs;
    const [R, C] = x.shape;
    if (x.shape.length !== 2 || R % B !== 0 || C % (parts * nh) !== 0) {
      throw new Error(`${ROWS_TO_HEADS_KERNEL}: cannot cut [${x.shape.join(', ')}] into ${parts} parts of ${nh} heads over ${B} sequences`);
    }
    const T = R / B;
    const hs = C / (parts * nh);
    const outs = Array.from({ length: parts }, () => (args.backend as Backend).makeTensorInfo([B, nh, T, hs], 'float32'));
    run(tf, true, x, outs, B, T, nh, hs, parts);
    return outs;
  };
  const toRows = (args: { inputs: unknown; backend: unknown; attrs?: unknown }): TensorInfo => {
    const attrs = args.attrs as unknown as HeadsAttrs;
    checkAttrs(HEADS_TO_ROWS_KERNEL, attrs);
    const inputs = args.inputs as Record<string, TensorInfo>;
    const xs = Array.from({ length: attrs.parts }, (_, p) => inputs[`x${p}`]);
    const shape = xs[0]?.shape ?? [];
    if (xs.some((x) => x === undefined || x.shape.length !== 4 || x.shape.some((d, i) => d !== shape[i])) || shape[0] !== attrs.batch || shape[1] !== attrs.heads) {
      throw new Error(`${HEADS_TO_ROWS_KERNEL}: ${attrs.parts} inputs [${attrs.batch}, ${attrs.heads}, T, hs] expected`);
    }
    const [B, nh, T, hs] = shape;
    const out = (args.backend as Backend).makeTensorInfo([B * T, attrs.parts * nh * hs], 'float32');
    run(tf, false, out, xs, B, T, nh, hs, attrs.parts);
    return out;
  };
  tf.registerKernel({ kernelName: ROWS_TO_HEADS_KERNEL, backendName: 'webgpu', kernelFunc: toHeads as unknown as KernelConfig['kernelFunc'] });
  tf.registerKernel({ kernelName: HEADS_TO_ROWS_KERNEL, backendName: 'webgpu', kernelFunc: toRows as unknown as KernelConfig['kernelFunc'] });
}
