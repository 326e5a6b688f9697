// Line charts as standalone SVG documents (no script, no fonts to load), for the run folder's
// report (training/report.ts) and `mlm compare` (training/compare.ts). A few lines of SVG per chart
// rather than a plotting library: vega + vega-lite would bring ~30 packages for a handful of charts.
//
// A chart is one or more panels stacked over a shared x axis. A panel has a linear or log y axis,
// series (a line, markers, or both) and horizontal reference lines (a baseline, a threshold).
// Axis ticks:
//   linear  round steps (1, 2, 5 x 10^k) giving about `count` ticks (`linearTicks`);
//   log     over a factor of 3 or less, evenly stepped round values, the finest step whose top two
//           ticks are MIN_TICK_GAP pixels apart; over more, round values placed greedily from
//           coarse steps to fine ones, each kept only where it lies MIN_TICK_GAP pixels from those
//           kept before (`logTicks`): a log axis spreads the low values (a loss late in training)
//           over more pixels, and this fills them with ticks while the crowded top keeps a few;
//           over so many decades that no two multiples of a step fit, powers of ten (`decadeTicks`).
// The legend takes the corner of a panel that the curves cross least (`legendCorner`).
// `ema` smooths a noisy series (the training loss) for an extra curve; its factor goes in the legend.

export interface Series {
  name: string;
  points: Array<[number, number]>;
  color: string;
  /** Line width (default 1.6); 0: no line, markers only. */
  width?: number;
  /** Line opacity (default 1). */
  opacity?: number;
  /** Dots on the points: always, never, or (default) when the series has at most 40 points. */
  markers?: 'always' | 'never' | 'auto';
}

/** A horizontal reference line across a panel, labelled in the legend. */
export interface RefLine {
  name: string;
  y: number;
  color: string;
}

export interface Panel {
  yLabel: string;
  series: Series[];
  logY?: boolean;
  refLines?: RefLine[];
  /** How tick labels are written (default: 4 significant digits). */
  format?: (v: number) => string;
  /** No legend (a panel repeating the one above). By default the legend takes the corner the curves cross least. */
  hideLegend?: boolean;
  /** A panel of its own x range, from here to the chart's last x (a zoom on the end); its points before are left out. */
  xFrom?: number;
  /** A line above the panel saying what it shows. */
  title?: string;
}

/** Least distance in pixels between two ticks of a log axis. */
export const MIN_TICK_GAP = 22;

/** A round step (1, 2 or 5 x 10^k) at least `raw`. */
function niceStep(raw: number): number {
  const mag = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw * (1 - 1e-9)) ?? 10 * mag;
}

/** The round step below `step` in the 1, 2, 5 sequence. */
function finerStep(step: number): number {
  const mag = 10 ** Math.floor(Math.log10(step) + 1e-9);
  const lead = Math.round(step / mag);
  return lead === 1 ? mag / 2 : lead === 2 ? mag : 2 * mag;
}

/** Multiples of `step` within [lo, hi]. */
function multiples(lo: number, hi: number, step: number): number[] {
  const out: number[] = [];
  for (let k = Math.ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; k++) out.push(Number((k * step).toPrecision(12)));
  return out;
}

/** About `count` round tick values covering [lo, hi]. */
export function linearTicks(lo: number, hi: number, count: number): number[] {
  if (!(hi > lo)) return [lo];
  return multiples(lo, hi, niceStep((hi - lo) / count));
}

/**
 * Round tick values for a log axis over [lo, hi] (data units, lo > 0) drawn `pixels` tall. Over a
 * factor of 3 or less: evenly stepped (see the file header). Over more: steps from coarse (about 3 ticks over the range) to fine; a value v of step s is kept when it lies at
 * least `minGap` pixels from every value kept before and from v + s (so a step is only used where
 * its ticks fit side by side, not to fill a single gap). Returned in increasing order.
 */
export function logTicks(lo: number, hi: number, pixels: number, minGap = MIN_TICK_GAP): number[] {
  if (!(hi > lo && lo > 0)) return [lo];
  const span = Math.log10(hi / lo);
  const px = (v: number) => (Math.log10(v / lo) / span) * pixels;
  if (hi / lo <= 3) {
    let even = niceStep((hi - lo) / 3);
    for (;;) {
      const finer = multiples(lo, hi, finerStep(even));
      const n = finer.length;
      if (n < 2 || px(finer[n - 1]) - px(finer[n - 2]) < minGap) break;
      even = finerStep(even);
    }
    return multiples(lo, hi, even);
  }
  // v and v + step are minGap pixels apart only where step / v >= ratio: the candidates of a step
  // stop at step / ratio (else a fine step over a wide range, 10 to 1e9, lists ~1e8 values). At
  // ratio >= 1 no two multiples of a step fit side by side (a decade is under ~3.3 minGap): powers
  // of ten instead.
  const ratio = 10 ** ((minGap * span) / pixels) - 1;
  if (ratio >= 1) return decadeTicks(lo, hi, pixels / span, minGap);
  const kept: number[] = [];
  let step = niceStep((hi - lo) / 3);
  for (let level = 0; level < 24; level++) {
    for (const v of multiples(lo, Math.min(hi, (step / ratio) * (1 + 1e-9)), step)) {
      if (v > 0 && px(v + step) - px(v) >= minGap && kept.every((u) => Math.abs(px(u) - px(v)) >= minGap)) kept.push(v);
    }
    // Finer steps cannot fit anywhere once the step at the bottom of the axis is under the gap.
    if (px(lo + step) < minGap / 2) break;
    step = finerStep(step);
  }
  return kept.sort((a, b) => a - b);
}

/**
 * Ticks of a log axis over many decades (`perDecade` pixels each): 10^e for every k-th e, k the
 * fewest decades that are `minGap` pixels tall, and 3 x 10^e between them where a decade is tall
 * enough for both.
 */
function decadeTicks(lo: number, hi: number, perDecade: number, minGap: number): number[] {
  const every = Math.max(1, Math.ceil(minGap / perDecade - 1e-9));
  const withThrees = every === 1 && perDecade * Math.log10(3) >= minGap;
  const out: number[] = [];
  for (let e = Math.ceil(Math.log10(lo) - 1e-9); e <= Math.floor(Math.log10(hi) + 1e-9); e++) {
    if (e % every !== 0) continue;
    out.push(Number((10 ** e).toPrecision(12)));
    if (withThrees && 3 * 10 ** e <= hi * (1 + 1e-9)) out.push(Number((3 * 10 ** e).toPrecision(12)));
  }
  return out;
}

/**
 * Exponential moving average with bias correction: s_i = f s_(i-1) + (1 - f) x_i from s_(-1) = 0,
 * divided by (1 - f^(i+1)), so the first value is x_0 itself and the curve does not start at 0.
 * f = 0 returns the values.
 */
export function ema(values: readonly number[], factor: number): number[] {
  if (!(factor >= 0 && factor < 1)) throw new RangeError(`ema: the factor must be in [0, 1), got ${factor}`);
  const out: number[] = [];
  let s = 0;
  let weight = 1;
  for (const x of values) {
    s = factor * s + (1 - factor) * x;
    weight *= factor;
    out.push(s / (1 - weight));
  }
  return out;
}

/**
 * The smoothing factor for a curve of `n` points: 1 - 10/n within [0.6, 0.99] (the average spans
 * about a tenth of the curve), or null (no smoothed curve) under 20 points.
 */
export function emaFactorFor(n: number): number | null {
  if (n < 20) return null;
  return Number(Math.min(0.99, Math.max(0.6, 1 - 10 / n)).toFixed(2));
}

export function formatTick(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(1).replace('.0e', 'e');
  return String(Number(v.toPrecision(4)));
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

const f1 = (v: number) => v.toFixed(1);

/** The y range of a panel's finite points and reference lines (positive only on a log axis), padded by 5%. */
function yRange(p: Panel): [number, number] | null {
  const ok = (y: number) => Number.isFinite(y) && (!p.logY || y > 0);
  const ys = [...p.series.flatMap((s) => s.points.map((q) => q[1])), ...(p.refLines ?? []).map((r) => r.y)].filter(ok);
  if (ys.length === 0) return null;
  let lo = Math.min(...ys);
  let hi = Math.max(...ys);
  if (p.logY) {
    if (hi === lo) { lo /= 1.5; hi *= 1.5; }
    const pad = (hi / lo) ** 0.05;
    return [lo / pad, hi * pad];
  }
  if (hi === lo) { lo -= Math.abs(lo) * 0.1 || 0.5; hi += Math.abs(hi) * 0.1 || 0.5; }
  const pad = (hi - lo) * 0.05;
  return [lo - pad, hi + pad];
}

/**
 * A chart of one or more panels stacked over a shared x axis, as a standalone SVG document.
 * Non-finite points (and non-positive ones on a log axis) are left out.
 */
export function chartSvg(opts: { title: string; xLabel: string; panels: Panel[]; width?: number; panelHeight?: number; xFrom?: number }): string {
  const W = opts.width ?? 720;
  const PH = opts.panelHeight ?? (opts.panels.length > 1 ? 200 : 300);
  // Panels with their own x range get their own x tick labels, and then more room between panels.
  const ownX = opts.panels.some((p) => p.xFrom !== undefined);
  const m = { left: 72, right: 20, top: opts.panels[0]?.title ? 50 : 40, bottom: 48, between: ownX || opts.panels.some((p) => p.title) ? 44 : 28 };
  const H = m.top + opts.panels.length * PH + (opts.panels.length - 1) * m.between + m.bottom;
  const pw = W - m.left - m.right;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="14">${esc(opts.title)}</text>`,
  ];
  const xs = opts.panels.flatMap((p) => p.series.flatMap((s) => s.points.map((q) => q[0]))).filter(Number.isFinite);
  const panels = opts.panels.map((p) => (p.xFrom === undefined ? p : { ...p, series: p.series.map((s) => ({ ...s, points: s.points.filter((q) => q[0] >= p.xFrom!) })) }));
  if (xs.length === 0 || panels.every((p) => yRange(p) === null)) {
    parts.push(`<text x="${W / 2}" y="${H / 2}" text-anchor="middle" fill="#666">no data</text>`, '</svg>');
    return parts.join('\n') + '\n';
  }
  let x0 = Math.min(...xs, ...(opts.xFrom !== undefined ? [opts.xFrom] : []));
  let x1 = Math.max(...xs);
  if (x1 === x0) { x0 -= 1; x1 += 1; }

  panels.forEach((p, pi) => {
    const top = m.top + pi * (PH + m.between);
    const range = yRange(p);
    const px0 = p.xFrom !== undefined && p.xFrom < x1 ? p.xFrom : x0;
    const sx = (x: number) => m.left + ((x - px0) / (x1 - px0)) * pw;
    const xt = linearTicks(px0, x1, 6);
    parts.push(`<g class="panel">`);
    if (p.title) parts.push(`<text x="${m.left}" y="${top - 7}" fill="#333">${esc(p.title)}</text>`);
    if (range === null) {
      parts.push(`<rect x="${m.left}" y="${top}" width="${pw}" height="${PH}" fill="none" stroke="#444"/>`);
      parts.push(`<text x="${m.left + pw / 2}" y="${top + PH / 2}" text-anchor="middle" fill="#666">no data</text>`, '</g>');
      return;
    }
    const [y0, y1] = range;
    const ty = (y: number) => (p.logY ? Math.log10(y) : y);
    const sy = (y: number) => top + PH - ((ty(y) - ty(y0)) / (ty(y1) - ty(y0))) * PH;
    const yt = p.logY ? logTicks(y0, y1, PH) : linearTicks(y0, y1, 6);
    const fmt = p.format ?? formatTick;

    parts.push(`<g stroke="#e3e3e3" stroke-width="1">`);
    for (const v of xt) parts.push(`<line x1="${f1(sx(v))}" y1="${top}" x2="${f1(sx(v))}" y2="${top + PH}"/>`);
    for (const v of yt) parts.push(`<line x1="${m.left}" y1="${f1(sy(v))}" x2="${m.left + pw}" y2="${f1(sy(v))}"/>`);
    parts.push('</g>');
    parts.push(`<rect x="${m.left}" y="${top}" width="${pw}" height="${PH}" fill="none" stroke="#444"/>`);
    if (ownX || pi === panels.length - 1) {
      for (const v of xt) parts.push(`<text class="xtick" x="${f1(sx(v))}" y="${top + PH + 16}" text-anchor="middle">${formatTick(v)}</text>`);
    }
    for (const v of yt) parts.push(`<text class="ytick" data-value="${v}" x="${m.left - 6}" y="${f1(sy(v) + 4)}" text-anchor="end">${esc(fmt(v))}</text>`);
    parts.push(`<text transform="translate(16 ${top + PH / 2}) rotate(-90)" text-anchor="middle">${esc(p.yLabel)}${p.logY ? ' (log scale)' : ''}</text>`);

    const shows = (y: number) => Number.isFinite(y) && (!p.logY || y > 0);
    const refs = (p.refLines ?? []).filter((r) => shows(r.y));
    const shown = p.series
      .map((s) => ({ ...s, points: s.points.filter(([x, y]) => Number.isFinite(x) && shows(y)) }))
      .filter((s) => s.points.length > 0);
    const rows = refs.length + shown.length;
    const boxH = rows * 15 + 8;
    // About 6.2 px per character at 11 px sans-serif, plus the sample line and margins.
    const boxW = Math.ceil(40 + 6.2 * Math.max(0, ...refs.map((r) => r.name.length), ...shown.map((s) => s.name.length)));
    const corner = legendCorner(
      shown.map((s) => s.points.map(([x, y]) => [sx(x), sy(y)] as [number, number])),
      refs.map((r) => sy(r.y)),
      { left: m.left, top, width: pw, height: PH }, boxW, boxH,
    );
    const boxTop = corner.top;
    const lx = corner.left + 6;
    const legend: string[] = [];
    const ly = (row: number) => boxTop + 14 + row * 15;
    refs.forEach((r, i) => {
      parts.push(`<line class="refline" x1="${m.left}" y1="${f1(sy(r.y))}" x2="${m.left + pw}" y2="${f1(sy(r.y))}" stroke="${r.color}" stroke-width="1.2" stroke-dasharray="6 4"/>`);
      legend.push(`<line x1="${lx}" y1="${ly(i) - 4}" x2="${lx + 20}" y2="${ly(i) - 4}" stroke="${r.color}" stroke-width="1.5" stroke-dasharray="6 4"/>`,
        `<text x="${lx + 26}" y="${ly(i)}">${esc(r.name)}</text>`);
    });
    shown.forEach((s, i) => {
      const pts = s.points;
      const width = s.width ?? 1.6;
      const opacity = s.opacity !== undefined ? ` stroke-opacity="${s.opacity}"` : '';
      if (width > 0 && pts.length > 1) {
        parts.push(`<polyline fill="none" stroke="${s.color}" stroke-width="${width}"${opacity} points="${pts.map(([x, y]) => `${f1(sx(x))},${f1(sy(y))}`).join(' ')}"/>`);
      }
      const mode = s.markers ?? 'auto';
      const dots = mode === 'always' || (mode === 'auto' && pts.length <= 40) || (mode !== 'never' && pts.length === 1);
      if (dots) {
        const r = mode === 'always' ? 3.6 : 2.4;
        for (const [x, y] of pts) parts.push(`<circle class="marker" cx="${f1(sx(x))}" cy="${f1(sy(y))}" r="${r}" fill="${s.color}" stroke="white" stroke-width="1"/>`);
      }
      const row = refs.length + i;
      legend.push(width > 0
        ? `<line x1="${lx}" y1="${ly(row) - 4}" x2="${lx + 20}" y2="${ly(row) - 4}" stroke="${s.color}" stroke-width="2"${opacity}/>`
        : `<circle cx="${lx + 10}" cy="${ly(row) - 4}" r="3.6" fill="${s.color}" stroke="white" stroke-width="1"/>`,
      `<text x="${lx + 26}" y="${ly(row)}">${esc(s.name)}</text>`);
      if (width > 0 && mode === 'always') legend.push(`<circle cx="${lx + 10}" cy="${ly(row) - 4}" r="3.6" fill="${s.color}" stroke="white" stroke-width="1"/>`);
    });
    if (rows > 0 && !p.hideLegend) {
      parts.push(`<rect x="${lx - 6}" y="${boxTop}" width="${boxW}" height="${boxH}" fill="white" fill-opacity="0.85" stroke="#ccc"/>`, ...legend);
    }
    parts.push('</g>');
  });
  parts.push(`<text x="${m.left + pw / 2}" y="${H - 10}" text-anchor="middle">${esc(opts.xLabel)}</text>`);
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

/**
 * The corner of a plot area for a legend box of w x h pixels that covers the fewest points of the
 * curves (`curves` in pixels, each segment sampled) and horizontal lines (`refYs`); ties go to
 * top right, bottom right, top left, bottom left.
 */
export function legendCorner(
  curves: ReadonlyArray<ReadonlyArray<[number, number]>>, refYs: readonly number[],
  area: { left: number; top: number; width: number; height: number }, w: number, h: number,
): { left: number; top: number } {
  const pad = 4;
  const right = area.left + area.width - w - pad;
  const bottom = area.top + area.height - h - pad;
  const corners = [
    { left: right, top: area.top + pad }, { left: right, top: bottom },
    { left: area.left + pad, top: area.top + pad }, { left: area.left + pad, top: bottom },
  ];
  const samples: Array<[number, number]> = [];
  for (const c of curves) {
    c.forEach((q, i) => {
      samples.push(q);
      if (i === 0) return;
      const [x0, y0] = c[i - 1];
      for (let k = 1; k < 8; k++) samples.push([x0 + ((q[0] - x0) * k) / 8, y0 + ((q[1] - y0) * k) / 8]);
    });
  }
  const cost = (b: { left: number; top: number }) =>
    samples.filter(([x, y]) => x >= b.left && x <= b.left + w && y >= b.top && y <= b.top + h).length +
    8 * refYs.filter((y) => y >= b.top && y <= b.top + h).length;
  let best = corners[0];
  for (const c of corners.slice(1)) if (cost(c) < cost(best)) best = c;
  return best;
}

/** A single-panel line chart (the earlier interface, kept for `mlm compare`). */
export function lineChartSvg(opts: { title: string; xLabel: string; yLabel: string; series: Series[]; logY?: boolean; width?: number; height?: number }): string {
  return chartSvg({
    title: opts.title,
    xLabel: opts.xLabel,
    width: opts.width ?? 640,
    panelHeight: (opts.height ?? 360) - 88,
    panels: [{ yLabel: opts.yLabel, series: opts.series, logY: opts.logY }],
  });
}
