// Test helper (not a test file): a tiny random BERT or RoBERTa checkpoint folder with a tokenizer
// trained on tests/fixtures/tokenizers/prose.txt, written by writeModelFolder. No TF.js needed.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { MlmTokenizer } from '../../data/tokenizer.ts';
import { trainTokenizer } from '../../data/tokenizer-train.ts';
import { hfWeightsOf, writeModelFolder } from '../../training/checkpoint.ts';
import { parseModelConfig, type ModelConfig } from '../../training/models/config.ts';
import { initialWeights, type NamedArray } from '../../training/models/weights.ts';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const PROSE = path.join(ROOT, 'tests/fixtures/tokenizers/prose.txt');

export type Family = 'bert' | 'roberta';

const tokenizers = new Map<Family, Promise<MlmTokenizer>>();

/** A tokenizer trained on the prose fixture (cached per family within one test process). */
export function tinyTokenizer(family: Family): Promise<MlmTokenizer> {
  let t = tokenizers.get(family);
  if (!t) {
    const lines = fs.readFileSync(PROSE, 'utf8').split('\n').filter((l) => l.trim() !== '');
    t = trainTokenizer(lines, { family, vocabSize: family === 'bert' ? 200 : 400, lowercase: family === 'bert' }).then((r) => r.tokenizer);
    tokenizers.set(family, t);
  }
  return t;
}

/** A tiny config (hidden 32, 2 layers) whose vocab_size is the tokenizer's (plus `padVocab`). */
export function tinyConfig(family: Family, tokenizer: MlmTokenizer, opts: { padVocab?: number; maxPositions?: number } = {}): ModelConfig {
  const ids = tokenizer.specialIds;
  return parseModelConfig(
    {
      model_type: family,
      architectures: [family === 'bert' ? 'BertForMaskedLM' : 'RobertaForMaskedLM'],
      vocab_size: tokenizer.vocabSize + (opts.padVocab ?? 0),
      hidden_size: 32,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      intermediate_size: 37,
      max_position_embeddings: opts.maxPositions ?? (family === 'bert' ? 64 : 66),
      type_vocab_size: family === 'bert' ? 2 : 1,
      pad_token_id: ids.pad,
      ...(family === 'roberta' ? { bos_token_id: ids.cls, eos_token_id: ids.sep, layer_norm_eps: 1e-5 } : {}),
    },
    `tiny ${family}`,
  );
}

export interface TinyCheckpoint {
  dir: string;
  config: ModelConfig;
  tokenizer: MlmTokenizer;
  /** Hugging Face names and layouts, as written. */
  hf: Map<string, NamedArray>;
}

/** Writes a random tiny checkpoint into `dir`. */
export async function makeTinyCheckpoint(dir: string, family: Family = 'bert', opts: { seed?: number; padVocab?: number; maxPositions?: number } = {}): Promise<TinyCheckpoint> {
  const tokenizer = await tinyTokenizer(family);
  const config = tinyConfig(family, tokenizer, opts);
  const hf = await hfWeightsOf(config, initialWeights(config, opts.seed ?? 1));
  await writeModelFolder(dir, { config, weights: hf, tokenizer });
  return { dir, config, tokenizer, hf };
}

/** Bitwise equality of two float32 arrays (NaN payloads included). */
export function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

/** Runs `mlm ARGS` in a child process (no shell), resolving with its exit code and output. */
export function runMlm(args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(ROOT, 'scripts/mlm.mjs'), ...args], { cwd: ROOT, env: opts.env ?? process.env, timeout: opts.timeoutMs ?? 120_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}
