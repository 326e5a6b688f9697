// The options of every command that reads raw text (prepare, tokenizer train and extend, evaluate,
// compare): the field of .jsonl and table files, paragraphs of .txt files, and invalid UTF-8.
import type { Argv } from 'yargs';
import type { RawTextOptions } from '../../data/corpus.ts';

export interface RawTextArgs {
  'text-field': string;
  'split-paragraphs': boolean;
  'on-invalid-utf8': 'error' | 'replace';
}

export function withRawTextOptions<T>(y: Argv<T>): Argv<T & RawTextArgs> {
  return y
    .option('text-field', { type: 'string', default: 'text', describe: 'field or column with the text (.jsonl and tables)' })
    .option('split-paragraphs', { type: 'boolean', default: false, describe: '.txt: one document per blank-line-separated paragraph' })
    .option('on-invalid-utf8', { choices: ['error', 'replace'] as const, default: 'error' as const, describe: 'invalid UTF-8: stop, or replace with U+FFFD' });
}

export function rawTextOptions(args: RawTextArgs): RawTextOptions {
  return { textField: args['text-field'], splitParagraphs: args['split-paragraphs'], onInvalidUtf8: args['on-invalid-utf8'] };
}
