// `mlm export`: a model folder or Hub id written as a clean inference checkpoint (docs/formats.md,
// "Checkpoints" and "TF.js export"), in one of three formats (onnx: the hf folder plus onnx/model.onnx, see
// training/onnx-export.ts):
//   hf    config.json, model.safetensors (float32) and the tokenizer files: what transformers'
//         from_pretrained reads; no trainer_state.json or optimizer.safetensors.
//   tfjs  model.json + group1-shardKofN.bin (4 MiB shards) in TF.js's weights-manifest format, plus
//         config.json and the tokenizer files. model.json is self-describing: its
//         userDefinedMetadata.mlmkit holds the config object, the weight layout (Hugging Face
//         names, Linear weights [in, out]) and the tokenizer file, which is what the browser
//         entry (browser.ts loadTfjsModel, `mlmkit/browser`) rebuilds the model from.
// The work is training/export-model.ts exportModel; the output folder is written under a
// temporary name and renamed when complete.
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { exportModel } from '../../training/export-model.ts';
import { VERSION } from '../../common/version.ts';
import { NO_BAR_PROGRESS_OPTION } from './progress-option.ts';

interface ExportArgs {
  model: string;
  revision?: string;
  format: 'hf' | 'tfjs' | 'onnx';
  out: string;
  overwrite: boolean;
  json: boolean;
}

export const exportCommand: CommandModule<object, ExportArgs> = {
  command: 'export',
  describe: 'Write a clean inference checkpoint (Hugging Face, TF.js or ONNX format) from a model folder or Hub id',
  builder: (y: Argv) =>
    y
      .option('model', { type: 'string', demandOption: true, describe: 'model folder (a training checkpoint is fine) or Hugging Face Hub id' })
      .option('revision', { type: 'string', describe: 'Hub branch, tag or commit (default main)' })
      .option('format', { choices: ['hf', 'tfjs', 'onnx'] as const, default: 'hf' as const, describe: 'hf: config.json + model.safetensors + tokenizer; tfjs: model.json + 4 MiB weight shards + config + tokenizer; onnx: the hf folder + onnx/model.onnx (transformers.js, ONNX Runtime)' })
      .option('out', { type: 'string', demandOption: true, describe: 'output folder' })
      .option('overwrite', { type: 'boolean', default: false, describe: 'replace an earlier export at --out (never a folder holding other files)' })
      .option('json', { type: 'boolean', default: false, describe: 'print a JSON summary on stdout' })
      .option('progress', NO_BAR_PROGRESS_OPTION)
      .example('$0 export --model checkpoints/run1/checkpoint-5000 --format hf --out med-bert/', 'a folder transformers loads, without optimizer state')
      .example('$0 export --model med-bert/ --format tfjs --out web/model/', 'weights for a browser app (tf.io) using mlmkit\'s model code')
      .example('$0 export --model med-bert/ --format onnx --out web/med-onnx/', 'a folder transformers.js pipeline(\'fill-mask\') and ONNX Runtime load')
      .example('$0 export --model google/bert_uncased_L-4_H-256_A-4 --format tfjs --out web/mini/', 'a Hub model, downloaded into the Hugging Face cache first') as unknown as Argv<ExportArgs>,
  handler: async (args: ArgumentsCamelCase<ExportArgs>) => {
    const log = (line: string) => process.stderr.write(line + '\n');
    const r = await exportModel({ model: args.model, out: args.out, format: args.format, revision: args.revision, overwrite: args.overwrite, generatedBy: `mlmkit ${VERSION}`, log });
    if (args.json) {
      process.stdout.write(JSON.stringify({ format: r.format, model: r.model, revision: r.revision, out: r.out, files: r.files, tensors: r.tensors, bytes: r.bytes }, null, 2) + '\n');
      return;
    }
    const from = r.revision ? `${r.model} (commit ${r.revision.slice(0, 12)})` : r.model;
    process.stdout.write(`exported ${from} as ${r.format} to ${r.out}: ${r.tensors} tensors, ${(r.bytes / 1e6).toFixed(1)} MB of weights, ${r.files.length} files\n`);
  },
};
