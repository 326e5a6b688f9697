// What context alone is worth on a prepared data folder, without a neural network: a bigram count
// model scores each held-out token from its two neighbours. Counts come from the training split:
// P(w | left) and P(right | w), each smoothed toward the training unigram distribution (add k V u,
// k = 0.1), and P(w | left, right) is proportional to their product over the whole vocabulary.
// Both neighbours must be ordinary tokens (not padding or special ids), and so must the token.
// It prints the cross-entropy (nats) and accuracy of that model and of the unigram distribution
// over the same positions: a masked LM whose held-out loss (`mlm evaluate`) stays near the unigram
// figure is not yet using its context, one below the bigram figure uses more than the neighbours.
// The model sees both neighbours always; a masked LM sees each with probability ~0.85 (15%
// masking), so this is a little optimistic for a bigram reading of the masked LM's task.
// Its usage: USAGE below (--help prints it).
import { Rng } from '../common/rng.ts';
import { readManifest, SplitReader } from '../data/shards.ts';
import { readScriptOptions } from './script-args.ts';

const USAGE = 'usage: node --import tsx scripts/bigram-baseline.ts --data DIR [--positions 3000] [--seed 1] [--json]';

const values = readScriptOptions(process.argv.slice(2), {
  program: 'bigram-baseline',
  usage: USAGE,
  options: { data: { type: 'string' }, positions: { type: 'number', default: 3000 }, seed: { type: 'number', default: 1 }, json: { type: 'switch' } },
});
if (values.data === undefined) {
  process.stderr.write('bigram-baseline: --data DIR (a folder written by `mlm prepare`) is required\n');
  process.exit(2);
}
const positions = values.positions;
if (!Number.isInteger(positions) || positions < 1) {
  process.stderr.write(`bigram-baseline: --positions must be a positive integer, got ${values.positions}\n`);
  process.exit(2);
}

const manifest = await readManifest(values.data);
const t = manifest.tokenizer;
const V = t.vocab_size;
const special = new Uint8Array(V);
for (const id of [t.pad_token_id, t.cls_token_id, t.sep_token_id, t.mask_token_id, t.unk_token_id]) if (id !== null && id !== undefined && id >= 0 && id < V) special[id] = 1;
const T = manifest.seq_len;

/** Every row of a split, one after another. */
function readSplit(split: 'train' | 'validation'): Int32Array {
  const reader = new SplitReader(values.data!, manifest, split);
  const ids = new Int32Array(reader.rows * T);
  for (let r = 0; r < reader.rows; r++) reader.readRow(r, ids, null, r * T);
  reader.close();
  return ids;
}

// Training counts: unigram, and bigrams by row (left -> right) and by column (right <- left).
const train = readSplit('train');
const unigram = new Float64Array(V);
const following = new Map<number, Map<number, number>>(); // left -> (right -> count)
const preceding = new Map<number, Map<number, number>>(); // right -> (left -> count)
const bump = (m: Map<number, Map<number, number>>, a: number, b: number) => {
  let inner = m.get(a);
  if (inner === undefined) m.set(a, (inner = new Map()));
  inner.set(b, (inner.get(b) ?? 0) + 1);
};
const leftTotals = new Float64Array(V);
for (let r = 0; r < train.length; r += T) {
  for (let i = r; i < r + T; i++) {
    const w = train[i];
    if (special[w]) continue;
    unigram[w]++;
    if (i + 1 < r + T && !special[train[i + 1]]) {
      bump(following, w, train[i + 1]);
      bump(preceding, train[i + 1], w);
      leftTotals[w]++;
    }
  }
}
const total = unigram.reduce((a, b) => a + b, 0);
for (let w = 0; w < V; w++) unigram[w] = special[w] ? 0 : (unigram[w] + 0.5) / (total + 0.5 * V);
const k = 0.1 * V;

// Held-out positions with two ordinary neighbours, a seeded sample of them.
const valid = readSplit('validation');
const candidates: number[] = [];
for (let r = 0; r < valid.length; r += T) {
  for (let i = r + 1; i < r + T - 1; i++) if (!special[valid[i - 1]] && !special[valid[i]] && !special[valid[i + 1]]) candidates.push(i);
}
const rng = new Rng(values.seed);
for (let i = candidates.length - 1; i > 0; i--) {
  const j = Math.floor(rng.next() * (i + 1));
  [candidates[i], candidates[j]] = [candidates[j], candidates[i]];
}
const sample = candidates.slice(0, positions);

let bigramNats = 0;
let unigramNats = 0;
let bigramRight = 0;
let unigramRight = 0;
const mostFrequent = unigram.indexOf(Math.max(...unigram));
const scores = new Float64Array(V);
for (const i of sample) {
  const [left, w, right] = [valid[i - 1], valid[i], valid[i + 1]];
  const afterLeft = following.get(left);
  const beforeRight = preceding.get(right);
  let sum = 0;
  let best = 0;
  for (let x = 0; x < V; x++) {
    if (special[x]) {
      scores[x] = 0;
      continue;
    }
    const pLeft = ((afterLeft?.get(x) ?? 0) + k * unigram[x]) / (leftTotals[left] + k);
    const pRight = ((beforeRight?.get(x) ?? 0) + k * unigram[right]) / (leftTotals[x] + k);
    scores[x] = pLeft * pRight;
    sum += scores[x];
    if (scores[x] > scores[best]) best = x;
  }
  bigramNats -= Math.log(scores[w] / sum);
  unigramNats -= Math.log(unigram[w]);
  if (best === w) bigramRight++;
  if (mostFrequent === w) unigramRight++;
}
const n = sample.length;
const result = {
  data: values.data,
  vocab_size: V,
  train_tokens: total,
  positions: n,
  unigram: { loss: unigramNats / n, accuracy: unigramRight / n },
  bigram_both_neighbours: { loss: bigramNats / n, accuracy: bigramRight / n },
};
if (values.json) {
  process.stdout.write(`${JSON.stringify(result)}\n`);
} else {
  process.stdout.write(
    `${n} held-out positions of ${values.data} (vocabulary ${V}, ${total} training tokens counted)\n` +
      `unigram:                 loss ${result.unigram.loss.toFixed(3)} nats, accuracy ${(100 * result.unigram.accuracy).toFixed(1)}%\n` +
      `bigram, both neighbours: loss ${result.bigram_both_neighbours.loss.toFixed(3)} nats, accuracy ${(100 * result.bigram_both_neighbours.accuracy).toFixed(1)}%\n`,
  );
}
