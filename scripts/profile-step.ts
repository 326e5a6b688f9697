// Where a training step's time goes, kernel by kernel, on one backend. Its usage: USAGE below
// (--help prints it).
//
// Runs two warm-up steps of the real optimizer step (trainer.ts's optimizerStep on synthetic
// batches, the whole batch in one pass, as `mlm bench --rows-per-pass B` does), then:
//   - one step as it runs normally: its wall time, kernel calls and, on webgpu, its compute
//     dispatches, passes, submissions and the GPU time of its passes (training/kernel-watch.ts);
//   - webgpu: one profiled step with every TF.js program in its own compute pass and submission
//     (WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE = 1), each pass timed with timestamp queries: GPU time
//     by kernel (the innermost TF.js kernel running when the dispatch was encoded; dispatches
//     outside any kernel, e.g. a pipeline of mlmkit's own run by the trainer, count as
//     "(no kernel)") and by shader pipeline (TF.js's program class, or the label mlmkit's own
//     pipelines carry). A pass holding several dispatches (mlmkit's own pipelines may share one)
//     has its time split evenly over them. Times are GPU execution times, so they add up to the
//     GPU's share of a step, not to its wall time;
//   - other backends: tf.profile of one step: wall time around each kernel (they add up on the
//     synchronous backends, wasm and cpu), and the matrix products' overall GFLOP/s;
//   - with --shapes NAME (any backend): tf.profile's kernel list, one line per call of NAME with
//     its shapes and, for the matrix products (BatchMatMul, _FusedMatMul), GFLOP/s (on webgpu from
//     TF.js's own timestamp timers, which see TF.js's programs only).
// tf.profile also lists the op scopes that kernels run inside (a custom gradient's "unnamed
// scope", "fusedMatMul__op"), timed around those kernels: they are left out, so that every
// kernel's time is counted once.
// --json FILE also writes the figures as JSON (scripts/gpu-report.ts puts the top kernels in the
// GPU run's summary), with --shapes the calls listed (`calls`: name, ms, shapes, flops).
import * as fs from 'node:fs';
import path from 'node:path';
import { MLM_PROBABILITY } from '../data/masking.ts';
import { blasOptions, resolveBackendName, selectBackend } from '../training/backend.ts';
import { SyntheticBatches } from '../training/bench.ts';
import { readConfigArgument } from '../training/checkpoint.ts';
import { splitBatch } from '../training/passes.ts';
import { watchKernels, type GpuTimeEntry } from '../training/kernel-watch.ts';
import { createMaskedLM } from '../training/models/roberta.ts';
import { createAdamW } from '../training/flat-adamw.ts';
import { ADAMW_DEFAULTS } from '../training/optimizer.ts';
import { optimizerStep } from '../training/train-step.ts';
import { readScriptOptions } from './script-args.ts';
import { decayedParameters } from '../training/models/weights.ts';

const USAGE = `usage: node --import tsx scripts/profile-step.ts [--config bert-mini] [--backend wasm]
         [--batch-size 32] [--seq-len 128] [--top 25] [--shapes BatchMatMul] [--json FILE]`;

const options = readScriptOptions(process.argv.slice(2), {
  program: 'profile-step',
  usage: USAGE,
  options: {
    config: { type: 'string', default: 'bert-mini' },
    backend: { type: 'string', default: 'wasm' },
    'batch-size': { type: 'number', default: 32 },
    'seq-len': { type: 'number', default: 128 },
    top: { type: 'number', default: 25 },
    shapes: { type: 'string', default: '' },
    json: { type: 'string', default: '' },
  },
});
const configArg = options.config;
const configFile = configArg.endsWith('.json') ? configArg : path.join(import.meta.dirname, '..', 'configs', `${configArg}.json`);
const batchSize = options['batch-size'];
const seqLen = options['seq-len'];
const top = options.top;
const jsonFile = options.json;

const { tf, name: backendName, device, capabilities } = await selectBackend(resolveBackendName(options.backend, {}), { log: () => {}, ...blasOptions(process.env) });
const config = readConfigArgument(configFile);
const data = new SyntheticBatches(config, batchSize, seqLen, 1, MLM_PROBABILITY);
const model = createMaskedLM(tf, config, { seed: 1, capabilities });
const optimizer = createAdamW(tf, model.variables, decayedParameters(config), ADAMW_DEFAULTS, backendName); // flat on webgpu, as mlm train
let step = 0;
const run = async () => {
  step++;
  await optimizerStep(tf, model, optimizer, splitBatch(data.next(), batchSize), { seed: 1, step, lr: 1e-4, maxGradNorm: 1 });
};
await run();
await run();

// One step as it runs normally.
const watch = watchKernels(tf, { attribute: true });
await watch.takeGpuTime();
const before = watch.counts();
const t0 = performance.now();
await run();
await watch.drain();
const stepMs = performance.now() - t0;
const after = watch.counts();
const plain = await watch.takeGpuTime();
const per = (a: number | null, b: number | null) => (a === null || b === null ? null : a - b);
const out: string[] = [];
const doc: Record<string, unknown> = {
  config: configArg, backend: backendName, device, batch_size: batchSize, seq_len: seqLen,
  step_ms: stepMs, kernels: after.kernels - before.kernels, dispatches: per(after.dispatches, before.dispatches),
  compute_passes: per(after.passes, before.passes), submits: per(after.submits, before.submits),
  gpu_ms: plain?.ms ?? null, gpu_timer: watch.gpuTimer,
};
out.push(`${configArg} on ${backendName} (${device}), batch ${batchSize} x ${seqLen}: one step ${stepMs.toFixed(1)} ms wall (until the GPU finished), ` +
  `${doc.kernels} kernel calls` + (plain === null ? '' : `, ${doc.dispatches} dispatches in ${doc.compute_passes} passes, ${doc.submits} submits; GPU ${plain.ms.toFixed(1)} ms in passes, the rest ${(stepMs - plain.ms).toFixed(1)} ms`));

const table = (title: string, rows: [string, { ms: number; count: number; dispatches?: number }][], total: number, countLabel: string) => {
  out.push('', `${title.padEnd(34)}${'ms'.padStart(9)}${'share'.padStart(8)}${countLabel.padStart(8)}${rows.some((r) => r[1].dispatches !== undefined) ? 'dispatches'.padStart(11) : ''}`);
  for (const [name, e] of rows.slice(0, top)) {
    out.push(`${name.slice(0, 33).padEnd(34)}${e.ms.toFixed(2).padStart(9)}${((100 * e.ms) / total).toFixed(1).padStart(7)}%${String(e.count).padStart(8)}${e.dispatches !== undefined ? String(e.dispatches).padStart(11) : ''}`);
  }
};
const sorted = <T extends { ms: number }>(m: Map<string, T>) => [...m.entries()].sort((a, b) => b[1].ms - a[1].ms);

if (plain !== null) {
  // Profiled step: one program per pass, each pass timed.
  const batch = tf.env().get('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE');
  tf.env().set('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE', 1);
  const callsBefore = watch.callsByKernel()!;
  const p0 = performance.now();
  await run();
  const profiled = (await watch.takeGpuTime())!;
  const profiledMs = performance.now() - p0;
  tf.env().set('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE', batch);
  const callsAfter = watch.callsByKernel()!;
  const calls = (k: string) => (callsAfter.get(k) ?? 0) - (callsBefore.get(k) ?? 0);
  const byKernel = sorted(profiled.byKernel!).map(([k, e]): [string, { ms: number; count: number; dispatches: number }] => [k, { ms: e.ms, count: calls(k), dispatches: e.dispatches }]);
  const byPipeline = sorted(profiled.byPipeline!).map(([k, e]): [string, { ms: number; count: number }] => [k, { ms: e.ms, count: e.dispatches }]);
  out.push(`profiled step (every program in its own pass): ${profiledMs.toFixed(0)} ms wall, GPU ${profiled.ms.toFixed(1)} ms in ${profiled.passes} passes` +
    `${profiled.untimed ? ` (${profiled.untimed} untimed)` : ''}${profiled.quantized ? '; timestamps QUANTIZED to 65.536 us (Dawn toggle timestamp_quantization on): per-kernel figures are rough' : ''}`);
  table('GPU time by kernel', byKernel, profiled.ms, 'calls');
  table('GPU time by pipeline', byPipeline, profiled.ms, 'calls');
  const entries = (rows: [string, { ms: number; count: number; dispatches?: number }][]) => rows.map(([name, e]) => ({ name, ms: e.ms, calls: e.count, ...(e.dispatches !== undefined ? { dispatches: e.dispatches } : {}) }));
  doc.profiled = { wall_ms: profiledMs, gpu_ms: profiled.ms, passes: profiled.passes, untimed: profiled.untimed, quantized: profiled.quantized, by_kernel: entries(byKernel), by_pipeline: entries(byPipeline) };
}
watch.stop();

const detail = options.shapes;
if (plain === null || detail) {
  const profile = await tf.profile(run);
  const totals = new Map<string, { ms: number; count: number }>();
  const callList: { name: string; ms: number; inputs: (number[] | null)[]; output: number[] }[] = [];
  const tfBackend = tf.getBackend();
  for (const k of profile.kernels) {
    // An op scope, not a kernel: its time is that of the kernels inside it (listed on their own).
    if (tf.getKernel(k.name, tfBackend) === undefined) continue;
    const ms = Number(await k.kernelTimeMs);
    const e = totals.get(k.name) ?? { ms: 0, count: 0 };
    e.ms += ms;
    e.count++;
    totals.set(k.name, e);
    callList.push({ name: k.name, ms, inputs: k.inputShapes as (number[] | null)[], output: (k.outputShapes[0] ?? []) as number[] });
  }
  if (plain === null) {
    const rows = sorted(totals);
    const total = rows.reduce((a, [, e]) => a + e.ms, 0);
    out.push(`tf.profile of one step: kernels ${total.toFixed(0)} ms (wall time around each kernel)`);
    table('kernel (tf.profile)', rows, total, 'calls');
    doc.profiled = { kernel_ms: total, by_kernel: rows.map(([name, e]) => ({ name, ms: e.ms, calls: e.count })) };
  }
  // A matrix product's FLOPs: 2 x (output entries) x K. The profile has the shapes, not the
  // transpose flags: a is [.., M, K], or [.., K, M] transposed, so where a's second-to-last dim is
  // not the output's M it is K, else K is a's last dim (M as well when both are M). _FusedMatMul's
  // inputs go on with the bias (and prelu weights); an operand broadcast over the batch counts for
  // every slice.
  const matMulFlops = (c: (typeof callList)[number]): number => {
    const a = c.inputs[0];
    const out = c.output;
    if ((c.name !== 'BatchMatMul' && c.name !== '_FusedMatMul') || !a || a.length < 2 || out.length < 2) return 0;
    const M = out[out.length - 2]!;
    const K = a[a.length - 2] === M ? a[a.length - 1]! : a[a.length - 2]!;
    return 2 * out.reduce((x, y) => x * y, 1) * K;
  };
  const products = callList.filter((c) => c.name === 'BatchMatMul' || c.name === '_FusedMatMul');
  if (plain === null && products.length > 0) {
    const ms = products.reduce((a, c) => a + c.ms, 0);
    const flops = products.reduce((a, c) => a + matMulFlops(c), 0);
    out.push(`matrix products: ${products.length} calls, ${ms.toFixed(0)} ms, ${(flops / 1e9).toFixed(1)} GFLOP: ${(flops / ms / 1e6).toFixed(1)} GFLOP/s overall`);
  }
  if (detail) {
    out.push('', `${detail} calls (tf.profile):`);
    const calls = callList.filter((c) => c.name === detail).sort((a, b) => b.ms - a.ms);
    doc.calls = calls.map((c) => ({ ...c, flops: matMulFlops(c) }));
    for (const c of calls) {
      const flops = matMulFlops(c);
      out.push(`${c.ms.toFixed(2).padStart(8)} ms  ${JSON.stringify(c.inputs)} -> ${JSON.stringify(c.output)}${flops && c.ms > 0 ? `  ${(flops / c.ms / 1e6).toFixed(1)} GFLOP/s` : ''}`);
    }
  }
}
console.log(out.join('\n'));
if (jsonFile) fs.writeFileSync(jsonFile, JSON.stringify(doc, null, 2) + '\n');
optimizer.dispose();
model.dispose();
process.exit(0);
