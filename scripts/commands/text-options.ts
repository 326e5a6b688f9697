// The options of the commands that read raw text besides prepare and tokenizer train (evaluate,
// compare, tokenizer extend): the field of .jsonl and table files, paragraphs of .txt files, and
// invalid UTF-8, with the same names and defaults as prepare's.
import type { Argv } from 'yargs';
import type { RawTextOptions } from '../../training/evaluate.ts';

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
