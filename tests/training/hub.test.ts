// Tests for training/hub.ts and `mlm download`, against a local imitation of the Hugging Face Hub (./fake-hub.ts)
// (node:http on 127.0.0.1, a random port) serving tiny checkpoints made here. It answers the
// requests the real @huggingface/hub client makes:
//   GET /api/models/{id}/revision/{rev}     model info with the commit `sha`
//   GET /api/models/{id}/tree/{rev}         [{type, oid, size, path, lfs?: {oid, size, pointerSize}}]
//   GET /{id}/resolve/{rev}/{file}          small files: 200/206 with ETag, X-Repo-Commit; LFS files:
//                                           302 to /cdn/{id}/{sha256} with X-Linked-Etag, X-Linked-Size
//   GET /cdn/{id}/{sha256}                  the bytes with an ETag, honouring Range
// with the Hub's error answers (X-Error-Code RepoNotFound / RevisionNotFound / EntryNotFound,
// 401 for a missing or bad token). Nothing leaves 127.0.0.1; every child process has a timeout.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { InputError } from '../../common/errors.ts';
import { downloadModel, hubSettings, isHubId, isRevision, loadModel, pathInside, resolveModel } from '../../training/hub.ts';
import { saveSafetensors } from '../../training/safetensors.ts';
import { FakeHub, GOOD_TOKEN, repoFile, repoFromFolder } from './fake-hub.ts';
import { makeTinyCheckpoint, ROOT, sameBits, type TinyCheckpoint } from './tiny-checkpoint.ts';

const MLM = path.join(ROOT, 'scripts/mlm.mjs');

let tmp: string;
let hub: FakeHub;
let ck: TinyCheckpoint;
let sharded: string;
/** An endpoint where nothing listens. */
let deadEndpoint: string;

/** The environment of one client: this Hub, its own HF_HOME, no token unless given. */
function envFor(home: string, extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && !/^(HF_|HUGGING_FACE_|HUGGINGFACE_|TRANSFORMERS_OFFLINE|MLM_)/.test(k)) env[k] = v;
  }
  return { ...env, HF_ENDPOINT: hub.url, HF_HOME: home, HF_HUB_DOWNLOAD_TIMEOUT: '5', ...extra };
}

function mlm(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MLM, ...args], { cwd: ROOT, env, timeout: 45_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

const quiet = { log: (_: string) => {} };

function oneLineInputError(pattern: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof InputError, `expected an InputError, got ${String(err)}`);
    assert.match(err.message, pattern);
    assert.ok(!err.message.includes('\n'));
    return true;
  };
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-hub-test-'));
  ck = await makeTinyCheckpoint(path.join(tmp, 'src'), 'bert', { seed: 11 });
  hub = new FakeHub();
  await hub.start();
  const probe = http.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  deadEndpoint = `http://127.0.0.1:${(probe.address() as AddressInfo).port}`;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  hub.repos.set('org/tiny-bert', repoFromFolder(ck.dir, 'org/tiny-bert', { 'pytorch_model.bin': Buffer.from('pickle!') }));
  hub.repos.set('org/private-bert', { ...repoFromFolder(ck.dir, 'org/private-bert'), private: true });
  hub.repos.set('org/truncated', { ...repoFromFolder(ck.dir, 'org/truncated'), truncate: 'model.safetensors' });
  hub.repos.set('org/corrupt', { ...repoFromFolder(ck.dir, 'org/corrupt'), corrupt: 'model.safetensors' });
  hub.repos.set('org/corrupt-small', { ...repoFromFolder(ck.dir, 'org/corrupt-small'), corrupt: 'config.json' });
  const ptOnly = repoFromFolder(ck.dir, 'org/pt-only', { 'pytorch_model.bin': Buffer.from('pickle!') });
  ptOnly.files.delete('model.safetensors');
  hub.repos.set('org/pt-only', ptOnly);

  // A sharded checkpoint: the index and two shards.
  sharded = path.join(tmp, 'sharded-src');
  fs.cpSync(ck.dir, sharded, { recursive: true });
  fs.rmSync(path.join(sharded, 'model.safetensors'));
  const names = [...ck.hf.keys()].sort();
  const weightMap: Record<string, string> = {};
  for (const [i, part] of [names.slice(0, 10), names.slice(10)].entries()) {
    const file = `model-0000${i + 1}-of-00002.safetensors`;
    await saveSafetensors(path.join(sharded, file), new Map(part.map((n) => [n, { dtype: 'F32' as const, shape: ck.hf.get(n)!.shape, data: ck.hf.get(n)!.data }])));
    for (const n of part) weightMap[n] = file;
  }
  fs.writeFileSync(path.join(sharded, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  hub.repos.set('org/sharded', repoFromFolder(sharded, 'org/sharded'));

  // Hostile mirrors: an index naming a shard outside the cache (listed under that name too), and
  // a listing whose oid is a path.
  const escape = `../../../../../${path.basename(tmp)}/victim/y.safetensors`;
  const evil = repoFromFolder(sharded, 'org/evil-index');
  const shardBytes = evil.files.get('model-00002-of-00002.safetensors')!;
  evil.files.set(escape, shardBytes);
  evil.files.set('model.safetensors.index.json', repoFile(Buffer.from(JSON.stringify({ metadata: {}, weight_map: Object.fromEntries(Object.entries(weightMap).map(([k, v]) => [k, v.endsWith('00002.safetensors') ? escape : v])) })), false));
  hub.repos.set('org/evil-index', evil);
});

after(async () => {
  await hub?.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('settings and ids', () => {
  test('hubSettings reads the environment as huggingface_hub does', () => {
    const s = hubSettings({ HF_HOME: '/h', HF_ENDPOINT: 'http://mirror/', HF_HUB_OFFLINE: 'true', HF_TOKEN: 'hf_x', HUGGING_FACE_HUB_TOKEN: 'hf_y' });
    assert.equal(s.cacheDir, path.join('/h', 'hub'));
    assert.equal(s.endpoint, 'http://mirror');
    assert.equal(s.offline, true);
    assert.equal(s.token, 'hf_x');
    assert.equal(s.tokenSource, 'HF_TOKEN');
    const t = hubSettings({ HF_HOME: '/nonexistent-home', HF_HUB_CACHE: '/c', HUGGING_FACE_HUB_TOKEN: 'hf_y' });
    assert.equal(t.cacheDir, '/c');
    assert.equal(t.endpoint, 'https://huggingface.co');
    assert.equal(t.offline, false);
    assert.equal(t.token, 'hf_y');
    assert.equal(t.timeoutMs, 10_000);
    assert.equal(hubSettings({ HF_HUB_DOWNLOAD_TIMEOUT: '2.5' }).timeoutMs, 2_500);
    // A timeout that is no positive number is refused (it became 10 s without a word).
    for (const bad of ['abc', '-5', '0']) {
      assert.throws(() => hubSettings({ HF_HUB_DOWNLOAD_TIMEOUT: bad }), (e: unknown) => e instanceof InputError &&
        e.message === `HF_HUB_DOWNLOAD_TIMEOUT must be a positive number of seconds, got "${bad}"; set it so or unset it (10 s)`);
    }
    // An endpoint without its scheme (a common slip) or of another scheme: one line naming HF_ENDPOINT.
    for (const bad of ['hf-mirror.com', 'ftp://mirror', 'https://']) {
      assert.throws(() => hubSettings({ HF_ENDPOINT: bad }), (e: unknown) => e instanceof InputError &&
        e.message === `HF_ENDPOINT is "${bad}", not an http(s) address; give one like https://hf-mirror.com (scheme included), or unset it`);
    }
    const u = hubSettings({ XDG_CACHE_HOME: '/x', HF_HOME: '' });
    assert.equal(u.cacheDir, path.join('/x', 'huggingface', 'hub'));
    assert.equal(u.token, undefined);
  });

  test('HF_HUB_OFFLINE, when set, decides alone; TRANSFORMERS_OFFLINE counts only without it (huggingface_hub constants.py)', () => {
    const offline = (env: Record<string, string>) => hubSettings({ HF_HOME: '/h', ...env }).offline;
    assert.equal(offline({ TRANSFORMERS_OFFLINE: '1' }), true);
    assert.equal(offline({ HF_HUB_OFFLINE: '', TRANSFORMERS_OFFLINE: 'yes' }), true);
    assert.equal(offline({ HF_HUB_OFFLINE: '0', TRANSFORMERS_OFFLINE: '1' }), false);
    assert.equal(offline({ HF_HUB_OFFLINE: 'false', TRANSFORMERS_OFFLINE: '1' }), false);
    assert.equal(offline({ HF_HUB_OFFLINE: '1', TRANSFORMERS_OFFLINE: '0' }), true);
  });

  test('isHubId follows huggingface_hub validate_repo_id', () => {
    for (const ok of ['bert-base-uncased', 'google/bert_uncased_L-4_H-256_A-4', 'distilroberta-base', 'a/b.c']) assert.ok(isHubId(ok), ok);
    for (const bad of ['./x', '/abs', 'a/b/c', 'a--b', 'a..b', '-a', 'a/', 'x.git', '']) assert.ok(!isHubId(bad), bad);
  });

  test('a local folder is used as is; a missing path or a bad id is a clear error', async () => {
    const r = await resolveModel(ck.dir, quiet);
    assert.deepEqual(r, { dir: ck.dir, source: ck.dir, revision: null });
    await assert.rejects(resolveModel(path.join(tmp, 'missing/model'), quiet), oneLineInputError(/model folder .* not found/));
    await assert.rejects(resolveModel('not a valid id!', quiet), oneLineInputError(/neither an existing folder nor a valid Hugging Face Hub id/));
  });
});

describe('downloads into the Hugging Face cache layout', () => {
  test('mlm download fills blobs/, snapshots/<sha>/ and refs/main, and nothing but the needed files', async () => {
    const home = path.join(tmp, 'home-cli');
    const before = hub.requests.length;
    const r = await mlm(['download', 'org/tiny-bert'], envFor(home));
    assert.equal(r.code, 0, r.stderr);
    const repo = hub.repos.get('org/tiny-bert')!;
    const storage = path.join(home, 'hub', 'models--org--tiny-bert');
    const snapshot = path.join(storage, 'snapshots', repo.sha);
    assert.equal(r.stdout, snapshot + '\n');
    assert.equal(fs.readFileSync(path.join(storage, 'refs', 'main'), 'utf8'), repo.sha);
    const files = fs.readdirSync(snapshot).sort();
    assert.deepEqual(files, ['config.json', 'model.safetensors', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json', 'vocab.txt']);
    for (const f of files) {
      const link = path.join(snapshot, f);
      assert.ok(fs.lstatSync(link).isSymbolicLink(), `${f} is a symlink`);
      const info = repo.files.get(f)!;
      assert.equal(fs.readlinkSync(link), path.join('..', '..', 'blobs', info.lfs ? info.sha256 : info.oid));
      assert.ok(fs.readFileSync(link).equals(info.bytes), `${f} content`);
    }
    assert.deepEqual(fs.readdirSync(path.join(storage, 'blobs')).filter((b) => b.includes('incomplete')), []);
    const asked = hub.requests.slice(before).join('\n');
    assert.doesNotMatch(asked, /pytorch_model\.bin|README\.md/);
    assert.match(asked, /GET \/api\/models\/org\/tiny-bert\/revision\/main/);
    assert.match(asked, /GET \/api\/models\/org\/tiny-bert\/tree\//);

    // A second download asks only for the revision and the listing.
    const n = hub.requests.length;
    const again = await downloadModel('org/tiny-bert', { env: envFor(home), ...quiet });
    assert.equal(again.dir, snapshot);
    assert.ok(hub.requests.slice(n).every((q) => q.includes('/api/models/')), hub.requests.slice(n).join(', '));

    // --json: the object of docs/formats.md ("Command output").
    const json = await mlm(['download', 'org/tiny-bert', '--json'], envFor(home));
    assert.equal(json.code, 0, json.stderr);
    assert.deepEqual(JSON.parse(json.stdout), { id: 'org/tiny-bert', revision: 'main', commit: repo.sha, folder: snapshot });
  });

  test('finetune, prepare, model resize, tokenizer extend, evaluate with a Hub id and a bad option or path: refused before any request, the error the only line', async () => {
    const before = hub.requests.length;
    const home = path.join(tmp, 'home-badopt');
    const r = await mlm(['finetune', '--from', 'org/tiny-bert', '--data', tmp, '--out', path.join(tmp, 'never'), '--lr', '-1'], envFor(home));
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr, 'mlm: error: --lr must be a positive number, got -1\n');
    const p = await mlm(['prepare', '--corpus', tmp, '--model', 'org/tiny-bert', '--out', path.join(tmp, 'never-data'), '--seq-len', '4'], envFor(home));
    assert.equal(p.code, 2, p.stderr);
    assert.equal(p.stderr, 'mlm: error: --seq-len must be an integer between 8 and 65536, got 4\n');
    const q = await mlm(['prepare', '--corpus', path.join(tmp, 'no-corpus'), '--model', 'org/tiny-bert', '--out', path.join(tmp, 'never-data')], envFor(home));
    assert.equal(q.code, 2, q.stderr);
    assert.match(q.stderr, /^mlm: error: corpus path not found: [^\n]*no-corpus[^\n]*\n$/);
    const z = await mlm(['model', 'resize', '--from', 'org/tiny-bert', '--tokenizer', path.join(tmp, 'no-tokenizer'), '--out', path.join(tmp, 'never-resized')], envFor(home));
    assert.equal(z.code, 2, z.stderr);
    assert.match(z.stderr, /^mlm: error: tokenizer path .*no-tokenizer does not exist; give a folder holding tokenizer\.json[^\n]*\n$/);
    const x = await mlm(['tokenizer', 'extend', '--from', 'org/tiny-bert', '--corpus', path.join(tmp, 'no-corpus'), '--add', '10', '--out', path.join(tmp, 'never-tok')], envFor(home));
    assert.equal(x.code, 2, x.stderr);
    assert.match(x.stderr, /^mlm: error: [^\n]*no-corpus[^\n]*\n$/);
    const e = await mlm(['evaluate', '--model', 'org/tiny-bert', '--data', path.join(tmp, 'no-data')], envFor(home));
    assert.equal(e.code, 2, e.stderr);
    assert.match(e.stderr, /^mlm: error: corpus path not found: [^\n]*no-data[^\n]*\n$/);
    const shards = path.join(tmp, 'shards-only');
    fs.mkdirSync(shards);
    fs.writeFileSync(path.join(shards, 'validation-00000.bin'), Buffer.alloc(64));
    const s = await mlm(['evaluate', '--model', 'org/tiny-bert', '--data', shards], envFor(home));
    assert.equal(s.code, 2, s.stderr);
    assert.match(s.stderr, /^mlm: error: [^\n]*shards-only looks like prepared data but has no manifest\.json \(an interrupted `mlm prepare`\?\); prepare it again\n$/);
    assert.deepEqual(hub.requests.slice(before), []);
    assert.equal(fs.existsSync(home), false);
  });

  test('fill-mask --model HUB_ID loads from the cache, online and then offline with the Hub gone', async () => {
    const home = path.join(tmp, 'home-fill');
    const text = 'the model learns to [MASK] the tokens.';
    const online = await mlm(['fill-mask', '--model', 'org/tiny-bert', text, '--json', '--backend', 'cpu'], envFor(home));
    assert.equal(online.code, 0, online.stderr);
    const local = await mlm(['fill-mask', '--model', ck.dir, text, '--json', '--backend', 'cpu'], envFor(home));
    assert.equal(local.code, 0, local.stderr);
    assert.deepEqual(JSON.parse(online.stdout), JSON.parse(local.stdout));

    // The Hub is unreachable: HF_HUB_OFFLINE=1 resolves main through refs/ without any request.
    const offlineEnv = envFor(home, { HF_HUB_OFFLINE: '1', HF_ENDPOINT: deadEndpoint });
    const offline = await mlm(['fill-mask', '--model', 'org/tiny-bert', text, '--json', '--backend', 'cpu'], offlineEnv);
    assert.equal(offline.code, 0, offline.stderr);
    assert.deepEqual(JSON.parse(offline.stdout), JSON.parse(local.stdout));

    // Not cached: a one-line error saying what to run.
    const missing = await mlm(['fill-mask', '--model', 'org/other', text], offlineEnv);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /^mlm: error: org\/other \(revision main\) is not in the Hugging Face cache at .* and HF_HUB_OFFLINE is set: unset it where the Hub can be reached to fetch it \(`mlm download org\/other` fetches it alone\), or give a local folder\n$/);

    // Without HF_HUB_OFFLINE, an unreachable Hub falls back to a complete cached snapshot.
    const fallback = await loadModel('org/tiny-bert', { env: envFor(home, { HF_ENDPOINT: deadEndpoint }), ...quiet });
    assert.equal(fallback.revision, hub.repos.get('org/tiny-bert')!.sha);
    const direct = await loadModel(ck.dir, quiet);
    for (const [name, t] of direct.weights.tensors) assert.ok(sameBits(fallback.weights.tensors.get(name)!.data, t.data), name);

    // A snapshot that lost a file (a cleaned cache, an interrupted copy) is "not complete", and says which.
    const snapshot = path.join(home, 'hub', 'models--org--tiny-bert', 'snapshots', hub.repos.get('org/tiny-bert')!.sha);
    fs.rmSync(path.join(snapshot, 'model.safetensors'));
    const partial = await mlm(['fill-mask', '--model', 'org/tiny-bert', text], offlineEnv);
    assert.equal(partial.code, 2);
    assert.match(partial.stderr, /^mlm: error: org\/tiny-bert \(revision main\) is not complete in the Hugging Face cache at .* \(no model\.safetensors[^)]*\) and HF_HUB_OFFLINE is set: /);
  });

  test('a sharded repo: the index and its shards are fetched and load bit-identically', async () => {
    const home = path.join(tmp, 'home-sharded');
    const m = await loadModel('org/sharded', { env: envFor(home), ...quiet });
    assert.equal(m.source, 'org/sharded');
    assert.equal(m.revision, hub.repos.get('org/sharded')!.sha);
    const files = fs.readdirSync(m.dir).sort();
    assert.ok(files.includes('model.safetensors.index.json') && files.includes('model-00001-of-00002.safetensors') && files.includes('model-00002-of-00002.safetensors'));
    const direct = await loadModel(ck.dir, quiet);
    for (const [name, t] of direct.weights.tensors) assert.ok(sameBits(m.weights.tensors.get(name)!.data, t.data), name);
  });

  test('a revision given as a commit resolves offline without refs', async () => {
    const home = path.join(tmp, 'home-commit');
    const sha = hub.repos.get('org/tiny-bert')!.sha;
    const r = await downloadModel('org/tiny-bert', { revision: sha, env: envFor(home), ...quiet });
    assert.equal(r.revision, sha);
    assert.ok(!fs.existsSync(path.join(home, 'hub', 'models--org--tiny-bert', 'refs')));
    const off = await downloadModel('org/tiny-bert', { revision: sha, env: envFor(home, { HF_HUB_OFFLINE: '1' }), ...quiet });
    assert.equal(off.dir, r.dir);
  });
});

describe('hostile mirrors and revisions: nothing is written outside the cache', () => {
  test('isRevision: branch and tag names, commits, refs/pr/N; nothing that walks paths', () => {
    for (const ok of ['main', 'v1.0', 'refs/pr/1', 'feature/x-y_z', 'a'.repeat(40), '0123456789abcdef0123456789abcdef01234567']) assert.ok(isRevision(ok), ok);
    for (const bad of ['', '..', '../x', 'a/../b', '/abs', 'a//b', 'a/', '.hidden', 'x/.y', 'a.lock', 'a b', 'a\\b', 'a\0b', 'a~1', 'a^', 'a:b', 'a?', 'a*', 'a[b', 'x@{1}', '@', 'end.']) {
      assert.ok(!isRevision(bad), JSON.stringify(bad));
    }
  });

  test('pathInside refuses what would leave its root, before touching the filesystem', () => {
    const root = path.join(tmp, 'root');
    assert.equal(pathInside(root, 'a/b.json', 'x'), path.join(root, 'a', 'b.json'));
    for (const bad of ['../x', 'a/../../x', '/etc/passwd', 'a//b', './a', '', 'a\\..\\x', 'a\0']) {
      assert.throws(() => pathInside(root, bad, 'file name'), oneLineInputError(/^file name .* is not a plain relative path inside /));
    }
    assert.ok(!fs.existsSync(root));
  });

  test('an index naming a shard outside the cache: exit 2, nothing outside written or removed', async () => {
    const home = path.join(tmp, 'home-evil-index');
    const victimDir = path.join(tmp, 'victim');
    fs.mkdirSync(victimDir, { recursive: true });
    const victim = path.join(victimDir, 'y.safetensors');
    fs.writeFileSync(victim, 'precious');
    const r = await mlm(['download', 'org/evil-index'], envFor(home));
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr.trimEnd().split('\n').pop()! + '\n', /^mlm: error: model\.safetensors\.index\.json of org\/evil-index names a shard ".*victim\/y\.safetensors" is not a plain relative path inside .*; refused \(is HF_ENDPOINT a trustworthy mirror\?\)\n$/);
    assert.ok(!fs.lstatSync(victim).isSymbolicLink());
    assert.equal(fs.readFileSync(victim, 'utf8'), 'precious');
    assert.deepEqual(fs.readdirSync(victimDir), ['y.safetensors']);
    // No ref names the incomplete snapshot, so offline use cannot pick it up either.
    assert.ok(!fs.existsSync(path.join(home, 'hub', 'models--org--evil-index', 'refs', 'main')));
  });

  test('--revision that walks paths: exit 2 online and offline, no file written or read', async () => {
    const home = path.join(tmp, 'home-evil-rev');
    const target = path.join(tmp, 'rev-target');
    fs.writeFileSync(target, 'keep');
    const rel = path.relative(path.join(home, 'hub', 'models--org--tiny-bert', 'refs'), target);
    for (const extra of [{}, { HF_HUB_OFFLINE: '1' }] as Record<string, string>[]) {
      const r = await mlm(['download', 'org/tiny-bert', '--revision', rel], envFor(home, extra));
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /^mlm: error: --revision ".*rev-target" is not a valid revision; give a branch or tag name \(like main or v1\.0\) or a 40-character commit id\n$/);
    }
    assert.equal(fs.readFileSync(target, 'utf8'), 'keep');
    const viaModel = await mlm(['fill-mask', '--model', 'org/tiny-bert', '--revision', '../../x', 'a [MASK] b'], envFor(home));
    assert.equal(viaModel.code, 2, viaModel.stderr);
    assert.match(viaModel.stderr, /is not a valid revision/);
  });

  test('a damaged refs file in the cache is not followed as a path', async () => {
    const home = path.join(tmp, 'home-evil-ref');
    await downloadModel('org/tiny-bert', { env: envFor(home), ...quiet });
    const ref = path.join(home, 'hub', 'models--org--tiny-bert', 'refs', 'main');
    fs.writeFileSync(ref, '../../../../../../etc');
    await assert.rejects(
      downloadModel('org/tiny-bert', { env: envFor(home, { HF_HUB_OFFLINE: '1' }), ...quiet }),
      oneLineInputError(/not complete in the Hugging Face cache .*refs\/main does not hold a commit id \(delete it\)/),
    );
  });

  test('a listing whose oid is not a hash is refused', async () => {
    const home = path.join(tmp, 'home-evil-oid');
    const repo = repoFromFolder(ck.dir, 'org/evil-oid');
    repo.files.get('config.json')!.oid = '../../../../tmp/x';
    hub.repos.set('org/evil-oid', repo);
    await assert.rejects(downloadModel('org/evil-oid', { env: envFor(home), ...quiet }), /listed config\.json of org\/evil-oid without a usable oid/);
    assert.ok(!fs.existsSync(path.join(home, 'hub', 'models--org--evil-oid', 'blobs')));
  });
});

describe('errors: one line, exit 2', () => {
  test('404: unknown repo and unknown revision', async () => {
    const home = path.join(tmp, 'home-404');
    const r = await mlm(['download', 'org/nope'], envFor(home));
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^mlm: error: model org\/nope not found on http:\/\/127\.0\.0\.1:\d+ \(401\): check the id; a private or gated repo needs HF_TOKEN set to a token with access\n$/);
    await assert.rejects(
      downloadModel('org/tiny-bert', { revision: 'v9', env: envFor(home), ...quiet }),
      oneLineInputError(/^revision 'v9' not found in org\/tiny-bert on http:\/\/127\.0\.0\.1:\d+ \(404\): check --revision/),
    );
    await assert.rejects(
      downloadModel('org/nope', { env: envFor(home, { HF_TOKEN: GOOD_TOKEN }), ...quiet }),
      oneLineInputError(/^model org\/nope not found .*\(404\): check the id; the token from HF_TOKEN may lack access/),
    );
  });

  test('401: a bad token, no token, and the good token', async () => {
    const home = path.join(tmp, 'home-auth');
    const bad = await mlm(['download', 'org/private-bert'], envFor(home, { HF_TOKEN: 'hf_bad' }));
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, /^mlm: error: http:\/\/127\.0\.0\.1:\d+ refused the token from HF_TOKEN \(401 Invalid credentials in Authorization header\): check or renew it .*\n$/);
    await assert.rejects(downloadModel('org/private-bert', { env: envFor(home), ...quiet }), oneLineInputError(/needs HF_TOKEN/));
    // The legacy variable and the token file are honoured too.
    const viaLegacy = await downloadModel('org/private-bert', { env: envFor(home, { HUGGING_FACE_HUB_TOKEN: GOOD_TOKEN }), ...quiet });
    assert.ok(fs.existsSync(path.join(viaLegacy.dir, 'model.safetensors')));
    const home2 = path.join(tmp, 'home-auth-file');
    fs.mkdirSync(home2, { recursive: true });
    fs.writeFileSync(path.join(home2, 'token'), GOOD_TOKEN + '\n');
    const viaFile = await downloadModel('org/private-bert', { env: envFor(home2), ...quiet });
    assert.ok(fs.existsSync(path.join(viaFile.dir, 'config.json')));
  });

  test('a private repo complete in the cache is used when the Hub refuses access (no token, an expired one), as huggingface_hub does; an unknown revision is still an error', async () => {
    const home = path.join(tmp, 'home-private-cached');
    const first = await downloadModel('org/private-bert', { env: envFor(home, { HF_TOKEN: GOOD_TOKEN }), ...quiet });
    for (const extra of [{}, { HF_TOKEN: 'hf_expired' }] as Record<string, string>[]) {
      const lines: string[] = [];
      const again = await downloadModel('org/private-bert', { env: envFor(home, extra), log: (l) => lines.push(l) });
      assert.equal(again.dir, first.dir);
      assert.equal(again.revision, first.revision);
      assert.equal(lines.length, 1, lines.join('\n'));
      assert.match(lines[0], /^warning: .*\(401.*; using org\/private-bert from the cache \(commit [0-9a-f]{12}\)$/);
    }
    // A tag the Hub no longer has, though refs/ still names it: the Hub's answer stands.
    const refs = path.join(home, 'hub', 'models--org--private-bert', 'refs');
    fs.copyFileSync(path.join(refs, 'main'), path.join(refs, 'v9'));
    await assert.rejects(
      downloadModel('org/private-bert', { revision: 'v9', env: envFor(home, { HF_TOKEN: GOOD_TOKEN }), ...quiet }),
      oneLineInputError(/^revision 'v9' not found in org\/private-bert/),
    );
    // Not in the cache: the access error as before.
    await assert.rejects(downloadModel('org/private-bert', { env: envFor(path.join(tmp, 'home-private-empty')), ...quiet }), oneLineInputError(/needs HF_TOKEN/));
  });

  test('429 and 5xx answers are retried (Retry-After honoured); when they persist, one line after the last try', async () => {
    const home = path.join(tmp, 'home-throttled');
    const lines: string[] = [];
    const before = hub.requests.length;
    hub.throttle = { count: 3, status: 429 };
    const r = await downloadModel('org/tiny-bert', { env: envFor(home), log: (l) => lines.push(l) });
    assert.ok(fs.existsSync(path.join(r.dir, 'model.safetensors')));
    assert.equal(hub.requests.slice(before).filter((q) => q.includes('/revision/main')).length, 4);
    assert.equal(lines.filter((l) => /answered 429 \(Too many requests\); retrying in 0\.0 s \(\d of 3 retries\)$/.test(l)).length, 3, lines.join('\n'));
    // A 503 in the middle of the files: retried too, and the download completes.
    const home2 = path.join(tmp, 'home-throttled-503');
    await downloadModel('org/tiny-bert', { env: envFor(home2), ...quiet });
    fs.rmSync(path.join(home2, 'hub', 'models--org--tiny-bert', 'snapshots'), { recursive: true });
    fs.rmSync(path.join(home2, 'hub', 'models--org--tiny-bert', 'blobs'), { recursive: true });
    const n = hub.requests.length;
    hub.throttle = { count: 2, status: 503, only: '/resolve/' };
    const again = await downloadModel('org/tiny-bert', { env: envFor(home2), ...quiet });
    assert.ok(fs.existsSync(path.join(again.dir, 'config.json')));
    assert.equal(hub.throttle.count, 0);
    assert.ok(hub.requests.slice(n).filter((q) => q.endsWith('/config.json')).length >= 3);
    // Persistent: four tries, then the 429 message (nothing cached to fall back to).
    const m = hub.requests.length;
    hub.throttle = { count: 1000, status: 429 };
    try {
      await assert.rejects(
        downloadModel('org/tiny-bert', { env: envFor(path.join(tmp, 'home-throttled-always')), ...quiet }),
        /^Error: http:\/\/127\.0\.0\.1:\d+ is rate-limiting requests \(429\)/,
      );
    } finally {
      hub.throttle = { count: 0, status: 429 };
    }
    assert.equal(hub.requests.length - m, 4);
  });

  test('a truncated download: exit 2, no partial blob left, and a retry works', async () => {
    const home = path.join(tmp, 'home-trunc');
    const r = await mlm(['download', 'org/truncated'], envFor(home));
    assert.equal(r.code, 2, r.stderr);
    const last = r.stderr.trimEnd().split('\n').pop();
    assert.match(last!, /^mlm: error: download of http:\/\/127\.0\.0\.1:\d+\/org\/truncated\/resolve\/\w+\/model\.safetensors was (cut short after \d+ of \d+ bytes \(the connection closed early\)|truncated: .*); retry \(the partial file was removed\)$/);
    const storage = path.join(home, 'hub', 'models--org--truncated');
    assert.deepEqual(fs.readdirSync(path.join(storage, 'blobs')).filter((b) => b.includes('incomplete')), []);
    assert.ok(!fs.existsSync(path.join(storage, 'refs', 'main')), 'no ref to an incomplete snapshot');
    hub.repos.get('org/truncated')!.truncate = undefined;
    const ok = await downloadModel('org/truncated', { env: envFor(home), ...quiet });
    assert.ok(fs.existsSync(path.join(ok.dir, 'model.safetensors')));
  });

  test('Ctrl-C during a download: exit 130, no partial blob left in the cache', async () => {
    const home = path.join(tmp, 'home-interrupted');
    hub.repos.set('org/stalled', { ...repoFromFolder(ck.dir, 'org/stalled'), stall: 'model.safetensors' });
    const blobs = path.join(home, 'hub', 'models--org--stalled', 'blobs');
    const weights = hub.repos.get('org/stalled')!.files.get('model.safetensors')!.sha256;
    const partial = () => (fs.existsSync(blobs) ? fs.readdirSync(blobs).filter((b) => b.includes('incomplete')) : []);
    const child = spawn(process.execPath, [MLM, 'download', 'org/stalled'], { cwd: ROOT, env: envFor(home, { HF_HUB_DOWNLOAD_TIMEOUT: '120' }), stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      // Until half of model.safetensors is on disk (the Hub then sends nothing more).
      const halfOfWeights = () => partial().some((b) => b.startsWith(weights) && fs.statSync(path.join(blobs, b)).size > 0);
      for (let i = 0; i < 600 && !halfOfWeights(); i++) await new Promise((r) => setTimeout(r, 100));
      assert.ok(halfOfWeights(), `a partial model.safetensors while downloading; stderr: ${stderr}`);
      child.kill('SIGINT');
      assert.equal(await exited, 130, stderr);
    } finally {
      child.kill('SIGKILL');
    }
    assert.match(stderr, /mlm: interrupted/);
    assert.deepEqual(partial(), []);
  });

  test('a corrupt download (sha256 or git sha1 mismatch) is refused', async () => {
    const home = path.join(tmp, 'home-corrupt');
    await assert.rejects(
      downloadModel('org/corrupt', { env: envFor(home), ...quiet }),
      oneLineInputError(/^download of .*\/model\.safetensors is corrupt: its sha256 is [0-9a-f]{12}\.\.\., expected [0-9a-f]{12}\.\.\.; retry/),
    );
    await assert.rejects(
      downloadModel('org/corrupt-small', { env: envFor(home), ...quiet }),
      oneLineInputError(/^download of .*\/config\.json is corrupt: its git sha1 is/),
    );
  });

  test('a damaged file already in the cache: says which folder to delete', async () => {
    const home = path.join(tmp, 'home-damaged');
    const r = await downloadModel('org/tiny-bert', { env: envFor(home), ...quiet });
    const blob = fs.realpathSync(path.join(r.dir, 'model.safetensors'));
    fs.truncateSync(blob, 200);
    await assert.rejects(
      loadModel('org/tiny-bert', { env: envFor(home, { HF_HUB_OFFLINE: '1' }), ...quiet }),
      oneLineInputError(new RegExp(`not a valid safetensors file.*; the download in the cache is damaged: delete ${path.join(home, 'hub', 'models--org--tiny-bert').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} and retry$`)),
    );
    // Online, a size mismatch with the listing is fetched again.
    const fixed = await loadModel('org/tiny-bert', { env: envFor(home), ...quiet });
    assert.equal(fixed.revision, r.revision);
  });

  test('a repo with only pytorch_model.bin: the pickle message; an unreachable Hub names the endpoint', async () => {
    const home = path.join(tmp, 'home-pt');
    await assert.rejects(
      downloadModel('org/pt-only', { env: envFor(home), ...quiet }),
      oneLineInputError(/^Hub repo org\/pt-only holds only pytorch_model\.bin; mlmkit reads safetensors only, because loading a pickle can run arbitrary code\. Convert it in Python: `AutoModelForMaskedLM/),
    );
    await assert.rejects(
      downloadModel('org/tiny-bert', { env: envFor(path.join(tmp, 'home-down'), { HF_ENDPOINT: deadEndpoint }), ...quiet }),
      (err: unknown) => {
        assert.ok(err instanceof Error && !(err instanceof InputError));
        assert.match(err.message, /^cannot reach the Hugging Face Hub at http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\): check the network or HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the cache$/);
        return true;
      },
    );
    // A name without a slash is a folder name as much as a Hub id: the line says no such folder is here.
    await assert.rejects(
      resolveModel('my-model', { env: envFor(path.join(tmp, 'home-down'), { HF_ENDPOINT: deadEndpoint }), ...quiet }),
      (err: unknown) => err instanceof Error && /^cannot reach the Hugging Face Hub .* \(no folder named my-model here either: check the path if a local model was meant\)$/.test(err.message),
    );
  });
});
