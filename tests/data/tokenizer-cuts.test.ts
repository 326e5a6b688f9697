// Cuts inside long pieces of the chunked encoding path (data/tokenizer.ts, exactCut, forcedCut,
// cutParts): a piece over MAX_PIECE_CHARS is encoded in parts, and the parts' ids and word starts
// must equal the bindings' whole-text encoding wherever the header of data/tokenizer.ts says so.
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_PIECE_CHARS, MlmTokenizer, isCjk, type EncodedText } from '../../data/tokenizer.ts';
import { trainTokenizer } from '../../data/tokenizer-train.ts';

const prose = 'the patient was treated with antibiotics, café naïve x-ray; 病人发烧三天后退烧。 fever resolved.';
const zh = '病人发烧三天后退烧，医生说这是急性支气管炎。我们用抗生素治疗了一周，现在已经好了。';
const ko = '환자는 급성 기관지염으로 항생제 치료를 받았습니다 열이 내렸습니다 ';
let bert: MlmTokenizer;
let roberta: MlmTokenizer;
let robertaLower: MlmTokenizer;

before(async () => {
  bert = (await trainTokenizer([prose, prose], { family: 'bert', vocabSize: 200, lowercase: true })).tokenizer;
  assert.equal(bert.chunkKind, 'whitespace');
  const docs = [prose, zh, ko, prose, zh, ko];
  roberta = (await trainTokenizer(docs, { family: 'roberta', vocabSize: 500, lowercase: false })).tokenizer;
  robertaLower = (await trainTokenizer(docs, { family: 'roberta', vocabSize: 500, lowercase: true })).tokenizer;
  assert.equal(roberta.chunkKind, 'space-prefix');
  assert.equal(robertaLower.chunkKind, 'space-prefix');
});

async function assertWhole(tok: MlmTokenizer, text: string, what: string): Promise<void> {
  const got: EncodedText = await tok.encode(text);
  const [want] = await tok.encodeWhole([text]);
  assert.deepEqual([...got.ids], [...want.ids], `${what}: ids`);
  assert.deepEqual([...got.wordStarts], [...want.wordStarts], `${what}: word starts`);
}

test('U+2B820-U+2B91F are not CJK for the bindings: no cut beside them inside a long word', async () => {
  const normalizer = (await bert.preTokenize('a\u{2B820}b')).map((w) => w.surface);
  assert.deepEqual(normalizer, ['a\u{2B820}b'], 'the bindings put no spaces around U+2B820');
  assert.deepEqual((await bert.preTokenize('a\u{2B920}b')).map((w) => w.surface), ['a', '\u{2B920}', 'b']);
  assert.equal(isCjk(0x2b820), false);
  assert.equal(isCjk(0x2b91f), false);
  assert.equal(isCjk(0x2b81f), true);
  assert.equal(isCjk(0x2b920), true);
  // One word of 1,200 characters (over MAX_PIECE_CHARS, no boundary for the bindings): one [UNK].
  const word = 'ab\u{2B820}'.repeat(300) + 'cd';
  assert.ok(word.length > MAX_PIECE_CHARS);
  await assertWhole(bert, word, 'letters and U+2B820');
  await assertWhole(bert, `the ${word}, fever`, 'inside prose');
});

test('WordPiece: a forced cut is not made before characters the normaliser deletes, so the word after them survives', async () => {
  const long = 'a'.repeat(MAX_PIECE_CHARS);
  const cases: Record<string, string> = {
    'zero-width space, then a comma': long + '\u200b,hello',
    'soft hyphen, then punctuation': 'a'.repeat(MAX_PIECE_CHARS - 1) + 'é\u00ad!x',
    'a control character, then ideographs': 'x'.repeat(MAX_PIECE_CHARS) + '\u0001病人',
    'zero-width space, then an ideographic space': long + '\u200b\u3000hello',
    'U+FFFD and a BOM, then a comma': long + '\ufffd\ufeff,fever',
    'after ideographs': '病人'.repeat(5) + long + '\u200b,hello',
  };
  for (const [name, text] of Object.entries(cases)) {
    assert.ok(text.length > MAX_PIECE_CHARS, name);
    await assertWhole(bert, text, name);
  }
});

test('byte-level BPE: long text without ASCII letters (Chinese, Korean) is cut where the pattern ends a match, not forced', async () => {
  const cases: Record<string, string> = {
    'a Chinese paragraph': zh.repeat(40),
    'Korean words separated by spaces': ko.repeat(40),
    'a Chinese paragraph after ASCII': 'x-ray ' + zh.repeat(40),
    'letters, combining marks and digits': 'e\u0301\u0130\u0661\u0662'.repeat(400),
    'new letters, emoji and apostrophes': '\u{10940}\u{10941}\u2019\u0394\u0394\u3002\u{1F600}\u{1F1EB}\u{1F1F7}\u4e2d\u0027S\u4e2d\u0027re\u00a0\u000b'.repeat(150),
  };
  for (const tok of [roberta, robertaLower]) {
    for (const [name, text] of Object.entries(cases)) {
      assert.ok(text.length > MAX_PIECE_CHARS, name);
      await assertWhole(tok, text, name);
      await assertWhole(tok, `${text} ${text}`, `${name}, twice`);
    }
  }
});
