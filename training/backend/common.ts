// Shared pieces of backend selection: the backend names, the result type, the error that says a
// backend is unavailable, and the check that every TF.js package shares one @tensorflow/tfjs-core.
//
// Nothing here runs at import time; TF.js itself is loaded with a dynamic import by `loadTf`.
import { createRequire } from 'node:module';
import type { Tf } from '../../common/tf.ts';
import type { ModelCapabilities } from '../models/ops.ts';

export type { Tf };

/** Every accepted value of `--backend` / `MLM_BACKEND`, fastest first after `auto`. */
export const BACKEND_NAMES = ['auto', 'tensorflow-gpu', 'tensorflow', 'webgpu', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];
export type ConcreteBackendName = Exclude<BackendName, 'auto'>;

export interface BackendInfo {
  /** The mlmkit backend name that was chosen. */
  name: ConcreteBackendName;
  /** `tf.getBackend()` after selection: 'tensorflow', 'webgpu', 'wasm' or 'cpu'. */
  tfBackend: string;
  /** What runs the kernels, e.g. 'CPU (wasm, SIMD, 1 thread)' or a GPU adapter's description. */
  device: string;
  /** Why this backend: 'requested', or what `auto` skipped on the way. */
  reason: string;
  /** The one `@tensorflow/tfjs` module, with this backend active. */
  tf: Tf;
  /** What the model's ops may use on this backend (`capabilitiesOf`); pass to createMaskedLM. */
  capabilities: ModelCapabilities;
}

/** What a loader reports once its backend is registered and active. */
export interface LoadedBackend {
  tfBackend: string;
  device: string;
  /** A remark worth a log line (a software adapter, a GPU build running on the CPU...). */
  note?: string;
}

/**
 * A backend that cannot be used here. `message` is the short reason `auto` prints when it skips
 * the backend ("not installed"); `hint` says what to do, for when the user asked for it by name.
 */
export class BackendUnavailable extends Error {
  readonly hint: string;
  constructor(reason: string, hint: string) {
    super(reason);
    this.name = 'BackendUnavailable';
    this.hint = hint;
  }
}

/** The first line of an error's message, trimmed (native loaders write long multi-line errors). */
export function firstLine(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  const line = text.split('\n').find((l) => l.trim() !== '') ?? text;
  return line.trim();
}

/** Loads the single `@tensorflow/tfjs` module (cached by Node after the first call). */
export async function loadTf(): Promise<Tf> {
  return import('@tensorflow/tfjs');
}

const here = createRequire(import.meta.url);

/**
 * The tfjs-core files a package at `fromFile` would load: the one it requires directly (wasm and
 * webgpu peer-depend on the core) and the one behind the @tensorflow/tfjs it requires (tfjs-node
 * depends on the union package), each where it resolves.
 */
function coresSeenFrom(fromFile: string): string[] {
  const req = createRequire(fromFile);
  const found = new Set<string>();
  try {
    found.add(req.resolve('@tensorflow/tfjs-core'));
  } catch {
    // not reachable directly
  }
  try {
    found.add(createRequire(req.resolve('@tensorflow/tfjs')).resolve('@tensorflow/tfjs-core'));
  } catch {
    // no union package in reach
  }
  return [...found];
}

/** The tfjs-core file that mlmkit's own `@tensorflow/tfjs` uses. */
export function ourCorePath(): string {
  return createRequire(here.resolve('@tensorflow/tfjs')).resolve('@tensorflow/tfjs-core');
}

/**
 * Where `pkg` is installed (its resolved main file), or null when it is not installed.
 * Throws when it is installed but its entry cannot be resolved (a broken install).
 */
export function resolveInstalled(pkg: string): string | null {
  try {
    return here.resolve(pkg);
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (code === 'MODULE_NOT_FOUND' && firstLine(err).includes(`'${pkg}'`)) return null;
    throw err;
  }
}

/**
 * Throws unless `pkg` (installed, main file `pkgFile`) would use the same tfjs-core file as
 * mlmkit. A second copy brings a second Tensor class (instanceof checks fail across the two) and
 * kernels registered against state the other copy does not see, so it is refused before the
 * package is imported.
 */
export function assertSharedCore(pkg: string, pkgFile: string): void {
  const ours = ourCorePath();
  const theirs = coresSeenFrom(pkgFile);
  if (theirs.length === 0) {
    throw new BackendUnavailable(
      `${pkg} cannot find @tensorflow/tfjs-core`,
      `reinstall it at the version of @tensorflow/tfjs: npm install ${pkg}`,
    );
  }
  const other = theirs.find((file) => file !== ours);
  if (other !== undefined) {
    throw new BackendUnavailable(
      `${pkg} uses a second copy of @tensorflow/tfjs-core (${other}; mlmkit uses ${ours})`,
      'install versions that share one core (see `npm ls @tensorflow/tfjs-core`, then `npm dedupe`), ' +
        'e.g. the same 4.x version as @tensorflow/tfjs',
    );
  }
}
