// `--precision fp32|fp16|auto`: which matrix products a run uses, decided once where the backend is
// known (mlm train, mlm bench).
//
// - fp32: TF.js's float32 products (the default, as Hugging Face's Trainer without --fp16).
// - fp16: the model's matrix products take f16 operands with f32 accumulation
//   (training/kernels/matmul.ts) on the webgpu backend, through subgroup matrices (tensor cores)
//   where the adapter has an f16 -> f32 configuration, else through the scalar kernel when the
//   device has shader-f16 (correct but slow: a note says so). Master weights, optimizer state,
//   LayerNorm, softmax and the loss stay float32; the trainer scales the loss (training/loss-scale.ts).
//   Other backends have no f16 kernels: fp16 is refused there.
// - auto: fp16 where subgroup matrices with f16 -> f32 exist, else fp32.
import { InputError } from '../common/errors.ts';
import type { Tf } from './backend/common.ts';
import { activeWebGpuFeatures, describeFeatures } from './backend/webgpu.ts';
import { availableVariants, matMulF16Pipelines } from './backend/webgpu/matmul-f16.ts';
import type { MatMulF16Variant } from './kernels/matmul.ts';
import type { ModelCapabilities } from './models/ops.ts';

export const PRECISIONS = ['fp32', 'fp16', 'auto'] as const;
export type PrecisionName = (typeof PRECISIONS)[number];

/** What a run uses: float32 products, or f16 products through one kernel variant. */
export type Precision = { name: 'fp32' } | { name: 'fp16'; variant: MatMulF16Variant };

export function checkPrecisionName(value: unknown): PrecisionName {
  if (typeof value === 'string' && (PRECISIONS as readonly string[]).includes(value)) return value as PrecisionName;
  throw new InputError(`--precision must be one of ${PRECISIONS.join(', ')}, got ${JSON.stringify(value)}`);
}

/** One line for logs and reports: 'fp32', 'fp16 (subgroup-matrix)'. */
export function describePrecision(p: Precision): string {
  return p.name === 'fp32' ? 'fp32' : `fp16 (${p.variant})`;
}

/**
 * Resolves `requested` on the active backend `backendName` (mlmkit's name: 'webgpu', 'wasm'...).
 * For fp16 the kernel's pipelines are compiled here, so a kernel the device rejects fails now, with
 * the compiler's message, not in the middle of a step.
 */
export async function resolvePrecision(tf: Tf, backendName: string, requested: PrecisionName, log: (line: string) => void): Promise<Precision> {
  if (requested === 'fp32') return { name: 'fp32' };
  const features = backendName === 'webgpu' ? activeWebGpuFeatures(tf) : null;
  if (features === null) {
    if (requested === 'auto') return { name: 'fp32' };
    throw new InputError(`--precision fp16 needs the webgpu backend (its f16 kernels); this run uses ${backendName}: use --backend webgpu, or --precision fp32`);
  }
  const variants = availableVariants(features);
  if (requested === 'auto' && !variants.includes('subgroup-matrix')) {
    log(`precision: fp32 (auto: this WebGPU device has no f16 subgroup matrices; ${describeFeatures(features)})`);
    return { name: 'fp32' };
  }
  if (variants.length === 0) {
    throw new InputError(`--precision fp16 needs a WebGPU device with shader-f16, and this one has none (${describeFeatures(features)}); use --precision fp32`);
  }
  const device = (tf.backend() as unknown as { device: GPUDevice }).device;
  const pipelines = matMulF16Pipelines(device);
  let variant = variants[0];
  try {
    await pipelines.prepare(variant);
  } catch (err) {
    // A subgroup-matrix kernel this driver rejects: auto keeps fp32; fp16 says so and takes the
    // scalar kernel (the JSON of mlm bench names the variant), or fails if that is rejected too.
    const why = (err as Error).message;
    if (variant !== 'subgroup-matrix' || requested === 'auto') {
      if (requested === 'auto') {
        log(`precision: fp32 (auto: ${why})`);
        return { name: 'fp32' };
      }
      throw new Error(`--precision ${requested}: ${why}; use --precision fp32`);
    }
    log(`warning: ${why}; --precision fp16 falls back to the scalar f16 kernel`);
    variant = 'scalar';
    try {
      await pipelines.prepare(variant);
    } catch (err2) {
      throw new Error(`--precision ${requested}: ${(err2 as Error).message}; use --precision fp32`);
    }
  }
  if (variant === 'scalar') {
    log('note: --precision fp16 without f16 subgroup matrices runs the scalar f16 kernel: correct, but slower than fp32 (for testing)');
  }
  log(`precision: fp16 (${variant}${variant === 'subgroup-matrix' && pipelines.usesLegacyBuiltins ? ', deprecated subgroup-matrix builtins' : ''}; f32 master weights, dynamic loss scaling)`);
  return { name: 'fp16', variant };
}

/** `capabilities` with the model's matrix products in `precision` (fp16: through the f16 kernel). */
export function withPrecision(capabilities: ModelCapabilities, precision: Precision): ModelCapabilities {
  const { matmulF16: _, ...rest } = capabilities;
  return Object.freeze(precision.name === 'fp16' ? { ...rest, matmulF16: precision.variant } : rest);
}
