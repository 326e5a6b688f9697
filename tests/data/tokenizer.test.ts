// Tests for data/tokenizer.ts: ids equal the bindings' own encoding (chunked path included), the
// old layouts (vocab.txt, vocab.json + merges.txt) load to the same tokenizer, save/reload, decode,
// special tokens, and the one-line InputErrors for bad input.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Tokenizer } from 'tokenizers';
import { InputError } from '../../common/errors.ts';
import { AddedTokenGuard, MlmTokenizer, textPieces, type EncodedText } from '../../data/tokenizer.ts';
import { trainTokenizer } from '../../data/tokenizer-train.ts';
import { PROSE, fuzzStrings, parityLines } from '../fixtures/tokenizers/lines.ts';

const LINES = parityLines(1000);
const FUZZ = fuzzStrings(3000);

let tmp: string;
const dirs: Record<string, string> = {};

/** Ids and word starts as the bindings give them for the whole text. */
async function reference(engine: Tokenizer, text: string): Promise<{ ids: number[]; starts: number[] }> {
  const enc = await engine.encode(text, null, { addSpecialTokens: false });
  const words = enc.getWordIds();
  const starts = words.map((w, i) => (i === 0 || w === null || w === undefined || w !== words[i - 1] ? 1 : 0));
  return { ids: enc.getIds(), starts };
}

/** Asserts that `got` equals the bindings' whole-text encoding of every text. */
async function assertParity(engine: Tokenizer, texts: string[], got: EncodedText[], what: string): Promise<void> {
  assert.equal(got.length, texts.length);
  for (let i = 0; i < texts.length; i++) {
    const ref = await reference(engine, texts[i]);
    assert.deepEqual(Array.from(got[i].ids), ref.ids, `${what}: ids of text ${i} ${JSON.stringify(texts[i].slice(0, 80))}`);
    assert.deepEqual(Array.from(got[i].wordStarts), ref.starts, `${what}: word starts of text ${i} ${JSON.stringify(texts[i].slice(0, 80))}`);
  }
}

function copyFiles(from: string, to: string, names: string[]): string {
  fs.mkdirSync(to, { recursive: true });
  for (const n of names) fs.copyFileSync(path.join(from, n), path.join(to, n));
  return to;
}

async function rejects(p: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof InputError, `expected InputError, got ${String(err)}`);
    assert.match(err.message, pattern);
    assert.ok(!err.message.includes('\n'), 'one line');
    return true;
  });
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-tok-test-'));
  const corpus = [PROSE, ...LINES.slice(0, 500)];
  const variants: Array<[string, Parameters<typeof trainTokenizer>[1]]> = [
    ['bert', { family: 'bert', vocabSize: 2600, lowercase: true }],
    ['bert-cased', { family: 'bert', vocabSize: 2600, lowercase: false }],
    ['roberta', { family: 'roberta', vocabSize: 1200, lowercase: false }],
    ['roberta-lower', { family: 'roberta', vocabSize: 1200, lowercase: true }],
  ];
  for (const [name, opts] of variants) {
    const r = await trainTokenizer(corpus, opts);
    dirs[name] = path.join(tmp, name);
    await r.tokenizer.save(dirs[name]);
  }
});

after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('encoding parity with the bindings', () => {
  for (const name of ['bert', 'bert-cased', 'roberta', 'roberta-lower']) {
    test(`${name}: encodeBatch over 1,000 varied lines equals Tokenizer.fromFile(...).encode`, async () => {
      const tok = await MlmTokenizer.load(dirs[name]);
      assert.notEqual(tok.chunkKind, null, 'the chunked path is on for a trained tokenizer');
      const engine = Tokenizer.fromFile(path.join(dirs[name], 'tokenizer.json'));
      await assertParity(engine, LINES, await tok.encodeBatch(LINES), 'encodeBatch');
      // Second pass: everything from the cache.
      await assertParity(engine, LINES, await tok.encodeBatch(LINES), 'encodeBatch (cached)');
    });

    test(`${name}: chunked path equals whole-text encoding on 3,000 fuzz strings`, async () => {
      const tok = await MlmTokenizer.load(dirs[name]);
      const engine = Tokenizer.fromFile(path.join(dirs[name], 'tokenizer.json'));
      await assertParity(engine, FUZZ, await tok.encodeBatch(FUZZ), 'fuzz');
      const joined = [FUZZ.join(''), FUZZ.join(' '), FUZZ.join('\n')];
      await assertParity(engine, joined, await tok.encodeBatch(joined), 'fuzz joined');
    });

    test(`${name}: encode, encodeWhole and an unchunked load agree with encodeBatch`, async () => {
      const tok = await MlmTokenizer.load(dirs[name]);
      const plain = await MlmTokenizer.load(dirs[name], { chunked: false });
      assert.equal(plain.chunkKind, null);
      const some = LINES.slice(0, 200);
      const batch = await tok.encodeBatch(some);
      const whole = await tok.encodeWhole(some);
      const unchunked = await plain.encodeBatch(some);
      for (let i = 0; i < some.length; i++) {
        const one = await tok.encode(some[i]);
        assert.deepEqual(one, batch[i]);
        assert.deepEqual(whole[i], batch[i]);
        assert.deepEqual(unchunked[i], batch[i]);
      }
    });
  }

  test('encodeWithSpecials equals the bindings with special tokens, pairs included', async () => {
    for (const name of ['bert', 'roberta']) {
      const tok = await MlmTokenizer.load(dirs[name]);
      const engine = Tokenizer.fromFile(path.join(dirs[name], 'tokenizer.json'));
      for (const line of LINES.slice(0, 100)) {
        const got = await tok.encodeWithSpecials(line);
        const ref = await engine.encode(line);
        assert.deepEqual(got.ids, ref.getIds());
        assert.deepEqual(got.specialTokensMask, ref.getSpecialTokensMask());
        assert.deepEqual(got.tokens, ref.getTokens());
        assert.equal(got.ids[0], tok.specialIds.cls);
        assert.equal(got.ids[got.ids.length - 1], tok.specialIds.sep);
      }
      const pair = await tok.encodeWithSpecials('first part', 'second part');
      const refPair = await engine.encode('first part', 'second part');
      assert.deepEqual(pair.ids, refPair.getIds());
      assert.deepEqual(pair.typeIds, refPair.getTypeIds());
    }
  });

  test('the mask token in text encodes to the mask id', async () => {
    const bert = await MlmTokenizer.load(dirs.bert);
    const b = await bert.encodeWithSpecials('the river [MASK] past the mill');
    assert.ok(b.ids.includes(bert.specialIds.mask));
    const rob = await MlmTokenizer.load(dirs.roberta);
    const r = await rob.encodeWithSpecials('the river <mask> past the mill');
    assert.ok(r.ids.includes(rob.specialIds.mask));
    // <mask> strips the space before it (lstrip), as in RoBERTa: no lone 'Ġ' before it.
    assert.notEqual(r.tokens[r.ids.indexOf(rob.specialIds.mask) - 1], 'Ġ');
    assert.deepEqual((await rob.encode('the river <mask>')).ids, (await rob.encode('the river<mask>')).ids);
  });
});

describe('loading the older layouts', () => {
  test('vocab.txt alone loads to the same tokenizer as tokenizer.json (ids, specials, hash)', async () => {
    for (const name of ['bert', 'bert-cased']) {
      const fromJson = await MlmTokenizer.load(dirs[name]);
      const dir = copyFiles(dirs[name], path.join(tmp, `${name}-vocab-txt`), ['vocab.txt', 'tokenizer_config.json']);
      const fromTxt = await MlmTokenizer.load(dir);
      assert.equal(fromTxt.family, 'bert');
      assert.equal(fromTxt.sha256, fromJson.sha256);
      assert.deepEqual(fromTxt.specialIds, fromJson.specialIds);
      assert.equal(fromTxt.vocabSize, fromJson.vocabSize);
      const a = await fromTxt.encodeBatch(LINES);
      const b = await fromJson.encodeBatch(LINES);
      for (let i = 0; i < LINES.length; i++) assert.deepEqual(a[i], b[i], `line ${i}`);
    }
  });

  test('vocab.txt without tokenizer_config.json follows BertTokenizer defaults (lowercase)', async () => {
    const dir = copyFiles(dirs.bert, path.join(tmp, 'bert-vocab-only'), ['vocab.txt']);
    const tok = await MlmTokenizer.load(dir);
    const ref = await MlmTokenizer.load(dirs.bert);
    assert.equal(tok.lowercase, true);
    assert.equal(tok.sha256, ref.sha256);
  });

  test('vocab.json + merges.txt load to the same tokenizer as tokenizer.json', async () => {
    const fromJson = await MlmTokenizer.load(dirs.roberta);
    const dir = copyFiles(dirs.roberta, path.join(tmp, 'roberta-vocab-merges'), ['vocab.json', 'merges.txt']);
    const fromFiles = await MlmTokenizer.load(dir);
    assert.equal(fromFiles.family, 'roberta');
    assert.equal(fromFiles.sha256, fromJson.sha256);
    assert.deepEqual(fromFiles.specialIds, fromJson.specialIds);
    const a = await fromFiles.encodeBatch(LINES);
    const b = await fromJson.encodeBatch(LINES);
    for (let i = 0; i < LINES.length; i++) assert.deepEqual(a[i], b[i], `line ${i}`);
  });

  test('a Google-style vocab.txt ([UNK]=100 ... [MASK]=103) and a RoBERTa-style vocab.json (<mask> last)', async () => {
    const ref = await MlmTokenizer.load(dirs.bert);
    const words = Array.from({ length: ref.vocabSize - 5 }, (_, i) => ref.idToToken(i + 5)!);
    const unused = Array.from({ length: 99 }, (_, i) => `[unused${i}]`);
    const dir = path.join(tmp, 'google-vocab');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'vocab.txt'), ['[PAD]', ...unused, '[UNK]', '[CLS]', '[SEP]', '[MASK]', ...words].join('\n') + '\n');
    const tok = await MlmTokenizer.load(dir);
    assert.deepEqual(tok.specialIds, { pad: 0, unk: 100, cls: 101, sep: 102, mask: 103 });
    assert.equal(tok.isSpecial(1), false);
    assert.equal(tok.vocabSize, ref.vocabSize + 99);
    for (const line of LINES.slice(0, 200)) {
      const a = await tok.encodeWithSpecials(line);
      const b = await ref.encodeWithSpecials(line);
      assert.deepEqual(a.tokens, b.tokens);
    }

    const rob = await MlmTokenizer.load(dirs.roberta);
    const vocab = JSON.parse(fs.readFileSync(path.join(dirs.roberta, 'vocab.json'), 'utf8')) as Record<string, number>;
    delete vocab['<mask>'];
    for (const k of Object.keys(vocab)) if (vocab[k] > 4) vocab[k] -= 1;
    vocab['<mask>'] = rob.vocabSize - 1;
    const rdir = path.join(tmp, 'roberta-style');
    fs.mkdirSync(rdir);
    fs.writeFileSync(path.join(rdir, 'vocab.json'), JSON.stringify(vocab));
    fs.copyFileSync(path.join(dirs.roberta, 'merges.txt'), path.join(rdir, 'merges.txt'));
    const r = await MlmTokenizer.load(rdir);
    assert.deepEqual(r.specialIds, { cls: 0, pad: 1, sep: 2, unk: 3, mask: rob.vocabSize - 1 });
    const m = await r.encodeWithSpecials('the river <mask> past the mill');
    assert.deepEqual(m.tokens, (await rob.encodeWithSpecials('the river <mask> past the mill')).tokens);
  });

  test('a path to a tokenizer.json file loads too', async () => {
    const tok = await MlmTokenizer.load(path.join(dirs.bert, 'tokenizer.json'));
    assert.equal(tok.sha256, (await MlmTokenizer.load(dirs.bert)).sha256);
  });
});

describe('save', () => {
  test('writes the transformers files and reloads to identical encodings', async () => {
    for (const name of ['bert', 'roberta']) {
      const tok = await MlmTokenizer.load(dirs[name]);
      const out = path.join(tmp, `${name}-saved`);
      await tok.save(out);
      const expected = name === 'bert'
        ? ['special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json', 'vocab.txt']
        : ['merges.txt', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json', 'vocab.json'];
      assert.deepEqual(fs.readdirSync(out).sort(), expected);
      const config = JSON.parse(fs.readFileSync(path.join(out, 'tokenizer_config.json'), 'utf8'));
      assert.equal(config.tokenizer_class, name === 'bert' ? 'BertTokenizer' : 'RobertaTokenizer');
      assert.equal(config.model_max_length, 512);
      assert.equal(config.mask_token, tok.maskToken);
      assert.equal(config.added_tokens_decoder[String(tok.specialIds.mask)].content, tok.maskToken);
      assert.equal(config.added_tokens_decoder[String(tok.specialIds.mask)].special, true);
      if (name === 'bert') assert.equal(config.do_lower_case, true);
      const map = JSON.parse(fs.readFileSync(path.join(out, 'special_tokens_map.json'), 'utf8'));
      if (name === 'bert') assert.equal(map.mask_token, '[MASK]');
      else assert.deepEqual(map.mask_token, { content: '<mask>', lstrip: true, normalized: false, rstrip: false, single_word: false });
      const again = await MlmTokenizer.load(out);
      assert.equal(again.sha256, tok.sha256);
      const a = await again.encodeBatch(LINES.slice(0, 300));
      const b = await tok.encodeBatch(LINES.slice(0, 300));
      assert.deepEqual(a, b);
    }
  });

  test('vocab.txt lists the tokens in id order; merges.txt has the version header', async () => {
    const bert = await MlmTokenizer.load(dirs.bert);
    const lines = fs.readFileSync(path.join(dirs.bert, 'vocab.txt'), 'utf8').split('\n');
    assert.equal(lines.at(-1), '');
    assert.equal(lines.length - 1, bert.vocabSize);
    for (let id = 0; id < bert.vocabSize; id += 97) assert.equal(lines[id], bert.idToToken(id));
    const merges = fs.readFileSync(path.join(dirs.roberta, 'merges.txt'), 'utf8').split('\n');
    assert.equal(merges[0], '#version: 0.2');
    const vocab = JSON.parse(fs.readFileSync(path.join(dirs.roberta, 'vocab.json'), 'utf8'));
    const rob = await MlmTokenizer.load(dirs.roberta);
    assert.equal(Object.keys(vocab).length, rob.vocabSize);
    assert.equal(vocab['<mask>'], rob.specialIds.mask);
  });

  test('model_max_length from the source config is kept, and can be set', async () => {
    const dir = copyFiles(dirs.bert, path.join(tmp, 'bert-mml'), ['tokenizer.json', 'vocab.txt']);
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ model_max_length: 128 }));
    const tok = await MlmTokenizer.load(dir);
    assert.equal(tok.modelMaxLength, 128);
    const out = path.join(tmp, 'bert-mml-out');
    await tok.save(out);
    assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'tokenizer_config.json'), 'utf8')).model_max_length, 128);
    await tok.save(out, { modelMaxLength: 256 });
    assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'tokenizer_config.json'), 'utf8')).model_max_length, 256);
  });
});

describe('tokens, specials and decoding', () => {
  test('special ids, isSpecial and specialMask', async () => {
    const bert = await MlmTokenizer.load(dirs.bert);
    assert.deepEqual(bert.specialIds, { pad: 0, unk: 1, cls: 2, sep: 3, mask: 4 });
    assert.deepEqual(bert.specialTokens, { cls: '[CLS]', sep: '[SEP]', pad: '[PAD]', mask: '[MASK]', unk: '[UNK]' });
    assert.equal(bert.maskToken, '[MASK]');
    const rob = await MlmTokenizer.load(dirs.roberta);
    assert.deepEqual(rob.specialIds, { cls: 0, pad: 1, sep: 2, unk: 3, mask: 4 });
    assert.equal(rob.maskToken, '<mask>');
    for (const tok of [bert, rob]) {
      const mask = tok.specialMask();
      assert.equal(mask.length, tok.vocabSize);
      assert.deepEqual([...mask.slice(0, 6)], [1, 1, 1, 1, 1, 0]);
      assert.equal(mask.reduce((a, b) => a + b, 0), 5);
      assert.equal(tok.isSpecial(4), true);
      assert.equal(tok.isSpecial(5), false);
      assert.equal(tok.isSpecial(-1), false);
      assert.equal(tok.isSpecial(tok.vocabSize), false);
      mask[5] = 1; // a copy: the tokenizer is unchanged
      assert.equal(tok.isSpecial(5), false);
    }
  });

  test('tokenToId and idToToken are inverse over the vocabulary', async () => {
    for (const name of ['bert', 'roberta']) {
      const tok = await MlmTokenizer.load(dirs[name]);
      for (let id = 0; id < tok.vocabSize; id++) assert.equal(tok.tokenToId(tok.idToToken(id)!), id);
      assert.equal(tok.idToToken(tok.vocabSize), undefined);
      assert.equal(tok.idToToken(-1), undefined);
      assert.equal(tok.tokenToId('no such token at all'), undefined);
    }
  });

  test('decode equals the bindings decode; skipSpecialTokens drops specials', async () => {
    for (const name of ['bert', 'roberta']) {
      const tok = await MlmTokenizer.load(dirs[name]);
      const engine = Tokenizer.fromFile(path.join(dirs[name], 'tokenizer.json'));
      for (const line of LINES.slice(0, 200)) {
        const { ids } = await tok.encodeWithSpecials(line);
        assert.equal(tok.decode(ids), await engine.decode(ids, false));
        assert.equal(tok.decode(ids, { skipSpecialTokens: true }), await engine.decode(ids, true));
      }
    }
    const rob = await MlmTokenizer.load(dirs.roberta);
    const { ids } = await rob.encode('Hello, world! It\'s 12:30.');
    assert.equal(rob.decode(ids), 'Hello, world! It\'s 12:30.');
  });
});

describe('text pieces', () => {
  test('bert pieces split at whitespace and ASCII punctuation, not inside added tokens', () => {
    const guard = new AddedTokenGuard([{ content: '[MASK]', normalized: false }]);
    assert.deepEqual(textPieces("Hello, world's end.", 'whitespace', guard), ['Hello', ',', 'world', "'", 's', 'end', '.']);
    assert.deepEqual(textPieces('a[MASK]b c[d]', 'whitespace', guard), ['a[MASK]b', 'c', '[', 'd', ']']);
    assert.deepEqual(textPieces('  café, ok  ', 'whitespace', guard), ['café,', 'ok']);
  });

  test('byte-level pieces follow the GPT-2 pattern', () => {
    const g = new AddedTokenGuard();
    assert.deepEqual(textPieces("Hello, world! It's   ok\n\nyes 42x", 'space-prefix', g), [
      'Hello', ',', ' world', '!', ' It', "'s", '  ', ' ok', '\n', '\n', 'yes', ' 42', 'x',
    ]);
    assert.deepEqual(textPieces(" 'quoted' we're", 'space-prefix', g), [" '", 'quoted', "'", ' we', "'re"]);
    assert.deepEqual(textPieces('end   ', 'space-prefix', g), ['end', '   ']);
  });
});

describe('bad input', () => {
  test('a folder without tokenizer files names the files looked for', async () => {
    const dir = path.join(tmp, 'empty');
    fs.mkdirSync(dir);
    await rejects(MlmTokenizer.load(dir), /no tokenizer files in .*empty: looked for tokenizer\.json, vocab\.txt \(BERT WordPiece\), or vocab\.json \+ merges\.txt/);
  });

  test('a missing path', async () => {
    await rejects(MlmTokenizer.load(path.join(tmp, 'nope')), /does not exist/);
  });

  test('tokenizer.json that is not JSON', async () => {
    const dir = path.join(tmp, 'bad-json');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), '{"version": "1.0", "model": ');
    await rejects(MlmTokenizer.load(dir), /tokenizer\.json is not valid JSON \(.+\)/);
  });

  test('tokenizer.json the bindings reject gives their reason', async () => {
    const dir = path.join(tmp, 'bad-model');
    fs.mkdirSync(dir);
    const json = JSON.parse(fs.readFileSync(path.join(dirs.roberta, 'tokenizer.json'), 'utf8'));
    json.model.merges.push(['zzzq', 'qqqz']);
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(json));
    await rejects(MlmTokenizer.load(dir), /was rejected by the tokenizers library \(.*zzzq.*out of vocabulary.*\); replace it with a tokenizer\.json saved by the tokenizers library$/i);
    // Valid JSON that is no tokenizer at all, and an empty file (an interrupted copy): what to do too.
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), '{}');
    await rejects(MlmTokenizer.load(dir), /tokenizer\.json was rejected by the tokenizers library \(.+\); replace it with a tokenizer\.json saved by the tokenizers library$/);
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), '');
    await rejects(MlmTokenizer.load(dir), /tokenizer\.json is empty \(an interrupted copy\?\); copy it again from where the model came from$/);
  });

  test('an unsupported model type', async () => {
    const dir = path.join(tmp, 'unigram');
    fs.mkdirSync(dir);
    const engine = JSON.parse(fs.readFileSync(path.join(dirs.bert, 'tokenizer.json'), 'utf8'));
    engine.model = { type: 'Unigram', unk_id: 0, vocab: [['[PAD]', 0], ['[UNK]', 0], ['[CLS]', 0], ['[SEP]', 0], ['[MASK]', 0], ['a', -1]] };
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(engine));
    await rejects(MlmTokenizer.load(dir), /unsupported tokenizer model type "Unigram"/);
  });

  test('vocab.txt empty, or binary', async () => {
    const empty = path.join(tmp, 'vocab-empty');
    fs.mkdirSync(empty);
    fs.writeFileSync(path.join(empty, 'vocab.txt'), '');
    await rejects(MlmTokenizer.load(empty), /vocab\.txt is empty/);
    const blank = path.join(tmp, 'vocab-blank');
    fs.mkdirSync(blank);
    fs.writeFileSync(path.join(blank, 'vocab.txt'), '\n');
    await rejects(MlmTokenizer.load(blank), /is missing|is empty/);
    const binary = path.join(tmp, 'vocab-binary');
    fs.mkdirSync(binary);
    fs.writeFileSync(path.join(binary, 'vocab.txt'), Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0xff, 0xfe]));
    await rejects(MlmTokenizer.load(binary), /vocab\.txt looks binary/);
    const latin1 = path.join(tmp, 'vocab-latin1');
    fs.mkdirSync(latin1);
    fs.writeFileSync(path.join(latin1, 'vocab.txt'), Buffer.from('[PAD]\ncaf\xe9\n', 'latin1'));
    await rejects(MlmTokenizer.load(latin1), /looks binary, not a UTF-8 text file/);
  });

  test('vocab.txt without [MASK] names the missing token', async () => {
    const dir = path.join(tmp, 'vocab-no-mask');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'vocab.txt'), ['[PAD]', '[UNK]', '[CLS]', '[SEP]', 'a', 'b'].join('\n') + '\n');
    await rejects(MlmTokenizer.load(dir), /the mask token "\[MASK\]" is missing; an MLM tokenizer needs all of \[CLS\] \[SEP\] \[PAD\] \[MASK\] \[UNK\]/);
  });

  test('tokenizer.json without a mask token', async () => {
    const dir = path.join(tmp, 'json-no-mask');
    fs.mkdirSync(dir);
    const json = JSON.parse(fs.readFileSync(path.join(dirs.bert, 'tokenizer.json'), 'utf8'));
    json.added_tokens = json.added_tokens.filter((t: { content: string }) => t.content !== '[MASK]');
    delete json.model.vocab['[MASK]'];
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(json));
    await rejects(MlmTokenizer.load(dir), /the mask token "\[MASK\]" is not in the vocabulary/);
  });

  test('vocab.json without merges.txt, and a malformed merges.txt', async () => {
    const dir = copyFiles(dirs.roberta, path.join(tmp, 'no-merges'), ['vocab.json']);
    await rejects(MlmTokenizer.load(dir), /holds vocab\.json but no merges\.txt/);
    const bad = copyFiles(dirs.roberta, path.join(tmp, 'bad-merges'), ['vocab.json']);
    fs.writeFileSync(path.join(bad, 'merges.txt'), '#version: 0.2\nĠ t\nthree parts here\n');
    await rejects(MlmTokenizer.load(bad), /merges\.txt line 3: expected two tokens/);
  });

  test('tokenizer_config.json values of the wrong type are refused, naming the file and key; null means the default', async () => {
    const withConfig = (name: string, files: string[], config: Record<string, unknown>, from = dirs.bert) => {
      const dir = copyFiles(from, path.join(tmp, name), files);
      fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(config));
      return dir;
    };
    // A quoted "false" would lowercase a cased vocabulary (the old default for anything not a boolean).
    await rejects(MlmTokenizer.load(withConfig('cfg-lower-str', ['vocab.txt'], { do_lower_case: 'false' }, dirs['bert-cased'])),
      /^\S+cfg-lower-str\/tokenizer_config\.json: do_lower_case must be true or false, got "false"; fix the file \(JSON booleans, unquoted\)$/);
    await rejects(MlmTokenizer.load(withConfig('cfg-chinese-num', ['vocab.txt'], { tokenize_chinese_chars: 0 })), /tokenize_chinese_chars must be true or false, got 0;/);
    await rejects(MlmTokenizer.load(withConfig('cfg-prefix', ['vocab.json', 'merges.txt'], { add_prefix_space: 'yes' }, dirs.roberta)), /add_prefix_space must be true or false, got "yes";/);
    await rejects(MlmTokenizer.load(withConfig('cfg-mml', ['tokenizer.json'], { model_max_length: '512' })), /tokenizer_config\.json: model_max_length must be a positive integer, got "512"; fix the file or leave the key out$/);
    await rejects(MlmTokenizer.load(withConfig('cfg-mml-0', ['tokenizer.json'], { model_max_length: 0 })), /model_max_length must be a positive integer, got 0;/);
    await rejects(MlmTokenizer.load(withConfig('cfg-mask', ['tokenizer.json'], { mask_token: 103 })), /tokenizer_config\.json: mask_token must be a token \(a string, or an object with a string "content"\), got 103;/);
    const mapDir = copyFiles(dirs.bert, path.join(tmp, 'cfg-map'), ['tokenizer.json']);
    fs.writeFileSync(path.join(mapDir, 'special_tokens_map.json'), JSON.stringify({ cls_token: ['[CLS]'] }));
    await rejects(MlmTokenizer.load(mapDir), /special_tokens_map\.json: cls_token must be a token .*got \["\[CLS\]"\];/);
    // null and the no-limit sentinel are what transformers writes: the defaults apply.
    const ok = await MlmTokenizer.load(withConfig('cfg-null', ['vocab.txt'], { do_lower_case: null, strip_accents: null, mask_token: null, model_max_length: 1e30 }));
    const ref = await MlmTokenizer.load(dirs.bert);
    assert.equal(ok.lowercase, true);
    assert.equal(ok.sha256, ref.sha256);
    const cased = await MlmTokenizer.load(withConfig('cfg-cased', ['vocab.txt'], { do_lower_case: false }, dirs['bert-cased']));
    assert.equal(cased.lowercase, false);
  });

  test('a tokenizer_config.json that is not JSON', async () => {
    const dir = copyFiles(dirs.bert, path.join(tmp, 'bad-config'), ['tokenizer.json']);
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), '{oops');
    await rejects(MlmTokenizer.load(dir), /tokenizer_config\.json is not valid JSON/);
  });
});
