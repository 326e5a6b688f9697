// Checks and times mlmkit's f16-operand matrix product (training/kernels/matmul.ts) on this
// machine's WebGPU adapter: for each variant the device can run (subgroup-matrix: tensor cores;
// scalar: f16 loads, f32 FMA), the largest error against tf.matMul in float32 (absolute, and as a
// share of the entrywise bound `f16ErrorBound`: at most 1 is correct) and TFLOP/s, at 4096^3 and at
// bert-base's shapes (4096 tokens x 768 x 3072: the FFN's forward, and its two backward products
// with transposed operands) and the query/key/value projection's (with a bias, and its dX with the
// skip's gradient as an addend: the kernel's epilogue), beside TF.js's own float32 matMul (fused
// with the same bias or addend) on the same shapes. Its usage: USAGE below (--help prints it).
//
// On a software adapter (Mesa llvmpipe) it runs small shapes (--small; 4096^3 would take minutes)
// and says that subgroup-matrix is absent. Exit code 1 when a variant exceeds the bound or fails to
// compile, 2 for bad arguments. Timing: `iters` back-to-back products after one untimed one, then
// a one-entry read that waits for them; TFLOP/s = 2 M N K iters / seconds.
import type { Tensor, Tensor2D } from '@tensorflow/tfjs';
import { selectBackend } from '../training/backend.ts';
import { activeWebGpuFeatures, describeFeatures } from '../training/backend/webgpu.ts';
import { availableVariants, matMulF16Pipelines } from '../training/backend/webgpu/matmul-f16.ts';
import { F32_UNIT, f16ErrorBound, matMulF16, matMulReference, type MatMulExtras, type MatMulF16Variant } from '../training/kernels/matmul.ts';
import { readScriptOptions } from './script-args.ts';

const USAGE = 'usage: node --import tsx scripts/check-fp16.ts [--json] [--iters 10] [--small]';

interface Shape {
  name: string;
  M: number;
  N: number;
  K: number;
  transposeA: boolean;
  transposeB: boolean;
  /** Added by the kernel's epilogue: a bias [N], or an addend [M, N]. */
  extra?: 'bias' | 'addend';
}

const FULL: Shape[] = [
  { name: '4096^3', M: 4096, N: 4096, K: 4096, transposeA: false, transposeB: false },
  { name: 'bert-base FFN up, x W (4096x768 . 768x3072)', M: 4096, N: 3072, K: 768, transposeA: false, transposeB: false },
  { name: 'bert-base FFN up, dX = dY W^T', M: 4096, N: 768, K: 3072, transposeA: false, transposeB: true },
  { name: 'bert-base FFN up, dW = X^T dY', M: 768, N: 3072, K: 4096, transposeA: true, transposeB: false },
  { name: 'bert-base QKV, x W + b (4096x768 . 768x2304)', M: 4096, N: 2304, K: 768, transposeA: false, transposeB: false, extra: 'bias' },
  { name: 'bert-base QKV, dX = dY W^T + dskip', M: 4096, N: 768, K: 2304, transposeA: false, transposeB: true, extra: 'addend' },
];
const SMALL: Shape[] = [
  { name: '256^3', M: 256, N: 256, K: 256, transposeA: false, transposeB: false },
  { name: '256x96x384 (bert-base shape / 16)', M: 256, N: 384, K: 96, transposeA: false, transposeB: false },
  { name: 'its dX = dY W^T', M: 256, N: 96, K: 384, transposeA: false, transposeB: true },
  { name: 'its dW = X^T dY', M: 96, N: 384, K: 256, transposeA: true, transposeB: false },
  { name: '256x96x288, x W + b (QKV / 8)', M: 256, N: 288, K: 96, transposeA: false, transposeB: false, extra: 'bias' },
  { name: 'its dX = dY W^T + dskip', M: 256, N: 96, K: 288, transposeA: false, transposeB: true, extra: 'addend' },
];

const args = readScriptOptions(process.argv.slice(2), {
  program: 'check-fp16',
  usage: USAGE,
  options: { json: { type: 'switch' }, iters: { type: 'number', default: 10 }, small: { type: 'switch' } },
});
if (!(Number.isInteger(args.iters) && args.iters >= 1)) {
  process.stderr.write(`check-fp16: --iters must be a positive integer, got ${args.iters}\n`);
  process.exit(2);
}
const log = (line: string) => process.stderr.write(`${line}\n`);
const backend = await selectBackend('webgpu', { log });
const tf = backend.tf;
const features = activeWebGpuFeatures(tf)!;
const software = /\b(llvmpipe|lavapipe|swiftshader)\b/i.test(backend.device);
const variants = availableVariants(features);
const shapes = args.small || software ? SMALL : FULL;
const notes: string[] = [`device: ${backend.device}; ${describeFeatures(features)}`];
if (!variants.includes('subgroup-matrix')) notes.push('subgroup-matrix: absent on this adapter (only the scalar variant runs)');
if (software && !args.small) notes.push('software adapter: small shapes only');
for (const n of notes) log(`check-fp16: ${n}`);

/** Seconds per product of `run`, over `iters` after one untimed call, waiting for the GPU. */
async function time(run: () => Tensor, iters: number): Promise<number> {
  const sync = async (t: Tensor) => {
    const one = tf.slice(t as Tensor2D, [0, 0], [1, 1]);
    await one.data();
    tf.dispose([one, t]);
  };
  await sync(run());
  const t0 = performance.now();
  let last: Tensor | null = null;
  for (let i = 0; i < iters; i++) {
    last?.dispose();
    last = run();
  }
  await sync(last!);
  return (performance.now() - t0) / 1000 / iters;
}

interface Row {
  variant: MatMulF16Variant | 'tfjs-f32';
  shape: string;
  M: number;
  N: number;
  K: number;
  transpose_a: boolean;
  transpose_b: boolean;
  tflops: number;
  max_abs_error: number | null;
  error_over_bound: number | null;
  ok: boolean;
  error?: string;
}

const rows: Row[] = [];
const pipelines = matMulF16Pipelines((tf.backend() as unknown as { device: GPUDevice }).device);
const compiled = new Map<MatMulF16Variant, string | null>();
for (const v of variants) {
  try {
    await pipelines.prepare(v);
    compiled.set(v, null);
    if (v === 'subgroup-matrix' && pipelines.usesLegacyBuiltins) notes.push('subgroup-matrix compiled with the deprecated builtins only');
  } catch (err) {
    compiled.set(v, (err as Error).message);
    log(`check-fp16: ${(err as Error).message}`);
  }
}

for (const s of shapes) {
  const flops = 2 * s.M * s.N * s.K;
  const a = tf.randomUniform(s.transposeA ? [s.K, s.M] : [s.M, s.K], -1, 1, 'float32', 1) as Tensor2D;
  const b = tf.randomUniform(s.transposeB ? [s.N, s.K] : [s.K, s.N], -1, 1, 'float32', 2) as Tensor2D;
  const extras: MatMulExtras =
    s.extra === 'bias' ? { bias: tf.randomUniform([s.N], -1, 1, 'float32', 3) } : s.extra === 'addend' ? { addend: tf.randomUniform([s.M, s.N], -1, 1, 'float32', 4) } : {};
  const added = extras.bias ?? extras.addend;
  const ref = matMulReference(tf, a, b, s.transposeA, s.transposeB, extras);
  const refData = await ref.data();
  const absProd = tf.tidy(() => tf.matMul(tf.abs(a), tf.abs(b), s.transposeA, s.transposeB));
  const absData = await absProd.data();
  const maxes = tf.tidy(() => tf.stack([tf.max(tf.abs(a)), tf.max(tf.abs(b))]));
  const [maxA, maxB] = await maxes.data();
  tf.dispose([ref, absProd, maxes]);
  const base = { shape: s.name, M: s.M, N: s.N, K: s.K, transpose_a: s.transposeA, transpose_b: s.transposeB };
  const f32 = await time(() => (added === undefined ? tf.matMul(a, b, s.transposeA, s.transposeB) : tf.fused.matMul({ a, b, transposeA: s.transposeA, transposeB: s.transposeB, bias: added })), args.iters);
  rows.push({ ...base, variant: 'tfjs-f32', tflops: flops / f32 / 1e12, max_abs_error: null, error_over_bound: null, ok: true });
  for (const v of variants) {
    const failure = compiled.get(v);
    if (failure !== null && failure !== undefined) {
      rows.push({ ...base, variant: v, tflops: 0, max_abs_error: null, error_over_bound: null, ok: false, error: failure });
      continue;
    }
    const run = () => matMulF16(tf, a, b, { transposeA: s.transposeA, transposeB: s.transposeB, variant: v }, extras);
    const out = run();
    const got = await out.data();
    out.dispose();
    let maxErr = 0;
    let ratio = 0;
    for (let i = 0; i < got.length; i++) {
      const err = Math.abs(got[i] - refData[i]);
      if (!(err <= maxErr)) maxErr = err; // NaN counts
      // With a bias or addend (|x| <= 1): one f32 rounding of each add on each side.
      const r = err / (f16ErrorBound(s.K, absData[i], maxA, maxB) + (added === undefined ? 0 : 4 * F32_UNIT * (absData[i] + 1)));
      if (!(r <= ratio)) ratio = r;
    }
    const seconds = await time(run, args.iters);
    rows.push({ ...base, variant: v, tflops: flops / seconds / 1e12, max_abs_error: maxErr, error_over_bound: ratio, ok: ratio <= 1 });
  }
  tf.dispose([a, b, ...(added === undefined ? [] : [added])]);
}

const allOk = rows.every((r) => r.ok);
if (args.json) {
  process.stdout.write(`${JSON.stringify({ device: backend.device, features, variants, notes, rows, ok: allOk })}\n`);
} else {
  for (const n of notes) process.stdout.write(`${n}\n`);
  process.stdout.write('variant          shape                                           TFLOP/s   max |err|   err/bound\n');
  for (const r of rows) {
    const err = r.max_abs_error === null ? '-' : r.max_abs_error.toExponential(2);
    const ratio = r.error_over_bound === null ? '-' : r.error_over_bound.toFixed(3);
    process.stdout.write(`${r.variant.padEnd(16)} ${r.shape.padEnd(47)} ${r.tflops.toPrecision(3).padStart(8)}   ${err.padStart(9)}   ${ratio.padStart(9)}${r.ok ? '' : `  FAIL${r.error ? `: ${r.error}` : ''}`}\n`);
  }
  process.stdout.write(allOk ? 'ok\n' : 'FAILED\n');
}
process.exit(allOk ? 0 : 1);
