// Test helper (not a test file): a local imitation of the Hugging Face Hub (node:http on
// 127.0.0.1, a random port) for tests/training/hub.test.ts (downloads) and
// tests/training/push.test.ts (uploads). It answers the requests the real @huggingface/hub client
// makes. Downloads:
//   GET /api/models/{id}/revision/{rev}     model info with the commit `sha`
//   GET /api/models/{id}/tree/{rev}         [{type, oid, size, path, lfs?: {oid, size, pointerSize}}]
//   GET /{id}/resolve/{rev}/{file}          small files: 200/206 with ETag, X-Repo-Commit; LFS files:
//                                           302 to /cdn/{id}/{sha256} with X-Linked-Etag, X-Linked-Size
//   GET /cdn/{id}/{sha256}                  the bytes with an ETag, honouring Range
// Uploads (read from the library's lib/who-am-i.ts, create-repo.ts, create-branch.ts, commit.ts):
//   GET  /api/whoami-v2                     the token's user
//   POST /api/repos/create                  {name, organization, type, visibility}; 409 when it exists
//   POST /api/models/{id}/branch/{branch}   a branch from main; 409 when it exists
//   POST /api/models/{id}/preupload/{rev}   {files: [{path, size, sample}]} -> uploadMode lfs | regular
//   POST /{id}.git/info/lfs/objects/batch   per object: an upload href, or no actions when stored
//   PUT  /lfs-upload/{sha256}               the bytes (checked against the sha256 and kept)
//   POST /api/models/{id}/commit/{rev}      NDJSON: header, file (base64), lfsFile (by sha256)
// with the Hub's error answers (X-Error-Code RepoNotFound / RevisionNotFound / EntryNotFound,
// 401 for a missing or bad token, 403 for a token without write access; on demand, 429 or 5xx with
// Retry-After for downloads). Nothing leaves 127.0.0.1.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';

export const GOOD_TOKEN = 'hf_good';

export interface RepoFile {
  bytes: Buffer;
  lfs: boolean;
  oid: string; // git blob sha1
  sha256: string;
}
export interface Repo {
  sha: string;
  files: Map<string, RepoFile>;
  private?: boolean;
  /** Serve this file cut short (fewer bytes than Content-Length, then close). */
  truncate?: string;
  /** Serve this file with one byte changed. */
  corrupt?: string;
  /** Serve half of this file, then nothing more, the connection left open (a stalled download). */
  stall?: string;
  /** Other branches than main (pushes to --revision). */
  branches?: Map<string, { sha: string; files: Map<string, RepoFile> }>;
}

/** Tokens the imitation knows: the user and the namespaces it may write to. */
export const READ_TOKEN = 'hf_readonly';
const USERS = new Map<string, { name: string; writes: string[] }>([
  [GOOD_TOKEN, { name: 'alice', writes: ['alice', 'org', 'lab'] }],
  [READ_TOKEN, { name: 'bob', writes: [] }],
]);

export interface Commit {
  repo: string;
  branch: string;
  summary: string;
  /** Paths of the commit, in its order, with how each arrived. */
  files: { path: string; via: 'inline' | 'lfs' }[];
}

export function repoFile(bytes: Buffer, lfs: boolean): RepoFile {
  return {
    bytes,
    lfs,
    oid: createHash('sha1').update(`blob ${bytes.length}\0`).update(bytes).digest('hex'),
    sha256: createHash('sha256').update(bytes).digest('hex'),
  };
}

export function repoFromFolder(dir: string, name: string, extra: Record<string, Buffer> = {}): Repo {
  const files = new Map<string, RepoFile>();
  for (const f of fs.readdirSync(dir)) files.set(f, repoFile(fs.readFileSync(path.join(dir, f)), f.endsWith('.safetensors')));
  for (const [f, b] of Object.entries(extra)) files.set(f, repoFile(b, f.endsWith('.bin')));
  files.set('README.md', repoFile(Buffer.from(`# ${name}\n`), false));
  return { sha: createHash('sha1').update(name).digest('hex'), files };
}

/** The imitation Hub. */
export class FakeHub {
  readonly repos = new Map<string, Repo>();
  readonly requests: string[] = [];
  /** LFS objects received, by sha256 (kept across pushes, as the Hub's storage). */
  readonly lfs = new Map<string, Buffer>();
  /** sha256 of each LFS PUT that arrived whole, in order. */
  readonly lfsPuts: string[] = [];
  readonly commits: Commit[] = [];
  /** Files at or above this size go through LFS (the Hub: 10 MB, and *.safetensors always). */
  lfsThreshold = 10 * 1024 * 1024;
  /** Cut this many LFS PUTs short: half of the body read, then the connection closed. */
  dropUploads = 0;
  /**
   * Always cut the PUT of this object short, once every other upload of its batch has been stored
   * or given up (so which files reached the storage before the failure is deterministic).
   */
  dropObject: string | null = null;
  /** Objects given an upload URL and not stored yet. */
  private pendingUploads = new Set<string>();
  /** Answer this many commit calls with 503. */
  failCommits = 0;
  /**
   * Answer this many download requests (model info, listing, resolve, CDN; only those whose path
   * holds `only` when given) with this status (429 or a 5xx) and `Retry-After: 0`.
   */
  throttle: { count: number; status: number; only?: string } = { count: 0, status: 429 };
  private server = http.createServer((req, res) => this.handle(req, res));
  url = '';

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private error(res: http.ServerResponse, status: number, code: string | null, message: string): void {
    const headers: Record<string, string> = { 'content-type': 'application/json', 'x-error-message': message };
    if (code) headers['x-error-code'] = code;
    res.writeHead(status, headers).end(JSON.stringify({ error: message }));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', this.url);
    this.requests.push(`${req.method} ${url.pathname}`);
    const auth = req.headers.authorization;
    const p = decodeURIComponent(url.pathname);

    if (this.handleUpload(req, res, p, auth)) return;

    if (this.throttle.count > 0 && (this.throttle.only === undefined || p.includes(this.throttle.only))) {
      this.throttle.count--;
      res.writeHead(this.throttle.status, { 'content-type': 'application/json', 'retry-after': '0', 'x-error-message': 'Too many requests' });
      res.end(JSON.stringify({ error: 'Too many requests' }));
      return;
    }

    const cdn = p.match(/^\/cdn\/([^/]+\/[^/]+)\/([0-9a-f]{64})$/);
    if (cdn) {
      const repo = this.repos.get(cdn[1]);
      for (const [name, f] of repo?.files ?? []) if (f.sha256 === cdn[2]) return this.serveBytes(req, res, repo!, name, f, { etag: `"${f.sha256}"` });
      return this.error(res, 404, null, 'Not found');
    }

    const m = p.match(/^\/api\/models\/([^/]+\/[^/]+)\/(revision|tree)\/([^/]+)$/) ?? p.match(/^\/([^/]+\/[^/]+)\/(resolve)\/([^/]+)\/(.+)$/);
    if (!m) return this.error(res, 404, null, 'Not found');
    const [, id, kind, rev, file] = m;
    const repo = this.repos.get(id);
    if (!repo || (repo.private && auth !== `Bearer ${GOOD_TOKEN}`)) {
      // The Hub answers an unknown or inaccessible repo with 401 RepoNotFound without a token,
      // 401 "Invalid credentials" for a bad token, and 404 RepoNotFound with a valid one.
      if (auth && !USERS.has(auth.replace(/^Bearer /, ''))) return this.error(res, 401, null, 'Invalid credentials in Authorization header');
      return this.error(res, auth ? 404 : 401, 'RepoNotFound', 'Repository not found');
    }
    const at = rev === repo.sha ? repo : this.filesAt(repo, rev);
    if (!at) return this.error(res, 404, 'RevisionNotFound', `Invalid rev id: ${rev}`);
    if (kind === 'revision') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({
        _id: `id-${id}`, id, modelId: id, sha: repo.sha, private: !!repo.private, gated: false, downloads: 0, likes: 0,
        lastModified: '2026-01-01T00:00:00.000Z', pipeline_tag: 'fill-mask',
        siblings: [...repo.files.keys()].map((rfilename) => ({ rfilename })),
      }));
      return;
    }
    if (kind === 'tree') {
      const entries = [...repo.files].map(([name, f]) => ({
        type: 'file', oid: f.oid, size: f.bytes.length, path: name,
        ...(f.lfs ? { lfs: { oid: f.sha256, size: f.bytes.length, pointerSize: 134 } } : {}),
      }));
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(entries));
      return;
    }
    const f = at.files.get(file);
    if (!f) return this.error(res, 404, 'EntryNotFound', `${file} does not exist on "${rev}"`);
    const headers = { 'x-repo-commit': at.sha, etag: `"${f.lfs ? f.sha256 : f.oid}"` };
    if (f.lfs) {
      res.writeHead(302, { ...headers, location: `/cdn/${id}/${f.sha256}`, 'x-linked-etag': `"${f.sha256}"`, 'x-linked-size': String(f.bytes.length) }).end();
      return;
    }
    this.serveBytes(req, res, repo, file, f, headers);
  }

  private json(res: http.ServerResponse, status: number, body: unknown): void {
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  }

  /** Answers 401 for a missing or unknown token, 403 without write access to `namespace`; false when allowed. */
  private refuseWrite(res: http.ServerResponse, auth: string | undefined, namespace: string): boolean {
    const user = auth?.startsWith('Bearer ') ? USERS.get(auth.slice(7)) : undefined;
    if (!user) {
      this.error(res, 401, null, auth ? 'Invalid credentials in Authorization header' : 'You must be authenticated to access this resource');
      return true;
    }
    if (!user.writes.includes(namespace)) {
      this.error(res, 403, null, `You don't have the rights to write to ${namespace}`);
      return true;
    }
    return false;
  }

  private body(req: http.IncomingMessage): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => resolve(Buffer.concat(chunks)));
      req.on('error', reject);
    });
  }

  private filesAt(repo: Repo, branch: string): { sha: string; files: Map<string, RepoFile> } | null {
    if (branch === 'main') return repo;
    return repo.branches?.get(branch) ?? null;
  }

  /** The upload endpoints; false when the request is not one of them. */
  private handleUpload(req: http.IncomingMessage, res: http.ServerResponse, p: string, auth: string | undefined): boolean {
    if (req.method === 'GET' && p === '/api/whoami-v2') {
      const user = auth?.startsWith('Bearer ') ? USERS.get(auth.slice(7)) : undefined;
      if (!user) this.error(res, 401, null, 'Invalid credentials in Authorization header');
      else this.json(res, 200, { type: 'user', id: `id-${user.name}`, name: user.name, fullname: user.name, orgs: [], auth: { type: 'access_token' } });
      return true;
    }
    if (req.method === 'POST' && p === '/api/repos/create') {
      void this.body(req).then((b) => {
        const q = JSON.parse(b.toString('utf8')) as { name: string; organization: string; type: string; visibility?: string };
        if (this.refuseWrite(res, auth, q.organization)) return;
        const id = `${q.organization}/${q.name}`;
        if (this.repos.has(id)) return this.error(res, 409, null, 'You already created this model repo');
        const attributes = repoFile(Buffer.from('*.safetensors filter=lfs diff=lfs merge=lfs -text\n'), false);
        this.repos.set(id, { sha: createHash('sha1').update(`${id}:created`).digest('hex'), files: new Map([['.gitattributes', attributes]]), private: q.visibility === 'private' });
        this.json(res, 200, { url: `${this.url}/${id}`, name: id, id: `id-${id}` });
      });
      return true;
    }
    const branch = p.match(/^\/api\/models\/([^/]+\/[^/]+)\/branch\/(.+)$/);
    if (req.method === 'POST' && branch) {
      const [, id, name] = branch;
      if (this.refuseWrite(res, auth, id.split('/')[0])) return true;
      const repo = this.repos.get(id);
      if (!repo) this.error(res, 404, 'RepoNotFound', 'Repository not found');
      else if (name === 'main' || repo.branches?.has(name)) this.error(res, 409, null, `Reference already exists: refs/heads/${name}`);
      else {
        (repo.branches ??= new Map()).set(name, { sha: repo.sha, files: new Map(repo.files) });
        this.json(res, 200, {});
      }
      return true;
    }
    const api = p.match(/^\/api\/models\/([^/]+\/[^/]+)\/(preupload|commit)\/(.+)$/);
    if (req.method === 'POST' && api) {
      const [, id, kind, rev] = api;
      if (this.refuseWrite(res, auth, id.split('/')[0])) return true;
      const repo = this.repos.get(id);
      if (!repo) {
        this.error(res, 404, 'RepoNotFound', 'Repository not found');
        return true;
      }
      const target = this.filesAt(repo, rev);
      if (!target) {
        this.error(res, 404, 'RevisionNotFound', `Invalid rev id: ${rev}`);
        return true;
      }
      void this.body(req).then((b) => {
        if (kind === 'preupload') {
          const q = JSON.parse(b.toString('utf8')) as { files: { path: string; size: number }[] };
          return this.json(res, 200, { files: q.files.map((f) => ({ path: f.path, uploadMode: f.path.endsWith('.safetensors') || f.size >= this.lfsThreshold ? 'lfs' : 'regular' })) });
        }
        if (this.failCommits > 0) {
          this.failCommits--;
          return this.error(res, 503, null, 'Service Unavailable');
        }
        const lines = b.toString('utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as { key: string; value: Record<string, unknown> });
        const commit: Commit = { repo: id, branch: rev, summary: String(lines[0]?.value.summary ?? ''), files: [] };
        const next = new Map(target.files);
        for (const { key, value } of lines.slice(1)) {
          const file = String(value.path);
          if (key === 'file') {
            next.set(file, repoFile(Buffer.from(String(value.content), 'base64'), false));
            commit.files.push({ path: file, via: 'inline' });
          } else if (key === 'lfsFile') {
            const bytes = this.lfs.get(String(value.oid));
            if (!bytes || bytes.length !== value.size) return this.error(res, 400, null, `LFS object ${String(value.oid)} was not uploaded`);
            next.set(file, repoFile(bytes, true));
            commit.files.push({ path: file, via: 'lfs' });
          } else if (key === 'deletedFile') next.delete(file);
        }
        const sha = createHash('sha1').update(`${id}:${this.commits.length}:${target.sha}`).digest('hex');
        target.files = next;
        target.sha = sha;
        this.commits.push(commit);
        this.json(res, 200, { commitOid: sha, commitUrl: `${this.url}/${id}/commit/${sha}`, success: true });
      });
      return true;
    }
    const batch = p.match(/^\/([^/]+\/[^/]+)\.git\/info\/lfs\/objects\/batch$/);
    if (req.method === 'POST' && batch) {
      if (this.refuseWrite(res, auth, batch[1].split('/')[0])) return true;
      void this.body(req).then((b) => {
        const q = JSON.parse(b.toString('utf8')) as { objects: { oid: string; size: number }[] };
        this.pendingUploads = new Set();
        res.writeHead(200, { 'content-type': 'application/vnd.git-lfs+json' }).end(JSON.stringify({
          transfer: 'basic',
          objects: q.objects.map((o) => {
            if (this.lfs.has(o.oid)) return { oid: o.oid, size: o.size };
            this.pendingUploads.add(o.oid);
            return { oid: o.oid, size: o.size, actions: { upload: { href: `${this.url}/lfs-upload/${o.oid}` } } };
          }),
        }));
      });
      return true;
    }
    const put = p.match(/^\/lfs-upload\/([0-9a-f]{64})$/);
    if (req.method === 'PUT' && put) {
      if (auth) {
        this.error(res, 400, null, 'upload URLs take no Authorization header');
        return true;
      }
      const expected = Number(req.headers['content-length'] ?? 0);
      const chunks: Buffer[] = [];
      let got = 0;
      let dropped = false;
      const sha = put[1];
      const dropWhenAlone = () => {
        if ([...this.pendingUploads].some((o) => o !== sha)) setTimeout(dropWhenAlone, 5);
        else req.socket.destroy();
      };
      req.on('data', (c: Buffer) => {
        chunks.push(c);
        got += c.length;
        // The connection drops in the middle of the body: what arrived is thrown away.
        if (!dropped && (this.dropUploads > 0 || this.dropObject === sha) && got >= expected / 2) {
          dropped = true;
          if (this.dropObject === sha) {
            req.pause();
            dropWhenAlone();
          } else {
            this.dropUploads--;
            req.socket.destroy();
          }
        }
      });
      req.on('close', () => this.pendingUploads.delete(sha));
      req.on('end', () => {
        if (dropped) return;
        const bytes = Buffer.concat(chunks);
        if (createHash('sha256').update(bytes).digest('hex') !== put[1]) return this.error(res, 400, null, 'sha256 mismatch');
        this.lfs.set(put[1], bytes);
        this.lfsPuts.push(put[1]);
        this.pendingUploads.delete(put[1]);
        res.writeHead(200, { etag: `"${put[1]}"` }).end();
      });
      return true;
    }
    return false;
  }

  private serveBytes(req: http.IncomingMessage, res: http.ServerResponse, repo: Repo, name: string, f: RepoFile, headers: Record<string, string>): void {
    let bytes = f.bytes;
    if (repo.corrupt === name) {
      bytes = Buffer.from(bytes);
      bytes[bytes.length - 1] ^= 0xff;
    }
    const range = req.headers.range?.match(/^bytes=(\d+)-(\d*)$/);
    if (range) {
      const start = Number(range[1]);
      const end = range[2] ? Number(range[2]) : bytes.length - 1;
      const part = bytes.subarray(start, end + 1);
      res.writeHead(206, { ...headers, 'content-range': `bytes ${start}-${end}/${bytes.length}`, 'content-length': String(part.length), 'accept-ranges': 'bytes' }).end(part);
      return;
    }
    res.writeHead(200, { ...headers, 'content-length': String(bytes.length), 'content-type': 'application/octet-stream' });
    if (repo.stall === name) {
      res.write(bytes.subarray(0, Math.floor(bytes.length / 2)));
      return;
    }
    if (repo.truncate === name) {
      res.write(bytes.subarray(0, Math.floor(bytes.length / 2)), () => res.destroy());
      return;
    }
    res.end(bytes);
  }
}
