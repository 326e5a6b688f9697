// `mlm tokenizer extend`: the domain words that save the most tokens, added to a model's tokenizer
// with every old id unchanged (data/tokenizer-extend.ts). Writes a tokenizer folder; `mlm model
// resize` then grows the model to it.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { readDocuments, requireNonEmpty, resolveCorpusFiles, totalBytes } from '../../data/corpus.ts';
import { corpusInputs, refuseOutputOverInputs } from '../../data/paths.ts';
import { writeFolderAtomic } from '../../common/atomic.ts';
import { firstNames, InputError, requireInteger } from '../../common/errors.ts';
import { Progress } from '../../data/progress.ts';
import { extendTokenizer, WordTally } from '../../data/tokenizer-extend.ts';
import { MlmTokenizer } from '../../data/tokenizer.ts';
import { resolveModel } from '../../training/hub.ts';
import { refuseOutInsideRun } from '../../training/run-folder.ts';
import { rawTextOptions, withRawTextOptions, type RawTextArgs } from './text-options.ts';
import { PROGRESS_OPTION } from './progress-option.ts';

interface ExtendArgs extends RawTextArgs {
  from: string;
  corpus: string[];
  add: number;
  out: string;
  'min-frequency': number;
  revision?: string;
  json: boolean;
  progress: boolean;
  show: number;
}

/**
 * Refuses an --out that exists and is not an empty folder (nothing is ever overwritten), or that
 * is, holds or lies inside one of `inputs` (the local paths among the command's inputs: a folder
 * written into a model or run folder would spoil it, e.g. make a run impossible to resume).
 */
export function requireFreshOut(out: string, inputs: ReadonlyArray<{ path: string; flag: string }> = [], flag = '--out'): void {
  if (out.trim() === '') throw new InputError(`${flag} must name a folder`);
  refuseOutputOverInputs(out, inputs.filter((i) => fs.existsSync(i.path)), flag);
  refuseOutInsideRun(out, flag);
  let entries: string[];
  try {
    const st = fs.statSync(out);
    if (!st.isDirectory()) throw new InputError(`${flag} ${out} is a file; give a new or empty folder`);
    entries = fs.readdirSync(out);
  } catch (err) {
    if (err instanceof InputError) throw err;
    return;
  }
  if (entries.length > 0) throw new InputError(`${flag} ${out} already holds files (${firstNames(entries)}); give a new or empty folder`);
}

export const extendCommand: CommandModule<object, ExtendArgs> = {
  command: 'extend',
  describe: "Add the domain words that save the most tokens to a model's tokenizer (old ids unchanged)",
  builder: (y: Argv) =>
    withRawTextOptions(y)
      .option('from', { type: 'string', demandOption: true, describe: 'model folder, Hub id, or tokenizer folder to extend' })
      .option('corpus', { type: 'string', array: true, demandOption: true, describe: 'domain text: files, folders or globs (.txt .jsonl .csv .tsv .parquet .arrow)' })
      .option('add', { type: 'number', demandOption: true, describe: 'how many words to add' })
      .option('out', { type: 'string', demandOption: true, describe: 'new folder for the extended tokenizer' })
      .option('min-frequency', { type: 'number', default: 3, describe: 'least count of a word in the corpus to be added' })
      .option('revision', { type: 'string', describe: 'Hub revision for --from ids' })
      .option('show', { type: 'number', default: 15, describe: 'how many added words to list' })
      .option('json', { type: 'boolean', default: false, describe: 'print one JSON summary on stdout' })
      .option('progress', PROGRESS_OPTION)
      .example('$0 tokenizer extend --from bert-base-uncased --corpus papers/ --add 2000 --out tok-med/', '2,000 medical words for bert-base-uncased')
      .example('$0 model resize --from bert-base-uncased --tokenizer tok-med/ --out bert-med/', 'then grow the model to it (FVT init)') as unknown as Argv<ExtendArgs>,
  handler: async (args: ArgumentsCamelCase<ExtendArgs>) => {
    requireInteger(args.add, 'add', 1);
    requireInteger(args['min-frequency'], 'min-frequency', 1);
    requireInteger(args.show, 'show', 0);
    requireFreshOut(args.out, [{ path: args.from, flag: '--from' }]); // the corpus is checked once resolved, below
    let bar: Progress | null = null;
    const log = (line: string) => { bar?.clear(); process.stderr.write(line + '\n'); }; // the bar's line first
    // The corpus first: a wrong --corpus fails before a download of --from.
    const files = await resolveCorpusFiles(args.corpus, log);
    // The tokenizer written inside a corpus folder would be read back as corpus by the next prepare.
    refuseOutputOverInputs(args.out, corpusInputs(args.corpus, files, '--corpus'));
    const from = await resolveModel(args.from, { revision: args.revision, log });
    const old = await MlmTokenizer.load(from.dir);

    const total = await totalBytes(files);
    const progress = new Progress({ label: 'counting words', total, unit: 'bytes', enabled: args.progress });
    bar = progress;
    const tally = new WordTally(old);
    let bytes = 0;
    for await (const d of requireNonEmpty(readDocuments(files, { ...rawTextOptions(args), log }), files)) {
      tally.add(d.text);
      bytes += d.bytes;
      progress.update(bytes);
    }
    progress.complete(`${tally.total} words, ${tally.words.size} distinct`);

    const r = await extendTokenizer(old, tally, { add: args.add, minFrequency: args['min-frequency'] });
    await writeFolderAtomic(args.out, (tmp) => r.tokenizer.save(tmp), 'extend', { replace: false });

    const summary = {
      from: args.from,
      out: args.out,
      family: old.family,
      old_vocab_size: old.vocabSize,
      vocab_size: r.tokenizer.vocabSize,
      added: r.added.length,
      intermediate_entries: r.intermediate.length,
      candidates: r.candidates,
      words: r.before.words,
      tokens_before: r.before.tokens,
      tokens_after: r.after.tokens,
      tokens_per_word_before: Number(r.before.tokensPerWord.toFixed(4)),
      tokens_per_word_after: Number(r.after.tokensPerWord.toFixed(4)),
      tokenizer_sha256: r.tokenizer.sha256,
      tokens: r.added.map((a) => ({ token: a.token, id: a.id, count: a.count, pieces: a.pieces })),
    };
    if (args.json) {
      process.stdout.write(JSON.stringify(summary) + '\n');
      return;
    }
    const shown = r.added.slice(0, Math.max(0, args.show));
    const lines = [
      `added ${r.added.length} of ${r.candidates} candidate words to ${path.basename(from.dir) || from.dir}'s ${old.family === 'bert' ? 'WordPiece' : 'byte-level BPE'} vocabulary: ${old.vocabSize} -> ${r.tokenizer.vocabSize} ids` +
        (r.intermediate.length ? ` (${r.intermediate.length} of them intermediate merge results)` : ''),
      `tokens per word on the corpus: ${r.before.tokensPerWord.toFixed(3)} -> ${r.after.tokensPerWord.toFixed(3)} (${r.before.tokens} -> ${r.after.tokens} tokens, ${(100 * (1 - r.after.tokens / r.before.tokens)).toFixed(1)}% fewer)`,
      ...shown.map((a) => `  ${a.token.padEnd(24)} x${String(a.count).padEnd(7)} was ${a.pieces.join(' ')}`),
      `wrote ${args.out}; next: mlm model resize --from ${args.from} --tokenizer ${args.out} --out DIR`,
    ];
    process.stdout.write(lines.join('\n') + '\n');
  },
};
