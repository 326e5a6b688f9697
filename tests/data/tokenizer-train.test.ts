// Tests for data/tokenizer-train.ts (and the `mlm tokenizer train` command): vocabulary size,
// determinism, the merge loop against a from-scratch reference, special tokens, word starts,
// save/reload, and the errors.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { byteLevelAlphabet } from 'tokenizers';
import { InputError } from '../../common/errors.ts';
import { Rng } from '../../common/rng.ts';
import { MlmTokenizer, type TokenizerFamily } from '../../data/tokenizer.ts';
import { WordCounter, learnVocabulary, trainTokenizer, trainingPipeline } from '../../data/tokenizer-train.ts';
import { PROSE, parityLines } from '../fixtures/tokenizers/lines.ts';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
let tmp: string;

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-train-test-'));
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

async function tokens(tok: MlmTokenizer, text: string): Promise<string[]> {
  return (await tok.encodeWithSpecials(text)).tokens.slice(1, -1);
}

/** BPE learned the slow way: recount every pair after every merge. Same id and tie rules. */
function referenceLearn(counts: Map<string, number>, family: TokenizerFamily, vocabSize: number, minFrequency: number) {
  const wp = family === 'bert';
  const vocab = wp ? ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] : ['<s>', '<pad>', '</s>', '<unk>', '<mask>'];
  const byCp = (a: string, b: string) => a.codePointAt(0)! - b.codePointAt(0)!;
  const entries = [...counts].map(([w, c]) => [Array.from(w), c] as [string[], number]);
  const alphabet = wp ? [...new Set(entries.flatMap(([cs]) => cs))].sort(byCp) : byteLevelAlphabet().sort(byCp);
  vocab.push(...alphabet);
  if (wp) vocab.push(...[...new Set(entries.flatMap(([cs]) => cs.slice(1)))].sort(byCp).map((c) => '##' + c));
  const id = new Map(vocab.map((t, i) => [t, i]));
  const words = entries.map(([cs, c]) => ({ s: cs.map((ch, i) => id.get(i > 0 && wp ? '##' + ch : ch)!), c }));
  const merges: Array<[string, string]> = [];
  const merged = new Set<string>();
  let stopped = 'vocab-size';
  while (vocab.length < vocabSize) {
    const pc = new Map<string, number>();
    for (const w of words) for (let i = 0; i + 1 < w.s.length; i++) pc.set(`${w.s[i]},${w.s[i + 1]}`, (pc.get(`${w.s[i]},${w.s[i + 1]}`) ?? 0) + w.c);
    let best: [number, number] | null = null;
    let bestCount = 0;
    for (const [k, c] of pc) {
      const [a, b] = k.split(',').map(Number);
      if (c > bestCount || (c === bestCount && best && (a < best[0] || (a === best[0] && b < best[1])))) {
        best = [a, b];
        bestCount = c;
      }
    }
    if (!best) {
      stopped = 'no-pairs';
      break;
    }
    if (bestCount < minFrequency) {
      stopped = 'min-frequency';
      break;
    }
    const [a, b] = best;
    const right = wp && vocab[b].startsWith('##') ? vocab[b].slice(2) : vocab[b];
    const tok = vocab[a] + right;
    let z = id.get(tok);
    if (z === undefined) {
      z = vocab.length;
      vocab.push(tok);
      id.set(tok, z);
    }
    if (!merged.has(`${a},${b}`)) {
      merged.add(`${a},${b}`);
      merges.push([vocab[a], vocab[b]]);
    }
    for (const w of words) {
      const out: number[] = [];
      for (let i = 0; i < w.s.length; i++) {
        if (i + 1 < w.s.length && w.s[i] === a && w.s[i + 1] === b) {
          out.push(z);
          i++;
        } else out.push(w.s[i]);
      }
      w.s = out;
    }
  }
  return { vocab, merges: wp ? [] : merges, stopped };
}

describe('learnVocabulary', () => {
  test('the incremental merge loop equals a from-scratch recount on random corpora', () => {
    for (let seed = 1; seed <= 12; seed++) {
      const rng = new Rng(seed);
      const counts = new Map<string, number>();
      const letters = 'abcdeé'.slice(0, 3 + (seed % 4));
      for (let i = 0; i < 150; i++) {
        let w = '';
        const len = 1 + rng.int(9);
        for (let j = 0; j < len; j++) w += letters[rng.int(letters.length)];
        counts.set(w, (counts.get(w) ?? 0) + 1 + rng.int(20));
      }
      for (const family of ['bert', 'roberta'] as const) {
        if (family === 'roberta' && letters.includes('é')) continue; // byte-level words are byte symbols
        for (const [vocabSize, minFrequency] of [[10_000, 1], [10_000, 5], [family === 'bert' ? 40 : 290, 2]]) {
          const got = learnVocabulary(counts, { family, vocabSize, minFrequency });
          const ref = referenceLearn(counts, family, vocabSize, minFrequency);
          assert.deepEqual(got.vocab, ref.vocab, `seed ${seed} ${family} ${vocabSize}/${minFrequency}: vocab`);
          assert.deepEqual(got.merges, ref.merges, `seed ${seed} ${family}: merges`);
          assert.equal(got.stoppedBecause, ref.stopped);
        }
      }
    }
  });

  test('ties go to the smaller pair of ids; counts weight by word frequency', () => {
    // 'ab' x3 and 'cd' x3 tie: (a, ##b) has the smaller ids and is merged first.
    const got = learnVocabulary(new Map([['cd', 3], ['ab', 3], ['xy', 2]]), { family: 'bert', vocabSize: 5 + 6 + 3 + 2, minFrequency: 1 });
    assert.deepEqual(got.vocab.slice(-2), ['ab', 'cd']);
  });
});

describe('trainTokenizer', () => {
  test('honours the vocabulary size exactly, for both families', async () => {
    for (const [family, size] of [['bert', 300], ['bert', 451], ['roberta', 300], ['roberta', 517]] as const) {
      const r = await trainTokenizer([PROSE], { family, vocabSize: size, lowercase: family === 'bert' });
      assert.equal(r.vocabSize, size);
      assert.equal(r.tokenizer.vocabSize, size);
      assert.equal(r.requestedVocabSize, size);
      assert.equal(r.stoppedBecause, 'vocab-size');
    }
  });

  test('is deterministic: the same corpus gives a byte-identical tokenizer.json', async () => {
    const corpus = [PROSE, ...parityLines(300)];
    for (const family of ['bert', 'roberta'] as const) {
      const opts = { family, vocabSize: family === 'bert' ? 1500 : 700, lowercase: false };
      const a = await trainTokenizer(corpus, opts);
      const b = await trainTokenizer(corpus.slice(), opts);
      assert.equal(a.tokenizer.toJson(), b.tokenizer.toJson());
      assert.equal(a.tokenizer.sha256, b.tokenizer.sha256);
    }
  });

  test('an async iterable of documents gives the same result as an array', async () => {
    async function* docs() {
      for (const line of PROSE.split('\n')) yield line;
    }
    const a = await trainTokenizer(docs(), { family: 'bert', vocabSize: 400, lowercase: true });
    const b = await trainTokenizer(PROSE.split('\n'), { family: 'bert', vocabSize: 400, lowercase: true });
    assert.equal(a.tokenizer.sha256, b.tokenizer.sha256);
    assert.equal(a.documents, PROSE.split('\n').length);
  });

  test('WordPiece: sensible pieces, ## continuations, specials at 0-4, word starts from word ids', async () => {
    const r = await trainTokenizer([PROSE], { family: 'bert', vocabSize: 500, lowercase: true });
    const tok = r.tokenizer;
    assert.deepEqual(tok.specialIds, { pad: 0, unk: 1, cls: 2, sep: 3, mask: 4 });
    assert.deepEqual([0, 1, 2, 3, 4].map((i) => tok.idToToken(i)), ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']);
    assert.equal(tok.family, 'bert');
    assert.equal(tok.lowercase, true);
    assert.deepEqual(await tokens(tok, 'The tokenizer learned tokenization'), ['the', 'tokenizer', 'learned', 'tokeniz', '##ation']);
    assert.deepEqual(await tokens(tok, 'Reading, writing'), ['reading', ',', 'writ', '##ing']);
    const vocab = Array.from({ length: tok.vocabSize }, (_, i) => tok.idToToken(i)!);
    assert.ok(vocab.filter((t) => t.startsWith('##')).length > 50);
    assert.ok(vocab.includes('##ing') && vocab.includes('##ation'));
    // Word starts: only the first piece of each word.
    const e = await tok.encode('unbelievable tokenization');
    const pieces = await tokens(tok, 'unbelievable tokenization');
    assert.equal(pieces[0], 'un');
    assert.ok(pieces.length > 3);
    const expected = pieces.map((p) => (p.startsWith('##') ? 0 : 1));
    assert.deepEqual(Array.from(e.wordStarts), expected);
    assert.equal(e.wordStarts.reduce((a, b) => a + b, 0), 2);
  });

  test('byte-level BPE: Ġ pieces, specials <s>=0 <pad>=1 </s>=2 <unk>=3 <mask>=4, punctuation starts a word', async () => {
    const r = await trainTokenizer([PROSE], { family: 'roberta', vocabSize: 800, lowercase: false });
    const tok = r.tokenizer;
    assert.deepEqual(tok.specialIds, { cls: 0, pad: 1, sep: 2, unk: 3, mask: 4 });
    assert.deepEqual([0, 1, 2, 3, 4].map((i) => tok.idToToken(i)), ['<s>', '<pad>', '</s>', '<unk>', '<mask>']);
    assert.equal(tok.family, 'roberta');
    assert.equal(r.alphabetSize, 256);
    const json = JSON.parse(tok.toJson());
    assert.equal(json.added_tokens.find((t: { content: string }) => t.content === '<mask>').lstrip, true);
    assert.equal(json.pre_tokenizer.type, 'ByteLevel');
    assert.equal(json.pre_tokenizer.add_prefix_space, false);
    assert.equal(json.post_processor.type, 'RobertaProcessing');
    assert.deepEqual(await tokens(tok, ' the tokenizer learned'), ['Ġthe', 'Ġtokenizer', 'Ġlearned']);
    const e = await tok.encode('learning, reading');
    const pieces = await tokens(tok, 'learning, reading');
    // "learning" (maybe several pieces), "," (new word), " reading" (new word)
    const commaAt = pieces.indexOf(',');
    assert.ok(commaAt > 0);
    assert.equal(e.wordStarts[0], 1);
    assert.equal(e.wordStarts[commaAt], 1);
    assert.equal(e.wordStarts[commaAt + 1], 1);
    assert.ok(pieces[commaAt + 1].startsWith('Ġ'));
    assert.equal(e.wordStarts.reduce((a, b) => a + b, 0), 3);
    assert.equal(tok.decode(Array.from(e.ids)), 'learning, reading');
  });

  test('a corpus that runs out of pairs gives a smaller vocabulary and says why', async () => {
    const r = await trainTokenizer(['abc abc abc'], { family: 'bert', vocabSize: 1000, lowercase: false });
    assert.ok(r.vocabSize < 1000);
    assert.equal(r.stoppedBecause, 'no-pairs');
    assert.deepEqual(await tokens(r.tokenizer, 'abc'), ['abc']);
    const rare = await trainTokenizer(['abc def ghi'], { family: 'roberta', vocabSize: 1000, lowercase: false });
    assert.equal(rare.stoppedBecause, 'min-frequency');
    assert.equal(rare.vocabSize, 5 + 256);
    const once = await trainTokenizer(['abc def ghi'], { family: 'roberta', vocabSize: 1000, lowercase: false, minFrequency: 1 });
    assert.ok(once.vocabSize > 5 + 256);
  });

  test('a vocabulary size below specials + alphabet is an InputError naming the minimum', async () => {
    await assert.rejects(trainTokenizer([PROSE], { family: 'bert', vocabSize: 50, lowercase: true }), (err: unknown) => {
      assert.ok(err instanceof InputError);
      assert.match(err.message, /--vocab-size 50 is below the minimum for this corpus, \d+ \(5 special tokens \+ \d+ characters \+ \d+ '##' continuation pieces\); ask for at least \d+, or keep fewer characters \(--limit-alphabet 22 fits any corpus\)$/);
      return true;
    });
    // The --limit-alphabet it names fits; below one character and its piece none does, and the
    // message names none.
    const limited = await trainTokenizer([PROSE], { family: 'bert', vocabSize: 50, lowercase: true, limitAlphabet: 22 });
    assert.ok(limited.vocabSize <= 50);
    await assert.rejects(trainTokenizer([PROSE], { family: 'bert', vocabSize: 6, lowercase: true }), (err: unknown) =>
      err instanceof InputError && /ask for at least \d+$/.test(err.message));
    await assert.rejects(trainTokenizer([PROSE], { family: 'roberta', vocabSize: 260, lowercase: false }), /below the minimum for byte-level BPE, 261/);
    // The minimum itself works.
    const min = Number(/at least (\d+)/.exec(await trainTokenizer([PROSE], { family: 'bert', vocabSize: 50, lowercase: true }).catch((e: Error) => e.message) as string)![1]);
    const r = await trainTokenizer([PROSE], { family: 'bert', vocabSize: min, lowercase: true });
    assert.equal(r.vocabSize, min);
    assert.equal(r.merges, 0);
  });

  test('bad options and an empty corpus', async () => {
    await assert.rejects(trainTokenizer([PROSE], { family: 'bert', vocabSize: 0, lowercase: true }), InputError);
    await assert.rejects(trainTokenizer([PROSE], { family: 'bert', vocabSize: 500, lowercase: true, minFrequency: 0 }), InputError);
    await assert.rejects(trainTokenizer([PROSE], { family: 'roberta', vocabSize: 500, lowercase: true, limitAlphabet: 10 }), /WordPiece \(bert\) only/);
    await assert.rejects(trainTokenizer(['', '   '], { family: 'bert', vocabSize: 500, lowercase: true }), /no words to train on/);
  });

  test('limitAlphabet keeps the most frequent characters; words with others are not trained on', async () => {
    const r = await trainTokenizer([PROSE + ' 中文 中文'], { family: 'bert', vocabSize: 400, lowercase: true, limitAlphabet: 30 });
    const vocab = Array.from({ length: r.tokenizer.vocabSize }, (_, i) => r.tokenizer.idToToken(i)!);
    assert.ok(!vocab.includes('中'));
    assert.equal(vocab.slice(5, 35).length, 30);
    assert.deepEqual(await tokens(r.tokenizer, '中'), ['[UNK]']);
  });

  test('save() writes all files; the reloaded tokenizer encodes identically', async () => {
    const lines = parityLines(400);
    for (const family of ['bert', 'roberta'] as const) {
      const r = await trainTokenizer([PROSE, ...lines.slice(0, 200)], { family, vocabSize: family === 'bert' ? 2000 : 900, lowercase: false });
      const dir = path.join(tmp, `saved-${family}`);
      await r.tokenizer.save(dir);
      const names = fs.readdirSync(dir).sort();
      assert.deepEqual(names, family === 'bert'
        ? ['special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json', 'vocab.txt']
        : ['merges.txt', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json', 'vocab.json']);
      const again = await MlmTokenizer.load(dir);
      assert.equal(again.sha256, r.tokenizer.sha256);
      assert.deepEqual(await again.encodeBatch(lines), await r.tokenizer.encodeBatch(lines));
    }
  });
});

describe('WordCounter', () => {
  test('counts exactly what the bindings pre-tokenise, document by document', () => {
    const docs = [PROSE, ...parityLines(300)];
    for (const [family, lowercase] of [['bert', true], ['bert', false], ['roberta', false], ['roberta', true]] as const) {
      const opts = { family, vocabSize: 1000, lowercase };
      const counter = new WordCounter(family, opts);
      for (const d of docs) counter.add(d);
      const got = counter.finish();
      const { normalizer, preTokenizer } = trainingPipeline(family, opts);
      const ref = new Map<string, number>();
      for (const d of docs) {
        for (const [w] of preTokenizer.preTokenizeString(normalizer ? normalizer.normalizeString(d) : d)) ref.set(w, (ref.get(w) ?? 0) + 1);
      }
      assert.equal(got.size, ref.size);
      for (const [w, c] of ref) assert.equal(got.get(w), c, `${family}: count of ${JSON.stringify(w)}`);
    }
  });
});

describe('mlm tokenizer train (CLI)', () => {
  const mlm = (args: string[]) => spawnSync(process.execPath, [path.join(ROOT, 'scripts/mlm.mjs'), ...args], { encoding: 'utf8', cwd: ROOT });

  test('trains, writes the files and prints one JSON summary with --json', () => {
    const corpus = path.join(tmp, 'corpus.txt');
    fs.writeFileSync(corpus, PROSE.split('\n').join('\n\n'));
    const out = path.join(tmp, 'cli-tok');
    const r = mlm(['tokenizer', 'train', '--corpus', corpus, '--split-paragraphs', '--vocab-size', '400', '--lowercase', '--out', out, '--json', '--no-progress']);
    assert.equal(r.status, 0, r.stderr);
    const summary = JSON.parse(r.stdout);
    // The keys of docs/formats.md ("Command output"), in order.
    assert.deepEqual(Object.keys(summary), [
      'out', 'family', 'vocab_size', 'requested_vocab_size', 'stopped_because', 'lowercase', 'min_frequency', 'alphabet_size',
      'merges', 'documents', 'characters', 'words', 'distinct_words', 'bytes', 'seconds', 'tokenizer_sha256', 'files',
    ]);
    assert.deepEqual([...summary.files].sort(), fs.readdirSync(out).sort());
    assert.equal(summary.vocab_size, 400);
    assert.equal(summary.family, 'bert');
    assert.equal(summary.documents, PROSE.trim().split('\n').length);
    assert.deepEqual(fs.readdirSync(out).sort(), ['special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json', 'vocab.txt']);

    // An --out folder that holds files is refused (exit 2) unless --overwrite.
    const again = mlm(['tokenizer', 'train', '--corpus', corpus, '--vocab-size', '400', '--family', 'roberta', '--out', out]);
    assert.equal(again.status, 2);
    assert.match(again.stderr, /already holds files .*--overwrite/);
    const over = mlm(['tokenizer', 'train', '--corpus', corpus, '--vocab-size', '400', '--family', 'roberta', '--out', out, '--overwrite', '--json', '--no-progress']);
    assert.equal(over.status, 0, over.stderr);
    assert.deepEqual(fs.readdirSync(out).sort(), ['merges.txt', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json', 'vocab.json']);
    // Not a model's folder, though: its weights would no longer match the tokenizer.
    fs.writeFileSync(path.join(out, 'model.safetensors'), 'weights');
    const model = mlm(['tokenizer', 'train', '--corpus', corpus, '--vocab-size', '400', '--out', out, '--overwrite', '--no-progress']);
    assert.equal(model.status, 2);
    assert.match(model.stderr, /^mlm: error: --out .* holds files that are not part of a tokenizer folder \(model\.safetensors\); --overwrite replaces only a tokenizer folder/m);
    assert.ok(fs.existsSync(path.join(out, 'vocab.json')), 'the tokenizer there is untouched');
    fs.rmSync(path.join(out, 'model.safetensors'));

    const small = mlm(['tokenizer', 'train', '--corpus', corpus, '--vocab-size', '20', '--out', path.join(tmp, 'cli-small'), '--no-progress']);
    assert.equal(small.status, 2);
    assert.match(small.stderr, /below the minimum for this corpus/);
  });
});
