// ONNX export of a BERT or RoBERTa masked LM: the forward pass of training/models/bert.ts and
// roberta.ts written as an ONNX graph (opset 17, default domain only) and serialised to protobuf
// bytes by a small encoder here (no protobuf library: the ONNX messages used are few and flat).
//
// Graph: inputs `input_ids`, `attention_mask` (int64 [batch, sequence]) and, for BERT,
// `token_type_ids`; output `logits` (float32 [batch, sequence, vocab]). Batch and sequence are
// symbolic dimensions. Position ids are 0..T-1 for BERT; for RoBERTa they are computed from
// input_ids as transformers' create_position_ids_from_input_ids does: pad_token_id + the running
// count of non-pad tokens at real tokens, pad_token_id at padding. Padded keys get a large
// negative score before the softmax (the same bias as the TF.js model, MASKED_SCORE).
// Weights come in mlmkit's layout (Linear weights [in, out]), which is MatMul's; the decoder is
// tied to the word embeddings through a Transpose node on the one stored copy.
//
// Field numbers follow onnx/onnx.proto (ModelProto, GraphProto, NodeProto, AttributeProto,
// TensorProto, ValueInfoProto, TypeProto, TensorShapeProto, OperatorSetIdProto).
import { InputError } from '../common/errors.ts';
import type { ModelConfig } from './models/config.ts';
import type { ModelWeights } from './models/weights.ts';

/** The opset written: LayerNormalization needs 17. */
export const ONNX_OPSET = 17;
/** IR version 8 goes with opset 17. */
const IR_VERSION = 8;
/** Score of padded keys before the softmax (training/models/bert.ts MASKED_SCORE). */
const MASKED_SCORE = -1e9;

/** Protobuf messages are limited to 2 GiB; this leaves room for the graph around the weights. */
const MAX_ONNX_BYTES = 2 ** 31 - 64 * 2 ** 20;

const FAMILIES = ['bert', 'roberta'] as const;
const ACTIVATIONS = ['gelu', 'gelu_new', 'gelu_pytorch_tanh', 'relu'] as const;

// -------------------------------------------------------------------------------------------------
// Protobuf wire format: varints (type 0), 32-bit (type 5) and length-delimited fields (type 2).

class Writer {
  private chunks: Uint8Array[] = [];
  private size = 0;

  private push(bytes: Uint8Array): void {
    this.chunks.push(bytes);
    this.size += bytes.length;
  }

  private varint(value: number | bigint): void {
    let v = BigInt.asUintN(64, BigInt(value));
    const out: number[] = [];
    while (v >= 0x80n) {
      out.push(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    out.push(Number(v));
    this.push(Uint8Array.from(out));
  }

  private tag(field: number, wire: number): void {
    this.varint((field << 3) | wire);
  }

  int(field: number, value: number | bigint): this {
    this.tag(field, 0);
    this.varint(value);
    return this;
  }

  float(field: number, value: number): this {
    this.tag(field, 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, value, true);
    this.push(b);
    return this;
  }

  bytes(field: number, value: Uint8Array): this {
    this.tag(field, 2);
    this.varint(value.length);
    this.push(value);
    return this;
  }

  string(field: number, value: string): this {
    return this.bytes(field, new TextEncoder().encode(value));
  }

  message(field: number, w: Writer): this {
    return this.bytes(field, w.finish());
  }

  finish(): Uint8Array {
    const out = new Uint8Array(this.size);
    let at = 0;
    for (const c of this.chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
}

// TensorProto.DataType
const FLOAT = 1;
const INT64 = 7;

type Attr = { name: string } & ({ i: number } | { f: number } | { ints: number[] });

interface Node {
  op: string;
  inputs: string[];
  outputs: string[];
  attrs?: Attr[];
}

function attributeProto(a: Attr): Writer {
  const w = new Writer().string(1, a.name);
  if ('i' in a) return w.int(3, a.i).int(20, 2);
  if ('f' in a) return w.float(2, a.f).int(20, 1);
  for (const v of a.ints) w.int(8, v);
  return w.int(20, 7);
}

function nodeProto(n: Node, index: number): Writer {
  const w = new Writer();
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  w.string(3, `${n.op}_${index}`).string(4, n.op);
  for (const a of n.attrs ?? []) w.message(5, attributeProto(a));
  return w;
}

function tensorProto(name: string, dims: readonly number[], type: number, raw: Uint8Array): Writer {
  const w = new Writer();
  for (const d of dims) w.int(1, d);
  return w.int(2, type).string(8, name).bytes(9, raw);
}

/** A graph input or output: element type and dims, a string dim being symbolic. */
function valueInfo(name: string, type: number, dims: (number | string)[]): Writer {
  const shape = new Writer();
  for (const d of dims) shape.message(1, typeof d === 'number' ? new Writer().int(1, d) : new Writer().string(2, d));
  const tensorType = new Writer().int(1, type).message(2, shape);
  return new Writer().string(1, name).message(2, new Writer().message(1, tensorType));
}

/** Little-endian bytes of a float32 array (ONNX raw_data is little-endian). */
function floatBytes(data: Float32Array): Uint8Array {
  const out = new Uint8Array(data.length * 4);
  const view = new DataView(out.buffer);
  for (let i = 0; i < data.length; i++) view.setFloat32(i * 4, data[i], true);
  return out;
}

function int64Bytes(values: readonly number[]): Uint8Array {
  const out = new Uint8Array(values.length * 8);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => view.setBigInt64(i * 8, BigInt(v), true));
  return out;
}

// -------------------------------------------------------------------------------------------------
// The graph

/** Refuses (InputError) a model the writer cannot express, before anything is written. */
export function checkOnnxSupport(config: ModelConfig): void {
  const family = config.model_type as string;
  if (!(FAMILIES as readonly string[]).includes(family)) {
    throw new InputError(`ONNX export supports model_type ${FAMILIES.join(' and ')}, not ${JSON.stringify(family)}; export it with --format hf or tfjs`);
  }
  const act = config.hidden_act as string;
  if (!(ACTIVATIONS as readonly string[]).includes(act)) {
    throw new InputError(`ONNX export supports hidden_act ${ACTIVATIONS.join(', ')}, not ${JSON.stringify(act)}; export it with --format hf or tfjs`);
  }
}

/** The ONNX model (protobuf bytes) computing the masked LM's logits with `weights` (mlmkit layout). */
export function onnxModelBytes(config: ModelConfig, weights: ModelWeights, producerVersion = ''): Uint8Array {
  checkOnnxSupport(config);
  let weightBytes = 0;
  for (const t of weights.tensors.values()) weightBytes += t.data.byteLength;
  if (weightBytes > MAX_ONNX_BYTES) {
    throw new InputError(`the model's ${(weightBytes / 2 ** 30).toFixed(2)} GiB of weights exceed the 2 GiB a single ONNX file can hold (protobuf's limit); export it with --format hf or tfjs`);
  }
  const family = config.model_type;
  const H = config.hidden_size;
  const nh = config.num_attention_heads;
  const hs = H / nh;
  const eps = config.layer_norm_eps;

  const nodes: Node[] = [];
  const initializers: Writer[] = [];
  const used = new Set<string>();
  let counter = 0;
  const fresh = (hint: string): string => `${hint}_${counter++}`;
  const op = (type: string, inputs: string[], attrs?: Attr[], hint = type.toLowerCase()): string => {
    const out = fresh(hint);
    nodes.push({ op: type, inputs, outputs: [out], attrs });
    return out;
  };
  const weight = (name: string): string => {
    if (!used.has(name)) {
      const t = weights.tensors.get(name);
      if (!t) throw new Error(`onnxModelBytes: the weights lack ${name}`);
      initializers.push(tensorProto(name, t.shape, FLOAT, floatBytes(t.data as Float32Array)));
      used.add(name);
    }
    return name;
  };
  const constFloat = (value: number): string => {
    const name = fresh('const_f');
    initializers.push(tensorProto(name, [], FLOAT, floatBytes(Float32Array.of(value))));
    return name;
  };
  const constInts = (values: number[], dims: number[] = [values.length]): string => {
    const name = fresh('const_i');
    initializers.push(tensorProto(name, dims, INT64, int64Bytes(values)));
    return name;
  };

  const linear = (x: string, prefix: string): string => op('Add', [op('MatMul', [x, weight(`${prefix}.weight`)]), weight(`${prefix}.bias`)]);
  const layerNorm = (x: string, prefix: string): string =>
    op('LayerNormalization', [x, weight(`${prefix}.weight`), weight(`${prefix}.bias`)], [{ name: 'axis', i: -1 }, { name: 'epsilon', f: eps }]);
  const half = constFloat(0.5);
  const one = constFloat(1);
  const activation = (x: string, act: string): string => {
    switch (act) {
      case 'gelu': // 0.5 x (1 + erf(x / sqrt 2))
        return op('Mul', [op('Mul', [x, half]), op('Add', [op('Erf', [op('Mul', [x, constFloat(Math.SQRT1_2)])]), one])]);
      case 'gelu_new':
      case 'gelu_pytorch_tanh': { // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        const cube = op('Mul', [op('Mul', [x, x]), x]);
        const inner = op('Mul', [op('Add', [x, op('Mul', [cube, constFloat(0.044715)])]), constFloat(Math.sqrt(2 / Math.PI))]);
        return op('Mul', [op('Mul', [x, half]), op('Add', [op('Tanh', [inner]), one])]);
      }
      case 'relu':
        return op('Relu', [x]);
      default:
        throw new InputError(`ONNX export does not support the activation ${JSON.stringify(act)}`);
    }
  };

  // Embeddings: word + position + token type, then LayerNorm.
  const base = family;
  const words = op('Gather', [weight(`${base}.embeddings.word_embeddings.weight`), 'input_ids'], [{ name: 'axis', i: 0 }]);
  let positionIds: string;
  if (family === 'roberta') {
    const pad = constInts([config.pad_token_id], []);
    const real = op('Cast', [op('Not', [op('Equal', ['input_ids', pad])])], [{ name: 'to', i: INT64 }]);
    const counts = op('CumSum', [real, constInts([1], [])]);
    positionIds = op('Add', [op('Mul', [counts, real]), pad]); // [B, T]
  } else {
    const seqLen = op('Gather', [op('Shape', ['input_ids']), constInts([1], [])], [{ name: 'axis', i: 0 }]);
    positionIds = op('Range', [constInts([0], []), seqLen, constInts([1], [])]); // [T]
  }
  const positions = op('Gather', [weight(`${base}.embeddings.position_embeddings.weight`), positionIds], [{ name: 'axis', i: 0 }]);
  const types = family === 'bert'
    ? op('Gather', [weight(`${base}.embeddings.token_type_embeddings.weight`), 'token_type_ids'], [{ name: 'axis', i: 0 }])
    : op('Gather', [weight(`${base}.embeddings.token_type_embeddings.weight`), constInts([0], [])], [{ name: 'axis', i: 0 }]); // type 0: [H]
  let x = layerNorm(op('Add', [op('Add', [words, positions]), types]), `${base}.embeddings.LayerNorm`);

  // Attention bias [B, 1, 1, T]: 0 at real keys, MASKED_SCORE at padding.
  const maskF = op('Cast', ['attention_mask'], [{ name: 'to', i: FLOAT }]);
  const maskBias = op('Unsqueeze', [op('Mul', [op('Sub', [one, maskF]), constFloat(MASKED_SCORE)]), constInts([1, 2])]);

  const headsShape = constInts([0, 0, nh, hs]);
  const mergedShape = constInts([0, 0, H]);
  const scale = constFloat(1 / Math.sqrt(hs));
  for (let layer = 0; layer < config.num_hidden_layers; layer++) {
    const p = `${base}.encoder.layer.${layer}`;
    const split = (t: string, perm: number[]): string => op('Transpose', [op('Reshape', [t, headsShape])], [{ name: 'perm', ints: perm }]);
    const q = split(op('Mul', [linear(x, `${p}.attention.self.query`), scale]), [0, 2, 1, 3]); // [B, nh, T, hs]
    const kT = split(linear(x, `${p}.attention.self.key`), [0, 2, 3, 1]); // [B, nh, hs, T]
    const v = split(linear(x, `${p}.attention.self.value`), [0, 2, 1, 3]);
    const probs = op('Softmax', [op('Add', [op('MatMul', [q, kT]), maskBias])], [{ name: 'axis', i: -1 }]);
    const context = op('Reshape', [op('Transpose', [op('MatMul', [probs, v])], [{ name: 'perm', ints: [0, 2, 1, 3] }]), mergedShape]);
    const h = layerNorm(op('Add', [linear(context, `${p}.attention.output.dense`), x]), `${p}.attention.output.LayerNorm`);
    const inner = activation(linear(h, `${p}.intermediate.dense`), config.hidden_act);
    x = layerNorm(op('Add', [linear(inner, `${p}.output.dense`), h]), `${p}.output.LayerNorm`);
  }

  // MLM head: dense, activation (RoBERTa's is always the erf GELU), LayerNorm, tied decoder + bias.
  const head = family === 'bert'
    ? { dense: 'cls.predictions.transform.dense', norm: 'cls.predictions.transform.LayerNorm', bias: 'cls.predictions.bias', act: config.hidden_act as string }
    : { dense: 'lm_head.dense', norm: 'lm_head.layer_norm', bias: 'lm_head.bias', act: 'gelu' };
  const transformed = layerNorm(activation(linear(x, head.dense), head.act), head.norm);
  const decoder = op('Transpose', [weight(`${base}.embeddings.word_embeddings.weight`)], [{ name: 'perm', ints: [1, 0] }]); // [H, V]
  const last = op('Add', [op('MatMul', [transformed, decoder]), weight(head.bias)]);
  nodes.push({ op: 'Identity', inputs: [last], outputs: ['logits'] });

  const graph = new Writer();
  nodes.forEach((n, i) => graph.message(1, nodeProto(n, i)));
  graph.string(2, `${family}_for_masked_lm`);
  for (const t of initializers) graph.message(5, t);
  const inputNames = family === 'bert' ? ['input_ids', 'attention_mask', 'token_type_ids'] : ['input_ids', 'attention_mask'];
  for (const name of inputNames) graph.message(11, valueInfo(name, INT64, ['batch_size', 'sequence_length']));
  graph.message(12, valueInfo('logits', FLOAT, ['batch_size', 'sequence_length', config.vocab_size]));

  return new Writer()
    .int(1, IR_VERSION)
    .string(2, 'mlmkit')
    .string(3, producerVersion)
    .message(7, graph)
    .message(8, new Writer().string(1, '').int(2, ONNX_OPSET))
    .finish();
}
