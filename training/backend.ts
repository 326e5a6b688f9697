// Backend selection (docs/backends.md, "Choosing a backend"): `--backend auto|tensorflow-gpu|tensorflow|webgpu|wasm|cpu`,
// or env MLM_BACKEND when the flag is left at auto.
//
// `auto` tries tensorflow-gpu, tensorflow, webgpu (hardware adapters only), wasm, cpu, and takes
// the first that loads and passes `backendSelfCheck`; it logs one line with its choice, why the
// faster ones were skipped, and what runs it (for wasm: which BLAS library runs the matmuls). A
// backend asked for by name that cannot start is an InputError that says what to do. Every backend
// package is imported here, inside `selectBackend`, never at module load, and all of them share
// mlmkit's one @tensorflow/tfjs (checked before importing each).
//
// The parts, in backend/ (what each does: docs/backends.md):
//   common.ts          types, the backend names, the shared-core check
//   self-check.ts      the check a backend passes before it is trusted
//   tfjs-node.ts       tensorflow and tensorflow-gpu (libtensorflow)
//   wasm.ts            the wasm backend, threaded, with its kernels: segment-sum-wasm.ts (the gather
//                      gradient), gather-wasm.ts, batch-matmul-wasm.ts, sum-wasm.ts, and blas.ts +
//                      matmul-blas.ts (matmuls through the machine's BLAS)
//   webgpu.ts          the webgpu backend on Dawn, with dropout-webgpu.ts (GPU dropout masks) and
//                      webgpu/ (the fused kernels, the flat AdamW's kernels, the raw seam raw.ts)
import * as fs from 'node:fs';
import { envSwitch, InputError } from '../common/errors.ts';
import {
  BACKEND_NAMES,
  BackendUnavailable,
  firstLine,
  loadTf,
  type BackendInfo,
  type BackendName,
  type ConcreteBackendName,
  type LoadedBackend,
  type Tf,
} from './backend/common.ts';
import { backendSelfCheck } from './backend/self-check.ts';
import { MASKED_ROW_BUCKET, type ModelCapabilities } from './models/ops.ts';
import { loadTfjsNode } from './backend/tfjs-node.ts';
import { loadWasm, wasmThreads } from './backend/wasm.ts';
import { wasmBlas } from './backend/matmul-blas.ts';
import { loadWebGpu, releaseWebGpu } from './backend/webgpu.ts';

export { BACKEND_NAMES, backendSelfCheck, releaseWebGpu };
export type { BackendInfo, BackendName, ConcreteBackendName, Tf };
export { probeWebGpu, type WebGpuAdapterInfo, type WebGpuProbe } from './backend/webgpu.ts';
export { registerWasmUnsortedSegmentSum, unsortedSegmentSumWasm } from './backend/segment-sum-wasm.ts';
export { defaultBlasThreads } from './backend/wasm.ts';

/** The order `auto` tries, fastest first. */
export const AUTO_ORDER: readonly ConcreteBackendName[] = ['tensorflow-gpu', 'tensorflow', 'webgpu', 'wasm', 'cpu'];

export function isBackendName(value: unknown): value is BackendName {
  return typeof value === 'string' && (BACKEND_NAMES as readonly string[]).includes(value);
}

/**
 * The backend to use: the CLI value unless it is absent or 'auto', then `env.MLM_BACKEND` when
 * set, else 'auto'. An unknown name from either is an InputError naming its source.
 */
export function resolveBackendName(
  cliValue: string | undefined,
  env: Readonly<Record<string, string | undefined>>,
): BackendName {
  const choices = BACKEND_NAMES.join(', ');
  const cli = cliValue?.trim() || 'auto';
  if (!isBackendName(cli)) throw new InputError(`unknown backend '${cli}' (--backend): use one of ${choices}`);
  if (cli !== 'auto') return cli;
  const fromEnv = env.MLM_BACKEND?.trim();
  if (!fromEnv) return 'auto';
  if (!isBackendName(fromEnv)) throw new InputError(`unknown backend '${fromEnv}' in MLM_BACKEND: use one of ${choices}`);
  return fromEnv;
}

async function loadCpu(tf: Tf): Promise<LoadedBackend> {
  if (!(await tf.setBackend('cpu'))) {
    throw new BackendUnavailable('the cpu backend did not start', 'reinstall @tensorflow/tfjs');
  }
  // The cpu backend prints a banner recommending tfjs-node on first use in Node.js; the choice
  // has been made and logged here already, so the banner is switched off.
  const cpu = tf.engine().registry['cpu'] as { firstUse?: boolean } | undefined;
  if (cpu !== undefined && 'firstUse' in cpu) cpu.firstUse = false;
  return { tfBackend: tf.getBackend(), device: 'CPU (pure JavaScript)' };
}

/** What the caller (the command line) chose for the backends: see `selectBackend`. */
export interface BackendOptions {
  /** The BLAS library for the wasm backend's matrix products: a file, 'none', or undefined to search. */
  blas?: string;
  /** Its threads; default one per CPU this process may use, at most 8. */
  blasThreads?: number;
}

/**
 * The BLAS choices of the command line's environment: MLM_BLAS (a library file, or `none`) and
 * MLM_BLAS_THREADS (1 to 64). A bad thread count is an InputError, and so is a path to no file (a
 * typo would otherwise fall back to XNNPACK with only a note at the end of the backend line; a bare
 * library name is left to the loader's search).
 */
export function blasOptions(env: Readonly<Record<string, string | undefined>>): BackendOptions {
  const library = env.MLM_BLAS?.trim() || undefined;
  if (library !== undefined && /[\\/]/.test(library) && !fs.statSync(library, { throwIfNoEntry: false })?.isFile()) {
    throw new InputError(`MLM_BLAS=${library} is no file; give the path of a BLAS library (such as /usr/lib/x86_64-linux-gnu/libopenblas.so.0), a library name, or none`);
  }
  const raw = env.MLM_BLAS_THREADS?.trim();
  if (raw === undefined || raw === '') return { blas: library };
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 64) throw new InputError(`MLM_BLAS_THREADS must be a whole number from 1 to 64, got '${raw}'`);
  return { blas: library, blasThreads: n };
}

function load(tf: Tf, name: ConcreteBackendName, allowSoftware: boolean, opts: BackendOptions): Promise<LoadedBackend> {
  switch (name) {
    case 'tensorflow-gpu':
    case 'tensorflow':
      return loadTfjsNode(tf, name);
    case 'webgpu':
      return loadWebGpu(tf, { allowSoftware });
    case 'wasm':
      return loadWasm(tf, { blas: opts.blas, blasThreads: opts.blasThreads });
    case 'cpu':
      return loadCpu(tf);
  }
}

/** Starts `name` and runs the self-check on it; a failed check is reported as unavailable. */
async function loadChecked(tf: Tf, name: ConcreteBackendName, allowSoftware: boolean, opts: BackendOptions): Promise<LoadedBackend> {
  const loaded = await load(tf, name, allowSoftware, opts);
  try {
    await backendSelfCheck(tf);
  } catch (err) {
    if (name === 'webgpu') releaseWebGpu(tf);
    throw new BackendUnavailable(firstLine(err), 'choose another --backend, and report this with `mlm bench` output');
  }
  return loaded;
}

/** Prefix of the names of mlmkit's own kernels (`MlmkitDropoutMask`...). */
export const MLMKIT_KERNEL_PREFIX = 'Mlmkit';

/**
 * What the model's ops may use on the TF.js backend `tfBackend` ('webgpu', 'wasm'...; as
 * `tf.getBackend()` names it): its mlmkit kernels as registered now, and on webgpu the one-hot
 * embedding gradient, padded head rows, matMul's transpose flags and bias (why: training/models/ops.ts). Call it once the backend
 * is loaded (its kernels are registered then); `selectBackend` returns it.
 */
export function capabilitiesOf(tf: Tf, tfBackend: string): ModelCapabilities {
  const webgpu = tfBackend === 'webgpu';
  // wasm's own transposed products are slow (XNNPACK packs the operand first); through BLAS the
  // flags are free (backend/matmul-blas.ts), so the gradients use them there too.
  const flags = webgpu || (tfBackend === 'wasm' && wasmBlas() !== null);
  const kernels = tf.getKernelsForBackend(tfBackend).map((k) => k.kernelName).filter((n) => n.startsWith(MLMKIT_KERNEL_PREFIX));
  return Object.freeze({
    embeddingGrad: webgpu ? 'matmul' : 'gather',
    maskedRowBucket: webgpu ? MASKED_ROW_BUCKET : 1,
    transposedMatMul: flags,
    matMulBias: flags,
    matMulAddend: webgpu,
    kernels: new Set(kernels),
  });
}

/**
 * Starts a TF.js backend and returns it with the `tf` module to use. Logs one line (`opts.log`,
 * default stderr). `name` 'auto' tries the backends in AUTO_ORDER; any other name is that backend
 * or an InputError saying why not and what to do. `opts.blas` and `opts.blasThreads` choose the BLAS
 * library of the wasm backend's matrix products (backend/blas.ts); see `blasOptions`.
 */
export async function selectBackend(
  name: BackendName,
  opts: { log?: (line: string) => void } & BackendOptions = {},
): Promise<BackendInfo> {
  if (!isBackendName(name)) {
    throw new InputError(`unknown backend '${String(name)}': use one of ${BACKEND_NAMES.join(', ')}`);
  }
  const log = opts.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  // A bad MLM_WASM_THREADS or MLM_SIMD_KERNELS is the user's error to fix, not a reason for `auto`
  // to skip wasm.
  if (name === 'auto' || name === 'wasm') {
    wasmThreads(process.env);
    envSwitch(process.env, 'MLM_SIMD_KERNELS', true);
  }
  const tf = await loadTf();

  if (name !== 'auto') {
    let loaded: LoadedBackend;
    try {
      loaded = await loadChecked(tf, name, true, opts);
    } catch (err) {
      if (err instanceof BackendUnavailable) throw new InputError(`backend ${name}: ${err.message}; ${err.hint}`);
      throw err;
    }
    log(`backend: ${name} (requested) on ${loaded.device}${loaded.note ? `; note: ${loaded.note}` : ''}`);
    return { name, tfBackend: loaded.tfBackend, device: loaded.device, reason: 'requested', tf, capabilities: capabilitiesOf(tf, loaded.tfBackend) };
  }

  const skipped: string[] = [];
  for (const candidate of AUTO_ORDER) {
    let loaded: LoadedBackend;
    try {
      loaded = await loadChecked(tf, candidate, false, opts);
    } catch (err) {
      skipped.push(`${candidate}: ${err instanceof BackendUnavailable ? err.message : firstLine(err)}`);
      continue;
    }
    const reason = skipped.length > 0 ? skipped.join('; ') : 'the fastest backend, available';
    log(`backend: ${candidate} (${reason}) on ${loaded.device}${loaded.note ? `; note: ${loaded.note}` : ''}`);
    return { name: candidate, tfBackend: loaded.tfBackend, device: loaded.device, reason, tf, capabilities: capabilitiesOf(tf, loaded.tfBackend) };
  }
  throw new Error(`no TF.js backend could start: ${skipped.join('; ')}`);
}
