// Replacing one of tfjs-backend-wasm's registered kernels while keeping the shipped one for the
// cases the replacement does not take: gather-wasm.ts (GatherV2), sum-wasm.ts (Sum) and
// simd-wasm.ts (SplitV) route some calls to their own code and hand the rest to the shipped
// kernel. Wrapping twice does nothing (the wrapper carries a marker), so a second backend start
// does not stack wrappers.
import type { KernelConfig, KernelFunc, NamedAttrMap, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs';
import type { Tf } from './common.ts';

/** The arguments TF.js passes to a kernel function. */
export type WasmKernelArgs = { inputs: NamedTensorInfoMap; backend: unknown; attrs?: NamedAttrMap };

type Marked = KernelFunc & { [key: symbol]: true | undefined };

/**
 * Wraps the wasm kernel `name` so that `route(args, shipped)` runs in its place, with the shipped
 * kernel function to call for what it does not handle. Does nothing when the kernel is not
 * registered (tfjs-backend-wasm not imported) or is already wrapped under `marker`.
 */
export function wrapWasmKernel(
  tf: Tf,
  name: string,
  marker: symbol,
  route: (args: WasmKernelArgs, shipped: (args: WasmKernelArgs) => TensorInfo | TensorInfo[]) => TensorInfo | TensorInfo[],
): void {
  const registered = tf.getKernel(name, 'wasm');
  if (registered === undefined) return;
  const shippedFunc = registered.kernelFunc as Marked;
  if (shippedFunc[marker]) return;
  const shipped = (args: WasmKernelArgs) => shippedFunc(args as Parameters<KernelFunc>[0]) as TensorInfo | TensorInfo[];
  const kernelFunc = ((args: WasmKernelArgs) => route(args, shipped)) as Marked;
  kernelFunc[marker] = true;
  const config: KernelConfig = { ...registered, kernelFunc };
  tf.unregisterKernel(name, 'wasm');
  tf.registerKernel(config);
}
