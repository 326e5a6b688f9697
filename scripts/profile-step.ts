// Where a training step's time goes, kernel by kernel (tf.profile), on one backend.
//
//   node --import tsx scripts/profile-step.ts [--config bert-mini] [--backend wasm]
//        [--batch-size 32] [--seq-len 128] [--top 25] [--shapes BatchMatMul]
//
// Runs two warm-up steps of the real optimizer step (trainer.ts's optimizerStep on synthetic
// batches, as `mlm bench` does), then profiles a third: kernel totals sorted by time, and with
// --shapes NAME one line per call of that kernel with its shapes and GFLOP/s (matMuls), and the
// matrix products' overall GFLOP/s (BatchMatMul and _FusedMatMul, all calls). Kernel
// times are wall times around each kernel, so they only add up on synchronous backends (wasm, cpu).
import path from 'node:path';
import { blasOptions, resolveBackendName, selectBackend } from '../training/backend.ts';
import { readModelConfig, SyntheticBatches } from '../training/bench.ts';
import { splitBatch } from '../training/evaluate.ts';
import { createMaskedLM } from '../training/models/roberta.ts';
import { AdamW, ADAMW_DEFAULTS } from '../training/optimizer.ts';
import { optimizerStep } from '../training/trainer.ts';

const arg = (name: string, fallback: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1]! : fallback;
};
const configArg = arg('config', 'bert-mini');
const configFile = configArg.endsWith('.json') ? configArg : path.join(import.meta.dirname, '..', 'configs', `${configArg}.json`);
const batchSize = Number(arg('batch-size', '32'));
const seqLen = Number(arg('seq-len', '128'));

const { tf, device } = await selectBackend(resolveBackendName(arg('backend', 'wasm'), {}), { log: () => {}, ...blasOptions(process.env) });
const config = readModelConfig(configFile);
const data = new SyntheticBatches(config, batchSize, seqLen, 1, 0.15);
const model = createMaskedLM(tf, config, { seed: 1 });
const optimizer = new AdamW(tf, model.variables, ADAMW_DEFAULTS);
let step = 0;
const run = async () => {
  step++;
  await optimizerStep(tf, model, optimizer, splitBatch(data.next(), batchSize), { seed: 1, step, lr: 1e-4, maxGradNorm: 1 });
};
await run();
const t0 = performance.now();
await run();
const stepMs = performance.now() - t0;
const profile = await tf.profile(run);
const totals = new Map<string, { ms: number; calls: number }>();
const calls: { name: string; ms: number; inputs: number[][]; output: number[] }[] = [];
for (const k of profile.kernels) {
  const ms = Number(await k.kernelTimeMs);
  const e = totals.get(k.name) ?? { ms: 0, calls: 0 };
  e.ms += ms;
  e.calls++;
  totals.set(k.name, e);
  calls.push({ name: k.name, ms, inputs: k.inputShapes as number[][], output: (k.outputShapes[0] ?? []) as number[] });
}
const rows = [...totals.entries()].sort((a, b) => b[1].ms - a[1].ms);
const total = rows.reduce((a, [, e]) => a + e.ms, 0);
console.log(`${configArg} on ${device}, batch ${batchSize} x ${seqLen}: step ${stepMs.toFixed(0)} ms unprofiled; kernels ${total.toFixed(0)} ms profiled`);
console.log(`${'kernel'.padEnd(26)}${'ms'.padStart(9)}${'share'.padStart(8)}${'calls'.padStart(7)}`);
for (const [name, e] of rows.slice(0, Number(arg('top', '25')))) {
  console.log(`${name.padEnd(26)}${e.ms.toFixed(1).padStart(9)}${((100 * e.ms) / total).toFixed(1).padStart(7)}%${String(e.calls).padStart(7)}`);
}
// For a matMul: 2 x (elements of a) x (last dim of the output) multiply-adds... flags aside.
const matMulFlops = (c: (typeof calls)[number]) => (c.inputs.length === 2 ? 2 * c.inputs[0]!.reduce((x, y) => x * y, 1) * c.output[c.output.length - 1]! : 0);
const products = calls.filter((c) => c.name === 'BatchMatMul' || c.name === '_FusedMatMul');
if (products.length > 0) {
  const ms = products.reduce((a, c) => a + c.ms, 0);
  const flops = products.reduce((a, c) => a + matMulFlops(c), 0);
  console.log(`matrix products: ${products.length} calls, ${ms.toFixed(0)} ms, ${(flops / 1e9).toFixed(1)} GFLOP: ${(flops / ms / 1e6).toFixed(1)} GFLOP/s overall`);
}
const detail = arg('shapes', '');
if (detail) {
  for (const c of calls.filter((c) => c.name === detail).sort((a, b) => b.ms - a.ms)) {
    const flops = matMulFlops(c);
    console.log(`${c.ms.toFixed(1).padStart(8)} ms  ${JSON.stringify(c.inputs)} -> ${JSON.stringify(c.output)}${flops ? `  ${(flops / c.ms / 1e6).toFixed(1)} GFLOP/s` : ''}`);
  }
}
