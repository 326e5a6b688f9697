// Tests for the browser entry (browser.ts) run in Node, whose fetch and TF.js cpu backend are the
// browser's: the pure-JavaScript tokenizer (@huggingface/tokenizers on tokenizer.json) gives ids
// identical to the `tokenizers` bindings on 1,000 varied lines and 3,000 fuzz strings, for BERT
// WordPiece and RoBERTa byte-level BPE; a `--format tfjs` export served over HTTP is rebuilt from
// model.json alone (config and layout in its metadata) and fillMaskTopK equals
// `mlm fill-mask --json` (tokens, strings, sequences; scores within 1e-5).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { BrowserTokenizer, fillMaskTopK, loadTfjsModel, type BrowserCandidate } from '../browser.ts';
import { InputError } from '../common/errors.ts';
import { selectBackend, type Tf } from '../training/backend.ts';
import { exportModel } from '../training/export-model.ts';
import { fuzzStrings, parityLines } from './fixtures/tokenizers/lines.ts';
import { makeTinyCheckpoint, runMlm, tinyTokenizer } from './training/tiny-checkpoint.ts';

let tmp: string;
let tf: Tf;
let server: http.Server;
let baseUrl: string;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-browser-test-'));
  tf = (await selectBackend('cpu', { log: () => {} })).tf;
  // A static server for the exports (the path stays under tmp).
  server = http.createServer((req, res) => {
    const file = path.join(tmp, path.normalize(decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname)));
    if (!file.startsWith(tmp + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200).end(fs.readFileSync(file));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
});
after(() => {
  server.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

for (const family of ['bert', 'roberta'] as const) {
  test(`${family}: the pure-JavaScript tokenizer's ids equal the bindings' on 4,000 lines`, async () => {
    const native = await tinyTokenizer(family);
    const dir = path.join(tmp, `tok-${family}`);
    await native.save(dir);
    const js = new BrowserTokenizer(JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8')), JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8')));
    // Each edge of the astral ideograph blocks the Rust normalizer spaces (and their neighbours outside).
    const edges = [0x1ffff, 0x20000, 0x2a6df, 0x2a6e0, 0x2a6ff, 0x2a700, 0x2b73f, 0x2b740, 0x2b81f, 0x2b820, 0x2b91f, 0x2b920, 0x2ceaf, 0x2ceb0, 0x2f7ff, 0x2f800, 0x2fa1f, 0x2fa20];
    const astral = edges.map((cp) => `ab${String.fromCodePoint(cp)}cd ${String.fromCodePoint(cp)}`);
    const lines = [...parityLines(1000), ...fuzzStrings(3000), ...astral];
    let differ = 0;
    let first = '';
    for (const line of lines) {
      const want = (await native.encodeWithSpecials(line)).ids;
      const got = js.encodeWithSpecials(line);
      if (got.length !== want.length || got.some((id, i) => id !== want[i])) {
        if (differ++ === 0) first = `${JSON.stringify(line)}: ${JSON.stringify(got)} vs ${JSON.stringify(want)}`;
      }
    }
    console.log(`# ${family}: ${differ} of ${lines.length} lines differ`);
    assert.equal(differ, 0, `first difference: ${first}`);
    assert.equal(js.maskToken, native.maskToken);
  });
}

for (const family of ['bert', 'roberta'] as const) {
  describe(`${family}: a tfjs export in the browser entry`, () => {
    let src: string;
    before(async () => {
      src = (await makeTinyCheckpoint(path.join(tmp, `${family}-src`), family, { seed: 21 })).dir;
      await exportModel({ model: src, out: path.join(tmp, `${family}-tfjs`), format: 'tfjs' });
    });

    test('model.json describes the model: config, layout, tokenizer', () => {
      const meta = JSON.parse(fs.readFileSync(path.join(tmp, `${family}-tfjs`, 'model.json'), 'utf8')).userDefinedMetadata.mlmkit;
      const config = JSON.parse(fs.readFileSync(path.join(src, 'config.json'), 'utf8'));
      assert.equal(meta.format_version, 2);
      assert.deepEqual(meta.config, config);
      assert.equal(meta.tokenizer, 'tokenizer.json');
      assert.match(meta.layout, /\[in, out\]/);
    });

    test('fillMaskTopK over HTTP equals mlm fill-mask --json', async () => {
      const m = await loadTfjsModel(tf, `${baseUrl}${family}-tfjs/`);
      const mask = m.tokenizer.maskToken;
      for (const text of [`the ${mask} sat on the mat .`, `a ${mask} and a ${mask} .`]) {
        const cli = await runMlm(['fill-mask', '--model', src, '--backend', 'cpu', '--top-k', '5', '--json', text]);
        assert.equal(cli.code, 0, cli.stderr);
        const want = JSON.parse(cli.stdout) as BrowserCandidate[] | BrowserCandidate[][];
        const got = await fillMaskTopK(m, text, 5);
        const flat = <T,>(x: T[] | T[][]): T[][] => (Array.isArray(x[0]) ? (x as T[][]) : [x as T[]]);
        const [g, w] = [flat(got), flat(want)];
        assert.equal(g.length, w.length);
        let maxDiff = 0;
        g.forEach((list, i) => {
          assert.deepEqual(list.map((c) => [c.token, c.token_str, c.sequence]), w[i].map((c: BrowserCandidate) => [c.token, c.token_str, c.sequence]));
          list.forEach((c, j) => { maxDiff = Math.max(maxDiff, Math.abs(c.score - w[i][j].score)); });
        });
        console.log(`# ${family} ${JSON.stringify(text)}: max |score difference| browser entry vs CLI = ${maxDiff.toExponential(2)}`);
        assert.ok(maxDiff <= 1e-5, `max difference ${maxDiff}`);
      }
      // Bad input: an InputError in the CLI's words (topK 0 gave [], -1 the whole vocabulary less one).
      const refused = (re: RegExp) => (e: unknown) => e instanceof InputError && re.test(e.message);
      for (const k of [0, -1, 2.5, Number.NaN, '3' as unknown as number]) {
        await assert.rejects(fillMaskTopK(m, `the ${mask} .`, k), refused(/^fillMaskTopK: topK must be a whole number >= 1, got /), String(k));
      }
      await assert.rejects(fillMaskTopK(m, 42 as unknown as string), refused(/^fillMaskTopK: the text must be a string, got number$/));
      await assert.rejects(fillMaskTopK(m, 'no mask here'), refused(new RegExp(`^no ${mask.replace(/[[\]]/g, '\\$&')} token in the text; put `)));
      const cli = await runMlm(['fill-mask', '--model', src, '--backend', 'cpu', `${'word '.repeat(200)}${mask}`]);
      const cliLine = cli.stderr.trim().replace(/^mlm: error: /, '');
      await assert.rejects(fillMaskTopK(m, `${'word '.repeat(200)}${mask}`), (e: unknown) => e instanceof InputError && e.message === cliLine);
      m.dispose();
    });
  });
}

test('a model.json naming files outside its folder, or shards that do not hold its weights, is refused with one clear error', async () => {
  const good = path.join(tmp, 'bert-tfjs');
  if (!fs.existsSync(path.join(good, 'model.json'))) {
    const src = (await makeTinyCheckpoint(path.join(tmp, 'bad-src'), 'bert', { seed: 2 })).dir;
    await exportModel({ model: src, out: good, format: 'tfjs' });
  }
  const modelJson = JSON.parse(fs.readFileSync(path.join(good, 'model.json'), 'utf8'));
  const variant = (name: string, edit: (m: typeof modelJson) => void, shardBytes?: number) => {
    const dir = path.join(tmp, `bad-${name}`);
    fs.cpSync(good, dir, { recursive: true });
    const m = structuredClone(modelJson);
    edit(m);
    fs.writeFileSync(path.join(dir, 'model.json'), JSON.stringify(m));
    if (shardBytes !== undefined) fs.truncateSync(path.join(dir, modelJson.weightsManifest[0].paths[0]), shardBytes);
    return `${baseUrl}bad-${name}/`;
  };
  fs.writeFileSync(path.join(tmp, 'secret.bin'), Buffer.alloc(64));
  const cases: Array<[string, (m: typeof modelJson) => void, RegExp, number?]> = [
    ['up', (m) => { m.weightsManifest[0].paths = ['../secret.bin']; }, /model\.json names the weight shard "\.\.\/secret\.bin", not a plain file name inside the folder; export it again with mlm export --format tfjs$/],
    ['abs', (m) => { m.weightsManifest[0].paths = ['http://evil.example/x.bin']; }, /names the weight shard "http:\/\/evil\.example\/x\.bin", not a plain file name/],
    ['tok', (m) => { m.userDefinedMetadata.mlmkit.tokenizer = '/etc/passwd'; }, /names the tokenizer file "\/etc\/passwd", not a plain file name/],
    ['dtype', (m) => { m.weightsManifest[0].weights[0].dtype = 'float16'; }, /describes weight ".*" with shape \[.*\] and dtype "float16" \(float32 or int32 of whole sizes expected\)/],
    ['short', () => {}, /model\.json's weights take \d+ bytes but its shards hold 1000; export it again/, 1000],
  ];
  for (const [name, edit, re, bytes] of cases) {
    await assert.rejects(loadTfjsModel(tf, variant(name, edit, bytes)), (e: Error) => re.test(e.message) && !e.message.includes('\n'), name);
  }
});

