// A training step whose loss and gradient norm are read one step late.
//
// With the flat AdamW (webgpu, training/flat-adamw.ts) a step is queued on the GPU whole: norm,
// clip, finite check and update included. Awaiting its read before the host issues the next step
// leaves the GPU idle while the host builds that step; so the trainer issues step N + 1 first, then
// awaits step N's read (`PendingStep.read`), and handles N's loss (logging, divergence, the
// non-finite stop, loss scaling) while N + 1 runs.
//
// What stays exact:
// - The weights a step sees do not depend on when the host reads: the update runs on the GPU in
//   step order either way.
// - Evaluations, checkpoints, the end and an interrupt need the weights after step N alone: the
//   trainer issues nothing ahead of a step that ends at one of them, so the read is in before.
// - A step that is not applied (non-finite, or loss scaling's overflow) changes nothing on the GPU,
//   and neither does the step issued after it: that one was chained to it (training/flat-adamw.ts)
//   and comes back `held`. Loss scaling carries on: the held step is run again (`reissue`: same
//   batches, dropout seeds and learning rate, the lowered scale and the right AdamW step count),
//   which is what an in-step read would have run; a non-finite step stops the run anyway.
// - The scale's growth cannot be repaired that way (the step after it would already have run at
//   the old scale): a step whose outstanding predecessors would, all clean, grow the scale waits
//   for their reads before it is built (training/train-step.ts), once every growth interval.
// On the CPU backends a step's result is known when it is issued (the per-tensor AdamW needs the
// norm on the host before the update), so nothing is issued ahead there.
/** A step as issued: its result, read late (`late`) or known already. */
export interface IssuedStep<R> {
  readonly late: boolean;
  readonly result: Promise<R>;
}

/** A step's result as far as this module needs it. */
export interface StepOutcome {
  readonly applied: boolean;
  readonly held?: boolean;
}

export class PendingStep<R extends StepOutcome, Info> {
  private issued: IssuedStep<R>;

  private constructor(
    readonly info: Info,
    private readonly issue: () => Promise<IssuedStep<R>>,
    first: IssuedStep<R>,
  ) {
    this.issued = PendingStep.guarded(first);
  }

  /** Issues a step (`issue` queues it and returns its result); `info` is what the caller keeps with it. */
  static async start<R extends StepOutcome, Info>(info: Info, issue: () => Promise<IssuedStep<R>>): Promise<PendingStep<R, Info>> {
    return new PendingStep(info, issue, await issue());
  }

  /** Whether the result is read late (so issuing the next step first overlaps the two). */
  get late(): boolean {
    return this.issued.late;
  }

  /** The step's result (reads must be awaited in the order the steps were issued). */
  read(): Promise<R> {
    return this.issued.result;
  }

  /**
   * After the step issued before this one came back not applied: waits for this step's own
   * (held) read, then issues it again. A step that was not held is left as it is.
   */
  async reissue(): Promise<void> {
    const r = await this.issued.result;
    if (r.held) this.issued = PendingStep.guarded(await this.issue());
  }

  // A read that fails while the caller is still issuing the next step would count as unhandled:
  // a handler is attached at once; awaiting `result` still throws.
  private static guarded<R>(issued: IssuedStep<R>): IssuedStep<R> {
    issued.result.catch(() => {});
    return issued;
  }
}
