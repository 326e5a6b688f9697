// The libtensorflow backends: @tensorflow/tfjs-node (CPU) and @tensorflow/tfjs-node-gpu (CUDA).
//
// Both are optional dependencies whose install downloads libtensorflow, so either may be absent
// (-> "not installed") or present with a native binding that fails to load (-> the error's first
// line). Importing either registers the TF.js backend 'tensorflow' and makes it current. Each
// depends on @tensorflow/tfjs itself; it is imported only after checking that it resolves to the
// same tfjs-core as mlmkit (see common.ts).
import { spawnSync } from 'node:child_process';
import { BackendUnavailable, assertSharedCore, firstLine, resolveInstalled, type LoadedBackend, type Tf } from './common.ts';

export type TfjsNodeFlavour = 'tensorflow' | 'tensorflow-gpu';

export const TFJS_NODE_PACKAGES: Record<TfjsNodeFlavour, string> = {
  tensorflow: '@tensorflow/tfjs-node',
  'tensorflow-gpu': '@tensorflow/tfjs-node-gpu',
};

/** The part of tfjs-node's NodeJSKernelBackend read here. */
interface NodeBackendView {
  isGPUPackage?: boolean;
  isUsingGpuDevice?: boolean;
}

function installHint(flavour: TfjsNodeFlavour): string {
  const pkg = TFJS_NODE_PACKAGES[flavour];
  const needs =
    flavour === 'tensorflow-gpu'
      ? 'Linux x64 with an NVIDIA GPU, CUDA 11.2 and cuDNN 8.1; '
      : '';
  return `install it with \`npm install ${pkg}\` (${needs}its install script downloads libtensorflow, so it needs network access), or use --backend auto`;
}

/** The first GPU's name from nvidia-smi, if that answers within a second. */
function nvidiaGpuName(): string | null {
  try {
    const r = spawnSync('nvidia-smi', ['--query-gpu=name', '--format=csv,noheader'], {
      encoding: 'utf8',
      timeout: 1000,
    });
    const name = r.status === 0 ? r.stdout.split('\n')[0]?.trim() : '';
    return name ? name : null;
  } catch {
    return null;
  }
}

/**
 * Loads one flavour. libtensorflow loads once per process: when a 'tensorflow' backend exists
 * already (from an earlier call, or from tfjs-node-gpu when auto found no GPU for it), it is
 * reused if it fits the request.
 */
export async function loadTfjsNode(tf: Tf, flavour: TfjsNodeFlavour): Promise<LoadedBackend> {
  const pkg = TFJS_NODE_PACKAGES[flavour];
  if (tf.findBackendFactory('tensorflow') !== null) {
    if (!(await tf.setBackend('tensorflow'))) {
      throw new BackendUnavailable(`the 'tensorflow' backend registered earlier did not start`, installHint(flavour));
    }
    return describe(tf, flavour, pkg);
  }
  let main: string | null;
  try {
    main = resolveInstalled(pkg);
  } catch (err) {
    throw new BackendUnavailable(`${pkg} is installed but broken (${firstLine(err)})`, installHint(flavour));
  }
  if (main === null) throw new BackendUnavailable(`${pkg} not installed`, installHint(flavour));
  assertSharedCore(pkg, main);
  try {
    // A variable specifier: the package is optional, so TypeScript must not require its types.
    const specifier: string = pkg;
    await import(specifier);
  } catch (err) {
    throw new BackendUnavailable(
      `${pkg} is installed but its native binding failed: ${firstLine(err)}`,
      `run \`npm rebuild ${pkg}\`, or ${installHint(flavour)}`,
    );
  }
  if (!(await tf.setBackend('tensorflow'))) {
    throw new BackendUnavailable(`${pkg} loaded but the 'tensorflow' backend did not start`, installHint(flavour));
  }
  return describe(tf, flavour, pkg);
}

/** The device of the active 'tensorflow' backend, or why it does not serve `flavour`. */
function describe(tf: Tf, flavour: TfjsNodeFlavour, pkg: string): LoadedBackend {
  const view = tf.backend() as unknown as NodeBackendView;
  const tfBackend = tf.getBackend();
  if (flavour === 'tensorflow') {
    if (!view.isGPUPackage) return { tfBackend, device: 'CPU (libtensorflow)' };
    const device = view.isUsingGpuDevice ? `${nvidiaGpuName() ?? 'CUDA GPU'} (libtensorflow)` : 'CPU (libtensorflow)';
    return { tfBackend, device, note: 'running the libtensorflow of @tensorflow/tfjs-node-gpu, loaded earlier' };
  }
  if (view.isGPUPackage === false) {
    throw new BackendUnavailable(
      `@tensorflow/tfjs-node is already loaded in this process (libtensorflow loads once)`,
      'start a new process with --backend tensorflow-gpu',
    );
  }
  if (view.isUsingGpuDevice !== true) {
    throw new BackendUnavailable(
      `${pkg} loaded but libtensorflow found no CUDA GPU`,
      'check the NVIDIA driver, CUDA 11.2 and cuDNN 8.1 (nvidia-smi; LD_LIBRARY_PATH), or use --backend tensorflow',
    );
  }
  return { tfBackend, device: `${nvidiaGpuName() ?? 'CUDA GPU'} (libtensorflow)` };
}
