// Tests for data/tokenizer-extend.ts (and `mlm tokenizer extend`): which words are added, that they
// become one token each, that old ids do not move, that the written tokenizer.json gives the
// bindings' ids, and the one-line errors.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Tokenizer } from 'tokenizers';
import { InputError } from '../../common/errors.ts';
import { extendTokenizer, WordTally } from '../../data/tokenizer-extend.ts';
import { MlmTokenizer } from '../../data/tokenizer.ts';
import { parityLines } from '../fixtures/tokenizers/lines.ts';
import { makeTinyCheckpoint, runMlm, tinyTokenizer, type Family } from '../training/tiny-checkpoint.ts';

/** Domain text: three medical words at known counts, between words the tiny vocabularies hold whole. */
const COUNTS: Record<string, number> = { thrombocytopenia: 30, hepatosplenomegaly: 12, cholangitis: 9, rare: 2 };
function domainLines(): string[] {
  const lines: string[] = [];
  for (const [w, n] of Object.entries(COUNTS)) for (let i = 0; i < n; i++) lines.push(` the ${w} the`);
  return lines;
}

function tallyOf(tok: MlmTokenizer, lines: string[]): WordTally {
  const t = new WordTally(tok);
  for (const l of lines) t.add(l);
  return t;
}

const oneLineInput = (pattern: RegExp) => (err: unknown) => {
  assert.ok(err instanceof InputError, String(err));
  assert.match(err.message, pattern);
  assert.ok(!err.message.includes('\n'));
  return true;
};

for (const family of ['bert', 'roberta'] as Family[]) {
  describe(`extendTokenizer (${family})`, () => {
    test('adds the words that save most tokens; each becomes one token; old ids unchanged', async () => {
      const old = await tinyTokenizer(family);
      const tally = tallyOf(old, domainLines());
      assert.equal((await old.tokensOf([family === 'roberta' ? ' the' : 'the']))[0].length, 1, 'the filler is one token');
      const r = await extendTokenizer(old, tally, { add: 3, minFrequency: 3 });
      const surface = (w: string) => (family === 'roberta' ? ` ${w}` : w);
      // The expected ranking: count x (pieces - 1) under the old tokenizer.
      const scored = await Promise.all(['thrombocytopenia', 'hepatosplenomegaly', 'cholangitis'].map(async (w) => {
        const [pieces] = await old.tokensOf([surface(w)]);
        return { w, score: COUNTS[w] * (pieces.length - 1), pieces };
      }));
      scored.sort((a, b) => b.score - a.score);
      assert.deepEqual(r.added.map((a) => a.token.replace(/^Ġ/, '')), scored.map((s) => s.w));
      assert.deepEqual(r.added.map((a) => a.pieces), scored.map((s) => s.pieces));
      assert.ok(!r.added.some((a) => a.token.includes('rare')), 'a word under --min-frequency is not added');
      for (const a of r.added) {
        assert.ok(a.id >= old.vocabSize, `${a.token} gets a new id`);
        const [enc] = await r.tokenizer.encodeBatch([`the ${a.token.replace(/^Ġ/, '')} the`]);
        assert.ok([...enc.ids].includes(a.id), `${a.token} is produced by encoding`);
      }
      for (let id = 0; id < old.vocabSize; id++) assert.equal(r.tokenizer.idToToken(id), old.idToToken(id), `id ${id}`);
      if (family === 'bert') assert.equal(r.tokenizer.vocabSize, old.vocabSize + 3);
      else assert.equal(r.tokenizer.vocabSize, old.vocabSize + 3 + r.intermediate.length);
      assert.equal(r.before.words, tally.total);
      assert.equal(r.before.tokens - r.after.tokens, r.added.reduce((s, a) => s + a.count * (a.pieces.length - 1), 0));
      assert.ok(r.after.tokensPerWord < r.before.tokensPerWord);
    });

    test('an emoji (a character outside the BMP) before a word leaves the word\'s text whole', async () => {
      const old = await tinyTokenizer(family);
      const words = old.preTokenize('great \u{1F600} hepatosplenomegaly \u00e9\u{1F600}x');
      const surfaces = words.map((w) => w.surface.trim());
      assert.ok(surfaces.includes('hepatosplenomegaly'), JSON.stringify(surfaces));
      assert.ok(surfaces.every((w) => !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(w)), `a surrogate pair cut in two: ${JSON.stringify(surfaces)}`);
      // The tally and the extension see the same words as without the emoji (a different one on
      // each line, so that none is itself frequent enough to be added).
      const lines = domainLines().map((l, i) => `${String.fromCodePoint(0x1f600 + i)}${l}`);
      const r = await extendTokenizer(old, tallyOf(old, lines), { add: 3, minFrequency: 3 });
      assert.deepEqual(r.added.map((a) => a.token.replace(/^Ġ/, '')).sort(), ['cholangitis', 'hepatosplenomegaly', 'thrombocytopenia']);
    });

    test('a long document tallied in small windows counts the same words as in one piece', async () => {
      const old = await tinyTokenizer(family);
      const text = [...parityLines(300), ...domainLines()].join(' ');
      const whole = new WordTally(old, text.length + 1);
      whole.add(text);
      const windowed = new WordTally(old, 400); // longer than any word of the text (a longer word would be cut)
      windowed.add(text);
      assert.ok(old.windows(text, 400).length > 100, 'the text is cut into many windows');
      assert.equal(windowed.total, whole.total);
      assert.deepEqual([...windowed.words].sort(), [...whole.words].sort());
    });

    test('the written tokenizer.json gives the bindings\' ids for 1,000 varied lines', async () => {
      const old = await tinyTokenizer(family);
      const r = await extendTokenizer(old, tallyOf(old, domainLines()), { add: 3 });
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-extend-'));
      try {
        await r.tokenizer.save(dir);
        const reloaded = await MlmTokenizer.load(dir);
        const bindings = Tokenizer.fromString(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'));
        const lines = [...parityLines(1000), ...domainLines().slice(0, 5)];
        const ours = await reloaded.encodeBatch(lines);
        const theirs = await bindings.encodeBatch(lines, { addSpecialTokens: false });
        for (let i = 0; i < lines.length; i++) assert.deepEqual([...ours[i].ids], theirs[i].getIds(), `line ${i}: ${JSON.stringify(lines[i]).slice(0, 80)}`);
        // The model-input files agree with tokenizer.json too.
        if (family === 'bert') assert.equal(fs.readFileSync(path.join(dir, 'vocab.txt'), 'utf8').trimEnd().split('\n').length, r.tokenizer.vocabSize);
        else assert.ok(fs.readFileSync(path.join(dir, 'merges.txt'), 'utf8').includes(r.added[0].pieces.slice(0, 2).join(' ')));
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });

    test('more words asked for than qualify, and a corpus with nothing to add, are one-line errors', async () => {
      const old = await tinyTokenizer(family);
      await assert.rejects(extendTokenizer(old, tallyOf(old, domainLines()), { add: 50 }), oneLineInput(/^only 3 words qualify .*; lower --add to at most 3 or --min-frequency$/));
      const plain = tallyOf(old, ['the the the and and and of of of']);
      await assert.rejects(extendTokenizer(old, plain, { add: 1 }), oneLineInput(/^the corpus has no word seen at least 3 times that the tokenizer cuts into several pieces/));
    });
  });
}

describe('mlm tokenizer extend', () => {
  const run = (args: string[]) => runMlm(args);

  test('writes a tokenizer folder and a JSON summary; bad input exits 2 and writes nothing', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-extend-cli-'));
    try {
      const ck = await makeTinyCheckpoint(path.join(tmp, 'model'), 'bert');
      const corpus = path.join(tmp, 'domain.txt');
      fs.writeFileSync(corpus, domainLines().join('\n') + '\n');
      const out = path.join(tmp, 'tok');
      const r = await run(['tokenizer', 'extend', '--from', ck.dir, '--corpus', corpus, '--add', '2', '--out', out, '--json', '--no-progress']);
      assert.equal(r.code, 0, r.stderr);
      const s = JSON.parse(r.stdout);
      // The keys of docs/formats.md ("Command output"), in order.
      assert.deepEqual(Object.keys(s), [
        'from', 'out', 'family', 'old_vocab_size', 'vocab_size', 'added', 'intermediate_entries', 'candidates', 'words',
        'tokens_before', 'tokens_after', 'tokens_per_word_before', 'tokens_per_word_after', 'tokenizer_sha256', 'tokens',
      ]);
      assert.deepEqual(s.tokens.map((t: object) => Object.keys(t)), [['token', 'id', 'count', 'pieces'], ['token', 'id', 'count', 'pieces']]);
      assert.equal(s.added, 2);
      assert.equal(s.vocab_size, ck.tokenizer.vocabSize + 2);
      assert.ok(s.tokens_per_word_after < s.tokens_per_word_before);
      assert.deepEqual(fs.readdirSync(out).sort(), ['special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json', 'vocab.txt']);

      const cases: Array<[string[], RegExp]> = [
        [['--add', '40'], /^mlm: error: only 3 words qualify/],
        [['--add', '0'], /^mlm: error: --add must be an integer >= 1/],
        [['--add', '1', '--show', '-3'], /^mlm: error: --show must be an integer >= 0/],
      ];
      for (const [extra, pattern] of cases) {
        const bad = await run(['tokenizer', 'extend', '--from', ck.dir, '--corpus', corpus, '--out', path.join(tmp, 'bad'), '--no-progress', ...extra]);
        assert.equal(bad.code, 2, bad.stderr);
        assert.match(bad.stderr, pattern);
        assert.equal(bad.stderr.trimEnd().split('\n').length, 1, bad.stderr);
        assert.ok(!fs.existsSync(path.join(tmp, 'bad')), 'nothing written');
      }
      // An --out inside the corpus folder (the next prepare would read the tokenizer as corpus).
      const corpusDir = path.join(tmp, 'corpus-dir');
      fs.mkdirSync(corpusDir);
      fs.copyFileSync(corpus, path.join(corpusDir, 'domain.txt'));
      const inside = await run(['tokenizer', 'extend', '--from', ck.dir, '--corpus', corpusDir, '--add', '1', '--out', path.join(corpusDir, 'tok'), '--no-progress']);
      assert.equal(inside.code, 2, inside.stderr);
      assert.match(inside.stderr, /^mlm: error: --out \S+ is inside the input \S+corpus-dir \(--corpus\); writing there could delete or mix with the inputs, choose an --out outside them\n$/);
      assert.deepEqual(fs.readdirSync(corpusDir), ['domain.txt']);
      // Inside the model folder (--from), nor there for model resize and compare: a folder written
      // into a model or run folder spoils it (a run that holds it cannot be resumed).
      const modelFiles = fs.readdirSync(ck.dir).sort();
      for (const args of [
        ['tokenizer', 'extend', '--from', ck.dir, '--corpus', corpus, '--add', '1', '--out', path.join(ck.dir, 'tok'), '--no-progress'],
        ['model', 'resize', '--from', ck.dir, '--tokenizer', ck.dir, '--out', path.join(ck.dir, 'resized')],
        ['compare', '--model', ck.dir, ck.dir, '--data', corpus, '--out', path.join(ck.dir, 'cmp'), '--no-progress'],
      ]) {
        const r = await run(args);
        assert.equal(r.code, 2, r.stderr);
        assert.match(r.stderr, /^mlm: error: --out \S+ is inside the input \S+ \((--from|--model)\); writing there could delete or mix with the inputs, choose an --out outside them\n$/, args[0]);
      }
      assert.deepEqual(fs.readdirSync(ck.dir).sort(), modelFiles);
      // An existing non-empty --out is never overwritten.
      const again = await run(['tokenizer', 'extend', '--from', ck.dir, '--corpus', corpus, '--add', '1', '--out', out, '--no-progress']);
      assert.equal(again.code, 2);
      assert.match(again.stderr, /already holds files/);
      // A tokenizer type mlmkit does not support (Unigram).
      const uni = path.join(tmp, 'unigram');
      fs.mkdirSync(uni);
      fs.writeFileSync(path.join(uni, 'tokenizer.json'), JSON.stringify({ version: '1.0', truncation: null, padding: null, added_tokens: [], normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null, model: { type: 'Unigram', unk_id: 0, vocab: [['<unk>', 0], ['a', -1]], byte_fallback: false } }));
      const u = await run(['tokenizer', 'extend', '--from', uni, '--corpus', corpus, '--add', '1', '--out', path.join(tmp, 'bad'), '--no-progress']);
      assert.equal(u.code, 2, u.stderr);
      assert.match(u.stderr, /unsupported tokenizer model type "Unigram"/);
      assert.ok(!fs.existsSync(path.join(tmp, 'bad')));
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});
