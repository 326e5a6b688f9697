// Tests for training/fill-mask.ts and `mlm fill-mask` on tiny random BERT and RoBERTa models:
// the pipeline's output shape (four fields, sorted, scores a softmax over the vocabulary checked
// against the full logits), targets, several masks, RoBERTa's <mask> lstrip, the errors, and the
// CLI's JSON and table output. Runs on the cpu backend.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Tensor2D } from '@tensorflow/tfjs';
import { InputError } from '../../common/errors.ts';
import { selectBackend, type Tf } from '../../training/backend.ts';
import { loadModelFolder, type ModelFolder } from '../../training/checkpoint.ts';
import { fillMask, pipelineOutput, targetIds, type FillMaskCandidate } from '../../training/fill-mask.ts';
import type { MaskedLM } from '../../training/models/bert.ts';
import { createMaskedLM } from '../../training/models/roberta.ts';
import { makeTinyCheckpoint, ROOT } from './tiny-checkpoint.ts';

let tmp: string;
let tf: Tf;
const loaded: Record<'bert' | 'roberta', { folder: ModelFolder; model: MaskedLM }> = {} as never;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-fill-test-'));
  tf = (await selectBackend('cpu', { log: () => {} })).tf;
  for (const family of ['bert', 'roberta'] as const) {
    const ck = await makeTinyCheckpoint(path.join(tmp, family), family, { seed: 5 });
    const folder = await loadModelFolder(ck.dir);
    loaded[family] = { folder, model: createMaskedLM(tf, folder.config, { weights: folder.weights }) };
  }
});
after(() => {
  for (const { model } of Object.values(loaded)) model?.dispose();
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** Softmax over the full logits at `pos`, from model.logits (an independent path). */
async function fullSoftmax(m: MaskedLM, ids: number[], pos: number): Promise<Float32Array> {
  const probs = tf.tidy(() => {
    const inputIds = tf.tensor2d([ids], [1, ids.length], 'int32') as Tensor2D;
    const logits = m.logits({ inputIds, attentionMask: tf.onesLike(inputIds) as Tensor2D }, { training: false });
    return tf.softmax(tf.reshape(tf.slice(logits, [0, pos, 0], [1, 1, -1]), [-1]));
  });
  const data = (await probs.data()) as Float32Array;
  probs.dispose();
  return data;
}

function checkCandidates(list: FillMaskCandidate[], k: number): void {
  assert.equal(list.length, k);
  let sum = 0;
  for (let i = 0; i < list.length; i++) {
    const c = list[i];
    assert.deepEqual(Object.keys(c), ['score', 'token', 'token_str', 'sequence']);
    assert.equal(typeof c.score, 'number');
    assert.ok(Number.isInteger(c.token));
    assert.equal(typeof c.token_str, 'string');
    assert.equal(typeof c.sequence, 'string');
    if (i > 0) assert.ok(list[i - 1].score >= c.score, 'sorted by score');
    sum += c.score;
  }
  assert.ok(sum > 0 && sum <= 1, `scores sum to ${sum}`);
}

describe('fillMask (BERT)', () => {
  test('one mask: top_k candidates, a softmax over the vocabulary, sequences filled and decoded', async () => {
    const { folder, model } = loaded.bert;
    const tok = folder.tokenizer;
    const tensorsBefore = tf.memory().numTensors;
    const r = await fillMask(tf, model, tok, 'the model learns to [MASK] the tokens.', { topK: 7 });
    assert.equal(tf.memory().numTensors, tensorsBefore, 'no tensor leaked');
    assert.equal(r.masks.length, 1);
    checkCandidates(r.masks[0], 7);
    const pos = r.positions[0];
    assert.equal(r.inputIds[pos], tok.specialIds.mask);
    const probs = await fullSoftmax(model, r.inputIds, pos);
    // The best of the full softmax is the first candidate; every score matches the full softmax.
    let best = 0;
    for (let i = 1; i < probs.length; i++) if (probs[i] > probs[best]) best = i;
    assert.equal(r.masks[0][0].token, best);
    for (const c of r.masks[0]) {
      assert.ok(Math.abs(c.score - probs[c.token]) < 1e-6, `score of ${c.token}`);
      assert.equal(c.token_str, tok.decode([c.token]));
      const filled = r.inputIds.slice();
      filled[pos] = c.token;
      assert.equal(c.sequence, tok.decode(filled, { skipSpecialTokens: true }));
      assert.ok(!c.sequence.includes('[CLS]') && !c.sequence.includes('[MASK]'));
    }
    // The pipeline's shape: the list itself for one mask.
    assert.deepEqual(pipelineOutput(r), r.masks[0]);
    // top_k past the vocabulary gives the whole vocabulary.
    const all = await fillMask(tf, model, tok, '[MASK]', { topK: 100000 });
    assert.equal(all.masks[0].length, tok.vocabSize);
    const total = all.masks[0].reduce((a, c) => a + c.score, 0);
    assert.ok(Math.abs(total - 1) < 1e-9, `all scores sum to ${total}`);
  });

  test('several masks: one list per mask, each sequence fills only its mask and keeps the specials', async () => {
    const { folder, model } = loaded.bert;
    const r = await fillMask(tf, model, folder.tokenizer, 'the [MASK] learns to [MASK] tokens.', { topK: 3 });
    assert.equal(r.masks.length, 2);
    assert.equal(r.positions.length, 2);
    assert.deepEqual(pipelineOutput(r), r.masks);
    for (const [i, list] of r.masks.entries()) {
      checkCandidates(list, 3);
      const probs = await fullSoftmax(model, r.inputIds, r.positions[i]);
      for (const c of list) {
        assert.ok(Math.abs(c.score - probs[c.token]) < 1e-6);
        assert.ok(c.sequence.startsWith('[CLS]') && c.sequence.endsWith('[SEP]'), c.sequence);
        assert.equal((c.sequence.match(/\[MASK\]/g) ?? []).length, 1, 'the other mask stays');
      }
    }
  });

  test('a large top_k (past the small-k buffer, up to the whole vocabulary) ranks as a small one: every id, by score, ties to the smaller id', async () => {
    const { folder, model } = loaded.bert;
    const text = 'the model learns to [MASK] the tokens.';
    const small = await fillMask(tf, model, folder.tokenizer, text, { topK: 64 });
    const all = await fillMask(tf, model, folder.tokenizer, text, { topK: 1_000_000 });
    const known = Array.from({ length: folder.tokenizer.vocabSize }, (_, id) => id).filter((id) => folder.tokenizer.idToToken(id) !== undefined);
    assert.equal(all.masks[0].length, known.length, 'top_k is cut to the ids the tokenizer knows');
    assert.deepEqual(all.masks[0].slice(0, 64), small.masks[0]);
    for (let i = 1; i < all.masks[0].length; i++) {
      const [a, b] = [all.masks[0][i - 1], all.masks[0][i]];
      assert.ok(a.score > b.score || (a.score === b.score && a.token < b.token), `rank ${i}`);
    }
  });

  test('targets: only those ids, unknown words replaced by their first token with a warning', async () => {
    const { folder, model } = loaded.bert;
    const tok = folder.tokenizer;
    const warnings: string[] = [];
    const text = 'the model learns to [MASK] the tokens.';
    const r = await fillMask(tf, model, tok, text, { topK: 5, targets: ['the', 'model', 'the', 'tokenizationzz'], warn: (w) => warnings.push(w) });
    const first = (await tok.encodeWhole(['tokenizationzz']))[0].ids[0];
    const allowed = new Set([tok.tokenToId('the'), tok.tokenToId('model'), first]);
    assert.equal(r.masks[0].length, 3, 'duplicates collapse; top_k shrinks to the targets');
    for (const c of r.masks[0]) assert.ok(allowed.has(c.token));
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /"tokenizationzz" does not exist in the model vocabulary; replacing it with/);
    const probs = await fullSoftmax(model, r.inputIds, r.positions[0]);
    for (const c of r.masks[0]) assert.ok(Math.abs(c.score - probs[c.token]) < 1e-6, 'not renormalised');
    await assert.rejects(targetIds(tok, [' ', ''], () => {}), (e: unknown) => e instanceof InputError && /^none of the targets gives a token/.test(e.message));
  });

  test('errors: no mask, the other family\'s mask, too long, bad top_k', async () => {
    const { folder, model } = loaded.bert;
    const tok = folder.tokenizer;
    await assert.rejects(fillMask(tf, model, tok, 'no mask here'), {
      name: 'InputError',
      message: 'no [MASK] token in the text; put [MASK] where a word should be predicted',
    });
    await assert.rejects(fillMask(tf, model, tok, 'hello <mask>'), /no \[MASK\] token in the text \(this model's mask token is \[MASK\], not <mask>\)/);
    const long = Array.from({ length: 80 }, () => 'model').join(' ') + ' [MASK]';
    await assert.rejects(fillMask(tf, model, tok, long), /the text is \d+ tokens long \(specials included\), more than the 64 positions of this model; shorten it/);
    // A book pasted in: refused from a count of its words (the message says so), without
    // tokenizing a million of them.
    const book = 'the model learns . '.repeat(250_000) + '[MASK]';
    await assert.rejects(fillMask(tf, model, tok, book), { name: 'InputError', message: 'the text is more than 256 tokens long, far more than the 64 positions of this model; shorten it' });
    await assert.rejects(fillMask(tf, model, tok, '[MASK]', { topK: 0 }), /--top-k must be an integer >= 1/);
  });
});

describe('fillMask (RoBERTa)', () => {
  test('"Hello <mask>!": <mask> absorbs the space before it (lstrip); sequences decode like transformers', async () => {
    const { folder, model } = loaded.roberta;
    const tok = folder.tokenizer;
    const enc = await tok.encodeWithSpecials('Hello <mask>!');
    const m = enc.ids.indexOf(tok.specialIds.mask);
    assert.ok(m > 1, enc.tokens.join(' '));
    const before = tok.idToToken(enc.ids[m - 1])!;
    assert.ok(!before.endsWith('Ġ'), `no space token before <mask>: ${enc.ids.map((id) => tok.idToToken(id)).join(' ')}`);
    assert.deepEqual(enc.offsets[m], [6, 12], 'the mask covers "<mask>" only');
    assert.equal(tok.idToToken(enc.ids[m + 1]), '!');

    const ids = (await tok.encodeWhole([' the']))[0].ids;
    assert.equal(ids.length, 1, 'the tiny vocabulary has " the"');
    const theId = ids[0];
    const r = await fillMask(tf, model, tok, 'Hello <mask>!', { topK: 4, targets: [tok.idToToken(theId)!] });
    assert.equal(r.masks[0].length, 1);
    const c = r.masks[0][0];
    assert.equal(c.token, theId);
    assert.equal(c.token_str, ' the');
    assert.equal(c.sequence, 'Hello the!');
    const plain = await fillMask(tf, model, tok, 'Hello <mask>!', { topK: 4 });
    checkCandidates(plain.masks[0], 4);
    await assert.rejects(fillMask(tf, model, tok, 'Hello [MASK]!'), /no <mask> token in the text \(this model's mask token is <mask>, not \[MASK\]\)/);
  });
});

describe('mlm fill-mask', () => {
  const run = (args: string[]) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, [path.join(ROOT, 'scripts/mlm.mjs'), 'fill-mask', ...args], { cwd: ROOT, timeout: 45_000, env: { ...process.env, MLM_BACKEND: '' } }, (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
      );
    });

  test('--json prints the pipeline output; the table; no mask is exit 2', async () => {
    const dir = path.join(tmp, 'bert');
    const json = await run(['--model', dir, 'the model learns to [MASK] the tokens.', '--json', '--top-k', '3', '--backend', 'cpu']);
    assert.equal(json.code, 0, json.stderr);
    const out = JSON.parse(json.stdout) as FillMaskCandidate[];
    assert.equal(out.length, 3);
    const direct = await fillMask(tf, loaded.bert.model, loaded.bert.folder.tokenizer, 'the model learns to [MASK] the tokens.', { topK: 3 });
    assert.deepEqual(out, direct.masks[0]);

    const table = await run(['--model', dir, 'the [MASK] learns to', '[MASK] tokens.', '--backend', 'cpu', '--targets', 'the', 'model']);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^\[MASK\] 1 of 2 \(token position \d+\):\n  rank\s+score\s+id\s+token\s+sequence\n/);
    assert.match(table.stdout, /\[MASK\] 2 of 2/);
    assert.match(table.stdout, /"the"|"model"/);

    const none = await run(['--model', dir, 'no mask here', '--backend', 'cpu']);
    assert.equal(none.code, 2);
    assert.equal(none.stderr, 'mlm: error: no [MASK] token in the text; put [MASK] where a word should be predicted\n');
    assert.equal(none.stdout, '');
  });

  test('a text that starts with - goes after --; a text swallowed by --targets, or none, is named as such', async () => {
    const dir = path.join(tmp, 'bert');
    const dashed = await run(['--model', dir, '--backend', 'cpu', '--json', '--top-k', '2', '--', '- the [MASK] .']);
    assert.equal(dashed.code, 0, dashed.stderr);
    const direct = await fillMask(tf, loaded.bert.model, loaded.bert.folder.tokenizer, '- the [MASK] .', { topK: 2 });
    assert.deepEqual(JSON.parse(dashed.stdout), direct.masks[0]);
    const swallowed = await run(['--model', dir, '--backend', 'cpu', '--targets', 'the', 'the [MASK] .']);
    assert.equal(swallowed.code, 2);
    assert.equal(swallowed.stderr, 'mlm: error: no text to fill: --targets took every word after it ("the" "the [MASK] ."); put the text before --targets, or after --\n');
    const missing = await run(['--model', dir, '--backend', 'cpu']);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /^mlm: error: give the text to fill, e\.g\. .*\(a text starting with - goes after --\)\n$/);
  });
});
