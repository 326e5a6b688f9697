// Pushing a model folder to the Hugging Face Hub: the work behind `mlm push` and
// `mlm train --push-to-hub` (scripts/commands/push.ts), callable from the library (index.ts `push`).
//
// What is uploaded, in one commit: config.json, model.safetensors (or its index and shards), the
// tokenizer files, README.md (the model card, training/model-card.ts: generated when the folder
// has none, and written into the folder once the push succeeded; an existing README.md is
// uploaded as it is unless `overwriteCard`; a generated card, new or already in the folder, never
// replaces a card the repo has on the Hub that mlmkit did not generate, unless `overwriteCard`),
// the run's train_results.json / eval_results.json / all_results.json when the folder holds them,
// and with `includeReport` the run's report.md and its charts (*.svg, *.png at the run folder's
// root). Never trainer_state.json, optimizer.safetensors or checkpoints.
//
// Requests, through @huggingface/hub (`lib/who-am-i.ts`, `lib/create-repo.ts`,
// `lib/create-branch.ts`, `lib/commit.ts`), in order:
//   GET  {endpoint}/api/whoami-v2                           only for a name without owner/
//   POST {endpoint}/api/repos/create                        409: the repo exists (fine)
//   POST {endpoint}/api/models/{repo}/branch/{branch}       --revision other than main; 409: exists
//   GET  {endpoint}/{repo}/resolve/{branch}/README.md       an existing repo's card, when the push
//                                                           would upload a generated one
//   POST {endpoint}/api/models/{repo}/preupload/{branch}    which files go through LFS
//   POST {endpoint}/{repo}.git/info/lfs/objects/batch       per LFS file: an upload URL, or none
//                                                           when the Hub already stores the bytes
//   PUT  <upload URL>                                       the LFS file's bytes (basic transfer)
//   POST {endpoint}/api/models/{repo}/commit/{branch}       NDJSON: a header, then one line per
//                                                           file (small files inline as base64,
//                                                           LFS files by sha256 and size)
// Nothing is visible in the repo until the commit; LFS objects uploaded before a failure stay in
// the Hub's storage, so a re-run sends only what is missing (the batch answer has no upload URL for
// them). Transient failures (network errors, 429, 5xx) are retried a few times with exponential
// backoff, each retry resuming the same way; the library does not retry.
//
// Porting notes:
// - Uploads use the LFS "basic" transfer (`useXet: false`); the Hub accepts it for every repo.
//   Multipart transfers (files over 5 GB) are the library's, untested here.
// - The token is sent to the endpoint only (the library's calls); LFS upload URLs get none.
//
// References: huggingface_hub `hf_api.py` (create_repo(exist_ok), upload_folder, create_branch),
// `repocard.py` / `repocard_data.py`; @huggingface/hub `lib/commit.ts`.
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { commitIter, createBranch, createRepo, downloadFile, HubApiError, whoAmI, type CommitOutput, type CommitProgressEvent } from '@huggingface/hub';
import { writeFileAtomic } from '../common/atomic.ts';
import { InputError } from '../common/errors.ts';
import { insideRoot, within } from '../data/paths.ts';
import { CONFIG_FILE, readConfigFile, SAFETENSORS_INDEX, TOKENIZER_FILES, WEIGHTS_FILE } from './checkpoint.ts';
import { checkEndpoint, checkRevision, DEFAULT_REVISION, formatBytes, hubSettings, isHubId, networkCause, runFolderModel, type HubSettings } from './hub.ts';
import { CARD_MARKER, collectCardFacts, modelCard, runFolderOf } from './model-card.ts';
import { openSafetensors } from './safetensors.ts';

type Env = Readonly<Record<string, string | undefined>>;

export const CARD_FILE = 'README.md';
/** transformers' Trainer names, written by training/trainer.ts at the run folder's root. */
const RESULT_JSON = ['train_results.json', 'eval_results.json', 'all_results.json'];

export interface PushOptions {
  /** A model folder, an `mlm train` run folder (its final model, or its newest checkpoint while unfinished). */
  model: string;
  /** `owner/name`, or `name` (the token's user is the owner). */
  repo: string;
  /** Create the repo private (an existing repo keeps its visibility). */
  private?: boolean;
  /** The branch to commit to (default main; created from main when missing). */
  revision?: string;
  /** Also upload the run's report.md and charts. */
  includeReport?: boolean;
  /**
   * Replace an existing README.md in the folder with a generated card, and upload a generated card
   * over a card of the repo's own on the Hub (one mlmkit did not generate).
   */
  overwriteCard?: boolean;
  /** An SPDX-like license id for the card's metadata (apache-2.0, mit...). */
  license?: string;
  commitMessage?: string;
  /** Environment for HF_TOKEN, HF_ENDPOINT, HF_HOME (the token file): none read unless given. */
  env?: Env;
  /** Overrides HF_TOKEN. */
  token?: string;
  /** Overrides HF_ENDPOINT. */
  endpoint?: string;
  /** Retries of a transient failure (default 3). */
  retries?: number;
  /** The first retry's delay in ms, doubled for each next one (default 1000). */
  retryDelayMs?: number;
  log?: (line: string) => void;
}

export interface PushedFile {
  path: string;
  bytes: number;
}

export interface PushResult {
  /** owner/name. */
  repo: string;
  /** The repo's page (at the branch when not main). */
  url: string;
  revision: string;
  /** The commit id the Hub returned (null if it returned none). */
  commit: string | null;
  /** The folder uploaded. */
  folder: string;
  files: PushedFile[];
  /**
   * README.md: generated now, kept as the folder had it, replaced by a generated one, or not
   * uploaded because the repo on the Hub has its own card ('hub').
   */
  card: 'generated' | 'kept' | 'replaced' | 'hub';
  /** Whether the repo was created by this push. */
  created: boolean;
}

const quiet = () => {};

/** The model folder to push: a local folder (a run folder resolves to its model), else InputError. */
export function pushFolder(model: string, log: (line: string) => void): string {
  let st: fs.Stats;
  try {
    st = fs.statSync(model);
  } catch {
    throw new InputError(`--model ${model} not found; give a model folder or an \`mlm train\` run folder (mlm push uploads local folders)`);
  }
  if (!st.isDirectory()) throw new InputError(`--model ${model} is a file; give the folder that holds config.json and model.safetensors`);
  const dir = runFolderModel(model, log);
  if (!fs.existsSync(path.join(dir, CONFIG_FILE))) {
    throw new InputError(`${model} is not a model folder (no ${CONFIG_FILE}); give a folder written by mlm train or mlm export`);
  }
  return dir;
}

/** The weight files of a folder (model.safetensors, or the index and its shards), checked by their headers. */
function weightFiles(dir: string): string[] {
  if (fs.existsSync(path.join(dir, WEIGHTS_FILE))) {
    openSafetensors(path.join(dir, WEIGHTS_FILE)).close();
    return [WEIGHTS_FILE];
  }
  if (!fs.existsSync(path.join(dir, SAFETENSORS_INDEX))) {
    throw new InputError(`${dir} has no ${WEIGHTS_FILE} (nor ${SAFETENSORS_INDEX}); give a complete model folder`);
  }
  let shards: string[];
  try {
    const index = JSON.parse(fs.readFileSync(path.join(dir, SAFETENSORS_INDEX), 'utf8')) as { weight_map?: Record<string, unknown> };
    shards = [...new Set(Object.values(index.weight_map ?? {}).map(String))].sort();
  } catch (err) {
    throw new InputError(`${path.join(dir, SAFETENSORS_INDEX)} is not valid JSON (${(err as Error).message}); fix or re-export the folder`);
  }
  for (const s of shards) {
    const file = insideRoot(dir, s, `${SAFETENSORS_INDEX} names a shard`);
    if (!fs.existsSync(file)) throw new InputError(`${SAFETENSORS_INDEX} in ${dir} names ${s}, which is missing; re-export the folder`);
    openSafetensors(file).close();
  }
  return [SAFETENSORS_INDEX, ...shards];
}

/** The report files of the run around `dir`: report.md and the charts beside it. */
function reportFiles(dir: string): { root: string; files: string[] } {
  const run = runFolderOf(dir);
  const root = run ?? dir;
  if (!fs.existsSync(path.join(root, 'report.md'))) {
    throw new InputError(`--include-report: ${root} has no report.md; it is written by mlm train in its run folder (push the run folder, or leave the flag out)`);
  }
  const charts = fs.readdirSync(root).filter((f) => /\.(svg|png)$/i.test(f) && fs.statSync(path.join(root, f)).isFile()).sort();
  return { root, files: ['report.md', ...charts] };
}

/**
 * `root`/`name`, a file to upload; an InputError when its real path, links followed, lies outside its folder
 * `root`: a link in a model or run folder must not send a file from elsewhere to the Hub. The Hub
 * cache's layout is allowed: a snapshot's files (`<repo>/snapshots/<rev>/f`) link into `<repo>/blobs`.
 */
function checkNoLinkOut(name: string, root: string): string {
  const file = path.join(root, name);
  let real: string;
  try {
    real = fs.realpathSync(file);
  } catch {
    throw new InputError(`${file} cannot be read (a link to nothing?); fix or remove it before pushing`);
  }
  const rootReal = fs.realpathSync(root);
  const blobs = path.basename(path.dirname(rootReal)) === 'snapshots' ? path.join(rootReal, '..', '..', 'blobs') : null;
  if (!within(real, rootReal) && !(blobs !== null && within(real, blobs))) {
    throw new InputError(`${file} leads to ${real}, outside ${root}; push uploads no file from outside the folder (copy it in, or remove the link)`);
  }
  return file;
}

/** `owner/name` checked; a bare name gets the owner later (whoami). */
export function checkRepoName(repo: string): string {
  const r = repo.trim();
  if (!isHubId(r)) {
    throw new InputError(
      `--repo ${JSON.stringify(repo)} is not a valid Hub repo name: give name or owner/name (letters, digits, '-', '_', '.'; no '--' or '..'; at most 96 characters)`,
    );
  }
  return r;
}

/** The token to push with, or an InputError saying how to give one. */
export function pushToken(settings: HubSettings): string {
  if (!settings.token) {
    throw new InputError(`pushing needs a Hugging Face token with write access: set HF_TOKEN (create one at ${settings.endpoint}/settings/tokens) or run \`huggingface-cli login\``);
  }
  if (!settings.token.startsWith('hf_')) {
    throw new InputError(`the token from ${settings.tokenSource} does not start with hf_, so it is not a Hugging Face access token; create one at ${settings.endpoint}/settings/tokens`);
  }
  return settings.token;
}

/** The branch to push to: a branch name (default main), not a commit id. */
export function pushBranch(revision: string | undefined): string {
  const r = checkRevision(revision);
  if (/^[0-9a-f]{40}$/.test(r)) throw new InputError(`--revision ${r} is a commit id; push commits onto a branch: give a branch name (like main or dev)`);
  return r;
}

/** Checks a push's name and token before a long run (`mlm train --push-to-hub`). */
export function checkPushTarget(opts: Pick<PushOptions, 'repo' | 'revision' | 'env' | 'token' | 'endpoint'>): void {
  checkRepoName(opts.repo);
  pushBranch(opts.revision);
  pushToken(settingsOf(opts));
}

function settingsOf(opts: Pick<PushOptions, 'env' | 'token' | 'endpoint'>): HubSettings {
  const s = hubSettings(opts.env ?? {});
  return {
    ...s,
    endpoint: opts.endpoint ? checkEndpoint(opts.endpoint, 'the endpoint option') : s.endpoint,
    token: opts.token ?? s.token,
    tokenSource: opts.token !== undefined ? 'the token option' : s.tokenSource,
  };
}

// -------------------------------------------------------------------------------------------------
// HTTP failures

interface Failure {
  status: number;
  code: string | null;
  message: string | null;
}

/** fetch that records the last failed answer (X-Error-Code / X-Error-Message, which HubApiError drops). */
function recordingFetch(failures: { last?: Failure }): typeof fetch {
  return (async (input: string | URL | Request, init?: RequestInit) => {
    const resp = await fetch(input, init);
    if (!resp.ok) failures.last = { status: resp.status, code: resp.headers.get('x-error-code'), message: resp.headers.get('x-error-message') };
    return resp;
  }) as typeof fetch;
}

function statusOf(err: unknown): number | undefined {
  return err instanceof HubApiError ? err.statusCode : undefined;
}

/** Worth another try: the network, rate limiting, the server's own errors. */
function transient(err: unknown): boolean {
  const status = statusOf(err);
  if (status !== undefined) return status === 429 || status >= 500;
  return networkCause(err) !== null;
}

function serverSays(err: unknown, failure: Failure | undefined): string {
  const m = failure?.message ?? (err instanceof HubApiError ? err.message.split('. URL:')[0] : err instanceof Error ? err.message : String(err));
  return m.replace(/\s+/g, ' ').slice(0, 160);
}

interface PushContext {
  repo: string;
  settings: HubSettings;
}

/** One line for a failed Hub call: bad token, no access, bad name are InputErrors (exit 2); the rest Errors. */
function pushError(err: unknown, ctx: PushContext, failure: Failure | undefined, doing: string): Error {
  if (err instanceof InputError) return err;
  const { repo, settings } = ctx;
  const endpoint = settings.endpoint;
  const status = statusOf(err);
  const says = serverSays(err, failure);
  if (status === 401) {
    return new InputError(`${endpoint} rejected the token from ${settings.tokenSource} (401 ${says}): check or renew it at ${endpoint}/settings/tokens`);
  }
  if (status === 403) {
    return new InputError(`no write access to ${repo} on ${endpoint} (403 ${says}): the token from ${settings.tokenSource} needs write permission there (a write token, or a fine-grained token with write access to ${repo.split('/')[0]})`);
  }
  if (status === 400 || status === 422) return new InputError(`${endpoint} refused ${doing} ${repo} (${status} ${says}); check --repo and --revision`);
  if (status === 404) return new InputError(`${repo} not found on ${endpoint} while ${doing} it (404 ${says}); check --repo`);
  if (status !== undefined) return new Error(`${endpoint} answered ${status} while ${doing} ${repo} (${says}); retry later`);
  const cause = networkCause(err);
  if (cause) return new Error(`cannot reach the Hugging Face Hub at ${endpoint} while ${doing} ${repo} (${cause}); check the network or HF_ENDPOINT, then retry`);
  return new Error(`unexpected failure while ${doing} ${repo} on ${endpoint}: ${says}`);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// -------------------------------------------------------------------------------------------------
// The push

/**
 * Uploads a model folder to the Hub (creating the repo, and the branch, when missing) in one
 * commit; see the top of this file for what is sent. InputError for bad input, a rejected token or
 * no write access; Error for failures that remain after the retries, naming what was uploaded.
 */
export async function pushModel(opts: PushOptions): Promise<PushResult> {
  const log = opts.log ?? quiet;
  const retries = opts.retries ?? 3;
  const firstDelay = opts.retryDelayMs ?? 1000;
  let repo = checkRepoName(opts.repo);
  const branch = pushBranch(opts.revision);
  const settings = settingsOf(opts);
  const accessToken = pushToken(settings);
  const dir = pushFolder(opts.model, log);
  await readConfigFile(dir); // a folder with a broken config is refused before anything is sent

  // The files, checked before the network is touched.
  const files = [CONFIG_FILE, ...weightFiles(dir), ...TOKENIZER_FILES.filter((f) => fs.existsSync(path.join(dir, f)))];
  if (!TOKENIZER_FILES.some((f) => files.includes(f))) throw new InputError(`${dir} has no tokenizer files (${TOKENIZER_FILES.join(', ')}); push a complete model folder`);
  const report = opts.includeReport ? reportFiles(dir) : null;

  const failures: { last?: Failure } = {};
  const hubFetch = recordingFetch(failures);
  const hubUrl = settings.endpoint;
  const ctx: PushContext = { repo, settings };
  const withRetries = async <T>(doing: string, fn: () => Promise<T>): Promise<T> => {
    for (let attempt = 0; ; attempt++) {
      failures.last = undefined;
      try {
        return await fn();
      } catch (err) {
        if (!transient(err) || attempt >= retries) throw Object.assign(pushError(err, ctx, failures.last, doing), { attempts: attempt + 1 });
        const delay = firstDelay * 2 ** attempt;
        log(`push: ${pushError(err, ctx, failures.last, doing).message.replace(/; (check|retry).*$/, '')}; retrying in ${(delay / 1000).toFixed(1)} s (${attempt + 1} of ${retries} retries)`);
        await sleep(delay);
      }
    }
  };

  // The owner of a bare name: the token's user.
  if (!repo.includes('/')) {
    const me = await withRetries('finding the owner for', () => whoAmI({ accessToken, hubUrl, fetch: hubFetch }));
    repo = `${me.name}/${repo}`;
    ctx.repo = repo;
  }

  // The card: the folder's own README.md, or a generated one (written into the folder once pushed).
  const cardPath = path.join(dir, CARD_FILE);
  let card: PushResult['card'] = 'generated';
  let cardText: Buffer | null = null;
  /** Whether the card to upload is one mlmkit generated (now, or by an earlier push into the folder). */
  let generatedCard = true;
  if (fs.existsSync(cardPath) && !opts.overwriteCard) {
    card = 'kept';
    generatedCard = fs.readFileSync(cardPath, 'utf8').includes(CARD_MARKER);
  } else {
    if (fs.existsSync(cardPath)) card = 'replaced';
    cardText = Buffer.from(modelCard(await collectCardFacts(dir, { repo, license: opts.license })), 'utf8');
  }

  // What goes up, by repo path (the report's files lie in the run folder when dir is a checkpoint).
  const uploads = new Map<string, string | Buffer>();
  for (const f of [...files, ...RESULT_JSON.filter((r) => fs.existsSync(path.join(dir, r)))]) uploads.set(f, checkNoLinkOut(f, dir));
  uploads.set(CARD_FILE, cardText ?? checkNoLinkOut(CARD_FILE, dir));
  for (const f of report?.files ?? []) if (!uploads.has(f)) uploads.set(f, checkNoLinkOut(f, report!.root));

  // 1. The repo (and branch).
  let created = true;
  let createRefused: Error | null = null;
  await withRetries('creating', async () => {
    try {
      await createRepo({ repo: { type: 'model', name: repo }, accessToken, hubUrl, fetch: hubFetch, ...(opts.private ? { visibility: 'private' as const } : {}) });
    } catch (err) {
      if (statusOf(err) === 409) created = false;
      // A token may write to an existing repo without the right to create repos: go on, and
      // report this refusal if the repo turns out not to exist.
      else if (statusOf(err) === 403) [created, createRefused] = [false, pushError(err, ctx, failures.last, 'creating')];
      else throw err;
    }
  });
  if (created) log(`created ${opts.private ? 'private ' : ''}repo ${repo} on ${hubUrl}`);
  else if (!createRefused && opts.private) log(`note: ${repo} exists already; --private does not change its visibility`);
  const commitStep = async <T>(doing: string, fn: () => Promise<T>): Promise<T> => {
    try {
      return await withRetries(doing, fn);
    } catch (err) {
      // Not allowed to create, and then not found: the creation's 403 is the real story.
      if (createRefused && err instanceof InputError && /\(404/.test(err.message)) throw createRefused;
      throw err;
    }
  };
  if (branch !== DEFAULT_REVISION) {
    await commitStep('creating the branch of', async () => {
      try {
        await createBranch({ repo: { type: 'model', name: repo }, branch, accessToken, hubUrl, fetch: hubFetch });
      } catch (err) {
        if (statusOf(err) !== 409) throw err;
      }
    });
  }

  // A generated card does not replace a card the repo already has on the Hub and mlmkit did not
  // write (someone wrote it there, by hand or with another tool), unless asked.
  if (generatedCard && !created && !opts.overwriteCard) {
    const hubCard = await commitStep('reading the model card of', async () => {
      const blob = await downloadFile({ repo: { type: 'model', name: repo }, path: CARD_FILE, revision: branch, accessToken, hubUrl, fetch: hubFetch, xet: false });
      return blob === null ? null : await blob.text();
    });
    if (hubCard !== null && !hubCard.includes(CARD_MARKER)) {
      uploads.delete(CARD_FILE);
      cardText = null;
      card = 'hub';
      log(`note: ${repo} has a model card of its own on the Hub${branch !== DEFAULT_REVISION ? ` (branch ${branch})` : ''}; it is kept, and the generated one is not uploaded (--overwrite-card replaces it)`);
    }
  }
  if (card === 'kept') {
    log(`note: uploading the ${generatedCard ? 'generated ' : ''}README.md already in ${dir} as the model card${generatedCard ? '' : ' (--overwrite-card replaces it with a generated one)'}`);
  }
  const sized: PushedFile[] = [];
  for (const [p, src] of uploads) sized.push({ path: p, bytes: typeof src === 'string' ? (await fsp.stat(src)).size : src.length });
  const total = sized.reduce((s, f) => s + f.bytes, 0);

  // 2. One commit; LFS files already in the Hub's storage are not sent again.
  log(`pushing ${sized.length} files (${formatBytes(total)}) to ${repo}${branch !== DEFAULT_REVISION ? ` (branch ${branch})` : ''}`);
  const stored = new Set<string>();
  let output: CommitOutput | undefined;
  try {
    output = await commitStep('uploading to', async () => {
      const operations = await Promise.all([...uploads].map(async ([p, src]) => ({
        operation: 'addOrUpdate' as const, path: p, content: typeof src === 'string' ? await fs.openAsBlob(src) : new Blob([new Uint8Array(src)]),
      })));
      const it = commitIter({
        repo: { type: 'model', name: repo },
        operations,
        title: opts.commitMessage ?? `Upload ${path.basename(path.resolve(opts.model))} with mlmkit`,
        branch,
        accessToken,
        hubUrl,
        fetch: hubFetch,
        useXet: false,
      });
      for (;;) {
        const r = await it.next();
        if (r.done) return r.value;
        const e: CommitProgressEvent = r.value;
        if (e.event === 'fileProgress' && e.state === 'uploading' && e.progress === 1 && !stored.has(e.path)) {
          stored.add(e.path);
          log(`  ${e.path}: in the Hub's storage`);
        }
      }
    });
  } catch (err) {
    if (err instanceof InputError) throw err;
    const attempts = (err as { attempts?: number }).attempts ?? 1;
    const kept = [...stored].sort();
    throw new Error(
      `${(err as Error).message.replace(/; (check|retry).*$/, '')}; gave up after ${attempts} ${attempts === 1 ? 'try' : 'tries'}: nothing was committed to ${repo}` +
        (kept.length > 0 ? `, but ${kept.join(', ')} reached the Hub's storage and will not be sent again` : '') +
        '; run the same push again to resume',
    );
  }
  if (cardText !== null) {
    await writeFileAtomic(cardPath, [cardText]);
    log(`wrote the model card to ${cardPath}`);
  }
  const commit = output?.commit?.oid ?? null;
  const url = `${hubUrl}/${repo}${branch !== DEFAULT_REVISION ? `/tree/${encodeURIComponent(branch)}` : ''}`;
  log(`pushed ${repo}${commit ? ` (commit ${commit.slice(0, 12)})` : ''}: ${url}`);
  return { repo, url, revision: branch, commit, folder: dir, files: sized.sort((a, b) => a.path.localeCompare(b.path)), card, created };
}
