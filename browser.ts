// mlmkit's browser entry (`import { ... } from 'mlmkit/browser'`): runs a `mlm export --format tfjs`
// folder in a web page (or any JavaScript runtime with fetch) with mlmkit's TF.js model code and a
// pure-JavaScript tokenizer (@huggingface/tokenizers reading tokenizer.json), no Node.js modules.
//
//   import * as tf from '@tensorflow/tfjs';
//   import { loadTfjsModel, fillMaskTopK } from 'mlmkit/browser';
//   const model = await loadTfjsModel(tf, '/model/');          // the folder holding model.json
//   console.log(await fillMaskTopK(model, 'Paris is the [MASK] of France.', 5));
//
// The folder is self-describing: model.json's userDefinedMetadata.mlmkit holds the model's
// config.json object, the weight layout (Hugging Face names, Linear weights [in, out]) and the
// tokenizer file's name; the weights are TF.js's weights manifest (tf.io.http reads them).
// fillMaskTopK follows transformers' fill-mask pipeline (training/fill-mask.ts) for texts with
// mask tokens and no targets: softmax over the vocabulary in float64, ties to the smaller id.
import { Tokenizer } from '@huggingface/tokenizers';
import type { Tensor3D } from '@tensorflow/tfjs';
import type { MaskedLM, Tf } from './training/models/bert.ts';
import { parseModelConfig, type ModelConfig } from './training/models/config.ts';
import { createMaskedLM, maxSequenceLength } from './training/models/roberta.ts';
import { InputError } from './common/errors.ts';
import type { NamedArray } from './training/models/weights.ts';

export type { MaskedLM, ModelConfig, Tf };

/** CJK ideograph blocks outside the BMP, as the Rust BertNormalizer's is_chinese_char lists them (its last block starts at U+2B920, not U+2B820 as Python's slow BertTokenizer has it). */
const ASTRAL_CJK = /[\u{20000}-\u{2A6DF}\u{2A700}-\u{2B73F}\u{2B740}-\u{2B81F}\u{2B920}-\u{2CEAF}\u{2F800}-\u{2FA1F}]/gu;

/** tokenizer.json through @huggingface/tokenizers, with the few things fill-mask needs. */
export class BrowserTokenizer {
  readonly tokenizer: Tokenizer;
  readonly maskToken: string;
  readonly maskId: number;
  readonly padId: number;

  /** Whether CJK characters outside the BMP get spaces before encoding (see `prepare`). */
  private readonly spaceAstralCjk: boolean;

  constructor(tokenizerJson: object, tokenizerConfig: Record<string, unknown> = {}) {
    this.tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
    const normalizer = (tokenizerJson as { normalizer?: { type?: string; handle_chinese_chars?: boolean } }).normalizer;
    this.spaceAstralCjk = normalizer?.type === 'BertNormalizer' && normalizer.handle_chinese_chars !== false;
    const special = (key: string, fallbacks: string[]): { token: string; id: number } => {
      const named = typeof tokenizerConfig[key] === 'string' ? [tokenizerConfig[key] as string] : [];
      for (const token of [...named, ...fallbacks]) {
        const id = this.tokenizer.token_to_id(token);
        if (id !== undefined) return { token, id };
      }
      throw new Error(`tokenizer.json has no ${key} (tried ${[...named, ...fallbacks].join(', ')})`);
    };
    const mask = special('mask_token', ['[MASK]', '<mask>']);
    this.maskToken = mask.token;
    this.maskId = mask.id;
    this.padId = special('pad_token', ['[PAD]', '<pad>']).id;
  }

  /**
   * The BERT normalizer puts spaces around CJK ideographs; @huggingface/tokenizers 0.2.0 tests
   * UTF-16 code units, so it misses those outside the BMP (U+20000 and up), which the Rust
   * tokenizers split. Spacing them first gives the Rust ids (the normalizer's own spaces are
   * whitespace-split away either way).
   */
  private prepare(text: string): string {
    return this.spaceAstralCjk ? text.replace(ASTRAL_CJK, ' $& ') : text;
  }

  /** Ids with the specials the post-processor adds ([CLS] ... [SEP] / <s> ... </s>). */
  encodeWithSpecials(text: string): number[] {
    return this.tokenizer.encode(this.prepare(text), { add_special_tokens: true }).ids;
  }

  /** Ids without specials. */
  encode(text: string): number[] {
    return this.tokenizer.encode(this.prepare(text), { add_special_tokens: false }).ids;
  }

  decode(ids: number[], skipSpecialTokens = false): string {
    return this.tokenizer.decode(ids, { skip_special_tokens: skipSpecialTokens });
  }
}

/** A model from a tfjs export, ready to run. */
export interface BrowserModel {
  config: ModelConfig;
  tokenizer: BrowserTokenizer;
  model: MaskedLM;
  tf: Tf;
  dispose(): void;
}

interface MlmkitMetadata {
  format_version: number;
  config: Record<string, unknown>;
  tokenizer: string;
}

/**
 * The files a tfjs model.json names (its tokenizer file and weight shards) and the bytes its
 * weights take, checked: every name a plain relative path inside the folder (no `..`, no absolute
 * path or URL, so a model.json cannot make the loader fetch from elsewhere), every weight float32
 * or int32 of a whole-number shape. Throws an Error starting with `where` otherwise. `mlm serve`
 * also checks the shards' sizes with it before serving (scripts/serve/server.ts).
 */
export function tfjsExportFiles(modelJson: unknown, where: string): { tokenizer: string; shards: string[]; weightBytes: number } {
  const bad = (what: string) => new Error(`${where} ${what}; export it again with mlm export --format tfjs`);
  const plain = (name: unknown, what: string): string => {
    if (typeof name !== 'string' || name === '' || /[\\:?#\0]/.test(name) || name.startsWith('/') ||
      name.split('/').some((part) => part === '' || part === '.' || part === '..')) {
      throw bad(`names ${what} ${JSON.stringify(String(name).slice(0, 200))}, not a plain file name inside the folder`);
    }
    return name;
  };
  const json = modelJson as { userDefinedMetadata?: { mlmkit?: MlmkitMetadata }; weightsManifest?: unknown } | null;
  const meta = json?.userDefinedMetadata?.mlmkit;
  if (!meta || !(meta.format_version >= 2) || typeof meta.config !== 'object' || meta.config === null) {
    throw bad('is not a self-describing mlmkit tfjs export (format_version 2)');
  }
  const tokenizer = plain(meta.tokenizer, 'the tokenizer file');
  if (!Array.isArray(json!.weightsManifest)) throw bad('has no weightsManifest');
  const shards: string[] = [];
  let weightBytes = 0;
  for (const group of json!.weightsManifest as Array<{ paths?: unknown; weights?: unknown }>) {
    if (!Array.isArray(group?.paths) || !Array.isArray(group.weights)) throw bad('has a weight group without paths or weights');
    for (const p of group.paths) shards.push(plain(p, 'the weight shard'));
    for (const w of group.weights as Array<{ name?: unknown; shape?: unknown; dtype?: unknown }>) {
      const shape = w?.shape;
      if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0) || (w.dtype !== 'float32' && w.dtype !== 'int32')) {
        throw bad(`describes weight ${JSON.stringify(String(w?.name))} with shape ${JSON.stringify(shape)} and dtype ${JSON.stringify(w?.dtype)} (float32 or int32 of whole sizes expected)`);
      }
      weightBytes += 4 * shape.reduce((a: number, d: number) => a * d, 1);
    }
  }
  return { tokenizer, shards, weightBytes };
}

/**
 * Loads a `mlm export --format tfjs` folder from `baseUrl` (ending in '/'; relative URLs resolve
 * against the page). `given` replaces the global fetch.
 */
export async function loadTfjsModel(tf: Tf, baseUrl: string, given?: typeof fetch): Promise<BrowserModel> {
  // Bound through a closure: tf.io.http calls it as a method, which the browser's fetch refuses.
  const fetchFn: typeof fetch = given ?? ((input, init) => fetch(input, init));
  const base = baseUrl.endsWith('/') ? baseUrl : baseUrl + '/';
  const getJson = async (name: string): Promise<unknown> => {
    const res = await fetchFn(base + name);
    if (!res.ok) throw new Error(`${base}${name}: HTTP ${res.status}`);
    return res.json();
  };
  const modelJson = (await getJson('model.json')) as { userDefinedMetadata: { mlmkit: MlmkitMetadata } };
  const files = tfjsExportFiles(modelJson, `${base}model.json`);
  const meta = modelJson.userDefinedMetadata.mlmkit;
  const config = parseModelConfig(meta.config, `${base}model.json`);
  const tokenizerJson = (await getJson(files.tokenizer)) as object;
  let tokenizerConfig: Record<string, unknown> = {};
  try {
    tokenizerConfig = (await getJson('tokenizer_config.json')) as Record<string, unknown>;
  } catch {
    // optional: the specials are found by their usual names
  }
  const handler = tf.io.http(base + 'model.json', { fetchFunc: fetchFn });
  if (!handler.load) throw new Error('tf.io.http cannot load here');
  const artifacts = await handler.load();
  if (!artifacts.weightData || !artifacts.weightSpecs) throw new Error(`${base}model.json lists no weights`);
  const got = Array.isArray(artifacts.weightData) ? artifacts.weightData.reduce((a, b) => a + b.byteLength, 0) : artifacts.weightData.byteLength;
  if (got !== files.weightBytes) {
    throw new Error(`${base}model.json's weights take ${files.weightBytes} bytes but its shards hold ${got}; export it again with mlm export --format tfjs`);
  }
  const decoded = tf.io.decodeWeights(artifacts.weightData, artifacts.weightSpecs);
  const tensors = new Map<string, NamedArray>();
  for (const [name, t] of Object.entries(decoded)) {
    tensors.set(name, { shape: t.shape, data: t.dataSync() as Float32Array });
    t.dispose();
  }
  const model = createMaskedLM(tf, config, { weights: { layout: 'mlmkit', tensors } });
  return { config, tokenizer: new BrowserTokenizer(tokenizerJson, tokenizerConfig), model, tf, dispose: () => model.dispose() };
}

export interface BrowserCandidate {
  score: number;
  token: number;
  token_str: string;
  sequence: string;
}

/**
 * The top-k candidates for each mask token in `text`, best first, as transformers' fill-mask
 * pipeline returns them: a list for one mask, a list of lists for several.
 */
export async function fillMaskTopK(m: BrowserModel, text: string, topK = 5): Promise<BrowserCandidate[] | BrowserCandidate[][]> {
  const { tf, tokenizer } = m;
  // InputError (common/errors.ts) for what the caller gave, in the words of `mlm fill-mask`.
  if (typeof text !== 'string') throw new InputError(`fillMaskTopK: the text must be a string, got ${typeof text}`);
  if (typeof topK !== 'number' || !Number.isInteger(topK) || topK < 1) throw new InputError(`fillMaskTopK: topK must be a whole number >= 1, got ${String(topK)}`);
  const ids = tokenizer.encodeWithSpecials(text);
  const positions = ids.flatMap((id, i) => (id === tokenizer.maskId ? [i] : []));
  if (positions.length === 0) throw new InputError(`no ${tokenizer.maskToken} token in the text; put ${tokenizer.maskToken} where a word should be predicted`);
  const maxLen = maxSequenceLength(m.config);
  if (ids.length > maxLen) throw new InputError(`the text is ${ids.length} tokens long (specials included), more than the ${maxLen} positions of this model; shorten it`);
  const logits = tf.tidy(() => m.model.logits({
    inputIds: tf.tensor2d([ids], [1, ids.length], 'int32'),
    attentionMask: tf.ones([1, ids.length], 'int32'),
  }, { training: false }) as Tensor3D);
  const data = (await logits.data()) as Float32Array;
  logits.dispose();
  const V = m.config.vocab_size;
  const single = positions.length === 1;
  const lists = positions.map((pos) => {
    const row = data.subarray(pos * V, (pos + 1) * V);
    let max = -Infinity;
    for (const v of row) max = Math.max(max, v);
    let sum = 0;
    for (const v of row) sum += Math.exp(v - max);
    const order = Array.from(row.keys()).filter((id) => tokenizer.tokenizer.id_to_token(id) !== undefined);
    order.sort((a, b) => row[b] - row[a] || a - b);
    return order.slice(0, topK).map((token) => {
      const filled = ids.map((id, i) => (i === pos ? token : id)).filter((id) => id !== tokenizer.padId);
      return {
        score: Math.exp(row[token] - max) / sum,
        token,
        token_str: tokenizer.decode([token]),
        sequence: tokenizer.decode(filled, single),
      };
    });
  });
  return single ? lists[0] : lists;
}
