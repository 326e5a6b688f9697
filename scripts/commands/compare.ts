// `mlm compare`: what changed between masked LMs on the same held-out text, tokenizers may differ
// (training/compare.ts). Prints a table; --out writes compare.md, documents.svg and compare.json;
// --json prints the JSON document.
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { readDocuments, requireNonEmpty, resolveCorpusFiles } from '../../data/corpus.ts';
import { writeFolderAtomic } from '../../common/atomic.ts';
import { InputError, requireInteger } from '../../common/errors.ts';
import { formatTable, Progress } from '../../data/progress.ts';
import { blasOptions, resolveBackendName, selectBackend } from '../../training/backend.ts';
import { maxSequenceLength } from '../../training/checkpoint.ts';
import {
  documentChartSvg,
  commonWords,
  documentPerplexities,
  gainedAndLost,
  fillMaskExamples,
  summarise,
  wordChanges,
  wordPseudoLogLikelihood,
  type ModelSummary,
  type ScoredWord,
  type WordChange,
} from '../../training/compare.ts';
import { evaluateMasked, maskingFor, openEvalData, shorterBlocksNote } from '../../training/evaluate.ts';
import { loadModel } from '../../training/hub.ts';
import { createMaskedLM } from '../../training/models/roberta.ts';
import { VERSION } from '../../common/version.ts';
import { requireFreshOut } from './tokenizer-extend.ts';
import { rawTextOptions, withRawTextOptions, type RawTextArgs } from './text-options.ts';
import { PROGRESS_OPTION } from './progress-option.ts';

interface CompareArgs extends RawTextArgs {
  model: string[];
  data: string[];
  out?: string;
  'max-words': number;
  'max-docs': number;
  'min-count': number;
  examples: number;
  seed: number;
  'batch-size': number;
  'seq-len': number;
  backend: string;
  json: boolean;
  progress: boolean;
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

const signed = (x: number) => `${x > 0 ? '+' : ''}${x.toFixed(2)}`;

function changeRows(changes: WordChange[]): string[] {
  if (changes.length === 0) return ['| - | | | | | |'];
  return changes.map((c) => `| ${c.word} | ${c.count} | ${c.before.toFixed(2)} | ${c.after.toFixed(2)} | ${signed(c.gain)} | ${signed(c.gain * c.count)} |`);
}

export const compareCommand: CommandModule<object, CompareArgs> = {
  command: 'compare',
  describe: 'What changed between models on held-out text (tokenizers may differ): per-word gains, per-document perplexity, fertility',
  builder: (y: Argv) =>
    withRawTextOptions(y)
      .option('model', { type: 'string', array: true, demandOption: true, describe: 'two or more model folders or Hub ids; the first is the baseline' })
      .option('data', { type: 'string', array: true, demandOption: true, describe: 'held-out raw text: files, folders or globs' })
      .option('out', { type: 'string', describe: 'new folder for compare.md, documents.svg and compare.json' })
      .option('max-words', { type: 'number', default: 2000, describe: 'words scored per model (one forward row each)' })
      .option('max-docs', { type: 'number', default: 1000, describe: 'documents read from --data' })
      .option('min-count', { type: 'number', default: 2, describe: 'least occurrences of a word in the gain tables' })
      .option('examples', { type: 'number', default: 4, describe: 'fill-mask examples on the most changed words' })
      .option('seed', { type: 'number', default: 42, describe: 'seed of the masked-token evaluation' })
      .option('batch-size', { type: 'number', default: 32, describe: 'rows per forward pass' })
      .option('seq-len', { type: 'number', default: 128, describe: 'tokens per row of the masked-token evaluation' })
      .option('backend', { type: 'string', default: 'auto', describe: 'auto|tensorflow-gpu|tensorflow|webgpu|wasm|cpu (or MLM_BACKEND)' })
      .option('json', { type: 'boolean', default: false, describe: 'print the JSON document on stdout' })
      .option('progress', PROGRESS_OPTION)
      .example('$0 compare --model runs/general runs/med-ext --data heldout/med.txt --out cmp/', 'a plain model against a vocabulary-extended one') as unknown as Argv<CompareArgs>,
  handler: async (args: ArgumentsCamelCase<CompareArgs>) => {
    if (args.model.length < 2) throw new InputError('--model needs two or more models to compare (the first is the baseline)');
    for (const f of ['max-words', 'max-docs', 'batch-size'] as const) requireInteger(args[f], f, 1);
    requireInteger(args['min-count'], 'min-count', 1);
    requireInteger(args.examples, 'examples', 0);
    requireInteger(args['seq-len'], 'seq-len', 8);
    if (args.out !== undefined) requireFreshOut(args.out, [...args.model.map((m) => ({ path: m, flag: '--model' })), ...args.data.map((d) => ({ path: d, flag: '--data' }))]);
    const log = (line: string) => process.stderr.write(line + '\n');

    const files = await resolveCorpusFiles(args.data, log);
    const docs: string[] = [];
    for await (const d of requireNonEmpty(readDocuments(files, { ...rawTextOptions(args), log }), files)) {
      if (d.text.trim() !== '') docs.push(d.text);
      if (docs.length >= args['max-docs']) break;
    }
    const folders = [];
    for (const m of args.model) folders.push(await loadModel(m, { log }));
    const backend = await selectBackend(resolveBackendName(args.backend, process.env), { log, ...blasOptions(process.env) });
    const { tf } = backend;

    const loaded = folders.map((f) => ({ label: f.source, model: createMaskedLM(tf, f.config, { weights: f.weights, capabilities: backend.capabilities }), tokenizer: f.tokenizer, folder: f }));
    try {
      const scored: ScoredWord[][] = [];
      const unscored: Array<Array<{ doc: number; index: number }>> = [];
      const evals: Array<Pick<ModelSummary, 'eval_loss' | 'eval_perplexity' | 'eval_accuracy'>> = [];
      for (const m of loaded) {
        const bar = new Progress({ label: `word pseudo-likelihood: ${m.label}`, total: args['max-words'], unit: 'count', enabled: args.progress });
        const skipped: Array<{ doc: number; index: number }> = [];
        const words = await wordPseudoLogLikelihood(tf, m.model, m.tokenizer, docs, {
          maxWords: args['max-words'],
          batchRows: args['batch-size'],
          onProgress: (n) => bar.update(n),
          onUnscored: (w) => skipped.push(w),
        });
        unscored.push(skipped);
        bar.complete(`${words.length} words`, words.length);
        scored.push(words);
        // The usual masked-token figures, token-weighted over the data sets.
        let lossSum = 0;
        let correct = 0;
        let masked = 0;
        for (const spec of args.data) {
          const maxPositions = maxSequenceLength(m.folder.config);
          const data = await openEvalData(spec, m.tokenizer, { split: 'validation', seqLen: args['seq-len'], maxPositions, modelLabel: m.label, version: VERSION, text: rawTextOptions(args) });
          try {
            const note = shorterBlocksNote(data, args['seq-len'], maxPositions, m.label);
            if (note) log(note);
            const r = await evaluateMasked(tf, m.model, data.reader, maskingFor(m.tokenizer), { batchSize: args['batch-size'], seed: args.seed });
            if (r.masked_tokens === 0) continue; // nothing masked (its loss is NaN): it adds nothing
            lossSum += r.loss * r.masked_tokens;
            correct += r.accuracy * r.masked_tokens;
            masked += r.masked_tokens;
          } finally {
            await data.close();
          }
        }
        evals.push(masked > 0 ? { eval_loss: lossSum / masked, eval_perplexity: Math.exp(lossSum / masked), eval_accuracy: correct / masked } : {});
      }
      // Every model on the same word occurrences: those all scored, none read as an unknown token.
      const common = commonWords(scored, unscored);
      if (common.words[0].length === 0) {
        throw new InputError(`no word occurrence of --data was scored by every model without an unknown token (${common.notEveryModel} not scored by every model, ${common.unknown} read as an unknown token): nothing to compare; give other text`);
      }
      const summaries: ModelSummary[] = loaded.map((m, i) => ({ ...summarise(m.label, common.words[i], scored[i]), ...evals[i] }));
      const leftOut = `${common.notEveryModel + common.unknown} word occurrences left out of the comparison: ${common.notEveryModel} not scored by every model (too long for a window, removed by a normalizer, or past another model's --max-words), ${common.unknown} read as an unknown token by some model`;
      if (common.notEveryModel + common.unknown > 0) log(`note: ${leftOut}`);

      const changes = loaded.slice(1).map((m, i) => {
        const words = wordChanges(common.words[0], common.words[i + 1], args['min-count']);
        return { model: m.label, words, ...gainedAndLost(words, 15) };
      });
      const last = changes[changes.length - 1];
      const exampleWords = args.examples > 0
        ? [...last.gained.slice(0, Math.ceil(args.examples / 2)), ...last.lost.slice(0, Math.floor(args.examples / 2))].map((c) => c.word)
        : [];
      const examples = await fillMaskExamples(tf, loaded, docs, [...new Set(exampleWords)]);
      const perDoc = loaded.map((m, i) => ({ model: m.label, perDoc: documentPerplexities(common.words[i]) }));
      const doc = {
        baseline: loaded[0].label,
        documents: docs.length,
        backend: backend.name,
        method: 'whole-word pseudo-log-likelihood: each whitespace-separated word masked in full, its tokens scored in one pass',
        models: summaries,
        words_left_out: { not_scored_by_every_model: common.notEveryModel, unknown_token: common.unknown },
        changes: changes.map((c) => ({ model: c.model, gained: c.gained, lost: c.lost })),
        documents_pseudo_perplexity: perDoc.map((p) => ({ model: p.model, values: [...p.perDoc.values()] })),
        fill_mask: examples,
      };

      const table = formatTable(
        summaries.map((s) => ({
          model: s.model,
          words: s.words,
          'nats/word': s.nats_per_word,
          'word pppl': s.word_pseudo_perplexity,
          'bits/char': s.bits_per_char,
          'tokens/word': s.tokens_per_word,
          unk: pct(s.unk_rate),
          'eval ppl*': s.eval_perplexity ?? NaN,
          'eval acc*': s.eval_accuracy ?? NaN,
        })),
        { 'nats/word': 3, 'word pppl': 1, 'bits/char': 3, 'tokens/word': 3, 'eval ppl*': 1, 'eval acc*': 3 },
      );
      if (args.out !== undefined) {
        const md = [
          `# Model comparison`,
          '',
          `${docs.length} documents from ${args.data.join(', ')}; backend ${backend.name}; baseline ${loaded[0].label}.`,
          '',
          '```',
          table,
          '```',
          '',
          'nats/word, word pppl (word pseudo-perplexity) and bits/char: whole-word pseudo-log-likelihood (every whitespace-separated word masked in full, its tokens scored in one pass; comparable across tokenizers), over the same word occurrences for every model.',
          `${leftOut}. tokens/word and unk: over all the words each model scored.`,
          `*eval ppl and eval acc: masked-token perplexity and accuracy with each model's own tokenizer (15% masks, seed ${args.seed}); not comparable across tokenizers.`,
          '',
          '![per-document word pseudo-perplexity](documents.svg)',
          '',
          ...changes.flatMap((c) => [
            `## Words that gained most: ${c.model} against ${loaded[0].label}`,
            '',
            'Ranked by total gain (count x gain per occurrence, in nats); words with a gain above zero only.',
            '',
            '| word | count | nats before | nats after | gain | total |',
            '| --- | ---: | ---: | ---: | ---: | ---: |',
            ...changeRows(c.gained),
            '',
            `## Words that lost most: ${c.model} against ${loaded[0].label}`,
            '',
            'Ranked by total loss; words with a gain below zero only.',
            '',
            '| word | count | nats before | nats after | gain | total |',
            '| --- | ---: | ---: | ---: | ---: | ---: |',
            ...changeRows(c.lost),
            '',
          ]),
          '## Fill-mask on the most changed words',
          '',
          ...examples.flatMap((e) => [
            `\`${e.text.replace(/`/g, "'")}\``,
            '',
            ...e.predictions.map((p) => `- ${p.model}: ${p.top.map((t) => `${t.token.trim()} (${t.score.toFixed(3)})`).join(', ')}`),
            '',
          ]),
        ].join('\n');
        // Whole or not at all, and only while --out is still empty (checked when the command began).
        await writeFolderAtomic(args.out, async (tmp) => {
          await fsp.writeFile(path.join(tmp, 'compare.md'), md + '\n');
          await fsp.writeFile(path.join(tmp, 'documents.svg'), documentChartSvg(perDoc));
          await fsp.writeFile(path.join(tmp, 'compare.json'), JSON.stringify(doc, null, 2) + '\n');
        }, 'compare', { replace: false });
      }
      if (args.json) {
        process.stdout.write(JSON.stringify(doc) + '\n');
        return;
      }
      process.stdout.write(`\n${table}\n\n`);
      for (const c of changes) {
        const top = c.gained.slice(0, 5).map((w) => `${w.word} (${signed(w.gain)} x${w.count})`).join(', ');
        const bottom = c.lost.slice(0, 5).map((w) => `${w.word} (${signed(w.gain)} x${w.count})`).join(', ');
        process.stdout.write(`${c.model} vs ${loaded[0].label}: gained most ${top || '-'}; lost most ${bottom || '-'}\n`);
      }
      if (args.out !== undefined && fs.existsSync(args.out)) process.stdout.write(`wrote ${path.join(args.out, 'compare.md')}\n`);
    } finally {
      for (const m of loaded) m.model.dispose();
    }
  },
};
