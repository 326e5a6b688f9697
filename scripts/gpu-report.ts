// The two Node-side steps of scripts/gpu-run.sh (mlmkit's WebGPU backend against PyTorch on an
// NVIDIA GPU), kept here so that the shell script only sequences commands (USAGE below; --help
// prints it):
//
//   probe FILE [--allow-software]
//       Asks Dawn for its high-performance adapter (as `--backend webgpu` does), writes
//       {ok, adapter, software, reason} to FILE, prints one line. Exit 0: a hardware adapter (or a
//       software one with --allow-software); 3: only a software adapter; 4: no adapter at all.
//   summary RESULTS_DIR [OUT_DIR]
//       Reads what gpu-run.sh left in RESULTS_DIR (bench-webgpu-fp32/fp16.json,
//       torch-CONFIG-PRECISION.json, profile-webgpu.json, train-webgpu-PRECISION.json and
//       train-metrics-PRECISION.jsonl, precision-status.tsv, notes.txt, failed.txt, env.json,
//       cpu-peer/summary.md or cpu-peer.log), prints one table, the WebGPU/PyTorch ratios and the
//       issue's targets (met, not met, not measured), and writes summary.md and summary.json to
//       OUT_DIR (default RESULTS_DIR). Exit 1 when there are problems to report.
//
// Figures and their sources:
//   WebGPU   `mlm bench --backend webgpu --json [--precision fp16]` (training/bench.ts): the
//            `mlm train` step on random ids, MLM head at the masked positions only; train tok/s
//            over the measured steps, step ms = their median; model FLOPs per token
//            6 N + 12 L H T + 6 H V f, f ~0.15; dispatches, host and GPU ms per step.
//   PyTorch  scripts/bench-torch.py --device cuda --precision fp32 bf16 (strict float32; bf16
//            autocast): FLOPs per token with f = 1, since BertForMaskedLM computes
//            full-vocabulary logits.
//   train    `mlm train --backend webgpu --json --precision fp16|fp32` on the bundled data: tok/s
//            over the metrics windows after the first (the first compiles shaders), the held-out
//            loss of the final evaluation; fp16's within 2% of fp32's is a target.
// The ratio compares train tokens/s: the same job (one MLM training step on the same model and
// batch) done by each; TFLOP/s counts each side's own arithmetic.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { formatTable } from '../data/progress.ts';
import { readScriptArgs } from './script-args.ts';

const USAGE = `usage: node --import tsx scripts/gpu-report.ts probe FILE [--allow-software]
       node --import tsx scripts/gpu-report.ts summary RESULTS_DIR [OUT_DIR]`;

type Json = Record<string, unknown>;

function fail(message: string, code: number): never {
  process.stderr.write(`gpu-run: error: ${message}\n`);
  process.exit(code);
}

async function probe(file: string, allowSoftware: boolean): Promise<never> {
  const { probeWebGpu } = await import('../training/backend.ts');
  const { adapterLabel } = await import('../training/backend/webgpu.ts');
  const p = await probeWebGpu();
  const doc = {
    ok: p.ok,
    adapter: p.adapterInfo === null ? null : adapterLabel(p.adapterInfo),
    software: p.adapterInfo?.software ?? null,
    info: p.adapterInfo,
    reason: p.reason,
    vk_driver_files: process.env.VK_DRIVER_FILES ?? null,
  };
  fs.writeFileSync(file, JSON.stringify(doc, null, 2) + '\n');
  if (!p.ok) fail(`no WebGPU adapter: ${p.reason}`, 4);
  if (p.adapterInfo!.software && !allowSoftware) {
    fail(`the WebGPU adapter is '${doc.adapter}', a software (CPU) fallback, not the GPU; check NVIDIA's Vulkan driver (nvidia_icd.json, libGLX_nvidia.so.0; VK_DRIVER_FILES=${doc.vk_driver_files ?? 'unset'}), or pass --allow-software to run on it anyway`, 3);
  }
  process.stderr.write(`gpu-run: WebGPU adapter: ${doc.adapter}${doc.software ? ' (SOFTWARE: --allow-software)' : ''}\n`);
  process.exit(0);
}

function readJson(file: string): unknown {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    return null;
  }
}

const label = (config: unknown) => path.basename(String(config)).replace(/\.json$/, '');
const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

interface Row {
  config: string;
  /** 'webgpu' | 'webgpu (software)' | 'pytorch cuda'... */
  side: string;
  precision: string;
  what: string;
  train_tokens_per_second: number | null;
  train_step_ms: number | null;
  model_tflops_per_second: number | null;
  dispatches_per_step: number | null;
  host_ms_per_step: number | null;
  gpu_ms_per_step: number | null;
  device: string;
  note?: string;
}

interface Target {
  what: string;
  value: string;
  target: string;
  met: boolean | null;
}

/** Records of a bench file: one object or a list. */
function records(file: string): Json[] {
  const doc = readJson(file);
  return (Array.isArray(doc) ? doc : doc === null ? [] : [doc]) as Json[];
}

function readLines(file: string): string[] {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '');
  } catch {
    return [];
  }
}

/** The JSON objects of a .jsonl file; a line that does not parse (the torn last line of a run killed mid-write) is left out. */
function readJsonLines(file: string): Json[] {
  return readLines(file).flatMap((l) => {
    try {
      const v = JSON.parse(l) as unknown;
      return v !== null && typeof v === 'object' && !Array.isArray(v) ? [v as Json] : [];
    } catch {
      return [];
    }
  });
}

/** Train tokens/s over the metrics windows after the first (the first compiles shaders). */
function steadyRate(file: string): { tps: number; from: number; to: number } | null {
  const windows = readJsonLines(file)
    .filter((e) => typeof e.tokens_per_second === 'number' && typeof e.tokens === 'number' && !('eval_loss' in e));
  const later = windows.length > 1 ? windows.slice(1) : windows;
  if (later.length === 0) return null;
  const tokens = later.reduce((a, e) => a + (e.tokens as number), 0);
  const seconds = later.reduce((a, e) => a + (e.tokens as number) / (e.tokens_per_second as number), 0);
  return { tps: tokens / seconds, from: windows.length > 1 ? Number(windows[0].step) + 1 : 1, to: Number(later[later.length - 1].step) };
}

const fmt = (x: number | null, digits: number) => (x === null ? '-' : x.toFixed(digits));

function summary(dir: string, outDir: string): void {
  const rows: Row[] = [];
  const problems: string[] = readLines(path.join(dir, 'failed.txt'));
  const notes: string[] = readLines(path.join(dir, 'notes.txt'));
  const env = (readJson(path.join(dir, 'env.json')) ?? {}) as Json;
  const status = new Map(readLines(path.join(dir, 'precision-status.tsv')).map((l) => l.split('\t') as [string, string]));

  // WebGPU: mlm bench, one file per precision.
  for (const precision of ['fp32', 'fp16']) {
    for (const r of records(path.join(dir, `bench-webgpu-${precision}.json`))) {
      const config = label(r.config);
      if (r.skipped || r.failed) {
        problems.push(`mlm bench ${config} on webgpu ${precision}: ${String(r.skipped ?? r.failed)}`);
        continue;
      }
      if (r.loss_ok === false) problems.push(`mlm bench ${config} ${precision}: first loss ${String(r.loss_first)} is far from ln(vocab): the step computed something wrong`);
      rows.push({
        config,
        side: r.software ? 'webgpu (software)' : 'webgpu',
        precision: typeof r.precision === 'string' ? r.precision : precision,
        what: `mlm bench, ${r.batch_size}x${r.seq_len}, ${r.train_steps} steps`,
        train_tokens_per_second: num(r.train_tokens_per_second),
        train_step_ms: num(r.train_step_ms_median),
        model_tflops_per_second: num(r.model_tflops_per_second),
        dispatches_per_step: num(r.dispatches_per_step),
        host_ms_per_step: num(r.host_ms_per_step),
        gpu_ms_per_step: num(r.gpu_ms_per_step),
        device: String(r.device ?? ''),
      });
    }
  }

  // PyTorch: torch-CONFIG-PRECISION.json.
  for (const f of fs.readdirSync(dir).filter((n) => /^torch-.*\.json$/.test(n)).sort()) {
    const r = readJson(path.join(dir, f)) as Json | null;
    if (r === null || typeof r.train_tokens_per_second !== 'number') {
      problems.push(`${f}: no PyTorch result`);
      continue;
    }
    const precision = typeof r.precision === 'string' ? r.precision : r.tf32 ? 'tf32' : 'fp32';
    rows.push({
      config: label(r.config),
      side: `pytorch ${String(r.device_type)}`,
      precision: precision === 'bf16' ? 'bf16 autocast' : precision === 'fp32' && r.device_type === 'cuda' ? 'fp32 (TF32 off)' : precision,
      what: `${String(r.impl)}${r.attn_implementation ? ` (${r.attn_implementation})` : ''}, ${r.batch_size}x${r.seq_len}, ${r.train_steps} steps`,
      train_tokens_per_second: num(r.train_tokens_per_second),
      train_step_ms: num(r.train_step_ms_median),
      model_tflops_per_second: num(r.model_tflops_per_second),
      dispatches_per_step: null,
      host_ms_per_step: null,
      gpu_ms_per_step: null,
      device: String(r.device ?? ''),
    });
    if (r.loss_ok === false) problems.push(`${f}: first loss ${String(r.loss_first)} is far from ln(vocab)`);
  }

  // Configs in order of appearance, WebGPU rows before PyTorch rows within a config.
  const order = [...new Set(rows.map((r) => r.config))];
  rows.sort((a, b) => order.indexOf(a.config) - order.indexOf(b.config) || Number(a.side.startsWith('pytorch')) - Number(b.side.startsWith('pytorch')));

  // Ratios: every WebGPU row over every PyTorch row of its config.
  const ratios: { config: string; webgpu: string; pytorch: string; ratio: number }[] = [];
  for (const w of rows.filter((r) => r.side.startsWith('webgpu'))) {
    for (const t of rows.filter((r) => r.config === w.config && r.side.startsWith('pytorch'))) {
      if (w.train_tokens_per_second === null || t.train_tokens_per_second === null) continue;
      ratios.push({ config: w.config, webgpu: `webgpu ${w.precision}`, pytorch: `${t.side} ${t.precision}`, ratio: w.train_tokens_per_second / t.train_tokens_per_second });
    }
  }

  // Training runs: fp16 against fp32 on the bundled data.
  const trainArgs = (env.train ?? {}) as Json;
  const trains = new Map<string, { doc: Json | null; steady: ReturnType<typeof steadyRate> }>();
  for (const precision of ['fp16', 'fp32']) {
    const doc = readJson(path.join(dir, `train-webgpu-${precision}.json`)) as Json | null;
    const steady = steadyRate(path.join(dir, `train-metrics-${precision}.jsonl`));
    if (doc !== null || steady !== null) trains.set(precision, { doc, steady });
  }
  const trainLines: string[] = [];
  for (const [precision, { doc, steady }] of trains) {
    const done = doc !== null && typeof doc.eval_loss === 'number';
    trainLines.push(`${String(trainArgs.config)} ${precision}: ${done ? `${String(doc.step)} steps` : 'stopped before its end'}` +
      `${steady ? `, ${Math.round(steady.tps)} train tok/s (steps ${steady.from}-${steady.to})` : ''}` +
      `${done ? `, train loss ${fmt(num(doc.train_loss), 4)}, held-out loss ${fmt(num(doc.eval_loss), 4)}` : ''}`);
  }
  const l16 = num(trains.get('fp16')?.doc?.eval_loss);
  const l32 = num(trains.get('fp32')?.doc?.eval_loss);
  const lossDiff = l16 !== null && l32 !== null ? Math.abs(l16 - l32) / l32 : null;

  // The issue's targets (met: null when not measured in this run).
  const tps = (config: string, side: 'webgpu' | 'pytorch', precision: string) =>
    rows.find((r) => r.config === config && r.side.startsWith(side) && r.precision.startsWith(precision))?.train_tokens_per_second ?? null;
  const ratioTarget = (config: string, precision: string, min: number): Target => {
    const w = tps(config, 'webgpu', precision);
    const t = tps(config, 'pytorch', 'fp32');
    const ratio = w !== null && t !== null ? w / t : null;
    return { what: `${config} webgpu ${precision} / pytorch fp32 (train tok/s)`, value: ratio === null ? 'not measured' : `${ratio.toFixed(3)}x`, target: `>= ${min}x`, met: ratio === null ? null : ratio >= min };
  };
  const bestMini = ['fp16', 'fp32'].map((p) => ratioTarget('bert-mini', p, 0.25)).filter((t) => t.met !== null).sort((a, b) => parseFloat(b.value) - parseFloat(a.value))[0];
  const targets: Target[] = [
    ratioTarget('bert-base', 'fp16', 1.0),
    ratioTarget('bert-base', 'fp32', 0.5),
    bestMini ?? ratioTarget('bert-mini', 'fp32', 0.25),
    ...['fp32', 'fp16'].map((p): Target => {
      const d = rows.find((r) => r.config === 'bert-base' && r.side.startsWith('webgpu') && r.precision === p)?.dispatches_per_step ?? null;
      return { what: `bert-base webgpu ${p} dispatches per training step`, value: d === null ? 'not measured' : String(Math.round(d)), target: '<= 500', met: d === null ? null : d <= 500 };
    }),
    { what: `held-out loss, ${String(trainArgs.config)} fp16 vs fp32 (${String(trains.get('fp32')?.doc?.step ?? trainArgs.steps)} steps, seed ${String(trainArgs.seed)})`, value: lossDiff === null ? 'not measured' : `${(100 * lossDiff).toFixed(2)}% (${fmt(l16, 4)} vs ${fmt(l32, 4)})`, target: '<= 2%', met: lossDiff === null ? null : lossDiff <= 0.02 },
  ];

  // The profile's top kernels.
  const profile = readJson(path.join(dir, 'profile-webgpu.json')) as Json | null;
  const profiled = (profile?.profiled ?? null) as Json | null;
  const profileLines: string[] = [];
  if (profile !== null && profiled !== null) {
    profileLines.push(`${String(profile.config)} ${profile.batch_size}x${profile.seq_len}: one step ${fmt(num(profile.step_ms), 1)} ms wall, ${String(profile.dispatches)} dispatches in ${String(profile.compute_passes)} passes, ` +
      `${String(profile.submits)} submits, GPU ${fmt(num(profile.gpu_ms), 1)} ms; profiled (one program per pass): GPU ${fmt(num(profiled.gpu_ms), 1)} ms`);
    const list = (key: string, n: number) => ((profiled[key] ?? []) as Json[]).slice(0, n);
    const total = num(profiled.gpu_ms) ?? 0;
    for (const [key, n] of [['by_kernel', 15], ['by_pipeline', 10]] as const) {
      const items = list(key, n);
      if (items.length === 0) continue;
      profileLines.push('', `| ${key === 'by_kernel' ? 'kernel' : 'pipeline'} | GPU ms | share | calls |`, '| --- | ---: | ---: | ---: |');
      for (const e of items) profileLines.push(`| ${String(e.name)} | ${fmt(num(e.ms), 2)} | ${total > 0 ? ((100 * (e.ms as number)) / total).toFixed(1) : '-'}% | ${String(e.calls)} |`);
    }
  }

  // The CPU peer's own summary, when it wrote one.
  let peer: string[] = [];
  try {
    peer = fs.readFileSync(path.join(dir, 'cpu-peer', 'summary.md'), 'utf8').trimEnd().split('\n');
  } catch {
    const log = readLines(path.join(dir, 'cpu-peer.log'));
    if (log.length > 0) peer = ['```', ...log.slice(-15), '```'];
  }

  // Text for the log, markdown for summary.md.
  const cols = (r: Row) => [r.config, r.side, r.precision, r.what, fmt(r.train_tokens_per_second, 0), fmt(r.train_step_ms, 1), fmt(r.model_tflops_per_second, 3),
    r.dispatches_per_step === null ? '-' : String(Math.round(r.dispatches_per_step)), fmt(r.host_ms_per_step, 1), fmt(r.gpu_ms_per_step, 1), r.device];
  const heads = ['config', 'backend', 'precision', 'run', 'train tok/s', 'step ms', 'model TFLOP/s', 'dispatches/step', 'host ms/step', 'GPU ms/step', 'adapter / device'];
  const table = formatTable(rows.map((r) => Object.fromEntries(cols(r).map((c, i) => [heads[i], c]))));
  const statusLines = [...status.entries()].sort().map(([k, v]) => `${k}: ${v}`);
  const explain = [
    'train tok/s and step ms: one training step (forward, loss, backward, clip, AdamW) on batch x seq tokens; mlm bench and bench-torch.py time the measured steps after warmup (step ms: median)',
    'model TFLOP/s: 6 x non-embedding params + 12 x layers x hidden x seq + 6 x hidden x vocab x f per token; f = masked share (~0.15) for mlmkit, which scores masked positions only; f = 1 for PyTorch BertForMaskedLM (full-vocabulary logits)',
    'dispatches/step: compute dispatches a training step encodes, counted at the WebGPU API; GPU ms/step: GPU time of its compute passes (timestamp queries); host ms/step: wall time per step - GPU ms (training/bench.ts)',
    'pytorch fp32: TF32 off (torch >= 2.9: torch.backends.cuda.matmul.fp32_precision = "ieee"); bf16 autocast: torch.autocast(device, torch.bfloat16) around forward and loss, float32 weights and AdamW',
  ];
  const mark = (t: Target) => (t.met === null ? 'not measured' : t.met ? 'MET' : 'NOT MET');
  const text = [
    table, '',
    ratios.length ? formatTable(ratios.map((r) => ({ config: r.config, webgpu: r.webgpu, 'WebGPU / PyTorch (train tok/s)': `${r.ratio.toFixed(3)}x`, against: r.pytorch }))) : 'no WebGPU/PyTorch pair to compare',
    '', 'targets (issue: GPU training at PyTorch speed):', ...targets.map((t) => `  ${mark(t).padEnd(12)} ${t.what}: ${t.value} (target ${t.target})`),
    '', 'precision runs:', ...statusLines.map((l) => `  ${l}`),
    ...(trainLines.length ? ['', 'training runs on the bundled data:', ...trainLines.map((l) => `  ${l}`)] : []),
    ...(profileLines.length ? ['', 'profile:', profileLines[0]] : []),
    '', ...explain.map((n) => `- ${n}`), ...notes.map((n) => `NOTE: ${n}`), ...problems.map((p) => `PROBLEM: ${p}`),
  ].join('\n');
  process.stdout.write(`\n${text}\n`);

  const md = [
    `# mlmkit WebGPU against PyTorch: ${String(env.adapter ?? '?')}${env.quick ? ' (--quick)' : ''}`,
    '',
    `| ${heads.join(' | ')} |`,
    `| ${heads.map((h, i) => (i >= 4 && i <= 9 ? '---:' : '---')).join(' | ')} |`,
    ...rows.map((r) => `| ${cols(r).join(' | ')} |`),
    '',
    ...ratios.map((r) => `- ${r.config}: ${r.webgpu} / ${r.pytorch} = ${r.ratio.toFixed(3)}x (train tokens/s)`),
    '',
    '## Targets',
    '',
    '| target | value | wanted | |',
    '| --- | --- | --- | --- |',
    ...targets.map((t) => `| ${t.what} | ${t.value} | ${t.target} | ${mark(t)} |`),
    '',
    '## Precision runs',
    '',
    ...statusLines.map((l) => `- ${l}`),
    ...(trainLines.length ? ['', '## Training on the bundled data', '', ...trainLines.map((l) => `- ${l}`)] : []),
    ...(profileLines.length ? ['', '## Profile of one training step (GPU time)', '', ...profileLines] : []),
    ...(peer.length ? ['', '## CPU peer (scripts/cpu-peer.sh)', '', ...peer] : []),
    '',
    '## Notes',
    '',
    ...explain.map((n) => `- ${n}`),
    ...notes.map((n) => `- ${n}`),
    ...(problems.length ? ['', '## Problems', '', ...problems.map((p) => `- ${p}`)] : []),
  ].join('\n');
  fs.writeFileSync(path.join(outDir, 'summary.md'), md + '\n');
  fs.writeFileSync(path.join(outDir, 'summary.json'), JSON.stringify({ env, rows, ratios, targets, precision_status: Object.fromEntries(status), train: Object.fromEntries(trains), loss_relative_difference: lossDiff, profile, notes, problems }, null, 2) + '\n');
  if (problems.length > 0) process.exitCode = 1;
}

const [cmd, ...rest] = process.argv.slice(2);
if (cmd === 'probe') {
  const { values, operands } = readScriptArgs(rest, {
    program: 'gpu-report probe', usage: USAGE, options: { 'allow-software': { type: 'switch' } }, operands: { min: 1, name: 'FILE' },
  });
  await probe(operands[0]!, values['allow-software']);
} else if (cmd === 'summary') {
  const { operands } = readScriptArgs(rest, { program: 'gpu-report summary', usage: USAGE, options: {}, operands: { min: 1, max: 2, name: 'RESULTS_DIR' } });
  summary(operands[0]!, operands[1] ?? operands[0]!);
} else if (cmd === undefined || cmd.startsWith('-')) {
  // --help, or an option before the command: the reader prints the usage or refuses the option.
  readScriptArgs(process.argv.slice(2), { program: 'gpu-report', usage: USAGE, options: {} });
  fail('give a command: probe FILE [--allow-software] | summary RESULTS_DIR [OUT_DIR]', 2);
} else {
  fail(`unknown command ${JSON.stringify(cmd)}; the commands: probe FILE [--allow-software] | summary RESULTS_DIR [OUT_DIR]`, 2);
}
