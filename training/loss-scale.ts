// Dynamic loss scaling for mixed-precision training (--precision fp16).
//
// f16 holds magnitudes from 2^-24 to 65504: small gradients of the f16 matrix products underflow to
// zero. The trainer multiplies the loss by a scale S before the backward pass, so every gradient is
// S times larger, and divides it out again by folding 1/S into the clipping factor that AdamW
// already applies (training/optimizer.ts). When a gradient overflows (the norm is not finite while
// the loss is), the step is skipped (no update) and S halves; after `growthInterval` clean steps in
// a row S doubles. The defaults are PyTorch's torch.amp.GradScaler's (init 2^16, growth 2, backoff
// 0.5, interval 2000), which Hugging Face's Trainer uses for fp16.
//
// S never falls below `minScale`, 1 by default (MIN_LOSS_SCALE). Scaling exists to lift small
// gradients above f16's underflow; at S = 1 the backward pass's f16 operands hold the gradients
// themselves, unscaled. If those still overflow (above 65504), a scale below 1 would make room for
// them only by pushing the small gradients under f16's 2^-24, and PyTorch's GradScaler, which has
// no floor, goes on halving into f32's subnormals and 0 (where 0 x loss / 0 reads as a NaN loss,
// hiding the cause). A run whose gradients overflow unscaled is diverging (a learning rate too
// high), fed bad data, or needs float32: an overflow at the floor stops it (training/trainer.ts,
// `lossScaleFloorError` in training/train-step.ts). A floor of 1 also keeps S, a power of two from
// 2^16, exact to divide.
//
// The state (S and the count of clean steps) is saved in trainer_state.json (`loss_scale`) and
// restored on resume, so a resumed run scales, skips and grows exactly as an uninterrupted one.
import { InputError } from '../common/errors.ts';

export interface LossScaleOptions {
  initScale: number;
  growthFactor: number;
  backoffFactor: number;
  growthInterval: number;
  /** The floor: an overflow lowers S no further (see the header). */
  minScale: number;
}

/** The default floor of the loss scale: the gradients unscaled (see the header). */
export const MIN_LOSS_SCALE = 1;

export const LOSS_SCALE_DEFAULTS: LossScaleOptions = { initScale: 2 ** 16, growthFactor: 2, backoffFactor: 0.5, growthInterval: 2000, minScale: MIN_LOSS_SCALE };

/** What trainer_state.json keeps (snake_case, like the rest of the file). */
export interface LossScaleState {
  scale: number;
  /** Clean (finite) steps since the scale last changed. */
  clean_steps: number;
}

export class DynamicLossScale {
  readonly opts: LossScaleOptions;
  private s: number;
  private clean = 0;

  constructor(opts: Partial<LossScaleOptions> = {}, state?: LossScaleState) {
    this.opts = { ...LOSS_SCALE_DEFAULTS, ...opts };
    this.s = this.opts.initScale;
    if (state !== undefined) this.setState(state);
  }

  /** The current scale S: multiply the loss by it. */
  get scale(): number {
    return this.s;
  }

  /** Clean steps since the scale last changed. */
  get cleanSteps(): number {
    return this.clean;
  }

  /**
   * Records a step whose scaled gradients were finite or not, and returns whether to apply it.
   * Not finite: skip it, S times backoffFactor but not below minScale, the count restarts (an
   * overflow at the floor, `atFloor(S)`, is for the caller to stop on). Finite: apply it; after
   * growthInterval of them in a row, S times growthFactor and the count restarts.
   */
  update(finite: boolean): boolean {
    if (!finite) {
      this.s = Math.max(this.s * this.opts.backoffFactor, this.opts.minScale);
      this.clean = 0;
      return false;
    }
    this.clean++;
    if (this.clean >= this.opts.growthInterval) {
      this.s *= this.opts.growthFactor;
      this.clean = 0;
    }
    return true;
  }

  /** Whether a step run at `scale` was at the floor: an overflow there cannot be scaled away. */
  atFloor(scale: number): boolean {
    return scale <= this.opts.minScale;
  }

  getState(): LossScaleState {
    return { scale: this.s, clean_steps: this.clean };
  }

  /** Restores a saved state; a malformed one is an input error (a damaged trainer_state.json). */
  setState(state: LossScaleState): void {
    const ok = typeof state === 'object' && state !== null && Number.isFinite(state.scale) && state.scale > 0
      && Number.isInteger(state.clean_steps) && state.clean_steps >= 0;
    if (!ok) throw new InputError(`the saved loss scale ${JSON.stringify(state)} is not {scale > 0, clean_steps >= 0}; resume from an intact checkpoint`);
    this.s = state.scale;
    this.clean = state.clean_steps;
  }
}
