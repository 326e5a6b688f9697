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
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { InputError } from '../../common/errors.ts';
import { exportModel } from '../../training/export-model.ts';
import { servePage, type RunningServer } from '../../scripts/serve/server.ts';
import { makeTinyCheckpoint, runMlm } from '../training/tiny-checkpoint.ts';

const MLM = path.join(import.meta.dirname, '..', '..', 'scripts', 'mlm.mjs');

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
    ['config', (d) => {
      const m = structuredClone(modelJson);
      m.userDefinedMetadata.mlmkit.config.hidden_size = 'big';
      fs.writeFileSync(path.join(d, 'model.json'), JSON.stringify(m));
    }, /model\.json.*hidden_size/],
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

test('only the files the page loads are served (model.json, its tokenizer and shards, tokenizer_config.json), streamed; HEAD gives the headers', async () => {
  const dir = path.join(tmp, 'tfjs');
  const modelJson = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
  const shard = modelJson.weightsManifest[0].paths[0] as string;
  const tokenizer = modelJson.userDefinedMetadata.mlmkit.tokenizer as string;
  for (const name of ['model.json', shard, tokenizer, 'tokenizer_config.json']) {
    const r = await fetch(server.url + 'model/' + name);
    assert.equal(r.status, 200, name);
    assert.ok(Buffer.from(await r.arrayBuffer()).equals(fs.readFileSync(path.join(dir, name))), `${name} differs`);
  }
  // Anything else in the folder is not the page's business: a user's notes, dotfiles, a subfolder.
  fs.writeFileSync(path.join(dir, '.env'), 'TOKEN=hf_secret\n');
  fs.mkdirSync(path.join(dir, 'sub'));
  fs.writeFileSync(path.join(dir, 'sub', 'notes.txt'), 'mine\n');
  fs.symlinkSync('model.json', path.join(dir, 'alias.json'));
  try {
    for (const p of ['.env', 'sub/notes.txt', 'alias.json', 'config.json', 'sub']) assert.equal((await get(`/model/${p}`)).status, 404, p);
  } finally {
    for (const p of ['.env', 'sub', 'alias.json']) fs.rmSync(path.join(dir, p), { recursive: true });
  }
  const head = await fetch(server.url + 'model/' + shard, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(Number(head.headers.get('content-length')), fs.statSync(path.join(dir, shard)).size);
  assert.equal((await head.arrayBuffer()).byteLength, 0);
  assert.equal((await fetch(server.url + 'model/model.json', { method: 'POST', body: 'x' })).status, 405);
});

test('a shard too large to read whole (3 GiB, sparse) is streamed, and the server goes on', async () => {
  const dir = path.join(tmp, 'big');
  fs.cpSync(path.join(tmp, 'tfjs'), dir, { recursive: true });
  const modelJson = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
  const shard = modelJson.weightsManifest[0].paths[0] as string;
  const big = await servePage({ exportDir: dir, port: 0 });
  try {
    fs.truncateSync(path.join(dir, shard), 3 * 1024 ** 3); // after the start-up check, as a file that changed
    const r = await fetch(big.url + 'model/' + shard);
    assert.equal(r.status, 200);
    assert.equal(Number(r.headers.get('content-length')), 3 * 1024 ** 3);
    const reader = r.body!.getReader();
    const first = await reader.read();
    assert.ok(first.value && first.value.byteLength > 0);
    await reader.cancel();
    assert.equal((await fetch(big.url + 'model/model.json')).status, 200, 'the server stopped');
  } finally {
    await big.close();
  }
});

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

test('the page writes what comes from the model (mask token, candidates) as text, never as markup', () => {
  // A model's tokenizer files are anyone's (mlm serve takes Hub ids): a mask token such as
  // <img src=x onerror=...> put through innerHTML ran script in the page.
  const source = fs.readFileSync(path.join(import.meta.dirname, '..', '..', 'scripts', 'serve', 'page-main.ts'), 'utf8');
  assert.doesNotMatch(source, /innerHTML|outerHTML|insertAdjacentHTML|document\.write/);
});

test('port 80: a Host without the port (as browsers send it) is this server', async (t) => {
  let on80: RunningServer;
  try {
    on80 = await servePage({ exportDir: path.join(tmp, 'tfjs'), port: 80 });
  } catch (err) {
    return t.skip(`port 80 cannot be opened here (${(err as Error).message})`);
  }
  try {
    for (const host of ['127.0.0.1', 'localhost', '127.0.0.1:80']) assert.equal((await fetch(`http://${host}/model/model.json`)).status, 200, host);
  } finally {
    await on80.close();
  }
});

test('mlm serve of a model folder removes its temporary export on a second Ctrl-C and when the terminal closes (SIGHUP), with a connection left open', async (t) => {
  const temps = path.join(tmp, 'serve-temps');
  fs.mkdirSync(temps);
  const exports = () => fs.readdirSync(temps).filter((e) => e.startsWith('mlmkit-serve-'));
  for (const signals of [['SIGINT', 'SIGINT'], ['SIGHUP']] as NodeJS.Signals[][]) {
    const json = signals.length === 1; // once each way: the human line, and --json
    const child = spawn(process.execPath, [MLM, 'serve', '--model', src, '--port', '0', ...(json ? ['--json'] : [])], { env: { ...process.env, TMPDIR: temps }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    child.stderr.resume();
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    t.after(() => child.kill('SIGKILL'));
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no address printed: ${out}`)), 60_000);
      child.stdout.on('data', () => {
        if (!out.endsWith('\n')) return;
        const m = json ? [null, (JSON.parse(out) as { url: string }).url] : out.match(/^serving \S+ at (http:\/\/127\.0\.0\.1:\d+\/) \(Ctrl-C to stop\)\n$/);
        if (m) { clearTimeout(timer); resolve(m[1]!); }
      });
    });
    assert.equal(exports().length, 1, 'the temporary export');
    // A request left half-sent, which a plain close would wait for.
    const { port } = new URL(url);
    const socket = net.connect(Number(port), '127.0.0.1').on('error', () => {}); // reset when the server stops
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write('GET /model/model.json HTTP/1.1\r\nHost: 127.0.0.1\r\n');
    for (const sig of signals) child.kill(sig);
    const code = await exited;
    socket.destroy();
    assert.deepEqual(exports(), [], `${signals.join(', ')}: the temporary export is still there (exit ${code})`);
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
