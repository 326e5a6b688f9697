// mlmkit against PyTorch on the same CPU, in the same run: the training throughput of one model
// configuration, measured alternately (mlmkit, PyTorch, mlmkit, PyTorch...) so that both sides
// see the same machine load, each run in a fresh process:
//   mlmkit   `mlm bench --no-isolate` (training/bench.ts: the `mlm train` step, MLM head at the
//            masked positions only)
//   PyTorch  scripts/bench-torch.py (BertForMaskedLM-shaped model from torch.nn, full-vocabulary
//            logits, AdamW, --threads threads)
// and prints the median and spread (min-max) of training tokens/s of each side and their ratio.
// Its usage: USAGE below (--help prints it).
//
// Needs Debian's python3-torch and libopenblas0-pthread (without OpenBLAS, PyTorch falls back to
// the reference BLAS and runs several times slower, which would flatter mlmkit). Both sides run
// with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed from their environment and --threads threads
// (mlmkit: MLM_BLAS_THREADS and MLM_WASM_THREADS); the BLAS kernel each side uses is printed.
// Model FLOPs per token differ between the sides: 6 N + 12 L H T + 6 H V f with f ~0.15 for mlmkit
// (sparse head) and f = 1 for PyTorch (full logits); tokens/s compares the same job done, TFLOP/s
// the arithmetic rate.
import { spawn, spawnSync } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatTable } from '../data/progress.ts';
import { deviceMatmuls, pythonExecutable, spread } from '../training/bench.ts';
import { readScriptOptions } from './script-args.ts';

const USAGE = `usage: node --import tsx scripts/bench-peer.ts [--config configs/bert-mini.json] [--runs 5]
         [--steps 5] [--warmup-steps 1] [--eval-steps 1] [--batch-size 32] [--seq-len 128] [--threads 2]
         [--backend wasm] [--impl nn|transformers] [--json]`;

const here = path.dirname(fileURLToPath(import.meta.url));
// The counts stay as typed: both sides get them verbatim, and the check below judges them.
const a = readScriptOptions(process.argv.slice(2), {
  program: 'bench-peer',
  usage: USAGE,
  options: {
    config: { type: 'string', default: 'configs/bert-mini.json' },
    runs: { type: 'string', default: '5' },
    steps: { type: 'string', default: '5' },
    'warmup-steps': { type: 'string', default: '1' },
    'eval-steps': { type: 'string', default: '1' },
    'batch-size': { type: 'string', default: '32' },
    'seq-len': { type: 'string', default: '128' },
    threads: { type: 'string', default: '2' },
    backend: { type: 'string', default: 'wasm' },
    impl: { type: 'string', default: 'nn' },
    json: { type: 'switch' },
  },
});
const runs = Number(a.runs);
const python = pythonExecutable();
const log = (line: string) => process.stderr.write(line + '\n');

function fail(message: string): never {
  process.stderr.write(`bench-peer: ${message}\n`);
  process.exit(2);
}

for (const k of ['runs', 'steps', 'warmup-steps', 'eval-steps', 'batch-size', 'seq-len', 'threads'] as const) {
  const v = Number(a[k]);
  if (!(Number.isInteger(v) && v >= (k === 'warmup-steps' ? 0 : 1))) fail(`--${k} must be a positive integer, got ${a[k]}`);
}
if (Number(a.steps) < 2) fail('--steps must be at least 2');
if (a.impl !== 'nn' && a.impl !== 'transformers') fail(`--impl must be nn or transformers, got ${a.impl}`);

// PyTorch present? One line saying what to install when not.
const check = spawnSync(python, ['-c', 'import torch'], { encoding: 'utf8' });
if (check.error !== undefined || check.status !== 0) {
  fail(`PyTorch is not importable by ${python}: install python3-torch and libopenblas0-pthread (apt) to compare`);
}

type Doc = Record<string, unknown> & { train_tokens_per_second: number; model_tflops_per_second: number; params: number };

/** Runs a command, passing its stderr through; resolves with the last JSON object line of its stdout. */
function runJson(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<Doc> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: path.join(here, '..'), env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let errTail = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d: Buffer) => {
      process.stderr.write(d);
      errTail = (errTail + d.toString()).slice(-2000);
    });
    child.on('error', reject);
    child.on('close', (code) => {
      const line = out.split('\n').reverse().find((l) => l.startsWith('{'));
      if (code !== 0 || line === undefined) {
        reject(new Error(`${path.basename(args[0] ?? cmd)} exited with ${code}: ${errTail.trim().split('\n').pop() ?? ''}`));
        return;
      }
      resolve(JSON.parse(line) as Doc);
    });
  });
}

const common = ['--config', a.config!, '--batch-size', a['batch-size']!, '--seq-len', a['seq-len']!, '--steps', a.steps!, '--warmup-steps', a['warmup-steps']!, '--eval-steps', a['eval-steps']!];
// OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE make OpenBLAS use another kernel than it picks for the
// CPU (some machines set them): both sides run without them, with the same thread count.
const baseEnv: NodeJS.ProcessEnv = { ...process.env };
delete baseEnv.OPENBLAS_CORETYPE;
delete baseEnv.OPENBLAS_L2_SIZE;
const mlmkitEnv = { ...baseEnv, MLM_BLAS_THREADS: a.threads, MLM_WASM_THREADS: a.threads };
const mlmkitRun = () =>
  runJson(process.execPath, [path.join(here, 'mlm.mjs'), 'bench', '--no-isolate', '--json', '--no-matmul-peak', '--backend', a.backend!, ...common], mlmkitEnv);
const torchEnv = { ...baseEnv, OMP_NUM_THREADS: a.threads, OPENBLAS_NUM_THREADS: a.threads, MKL_NUM_THREADS: a.threads };
const torchRun = () => runJson(python, [path.join(here, 'bench-torch.py'), '--json', '--threads', a.threads!, '--impl', a.impl!, ...common], torchEnv);

const loadStart = os.loadavg();
const results: { run: number; side: 'mlmkit' | 'pytorch'; doc: Doc }[] = [];
try {
  for (let i = 1; i <= runs; i++) {
    log(`bench-peer: run ${i}/${runs}: mlmkit (${a.backend})`);
    results.push({ run: i, side: 'mlmkit', doc: await mlmkitRun() });
    log(`bench-peer: run ${i}/${runs}: pytorch (${a.threads} threads)`);
    results.push({ run: i, side: 'pytorch', doc: await torchRun() });
  }
} catch (err) {
  process.stderr.write(`bench-peer: failed: ${(err as Error).message}\n`);
  process.exit(1);
}
const loadEnd = os.loadavg();

const side = (s: 'mlmkit' | 'pytorch') => results.filter((r) => r.side === s).map((r) => r.doc);
const summary = (docs: Doc[]) => {
  const tps = spread(docs.map((d) => d.train_tokens_per_second));
  const tflops = spread(docs.map((d) => d.model_tflops_per_second));
  return { train_tokens_per_second: tps, model_tflops_per_second: tflops };
};
const m = summary(side('mlmkit'));
const t = summary(side('pytorch'));
const ratio = m.train_tokens_per_second.median / t.train_tokens_per_second.median;
const first = (s: 'mlmkit' | 'pytorch') => side(s)[0];
const notes: string[] = [];
if (first('mlmkit').params !== first('pytorch').params) notes.push(`WARNING: parameter counts differ: mlmkit ${first('mlmkit').params}, pytorch ${first('pytorch').params}`);
const blas = String(first('pytorch').blas ?? '');
const mlmkitBlas = deviceMatmuls(String(first('mlmkit').device)) ?? 'unknown';
if (!/\(/.test(blas)) notes.push(`WARNING: PyTorch does not run on OpenBLAS here (${blas || 'no BLAS library found'}): install libopenblas0-pthread, or the comparison flatters mlmkit`);
for (const r of results) if (r.doc.loss_ok === false) notes.push(`WARNING: ${r.side} run ${r.run}: first loss ${r.doc.loss_first} is far from ln(vocab)`);

if (a.json) {
  process.stdout.write(JSON.stringify({
    config: a.config, batch_size: Number(a['batch-size']), seq_len: Number(a['seq-len']), steps: Number(a.steps), runs,
    mlmkit: { backend: first('mlmkit').backend, device: first('mlmkit').device, ...m },
    pytorch: { torch: first('pytorch').torch, threads: first('pytorch').threads, blas, ...t },
    blas_kernels: { mlmkit: mlmkitBlas, pytorch: blas },
    ratio_train_tokens_per_second: ratio,
    load_average_start: loadStart, load_average_end: loadEnd,
    runs_detail: results.map((r) => ({ run: r.run, side: r.side, ...r.doc })),
    notes,
  }) + '\n');
} else {
  const rows = results.map((r) => ({
    run: r.run,
    side: r.side,
    'train tok/s': r.doc.train_tokens_per_second,
    'step ms med': r.doc.train_step_ms_median as number,
    'step ms min-max': `${Math.round(r.doc.train_step_ms_min as number)}-${Math.round(r.doc.train_step_ms_max as number)}`,
    'eval tok/s': (r.doc.eval_tokens_per_second as number | null) ?? '',
    'TFLOP/s': r.doc.model_tflops_per_second,
    'RSS MB': r.doc.peak_rss_mb as number,
    loss: `${(r.doc.loss_first as number).toFixed(3)} -> ${(r.doc.loss_last as number).toFixed(3)}`,
  }));
  const fmt = (s: ReturnType<typeof spread>) => `median ${s.median.toFixed(1)}, min ${s.min.toFixed(1)}, max ${s.max.toFixed(1)}`;
  const mm = first('mlmkit');
  const tt = first('pytorch');
  process.stdout.write([
    '',
    formatTable(rows, { 'train tok/s': 1, 'step ms med': 0, 'eval tok/s': 1, 'TFLOP/s': 4, 'RSS MB': 0 }),
    '',
    `${a.config}, batch ${a['batch-size']} x seq ${a['seq-len']}, ${a.steps} measured steps after ${a['warmup-steps']} warmup per run, ${runs} runs per side, alternating`,
    `mlmkit  (${mm.backend}, ${mm.device}): training tokens/s ${fmt(m.train_tokens_per_second)}; model TFLOP/s median ${m.model_tflops_per_second.median.toFixed(4)} (head at masked positions, f = ${mm.scored_fraction})`,
    `PyTorch (${tt.torch}, ${tt.threads} threads, BLAS ${blas}): training tokens/s ${fmt(t.train_tokens_per_second)}; model TFLOP/s median ${t.model_tflops_per_second.median.toFixed(4)} (full-vocabulary logits, f = 1)`,
    `BLAS kernels (OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset for both): mlmkit ${mlmkitBlas}; PyTorch ${blas}`,
    `ratio mlmkit / PyTorch, median training tokens/s: ${ratio.toFixed(3)}`,
    ...notes,
    `load average: ${loadStart.map((x) => x.toFixed(2)).join(', ')} at start, ${loadEnd.map((x) => x.toFixed(2)).join(', ')} at end (${os.cpus().length} CPUs)`,
    '',
  ].join('\n'));
}
