// --precision fp16 on the webgpu backend (Mesa llvmpipe in CI: the scalar f16 kernel):
//   - the model's ops with f16 products (training/models/ops.ts, capabilities.matmulF16) against
//     the float32 ops: values and gradients of matMul, linear, the tied decoder, linearWithSkip
//     (bias and skip gradient added inside the product) and the batched products in all four
//     transpose cases, within 4e-3 relative (max |diff| / max |ref|; f16
//     keeps 11 significant bits, 2^-11 = 4.9e-4 per operand, and sums of K products with
//     cancellation lose a few more bits relative to the largest entry);
//   - bert-tiny's loss and gradients on one batch (random init), fp16 against fp32: the loss within
//     1e-3 relative (measured: 5e-6), gradients within 2e-3 (measured: up to 6e-4), but those of the
//     query and key projections, which pass through softmax's backward where the nearly uniform
//     attention of a fresh model cancels most of the signal, within 1e-1 (measured: up to 5e-2);
//     the attention key biases apart (their gradient is zero but for rounding);
//   - dynamic loss scaling in the trainer's step: a scale at which the f16 operands of the backward
//     pass overflow skips the step (parameters, optimizer step counter unchanged) and halves the
//     scale; at 2^16 the step applies;
//   - the same read one step late, as the trainer runs it on webgpu (training/pending-step.ts): an
//     overflow found after the next step was queued holds that step on the GPU, which then runs
//     again at the lowered scale; parameters, AdamW state, loss scale and losses equal those of
//     in-step reads bit for bit;
//   - exact resume through train() with fp16: the loss scale is saved in trainer_state.json, and a
//     run resumed from checkpoint-2 logs and ends as the uninterrupted one, bit for bit;
//   - a run whose gradients overflow at every scale: the scale halves from 2^16 to its floor of 1,
//     and the overflow there stops the run with a TrainingError saying so (before, the scale went on
//     halving to 0 and the run read a NaN loss, or ended with every step skipped);
//   - fp16 on another backend is an input error naming the flag.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Tensor, Tensor1D, Tensor2D, Tensor4D } from '@tensorflow/tfjs';
import { InputError, TrainingError } from '../../common/errors.ts';
import { hfWeightsOf, writeModelFolder } from '../../training/checkpoint.ts';
import { capabilitiesOf, type Tf } from '../../training/backend.ts';
import { loadTf } from '../../training/backend/common.ts';
import { SyntheticBatches } from '../../training/bench.ts';
import { createAdamW } from '../../training/flat-adamw.ts';
import { DynamicLossScale, type LossScaleOptions } from '../../training/loss-scale.ts';
import { parseModelConfig, updateModelConfig, type ModelConfig } from '../../training/models/config.ts';
import { makeOps, REFERENCE_CAPABILITIES } from '../../training/models/ops.ts';
import { createMaskedLM } from '../../training/models/roberta.ts';
import { ADAMW_DEFAULTS } from '../../training/optimizer.ts';
import { resolvePrecision, withPrecision } from '../../training/precision.ts';
import { readMetrics } from '../../training/report.ts';
import { PendingStep } from '../../training/pending-step.ts';
import { train, TRAIN_DEFAULTS } from '../../training/trainer.ts';
import { computeGradients, issueOptimizerStep, optimizerStep, type StepResult } from '../../training/train-step.ts';
import { brownDocuments, preparedFixture, relDiff, ROOT, writeTinyConfig } from './train-helpers.ts';
import { useWebGpuForFile, webgpuSkip } from './webgpu-gate.ts';
import { decayedParameters, initialWeights } from '../../training/models/weights.ts';

const skip = await webgpuSkip('fp16');
let tf: Tf;
useWebGpuForFile(skip, (t) => (tf = t));
const quiet = () => {};

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-fp16-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

const FP16 = { ...REFERENCE_CAPABILITIES, matmulF16: 'scalar' as const };

function random(shape: number[], seed: number): Tensor {
  return tf.randomUniform(shape, -1, 1, 'float32', seed);
}

/** Values and gradients (with respect to every input) of f on fp16 ops and on float32 ops: the worst relative difference. */
async function compareOps(f: (ops: ReturnType<typeof makeOps>, xs: Tensor[]) => Tensor, xs: Tensor[]): Promise<number> {
  const run = (caps: typeof FP16 | typeof REFERENCE_CAPABILITIES) => {
    const ops = makeOps(tf, caps);
    return tf.tidy(() => {
      const { value, grads } = tf.valueAndGrads((...ins: Tensor[]) => tf.sum(tf.mul(f(ops, ins), tf.range(1, 1 + f(ops, ins).size).reshape(f(ops, ins).shape).div(100))))(xs);
      return [f(ops, xs), value, ...grads];
    });
  };
  const half = run(FP16);
  const full = run(REFERENCE_CAPABILITIES);
  let worst = 0;
  for (let i = 0; i < half.length; i++) {
    assert.deepEqual(half[i].shape, full[i].shape);
    worst = Math.max(worst, relDiff(await half[i].data(), await full[i].data()).rel);
  }
  tf.dispose([...half, ...full]);
  return worst;
}

test('fp16 ops equal the float32 ops within 4e-3 relative: values and gradients, every transpose case', { skip }, async (t) => {
  const before = tf.memory().numTensors;
  const cases: [string, (ops: ReturnType<typeof makeOps>, xs: Tensor[]) => Tensor, Tensor[]][] = [
    ['matMul', (ops, [a, b]) => ops.matMul(a as Tensor2D, b as Tensor2D), [random([37, 70], 1), random([70, 19], 2)]],
    ['linear', (ops, [x, w, b]) => ops.linear(x as Tensor2D, w as Tensor2D, b as Tensor1D), [random([33, 40], 3), random([40, 65], 4), random([65], 5)]],
    ['tiedDecoder', (ops, [h, e, b]) => ops.tiedDecoder(h as Tensor2D, e as Tensor2D, b as Tensor1D), [random([21, 48], 6), random([90, 48], 7), random([90], 8)]],
  ];
  // linearWithSkip: fp16 adds the bias and (backward) the skip's gradient inside the product; both
  // outputs feed the loss, so x's gradient is dy W^T + dskip. With and without an activation.
  for (const act of [undefined, 'gelu', 'gelu_new'] as const) {
    cases.push([`linearWithSkip(${act ?? 'none'})`, (ops, [x, w, b]) => {
      const [y, skip] = ops.linearWithSkip(x as Tensor2D, w as Tensor2D, b as Tensor1D, act);
      return tf.concat([tf.reshape(y, [-1]), tf.reshape(tf.mul(skip, 3), [-1])]);
    }, [random([35, 40], 11), random([40, 66], 12), random([66], 13)]]);
  }
  for (const [ta, tb] of [[false, false], [false, true], [true, false], [true, true]] as const) {
    const [B, nh, M, N, K] = [2, 3, 17, 13, 24];
    cases.push([`batchMatMul(${ta}, ${tb})`, (ops, [a, b]) => ops.batchMatMul(a as Tensor4D, b as Tensor4D, ta, tb),
      [random(ta ? [B, nh, K, M] : [B, nh, M, K], 9), random(tb ? [B, nh, N, K] : [B, nh, K, N], 10)]]);
  }
  for (const [name, f, xs] of cases) {
    const worst = await compareOps(f, xs);
    t.diagnostic(`${name}: ${worst.toExponential(2)}`);
    assert.ok(worst <= 4e-3, `${name}: ${worst} relative`);
    // Not float32 in disguise: f16 operands leave a visible difference.
    assert.ok(worst > 1e-6, `${name}: ${worst} relative is float32's, not f16's`);
    tf.dispose(xs);
  }
  assert.equal(tf.memory().numTensors, before);
});

const BERT_TINY = path.join(ROOT, 'configs/bert-tiny.json');
function tinyConfig(): ModelConfig {
  const base = parseModelConfig(JSON.parse(fs.readFileSync(BERT_TINY, 'utf8')), BERT_TINY);
  return updateModelConfig(base, { vocab_size: 1000, pad_token_id: 0 }, BERT_TINY);
}

test('bert-tiny with fp16 products: loss and gradients of one batch near fp32\'s', { skip }, async (t) => {
  const config = tinyConfig();
  const batch = new SyntheticBatches(config, 4, 32, 3).next();
  const caps = capabilitiesOf(tf, 'webgpu');
  const results = [];
  for (const precision of [{ name: 'fp32' as const }, { name: 'fp16' as const, variant: 'scalar' as const }]) {
    const model = createMaskedLM(tf, config, { seed: 5, capabilities: withPrecision(caps, precision) });
    const { loss, grads } = computeGradients(tf, model, [batch], { training: false });
    const g = new Map<string, Float32Array>();
    for (const [name, x] of grads) g.set(name, (await x.data()) as Float32Array);
    results.push({ loss: (await loss.data())[0], grads: g });
    tf.dispose([loss, ...grads.values()]);
    model.dispose();
  }
  const [full, half] = results;
  const lossRel = Math.abs(half.loss - full.loss) / full.loss;
  t.diagnostic(`loss ${full.loss.toFixed(6)} (fp32) vs ${half.loss.toFixed(6)} (fp16): ${lossRel.toExponential(2)}`);
  assert.ok(lossRel <= 1e-3, `loss ${lossRel} relative`);
  for (const [name, g] of full.grads) {
    // The attention key biases' gradient is zero but for rounding (softmax ignores a constant added
    // to every score of a row): its relative difference measures rounding noise against noise.
    if (name.endsWith('attention.self.key.bias')) continue;
    const r = relDiff(half.grads.get(name)!, g).rel;
    const throughSoftmax = /attention\.self\.(query|key)\./.test(name);
    t.diagnostic(`${name}: ${r.toExponential(2)}`);
    assert.ok(r <= (throughSoftmax ? 1e-1 : 2e-3), `${name}: ${r} relative`);
  }
});

test('loss scaling in the step: an overflowing scale skips the step and halves; 2^16 applies', { skip }, async () => {
  const config = tinyConfig();
  const model = createMaskedLM(tf, config, { seed: 5, capabilities: withPrecision(capabilitiesOf(tf, 'webgpu'), { name: 'fp16', variant: 'scalar' }) });
  const optimizer = createAdamW(tf, model.variables, decayedParameters(config), ADAMW_DEFAULTS, 'webgpu');
  const data = new SyntheticBatches(config, 4, 32, 4);
  const probe = model.variables.get('bert.encoder.layer.0.output.dense.weight')!;
  try {
    const before = await probe.data();
    // 2^40 times the loss: the loss stays finite in f32, the backward pass's f16 operands do not.
    const scale = new DynamicLossScale({ initScale: 2 ** 40 });
    const skipped = await optimizerStep(tf, model, optimizer, [data.next()], { seed: 1, step: 1, lr: 1e-3, maxGradNorm: 1, lossScale: scale });
    assert.equal(skipped.overflow, true);
    assert.equal(skipped.applied, false);
    assert.ok(Number.isFinite(skipped.loss) && skipped.loss > 5, `the reported loss is the unscaled one: ${skipped.loss}`);
    assert.equal(scale.scale, 2 ** 39);
    assert.deepEqual(await probe.data(), before, 'no parameter changed');
    const state = await optimizer.getState();
    assert.equal(state.step, 0, 'the optimizer did not count the step');
    const normal = new DynamicLossScale();
    const applied = await optimizerStep(tf, model, optimizer, [data.next()], { seed: 1, step: 2, lr: 1e-3, maxGradNorm: 1, lossScale: normal });
    assert.equal(applied.applied, true);
    assert.equal(applied.overflow, undefined);
    assert.deepEqual(normal.getState(), { scale: 65536, clean_steps: 1 });
    assert.notDeepEqual(await probe.data(), before, 'the update changed the parameters');
  } finally {
    optimizer.dispose();
    model.dispose();
  }
});

/**
 * `steps` optimizer steps of bert-tiny with fp16 products and loss scaling of `scaleOptions`: with
 * in-step reads, or read one step late as the trainer does on webgpu (step s + 1 issued before
 * step s is read; a held step issued again after an overflow). The results, parameters, AdamW
 * state and loss scale at the end, and how many steps came back held.
 */
async function lossScaledRun(late: boolean, scaleOptions: Partial<LossScaleOptions>, steps: number) {
  const config = tinyConfig();
  const caps = withPrecision(capabilitiesOf(tf, 'webgpu'), { name: 'fp16', variant: 'scalar' });
  const data = new SyntheticBatches(config, 4, 32, 4);
  const drawn = Array.from({ length: steps }, () => structuredClone(data.next()));
  const model = createMaskedLM(tf, config, { seed: 5, capabilities: caps });
  const optimizer = createAdamW(tf, model.variables, decayedParameters(config), ADAMW_DEFAULTS, 'webgpu');
  const scale = new DynamicLossScale(scaleOptions);
  const o = (step: number) => ({ seed: 1, step, lr: 1e-3, maxGradNorm: 1, lossScale: scale });
  const results: StepResult[] = [];
  let held = 0;
  try {
    if (!late) {
      for (let s = 1; s <= steps; s++) results.push(await optimizerStep(tf, model, optimizer, [drawn[s - 1]], o(s)));
    } else {
      const issue = (s: number) => PendingStep.start(s, () => issueOptimizerStep(tf, model, optimizer, [drawn[s - 1]], o(s)));
      let current = await issue(1);
      for (let s = 1; s <= steps; s++) {
        assert.equal(current.late, true, 'the flat AdamW reads late');
        const ahead = s < steps ? await issue(s + 1) : null;
        const r = await current.read();
        if (r.overflow && ahead !== null) {
          const first = await ahead.read();
          if (first.held) held++;
          await ahead.reissue();
        }
        results.push(r);
        if (ahead !== null) current = ahead;
      }
    }
    const params = new Map<string, Float32Array>();
    for (const [name, v] of model.variables) params.set(name, (await v.data()) as Float32Array);
    return { results, params, state: await optimizer.getState(), scale: scale.getState(), held };
  } finally {
    optimizer.dispose();
    model.dispose();
  }
}

test('loss scaling read one step late: the step after an overflow is held on the GPU and runs again, equal to in-step reads bit for bit', { skip }, async () => {
  // 2^40 overflows the backward pass's f16 operands; one backoff of 2^-30 brings it to 2^10, which does not.
  const scaleOptions = { initScale: 2 ** 40, backoffFactor: 2 ** -30 };
  const inStep = await lossScaledRun(false, scaleOptions, 3);
  const oneLate = await lossScaledRun(true, scaleOptions, 3);
  assert.deepEqual(inStep.results.map((r) => [r.overflow ?? false, r.applied]), [[true, false], [false, true], [false, true]], 'step 1 overflows, 2 and 3 apply');
  assert.equal(oneLate.held, 1, 'step 2, queued before step 1 was read, came back held');
  assert.deepEqual(oneLate.results, inStep.results, 'the same results, step by step');
  assert.deepEqual(oneLate.scale, inStep.scale, 'the same loss scale');
  assert.equal(oneLate.state.step, 2, 'two updates counted');
  assert.deepEqual(oneLate.state, inStep.state, 'the same AdamW state');
  assert.deepEqual(oneLate.params, inStep.params, 'the same parameters');
});

test('loss scaling read one step late: the step after one that grows the scale runs at the grown scale, equal to in-step reads bit for bit', { skip }, async () => {
  // The scale doubles after every second clean step: in-step reads run steps 1-2 at 2^10, 3-4 at
  // 2^11, 5 at 2^12. Read late, step 3 is issued before step 2's read has grown the scale.
  const scaleOptions = { initScale: 2 ** 10, growthInterval: 2 };
  const inStep = await lossScaledRun(false, scaleOptions, 5);
  const oneLate = await lossScaledRun(true, scaleOptions, 5);
  assert.deepEqual(inStep.results.map((r) => r.scale), [2 ** 10, 2 ** 10, 2 ** 11, 2 ** 11, 2 ** 12], 'in-step reads: the scale each step ran at');
  assert.ok(inStep.results.every((r) => r.applied), 'every step applies');
  assert.deepEqual(oneLate.results, inStep.results, 'the same results (and scales), step by step');
  assert.deepEqual(oneLate.scale, inStep.scale, 'the same loss scale');
  assert.deepEqual(oneLate.state, inStep.state, 'the same AdamW state');
  assert.deepEqual(oneLate.params, inStep.params, 'the same parameters');
});

test('exact resume with fp16: loss scale in trainer_state.json, resumed run equal bit for bit', { skip }, async () => {
  const fx = await preparedFixture(path.join(tmp, 'fx'), brownDocuments(60_000), { vocabSize: 300, seqLen: 32 });
  const config = writeTinyConfig(path.join(tmp, 'tiny.json'), { max_position_embeddings: 32 });
  const o = (out: string, resume: boolean) => ({
    ...TRAIN_DEFAULTS, config, data: fx.dataDir, out, steps: 4, batchSize: 4, lr: 2e-3, warmup: 0, evalEvery: 0, evalBatches: 1,
    saveEvery: 2, logEvery: 1, seed: 7, resume, precision: 'fp16' as const,
  });
  const ctx = { tf, backend: { name: 'webgpu', device: 'test' }, version: 'test', log: quiet, progress: false };
  const full = path.join(tmp, 'full');
  await train(o(full, false), ctx);
  const saved = JSON.parse(fs.readFileSync(path.join(full, 'checkpoint-2', 'trainer_state.json'), 'utf8'));
  assert.deepEqual(saved.loss_scale, { scale: 65536, clean_steps: 2 });
  const resumed = path.join(tmp, 'resumed');
  fs.mkdirSync(resumed);
  fs.cpSync(path.join(full, 'checkpoint-2'), path.join(resumed, 'checkpoint-2'), { recursive: true });
  await train(o(resumed, true), ctx);
  const strip = (m: object[]) => (m as Array<{ step: number }>).filter((e) => e.step > 2).map((e) => ({ ...e, tokens_per_second: 0 }));
  const [a, b] = [strip(await readMetrics(full)), strip(await readMetrics(resumed))];
  assert.deepEqual(a.filter((e) => 'loss' in e).map((e) => e.step), [3, 4]);
  assert.deepEqual(b, a);
  for (const file of ['model.safetensors', 'optimizer.safetensors']) {
    const [x, y] = [fs.readFileSync(path.join(full, 'checkpoint-4', file)), fs.readFileSync(path.join(resumed, 'checkpoint-4', file))];
    assert.ok(x.equals(y), `checkpoint-4/${file} differs between the full and the resumed run`);
  }
});

test('gradients that overflow at every loss scale stop the run at the floor with a TrainingError', { skip }, async () => {
  const fx = await preparedFixture(path.join(tmp, 'fx-floor'), brownDocuments(20_000), { vocabSize: 300, seqLen: 32 });
  // A model whose head overflows f16 in the backward pass whatever the scale, with a finite loss:
  // the transform's dense layer is zero, so its LayerNorm sees rows of zeros (variance 0, output its
  // bias 0: logits 0, the loss ln V); its backward multiplies by weight / sqrt(eps) = 1e6 / 1e-6,
  // so the gradient entering the dense layer's f16 products is about 1e9 times the loss scale.
  const config = parseModelConfig({ ...JSON.parse(fs.readFileSync(writeTinyConfig(path.join(tmp, 'floor.json'), { max_position_embeddings: 32 }), 'utf8')), vocab_size: fx.tokenizer.vocabSize, pad_token_id: fx.tokenizer.specialIds.pad }, 'floor');
  const init = initialWeights(config, 3);
  init.tensors.get('cls.predictions.transform.dense.weight')!.data.fill(0);
  init.tensors.get('cls.predictions.transform.dense.bias')!.data.fill(0);
  init.tensors.get('cls.predictions.transform.LayerNorm.weight')!.data.fill(1e6);
  const from = path.join(tmp, 'floor-model');
  await writeModelFolder(from, { config, weights: await hfWeightsOf(config, init), tokenizer: fx.tokenizer });
  const lines: string[] = [];
  const out = path.join(tmp, 'floor-run');
  const o = {
    ...TRAIN_DEFAULTS, from, data: fx.dataDir, out, steps: 30, batchSize: 4, lr: 1e-3, warmup: 0, evalEvery: 0, evalBatches: 1,
    saveEvery: 0, logEvery: 1, seed: 7, precision: 'fp16' as const,
  };
  await assert.rejects(
    train(o, { tf, backend: { name: 'webgpu', device: 'test' }, version: 'test', log: (l: string) => lines.push(l), progress: false }),
    (err: unknown) => err instanceof TrainingError
      && /^gradients overflowed at step 17 at loss scale 1, the floor .*not finite even unscaled.*lower --lr, train with --precision fp32, or check the data$/.test((err as Error).message),
  );
  const overflows = lines.filter((l) => /gradients overflowed at loss scale/.test(l));
  assert.equal(overflows.length, 16, 'steps 1-16 skipped, at 2^16 down to 2');
  assert.match(overflows[15], /^step 16: .* at loss scale 2; step skipped, loss scale now 1$/);
});

test('fp16 on a backend without f16 kernels is an input error naming the flag', async () => {
  // The precision is resolved for the backend named; a cpu run never looks at the GPU.
  const anyTf = await loadTf();
  await assert.rejects(resolvePrecision(anyTf, 'cpu', 'fp16', quiet), (err: unknown) => err instanceof InputError && /--precision fp16 needs the webgpu backend/.test((err as Error).message));
  assert.deepEqual(await resolvePrecision(anyTf, 'wasm', 'auto', quiet), { name: 'fp32' });
  assert.deepEqual(await resolvePrecision(anyTf, 'webgpu', 'fp32', quiet), { name: 'fp32' });
});
