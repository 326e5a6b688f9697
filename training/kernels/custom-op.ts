// A TF.js custom-gradient op as mlmkit's kernels and ops write them: the forward gets its inputs
// and a save function and returns the value with a gradient function of (dy, saved tensors). The
// gradient function runs in its own tidy: TF.js calls a custom gradient outside any tidy and frees
// nothing until the whole gradient computation ends, so this frees each gradient's temporaries as
// soon as it returns.
import type { Tf } from '../../common/tf.ts';
import type { GradSaveFunc, Tensor } from '@tensorflow/tfjs';

export type { Tf };

export type Saver = (tensors: Tensor[]) => void;

export function customOp<T extends Tensor>(
  tf: Tf,
  f: (inputs: Tensor[], save: Saver) => { value: T; gradFunc: (dy: T, saved: Tensor[]) => Tensor[] },
): (...inputs: Tensor[]) => T {
  return tf.customGrad((...args: (Tensor | GradSaveFunc)[]) => {
    const save = args[args.length - 1] as GradSaveFunc;
    const { value, gradFunc } = f(args.slice(0, -1) as Tensor[], save);
    return { value, gradFunc: (dy: Tensor, saved: Tensor[]) => tf.tidy(() => gradFunc(dy as T, saved)) };
  }) as (...inputs: Tensor[]) => T;
}

/**
 * As `customOp` for an op with several outputs (tf.customGrad takes one): the forward returns
 * them as a list, and the gradient function gets one dy per output (zeros, made by TF.js, for an
 * output that no gradient reached) and returns one gradient per input. Runs through the engine's
 * `runKernelFunc`, the method tf.customGrad itself calls.
 */
export function customMultiOp(
  tf: Tf,
  f: (inputs: Tensor[], save: Saver) => { value: Tensor[]; gradFunc: (dys: Tensor[], saved: Tensor[]) => Tensor[] },
): (...inputs: Tensor[]) => Tensor[] {
  interface EngineRun {
    runKernelFunc(params: {
      forwardFunc: (backend: unknown, save: GradSaveFunc) => Tensor[];
      backwardsFunc: (dys: Tensor | Tensor[], saved: Tensor[]) => Record<string, () => Tensor>;
      inputs: Record<string, Tensor>;
    }): Tensor | Tensor[];
  }
  return (...inputs: Tensor[]) => {
    let gradFunc: ((dys: Tensor[], saved: Tensor[]) => Tensor[]) | null = null;
    let count = 0;
    const inputMap: Record<string, Tensor> = {};
    inputs.forEach((t, i) => (inputMap[i] = t));
    const out = (tf.engine() as unknown as EngineRun).runKernelFunc({
      forwardFunc: (_backend, save) => {
        const res = f(inputs, save);
        gradFunc = res.gradFunc;
        count = res.value.length;
        return res.value;
      },
      backwardsFunc: (dys, saved) => {
        const list = Array.isArray(dys) ? dys : [dys];
        if (list.length !== count) throw new Error(`customMultiOp: ${list.length} gradients for ${count} outputs`);
        const grads = tf.tidy(() => gradFunc!(list, saved));
        if (grads.length !== inputs.length) throw new Error(`customMultiOp: ${grads.length} gradients for ${inputs.length} inputs`);
        return Object.fromEntries(grads.map((g, i) => [String(i), () => g]));
      },
      inputs: inputMap,
    });
    return Array.isArray(out) ? out : [out];
  };
}
