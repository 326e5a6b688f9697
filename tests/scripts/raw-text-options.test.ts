// The raw-text options of evaluate, compare and tokenizer extend (scripts/commands/text-options.ts):
// --text-field reaches every reading of the text (compare's masked-token figures ignored it until
// 2026-12-07; evaluate had no such option, though its error named it), and --on-invalid-utf8, which
// the invalid-UTF-8 error of each of them suggests, is accepted and used.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { makeTinyCheckpoint, runMlm } from '../training/tiny-checkpoint.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-raw-text-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
const env = { ...process.env, MLM_BACKEND: 'cpu' };

test('--text-field and --on-invalid-utf8 are accepted and used by evaluate, compare and tokenizer extend', async () => {
  const a = (await makeTinyCheckpoint(path.join(tmp, 'a'), 'bert', { seed: 1 })).dir;
  const b = (await makeTinyCheckpoint(path.join(tmp, 'b'), 'bert', { seed: 2 })).dir;
  const jsonl = path.join(tmp, 'held.jsonl');
  fs.writeFileSync(jsonl, Array.from({ length: 30 }, (_, i) => JSON.stringify({ id: i, body: 'the cat sat on the mat and the dog ran to the house. '.repeat(3) })).join('\n') + '\n');

  const noField = await runMlm(['evaluate', '--model', a, '--data', jsonl, '--no-progress'], { env });
  assert.equal(noField.code, 2);
  assert.match(noField.stderr, /^mlm: error: \S+held\.jsonl:1: no field "text" \(fields here: id, body\); choose the text field with --text-field$/m);
  const evaluated = await runMlm(['evaluate', '--model', a, '--data', jsonl, '--text-field', 'body', '--json', '--no-progress'], { env });
  assert.equal(evaluated.code, 0, evaluated.stderr);
  assert.ok(JSON.parse(evaluated.stdout).masked_tokens > 0);

  const compared = await runMlm(['compare', '--model', a, b, '--data', jsonl, '--text-field', 'body', '--max-words', '20', '--json', '--no-progress'], { env });
  assert.equal(compared.code, 0, compared.stderr);
  const models = JSON.parse(compared.stdout).models as Array<{ eval_loss?: number }>;
  assert.equal(models.length, 2);
  for (const m of models) assert.ok(Number.isFinite(m.eval_loss), 'the masked-token figures read the text too');

  // A byte that is not UTF-8: refused with the option named, then read with it.
  const bad = path.join(tmp, 'bad.txt');
  fs.writeFileSync(bad, Buffer.concat([Buffer.from('the cat sat on the mat. '.repeat(20)), Buffer.from([0xff]), Buffer.from(' the dog ran.\n')]));
  for (const args of [
    ['evaluate', '--model', a, '--data', bad, '--no-progress'],
    ['compare', '--model', a, b, '--data', bad, '--max-words', '10', '--no-progress'],
    ['tokenizer', 'extend', '--from', a, '--corpus', bad, '--add', '1', '--min-frequency', '1', '--out', path.join(tmp, 'ext'), '--no-progress'],
  ]) {
    const refused = await runMlm(args, { env });
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /pass --on-invalid-utf8 replace/);
    const replaced = await runMlm([...args, '--on-invalid-utf8', 'replace'], { env });
    assert.doesNotMatch(replaced.stderr, /Unknown argument|invalid UTF-8/, args[0]);
    if (args[0] !== 'tokenizer') assert.equal(replaced.code, 0, replaced.stderr);
  }
});
