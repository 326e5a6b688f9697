// Exporting a model folder or Hub id as a clean inference checkpoint: the work behind `mlm export`
// (scripts/commands/export.ts), callable from the library (index.ts). Formats:
//   hf    config.json, model.safetensors (float32) and the tokenizer files: what transformers'
//         from_pretrained reads; no trainer_state.json or optimizer.safetensors.
//   tfjs  model.json + group1-shardKofN.bin (4 MiB shards) in TF.js's weights-manifest format, plus
//         config.json and the tokenizer files (training/checkpoint.ts writeTfjsFolder).
//   onnx  the hf folder plus onnx/model.onnx (training/onnx-export.ts): the layout transformers.js
//         and ONNX Runtime read; config.json says `"transformers.js_config": {"dtype": "fp32"}` so
//         that transformers.js picks model.onnx without a dtype option (its browser default is
//         model_quantized.onnx). A family or activation the ONNX writer lacks is refused first.
// The --out checks run before anything is loaded; the writers write under a temporary name and
// rename when complete, so a failed export leaves no partial folder.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { InputError } from '../common/errors.ts';
import { realPathOf, refuseForeignEntries, within } from '../data/paths.ts';
import { CONFIG_FILE, hfWeightsOf, SAFETENSORS_INDEX, TOKENIZER_FILES, WEIGHTS_FILE, writeModelFolder, writeTfjsFolder } from './checkpoint.ts';
import { loadModel } from './hub.ts';
import { TRANSFORMERS_JS_CONFIG, updateModelConfig } from './models/config.ts';
import { onnxModelBytes } from './onnx-export.ts';
import { refuseOutInsideRun } from './run-folder.ts';

/** Where the onnx format puts the graph, as transformers.js looks for it. */
export const ONNX_FILE = path.join('onnx', 'model.onnx');

export type ExportFormat = 'hf' | 'tfjs' | 'onnx';
export const EXPORT_FORMATS: readonly ExportFormat[] = ['hf', 'tfjs', 'onnx'];

export interface ExportOptions {
  /** A model folder (a training checkpoint is fine) or a Hugging Face Hub id. */
  model: string;
  /** The output folder: new or empty, unless `overwrite`. */
  out: string;
  format?: ExportFormat;
  /** Hub branch, tag or commit (default main). */
  revision?: string;
  /** Replace an `out` folder that is not empty. */
  overwrite?: boolean;
  /** Written into model.json's generatedBy (tfjs). */
  generatedBy?: string;
  /** Notes (download progress); default: none. */
  log?: (line: string) => void;
}

export interface ExportSummary {
  format: ExportFormat;
  /** What was named: the folder or the Hub id. */
  model: string;
  /** The Hub commit exported; null for a local folder. */
  revision: string | null;
  out: string;
  /** The files written into `out`, sorted. */
  files: string[];
  tensors: number;
  /** Size of the weight file(s) written: model.safetensors (hf), onnx/model.onnx with its graph (onnx), the shards (tfjs). */
  bytes: number;
}

function realPath(p: string): string | null {
  try {
    return fs.realpathSync(p);
  } catch {
    return null;
  }
}

/**
 * Refuses an `out` that is a file, holds the model, lies inside the model's folder (a checkpoint of
 * a run, say: --overwrite would replace it) or inside a training run's folder, or is not empty
 * (unless overwrite).
 */
export function checkExportOut(out: string, model: string, overwrite: boolean): void {
  if (out.trim() === '') throw new InputError('--out must name a folder');
  const modelReal = realPath(model); // null for a Hub id
  if (modelReal) {
    const outPath = realPathOf(out);
    if (within(modelReal, outPath)) {
      throw new InputError(`--out ${out} holds the model being exported; choose another folder`);
    }
    if (within(outPath, modelReal)) {
      throw new InputError(`--out ${out} lies inside the model folder ${model}; writing there could replace or mix with its files, choose a folder outside it`);
    }
  }
  refuseOutInsideRun(out);
  const outReal = realPath(out);
  if (!outReal) return;
  const st = fs.statSync(outReal);
  if (!st.isDirectory()) throw new InputError(`--out ${out} is a file; choose a folder`);
  if (fs.readdirSync(outReal).length > 0 && !overwrite) {
    throw new InputError(`--out ${out} is not empty; choose an empty or new folder, or pass --overwrite to replace it`);
  }
  refuseForeignEntries(out, isExportEntry, 'model export');
}

/**
 * The names a model folder holds (an export in any format, or a folder transformers saved):
 * --overwrite replaces only such a folder.
 */
function isExportEntry(name: string, isDir: boolean): boolean {
  if (isDir) return name === 'onnx';
  // No README.md: export writes none, so one there is the user's model card.
  return TOKENIZER_FILES.includes(name) || name === CONFIG_FILE || name === WEIGHTS_FILE || name === SAFETENSORS_INDEX ||
    name === 'model.json' || name === 'generation_config.json' || /^model-\d+-of-\d+\.safetensors$/.test(name) || /^group\d+-shard\d+of\d+\.bin$/.test(name);
}

/** The files under `dir`, relative, sorted ('onnx/model.onnx' for a file in a subfolder). */
function listFiles(dir: string, prefix = ''): string[] {
  return fs.readdirSync(path.join(dir, prefix), { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? listFiles(dir, path.posix.join(prefix, e.name)) : [path.posix.join(prefix, e.name)]))
    .sort();
}

/** Loads `model` and writes it to `out` in `format` (default hf). Bad input is an InputError. */
export async function exportModel(opts: ExportOptions): Promise<ExportSummary> {
  const format = opts.format ?? 'hf';
  if (!EXPORT_FORMATS.includes(format)) throw new InputError(`unknown export format '${String(format)}': use one of ${EXPORT_FORMATS.join(', ')}`);
  const out = opts.out;
  checkExportOut(out, opts.model, opts.overwrite ?? false);
  const folder = await loadModel(opts.model, { revision: opts.revision, log: opts.log });
  let bytes: number;
  if (format === 'hf' || format === 'onnx') {
    const weights = await hfWeightsOf(folder.config, folder.weights);
    let extra: ((tmp: string) => Promise<void>) | undefined;
    let config = folder.config;
    if (format === 'onnx') {
      const onnx = onnxModelBytes(folder.config, folder.weights, opts.generatedBy ?? 'mlmkit');
      // transformers.js loads onnx/model{suffix}.onnx, the suffix from the dtype it settles on: the
      // caller's, else this key's, else the device's default, which in the browser (wasm) is q8
      // (model_quantized.onnx, not written here). The key names the one file there is; it replaces
      // one the source carried (which may describe files this export does not write).
      config = updateModelConfig(config, { [TRANSFORMERS_JS_CONFIG]: { dtype: 'fp32' } }, opts.model);
      extra = async (tmp) => {
        await fs.promises.mkdir(path.join(tmp, 'onnx'));
        await fs.promises.writeFile(path.join(tmp, ONNX_FILE), onnx);
      };
    }
    await writeModelFolder(out, { config, weights, tokenizer: folder.tokenizer, extra });
    bytes = fs.statSync(path.join(out, format === 'onnx' ? ONNX_FILE : 'model.safetensors')).size;
  } else {
    const summary = await writeTfjsFolder(out, { config: folder.config, weights: folder.weights, tokenizer: folder.tokenizer, generatedBy: opts.generatedBy ?? 'mlmkit' });
    bytes = summary.bytes;
  }
  return {
    format,
    model: folder.source,
    revision: folder.revision ?? null,
    out,
    files: listFiles(out),
    tensors: folder.weights.tensors.size,
    bytes,
  };
}
