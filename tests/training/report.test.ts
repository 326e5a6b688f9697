// The run folder's report (training/report.ts) and its charts (training/charts.ts): the EMA against
// a hand computation; log-axis ticks that cover the late, low part of a loss curve; well-formed SVG
// with a marker at every evaluation; report.md with the wall time, and for an adaptation run the
// step-0 evaluation and the before/after table (not for pretraining); the base model named after
// --resume.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ema, emaFactorFor, logTicks, MIN_TICK_GAP } from '../../training/charts.ts';
import {
  beforeAfterLines, evalChartSvg, lossChartSvg, optimizerChartSvg, readMetrics, type EvalLogEntry, type MetricsEntry, type TrainLogEntry,
} from '../../training/report.ts';
import { readTrainerState } from '../../training/train-state.ts';
import { TRAIN_DEFAULTS, type TrainOptions } from '../../training/trainer.ts';
import { brownDocuments, preparedFixture, trainOnWasm, writeTinyConfig, type PreparedFixture } from './train-helpers.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-report-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

// -------------------------------------------------------------------------------------------------
// SVG checks

/**
 * Checks that `svg` is well-formed XML as the charts write it (elements, quoted attributes, text
 * with escaped & and <, no comments or CDATA) and returns its elements in document order.
 */
function parseSvg(svg: string): Array<{ name: string; attrs: Record<string, string>; text: string }> {
  const elements: Array<{ name: string; attrs: Record<string, string>; text: string }> = [];
  const open: number[] = []; // indices in `elements` of the open elements
  const re = /<([^>]*)>|([^<]+)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(svg)) !== null) {
    if (m[2] !== undefined) {
      assert.ok(!/&(?!(amp|lt|gt|quot|apos|#\d+);)/.test(m[2]), `an unescaped & in ${JSON.stringify(m[2])}`);
      if (open.length === 0) assert.match(m[2], /^\s*$/, 'text outside the root element');
      else elements[open[open.length - 1]].text += m[2];
      continue;
    }
    const tag = m[1];
    if (tag.startsWith('/')) {
      assert.equal(tag.slice(1), elements[open.pop()!]?.name, `closing </${tag.slice(1)}> does not match`);
      continue;
    }
    const t = /^([a-zA-Z][\w:-]*)((?:\s+[a-zA-Z][\w:-]*="[^"<>]*")*)\s*(\/?)$/.exec(tag);
    assert.ok(t !== null, `malformed tag <${tag}>`);
    if (open.length === 0) assert.equal(elements.length, 0, 'a second root element');
    const attrs: Record<string, string> = {};
    for (const a of t[2].matchAll(/([a-zA-Z][\w:-]*)="([^"]*)"/g)) {
      assert.ok(!(a[1] in attrs), `attribute ${a[1]} twice in <${tag}>`);
      attrs[a[1]] = a[2];
    }
    elements.push({ name: t[1], attrs, text: '' });
    if (t[3] !== '/') open.push(elements.length - 1);
  }
  assert.deepEqual(open, [], 'unclosed elements');
  assert.equal(elements[0]?.name, 'svg');
  assert.equal(elements[0].attrs.xmlns, 'http://www.w3.org/2000/svg');
  return elements;
}


// -------------------------------------------------------------------------------------------------
// Units

test('ema: bias-corrected exponential moving average, against a hand computation', () => {
  // f = 0.5 over [4, 2, 3]: s = 2, 2, 2.5 before correction; divided by 1 - 0.5^k: 4, 2.6667, 2.857142...
  const got = ema([4, 2, 3], 0.5);
  const want = [2 / 0.5, (0.5 * 2 + 0.5 * 2) / 0.75, (0.5 * 2 + 0.5 * 3) / 0.875];
  assert.deepEqual(want.map((v) => Number(v.toFixed(12))), [4, 2.666666666667, 2.857142857143]);
  got.forEach((v, i) => assert.ok(Math.abs(v - want[i]) < 1e-12, `${i}: ${v} vs ${want[i]}`));
  // The same as a weighted mean with weights f^(age), normalised.
  const xs = [5, 1, 4, 1, 5, 9, 2, 6];
  const f = 0.8;
  const out = ema(xs, f);
  for (let i = 0; i < xs.length; i++) {
    let num = 0;
    let den = 0;
    for (let j = 0; j <= i; j++) { num += f ** (i - j) * xs[j]; den += f ** (i - j); }
    assert.ok(Math.abs(out[i] - num / den) < 1e-12);
  }
  assert.deepEqual(ema(xs, 0), xs);
  assert.throws(() => ema(xs, 1), /factor must be in \[0, 1\), got 1/);
  assert.equal(emaFactorFor(19), null);
  assert.equal(emaFactorFor(20), 0.6);
  assert.equal(emaFactorFor(100), 0.9);
  assert.equal(emaFactorFor(100_000), 0.99);
});

/** A pretraining-like curve: the loss falls from ln(2000) = 7.6 towards 3 (log every 5 steps, 400 steps), with noise. */
function pretrainingCurve(): MetricsEntry[] {
  const entries: MetricsEntry[] = [];
  let noise = 1;
  for (let step = 5; step <= 400; step += 5) {
    noise = (noise * 16807) % 2147483647;
    const loss = 3 + 4.6 * Math.exp(-step / 60) + 0.15 * ((noise / 2147483647) - 0.5);
    entries.push({ step, epoch: step / 400, loss, lr: 1e-3 * Math.min(1, step / 40) * (1 - step / 440), grad_norm: 0.5 + 2 * Math.exp(-step / 100), tokens_per_second: 1000, masked_tokens: 100, tokens: 1000 });
    if (step % 50 === 0) entries.push({ step, epoch: step / 400, eval_loss: loss + 0.1, eval_perplexity: Math.exp(loss + 0.1), eval_accuracy: 0.1 + step / 1000, eval_masked_tokens: 500 });
  }
  return entries;
}

/** The y ticks of each panel of a chart. */
function panelTicks(svg: string): Array<Array<{ value: number; y: number }>> {
  const els = parseSvg(svg);
  const starts = els.flatMap((e, i) => (e.attrs.class === 'panel' ? [i] : []));
  return starts.map((s, k) => els.slice(s, starts[k + 1] ?? els.length).filter((e) => e.attrs.class === 'ytick').map((e) => ({ value: Number(e.attrs['data-value']), y: Number(e.attrs.y) })));
}

function checkAxis(ticks: Array<{ value: number; y: number }>): void {
  // Labels never collide (positions are written to 0.1 px), and higher on the chart is a higher value.
  const sorted = [...ticks].sort((a, b) => a.value - b.value);
  for (let i = 1; i < sorted.length; i++) assert.ok(sorted[i - 1].y - sorted[i].y >= MIN_TICK_GAP - 0.2, `ticks ${sorted[i - 1].value} and ${sorted[i].value}`);
}

test('loss chart: ticks cover the late-training range: a log axis over the whole run (3+ ticks in the lower half of the losses) and a zoom on the second half (3+ ticks within its losses)', () => {
  const entries = pretrainingCurve();
  const svg = lossChartSvg(entries);
  const [whole, zoom] = panelTicks(svg);
  assert.ok(zoom !== undefined, 'the second half is squeezed: a zoomed panel');
  const losses = entries.filter((e): e is TrainLogEntry => 'loss' in e).map((e) => e.loss);
  const lo = Math.min(...losses);
  const hi = Math.max(...losses);
  const lowerHalf = whole.filter((t) => t.value >= lo && t.value <= lo + (hi - lo) / 2);
  assert.ok(lowerHalf.length >= 3, `ticks in [${lo}, ${(lo + hi) / 2}]: ${whole.map((t) => t.value)}`);
  const late = entries.filter((e): e is TrainLogEntry => 'loss' in e && e.step >= 200).map((e) => e.loss);
  const inLate = zoom.filter((t) => t.value >= Math.min(...late) && t.value <= Math.max(...late));
  assert.ok(inLate.length >= 3, `ticks within the second half's losses ${Math.min(...late)}..${Math.max(...late)}: ${zoom.map((t) => t.value)}`);
  checkAxis(whole);
  checkAxis(zoom);
  assert.match(svg, />steps 200 to the end, zoomed</);
  // The smoothed curve is drawn and named with its factor (80 points: 1 - 10/80 = 0.875, written to 2 decimals).
  assert.match(svg, />train, EMA \(factor 0\.88\)</);
  assert.equal(parseSvg(svg).filter((e) => e.name === 'polyline').length, 6); // raw, EMA, validation in each panel
  // A curve that moves as much late as early (an adaptation run) has one panel.
  const flat = entries.map((e) => ('loss' in e ? { ...e, loss: 3 - e.step / 400 } : e));
  assert.equal(panelTicks(lossChartSvg(flat)).length, 1);

  // logTicks alone: round values, increasing, within the range; evenly stepped over a factor of 3 or less.
  for (const [a, b] of [[2.9, 7.9], [1.9, 2.6], [0.3, 5], [20, 2000]]) {
    const t = logTicks(a, b, 300);
    assert.ok(t.length >= 4 && t.every((v, i) => v >= a && v <= b && (i === 0 || v > t[i - 1]) && Number(v.toPrecision(2)) === v), String(t));
  }
  assert.deepEqual(logTicks(1.9, 2.6, 300), [1.9, 2, 2.1, 2.2, 2.3, 2.4, 2.5, 2.6]);

  // A wide range (a model that is very bad on some documents: compare's documents.svg): few ticks,
  // at least MIN_TICK_GAP pixels apart, and no list of every fine multiple over the range (the
  // demo's axis, 1030.9 to 5.66e11, listed ~1.7e8 values and crashed `mlm compare`).
  for (const [a, b] of [[10, 1e9], [1.2, 5e12], [1030.9, 5.66e11]]) {
    const t = logTicks(a, b, 272);
    const px = (v: number) => (Math.log10(v / a) / Math.log10(b / a)) * 272;
    assert.ok(t.length >= 3 && t.length <= 40, String(t));
    for (let i = 1; i < t.length; i++) assert.ok(t[i] > t[i - 1] && px(t[i]) - px(t[i - 1]) >= MIN_TICK_GAP - 1e-9, `${t[i - 1]} ${t[i]}`);
  }
});

test('charts: well-formed SVG; a marker at every evaluation; the base model (step 0) as a dashed line; lr and gradient norm with the clipping threshold', () => {
  const entries = pretrainingCurve();
  entries.unshift({ step: 0, epoch: 0, eval_loss: 7.7, eval_perplexity: Math.exp(7.7), eval_accuracy: 0.01, eval_masked_tokens: 500 });
  const evals = entries.filter((e): e is EvalLogEntry => 'eval_loss' in e);
  const loss = parseSvg(lossChartSvg(entries));
  // Markers: the 9 evaluations, and again the 5 of the zoomed second half (the raw training curve has 80 points: no dots).
  assert.equal(loss.filter((e) => e.name === 'circle' && e.attrs.class === 'marker').length, evals.length + evals.filter((e) => e.step >= 200).length);
  const ref = loss.filter((e) => e.attrs.class === 'refline');
  assert.equal(ref.length, 1);
  assert.ok(loss.some((e) => e.name === 'text' && e.text === 'base model (step 0): 7.700'));

  const ev = parseSvg(evalChartSvg(entries));
  assert.equal(ev.filter((e) => e.attrs.class === 'marker').length, 2 * evals.length); // perplexity and accuracy panels
  assert.equal(ev.filter((e) => e.attrs.class === 'refline').length, 2);
  assert.equal(ev.filter((e) => e.attrs.class === 'panel').length, 2);

  const opt = parseSvg(optimizerChartSvg(entries, 1));
  assert.equal(opt.filter((e) => e.attrs.class === 'panel').length, 2);
  assert.ok(opt.some((e) => e.name === 'text' && e.text === 'clipped above 1 (--max-grad-norm)'));
  assert.equal(opt.filter((e) => e.name === 'polyline').length, 2);
  // No data: a chart that says so, still well-formed.
  assert.ok(parseSvg(lossChartSvg([])).some((e) => e.text === 'no data'));
  // Clipping off: no threshold line.
  assert.ok(parseSvg(optimizerChartSvg(entries, 0)).every((e) => e.attrs.class !== 'refline'));
});

test('the before/after table: base model (step 0), final model, the lowest loss when elsewhere, and the change', () => {
  const e = (step: number, loss: number, acc: number): EvalLogEntry => ({ step, epoch: 0, eval_loss: loss, eval_perplexity: Math.exp(loss), eval_accuracy: acc, eval_masked_tokens: 10 });
  assert.deepEqual(beforeAfterLines([e(10, 2, 0.5)]), []);
  assert.deepEqual(beforeAfterLines([e(0, 2, 0.5)]), []);
  const lines = beforeAfterLines([e(0, 2, 0.4), e(10, 1.5, 0.5), e(20, 1.6, 0.52)]);
  assert.deepEqual(lines, [
    '| metric | base model (step 0) | final model (step 20) | lowest loss (step 10) | change, base to final |',
    '| --- | ---: | ---: | ---: | ---: |',
    `| eval loss | 2.0000 | 1.6000 | 1.5000 | -0.4000 (-20.0%) |`,
    `| eval perplexity | ${Math.exp(2).toFixed(2)} | ${Math.exp(1.6).toFixed(2)} | ${Math.exp(1.5).toFixed(2)} | ${((100 * (Math.exp(1.6) - Math.exp(2))) / Math.exp(2)).toFixed(1)}% |`,
    '| eval accuracy | 40.00% | 52.00% | 50.00% | +12.00 points |',
  ]);
  // --load-best-at-end: the final model is the best checkpoint's.
  assert.match(beforeAfterLines([e(0, 2, 0.4), e(10, 1.5, 0.5), e(20, 1.6, 0.52)], 10)[0], /^\| metric \| base model \(step 0\) \| final model \(step 10\) \| change/);
});

// -------------------------------------------------------------------------------------------------
// Runs

let fixture: Promise<PreparedFixture> | null = null;
const data = () => (fixture ??= preparedFixture(path.join(tmp, 'fx'), brownDocuments(80_000), { vocabSize: 400, seqLen: 32 }));
const configFile = writeTinyConfig(path.join(tmp, 'tiny.json'), { max_position_embeddings: 32 });

function options(over: Partial<TrainOptions>): TrainOptions {
  return { ...TRAIN_DEFAULTS, data: '', out: '', steps: 6, batchSize: 8, logEvery: 1, evalEvery: 3, saveEvery: 3, evalBatches: 2, ...over };
}
async function run(o: TrainOptions, extra: { onStep?: (s: { step: number }) => void; signal?: AbortSignal } = {}) {
  return trainOnWasm(o, extra);
}
const report = (out: string) => fs.readFileSync(path.join(out, 'report.md'), 'utf8');
const evalSteps = async (out: string) => (await readMetrics(out)).filter((e) => 'eval_loss' in e).map((e) => e.step);

test('report.md: wall time for every run; an adaptation run evaluates the base model at step 0 and shows before/after, pretraining does not; the base model survives --resume', async () => {
  const fx = await data();
  const pre = path.join(tmp, 'pre');
  await run(options({ config: configFile, data: fx.dataDir, out: pre }));
  const preReport = report(pre);
  assert.match(preReport, /\n## Time\n\n\| \| \|\n\| --- \| --- \|\n\| wall time \| \d+\.\d s \|\n\| in training steps \| \d+\.\d s \(\d+% of the wall time/);
  assert.match(preReport, /\| tokens per second \| \d+ in the steps, \d+ over the wall time \(\d+ tokens\) \|/);
  assert.match(preReport, /- model: pretrained from scratch \(.*tiny\.json\), bert/);
  assert.doesNotMatch(preReport, /Before and after|base model/);
  assert.deepEqual(await evalSteps(pre), [3, 6]);
  for (const f of ['loss.svg', 'eval.svg', 'lr-grad-norm.svg']) parseSvg(fs.readFileSync(path.join(pre, f), 'utf8'));
  assert.ok(!fs.existsSync(path.join(pre, 'perplexity.svg')));

  // Adapt the pretrained model (the run folder's final model): step 0 is the base model.
  const adapt = path.join(tmp, 'adapt');
  const r = await run(options({ from: pre, data: fx.dataDir, out: adapt, lr: 1e-3 }));
  assert.deepEqual(await evalSteps(adapt), [0, 3, 6]);
  const text = report(adapt);
  assert.match(text, new RegExp(`- model: adapted from ${pre.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}, bert`));
  assert.match(text, /## Before and after\n\n.*\n\n\| metric \| base model \(step 0\) \| final model \(step 6\) \|/);
  const base = (await readMetrics(adapt)).find((e): e is EvalLogEntry => 'eval_loss' in e && e.step === 0)!;
  assert.ok(text.includes(`| eval loss | ${base.eval_loss.toFixed(4)} | ${r.eval_loss!.toFixed(4)} |`), text);
  assert.match(text, /\| 0 \(base model\) \| [\d.]+ \|/);
  assert.match(text, /\| wall time \| \d+\.\d s \|/);
  // Step 0 scores the base model as it is: the base run's own last evaluation (same data, seed and batches).
  const preLast = (await readMetrics(pre)).filter((e): e is EvalLogEntry => 'eval_loss' in e).pop()!;
  assert.equal(base.eval_loss, preLast.eval_loss);
  assert.equal(base.eval_accuracy, preLast.eval_accuracy);
  assert.equal(JSON.parse(fs.readFileSync(path.join(adapt, 'run.json'), 'utf8')).base_model, pre);
  // Switched off: no step 0.
  const off = path.join(tmp, 'adapt-off');
  await run(options({ from: pre, data: fx.dataDir, out: off, evalOnStart: false }));
  assert.deepEqual(await evalSteps(off), [3, 6]);
  assert.doesNotMatch(report(off), /Before and after/);
  // Asked for when pretraining: the random init's scores at step 0.
  const preZero = path.join(tmp, 'pre-zero');
  await run(options({ config: configFile, data: fx.dataDir, out: preZero, evalOnStart: true }));
  assert.deepEqual(await evalSteps(preZero), [0, 3, 6]);

  // Interrupted after step 4, resumed without --from: the base model and the step-0 evaluation stay, evaluated once.
  const cut = path.join(tmp, 'adapt-cut');
  const controller = new AbortController();
  const first = await run(options({ from: pre, data: fx.dataDir, out: cut }), { signal: controller.signal, onStep: ({ step }) => { if (step === 4) controller.abort(); } });
  assert.equal(first.interrupted, true);
  assert.equal((await readTrainerState(path.join(cut, 'checkpoint-4'))).base_model, pre);
  const wallBefore = (await readTrainerState(path.join(cut, 'checkpoint-4'))).wall_seconds!;
  await run(options({ data: fx.dataDir, out: cut, resume: true }));
  assert.deepEqual(await evalSteps(cut), [0, 3, 6]);
  const resumed = report(cut);
  assert.match(resumed, new RegExp(`- model: adapted from ${pre.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(resumed from .*checkpoint-4\\), bert`));
  assert.match(resumed, /\| metric \| base model \(step 0\) \| final model \(step 6\) \|/);
  const state = await readTrainerState(path.join(cut, 'checkpoint-6'));
  assert.equal(state.base_model, pre);
  assert.ok(state.wall_seconds! > wallBefore, 'the wall time adds up over the sessions');
  assert.match(resumed, /\| wall time \| [\d.]+ s \(this session [\d.]+ s\) \|/);
  assert.equal(JSON.parse(fs.readFileSync(path.join(cut, 'run.json'), 'utf8')).base_model, pre);
});
