// The two Node-side steps of scripts/gpu-run.sh (mlmkit's WebGPU backend against PyTorch on an
// NVIDIA GPU), kept here so that the shell script only sequences commands:
//
//   node --import tsx scripts/gpu-report.ts probe FILE [--allow-software]
//       Asks Dawn for its high-performance adapter (as `--backend webgpu` does), writes
//       {ok, adapter, software, reason} to FILE, prints one line. Exit 0: a hardware adapter (or a
//       software one with --allow-software); 3: only a software adapter; 4: no adapter at all.
//   node --import tsx scripts/gpu-report.ts summary DIR
//       Reads what gpu-run.sh left in DIR (bench-webgpu.json, train-webgpu.json,
//       train-metrics.jsonl, torch-*.json, env.json), prints one table and the WebGPU/PyTorch ratio
//       per config, and writes summary.json and summary.md there.
//
// Figures and their sources:
//   WebGPU   `mlm bench --backend webgpu --json` (training/bench.ts): the `mlm train` step on
//            random ids, MLM head at the masked positions only; train tok/s over the measured
//            steps, step ms = their median; model FLOPs per token 6 N + 12 L H T + 6 H V f, f ~0.15.
//   train    `mlm train --backend webgpu --json` on the bundled data: tok/s over all steps (the
//            first ones compile shaders), and steady state from metrics.jsonl (windows after the
//            first); model FLOP/s with the bench's formula for the same shape.
//   PyTorch  scripts/bench-torch.py --device cuda (strict float32; a second run with TF32 allowed):
//            FLOPs per token with f = 1, since BertForMaskedLM computes full-vocabulary logits.
// The ratio compares train tokens/s: the same job (one MLM training step on the same model and
// batch) done by each; TFLOP/s counts each side's own arithmetic.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { formatTable } from '../data/progress.ts';

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
  side: string;
  what: string;
  train_tokens_per_second: number | null;
  train_step_ms: number | null;
  model_tflops_per_second: number | null;
  device: string;
  note?: string;
}

function summary(dir: string): void {
  const rows: Row[] = [];
  const problems: string[] = [];
  const env = (readJson(path.join(dir, 'env.json')) ?? {}) as Json;

  // WebGPU: mlm bench.
  const bench = readJson(path.join(dir, 'bench-webgpu.json'));
  const benchRecords = (Array.isArray(bench) ? bench : bench === null ? [] : [bench]) as Json[];
  if (benchRecords.length === 0) problems.push('no mlm bench result (bench-webgpu.json); see gpu-run.log');
  const flopsPerToken = new Map<string, { perToken: number; seqLen: number }>();
  for (const r of benchRecords) {
    const config = label(r.config);
    if (r.skipped || r.failed) {
      problems.push(`mlm bench ${config} on webgpu: ${String(r.skipped ?? r.failed)}`);
      continue;
    }
    if (typeof r.model_flops_per_token === 'number') flopsPerToken.set(config, { perToken: r.model_flops_per_token, seqLen: Number(r.seq_len) });
    if (r.loss_ok === false) problems.push(`mlm bench ${config}: first loss ${String(r.loss_first)} is far from ln(vocab): the step computed something wrong`);
    rows.push({
      config,
      side: r.software ? 'webgpu (software)' : 'webgpu',
      what: `mlm bench, ${r.batch_size}x${r.seq_len}, ${r.train_steps} steps`,
      train_tokens_per_second: num(r.train_tokens_per_second),
      train_step_ms: num(r.train_step_ms_median),
      model_tflops_per_second: num(r.model_tflops_per_second),
      device: String(r.device ?? ''),
    });
  }

  // WebGPU: the mlm train run on real data. Its figures: the metrics windows after the first
  // (shader compilation happens in the first steps), else the run's overall tokens/s. A run
  // stopped by the time limit has no result document, but the windows it logged still count.
  const train = readJson(path.join(dir, 'train-webgpu.json')) as Json | null;
  const trainArgs = (env.train ?? {}) as Json;
  let windows: Json[] = [];
  try {
    windows = fs.readFileSync(path.join(dir, 'train-metrics.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Json)
      .filter((e) => typeof e.tokens_per_second === 'number' && typeof e.tokens === 'number' && !('eval_loss' in e));
  } catch {
    // no metrics
  }
  const rate = (ws: Json[]) => {
    const tokens = ws.reduce((a, e) => a + (e.tokens as number), 0);
    const seconds = ws.reduce((a, e) => a + (e.tokens as number) / (e.tokens_per_second as number), 0);
    return tokens / seconds;
  };
  const finished = train !== null && typeof train.tokens_per_second === 'number';
  if (finished || windows.length > 0) {
    const config = String(trainArgs.config ?? 'bert-mini');
    const tokensPerStep = Number(trainArgs.batch_size ?? 32) * Number(trainArgs.seq_len ?? 128);
    const later = windows.slice(1);
    const tps = later.length > 0 ? rate(later) : finished ? (train.tokens_per_second as number) : rate(windows);
    const steps = finished ? Number(train.step) : Number(windows[windows.length - 1].step);
    // FLOPs per token depend on seq_len: the bench's figure serves when its shape is the run's.
    const benchFlops = flopsPerToken.get(config);
    const fpt = benchFlops !== undefined && benchFlops.seqLen === Number(trainArgs.seq_len ?? 128) ? benchFlops.perToken : null;
    rows.push({
      config,
      side: env.adapter_software ? 'webgpu (software)' : 'webgpu',
      what: `mlm train, ${steps}${finished ? '' : ` of ${String(trainArgs.steps)} (stopped)`} steps on ${String(trainArgs.data_label ?? 'data')}${later.length > 0 ? `, steps ${Number(windows[0].step) + 1}-${steps}` : ''}`,
      train_tokens_per_second: tps,
      train_step_ms: (1000 * tokensPerStep) / tps,
      model_tflops_per_second: fpt === null ? null : (tps * fpt) / 1e12,
      device: String(env.adapter ?? ''),
      note: finished
        ? `all ${steps} steps: ${Math.round(train.tokens_per_second as number)} tok/s; train loss ${num(train.train_loss)?.toFixed(3)}, eval loss ${num(train.eval_loss)?.toFixed(3)}`
        : `stopped after step ${steps} (the figures are from its metrics.jsonl)`,
    });
  }
  if (!finished) problems.push('no mlm train result (train-webgpu.json); see gpu-run.log');

  // PyTorch.
  for (const f of fs.readdirSync(dir).filter((n) => /^torch-.*\.json$/.test(n)).sort()) {
    const r = readJson(path.join(dir, f)) as Json | null;
    if (r === null || typeof r.train_tokens_per_second !== 'number') {
      problems.push(`${f}: no PyTorch result`);
      continue;
    }
    const precision = r.device_type === 'cuda' ? (r.tf32 ? 'TF32' : 'fp32') : 'fp32';
    rows.push({
      config: label(r.config),
      side: `pytorch ${r.device_type} ${precision}`,
      what: `${String(r.impl)}${r.attn_implementation ? ` (${r.attn_implementation})` : ''}, ${r.batch_size}x${r.seq_len}, ${r.train_steps} steps`,
      train_tokens_per_second: num(r.train_tokens_per_second),
      train_step_ms: num(r.train_step_ms_median),
      model_tflops_per_second: num(r.model_tflops_per_second),
      device: String(r.device ?? ''),
    });
    if (r.loss_ok === false) problems.push(`${f}: first loss ${String(r.loss_first)} is far from ln(vocab)`);
  }

  // Configs in the order mlm bench ran them; within one, WebGPU rows first.
  const order = [...new Set(rows.map((r) => r.config))];
  rows.sort((a, b) => order.indexOf(a.config) - order.indexOf(b.config) || Number(a.side.startsWith('pytorch')) - Number(b.side.startsWith('pytorch')));

  // Ratios: WebGPU (mlm bench) over PyTorch, per config and PyTorch precision.
  const ratios: Json[] = [];
  for (const w of rows.filter((r) => r.side.startsWith('webgpu') && r.what.startsWith('mlm bench'))) {
    for (const t of rows.filter((r) => r.config === w.config && r.side.startsWith('pytorch'))) {
      if (w.train_tokens_per_second === null || t.train_tokens_per_second === null) continue;
      ratios.push({ config: w.config, webgpu: w.side, pytorch: t.side, ratio: w.train_tokens_per_second / t.train_tokens_per_second });
    }
  }

  // Numbers as right-aligned text, so that a missing one ('-') keeps its column aligned.
  const cells = (pick: (r: Row) => number | null, digits: number, title: string) => {
    const text = rows.map((r) => pick(r)?.toFixed(digits) ?? '-');
    const width = Math.max(title.length, ...text.map((t) => t.length));
    return text.map((t) => t.padStart(width));
  };
  const tps = cells((r) => r.train_tokens_per_second, 0, 'train tok/s');
  const ms = cells((r) => r.train_step_ms, 1, 'step ms');
  const tf = cells((r) => r.model_tflops_per_second, 4, 'model TFLOP/s');
  const table = formatTable(
    rows.map((r, i) => ({
      config: r.config,
      backend: r.side,
      run: r.what,
      'train tok/s': tps[i],
      'step ms': ms[i],
      'model TFLOP/s': tf[i],
      'adapter / device': r.device,
    })),
  );
  const ratioTable = formatTable(
    ratios.map((r) => ({ config: r.config as string, 'WebGPU / PyTorch (train tok/s)': `${(r.ratio as number).toFixed(3)}x`, against: r.pytorch as string })),
  );
  const notes = [
    'train tok/s and step ms: one training step (forward, loss, backward, clip, AdamW) on batch x seq tokens; mlm bench and bench-torch.py time the median measured step after warmup',
    'model TFLOP/s: 6 x non-embedding params + 12 x layers x hidden x seq + 6 x hidden x vocab x f per token; f = masked share (~0.15) for mlmkit, which scores masked positions only; f = 1 for PyTorch BertForMaskedLM (full-vocabulary logits)',
    'pytorch fp32: TF32 off (torch >= 2.9: torch.backends.cuda.matmul.fp32_precision = "ieee"; older: allow_tf32 = False); TF32: allowed',
    ...rows.filter((r) => r.note).map((r) => `${r.config} ${r.what}: ${r.note}`),
  ];
  const text = [table, '', ratioTable || 'no WebGPU/PyTorch pair to compare', '', ...notes.map((n) => `- ${n}`), ...problems.map((p) => `PROBLEM: ${p}`)].join('\n');
  process.stdout.write(`\n${text}\n`);

  const md = [
    '| config | backend | run | train tok/s | step ms | model TFLOP/s | adapter / device |',
    '| --- | --- | --- | ---: | ---: | ---: | --- |',
    ...rows.map((r) => `| ${r.config} | ${r.side} | ${r.what} | ${r.train_tokens_per_second?.toFixed(0) ?? ''} | ${r.train_step_ms?.toFixed(1) ?? ''} | ${r.model_tflops_per_second?.toFixed(4) ?? ''} | ${r.device} |`),
    '',
    ...ratios.map((r) => `- ${r.config as string}: WebGPU / ${r.pytorch as string} = ${(r.ratio as number).toFixed(3)}x (train tokens/s)`),
    '',
    ...notes.map((n) => `- ${n}`),
  ].join('\n');
  fs.writeFileSync(path.join(dir, 'summary.md'), md + '\n');
  fs.writeFileSync(path.join(dir, 'summary.json'), JSON.stringify({ env, rows, ratios, problems }, null, 2) + '\n');
  if (problems.length > 0) process.exitCode = 1;
}

const [cmd, arg, ...rest] = process.argv.slice(2);
if (cmd === 'probe' && arg) await probe(arg, rest.includes('--allow-software'));
else if (cmd === 'summary' && arg) summary(arg);
else fail('usage: gpu-report.ts probe FILE [--allow-software] | summary DIR', 2);
