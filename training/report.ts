// What a training run leaves beside its checkpoints for people and tools to read:
//   metrics.jsonl   one JSON object per line: a training log line every --log-every steps
//                   {step, epoch, loss, lr, grad_norm, tokens_per_second, masked_tokens, tokens}
//                   and an evaluation line {step, epoch, eval_loss, eval_perplexity,
//                   eval_accuracy, eval_masked_tokens} after each evaluation (step 0: the base
//                   model, evaluated before the first step with --eval-on-start);
//   report.md       written at the end: the final numbers, the time (wall clock and tokens/s), the
//                   base model against the final one when there is a step-0 evaluation, every
//                   evaluation, the arguments and the charts:
//   loss.svg        training loss (raw and EMA-smoothed), validation loss, the base model's line;
//   eval.svg        validation perplexity and accuracy against the base model's;
//   lr-grad-norm.svg   learning rate and gradient norm per logged step, with the clipping threshold.
// The charts are drawn by training/charts.ts.
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { writeFileAtomic } from '../common/atomic.ts';
import { chartSvg, ema, emaFactorFor, type Panel, type Series } from './charts.ts';

export const METRICS_FILE = 'metrics.jsonl';
export const REPORT_FILE = 'report.md';
export const LOSS_SVG = 'loss.svg';
export const EVAL_SVG = 'eval.svg';
export const OPTIMIZER_SVG = 'lr-grad-norm.svg';
/** The perplexity chart of earlier versions (the loss chart relabelled), removed when a report is written. */
export const OLD_PERPLEXITY_SVG = 'perplexity.svg';

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
// The charts

const BLUE = '#1f77b4';
const RED = '#d62728';
const GREY = '#555555';
const GREEN = '#2ca02c';
const PURPLE = '#9467bd';

/** The evaluation before the first step (`--eval-on-start`), when the run has one. */
export function stepZeroEval(evals: readonly EvalLogEntry[]): EvalLogEntry | null {
  return evals.find((e) => e.step === 0) ?? null;
}

/**
 * loss.svg: the logged training loss (each point the mean over --log-every steps), its EMA when
 * `smoothing` is a factor (null: none; absent: `emaFactorFor` the number of points), the validation
 * loss with a marker at every evaluation, and the base model's validation loss (step 0) as a
 * dashed line, on a log y axis. When the second half of the run spans under a third of the whole
 * range of losses (the early fall squeezes it), a second panel shows that half alone on a linear
 * axis, so the late curve gets its own ticks.
 */
export function lossChartSvg(entries: readonly MetricsEntry[], smoothing?: number | null): string {
  const train = entries.filter((e): e is TrainLogEntry => !isEvalEntry(e));
  const evals = entries.filter(isEvalEntry);
  const factor = smoothing === undefined ? emaFactorFor(train.length) : smoothing;
  const raw: Series = { name: 'train (logged mean)', color: BLUE, width: 1.2, points: train.map((e) => [e.step, e.loss]) };
  const series: Series[] = [];
  if (factor !== null && factor > 0) {
    const smooth = ema(train.map((e) => e.loss), factor);
    series.push({ ...raw, opacity: 0.35 }, { name: `train, EMA (factor ${factor})`, color: BLUE, width: 2, points: train.map((e, i) => [e.step, smooth[i]]) });
  } else {
    series.push(raw);
  }
  series.push({ name: 'validation', color: RED, width: 1.4, markers: 'always', points: evals.map((e) => [e.step, e.eval_loss]) });
  const base = stepZeroEval(evals);
  const panels: Panel[] = [{
    yLabel: 'cross-entropy (nats)',
    logY: true,
    series,
    refLines: base === null ? [] : [{ name: `base model (step 0): ${base.eval_loss.toFixed(3)}`, y: base.eval_loss, color: GREY }],
  }];
  const zoom = lateZoomFrom(series);
  if (zoom !== null) {
    panels[0].title = 'the whole run';
    panels.push({ title: `steps ${zoom} to the end, zoomed`, yLabel: 'cross-entropy (nats)', series, xFrom: zoom, hideLegend: true });
  }
  return chartSvg({ title: 'Masked-LM loss', xLabel: 'step', xFrom: 0, panels, panelHeight: zoom === null ? 300 : 220 });
}

/** Where the zoom on the second half of a loss chart starts, or null when that half is not squeezed (see `lossChartSvg`). */
export function lateZoomFrom(series: readonly Series[]): number | null {
  const points = series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  if (points.length === 0) return null;
  const last = Math.max(...points.map((p) => p[0]));
  const from = Math.round(last / 2);
  const late = points.filter((p) => p[0] >= from).map((p) => p[1]);
  const all = points.map((p) => p[1]);
  if (late.length < 3) return null;
  const spread = (v: number[]) => Math.max(...v) - Math.min(...v);
  return spread(late) < spread(all) / 3 ? from : null;
}

/** eval.svg: validation perplexity and accuracy at every evaluation, the base model's (step 0) as dashed lines. */
export function evalChartSvg(entries: readonly MetricsEntry[]): string {
  const evals = entries.filter(isEvalEntry);
  const base = stepZeroEval(evals);
  return chartSvg({
    title: 'Validation perplexity and accuracy',
    xLabel: 'step',
    xFrom: 0,
    panels: [
      {
        yLabel: 'perplexity',
        logY: true,
        series: [{ name: 'validation perplexity', color: RED, markers: 'always', points: evals.map((e) => [e.step, e.eval_perplexity]) }],
        refLines: base === null ? [] : [{ name: `base model (step 0): ${base.eval_perplexity.toFixed(2)}`, y: base.eval_perplexity, color: GREY }],
      },
      {
        yLabel: 'accuracy (%)',
        series: [{ name: 'validation accuracy', color: GREEN, markers: 'always', points: evals.map((e) => [e.step, 100 * e.eval_accuracy]) }],
        refLines: base === null ? [] : [{ name: `base model (step 0): ${(100 * base.eval_accuracy).toFixed(1)}%`, y: 100 * base.eval_accuracy, color: GREY }],
      },
    ],
  });
}

/** lr-grad-norm.svg: the learning rate and the gradient norm (before clipping) at every logged step, with the clipping threshold. */
export function optimizerChartSvg(entries: readonly MetricsEntry[], maxGradNorm: number | null): string {
  const train = entries.filter((e): e is TrainLogEntry => !isEvalEntry(e));
  return chartSvg({
    title: 'Learning rate and gradient norm',
    xLabel: 'step',
    xFrom: 0,
    panels: [
      { yLabel: 'learning rate', format: (v) => (v === 0 ? '0' : v.toExponential(1).replace('.0e', 'e')), series: [{ name: 'learning rate', color: PURPLE, points: train.map((e) => [e.step, e.lr]) }] },
      {
        yLabel: 'gradient norm',
        logY: true,
        series: [{ name: 'gradient norm (before clipping)', color: BLUE, width: 1.2, points: train.map((e) => [e.step, e.grad_norm]) }],
        refLines: maxGradNorm !== null && maxGradNorm > 0 ? [{ name: `clipped above ${maxGradNorm} (--max-grad-norm)`, y: maxGradNorm, color: RED }] : [],
      },
    ],
  });
}

// -------------------------------------------------------------------------------------------------
// report.md

/** Time figures of a run (see `ReportInfo.timing`). */
export interface RunTiming {
  /** Wall-clock seconds of the whole run: the sessions that led to the checkpoint it resumed from, plus this one. */
  wall_seconds: number;
  /** Wall-clock seconds of this session (the command that writes the report). */
  session_seconds: number;
  /** Seconds inside training steps, and the tokens they read, over the whole run. */
  step_seconds: number;
  tokens: number;
}

export interface ReportInfo {
  title: string;
  /** Final figures, shown as a table (name -> value). */
  final: Record<string, string | number | null>;
  /** The run's arguments (name -> value), shown as a table. */
  args: Record<string, unknown>;
  /** Free lines shown under the title (backend, data, model...). */
  notes: string[];
  timing?: RunTiming;
  /** The step whose evaluation is the final model's (the best one's with --load-best-at-end); default the last evaluation. */
  finalEvalStep?: number | null;
  /** The EMA factor of the smoothed training curve; null: none; absent: chosen from the number of points. */
  smoothing?: number | null;
}

export const REPORT_CHARTS = [LOSS_SVG, EVAL_SVG, OPTIMIZER_SVG] as const;

export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s - 3600 * h - 60 * m;
  if (h > 0) return `${h} h ${String(m).padStart(2, '0')} min`;
  if (m > 0) return `${m} min ${String(Math.round(r)).padStart(2, '0')} s`;
  return `${r.toFixed(1)} s`;
}

function cell(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(6)));
  return String(v).replace(/\|/g, '\\|');
}

function table(rec: Record<string, unknown>, head: [string, string]): string[] {
  return [`| ${head[0]} | ${head[1]} |`, '| --- | --- |', ...Object.entries(rec).map(([k, v]) => `| ${k} | ${cell(v)} |`)];
}

/** The "Time" section's lines. */
export function timingLines(t: RunTiming): string[] {
  const rate = (tokens: number, s: number) => (s > 0 ? String(Math.round(tokens / s)) : '');
  const resumed = t.wall_seconds > t.session_seconds + 1e-6;
  return [
    '| | |',
    '| --- | --- |',
    `| wall time | ${formatSeconds(t.wall_seconds)}${resumed ? ` (this session ${formatSeconds(t.session_seconds)})` : ''} |`,
    `| in training steps | ${formatSeconds(t.step_seconds)}${t.wall_seconds > 0 ? ` (${((100 * t.step_seconds) / t.wall_seconds).toFixed(0)}% of the wall time; the rest: loading, evaluation, checkpoints)` : ''} |`,
    `| tokens per second | ${rate(t.tokens, t.step_seconds)} in the steps, ${rate(t.tokens, t.wall_seconds)} over the wall time (${t.tokens} tokens) |`,
  ];
}

/**
 * The "Before and after" table: the base model's evaluation (step 0) against the final model's
 * (and the best evaluation's, when another one): loss, perplexity, accuracy and the change.
 * Empty without a step-0 evaluation and a later one.
 */
export function beforeAfterLines(evals: readonly EvalLogEntry[], finalStep?: number | null): string[] {
  const base = stepZeroEval(evals);
  const later = evals.filter((e) => e.step > 0);
  if (base === null || later.length === 0) return [];
  const final = (finalStep != null ? later.find((e) => e.step === finalStep) : undefined) ?? later[later.length - 1];
  const best = later.reduce((a, b) => (b.eval_loss < a.eval_loss ? b : a));
  const cols = [{ head: 'base model (step 0)', e: base }, { head: `final model (step ${final.step})`, e: final }];
  if (best.step !== final.step) cols.push({ head: `lowest loss (step ${best.step})`, e: best });
  const pct = (a: number, b: number) => `${b >= a ? '+' : ''}${((100 * (b - a)) / a).toFixed(1)}%`;
  const rows: Array<[string, (e: EvalLogEntry) => string, string]> = [
    ['eval loss', (e) => e.eval_loss.toFixed(4), `${final.eval_loss >= base.eval_loss ? '+' : ''}${(final.eval_loss - base.eval_loss).toFixed(4)} (${pct(base.eval_loss, final.eval_loss)})`],
    ['eval perplexity', (e) => e.eval_perplexity.toFixed(2), pct(base.eval_perplexity, final.eval_perplexity)],
    ['eval accuracy', (e) => `${(100 * e.eval_accuracy).toFixed(2)}%`, `${final.eval_accuracy >= base.eval_accuracy ? '+' : ''}${(100 * (final.eval_accuracy - base.eval_accuracy)).toFixed(2)} points`],
  ];
  return [
    `| metric | ${cols.map((c) => c.head).join(' | ')} | change, base to final |`,
    `| --- | ${cols.map(() => '---:').join(' | ')} | ---: |`,
    ...rows.map(([name, f, change]) => `| ${name} | ${cols.map((c) => f(c.e)).join(' | ')} | ${change} |`),
  ];
}

/** Writes OUT/report.md and its charts from OUT/metrics.jsonl. */
export async function writeReport(out: string, info: ReportInfo): Promise<void> {
  const entries = await readMetrics(out);
  const evals = entries.filter(isEvalEntry);
  const maxGradNorm = typeof info.args.max_grad_norm === 'number' ? info.args.max_grad_norm : null;
  const charts: Array<[string, string]> = [
    [LOSS_SVG, lossChartSvg(entries, info.smoothing)],
    [EVAL_SVG, evalChartSvg(entries)],
    [OPTIMIZER_SVG, optimizerChartSvg(entries, maxGradNorm)],
  ];
  for (const [name, svg] of charts) await writeFileAtomic(path.join(out, name), [Buffer.from(svg, 'utf8')]);
  await fsp.rm(path.join(out, OLD_PERPLEXITY_SVG), { force: true }); // the chart that eval.svg replaced

  const lines = [`# ${info.title}`, '', ...info.notes.map((n) => `- ${n}`), '', '## Results', '', ...table(info.final, ['metric', 'value']), ''];
  if (info.timing !== undefined) lines.push('## Time', '', ...timingLines(info.timing), '');
  const beforeAfter = beforeAfterLines(evals, info.finalEvalStep);
  if (beforeAfter.length > 0) lines.push('## Before and after', '', 'The validation split scored with the base model before the first step and with the final model.', '', ...beforeAfter, '');
  lines.push(
    '## Curves', '',
    `![loss](${LOSS_SVG})`, '',
    `![validation perplexity and accuracy](${EVAL_SVG})`, '',
    `![learning rate and gradient norm](${OPTIMIZER_SVG})`, '',
  );
  if (evals.length > 0) {
    lines.push('## Evaluations', '', '| step | eval loss | eval perplexity | eval accuracy |', '| ---: | ---: | ---: | ---: |');
    for (const e of evals) lines.push(`| ${e.step === 0 ? '0 (base model)' : e.step} | ${cell(e.eval_loss)} | ${cell(e.eval_perplexity)} | ${cell(e.eval_accuracy)} |`);
    lines.push('');
  }
  lines.push('## Arguments', '', ...table(info.args, ['argument', 'value']), '', `Per-step figures: \`${METRICS_FILE}\`.`, '');
  await writeFileAtomic(path.join(out, REPORT_FILE), [Buffer.from(lines.join('\n'), 'utf8')]);
}
