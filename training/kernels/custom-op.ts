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
