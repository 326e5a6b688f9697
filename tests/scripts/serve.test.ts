// Tests for `mlm serve`'s page server (scripts/serve/): the page, its bundled
// script and the export's files over HTTP on 127.0.0.1, paths outside the export refused, and a
// folder without model.json refused; then Debian's Chromium (headless, driven by puppeteer-core,
// nothing downloaded) loads the page on TF.js's cpu backend and on webgl (SwiftShader, Chromium's
// software GL), a sentence is typed and submitted, and
// the top-k rows shown equal `mlm fill-mask --json` (tokens; scores within 1e-5). A screenshot of
// the page is saved to the path the test prints. The Chromium test skips when no Chromium is
// installed (CHROMIUM_PATH, else /usr/bin/chromium), unless MLM_REQUIRE_CHROMIUM=1.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { InputError } from '../../common/errors.ts';
import { exportModel } from '../../training/export-model.ts';
import { servePage, type RunningServer } from '../../scripts/serve/server.ts';
import { makeTinyCheckpoint, runMlm } from '../training/tiny-checkpoint.ts';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const haveChromium = fs.existsSync(CHROMIUM);
let tmp: string;
let src: string;
let server: RunningServer;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-serve-test-'));
  src = (await makeTinyCheckpoint(path.join(tmp, 'src'), 'bert', { seed: 8 })).dir;
  await exportModel({ model: src, out: path.join(tmp, 'tfjs'), format: 'tfjs' });
  fs.writeFileSync(path.join(tmp, 'secret.txt'), 'outside the export\n');
  server = await servePage({ exportDir: path.join(tmp, 'tfjs'), port: 0 });
});
after(async () => {
  await server?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('the server gives the page, its script and the export, and nothing outside it', async () => {
  assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  const page = await fetch(server.url);
  assert.equal(page.status, 200);
  assert.match(await page.text(), /<script type="module" src="app.js">/);
  const app = await fetch(server.url + 'app.js');
  assert.equal(app.status, 200);
  const js = await app.text();
  assert.ok(js.includes('mlmFill') && !/from\s*["']node:/.test(js), 'one self-contained module');
  const model = await (await fetch(server.url + 'model/model.json')).json();
  assert.equal(model.userDefinedMetadata.mlmkit.format_version, 2);
  for (const p of ['model/..%2Fsecret.txt', 'model/../secret.txt', 'secret.txt', 'model/', 'model/%2e%2e/secret.txt']) {
    assert.equal((await fetch(server.url + p)).status, 404, p);
  }
  await assert.rejects(servePage({ exportDir: src, port: 0 }), (e: unknown) => e instanceof InputError && /has no model\.json/.test(e.message));
});

test('an export with a missing or short shard, or a model.json naming files outside it, is refused before serving (InputError, one line)', async () => {
  const good = path.join(tmp, 'tfjs');
  const modelJson = JSON.parse(fs.readFileSync(path.join(good, 'model.json'), 'utf8'));
  const shard = modelJson.weightsManifest[0].paths[0] as string;
  const variant = (name: string, change: (dir: string) => void) => {
    const dir = path.join(tmp, `broken-${name}`);
    fs.cpSync(good, dir, { recursive: true });
    change(dir);
    return dir;
  };
  const cases: Array<[string, (dir: string) => void, RegExp]> = [
    ['missing', (d) => fs.rmSync(path.join(d, shard)), new RegExp(`^\\S+/${shard}, named in \\S+model\\.json, is missing; export it again with mlm export --format tfjs$`)],
    ['short', (d) => fs.truncateSync(path.join(d, shard), 100), /^\S+model\.json: the weights take \d+ bytes but the shards hold 100; export it again with mlm export --format tfjs$/],
    ['outside', (d) => fs.writeFileSync(path.join(d, 'model.json'), JSON.stringify({ ...modelJson, weightsManifest: [{ ...modelJson.weightsManifest[0], paths: ['../secret.txt'] }] })), /names the weight shard "\.\.\/secret\.txt", not a plain file name inside the folder/],
    ['json', (d) => fs.writeFileSync(path.join(d, 'model.json'), '{'), /^\S+model\.json is not valid JSON \(.*\); export it again with mlm export --format tfjs$/],
  ];
  for (const [name, change, re] of cases) {
    await assert.rejects(servePage({ exportDir: variant(name, change), port: 0 }), (e: unknown) => e instanceof InputError && re.test(e.message) && !e.message.includes('\n'), name);
  }
});

/** GET `p` with the Host header given (fetch would set its own); the status and body. */
function get(p: string, host?: string): Promise<{ status: number; body: string }> {
  const { port } = new URL(server.url);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: p, headers: host !== undefined ? { host } : {} }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => { body += d; }).on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject).end();
  });
}

test('the server refuses another Host (DNS rebinding), answers a malformed path with 400 and goes on, and follows no link out of the export', async () => {
  const { port } = new URL(server.url);
  for (const host of [`evil.example:${port}`, 'evil.example', `127.0.0.1:${Number(port) + 1}`]) {
    assert.deepEqual(await get('/model/model.json', host), { status: 403, body: 'this server answers requests for 127.0.0.1 only\n' }, host);
  }
  assert.equal((await get('/model/model.json', `localhost:${port}`)).status, 200);
  for (const p of ['/model/%E0%A4%A', '/model/%', '/%zz']) assert.deepEqual(await get(p), { status: 400, body: 'malformed path\n' }, p);
  assert.equal((await get('/model/model.json')).status, 200, 'the server stopped after a malformed path');
  fs.symlinkSync(path.join(tmp, 'secret.txt'), path.join(tmp, 'tfjs', 'link.txt'));
  try {
    assert.equal((await get('/model/link.txt')).status, 404);
  } finally {
    fs.rmSync(path.join(tmp, 'tfjs', 'link.txt'));
  }
});

for (const backend of ['cpu', 'webgl']) test(`Chromium (${backend}): the page's top-k equals mlm fill-mask --json`, { skip: !haveChromium && process.env.MLM_REQUIRE_CHROMIUM !== '1' ? `no Chromium at ${CHROMIUM}` : false }, async () => {
  const text = 'the [MASK] sat on the mat .';
  const cli = await runMlm(['fill-mask', '--model', src, '--backend', 'cpu', '--top-k', '5', '--json', text]);
  assert.equal(cli.code, 0, cli.stderr);
  const want = JSON.parse(cli.stdout) as { token: number; score: number }[];

  const puppeteer = (await import('puppeteer-core')).default;
  const browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage', '--enable-unsafe-swiftshader', '--use-angle=swiftshader'] });
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 900, height: 600 });
    await page.goto(`${server.url}?backend=${backend}`);
    await page.waitForSelector('#status[data-ready="true"]', { timeout: 60_000 });
    assert.equal(await page.$eval('#status', (e) => (e as HTMLElement).dataset.backend), backend);
    await page.$eval('#text', (e) => { (e as HTMLInputElement).value = ''; });
    await page.type('#text', text);
    await page.click('button[type=submit]');
    await page.waitForSelector('tr.candidate', { timeout: 60_000 });
    const rows = await page.$$eval('tr.candidate', (trs) => trs.map((tr) => ({ token: Number((tr as HTMLElement).dataset.token), score: Number((tr as HTMLElement).dataset.score) })));
    const shot = path.join(os.tmpdir(), `mlmkit-serve-page-${backend}.png`);
    await page.screenshot({ path: shot });
    console.log(`# screenshot of the page: ${shot}`);
    assert.deepEqual(rows.map((r) => r.token), want.map((w) => w.token));
    const maxDiff = Math.max(...rows.map((r, i) => Math.abs(r.score - want[i].score)));
    console.log(`# Chromium page (${backend} backend) vs mlm fill-mask --json: max |score difference| = ${maxDiff.toExponential(2)}`);
    assert.ok(maxDiff <= 1e-5, `max difference ${maxDiff}`);
  } finally {
    await browser.close();
  }
});
