// The f16-operand, f32-accumulate matrix product on WebGPU (the contract: training/kernels/matmul.ts),
// with the tiling of training/backend/webgpu/matmul-tiling.ts (and its epilogue: an optional bias
// and addend) and two inner products:
// - 'subgroup-matrix': WGSL subgroup matrices (Dawn's `chromium_experimental_subgroup_matrix`,
//   tensor cores through Vulkan cooperative matrices). The workgroup is 4 subgroups in a 2 x 2 grid;
//   each holds (BM/2)/M x (BN/2)/N result tiles of the adapter's f16 -> f32 configuration M x N x K
//   (4 x 2 of 16 x 16 on an H200) and multiplies them from the staged blocks.
// - 'scalar': each of 128 threads holds an 8 x 8 block of C, reads f16 from the staged blocks and
//   accumulates with f32 FMA. Runs wherever `shader-f16` exists (Mesa llvmpipe in CI).
//
// The WGSL needs `enable f16;` (and `enable subgroups;`, `enable chromium_experimental_subgroup_matrix;`),
// which TF.js's program wrapper cannot carry: the pipelines are built here, on the backend's device,
// and their dispatches encoded into the backend's command stream through the raw seam
// (training/backend/webgpu/raw.ts), so they order with TF.js's own kernels. The kernel `MlmkitMatMulF16` is registered for webgpu when the
// device has shader-f16.
//
// Subgroup-matrix builtins: this Dawn accepts both `subgroupMatrixLoad<T, row_major>(p, offset,
// stride)` / `subgroupMatrixStore<row_major>(p, offset, value, stride)` and the older, deprecated
// form with a `col_major` bool argument; `prepareMatMulF16` compiles the current form and falls back
// to the older one if a build rejects it.
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs';
import type { Tf } from '../common.ts';
import { MATMUL_F16_KERNEL, type MatMulF16Attrs, type MatMulF16Variant } from '../../kernels/matmul.ts';
import { f16MatrixConfigs, webGpuFeatures, type SubgroupMatrixConfig, type WebGpuFeatures } from '../webgpu.ts';
import { rawWebGpu } from './raw.ts';
import { EPILOGUE_ADDEND, EPILOGUE_BIAS, matmulShader, TILING, uniformData, workgroupCount, type InnerProduct, type MatmulDims, type Tiling } from './matmul-tiling.ts';

// -------------------------------------------------------------------------------------------------
// The two inner products

/** Scalar: thread lid holds rows tr*8.. and columns tc*8.. of the block, 8 x 8 f32 accumulators. */
export function scalarInner(t: Tiling = TILING): InnerProduct {
  const cols = t.BN / 8;
  const threads = (t.BM / 8) * cols;
  const R = [0, 1, 2, 3, 4, 5, 6, 7];
  return {
    name: 'scalar',
    workgroupSize: threads,
    enables: [],
    directives: [],
    builtins: '',
    declarations: () => '',
    init: () => `  let tr = lid / ${cols}u;
  let tc = lid % ${cols}u;
  var acc : array<f32, 64>;`,
    step: () => `    for (var kk = 0u; kk < BK; kk++) {
${R.map((i) => `      let a${i} = f32(As[(tr * 8u + ${i}u) * BK + kk]);`).join('\n')}
${R.map((j) => `      let b${j} = f32(Bs[kk * BN + tc * 8u + ${j}u]);`).join('\n')}
${R.flatMap((i) => R.map((j) => `      acc[${i * 8 + j}] = fma(a${i}, b${j}, acc[${i * 8 + j}]);`)).join('\n')}
    }`,
    store: () => `  for (var i = 0u; i < 8u; i++) {
    let gm = m0 + tr * 8u + i;
    for (var j = 0u; j < 8u; j++) {
      let gn = n0 + tc * 8u + j;
      if (gm < dims.M && gn < dims.N) { c[cOff + gm * dims.N + gn] = acc[i * 8u + j]; }
    }
  }`,
  };
}

/**
 * Subgroup matrices of configuration `cfg` (f16 x f16 -> f32), for subgroups of `subgroupSize`
 * invocations. `legacy`: the deprecated load/store builtins (a bool for the layout).
 */
export function subgroupMatrixInner(cfg: SubgroupMatrixConfig, subgroupSize: number, legacy = false, t: Tiling = TILING): InnerProduct {
  const { M: TM, N: TN, K: TK } = cfg;
  const SUBM = t.BM / 2;
  const SUBN = t.BN / 2;
  if (SUBM % TM !== 0 || SUBN % TN !== 0 || t.BK % TK !== 0) throw new Error(`subgroup-matrix ${TM}x${TN}x${TK} does not tile ${t.BM}x${t.BN}x${t.BK}`);
  const RT = SUBM / TM;
  const CT = SUBN / TN;
  const left = `subgroup_matrix_left<f16, ${TK}, ${TM}>`;
  const right = `subgroup_matrix_right<f16, ${TN}, ${TK}>`;
  const result = `subgroup_matrix_result<f32, ${TN}, ${TM}>`;
  const load = (type: string, ptr: string, offset: string, stride: string) =>
    legacy ? `subgroupMatrixLoad<${type}>(${ptr}, ${offset}, false, ${stride})` : `subgroupMatrixLoad<${type}, row_major>(${ptr}, ${offset}, ${stride})`;
  const store = (ptr: string, offset: string, value: string, stride: string) =>
    legacy ? `subgroupMatrixStore(${ptr}, ${offset}, ${value}, false, ${stride});` : `subgroupMatrixStore<row_major>(${ptr}, ${offset}, ${value}, ${stride});`;
  const tiles: [number, number][] = [];
  for (let i = 0; i < RT; i++) for (let j = 0; j < CT; j++) tiles.push([i, j]);
  const ks = Array.from({ length: t.BK / TK }, (_, s) => s * TK);
  return {
    name: 'subgroup-matrix',
    workgroupSize: 4 * subgroupSize,
    enables: ['subgroups', 'chromium_experimental_subgroup_matrix'],
    // Offsets depend on the subgroup's index, which the analysis (workgroup uniformity) cannot see
    // as uniform within a subgroup.
    directives: ['diagnostic(off, chromium_experimental.subgroup_matrix_uniformity);'],
    builtins: '@builtin(subgroup_invocation_id) lane : u32, @builtin(subgroup_size) sgSize : u32,',
    declarations: () => `var<workgroup> Cs : array<f32, ${4 * TM * TN}>;`,
    init: () => `  let sg = lid / sgSize;
  let sr = sg / 2u;
  let sc = sg % 2u;
${tiles.map(([i, j]) => `  var acc${i}_${j} = ${result}();`).join('\n')}`,
    step: () => ks.map((kk) => `${Array.from({ length: RT }, (_, i) =>
      `    let l${i}_${kk} = ${load(left, '&As', `(sr * ${SUBM}u + ${i * TM}u) * BK + ${kk}u`, 'BK')};`).join('\n')}
${Array.from({ length: CT }, (_, j) =>
      `    let r${j}_${kk} = ${load(right, '&Bs', `${kk}u * BN + sc * ${SUBN}u + ${j * TN}u`, 'BN')};`).join('\n')}
${tiles.map(([i, j]) => `    acc${i}_${j} = subgroupMatrixMultiplyAccumulate(l${i}_${kk}, r${j}_${kk}, acc${i}_${j});`).join('\n')}`).join('\n'),
    // Whole blocks store straight to c; blocks on the edge go through workgroup memory, each
    // subgroup copying its tile's entries that lie inside C.
    store: () => `  if (m0 + BM <= dims.M && n0 + BN <= dims.N) {
${tiles.map(([i, j]) => `    ${store('&c', `cOff + (m0 + sr * ${SUBM}u + ${i * TM}u) * dims.N + n0 + sc * ${SUBN}u + ${j * TN}u`, `acc${i}_${j}`, 'dims.N')}`).join('\n')}
  } else {
${tiles.map(([i, j]) => `    ${store('&Cs', `sg * ${TM * TN}u`, `acc${i}_${j}`, `${TN}u`)}
    workgroupBarrier();
    for (var e = lane; e < ${TM * TN}u; e += sgSize) {
      let gm = m0 + sr * ${SUBM}u + ${i * TM}u + e / ${TN}u;
      let gn = n0 + sc * ${SUBN}u + ${j * TN}u + e % ${TN}u;
      if (gm < dims.M && gn < dims.N) { c[cOff + gm * dims.N + gn] = Cs[sg * ${TM * TN}u + e]; }
    }
    workgroupBarrier();`).join('\n')}
  }`,
  };
}

// -------------------------------------------------------------------------------------------------
// Pipelines

/** The subgroup-matrix configuration mlmkit uses: the largest f16 -> f32 one that tiles TILING. */
export function chooseMatrixConfig(f: WebGpuFeatures): SubgroupMatrixConfig | null {
  return f16MatrixConfigs(f).find((c) => (TILING.BM / 2) % c.M === 0 && (TILING.BN / 2) % c.N === 0 && TILING.BK % c.K === 0) ?? null;
}

/** Which variants this device can run. */
export function availableVariants(f: WebGpuFeatures): MatMulF16Variant[] {
  if (!f.shaderF16) return [];
  const sm = f.subgroups !== null && chooseMatrixConfig(f) !== null && f.subgroups.minSize === f.subgroups.maxSize;
  return sm ? ['subgroup-matrix', 'scalar'] : ['scalar'];
}

/** The pipelines of one device, built on first use and cached. */
export class MatMulF16Pipelines {
  readonly device: GPUDevice;
  readonly features: WebGpuFeatures;
  private readonly cache = new Map<string, GPUComputePipeline>();
  /** Use the deprecated subgroup-matrix builtins (set by `prepare` when the current ones fail). */
  private legacy = false;

  constructor(device: GPUDevice) {
    this.device = device;
    this.features = webGpuFeatures(device);
  }

  inner(variant: MatMulF16Variant): InnerProduct {
    if (variant === 'scalar') return scalarInner();
    const cfg = chooseMatrixConfig(this.features);
    if (cfg === null || this.features.subgroups === null) throw new Error('this WebGPU device has no f16 -> f32 subgroup-matrix configuration');
    return subgroupMatrixInner(cfg, this.features.subgroups.maxSize, this.legacy);
  }

  shader(variant: MatMulF16Variant, transposeA: boolean, transposeB: boolean): string {
    return matmulShader({ transposeA, transposeB, inner: this.inner(variant) });
  }

  /** The pipeline for a variant and transposes (created synchronously on first use). */
  get(variant: MatMulF16Variant, transposeA: boolean, transposeB: boolean): GPUComputePipeline {
    const key = `${variant}/${transposeA}/${transposeB}`;
    let p = this.cache.get(key);
    if (p === undefined) {
      const module = this.device.createShaderModule({ code: this.shader(variant, transposeA, transposeB), label: `mlmkit matmul-f16 ${key}` });
      p = this.device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' }, label: `mlmkit matmul-f16 ${key}` });
      this.cache.set(key, p);
    }
    return p;
  }

  /**
   * Compiles the four transpose combinations of `variant`, checking for errors; for subgroup
   * matrices, retries with the deprecated builtins when the current ones are rejected. Throws with
   * the compiler's first message when neither compiles.
   */
  async prepare(variant: MatMulF16Variant): Promise<void> {
    const attempt = async (): Promise<string | null> => {
      for (const [ta, tb] of [[false, false], [false, true], [true, false], [true, true]] as const) {
        const key = `${variant}/${ta}/${tb}`;
        this.device.pushErrorScope('validation');
        const module = this.device.createShaderModule({ code: this.shader(variant, ta, tb) });
        const info = await module.getCompilationInfo();
        const error = info.messages.find((m) => m.type === 'error');
        const pipeline = this.device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
        const scoped = await this.device.popErrorScope();
        if (error !== undefined || scoped !== null) return `${key}: ${(error?.message ?? scoped!.message).split('\n')[0]}`;
        this.cache.set(key, pipeline);
      }
      return null;
    };
    let failure = await attempt();
    if (failure !== null && variant === 'subgroup-matrix' && !this.legacy) {
      this.legacy = true;
      this.cache.clear();
      const second = await attempt();
      if (second === null) return;
      failure = `${failure}; with the deprecated builtins: ${second}`;
    }
    if (failure !== null) throw new Error(`the ${variant} f16 matmul does not compile on this device (${failure})`);
  }

  /** Whether `prepare` fell back to the deprecated subgroup-matrix builtins. */
  get usesLegacyBuiltins(): boolean {
    return this.legacy;
  }
}

// -------------------------------------------------------------------------------------------------
// The TF.js kernel

/** Shapes of a product as the contract defines them; throws on a mismatch. */
export function productDims(aShape: number[], bShape: number[], transposeA: boolean, transposeB: boolean): MatmulDims & { outShape: number[] } {
  if (aShape.length !== bShape.length || (aShape.length !== 2 && aShape.length !== 3)) {
    throw new Error(`${MATMUL_F16_KERNEL}: operands of rank 2 or 3 (both the same), got [${aShape}] and [${bShape}]`);
  }
  const batched = aShape.length === 3;
  const batch = batched ? aShape[0] : 1;
  if (batched && bShape[0] !== batch) throw new Error(`${MATMUL_F16_KERNEL}: batch sizes ${aShape[0]} and ${bShape[0]} differ`);
  const [ar, ac] = aShape.slice(-2);
  const [br, bc] = bShape.slice(-2);
  const [M, K] = transposeA ? [ac, ar] : [ar, ac];
  const [K2, N] = transposeB ? [bc, br] : [br, bc];
  if (K !== K2) throw new Error(`${MATMUL_F16_KERNEL}: inner sizes ${K} and ${K2} differ ([${aShape}]${transposeA ? '^T' : ''} x [${bShape}]${transposeB ? '^T' : ''})`);
  return { M, N, K, batch, transposeA, transposeB, outShape: batched ? [batch, M, N] : [M, N] };
}

/** The bias must be [N] and the addend the result's shape; throws otherwise. */
function checkExtras(d: MatmulDims & { outShape: number[] }, bias?: TensorInfo, addend?: TensorInfo): void {
  if (bias !== undefined && (bias.shape.length !== 1 || bias.shape[0] !== d.N)) {
    throw new Error(`${MATMUL_F16_KERNEL}: the bias must be [${d.N}], got [${bias.shape}]`);
  }
  if (addend !== undefined && (addend.shape.length !== d.outShape.length || addend.shape.some((v, i) => v !== d.outShape[i]))) {
    throw new Error(`${MATMUL_F16_KERNEL}: the addend must be the result's shape [${d.outShape}], got [${addend.shape}]`);
  }
  for (const [name, t] of [['bias', bias], ['addend', addend]] as const) {
    if (t !== undefined && t.dtype !== 'float32') throw new Error(`${MATMUL_F16_KERNEL}: the ${name} must be float32, got ${t.dtype}`);
  }
}

const pipelinesByDevice = new WeakMap<GPUDevice, MatMulF16Pipelines>();

/** The pipelines of `device` (created on first call). */
export function matMulF16Pipelines(device: GPUDevice): MatMulF16Pipelines {
  let p = pipelinesByDevice.get(device);
  if (p === undefined) {
    p = new MatMulF16Pipelines(device);
    pipelinesByDevice.set(device, p);
  }
  return p;
}

/**
 * Registers MlmkitMatMulF16 for webgpu (once) when `device` (the backend's) has shader-f16; the
 * kernel runs on whichever device the backend that calls it holds.
 */
export function registerWebGpuMatMulF16(tf: Tf, device: GPUDevice): boolean {
  if (!matMulF16Pipelines(device).features.shaderF16) return false;
  if (tf.getKernel(MATMUL_F16_KERNEL, 'webgpu') !== undefined) return true;
  const kernelFunc = (args: { inputs: unknown; backend: unknown; attrs?: unknown }): TensorInfo => {
    const { a, b, bias, addend } = args.inputs as { a: TensorInfo; b: TensorInfo; bias?: TensorInfo; addend?: TensorInfo };
    const { transposeA, transposeB, variant } = args.attrs as unknown as MatMulF16Attrs;
    const d = productDims(a.shape, b.shape, transposeA, transposeB);
    checkExtras(d, bias, addend);
    const be = args.backend as { device: GPUDevice; makeTensorInfo(shape: number[], dtype: 'float32'): TensorInfo };
    const out = be.makeTensorInfo(d.outShape, 'float32');
    if (d.M * d.N * d.batch === 0) return out;
    const raw = rawWebGpu(tf);
    const pipeline = matMulF16Pipelines(be.device).get(variant, transposeA, transposeB);
    const batched = a.shape.length === 3;
    const strides = batched ? { a: d.M * d.K, b: d.K * d.N, c: d.M * d.N } : { a: 0, b: 0, c: 0 };
    const epilogue = (bias !== undefined ? EPILOGUE_BIAS : 0) | (addend !== undefined ? EPILOGUE_ADDEND : 0);
    const uniform = raw.uniform(uniformData(d, strides, epilogue).buffer as ArrayBuffer);
    // K = 0: the product is zeros (the shader's K loop does not run), plus the bias and addend as
    // ever; a and b are empty, and WebGPU refuses a binding of zero bytes, so a small buffer of
    // the pool stands in for both (never read).
    const empty = d.K === 0 ? raw.createStorage(4) : null;
    // Absent extras are bound as a (read-only there too, and never read: the flags are off).
    const [aBuffer, bBuffer] = empty !== null ? [empty, empty] : [raw.bufferOf(a), raw.bufferOf(b)];
    const extras = [bias === undefined ? aBuffer : raw.bufferOf(bias), addend === undefined ? aBuffer : raw.bufferOf(addend)];
    const group = raw.bindGroup(`mlmkit-matmul-f16/${variant}/${transposeA}/${transposeB}`, pipeline, [aBuffer, bBuffer, raw.bufferOf(out), uniform, ...extras]);
    raw.dispatch(pipeline, group, workgroupCount(d));
    if (empty !== null) raw.releaseStorage(empty);
    return out;
  };
  tf.registerKernel({ kernelName: MATMUL_F16_KERNEL, backendName: 'webgpu', kernelFunc: kernelFunc as unknown as KernelConfig['kernelFunc'] });
  return true;
}
