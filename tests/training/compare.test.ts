// Tests for training/compare.ts and `mlm compare`: the word cut, the per-word gains on a hand-made
// case, the whole-word pseudo-log-likelihood against a direct computation from the model's logits,
// and the command's files and errors.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import type { Tensor2D } from '@tensorflow/tfjs';
import { commonWords, documentPerplexities, fillMaskExamples, gainedAndLost, splitWords, summarise, wordChanges, wordKey, wordPseudoLogLikelihood, type ScoredWord } from '../../training/compare.ts';
import { loadModelFolder } from '../../training/checkpoint.ts';
import { createMaskedLM } from '../../training/models/roberta.ts';
import { makeTinyCheckpoint, runMlm } from './tiny-checkpoint.ts';

const w = (doc: number, index: number, text: string, nll: number, tokens = 1): ScoredWord => ({ doc, index, text, nll, tokens, unk: 0, chars: [...text].length });

describe('compare: words, gains, summaries', () => {
  test('splitWords cuts at Unicode whitespace, offsets in code points', () => {
    const cps = Array.from('  café 😀x\u00a0naïve,\tend ');
    assert.deepEqual(splitWords(cps), [
      { start: 2, end: 6, text: 'café' },
      { start: 7, end: 9, text: '😀x' },
      { start: 10, end: 16, text: 'naïve,' },
      { start: 17, end: 20, text: 'end' },
    ]);
    assert.equal(wordKey('"Hepatitis,"'), 'hepatitis');
    assert.equal(wordKey('--'), '--');
  });

  test('wordChanges on a hand-made case: mean gains per word, matched occurrences only, sorted by total gain', () => {
    const base = [w(0, 0, 'liver', 5), w(0, 1, 'Liver,', 7), w(0, 2, 'the', 1), w(1, 0, 'the', 1), w(1, 1, 'car', 2), w(1, 2, 'car', 2), w(1, 3, 'once', 9)];
    const other = [w(0, 0, 'liver', 2), w(0, 1, 'Liver,', 4), w(0, 2, 'the', 1.5), w(1, 0, 'the', 1.5), w(1, 1, 'car', 3), w(1, 2, 'car', 4)];
    const c = wordChanges(base, other, 2);
    assert.deepEqual(c.map((x) => x.word), ['liver', 'the', 'car']);
    const liver = c[0];
    assert.deepEqual([liver.count, liver.before, liver.after, liver.gain], [2, 6, 3, 3]);
    assert.deepEqual([c[1].gain, c[2].gain], [-0.5, -1.5]);
    // 'once' is scored by one model only and seen once: not listed.
    assert.ok(!c.some((x) => x.word === 'once'));
    const s = summarise('m', base.slice(0, 3));
    assert.ok(Math.abs(s.nats_per_word - 13 / 3) < 1e-12);
    assert.ok(Math.abs(s.word_pseudo_perplexity - Math.exp(13 / 3)) < 1e-9);
    assert.ok(Math.abs(s.bits_per_char - 13 / Math.LN2 / 14) < 1e-12);
    const perDoc = documentPerplexities(base);
    assert.ok(Math.abs(perDoc.get(1)! - Math.exp(14 / 4)) < 1e-9);
  });
});

describe('compare: the same words for every model', () => {
  test('commonWords keeps the occurrences every model scored and none read as unknown; summarise takes the tokenizer figures over all', () => {
    const word = (doc: number, index: number, nll: number, tokens = 1, unk = 0): ScoredWord => ({ doc, index, text: `w${doc}.${index}`, nll, tokens, unk, chars: 4 });
    // Model a reads word 0:2 (a 400-character nonsense word) as one [UNK] at a low cost; model b
    // cannot fit word 1:0 in its window.
    const a = [word(0, 0, 2), word(0, 1, 3), word(0, 2, 0.5, 1, 1), word(1, 0, 4), word(1, 1, 1)];
    const b = [word(0, 0, 1, 2), word(0, 1, 2, 2), word(0, 2, 30, 40), word(1, 1, 2, 2)];
    const c = commonWords([a, b]);
    assert.deepEqual(c.words.map((ws) => ws.map((w) => `${w.doc}:${w.index}`)), [['0:0', '0:1', '1:1'], ['0:0', '0:1', '1:1']]);
    assert.deepEqual([c.notEveryModel, c.unknown], [1, 1]);
    const [sa, sb] = [summarise('a', c.words[0], a), summarise('b', c.words[1], b)];
    assert.equal(sa.words, sb.words);
    assert.ok(Math.abs(sa.nats_per_word - 2) < 1e-12 && Math.abs(sb.nats_per_word - 5 / 3) < 1e-12);
    assert.equal(sa.tokens_per_word, 1); // over all five words a scored
    assert.ok(Math.abs(sa.unk_rate - 1 / 5) < 1e-12);
    assert.equal(sb.tokens_per_word, 46 / 4);
  });

  test('gainedAndLost: gains above zero, most first; losses below zero, most first; a model against itself has neither', () => {
    const change = (word: string, count: number, gain: number) => ({ word, count, before: 5, after: 5 - gain, gain });
    const all = [change('a', 3, 2), change('b', 1, 1), change('c', 2, 0), change('d', 1, -0.5), change('e', 4, -1)];
    const { gained, lost } = gainedAndLost(all, 15);
    assert.deepEqual(gained.map((c) => c.word), ['a', 'b']);
    assert.deepEqual(lost.map((c) => c.word), ['e', 'd']);
    assert.deepEqual(gainedAndLost([change('x', 2, 0), change('y', 1, 0)], 15), { gained: [], lost: [] });
    assert.deepEqual(gainedAndLost(all, 1).lost.map((c) => c.word), ['e']);
  });

  test('gainedAndLost: ties in total gain are listed in word order in both lists', () => {
    // Four words gain 2 nats in total each and four lose 2 nats each (one occurrence of 2, or two of 1).
    const base: ScoredWord[] = [];
    const other: ScoredWord[] = [];
    let k = 0;
    for (const [word, n, change] of [['kappa', 1, 2], ['alpha', 2, 1], ['mu', 1, 2], ['delta', 2, 1], ['beta', 1, -2], ['zeta', 2, -1], ['gamma', 1, -2], ['eta', 2, -1]] as const) {
      for (let i = 0; i < 2; i++) {
        base.push(w(0, k, word, 5));
        other.push(w(0, k++, word, i < n ? 5 - change : 5));
      }
    }
    const { gained, lost } = gainedAndLost(wordChanges(base, other, 2), 15);
    assert.deepEqual(gained.map((c) => c.word), ['alpha', 'delta', 'kappa', 'mu']);
    assert.deepEqual(lost.map((c) => c.word), ['beta', 'eta', 'gamma', 'zeta']);
  });
});

/** Runs `body` in a new temporary folder, removed afterwards. */
async function inTmp(name: string, body: (tmp: string) => Promise<void>): Promise<void> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `mlmkit-compare-${name}-`));
  try {
    await body(tmp);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** tmp/held.txt: four short paragraphs of common words. */
function foxText(tmp: string): string {
  const text = path.join(tmp, 'held.txt');
  fs.writeFileSync(text, Array.from({ length: 4 }, (_, i) => `the quick brown fox ${i} jumps over the lazy dog.`).join('\n\n') + '\n');
  return text;
}

describe('compare: whole-word pseudo-log-likelihood', () => {
  test('equals log-softmax of the logits with the word\'s tokens masked (cpu), in batches or one at a time', async () => {
    await tf.setBackend('cpu');
    await inTmp('pll', async (tmp) => {
      const ck = await makeTinyCheckpoint(path.join(tmp, 'm'), 'bert', { seed: 3 });
      const folder = await loadModelFolder(ck.dir);
      const model = createMaskedLM(tf, folder.config, { weights: folder.weights });
      const docs = ['the quick brown fox jumps over the lazy dog.', 'a second document with zyzzyva words'];
      const before = tf.memory().numTensors;
      const batched = await wordPseudoLogLikelihood(tf, model, folder.tokenizer, docs, { batchRows: 5 });
      const single = await wordPseudoLogLikelihood(tf, model, folder.tokenizer, docs, { batchRows: 1, windowWords: 3 });
      assert.equal(tf.memory().numTensors, before, 'no tensors left behind');
      assert.equal(batched.length, 9 + 6);
      // Direct: for three words of the first document, mask their tokens and read the logits.
      const enc = await folder.tokenizer.encodeWithSpecials(docs[0]);
      for (const target of [1, 4, 8]) {
        const span = splitWords(Array.from(docs[0]))[target];
        const pos = enc.offsets.map((o, t) => (enc.specialTokensMask[t] === 0 && o[0] >= span.start && o[0] < span.end ? t : -1)).filter((t) => t >= 0);
        const ids = enc.ids.slice();
        for (const p of pos) ids[p] = folder.tokenizer.specialIds.mask;
        const lp = tf.tidy(() => {
          const logits = model.logits({ inputIds: tf.tensor2d([ids], [1, ids.length], 'int32'), attentionMask: tf.ones([1, ids.length], 'int32') as Tensor2D }, { training: false });
          return tf.logSoftmax(logits).arraySync() as number[][][];
        });
        const want = -pos.reduce((s, p) => s + lp[0][p][enc.ids[p]], 0);
        const got = batched.find((x) => x.doc === 0 && x.index === target)!;
        assert.equal(got.tokens, pos.length);
        assert.ok(Math.abs(got.nll - want) < 1e-4 * Math.max(1, want), `word ${span.text}: ${got.nll} vs ${want}`);
      }
      // A shorter context window changes the context, not which words are scored.
      assert.deepEqual(single.map((x) => [x.doc, x.index]), batched.map((x) => [x.doc, x.index]));
      model.dispose();
    });
  });
});

describe('compare: word spans of byte-level BPE tokens', () => {
  test('a tokenizer whose offsets keep the leading space (trim_offsets false) gives each word all its tokens', async () => {
    await tf.setBackend('cpu');
    await inTmp('bpe', async (tmp) => {
      const ck = await makeTinyCheckpoint(path.join(tmp, 'm'), 'roberta', { seed: 5 });
      const trimmed = await loadModelFolder(ck.dir);
      const file = path.join(ck.dir, 'tokenizer.json');
      const json = JSON.parse(fs.readFileSync(file, 'utf8'));
      json.post_processor.trim_offsets = false;
      fs.writeFileSync(file, JSON.stringify(json));
      const untrimmed = await loadModelFolder(ck.dir);
      const docs = ['the cat sat on the mat', 'a  second line here'];
      // The same ids either way; only the offsets of the "Ġ" tokens differ (they start at the space).
      const enc = await untrimmed.tokenizer.encodeWithSpecials(docs[0]);
      assert.deepEqual(enc.ids, (await trimmed.tokenizer.encodeWithSpecials(docs[0])).ids);
      assert.ok(enc.tokens.some((t, i) => t.startsWith('Ġ') && docs[0][enc.offsets[i][0]] === ' '), 'the fixture keeps the space in the offsets');
      const model = createMaskedLM(tf, trimmed.config, { weights: trimmed.weights });
      const a = await wordPseudoLogLikelihood(tf, model, trimmed.tokenizer, docs);
      const b = await wordPseudoLogLikelihood(tf, model, untrimmed.tokenizer, docs);
      model.dispose();
      assert.deepEqual(b.map((x) => [x.doc, x.index, x.tokens]), a.map((x) => [x.doc, x.index, x.tokens]));
      for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i].nll - b[i].nll) < 1e-4 * Math.max(1, a[i].nll), `${a[i].text}: ${a[i].nll} vs ${b[i].nll}`);
    });
  });
});

describe('compare: fill-mask examples', () => {
  test('a context longer than the model\'s positions (a long URL nearby) is cut to fit; a word longer than them is left out', async () => {
    await tf.setBackend('cpu');
    await inTmp('ex', async (tmp) => {
      const ck = await makeTinyCheckpoint(path.join(tmp, 'm'), 'bert', { seed: 3, maxPositions: 24 });
      const folder = await loadModelFolder(ck.dir);
      const model = createMaskedLM(tf, folder.config, { weights: folder.weights });
      const url = `https://example.org/${'abcdefgh/'.repeat(8)}`;
      // The word "cough" wrapped in 40 brackets each side: 80 tokens around one mask.
      const docs = [`see ${url} for the fever chart and the notes`, `a ${'('.repeat(40)}cough${')'.repeat(40)} here`];
      const before = tf.memory().numTensors;
      const examples = await fillMaskExamples(tf, [{ label: 'm', model, tokenizer: folder.tokenizer }], docs, ['fever', 'cough']);
      assert.equal(tf.memory().numTensors, before, 'no tensors left behind by the attempts that were too long');
      assert.deepEqual(examples.map((e) => e.word), ['fever'], 'the over-long word is left out, not an error');
      const [ex] = examples;
      assert.ok(!ex.text.includes(url), `the URL is cut away: ${ex.text}`);
      assert.match(ex.text, /\[fever\]/);
      assert.equal(ex.predictions[0].top.length, 3);
      // What was kept fits the model.
      const kept = ex.text.replace('[fever]', folder.tokenizer.maskToken);
      assert.ok((await folder.tokenizer.encodeWithSpecials(kept)).ids.length <= 24);
      model.dispose();
    });
  });
});

describe('mlm compare', () => {
  const run = (args: string[]) => runMlm(args);

  test('a model against its vocabulary-extended copy: table, report files, JSON; one model is an error', () => inTmp('cli', async (tmp) => {
    const ck = await makeTinyCheckpoint(path.join(tmp, 'm'), 'bert', { seed: 3 });
    const text = path.join(tmp, 'held.txt');
    fs.writeFileSync(text, Array.from({ length: 6 }, (_, i) => `the hepatosplenomegaly case ${i} and the cholangitis case.`).join('\n\n') + '\n');
    const tok = path.join(tmp, 'tok');
    assert.equal((await run(['tokenizer', 'extend', '--from', ck.dir, '--corpus', text, '--split-paragraphs', '--add', '2', '--out', tok, '--no-progress'])).code, 0);
    const ext = path.join(tmp, 'ext');
    assert.equal((await run(['model', 'resize', '--from', ck.dir, '--tokenizer', tok, '--out', ext])).code, 0);
    const out = path.join(tmp, 'cmp');
    const r = await run(['compare', '--model', ck.dir, ext, '--data', text, '--split-paragraphs', '--out', out, '--json', '--backend', 'cpu', '--no-progress', '--examples', '2']);
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout);
    // The shape of docs/formats.md ("Model comparison"); compare.json holds the same document.
    assert.deepEqual(Object.keys(doc), ['baseline', 'documents', 'backend', 'method', 'models', 'words_left_out', 'changes', 'documents_pseudo_perplexity', 'fill_mask']);
    assert.deepEqual(Object.keys(doc.models[0]), ['model', 'words', 'nats_per_word', 'word_pseudo_perplexity', 'bits_per_char', 'tokens_per_word', 'unk_rate', 'eval_loss', 'eval_perplexity', 'eval_accuracy']);
    assert.deepEqual(Object.keys(doc.words_left_out), ['not_scored_by_every_model', 'unknown_token']);
    assert.deepEqual(doc.changes.map((c: object) => Object.keys(c)), [['model', 'gained', 'lost']]);
    for (const w of [...doc.changes[0].gained, ...doc.changes[0].lost]) assert.deepEqual(Object.keys(w), ['word', 'count', 'before', 'after', 'gain']);
    assert.deepEqual(doc.documents_pseudo_perplexity.map((d: { model: string }) => d.model), [ck.dir, ext]);
    for (const e of doc.fill_mask) {
      assert.deepEqual(Object.keys(e), ['word', 'text', 'predictions']);
      for (const p of e.predictions) assert.deepEqual(Object.keys(p), ['model', 'top']);
    }
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(out, 'compare.json'), 'utf8')), doc);
    assert.equal(doc.documents, 6);
    assert.equal(doc.models.length, 2);
    const [a, b] = doc.models;
    assert.equal(a.words, b.words);
    assert.ok(b.tokens_per_word < a.tokens_per_word, 'the extension cuts the domain words into fewer tokens');
    for (const m of doc.models) for (const k of ['nats_per_word', 'word_pseudo_perplexity', 'bits_per_char', 'eval_loss', 'eval_perplexity', 'eval_accuracy']) assert.ok(Number.isFinite(m[k]), k);
    assert.deepEqual(fs.readdirSync(out).sort(), ['compare.json', 'compare.md', 'documents.svg']);
    assert.match(fs.readFileSync(path.join(out, 'documents.svg'), 'utf8'), /^<svg[^>]*>[\s\S]*<polyline[\s\S]*<\/svg>\s*$/);
    assert.match(fs.readFileSync(path.join(out, 'compare.md'), 'utf8'), /## Words that gained most/);
    const one = await run(['compare', '--model', ck.dir, '--data', text, '--backend', 'cpu']);
    assert.equal(one.code, 2);
    assert.match(one.stderr, /^mlm: error: --model needs two or more models to compare/);
  }));

  test('a data set with no masked token (only unknown tokens) leaves the pooled eval figures to the others', () => inTmp('empty', async (tmp) => {
    const ck = await makeTinyCheckpoint(path.join(tmp, 'm'), 'bert', { seed: 3 });
    const text = foxText(tmp);
    const emoji = path.join(tmp, 'emoji.txt');
    fs.writeFileSync(emoji, '\u{1F600} \u{1F601}\n'); // [CLS] [UNK] [UNK] [SEP]: nothing can be masked
    const args = ['--model', ck.dir, ck.dir, '--split-paragraphs', '--json', '--backend', 'cpu', '--no-progress', '--examples', '0'];
    const alone = await run(['compare', ...args, '--data', text]);
    assert.equal(alone.code, 0, alone.stderr);
    const both = await run(['compare', ...args, '--data', text, emoji]);
    assert.equal(both.code, 0, both.stderr);
    const [a, b] = [JSON.parse(alone.stdout).models[0], JSON.parse(both.stdout).models[0]];
    for (const k of ['eval_loss', 'eval_perplexity', 'eval_accuracy']) assert.ok(Number.isFinite(b[k]), `${k}: ${b[k]}`);
    assert.deepEqual([b.eval_loss, b.eval_accuracy], [a.eval_loss, a.eval_accuracy]);
  }));

  test('a model with fewer positions than --seq-len scores other blocks: a note says so, as evaluate does', () => inTmp('positions', async (tmp) => {
    const wide = await makeTinyCheckpoint(path.join(tmp, 'wide'), 'bert', { seed: 3 }); // 64 positions
    const narrow = await makeTinyCheckpoint(path.join(tmp, 'narrow'), 'bert', { seed: 3, maxPositions: 24 });
    const text = foxText(tmp);
    const r = await run(['compare', '--model', wide.dir, narrow.dir, '--data', text, '--split-paragraphs', '--seq-len', '64', '--json', '--backend', 'cpu', '--no-progress', '--examples', '0']);
    assert.equal(r.code, 0, r.stderr);
    const notes = r.stderr.split('\n').filter((l) => l.includes('is cut into blocks'));
    assert.deepEqual(notes, [`note: ${text} is cut into blocks of 24 tokens for ${narrow.dir}, its positions, not the 64 of --seq-len`]);
  }));

  test('text whose every word is an unknown token leaves nothing to compare: an error, not perfect scores', () => inTmp('none', async (tmp) => {
    const ck = await makeTinyCheckpoint(path.join(tmp, 'm'), 'bert', { seed: 3 });
    const emoji = path.join(tmp, 'emoji.txt');
    fs.writeFileSync(emoji, '\u{1F600} \u{1F601} \u{1F602}\n');
    const r = await run(['compare', '--model', ck.dir, ck.dir, '--data', emoji, '--json', '--backend', 'cpu', '--no-progress']);
    assert.equal(r.code, 2, r.stdout);
    assert.match(r.stderr, /^mlm: error: no word occurrence .* every model/m);
  }));

  test('a word too long for every model\'s window is counted among the words left out', () => inTmp('long', async (tmp) => {
    const ck = await makeTinyCheckpoint(path.join(tmp, 'm'), 'bert', { seed: 3 }); // 64 positions
    const text = path.join(tmp, 'held.txt');
    fs.writeFileSync(text, `the cat sat ${'a-'.repeat(60)}b on the mat\n`); // one word of 121 tokens
    const r = await run(['compare', '--model', ck.dir, ck.dir, '--data', text, '--json', '--backend', 'cpu', '--no-progress', '--examples', '0']);
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout);
    assert.equal(doc.models[0].words, 6);
    assert.deepEqual(doc.words_left_out, { not_scored_by_every_model: 1, unknown_token: 0 });
    assert.match(r.stderr, /note: 1 word occurrences left out of the comparison: 1 not scored by every model/);
  }));
});
