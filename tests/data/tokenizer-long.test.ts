// Pathological text in the chunked encoding path: long words and long lines without whitespace are
// cut so that the bindings never see more than MAX_PIECE_CHARS at once (data/tokenizer.ts, "Bounds
// for pathological text"). WordPiece ids stay exactly HF's whole-text ids; byte-level BPE ids equal
// the parts' own ids, cut every MAX_PIECE_CHARS. And `mlm prepare` on a 50 MB single line completes.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { exactCut, MAX_PIECE_CHARS, MlmTokenizer, WINDOW_CHARS, type EncodedText } from '../../data/tokenizer.ts';
import { trainTokenizer } from '../../data/tokenizer-train.ts';
import { readManifest } from '../../data/shards.ts';
import { Rng } from '../../common/rng.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const mlm = path.join(root, 'scripts', 'mlm.mjs');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'mlm-long-'));
const prose = 'the patient was treated with antibiotics for acute bronchitis, café naïve x-ray 250 mg; 病人发烧三天后退烧。 fever resolved.';
let bert: MlmTokenizer;
let roberta: MlmTokenizer;

async function* docs(): AsyncGenerator<string> {
  for (let i = 0; i < 50; i++) yield prose;
}

before(async () => {
  bert = (await trainTokenizer(docs(), { family: 'bert', vocabSize: 300, lowercase: true })).tokenizer;
  roberta = (await trainTokenizer(docs(), { family: 'roberta', vocabSize: 400, lowercase: false })).tokenizer;
  assert.equal(bert.chunkKind, 'whitespace');
  assert.equal(roberta.chunkKind, 'space-prefix');
});

function assertSame(got: EncodedText, want: EncodedText, what: string) {
  assert.deepEqual([...got.ids], [...want.ids], `${what}: ids`);
  assert.deepEqual([...got.wordStarts], [...want.wordStarts], `${what}: word starts`);
}

test('HF WordPiece turns a word longer than max_input_chars_per_word (100) into one [UNK]; the capped path matches it exactly', async () => {
  const unk = bert.specialIds.unk;
  const [w100] = await bert.encodeWhole(['a'.repeat(100)]);
  assert.ok(w100.ids.length > 1 && !w100.ids.includes(unk), 'a 100-letter word is split into pieces');
  const [w101] = await bert.encodeWhole(['a'.repeat(101)]);
  assert.deepEqual([...w101.ids], [unk]);
  const rng = new Rng(5);
  const cases: Record<string, string> = {
    'an ASCII word of 5,000 letters and digits': Array.from({ length: 5000 }, () => 'abcdefghij0123456789'[rng.int(20)]).join(''),
    'accented words joined by commas (cut at punctuation)': Array.from({ length: 800 }, (_, i) => ['café', 'naïve', 'fever', 'x-ray'][i % 4]).join(','),
    '5,000 accented letters, no boundary at all (forced cuts)': 'é'.repeat(5000),
    'decomposed accents: letters and combining marks (never cut before a mark)': 'e\u0301'.repeat(2600),
    'CJK without spaces (cut before ideographs)': '病人发烧三天后退烧'.repeat(400),
    'long words inside prose': (prose + ' ' + 'x'.repeat(1500) + ' é' + 'y'.repeat(2500) + ' ').repeat(5),
    'non-ASCII spaces and a long run': 'a\u00a0'.repeat(700) + 'ü'.repeat(3000) + '\u3000b',
  };
  for (const [name, text] of Object.entries(cases)) {
    assert.ok(text.length > MAX_PIECE_CHARS, name);
    const [want] = await bert.encodeWhole([text]);
    assertSame(await bert.encode(text), want, name);
  }
});

test('texts longer than a window are cut at whitespace or, failing that, where WordPiece gives [UNK] anyway: ids as HF gives them', async () => {
  const words = prose.split(' ');
  const rng = new Rng(9);
  const parts: string[] = [];
  let n = 0;
  while (n < WINDOW_CHARS + 5000) {
    const w = words[rng.int(words.length)];
    parts.push(w);
    n += w.length + 1;
  }
  const text = parts.join(rng.int(2) ? ' ' : '\n');
  const [want] = await bert.encodeWhole([text]);
  assertSame(await bert.encode(text), want, 'prose over one window');
  // No whitespace for more than a window: forced window cuts inside one giant word.
  const giant = 'é'.repeat(WINDOW_CHARS + 3000);
  assert.deepEqual([...(await bert.encode('start ' + giant + ' end')).ids], [...(await bert.encodeWhole(['start ' + giant + ' end']))[0].ids]);
});

test('byte-level BPE: a word over MAX_PIECE_CHARS is merged in parts of MAX_PIECE_CHARS, one word, lossless', async () => {
  const rng = new Rng(11);
  const word = Array.from({ length: 2 * MAX_PIECE_CHARS + 500 }, () => 'abcdefghijklmnopqrstuvwxyz'[rng.int(26)]).join('');
  const text = `the patient ${word} fever`;
  const got = await roberta.encode(text);
  // Expected: the text's pieces, the long word encoded as its three parts.
  const start = text.indexOf(word) - 1; // the word's piece includes its leading space
  const pieces = ['the', ' patient', text.slice(start, start + MAX_PIECE_CHARS), text.slice(start + MAX_PIECE_CHARS, start + 2 * MAX_PIECE_CHARS),
    text.slice(start + 2 * MAX_PIECE_CHARS, start + 1 + word.length), ' fever'];
  const encs = await roberta.encodeWhole(pieces);
  const ids = encs.flatMap((e) => [...e.ids]);
  assert.deepEqual([...got.ids], ids);
  // Word starts: the, patient, the long word (once), fever.
  assert.equal(got.wordStarts.reduce((s, x) => s + x, 0), 4);
  assert.equal(roberta.decode(got.ids), text);
  // Ordinary text keeps HF's ids exactly.
  const [want] = await roberta.encodeWhole([prose]);
  assertSame(await roberta.encode(prose), want, 'prose');
});

test('exactCut: WordPiece cuts at whitespace and lone punctuation, never before a combining mark; BPE at class changes but not after an apostrophe', () => {
  assert.equal(exactCut('abc def', 0, 5, 'whitespace'), 3);
  assert.equal(exactCut('abc,def', 0, 5, 'whitespace'), 4); // after the comma
  assert.equal(exactCut('abc<\u0338def', 0, 6, 'whitespace'), -1); // '<' + mark may compose: no cut around it
  assert.equal(exactCut('abcdefg', 0, 6, 'whitespace'), -1);
  assert.equal(exactCut('ab病c', 0, 3, 'whitespace', true), 3); // after the ideograph
  assert.equal(exactCut('ab病\u0301c', 0, 3, 'whitespace', true), 2); // before it: its mark stays with it
  assert.equal(exactCut('ab病c', 0, 3, 'whitespace', false), -1);
  assert.equal(exactCut("ab's", 0, 3, 'space-prefix'), 2); // before the apostrophe, not after it
  assert.equal(exactCut('abc123', 0, 4, 'space-prefix'), 3);
  assert.equal(exactCut('abcdef', 0, 4, 'space-prefix'), -1);
});

test('mlm prepare on a 50 MB single line without whitespace completes: one [UNK] in one padded block', () => {
  const tokDir = path.join(work, 'tok');
  fs.mkdirSync(tokDir);
  return bert.save(tokDir).then(async () => {
    const file = path.join(work, 'line.txt');
    const rng = new Rng(3);
    const block = Buffer.alloc(1 << 20);
    for (let i = 0; i < block.length; i++) block[i] = 97 + rng.int(26);
    const fd = fs.openSync(file, 'w');
    for (let i = 0; i < 50; i++) fs.writeSync(fd, block);
    fs.closeSync(fd);
    const out = path.join(work, 'out');
    const r = spawnSync(process.execPath, [mlm, 'prepare', '--corpus', file, '--tokenizer', tokDir, '--out', out, '--no-progress', '--validation-split', '0'],
      { encoding: 'utf8', env: { ...process.env, MLM_DEBUG: '' } });
    assert.equal(r.status, 0, r.stderr);
    const m = await readManifest(out);
    assert.equal(m.splits.train.tokens, 1);
    assert.equal(m.splits.train.unknown_tokens, 1);
    assert.equal(m.inputs[0].bytes, 50 << 20);
  });
});
