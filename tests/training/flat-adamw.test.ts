// The flat AdamW (training/flat-adamw.ts) against the per-tensor AdamW (training/optimizer.ts),
// the reference, on the webgpu backend (llvmpipe in CI), bert-tiny with a vocabulary of 1,000:
//   - 10 steps fed the same real gradients (bert-tiny's, from the reference model's batches),
//     clipping active on every step and inactive, and with the flat buffers bound in chunks (as
//     on a device whose storage bindings are smaller than the model): the global norm and every
//     parameter and moment within 1e-6 relative of the reference's;
//   - a NaN gradient or an infinite loss skips the update on the GPU: parameters and moments
//     unchanged, the step counter as AdamW's (which is not called for such a step), and the next
//     finite step matches the reference;
//   - state: getState gives AdamW's keys, shapes and step, values within 1e-6; a state restored
//     into a new flat optimizer reads back bit for bit, and into a per-tensor one too;
//   - a step is 3 GPU dispatches and no TF.js kernel; 100 trainer steps (`optimizerStep`) leave the
//     tensor count and the GPU bytes in use flat;
//   - exact resume through `train()` on webgpu: a run resumed from its step-3 checkpoint logs the
//     same losses and norms and ends with the same weights and moments, bit for bit.
// Relative difference: for tensors a (flat) and b (reference) of one name, max|a - b| / max|b|.
import { after, before, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Scalar, Tensor } from '@tensorflow/tfjs';
import { releaseWebGpu, selectBackend, type Tf } from '../../training/backend.ts';
import { rawWebGpu } from '../../training/backend/webgpu/raw.ts';
import { SyntheticBatches } from '../../training/bench.ts';
import { FlatAdamW } from '../../training/flat-adamw.ts';
import type { MaskedLM } from '../../training/models/bert.ts';
import { parseModelConfig, updateModelConfig, type ModelConfig } from '../../training/models/config.ts';
import { createMaskedLM } from '../../training/models/roberta.ts';
import { ADAMW_DEFAULTS, AdamW, type AdamWOptions, type AdamWState } from '../../training/optimizer.ts';
import { readMetrics } from '../../training/report.ts';
import { train, TRAIN_DEFAULTS } from '../../training/trainer.ts';
import { clipScale, computeGradients, dropoutSeed, globalNorm, optimizerStep } from '../../training/train-step.ts';
import { optimizerLayout } from '../../training/train-state.ts';
import { brownDocuments, preparedFixture, relDiff, ROOT, writeTinyConfig } from './train-helpers.ts';
import { webgpuSkip } from './webgpu-gate.ts';
import { decayedParameters } from '../../training/models/weights.ts';

const skip = await webgpuSkip('flat AdamW');
let tf: Tf;
const quiet = () => {};

before(async () => {
  if (skip === false) tf = (await selectBackend('webgpu', { log: quiet })).tf;
});
after(async () => {
  if (skip !== false) return;
  releaseWebGpu(tf);
  await selectBackend('cpu', { log: quiet });
});

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-flat-adamw-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

const BERT_TINY = path.join(ROOT, 'configs/bert-tiny.json');
function tinyConfig(): ModelConfig {
  const base = parseModelConfig(JSON.parse(fs.readFileSync(BERT_TINY, 'utf8')), BERT_TINY);
  return updateModelConfig(base, { vocab_size: 1000, pad_token_id: 0 }, BERT_TINY);
}
const OPTS: AdamWOptions = { ...ADAMW_DEFAULTS, weightDecay: 0.01 };

/** relDiff's ratio, or the absolute difference where b is all zeros. */
function rel(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const r = relDiff(a, b);
  return r.scale === 0 ? r.diff : r.rel;
}

async function params(model: MaskedLM): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const [name, v] of model.variables) out.set(name, Float32Array.from((await v.data()) as Float32Array));
  return out;
}

/** The largest relative difference over every parameter and moment, and where. */
async function worst(flatModel: MaskedLM, flat: FlatAdamW, refModel: MaskedLM, ref: AdamW): Promise<{ rel: number; at: string }> {
  let w = { rel: 0, at: '' };
  const [a, b] = [await params(flatModel), await params(refModel)];
  for (const [name, x] of a) {
    const r = rel(x, b.get(name)!);
    if (r > w.rel) w = { rel: r, at: name };
  }
  const [sa, sb] = [await flat.getState(), await ref.getState()];
  assert.equal(sa.step, sb.step);
  for (const [key, x] of sa.tensors) {
    const r = rel(x.data, sb.tensors.get(key)!.data);
    if (r > w.rel) w = { rel: r, at: key };
  }
  return w;
}

/** The reference step, as optimizerStep runs the per-tensor AdamW: norm, one read, then apply. */
async function referenceStep(ref: AdamW, grads: Map<string, Tensor>, loss: Scalar, lr: number, maxNorm: number): Promise<{ loss: number; norm: number; applied: boolean }> {
  const normT = globalNorm(tf, grads);
  const packed = tf.stack([loss, normT]);
  const [l, norm] = Array.from(await packed.data());
  tf.dispose([packed, normT]);
  const applied = Number.isFinite(l) && Number.isFinite(norm);
  if (applied) ref.apply(grads, lr, clipScale(norm, maxNorm));
  return { loss: l, norm, applied };
}

/** Two identical bert-tiny models, one per optimizer. */
function pair(maxBindingBytes?: number): { refModel: MaskedLM; flatModel: MaskedLM; ref: AdamW; flat: FlatAdamW; dispose: () => void } {
  const config = tinyConfig();
  const refModel = createMaskedLM(tf, config, { seed: 3 });
  const flatModel = createMaskedLM(tf, config, { seed: 3 });
  const ref = new AdamW(tf, refModel.variables, decayedParameters(config), OPTS);
  const flat = new FlatAdamW(tf, flatModel.variables, decayedParameters(config), OPTS, { maxBindingBytes });
  return { refModel, flatModel, ref, flat, dispose: () => { ref.dispose(); flat.dispose(); refModel.dispose(); flatModel.dispose(); } };
}

async function tenSteps(t: TestContext, maxNorm: number, clipping: boolean, maxBindingBytes?: number): Promise<void> {
  const { refModel, flatModel, ref, flat, dispose } = pair(maxBindingBytes);
  try {
    const data = new SyntheticBatches(tinyConfig(), 2, 32, 11);
    const norms: number[] = [];
    let dispatches = 0;
    for (let s = 1; s <= 10; s++) {
      const lr = 1e-3 * (1 + s / 10);
      // The reference model's gradients, fed to both (the flat model's parameters stay within
      // rounding of the reference's, so these are its gradients too).
      const { loss, grads } = computeGradients(tf, refModel, [data.next()], { training: true, dropoutSeeds: [dropoutSeed(5, s, 0)] });
      const before = rawWebGpu(tf).counts.dispatches;
      const read = flat.update(grads, loss, lr, maxNorm);
      dispatches = rawWebGpu(tf).counts.dispatches - before;
      const r = await referenceStep(ref, grads, loss, lr, maxNorm);
      tf.dispose([loss, ...grads.values()]);
      const f = await read;
      assert.ok(r.applied && f.applied);
      assert.equal(f.loss, r.loss);
      assert.ok(Math.abs(f.norm - r.norm) <= 1e-6 * r.norm, `step ${s}: norm ${f.norm} vs ${r.norm}`);
      norms.push(r.norm);
    }
    if (clipping) assert.ok(norms.every((n) => n > maxNorm), `clipping active on every step: norms ${norms.join(', ')}`);
    else assert.ok(norms.every((n) => n > 0 && (maxNorm === 0 || n < maxNorm)), `clipping inactive: norms ${norms.join(', ')}`);
    // One sum-of-squares and one update dispatch per chunk, and the finalize.
    const entries = flat.ranges.reduce((a, r) => a + r.size, 0);
    const chunks = maxBindingBytes === undefined ? 1 : Math.ceil(entries / (maxBindingBytes / 4));
    assert.equal(dispatches, 2 * chunks + 1, `${chunks} chunks`);
    const w = await worst(flatModel, flat, refModel, ref);
    t.diagnostic(`max_norm ${maxNorm}, ${chunks} chunk(s), ${dispatches} dispatches an update: norms ${norms.map((n) => n.toFixed(3)).join(' ')}; worst relative difference ${w.rel.toExponential(2)} (${w.at})`);
    assert.ok(w.rel <= 1e-6, `${w.at}: relative difference ${w.rel}`);
  } finally {
    dispose();
  }
}

test('10 steps with clipping active equal the per-tensor AdamW within 1e-6 relative', { skip }, (t) => tenSteps(t, 0.05, true));
test('10 steps without clipping (max_norm 0: off) equal the per-tensor AdamW within 1e-6 relative', { skip }, (t) => tenSteps(t, 0, false));
test('10 steps bound in chunks of 512 KiB (as a device with small storage bindings), clipping active, equal the per-tensor AdamW', { skip }, async (t) => {
  // bert-tiny with 1,000 words has ~0.6 M parameters (2.4 MB): 5 chunks, whose edges fall inside
  // tensors and inside the decayed prefix.
  await tenSteps(t, 0.05, true, 512 * 1024);
});
test('10 steps with clipping inactive (max_norm above the norm) equal the per-tensor AdamW', { skip }, async (t) => {
  // The clip coefficient is exactly 1 on both sides, so this runs the same path as max_norm 0 but
  // through the comparison on the GPU.
  await tenSteps(t, 1e6, false);
});

/** Random gradients for every parameter of `model` (seeded), optionally one made all NaN. */
function randomGrads(model: MaskedLM, seed: number, nanIn?: string): Map<string, Tensor> {
  const grads = new Map<string, Tensor>();
  let i = 0;
  for (const [name, v] of model.variables) {
    grads.set(name, name === nanIn ? tf.fill(v.shape, NaN) : tf.randomNormal(v.shape, 0, 0.01, 'float32', seed * 1000 + i++));
  }
  return grads;
}

test('a NaN gradient or an infinite loss skips the update on the GPU; the step counter stays AdamW\'s', { skip }, async () => {
  const { refModel, flatModel, ref, flat, dispose } = pair();
  try {
    const step = async (seed: number, lossValue: number, nanIn?: string) => {
      const grads = randomGrads(refModel, seed, nanIn);
      const loss = tf.scalar(lossValue);
      const read = flat.update(grads, loss, 1e-3, 1.0);
      const r = await referenceStep(ref, grads, loss, 1e-3, 1.0);
      tf.dispose([loss, ...grads.values()]);
      return { f: await read, r };
    };
    const first = await step(1, 2.5);
    assert.ok(first.f.applied && first.r.applied);
    const paramsBefore = await params(flatModel);
    const stateBefore = await flat.getState();
    for (const [seed, lossValue, nanIn] of [[2, 2.5, 'bert.encoder.layer.1.output.dense.weight'], [3, Infinity, undefined], [4, NaN, undefined]] as const) {
      const { f, r } = await step(seed, lossValue, nanIn);
      assert.equal(f.applied, false, `seed ${seed}: skipped`);
      assert.equal(r.applied, false);
      assert.equal(flat.step, 1);
      assert.equal(ref.step, 1);
      const after = await params(flatModel);
      for (const [name, x] of paramsBefore) assert.deepEqual(after.get(name), x, `${name} unchanged`);
      const state = await flat.getState();
      for (const [key, x] of stateBefore.tensors) assert.deepEqual(state.tensors.get(key)!.data, x.data, `${key} unchanged`);
    }
    const next = await step(5, 2.4);
    assert.ok(next.f.applied);
    assert.equal(flat.step, 2);
    const w = await worst(flatModel, flat, refModel, ref);
    assert.ok(w.rel <= 1e-6, `${w.at}: relative difference ${w.rel}`);
  } finally {
    dispose();
  }
});

test('state: AdamW\'s keys, shapes and step; restored into a flat or a per-tensor AdamW, read back bit for bit', { skip }, async () => {
  const config = tinyConfig();
  const layout = optimizerLayout(tf, config);
  const { refModel, flatModel, ref, flat, dispose } = pair();
  const model3 = createMaskedLM(tf, config, { seed: 9 });
  const flat3 = new FlatAdamW(tf, model3.variables, decayedParameters(config), OPTS);
  const ref3 = new AdamW(tf, model3.variables, decayedParameters(config), OPTS);
  try {
    for (let s = 1; s <= 3; s++) {
      const grads = randomGrads(refModel, s);
      const loss = tf.scalar(1);
      const read = flat.update(grads, loss, 1e-3, 1.0);
      await referenceStep(ref, grads, loss, 1e-3, 1.0);
      tf.dispose([loss, ...grads.values()]);
      await read;
    }
    const saved: AdamWState = layout.toFile(await flat.getState());
    const reference = layout.toFile(await ref.getState());
    assert.equal(saved.step, 3);
    assert.equal(saved.step, reference.step);
    assert.deepEqual([...saved.tensors.keys()], [...reference.tensors.keys()]);
    for (const [key, x] of saved.tensors) {
      const y = reference.tensors.get(key)!;
      assert.deepEqual(x.shape, y.shape, key);
      assert.ok(rel(x.data, y.data) <= 1e-6, `${key}: ${rel(x.data, y.data)}`);
    }
    for (const target of [flat3, ref3]) {
      target.setState(layout.fromFile(saved), layout.tensor);
      const back = layout.toFile(await target.getState());
      assert.equal(back.step, 3);
      for (const [key, x] of saved.tensors) assert.deepEqual(back.tensors.get(key)!.data, x.data, `${target.constructor.name} ${key}`);
    }
    assert.throws(() => flat3.setState(layout.fromFile({ step: 1, tensors: new Map() }), layout.tensor), /optimizer state lacks bert\.embeddings\.word_embeddings\.weight\.exp_avg/);
    // The file holds query, key and value apart; one of them missing is named.
    const partial = new Map(saved.tensors);
    partial.delete('bert.encoder.layer.1.attention.self.key.weight.exp_avg_sq');
    assert.throws(() => layout.fromFile({ step: 3, tensors: partial }), /optimizer state \(exp_avg_sq\): bert\.encoder\.layer\.1\.attention\.self\.key\.weight is missing/);
  } finally {
    dispose();
    flat3.dispose();
    ref3.dispose();
    model3.dispose();
  }
});

test('a step is 3 dispatches and no TF.js kernel; 100 trainer steps leave tensors and GPU memory flat', { skip }, async (t) => {
  // A smaller BERT than bert-tiny (hidden 32, intermediate 64), so that 100 steps stay quick on llvmpipe.
  const config = updateModelConfig(tinyConfig(), { hidden_size: 32, intermediate_size: 64 }, 'test');
  const model = createMaskedLM(tf, config, { seed: 1 });
  const flat = new FlatAdamW(tf, model.variables, decayedParameters(config), OPTS);
  const backend = tf.backend() as unknown as { runWebGPUProgram: (...a: unknown[]) => unknown };
  const original = backend.runWebGPUProgram;
  let programs = 0;
  backend.runWebGPUProgram = function (this: unknown, ...a: unknown[]) {
    programs++;
    return original.apply(this, a);
  };
  try {
    const raw = rawWebGpu(tf);
    const data = new SyntheticBatches(config, 2, 16, 3);
    const gpuBytes = () => (tf.memory() as unknown as { numBytesInGPU: number }).numBytesInGPU;
    let first: { tensors: number; bytes: number } | null = null;
    for (let s = 1; s <= 100; s++) {
      if (s === 2) {
        // One update alone, counted: what the optimizer adds to a step.
        const grads = randomGrads(model, 7);
        const loss = tf.scalar(1);
        const before = { ...raw.counts, programs };
        const read = flat.update(grads, loss, 1e-3, 1.0);
        const used = { dispatches: raw.counts.dispatches - before.dispatches, copies: raw.counts.copies - before.copies, programs: programs - before.programs };
        tf.dispose([loss, ...grads.values()]);
        await read;
        t.diagnostic(`one flat update of ${model.variables.size} tensors: ${used.dispatches} dispatches, ${used.copies} copies, ${used.programs} TF.js kernels`);
        assert.deepEqual({ dispatches: used.dispatches, programs: used.programs }, { dispatches: 3, programs: 0 });
        assert.equal(used.copies, 2 * model.variables.size + 1);
      }
      const r = await optimizerStep(tf, model, flat, [data.next()], { seed: 1, step: s, lr: 1e-3, maxGradNorm: 1.0 });
      assert.ok(r.applied && Number.isFinite(r.loss));
      if (s === 3) first = { tensors: tf.memory().numTensors, bytes: gpuBytes() };
    }
    const last = { tensors: tf.memory().numTensors, bytes: gpuBytes() };
    t.diagnostic(`after step 3: ${first!.tensors} tensors, ${first!.bytes} GPU bytes in use; after step 100: ${last.tensors}, ${last.bytes}`);
    assert.deepEqual(last, first);
  } finally {
    backend.runWebGPUProgram = original;
    flat.dispose();
    model.dispose();
  }
});

test('exact resume on webgpu: resumed from checkpoint-3, the run logs and ends as the uninterrupted one, bit for bit', { skip }, async () => {
  const fx = await preparedFixture(path.join(tmp, 'fx'), brownDocuments(60_000), { vocabSize: 300, seqLen: 32 });
  const config = writeTinyConfig(path.join(tmp, 'tiny.json'), { max_position_embeddings: 32 });
  const o = (out: string, resume: boolean) => ({
    ...TRAIN_DEFAULTS, config, data: fx.dataDir, out, steps: 6, batchSize: 4, lr: 2e-3, warmup: 0, evalEvery: 0, evalBatches: 1,
    saveEvery: 3, logEvery: 1, seed: 7, resume,
  });
  const ctx = { tf, backend: { name: 'webgpu', device: 'test' }, version: 'test', log: quiet, progress: false };
  const full = path.join(tmp, 'full');
  await train(o(full, false), ctx);
  const resumed = path.join(tmp, 'resumed');
  fs.mkdirSync(resumed);
  fs.cpSync(path.join(full, 'checkpoint-3'), path.join(resumed, 'checkpoint-3'), { recursive: true });
  await train(o(resumed, true), ctx);
  const strip = (m: object[]) => (m as Array<{ step: number }>).filter((e) => e.step > 3).map((e) => ({ ...e, tokens_per_second: 0 }));
  const [a, b] = [strip(await readMetrics(full)), strip(await readMetrics(resumed))];
  assert.deepEqual(a.filter((e) => 'loss' in e).map((e) => e.step), [4, 5, 6]);
  assert.deepEqual(b, a);
  for (const file of ['model.safetensors', 'optimizer.safetensors']) {
    const [x, y] = [fs.readFileSync(path.join(full, 'checkpoint-6', file)), fs.readFileSync(path.join(resumed, 'checkpoint-6', file))];
    assert.ok(x.equals(y), `checkpoint-6/${file} differs between the full and the resumed run`);
  }
});
