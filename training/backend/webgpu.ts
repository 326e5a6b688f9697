// The webgpu backend: @tensorflow/tfjs-backend-webgpu on Dawn for Node.js (the `webgpu` package).
//
// Setup, as the `webgpu` package documents it: copy its `globals` (GPUBufferUsage, GPUMapMode...)
// onto globalThis, create a GPU object with `create([])`, and ask it for a high-performance adapter.
// The device is requested with the adapter's own maxima for the buffer and compute limits that
// TF.js uses (the defaults cap a storage binding at 128 MiB), and the TF.js backend is built on that
// device: `new WebGPUBackend(device, adapterInfo)`, registered under 'webgpu' (replacing the
// package's default factory, which would request a second device with its own limits).
// `navigator.gpu` is set only because WebGPUBackend's constructor checks that it exists.
//
// Features. Dawn is created with the toggles `allow_unsafe_apis` (experimental features such as
// subgroup matrices), `use_vulkan_memory_model` (which Vulkan cooperative matrices require) and
// `vulkan_enable_f16_on_nvidia` (without it Dawn offers no `shader-f16` on NVIDIA's Vulkan driver),
// and the device asks for `shader-f16`, `subgroups` and `chromium-experimental-subgroup-matrix`
// when the adapter offers them. `webGpuFeatures` says what was granted; the backend line names it.
// mlmkit's own f16 kernels (training/backend/webgpu/matmul-f16.ts) use them; TF.js's do not.
//
// Software adapters (Mesa llvmpipe/lavapipe, SwiftShader, Windows WARP) work, but are slower than
// wasm: `auto` skips them; `--backend webgpu` accepts them with a note (correctness testing).
//
// Limitation in Node.js: the webgpu backend reads tensors synchronously through an OffscreenCanvas,
// which Node.js lacks, so `dataSync()`/`arraySync()` of a GPU tensor throw there. Read with
// `await t.data()` / `await t.array()`.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { BackendUnavailable, assertSharedCore, firstLine, resolveInstalled, type LoadedBackend, type Tf } from './common.ts';
import { registerWebGpuDropoutMask } from './dropout-webgpu.ts';
import { registerWebGpuAttentionHeads } from './webgpu/attention-heads.ts';
import { registerWebGpuAttentionSoftmax } from './webgpu/attention-softmax.ts';
import { registerWebGpuBiasDropoutResidual } from './webgpu/bias-dropout-residual.ts';
import { registerWebGpuBiasGelu } from './webgpu/bias-gelu.ts';
import { registerWebGpuBiasGrad } from './webgpu/bias-grad.ts';
import { registerWebGpuLayerNorm } from './webgpu/layer-norm.ts';
import { registerWebGpuMatMulF16 } from './webgpu/matmul-f16.ts';
import { registerWebGpuMaskedCrossEntropy } from './webgpu/masked-cross-entropy.ts';
import { registerWebGpuScatterRows } from './webgpu/scatter-rows.ts';

/** What mlmkit reports about a WebGPU adapter. */
export interface WebGpuAdapterInfo {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** The adapter says it is a fallback adapter (`GPUAdapterInfo.isFallbackAdapter`). */
  isFallbackAdapter: boolean;
  /** A CPU implementation: fallback, architecture 'software', or a known software renderer. */
  software: boolean;
}

export interface WebGpuProbe {
  ok: boolean;
  adapterInfo: WebGpuAdapterInfo | null;
  /** Why not (when !ok), or what was found. */
  reason: string;
}

const SOFTWARE_NAMES = /\b(llvmpipe|lavapipe|swiftshader|softpipe|warp)\b/i;

const DRIVER_HINT =
  'install a GPU driver with Vulkan support, or for software Vulkan (testing only) Mesa 25: ' +
  'on Debian bookworm `apt-get install -t bookworm-backports mesa-vulkan-drivers`';

interface OpenedAdapter {
  /** The package's globals (GPUBufferUsage, GPUMapMode...), which TF.js's backend needs. */
  globals: object;
  gpu: GPU;
  adapter: GPUAdapter;
  info: WebGpuAdapterInfo;
}

function summarise(info: GPUAdapterInfo): WebGpuAdapterInfo {
  const fallback = (info as { isFallbackAdapter?: boolean }).isFallbackAdapter === true;
  const text = `${info.vendor} ${info.architecture} ${info.device} ${info.description}`;
  return {
    vendor: info.vendor,
    architecture: info.architecture,
    device: info.device,
    description: info.description,
    isFallbackAdapter: fallback,
    software: fallback || info.architecture === 'software' || SOFTWARE_NAMES.test(text),
  };
}

/** A one-line name for the adapter: its description, or what else it says. */
export function adapterLabel(info: WebGpuAdapterInfo): string {
  const label = info.description || [info.vendor, info.architecture, info.device].filter(Boolean).join(' ');
  return label || 'unnamed adapter';
}

/** The software renderer's short name ('llvmpipe'), for "llvmpipe is software". */
function softwareName(info: WebGpuAdapterInfo): string {
  const m = SOFTWARE_NAMES.exec(`${info.description} ${info.device}`);
  return m?.[1]?.toLowerCase() ?? adapterLabel(info);
}

/** Guesses why Dawn found no adapter, from what is installed (Dawn's own warnings go to stderr). */
function diagnoseNoAdapter(): string {
  if (process.platform !== 'linux') return 'no WebGPU adapter found';
  const libDirs = [
    ...(process.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean),
    '/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/lib/x86_64-linux-gnu',
    '/usr/lib64', '/usr/lib', '/usr/local/lib',
  ];
  if (!libDirs.some((d) => existsSync(path.join(d, 'libvulkan.so.1')))) {
    return 'no Vulkan driver (libvulkan.so.1 not found)';
  }
  const icdFromEnv = process.env.VK_DRIVER_FILES ?? process.env.VK_ICD_FILENAMES;
  const icds = icdFromEnv
    ? icdFromEnv.split(':').filter((f) => f !== '' && existsSync(f)).map((f) => path.basename(f))
    : ['/usr/share/vulkan/icd.d', '/etc/vulkan/icd.d', '/usr/local/share/vulkan/icd.d'].flatMap((d) => {
        try {
          return readdirSync(d).filter((f) => f.endsWith('.json'));
        } catch {
          return [];
        }
      });
  if (icds.length === 0) {
    return icdFromEnv
      ? 'no Vulkan driver (none of the files in VK_DRIVER_FILES/VK_ICD_FILENAMES exists)'
      : 'no Vulkan driver (no ICD file in /usr/share/vulkan/icd.d)';
  }
  const lavapipe = icds.some((f) => f.startsWith('lvp_'));
  return `Dawn accepted none of the Vulkan drivers (${icds.join(', ')})${lavapipe ? '; Mesa lavapipe before 25 is rejected' : ''}`;
}

async function openAdapter(): Promise<OpenedAdapter> {
  const main = resolveInstalled('webgpu');
  if (main === null) {
    throw new BackendUnavailable('the webgpu package is not installed', 'npm install webgpu');
  }
  let mod: typeof import('webgpu');
  try {
    mod = await import('webgpu');
  } catch (err) {
    throw new BackendUnavailable(
      `the webgpu package failed to load (${firstLine(err)})`,
      `it ships Dawn for linux-x64, darwin and win32-x64; reinstall it (npm install webgpu)`,
    );
  }
  // Dawn quantizes timestamp queries to 65.536 us unless told not to: per-pass GPU times
  // (training/kernel-watch.ts) need the real resolution.
  const gpu = mod.create([`enable-dawn-features=${DAWN_TOGGLES.join(',')}`, 'disable-dawn-features=timestamp_quantization']);
  let adapter: GPUAdapter | null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  } catch (err) {
    throw new BackendUnavailable(`requesting a WebGPU adapter failed (${firstLine(err)})`, DRIVER_HINT);
  }
  if (adapter === null) throw new BackendUnavailable(diagnoseNoAdapter(), DRIVER_HINT);
  return { globals: mod.globals, gpu, adapter, info: summarise(adapter.info) };
}

/**
 * Whether a WebGPU adapter is available here, which, and if not why. Starts no TF.js backend.
 * A software adapter counts as available (`adapterInfo.software` says so).
 */
export async function probeWebGpu(): Promise<WebGpuProbe> {
  try {
    const { info } = await openAdapter();
    return { ok: true, adapterInfo: info, reason: `${adapterLabel(info)}${info.software ? ' (software)' : ''}` };
  } catch (err) {
    const reason = err instanceof BackendUnavailable ? `${err.message}; ${err.hint}` : firstLine(err);
    return { ok: false, adapterInfo: null, reason };
  }
}

/** Dawn toggles mlmkit's device is created with (see the header). */
export const DAWN_TOGGLES = ['allow_unsafe_apis', 'use_vulkan_memory_model', 'vulkan_enable_f16_on_nvidia'] as const;

/** Optional features requested when the adapter offers them. */
const OPTIONAL_FEATURES = ['timestamp-query', 'shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix'] as const;

/** One subgroup-matrix configuration (GPUSubgroupMatrixConfig): left M x K, right K x N, result M x N. */
export interface SubgroupMatrixConfig {
  componentType: string;
  resultComponentType: string;
  M: number;
  N: number;
  K: number;
}

/** What mlmkit's WebGPU device was granted. */
export interface WebGpuFeatures {
  /** `shader-f16`: f16 in WGSL. */
  shaderF16: boolean;
  /** `subgroups`: the subgroup size range, or null without the feature. */
  subgroups: { minSize: number; maxSize: number } | null;
  /** `chromium-experimental-subgroup-matrix`: the adapter's configurations (empty without it). */
  subgroupMatrix: SubgroupMatrixConfig[];
  timestampQuery: boolean;
}

/** The features of `device` (and its adapter's subgroup sizes and subgroup-matrix configurations). */
export function webGpuFeatures(device: GPUDevice): WebGpuFeatures {
  const has = (name: string) => device.features.has(name);
  const info = (device as unknown as { adapterInfo?: Record<string, unknown> }).adapterInfo ?? {};
  const configs = has('chromium-experimental-subgroup-matrix') && Array.isArray(info.subgroupMatrixConfigs)
    ? (info.subgroupMatrixConfigs as SubgroupMatrixConfig[]).map((c) => ({
        componentType: String(c.componentType), resultComponentType: String(c.resultComponentType), M: c.M, N: c.N, K: c.K,
      }))
    : [];
  return {
    shaderF16: has('shader-f16'),
    subgroups: has('subgroups') ? { minSize: Number(info.subgroupMinSize ?? 0), maxSize: Number(info.subgroupMaxSize ?? 0) } : null,
    subgroupMatrix: configs,
    timestampQuery: has('timestamp-query'),
  };
}

/** The f16 x f16 -> f32 subgroup-matrix configurations, largest first. */
export function f16MatrixConfigs(f: WebGpuFeatures): SubgroupMatrixConfig[] {
  return f.subgroupMatrix
    .filter((c) => c.componentType === 'f16' && c.resultComponentType === 'f32')
    .sort((a, b) => b.M * b.N * b.K - a.M * a.N * a.K);
}

/** One line: what the device was granted, e.g. "f16, subgroups 32, subgroup-matrix f16->f32 16x16x16". */
export function describeFeatures(f: WebGpuFeatures): string {
  const parts: string[] = [f.shaderF16 ? 'f16' : 'no f16'];
  if (f.subgroups !== null) {
    const { minSize, maxSize } = f.subgroups;
    parts.push(`subgroups ${minSize === maxSize ? maxSize : `${minSize}-${maxSize}`}`);
  }
  const f16 = f16MatrixConfigs(f);
  parts.push(f16.length > 0 ? `subgroup-matrix f16->f32 ${f16.map((c) => `${c.M}x${c.N}x${c.K}`).join(', ')}` : 'no f16 subgroup-matrix');
  return parts.join(', ');
}

/** Compute limits TF.js relies on; each is requested at the adapter's maximum. */
const LIMITS = [
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxStorageBuffersPerShaderStage',
  'maxComputeWorkgroupStorageSize',
  'maxComputeWorkgroupsPerDimension',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ',
] as const;

/** Why `auto` does not take a software adapter. */
function softwareRefusal(info: WebGpuAdapterInfo): BackendUnavailable {
  return new BackendUnavailable(`no hardware adapter (${softwareName(info)} is software)`, 'use a machine with a GPU and its Vulkan/Metal/D3D12 driver');
}

/**
 * Asks Dawn for an adapter in a child process (its stderr captured, not shown): the reason to
 * refuse when there is none or it is software; null when it is hardware, or when the child could
 * not answer (then `openAdapter` asks in this process and reports what it finds).
 */
function screenAdapter(): BackendUnavailable | null {
  const main = resolveInstalled('webgpu');
  if (main === null) return null;
  const script =
    `const m = await import(${JSON.stringify(pathToFileURL(main).href)});` +
    `const a = await m.create([]).requestAdapter({ powerPreference: 'high-performance' });` +
    `const i = a?.info;` +
    `process.stdout.write(JSON.stringify(a === null ? null : { vendor: i.vendor, architecture: i.architecture, device: i.device, description: i.description, isFallbackAdapter: i.isFallbackAdapter === true }));` +
    `process.exit(0);`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000, env: process.env });
  if (r.status !== 0 || r.error !== undefined) return null;
  let raw: GPUAdapterInfo | null;
  try {
    raw = JSON.parse(r.stdout) as GPUAdapterInfo | null;
  } catch {
    return null;
  }
  if (raw === null) return new BackendUnavailable(diagnoseNoAdapter(), DRIVER_HINT);
  const info = summarise(raw);
  return info.software ? softwareRefusal(info) : null;
}

/**
 * Starts the webgpu backend on the best adapter. With `allowSoftware` false (auto), a software
 * adapter is refused. Replaces an earlier webgpu backend (its tensors become invalid).
 */
export async function loadWebGpu(tf: Tf, opts: { allowSoftware: boolean }): Promise<LoadedBackend> {
  if (!opts.allowSoftware) {
    // Asking Dawn for an adapter prints its own warnings on stderr (Mesa's drivers print two on
    // every run): `auto` first asks in a child process and keeps them out of the user's output
    // unless a hardware adapter is there to take.
    const refusal = screenAdapter();
    if (refusal !== null) throw refusal;
  }
  const { globals, gpu, adapter, info } = await openAdapter();
  if (info.software && !opts.allowSoftware) throw softwareRefusal(info);
  const pkg = '@tensorflow/tfjs-backend-webgpu';
  const main = resolveInstalled(pkg);
  if (main === null) throw new BackendUnavailable(`${pkg} not installed`, `npm install ${pkg}`);
  assertSharedCore(pkg, main);

  const requiredLimits: Record<string, number> = {};
  for (const name of LIMITS) {
    const value = (adapter.limits as unknown as Record<string, number | undefined>)[name];
    if (typeof value === 'number') requiredLimits[name] = value;
  }
  const requiredFeatures = OPTIONAL_FEATURES.filter((f) => adapter.features.has(f)) as GPUFeatureName[];
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ requiredLimits, requiredFeatures });
  } catch (err) {
    throw new BackendUnavailable(`requesting a WebGPU device failed (${firstLine(err)})`, DRIVER_HINT);
  }

  // Replace an earlier webgpu backend, then build TF.js's backend on this device. Its constructor
  // refuses to run unless navigator.gpu exists; it stays set while the backend lives.
  releaseWebGpu(tf);
  Object.assign(globalThis, globals);
  const g = globalThis as unknown as { navigator?: { gpu?: unknown } };
  if (g.navigator === undefined) {
    Object.defineProperty(globalThis, 'navigator', { value: {}, configurable: true, writable: true });
  }
  if (g.navigator!.gpu === undefined) {
    Object.defineProperty(g.navigator, 'gpu', { value: gpu, configurable: true, writable: true });
  }
  const { WebGPUBackend } = await import('@tensorflow/tfjs-backend-webgpu');
  let backend: InstanceType<typeof WebGPUBackend>;
  try {
    backend = new WebGPUBackend(device, adapter.info);
  } catch (err) {
    device.destroy();
    throw new BackendUnavailable(`tfjs-backend-webgpu refused the device (${firstLine(err)})`, DRIVER_HINT);
  }
  // Importing the package may have registered its own factory (when navigator.gpu already existed).
  if (tf.findBackendFactory('webgpu') !== null) tf.removeBackend('webgpu');
  tf.registerBackend('webgpu', () => backend, 3);
  registerWebGpuDropoutMask(tf);
  registerWebGpuLayerNorm(tf);
  registerWebGpuBiasGelu(tf);
  registerWebGpuBiasGrad(tf);
  registerWebGpuMatMulF16(tf, device);
  registerWebGpuAttentionSoftmax(tf);
  registerWebGpuMaskedCrossEntropy(tf);
  registerWebGpuBiasDropoutResidual(tf);
  registerWebGpuAttentionHeads(tf);
  registerWebGpuScatterRows(tf);
  if (!(await tf.setBackend('webgpu'))) {
    releaseWebGpu(tf);
    throw new BackendUnavailable('the webgpu backend failed to initialise (TF.js printed why above)', DRIVER_HINT);
  }
  const granted = `granted ${describeFeatures(webGpuFeatures(device))}`;
  return {
    tfBackend: tf.getBackend(),
    device: adapterLabel(info),
    note: info.software ? `${softwareName(info)} is a software adapter: fine for tests, slower than wasm; ${granted}` : granted,
  };
}

/**
 * Removes the webgpu backend from TF.js and destroys its device, so that a process that is done
 * with the GPU holds nothing of Dawn's. Tensors still on that backend become invalid.
 */
export function releaseWebGpu(tf: Tf): void {
  const current = tf.engine().registry['webgpu'] as { device?: GPUDevice } | undefined;
  if (tf.findBackendFactory('webgpu') !== null) tf.removeBackend('webgpu');
  current?.device?.destroy();
  const g = globalThis as unknown as { navigator?: { gpu?: unknown } };
  if (g.navigator?.gpu !== undefined) {
    try {
      delete g.navigator.gpu;
    } catch {
      // A read-only navigator.gpu belongs to someone else; leave it.
    }
  }
}

/** The features of the webgpu backend's device, or null when webgpu is not the active backend. */
export function activeWebGpuFeatures(tf: Tf): WebGpuFeatures | null {
  if (tf.getBackend() !== 'webgpu') return null;
  const device = (tf.backend() as unknown as { device?: GPUDevice }).device;
  return device === undefined ? null : webGpuFeatures(device);
}
