// `mlm serve`'s server: a fill-mask page on 127.0.0.1 that runs a tfjs export in the browser with
// mlmkit's browser entry (browser.ts). GET / is the page (page.html beside this file), /app.js its
// script (page-main.ts bundled with TF.js by esbuild at start; Node built-ins are
// stubbed: the browser code paths never call them), /model/* the export's files. Only those
// files are served: model.json, the tokenizer file and weight shards it names, and
// tokenizer_config.json — nothing else the folder holds (`mlm serve --model .` must not publish a
// folder's other files, dotfiles included) — each resolved inside the export folder (symbolic
// links followed, and still inside) or refused, and streamed from disk (a shard is not read whole
// into memory for each request). A request whose Host is not this server's own address is refused
// (403): a web page whose domain is made to resolve to 127.0.0.1 (DNS rebinding) could otherwise
// read the model. A malformed path gets 400 and the server goes on. GET and HEAD only.
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tfjsExportFiles } from '../../browser.ts';
import { InputError } from '../../common/errors.ts';
import { parseModelConfig } from '../../training/models/config.ts';
import { within } from '../../data/paths.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** The page sources (page.html, page-main.ts) sit beside this file, in the repository and the package. */
const PAGE_DIR = HERE;

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.json': 'application/json',
  '.bin': 'application/octet-stream',
  '.txt': 'text/plain; charset=utf-8',
};

/** The page's script: page-main.ts, browser.ts and TF.js in one ES module. */
export async function bundlePage(): Promise<string> {
  const esbuild = await import('esbuild');
  const result = await esbuild.build({
    entryPoints: [path.join(PAGE_DIR, 'page-main.ts')],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    write: false,
    logLevel: 'silent',
    plugins: [{
      name: 'stub-node-builtins',
      setup(build) {
        build.onResolve({ filter: /^node:/ }, (args) => ({ path: args.path, namespace: 'node-stub' }));
        build.onLoad({ filter: /.*/, namespace: 'node-stub' }, () => ({ contents: 'export default {};', loader: 'js' }));
      },
    }],
  });
  return result.outputFiles[0].text;
}

export interface ServeOptions {
  /** A `mlm export --format tfjs` folder (model.json, shards, config, tokenizer files). */
  exportDir: string;
  /** 0: any free port. */
  port?: number;
}

export interface RunningServer {
  url: string;
  close(): Promise<void>;
}

/**
 * The file `rel` names inside `root` (a real path) and its size, or null: outside it, through a
 * link or not, or no file.
 */
function modelFile(root: string, rel: string): { file: string; size: number } | null {
  const file = path.resolve(root, rel);
  if (file === root || !within(file, root)) return null;
  try {
    const real = fs.realpathSync(file);
    const st = fs.statSync(real);
    return within(real, root) && st.isFile() ? { file: real, size: st.size } : null;
  } catch {
    return null;
  }
}

/**
 * Checks the export before serving it (the page would fail only once opened): model.json's file
 * names plain names inside the folder (browser.ts), the tokenizer file and every shard there, the
 * shards' bytes what the weights need. InputError naming what is wrong.
 */
function checkExport(root: string, shown: string): ReturnType<typeof tfjsExportFiles> {
  const where = path.join(shown, 'model.json');
  let files: ReturnType<typeof tfjsExportFiles>;
  try {
    const modelJson = JSON.parse(fs.readFileSync(path.join(root, 'model.json'), 'utf8'));
    files = tfjsExportFiles(modelJson, where);
    // The model's config, as the page will read it (browser.ts): a wrong one fails here, not in the page.
    parseModelConfig(modelJson.userDefinedMetadata.mlmkit.config, where);
  } catch (err) {
    throw new InputError(err instanceof SyntaxError ? `${where} is not valid JSON (${err.message}); export it again with mlm export --format tfjs` : (err as Error).message);
  }
  const present = (name: string): { file: string; size: number } => {
    const found = modelFile(root, name);
    if (found === null) throw new InputError(`${path.join(shown, name)}, named in ${where}, is missing; export it again with mlm export --format tfjs`);
    return found;
  };
  present(files.tokenizer);
  const bytes = files.shards.reduce((sum, name) => sum + present(name).size, 0);
  if (bytes !== files.weightBytes) {
    throw new InputError(`${where}: the weights take ${files.weightBytes} bytes but the shards hold ${bytes}; export it again with mlm export --format tfjs`);
  }
  return files;
}

/** The export's files the page loads (browser.ts loadTfjsModel): all that /model/ serves. */
const PAGE_LOADS = ['model.json', 'tokenizer_config.json'];

/** Starts the page server on 127.0.0.1. */
export async function servePage(opts: ServeOptions): Promise<RunningServer> {
  const root = fs.realpathSync(opts.exportDir);
  if (!fs.existsSync(path.join(root, 'model.json'))) {
    throw new InputError(`${opts.exportDir} has no model.json; give a model folder or a mlm export --format tfjs folder`);
  }
  const files = checkExport(root, opts.exportDir);
  const served = new Set([...PAGE_LOADS, files.tokenizer, ...files.shards]);
  const page = fs.readFileSync(path.join(PAGE_DIR, 'page.html'));
  const app = await bundlePage();
  let hosts: string[] = [];
  const server = http.createServer((req, res) => {
    const head = req.method === 'HEAD';
    const send = (status: number, type: string, body: string | Buffer) => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) }).end(head ? undefined : body);
    };
    if (!hosts.includes((req.headers.host ?? '').toLowerCase())) return send(403, TYPES['.txt'], 'this server answers requests for 127.0.0.1 only\n');
    if (req.method !== 'GET' && !head) return send(405, TYPES['.txt'], 'GET only\n');
    let url: URL;
    let rel: string;
    try {
      url = new URL(req.url ?? '/', 'http://127.0.0.1');
      rel = decodeURIComponent(url.pathname);
    } catch {
      return send(400, TYPES['.txt'], 'malformed path\n');
    }
    if (url.pathname === '/' || url.pathname === '/index.html') return send(200, TYPES['.html'], page);
    if (url.pathname === '/app.js') return send(200, TYPES['.js'], app);
    const name = url.pathname.startsWith('/model/') ? rel.slice('/model/'.length) : null;
    const found = name !== null && served.has(name) ? modelFile(root, name) : null;
    if (found === null) return send(404, TYPES['.txt'], 'not found\n');
    const { file, size } = found;
    res.writeHead(200, { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store', 'content-length': size });
    if (head) return res.end();
    // Streamed: a large shard is neither read whole per request nor able to stop the server.
    fs.createReadStream(file).on('error', () => res.destroy()).pipe(res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(err.code === 'EADDRINUSE' ? new InputError(`port ${opts.port} is in use; choose another with --port`) : err));
    server.listen(opts.port ?? 0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  // A browser leaves the default port out of Host.
  hosts = [`127.0.0.1:${port}`, `localhost:${port}`, ...(port === 80 ? ['127.0.0.1', 'localhost'] : [])];
  return {
    url: `http://127.0.0.1:${port}/`,
    // Open connections (a browser's keep-alive, a half-sent request) are cut, not waited for.
    close: () => new Promise((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}
