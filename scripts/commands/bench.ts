// `mlm bench`: training and evaluation throughput of masked LMs on TF.js backends (docs/formats.md,
// "Command output"). The measuring is training/bench.ts; this file plans the runs, runs each
// (config, backend) pair in its own child process, measures the CPU's matmul peak, and prints.
//
// Why child processes. Peak RSS (ru_maxrss) only ever grows, so one process per run gives each run
// its own figure; a backend that crashes (the wasm heap aborts past 4 GB, a GPU driver fault) ends
// its own run only; and each run starts from a cold backend, as a user's `mlm train` does. The
// child is this command with --no-isolate: it runs one config on one backend and prints one JSON
// object. `--no-isolate` is also what scripts/bench-peer.ts calls, one process per run.
//
// `--backend all` tries every backend of docs/backends.md (tensorflow-gpu, tensorflow, webgpu,
// wasm, cpu) and lists the ones that do not load with the reason. Two are slow by nature and run
// on the smallest config only, with 2 measured steps (and say so in the output):
//   cpu      pure JavaScript (~1 GFLOP/s), and its UnsortedSegmentSum (the gradient of the
//            embedding lookup) loops over every vocabulary id, each time over all B*T rows:
//            ~V x B x T x H work per step (`cpuSegmentSumSeconds`). Runs whose estimate exceeds a
//            minute per step are skipped with the estimate and the command to measure it by hand:
//            with a 30522-token vocabulary that is every shape above a few rows.
//   webgpu on a software adapter (Mesa llvmpipe, SwiftShader...): a correctness run, marked
//            `software: true`, not a speed figure.
// Name a backend (`--backend cpu`) to measure it on any config with the steps you ask for.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { InputError, requireInteger } from '../../common/errors.ts';
import { formatDuration, formatTable } from '../../data/progress.ts';
import { AUTO_ORDER, blasOptions, defaultBlasThreads, isBackendName, probeWebGpu, resolveBackendName, selectBackend } from '../../training/backend.ts';
import {
  BENCH_DEFAULTS, benchmarkModel, checkBenchOptions, checkBenchSeqLen, measureMatmulPeak, parameterCounts, type BenchMeasurement, type BenchOptions, type MatmulPeak, type MatmulPeakSkipped,
} from '../../training/bench.ts';
import { readConfigArgument } from '../../training/checkpoint.ts';
import type { ModelConfig } from '../../training/models/config.ts';
import { checkPrecisionName } from '../../training/precision.ts';
import { NO_BAR_PROGRESS_OPTION } from './progress-option.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const MLM = path.join(ROOT, 'scripts', 'mlm.mjs');

interface BenchArgs {
  config: string[];
  backend: string[];
  'batch-size': number;
  'seq-len': number;
  steps: number;
  'warmup-steps': number;
  'eval-steps': number;
  'max-seconds': number;
  'rows-per-pass': number;
  precision: string;
  seed: number;
  'matmul-peak': boolean;
  'blas-threads'?: number;
  isolate: boolean;
  json: boolean;
}

/** One row of the output: a run's figures (those of docs/formats.md, "Command output", first), or why it did not run. */
export type BenchRecord = Record<string, unknown> & { backend: string; config: string };

/** A config given as a file, or as a name of the bundled configs/ (`bert-mini`). */
function resolveConfig(value: string): string {
  if (fs.existsSync(value)) return value;
  for (const candidate of [path.join(ROOT, 'configs', value), path.join(ROOT, 'configs', `${value}.json`)]) {
    if (fs.existsSync(candidate)) return path.relative(process.cwd(), candidate) || candidate;
  }
  const bundled = fs.readdirSync(path.join(ROOT, 'configs')).filter((f) => f.endsWith('.json')).map((f) => f.replace(/\.json$/, ''));
  throw new InputError(`--config ${value} not found; give a model config.json or one of ${bundled.join(', ')}`);
}

const configLabel = (file: string) => path.basename(file).replace(/\.json$/, '');

/**
 * Seconds the cpu backend's UnsortedSegmentSum (the gradient of the word-embedding lookup) takes in
 * one step: tfjs-backend-cpu loops over the vocabulary ids, each time comparing all B*T ids and
 * summing a [B*T, H] product, so the cost is ~V x B x T x H. Measured here: 100 s for
 * V 30522 x 4 x 32 rows x H 128, i.e. ~5e6 elements per second; 32 x 128 rows did not finish one
 * step in 12 minutes (14 GB resident).
 */
function cpuSegmentSumSeconds(config: ModelConfig, batchSize: number, seqLen: number): number {
  return (config.vocab_size * batchSize * seqLen * config.hidden_size) / 5e6;
}
/** `--backend all` leaves out a cpu run whose steps would take longer than this. */
const CPU_STEP_LIMIT_S = 60;

/** The record of docs/formats.md ("Command output") for one measured run, with the extra figures after it. */
function record(
  m: BenchMeasurement,
  run: { backend: string; device: string; software: boolean; config: string; batchSize: number; seqLen: number },
  vocabSize: number,
): BenchRecord {
  const round = (x: number, digits = 2) => Number(x.toFixed(digits));
  const lossOk = Math.abs(m.lossFirst - Math.log(vocabSize)) < 1;
  return {
    backend: run.backend,
    device: run.device,
    config: run.config,
    batch_size: run.batchSize,
    seq_len: run.seqLen,
    params: m.params,
    train_tokens_per_second: round(m.trainTokensPerSecond, 1),
    train_step_ms_median: round(m.trainStepMs.median, 1),
    eval_tokens_per_second: round(m.evalTokensPerSecond, 1),
    peak_rss_mb: round(process.resourceUsage().maxRSS / 1024, 1),
    tensors_leaked_per_step: m.tensorsLeakedPerStep,
    model_tflops_per_second: round(m.modelTflopsPerSecond, 5),
    // Beyond section 9.
    software: run.software,
    non_embedding_params: m.nonEmbeddingParams,
    model_flops_per_token: Math.round(m.modelFlopsPerToken),
    scored_fraction: round(m.scoredFraction, 4),
    train_steps: m.trainSteps,
    warmup_steps: m.warmupSteps,
    train_step_ms_min: round(m.trainStepMs.min, 1),
    train_step_ms_q1: round(m.trainStepMs.q1, 1),
    train_step_ms_q3: round(m.trainStepMs.q3, 1),
    train_step_ms_max: round(m.trainStepMs.max, 1),
    eval_steps: m.evalSteps,
    eval_step_ms_median: round(m.evalStepMs.median, 1),
    eval_step_ms_min: round(m.evalStepMs.min, 1),
    eval_step_ms_max: round(m.evalStepMs.max, 1),
    rows_per_pass: m.rowsPerPass,
    passes_per_step: m.passesPerStep,
    reads_per_step: m.readsPerStep,
    device_reads_per_step: m.deviceReadsPerStep,
    uploads_per_step: m.uploadsPerStep,
    upload_mb_per_step: m.uploadBytesPerStep === null ? null : round(m.uploadBytesPerStep / 1e6, 2),
    eval_reads_per_step: m.evalReadsPerStep,
    // Dispatches and host time per training step (training/bench.ts, file header): on webgpu the
    // compute dispatches at the WebGPU API, elsewhere the TF.js kernel calls; host ms = step wall
    // time - GPU time of its compute passes (timestamp queries), null without a GPU timer.
    dispatches_per_step: m.dispatchesPerStep,
    dispatches_counted: m.dispatchesCounted,
    kernels_per_step: m.kernelsPerStep,
    compute_passes_per_step: m.passesPerStepGpu,
    submits_per_step: m.submitsPerStep,
    host_ms_per_step: m.hostMsPerStep === null ? null : round(m.hostMsPerStep, 2),
    gpu_ms_per_step: m.gpuMsPerStep === null ? null : round(m.gpuMsPerStep, 2),
    gpu_timer: m.gpuTimer,
    gpu_timestamps_quantized: m.gpuTimestampsQuantized,
    gpu_untimed_passes: m.gpuUntimedPasses,
    drain_ms: round(m.drainMs, 2),
    eval_dispatches_per_step: m.evalDispatchesPerStep,
    eval_tensors_leaked_per_step: m.evalTensorsLeakedPerStep,
    precision: m.precision,
    fp16_overflow_steps: m.overflowSteps,
    loss_first: round(m.lossFirst, 4),
    loss_last: round(m.lossLast, 4),
    loss_expected: round(Math.log(vocabSize), 4),
    // A fresh model predicts close to uniformly: its first loss is ln(V) + ~0.1. Anything far
    // from it means the backend computed something else (the figures then time the wrong work).
    loss_ok: lossOk,
  };
}

interface RunPlan {
  config: string;
  backend: string;
  steps: number;
  warmupSteps: number;
  evalSteps: number;
  /** Why the plan differs from what was asked, or why it is skipped. */
  note?: string;
  skip?: string;
}

/** Runs `mlm bench --no-isolate` for one plan; stderr passes through, stdout is the JSON record. */
function runChild(plan: RunPlan, a: BenchArgs): Promise<{ code: number; record: BenchRecord | null; lastError: string }> {
  const argv = [
    MLM, 'bench', '--no-isolate', '--json', '--no-matmul-peak',
    '--config', plan.config, '--backend', plan.backend,
    '--batch-size', String(a['batch-size']), '--seq-len', String(a['seq-len']),
    '--steps', String(plan.steps), '--warmup-steps', String(plan.warmupSteps), '--eval-steps', String(plan.evalSteps),
    '--max-seconds', String(a['max-seconds']), '--rows-per-pass', String(a['rows-per-pass']), '--seed', String(a.seed),
    '--precision', a.precision,
  ];
  return new Promise((resolve) => {
    const child = spawn(process.execPath, argv, { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let errTail = '';
    let partial = '';
    // Progress passes through line by line; the child's one-line error is reported by this process.
    const pass = (text: string) => {
      const lines = (partial + text).split('\n');
      partial = lines.pop()!;
      for (const line of lines) if (!/^mlm: (error|failed): /.test(line)) process.stderr.write(line + '\n');
    };
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d: Buffer) => {
      pass(d.toString());
      errTail = (errTail + d.toString()).slice(-4000);
    });
    child.on('close', (code, signal) => {
      if (partial !== '') pass('\n');
      const lines = errTail.split('\n').map((l) => l.trim()).filter(Boolean);
      const mlmLine = [...lines].reverse().find((l) => l.startsWith('mlm: '));
      const lastError = (mlmLine ?? lines[lines.length - 1] ?? (signal ? `killed by ${signal}` : `exit code ${code}`)).replace(/^mlm: (error|failed): /, '');
      // The record is the last line that is a JSON object: Dawn prints WebGPU validation errors on
      // stdout, before it.
      let rec: BenchRecord | null = null;
      if (code === 0) {
        const line = out.split('\n').reverse().find((l) => l.startsWith('{'));
        try {
          rec = line === undefined ? null : (JSON.parse(line) as BenchRecord);
        } catch {
          rec = null;
        }
      }
      const why = signal ? `killed by ${signal}` : code === 0 && rec === null ? 'the run printed no result' : lastError;
      resolve({ code: code ?? 1, record: rec, lastError: why });
    });
  });
}

/** What the flags ask of `benchmarkModel`. */
function benchOptions(a: BenchArgs, log: (line: string) => void): BenchOptions {
  return {
    ...BENCH_DEFAULTS,
    batchSize: a['batch-size'],
    seqLen: a['seq-len'],
    steps: a.steps,
    warmupSteps: a['warmup-steps'],
    evalSteps: a['eval-steps'],
    maxSeconds: a['max-seconds'],
    rowsPerPass: a['rows-per-pass'],
    precision: checkPrecisionName(a.precision),
    seed: a.seed,
    log,
  };
}

/** One config on one backend in this process: the child's side (and `--no-isolate`). */
async function runHere(a: BenchArgs, configFile: string, backendName: string): Promise<BenchRecord> {
  const log = (line: string) => process.stderr.write(line + '\n');
  const config = readConfigArgument(configFile);
  const name = resolveBackendName(backendName, process.env);
  // Whether a webgpu adapter is software is asked before TF.js takes the device; `auto` never picks one.
  const software = name === 'webgpu' ? (await probeWebGpu()).adapterInfo?.software === true : false;
  const backend = await selectBackend(name, { log, ...blasOptions(process.env) });
  log(`bench: ${configLabel(configFile)} on ${backend.name} (${backend.device}), batch ${a['batch-size']} x ${a['seq-len']}`);
  const m = await benchmarkModel(backend.tf, backend.name, config, benchOptions(a, log));
  return record(m, { backend: backend.name, device: backend.device, software, config: configFile, batchSize: a['batch-size'], seqLen: a['seq-len'] }, config.vocab_size);
}

/**
 * Attaches the CPU's matmul peak and the utilisation against it, for runs whose kernels run on
 * the CPU (wasm, cpu, tensorflow, a software webgpu adapter); a GPU's utilisation is not measured
 * against the CPU.
 */
function withPeak(r: BenchRecord, peak: MatmulPeak | MatmulPeakSkipped | null): BenchRecord {
  if (peak === null || typeof r.model_tflops_per_second !== 'number') return r;
  const onCpu = r.backend === 'wasm' || r.backend === 'cpu' || r.backend === 'tensorflow' || r.software === true;
  if (!onCpu) return { ...r, matmul_peak_gflops: null, model_flop_utilisation: null, matmul_peak_note: 'a GPU run: no CPU yardstick' };
  if (!peak.ok) return { ...r, matmul_peak_gflops: null, model_flop_utilisation: null, matmul_peak_note: peak.reason };
  return {
    ...r,
    matmul_peak_gflops: Number(peak.gflops.toFixed(1)),
    model_flop_utilisation: Number(((r.model_tflops_per_second * 1000) / peak.gflops).toFixed(5)),
    matmul_peak_blas: peak.blas,
  };
}

function printTable(records: BenchRecord[], peak: MatmulPeak | MatmulPeakSkipped | null, notes: string[], load: number[]): void {
  const ran = records.filter((r) => typeof r.train_tokens_per_second === 'number');
  const rows = ran.map((r) => ({
    config: configLabel(r.config),
    backend: `${r.backend}${r.software ? ' (sw)' : ''}`,
    'params(M)': (r.params as number) / 1e6,
    'train tok/s': r.train_tokens_per_second as number,
    'step ms med': r.train_step_ms_median as number,
    'step ms min-max': `${Math.round(r.train_step_ms_min as number)}-${Math.round(r.train_step_ms_max as number)}`,
    steps: r.train_steps as number,
    'eval tok/s': r.eval_tokens_per_second as number,
    'TFLOP/s': r.model_tflops_per_second as number,
    'MFU%': typeof r.model_flop_utilisation === 'number' ? 100 * r.model_flop_utilisation : '',
    'RSS MB': r.peak_rss_mb as number,
    'leak/step': r.tensors_leaked_per_step as number,
    'reads/step': r.reads_per_step as number,
    loss: r.loss_ok ? 'ok' : `WRONG (${r.loss_first})`,
  }));
  const out: string[] = [''];
  if (rows.length > 0) out.push(formatTable(rows, { 'params(M)': 2, 'train tok/s': 0, 'step ms med': 0, 'eval tok/s': 0, 'TFLOP/s': 4, 'MFU%': 2, 'RSS MB': 0 }), '');
  const batch = ran[0] ?? records[0];
  if (batch && typeof batch.batch_size === 'number') out.push(`batch ${batch.batch_size} x seq ${batch.seq_len}; random token ids, 15% masked; step = forward + backward + AdamW, head at masked positions only`);
  out.push('model FLOPs per trained token = 6 x non-embedding params + 12 x layers x hidden x seq_len + 6 x hidden x vocab x masked fraction');
  if (peak !== null) {
    out.push(peak.ok
      ? `CPU float32 matmul peak (numpy, ${peak.threads} threads, n = 512..2048): ${peak.gflops.toFixed(1)} GFLOP/s; MFU% = model FLOP/s / that peak; BLAS: ${peak.blas}`
      : `CPU matmul peak not measured: ${peak.reason}`);
  }
  for (const r of ran) {
    if (r.device_reads_per_step !== null && r.device_reads_per_step !== undefined) {
      out.push(`${configLabel(r.config)} on ${r.backend}: per training step ${r.device_reads_per_step} GPU->CPU reads, ${r.uploads_per_step} CPU->GPU uploads (${r.upload_mb_per_step} MB)`);
    }
    if (!r.loss_ok) out.push(`WARNING: ${configLabel(r.config)} on ${r.backend}: first loss ${r.loss_first}, expected ~ln(vocab) = ${r.loss_expected} for a fresh model: this backend computed a wrong step; its figures time the wrong work`);
  }
  // One line per backend and reason, naming the configs it covers.
  const skips = new Map<string, string[]>();
  for (const r of records) {
    if (r.skipped) {
      const key = `${r.backend}\u0000${r.skipped}`;
      skips.set(key, [...(skips.get(key) ?? []), configLabel(r.config)]);
    }
    if (r.failed) out.push(`FAILED ${r.backend} on ${configLabel(r.config)}: ${r.failed}`);
  }
  for (const [key, cfgs] of skips) {
    const [backend, why] = key.split('\u0000');
    out.push(`skipped ${backend} (${cfgs.join(', ')}): ${why}`);
  }
  out.push(...notes);
  out.push(`load average at start: ${load.map((x) => x.toFixed(2)).join(', ')} (${os.cpus().length} CPUs)`);
  process.stdout.write(out.join('\n') + '\n');
}

export const benchCommand: CommandModule<object, BenchArgs> = {
  command: 'bench',
  describe: 'Time training and evaluation steps of masked LMs on TF.js backends',
  builder: (y: Argv) =>
    y
      .option('config', { type: 'string', array: true, default: ['bert-mini'], describe: 'model config files, or names in configs/ (bert-tiny, bert-mini, bert-small...)' })
      .option('backend', { type: 'string', array: true, default: ['auto'], describe: 'backends: auto|tensorflow-gpu|tensorflow|webgpu|wasm|cpu, or all (every one that loads)' })
      .option('batch-size', { type: 'number', default: BENCH_DEFAULTS.batchSize, describe: 'rows per training step' })
      .option('seq-len', { type: 'number', default: BENCH_DEFAULTS.seqLen, describe: 'tokens per row (at most the model\'s positions)' })
      .option('steps', { type: 'number', default: BENCH_DEFAULTS.steps, describe: 'measured training steps (at least 2)' })
      .option('warmup-steps', { type: 'number', default: BENCH_DEFAULTS.warmupSteps, describe: 'training steps run before timing' })
      .option('eval-steps', { type: 'number', default: 5, describe: 'measured evaluation steps' })
      .option('max-seconds', { type: 'number', default: 0, describe: 'end a phase\'s measured steps once they took this long, after at least 2 (0: no limit)' })
      .option('rows-per-pass', { type: 'number', default: 0, describe: 'rows per forward/backward pass (0: as `mlm train` chooses for the backend)' })
      .option('seed', { type: 'number', default: BENCH_DEFAULTS.seed, describe: 'seeds the random rows and their masks, the initial weights and dropout' })
      .option('precision', { type: 'string', default: BENCH_DEFAULTS.precision, describe: 'fp32, fp16 (webgpu f16 matmuls, loss scaling, as `mlm train --precision fp16`) or auto' })
      .option('matmul-peak', { type: 'boolean', default: true, describe: 'measure the CPU\'s float32 matmul peak with numpy, for MFU (--no-matmul-peak to skip)' })
      .option('blas-threads', {
        type: 'number',
        describe: 'BLAS threads of the matmul-peak probe (default: as many as the wasm backend\'s BLAS runs on, MLM_BLAS_THREADS or one per CPU up to 8)',
      })
      .option('isolate', { type: 'boolean', default: true, describe: 'each run in its own child process (--no-isolate: one config, one backend, here)' })
      .option('json', { type: 'boolean', default: false, describe: 'print JSON on stdout: one run\'s object, or a list' })
      .option('progress', NO_BAR_PROGRESS_OPTION)
      .epilogue(
        'Data: random token ids, [CLS] ... [SEP] rows without padding, masked 15% (80/10/10) with --seed. A training step is ' +
          '`mlm train`\'s: forward + loss at the masked positions + backward + global-norm clip + AdamW, cut into passes as ' +
          '`mlm train` does for memory. Model FLOPs per trained token: 6 x non-embedding params + 12 x layers x hidden x seq_len ' +
          '+ 6 x hidden x vocab x masked fraction. With --backend all, cpu and a software webgpu adapter run on the smallest ' +
          'config only, with 2 steps, and cpu only where its embedding gradient (~vocab x rows x hidden) takes under a minute. ' +
          'The PyTorch peer: `node --import tsx scripts/bench-peer.ts`.',
      )
      .example('$0 bench --config bert-mini --backend wasm', 'bert-mini, batch 32 x 128, 20 steps on wasm')
      .example('$0 bench --config bert-base --backend webgpu --precision fp16', 'bert-base with f16 matmuls on tensor cores (where the GPU has subgroup matrices)')
      .example('$0 bench --config bert-tiny bert-mini bert-small --backend all --max-seconds 100', 'what `npm run bench` runs')
      .example('$0 bench --config configs/bert-tiny.json --backend wasm --steps 2 --batch-size 4 --seq-len 32 --json', 'a quick check, as JSON') as unknown as Argv<BenchArgs>,
  handler: async (args: ArgumentsCamelCase<BenchArgs>) => {
    // Checked here once, before any child process starts, as each run would check them.
    checkBenchOptions(benchOptions(args, () => {}));
    // The peak at the threads the measured run uses, so that MFU compares like with like (a fixed
    // 2 overstated it on every machine with more CPUs).
    const peakThreads = args['blas-threads'] ?? blasOptions(process.env).blasThreads ?? defaultBlasThreads();
    requireInteger(peakThreads, 'blas-threads', 1);
    const configs = [...new Set(args.config.map(resolveConfig))];
    const parsed = new Map(configs.map((c) => [c, readConfigArgument(c)]));
    for (const config of parsed.values()) checkBenchSeqLen(config, args['seq-len']);
    const all = args.backend.includes('all');
    for (const b of args.backend) {
      if (b !== 'all' && !isBackendName(b)) throw new InputError(`unknown backend '${b}' (--backend): use auto, tensorflow-gpu, tensorflow, webgpu, wasm, cpu or all`);
    }
    const backends = all ? [...AUTO_ORDER] : [...new Set(args.backend)];
    const noF16 = backends.filter((b) => b !== 'webgpu' && b !== 'auto');
    if (args.precision === 'fp16' && noF16.length > 0) {
      throw new InputError(`--precision fp16 needs the webgpu backend (its f16 kernels), not ${noF16.join(', ')}: use --backend webgpu, or --precision fp32`);
    }
    const load = os.loadavg();

    if (!args.isolate) {
      if (configs.length !== 1 || backends.length !== 1) throw new InputError('--no-isolate runs one --config on one --backend; give one of each');
      let r = await runHere(args, configs[0], backends[0]);
      const peak = args['matmul-peak'] ? await measureMatmulPeak({ threads: peakThreads }) : null;
      r = withPeak(r, peak);
      r.load_average = load.map((x) => Number(x.toFixed(2)));
      if (args.json) process.stdout.write(JSON.stringify(r) + '\n');
      else printTable([r], peak, [], load);
      return;
    }

    // The plan. Slow backends under `all`: the smallest config only, 2 measured steps.
    const notes: string[] = [];
    const slow = new Map<string, string>();
    if (all) {
      slow.set('cpu', 'the pure-JS cpu backend is ~1 GFLOP/s');
      const probe = await probeWebGpu();
      if (probe.ok && probe.adapterInfo?.software) slow.set('webgpu', `webgpu on a software adapter (${probe.reason}): a correctness run, not a speed figure`);
    }
    const smallest = [...configs].sort((x, y) => parameterCounts(parsed.get(x)!).total - parameterCounts(parsed.get(y)!).total)[0];
    const plans: RunPlan[] = [];
    for (const config of configs) {
      for (const backend of backends) {
        const plan: RunPlan = { config, backend, steps: args.steps, warmupSteps: args['warmup-steps'], evalSteps: args['eval-steps'] };
        const why = slow.get(backend);
        const cpuStep = backend === 'cpu' ? cpuSegmentSumSeconds(parsed.get(config)!, args['batch-size'], args['seq-len']) : 0;
        if (why !== undefined && cpuStep > CPU_STEP_LIMIT_S) {
          plan.skip = `the pure-JS cpu backend's embedding gradient (UnsortedSegmentSum, one pass over all ${args['batch-size'] * args['seq-len']} rows per vocabulary id) ` +
            `would take ~${formatDuration(cpuStep)} per step here (vocab ${parsed.get(config)!.vocab_size}); measure it by name at a small shape: ` +
            `mlm bench --config ${configLabel(config)} --backend cpu --batch-size 4 --seq-len 32 --steps 2 --warmup-steps 0`;
        } else if (why !== undefined) {
          if (config !== smallest) {
            plan.skip = `${why}; measured on ${configLabel(smallest)} only (name it, --backend ${backend}, to measure this config)`;
          } else {
            plan.steps = 2;
            plan.warmupSteps = backend === 'cpu' ? 0 : Math.min(1, args['warmup-steps']); // cpu compiles nothing; webgpu compiles shaders
            plan.evalSteps = 1;
            plan.note = `${backend} on ${configLabel(config)}: ${plan.steps} steps, ${plan.warmupSteps} warmup (--backend all): ${why}`;
          }
        }
        plans.push(plan);
      }
    }

    // Matmul peak first, while nothing else of ours runs.
    let peak: MatmulPeak | MatmulPeakSkipped | null = null;
    if (args['matmul-peak']) {
      process.stderr.write(`bench: CPU float32 matmul peak (numpy, ${peakThreads} threads)...\n`);
      peak = await measureMatmulPeak({ threads: peakThreads });
      process.stderr.write(peak.ok ? `bench: matmul peak ${peak.gflops.toFixed(1)} GFLOP/s (${peak.blas})\n` : `bench: matmul peak not measured: ${peak.reason}\n`);
    }

    const records: BenchRecord[] = [];
    const unavailable = new Map<string, string>();
    const namedMissing: string[] = [];
    let failures = 0;
    for (const plan of plans) {
      const base = { backend: plan.backend, config: plan.config };
      if (plan.skip !== undefined) {
        records.push({ ...base, skipped: plan.skip });
        continue;
      }
      const gone = unavailable.get(plan.backend);
      if (gone !== undefined) {
        records.push({ ...base, skipped: gone });
        continue;
      }
      if (plan.note !== undefined) {
        notes.push(`note: ${plan.note}`);
        process.stderr.write(`bench: ${plan.note}\n`);
      }
      const runLoad = os.loadavg();
      const r = await runChild(plan, args);
      if (r.record !== null) {
        const rec = withPeak({ ...r.record, config: plan.config }, peak);
        rec.load_average = runLoad.map((x) => Number(x.toFixed(2)));
        if (plan.note !== undefined) rec.note = plan.note;
        records.push(rec);
      } else if (r.code === 2 && /^backend /.test(r.lastError)) {
        // The backend does not load here: a skip under `all`, an input error when named (below).
        if (!all) namedMissing.push(r.lastError);
        unavailable.set(plan.backend, r.lastError.replace(/^backend [\w-]+: /, 'not available: '));
        records.push({ ...base, skipped: unavailable.get(plan.backend)! });
      } else if (r.code === 2) {
        throw new InputError(r.lastError);
      } else {
        failures++;
        records.push({ ...base, failed: r.lastError });
      }
    }

    // A backend asked for by name that does not load is bad input: the one-line error alone when
    // nothing ran, else after the figures of the runs that did.
    const ran = records.some((r) => !r.skipped && !r.failed);
    if (namedMissing.length > 0 && !ran) throw new InputError(namedMissing[0]);
    if (args.json) {
      process.stdout.write(JSON.stringify(records.length === 1 ? records[0] : records) + '\n');
    } else {
      printTable(records, peak, notes, load);
    }
    for (const line of namedMissing) process.stderr.write(`mlm: error: ${line}\n`);
    if (namedMissing.length > 0) process.exitCode = 2;
    else if (failures > 0) process.exitCode = 1;
  },
};
