// What a training run leaves beside its checkpoints for people and tools to read:
//   metrics.jsonl   one JSON object per line: a training log line every --log-every steps
//                   {step, epoch, loss, lr, grad_norm, tokens_per_second, masked_tokens, tokens}
//                   and an evaluation line {step, epoch, eval_loss, eval_perplexity,
//                   eval_accuracy, eval_masked_tokens} after each evaluation;
//   report.md       the final numbers, the arguments and the curves, written at the end;
//   loss.svg, perplexity.svg   the curves report.md shows (plain SVG, no script, no fonts to load).
//
// The charts are drawn here with a few lines of SVG (a polyline per series, nice ticks) rather than
// with a plotting library: vega + vega-lite would bring ~30 packages for two line charts.
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { writeFileAtomic } from '../common/atomic.ts';

export const METRICS_FILE = 'metrics.jsonl';
export const REPORT_FILE = 'report.md';
export const LOSS_SVG = 'loss.svg';
export const PERPLEXITY_SVG = 'perplexity.svg';

export interface TrainLogEntry {
  step: number;
  epoch: number;
  loss: number;
  lr: number;
  grad_norm: number;
  tokens_per_second: number;
  masked_tokens: number;
  tokens: number;
}

export interface EvalLogEntry {
  step: number;
  epoch: number;
  eval_loss: number;
  eval_perplexity: number;
  eval_accuracy: number;
  eval_masked_tokens: number;
}

export type MetricsEntry = TrainLogEntry | EvalLogEntry;

export function isEvalEntry(e: MetricsEntry): e is EvalLogEntry {
  return 'eval_loss' in e;
}

/** Appends entries to OUT/metrics.jsonl (created when missing). */
export async function appendMetrics(out: string, ...entries: MetricsEntry[]): Promise<void> {
  if (entries.length === 0) return;
  await fsp.appendFile(path.join(out, METRICS_FILE), entries.map((e) => JSON.stringify(e) + '\n').join(''), 'utf8');
}

/** Every entry of OUT/metrics.jsonl ([] when there is none); a torn last line (a killed run) is skipped. */
export async function readMetrics(out: string): Promise<MetricsEntry[]> {
  let text: string;
  try {
    text = await fsp.readFile(path.join(out, METRICS_FILE), 'utf8');
  } catch {
    return [];
  }
  const entries: MetricsEntry[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    try {
      entries.push(JSON.parse(line) as MetricsEntry);
    } catch {
      // an unfinished line written as the process died
    }
  }
  return entries;
}

/** Replaces OUT/metrics.jsonl with `entries` (a resumed run restores the history of its checkpoint). */
export async function writeMetrics(out: string, entries: MetricsEntry[]): Promise<void> {
  await writeFileAtomic(path.join(out, METRICS_FILE), [Buffer.from(entries.map((e) => JSON.stringify(e) + '\n').join(''), 'utf8')]);
}

// -------------------------------------------------------------------------------------------------
// SVG line charts

export interface Series {
  name: string;
  points: Array<[number, number]>;
  color: string;
}

/** About `count` round tick values covering [lo, hi]. */
function ticks(lo: number, hi: number, count: number): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

/** Tick positions (log10 units) for a log axis over [lo, hi]: powers of ten over two decades or
 * more, round values of y itself over less. */
function logTicks(lo: number, hi: number): number[] {
  if (hi - lo >= 2) {
    const powers = ticks(lo, hi, 5).filter(Number.isInteger);
    if (powers.length >= 2) return powers;
  }
  return ticks(10 ** lo, 10 ** hi, 5).filter((v) => v > 0).map(Math.log10);
}

function fmt(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(1);
  return String(Number(v.toPrecision(4)));
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/**
 * A line chart as a standalone SVG document. `logY` plots log10(y) with ticks at powers of ten
 * (perplexity falls over orders of magnitude). Non-finite points are left out.
 */
export function lineChartSvg(opts: { title: string; xLabel: string; yLabel: string; series: Series[]; logY?: boolean; width?: number; height?: number }): string {
  const W = opts.width ?? 640;
  const H = opts.height ?? 360;
  const m = { left: 64, right: 16, top: 36, bottom: 48 };
  const pw = W - m.left - m.right;
  const ph = H - m.top - m.bottom;
  const ty = (y: number) => (opts.logY ? Math.log10(y) : y);
  const series = opts.series.map((s) => ({ ...s, points: s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(ty(y))) }));
  const all = series.flatMap((s) => s.points);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${esc(opts.title)}</text>`,
  ];
  if (all.length === 0) {
    parts.push(`<text x="${W / 2}" y="${H / 2}" text-anchor="middle" fill="#666">no data</text>`, '</svg>');
    return parts.join('\n') + '\n';
  }
  let x0 = Math.min(...all.map((p) => p[0]));
  let x1 = Math.max(...all.map((p) => p[0]));
  let y0 = Math.min(...all.map((p) => ty(p[1])));
  let y1 = Math.max(...all.map((p) => ty(p[1])));
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const pad = (y1 - y0) * 0.05;
  y0 -= pad;
  y1 += pad;
  const sx = (x: number) => m.left + ((x - x0) / (x1 - x0)) * pw;
  const sy = (y: number) => m.top + ph - ((ty(y) - y0) / (y1 - y0)) * ph;
  const syRaw = (v: number) => m.top + ph - ((v - y0) / (y1 - y0)) * ph;

  // Axes, grid, ticks.
  parts.push(`<g stroke="#ddd" stroke-width="1">`);
  const xt = ticks(x0, x1, 6);
  const yt = opts.logY ? logTicks(y0, y1) : ticks(y0, y1, 5);
  for (const v of xt) parts.push(`<line x1="${sx(v).toFixed(1)}" y1="${m.top}" x2="${sx(v).toFixed(1)}" y2="${m.top + ph}"/>`);
  for (const v of yt) parts.push(`<line x1="${m.left}" y1="${syRaw(v).toFixed(1)}" x2="${m.left + pw}" y2="${syRaw(v).toFixed(1)}"/>`);
  parts.push('</g>');
  parts.push(`<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#444"/>`);
  for (const v of xt) parts.push(`<text x="${sx(v).toFixed(1)}" y="${m.top + ph + 16}" text-anchor="middle">${fmt(v)}</text>`);
  for (const v of yt) {
    const label = opts.logY ? fmt(10 ** v) : fmt(v);
    parts.push(`<text x="${m.left - 6}" y="${(syRaw(v) + 4).toFixed(1)}" text-anchor="end">${label}</text>`);
  }
  parts.push(`<text x="${m.left + pw / 2}" y="${H - 10}" text-anchor="middle">${esc(opts.xLabel)}</text>`);
  parts.push(`<text transform="translate(14 ${m.top + ph / 2}) rotate(-90)" text-anchor="middle">${esc(opts.yLabel)}${opts.logY ? ' (log scale)' : ''}</text>`);

  // Lines, a dot on every point of short series, and the legend.
  series.forEach((s, i) => {
    if (s.points.length === 0) return;
    const pts = s.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' ');
    parts.push(`<polyline fill="none" stroke="${s.color}" stroke-width="1.6" points="${pts}"/>`);
    if (s.points.length <= 40) {
      for (const [x, y] of s.points) parts.push(`<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="2.4" fill="${s.color}"/>`);
    }
    const ly = m.top + 14 + i * 16;
    parts.push(`<line x1="${m.left + pw - 120}" y1="${ly - 4}" x2="${m.left + pw - 100}" y2="${ly - 4}" stroke="${s.color}" stroke-width="2"/>`);
    parts.push(`<text x="${m.left + pw - 94}" y="${ly}">${esc(s.name)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

// -------------------------------------------------------------------------------------------------
// report.md

export interface ReportInfo {
  title: string;
  /** Final figures, shown as a table (name -> value). */
  final: Record<string, string | number | null>;
  /** The run's arguments (name -> value), shown as a table. */
  args: Record<string, unknown>;
  /** Free lines shown under the title (backend, data, model...). */
  notes: string[];
}

/** Writes OUT/report.md and the two SVG curves from OUT/metrics.jsonl. */
export async function writeReport(out: string, info: ReportInfo): Promise<void> {
  const entries = await readMetrics(out);
  const train = entries.filter((e): e is TrainLogEntry => !isEvalEntry(e));
  const evals = entries.filter(isEvalEntry);
  const lossSvg = lineChartSvg({
    title: 'Masked-LM loss',
    xLabel: 'step',
    yLabel: 'cross-entropy (nats)',
    series: [
      { name: 'train', color: '#1f77b4', points: train.map((e) => [e.step, e.loss]) },
      { name: 'validation', color: '#d62728', points: evals.map((e) => [e.step, e.eval_loss]) },
    ],
  });
  const pplSvg = lineChartSvg({
    title: 'Perplexity (exp of the masked-token loss)',
    xLabel: 'step',
    yLabel: 'perplexity',
    logY: true,
    series: [
      { name: 'train', color: '#1f77b4', points: train.map((e) => [e.step, Math.exp(e.loss)]) },
      { name: 'validation', color: '#d62728', points: evals.map((e) => [e.step, e.eval_perplexity]) },
    ],
  });
  await writeFileAtomic(path.join(out, LOSS_SVG), [Buffer.from(lossSvg, 'utf8')]);
  await writeFileAtomic(path.join(out, PERPLEXITY_SVG), [Buffer.from(pplSvg, 'utf8')]);

  const cell = (v: unknown): string => {
    if (v === null || v === undefined) return '';
    if (typeof v === 'number') return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(6)));
    return String(v).replace(/\|/g, '\\|');
  };
  const table = (rec: Record<string, unknown>, head: [string, string]): string[] => [
    `| ${head[0]} | ${head[1]} |`,
    '| --- | --- |',
    ...Object.entries(rec).map(([k, v]) => `| ${k} | ${cell(v)} |`),
  ];
  const lines = [
    `# ${info.title}`,
    '',
    ...info.notes.map((n) => `- ${n}`),
    '',
    '## Results',
    '',
    ...table(info.final, ['metric', 'value']),
    '',
    '## Curves',
    '',
    `![loss](${LOSS_SVG})`,
    '',
    `![perplexity](${PERPLEXITY_SVG})`,
    '',
  ];
  if (evals.length > 0) {
    lines.push('## Evaluations', '', '| step | eval loss | eval perplexity | eval accuracy |', '| ---: | ---: | ---: | ---: |');
    for (const e of evals) lines.push(`| ${e.step} | ${cell(e.eval_loss)} | ${cell(e.eval_perplexity)} | ${cell(e.eval_accuracy)} |`);
    lines.push('');
  }
  lines.push('## Arguments', '', ...table(info.args, ['argument', 'value']), '', `Per-step figures: \`${METRICS_FILE}\`.`, '');
  await writeFileAtomic(path.join(out, REPORT_FILE), [Buffer.from(lines.join('\n'), 'utf8')]);
}
