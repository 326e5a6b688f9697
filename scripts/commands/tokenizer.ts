// `mlm tokenizer train`: trains a WordPiece (bert) or byte-level BPE (roberta) vocabulary on a
// corpus and writes the tokenizer files of docs/formats.md, "Checkpoints" (tokenizer.json, tokenizer_config.json,
// special_tokens_map.json, and vocab.txt or vocab.json + merges.txt).
import * as fs from 'node:fs';
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { corpusInputs, refuseForeignEntries, refuseOutputOverInputs } from '../../data/paths.ts';
import { readDocuments, requireNonEmpty, resolveCorpusFiles, totalBytes } from '../../data/corpus.ts';
import { check, firstNames, InputError, requireWritableFolder } from '../../common/errors.ts';
import { removeStaleTemps, writeFolderAtomic } from '../../common/atomic.ts';
import { Progress } from '../../data/progress.ts';
import { trainTokenizer, type TrainProgress } from '../../data/tokenizer-train.ts';
import type { TokenizerFamily } from '../../data/tokenizer.ts';
import { extendCommand } from './tokenizer-extend.ts';
import { rawTextOptions, withRawTextOptions, type RawTextArgs } from './text-options.ts';
import { PROGRESS_OPTION } from './progress-option.ts';

interface TrainArgs extends RawTextArgs {
  corpus: string[];
  'vocab-size': number;
  out: string;
  family: TokenizerFamily;
  lowercase: boolean;
  'min-frequency': number;
  'limit-alphabet'?: number;
  overwrite: boolean;
  json: boolean;
  progress: boolean;
}

/** Files a tokenizer folder may hold; --overwrite removes these before writing. */
const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.txt', 'vocab.json', 'merges.txt'];

const trainCommand: CommandModule<object, TrainArgs> = {
  command: 'train',
  describe: 'Train a WordPiece (bert) or byte-level BPE (roberta) vocabulary on a corpus',
  builder: (y: Argv) =>
    withRawTextOptions(y)
      .option('corpus', { type: 'string', array: true, demandOption: true, describe: 'files, folders or globs (.txt .jsonl .csv .tsv .parquet .arrow)' })
      .option('vocab-size', { type: 'number', demandOption: true, describe: 'vocabulary size, special tokens included' })
      .option('out', { type: 'string', demandOption: true, describe: 'output folder for the tokenizer files' })
      .option('family', { choices: ['bert', 'roberta'] as const, default: 'bert' as const, describe: 'bert: WordPiece, [CLS]/[SEP]; roberta: byte-level BPE, <s>/</s>' })
      .option('lowercase', { type: 'boolean', default: false, describe: 'lowercase (and, for bert, strip accents) before tokenizing' })
      .option('min-frequency', { type: 'number', default: 2, describe: 'merge only pairs seen at least this often' })
      .option('limit-alphabet', { type: 'number', describe: 'bert: keep only the N most frequent characters (rarer ones become [UNK])' })
      .option('overwrite', { type: 'boolean', default: false, describe: 'write into an --out folder that already holds files' })
      .option('json', { type: 'boolean', default: false, describe: 'print one JSON summary on stdout' })
      .option('progress', PROGRESS_OPTION)
      .example('$0 tokenizer train --corpus papers/ --vocab-size 8000 --lowercase --out tok/', 'an uncased WordPiece vocabulary for a folder of .txt files')
      .example('$0 tokenizer train --corpus "notes/*.jsonl" --text-field body --family roberta --vocab-size 16000 --out tok-bpe/', 'a byte-level BPE vocabulary from the "body" field of JSON lines')
      .example('$0 tokenizer train --corpus corpus.txt --split-paragraphs --vocab-size 4000 --out tok/ --json', 'paragraphs as documents; a JSON summary on stdout') as unknown as Argv<TrainArgs>,
  handler: async (args: ArgumentsCamelCase<TrainArgs>) => {
    const vocabSize = args['vocab-size'];
    const minFrequency = args['min-frequency'];
    const limitAlphabet = args['limit-alphabet'];
    check(Number.isInteger(vocabSize) && vocabSize > 0, `--vocab-size must be a positive integer, got ${vocabSize}`);
    check(Number.isInteger(minFrequency) && minFrequency >= 1, `--min-frequency must be an integer >= 1, got ${minFrequency}`);
    if (limitAlphabet !== undefined) {
      check(args.family === 'bert', '--limit-alphabet applies to --family bert only (byte-level BPE always has 256 byte symbols)');
      check(Number.isInteger(limitAlphabet) && limitAlphabet >= 1, `--limit-alphabet must be a positive integer, got ${limitAlphabet}`);
    }
    checkOutFolder(args.out, args.overwrite);
    requireWritableFolder(args.out, '--out'); // before the training, not after it

    let bar: Progress | null = null;
    const log = (line: string) => { bar?.clear(); process.stderr.write(line + '\n'); }; // the bar's line first
    const files = await resolveCorpusFiles(args.corpus, log);
    refuseOutputOverInputs(args.out, corpusInputs(args.corpus, files, '--corpus'));
    const total = await totalBytes(files);
    const progress = new Progress({ label: 'reading', total, unit: 'bytes', enabled: args.progress });
    bar = progress;
    const docs = requireNonEmpty(
      readDocuments(files, { ...rawTextOptions(args), log }),
      files,
    );
    let bytes = 0;
    let documents = 0;
    async function* texts(): AsyncGenerator<string> {
      for await (const d of docs) {
        bytes += d.bytes;
        documents++;
        progress.update(bytes);
        yield d.text;
      }
    }
    let mergeBar: Progress | undefined;
    const onProgress = (p: TrainProgress) => {
      if (p.phase !== 'merge') return;
      if (mergeBar === undefined) {
        // The corpus has been read when merging starts: its line ends first, in order.
        progress.complete(`${documents} documents`);
        mergeBar = new Progress({ label: 'merging', total: vocabSize, unit: 'count', enabled: args.progress });
        bar = mergeBar;
      }
      mergeBar.update(p.vocab);
    };

    const result = await trainTokenizer(texts(), {
      family: args.family,
      vocabSize,
      lowercase: args.lowercase,
      minFrequency,
      limitAlphabet,
      onProgress,
    });
    if (mergeBar === undefined) progress.complete(`${result.documents} documents, ${result.distinctWords} distinct words`);
    mergeBar?.complete(`${result.distinctWords} distinct words`, result.vocabSize);

    // The whole folder at once: a full disk or Ctrl-C while saving leaves the old tokenizer (with
    // --overwrite, checkOutFolder allowed only tokenizer files there) or the new one, never a mix.
    await removeStaleTemps(args.out, 'tokenizer'); // left by a killed run
    await writeFolderAtomic(args.out, (tmp) => result.tokenizer.save(tmp), 'tokenizer', { replace: args.overwrite });

    if (result.vocabSize < vocabSize) {
      const why = result.stoppedBecause === 'min-frequency'
        ? `no remaining pair occurs ${minFrequency} times or more (lower --min-frequency or add text)`
        : 'the corpus has no more pairs to merge (add text)';
      log(`note: the vocabulary has ${result.vocabSize} tokens, not the ${vocabSize} asked for: ${why}`);
    }
    const summary = {
      out: args.out,
      family: args.family,
      vocab_size: result.vocabSize,
      requested_vocab_size: vocabSize,
      stopped_because: result.stoppedBecause,
      lowercase: args.lowercase,
      min_frequency: minFrequency,
      alphabet_size: result.alphabetSize,
      merges: result.merges,
      documents: result.documents,
      characters: result.characters,
      words: result.words,
      distinct_words: result.distinctWords,
      bytes,
      seconds: Number((result.countSeconds + result.mergeSeconds).toFixed(3)),
      tokenizer_sha256: result.tokenizer.sha256,
      files: result.tokenizer.family === 'bert'
        ? ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.txt']
        : ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.json', 'merges.txt'],
    };
    if (args.json) {
      process.stdout.write(JSON.stringify(summary) + '\n');
      return;
    }
    const s = result.tokenizer.specialTokens;
    process.stdout.write(
      `trained a ${args.family === 'bert' ? 'WordPiece' : 'byte-level BPE'} vocabulary of ${result.vocabSize} tokens ` +
        `(${result.alphabetSize} base symbols, ${result.merges} merges) on ${result.documents} documents ` +
        `in ${summary.seconds.toFixed(1)} s\n` +
        `specials: ${s.pad}=${result.tokenizer.specialIds.pad} ${s.unk}=${result.tokenizer.specialIds.unk} ` +
        `${s.cls}=${result.tokenizer.specialIds.cls} ${s.sep}=${result.tokenizer.specialIds.sep} ${s.mask}=${result.tokenizer.specialIds.mask}\n` +
        `wrote ${summary.files.join(', ')} to ${args.out}\n`,
    );
  },
};

/** Refuses an --out that is a file, or a folder holding anything, unless --overwrite. */
function checkOutFolder(out: string, overwrite: boolean): void {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(out);
  } catch {
    return; // created on save
  }
  check(stat.isDirectory(), `--out ${out} is a file; give a folder for the tokenizer files`);
  const entries = fs.readdirSync(out);
  if (entries.length > 0 && !overwrite) {
    const shown = firstNames(entries);
    throw new InputError(`--out ${out} already holds files (${shown}); choose an empty folder or pass --overwrite`);
  }
  // --overwrite replaces a tokenizer, never the tokenizer of a model beside its weights (the model
  // would no longer match it) or a folder of other files.
  refuseForeignEntries(out, (name, isDir) => !isDir && TOKENIZER_FILES.includes(name), 'tokenizer folder');
}

export const tokenizerCommand: CommandModule = {
  command: 'tokenizer',
  describe: 'Tokenizer tools (train a vocabulary, extend one with domain words)',
  // No <command> positional: yargs would demand it before the message of demandCommand below.
  builder: (y: Argv) =>
    y
      .usage(`$0 tokenizer <command>\n\n${tokenizerCommand.describe}`)
      .command(trainCommand as unknown as CommandModule)
      .command(extendCommand as unknown as CommandModule)
      .demandCommand(1, 'Name a tokenizer command: train, extend')
      .example('$0 tokenizer train --corpus corpus.txt --vocab-size 8000 --out tok/', 'train a WordPiece vocabulary'),
  handler: () => {},
};
