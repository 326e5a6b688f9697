// The Hugging Face Hub: model ids resolved to folders in the standard Hugging Face cache, shared
// with Python (`transformers`, `huggingface_hub`), through the `@huggingface/hub` client.
//
// `resolveModel(idOrDir)`: an existing local folder is used as it is (an unfinished `mlm train` run
// folder: its newest complete checkpoint, `runFolderModel`); otherwise a Hub id
// (`bert-base-uncased`, `google/bert_uncased_L-4_H-256_A-4`) is resolved to a commit and the files
// a masked LM needs are downloaded into the cache:
//
//   $HF_HUB_CACHE (or $HUGGINGFACE_HUB_CACHE, or $HF_HOME/hub, or $XDG_CACHE_HOME/huggingface/hub,
//   or ~/.cache/huggingface/hub)
//     models--org--name/
//       blobs/<etag>                      file contents; etag = sha256 for LFS files, git sha1 otherwise
//       snapshots/<commit>/<file>         relative symlinks to ../../blobs/<etag>
//       refs/<revision>                   the commit a branch or tag pointed to (no newline)
//
// which is huggingface_hub's layout, so either tool reuses the other's downloads. Only config.json,
// model.safetensors (or model.safetensors.index.json and its shards) and the tokenizer files are
// fetched, never pytorch_model.bin and the like (a repo holding only those is refused, as loading
// a pickle can run arbitrary code).
//
// Requests (what the client calls, in order): GET {endpoint}/api/models/{id}/revision/{rev} (the
// commit sha), GET {endpoint}/api/models/{id}/tree/{sha} (file list with sizes, git oids and LFS
// sha256), then per file GET {endpoint}/{id}/resolve/{sha}/{file} once with `Range: bytes=0-0`
// (size and ETag) and once in full (the Hub redirects LFS files to its CDN). Every file is
// checked while it streams to disk: its size, then its sha256 (LFS) or git blob sha1 (others);
// a mismatch deletes the partial file and is an error saying to retry. A request answered 429 or
// 5xx is tried again up to 3 times, after its Retry-After (at most 60 s) or 1, 2, 4 s.
//
// Environment, as huggingface_hub reads it: HF_ENDPOINT (a mirror), HF_TOKEN (else the deprecated
// HUGGING_FACE_HUB_TOKEN, else the file $HF_TOKEN_PATH or $HF_HOME/token that `huggingface-cli
// login` writes), HF_HUB_OFFLINE=1 (or TRANSFORMERS_OFFLINE=1 when HF_HUB_OFFLINE is unset or
// empty): no network, revisions resolve through refs/ in the cache; HF_HUB_DOWNLOAD_TIMEOUT
// (seconds, default 10): the longest wait for a response or between two chunks of one.
//
// Porting notes:
// - Files are downloaded over plain HTTP (`xet: false`): the Hub serves Xet-stored files that way
//   too, and one code path verifies every byte the same way.
// - No file locks: a blob is written under a unique temporary name and renamed into place, so two
//   concurrent downloads of one file waste bandwidth but never corrupt the cache. The temporary
//   is removed on an error, and when the process exits during the download (Ctrl-C); a process
//   killed outright (SIGKILL) leaves it, as blobs/<etag>.<pid>.<time>.incomplete.
// - refs/<revision> is written after the snapshot is complete, so HF_HUB_OFFLINE never resolves to
//   a half-downloaded snapshot. When the revision cannot be resolved on the Hub (unreachable, an
//   HTTP error such as 5xx, or 401/403/404 for a private repo without a valid token; not an unknown
//   revision) and it is complete in the cache, the cached snapshot is used with a warning, as
//   huggingface_hub does.
//
// References: huggingface_hub `file_download.py`, `constants.py`, `utils/_http.py` (error codes
// RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo); @huggingface/hub `download-file.ts`,
// `list-files.ts`, `model-info.ts`.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { downloadFile, HubApiError, listFiles, modelInfo, type ListFileEntry } from '@huggingface/hub';
import { InputError } from '../common/errors.ts';
import { insideRoot } from '../data/paths.ts';
import {
  CONFIG_FILE,
  loadModelFolder,
  SAFETENSORS_INDEX,
  TOKENIZER_FILES,
  unreadableWeightsError,
  WEIGHTS_FILE,
  type ModelFolder,
} from './checkpoint.ts';
import { openSafetensors } from './safetensors.ts';
import { newestCheckpoint } from './train-state.ts';

export const DEFAULT_ENDPOINT = 'https://huggingface.co';
export const DEFAULT_REVISION = 'main';
const COMMIT_RE = /^[0-9a-f]{40}$/;

type Env = Readonly<Record<string, string | undefined>>;

export interface HubSettings {
  endpoint: string;
  cacheDir: string;
  /** Never printed. */
  token: string | undefined;
  /** Where the token came from, for messages ('HF_TOKEN', a file path...). */
  tokenSource: string | undefined;
  offline: boolean;
  /** Longest wait for a response, or between two chunks of a body. */
  timeoutMs: number;
}

export interface ResolveOptions {
  /** A branch, tag or commit (default main); Hub ids only. */
  revision?: string;
  log?: (line: string) => void;
  /** Default process.env. */
  env?: Env;
}

export interface ResolvedModel {
  /** The folder to read: the local folder, or the snapshot folder in the cache. */
  dir: string;
  /** What the user named. */
  source: string;
  /** The commit of a Hub model; null for a local folder. */
  revision: string | null;
  /** For a Hub model: its folder in the cache (models--org--name). */
  cacheFolder?: string;
}

const nonEmpty = (v: string | undefined): string | undefined => (v !== undefined && v.trim() !== '' ? v.trim() : undefined);
const isTrue = (v: string | undefined): boolean => ['1', 'ON', 'YES', 'TRUE'].includes((v ?? '').trim().toUpperCase());

function expandHome(p: string): string {
  return p === '~' || p.startsWith('~/') ? path.join(os.homedir(), p.slice(1)) : p;
}

/**
 * `value` without trailing slashes when it is an http(s) address; else an InputError naming
 * `source` (a bare host such as `hf-mirror.com` failed deep inside fetch before).
 */
export function checkEndpoint(value: string, source: string): string {
  let url: URL | null = null;
  try {
    url = new URL(value);
  } catch {
    url = null;
  }
  if (url === null || (url.protocol !== 'https:' && url.protocol !== 'http:') || url.host === '') {
    throw new InputError(`${source} is "${value}", not an http(s) address; give one like https://hf-mirror.com (scheme included)${source === 'HF_ENDPOINT' ? ', or unset it' : ''}`);
  }
  return value.replace(/\/+$/, '');
}

/** The Hub settings from the environment, as huggingface_hub reads them. */
export function hubSettings(env: Env = process.env): HubSettings {
  const hfHome = expandHome(nonEmpty(env.HF_HOME) ?? path.join(nonEmpty(env.XDG_CACHE_HOME) ?? path.join(os.homedir(), '.cache'), 'huggingface'));
  const cacheDir = expandHome(nonEmpty(env.HF_HUB_CACHE) ?? nonEmpty(env.HUGGINGFACE_HUB_CACHE) ?? path.join(hfHome, 'hub'));
  const endpoint = checkEndpoint(nonEmpty(env.HF_ENDPOINT) ?? DEFAULT_ENDPOINT, 'HF_ENDPOINT');
  let token = nonEmpty(env.HF_TOKEN);
  let tokenSource = token ? 'HF_TOKEN' : undefined;
  if (!token && nonEmpty(env.HUGGING_FACE_HUB_TOKEN)) {
    token = nonEmpty(env.HUGGING_FACE_HUB_TOKEN);
    tokenSource = 'HUGGING_FACE_HUB_TOKEN';
  }
  if (!token) {
    const file = expandHome(nonEmpty(env.HF_TOKEN_PATH) ?? path.join(hfHome, 'token'));
    try {
      token = nonEmpty(fs.readFileSync(file, 'utf8'));
      if (token) tokenSource = file;
    } catch {
      // no stored token
    }
  }
  const timeout = nonEmpty(env.HF_HUB_DOWNLOAD_TIMEOUT);
  const seconds = Number(timeout ?? '10');
  if (!(Number.isFinite(seconds) && seconds > 0)) {
    throw new InputError(`HF_HUB_DOWNLOAD_TIMEOUT must be a positive number of seconds, got ${JSON.stringify(timeout)}; set it so or unset it (10 s)`);
  }
  return {
    endpoint,
    cacheDir,
    token,
    tokenSource,
    // HF_HUB_OFFLINE=0 overrides a TRANSFORMERS_OFFLINE=1 left in the environment.
    offline: isTrue(env.HF_HUB_OFFLINE || env.TRANSFORMERS_OFFLINE),
    timeoutMs: seconds * 1000,
  };
}

/** huggingface_hub's validate_repo_id: `name` or `org/name`, word characters, '-', '.'. */
export function isHubId(s: string): boolean {
  return (
    s.length <= 96 &&
    /^(?:\w(?:[\w.-]*\w)?\/)?\w(?:[\w.-]*\w)?$/.test(s) &&
    !s.includes('--') &&
    !s.includes('..') &&
    !s.endsWith('.git')
  );
}

/**
 * Whether `rev` can name a Hub revision: a 40-hex commit, or a branch or tag name under git's
 * check-ref-format rules (slashes allowed, as in `refs/pr/1`; no component empty or starting with
 * '.', no '..', no '@{', no control characters, spaces or any of ~^:?*[\\, no '.lock' component
 * ending, not ending in '.' or '/'). Anything else could turn refs/<rev> into a path elsewhere.
 */
export function isRevision(rev: string): boolean {
  if (COMMIT_RE.test(rev)) return true;
  if (rev.length === 0 || rev.length > 255 || rev === '@') return false;
  if (/[\x00-\x20\x7f~^:?*[\\]/.test(rev) || rev.includes('..') || rev.includes('@{') || rev.endsWith('.')) return false;
  return rev.split('/').every((c) => c.length > 0 && !c.startsWith('.') && !c.endsWith('.lock'));
}

/** The revision to use (default main), or an InputError naming the flag when it cannot be one. */
export function checkRevision(rev: string | undefined): string {
  const r = nonEmpty(rev) ?? DEFAULT_REVISION;
  if (!isRevision(r)) {
    throw new InputError(`--revision ${JSON.stringify(r)} is not a valid revision; give a branch or tag name (like main or v1.0) or a 40-character commit id`);
  }
  return r;
}

/** `insideRoot` with the hint a Hub download gives: the names came from the endpoint. */
export function pathInside(root: string, rel: string, what: string): string {
  return insideRoot(root, rel, what, 'refused (is HF_ENDPOINT a trustworthy mirror?)');
}

/** models--org--name */
export function repoFolderName(id: string): string {
  return ['models', ...id.split('/')].join('--');
}

/**
 * A local folder as it is, or a Hub id resolved (and downloaded when needed) into the cache.
 * InputError for anything else, one line.
 */
export async function resolveModel(idOrDir: string, opts: ResolveOptions = {}): Promise<ResolvedModel> {
  const log = opts.log ?? ((line: string) => process.stderr.write(line + '\n'));
  const stat = await fsp.stat(idOrDir).catch(() => null);
  if (stat) {
    if (opts.revision !== undefined) checkRevision(opts.revision);
    if (!stat.isDirectory()) throw new InputError(`${idOrDir} is a file, not a model folder; give the folder that holds config.json and model.safetensors`);
    if (opts.revision && opts.revision !== DEFAULT_REVISION) log(`note: --revision applies to Hub ids; ${idOrDir} is a local folder, used as it is`);
    return { dir: runFolderModel(idOrDir, log), source: idOrDir, revision: null };
  }
  if (!isHubId(idOrDir)) {
    const looksLikePath = /^[.~/\\]|[\\]|\/.*\/|\/$/.test(idOrDir);
    throw new InputError(
      looksLikePath
        ? `model folder ${idOrDir} not found; check the path`
        : `${idOrDir} is neither an existing folder nor a valid Hugging Face Hub id (like bert-base-uncased or org/name)`,
    );
  }
  try {
    return await downloadModel(idOrDir, { ...opts, log });
  } catch (err) {
    // A name without a slash reads as a Hub id (bert-base-uncased) and as a folder name alike: when
    // the Hub has nothing to give, say that no such folder is here either (a mistyped path).
    if (!idOrDir.includes('/') && err instanceof Error && /^(cannot reach the Hugging Face Hub|model \S+ not found on)/.test(err.message)) {
      const message = `${err.message} (no folder named ${idOrDir} here either: check the path if a local model was meant)`;
      throw err instanceof InputError ? new InputError(message) : new Error(message);
    }
    throw err;
  }
}

/**
 * A local model folder as it is; for an `mlm train` run folder (--out) without a final model at
 * its root (config.json, written last when the run ends: training/trainer.ts), its newest complete
 * checkpoint-STEP, with a one-line note. Any other folder is returned as it is, so the loader's
 * own message ("no config.json") stays the error for a folder that is not a model.
 */
export function runFolderModel(dir: string, log: (line: string) => void): string {
  if (fs.existsSync(path.join(dir, CONFIG_FILE))) return dir;
  const newest = newestCheckpoint(dir);
  if (newest === null) return dir;
  log(`note: ${dir} is an unfinished training run (no final model yet); using its newest complete checkpoint, ${path.basename(newest.dir)}`);
  return newest.dir;
}

/** The files of a cached snapshot that make a loadable model, or a reason why not. */
function snapshotProblem(dir: string): string | null {
  const has = (f: string) => fs.existsSync(path.join(dir, f));
  if (!fs.existsSync(dir)) return 'no snapshot folder';
  if (!has(CONFIG_FILE)) return `no ${CONFIG_FILE}`;
  if (!has(WEIGHTS_FILE)) {
    if (!has(SAFETENSORS_INDEX)) return `no ${WEIGHTS_FILE}`;
    try {
      const index = JSON.parse(fs.readFileSync(path.join(dir, SAFETENSORS_INDEX), 'utf8')) as { weight_map?: Record<string, string> };
      for (const f of new Set(Object.values(index.weight_map ?? {}))) {
        if (typeof f !== 'string' || f.includes('/') || f.includes('\\') || f === '.' || f === '..') return `unsafe shard name ${JSON.stringify(f)}`;
        if (!has(f)) return `shard ${f} missing`;
      }
    } catch {
      return `unreadable ${SAFETENSORS_INDEX}`;
    }
  }
  if (!TOKENIZER_FILES.some(has)) return 'no tokenizer files';
  return null;
}

/** The cached snapshot of `revision`, or null (with why) when it is not complete in the cache. */
function cachedSnapshot(storage: string, revision: string): { sha: string; dir: string } | { missing: string } {
  let sha = revision;
  if (!COMMIT_RE.test(revision)) {
    try {
      sha = fs.readFileSync(pathInside(path.join(storage, 'refs'), revision, 'revision'), 'utf8').trim();
    } catch {
      return { missing: `no refs/${revision}` };
    }
    if (!COMMIT_RE.test(sha)) return { missing: `refs/${revision} does not hold a commit id (delete it)` };
  }
  const dir = path.join(storage, 'snapshots', sha);
  const problem = snapshotProblem(dir);
  return problem ? { missing: problem } : { sha, dir };
}

// ---------------------------------------------------------------------------------------------
// HTTP

interface Failure {
  status: number;
  code: string | null;
  message: string | null;
  url: string;
}

/** Retries of a GET answered 429 or 5xx, and the wait before the first (doubled each time). */
const RETRIES = 3;
const FIRST_RETRY_MS = 1000;
/** The longest Retry-After honoured, in seconds. */
const MAX_RETRY_AFTER_S = 60;

/** The wait a 429 or 5xx answer asks for (Retry-After in seconds or as a date), else the backoff. */
function retryDelayMs(resp: Response, attempt: number): number {
  const header = resp.headers.get('retry-after')?.trim();
  if (header) {
    const seconds = /^\d+$/.test(header) ? Number(header) : (Date.parse(header) - Date.now()) / 1000;
    if (Number.isFinite(seconds)) return Math.min(Math.max(seconds, 0), MAX_RETRY_AFTER_S) * 1000;
  }
  return FIRST_RETRY_MS * 2 ** attempt;
}

/**
 * fetch with the token, a timeout on each response and on each pause in its body, a record of
 * the last HTTP failure (its X-Error-Code, which HubApiError does not keep), and retries of a GET
 * answered 429 or 5xx (the library does not retry; huggingface_hub retries 429 with backoff).
 */
function makeFetch(settings: HubSettings, failures: { last?: Failure }, log: (line: string) => void): typeof fetch {
  const retrying = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const method = (init?.method ?? (input instanceof Request ? input.method : 'GET')).toUpperCase();
    for (let attempt = 0; ; attempt++) {
      const resp = await wrapped(input, init);
      if (!(resp.status === 429 || resp.status >= 500) || method !== 'GET' || attempt >= RETRIES) return resp;
      const delay = retryDelayMs(resp, attempt);
      const says = (resp.headers.get('x-error-message') ?? resp.statusText).replace(/\s+/g, ' ').slice(0, 120);
      await resp.body?.cancel().catch(() => {});
      log(`${settings.endpoint} answered ${resp.status} (${says || 'no details'}); retrying in ${(delay / 1000).toFixed(1)} s (${attempt + 1} of ${RETRIES} retries)`);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  };
  const wrapped = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const headers = new Headers(init?.headers);
    if (settings.token && !headers.has('authorization')) headers.set('authorization', `Bearer ${settings.token}`);
    const ctrl = new AbortController();
    let timer = setTimeout(() => ctrl.abort(new TimeoutError(settings.timeoutMs)), settings.timeoutMs);
    timer.unref?.();
    const signal = init?.signal ? AbortSignal.any([ctrl.signal, init.signal]) : ctrl.signal;
    const resp = await fetch(input, { ...init, headers, signal }).finally(() => clearTimeout(timer));
    if (!resp.ok) {
      failures.last = {
        status: resp.status,
        code: resp.headers.get('x-error-code'),
        message: resp.headers.get('x-error-message'),
        url: typeof input === 'string' ? input : input instanceof URL ? input.href : input.url,
      };
    }
    if (!resp.body || [101, 204, 205, 304].includes(resp.status)) return resp;
    // Abort when the body pauses longer than the timeout.
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => ctrl.abort(new TimeoutError(settings.timeoutMs)), settings.timeoutMs);
      timer.unref?.();
    };
    arm();
    const watch = new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        arm();
        controller.enqueue(chunk);
      },
      flush() {
        clearTimeout(timer);
      },
    });
    const body = resp.body.pipeThrough(watch);
    // The URL is not carried over by `new Response`: the client then uses the URL it asked for.
    return new Response(body, { status: resp.status, statusText: resp.statusText, headers: resp.headers });
  };
  return retrying as typeof fetch;
}

class TimeoutError extends Error {
  constructor(ms: number) {
    super(`no answer within ${ms / 1000} s (HF_HUB_DOWNLOAD_TIMEOUT)`);
    this.name = 'TimeoutError';
  }
}

/** The underlying reason of a fetch failure ("ECONNREFUSED", "timeout"...); also training/push.ts. */
export function networkCause(err: unknown): string | null {
  let e: unknown = err;
  let fallback: string | null = null;
  for (let i = 0; i < 5 && e; i++) {
    if (e instanceof TimeoutError) return e.message;
    if (e instanceof Error && e.name === 'TimeoutError') return e.message;
    const code = (e as { code?: unknown }).code;
    if (code === 'UND_ERR_SOCKET') return 'the connection closed early';
    if (typeof code === 'string' && /^(E[A-Z]+|UND_ERR\w*)$/.test(code)) return code;
    if (e instanceof TypeError && /fetch failed|terminated|other side closed|socket/i.test(e.message)) fallback ??= e.message;
    else if (fallback !== null && e instanceof Error) return e.message;   // the cause of a fetch failure
    e = (e as { cause?: unknown }).cause;
  }
  return fallback;
}

interface Context {
  id: string;
  revision: string;
  settings: HubSettings;
  file?: string;
}

/** One-line error for a failed Hub call. Network problems are plain Errors (exit 1), HTTP 4xx InputErrors. */
function hubError(err: unknown, ctx: Context, failure: Failure | undefined): Error {
  if (err instanceof InputError) return err;
  const { id, revision, settings } = ctx;
  const endpoint = settings.endpoint;
  const status = err instanceof HubApiError ? err.statusCode : failure?.status;
  if (status !== undefined && status >= 400) {
    const code = failure?.code ?? null;
    const serverSays = (failure?.message ?? (err instanceof HubApiError ? err.message.split('. URL:')[0] : '')).replace(/\s+/g, ' ').slice(0, 160);
    const tokenHint = settings.token
      ? `the token from ${settings.tokenSource} may lack access`
      : 'a private or gated repo needs HF_TOKEN set to a token with access';
    if (code === 'RevisionNotFound') {
      return new InputError(`revision '${revision}' not found in ${id} on ${endpoint} (404): check --revision (a branch, tag or commit of the repo)`);
    }
    if (code === 'EntryNotFound' && ctx.file) {
      return new InputError(`${ctx.file} not found in ${id} at revision ${revision} on ${endpoint} (404); the repo changed while downloading? retry`);
    }
    if (code === 'GatedRepo') {
      return new InputError(
        settings.token
          ? `${id} is a gated repo (${status}): accept its conditions at ${endpoint}/${id} with the account whose token is in ${settings.tokenSource}`
          : `${id} is a gated repo (${status}): accept its conditions at ${endpoint}/${id}, then set HF_TOKEN to a token of that account`,
      );
    }
    if (status === 401 && settings.token && code !== 'RepoNotFound') {
      return new InputError(`${endpoint} refused the token from ${settings.tokenSource} (401 ${serverSays || 'unauthorized'}): check or renew it (${endpoint}/settings/tokens), or unset it for public models`);
    }
    if (code === 'RepoNotFound' || status === 404 || status === 401) {
      return new InputError(`model ${id} not found on ${endpoint} (${status}): check the id; ${tokenHint}`);
    }
    if (status === 403) {
      return new InputError(`access to ${id} denied by ${endpoint} (403 ${serverSays}): ${tokenHint}`);
    }
    if (status === 429) return new Error(`${endpoint} is rate-limiting requests (429): wait a minute and retry, or set HF_TOKEN`);
    return new Error(`${endpoint} answered ${status} for ${id}${ctx.file ? `/${ctx.file}` : ''} (${serverSays || 'no details'}): retry later`);
  }
  const cause = networkCause(err);
  if (cause) {
    return new Error(`cannot reach the Hugging Face Hub at ${endpoint} (${cause}): check the network or HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the cache`);
  }
  const msg = err instanceof Error ? err.message : String(err);
  return new Error(`unexpected answer from ${endpoint} for ${id}${ctx.file ? `/${ctx.file}` : ''}: ${msg.replace(/\s+/g, ' ').slice(0, 200)}`);
}

// ---------------------------------------------------------------------------------------------
// Downloading

/** 1.2 kB, 3.4 MB, 5.67 GB (also training/push.ts and training/model-card.ts). */
export function formatBytes(n: number): string {
  return n >= 1e9 ? `${(n / 1e9).toFixed(2)} GB` : n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${(n / 1e3).toFixed(1)} kB`;
}

async function fileSize(p: string): Promise<number | null> {
  try {
    return (await fsp.stat(p)).size;   // follows the symlink
  } catch {
    return null;
  }
}

/** snapshots/<sha>/<file> -> ../../blobs/<etag> (relative, as huggingface_hub links); a copy where links fail. */
async function linkIntoSnapshot(blob: string, pointer: string): Promise<void> {
  await fsp.mkdir(path.dirname(pointer), { recursive: true });
  await fsp.rm(pointer, { force: true });
  try {
    await fsp.symlink(path.relative(path.dirname(pointer), blob), pointer);
  } catch {
    await fsp.copyFile(blob, pointer);
  }
}

/**
 * Blobs being written (their temporaries), removed if the process exits meanwhile: the CLI's
 * Ctrl-C handler (scripts/interrupt.ts) ends with process.exit, which runs no finally blocks.
 */
const partialBlobs = new Set<string>();
let exitHookInstalled = false;

function trackPartialBlob(tmp: string): void {
  partialBlobs.add(tmp);
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const f of partialBlobs) fs.rmSync(f, { force: true });
  });
}

interface Download {
  id: string;
  sha: string;
  storage: string;
  settings: HubSettings;
  fetch: typeof fetch;
  failures: { last?: Failure };
  log: (line: string) => void;
}

/** The last HTTP failure seen (a function, so that narrowing after a reset does not stick). */
function lastFailure(d: Download): Failure | undefined {
  return d.failures.last;
}

/** Makes snapshots/<sha>/<entry.path> hold the verified file, downloading it unless cached. */
async function ensureFile(d: Download, entry: ListFileEntry, revision: string): Promise<void> {
  const size = entry.lfs?.size ?? entry.size;
  const etag = entry.lfs?.oid ?? entry.oid;
  if (!etag || !/^[0-9a-f]{40,64}$/.test(etag)) throw new Error(`${d.settings.endpoint} listed ${entry.path} of ${d.id} without a usable oid`);
  const pointer = pathInside(path.join(d.storage, 'snapshots', d.sha), entry.path, `file name from ${d.settings.endpoint}`);
  if ((await fileSize(pointer)) === size) return;
  const blob = path.join(d.storage, 'blobs', etag);
  if ((await fileSize(blob)) === size) {
    await linkIntoSnapshot(blob, pointer);
    return;
  }
  await fsp.mkdir(path.dirname(blob), { recursive: true });
  const tmp = `${blob}.${process.pid}.${Date.now()}.incomplete`;
  const ctx: Context = { id: d.id, revision, settings: d.settings, file: entry.path };
  const where = `${d.settings.endpoint}/${d.id}/resolve/${d.sha.slice(0, 12)}/${entry.path}`;
  d.log(`downloading ${d.id}/${entry.path} (${formatBytes(size)})`);
  const started = performance.now();
  // LFS files are named by their sha256; other files by their git blob sha1.
  const hash = entry.lfs ? createHash('sha256') : createHash('sha1').update(`blob ${size}\0`);
  let got = 0;
  const fh = await fsp.open(tmp, 'w');
  trackPartialBlob(tmp);
  try {
    let stream: ReadableStream<Uint8Array>;
    try {
      d.failures.last = undefined;
      const file = await downloadFile({ repo: { type: 'model', name: d.id }, path: entry.path, revision: d.sha, hubUrl: d.settings.endpoint, fetch: d.fetch, xet: false });
      if (!file) throw new InputError(`${entry.path} not found in ${d.id} at ${d.sha} on ${d.settings.endpoint}; the repo changed while downloading? retry`);
      if (file.size !== size) {
        throw new InputError(`${where}: the Hub reports ${file.size} bytes but listed ${size}; retry later`);
      }
      stream = file.stream() as ReadableStream<Uint8Array>;
    } catch (err) {
      throw hubError(err, ctx, d.failures.last);
    }
    const reader = stream.getReader();
    let nextReport = performance.now() + 10_000;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (got + value.length > size) {
          throw new InputError(`download of ${where} is corrupt: more than the ${size} bytes listed arrived; delete ${tmp} if left over and retry`);
        }
        hash.update(value);
        got += value.length;
        let off = 0;
        while (off < value.length) off += (await fh.write(value, off, value.length - off)).bytesWritten;
        if (performance.now() > nextReport) {
          nextReport = performance.now() + 10_000;
          d.log(`  ${entry.path}: ${formatBytes(got)} of ${formatBytes(size)} (${((100 * got) / size).toFixed(0)}%)`);
        }
      }
    } catch (err) {
      if (err instanceof InputError) throw err;
      const failure = lastFailure(d);
      if (failure && failure.status >= 400) throw hubError(err, ctx, failure);
      const why = networkCause(err) ?? (err instanceof Error ? err.message : String(err));
      throw new InputError(`download of ${where} was cut short after ${got} of ${size} bytes (${why}); retry (the partial file was removed)`);
    }
    if (got !== size) {
      throw new InputError(`download of ${where} was truncated: ${got} of ${size} bytes arrived; retry (the partial file was removed)`);
    }
    const digest = hash.digest('hex');
    if (digest !== etag) {
      throw new InputError(`download of ${where} is corrupt: its ${entry.lfs ? 'sha256' : 'git sha1'} is ${digest.slice(0, 12)}..., expected ${etag.slice(0, 12)}...; retry (the partial file was removed), and if it persists check HF_ENDPOINT`);
    }
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => {});
    await fsp.rm(tmp, { force: true });
    partialBlobs.delete(tmp);
    throw err;
  }
  await fh.close();
  await fsp.rename(tmp, blob);
  partialBlobs.delete(tmp);
  await linkIntoSnapshot(blob, pointer);
  const seconds = (performance.now() - started) / 1000;
  if (size > 10e6) d.log(`  ${entry.path}: ${formatBytes(size)} in ${seconds.toFixed(1)} s`);
}

/**
 * Downloads what a masked LM needs from Hub model `id` at `revision` into the cache (files
 * already there are kept) and returns its snapshot folder. HF_HUB_OFFLINE: from the cache only.
 */
export async function downloadModel(id: string, opts: ResolveOptions = {}): Promise<ResolvedModel> {
  const log = opts.log ?? ((line: string) => process.stderr.write(line + '\n'));
  const settings = hubSettings(opts.env ?? process.env);
  const revision = checkRevision(opts.revision);
  if (!isHubId(id)) throw new InputError(`${id} is not a valid Hugging Face Hub id (like bert-base-uncased or org/name)`);
  const storage = path.join(settings.cacheDir, repoFolderName(id));
  const fromCache = (sha: string, dir: string): ResolvedModel => ({ dir, source: id, revision: sha, cacheFolder: storage });

  if (settings.offline) {
    const cached = cachedSnapshot(storage, revision);
    if ('missing' in cached) {
      const partly = fs.existsSync(path.join(storage, 'snapshots')) ? 'not complete' : 'not';
      throw new InputError(
        `${id} (revision ${revision}) is ${partly} in the Hugging Face cache at ${settings.cacheDir} (${cached.missing}) and ${isTrue((opts.env ?? process.env).HF_HUB_OFFLINE) ? 'HF_HUB_OFFLINE' : 'TRANSFORMERS_OFFLINE'} is set: unset it where the Hub can be reached to fetch it (\`mlm download ${id}\` fetches it alone), or give a local folder`,
      );
    }
    return fromCache(cached.sha, cached.dir);
  }

  const failures: { last?: Failure } = {};
  const hubFetch = makeFetch(settings, failures, log);
  const ctx: Context = { id, revision, settings };
  const repo = { type: 'model' as const, name: id };

  // 1. The commit the revision points to.
  let sha: string;
  try {
    const info = await modelInfo({ name: id, revision, hubUrl: settings.endpoint, fetch: hubFetch, additionalFields: ['sha'] });
    sha = String((info as { sha?: unknown }).sha ?? '');
    if (!COMMIT_RE.test(sha)) throw new Error(`no commit sha in the model info (got ${JSON.stringify(sha).slice(0, 60)})`);
  } catch (err) {
    const mapped = hubError(err, ctx, failures.last);
    // Any failure but an unknown revision (the Hub unreachable or down, or refusing a missing or
    // expired token for a private repo): fall back to a complete cached snapshot, as huggingface_hub
    // does.
    if (failures.last?.code !== 'RevisionNotFound') {
      const cached = cachedSnapshot(storage, revision);
      if (!('missing' in cached)) {
        log(`warning: ${mapped.message}; using ${id} from the cache (commit ${cached.sha.slice(0, 12)})`);
        return fromCache(cached.sha, cached.dir);
      }
    }
    throw mapped;
  }

  // 2. The files at that commit (top level).
  const entries = new Map<string, ListFileEntry>();
  try {
    for await (const e of listFiles({ repo, revision: sha, hubUrl: settings.endpoint, fetch: hubFetch })) {
      if (e.type === 'file') entries.set(e.path, e);
    }
  } catch (err) {
    throw hubError(err, ctx, failures.last);
  }
  const names = new Set(entries.keys());
  if (!names.has(CONFIG_FILE)) {
    throw new InputError(`${id} on ${settings.endpoint} has no config.json at revision ${revision}: not a transformers model repo`);
  }
  const weightsFile = names.has(WEIGHTS_FILE) ? WEIGHTS_FILE : names.has(SAFETENSORS_INDEX) ? SAFETENSORS_INDEX : null;
  if (!weightsFile) {
    throw unreadableWeightsError(`Hub repo ${id}`, names, id) ??
      new InputError(`${id} on ${settings.endpoint} has no model.safetensors (nor ${SAFETENSORS_INDEX}) at revision ${revision}`);
  }
  const tokenizerFiles = TOKENIZER_FILES.filter((f) => names.has(f));
  if (tokenizerFiles.length === 0) {
    throw new InputError(`${id} on ${settings.endpoint} has no tokenizer files (${TOKENIZER_FILES.join(', ')}); mlmkit needs the model's tokenizer`);
  }

  // 3. Download what is missing: config, tokenizer, weights (the index first, then its shards).
  const d: Download = { id, sha, storage, settings, fetch: hubFetch, failures, log };
  for (const f of [CONFIG_FILE, ...tokenizerFiles, weightsFile]) await ensureFile(d, entries.get(f)!, revision);
  const snapshot = path.join(storage, 'snapshots', sha);
  if (weightsFile === SAFETENSORS_INDEX) {
    let shards: string[];
    try {
      const index = JSON.parse(await fsp.readFile(path.join(snapshot, SAFETENSORS_INDEX), 'utf8')) as { weight_map?: Record<string, unknown> };
      shards = [...new Set(Object.values(index.weight_map ?? {}).map(String))].sort();
    } catch (err) {
      throw new InputError(`${id}: ${SAFETENSORS_INDEX} is not valid JSON (${(err as Error).message}); delete ${storage} and retry`);
    }
    // Shard names come from the mirror: each must be a file of the snapshot's top level (as the
    // listing is) before anything is looked up, removed or linked under its name.
    for (const shard of shards) pathInside(snapshot, shard, `${SAFETENSORS_INDEX} of ${id} names a shard`);
    for (const shard of shards) {
      if (shard.includes('/')) throw new InputError(`${id}: ${SAFETENSORS_INDEX} names ${shard}, not a file at the top of the repo; mlmkit reads top-level shards only`);
      const e = entries.get(shard);
      if (!e) throw new InputError(`${id}: ${SAFETENSORS_INDEX} names ${shard}, which the repo does not hold at revision ${revision}`);
      await ensureFile(d, e, revision);
    }
  }

  // 4. The revision now resolves offline too.
  if (revision !== sha) {
    const ref = pathInside(path.join(storage, 'refs'), revision, 'revision');
    await fsp.mkdir(path.dirname(ref), { recursive: true });
    await fsp.writeFile(ref, sha);
  }
  return fromCache(sha, snapshot);
}

/** Checks the headers of the snapshot's safetensors files (cheap: headers only). */
export function validateSnapshot(resolved: ResolvedModel): void {
  const files = fs.existsSync(path.join(resolved.dir, WEIGHTS_FILE))
    ? [path.join(resolved.dir, WEIGHTS_FILE)]
    : fs.readdirSync(resolved.dir).filter((f) => f.endsWith('.safetensors')).map((f) => path.join(resolved.dir, f));
  for (const f of files) {
    try {
      openSafetensors(f).close();
    } catch (err) {
      throw withCacheHint(err, resolved);
    }
  }
}

/** Adds "delete the cache folder and retry" to an error about a file in a cached snapshot. */
function withCacheHint(err: unknown, resolved: ResolvedModel): unknown {
  if (!(err instanceof InputError) || !resolved.cacheFolder) return err;
  if (!/safetensors|not valid JSON|looks binary|is empty|truncated|not valid UTF-8/.test(err.message)) return err;
  return new InputError(`${err.message.replace(/;[^;]*$/, '')}; the download in the cache is damaged: delete ${resolved.cacheFolder} and retry`);
}

/**
 * resolveModel + loadModelFolder: a local folder or a Hub id, loaded. A damaged file in the cache
 * is reported with the folder to delete.
 */
export async function loadModel(idOrDir: string, opts: ResolveOptions = {}): Promise<ModelFolder> {
  const resolved = await resolveModel(idOrDir, opts);
  try {
    return await loadModelFolder(resolved.dir, { source: resolved.source, revision: resolved.revision });
  } catch (err) {
    throw withCacheHint(err, resolved);
  }
}
