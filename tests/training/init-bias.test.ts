// `--init-bias unigram` (training/init-bias.ts): the prior is the smoothed log frequency of the
// training tokens, and a model pretrained with it starts at the unigram cross-entropy instead of
// ln(vocab); with --from it is refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readManifest, SplitReader } from '../../data/shards.ts';
import { unigramLogPrior } from '../../training/init-bias.ts';
import { brownDocuments, MLM, preparedFixture, ROOT, writeTinyConfig, type PreparedFixture } from './train-helpers.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-init-bias-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
let fixture: Promise<PreparedFixture> | null = null;
const data = () => (fixture ??= preparedFixture(path.join(tmp, 'fx'), brownDocuments(60_000), { vocabSize: 400, seqLen: 32 }));
const config = writeTinyConfig(path.join(tmp, 'tiny.json'), { max_position_embeddings: 32 });

/** Token frequencies of the training split, counted here row by row. */
async function frequencies(fx: PreparedFixture): Promise<{ freq: Float64Array; never: Uint8Array; total: number }> {
  const manifest = await readManifest(fx.dataDir);
  const reader = new SplitReader(fx.dataDir, manifest, 'train');
  const never = fx.tokenizer.specialMask();
  const freq = new Float64Array(fx.tokenizer.vocabSize);
  const row = new Int32Array(manifest.seq_len);
  let total = 0;
  for (let r = 0; r < reader.rows; r++) {
    reader.readRow(r, row, null, 0);
    for (const id of row) if (!never[id]) { freq[id]++; total++; }
  }
  reader.close();
  for (let v = 0; v < freq.length; v++) freq[v] /= total;
  return { freq, never, total };
}

test('unigramLogPrior: softmax of the prior is the add-half smoothed frequency; specials get the minimum', async () => {
  const fx = await data();
  const manifest = await readManifest(fx.dataDir);
  const reader = new SplitReader(fx.dataDir, manifest, 'train');
  const prior = unigramLogPrior(reader, fx.tokenizer.vocabSize, fx.tokenizer.specialMask());
  reader.close();
  const { freq, never, total } = await frequencies(fx);
  const eligible = never.reduce((n, x) => n + (x ? 0 : 1), 0);
  let z = 0;
  for (let v = 0; v < prior.length; v++) if (!never[v]) z += Math.exp(prior[v]);
  let worst = 0;
  let mean = 0;
  for (let v = 0; v < prior.length; v++) {
    if (never[v]) continue;
    mean += prior[v] / eligible;
    const want = (freq[v] * total + 0.5) / (total + 0.5 * eligible);
    worst = Math.max(worst, Math.abs(Math.exp(prior[v]) / z - want) / want);
  }
  assert.ok(worst < 1e-5, `largest relative difference ${worst}`);
  assert.ok(Math.abs(mean) < 1e-4, `centred: mean ${mean}`);
  // Specials (never targets) get at most what the rarest eligible id gets.
  let rarest = Infinity;
  for (let v = 0; v < prior.length; v++) if (!never[v]) rarest = Math.min(rarest, prior[v]);
  for (let v = 0; v < prior.length; v++) if (never[v]) assert.ok(prior[v] <= rarest, `special id ${v}: ${prior[v]} > ${rarest}`);
});

function firstStep(extra: string[], out: string): { loss: number; masked: number } {
  const r = spawnSync(process.execPath, [MLM, 'train', '--config', config, '--out', out, '--steps', '1', '--batch-size', '32', '--log-every', '1',
    '--eval-every', '0', '--eval-batches', '1', ...extra], {
    cwd: ROOT, encoding: 'utf8', env: { ...process.env, MLM_BACKEND: 'wasm' },
  });
  assert.equal(r.status, 0, r.stderr);
  const first = JSON.parse(fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').split('\n')[0]);
  return { loss: first.loss, masked: first.masked_tokens };
}

test('mlm train --init-bias unigram starts at the unigram cross-entropy; zeros start at ln(vocab)', async () => {
  const fx = await data();
  const { freq, never } = await frequencies(fx);
  const V = fx.tokenizer.vocabSize;
  // Cross-entropy of the (nearly unsmoothed) prior on the training tokens, and the spread of
  // -log p per token, which sets the tolerance for a loss averaged over the step's masked tokens.
  let h = 0;
  let second = 0;
  for (let v = 0; v < V; v++) {
    if (never[v] || freq[v] === 0) continue;
    h -= freq[v] * Math.log(freq[v]);
    second += freq[v] * Math.log(freq[v]) ** 2;
  }
  const sd = Math.sqrt(second - h * h);
  const zeros = firstStep(['--data', fx.dataDir], path.join(tmp, 'zeros'));
  const unigram = firstStep(['--data', fx.dataDir, '--init-bias', 'unigram'], path.join(tmp, 'unigram'));
  assert.equal(unigram.masked, zeros.masked, 'the same masks');
  // Random init (std 0.02) leaves logits within ~0.1 of the bias: zeros start at ln V.
  assert.ok(Math.abs(zeros.loss - Math.log(V)) < 0.1, `zeros: ${zeros.loss} vs ln V ${Math.log(V)}`);
  const tol = 4 * sd / Math.sqrt(unigram.masked) + 0.1;
  assert.ok(Math.abs(unigram.loss - h) < tol, `unigram: ${unigram.loss} vs H ${h} (tolerance ${tol.toFixed(3)}, ${unigram.masked} masked)`);
  assert.ok(unigram.loss < zeros.loss - 0.5, `unigram ${unigram.loss} vs zeros ${zeros.loss}`);
});

test('--init-bias unigram with --from: a one-line error, exit 2', async () => {
  const fx = await data();
  const r = spawnSync(process.execPath, [MLM, 'train', '--from', path.join(tmp, 'zeros', 'checkpoint-1'), '--data', fx.dataDir,
    '--out', path.join(tmp, 'adapt'), '--steps', '1', '--init-bias', 'unigram'], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, MLM_BACKEND: 'wasm' } });
  assert.equal(r.status, 2, r.stderr);
  // Refused before the backend is chosen: the error is all it prints.
  assert.match(r.stderr, /^mlm: error: --init-bias unigram is for pretraining from --config[^\n]*\n$/);
});
