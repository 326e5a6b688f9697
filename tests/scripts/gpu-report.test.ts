// Tests for `scripts/gpu-report.ts summary` (the last stage of scripts/gpu-run.sh), on a results
// folder written here as gpu-run.sh's stages write it:
//   - the WebGPU/PyTorch ratios are train tokens/s over train tokens/s, per config and precision;
//   - the GPU issue's targets: met, not met, and 'not measured' for what did not run (fp16 when
//     mlm bench had no --precision flag), dispatches <= 500, fp16 held-out loss within 2% of fp32;
//   - the stages' failures (failed.txt) come out as problems, with exit status 1;
//   - summary.md and summary.json go to the output folder given.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ROOT } from '../training/tiny-checkpoint.ts';

type Json = Record<string, unknown>;

function benchRecord(config: string, tps: number, dispatches: number, precision?: string): Json {
  return {
    backend: 'webgpu', device: 'NVIDIA test', config: `configs/${config}.json`, batch_size: 32, seq_len: 128, train_tokens_per_second: tps,
    train_step_ms_median: (4096 / tps) * 1000, model_tflops_per_second: 1, train_steps: 10, software: false, loss_ok: true,
    dispatches_per_step: dispatches, host_ms_per_step: 5, gpu_ms_per_step: 20, ...(precision ? { precision } : {}),
  };
}

function torchRecord(config: string, precision: string, tps: number): Json {
  return {
    config: `/x/configs/${config}.json`, precision, device: 'NVIDIA H200', device_type: 'cuda', impl: 'transformers 5.17.0 BertForMaskedLM',
    batch_size: 32, seq_len: 128, train_steps: 10, train_tokens_per_second: tps, train_step_ms_median: (4096 / tps) * 1000, model_tflops_per_second: 30, loss_ok: true,
  };
}

function runSummary(files: Record<string, string>): { code: number; stdout: string; doc: Json; md: string } {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'gpu-report-'));
  const dir = path.join(base, 'results');
  const out = path.join(base, 'out');
  fs.mkdirSync(dir);
  fs.mkdirSync(out);
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), text);
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/gpu-report.ts', 'summary', dir, out], { cwd: ROOT, encoding: 'utf8' });
  const doc = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8')) as Json;
  const md = fs.readFileSync(path.join(out, 'summary.md'), 'utf8');
  fs.rmSync(base, { recursive: true, force: true });
  return { code: r.status ?? 1, stdout: r.stdout, doc, md };
}

const env = JSON.stringify({ adapter: 'NVIDIA test', train: { config: 'bert-base', steps: 200, batch_size: 32, seq_len: 128, seed: 42 } });

test('gpu-report summary: ratios, targets met and not met, fp16/fp32 loss comparison', () => {
  const { code, doc, md } = runSummary({
    'env.json': env,
    'bench-webgpu-fp32.json': JSON.stringify([benchRecord('bert-mini', 100_000, 300), benchRecord('bert-base', 30_000, 480)]),
    'bench-webgpu-fp16.json': JSON.stringify([benchRecord('bert-mini', 120_000, 310, 'fp16'), benchRecord('bert-base', 50_000, 520, 'fp16')]),
    'torch-bert-base-fp32.json': JSON.stringify(torchRecord('bert-base', 'fp32', 55_000)),
    'torch-bert-base-bf16.json': JSON.stringify(torchRecord('bert-base', 'bf16', 150_000)),
    'torch-bert-mini-fp32.json': JSON.stringify(torchRecord('bert-mini', 'fp32', 300_000)),
    'train-webgpu-fp16.json': JSON.stringify({ step: 200, train_loss: 7.5, eval_loss: 7.3, tokens_per_second: 40_000 }),
    'train-webgpu-fp32.json': JSON.stringify({ step: 200, train_loss: 7.5, eval_loss: 7.2, tokens_per_second: 25_000 }),
    'precision-status.tsv': 'fp32\tran\nfp16\tran\ntrain-fp16\tran\ntrain-fp32\tran\n',
  });
  assert.equal(code, 0);
  const ratios = doc.ratios as { config: string; webgpu: string; pytorch: string; ratio: number }[];
  const ratio = (config: string, w: string, t: string) => ratios.find((r) => r.config === config && r.webgpu === `webgpu ${w}` && r.pytorch.includes(t))?.ratio;
  assert.equal(ratio('bert-base', 'fp16', 'fp32'), 50_000 / 55_000);
  assert.equal(ratio('bert-base', 'fp32', 'bf16'), 30_000 / 150_000);
  assert.equal(ratio('bert-mini', 'fp16', 'fp32'), 120_000 / 300_000);
  const targets = doc.targets as { what: string; met: boolean | null; value: string }[];
  const met = (prefix: string) => targets.find((t) => t.what.startsWith(prefix))?.met;
  assert.equal(met('bert-base webgpu fp16 / pytorch fp32'), false); // 0.909x < 1.0x
  assert.equal(met('bert-base webgpu fp32 / pytorch fp32'), true); // 0.545x >= 0.5x
  assert.equal(met('bert-mini webgpu fp16'), true, 'bert-mini: the better precision (0.4x) against 0.25x');
  assert.equal(met('bert-base webgpu fp32 dispatches'), true);
  assert.equal(met('bert-base webgpu fp16 dispatches'), false);
  // |7.3 - 7.2| / 7.2 = 1.39%: within 2%.
  assert.equal(met('held-out loss'), true);
  assert.ok(Math.abs((doc.loss_relative_difference as number) - 0.1 / 7.2) < 1e-12);
  assert.match(md, /\| bert-base webgpu fp16 \/ pytorch fp32 \(train tok\/s\) \| 0\.909x \| >= 1x \| NOT MET \|/);
});

test('gpu-report summary: fp16 missing is "not measured"; stage failures are problems (exit 1)', () => {
  const { code, doc, stdout } = runSummary({
    'env.json': env,
    'bench-webgpu-fp32.json': JSON.stringify([benchRecord('bert-base', 8_000, 5_500)]),
    'torch-bert-base-fp32.json': JSON.stringify(torchRecord('bert-base', 'fp32', 53_000)),
    'train-webgpu-fp32.json': JSON.stringify({ step: 150, train_loss: 7.6, eval_loss: 7.4, tokens_per_second: 8_000 }),
    'precision-status.tsv': 'fp32\tran\nfp16\tflag missing (mlm bench has no --precision)\n',
    'failed.txt': 'profile-step: exit 124: stopped by the time limit\n',
    'notes.txt': 'training runs cut to 150 steps each (from 200)\n',
  });
  assert.equal(code, 1);
  const targets = doc.targets as { what: string; met: boolean | null; value: string }[];
  const t = (prefix: string) => targets.find((x) => x.what.startsWith(prefix))!;
  assert.equal(t('bert-base webgpu fp16 / pytorch fp32').met, null);
  assert.equal(t('bert-base webgpu fp16 / pytorch fp32').value, 'not measured');
  assert.equal(t('bert-base webgpu fp32 dispatches').met, false);
  assert.equal(t('held-out loss').met, null);
  assert.deepEqual(doc.problems, ['profile-step: exit 124: stopped by the time limit']);
  assert.match(stdout, /fp16: flag missing/);
  assert.match(stdout, /NOTE: training runs cut to 150 steps/);
});

test('gpu-report summary: a training run stopped mid-line (torn last line of its metrics) still gets its summary', () => {
  const windows = [10, 20, 30].map((step) => JSON.stringify({ step, loss: 9, tokens: 40_960, tokens_per_second: step === 10 ? 1_000 : 20_000 })).join('\n');
  const { doc, stdout } = runSummary({
    'env.json': env,
    'bench-webgpu-fp32.json': JSON.stringify([benchRecord('bert-base', 20_000, 400)]),
    'train-metrics-fp16.jsonl': `${windows}\n{"step":40,"loss":8.9,"tok`,
    'failed.txt': 'mlm train fp16: exit 124: stopped by the time limit\n',
  });
  const train = (doc.train as Record<string, { steady: { tps: number; from: number; to: number } }>).fp16;
  assert.deepEqual(train.steady, { tps: 20_000, from: 11, to: 30 });
  assert.match(stdout, /bert-base fp16: stopped before its end, 20000 train tok\/s \(steps 11-30\)/);
});
