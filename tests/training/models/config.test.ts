// Tests for training/models/config.ts: the shipped configs parse with the sizes they promise,
// configs round-trip with their harmless keys, defaults follow transformers' classes, and every
// value mlmkit cannot honour is refused with the key named.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { InputError } from '../../../common/errors.ts';
import { modelConfigToJson, parameterCount, parseModelConfig, updateModelConfig, type ModelConfig } from '../../../training/models/config.ts';
import { parameterTable } from '../../../training/models/weights.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

function load(name: string): { json: Record<string, unknown>; config: ModelConfig } {
  const file = path.join(ROOT, 'configs', `${name}.json`);
  const json = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  return { json, config: parseModelConfig(json, file) };
}

function refuses(json: unknown, pattern: RegExp): void {
  assert.throws(() => parseModelConfig(json, 'x/config.json'), (err: unknown) => {
    assert.ok(err instanceof InputError, `expected InputError, got ${String(err)}`);
    assert.match(err.message, pattern);
    assert.ok(err.message.startsWith('x/config.json: '), err.message);
    assert.ok(!err.message.includes('\n'), 'one line');
    return true;
  });
}

const tinyBert = { model_type: 'bert', vocab_size: 99, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 37 };

test('the shipped configs have the promised sizes', () => {
  const expect: Record<string, [number, number, number, number, number]> = {
    // layers, hidden, heads, intermediate, vocab
    'bert-tiny': [2, 128, 2, 512, 30522],
    'bert-mini': [4, 256, 4, 1024, 30522],
    'bert-small': [4, 512, 8, 2048, 30522],
    'bert-medium': [8, 512, 8, 2048, 30522],
    'bert-base': [12, 768, 12, 3072, 30522],
    'roberta-base': [12, 768, 12, 3072, 50265],
    'distilroberta-base': [6, 768, 12, 3072, 50265],
  };
  for (const [name, [L, H, A, I, V]] of Object.entries(expect)) {
    const { config: c } = load(name);
    assert.deepEqual([c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size, c.vocab_size], [L, H, A, I, V], name);
    assert.equal(c.hidden_act, 'gelu', name);
    assert.equal(c.hidden_dropout_prob, 0.1, name);
    assert.equal(c.initializer_range, 0.02, name);
    if (c.model_type === 'bert') {
      assert.deepEqual(
        [c.max_position_embeddings, c.type_vocab_size, c.layer_norm_eps, c.pad_token_id, c.architectures],
        [512, 2, 1e-12, 0, ['BertForMaskedLM']],
        name,
      );
    } else {
      assert.deepEqual(
        [c.max_position_embeddings, c.type_vocab_size, c.layer_norm_eps, c.pad_token_id, c.bos_token_id, c.eos_token_id, c.architectures],
        [514, 1, 1e-5, 1, 0, 2, ['RobertaForMaskedLM']],
        name,
      );
    }
  }
});

test('a shipped config round-trips to the same JSON (sorted keys)', () => {
  for (const name of ['bert-base', 'roberta-base']) {
    const { json, config } = load(name);
    const back = modelConfigToJson(config);
    assert.deepEqual(back, json, name);
    assert.deepEqual(Object.keys(back), Object.keys(back).slice().sort());
    assert.deepEqual(parseModelConfig(back, 'again'), config);
  }
});

test('harmless transformers keys are kept and written back unchanged', () => {
  const harmless = {
    _name_or_path: 'bert-base-uncased',
    transformers_version: '4.46.0',
    gradient_checkpointing: false,
    id2label: { 0: 'LABEL_0' },
    label2id: { LABEL_0: 0 },
    output_past: true,
    chunk_size_feed_forward: 0,
    use_cache: true,
    torch_dtype: 'float32',
    classifier_dropout: null,
    is_decoder: false,
    add_cross_attention: false,
    pruned_heads: {},
    directionality: 'bidi',
    pooler_type: 'first_token_transform',
  };
  const config = parseModelConfig({ ...tinyBert, ...harmless }, 'x');
  const back = modelConfigToJson(config);
  for (const [key, value] of Object.entries(harmless)) assert.deepEqual(back[key], value, key);
  assert.ok(Object.isFrozen(config) && Object.isFrozen(config.extra));
});

test('missing keys take the transformers class defaults', () => {
  const bert = parseModelConfig({ model_type: 'bert' }, 'x');
  assert.deepEqual(
    [bert.vocab_size, bert.hidden_size, bert.num_hidden_layers, bert.hidden_act, bert.layer_norm_eps, bert.pad_token_id, bert.bos_token_id],
    [30522, 768, 12, 'gelu', 1e-12, 0, null],
  );
  const roberta = parseModelConfig({ model_type: 'roberta' }, 'x');
  assert.deepEqual([roberta.vocab_size, roberta.pad_token_id, roberta.bos_token_id, roberta.eos_token_id], [50265, 1, 0, 2]);
  assert.equal(roberta.position_embedding_type, 'absolute');
  assert.equal('bos_token_id' in modelConfigToJson(bert), false, 'null special ids are left out');
});

test('values mlmkit cannot honour are refused with the key named', () => {
  refuses({ ...tinyBert, position_embedding_type: 'relative_key' }, /position_embedding_type relative_key is not supported by mlmkit; use a checkpoint with absolute positions$/);
  refuses({ ...tinyBert, position_embedding_type: 'relative_key_query' }, /position_embedding_type relative_key_query is not supported/);
  refuses({ ...tinyBert, hidden_act: 'silu' }, /hidden_act "silu" is not supported by mlmkit; use one of gelu, gelu_new, gelu_pytorch_tanh, relu/);
  refuses({ ...tinyBert, tie_word_embeddings: false }, /tie_word_embeddings false is not supported/);
  refuses({ ...tinyBert, is_decoder: true }, /is_decoder true is not supported/);
  refuses({ ...tinyBert, add_cross_attention: true }, /add_cross_attention true is not supported/);
  refuses({ ...tinyBert, pruned_heads: { 0: [1] } }, /pruned_heads .* is not supported/);
  refuses({ ...tinyBert, model_type: 'distilbert' }, /model_type "distilbert" is not supported by mlmkit/);
  refuses({ vocab_size: 10 }, /model_type is missing/);
  refuses([1, 2], /must be a JSON object/);
});

test('unknown keys are refused with the key named', () => {
  refuses({ ...tinyBert, hiden_size: 32 }, /unknown key 'hiden_size'/);
  refuses({ ...tinyBert, rope_theta: 10000 }, /unknown key 'rope_theta'/);
});

test('sizes and probabilities are validated', () => {
  refuses({ ...tinyBert, hidden_size: 30 }, /hidden_size 30 is not a multiple of num_attention_heads 4/);
  refuses({ ...tinyBert, num_hidden_layers: 0 }, /num_hidden_layers must be a positive integer, got 0/);
  refuses({ ...tinyBert, intermediate_size: 37.5 }, /intermediate_size must be a positive integer/);
  refuses({ ...tinyBert, vocab_size: '99' }, /vocab_size must be a positive integer, got "99"/);
  refuses({ ...tinyBert, hidden_dropout_prob: 1 }, /hidden_dropout_prob must be a probability in \[0, 1\), got 1/);
  refuses({ ...tinyBert, attention_probs_dropout_prob: -0.1 }, /attention_probs_dropout_prob must be a probability/);
  refuses({ ...tinyBert, classifier_dropout: 2 }, /classifier_dropout must be a probability/);
  refuses({ ...tinyBert, layer_norm_eps: 0 }, /layer_norm_eps must be a positive number/);
  refuses({ ...tinyBert, pad_token_id: 99 }, /pad_token_id must be a token id in \[0, vocab_size 99\), got 99/);
  refuses({ ...tinyBert, eos_token_id: -1 }, /eos_token_id must be a token id/);
  refuses({ ...tinyBert, architectures: 'BertForMaskedLM' }, /architectures must be a list of class names/);
  refuses({ ...tinyBert, model_type: 'roberta', max_position_embeddings: 2 }, /max_position_embeddings 2 leaves no positions/);
});

test('updateModelConfig makes a new validated config and leaves the old one alone', () => {
  const { config } = load('bert-mini');
  const updated = updateModelConfig(config, { vocab_size: 8000, pad_token_id: 3 }, 'tokenizer');
  assert.equal(updated.vocab_size, 8000);
  assert.equal(updated.pad_token_id, 3);
  assert.equal(config.vocab_size, 30522);
  assert.throws(() => updateModelConfig(config, { vocab_size: 2, pad_token_id: 3 }, 'tokenizer'), /tokenizer: pad_token_id must be a token id/);
});

test('parameterCount (from the sizes) equals the sum over the weight table, for every shipped config', () => {
  for (const name of ['bert-tiny', 'bert-mini', 'bert-base', 'roberta-base', 'distilroberta-base']) {
    const file = path.join(ROOT, 'configs', `${name}.json`);
    const config = parseModelConfig(JSON.parse(readFileSync(file, 'utf8')), file);
    const fromTable = parameterTable(config).reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
    assert.equal(parameterCount(config), fromTable, name);
  }
});

test('own keys only: __proto__ and constructor in a config are unknown keys, not Object.prototype lookups', () => {
  for (const key of ['__proto__', 'constructor']) {
    const json = JSON.parse(`{"model_type": "bert", "${key}": {"hidden_size": 64}}`);
    assert.throws(() => parseModelConfig(json, 'c.json'), (err: unknown) => err instanceof InputError &&
      err.message === `c.json: unknown key '${key}' in the model config: mlmkit does not know it; remove it or fix its spelling`);
  }
});
