// The contract of mlmkit's mixed-precision matrix product, and its reference.
//
// MlmkitMatMulF16(a, b[, bias][, addend]; transposeA, transposeB, variant)
//   = op(a) op(b) (+ bias) (+ addend), op = optional transpose of the last two axes, with both
// operands rounded to f16 and products summed in f32. a and b are float32 tensors of rank 2
// ([M, K] / [K, N] before op) or rank 3 with the same batch size; the result is float32 [M, N] or
// [batch, M, N]; an inner size K of 0 gives zeros, as tf.matMul does. Master copies stay f32:
// the rounding happens where the kernel stages its operands
// (training/backend/webgpu/matmul-tiling.ts). `variant` picks the inner product: 'subgroup-matrix'
// (tensor cores) or 'scalar' (any adapter with shader-f16).
// The optional inputs are added in f32 after the product, in the kernel's own pass over its block
// of the result (no dispatch of their own): `bias` [N] to every row (a Linear's bias), `addend`
// with the result's shape entry by entry (a second gradient of the same input); with both, bias
// first. They are not rounded to f16.
//
// The reference is tf.matMul in float32 (then the adds); `f16ErrorBound` is how far an f16-operand
// product may lie from it, entry by entry, which is what tests and scripts/check-fp16.ts compare
// against (the adds, exact f32 operations on both sides, add one f32 rounding of the result).
import type { Tf } from '../../common/tf.ts';
import type { NamedAttrMap, Tensor, Tensor2D } from '@tensorflow/tfjs';

/** The kernel's name (registered for webgpu by training/backend/webgpu/matmul-f16.ts). */
export const MATMUL_F16_KERNEL = 'MlmkitMatMulF16';

export type MatMulF16Variant = 'subgroup-matrix' | 'scalar';

export interface MatMulF16Attrs {
  transposeA: boolean;
  transposeB: boolean;
  variant: MatMulF16Variant;
}

/** What the kernel adds to the product (see the contract above). */
export interface MatMulExtras {
  bias?: Tensor;
  addend?: Tensor;
}

/** The reference: the same product in float32, then the bias and the addend. */
export function matMulReference(tf: Tf, a: Tensor, b: Tensor, transposeA: boolean, transposeB: boolean, extras: MatMulExtras = {}): Tensor {
  return tf.tidy(() => {
    let c: Tensor = tf.matMul(a as Tensor2D, b as Tensor2D, transposeA, transposeB);
    if (extras.bias !== undefined) c = tf.add(c, extras.bias);
    if (extras.addend !== undefined) c = tf.add(c, extras.addend);
    return c;
  });
}

/** MlmkitMatMulF16 on the active backend (which must have it registered). */
export function matMulF16(tf: Tf, a: Tensor, b: Tensor, attrs: MatMulF16Attrs, extras: MatMulExtras = {}): Tensor {
  const inputs: Record<string, Tensor> = { a, b };
  if (extras.bias !== undefined) inputs.bias = extras.bias;
  if (extras.addend !== undefined) inputs.addend = extras.addend;
  return tf.engine().runKernel(MATMUL_F16_KERNEL, inputs, attrs as unknown as NamedAttrMap) as Tensor;
}

/** Unit roundoff of f16 (2^-11) and f32 (2^-24). */
export const F16_UNIT = 2 ** -11;
export const F32_UNIT = 2 ** -24;

/**
 * An entrywise bound on |f16-operand product - f32 product|, for the product's K and the entry's
 * sum over k of |a_ik| |b_kj| (`absProduct`: |op(a)| |op(b)|), and the largest |a| and |b|:
 *   rounding each operand to f16 moves a product by at most (2u + u^2)|a||b| (u = 2^-11), or by an
 *   absolute 2^-25 max|b| (resp. max|a|) per operand below f16's normal range (subnormal spacing
 *   2^-24); both sums are taken in f32 in some order, each within gamma_K = K u32 / (1 - K u32) of
 *   the exact sum of its terms (u32 = 2^-24), so the two sums differ by at most 2 gamma_K of it more.
 * Higham, Accuracy and Stability of Numerical Algorithms (2002), section 3.1, for gamma_K.
 */
export function f16ErrorBound(K: number, absProduct: number, maxA: number, maxB: number): number {
  const u = F16_UNIT;
  const gamma = (K * F32_UNIT) / (1 - K * F32_UNIT);
  const rounding = (2 * u + u * u) * absProduct + K * 2 ** -25 * (maxA + maxB) * 1.001;
  return rounding + 2 * gamma * (absProduct + rounding);
}
