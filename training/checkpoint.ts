// Hugging Face model folders in and out (docs/formats.md, "Checkpoints"): what `save_pretrained` writes and
// `AutoModelForMaskedLM.from_pretrained(DIR)` / `AutoTokenizer.from_pretrained(DIR)` read:
// config.json, model.safetensors (or model.safetensors.index.json + shards) and the tokenizer files.
//
// Reading: config.json goes through `parseModelConfig` (strict, errors name the key); each tensor
// is read once from disk straight into its Float32Array (`openSafetensors` reads only the header
// up front), then `importWeights` checks names and shapes and turns Linear weights to mlmkit's
// [in, out] layout. A 440 MB checkpoint is never held twice as raw bytes. Weights holding NaN or
// an infinity are refused with the tensor named (`refuseNonFinite`), and every file is checked to
// be a regular file before it is opened (a FIFO would block the open).
//
// Writing: everything goes into a temporary sibling folder `.NAME.ckpt-tmp-PID`, every file and the
// folder are fsync'd, then the folder is renamed onto `dir`. An existing `dir` is moved aside
// (`.NAME.ckpt-old-PID`) only once the new folder is complete, the new one is renamed in, and the
// old one removed. A crash leaves either the old folder, or the new one, or (between the two
// renames) the old folder under its aside name next to the complete new one: never a half-written
// folder under `dir`.
//
// config.json is written as transformers' `save_pretrained` writes it: `json.dumps(indent=2,
// sort_keys=True)` plus a newline, `architectures` naming the ForMaskedLM class, and
// `torch_dtype: "float32"` (the dtype of the written tensors; versions before 4.56 read only this
// key, later ones read it too). Porting note: `transformers_version` is not stamped: mlmkit did not
// run transformers, so a value read from the source checkpoint is kept as it was and none is added.
// A `dtype` key (transformers >= 4.56) that came with the source is set to "float32" as well.
//
// Vocabulary sizes: a tokenizer with more ids than the model's `vocab_size` is refused (those ids
// would index past the embedding matrix). A smaller tokenizer is accepted: checkpoints often pad
// the embedding matrix to a round number (a multiple of 8 or 64) and transformers loads them; the
// extra rows are simply never produced by the tokenizer (fill-mask never proposes them).
//
// References: transformers `modeling_utils.py` (save_pretrained, from_pretrained's file lookup and
// its messages for pickle / TF / Flax weights), `configuration_utils.py` (to_json_string).
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import type { Variable } from '@tensorflow/tfjs';
import { writeFolderAtomic } from '../common/atomic.ts';
import { InputError, requireRegularFile } from '../common/errors.ts';
import { MlmTokenizer } from '../data/tokenizer.ts';
import { maskedLmArchitecture, modelConfigToJson, parseModelConfig, type ModelConfig } from './models/config.ts';
import { exportWeights, importWeights, isIgnoredOnLoad, parameterTable, type ModelWeights, type NamedArray } from './models/weights.ts';
import { openSafetensors, readShardedIndex, saveSafetensors, SAFETENSORS_INDEX, type TensorReader } from './safetensors.ts';

export const CONFIG_FILE = 'config.json';
export const WEIGHTS_FILE = 'model.safetensors';
export { SAFETENSORS_INDEX };
import { maxSequenceLength } from './models/roberta.ts';
export { maxSequenceLength };
export { tempSibling, writeFolderAtomic } from '../common/atomic.ts';

/** Files of the tokenizer that a model folder may hold (what `tokenizer.save` writes, and the old layouts). */
export const TOKENIZER_FILES: readonly string[] = [
  'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.txt', 'vocab.json', 'merges.txt',
];

export interface ModelFolder {
  /** The folder read (for a Hub model: its snapshot folder in the cache). */
  dir: string;
  config: ModelConfig;
  /** mlmkit layout, from importWeights: pass as `createMaskedLM(tf, config, { weights })`. */
  weights: ModelWeights;
  tokenizer: MlmTokenizer;
  /** What the user named: the folder, or the Hub id. */
  source: string;
  /** The Hub commit the folder holds; null or absent for a local folder. */
  revision?: string | null;
}

export interface LoadModelFolderOptions {
  /** Shown in messages and kept as `source` (default: `dir`). */
  source?: string;
  revision?: string | null;
}

/** The command that turns other weight formats into safetensors, for the messages below. */
function convertHint(dir: string, fromFlag: string): string {
  const args = fromFlag ? `${JSON.stringify(dir)}, ${fromFlag}` : JSON.stringify(dir);
  return `Convert it in Python: \`AutoModelForMaskedLM.from_pretrained(${args}).save_pretrained(${JSON.stringify(dir)}, safe_serialization=True)\``;
}

/** The InputError for a folder whose weights are only in a format mlmkit does not read, or null. */
export function unreadableWeightsError(where: string, files: ReadonlySet<string>, dirForHint = where): InputError | null {
  if (files.has('pytorch_model.bin') || files.has('pytorch_model.bin.index.json')) {
    const name = files.has('pytorch_model.bin') ? 'pytorch_model.bin' : 'pytorch_model.bin.index.json (sharded pickles)';
    return new InputError(
      `${where} holds only ${name}; mlmkit reads safetensors only, because loading a pickle can run arbitrary code. ${convertHint(dirForHint, '')}`,
    );
  }
  if (files.has('tf_model.h5')) {
    return new InputError(`${where} holds only tf_model.h5 (TensorFlow/Keras weights); mlmkit reads safetensors only. ${convertHint(dirForHint, 'from_tf=True')}`);
  }
  if (files.has('flax_model.msgpack')) {
    return new InputError(`${where} holds only flax_model.msgpack (Flax weights); mlmkit reads safetensors only. ${convertHint(dirForHint, 'from_flax=True')}`);
  }
  if (files.has('model.json') && [...files].some((f) => /^group\d+-shard\d+of\d+\.bin$/.test(f))) {
    return new InputError(`${where} is a tfjs export (model.json and weight shards), made for the browser: open it with mlm serve --model ${dirForHint}, or give the model folder it was exported from`);
  }
  return null;
}

/**
 * Reads and parses the config file `file`: the one reader of model configs (a --config file, a
 * model folder's config.json; here, not in training/models/, which the browser entry shares and
 * which imports no Node.js module). A missing file is an InputError with `whenMissing` (what to give
 * instead); an unreadable file or invalid JSON names the file; the content goes through
 * `parseModelConfig`.
 */
export function readModelConfigFile(file: string, whenMissing: string, what = 'model config'): ModelConfig {
  requireRegularFile(file, what);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') throw new InputError(whenMissing);
    throw new InputError(`cannot read ${file} (${e.code ?? e.message.split('\n')[0]}); check its permissions`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new InputError(`${file} is not valid JSON (${(err as Error).message.split('\n')[0]}); fix it or restore it from its source`);
  }
  return parseModelConfig(json, file);
}

/** Reads a --config file given on the command line (see `readModelConfigFile`). */
export function readConfigArgument(file: string): ModelConfig {
  return readModelConfigFile(file, `--config ${file} not found; give a model config.json (see configs/)`, '--config file');
}

/** Parses `dir`/config.json (InputError for a missing file or invalid JSON). */
export async function readConfigFile(dir: string, source = dir): Promise<ModelConfig> {
  return readModelConfigFile(
    path.join(dir, CONFIG_FILE),
    `${source} has no config.json; a model folder holds config.json, model.safetensors and the tokenizer files (what save_pretrained writes)`,
  );
}

/** Opens the folder's safetensors weights: model.safetensors, else the sharded index. */
function openWeights(dir: string, source: string): TensorReader {
  const file = path.join(dir, WEIGHTS_FILE);
  if (fs.existsSync(file)) return openSafetensors(file);
  if (fs.existsSync(path.join(dir, SAFETENSORS_INDEX))) return readShardedIndex(dir);
  const present = new Set(fs.readdirSync(dir));
  const other = unreadableWeightsError(source, present, dir);
  if (other) throw other;
  throw new InputError(`${source} has no model.safetensors (nor ${SAFETENSORS_INDEX}); a model folder holds the weights in safetensors form`);
}

/** Every tensor of the reader as float32 (integer buffers such as position_ids converted). */
function readAll(reader: TensorReader, config: ModelConfig, source: string): Map<string, NamedArray> {
  const out = new Map<string, NamedArray>();
  for (const name of reader.keys()) {
    const info = reader.info(name);
    const isFloat = info.dtype === 'F32' || info.dtype === 'F16' || info.dtype === 'BF16' || info.dtype === 'F64';
    if (!isFloat) {
      // Only the integer buffers that older transformers saved (position_ids, token_type_ids),
      // which the model ignores; anything else is handed on so importWeights names it.
      if (isIgnoredOnLoad(config.model_type, name) || isIgnoredOnLoad(config.model_type, `${config.model_type}.${name}`)) continue;
      out.set(name, { shape: info.shape, data: Float32Array.from(reader.readInt32(name)) });
      continue;
    }
    const data = reader.readFloat32(name);
    refuseNonFinite(data, name, source);
    out.set(name, { shape: info.shape, data });
  }
  return out;
}

/**
 * InputError naming the tensor when `data` holds NaN or an infinity. Such weights come from a
 * diverged run or a damaged file; loading them would make every score NaN (fill-mask would rank
 * tokens by NaN) and `export --overwrite` would replace a good export with them. There is no
 * escape hatch: no use of mlmkit needs a model with non-finite weights.
 */
export function refuseNonFinite(data: Float32Array, name: string, source: string): void {
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if (v - v !== 0) { // false only for finite v; a single comparison in the hot loop
      const count = data.reduce((n, x) => n + (x - x !== 0 ? 1 : 0), 0);
      throw new InputError(
        `${source}: tensor ${name} holds ${count} non-finite value${count === 1 ? '' : 's'} (${v} at index ${i}); the checkpoint is broken (a diverged run?): use an earlier checkpoint or re-export it`,
      );
    }
  }
}


/** InputError unless the tokenizer's ids all index rows of the model's embedding matrix. */
export function checkTokenizerFitsModel(tokenizer: MlmTokenizer, config: ModelConfig, source: string): void {
  if (tokenizer.vocabSize > config.vocab_size) {
    throw new InputError(
      `${source}: the tokenizer has ${tokenizer.vocabSize} ids but the model's vocab_size is ${config.vocab_size}: ` +
        'ids past the embedding matrix cannot be looked up; use the tokenizer the model was trained with',
    );
  }
}

/**
 * Loads a Hugging Face model folder: config.json (parseModelConfig), model.safetensors or a
 * sharded model.safetensors.index.json, and the tokenizer files. Every problem is an InputError
 * on one line naming the file and what to do.
 */
export async function loadModelFolder(dir: string, opts: LoadModelFolderOptions = {}): Promise<ModelFolder> {
  const source = opts.source ?? dir;
  let stat: fs.Stats;
  try {
    stat = await fsp.stat(dir);
  } catch {
    throw new InputError(`model folder ${dir} not found; give a folder holding config.json and model.safetensors, or a Hugging Face Hub id`);
  }
  if (!stat.isDirectory()) {
    throw new InputError(`${dir} is a file, not a model folder; give the folder that holds config.json and model.safetensors`);
  }
  const config = await readConfigFile(dir, source);
  const reader = openWeights(dir, source);
  let weights: ModelWeights;
  try {
    const tensors = readAll(reader, config, source);
    weights = importWeights(config, tensors, source);
  } finally {
    reader.close();
  }
  const tokenizer = await MlmTokenizer.load(dir);
  checkTokenizerFitsModel(tokenizer, config, source);
  return { dir, config, weights, tokenizer, source, revision: opts.revision ?? null };
}

// ---------------------------------------------------------------------------------------------
// Writing

export interface ModelFolderParts {
  config: ModelConfig;
  /** Hugging Face names and layouts ([out, in] Linear weights), as exportWeights returns them. */
  weights: ReadonlyMap<string, NamedArray>;
  tokenizer: MlmTokenizer;
  /** Adds files (trainer_state.json, optimizer.safetensors...) to the temporary folder before it is renamed. */
  extra?: (tmpDir: string) => Promise<void>;
  /** false: replace the folder only while it is empty (writeFolderAtomic's `replace`). */
  replace?: boolean;
}

/** config.json's object as save_pretrained writes it for the ForMaskedLM class of the family. */
export function configJsonForSave(config: ModelConfig): Record<string, unknown> {
  const json = modelConfigToJson(config);
  json.architectures = [maskedLmArchitecture(config.model_type)];
  json.torch_dtype = 'float32';
  if ('dtype' in json) json.dtype = 'float32';
  const sorted: Record<string, unknown> = {};
  for (const key of Object.keys(json).sort()) sorted[key] = json[key];
  return sorted;
}

/** Throws (a programming error, not bad input) unless `weights` are exactly the HF tensors of `config`. */
function checkHfWeights(config: ModelConfig, weights: ReadonlyMap<string, NamedArray>): void {
  const table = parameterTable(config);
  for (const spec of table) {
    const t = weights.get(spec.name);
    if (t === undefined) throw new Error(`writeModelFolder: weights lack ${spec.name}`);
    const n = spec.hfShape.reduce((a, b) => a * b, 1);
    if (t.shape.length !== spec.hfShape.length || t.shape.some((d, i) => d !== spec.hfShape[i]) || t.data.length !== n) {
      throw new Error(`writeModelFolder: ${spec.name} has shape [${t.shape.join(', ')}], expected the Hugging Face shape [${spec.hfShape.join(', ')}]`);
    }
  }
  if (weights.size !== table.length) {
    const known = new Set(table.map((s) => s.name));
    const extra = [...weights.keys()].filter((k) => !known.has(k));
    throw new Error(`writeModelFolder: weights hold tensors the model does not have: ${extra.slice(0, 5).join(', ')}`);
  }
}

/**
 * Writes a Hugging Face model folder atomically (see the file header): config.json,
 * model.safetensors (float32, {"format": "pt"}), the tokenizer files, and whatever `extra` adds.
 */
export async function writeModelFolder(dir: string, parts: ModelFolderParts): Promise<void> {
  const { config, weights, tokenizer } = parts;
  checkHfWeights(config, weights);
  checkTokenizerFitsModel(tokenizer, config, dir);
  const tensors = new Map<string, { dtype: 'F32'; shape: number[]; data: Float32Array }>();
  for (const [name, t] of weights) tensors.set(name, { dtype: 'F32', shape: [...t.shape], data: t.data });
  await writeFolderAtomic(dir, async (tmp) => {
    await fsp.writeFile(path.join(tmp, CONFIG_FILE), JSON.stringify(configJsonForSave(config), null, 2) + '\n', 'utf8');
    await saveSafetensors(path.join(tmp, WEIGHTS_FILE), tensors, { format: 'pt' });
    await tokenizer.save(tmp, { modelMaxLength: tokenizer.modelMaxLength ?? maxSequenceLength(config) });
    if (parts.extra) await parts.extra(tmp);
  }, 'ckpt', { replace: parts.replace });
}

/**
 * Weights in mlmkit layout (from loadModelFolder / importWeights) in Hugging Face names and
 * layouts, through the models' own `exportWeights` (the one conversion table), without building
 * a TF.js model.
 */
export async function hfWeightsOf(config: ModelConfig, weights: ModelWeights): Promise<Map<string, NamedArray>> {
  const variables = new Map<string, Variable>();
  for (const [name, t] of weights.tensors) {
    // exportWeights reads only `shape` and `data()` of each variable.
    const view = { shape: t.shape, data: async () => t.data };
    variables.set(name, view as unknown as Variable);
  }
  return exportWeights({ config, variables });
}

// ---------------------------------------------------------------------------------------------
// TF.js weights folder

/** Bytes per binary shard, as tensorflowjs_converter writes them (4 MiB). */
export const TFJS_SHARD_BYTES = 4 * 1024 * 1024;

export interface TfjsFolderParts {
  config: ModelConfig;
  /** mlmkit layout (Linear weights [in, out]), as loadModelFolder returns them. */
  weights: ModelWeights;
  tokenizer: MlmTokenizer;
  /** `generatedBy` of model.json, e.g. "mlmkit 0.1.0". */
  generatedBy: string;
  /** Bytes per shard (default TFJS_SHARD_BYTES). */
  shardBytes?: number;
}

export interface TfjsFolderSummary {
  shards: string[];
  tensors: number;
  bytes: number;
}

/**
 * Writes a TF.js weights folder atomically: model.json in the format `tf.io` reads
 * (`weightsManifest: [{paths, weights: [{name, shape, dtype}]}]`, `modelTopology: null`, format
 * `mlmkit-bert` / `mlmkit-roberta`), the weights as little-endian float32 concatenated in the
 * manifest's order and cut into 4 MiB shards `group1-shardKofN.bin` (the converter's naming),
 * plus config.json and the tokenizer files. Tensors keep their Hugging Face names but mlmkit's
 * layout, ready for `createMaskedLM(tf, config, { weights })` after `tf.io.loadWeights`.
 */
export async function writeTfjsFolder(dir: string, parts: TfjsFolderParts): Promise<TfjsFolderSummary> {
  const { config, weights, tokenizer } = parts;
  const shardBytes = parts.shardBytes ?? TFJS_SHARD_BYTES;
  const table = parameterTable(config);
  const specs = table.map((s) => {
    const t = weights.tensors.get(s.name);
    if (!t) throw new Error(`writeTfjsFolder: weights lack ${s.name}`);
    return { name: s.name, shape: [...t.shape], dtype: 'float32' as const, data: t.data };
  });
  const total = specs.reduce((a, s) => a + s.data.byteLength, 0);
  const count = Math.max(1, Math.ceil(total / shardBytes));
  const shards = Array.from({ length: count }, (_, i) => `group1-shard${i + 1}of${count}.bin`);
  await writeFolderAtomic(dir, async (tmp) => {
    // Stream the tensors' bytes into shards, cutting across tensor boundaries like the converter.
    const buf = Buffer.alloc(Math.min(shardBytes, Math.max(total, 1)));
    let fill = 0;
    let shard = 0;
    const flush = async () => {
      await fsp.writeFile(path.join(tmp, shards[shard++]), buf.subarray(0, fill));
      fill = 0;
    };
    for (const s of specs) {
      const bytes = new Uint8Array(s.data.buffer, s.data.byteOffset, s.data.byteLength);
      let off = 0;
      while (off < bytes.length) {
        const n = Math.min(bytes.length - off, buf.length - fill);
        buf.set(bytes.subarray(off, off + n), fill);
        fill += n;
        off += n;
        if (fill === buf.length) await flush();
      }
    }
    if (fill > 0 || shard === 0) await flush();
    if (shard !== count) throw new Error(`writeTfjsFolder: wrote ${shard} shards, expected ${count}`);
    const modelJson = {
      format: `mlmkit-${config.model_type}`,
      generatedBy: parts.generatedBy,
      convertedBy: null,
      modelTopology: null,
      userDefinedMetadata: {
        // Everything a reader needs to rebuild the model (browser.ts loadTfjsModel): the config
        // itself, the weight layout, and the tokenizer file beside model.json.
        mlmkit: {
          format_version: 2,
          model_type: config.model_type,
          layout: 'mlmkit: Hugging Face names; Linear weights [in, out], transposed from PyTorch [out, in]',
          config: configJsonForSave(config),
          tokenizer: 'tokenizer.json',
        },
      },
      weightsManifest: [{ paths: shards, weights: specs.map(({ name, shape, dtype }) => ({ name, shape, dtype })) }],
    };
    await fsp.writeFile(path.join(tmp, 'model.json'), JSON.stringify(modelJson, null, 2) + '\n', 'utf8');
    await fsp.writeFile(path.join(tmp, CONFIG_FILE), JSON.stringify(configJsonForSave(config), null, 2) + '\n', 'utf8');
    await tokenizer.save(tmp, { modelMaxLength: tokenizer.modelMaxLength ?? maxSequenceLength(config) });
  });
  return { shards, tensors: specs.length, bytes: total };
}
