// Evaluating several models on several data sets: the loop behind `mlm evaluate`
// (scripts/commands/evaluate.ts), callable from the library (index.ts). Each model is loaded once,
// scored on every data set (masked loss, or pseudo-perplexity), and disposed before the next.
import { InputError, requireChoice, requireInteger, requireOpenFraction, requireSeed } from '../common/errors.ts';
import type { RawTextOptions } from '../data/corpus.ts';
import { MLM_PROBABILITY, type WholeWordSelection } from '../data/masking.ts';
import type { SplitName } from '../data/shards.ts';
import type { Tf } from './backend.ts';
import { loadModelFolder, maxSequenceLength } from './checkpoint.ts';
import { evaluateMasked, evaluatePseudo, maskingFor, openEvalData, shorterBlocksNote, type EvalResult } from './evaluate.ts';
import type { ResolvedModel } from './hub.ts';
import type { ModelCapabilities } from './models/ops.ts';
import { createMaskedLM } from './models/roberta.ts';

export interface EvaluateModelsOptions {
  /** Resolved models (training/hub.ts resolveModel): every name is checked before any work. */
  models: ResolvedModel[];
  /** Data sets: prepared folders, or raw text files / folders / globs. */
  data: string[];
  /** Split of a prepared folder (default validation). */
  split?: SplitName;
  /** Seed of the evaluation masks (default 42). */
  seed?: number;
  batchSize?: number;
  /** Stop after N batches of rows (0 or absent: the whole split). */
  maxBatches?: number;
  mlmProbability?: number;
  wholeWordMask?: boolean;
  /** With wholeWordMask: how words are selected, as the run being reproduced chose (default independent). */
  wholeWordSelection?: WholeWordSelection;
  /** Pseudo-perplexity: every token masked in turn. */
  pseudo?: boolean;
  /** Tokens per block for raw text (default 128). */
  seqLen?: number;
  /** How raw text is read (the text field of tables, paragraphs of .txt files, invalid UTF-8). */
  text?: RawTextOptions;
  /** The backend's capabilities (BackendInfo.capabilities); the reference paths when absent. */
  capabilities?: ModelCapabilities;
  /** Written into caches of raw text (created_by). */
  version?: string;
  /** Called with each model-on-data pair's total rows before it starts, then with rows done. */
  onStart?: (label: string, totalRows: number) => void;
  onProgress?: (rowsDone: number) => void;
  onFinish?: (result: EvalResult) => void;
  /** Notes (raw text cut into blocks shorter than asked, rows with no text); default: none. */
  log?: (line: string) => void;
}

export interface EvaluationRow {
  /** What was named: the folder or the Hub id. */
  model: string;
  data: string;
  result: EvalResult;
}

/**
 * Refuses unusable options (InputError naming the CLI flag); `evaluateModels` calls it, the CLI
 * too before it resolves (perhaps downloads) the models.
 */
export function checkEvaluateOptions(opts: Omit<EvaluateModelsOptions, 'models' | 'data'>): void {
  if (opts.split !== undefined) requireChoice(opts.split, ['validation', 'train'], 'split');
  if (opts.batchSize !== undefined) requireInteger(opts.batchSize, 'batch-size', 1);
  if (opts.maxBatches !== undefined) requireInteger(opts.maxBatches, 'max-batches', 0);
  if (opts.seqLen !== undefined) requireInteger(opts.seqLen, 'seq-len', 8);
  if (opts.seed !== undefined) requireSeed(opts.seed);
  if (opts.mlmProbability !== undefined) requireOpenFraction(opts.mlmProbability, 'mlm-probability');
  if (opts.wholeWordSelection !== undefined) {
    requireChoice(opts.wholeWordSelection, ['independent', 'budget'], 'whole-word-selection');
    if (!opts.wholeWordMask) throw new InputError('--whole-word-selection chooses how whole words are selected: give --whole-word-mask too');
  }
  if (opts.pseudo && (opts.wholeWordMask || (opts.mlmProbability !== undefined && opts.mlmProbability !== MLM_PROBABILITY))) {
    throw new InputError(`--pseudo masks every token in turn, so ${opts.wholeWordMask ? '--whole-word-mask' : '--mlm-probability'} does not apply to it; leave it out, or leave out --pseudo`);
  }
}

/** Scores every model on every data set, in order (models outer). */
export async function evaluateModels(tf: Tf, opts: EvaluateModelsOptions): Promise<EvaluationRow[]> {
  checkEvaluateOptions(opts);
  if (opts.models.length === 0) throw new InputError('no model to evaluate: give at least one (--model)');
  if (opts.data.length === 0) throw new InputError('no data to evaluate on: give at least one data set (--data)');
  const batchSize = opts.batchSize ?? 32;
  const maxBatches = opts.maxBatches ?? 0;
  const seqLen = opts.seqLen ?? 128;
  const rows: EvaluationRow[] = [];
  // Each model reads the raw text again: a reader's note (rows with no text) is said once.
  const said = new Set<string>();
  const readerLog = (line: string) => {
    if (!said.has(line)) opts.log?.(line);
    said.add(line);
  };
  for (const resolved of opts.models) {
    const folder = await loadModelFolder(resolved.dir, { source: resolved.source, revision: resolved.revision });
    const model = createMaskedLM(tf, folder.config, { weights: folder.weights, capabilities: opts.capabilities });
    const maxPositions = maxSequenceLength(folder.config);
    try {
      for (const spec of opts.data) {
        const data = await openEvalData(spec, folder.tokenizer, {
          split: opts.split ?? 'validation',
          seqLen,
          maxPositions,
          modelLabel: resolved.source,
          version: opts.version ?? 'mlmkit',
          text: opts.text,
          log: readerLog,
        });
        const note = shorterBlocksNote(data, seqLen, maxPositions, resolved.source);
        if (note) opts.log?.(note);
        try {
          const label = `${opts.pseudo ? 'pseudo-perplexity' : 'evaluate'}: ${resolved.source} on ${spec}`;
          opts.onStart?.(label, maxBatches ? Math.min(data.reader.rows, maxBatches * batchSize) : data.reader.rows);
          const masking = maskingFor(folder.tokenizer, opts.mlmProbability ?? MLM_PROBABILITY, opts.wholeWordMask ?? false, opts.wholeWordSelection);
          const evalOpts = {
            batchSize,
            seed: opts.seed ?? 42,
            maxBatches: maxBatches || undefined,
            onProgress: (done: number) => opts.onProgress?.(done),
          };
          const result = opts.pseudo
            ? await evaluatePseudo(tf, model, data.reader, masking, evalOpts)
            : await evaluateMasked(tf, model, data.reader, masking, evalOpts);
          opts.onFinish?.(result);
          // No scored token: the loss of nothing (NaN) is no figure to print or compare.
          if (result.masked_tokens === 0) {
            const why = opts.pseudo ? 'they are all special or unknown tokens' : `no mask was drawn: too few tokens, or only special or unknown ones${maxBatches ? '; raise --max-batches' : ''}`;
            throw new InputError(`no token of ${spec} was scored for ${resolved.source} (${result.tokens} token(s) in ${result.rows} row(s); ${why}); evaluate on text the model's tokenizer knows`);
          }
          rows.push({ model: resolved.source, data: spec, result });
        } finally {
          await data.close();
        }
      }
    } finally {
      model.dispose();
    }
  }
  return rows;
}
