// `--init-bias unigram`: start a model pretrained from scratch with the MLM head's output bias set to
// the log unigram frequencies of the training tokens, instead of Hugging Face's zeros.
//
// Why. With zero bias a fresh model predicts a near-uniform distribution (loss ~ ln V), and Adam
// moves each bias entry by about one learning rate per step, so the first few hundred steps of a
// small run are spent learning token frequencies (ln V = 8.99 for an 8k vocabulary, against the
// unigram entropy ~6.9 of Brown's text). Starting from the log prior, the loss starts at the unigram
// entropy and every step goes to context. The bias is an ordinary weight afterwards: it trains,
// saves and exports as usual, and the checkpoint is a plain Hugging Face one.
import type { SplitReader } from '../data/shards.ts';

export const INIT_BIAS_CHOICES = ['zeros', 'unigram'] as const;
export type InitBias = (typeof INIT_BIAS_CHOICES)[number];

/**
 * Log relative frequencies of the ids in (up to) the first `maxRows` rows of a split, add-half
 * smoothed, centred on zero (softmax does not see a constant shift). Ids flagged in `never` (padding
 * and the other special tokens, which are never prediction targets) get the smallest value.
 */
export function unigramLogPrior(reader: SplitReader, vocabSize: number, never: Uint8Array, maxRows = 200_000): Float32Array {
  const T = reader.seqLen;
  const rows = Math.min(reader.rows, maxRows);
  const counts = new Float64Array(vocabSize);
  const ids = new Uint32Array(T);
  let total = 0;
  for (let r = 0; r < rows; r++) {
    reader.readRow(r, ids, null, 0);
    for (let t = 0; t < T; t++) {
      const id = ids[t]!;
      if (id < vocabSize && !never[id]) {
        counts[id]!++;
        total++;
      }
    }
  }
  const out = new Float32Array(vocabSize);
  let eligible = 0;
  for (let v = 0; v < vocabSize; v++) if (!never[v]) eligible++;
  const denominator = total + 0.5 * eligible;
  let sum = 0;
  let min = 0;
  for (let v = 0; v < vocabSize; v++) {
    if (never[v]) continue;
    const x = Math.log((counts[v]! + 0.5) / denominator);
    out[v] = x;
    sum += x;
    min = Math.min(min, x);
  }
  const mean = eligible > 0 ? sum / eligible : 0;
  for (let v = 0; v < vocabSize; v++) out[v] = never[v] ? min - mean : out[v]! - mean;
  return out;
}
