// The WebGPU suite (issue 5; docs/backends.md, "webgpu"): mlmkit on the webgpu backend (TF.js over Dawn)
// against the cpu backend, on bert-tiny and real text.
//
//   - the adapter: vendor, architecture, device, description, fallback/software, key limits;
//   - forward: logits of a padded batch equal cpu's within 1e-3 relative;
//   - dropout masks drawn on the GPU equal training/kernels/dropout-mask.ts's dropoutMask bit for bit (up
//     to past one dispatch dimension, and where i + k0 wraps), and a training forward uploads no mask;
//   - embedding gradients take the one-hot products on webgpu, equal cpu's tf.gather gradient,
//     and batches with other distinct-id counts leave TF.js's GPU buffer pool flat;
//   - one training step (the trainer's `optimizerStep`: dropout on, clipping, AdamW; lr and
//     epsilon 1, see the test): loss, gradients and every updated parameter equal cpu's within
//     1e-3 relative (the attention key biases, whose gradient is zero but for rounding, apart),
//     webgpu running mlmkit's fused kernels (LayerNorm, bias + GELU, bias gradients, attention
//     softmax, bias + dropout + residual, cross-entropy) and cpu their reference composites;
//   - a forward and backward pass of bert-tiny takes no more dispatches than the bound recorded
//     here (FORWARD_BACKWARD_DISPATCHES);
//   - 20 steps of `train()` lower the training loss and the held-out loss;
//   - 100 steps of `train()` leak nothing: tensor count and GPU bytes in use are flat (but for the
//     one read in flight while the loss is read one step late, see the test), and the
//     GPU bytes allocated grow only where TF.js's buffer pool meets a new size (see the test;
//     the model pads the head's rows to a multiple of 64 on webgpu so that sizes repeat).
//
// Relative difference, everywhere here: for tensors a (webgpu) and b (cpu) of one name,
// max_i |a_i - b_i| / max_i |b_i| (for a scalar, |a - b| / |b|).
//
// Where it runs. Without an adapter these tests skip with the probe's reason (a developer without
// Vulkan), unless MLM_REQUIRE_WEBGPU=1, which .ci/run sets: then a missing adapter FAILS the suite
// with that reason. Software adapters count (CI runs Mesa's llvmpipe through Vulkan). Every line
// worth reading in a CI log is printed twice: as a test diagnostic, and with console.log prefixed
// `webgpu-suite:`, which shows whatever the reporter.
//
// The model is bert-tiny (configs/bert-tiny.json: hidden 128, 2 layers, 2 heads, intermediate 512)
// with its vocabulary cut to 1,000 (a WordPiece vocabulary trained on the Brown text), to keep
// llvmpipe and the cpu reference quick: the cpu backend's UnsortedSegmentSum (the embedding
// gradient) costs time in proportion to the vocabulary. The data is prepared one line per example
// (`lines` mode), so rows are padded.
//
// Measured on the 2-core development machine (llvmpipe, Mesa 25.0.7 with LLVM 15, other jobs
// running): the whole file in 70 to 110 s, most of it the 100-step leak run (40-50 s), the 20-step
// run (20-30 s) and the cpu side of the one-step comparison (8-18 s). Figures: the diagnostics.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { NamedAttrMap, Tensor } from '@tensorflow/tfjs';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { MaskedBatches, RowStream } from '../../data/batches.ts';
import type { MlmBatch } from '../../data/masking.ts';
import { Rng } from '../../common/rng.ts';
import { readManifest, SplitReader } from '../../data/shards.ts';
import { capabilitiesOf, probeWebGpu, releaseWebGpu, selectBackend, type Tf, type WebGpuProbe } from '../../training/backend.ts';
import { batchInputs, evaluateMasked, maskingFor, type EvalResult } from '../../training/evaluate.ts';
import { parseModelConfig, updateModelConfig, type ModelConfig } from '../../training/models/config.ts';
import { DROPOUT_MASK_KERNEL } from '../../training/kernels/dropout-mask.ts';
import { BIAS_GELU_GRAD_KERNEL, BIAS_GELU_KERNEL } from '../../training/kernels/bias-gelu.ts';
import { BIAS_GRAD_KERNEL } from '../../training/kernels/bias-grad.ts';
import { LAYER_NORM_GRAD_KERNEL, LAYER_NORM_KERNEL } from '../../training/kernels/layer-norm.ts';
import { SyntheticBatches, watchBackendIo } from '../../training/bench.ts';
import { dropoutKeys, dropoutMask, dropoutThreshold } from '../../training/kernels/dropout-mask.ts';
import { makeOps, maskedRowCount, MASKED_ROW_BUCKET, type ModelCapabilities } from '../../training/models/ops.ts';
import { MATMUL_F16_KERNEL } from '../../training/kernels/matmul.ts';
import { createMaskedLM } from '../../training/models/roberta.ts';
import { AdamW } from '../../training/optimizer.ts';
import { rawWebGpu } from '../../training/backend/webgpu/raw.ts';
import { STATS_FLOATS } from '../../training/backend/webgpu/flat-adamw.ts';
import { readMetrics } from '../../training/report.ts';
import { train, TRAIN_DEFAULTS, type TrainOptions } from '../../training/trainer.ts';
import { optimizerStep } from '../../training/train-step.ts';
import { brownDocuments, preparedFixture, relDiff, ROOT, type PreparedFixture } from './train-helpers.ts';
import { decayedParameters, unpackTensors } from '../../training/models/weights.ts';

// -------------------------------------------------------------------------------------------------
// Run, skip or fail

type SuiteGate = { run: true; reason: string } | { run: false; fail: boolean; reason: string };

/**
 * Whether the suite runs: with an adapter, yes; without one it fails when `required` (the value of
 * MLM_REQUIRE_WEBGPU) is '1', and skips when it is unset, empty or '0'. Any other value fails, so
 * that a typo in CI cannot turn the suite into a silent skip.
 */
function suiteGate(probe: Pick<WebGpuProbe, 'ok' | 'reason'>, required: string | undefined): SuiteGate {
  const flag = (required ?? '').trim();
  if (flag !== '' && flag !== '0' && flag !== '1') {
    return { run: false, fail: true, reason: `MLM_REQUIRE_WEBGPU must be 1 or 0, not '${flag}'` };
  }
  if (probe.ok) return { run: true, reason: probe.reason };
  return flag === '1'
    ? { run: false, fail: true, reason: `no WebGPU adapter, and MLM_REQUIRE_WEBGPU=1 requires one: ${probe.reason}` }
    : { run: false, fail: false, reason: `no WebGPU adapter (MLM_REQUIRE_WEBGPU=1 would make this a failure): ${probe.reason}` };
}

const probe = await probeWebGpu();
const gate = suiteGate(probe, process.env.MLM_REQUIRE_WEBGPU);
console.log(`webgpu-suite: ${gate.run ? `adapter ${gate.reason}` : `${gate.fail ? 'FAILING' : 'skipping'}: ${gate.reason}`}`);
/** The `skip` option of the tests that need the adapter (they skip when the gate fails too: the adapter test reports it). */
const skip = gate.run ? false : gate.reason;

// -------------------------------------------------------------------------------------------------
// Helpers

const quiet = (_line: string) => {};
const VOCAB = 1000;
const SEED = 42;
const BERT_TINY = path.join(ROOT, 'configs/bert-tiny.json');

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-webgpu-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

/** A diagnostic of the test, and the same line on stdout for CI logs. */
function report(t: TestContext, line: string): void {
  t.diagnostic(line);
  console.log(`webgpu-suite: ${line}`);
}

const fixtures = new Map<number, Promise<PreparedFixture>>();
/**
 * Brown text (~150 kB), WordPiece vocabulary of 1,000, one example per line, rows of `seqLen`:
 * seq 64 with 10% of the documents held out (the forward, step and 20-step tests), seq 32 with
 * none (the leak test, whose run then evaluates nothing).
 */
function data(seqLen: 64 | 32): Promise<PreparedFixture> {
  let fx = fixtures.get(seqLen);
  if (fx === undefined) {
    fx = preparedFixture(path.join(tmp, `seq${seqLen}`), brownDocuments(150_000), { vocabSize: VOCAB, seqLen, mode: 'lines', validationSplit: seqLen === 64 ? 0.1 : 0 });
    fixtures.set(seqLen, fx);
  }
  return fx;
}

/** bert-tiny with the data's vocabulary and pad id (what `mlm pretrain --config` makes of it). */
function tinyConfig(fx: PreparedFixture): ModelConfig {
  const base = parseModelConfig(JSON.parse(fs.readFileSync(BERT_TINY, 'utf8')), BERT_TINY);
  return updateModelConfig(base, { vocab_size: fx.tokenizer.vocabSize, pad_token_id: fx.tokenizer.specialIds.pad }, BERT_TINY);
}

function rowLengths(b: MlmBatch): number[] {
  return Array.from({ length: b.batchSize }, (_, r) => b.attentionMask.subarray(r * b.seqLen, (r + 1) * b.seqLen).reduce((s, x) => s + x, 0));
}

/**
 * The first masked batch of 4 rows (the trainer's row order and masking, seed 42) that holds a
 * full row and one at most half full: padding that the attention mask must hide.
 */
async function paddedBatch(fx: PreparedFixture): Promise<MlmBatch> {
  const manifest = await readManifest(fx.dataDir);
  const reader = new SplitReader(fx.dataDir, manifest, 'train');
  try {
    const m = maskingFor(fx.tokenizer);
    const batches = new MaskedBatches(new RowStream(reader, { batchSize: 4, seed: SEED, shuffle: true, dropLast: true }), m.options, m.padId, m.specials, SEED);
    for (let i = 0; i < 200; i++) {
      const b = batches.next()!;
      const lengths = rowLengths(b);
      if (Math.max(...lengths) === b.seqLen && Math.min(...lengths) <= b.seqLen / 2) {
        return { ...b, inputIds: b.inputIds.slice(), attentionMask: b.attentionMask.slice(), tokenTypeIds: b.tokenTypeIds.slice(), labels: b.labels.slice() };
      }
    }
  } finally {
    reader.close();
  }
  throw new Error('no batch of 4 rows with a full and a half-empty row in 200 batches');
}

/** Starts the webgpu backend (software adapters accepted, as `--backend webgpu` does). */
async function startWebGpu(): Promise<{ tf: Tf; device: string }> {
  const info = await selectBackend('webgpu', { log: quiet });
  assert.equal(info.tf.getBackend(), 'webgpu');
  return { tf: info.tf, device: info.device };
}

/** Releases the webgpu device and goes back to cpu, as the other webgpu tests do. */
async function leaveWebGpu(tf: Tf): Promise<void> {
  releaseWebGpu(tf);
  await selectBackend('cpu', { log: quiet });
}

/** Runs `fn` on `backend`; webgpu is released afterwards, whatever happens. */
async function on<T>(backend: 'cpu' | 'webgpu', fn: (tf: Tf) => Promise<T>): Promise<T> {
  const { tf } = backend === 'webgpu' ? await startWebGpu() : await selectBackend('cpu', { log: quiet });
  try {
    return await fn(tf);
  } finally {
    if (backend === 'webgpu') await leaveWebGpu(tf);
  }
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}
const e = (x: number) => x.toExponential(2);
const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(2)} MiB`;

/** What tf.memory() says on webgpu (the backend adds the GPU figures to the engine's). */
interface WebGpuMemory {
  numTensors: number;
  numBytes: number;
  /** Bytes of GPU buffers in use (tensors, and uniforms not yet submitted). */
  numBytesInGPU: number;
  /** Bytes of every GPU buffer created and not destroyed: in use plus TF.js's pool of free ones. */
  numBytesAllocatedInGPU: number;
}

function webgpuMemory(tf: Tf): WebGpuMemory {
  const m = tf.memory() as unknown as WebGpuMemory;
  assert.equal(typeof m.numBytesInGPU, 'number', 'tf.memory() reports numBytesInGPU on webgpu');
  assert.equal(typeof m.numBytesAllocatedInGPU, 'number', 'tf.memory() reports numBytesAllocatedInGPU on webgpu');
  return { numTensors: m.numTensors, numBytes: m.numBytes, numBytesInGPU: m.numBytesInGPU, numBytesAllocatedInGPU: m.numBytesAllocatedInGPU };
}

function trainOptions(over: Partial<TrainOptions> & Pick<TrainOptions, 'data' | 'out'>): TrainOptions {
  return { ...TRAIN_DEFAULTS, config: BERT_TINY, warmup: 0, evalEvery: 0, saveEvery: 0, logEvery: 1, seed: SEED, ...over };
}

// -------------------------------------------------------------------------------------------------
// The tests

test('MLM_REQUIRE_WEBGPU=1 turns a missing adapter into a failure with the reason; otherwise a skip', () => {
  const none = { ok: false, reason: 'no Vulkan driver (libvulkan.so.1 not found); install a GPU driver' };
  const some = { ok: true, reason: 'llvmpipe (software)' };
  assert.deepEqual(suiteGate(some, undefined), { run: true, reason: 'llvmpipe (software)' });
  assert.deepEqual(suiteGate(some, '1'), { run: true, reason: 'llvmpipe (software)' });
  for (const flag of [undefined, '', '0', ' 0 ']) {
    const g = suiteGate(none, flag);
    assert.equal(g.run, false);
    assert.equal(!g.run && g.fail, false, `MLM_REQUIRE_WEBGPU=${flag}`);
    assert.match(g.reason, /libvulkan\.so\.1 not found/);
  }
  for (const flag of ['1', ' 1']) {
    const g = suiteGate(none, flag);
    assert.ok(!g.run && g.fail);
    assert.match(g.reason, /MLM_REQUIRE_WEBGPU=1 requires one: no Vulkan driver \(libvulkan\.so\.1 not found\)/);
  }
  for (const flag of ['yes', 'true', '2']) {
    for (const p of [none, some]) {
      const g = suiteGate(p, flag);
      assert.ok(!g.run && g.fail, `MLM_REQUIRE_WEBGPU=${flag}`);
      assert.match(g.reason, /MLM_REQUIRE_WEBGPU must be 1 or 0/);
    }
  }
});

test('the WebGPU adapter: name, kind and limits (a missing one fails here under MLM_REQUIRE_WEBGPU=1)', { skip: gate.run || gate.fail ? false : gate.reason }, async (t) => {
  if (!gate.run) assert.fail(`webgpu suite: ${gate.reason}`);
  const info = probe.adapterInfo!;
  report(t, `adapter: ${info.description || '(no description)'}; vendor ${info.vendor || '?'}, architecture ${info.architecture || '?'}, device ${info.device || '?'}`);
  report(t, `adapter kind: isFallbackAdapter ${info.isFallbackAdapter}, software ${info.software}`);
  await on('webgpu', async (tf) => {
    const backend = tf.backend() as unknown as WebGPUBackend;
    const lim = backend.device.limits;
    report(t, `device limits (as TF.js got them): maxBufferSize ${mb(lim.maxBufferSize)}, maxStorageBufferBindingSize ${mb(lim.maxStorageBufferBindingSize)}, ` +
      `maxStorageBuffersPerShaderStage ${lim.maxStorageBuffersPerShaderStage}, maxComputeWorkgroupStorageSize ${lim.maxComputeWorkgroupStorageSize} B, ` +
      `maxComputeInvocationsPerWorkgroup ${lim.maxComputeInvocationsPerWorkgroup}, maxComputeWorkgroupSize ${lim.maxComputeWorkgroupSizeX}x${lim.maxComputeWorkgroupSizeY}x${lim.maxComputeWorkgroupSizeZ}, ` +
      `maxComputeWorkgroupsPerDimension ${lim.maxComputeWorkgroupsPerDimension}`);
    report(t, `device features: ${[...backend.device.features].sort().join(', ') || '(none)'}`);
    // TF.js's shaders need 8 storage buffers per stage at least; the trainer sums gradients in
    // groups of 8 for the same reason (training/trainer.ts globalNorm).
    assert.ok(lim.maxStorageBuffersPerShaderStage >= 8);
    assert.ok(lim.maxStorageBufferBindingSize >= 128 * 2 ** 20);
  });
});

test('bert-tiny forward on webgpu: logits of a padded batch equal cpu within 1e-3 relative', { skip }, async (t) => {
  const fx = await data(64);
  const config = tinyConfig(fx);
  const batch = await paddedBatch(fx);
  const logitsOn = (backend: 'cpu' | 'webgpu') =>
    on(backend, async (tf) => {
      const model = createMaskedLM(tf, config, { seed: SEED, capabilities: capabilitiesOf(tf, tf.getBackend()) });
      try {
        const logits = tf.tidy(() => model.logits(batchInputs(tf, batch), { training: false }));
        const values = Float32Array.from(await logits.data());
        logits.dispose();
        return values;
      } finally {
        model.dispose();
      }
    });
  const want = await logitsOn('cpu');
  const got = await logitsOn('webgpu');
  const [B, T, V] = [batch.batchSize, batch.seqLen, config.vocab_size];
  assert.equal(got.length, B * T * V);
  const all = relDiff(got, want);
  // Real (unpadded) positions only: what a loss ever reads.
  const real = (x: Float32Array) => x.filter((_, i) => batch.attentionMask[Math.floor(i / V)] === 1);
  const atReal = relDiff(real(got), real(want));
  report(t, `forward: bert-tiny (vocab ${V}), batch ${B}x${T}, row lengths ${rowLengths(batch).join(', ')}; logits [${B}, ${T}, ${V}]`);
  report(t, `forward: max|webgpu - cpu| ${e(all.diff)}, max|cpu| ${e(all.scale)}, relative ${e(all.rel)} (real positions only: ${e(atReal.rel)})`);
  assert.ok(all.rel <= 1e-3, `logits differ by ${e(all.rel)} relative`);
});

test('dropout masks drawn on the GPU equal dropoutMask bit for bit, and a training forward uploads none', { skip }, async (t) => {
  await on('webgpu', async (tf) => {
    // The largest: more workgroups of 64 than one dispatch dimension takes, so TF.js folds the
    // dispatch and the shader's index comes from all three dimensions. 'wrap/18428' has
    // k0 = 4294869612: i + k0 passes 2^32 at entry 97,684.
    const perDimension = (tf.backend() as unknown as WebGPUBackend).device.limits.maxComputeWorkgroupsPerDimension;
    const folded = Math.min(64 * perDimension + 1000, 2 ** 24);
    report(t, `dropout masks: one dispatch dimension takes ${perDimension} workgroups of 64; ${folded} entries ${folded > 64 * perDimension ? 'fold' : 'do NOT fold'} the dispatch`);
    assert.ok(folded > 64 * perDimension, 'the largest mask folds the dispatch');
    assert.equal(dropoutKeys('wrap/18428')[0], 4294869612);
    for (const [n, rate, seed] of [[1, 0.1, 'one'], [1000, 0.5, '3/bert.embeddings'], [100_000, 0.3, 'wrap/18428'], [folded, 0.1, '9/bert.encoder.layer.1.attention.self']] as const) {
      const [k0, k1, k2] = dropoutKeys(seed);
      const attrs = { n, k0, k1, k2, threshold: dropoutThreshold(rate), scale: Math.fround(1 / (1 - rate)) };
      const mask = tf.engine().runKernel(DROPOUT_MASK_KERNEL, {}, attrs as unknown as NamedAttrMap) as Tensor;
      const got = (await mask.data()) as Float32Array;
      mask.dispose();
      const want = dropoutMask(n, rate, seed);
      let differ = 0;
      for (let i = 0; i < n; i++) if (got[i] !== want[i]) differ++;
      report(t, `dropout masks: ${n} entries at rate ${rate}: ${differ} differ from dropoutMask`);
      assert.equal(differ, 0);
    }
    // A training forward of bert-tiny uploads what an evaluation forward does (TF.js's small
    // CPU-side tensors: constants, position ids, ops it runs on the CPU) and no mask.
    const config = parseModelConfig({ ...JSON.parse(fs.readFileSync(BERT_TINY, 'utf8')), vocab_size: 1000 }, BERT_TINY);
    const model = createMaskedLM(tf, config, { seed: 1, capabilities: capabilitiesOf(tf, tf.getBackend()) });
    const ids = tf.tensor2d(Int32Array.from({ length: 4 * 32 }, (_, i) => (i * 7) % 1000), [4, 32], 'int32');
    const ones = tf.onesLike(ids);
    const forward = async (training: boolean) => {
      const watch = watchBackendIo(tf);
      const hidden = model.encode({ inputIds: ids, attentionMask: ones }, { training, dropoutSeed: 5 });
      await hidden.data();
      hidden.dispose();
      watch.stop();
      return watch.counts();
    };
    await forward(false); // TF.js uploads a tensor's data when a kernel first uses it: the weights, here
    const evaluation = await forward(false);
    const training = await forward(true);
    report(t, `dropout masks: bert-tiny forward (4 x 32; ${2 * config.num_hidden_layers + 1} hidden and ${config.num_hidden_layers} attention dropout sites) uploads ` +
      `${training.uploads} tensors, ${training.uploadBytes} bytes training; ${evaluation.uploads} tensors, ${evaluation.uploadBytes} bytes evaluating`);
    assert.equal(training.uploadBytes, evaluation.uploadBytes);
    tf.dispose([ids, ones]);
    model.dispose();
  });
});

/**
 * Dispatches of one forward and backward pass of bert-tiny (vocab 1,000) on 4 x 32 synthetic
 * tokens, dropout on, as measured by the test below: 228 once mlmkit's LayerNorm, bias + GELU and
 * bias-gradient kernels ran and Linear layers added their bias inside the matMul (a counting script
 * at the same size, after three training steps, saw 399 dispatches before those changes and 232
 * after), 178 once the attention softmax, bias + dropout + residual and cross-entropy kernels
 * and the one-transpose head split came in, 170 once the gradient of the side-by-side query, key
 * and value weights and biases split in one kernel each instead of three Slice programs (counted
 * since then with the dispatches of the raw seam, training/backend/webgpu/raw.ts, 4 of the 170),
 * 140 once the heads moved between rows and [B, heads, T, hs] in one kernel each way, the query,
 * key and value weights and biases went side by side in one kernel (and back), the LayerNorm
 * forward became one dispatch and its dgamma/dbeta one, and the bias + GELU and bias + dropout +
 * residual gradients wrote their bias gradients in the same pass (2026-12-05), 119 once each
 * residual branch ended in one fused kernel (bias, dropout, residual and LayerNorm: one dispatch
 * forward, two backward), x's two gradients met inside the dx matMul, and every LayerNorm
 * backward became two dispatches whatever the row count (2026-12-06), 114 once the word
 * embeddings' gradient and the head's gather gradient added rows in one scatter kernel each
 * instead of UnsortedSegmentSum's four dispatches (2026-12-06). fp16 gave 122 until the f16 product
 * added the biases and the skip gradient in its own kernel (2026-12-06); it is held to the same bound.
 * 112 once the query/key/value projection's gradient put the heads back into rows and summed them
 * for its bias in one kernel (Ops.linearToHeads, 2026-12-06).
 * 108 once the model stored query, key and value packed, without the concatenation forward and its
 * split backward (weights.ts, "Packed storage", 2026-12-06).
 * A change that adds dispatches to the model's pass fails the test: lower the bound when a change
 * removes some.
 */
const FORWARD_BACKWARD_DISPATCHES = 108;

test('dispatch count: one forward and backward pass of bert-tiny on webgpu does not regress, fp32 and fp16', { skip }, async (t) => {
  await on('webgpu', async (tf) => {
    // fp16 (the scalar f16 kernel here) adds its biases and the skip gradient inside its products
    // as fp32's fused matMul does: the same count.
    for (const precision of ['fp32', 'fp16'] as const) {
      const caps = capabilitiesOf(tf, tf.getBackend());
      if (precision === 'fp16' && !caps.kernels.has(MATMUL_F16_KERNEL)) continue;
      report(t, `dispatch count: bert-tiny forward + backward, 4 x 32, dropout on, ${precision}: ${await countDispatches(tf, precision === 'fp16' ? { ...caps, matmulF16: 'scalar' } : caps)} dispatches (bound ${FORWARD_BACKWARD_DISPATCHES})`);
    }
  });
});

/** Compute dispatches of one forward and backward pass of bert-tiny (4 x 32, dropout on), after a first pass; asserts the bound. */
async function countDispatches(tf: Tf, capabilities: ModelCapabilities): Promise<number> {
  const config = parseModelConfig({ ...JSON.parse(fs.readFileSync(BERT_TINY, 'utf8')), vocab_size: VOCAB }, BERT_TINY);
  const model = createMaskedLM(tf, config, { seed: 1, capabilities });
  const batch = new SyntheticBatches(config, 4, 32, 3, 0.15).next();
  const backend = tf.backend() as unknown as { recordAndSubmit: (...args: unknown[]) => unknown };
  const record = backend.recordAndSubmit;
  let dispatches = 0;
  const pass = async () => {
    const out = tf.tidy(() => {
      const vars = [...model.variables.values()];
      const { value, grads } = tf.variableGrads(() => model.maskedLossSum(batchInputs(tf, batch), batch.labels, { training: true, dropoutSeed: 5 }).loss, vars);
      return [value, ...Object.values(grads)];
    });
    await out[0].data();
    tf.dispose(out);
  };
  // TF.js's programs (recordAndSubmit) and the raw seam's own dispatches.
  const raw = rawWebGpu(tf);
  try {
    await pass(); // first use: uploads and pipeline compilation
    backend.recordAndSubmit = function (this: unknown, ...args: unknown[]) {
      dispatches++;
      return record.apply(this, args);
    };
    const rawBefore = raw.counts.dispatches;
    await pass();
    dispatches += raw.counts.dispatches - rawBefore;
  } finally {
    backend.recordAndSubmit = record;
    model.dispose();
  }
  assert.ok(dispatches > 0, 'the counter sees the dispatches');
  assert.ok(dispatches <= FORWARD_BACKWARD_DISPATCHES, `${dispatches} dispatches, more than ${FORWARD_BACKWARD_DISPATCHES} (${capabilities.matmulF16 === undefined ? 'fp32' : 'fp16'})`);
  return dispatches;
}

test('one training step of bert-tiny on webgpu (dropout on, clipping, AdamW): loss, gradients and updated parameters equal cpu within 1e-3 relative', { skip }, async (t) => {
  const fx = await data(64);
  const config = tinyConfig(fx);
  const batch = await paddedBatch(fx);
  const { adamBeta1: beta1, adamBeta2: beta2, weightDecay, maxGradNorm } = TRAIN_DEFAULTS;
  // The trainer's defaults, but lr 1 and AdamW's epsilon 1 (`--lr 1 --adam-epsilon 1`): the step
  // is then about an SGD step of lr 1 on the clipped gradient (lr * g / (|g| + eps), |g| <= 1),
  // which moves the parameters far more than the 1e-3 bound and is a smooth function of the
  // gradient. With the defaults (lr 5e-4, eps 1e-8) neither holds: a weight of scale 0.1 moves
  // by 5e-4, so a missing update would pass a 1e-3 comparison; and Adam's first step is then
  // ~lr * sign(g), decided by rounding wherever |g| is near 1e-8 (it moves by ~lr * dg / (4 eps)
  // for a difference dg in g). Measured with the defaults: gradients equal within 1.2e-6, the
  // updates within 1.4e-2, and zero-initialised biases (whose value after one step IS the
  // update) within 9e-5 to 4.3e-4 depending on the batch: Adam's first step, not the backend.
  const lr = 1;
  const epsilon = 1;
  assert.ok(config.hidden_dropout_prob > 0 && config.attention_probs_dropout_prob > 0, 'dropout is on');

  // The trainer's step 1 (optimizerStep: dropout seeded from (seed, step), so both backends use
  // the same masks, cpu drawing them in JavaScript and webgpu on the GPU; gradients, global norm,
  // clipping, AdamW), from the same init.
  const stepOn = (backend: 'cpu' | 'webgpu') =>
    on(backend, async (tf) => {
      const model = createMaskedLM(tf, config, { seed: SEED, capabilities: capabilitiesOf(tf, tf.getBackend()) });
      const optimizer = new AdamW(tf, model.variables, decayedParameters(config), { beta1, beta2, epsilon, weightDecay });
      try {
        // By transformers' names: query, key and value apart (the model packs them), so that
        // the key biases below can be set aside.
        const apart = (arrays: Map<string, Float32Array>) =>
          new Map([...unpackTensors(config, new Map([...arrays].map(([n, data]) => [n, { shape: [...model.variables.get(n)!.shape], data }])))].map(([n, t]) => [n, t.data]));
        const read = async () => {
          const out = new Map<string, Float32Array>();
          for (const [name, v] of model.variables) out.set(name, Float32Array.from(await v.data()));
          return apart(out);
        };
        const before = await read();
        const t0 = performance.now();
        let result: Awaited<ReturnType<typeof optimizerStep>> | undefined;
        const profile = await tf.profile(async () => {
          result = await optimizerStep(tf, model, optimizer, [batch], { seed: SEED, step: 1, lr, maxGradNorm });
        });
        const seconds = (performance.now() - t0) / 1000;
        const kernels = new Set(profile.kernelNames);
        const after = await read();
        // After one update the first moment is (1 - beta1) * (clip scale) * gradient: the gradients, scaled.
        const state = await optimizer.getState();
        const moments = apart(new Map([...model.variables.keys()].map((name) => [name, state.tensors.get(`${name}.exp_avg`)!.data])));
        return { result: result!, before, after, moments, seconds, kernels };
      } finally {
        optimizer.dispose();
        model.dispose();
      }
    });
  const want = await stepOn('cpu');
  const got = await stepOn('webgpu');
  // webgpu ran mlmkit's fused kernels (training/kernels/), cpu their reference composites.
  const fused = [LAYER_NORM_KERNEL, LAYER_NORM_GRAD_KERNEL, BIAS_GELU_KERNEL, BIAS_GELU_GRAD_KERNEL, BIAS_GRAD_KERNEL];
  report(t, `step: webgpu ran ${[...got.kernels].filter((k) => k.startsWith('Mlmkit')).sort().join(', ')}`);
  for (const k of fused) {
    assert.ok(got.kernels.has(k), `webgpu ran ${k}`);
    assert.ok(!want.kernels.has(k), `cpu did not run ${k}`);
  }

  assert.ok(want.result.applied && got.result.applied);
  assert.equal(got.result.masked, want.result.masked);
  const lossRel = Math.abs(got.result.loss - want.result.loss) / Math.abs(want.result.loss);
  const normRel = Math.abs(got.result.norm - want.result.norm) / Math.abs(want.result.norm);
  report(t, `step: bert-tiny (vocab ${config.vocab_size}), batch ${batch.batchSize}x${batch.seqLen} (row lengths ${rowLengths(batch).join(', ')}), ${want.result.masked} masked tokens, lr ${lr}, AdamW eps ${epsilon}; cpu ${want.seconds.toFixed(1)} s, webgpu ${got.seconds.toFixed(1)} s`);
  report(t, `step: loss cpu ${want.result.loss} webgpu ${got.result.loss} (relative ${e(lossRel)}); gradient norm cpu ${want.result.norm} webgpu ${got.result.norm} (relative ${e(normRel)})`);
  assert.ok(lossRel <= 1e-3, `loss differs by ${e(lossRel)}`);
  assert.ok(normRel <= 1e-3, `gradient norm differs by ${e(normRel)}`);

  // The attention key biases are set aside: their gradient is zero in exact arithmetic (adding
  // q.b_k to every score of a query leaves its softmax unchanged), so each backend's is rounding
  // noise (~1e-13 here), different on each, and so are their values after the step (noise
  // against noise: relative differences near 2). Checked instead: the noise is negligible next
  // to the other gradients (1e-6 of the largest), and the step lr * noise / (|noise| + eps) left
  // them where they were (within 1e-6 of lr).
  const isKeyBias = (name: string) => /\.attention\.self\.key\.bias$/.test(name);
  const globalGrad = Math.max(...[...want.moments.values()].map(maxAbs));
  let worstGrad = { name: '', rel: 0 };
  let worstParam = { name: '', rel: 0 };
  let leastMoved = { name: '', rel: Infinity };
  let compared = 0;
  for (const name of want.after.keys()) {
    if (isKeyBias(name)) {
      for (const r of [want, got]) {
        const noise = maxAbs(r.moments.get(name)!);
        assert.ok(noise <= 1e-6 * globalGrad, `${name}: gradient ${e(noise)} is not negligible next to ${e(globalGrad)}`);
        const moved = relDiff(r.after.get(name)!, r.before.get(name)!).diff;
        assert.ok(moved <= 1e-6 * lr, `${name} moved ${e(moved)}, lr ${lr}`);
      }
      report(t, `step: ${name}: gradient cpu ${e(maxAbs(want.moments.get(name)!))} webgpu ${e(maxAbs(got.moments.get(name)!))} (largest of the model ${e(globalGrad)}), set aside`);
      continue;
    }
    compared++;
    const g = relDiff(got.moments.get(name)!, want.moments.get(name)!).rel;
    const p = relDiff(got.after.get(name)!, want.after.get(name)!).rel;
    if (g > worstGrad.rel) worstGrad = { name, rel: g };
    if (p > worstParam.rel) worstParam = { name, rel: p };
    for (const r of [want, got]) {
      const { diff, scale } = relDiff(r.after.get(name)!, r.before.get(name)!);
      const moved = scale > 0 ? diff / scale : diff > 0 ? Infinity : 0; // a zero-initialised bias: moved or not
      if (moved < leastMoved.rel) leastMoved = { name, rel: moved };
    }
  }
  report(t, `step: ${compared} of ${want.after.size} parameters compared; worst gradient ${worstGrad.name} ${e(worstGrad.rel)}; worst updated parameter ${worstParam.name} ${e(worstParam.rel)}`);
  assert.ok(worstGrad.rel <= 1e-3, `gradient of ${worstGrad.name} differs by ${e(worstGrad.rel)}`);
  assert.ok(worstParam.rel <= 1e-3, `updated ${worstParam.name} differs by ${e(worstParam.rel)}`);
  // The step moved every compared parameter, on both backends, by more than the bound
  // (max|p_after - p_before| / max|p_before|; any move for a zero-initialised bias, compared
  // relative to its own new values), so a skipped or partial update could not pass.
  report(t, `step: the step moved each compared parameter by at least ${e(leastMoved.rel)} relative (${leastMoved.name})`);
  assert.ok(leastMoved.rel > 1e-3, `${leastMoved.name} moved by ${e(leastMoved.rel)} relative only: the comparison cannot see its update`);
});

test('20 training steps of bert-tiny on webgpu (mlm train) lower the loss', { skip }, async (t) => {
  const fx = await data(64);
  const out = path.join(tmp, 'run20');
  const o = trainOptions({ data: fx.dataDir, out, steps: 20, batchSize: 8, lr: 2e-3, evalBatches: 4 });
  const t0 = performance.now();
  const { before, result } = await on('webgpu', async (tf) => {
    // The untrained model (the init train() makes: seed 42) on the held-out rows and masks that
    // the run's final evaluation uses (the same options and seed), so before and after are paired.
    const manifest = await readManifest(fx.dataDir);
    const valid = new SplitReader(fx.dataDir, manifest, 'validation');
    const untrained = createMaskedLM(tf, tinyConfig(fx), { seed: o.seed, capabilities: capabilitiesOf(tf, tf.getBackend()) });
    let before: EvalResult;
    try {
      before = await evaluateMasked(tf, untrained, valid, maskingFor(fx.tokenizer, o.mlmProbability, o.wholeWordMask), { batchSize: o.batchSize, seed: o.seed, maxBatches: o.evalBatches });
    } finally {
      untrained.dispose();
      valid.close();
    }
    const result = await train(o, { tf, backend: { name: 'webgpu', device: 'test' }, version: 'test', log: quiet, progress: false });
    return { before, result };
  });
  const seconds = (performance.now() - t0) / 1000;
  assert.equal(result.step, 20);
  const metrics = await readMetrics(out);
  const losses = metrics.filter((m) => 'loss' in m).map((m) => (m as { loss: number }).loss);
  assert.equal(losses.length, 20);
  assert.ok(losses.every(Number.isFinite));
  const evals = metrics.filter((m) => 'eval_loss' in m) as Array<{ eval_masked_tokens: number }>;
  assert.equal(evals.length, 1);
  assert.equal(evals[0].eval_masked_tokens, before.masked_tokens, 'the same held-out masks before and after');
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const first = mean(losses.slice(0, 3));
  const last = mean(losses.slice(-3));
  const after = result.eval_loss!;
  report(t, `20 steps: bert-tiny (vocab ${VOCAB}), batch 8x64, lr 2e-3, no warmup, ${seconds.toFixed(1)} s; logged losses ${losses.map((l) => l.toFixed(3)).join(' ')}`);
  report(t, `20 steps: training loss, mean of steps 1-3 ${first.toFixed(3)}, of steps 18-20 ${last.toFixed(3)} (drop ${(first - last).toFixed(3)})`);
  report(t, `20 steps: held-out loss ${before.loss.toFixed(3)} -> ${after.toFixed(3)} (drop ${(before.loss - after).toFixed(3)}; ${before.masked_tokens} masked tokens; ln(vocab) ${Math.log(VOCAB).toFixed(3)})`);
  // Measured drops: ~0.5 nats held out, ~0.55 in training. Required: 0.25 each, about half.
  assert.ok(after < before.loss - 0.25, `held-out loss went from ${before.loss.toFixed(3)} to ${after.toFixed(3)}`);
  assert.ok(last < first - 0.25, `training loss went from ${first.toFixed(3)} to ${last.toFixed(3)}`);
});

test('an interrupt with a step queued ahead on webgpu stops after that step; its checkpoint resumes to the uninterrupted run, bit for bit', { skip }, async () => {
  // The loss is read one step late (training/pending-step.ts): when the signal comes while step 2
  // is handled, step 3 is already queued, so the run ends after step 3 with checkpoint-3, which
  // must hold step 3's weights and data position exactly.
  const fx = await data(32);
  const o = (out: string, resume = false) => trainOptions({ data: fx.dataDir, out, steps: 6, batchSize: 4, lr: 1e-3, resume });
  const ctx = { backend: { name: 'webgpu', device: 'test' }, version: 'test', log: quiet, progress: false };
  const full = path.join(tmp, 'late-full');
  const cut = path.join(tmp, 'late-cut');
  const controller = new AbortController();
  const stopped = await on('webgpu', async (tf) => {
    await train(o(full), { tf, ...ctx });
    return train(o(cut), { tf, ...ctx, signal: controller.signal, onStep: ({ step }) => { if (step === 2) controller.abort(); } });
  });
  assert.equal(stopped.interrupted, true);
  assert.equal(stopped.step, 3, 'the step queued ahead ran and was saved');
  assert.ok(fs.existsSync(path.join(cut, 'checkpoint-3')));
  await on('webgpu', (tf) => train(o(cut, true), { tf, ...ctx }));
  const losses = async (dir: string) => (await readMetrics(dir)).filter((m) => 'loss' in m).map((m) => (m as { loss: number }).loss);
  assert.deepEqual(await losses(cut), await losses(full), 'the same losses at every step');
  const weights = (dir: string) => fs.readFileSync(path.join(dir, 'checkpoint-6', 'model.safetensors'));
  assert.ok(weights(cut).equals(weights(full)), 'the same final weights');
});

test('embedding gradients on webgpu: one-hot products, equal to cpu, and batches with other distinct-id counts reuse the buffer pool', { skip }, async (t) => {
  // A 5,000-row table (above SMALL_TABLE_ROWS: the host-ids path) and 512 ids a step drawn from
  // ranges of 150 to 1,450 ids: 140 to 490 distinct ids, rounded up to 256 or 512.
  const S = 5000;
  const H = 16;
  const N = 512;
  const rng = new Rng(4);
  const steps = Array.from({ length: 14 }, (_, k) => {
    const range = k % 2 === 0 ? 150 + 50 * k : 1450 - 50 * k;
    return Int32Array.from({ length: N }, () => Math.floor(rng.next() * range));
  });
  const tableData = Float32Array.from({ length: S * H }, () => rng.next() - 0.5);
  const upData = Float32Array.from({ length: N * H }, () => rng.next() - 0.5);
  const gradOf = (tf: Tf, ids: Int32Array, v: Tensor, up: Tensor): Tensor =>
    tf.tidy(() => {
      const ops = makeOps(tf, capabilitiesOf(tf, tf.getBackend()));
      const idsT = tf.tensor1d(ids, 'int32');
      const f = () => tf.sum(tf.mul(ops.embeddingRows(v as never, idsT as never, ids), up)) as never;
      return tf.variableGrads(f, [v as never]).grads[(v as unknown as { name: string }).name];
    });
  const variable = (tf: Tf) => {
    const initial = tf.tensor2d(tableData, [S, H]);
    const v = tf.variable(initial);
    initial.dispose();
    return v;
  };
  const want = await on('cpu', async (tf) => {
    const v = variable(tf);
    const up = tf.tensor2d(upData, [N, H]);
    const g = gradOf(tf, steps[0], v, up);
    const data = (await g.data()) as Float32Array;
    tf.dispose([v, up, g]);
    return data;
  });
  await on('webgpu', async (tf) => {
    const before = tf.memory().numTensors;
    const v = variable(tf);
    const up = tf.tensor2d(upData, [N, H]);
    const allocated: number[] = [];
    const distinct: number[] = [];
    let kernels = new Set<string>();
    for (const [k, ids] of steps.entries()) {
      let g: Tensor | null = null;
      const profile = await tf.profile(() => {
        g = gradOf(tf, ids, v, up);
      });
      if (k === 0) {
        kernels = new Set(profile.kernels.map((x) => x.name));
        const got = (await g!.data()) as Float32Array;
        let worst = 0;
        let scale = 0;
        for (let i = 0; i < got.length; i++) {
          worst = Math.max(worst, Math.abs(got[i] - want[i]));
          scale = Math.max(scale, Math.abs(want[i]));
        }
        report(t, `embedding gradients: 5,000 x 16 table, 512 ids: max|webgpu - cpu gather| ${worst.toExponential(2)} of ${scale.toFixed(3)}`);
        assert.ok(worst <= 1e-5 * scale, `webgpu differs from cpu by ${worst}`);
      } else {
        await g!.data();
      }
      g!.dispose();
      distinct.push(new Set(ids).size);
      allocated.push(webgpuMemory(tf).numBytesAllocatedInGPU);
    }
    report(t, `embedding gradients: kernels ${[...kernels].sort().join(', ')}`);
    report(t, `embedding gradients: distinct ids per step ${distinct.join(' ')}; GPU bytes allocated ${allocated.join(' ')}`);
    assert.ok(kernels.has('OneHot') && kernels.has('BatchMatMul'), "'auto' takes the one-hot products on webgpu");
    assert.ok(distinct.some((u) => u <= 256) && distinct.some((u) => u > 256), 'both buckets occur');
    for (let k = 2; k < allocated.length; k++) assert.equal(allocated[k], allocated[1], `GPU bytes allocated grew at step ${k + 1}`);
    tf.dispose([v, up]);
    assert.equal(tf.memory().numTensors, before, 'no tensors left behind');
  });
});

test('no leaks over 100 training steps on webgpu: tensor count and GPU bytes in use are flat', { skip }, async (t) => {
  const fx = await data(32);
  const steps = 100;
  const warmup = 2; // flat from step warmup + 1 on
  const out = path.join(tmp, 'run100');
  const rows: Array<WebGpuMemory & { step: number; masked: number; seconds: number }> = [];
  let before: WebGpuMemory | null = null;
  let after: WebGpuMemory | null = null;
  const t0 = performance.now();
  await on('webgpu', async (tf) => {
    before = webgpuMemory(tf);
    await train(trainOptions({ data: fx.dataDir, out, steps, batchSize: 4, lr: 1e-3 }), {
      tf, backend: { name: 'webgpu', device: 'test' }, version: 'test', log: quiet, progress: false,
      onStep: (s) => rows.push({ step: s.step, masked: s.masked, seconds: s.seconds, ...webgpuMemory(tf) }),
    });
    after = webgpuMemory(tf);
  });
  const seconds = (performance.now() - t0) / 1000;
  assert.equal(rows.length, steps);
  const b = before!;
  const a = after!;
  const line = (r: (typeof rows)[number]) =>
    `step ${r.step}: ${r.numTensors} tensors, ${r.numBytes} tensor bytes, ${r.numBytesInGPU} GPU bytes in use, ${r.numBytesAllocatedInGPU} GPU bytes allocated (${r.masked} masked tokens)`;
  report(t, `leaks: bert-tiny (vocab ${VOCAB}), batch 4x32, ${steps} steps of mlm train in ${seconds.toFixed(1)} s`);
  report(t, `leaks: before the run: ${b.numTensors} tensors, ${b.numBytesInGPU} GPU bytes in use, ${b.numBytesAllocatedInGPU} allocated`);
  for (const i of [1, 2, 3, 10, 25, 50, 75, 100]) report(t, `leaks: ${line(rows[i - 1])}`);
  report(t, `leaks: after the run (model and optimizer freed): ${a.numTensors} tensors, ${a.numBytesInGPU} GPU bytes in use, ${a.numBytesAllocatedInGPU} allocated`);

  // Tensors and the GPU bytes they hold: exactly the same after every step from warmup + 1 on,
  // with no tolerance: each step ends holding the same set of tensors (weights, AdamW moments).
  // GPU bytes in use also count the staging buffer of a read in flight: the loss is read one step
  // late (training/pending-step.ts), so when a step is reported the flat AdamW's read of the step
  // queued after it (the 4-float stats) may still be under way, or already done; never more than
  // that one (the last step has none queued after it).
  const flat = rows.slice(warmup);
  const distinct = (k: keyof WebGpuMemory) => [...new Set(flat.map((r) => r[k]))];
  assert.deepEqual(distinct('numTensors'), [flat[0].numTensors], `tensor counts: ${rows.map((r) => r.numTensors).join(' ')}`);
  assert.deepEqual(distinct('numBytes'), [flat[0].numBytes], 'tensor bytes');
  const inUse = Math.max(...flat.map((r) => r.numBytesInGPU));
  const readBuffer = STATS_FLOATS * 4;
  assert.deepEqual(distinct('numBytesInGPU').filter((b) => b !== inUse && b !== inUse - readBuffer), [], `GPU bytes in use: ${rows.map((r) => r.numBytesInGPU).join(' ')}`);

  // Allocated GPU bytes also count TF.js's pool of freed buffers, kept for reuse by exact size and
  // never destroyed while the backend lives. The masked-positions-only head makes tensors of
  // [rows, vocab]; on webgpu the model pads rows to a multiple of MASKED_ROW_BUCKET (maskedRowCount)
  // so that a run meets few sizes. Asserted: the pool grows only at a step whose row count is new;
  // here every step has fewer than 64 masked tokens (4 x 32 tokens), so one size after step 1.
  const bucket = (masked: number) => maskedRowCount(masked, MASKED_ROW_BUCKET);
  const seen = new Set<number>([bucket(rows[0].masked)]);
  const grew: string[] = [];
  for (let i = 1; i < rows.length; i++) {
    const r = rows[i];
    const isNew = !seen.has(bucket(r.masked));
    seen.add(bucket(r.masked));
    const growth = r.numBytesAllocatedInGPU - rows[i - 1].numBytesAllocatedInGPU;
    if (growth > 0) grew.push(`${r.step} (+${growth}, ${r.masked} masked)`);
    // Step 2 still allocates a few hundred bytes once (its first reuse of the step's buffers).
    assert.ok(growth <= 0 || isNew || r.step <= warmup, `GPU bytes allocated grew by ${growth} at step ${r.step}, whose head row count ${bucket(r.masked)} (${r.masked} masked) occurred before`);
  }
  report(t, `leaks: GPU bytes allocated ${mb(rows[0].numBytesAllocatedInGPU)} after step 1, ${mb(rows.at(-1)!.numBytesAllocatedInGPU)} after step ${steps}; grew at ${grew.length} steps (${seen.size} head row counts seen: ${[...seen].join(', ')})${grew.length ? `: ${grew.join(', ')}` : ''}`);
  report(t, `leaks: flat from step ${warmup + 1} to ${steps}: ${flat[0].numTensors} tensors, ${flat[0].numBytesInGPU} GPU bytes in use`);

  // Everything the run made is freed when it returns.
  assert.equal(a.numTensors, b.numTensors, 'tensors left after the run');
  assert.ok(a.numBytesInGPU <= b.numBytesInGPU, `GPU bytes in use after the run: ${a.numBytesInGPU}, before ${b.numBytesInGPU}`);
});
