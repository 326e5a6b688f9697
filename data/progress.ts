// A progress line on stderr. On a terminal it redraws one line in place (at most 10 times a
// second); elsewhere (CI logs, files) it prints a full line at most every `logEverySeconds`.
// Nothing goes to stdout, so `--json` output stays clean.
//
// Other lines written while a bar is on screen (notes, "eval at step N") go through `clear()`
// first, which erases the bar's line on a terminal; the next update draws it again below them.
// Work that completes ends with `complete()`: the last line shows 100% of the true total, whatever
// the last update said (updates are throttled, and a caller may count in coarser pieces).
// A `transient` bar runs inside other work (an evaluation during training): on a terminal its final
// line stays unfinished, for the line written next (the evaluation's result) to erase; elsewhere it
// prints nothing until the work has lasted `logEverySeconds`, so short evaluations add no log lines.

export interface ProgressOptions {
  label: string;
  total?: number;             // in `unit`s; unknown totals show no percentage or ETA
  unit?: 'bytes' | 'count';
  stream?: NodeJS.WriteStream;
  logEverySeconds?: number;
  enabled?: boolean;
  /** A bar inside other work (see the file header). */
  transient?: boolean;
}

export class Progress {
  private readonly stream: NodeJS.WriteStream;
  private readonly tty: boolean;
  private readonly start = performance.now();
  // The first update is drawn at once (a log shows that a stage started), then every interval.
  private lastDraw = -Infinity;
  /** Something of this bar was written. */
  private drawn = false;
  /** What the last line written showed (a log: the final line is not written twice). */
  private drawnState = '';
  private done = 0;
  private extra = '';
  /** A partial bar line is on the terminal (drawn, not finished or cleared). */
  private onScreen = false;
  private total: number | undefined;

  constructor(private readonly opts: ProgressOptions) {
    this.stream = opts.stream ?? process.stderr;
    this.tty = Boolean(this.stream.isTTY);
    this.total = opts.total;
    if (opts.transient && !this.tty) this.lastDraw = this.start;
  }

  /** Sets the absolute amount done and an optional free-text suffix. */
  update(done: number, extra = ''): void {
    this.done = done;
    this.extra = extra;
    const now = performance.now();
    const every = this.tty ? 100 : (this.opts.logEverySeconds ?? 10) * 1000;
    if (now - this.lastDraw >= every) {
      this.lastDraw = now;
      this.draw(false);
    }
  }

  /** Prints the final line, as far as the work went (an interrupted run ends short of 100%). */
  finish(extra?: string): void {
    if (extra !== undefined) this.extra = extra;
    this.draw(true);
  }

  /**
   * The work is done: the final line at 100% of the total. `trueTotal`: what the work turned out to
   * be when the announced total was an upper bound (fewer words than --max-words, a vocabulary that
   * stopped growing); otherwise the announced total.
   */
  complete(extra?: string, trueTotal?: number): void {
    if (trueTotal !== undefined) this.total = trueTotal;
    if (this.total !== undefined && this.total > 0) this.done = this.total;
    this.finish(extra);
  }

  /** Erases the bar's line on a terminal, so that a line written next starts clean; the next update redraws it. */
  clear(): void {
    if (!this.onScreen) return;
    this.stream.write('\r\x1b[K');
    this.onScreen = false;
    this.lastDraw = 0;
  }

  /** Seconds since the bar was created. */
  elapsed(): number {
    return (performance.now() - this.start) / 1000;
  }

  private draw(final: boolean): void {
    if (this.opts.enabled === false) return;
    if (final && this.opts.transient && !this.tty && !this.drawn) return;
    // In a log, a stage that was at its end when last drawn (one fast update) has said it all.
    const state = `${this.done}/${this.total}/${this.extra}`;
    if (final && !this.tty && this.drawn && state === this.drawnState) return;
    this.drawnState = state;
    const width = Math.max(20, (this.stream.columns || 100) - 1);
    const line = this.render(this.tty ? width : Infinity);
    this.drawn = true;
    if (this.tty) {
      const end = final && !this.opts.transient;
      this.stream.write(`\r${line.slice(0, width).padEnd(width)}${end ? '\n' : ''}`);
      this.onScreen = !end;
    } else {
      this.stream.write(line + '\n');
    }
  }

  /** The bar's line; a long label is shortened to fit `width` columns, so that the figures stay visible. */
  private render(width: number): string {
    const secs = this.elapsed();
    const { unit = 'count' } = this.opts;
    const total = this.total;
    const parts = [this.opts.label];
    if (total && total > 0) {
      const frac = Math.min(1, this.done / total);
      const width = 24;
      const filled = Math.round(frac * width);
      parts.push(`[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(frac * 100).toFixed(1).padStart(5)}%`);
    }
    if (unit === 'bytes') {
      parts.push(`${formatBytes(this.done)}${total ? ` / ${formatBytes(total)}` : ''}`);
      parts.push(`${(this.done / 1e6 / Math.max(secs, 1e-9)).toFixed(1)} MB/s`);
    } else {
      parts.push(`${this.done}${total ? `/${total}` : ''}`);
    }
    if (total && this.done > 0 && this.done < total) {
      parts.push(`ETA ${formatDuration((secs * (total - this.done)) / this.done)}`);
    } else {
      parts.push(formatDuration(secs));
    }
    if (this.extra) parts.push(this.extra);
    const line = parts.join('  ');
    // Too long: a label over a third of the width is shortened; else the line's end is cut (draw).
    const label = parts[0];
    const keep = Math.max(16, Math.floor(width / 3));
    if (line.length <= width || label.length <= keep) return line;
    return `${label.slice(0, Math.max(keep, width - (line.length - label.length) - 3))}...${line.slice(label.length)}`;
  }
}

export function formatBytes(n: number): string {
  if (n < 1e3) return `${n} B`;
  if (n < 1e6) return `${(n / 1e3).toFixed(1)} kB`;
  if (n < 1e9) return `${(n / 1e6).toFixed(1)} MB`;
  return `${(n / 1e9).toFixed(2)} GB`;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : m > 0 ? `${m}m${String(r).padStart(2, '0')}s` : `${r}s`;
}

/**
 * Renders rows as an aligned plain-text table for the terminal: numbers right-aligned, text
 * left-aligned, a rule under the header. `digits` fixes the decimals of a numeric column.
 */
export function formatTable(rows: Record<string, unknown>[], digits: Record<string, number> = {}): string {
  if (rows.length === 0) return '';
  const cols = Object.keys(rows[0]);
  const cell = (col: string, v: unknown): string => {
    if (typeof v === 'number') {
      if (col in digits) return v.toFixed(digits[col]);
      return Number.isInteger(v) ? String(v) : v.toPrecision(6);
    }
    return String(v ?? '');
  };
  const text = rows.map((r) => cols.map((c) => cell(c, r[c])));
  const numeric = cols.map((c) => rows.every((r) => typeof r[c] === 'number'));
  const width = cols.map((c, i) => Math.max(c.length, ...text.map((t) => t[i].length)));
  const line = (vals: string[]) => vals.map((v, i) => (numeric[i] ? v.padStart(width[i]) : v.padEnd(width[i]))).join('  ').trimEnd();
  return [line(cols), width.map((w) => '-'.repeat(w)).join('  '), ...text.map(line)].join('\n');
}
