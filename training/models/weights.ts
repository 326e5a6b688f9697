// The one table of a masked LM's weights: every Hugging Face tensor name with its shape in
// transformers (PyTorch) and in mlmkit, how it is initialised, and how it converts. Everything
// that creates, imports or exports weights reads this table (docs/architecture.md, "The model"); the model code
// (bert.ts, roberta.ts) looks its variables up by the same names.
//
// Layouts. PyTorch's nn.Linear stores W as [out, in] and computes y = x W^T + b. mlmkit stores
// every Linear weight as [in, out] and computes y = x W: on the wasm backend a matMul with either
// transpose flag runs 10-40x slower than the plain one (measured for this file:
// [614,256] x [30522,256] with transposeB 5.4 s, plain on [256,30522] 0.40 s), so the transpose
// happens once, here, at import and export. Embeddings are [rows, hidden] in both.
//
// The tied decoder. transformers' `BertForMaskedLM` has `cls.predictions.decoder.weight` (the
// same tensor as `bert.embeddings.word_embeddings.weight`) and `cls.predictions.decoder.bias` (the
// same tensor as `cls.predictions.bias`); RoBERTa likewise with `lm_head.decoder.*`. mlmkit has one
// variable for each pair. Import accepts the decoder names when they equal their twin; export
// writes what `save_pretrained` writes with safetensors, which drops the names matching the
// model's `_tied_weights_keys` from each group of shared tensors: the decoder names go, the
// embedding and `cls.predictions.bias` / `lm_head.bias` stay.
//
// Reference: transformers `models/bert/modeling_bert.py` (module names, `_init_weights`),
// `models/roberta/modeling_roberta.py`, `modeling_utils.py` (`save_pretrained` alias removal,
// base_model_prefix handling and the names a masked LM ignores on load).
import { InputError } from '../../common/errors.ts';
import { fnv1a, Rng } from '../../common/rng.ts';
import type { Variable } from '@tensorflow/tfjs';
import type { ModelConfig, ModelFamily } from './config.ts';

/** A float32 tensor held in JavaScript: row-major `data` of `shape`. */
export interface NamedArray {
  shape: number[];
  data: Float32Array;
}

export type ParamInit = 'normal' | 'zeros' | 'ones';

export interface ParamSpec {
  /** The Hugging Face state-dict name. */
  readonly name: string;
  /** Shape as mlmkit stores it. */
  readonly shape: readonly number[];
  /** Shape in a transformers checkpoint. */
  readonly hfShape: readonly number[];
  /** A Linear weight: [in, out] here, [out, in] in transformers. */
  readonly linear: boolean;
  /** normal(0, initializer_range), zeros or ones, as transformers' `_init_weights`. */
  readonly init: ParamInit;
  /** An embedding's padding_idx row, zeroed at init like transformers' nn.Embedding(padding_idx). */
  readonly zeroRow?: number;
  /**
   * Whether AdamW's weight decay applies: Linear and embedding weights yes; biases and LayerNorm
   * weights no (as transformers' Trainer and the BERT recipe).
   */
  readonly decay: boolean;
}

/** Weights in mlmkit's layout, keyed by Hugging Face name: what `createBert` / `createRoberta` take. */
export interface ModelWeights {
  readonly layout: 'mlmkit';
  readonly tensors: ReadonlyMap<string, NamedArray>;
}

/** The tied pairs: the decoder names transformers also has, and the variables they alias. */
export interface TiedNames {
  readonly decoderWeight: string;
  readonly wordEmbeddings: string;
  readonly decoderBias: string;
  readonly bias: string;
}

/** `bert` or `roberta`: the prefix of the encoder's names (transformers' base_model_prefix). */
export function basePrefix(family: ModelFamily): string {
  return family;
}

/** The prefix of the MLM head's names. */
export function headPrefix(family: ModelFamily): string {
  return family === 'bert' ? 'cls.predictions' : 'lm_head';
}

export function tiedNames(family: ModelFamily): TiedNames {
  const base = basePrefix(family);
  const head = headPrefix(family);
  return {
    decoderWeight: `${head}.decoder.weight`,
    wordEmbeddings: `${base}.embeddings.word_embeddings.weight`,
    decoderBias: `${head}.decoder.bias`,
    bias: `${head}.bias`,
  };
}

/**
 * Every weight of the model, in the order transformers registers them (embeddings, layers,
 * head). This is the list `save_pretrained` writes for a ForMaskedLM model.
 */
export function parameterTable(config: ModelConfig): readonly ParamSpec[] {
  const family = config.model_type;
  const H = config.hidden_size;
  const I = config.intermediate_size;
  const V = config.vocab_size;
  const base = basePrefix(family);
  const specs: ParamSpec[] = [];
  const plain = (name: string, shape: number[], init: ParamInit, zeroRow?: number): void => {
    const decay = init === 'normal'; // embeddings; biases are zeros, LayerNorm weights ones
    specs.push({ name, shape, hfShape: shape, linear: false, init, decay, ...(zeroRow === undefined ? {} : { zeroRow }) });
  };
  // A Linear(in -> out): weight [in, out] here, [out, in] in transformers; bias [out].
  const linear = (prefix: string, inDim: number, outDim: number): void => {
    specs.push({ name: `${prefix}.weight`, shape: [inDim, outDim], hfShape: [outDim, inDim], linear: true, init: 'normal', decay: true });
    plain(`${prefix}.bias`, [outDim], 'zeros');
  };
  const layerNorm = (prefix: string): void => {
    plain(`${prefix}.weight`, [H], 'ones');
    plain(`${prefix}.bias`, [H], 'zeros');
  };

  // Embeddings. Both families give word_embeddings padding_idx = pad_token_id; RoBERTa also gives
  // it to position_embeddings (the pad position id is pad_token_id).
  plain(`${base}.embeddings.word_embeddings.weight`, [V, H], 'normal', config.pad_token_id);
  plain(
    `${base}.embeddings.position_embeddings.weight`,
    [config.max_position_embeddings, H],
    'normal',
    family === 'roberta' ? config.pad_token_id : undefined,
  );
  plain(`${base}.embeddings.token_type_embeddings.weight`, [config.type_vocab_size, H], 'normal');
  layerNorm(`${base}.embeddings.LayerNorm`);

  for (let i = 0; i < config.num_hidden_layers; i++) {
    const layer = `${base}.encoder.layer.${i}`;
    linear(`${layer}.attention.self.query`, H, H);
    linear(`${layer}.attention.self.key`, H, H);
    linear(`${layer}.attention.self.value`, H, H);
    linear(`${layer}.attention.output.dense`, H, H);
    layerNorm(`${layer}.attention.output.LayerNorm`);
    linear(`${layer}.intermediate.dense`, H, I);
    linear(`${layer}.output.dense`, I, H);
    layerNorm(`${layer}.output.LayerNorm`);
  }

  // MLM head: transform (dense, activation, LayerNorm), then the tied decoder plus its own bias.
  if (family === 'bert') {
    linear('cls.predictions.transform.dense', H, H);
    layerNorm('cls.predictions.transform.LayerNorm');
    plain('cls.predictions.bias', [V], 'zeros');
  } else {
    linear('lm_head.dense', H, H);
    layerNorm('lm_head.layer_norm');
    plain('lm_head.bias', [V], 'zeros');
  }
  return specs;
}

/**
 * The names of the parameters AdamW decays (`ParamSpec.decay`): what the optimizers take. The
 * packed variables (see "Packed storage") are in it when their parts are.
 */
export function decayedParameters(config: ModelConfig): ReadonlySet<string> {
  const decayed = new Set(parameterTable(config).filter((s) => s.decay).map((s) => s.name));
  for (const g of packedGroups(config)) if (decayed.has(g.parts[0])) decayed.add(g.name);
  return decayed;
}

// ---------------------------------------------------------------------------------------------
// Packed storage
//
// The model keeps query, key and value side by side: per encoder layer one variable
// `<layer>.attention.self.qkv.weight` [H, 3H] (the three [in, out] weights' columns in that order)
// and one `<layer>.attention.self.qkv.bias` [3H], so that the attention's projection is one
// product of a variable, with no concatenation in the step and no split in its gradient (TF.js
// tensors cannot share storage, so three variables would have to be copied together every step).
// Those names exist only between the model and its optimizer: model.safetensors, the optimizer's
// moments and every export use the table's Hugging Face names, through `packTensors` (on the way
// in) and `unpackTensors` (on the way out). Weight decay is the parts' (the same for all three).

/** Parameters stored as one variable: `parts` side by side along the last axis, in order. */
export interface PackedGroup {
  readonly name: string;
  readonly parts: readonly string[];
}

/** The model's packed variables: query, key and value weights and biases of each layer. */
export function packedGroups(config: ModelConfig): readonly PackedGroup[] {
  const groups: PackedGroup[] = [];
  for (let i = 0; i < config.num_hidden_layers; i++) {
    const self = `${basePrefix(config.model_type)}.encoder.layer.${i}.attention.self`;
    for (const kind of ['weight', 'bias']) {
      groups.push({ name: `${self}.qkv.${kind}`, parts: ['query', 'key', 'value'].map((p) => `${self}.${p}.${kind}`) });
    }
  }
  return groups;
}

/** The columns of a tensor: its last axis (rows: the product of the others). */
function columnsOf(shape: readonly number[]): { rows: number; cols: number } {
  const cols = shape.length === 0 ? 1 : shape[shape.length - 1];
  return { rows: shape.slice(0, -1).reduce((a, b) => a * b, 1), cols };
}

/**
 * The model's variables from tensors under the table's names (mlmkit layout): the parts of each
 * packed group become one tensor under the group's name, at the place of its first part; the
 * rest are passed through (the same arrays). `what` names the tensors in the error for a missing
 * part ("model weights", "optimizer state").
 */
export function packTensors(config: ModelConfig, tensors: ReadonlyMap<string, NamedArray>, what = 'tensors'): Map<string, NamedArray> {
  const groupOf = new Map<string, PackedGroup>();
  for (const g of packedGroups(config)) for (const p of g.parts) groupOf.set(p, g);
  const out = new Map<string, NamedArray>();
  for (const [name, t] of tensors) {
    const g = groupOf.get(name);
    if (g === undefined) {
      out.set(name, t);
      continue;
    }
    if (name !== g.parts[0]) continue; // packed with the first part
    const parts = g.parts.map((p) => {
      const part = tensors.get(p);
      if (part === undefined) throw new Error(`${what}: ${p} is missing`);
      return { ...columnsOf(part.shape), part };
    });
    const { rows } = parts[0];
    if (parts.some((p) => p.rows !== rows || p.part.shape.length !== t.shape.length)) {
      throw new Error(`${what}: ${g.parts.join(', ')} have shapes ${parts.map((p) => `[${p.part.shape.join(', ')}]`).join(', ')}, which do not pack side by side`);
    }
    const width = parts.reduce((a, p) => a + p.cols, 0);
    const data = new Float32Array(rows * width);
    let at = 0;
    for (const { cols, part } of parts) {
      for (let r = 0; r < rows; r++) data.set(part.data.subarray(r * cols, (r + 1) * cols), r * width + at);
      at += cols;
    }
    out.set(g.name, { shape: [...t.shape.slice(0, -1), width], data });
  }
  return out;
}

/**
 * The inverse of `packTensors`: each packed group's tensor cut back into its parts (equal widths)
 * at its place; other tensors, and parts already apart, are passed through.
 */
export function unpackTensors(config: ModelConfig, tensors: ReadonlyMap<string, NamedArray>): Map<string, NamedArray> {
  const groups = new Map(packedGroups(config).map((g) => [g.name, g]));
  const out = new Map<string, NamedArray>();
  for (const [name, t] of tensors) {
    const g = groups.get(name);
    if (g === undefined) {
      out.set(name, t);
      continue;
    }
    const { rows, cols: width } = columnsOf(t.shape);
    const n = g.parts.length;
    if (width % n !== 0) throw new Error(`${name} has shape [${t.shape.join(', ')}]: its ${width} columns do not split into ${n} parts`);
    const cols = width / n;
    g.parts.forEach((p, k) => {
      const data = new Float32Array(rows * cols);
      for (let r = 0; r < rows; r++) data.set(t.data.subarray(r * width + k * cols, r * width + (k + 1) * cols), r * cols);
      out.set(p, { shape: [...t.shape.slice(0, -1), cols], data });
    });
  }
  return out;
}

/**
 * Names transformers' ForMaskedLM classes skip without complaint when loading: the pooler and the
 * next-sentence head of BertForPreTraining / BertModel checkpoints, and `position_ids` /
 * `token_type_ids` buffers that older versions saved.
 */
export function isIgnoredOnLoad(family: ModelFamily, name: string): boolean {
  const base = basePrefix(family);
  return (
    name.startsWith(`${base}.pooler.`) ||
    (family === 'bert' && name.startsWith('cls.seq_relationship.')) ||
    name === `${base}.embeddings.position_ids` ||
    name === `${base}.embeddings.token_type_ids`
  );
}

// ---------------------------------------------------------------------------------------------
// Random init

/** Fills `out` with normal(0, std) draws (Box-Muller on `rng`), rounded to float32. */
export function fillNormal(out: Float32Array, rng: Rng, std: number): void {
  for (let i = 0; i < out.length; i += 2) {
    const u1 = 1 - rng.next(); // (0, 1]: log is finite
    const u2 = rng.next();
    const r = Math.sqrt(-2 * Math.log(u1)) * std;
    out[i] = r * Math.cos(2 * Math.PI * u2);
    if (i + 1 < out.length) out[i + 1] = r * Math.sin(2 * Math.PI * u2);
  }
}

/**
 * Fresh weights as transformers' `_init_weights` makes them: Linear and Embedding weights
 * normal(0, initializer_range) with the padding rows zero, biases 0, LayerNorm 1 and 0. Each
 * tensor draws from its own stream, derived from `seed` and its name, in JavaScript: the same
 * values on every backend, and adding a tensor does not change the others.
 */
export function initialWeights(config: ModelConfig, seed: number): ModelWeights {
  const tensors = new Map<string, NamedArray>();
  for (const spec of parameterTable(config)) {
    const data = new Float32Array(spec.shape.reduce((a, b) => a * b, 1));
    if (spec.init === 'ones') data.fill(1);
    if (spec.init === 'normal') fillNormal(data, Rng.derive(seed, fnv1a(spec.name)), config.initializer_range);
    if (spec.zeroRow !== undefined) {
      const width = spec.shape[1];
      data.fill(0, spec.zeroRow * width, (spec.zeroRow + 1) * width);
    }
    tensors.set(spec.name, { shape: [...spec.shape], data });
  }
  return { layout: 'mlmkit', tensors };
}

// ---------------------------------------------------------------------------------------------
// Import and export

/** Transposes a row-major [rows, cols] matrix. */
function transpose2d(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  const B = 64; // blocked, for cache locality on large matrices
  for (let r0 = 0; r0 < rows; r0 += B) {
    const r1 = Math.min(rows, r0 + B);
    for (let c0 = 0; c0 < cols; c0 += B) {
      const c1 = Math.min(cols, c0 + B);
      for (let r = r0; r < r1; r++) {
        const rowOffset = r * cols;
        for (let c = c0; c < c1; c++) out[c * rows + r] = data[rowOffset + c];
      }
    }
  }
  return out;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

function listNames(names: string[], limit = 8): string {
  const shown = names.slice(0, limit).join(', ');
  return names.length > limit ? `${shown} and ${names.length - limit} more` : shown;
}

function arraysEqual(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i] && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) return false;
  return true;
}

/**
 * The checkpoint's names as transformers would read them into a ForMaskedLM model: legacy
 * `LayerNorm.gamma` / `.beta` become `.weight` / `.bias`, and a base-model checkpoint (no name
 * starts with `bert.` / `roberta.`) gets the prefix, as transformers does through
 * `base_model_prefix`; its head is then missing and reported so.
 */
function canonicalNames(family: ModelFamily, names: Iterable<string>): Map<string, string> {
  const all = [...names];
  const base = basePrefix(family);
  const head = headPrefix(family);
  const prefixless = !all.some((n) => n.startsWith(`${base}.`));
  const byCanonical = new Map<string, string>();
  for (const original of all) {
    let name = original.replace(/(LayerNorm|layer_norm)\.gamma$/, '$1.weight').replace(/(LayerNorm|layer_norm)\.beta$/, '$1.bias');
    const isHead = name.startsWith(`${head}.`) || (family === 'bert' && name.startsWith('cls.'));
    if (prefixless && !isHead) name = `${base}.${name}`;
    byCanonical.set(name, original);
  }
  return byCanonical;
}

/**
 * Checks a checkpoint's tensors (`tensors`, Hugging Face names and layouts, e.g. read from
 * model.safetensors) against `config` and returns them in mlmkit's layout. InputError (prefixed
 * with `source`) for: a vocab_size that disagrees with the word embeddings, missing tensors,
 * unexpected tensors, shape mismatches, and tied decoder tensors that differ from their twins.
 * The pooler, next-sentence head and position_ids buffers are skipped, as transformers does.
 */
export function importWeights(
  config: ModelConfig,
  tensors: ReadonlyMap<string, NamedArray>,
  source: string,
): ModelWeights {
  const family = config.model_type;
  // More layers in the config than in the checkpoint is said before the table of expected tensors
  // is built (16 entries a layer: a config claiming 10^8 layers ran out of memory building it).
  // Fewer: the extra layers' tensors are named below as unexpected.
  const layers = new Set<number>();
  for (const name of tensors.keys()) {
    const m = /(?:^|\.)encoder\.layer\.(\d+)\./.exec(name);
    if (m) layers.add(Number(m[1]));
  }
  if (layers.size > 0 && config.num_hidden_layers > layers.size) {
    throw new InputError(`${source}: config.json says num_hidden_layers ${config.num_hidden_layers} but the checkpoint holds the weights of ${layers.size} layer(s)`);
  }
  const table = parameterTable(config);
  const tied = tiedNames(family);
  const byCanonical = canonicalNames(family, tensors.keys());
  const lookup = (name: string): NamedArray | undefined => {
    const original = byCanonical.get(name);
    return original === undefined ? undefined : tensors.get(original);
  };
  const originalName = (name: string): string => byCanonical.get(name) ?? name;

  // The vocabulary size first: it is the usual mismatch (a config from another tokenizer).
  const words = lookup(tied.wordEmbeddings);
  if (words !== undefined && words.shape.length === 2 && words.shape[0] !== config.vocab_size) {
    throw new InputError(
      `${source}: config.json says vocab_size ${config.vocab_size} but ${originalName(tied.wordEmbeddings)} has ${words.shape[0]} rows`,
    );
  }

  // The bias may come under either tied name (or both, then equal).
  const known = new Set(table.map((s) => s.name));
  const bias = lookup(tied.bias) ?? lookup(tied.decoderBias);

  const missing = table.filter((s) => (s.name === tied.bias ? bias === undefined : lookup(s.name) === undefined)).map((s) => s.name);
  if (missing.length > 0) {
    throw new InputError(`${source}: the checkpoint lacks ${missing.length} weight(s) of a ${family} masked LM: ${listNames(missing)}`);
  }
  const unexpected = [...byCanonical.keys()]
    .filter((n) => !known.has(n) && n !== tied.decoderWeight && n !== tied.decoderBias && !isIgnoredOnLoad(family, n))
    .map(originalName);
  if (unexpected.length > 0) {
    throw new InputError(
      `${source}: the checkpoint has ${unexpected.length} tensor(s) that a ${family} masked LM does not use: ${listNames(unexpected)}`,
    );
  }

  const out = new Map<string, NamedArray>();
  for (const spec of table) {
    const t = spec.name === tied.bias ? (bias as NamedArray) : (lookup(spec.name) as NamedArray);
    const shown = spec.name === tied.bias && lookup(tied.bias) === undefined ? tied.decoderBias : spec.name;
    if (!sameShape(t.shape, spec.hfShape)) {
      throw new InputError(
        `${source}: ${originalName(shown)} has shape [${t.shape.join(', ')}] but the config implies [${spec.hfShape.join(', ')}]`,
      );
    }
    const size = spec.hfShape.reduce((a, b) => a * b, 1);
    if (t.data.length !== size) {
      throw new InputError(`${source}: ${originalName(shown)} holds ${t.data.length} values for shape [${t.shape.join(', ')}]`);
    }
    const data = spec.linear ? transpose2d(t.data, spec.hfShape[0], spec.hfShape[1]) : t.data;
    out.set(spec.name, { shape: [...spec.shape], data });
  }

  // Tied decoder tensors, when present, must be the very tensors they alias.
  for (const [decoder, twin] of [
    [tied.decoderWeight, tied.wordEmbeddings],
    [tied.decoderBias, tied.bias],
  ] as const) {
    const t = lookup(decoder);
    if (t === undefined) continue;
    const ours = out.get(twin) as NamedArray;
    const twinHf = lookup(twin) ?? ours;
    if (!sameShape(t.shape, twinHf.shape) || !arraysEqual(t.data, twinHf.data)) {
      throw new InputError(
        `${source}: ${originalName(decoder)} differs from ${twin}: mlmkit ties the MLM decoder to them (tie_word_embeddings); use a checkpoint with tied decoder weights`,
      );
    }
  }
  return { layout: 'mlmkit', tensors: out };
}

/** The part of a model that export reads. */
export interface WeightHolder {
  readonly config: ModelConfig;
  readonly variables: ReadonlyMap<string, Variable>;
}

/**
 * The model's weights in Hugging Face names and layouts (Linear weights [out, in]), exactly the
 * tensors `save_pretrained` writes to model.safetensors for a ForMaskedLM model: the tied decoder
 * names are left out. Async because some backends (webgpu) can only be read asynchronously.
 */
export async function exportWeights(model: WeightHolder): Promise<Map<string, NamedArray>> {
  const stored = new Map<string, NamedArray>();
  for (const [name, v] of model.variables) stored.set(name, { shape: [...v.shape], data: (await v.data()) as Float32Array });
  return toHfLayout(model.config, stored, 'exportWeights');
}

/**
 * Tensors in mlmkit's layout, under the table's names or packed (the model's variables, the
 * optimizer's moments), in Hugging Face's names and layouts: unpacked, Linear weights [out, in],
 * every array a copy. `what` starts the errors.
 */
export function toHfLayout(config: ModelConfig, tensors: ReadonlyMap<string, NamedArray>, what: string): Map<string, NamedArray> {
  const apart = unpackTensors(config, tensors);
  const out = new Map<string, NamedArray>();
  for (const spec of parameterTable(config)) {
    const t = apart.get(spec.name);
    if (t === undefined) throw new Error(`${what}: no ${spec.name}`);
    if (!sameShape(t.shape, spec.shape)) {
      throw new Error(`${what}: ${spec.name} has shape [${t.shape.join(', ')}], expected [${spec.shape.join(', ')}]`);
    }
    out.set(spec.name, {
      shape: [...spec.hfShape],
      data: spec.linear ? transpose2d(t.data, spec.shape[0], spec.shape[1]) : Float32Array.from(t.data),
    });
  }
  return out;
}

/**
 * The inverse of `toHfLayout` for tensors already checked to hold the table's names (optimizer
 * moments read back): Linear weights to [in, out], then packed as the model's variables.
 */
export function fromHfLayout(config: ModelConfig, tensors: ReadonlyMap<string, NamedArray>, what: string): Map<string, NamedArray> {
  const linear = new Map(parameterTable(config).filter((s) => s.linear).map((s) => [s.name, s]));
  const mine = new Map<string, NamedArray>();
  for (const [name, t] of tensors) {
    const spec = linear.get(name);
    if (spec !== undefined && !sameShape(t.shape, spec.hfShape)) {
      throw new Error(`${what}: ${name} has shape [${t.shape.join(', ')}], expected [${spec.hfShape.join(', ')}]`);
    }
    mine.set(name, spec === undefined ? t : { shape: [...spec.shape], data: transpose2d(t.data, spec.hfShape[0], spec.hfShape[1]) });
  }
  return packTensors(config, mine, what);
}

/** Checks that `weights` hold exactly the table's tensors with the table's shapes (mlmkit layout). */
export function checkModelWeights(config: ModelConfig, weights: ModelWeights): void {
  if (weights.layout !== 'mlmkit') throw new Error('weights must be in mlmkit layout: pass them through importWeights');
  const table = parameterTable(config);
  for (const spec of table) {
    const t = weights.tensors.get(spec.name);
    if (t === undefined) throw new Error(`model weights lack ${spec.name}`);
    if (!sameShape(t.shape, spec.shape) || t.data.length !== spec.shape.reduce((a, b) => a * b, 1)) {
      throw new Error(`model weight ${spec.name} has shape [${t.shape.join(', ')}], expected [${spec.shape.join(', ')}]`);
    }
  }
  if (weights.tensors.size !== table.length) {
    const known = new Set(table.map((s) => s.name));
    const extra = [...weights.tensors.keys()].filter((n) => !known.has(n));
    throw new Error(`model weights have tensors the model does not use: ${listNames(extra)}`);
  }
}
