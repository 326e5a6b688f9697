// Column sums with one output tensor per summed quantity, through the raw seam (raw.ts): several
// sums come out of one dispatch (two when the rows need a second stage), where the TF.js programs
// of bias-grad.ts need one dispatch for the partial sums of all and then one per quantity (a TF.js
// program has a single output). Used by the bias + GELU and bias + dropout + residual gradients,
// and as the second stage of the LayerNorm gradients (layer-norm.ts).
//
// The same two stages as bias-grad.ts `columnSums`: stage 1 cuts the rows into blocks of
// `rowsPerBlock`; a workgroup of 64 x 4 threads takes 64 adjacent columns of one block, each of
// its 4 lanes of rows summing every 4th row (coalesced reads), the lanes added in workgroup memory.
// With one block, stage 1 writes the K results; otherwise it writes K partial tensors [blocks, C]
// and stage 2 (the same shader, summing each partial tensor) writes the K results.
import type { TensorInfo } from '@tensorflow/tfjs';
import type { Tf } from '../common.ts';
import { rawWebGpu } from './raw.ts';

const LANES = 4;
const COLUMNS = 64;
const MAX_WORKGROUPS_X = 65535;

/** What a column sum adds at (row r, column col): K WGSL expressions over the named inputs. */
export interface ColumnSumSpec {
  /** Key of the pipeline (one per distinct `inputs` and `values`). */
  key: string;
  inputs: string[];
  /** One expression per quantity, reading the inputs at `r` (row) and `col`; `cols` is the row width. */
  values: string[];
  /** WGSL functions the expressions call. */
  preamble?: string;
  /**
   * Also write quantity 0 entry by entry, as a tensor [rows, cols] (the first output): a gradient
   * and its column sums from one read (stage 1 visits every entry once).
   */
  elementwise?: boolean;
  /** More uniform fields (WGSL struct members, 4 bytes each) and their values, read as `u.<name>`. */
  uniforms?: { fields: string; values: { type: 'uint32' | 'float32'; value: number }[] };
}

function shader(spec: ColumnSumSpec): string {
  const K = spec.values.length;
  const ew = spec.elementwise === true ? 1 : 0;
  const decl = [
    ...spec.inputs.map((name, i) => `@group(0) @binding(${i}) var<storage, read> ${name} : array<f32>;`),
    ...(ew ? [`@group(0) @binding(${spec.inputs.length}) var<storage, read_write> entries : array<f32>;`] : []),
    ...spec.values.map((_, q) => `@group(0) @binding(${spec.inputs.length + ew + q}) var<storage, read_write> out${q} : array<f32>;`),
  ];
  const q = [...Array(K).keys()];
  return /* wgsl */ `
struct U { rows : u32, cols : u32, rowsPerBlock : u32, pad : u32, ${spec.uniforms?.fields ?? ''} }
${decl.join('\n')}
@group(0) @binding(${spec.inputs.length + ew + K}) var<uniform> u : U;
${spec.preamble ?? ''}
${q.map((i) => `var<workgroup> lanes${i} : array<array<f32, ${COLUMNS}>, ${LANES}>;`).join('\n')}
@compute @workgroup_size(${COLUMNS}, ${LANES}, 1)
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_id) lid : vec3<u32>) {
  let cols = u.cols;
  let col = wid.x * ${COLUMNS}u + lid.x;
  let block = wid.y;
  let first = block * u.rowsPerBlock;
  let end = min(first + u.rowsPerBlock, u.rows);
  ${q.map((i) => `var acc${i} = 0.0;`).join('\n  ')}
  if (col < cols) {
    for (var r = first + lid.y; r < end; r = r + ${LANES}u) {
      ${q.map((i) => `let v${i} = ${spec.values[i]};`).join('\n      ')}
      ${ew ? 'entries[r * cols + col] = v0;' : ''}
      ${q.map((i) => `acc${i} = acc${i} + v${i};`).join('\n      ')}
    }
  }
  ${q.map((i) => `lanes${i}[lid.y][lid.x] = acc${i};`).join('\n  ')}
  workgroupBarrier();
  if (lid.y == 0u && col < cols) {
    ${q.map((i) => `out${i}[block * cols + col] = ${[...Array(LANES).keys()].map((l) => `lanes${i}[${l}][lid.x]`).join(' + ')};`).join('\n    ')}
  }
}`;
}

/** Rows per stage-1 block for n rows: 64, more when there are over 1,024 blocks' worth (as bias-grad.ts). */
function rowsPerBlock(n: number): number {
  return Math.max(64, Math.ceil(n / 1024 / LANES) * LANES);
}

type Backend = { makeTensorInfo(shape: number[], dtype: 'float32'): TensorInfo; disposeData(dataId: object, force?: boolean): boolean };

function dispatch(tf: Tf, spec: ColumnSumSpec, inputs: TensorInfo[], outs: TensorInfo[], rows: number, cols: number, per: number, blocks: number): void {
  const raw = rawWebGpu(tf);
  const key = `mlmkit-column-sums/${spec.key}`;
  const pipeline = raw.pipeline(key, shader(spec));
  const extra = spec.uniforms?.values ?? [];
  const data = new DataView(new ArrayBuffer(16 + 4 * extra.length));
  [rows, cols, per, 0].forEach((v, i) => data.setUint32(4 * i, v, true));
  extra.forEach((v, i) => (v.type === 'uint32' ? data.setUint32(16 + 4 * i, v.value >>> 0, true) : data.setFloat32(16 + 4 * i, v.value, true)));
  const uniform = raw.uniform(data.buffer);
  const group = raw.bindGroup(key, pipeline, [...inputs.map((t) => raw.bufferOf(t)), ...outs.map((t) => raw.bufferOf(t)), uniform]);
  raw.dispatch(pipeline, group, [Math.ceil(cols / COLUMNS), blocks, 1]);
  for (const o of outs) raw.written(o);
}

/**
 * Column sums of `spec`'s quantities over `rows` rows of `cols` columns: K tensors [cols], after
 * the entries [rows, cols] of quantity 0 when `spec.elementwise`. `oneStage`: one dispatch
 * whatever the row count (each workgroup sums all rows of its columns), for few rows, such as
 * the partial rows another kernel wrote.
 */
export function columnSumsRaw(
  tf: Tf,
  backend: unknown,
  spec: ColumnSumSpec,
  inputs: TensorInfo[],
  rows: number,
  cols: number,
  opts: { oneStage?: boolean } = {},
): TensorInfo[] {
  if (Math.ceil(cols / COLUMNS) > MAX_WORKGROUPS_X) throw new Error(`columnSumsRaw: ${cols} columns are more than one dispatch takes`);
  const be = backend as Backend;
  const K = spec.values.length;
  const entries = spec.elementwise === true ? [be.makeTensorInfo([rows, cols], 'float32')] : [];
  const results = Array.from({ length: K }, () => be.makeTensorInfo([cols], 'float32'));
  if (cols === 0) return [...entries, ...results];
  const per = opts.oneStage === true ? Math.max(rows, 1) : rowsPerBlock(rows);
  const blocks = Math.max(1, Math.ceil(rows / per));
  if (blocks === 1) {
    dispatch(tf, spec, inputs, [...entries, ...results], rows, cols, per, 1);
    return [...entries, ...results];
  }
  const partials = Array.from({ length: K }, () => be.makeTensorInfo([blocks, cols], 'float32'));
  dispatch(tf, spec, inputs, [...entries, ...partials], rows, cols, per, blocks);
  const names = partials.map((_, q) => `p${q}`);
  const stage2: ColumnSumSpec = { key: `sum${K}`, inputs: names, values: names.map((n) => `${n}[r * cols + col]`) };
  dispatch(tf, stage2, partials, results, blocks, cols, blocks, 1);
  for (const p of partials) be.disposeData(p.dataId);
  return [...entries, ...results];
}
