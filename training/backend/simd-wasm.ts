// mlmkit's fused kernels on the wasm backend: the contracts of training/kernels/ (bias + GELU,
// LayerNorm, attention softmax, bias + dropout + residual, the masked cross-entropy, dropout
// masks, AdamW, attention heads out of rows and back) run by a small WebAssembly SIMD module of our
// own (training/backend/simd/kernels.c, built by scripts/build-simd-kernels.sh) that imports the
// backend's memory and works on its tensors in place. Sums over leading axes (every bias gradient)
// go through its column sums too (sum-wasm.ts).
//
// Why: after the matrix products moved to BLAS, a bert-mini step on wasm spent more time in
// elementwise kernels than in matmuls; tfjs-backend-wasm's unary kernels (Exp, Erf) are scalar
// C++ loops (~5 ns an element for Exp), and each composite (LayerNorm ~10 kernels, GELU ~7) passes
// over its tensor once per kernel. The module does each in one or two passes, four lanes at a time.
//
// `loadSimdKernels` instantiates the module on the backend's memory (the shared build when the
// backend runs threaded); `registerSimdKernels` then registers the kernels for 'wasm' (the model's
// ops use a kernel when it is registered: capabilitiesOf in training/backend.ts). MLM_SIMD_KERNELS=0
// leaves them out (the composites run, as before).
//
// Work splitting: each kernel takes a range of rows (entries, columns); a `WorkSplit` runs a
// range, on the calling thread (`onThisThread`) or cut between threads (simd-pool.ts). Results do
// not depend on how a range is cut (kernels.c).
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { KernelConfig, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs';
import { envSwitch } from '../../common/errors.ts';
import type { Tf } from './common.ts';
import { ATTENTION_SOFTMAX_GRAD_KERNEL, ATTENTION_SOFTMAX_KERNEL, type AttentionSoftmaxAttrs } from '../kernels/attention-softmax.ts';
import { BIAS_DROPOUT_RESIDUAL_GRAD_KERNEL, BIAS_DROPOUT_RESIDUAL_KERNEL, type BiasDropoutResidualAttrs } from '../kernels/bias-dropout-residual.ts';
import { BIAS_GELU_GRAD_KERNEL, BIAS_GELU_KERNEL, type BiasGeluAttrs } from '../kernels/bias-gelu.ts';
import { DROPOUT_MASK_KERNEL } from '../kernels/dropout-mask.ts';
import type { KernelDropout } from '../kernels/kernel-dropout.ts';
import { ADAMW_KERNEL, SUM_OF_SQUARES_KERNEL, type AdamWKernelAttrs } from '../kernels/adamw.ts';
import { checkHeads, checkRows, HEADS_TO_ROWS_KERNEL, ROWS_TO_HEADS_KERNEL, type HeadsAttrs } from '../kernels/attention-heads.ts';
import { LAYER_NORM_GRAD_KERNEL, LAYER_NORM_KERNEL, type LayerNormAttrs } from '../kernels/layer-norm.ts';
import { MASKED_CROSS_ENTROPY_GRAD_KERNEL, MASKED_CROSS_ENTROPY_KERNEL } from '../kernels/masked-cross-entropy.ts';
import { setSimdColumnSums } from './sum-wasm.ts';
import { wrapWasmKernel, type WasmKernelArgs } from './wrap-wasm-kernel.ts';

/** The module's exports (kernels.c); every pointer is a byte offset into the backend's memory. */
export interface SimdExports {
  bias_gelu(x: number, b: number, y: number, cols: number, tanh: number, r0: number, r1: number): void;
  bias_gelu_grad(dy: number, x: number, b: number, dx: number, cols: number, tanh: number, r0: number, r1: number): void;
  column_sums(x: number, out: number, rows: number, cols: number, c0: number, c1: number): void;
  layer_norm(x: number, gamma: number, beta: number, y: number, stats: number, H: number, eps: number, r0: number, r1: number): void;
  layer_norm_grad_rows(dy: number, x: number, stats: number, gamma: number, dx: number, H: number, r0: number, r1: number): void;
  layer_norm_grad_columns(dy: number, x: number, stats: number, dgamma: number, dbeta: number, N: number, H: number, c0: number, c1: number): void;
  dropout_mask(out: number, k0: number, k1: number, k2: number, threshold: number, scale: number, i0: number, i1: number): void;
  dropout_apply(dy: number, dx: number, k0: number, k1: number, k2: number, threshold: number, scale: number, i0: number, i1: number): void;
  bias_dropout_residual(x: number, b: number, res: number, y: number, H: number, dropout: number, k0: number, k1: number, k2: number, threshold: number, scale: number, r0: number, r1: number): void;
  attention_softmax(scores: number, bias: number, out: number, rowsPerBatch: number, Tk: number, scale: number, dropout: number, k0: number, k1: number, k2: number, threshold: number, keepScale: number, r0: number, r1: number): void;
  attention_softmax_grad(scores: number, bias: number, dy: number, dz: number, rowsPerBatch: number, Tk: number, scale: number, dropout: number, k0: number, k1: number, k2: number, threshold: number, keepScale: number, r0: number, r1: number): void;
  masked_cross_entropy(logits: number, targets: number, weights: number, loss: number, V: number, r0: number, r1: number): void;
  masked_cross_entropy_grad(logits: number, targets: number, weights: number, dy: number, dl: number, V: number, r0: number, r1: number): void;
  adamw(p: number, m: number, v: number, g: number, p1: number, m1: number, v1: number, b1: number, b2: number, b1c: number, b2c: number, inv: number, eps: number, negStep: number, keep: number, decay: number, i0: number, i1: number): void;
  sum_squares(x: number, n: number): number;
  copy_columns(src: number, dst: number, srcCols: number, c0: number, n: number, r0: number, r1: number): void;
  rows_to_heads(x: number, out: number, C: number, c0: number, T: number, heads: number, hs: number, r0: number, r1: number): void;
  heads_to_rows(x: number, out: number, C: number, c0: number, T: number, heads: number, hs: number, r0: number, r1: number): void;
}

/** The modules' folder: beside this file, or, from the compiled package (dist/training/backend), the sources'. */
function moduleDir(): string {
  const beside = path.join(import.meta.dirname, 'simd');
  return existsSync(beside) ? beside : path.join(import.meta.dirname, '..', '..', '..', 'training', 'backend', 'simd');
}

/** The module's instance on a memory (shared: the backend's threaded build), and its bytes. */
export interface SimdModule {
  kernels: SimdExports;
  /** The module file's bytes (each thread of simd-pool.ts compiles its own). */
  bytes: Uint8Array;
  memory: WebAssembly.Memory;
  shared: boolean;
}

/** The module's exported kernels, in a fixed order (the thread pool refers to them by index). */
export const SIMD_FUNCTIONS: readonly (keyof SimdExports)[] = [
  'bias_gelu', 'bias_gelu_grad', 'column_sums', 'layer_norm', 'layer_norm_grad_rows', 'layer_norm_grad_columns',
  'dropout_mask', 'dropout_apply', 'bias_dropout_residual', 'attention_softmax', 'attention_softmax_grad',
  'masked_cross_entropy', 'masked_cross_entropy_grad', 'adamw', 'copy_columns', 'rows_to_heads', 'heads_to_rows',
];

/** The module instantiated on `memory`, or a reason why it cannot be. */
export function instantiateSimdKernels(memory: WebAssembly.Memory): SimdModule | { reason: string } {
  const shared = typeof SharedArrayBuffer !== 'undefined' && memory.buffer instanceof SharedArrayBuffer;
  const file = path.join(moduleDir(), shared ? 'kernels-shared.wasm' : 'kernels.wasm');
  try {
    const bytes = readFileSync(file);
    const module = new WebAssembly.Module(bytes);
    const instance = new WebAssembly.Instance(module, { env: { memory } });
    return { kernels: instance.exports as unknown as SimdExports, bytes, memory, shared };
  } catch (err) {
    return { reason: `${path.basename(file)}: ${err instanceof Error ? err.message : String(err)}` };
  }
}

/**
 * The wasm backend's memory, or null where not exposed: the threaded build's Emscripten module
 * names it `wasmMemory`, the single-threaded one only exports it from its instance (`asm.memory`).
 */
export function backendMemory(backend: BackendWasm): WebAssembly.Memory | null {
  const module = backend.wasm as unknown as { wasmMemory?: unknown; asm?: { memory?: unknown } };
  const memory = module.wasmMemory ?? module.asm?.memory;
  return memory instanceof WebAssembly.Memory ? memory : null;
}

/**
 * Runs the module's function `name` over [0, n) with `args` before the range's two ends, in pieces
 * of at least `grain` (`toRange` maps a piece [lo, hi) to the function's own range arguments).
 * `onThisThread` runs the whole range here; simd-pool.ts splits it between threads.
 */
export type WorkSplit = (
  kernels: SimdExports,
  name: keyof SimdExports,
  n: number,
  grain: number,
  args: number[],
  toRange?: (lo: number, hi: number) => [number, number],
) => void;
export const onThisThread: WorkSplit = (kernels, name, n, _grain, args, toRange = (lo, hi) => [lo, hi]) => {
  if (n > 0) (kernels[name] as unknown as (...a: number[]) => void)(...args, ...toRange(0, n));
};

type KernelArgs = WasmKernelArgs;

/** Loads the module on the active wasm backend's memory (`env`: MLM_SIMD_KERNELS=0, or false/no/off, declines); a reason string when it cannot. */
export function loadSimdKernels(tf: Tf, env: NodeJS.ProcessEnv): SimdModule | { reason: string } {
  if (!envSwitch(env, 'MLM_SIMD_KERNELS', true)) return { reason: `MLM_SIMD_KERNELS=${env.MLM_SIMD_KERNELS?.trim()}` };
  const memory = backendMemory(tf.backend() as unknown as BackendWasm);
  if (memory === null) return { reason: 'the wasm module does not expose its memory' };
  return instantiateSimdKernels(memory);
}

/** The kernels this file registers for 'wasm' (after `registerSimdKernels`). */
export const SIMD_KERNEL_NAMES = [
  BIAS_GELU_KERNEL, BIAS_GELU_GRAD_KERNEL, LAYER_NORM_KERNEL, LAYER_NORM_GRAD_KERNEL,
  ATTENTION_SOFTMAX_KERNEL, ATTENTION_SOFTMAX_GRAD_KERNEL, BIAS_DROPOUT_RESIDUAL_KERNEL,
  BIAS_DROPOUT_RESIDUAL_GRAD_KERNEL, MASKED_CROSS_ENTROPY_KERNEL, MASKED_CROSS_ENTROPY_GRAD_KERNEL,
  DROPOUT_MASK_KERNEL, ADAMW_KERNEL, SUM_OF_SQUARES_KERNEL, ROWS_TO_HEADS_KERNEL, HEADS_TO_ROWS_KERNEL,
] as const;

/**
 * Registers the contracts' kernels for 'wasm' on `k` (replacing earlier registrations: a new
 * backend instance brings a new memory), and routes leading-axes sums to its column sums.
 */
export function registerSimdKernels(tf: Tf, k: SimdExports, split: WorkSplit = onThisThread): void {
  const ptr = (backend: BackendWasm, t: TensorInfo): number => backend.dataIdMap.get(t.dataId)!.memoryOffset;
  const f32 = (name: string, t: TensorInfo | undefined): TensorInfo => {
    if (t === undefined) throw new Error(`${name}: missing input`);
    if (t.dtype !== 'float32') throw new Error(`${name}: float32 expected, got ${t.dtype}`);
    return t;
  };
  const rowsOf = (t: TensorInfo): number => tf.util.sizeFromShape(t.shape.slice(0, -1));
  const last = (t: TensorInfo): number => t.shape[t.shape.length - 1] ?? 1;
  // The kernels' dropout arguments, in kernels.c's order.
  const dropoutArgs = (a: KernelDropout): number[] => [a.dropout, a.k0, a.k1, a.k2, a.threshold, a.keepScale];
  // A range of n entries handled in groups of four: a piece [q0, q1) of groups is entries [4 q0, 4 q1) within n.
  const fours = (n: number) => (q0: number, q1: number): [number, number] => [4 * q0, Math.min(n, 4 * q1)];
  // The cross-entropy kernels' shared inputs as pointers (weights 0: none) and the logits' shape.
  const crossEntropyInputs = (name: string, inputs: NamedTensorInfoMap, be: BackendWasm) => {
    const logits = f32(name, inputs.logits);
    const [N, V] = logits.shape as [number, number];
    const weights = inputs.weights === undefined ? 0 : ptr(be, f32(name, inputs.weights));
    return { logits: ptr(be, logits), targets: ptr(be, inputs.targets!), weights, N, V };
  };
  const kernels: Record<string, (args: KernelArgs, backend: BackendWasm) => TensorInfo | TensorInfo[]> = {
    [BIAS_GELU_KERNEL]: ({ inputs, attrs }, be) => {
      const x = f32(BIAS_GELU_KERNEL, inputs.x);
      const b = f32(BIAS_GELU_KERNEL, inputs.bias);
      const tanh = (attrs as unknown as BiasGeluAttrs).tanh;
      const y = be.makeOutput(x.shape, 'float32');
      const C = last(x);
      split(k, 'bias_gelu', rowsOf(x), grainRows(C), [ptr(be, x), ptr(be, b), ptr(be, y), C, tanh]);
      return y;
    },
    [BIAS_GELU_GRAD_KERNEL]: ({ inputs, attrs }, be) => {
      const dy = f32(BIAS_GELU_GRAD_KERNEL, inputs.dy);
      const x = f32(BIAS_GELU_GRAD_KERNEL, inputs.x);
      const b = f32(BIAS_GELU_GRAD_KERNEL, inputs.bias);
      const tanh = (attrs as unknown as BiasGeluAttrs).tanh;
      const dx = be.makeOutput(x.shape, 'float32');
      const C = last(x);
      const N = rowsOf(x);
      split(k, 'bias_gelu_grad', N, grainRows(C), [ptr(be, dy), ptr(be, x), ptr(be, b), ptr(be, dx), C, tanh]);
      const db = be.makeOutput([C], 'float32');
      split(k, 'column_sums', C, 16, [ptr(be, dx), ptr(be, db), N, C]);
      return [dx, db];
    },
    [LAYER_NORM_KERNEL]: ({ inputs, attrs }, be) => {
      const x = f32(LAYER_NORM_KERNEL, inputs.x);
      const gamma = f32(LAYER_NORM_KERNEL, inputs.gamma);
      const beta = f32(LAYER_NORM_KERNEL, inputs.beta);
      const { eps } = attrs as unknown as LayerNormAttrs;
      const [N, H] = x.shape as [number, number];
      const y = be.makeOutput([N, H], 'float32');
      const stats = be.makeOutput([N, 2], 'float32');
      split(k, 'layer_norm', N, grainRows(H), [ptr(be, x), ptr(be, gamma), ptr(be, beta), ptr(be, y), ptr(be, stats), H, eps]);
      return [y, stats];
    },
    [LAYER_NORM_GRAD_KERNEL]: ({ inputs }, be) => {
      const dy = f32(LAYER_NORM_GRAD_KERNEL, inputs.dy);
      const x = f32(LAYER_NORM_GRAD_KERNEL, inputs.x);
      const stats = f32(LAYER_NORM_GRAD_KERNEL, inputs.stats);
      const gamma = f32(LAYER_NORM_GRAD_KERNEL, inputs.gamma);
      const [N, H] = x.shape as [number, number];
      const dx = be.makeOutput([N, H], 'float32');
      const dgamma = be.makeOutput([H], 'float32');
      const dbeta = be.makeOutput([H], 'float32');
      split(k, 'layer_norm_grad_rows', N, grainRows(H), [ptr(be, dy), ptr(be, x), ptr(be, stats), ptr(be, gamma), ptr(be, dx), H]);
      split(k, 'layer_norm_grad_columns', Math.ceil(H / 4), 4, [ptr(be, dy), ptr(be, x), ptr(be, stats), ptr(be, dgamma), ptr(be, dbeta), N, H], fours(H));
      return [dx, dgamma, dbeta];
    },
    [ATTENTION_SOFTMAX_KERNEL]: ({ inputs, attrs }, be) => {
      const s = f32(ATTENTION_SOFTMAX_KERNEL, inputs.scores);
      const bias = f32(ATTENTION_SOFTMAX_KERNEL, inputs.bias);
      const a = attrs as unknown as AttentionSoftmaxAttrs;
      const [, heads, Tq, Tk] = s.shape as [number, number, number, number];
      const out = be.makeOutput(s.shape, 'float32');
      split(k, 'attention_softmax', rowsOf(s), grainRows(Tk), [ptr(be, s), ptr(be, bias), ptr(be, out), heads * Tq, Tk, a.scale, ...dropoutArgs(a)]);
      return out;
    },
    [ATTENTION_SOFTMAX_GRAD_KERNEL]: ({ inputs, attrs }, be) => {
      const s = f32(ATTENTION_SOFTMAX_GRAD_KERNEL, inputs.scores);
      const bias = f32(ATTENTION_SOFTMAX_GRAD_KERNEL, inputs.bias);
      const dy = f32(ATTENTION_SOFTMAX_GRAD_KERNEL, inputs.dy);
      const a = attrs as unknown as AttentionSoftmaxAttrs;
      const [, heads, Tq, Tk] = s.shape as [number, number, number, number];
      const dz = be.makeOutput(s.shape, 'float32');
      split(k, 'attention_softmax_grad', rowsOf(s), grainRows(Tk), [ptr(be, s), ptr(be, bias), ptr(be, dy), ptr(be, dz), heads * Tq, Tk, a.scale, ...dropoutArgs(a)]);
      return dz;
    },
    [BIAS_DROPOUT_RESIDUAL_KERNEL]: ({ inputs, attrs }, be) => {
      const x = f32(BIAS_DROPOUT_RESIDUAL_KERNEL, inputs.x);
      const b = f32(BIAS_DROPOUT_RESIDUAL_KERNEL, inputs.bias);
      const res = f32(BIAS_DROPOUT_RESIDUAL_KERNEL, inputs.residual);
      const a = attrs as unknown as BiasDropoutResidualAttrs;
      const H = last(x);
      const y = be.makeOutput(x.shape, 'float32');
      split(k, 'bias_dropout_residual', rowsOf(x), grainRows(H), [ptr(be, x), ptr(be, b), ptr(be, res), ptr(be, y), H, ...dropoutArgs(a)]);
      return y;
    },
    [BIAS_DROPOUT_RESIDUAL_GRAD_KERNEL]: ({ inputs, attrs }, be) => {
      const dy = f32(BIAS_DROPOUT_RESIDUAL_GRAD_KERNEL, inputs.dy);
      const a = attrs as unknown as BiasDropoutResidualAttrs;
      const dx = be.makeOutput(dy.shape, 'float32');
      const n = rowsOf(dy) * last(dy);
      // Without dropout the mask is 1: a threshold of 0 drops nothing, and the scale is 1.
      const [threshold, scale] = a.dropout === 1 ? [a.threshold, a.keepScale] : [0, 1];
      split(k, 'dropout_apply', Math.ceil(n / 4), GRAIN_ENTRIES / 4, [ptr(be, dy), ptr(be, dx), a.k0, a.k1, a.k2, threshold, scale], fours(n));
      return dx;
    },
    [MASKED_CROSS_ENTROPY_KERNEL]: ({ inputs }, be) => {
      const { logits, targets, weights, N, V } = crossEntropyInputs(MASKED_CROSS_ENTROPY_KERNEL, inputs, be);
      const loss = be.makeOutput([N], 'float32');
      split(k, 'masked_cross_entropy', N, grainRows(V), [logits, targets, weights, ptr(be, loss), V]);
      return loss;
    },
    [MASKED_CROSS_ENTROPY_GRAD_KERNEL]: ({ inputs }, be) => {
      const { logits, targets, weights, N, V } = crossEntropyInputs(MASKED_CROSS_ENTROPY_GRAD_KERNEL, inputs, be);
      const dy = f32(MASKED_CROSS_ENTROPY_GRAD_KERNEL, inputs.dy);
      const dl = be.makeOutput([N, V], 'float32');
      split(k, 'masked_cross_entropy_grad', N, grainRows(V), [logits, targets, weights, ptr(be, dy), ptr(be, dl), V]);
      return dl;
    },
    [ADAMW_KERNEL]: ({ inputs, attrs }, be) => {
      const [p, m, v, g] = (['param', 'm', 'v', 'grad'] as const).map((name) => f32(ADAMW_KERNEL, inputs[name]));
      const a = attrs as unknown as AdamWKernelAttrs;
      const n = tf.util.sizeFromShape(p.shape);
      for (const t of [m, v, g]) {
        if (tf.util.sizeFromShape(t.shape) !== n) throw new Error(`${ADAMW_KERNEL}: param, m, v and grad must have the same size`);
      }
      const outs = [p, m, v].map((t) => be.makeOutput(t.shape, 'float32'));
      split(k, 'adamw', n, GRAIN_ENTRIES, [...[p, m, v, g, ...outs].map((t) => ptr(be, t)), a.b1, a.b2, a.b1c, a.b2c, a.inv, a.eps, a.negStep, a.keep, a.decay]);
      return outs;
    },
    [SUM_OF_SQUARES_KERNEL]: ({ inputs }, be) => {
      const x = f32(SUM_OF_SQUARES_KERNEL, inputs.x);
      const total = k.sum_squares(ptr(be, x), tf.util.sizeFromShape(x.shape));
      const out = be.makeOutput([], 'float32');
      (be.typedArrayFromHeap(out) as Float32Array)[0] = total;
      return out;
    },
    [ROWS_TO_HEADS_KERNEL]: ({ inputs, attrs }, be) => {
      const x = f32(ROWS_TO_HEADS_KERNEL, inputs.x);
      const { batch, heads, parts } = attrs as unknown as HeadsAttrs;
      const { T, hs } = checkRows(x, { batch, heads, parts }, ROWS_TO_HEADS_KERNEL);
      const H = heads * hs;
      const outs = Array.from({ length: parts }, () => be.makeOutput([batch, heads, T, hs], 'float32'));
      outs.forEach((out, p) => split(k, 'rows_to_heads', batch * T, grainRows(H), [ptr(be, x), ptr(be, out), parts * H, p * H, T, heads, hs]));
      return outs;
    },
    [HEADS_TO_ROWS_KERNEL]: ({ inputs, attrs }, be) => {
      const a = attrs as unknown as HeadsAttrs;
      const xs = Array.from({ length: a.parts }, (_, p) => f32(HEADS_TO_ROWS_KERNEL, inputs[`x${p}`]));
      const [B, heads, T, hs] = checkHeads(xs, HEADS_TO_ROWS_KERNEL, a);
      const H = heads * hs;
      const out = be.makeOutput([B * T, a.parts * H], 'float32');
      xs.forEach((x, p) => split(k, 'heads_to_rows', B * T, grainRows(H), [ptr(be, x), ptr(be, out), a.parts * H, p * H, T, heads, hs]));
      return out;
    },
    [DROPOUT_MASK_KERNEL]: ({ attrs }, be) => {
      const { n, k0, k1, k2, threshold, scale } = attrs as unknown as { n: number; k0: number; k1: number; k2: number; threshold: number; scale: number };
      const out = be.makeOutput([n], 'float32');
      split(k, 'dropout_mask', Math.ceil(n / 4), GRAIN_ENTRIES / 4, [ptr(be, out), k0, k1, k2, threshold, scale], fours(n));
      return out;
    },
  };
  for (const [kernelName, run] of Object.entries(kernels)) {
    if (tf.getKernel(kernelName, 'wasm') !== undefined) tf.unregisterKernel(kernelName, 'wasm');
    const kernelFunc = (args: KernelArgs) => run(args, args.backend as BackendWasm);
    tf.registerKernel({ kernelName, backendName: 'wasm', kernelFunc: kernelFunc as unknown as KernelConfig['kernelFunc'] });
  }
  setSimdColumnSums((backend, x, out, rows, cols) => split(k, 'column_sums', cols, 16, [ptr(backend, x), ptr(backend, out), rows, cols]));
  wrapSplitV(tf, (be, x, sizes) => {
    const C = last(x);
    const R = rowsOf(x);
    const outs = sizes.map((n) => be.makeOutput([...x.shape.slice(0, -1), n], 'float32'));
    let c0 = 0;
    sizes.forEach((n, i) => {
      split(k, 'copy_columns', R, grainRows(n), [ptr(be, x), ptr(be, outs[i]!), C, c0, n]);
      c0 += n;
    });
    return outs;
  });
}

/** Undoes `registerSimdKernels`: the composites and the shipped kernels run again. */
export function clearSimdKernels(tf: Tf): void {
  for (const name of SIMD_KERNEL_NAMES) if (tf.getKernel(name, 'wasm') !== undefined) tf.unregisterKernel(name, 'wasm');
  setSimdColumnSums(null);
  splitLastAxis = null;
}

const WRAPPED_SPLIT = Symbol.for('mlmkit.wasmSplitLastAxis');
type SplitLastAxis = (backend: BackendWasm, x: TensorInfo, sizes: number[]) => TensorInfo[];
let splitLastAxis: SplitLastAxis | null = null;

/**
 * Routes float32 splits along the last axis (the query, key and value columns of the fused
 * projection, and their weights' gradients) to `splitLastAxis`; every other split to the shipped
 * SplitV (which copies each part through a general strided slice).
 */
function wrapSplitV(tf: Tf, f: SplitLastAxis): void {
  splitLastAxis = f;
  wrapWasmKernel(tf, 'SplitV', WRAPPED_SPLIT, (args, shipped) => {
    const x = args.inputs.x!;
    const rank = x.shape.length;
    const axis = tf.util.parseAxisParam(args.attrs?.axis as number, x.shape)[0];
    if (splitLastAxis === null || x.dtype !== 'float32' || rank < 1 || axis !== rank - 1) return shipped(args);
    const sizes = tf.backend_util.prepareSplitSize(x as never, args.attrs?.numOrSizeSplits as number | number[], axis);
    return splitLastAxis(args.backend as BackendWasm, x, sizes);
  });
}

/** Entries worth one thread's share of an elementwise kernel. */
const GRAIN_ENTRIES = 1 << 14;
/** Rows of `cols` entries worth one thread's share. */
function grainRows(cols: number): number {
  return Math.max(1, Math.floor(GRAIN_ENTRIES / Math.max(1, cols)));
}
