// The progress bar (data/progress.ts): other lines erase it first on a terminal, and completed
// work ends at 100% of the true total. Checked on a fake terminal stream and on real commands run
// under a pseudo-terminal (`script`, util-linux), as a user sees them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Progress } from '../../data/progress.ts';
import { brownDocuments, MLM, preparedFixture, ROOT, writeTinyConfig } from '../training/train-helpers.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-progress-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

function fakeTerminal(): { stream: NodeJS.WriteStream; text: () => string } {
  let out = '';
  const stream = { isTTY: true, columns: 120, write: (s: string) => { out += s; return true; } } as unknown as NodeJS.WriteStream;
  return { stream, text: () => out };
}

test('on a terminal, clear() erases the bar line and the next update draws it again; complete() ends at 100% of the true total', () => {
  const t = fakeTerminal();
  const bar = new Progress({ label: 'work', total: 1000, unit: 'bytes', stream: t.stream });
  bar.update(10);
  assert.match(t.text(), /^\rwork .*  1\.0%/);
  bar.clear();
  t.stream.write('a note\n');
  assert.ok(t.text().endsWith('\r\x1b[Ka note\n'), JSON.stringify(t.text()));
  bar.update(20); // drawn at once after a clear, despite the 10-per-second limit
  assert.match(t.text().split('a note\n')[1], /^\rwork .*  2\.0%  20 B \/ 1\.0 kB/);
  bar.clear();
  bar.clear(); // nothing on screen: writes nothing
  assert.equal(t.text().split('\x1b[K').length, 3);
  bar.complete('done');
  const last = t.text().split('\r').pop()!;
  assert.match(last, /^work  \[#{24}\] 100\.0%  1\.0 kB \/ 1\.0 kB  .*done\s*\n$/);

  // An announced total that was only an upper bound: the true one is shown.
  const u = fakeTerminal();
  const words = new Progress({ label: 'words', total: 500, stream: u.stream });
  words.update(120);
  words.complete(undefined, 137);
  assert.match(u.text().split('\r').pop()!, /100\.0%  137\/137/);
  // finish() keeps what was done (an interrupted run).
  const v = fakeTerminal();
  const cut = new Progress({ label: 'train', total: 10, stream: v.stream });
  cut.update(4);
  cut.finish();
  assert.match(v.text().split('\r').pop()!, / 40\.0%  4\/10/);
  // A label too long for the terminal is shortened; the figures stay on the line.
  const w = fakeTerminal();
  const long = new Progress({ label: `evaluate: ${'/a/long/path'.repeat(12)}`, total: 10, stream: w.stream });
  long.complete();
  const shown = w.text().split('\r').pop()!;
  assert.match(shown, /^evaluate: \/a\/long.*\.\.\.  \[#{24}\] 100\.0%  10\/10  \d+s\s*\n$/);
  assert.equal(shown.length, 120); // 119 columns and the newline
});

test('a transient bar (an evaluation inside training): on a terminal it ends at 100% on an unfinished line that the next line erases; in a log, a short one prints nothing', () => {
  const t = fakeTerminal();
  const bar = new Progress({ label: 'eval at step 4', total: 40, stream: t.stream, transient: true });
  bar.update(16, 'rows');
  bar.complete('rows');
  const last = t.text().split('\r').pop()!;
  assert.match(last, /^eval at step 4  \[#{24}\] 100\.0%  40\/40  .*rows\s*$/);
  assert.ok(!t.text().includes('\n'), JSON.stringify(t.text()));
  bar.clear();
  assert.ok(t.text().endsWith('\r\x1b[K'));

  let logged = '';
  const log = { isTTY: false, write: (s: string) => { logged += s; return true; } } as unknown as NodeJS.WriteStream;
  const quick = new Progress({ label: 'eval at step 4', total: 40, stream: log, transient: true });
  quick.update(16);
  quick.complete();
  assert.equal(logged, '');
  // Not transient: a log shows the first update at once and the final line.
  const plain = new Progress({ label: 'evaluate', total: 40, stream: log });
  plain.update(16);
  plain.complete();
  assert.match(logged, /^evaluate .* 40\.0%  16\/40 .*\nevaluate .*100\.0%  40\/40 .*\n$/);
});

/** Runs `mlm ARGS` under a pseudo-terminal; its terminal output (stdout and stderr together). */
function onTerminal(args: string[]): { status: number | null; out: string } {
  const cmd = [process.execPath, MLM, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const r = spawnSync('script', ['-q', '-e', '-c', cmd, '/dev/null'], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, MLM_BACKEND: 'wasm', COLUMNS: '160' } });
  return { status: r.status, out: r.stdout };
}

test('mlm prepare and mlm train on a terminal: bars end at 100% of the true total; eval lines start on a cleared line', { skip: spawnSync('script', ['--version']).status !== 0 && 'no `script` command' }, async () => {
  const fx = await preparedFixture(path.join(tmp, 'fx'), brownDocuments(400_000), { vocabSize: 400, seqLen: 32 });
  const corpus = path.join(fx.root, 'corpus');
  const bytes = fs.readdirSync(corpus).reduce((s, f) => s + fs.statSync(path.join(corpus, f)).size, 0);
  const prep = onTerminal(['prepare', '--corpus', corpus, '--tokenizer', fx.tokenizerDir, '--out', path.join(tmp, 'data'), '--seq-len', '32']);
  assert.equal(prep.status, 0, prep.out);
  const shown = `${(bytes / 1e3).toFixed(1)} kB`;
  for (const label of ['prepare: scanning', 'prepare: tokenizing']) {
    const lines = prep.out.split(/[\r\n]/).filter((l) => l.startsWith(label));
    assert.ok(lines.length > 0, prep.out);
    assert.match(lines[lines.length - 1], new RegExp(`100\\.0%  ${shown.replace('.', '\\.')} / ${shown.replace('.', '\\.')}`), `${label}: ${lines[lines.length - 1]}`);
  }

  const config = writeTinyConfig(path.join(tmp, 'tiny.json'), { max_position_embeddings: 32 });
  const run = onTerminal(['train', '--config', config, '--data', path.join(tmp, 'data'), '--out', path.join(tmp, 'run'), '--steps', '6', '--batch-size', '8',
    '--eval-every', '2', '--eval-batches', '1', '--save-every', '0']);
  assert.equal(run.status, 0, run.out);
  const evalLines = [...run.out.matchAll(/(.{0,4})eval at step (\d+):/g)];
  assert.deepEqual(evalLines.map((m) => m[2]), ['2', '4', '6']);
  // Steps 2 and 4 come while the bar is on screen: their lines start after the erase sequence.
  for (const m of evalLines.slice(0, 2)) assert.ok(m[1].endsWith('\x1b[K'), JSON.stringify(m[0]));
  const trainLines = run.out.split(/[\r\n]/).filter((l) => l.startsWith('train '));
  assert.match(trainLines[trainLines.length - 1], /100\.0%  6\/6 .*step 6\/6/);
  // Every evaluation shows its own bar, which ends at 100% of the rows it scores (one batch of 8),
  // on the line the result then erases.
  for (const step of ['2', '4', '6']) {
    const before = run.out.slice(0, run.out.indexOf(`eval at step ${step}:`));
    const bars = before.split(/[\r\n]/).filter((l) => l.startsWith(`eval at step ${step}  `));
    assert.ok(bars.length > 0, `no bar for the evaluation at step ${step}`);
    assert.match(bars[bars.length - 1], /100\.0%  8\/8 .*rows/);
    assert.ok(before.endsWith('\x1b[K'), JSON.stringify(before.slice(-200)));
  }

  // mlm evaluate: its bar ends at 100% of the split's rows.
  const rows = JSON.parse(fs.readFileSync(path.join(tmp, 'data', 'manifest.json'), 'utf8')).splits.validation.rows;
  const ev = onTerminal(['evaluate', '--model', path.join(tmp, 'run'), '--data', path.join(tmp, 'data'), '--batch-size', '8']);
  assert.equal(ev.status, 0, ev.out);
  const evalBars = ev.out.split(/[\r\n]/).filter((l) => /\[[#.]{24}\]/.test(l));
  assert.ok(evalBars.length > 0, ev.out);
  assert.match(evalBars[evalBars.length - 1], new RegExp(`100\\.0%  ${rows}/${rows} `));
});

test('in a log, a stage done in one update is one line; one that went on is drawn again at its end', () => {
  let out = '';
  const stream = { isTTY: false, write: (s: string) => { out += s; return true; } } as unknown as NodeJS.WriteStream;
  const fast = new Progress({ label: 'scanning', total: 100, unit: 'bytes', stream });
  fast.update(100); // the first update is drawn at once: here, the whole stage
  fast.complete();
  assert.equal(out.split('\n').filter(Boolean).length, 1, out); // drawn twice at 100% before 2026-12-08
  out = '';
  const slow = new Progress({ label: 'reading', total: 100, unit: 'bytes', stream });
  slow.update(10);
  slow.complete('3 documents');
  const lines = out.split('\n').filter(Boolean);
  assert.equal(lines.length, 2);
  assert.match(lines[1], /^reading  \[#{24}\] 100\.0%.*3 documents$/);
});
