// Column reductions on webgpu: BIAS_GRAD_KERNEL (training/kernels/bias-grad.ts), and the two-stage
// column sums that the LayerNorm and bias + GELU gradients reuse (`columnSums`).
//
// Stage 1 (`ColumnPartialsProgram`): the rows are cut into blocks of `rowsPerBlock`; a workgroup of
// 64 x 4 threads takes 64 adjacent columns of one block, each of its 4 lanes of rows sums every
// 4th row of the block (the 64 threads of a lane read 64 adjacent floats: coalesced), and the 4
// lanes are added in workgroup memory. Output: one row of partial sums per block, [blocks, K*C]
// for K quantities summed at once (LayerNorm's dgamma and dbeta share one read of dy).
// Stage 2 is the same program summing the partials' rows (all of them in one block) into [C]. With
// one block (N <= rowsPerBlock) stage 1 writes the result itself.
//
// How TF.js runs a program (@tensorflow/tfjs-backend-webgpu 4.22, dist/webgpu_program.js): it
// declares `result` (the output), one read-only array per name in `variableNames`, and a
// `uniforms` struct with the shapes and this program's `uniforms` fields, and calls `main(index)`.
// These programs index with `workgroupId` and `localId` themselves; their dispatch is at most
// 65,535 workgroups in x (C up to 4 million columns), so TF.js never folds it.
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs';
import { BIAS_GRAD_KERNEL } from '../../kernels/bias-grad.ts';
import type { Tf } from '../common.ts';

export interface Uniform {
  type: 'uint32' | 'int32' | 'float32';
  data: number[];
}

/** The part of tfjs-backend-webgpu's WebGPUBackend these kernels use. */
export interface WebGpuBackendLike {
  runWebGPUProgram(program: unknown, inputs: TensorInfo[], outputDtype: 'float32', uniforms?: Uniform[]): TensorInfo;
  disposeData(dataId: object, force?: boolean): boolean;
}

/** What TF.js passes a kernel function. */
export interface KernelArgs {
  inputs: Record<string, TensorInfo>;
  backend: unknown;
  attrs?: unknown;
}

/**
 * What a column sum adds up at (row r, column c), as WGSL reading the program's inputs:
 * 'sum': a[r, c] (a row of `inWidth` floats, from column `colOffset`);
 * 'layerNorm': quantity 0 dy * xhat with xhat = (x - mean_r) * rstd_r (stats [N, 2] = mean,
 * rstd), quantity 1 dy: LayerNorm's dgamma and dbeta.
 */
export type ColumnSumKind = 'sum' | 'layerNorm';

const KINDS: Record<ColumnSumKind, { inputs: string[]; values: string[] }> = {
  sum: { inputs: ['a'], values: ['a[r * uniforms.inWidth + uniforms.colOffset + col]'] },
  layerNorm: {
    inputs: ['dy', 'x', 'stats'],
    values: ['dy[r * uniforms.inWidth + col] * (x[r * uniforms.inWidth + col] - stats[2 * r]) * stats[2 * r + 1]', 'dy[r * uniforms.inWidth + col]'],
  },
};

const LANES = 4;
const COLUMNS = 64;
const MAX_WORKGROUPS_X = 65535;

class ColumnPartialsProgram {
  readonly variableNames: string[];
  readonly outputShape: number[];
  readonly shaderKey: string;
  readonly uniforms = 'rows : i32, cols : i32, rowsPerBlock : i32, inWidth : i32, colOffset : i32,';
  readonly workgroupSize: [number, number, number] = [COLUMNS, LANES, 1];
  readonly dispatchLayout: { x: number[] };
  dispatch: [number, number, number];
  private readonly values: string[];

  constructor(kind: ColumnSumKind, cols: number, blocks: number) {
    const k = KINDS[kind];
    this.variableNames = k.inputs;
    this.values = k.values;
    const width = k.values.length * cols;
    this.outputShape = blocks === 1 ? [width] : [blocks, width];
    this.dispatchLayout = { x: this.outputShape.map((_, i) => i) };
    this.dispatch = [Math.ceil(cols / COLUMNS), blocks, 1];
    this.shaderKey = `mlmkitColumnPartials_${kind}`;
  }

  getUserCode(): string {
    const K = this.values.length;
    const acc = this.values.map((_, q) => `var acc${q} = 0.0;`).join('\n');
    const add = this.values.map((v, q) => `acc${q} = acc${q} + ${v};`).join('\n');
    const store = this.values.map((_, q) => `lanes${q}[localId.y][localId.x] = acc${q};`).join('\n');
    const shared = this.values.map((_, q) => `var<workgroup> lanes${q} : array<array<f32, ${COLUMNS}>, ${LANES}>;`).join('\n');
    const write = this.values
      .map((_, q) => {
        const sum = Array.from({ length: LANES }, (_, l) => `lanes${q}[${l}][localId.x]`).join(' + ');
        return `result[block * ${K} * uniforms.cols + ${q} * uniforms.cols + col] = ${sum};`;
      })
      .join('\n');
    return `
      ${shared}
      fn main(index : i32) {
        let col = i32(workgroupId.x) * ${COLUMNS} + i32(localId.x);
        let block = i32(workgroupId.y);
        let first = block * uniforms.rowsPerBlock;
        let end = min(first + uniforms.rowsPerBlock, uniforms.rows);
        ${acc}
        if (col < uniforms.cols) {
          for (var r = first + i32(localId.y); r < end; r = r + ${LANES}) {
            ${add}
          }
        }
        ${store}
        workgroupBarrier();
        if (localId.y == 0u && col < uniforms.cols) {
          ${write}
        }
      }
    `;
  }
}

/** Rows per stage-1 block for n rows: 64, more when there are over 1,024 blocks' worth. */
function rowsPerBlock(n: number): number {
  return Math.max(64, Math.ceil(n / 1024 / LANES) * LANES);
}

/**
 * Column sums of `kind` over `rows` rows of `cols` columns: K tensors [cols] (K = the kind's
 * quantities), from `inputs` in the kind's order. Two dispatches per quantity at most.
 */
export function columnSums(backend: WebGpuBackendLike, kind: ColumnSumKind, inputs: TensorInfo[], rows: number, cols: number): TensorInfo[] {
  if (Math.ceil(cols / COLUMNS) > MAX_WORKGROUPS_X) throw new Error(`columnSums: ${cols} columns are more than one dispatch takes`);
  const K = KINDS[kind].values.length;
  const per = rowsPerBlock(rows);
  const blocks = Math.max(1, Math.ceil(rows / per));
  const int = (v: number): Uniform => ({ type: 'int32', data: [v] });
  const partials = backend.runWebGPUProgram(new ColumnPartialsProgram(kind, cols, blocks), inputs, 'float32', [
    int(rows), int(cols), int(per), int(cols), int(0),
  ]);
  if (blocks === 1 && K === 1) return [partials];
  const out: TensorInfo[] = [];
  for (let q = 0; q < K; q++) {
    out.push(backend.runWebGPUProgram(new ColumnPartialsProgram('sum', cols, 1), [partials], 'float32', [
      int(blocks), int(cols), int(blocks), int(K * cols), int(q * cols),
    ]));
  }
  backend.disposeData(partials.dataId);
  return out;
}

function biasGradWebgpu(args: KernelArgs): TensorInfo {
  const { dy } = args.inputs;
  const [rows, cols] = dy.shape;
  return columnSums(args.backend as WebGpuBackendLike, 'sum', [dy], rows, cols)[0];
}

/** Registers BIAS_GRAD_KERNEL for webgpu (once). */
export function registerWebGpuBiasGrad(tf: Tf): void {
  if (tf.getKernel(BIAS_GRAD_KERNEL, 'webgpu') !== undefined) return;
  tf.registerKernel({ kernelName: BIAS_GRAD_KERNEL, backendName: 'webgpu', kernelFunc: biasGradWebgpu as unknown as KernelConfig['kernelFunc'] });
}
