// Model configuration: a typed, strict reading of a Hugging Face `config.json` for `model_type`
// bert and roberta (docs/architecture.md, "The model"; docs/formats.md, "Checkpoints").
//
// Field names are Hugging Face's own snake_case names, in code as on disk, so one name means one
// thing everywhere. Every key of a config.json falls in one of four groups:
//   - acted on: the typed fields of `ModelConfig` (sizes, activation, eps, dropout, special ids);
//   - accepted with one value only: keys whose other values change the model in ways mlmkit does
//     not implement (`position_embedding_type` relative_*, `is_decoder`, `tie_word_embeddings`
//     false, pruned heads...): another value is an InputError naming the key;
//   - harmless: keys transformers reads but that do not change an encoder's MLM numerics
//     (`_name_or_path`, `id2label`, generation settings...): kept in `extra` and written back
//     unchanged by `modelConfigToJson`;
//   - anything else: an InputError naming the key, so a typo never passes silently.
// Missing keys take transformers' class defaults (BertConfig / RobertaConfig), as `from_pretrained`
// does. The parsed config is frozen: nothing changes it while running; `updateModelConfig` makes
// a new, re-validated one.
//
// Reference: transformers `models/bert/configuration_bert.py`, `models/roberta/
// configuration_roberta.py`, `configuration_utils.py` (PretrainedConfig's common keys).
import { InputError } from '../../common/errors.ts';

export type ModelFamily = 'bert' | 'roberta';

/**
 * `gelu`: exact erf GELU; `gelu_new` and `gelu_pytorch_tanh`: the tanh approximation (the same
 * formula; transformers computes them with different kernels); `relu`.
 */
export type HiddenAct = 'gelu' | 'gelu_new' | 'gelu_pytorch_tanh' | 'relu';
export const HIDDEN_ACTS: readonly HiddenAct[] = ['gelu', 'gelu_new', 'gelu_pytorch_tanh', 'relu'];

export interface ModelConfig {
  readonly model_type: ModelFamily;
  /** Class names for transformers' auto classes, e.g. ["BertForMaskedLM"]. */
  readonly architectures: readonly string[];
  readonly vocab_size: number;
  readonly hidden_size: number;
  readonly num_hidden_layers: number;
  readonly num_attention_heads: number;
  readonly intermediate_size: number;
  readonly hidden_act: HiddenAct;
  /** Dropout after the embeddings and after each attention / feed-forward output projection. */
  readonly hidden_dropout_prob: number;
  /** Dropout on the attention probabilities. */
  readonly attention_probs_dropout_prob: number;
  readonly max_position_embeddings: number;
  readonly type_vocab_size: number;
  /** Standard deviation of the normal init of linear and embedding weights. */
  readonly initializer_range: number;
  readonly layer_norm_eps: number;
  /** Padding id: its word-embedding row starts at zero; RoBERTa numbers positions from it. */
  readonly pad_token_id: number;
  readonly bos_token_id: number | null;
  readonly eos_token_id: number | null;
  /** Only 'absolute' is implemented. */
  readonly position_embedding_type: 'absolute';
  /** Always true: the MLM decoder shares the word embeddings. */
  readonly tie_word_embeddings: true;
  /** Harmless keys from the file, not acted on, written back unchanged. */
  readonly extra: Readonly<Record<string, unknown>>;
}

// transformers' class defaults, used for keys a config.json leaves out.
const BERT_DEFAULTS = {
  architectures: ['BertForMaskedLM'],
  vocab_size: 30522,
  hidden_size: 768,
  num_hidden_layers: 12,
  num_attention_heads: 12,
  intermediate_size: 3072,
  hidden_act: 'gelu',
  hidden_dropout_prob: 0.1,
  attention_probs_dropout_prob: 0.1,
  max_position_embeddings: 512,
  type_vocab_size: 2,
  initializer_range: 0.02,
  layer_norm_eps: 1e-12,
  pad_token_id: 0,
  bos_token_id: null, // PretrainedConfig's default; BERT checkpoints do not set it
  eos_token_id: null,
  position_embedding_type: 'absolute',
  tie_word_embeddings: true,
} as const;

// RobertaConfig differs from BertConfig only in its vocabulary and special ids.
const ROBERTA_DEFAULTS = {
  ...BERT_DEFAULTS,
  architectures: ['RobertaForMaskedLM'],
  vocab_size: 50265,
  pad_token_id: 1,
  bos_token_id: 0,
  eos_token_id: 2,
} as const;

const DEFAULTS: Record<ModelFamily, typeof BERT_DEFAULTS | typeof ROBERTA_DEFAULTS> = {
  bert: BERT_DEFAULTS,
  roberta: ROBERTA_DEFAULTS,
};

/** The keys that become typed fields (model_type included). */
const TYPED_KEYS = new Set<string>(['model_type', ...Object.keys(BERT_DEFAULTS)]);

/**
 * Keys transformers accepts that cannot change what an encoder-only masked LM computes in
 * float32: kept and written back unchanged. `torch_dtype` / `dtype` are kept as written: mlmkit
 * computes in float32 whatever they say.
 */
export const HARMLESS_KEYS: ReadonlySet<string> = new Set([
  // bookkeeping
  '_name_or_path', 'transformers_version', '_attn_implementation_autoset', 'torch_dtype', 'dtype',
  'gradient_checkpointing', 'use_cache', 'output_past', 'xla_device', 'use_bfloat16',
  'tf_legacy_loss', 'torchscript', 'return_dict', 'output_hidden_states', 'output_attentions',
  'chunk_size_feed_forward', 'tokenizer_class', 'prefix', 'sep_token_id', 'decoder_start_token_id',
  // task heads mlmkit does not build (classifier_dropout must still be null or a probability)
  'classifier_dropout', 'id2label', 'label2id', 'num_labels', 'finetuning_task', 'problem_type', 'task_specific_params',
  // bert-base-multilingual-* carry these (the original TF BERT's pooler and text settings)
  'directionality', 'pooler_fc_size', 'pooler_num_attention_heads', 'pooler_num_fc_layers',
  'pooler_size_per_head', 'pooler_type',
  // generation settings (PretrainedConfig's common keys; an encoder does not generate)
  'max_length', 'min_length', 'do_sample', 'early_stopping', 'num_beams', 'num_beam_groups',
  'diversity_penalty', 'temperature', 'top_k', 'top_p', 'typical_p', 'repetition_penalty',
  'length_penalty', 'no_repeat_ngram_size', 'encoder_no_repeat_ngram_size', 'bad_words_ids',
  'num_return_sequences', 'output_scores', 'return_dict_in_generate', 'forced_bos_token_id',
  'forced_eos_token_id', 'remove_invalid_values', 'exponential_decay_length_penalty',
  'suppress_tokens', 'begin_suppress_tokens', 'cross_attention_hidden_size',
  // transformers.js's loading settings (which ONNX file, device); `mlm export --format onnx` writes it
  'transformers.js_config',
]);

/** config.json's key for transformers.js's settings (training/export-model.ts writes its dtype). */
export const TRANSFORMERS_JS_CONFIG = 'transformers.js_config';

/**
 * Keys transformers knows whose only value mlmkit can honour is the one given here (also the
 * default). Kept (and written back) when present with that value; refused otherwise.
 */
const FIXED_VALUE_KEYS: Readonly<Record<string, { value: unknown; why: string }>> = {
  is_decoder: { value: false, why: 'mlmkit builds encoder-only masked LMs' },
  add_cross_attention: { value: false, why: 'mlmkit builds encoder-only masked LMs' },
  is_encoder_decoder: { value: false, why: 'mlmkit builds encoder-only masked LMs' },
  tie_encoder_decoder: { value: false, why: 'mlmkit builds encoder-only masked LMs' },
  pruned_heads: { value: {}, why: 'pruned attention heads change weight shapes; use an unpruned checkpoint' },
};

function fail(source: string, message: string): never {
  throw new InputError(`${source}: ${message}`);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function deepEqual(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

function positiveInt(source: string, key: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
    fail(source, `${key} must be a positive integer, got ${JSON.stringify(v)}`);
  }
  return v;
}

function probability(source: string, key: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v >= 1) {
    fail(source, `${key} must be a probability in [0, 1), got ${JSON.stringify(v)}`);
  }
  return v;
}

function positiveNumber(source: string, key: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    fail(source, `${key} must be a positive number, got ${JSON.stringify(v)}`);
  }
  return v;
}

function tokenId(source: string, key: string, v: unknown, vocab: number, nullable: boolean): number | null {
  if (v === null && nullable) return null;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v >= vocab) {
    fail(source, `${key} must be a token id in [0, vocab_size ${vocab}), got ${JSON.stringify(v)}`);
  }
  return v;
}

/**
 * Reads a parsed `config.json` (`json`) whose origin `source` (a path, a Hub id) prefixes every
 * error message. Throws InputError on anything mlmkit cannot honour, naming the key.
 */
export function parseModelConfig(json: unknown, source: string): ModelConfig {
  if (!isPlainObject(json)) fail(source, 'a model config must be a JSON object');
  const modelType = json.model_type;
  if (modelType !== 'bert' && modelType !== 'roberta') {
    fail(
      source,
      modelType === undefined
        ? 'model_type is missing: set it to "bert" or "roberta"'
        : `model_type ${JSON.stringify(modelType)} is not supported by mlmkit; use a bert or roberta checkpoint`,
    );
  }
  const defaults = DEFAULTS[modelType];
  const get = (key: keyof typeof BERT_DEFAULTS): unknown => (Object.hasOwn(json, key) ? json[key] : defaults[key]);

  // Sort every key into acted-on, fixed-value, harmless or unknown.
  const extra: Record<string, unknown> = {};
  for (const key of Object.keys(json).sort()) {
    if (TYPED_KEYS.has(key)) continue;
    // Own keys only: `__proto__` or `constructor` in the JSON must not find Object.prototype's.
    const fixed = Object.hasOwn(FIXED_VALUE_KEYS, key) ? FIXED_VALUE_KEYS[key] : undefined;
    if (fixed !== undefined) {
      if (!deepEqual(json[key], fixed.value)) {
        fail(source, `${key} ${JSON.stringify(json[key])} is not supported by mlmkit: ${fixed.why}`);
      }
      extra[key] = json[key];
    } else if (HARMLESS_KEYS.has(key)) {
      extra[key] = json[key];
    } else {
      fail(source, `unknown key '${key}' in the model config: mlmkit does not know it; remove it or fix its spelling`);
    }
  }

  const architectures = get('architectures');
  if (!Array.isArray(architectures) || architectures.some((a) => typeof a !== 'string')) {
    fail(source, `architectures must be a list of class names, got ${JSON.stringify(architectures)}`);
  }

  const hiddenAct = get('hidden_act');
  if (!(HIDDEN_ACTS as readonly unknown[]).includes(hiddenAct)) {
    fail(source, `hidden_act ${JSON.stringify(hiddenAct)} is not supported by mlmkit; use one of ${HIDDEN_ACTS.join(', ')}`);
  }

  const positionType = get('position_embedding_type');
  if (positionType !== 'absolute') {
    fail(
      source,
      typeof positionType === 'string'
        ? `position_embedding_type ${positionType} is not supported by mlmkit; use a checkpoint with absolute positions`
        : `position_embedding_type must be "absolute", got ${JSON.stringify(positionType)}`,
    );
  }

  const tie = get('tie_word_embeddings');
  if (tie !== true) {
    fail(source, `tie_word_embeddings ${JSON.stringify(tie)} is not supported by mlmkit: its MLM decoder is tied to the word embeddings`);
  }

  const vocab = positiveInt(source, 'vocab_size', get('vocab_size'));
  const hidden = positiveInt(source, 'hidden_size', get('hidden_size'));
  const heads = positiveInt(source, 'num_attention_heads', get('num_attention_heads'));
  if (hidden % heads !== 0) {
    fail(source, `hidden_size ${hidden} is not a multiple of num_attention_heads ${heads}`);
  }
  const maxPositions = positiveInt(source, 'max_position_embeddings', get('max_position_embeddings'));
  const pad = tokenId(source, 'pad_token_id', get('pad_token_id'), vocab, false) as number;
  if (modelType === 'roberta' && pad + 1 >= maxPositions) {
    fail(source, `max_position_embeddings ${maxPositions} leaves no positions: RoBERTa numbers them from pad_token_id + 1 = ${pad + 1}`);
  }
  if (json.classifier_dropout !== undefined && json.classifier_dropout !== null) {
    probability(source, 'classifier_dropout', json.classifier_dropout);
  }

  const config: ModelConfig = {
    model_type: modelType,
    architectures: Object.freeze([...(architectures as string[])]),
    vocab_size: vocab,
    hidden_size: hidden,
    num_hidden_layers: positiveInt(source, 'num_hidden_layers', get('num_hidden_layers')),
    num_attention_heads: heads,
    intermediate_size: positiveInt(source, 'intermediate_size', get('intermediate_size')),
    hidden_act: hiddenAct as HiddenAct,
    hidden_dropout_prob: probability(source, 'hidden_dropout_prob', get('hidden_dropout_prob')),
    attention_probs_dropout_prob: probability(source, 'attention_probs_dropout_prob', get('attention_probs_dropout_prob')),
    max_position_embeddings: maxPositions,
    type_vocab_size: positiveInt(source, 'type_vocab_size', get('type_vocab_size')),
    initializer_range: positiveNumber(source, 'initializer_range', get('initializer_range')),
    layer_norm_eps: positiveNumber(source, 'layer_norm_eps', get('layer_norm_eps')),
    pad_token_id: pad,
    bos_token_id: tokenId(source, 'bos_token_id', get('bos_token_id'), vocab, true),
    eos_token_id: tokenId(source, 'eos_token_id', get('eos_token_id'), vocab, true),
    position_embedding_type: 'absolute',
    tie_word_embeddings: true,
    extra: Object.freeze(structuredClone(extra)),
  };
  return Object.freeze(config);
}

/**
 * The number of parameters of the model `cfg` describes, computed from the sizes without building
 * the table of training/models/weights.ts (which a config of 100,000 layers would make huge):
 * embeddings (V + P + types) x H + LayerNorm; per layer Q, K, V, output (4 H^2 + 4 H), two
 * LayerNorms (4 H), the feed-forward (2 H I + I + H); the MLM head's dense + LayerNorm + bias
 * (H^2 + 3 H + V; the decoder is tied to the word embeddings).
 */
export function parameterCount(cfg: Pick<ModelConfig, 'vocab_size' | 'hidden_size' | 'num_hidden_layers' | 'intermediate_size' | 'max_position_embeddings' | 'type_vocab_size'>): number {
  const { vocab_size: V, hidden_size: H, num_hidden_layers: L, intermediate_size: I } = cfg;
  const embeddings = (V + cfg.max_position_embeddings + cfg.type_vocab_size) * H + 2 * H;
  const layer = 4 * H * H + 4 * H + 4 * H + 2 * H * I + I + H;
  return embeddings + L * layer + H * H + 3 * H + V;
}

/**
 * The config as a `config.json` object: every typed field (but the ones equal to transformers'
 * common defaults, see below) plus the kept harmless keys, unchanged.
 * Keys are sorted (transformers' `to_json_string` uses sort_keys=True).
 */
export function modelConfigToJson(cfg: ModelConfig): Record<string, unknown> {
  const out: Record<string, unknown> = { ...structuredClone(cfg.extra) };
  for (const key of TYPED_KEYS) {
    const value = (cfg as unknown as Record<string, unknown>)[key];
    // Left out where transformers' save_pretrained leaves them out: equal to PretrainedConfig's
    // defaults (tie_word_embeddings true, special ids null).
    if (key === 'tie_word_embeddings' || value === null) continue;
    out[key] = Array.isArray(value) ? [...value] : value;
  }
  const sorted: Record<string, unknown> = {};
  for (const key of Object.keys(out).sort()) sorted[key] = out[key];
  return sorted;
}

/**
 * A new config with `changes` applied (e.g. vocab_size and special ids taken from a tokenizer),
 * validated like a file read from `source`. The original is left untouched.
 */
export function updateModelConfig(cfg: ModelConfig, changes: Record<string, unknown>, source: string): ModelConfig {
  return parseModelConfig({ ...modelConfigToJson(cfg), ...changes }, source);
}

/** The transformers class that `save_pretrained` names in `architectures` for this family. */
export function maskedLmArchitecture(family: ModelFamily): string {
  return family === 'bert' ? 'BertForMaskedLM' : 'RobertaForMaskedLM';
}

