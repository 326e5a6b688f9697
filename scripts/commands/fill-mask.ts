// `mlm fill-mask`: the Hugging Face fill-mask pipeline on a model folder or Hub id (docs/formats.md,
// "Command output"). `--json` prints transformers' output: a list of {score, token, token_str, sequence}
// for one mask, a list of such lists for several.
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { InputError } from '../../common/errors.ts';
import { blasOptions, resolveBackendName, selectBackend } from '../../training/backend.ts';
import { checkFillMaskOptions, encodeForFillMask, fillMask, pipelineOutput, type FillMaskCandidate } from '../../training/fill-mask.ts';
import { loadModel } from '../../training/hub.ts';
import { createMaskedLM } from '../../training/models/roberta.ts';
import { NO_BAR_PROGRESS_OPTION } from './progress-option.ts';

interface FillMaskArgs {
  text: string[];
  model: string;
  revision?: string;
  'top-k': number;
  targets?: string[];
  json: boolean;
  backend: string;
}

export const fillMaskCommand: CommandModule<object, FillMaskArgs> = {
  // [text..], not <text..>: a text that starts with '-' comes after `--`, where yargs leaves it
  // in `_` instead of the positional; the handler takes it from there.
  command: 'fill-mask [text..]',
  describe: 'Predict the masked words of a text, as the Hugging Face fill-mask pipeline does',
  builder: (y: Argv) =>
    y
      .positional('text', { type: 'string', array: true, describe: "the text, with the model's mask token ([MASK] for BERT, <mask> for RoBERTa); quote it" })
      .option('model', { type: 'string', demandOption: true, describe: 'model folder (config.json, model.safetensors, tokenizer) or Hugging Face Hub id' })
      .option('revision', { type: 'string', describe: 'Hub branch, tag or commit (default main)' })
      .option('top-k', { type: 'number', default: 5, describe: 'candidates per mask' })
      .option('targets', { type: 'string', array: true, describe: 'only score these words (put them after the text)' })
      .option('json', { type: 'boolean', default: false, describe: "print transformers' pipeline output as JSON on stdout" })
      .option('backend', { type: 'string', default: 'auto', describe: 'auto, tensorflow-gpu, tensorflow, webgpu, wasm or cpu (or env MLM_BACKEND)' })
      .option('progress', NO_BAR_PROGRESS_OPTION)
      .example('$0 fill-mask --model bert-base-uncased "Paris is the [MASK] of France."', 'the 5 likeliest words from a Hub model')
      .example('$0 fill-mask --model checkpoints/med "The patient was given [MASK] for the pain." --top-k 10 --json', 'a local checkpoint, JSON output')
      .example('$0 fill-mask --model roberta-base "Hello <mask>!" --targets " world" " there"', 'RoBERTa, scoring only two candidates')
      .example('$0 fill-mask --model bert-base-uncased "The [MASK] sat on the [MASK]."', 'several masks: one ranked list per mask')
      .example('$0 fill-mask --model bert-base-uncased -- "- [MASK] with a dash"', 'a text that starts with -') as unknown as Argv<FillMaskArgs>,
  handler: async (args: ArgumentsCamelCase<FillMaskArgs>) => {
    const afterDashes = args._.slice(1).map(String); // the words after `--` (`_` starts with the command)
    const text = [...(args.text ?? []), ...afterDashes].join(' ');
    if (text.trim() === '') {
      throw new InputError(args.targets?.length
        ? `no text to fill: --targets took every word after it (${args.targets.map((t) => JSON.stringify(t)).join(' ')}); put the text before --targets, or after --`
        : 'give the text to fill, e.g. mlm fill-mask --model DIR "Paris is the [MASK] of France." (a text starting with - goes after --)');
    }
    const topK = args['top-k'];
    checkFillMaskOptions({ topK }); // before a model is loaded (perhaps downloaded)
    const log = (line: string) => process.stderr.write(line + '\n');
    const backendName = resolveBackendName(args.backend, process.env);
    const folder = await loadModel(args.model, { revision: args.revision, log });
    // Check the text before starting a backend and building the model.
    await encodeForFillMask(folder.tokenizer, folder.config, text);
    const { tf, capabilities } = await selectBackend(backendName, { log, ...blasOptions(process.env) });
    const model = createMaskedLM(tf, folder.config, { weights: folder.weights, capabilities });
    let result;
    try {
      result = await fillMask(tf, model, folder.tokenizer, text, { topK, targets: args.targets, warn: (w) => log(`warning: ${w}`) });
    } finally {
      model.dispose();
    }
    if (args.json) {
      process.stdout.write(JSON.stringify(pipelineOutput(result), null, 2) + '\n');
      return;
    }
    const out: string[] = [];
    result.masks.forEach((candidates, i) => {
      const where = result.masks.length > 1 ? `${folder.tokenizer.maskToken} ${i + 1} of ${result.masks.length}` : folder.tokenizer.maskToken;
      out.push(`${where} (token position ${result.positions[i]}):`);
      out.push(...table(candidates));
      out.push('');
    });
    process.stdout.write(out.join('\n'));
  },
};

/** A plain table: rank, score, token id, token, sequence. */
function table(candidates: FillMaskCandidate[]): string[] {
  const rows = candidates.map((c, i) => [String(i + 1), c.score.toFixed(4), String(c.token), JSON.stringify(c.token_str), c.sequence]);
  const head = ['rank', 'score', 'id', 'token', 'sequence'];
  const width = head.map((h, j) => Math.max(h.length, ...rows.map((r) => r[j].length)));
  const line = (r: string[]) => '  ' + r.map((v, j) => (j === r.length - 1 ? v : j <= 2 ? v.padStart(width[j]) : v.padEnd(width[j]))).join('  ');
  return [line(head), line(width.map((w) => '-'.repeat(w))), ...rows.map(line)];
}
