// A checkpoint resized to an extended tokenizer (data/tokenizer-extend.ts): the word embeddings
// (which the MLM decoder shares) and the decoder's bias grow by one row per new id; every other
// tensor, and every old row, is copied unchanged.
//
// New rows (`init`):
// - 'fvt' (Fast Vocabulary Transfer, Gee et al. 2022): the mean of the old embedding rows of the
//   pieces the OLD tokenizer makes of the new token's text; the new bias entry is the mean of the
//   same pieces' biases. The token's text is what the new tokenizer decodes it to (` hepatitis`
//   for `Ġhepatitis`); a WordPiece continuation `##x` takes the pieces of x with the first one in
//   its `##` form when the vocabulary has that. Pieces that are [UNK] only: the [UNK] row.
// - 'random': normal(0, initializer_range) rows from a seeded generator, bias 0, as transformers'
//   `resize_token_embeddings` leaves new rows (for comparison).
//
// The new tokenizer must keep every old id (same token at each id below the old size); the
// result's config says the new vocab_size. A model with more rows than its tokenizer has ids (a
// table padded to a round size) keeps them: new ids that fall on those unused rows get them
// initialised like the rows added past the end, and the table grows only as far as needed.
import { InputError } from '../common/errors.ts';
import { Rng } from '../common/rng.ts';
import type { MlmTokenizer } from '../data/tokenizer.ts';
import type { ModelConfig } from './models/config.ts';
import { fillNormal, tiedNames, type ModelWeights, type NamedArray } from './models/weights.ts';

export type ResizeInit = 'fvt' | 'random';

export interface ResizeOptions {
  init: ResizeInit;
  /** For 'random' (default 42). */
  seed?: number;
}

export interface NewRow {
  id: number;
  token: string;
  /** 'fvt': the old ids averaged. */
  from: number[];
}

export interface ResizedModel {
  config: ModelConfig;
  weights: ModelWeights;
  rows: NewRow[];
}

/** Throws an InputError unless `next` keeps every id of `old` (and adds at least one). */
export function checkExtends(old: MlmTokenizer, next: MlmTokenizer): void {
  if (next.family !== old.family) throw new InputError(`the new tokenizer is ${next.family}, the model's is ${old.family}; extend the model's own tokenizer (mlm tokenizer extend --from MODEL)`);
  // The same ids under another text pipeline (lowercasing turned off, another pre-tokenizer) would
  // feed the model's rows text they were not learnt on.
  const pipeline = (t: MlmTokenizer) => {
    const j = JSON.parse(t.toJson()) as { normalizer?: unknown; pre_tokenizer?: unknown };
    return [JSON.stringify(j.normalizer ?? null), JSON.stringify(j.pre_tokenizer ?? null)];
  };
  const [[oldNorm, oldPre], [nextNorm, nextPre]] = [pipeline(old), pipeline(next)];
  if (oldNorm !== nextNorm || oldPre !== nextPre) {
    throw new InputError(`the new tokenizer ${oldNorm !== nextNorm ? 'normalizes' : 'splits'} text differently from the model's (its ${oldNorm !== nextNorm ? 'normalizer' : 'pre_tokenizer'} differs); extend the model's own tokenizer (mlm tokenizer extend --from MODEL keeps its pipeline)`);
  }
  for (let id = 0; id < old.vocabSize; id++) {
    if (next.idToToken(id) !== old.idToToken(id)) {
      throw new InputError(
        `the new tokenizer changes id ${id} (${JSON.stringify(old.idToToken(id))} -> ${JSON.stringify(next.idToToken(id))}); it must extend the model's tokenizer, keeping every old id (mlm tokenizer extend does)`,
      );
    }
  }
  if (next.vocabSize <= old.vocabSize) {
    throw new InputError(`the new tokenizer has ${next.vocabSize} ids, no more than the model's tokenizer (${old.vocabSize}); nothing to resize`);
  }
}

/** The old ids whose rows initialise new token `id` under FVT. */
async function fvtSources(old: MlmTokenizer, next: MlmTokenizer, id: number): Promise<number[]> {
  const token = next.idToToken(id)!;
  const continuation = old.family === 'bert' && token.startsWith('##');
  const text = continuation ? token.slice(2) : next.decode([id]);
  const [pieces] = await old.tokensOf([text]);
  const ids: number[] = [];
  for (let i = 0; i < pieces.length; i++) {
    let p = pieces[i];
    if (continuation && i === 0 && old.tokenToId('##' + p) !== undefined) p = '##' + p;
    const pid = old.tokenToId(p);
    if (pid !== undefined) ids.push(pid);
  }
  return ids.length > 0 ? ids : [old.specialIds.unk];
}

/**
 * `config` and `weights` (mlmkit layout, from loadModelFolder) resized from `old`'s vocabulary to
 * `next`'s, which must extend it.
 */
export async function resizeModel(
  config: ModelConfig,
  weights: ModelWeights,
  old: MlmTokenizer,
  next: MlmTokenizer,
  opts: ResizeOptions,
): Promise<ResizedModel> {
  const V = config.vocab_size;
  const H = config.hidden_size;
  checkExtends(old, next);
  // The first new id: rows from here to V are the padding of a table larger than the old
  // tokenizer (never produced by it), so they are the new ids' to take.
  const first = Math.min(old.vocabSize, V);
  const names = tiedNames(config.model_type);
  const emb = weights.tensors.get(names.wordEmbeddings)!;
  const bias = weights.tensors.get(names.bias)!;
  const V2 = Math.max(V, next.vocabSize);
  const emb2 = new Float32Array(V2 * H);
  emb2.set(emb.data);
  const bias2 = new Float32Array(V2);
  bias2.set(bias.data);
  const rows: NewRow[] = [];
  if (opts.init === 'random') {
    fillNormal(emb2.subarray(first * H, next.vocabSize * H), new Rng(opts.seed ?? 42), config.initializer_range);
    bias2.fill(0, first, next.vocabSize);
  }
  for (let id = first; id < next.vocabSize; id++) {
    const token = next.idToToken(id) ?? '';
    if (opts.init === 'random') {
      rows.push({ id, token, from: [] });
      continue;
    }
    const from = (await fvtSources(old, next, id)).filter((s) => s < first);
    const src = from.length > 0 ? from : [old.specialIds.unk];
    const row = emb2.subarray(id * H, (id + 1) * H).fill(0);
    let b = 0;
    for (const s of src) {
      const r = emb.data.subarray(s * H, (s + 1) * H);
      for (let h = 0; h < H; h++) row[h] += r[h];
      b += bias.data[s];
    }
    for (let h = 0; h < H; h++) row[h] /= src.length;
    bias2[id] = b / src.length;
    rows.push({ id, token, from: src });
  }
  const tensors = new Map<string, NamedArray>(weights.tensors);
  tensors.set(names.wordEmbeddings, { shape: [V2, H], data: emb2 });
  tensors.set(names.bias, { shape: [V2], data: bias2 });
  return { config: { ...config, vocab_size: V2 }, weights: { layout: 'mlmkit', tensors }, rows };
}
