// Tests for `mlm bench` (scripts/commands/bench.ts, training/bench.ts):
// - a small run on wasm prints the keys of docs/formats.md ("Command output") with sane values: positive
//   throughput, no tensor left behind per step, one read per training step, and the parameter
//   count of BERT's architecture worked out here from the config's sizes;
// - the dispatch figures: on wasm the kernel calls (no GPU timer); on webgpu (bert-tiny, where an
//   adapter exists) compute dispatches, passes and submissions, GPU and host time that add up to
//   the step's wall time, and a CEILING on dispatches per training step that fails when a change
//   adds dispatches (see DISPATCH_CEILING_BERT_TINY);
// - the FLOP count and the step-time statistics against hand-computed values.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { probeWebGpu } from '../../training/backend.ts';
import { deviceMatmuls, modelFlopsPerToken, parameterCounts, spread } from '../../training/bench.ts';
import { readConfigArgument } from '../../training/checkpoint.ts';
import { ROOT } from '../training/tiny-checkpoint.ts';

const SECTION_9 = [
  'backend', 'device', 'config', 'batch_size', 'seq_len', 'params', 'train_tokens_per_second', 'train_step_ms_median',
  'eval_tokens_per_second', 'peak_rss_mb', 'tensors_leaked_per_step', 'model_tflops_per_second',
];

/** BERT-for-MLM parameters from the sizes alone (embeddings, layers, head; decoder tied). */
function bertParams(c: { vocab_size: number; hidden_size: number; intermediate_size: number; num_hidden_layers: number; max_position_embeddings: number; type_vocab_size: number }) {
  const { vocab_size: V, hidden_size: H, intermediate_size: I, num_hidden_layers: L, max_position_embeddings: P, type_vocab_size: S } = c;
  const embeddingTables = (V + P + S) * H;
  const layer = 3 * (H * H + H) + (H * H + H) + 2 * H + (H * I + I) + (I * H + H) + 2 * H; // q k v, output, LN, FFN in, FFN out, LN
  const head = H * H + H + 2 * H + V; // transform dense, LayerNorm, decoder bias
  const nonEmbedding = 2 * H + L * layer + head; // + the embeddings' LayerNorm
  return { total: embeddingTables + nonEmbedding, nonEmbedding };
}

function mlm(args: string[], timeout = 55_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(ROOT, 'scripts/mlm.mjs'), ...args], { cwd: ROOT, timeout }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    );
  });
}

test('mlm bench --json on wasm: the figures of docs/formats.md, sane', async () => {
  const r = await mlm(['bench', '--config', 'configs/bert-tiny.json', '--backend', 'wasm', '--steps', '2', '--batch-size', '4', '--seq-len', '32', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const doc = JSON.parse(r.stdout) as Record<string, unknown>;
  for (const key of SECTION_9) assert.ok(key in doc, `missing ${key}`);
  const config = JSON.parse(fs.readFileSync(path.join(ROOT, 'configs/bert-tiny.json'), 'utf8'));
  const expected = bertParams(config);
  assert.equal(doc.backend, 'wasm');
  assert.equal(doc.config, 'configs/bert-tiny.json');
  assert.equal(doc.batch_size, 4);
  assert.equal(doc.seq_len, 32);
  assert.equal(doc.params, expected.total);
  assert.equal(doc.non_embedding_params, expected.nonEmbedding);
  assert.equal(doc.tensors_leaked_per_step, 0);
  assert.equal(doc.eval_tensors_leaked_per_step, 0);
  assert.equal(doc.reads_per_step, 1, 'the training step reads loss and norm once');
  assert.equal(doc.train_steps, 2);
  for (const key of ['train_tokens_per_second', 'train_step_ms_median', 'eval_tokens_per_second', 'peak_rss_mb', 'model_tflops_per_second']) {
    assert.ok(typeof doc[key] === 'number' && (doc[key] as number) > 0 && Number.isFinite(doc[key]), `${key} = ${doc[key]}`);
  }
  // Tokens per second and the step time agree (2 steps of 4 x 32 tokens).
  const tps = doc.train_tokens_per_second as number;
  assert.ok(tps > (128 / (doc.train_step_ms_max as number)) * 1000 * 0.99 && tps < (128 / (doc.train_step_ms_min as number)) * 1000 * 1.01, `tokens/s ${tps}`);
  assert.ok((doc.peak_rss_mb as number) > 50 && (doc.peak_rss_mb as number) < 8000);
  assert.equal(doc.loss_ok, true, `first loss ${doc.loss_first}`);
  const f = doc.scored_fraction as number;
  assert.ok(f > 0 && f < 0.4, `scored fraction ${f}`);
  // No GPU: the dispatches are the kernel calls, and there is no host/GPU split.
  assert.equal(doc.dispatches_counted, 'kernel calls');
  assert.ok((doc.kernels_per_step as number) > 100, `kernels per step ${doc.kernels_per_step}`);
  assert.equal(doc.dispatches_per_step, doc.kernels_per_step);
  assert.ok((doc.eval_dispatches_per_step as number) > 0 && (doc.eval_dispatches_per_step as number) < (doc.dispatches_per_step as number));
  for (const key of ['host_ms_per_step', 'gpu_ms_per_step', 'compute_passes_per_step', 'submits_per_step', 'gpu_timestamps_quantized']) assert.equal(doc[key], null, key);
  assert.match(doc.gpu_timer as string, /^none: /);
});

/**
 * Compute dispatches of one bert-tiny training step at 4 x 32 (one pass) on webgpu may not exceed
 * this. Measured 2026-12-04 on llvmpipe: 1,060 a step with TF.js's composites for every op and the
 * per-tensor AdamW; 191 with the fused kernels (training/kernels/) and the flat AdamW; 183 on
 * 2026-12-05 with the query/key/value gradient split in one kernel for weights and one for biases;
 * 151 later that day with the heads, column-group, one-dispatch LayerNorm and fused bias-gradient
 * kernels (tests/training/webgpu.test.ts lists them); 130 on 2026-12-06 with the fused residual
 * LayerNorm, the residual gradients added inside the dx matMul and two-dispatch LayerNorm backwards;
 * 122 with the scatter kernel for the embedding and head-gather gradients; 120 with the projection
 * to heads whose gradient sums the bias in the same kernel (Ops.linearToHeads); 116 with query, key and
 * value stored packed (no concatenation forward, no split backward; ceiling 118).
 * MAINTAINERS: lower it to the new count (plus ~2%) whenever a change removes dispatches, so that
 * the test keeps catching regressions.
 */
const DISPATCH_CEILING_BERT_TINY = 118;

const webgpu = await probeWebGpu();
const webgpuRequired = process.env.MLM_REQUIRE_WEBGPU === '1';

test('mlm bench --json on webgpu (bert-tiny): dispatches, host and GPU time per step; dispatch ceiling', { skip: !webgpu.ok && !webgpuRequired ? `no WebGPU adapter: ${webgpu.reason}` : false }, async (t) => {
  assert.ok(webgpu.ok, `MLM_REQUIRE_WEBGPU=1 and no WebGPU adapter: ${webgpu.reason}`);
  const r = await mlm(['bench', '--config', 'configs/bert-tiny.json', '--backend', 'webgpu', '--steps', '2', '--warmup-steps', '1', '--eval-steps', '1',
    '--batch-size', '4', '--seq-len', '32', '--rows-per-pass', '4', '--no-matmul-peak', '--json'], 170_000);
  assert.equal(r.code, 0, r.stderr);
  const doc = JSON.parse(r.stdout.split('\n').reverse().find((l) => l.startsWith('{'))!) as Record<string, unknown>;
  const n = (key: string) => doc[key] as number;
  t.diagnostic(`bert-tiny 4 x 32 on ${String(doc.device)}: ${n('dispatches_per_step')} dispatches, ${n('kernels_per_step')} kernels, ` +
    `${n('compute_passes_per_step')} passes, ${n('submits_per_step')} submits, GPU ${n('gpu_ms_per_step')} ms, host ${n('host_ms_per_step')} ms a step (${String(doc.gpu_timer)})`);
  assert.equal(doc.backend, 'webgpu');
  assert.equal(doc.dispatches_counted, 'compute dispatches');
  assert.equal(doc.passes_per_step, 1);
  assert.ok(n('dispatches_per_step') > 100, `dispatches per step ${n('dispatches_per_step')}`);
  assert.ok(n('dispatches_per_step') <= DISPATCH_CEILING_BERT_TINY,
    `${n('dispatches_per_step')} dispatches per bert-tiny training step, over the ceiling of ${DISPATCH_CEILING_BERT_TINY}: a change added dispatches`);
  assert.ok(n('compute_passes_per_step') >= 1 && n('compute_passes_per_step') <= n('dispatches_per_step'));
  assert.ok(n('submits_per_step') >= 1 && n('submits_per_step') <= n('compute_passes_per_step') + 10);
  assert.ok(n('eval_dispatches_per_step') > 0 && n('eval_dispatches_per_step') < n('dispatches_per_step'));
  if (doc.gpu_timer !== 'timestamp-query') {
    assert.equal(doc.host_ms_per_step, null);
    t.diagnostic(`host/GPU time not tested: ${String(doc.gpu_timer)}`);
    return;
  }
  // GPU + host = the wall time per step (tokens/s include the final drain), GPU time within it.
  const wallMs = (1000 * 4 * 32) / n('train_tokens_per_second');
  assert.ok(n('gpu_ms_per_step') > 0, `gpu ms ${n('gpu_ms_per_step')}`);
  assert.ok(Math.abs(n('gpu_ms_per_step') + n('host_ms_per_step') - wallMs) <= 0.01 * wallMs + 0.1, `${n('gpu_ms_per_step')} + ${n('host_ms_per_step')} vs ${wallMs}`);
  assert.ok(n('host_ms_per_step') >= -0.01 * wallMs, `GPU time ${n('gpu_ms_per_step')} ms exceeds the step's wall ${wallMs} ms`);
  assert.equal(doc.gpu_timestamps_quantized, false);
  assert.equal(doc.gpu_untimed_passes, 0);
});

test('model FLOPs per token: 6 N + 12 L H T + 6 H V f', () => {
  const config = readConfigArgument(path.join(ROOT, 'configs/bert-mini.json'));
  const { nonEmbedding, total } = parameterCounts(config);
  assert.deepEqual({ total, nonEmbedding }, bertParams(config));
  const H = 256, L = 4, V = 30522, T = 128;
  assert.equal(modelFlopsPerToken(config, T, 0.15), 6 * nonEmbedding + 12 * L * H * T + 6 * H * V * 0.15);
  assert.equal(modelFlopsPerToken(config, T, 1) - modelFlopsPerToken(config, T, 0), 6 * H * V);
});

test('spread: median, quartiles, min and max', () => {
  assert.deepEqual(spread([4, 1, 3, 2, 5]), { median: 3, min: 1, max: 5, q1: 2, q3: 4 });
  assert.deepEqual(spread([2, 1]), { median: 1.5, min: 1, max: 2, q1: 1.25, q3: 1.75 });
});

test('deviceMatmuls: the matmul library of a wasm device line, without the fused kernels after it', () => {
  // scripts/bench-peer.ts labels mlmkit's BLAS kernel with it; its regular expression took the rest
  // of the line, the fused kernels' part included.
  const line = 'CPU (wasm, SIMD, 2 threads; matmuls: OpenBLAS 0.3.21 (Haswell kernels), 2 threads; fused kernels: mlmkit SIMD, 2 threads)';
  assert.equal(deviceMatmuls(line), 'OpenBLAS 0.3.21 (Haswell kernels), 2 threads');
  assert.equal(deviceMatmuls('CPU (wasm, SIMD, 1 thread; matmuls: XNNPACK; fused kernels: none)'), 'XNNPACK');
  assert.equal(deviceMatmuls('CPU (wasm, SIMD, 1 thread; matmuls: Apple Accelerate)'), 'Apple Accelerate');
  assert.equal(deviceMatmuls('CPU (pure JavaScript)'), null);
});

test('mlm bench measures the matmul peak on the threads the run\'s BLAS uses (MLM_BLAS_THREADS), not a fixed 2', async () => {
  // With a fixed 2, MFU on a machine with more CPUs compared the run on all of them with a peak on two.
  const args = [path.join(ROOT, 'scripts/mlm.mjs'), 'bench', '--config', 'configs/bert-tiny.json', '--backend', 'wasm', '--steps', '2',
    '--warmup-steps', '0', '--eval-steps', '1', '--batch-size', '2', '--seq-len', '8'];
  const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, args, { cwd: ROOT, timeout: 120_000, env: { ...process.env, MLM_BLAS_THREADS: '1' } }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }));
  });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /bench: CPU float32 matmul peak \(numpy, 1 threads\)\.\.\./);
  // Where numpy is installed, the table's line names the same count.
  if (!/CPU matmul peak not measured/.test(r.stdout)) assert.match(r.stdout, /CPU float32 matmul peak \(numpy, 1 threads,/);
});
