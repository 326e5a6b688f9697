// Tests for the npm package (package.json exports/files, tsconfig.build.json, index.ts): `npm pack`
// builds dist/ and packs only what users need; the tarball installs into a fresh project from the
// npm cache; plain JavaScript there imports 'mlmkit' and its fillMask on a tiny checkpoint gives
// exactly what `mlm fill-mask --json` prints (same backend, same model: same numbers), its
// exportModel writes a folder the repository's loader reads back, 'mlmkit/browser' imports and its
// tokenizer gives the bindings' ids, and the installed `mlm` runs.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadModelFolder } from '../../training/checkpoint.ts';
import { makeTinyCheckpoint, ROOT, runMlm, sameBits } from '../training/tiny-checkpoint.ts';

let tmp: string;
let app: string;
let tarball: string;

function run(cmd: string, args: string[], cwd: string, timeout = 300_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd, timeout, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    );
  });
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-package-test-'));
  const packed = await run('npm', ['pack', '--json', '--pack-destination', tmp], ROOT);
  assert.equal(packed.code, 0, packed.stderr);
  const info = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('['))) as { filename: string; files: { path: string }[] }[];
  tarball = path.join(tmp, info[0].filename);
  fs.writeFileSync(path.join(tmp, 'files.json'), JSON.stringify(info[0].files.map((f) => f.path)));
  app = path.join(tmp, 'app');
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', type: 'module', private: true }));
  const installed = await run('npm', ['install', tarball, '--prefer-offline', '--no-audit', '--no-fund'], app);
  assert.equal(installed.code, 0, installed.stderr);
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('the tarball holds the compiled entry and its types, and no tests, fixtures or run logs', () => {
  const files: string[] = JSON.parse(fs.readFileSync(path.join(tmp, 'files.json'), 'utf8'));
  for (const f of ['dist/index.js', 'dist/index.d.ts', 'dist/browser.js', 'dist/browser.d.ts', 'scripts/serve/page.html', 'scripts/serve/server.ts', 'dist/training/fill-mask.js', 'dist/training/fill-mask.d.ts', 'scripts/mlm.mjs', 'package.json', 'training/backend/simd/kernels.wasm', 'training/backend/simd/kernels-shared.wasm']) {
    assert.ok(files.includes(f), `${f} is packed`);
  }
  const unwanted = files.filter((f) => /^(tests|checkpoints|gpu-results|\.bench)\/|^scripts\/(gpu-runs|reference)\/|fixtures/.test(f));
  assert.deepEqual(unwanted, []);
  const pkg = JSON.parse(fs.readFileSync(path.join(app, 'node_modules/mlmkit/package.json'), 'utf8'));
  assert.equal(pkg.exports['.'].types, './dist/index.d.ts');
  // The installing project gets the arquero dependency that resolves (the root override does not apply there).
  const flechette = JSON.parse(fs.readFileSync(path.join(app, 'node_modules/@uwdata/flechette/package.json'), 'utf8'));
  assert.equal(flechette.version, '2.6.0');
});

for (const family of ['bert', 'roberta'] as const) {
  test(`${family}: fillMask from plain JavaScript equals mlm fill-mask --json`, async () => {
    const ck = await makeTinyCheckpoint(path.join(tmp, `ck-${family}`), family, { seed: 5 });
    const text = `the ${ck.tokenizer.maskToken} sat on the ${ck.tokenizer.maskToken} .`;
    const cli = await runMlm(['fill-mask', '--model', ck.dir, '--backend', 'cpu', '--top-k', '4', '--json', text]);
    assert.equal(cli.code, 0, cli.stderr);
    const script = `
      const { loadModel, fillMask, VERSION } = await import('mlmkit');
      const model = await loadModel(${JSON.stringify(ck.dir)}, { backend: 'cpu' });
      const out = await fillMask(model, ${JSON.stringify(text)}, { topK: 4 });
      model.dispose();
      console.log(JSON.stringify({ version: VERSION, backend: model.backend, out }));
    `;
    const js = await run(process.execPath, ['--input-type=module', '-e', script], app);
    assert.equal(js.code, 0, js.stderr);
    const got = JSON.parse(js.stdout);
    assert.equal(got.version, JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version);
    assert.equal(got.backend, 'cpu');
    const want = JSON.parse(cli.stdout);
    assert.equal(got.out.length, 2, 'two masks: two lists');
    let maxDiff = 0;
    got.out.forEach((list: { score: number }[], i: number) => list.forEach((c, j) => { maxDiff = Math.max(maxDiff, Math.abs(c.score - want[i][j].score)); }));
    console.log(`# ${family}: max |score difference| library vs CLI = ${maxDiff}`);
    assert.deepEqual(got.out, want);
  });
}

test('exportModel from plain JavaScript writes a folder that loads back bit-identical; bad input is an InputError', async () => {
  const ck = await makeTinyCheckpoint(path.join(tmp, 'ck-export'), 'bert', { seed: 6 });
  const out = path.join(tmp, 'exported');
  const script = `
    const { exportModel, InputError } = await import('mlmkit');
    const summary = await exportModel({ model: ${JSON.stringify(ck.dir)}, out: ${JSON.stringify(out)}, format: 'hf' });
    let refused = null;
    try { await exportModel({ model: ${JSON.stringify(ck.dir)}, out: ${JSON.stringify(out)} }); } catch (e) { refused = { input: e instanceof InputError, message: e.message }; }
    console.log(JSON.stringify({ summary, refused }));
  `;
  const js = await run(process.execPath, ['--input-type=module', '-e', script], app);
  assert.equal(js.code, 0, js.stderr);
  const { summary, refused } = JSON.parse(js.stdout);
  assert.equal(summary.format, 'hf');
  assert.ok(summary.files.includes('model.safetensors') && summary.files.includes('config.json'));
  assert.deepEqual(refused, { input: true, message: `--out ${out} is not empty; choose an empty or new folder, or pass --overwrite to replace it` });
  const a = await loadModelFolder(ck.dir);
  const b = await loadModelFolder(out);
  assert.deepEqual([...b.weights.tensors.keys()].sort(), [...a.weights.tensors.keys()].sort());
  for (const [name, t] of a.weights.tensors) assert.ok(sameBits(t.data as Float32Array, b.weights.tensors.get(name)!.data as Float32Array), name);
});

test('mlmkit/browser imports from plain JavaScript and its tokenizer gives the bindings\' ids', async () => {
  const ck = await makeTinyCheckpoint(path.join(tmp, 'ck-browser'), 'roberta', { seed: 7 });
  const text = 'The cat sat on the <mask>, naïvely.';
  const script = `
    const fs = await import('node:fs');
    const { BrowserTokenizer, loadTfjsModel, fillMaskTopK } = await import('mlmkit/browser');
    const read = (f) => JSON.parse(fs.readFileSync(${JSON.stringify(ck.dir)} + '/' + f, 'utf8'));
    const tok = new BrowserTokenizer(read('tokenizer.json'), read('tokenizer_config.json'));
    console.log(JSON.stringify({ ids: tok.encodeWithSpecials(${JSON.stringify(text)}), fns: [typeof loadTfjsModel, typeof fillMaskTopK] }));
  `;
  const js = await run(process.execPath, ['--input-type=module', '-e', script], app);
  assert.equal(js.code, 0, js.stderr);
  const got = JSON.parse(js.stdout);
  assert.deepEqual(got.ids, (await ck.tokenizer.encodeWithSpecials(text)).ids);
  assert.deepEqual(got.fns, ['function', 'function']);
});

test('the installed mlm command runs', async () => {
  const r = await run(path.join(app, 'node_modules/.bin/mlm'), ['fill-mask', '--help'], app, 60_000);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /--top-k/);
});
