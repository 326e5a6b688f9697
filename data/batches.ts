// Batches from prepared shards: rows in a seeded order that changes every epoch, read from disk
// on demand (memory does not grow with the data), masked afresh each time a batch is drawn.
//
// The position in the data is a small state, { epoch, cursor }, saved in checkpoints. The order of
// epoch e is a permutation drawn from Rng.derive(seed, e), so a restored state continues exactly
// where the run stopped, without replaying batches.
import { Rng, type RngState } from '../common/rng.ts';
import { maskTokens, type MaskingOptions, type MlmBatch } from './masking.ts';
import { readManifest, SplitReader, type Manifest, type SplitName } from './shards.ts';
import { InputError } from '../common/errors.ts';

export interface DataPosition {
  epoch: number;
  cursor: number;   // rows of this epoch already handed out
}

export interface RowBatch {
  ids: Uint32Array;       // [B*T]
  wordStarts: Uint8Array; // [B*T]
  rows: number;           // B (the last batch of an epoch may be smaller when dropLast is false)
  epoch: number;          // the epoch these rows belong to
}

/** Opens a prepared folder (manifest checked, shards sized) for reading. */
export async function openPrepared(dir: string): Promise<{ manifest: Manifest; split(name: SplitName): SplitReader }> {
  const manifest = await readManifest(dir);
  return { manifest, split: (name) => new SplitReader(dir, manifest, name) };
}

export interface RowStreamOptions {
  batchSize: number;
  seed: number;
  shuffle: boolean;     // false keeps file order (evaluation)
  dropLast: boolean;    // true: every batch has exactly batchSize rows (training)
}

/** An endless (training) or one-pass (evaluation) stream of row batches over one split. */
export class RowStream {
  private order: Uint32Array | null = null;
  private orderEpoch = -1;
  private pos: DataPosition = { epoch: 0, cursor: 0 };
  private readonly seqLen: number;

  constructor(private readonly reader: SplitReader, private readonly opts: RowStreamOptions) {
    if (!Number.isInteger(opts.batchSize) || opts.batchSize < 1) throw new InputError(`--batch-size must be a positive integer, got ${opts.batchSize}`);
    if (reader.rows === 0) throw new InputError(`the ${reader.split} split of ${reader.dir} has no rows; prepare more data or use another split`);
    if (opts.dropLast && reader.rows < opts.batchSize) {
      throw new InputError(`the ${reader.split} split of ${reader.dir} has ${reader.rows} rows, fewer than --batch-size ${opts.batchSize}; lower --batch-size or prepare more data`);
    }
    this.seqLen = reader.seqLen;
  }

  /** Batches per epoch. */
  get batchesPerEpoch(): number {
    const n = this.reader.rows;
    return this.opts.dropLast ? Math.floor(n / this.opts.batchSize) : Math.ceil(n / this.opts.batchSize);
  }

  get position(): DataPosition {
    return { ...this.pos };
  }

  set position(p: DataPosition) {
    if (!Number.isInteger(p.epoch) || !Number.isInteger(p.cursor) || p.epoch < 0 || p.cursor < 0 || p.cursor > this.reader.rows) {
      throw new InputError(`invalid data position ${JSON.stringify(p)} for a split of ${this.reader.rows} rows (the checkpoint's trainer_state.json was edited, or the data is not the one it was trained on); resume from another checkpoint, or with the run's own --data`);
    }
    this.pos = { ...p };
  }

  /**
   * The next batch. Training streams roll over into the next epoch; evaluation streams
   * (dropLast false, one pass) return null at the end of the epoch.
   */
  next(): RowBatch | null {
    const { batchSize, dropLast } = this.opts;
    const n = this.reader.rows;
    let remaining = n - this.pos.cursor;
    if (remaining === 0 || (dropLast && remaining < batchSize)) {
      if (!dropLast) return null;
      this.pos = { epoch: this.pos.epoch + 1, cursor: 0 };
      remaining = n;
    }
    const rows = Math.min(batchSize, remaining);
    const order = this.orderFor(this.pos.epoch);
    const T = this.seqLen;
    const ids = new Uint32Array(rows * T);
    const wordStarts = new Uint8Array(rows * T);
    for (let b = 0; b < rows; b++) {
      const row = order ? order[this.pos.cursor + b] : this.pos.cursor + b;
      this.reader.readRow(row, ids, wordStarts, b * T);
    }
    const epoch = this.pos.epoch;
    this.pos = { epoch, cursor: this.pos.cursor + rows };
    return { ids, wordStarts, rows, epoch };
  }

  /** Starts the current pass again from the first row (evaluation). */
  rewind(): void {
    this.pos = { epoch: this.pos.epoch, cursor: 0 };
  }

  private orderFor(epoch: number): Uint32Array | null {
    if (!this.opts.shuffle) return null;
    if (this.orderEpoch !== epoch) {
      const order = new Uint32Array(this.reader.rows);
      for (let i = 0; i < order.length; i++) order[i] = i;
      Rng.derive(this.opts.seed, 0x5eed, epoch).shuffle(order);
      this.order = order;
      this.orderEpoch = epoch;
    }
    return this.order;
  }
}

/** Training batches: row stream + dynamic masking with its own serialisable RNG. */
export class MaskedBatches {
  readonly rng: Rng;

  constructor(
    readonly rows: RowStream,
    private readonly masking: MaskingOptions,
    private readonly padId: number,
    private readonly specials: Uint8Array,
    seed: number | RngState,
  ) {
    this.rng = typeof seed === 'number' ? Rng.derive(seed, 0x3a5c) : new Rng(seed);
  }

  next(): (MlmBatch & { epoch: number }) | null {
    const batch = this.rows.next();
    if (!batch) return null;
    const masked = maskTokens(batch.ids, batch.ids.length / batch.rows, this.padId, this.specials, this.masking, this.rng,
      this.masking.wholeWord ? batch.wordStarts : undefined);
    return { ...masked, epoch: batch.epoch };
  }

  /** Everything needed to continue the same stream of batches and masks. */
  getState(): { position: DataPosition; rng: RngState } {
    return { position: this.rows.position, rng: this.rng.getState() };
  }

  setState(state: { position: DataPosition; rng: RngState }): void {
    this.rows.position = state.position;
    this.rng.setState(state.rng);
  }
}
