// Identity on the wasm backend without a copy.
//
// TF.js's engine runs Identity for every `tf.clone`, and its gradient machinery clones every tensor
// an op saves for its backward pass (customGrad's `save` and the tape's saved inputs and outputs).
// tfjs-backend-wasm's Identity copies the whole buffer each time, where the cpu, webgl and webgpu
// backends let the clone share its input's data (one more reference, as Reshape does on wasm too).
// A bert-mini training step at 32 x 128 runs ~150 of them (the [4096, 1024] activations, the
// [588, 30522] logits, the attention probabilities...): ~40 ms, 4-5% of the step, measured with
// scripts/profile-step.ts --shapes Identity.
//
// Sharing is safe because nothing writes a wasm tensor's memory after the kernel that made it:
// TF.js's wasm kernels and mlmkit's own (simd-wasm.ts, matmul-blas.ts, batch-matmul-wasm.ts,
// sum-wasm.ts, gather-wasm.ts, segment-sum-wasm.ts) all write only outputs they allocate, the
// per-tensor AdamW's kernel returns new tensors that the variables are assigned, and a variable
// already shares its data with the tensor it was made from or assigned. The backend counts the
// references (its disposeData frees the memory when the last one goes). String tensors keep the
// shipped kernel (their data lives in JavaScript, not in the wasm memory).
import type { TensorInfo } from '@tensorflow/tfjs';
import type { Tf } from './common.ts';
import { wrapWasmKernel } from './wrap-wasm-kernel.ts';

const WRAPPED = Symbol('mlmkit.identityShares');

interface RefCounting {
  incRef(dataId: object): void;
}

/**
 * Wraps the registered wasm Identity so that a clone shares its input's memory (see the file
 * header). Call after importing tfjs-backend-wasm; calling it again does nothing.
 */
export function registerWasmSharedIdentity(tf: Tf): void {
  wrapWasmKernel(tf, 'Identity', WRAPPED, (args, shipped) => {
    const x = args.inputs.x as TensorInfo | undefined;
    if (x === undefined || x.dtype === 'string') return shipped(args);
    (args.backend as RefCounting).incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  });
}
