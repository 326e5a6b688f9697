// The flat AdamW: the per-tensor AdamW of training/optimizer.ts (same update, same state, same
// checkpoints), with the parameters, gradients and both moments of the whole model in four large
// GPU buffers, so that a step is a handful of GPU commands and no host round trip (webgpu only).
//
// Layout. Every variable of the model (by its name, in the model's order, weight-decayed ones first)
// owns a range [offset, offset + size) of each flat buffer; the `decayed` set (the parameter table's
// `decay`, as for the per-tensor AdamW) decides decay, and decayed entries are the prefix [0, decayEnd).
// The flat parameter buffer is the master copy: after each update it is copied back into each
// TF.js variable's own buffer (in place, so the model's tensors stay what they are). A variable
// that something else assigned since (its data id changed) is copied in first.
//
// One step (`update`), all encoded into TF.js's command stream after the backward pass:
//   gather    the loss into the stats buffer and each gradient into its range of the flat
//             gradient buffer (buffer-to-buffer copies);
//   norm      sum of squares in two stages -> norm, finite flag (loss and norm), clip coefficient,
//             on the GPU (training/backend/webgpu/flat-adamw.ts);
//   update    AdamW over the flat buffers, reading the clip and the finite flag there: a NaN or
//             infinite loss or gradient changes nothing, parameters and moments included;
//   scatter   the new parameters into the variables' buffers;
//   read      [loss, norm, clip, state] into a promise, after the commands above are submitted.
// The host waits only for that read, after the whole step is queued, instead of between the
// gradients and the update; the trainer awaits it after issuing the next step (one step late,
// training/pending-step.ts). The step counter (bias corrections) advances at encoding and goes
// back when the read says the update was not applied. A step encoded while an earlier step's read
// is outstanding assumes that step applied, so it is chained to it: the GPU holds it (applies
// nothing, state `held`) unless the earlier one was applied. A caller that learns late that step N
// was skipped (loss scaling's overflow) thus knows that N + 1 changed nothing, and runs it again
// once N + 1's read is in (the counter is right again then).
//
// A parameter without a gradient this step is left alone, moments and decay included, as the
// per-tensor AdamW does (the update runs over the ranges that have one).
import type { Scalar, Tensor, Variable } from '@tensorflow/tfjs';
import type { Tf } from './backend.ts';
import { rawWebGpu, type RawWebGpu } from './backend/webgpu/raw.ts';
import { chunkCount, chunkEntries, encodeNormAndClip, encodeUpdate, PARTIALS, STAT, STATS_FLOATS, STEP_STATE, type FlatBuffers } from './backend/webgpu/flat-adamw.ts';
import type { NamedArray } from './models/weights.ts';
import { ADAMW_DEFAULTS, AdamW, type AdamWOptions, type AdamWState } from './optimizer.ts';

/** Where one parameter lives in the flat buffers (in floats). */
export interface FlatRange {
  name: string;
  offset: number;
  size: number;
  shape: number[];
  decay: boolean;
}

/** The flat layout of `params`: decayed parameters first, each in the model's order. */
export function flatLayout(params: ReadonlyMap<string, Variable>, decayed: ReadonlySet<string>): { ranges: FlatRange[]; n: number; decayEnd: number } {
  const entries = [...params].map(([name, p]) => ({ name, shape: [...p.shape], size: p.size, decay: decayed.has(name) }));
  const ordered = [...entries.filter((e) => e.decay), ...entries.filter((e) => !e.decay)];
  let offset = 0;
  let decayEnd = 0;
  const ranges = ordered.map((e) => {
    const r = { ...e, offset };
    offset += e.size;
    if (e.decay) decayEnd = offset;
    return r;
  });
  return { ranges, n: offset, decayEnd };
}

/** What one step's read says. */
export interface FlatStepResult {
  loss: number;
  /** The global gradient norm before clipping. */
  norm: number;
  /** False when the loss or the norm was NaN or infinite, or the step was held: nothing was changed. */
  applied: boolean;
  /** Held: encoded while an earlier step's read was outstanding, and that step was not applied. */
  held: boolean;
}

export class FlatAdamW {
  /** Updates done so far (t of the formulas after the last update), as AdamW.step. */
  step = 0;
  readonly ranges: readonly FlatRange[];
  private readonly raw: RawWebGpu;
  private readonly buffers: FlatBuffers;
  private readonly decayEnd: number;
  private readonly byName = new Map<string, FlatRange>();
  /** The data id of each variable when the flat copy last matched it. */
  private readonly synced = new Map<string, object>();
  /** Steps encoded whose read has not resolved yet. */
  private outstanding = 0;

  /** Whether one flat buffer of `params` fits in a buffer of the active webgpu device. */
  static fits(tf: Tf, params: ReadonlyMap<string, Variable>): boolean {
    const n = [...params.values()].reduce((a, p) => a + p.size, 0);
    return n * 4 <= rawWebGpu(tf).device.limits.maxBufferSize;
  }

  /** `maxBindingBytes` caps the bound chunk below the device's limit (tests of the chunked path). */
  constructor(
    private readonly tf: Tf,
    private readonly params: ReadonlyMap<string, Variable>,
    decayed: ReadonlySet<string>,
    readonly opts: AdamWOptions = ADAMW_DEFAULTS,
    layoutOpts: { maxBindingBytes?: number } = {},
  ) {
    this.raw = rawWebGpu(tf);
    const { ranges, n, decayEnd } = flatLayout(params, decayed);
    const limit = this.raw.device.limits.maxBufferSize;
    if (n * 4 > limit) {
      throw new Error(`the flat optimizer needs ${n * 4} bytes per buffer, over this device's buffer size limit of ${limit}`);
    }
    this.ranges = ranges;
    this.decayEnd = decayEnd;
    for (const r of ranges) this.byName.set(r.name, r);
    const bytes = n * 4;
    const chunk = chunkEntries(this.raw.device, layoutOpts.maxBindingBytes);
    this.buffers = {
      n,
      chunk,
      p: this.raw.createStorage(bytes),
      m: this.raw.createStorage(bytes),
      v: this.raw.createStorage(bytes),
      g: this.raw.createStorage(bytes),
      partials: this.raw.createStorage(chunkCount(n, chunk) * PARTIALS * 4),
      stats: this.raw.createStorage(STATS_FLOATS * 4),
    };
    this.syncParams();
  }

  /** Copies into the flat parameters every variable whose data changed since the last sync. */
  private syncParams(): void {
    for (const r of this.ranges) {
      const p = this.params.get(r.name)!;
      if (this.synced.get(r.name) === p.dataId) continue;
      if (this.raw.sharers(p) > 1) {
        // The variable shares its buffer with another tensor (a clone, a reshape): give it its own,
        // so that writing it in place cannot change the other one.
        this.tf.tidy(() => p.assign(this.tf.add(p, this.tf.scalar(0, 'float32'))));
      }
      this.raw.copy(this.raw.bufferOf(p), 0, this.buffers.p, r.offset * 4, r.size * 4);
      this.synced.set(r.name, p.dataId);
    }
  }

  /**
   * Encodes one step (see the header): `grads` keyed by parameter name, `loss` the step's loss
   * (checked for finiteness with the norm), clipping to `maxGradNorm` (0: off). Returns the read
   * of loss, norm and whether the update was applied; the caller may dispose `grads` and `loss` at
   * once. Reads must be awaited in the order of the steps. `lossScale` S: loss and gradients are S
   * times the true ones (training/loss-scale.ts); the read and the update use them divided by S.
   * While an earlier step's read is outstanding the step is chained to it (see the header).
   */
  update(grads: ReadonlyMap<string, Tensor>, loss: Scalar, lr: number, maxGradNorm: number, lossScale = 1): Promise<FlatStepResult> {
    const { raw, buffers: b } = this;
    const { beta1, beta2, epsilon, weightDecay } = this.opts;
    this.syncParams();
    // Gather: the loss, then each gradient into its range; the ranges that have one.
    raw.copy(raw.bufferOf(loss), 0, b.stats, STAT.loss * 4, 4);
    const present: [number, number][] = [];
    for (const r of this.ranges) {
      const g = grads.get(r.name);
      if (g === undefined) continue;
      if (g.size !== r.size) throw new Error(`the gradient of ${r.name} has ${g.size} entries, the parameter ${r.size}`);
      raw.copy(raw.bufferOf(g), 0, b.g, r.offset * 4, r.size * 4);
      const last = present[present.length - 1];
      if (last !== undefined && last[1] === r.offset) last[1] = r.offset + r.size;
      else present.push([r.offset, r.offset + r.size]);
    }
    // Gradients absent this step stay out of the norm: zero their ranges' stale values.
    if (present.length !== 1 || present[0][0] !== 0 || present[0][1] !== b.n) this.clearAbsent(present);
    encodeNormAndClip(raw, b, maxGradNorm, lossScale, this.outstanding > 0);
    const t = this.step + 1;
    const constants = {
      beta1, beta2, epsilon,
      invSqrtBc2: 1 / Math.sqrt(1 - beta2 ** t),
      negStep: -(lr / (1 - beta1 ** t)),
      keep: weightDecay !== 0 ? 1 - lr * weightDecay : 1,
      decayEnd: this.decayEnd,
    };
    for (const [begin, end] of present) encodeUpdate(raw, b, constants, begin, end);
    // Scatter the parameters that were updated back into their variables.
    for (const r of this.ranges) {
      if (!grads.has(r.name)) continue;
      const p = this.params.get(r.name)!;
      raw.copy(b.p, r.offset * 4, raw.bufferOf(p), 0, r.size * 4);
      raw.written(p);
    }
    this.step = t;
    this.outstanding++;
    const stats = raw.read(b.stats); // submits everything above
    return stats.then((data) => {
      this.outstanding--;
      const s = new Float32Array(data, 0, STATS_FLOATS);
      const applied = s[STAT.state] === STEP_STATE.applied;
      if (!applied) this.step--;
      return { loss: s[STAT.loss], norm: s[STAT.norm], applied, held: s[STAT.state] === STEP_STATE.held };
    });
  }

  /** Zeroes the gradient ranges outside `present` (sorted, disjoint), so stale values stay out of the norm. */
  private clearAbsent(present: [number, number][]): void {
    let at = 0;
    for (const [begin, end] of [...present, [this.buffers.n, this.buffers.n] as [number, number]]) {
      if (begin > at) this.raw.clear(this.buffers.g, at * 4, (begin - at) * 4);
      at = end;
    }
  }

  /**
   * The moments as float32 arrays in the layout the caller asks for, exactly what AdamW.getState
   * gives for the same moments (`toFile` maps a parameter name and its tensor to what is stored).
   */
  async getState(toFile: (name: string, t: Tensor) => Tensor = (_n, t) => t): Promise<AdamWState> {
    const { tf } = this;
    const flat = { exp_avg: new Float32Array(await this.raw.read(this.buffers.m)), exp_avg_sq: new Float32Array(await this.raw.read(this.buffers.v)) };
    const tensors = new Map<string, NamedArray>();
    for (const name of this.params.keys()) {
      const r = this.byName.get(name)!;
      for (const suffix of ['exp_avg', 'exp_avg_sq'] as const) {
        const src = tf.tensor(flat[suffix].subarray(r.offset, r.offset + r.size), r.shape, 'float32');
        const shown = toFile(name, src);
        const data = (await shown.data()) as Float32Array;
        tensors.set(`${name}.${suffix}`, { shape: [...shown.shape], data: Float32Array.from(data) });
        if (shown !== src) shown.dispose();
        src.dispose();
      }
    }
    return { step: this.step, tensors };
  }

  /** Restores moments saved by getState or AdamW.getState (`fromFile` undoes `toFile`). */
  setState(state: AdamWState, fromFile: (name: string, data: NamedArray) => Tensor): void {
    if (!Number.isInteger(state.step) || state.step < 0) throw new Error(`optimizer state step must be a non-negative integer, got ${state.step}`);
    const loaded: Tensor[] = [];
    try {
      for (const [name, p] of this.params) {
        const r = this.byName.get(name)!;
        for (const [suffix, buffer] of [['exp_avg', this.buffers.m], ['exp_avg_sq', this.buffers.v]] as const) {
          const key = `${name}.${suffix}`;
          const saved = state.tensors.get(key);
          if (saved === undefined) throw new Error(`optimizer state lacks ${key}`);
          const t = fromFile(name, saved);
          loaded.push(t);
          if (t.shape.length !== p.shape.length || t.shape.some((d, i) => d !== p.shape[i])) {
            throw new Error(`optimizer state ${key} has shape [${t.shape.join(', ')}], the parameter has [${p.shape.join(', ')}]`);
          }
          this.raw.copy(this.raw.bufferOf(t), 0, buffer, r.offset * 4, r.size * 4);
        }
      }
    } finally {
      this.tf.dispose(loaded); // their buffers are released only after the copies are submitted
      this.raw.submit();
    }
    this.step = state.step;
  }

  dispose(): void {
    for (const buffer of [this.buffers.p, this.buffers.m, this.buffers.v, this.buffers.g, this.buffers.partials, this.buffers.stats]) {
      this.raw.releaseStorage(buffer);
    }
  }
}

/** The AdamW a training run uses: the flat one on webgpu, the per-tensor one elsewhere. */
export type TrainingOptimizer = AdamW | FlatAdamW;

/**
 * The AdamW for `params` on the backend named `backendName` (mlmkit's name, chosen at the CLI
 * edge): flat on webgpu, per-tensor (the reference) on the CPU backends, and on a device whose
 * buffers are too small for one flat buffer of the model (same results, more dispatches).
 */
export function createAdamW(tf: Tf, params: ReadonlyMap<string, Variable>, decayed: ReadonlySet<string>, opts: AdamWOptions, backendName: string): TrainingOptimizer {
  return backendName === 'webgpu' && FlatAdamW.fits(tf, params) ? new FlatAdamW(tf, params, decayed, opts) : new AdamW(tf, params, decayed, opts);
}
