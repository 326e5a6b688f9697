// AdamW written out (docs/architecture.md, "The optimizer"): Adam with decoupled weight decay, the update of PyTorch's
// `torch.optim.AdamW` (what transformers' Trainer uses by default, `optim="adamw_torch"`).
//
// For each parameter p with gradient g, at update t = 1, 2, ... with learning rate lr:
//   p <- p - lr * wd * p                          decoupled weight decay (skipped, see below)
//   m <- beta1 * m + (1 - beta1) * g              first moment (`exp_avg`)
//   v <- beta2 * v + (1 - beta2) * g^2            second moment (`exp_avg_sq`)
//   p <- p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// The weight decay uses the parameter before this step's Adam update, as PyTorch does (it
// multiplies p by 1 - lr*wd first). Which parameters are decayed is the model's parameter table's
// `decay` (training/models/weights.ts `decayedParameters`), given to the constructor: Linear and
// embedding weights, not biases or LayerNorm weights, as transformers' Trainer decides by name
// (`get_decay_parameter_names`; tests/training/optimizer.test.ts checks the table against that rule).
//
// Porting note: transformers' own (deprecated) `transformers.AdamW` placed eps differently
// (denominator sqrt(v) + eps with the bias correction folded into the step size) and decayed
// after the Adam step; we follow torch.optim.AdamW. Defaults are transformers' TrainingArguments:
// beta1 0.9, beta2 0.999, eps 1e-8, weight decay 0.01 (mlmkit's CLI default; HF's is 0).
//
// References: Loshchilov and Hutter 2019, "Decoupled Weight Decay Regularization" (Algorithm 2);
// Kingma and Ba 2015 (Adam, bias correction); PyTorch `torch/optim/adamw.py` (`_single_tensor_adamw`).
import type { Scalar, Tensor, Variable } from '@tensorflow/tfjs';
import type { Tf } from './backend.ts';
import type { NamedArray } from './models/weights.ts';
import { ADAMW_KERNEL, adamwKernel, backendHas } from './kernels/adamw.ts';

export interface AdamWOptions {
  beta1: number;
  beta2: number;
  epsilon: number;
  weightDecay: number;
}

export const ADAMW_DEFAULTS: AdamWOptions = { beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0.01 };


/** The optimizer's state in plain arrays: moments keyed `<name>.exp_avg` / `<name>.exp_avg_sq`. */
export interface AdamWState {
  step: number;
  tensors: Map<string, NamedArray>;
}

export class AdamW {
  /** Updates done so far (t of the formulas after the last update). */
  step = 0;
  private readonly m = new Map<string, Variable>();
  private readonly v = new Map<string, Variable>();
  /** The backend has the one-pass AdamW kernel (training/kernels/adamw.ts): same bits, one pass. */
  private readonly fused: boolean;

  constructor(
    private readonly tf: Tf,
    private readonly params: ReadonlyMap<string, Variable>,
    /** The parameters weight decay applies to (the model's `decayedParameters`). */
    private readonly decayed: ReadonlySet<string>,
    readonly opts: AdamWOptions = ADAMW_DEFAULTS,
  ) {
    this.fused = backendHas(tf, ADAMW_KERNEL);
    for (const [name, p] of params) {
      // tf.variable copies its initial value: the zeros are freed at once, not kept per parameter.
      this.m.set(name, tf.tidy(() => tf.variable(tf.zerosLike(p), false)));
      this.v.set(name, tf.tidy(() => tf.variable(tf.zerosLike(p), false)));
    }
  }

  /**
   * One update. `grads` is keyed by parameter name; each gradient is multiplied by `gradScale`
   * first (gradient clipping folded in, so clipping costs no extra pass). A parameter without a
   * gradient is left alone, moments and decay included (PyTorch skips parameters whose grad is
   * None). Leaves no tensor behind.
   */
  apply(grads: ReadonlyMap<string, Tensor>, lr: number, gradScale = 1): void {
    const { tf } = this;
    const { beta1, beta2, epsilon, weightDecay } = this.opts;
    const t = this.step + 1;
    const stepSize = lr / (1 - beta1 ** t);
    const invSqrtBc2 = 1 / Math.sqrt(1 - beta2 ** t);
    tf.tidy(() => {
      // Scalars made once per update, shared by every parameter.
      const s = (x: number): Scalar => tf.scalar(x, 'float32');
      const b1 = s(beta1);
      const b2 = s(beta2);
      const b2c = s((1 - beta2) * gradScale * gradScale); // (1 - beta2) * (scale g)^2 = b2c * g^2
      const b1cScaled = s((1 - beta1) * gradScale);
      const eps = s(epsilon);
      const inv = s(invSqrtBc2);
      const negStep = s(-stepSize);
      const keep = s(1 - lr * weightDecay);
      for (const [name, p] of this.params) {
        const g = grads.get(name);
        if (g === undefined) continue;
        const m = this.m.get(name)!;
        const v = this.v.get(name)!;
        const decays = this.decayed.has(name) && weightDecay !== 0;
        if (this.fused) {
          const [p1, m1, v1] = adamwKernel(tf, p, m, v, g, {
            b1: beta1, b2: beta2, b1c: (1 - beta1) * gradScale, b2c: (1 - beta2) * gradScale * gradScale,
            inv: invSqrtBc2, eps: epsilon, negStep: -stepSize, keep: 1 - lr * weightDecay, decay: decays ? 1 : 0,
          });
          p.assign(p1);
          m.assign(m1);
          v.assign(v1);
          continue;
        }
        const m1 = tf.add(tf.mul(m, b1), tf.mul(g, b1cScaled));
        const v1 = tf.add(tf.mul(v, b2), tf.mul(tf.square(g), b2c));
        const denom = tf.add(tf.mul(tf.sqrt(v1), inv), eps);
        const decayed = decays ? tf.mul(p, keep) : p;
        p.assign(tf.add(decayed, tf.mul(tf.div(m1, denom), negStep)));
        m.assign(m1);
        v.assign(v1);
      }
    });
    this.step = t;
  }

  /**
   * The moments as float32 arrays in the layout the caller asks for (`toFile` maps a parameter
   * name and its tensor to what is stored, e.g. a transpose into Hugging Face's [out, in]).
   * Async: some backends can only be read asynchronously.
   */
  async getState(toFile: (name: string, t: Tensor) => Tensor = (_n, t) => t): Promise<AdamWState> {
    const tensors = new Map<string, NamedArray>();
    for (const name of this.params.keys()) {
      for (const [suffix, store] of [['exp_avg', this.m], ['exp_avg_sq', this.v]] as const) {
        const src = store.get(name)!;
        const shown = toFile(name, src);
        const data = (await shown.data()) as Float32Array;
        tensors.set(`${name}.${suffix}`, { shape: [...shown.shape], data: Float32Array.from(data) });
        if (shown !== src) shown.dispose();
      }
    }
    return { step: this.step, tensors };
  }

  /**
   * Restores moments saved by getState (`fromFile` undoes `toFile`). Every parameter's two
   * moments must be present with its shape.
   */
  setState(state: AdamWState, fromFile: (name: string, data: NamedArray) => Tensor): void {
    if (!Number.isInteger(state.step) || state.step < 0) throw new Error(`optimizer state step must be a non-negative integer, got ${state.step}`);
    for (const [name, p] of this.params) {
      for (const [suffix, store] of [['exp_avg', this.m], ['exp_avg_sq', this.v]] as const) {
        const key = `${name}.${suffix}`;
        const saved = state.tensors.get(key);
        if (saved === undefined) throw new Error(`optimizer state lacks ${key}`);
        const t = fromFile(name, saved);
        try {
          if (t.shape.length !== p.shape.length || t.shape.some((d, i) => d !== p.shape[i])) {
            throw new Error(`optimizer state ${key} has shape [${t.shape.join(', ')}], the parameter has [${p.shape.join(', ')}]`);
          }
          store.get(name)!.assign(t);
        } finally {
          t.dispose();
        }
      }
    }
    this.step = state.step;
  }

  dispose(): void {
    for (const x of [...this.m.values(), ...this.v.values()]) x.dispose();
    this.m.clear();
    this.v.clear();
  }
}
