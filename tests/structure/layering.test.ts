// The layering of docs/architecture.md ("Layers and the direction of dependencies"), checked on the
// source: every import of every .ts file under common/, data/, training/ and scripts/ and of the
// package entries index.ts and browser.ts at the root (static imports and
// re-exports, `import()` and `import('x')` types with a literal specifier, `require`/`require.resolve`
// with a literal) is parsed with the TypeScript compiler and resolved, and each edge is checked:
//   index.ts, browser.ts  the library's entries: import data/ and training/, never scripts/;
//                      only scripts/ imports them (the `mlm serve` page is built on browser.ts)
//   common/            what every layer uses (errors, seeded RNG and hashing, atomic writes, the
//                      version): imports no other folder of the repository
//   data/              imports nothing from training/ or scripts/
//   training/          imports nothing from scripts/
//   training/models/   imports TF.js, common/, training/models/ and the kernel contracts in
//                      training/kernels/ only (no data/, no training/backend/, nothing else of training/)
//   training/kernels/  imports TF.js, common/ and training/kernels/ only (the contracts sit below the model)
// and only scripts/ reads the process's environment variables or argv (library functions take
// options). Edges and reads that exist today and break these rules are listed below, each with
// why it is still there: the test passes with them, fails on any new one, and fails on an entry
// that no longer exists (so the lists only shrink).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const root = fileURLToPath(new URL('../..', import.meta.url));

/** Forbidden edges present today, as 'from -> to' (repository-relative paths). */
const KNOWN_EDGES: Record<string, string> = {};

/** Library files that read process.env or process.argv today. */
const KNOWN_PROCESS_READS: Record<string, string> = {
  'data/lock.ts': 'process.argv: records the running command in the lock file',
  'training/backend.ts': 'process.env: MLM_WASM_THREADS checked when the backend is chosen',
  'training/backend/blas.ts': 'process.env: sets OPENBLAS_THREAD_TIMEOUT while the library loads (OpenBLAS reads it only then), unless the process sets a timeout',
  'training/backend/wasm.ts': 'process.env: MLM_WASM_THREADS, MLM_SIMD_KERNELS and the OPENBLAS_* overrides it reports',
  'training/backend/webgpu.ts': 'process.env: LD_LIBRARY_PATH / VK_DRIVER_FILES to find the Vulkan driver; env of the probe child',
  'training/bench.ts': 'process.env: default for the Python executable option; env of the numpy child',
  'training/hub.ts': 'process.env: default for the Hub settings option (HF_HOME, HF_TOKEN...)',
};

/** The package's entries at the repository root (package.json "exports"). */
const ENTRIES = new Set(['index.ts', 'browser.ts']);
const TF_PACKAGES = new Set(['@tensorflow/tfjs', '@tensorflow/tfjs-core']);

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(path.join(root, dir), { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name)).flatMap((e) => {
    const rel = `${dir}/${e.name}`;
    if (e.isDirectory()) return e.name === 'node_modules' ? [] : sourceFiles(rel);
    return e.isFile() && e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [rel] : [];
  });
}

interface Scan {
  /** Import specifiers with a literal string. */
  specifiers: string[];
  /** How the file reads the process's environment or arguments (e.g. 'process.env'), if it does. */
  processReads: string[];
}

/** Every import specifier and every process.env / process.argv read of one file. */
export function scan(file: string, text: string): Scan {
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const specifiers: string[] = [];
  const processReads: string[] = [];
  const literal = (n: ts.Node | undefined): string | null => (n && (ts.isStringLiteral(n) || ts.isNoSubstitutionTemplateLiteral(n)) ? n.text : null);
  const visit = (n: ts.Node): void => {
    if ((ts.isImportDeclaration(n) || ts.isExportDeclaration(n)) && n.moduleSpecifier) {
      const s = literal(n.moduleSpecifier);
      if (s !== null) specifiers.push(s);
      if (s === 'node:process' || s === 'process') processReads.push(`import from '${s}'`);
    } else if (ts.isImportTypeNode(n) && ts.isLiteralTypeNode(n.argument)) {
      const s = literal(n.argument.literal);
      if (s !== null) specifiers.push(s);
    } else if (ts.isCallExpression(n)) {
      const callee = n.expression;
      const isImport = callee.kind === ts.SyntaxKind.ImportKeyword;
      const isRequire = (ts.isIdentifier(callee) && callee.text === 'require')
        || (ts.isPropertyAccessExpression(callee) && ts.isIdentifier(callee.expression) && callee.expression.text === 'require' && callee.name.text === 'resolve');
      const s = literal(n.arguments[0]);
      if ((isImport || isRequire) && s !== null) specifiers.push(s);
    } else if (ts.isIdentifier(n) && n.text === 'process') {
      const p = n.parent;
      if (ts.isPropertyAccessExpression(p) && p.expression === n && (p.name.text === 'env' || p.name.text === 'argv')) processReads.push(`process.${p.name.text}`);
      else if (ts.isElementAccessExpression(p) && p.expression === n) processReads.push('process[...]');
      else if (ts.isVariableDeclaration(p) && p.initializer === n) processReads.push('destructured process');
    }
    ts.forEachChild(n, visit);
  };
  visit(sf);
  return { specifiers, processReads };
}

/** The repository-relative file a relative specifier points at; null for packages and builtins. */
function resolve(from: string, specifier: string): string | null {
  if (!specifier.startsWith('.')) return null;
  return path.posix.normalize(path.posix.join(path.posix.dirname(from), specifier));
}

const under = (p: string, dir: string) => p.startsWith(`${dir}/`);

/** Why the edge from -> to (a repository path, or a package name when `pkg`) is forbidden, or null. */
export function forbidden(from: string, to: string, pkg: boolean): string | null {
  if (pkg) {
    if ((under(from, 'training/models') || under(from, 'training/kernels')) && !TF_PACKAGES.has(to)) {
      return 'the model and kernel contracts import only TF.js among packages';
    }
    return null;
  }
  if (under(from, 'common') && !under(to, 'common')) return 'common/ imports only common/';
  if (under(to, 'common')) return null;
  if (under(to, 'scripts') && !under(from, 'scripts')) return 'nothing outside scripts/ imports scripts/';
  if (ENTRIES.has(to) && !under(from, 'scripts')) return 'only scripts/ imports the package entries';
  if (under(from, 'data') && under(to, 'training')) return 'data/ never imports training/';
  if (under(from, 'training/models') && !under(to, 'training/models') && !under(to, 'training/kernels')) {
    return 'training/models/ imports only common/, training/models/ and the contracts in training/kernels/';
  }
  if (under(from, 'training/kernels') && !under(to, 'training/kernels')) return 'training/kernels/ imports only common/ and training/kernels/';
  if (!to.startsWith('data/') && !to.startsWith('training/') && !to.startsWith('scripts/') && !ENTRIES.has(to) && to !== 'package.json') {
    return 'a relative import leaves the source folders';
  }
  return null;
}

/** Forbidden edges and process reads of the given files, as sorted lists of keys. */
function violations(files: Array<{ file: string; text: string }>): { edges: Map<string, string>; reads: Map<string, string[]> } {
  const edges = new Map<string, string>();
  const reads = new Map<string, string[]>();
  for (const { file, text } of files) {
    const s = scan(file, text);
    for (const spec of s.specifiers) {
      const target = resolve(file, spec);
      const why = target === null ? forbidden(file, spec, true) : forbidden(file, target, false);
      if (why) edges.set(`${file} -> ${target ?? spec}`, why);
    }
    if (s.processReads.length > 0 && !under(file, 'scripts')) reads.set(file, [...new Set(s.processReads)]);
  }
  return { edges, reads };
}

const files = [...ENTRIES, ...['common', 'data', 'training', 'scripts'].flatMap(sourceFiles)].map((file) => ({ file, text: fs.readFileSync(path.join(root, file), 'utf8') }));
let found: ReturnType<typeof violations> | null = null;
const tree = () => (found ??= violations(files));

test('the parser finds imports of every kind, and process reads', () => {
  const s = scan('x.ts', [
    "import a from './a.ts';",
    "import type { B } from '../data/b.ts';",
    "export { c } from './c.ts';",
    "import './side-effect.ts';",
    "const d = await import('./d.ts');",
    'const e = await import(`./e.ts`);',
    "type K = typeof import('koffi');",
    "const f = require('./f.cjs'); const g = require.resolve('pkg/g.js');",
    "const dyn = await import(name); // not a literal: not an edge",
    "// import { no } from './comment.ts'; process.env.NOT_READ",
    "const s = 'import x from \"./string.ts\"';",
    'const h = process.env.HOME; const { argv } = process; const i = process.argv[2];',
  ].join('\n'));
  assert.deepEqual(s.specifiers, ['./a.ts', '../data/b.ts', './c.ts', './side-effect.ts', './d.ts', './e.ts', 'koffi', './f.cjs', 'pkg/g.js']);
  assert.deepEqual(s.processReads, ['process.env', 'destructured process', 'process.argv']);
});

test('the rules: which edges are forbidden', () => {
  assert.match(forbidden('data/shards.ts', 'training/checkpoint.ts', false)!, /data\/ never imports training/);
  assert.match(forbidden('training/trainer.ts', 'scripts/version.ts', false)!, /nothing outside scripts/);
  assert.match(forbidden('training/models/bert.ts', 'training/backend.ts', false)!, /training\/models\/ imports only/);
  assert.match(forbidden('training/models/bert.ts', 'data/batches.ts', false)!, /training\/models\/ imports only/);
  assert.match(forbidden('training/models/bert.ts', 'webgpu', true)!, /only TF\.js/);
  assert.match(forbidden('training/kernels/matmul.ts', 'training/models/ops.ts', false)!, /training\/kernels\/ imports only/);
  assert.equal(forbidden('training/models/bert.ts', 'training/kernels/matmul.ts', false), null);
  assert.equal(forbidden('training/models/bert.ts', '@tensorflow/tfjs', true), null);
  assert.equal(forbidden('training/trainer.ts', 'data/batches.ts', false), null);
  assert.equal(forbidden('scripts/commands/train.ts', 'training/trainer.ts', false), null);
  assert.equal(forbidden('training/backend/wasm.ts', '@tensorflow/tfjs-backend-wasm', true), null);
  assert.match(forbidden('training/fill-mask.ts', 'browser.ts', false)!, /only scripts\/ imports the package entries/);
  assert.match(forbidden('index.ts', 'scripts/cli.ts', false)!, /nothing outside scripts/);
  assert.equal(forbidden('scripts/serve/page-main.ts', 'browser.ts', false), null);
  assert.equal(forbidden('index.ts', 'training/trainer.ts', false), null);
  assert.match(forbidden('common/atomic.ts', 'data/shards.ts', false)!, /common\/ imports only common/);
  assert.equal(forbidden('training/models/bert.ts', 'common/errors.ts', false), null);
  assert.equal(forbidden('training/kernels/dropout-mask.ts', 'common/rng.ts', false), null);
});

test('data/, training/ and scripts/ import along the layers (known exceptions listed above)', () => {
  assert.ok(files.length > 50, `found ${files.length} source files`);
  const { edges } = tree();
  const added = [...edges].filter(([k]) => !(k in KNOWN_EDGES)).map(([k, why]) => `${k} (${why})`);
  const gone = Object.keys(KNOWN_EDGES).filter((k) => !edges.has(k));
  assert.deepEqual(added, [], `forbidden imports: ${added.join('; ')}`);
  assert.deepEqual(gone, [], `listed as known exceptions but no longer imported: remove from KNOWN_EDGES: ${gone.join('; ')}`);
});

test('only scripts/ reads environment variables and argv (known exceptions listed above)', () => {
  const { reads } = tree();
  const added = [...reads].filter(([f]) => !(f in KNOWN_PROCESS_READS)).map(([f, how]) => `${f} (${how.join(', ')})`);
  const gone = Object.keys(KNOWN_PROCESS_READS).filter((f) => !reads.has(f));
  assert.deepEqual(added, [], `library files reading the process's environment or argv (take an option instead): ${added.join('; ')}`);
  assert.deepEqual(gone, [], `listed as known exceptions but no longer reading: remove from KNOWN_PROCESS_READS: ${gone.join('; ')}`);
});

test('the GPU bundle (scripts/gpu-bundle.sh) carries every file the runtime imports', () => {
  // Its SOURCES list names the top-level folders and files copied into the bundle's app/; a
  // relative import outside them fails only on the GPU machine, where it costs a lent session.
  const script = fs.readFileSync(path.join(root, 'scripts/gpu-bundle.sh'), 'utf8');
  const m = /^SOURCES=\(([^)]*)\)/m.exec(script);
  assert.ok(m, 'scripts/gpu-bundle.sh defines SOURCES=(...)');
  const sources = m[1]!.split(/\s+/).filter(Boolean).map((s) => s.replace(/^'|'$/g, ''));
  const carried = (p: string) => sources.some((s) => (s.endsWith('*') ? p.startsWith(s.slice(0, -1)) : p === s || p.startsWith(`${s}/`)));
  const missing = new Set<string>();
  for (const { file, text } of files) {
    if (!carried(file)) missing.add(`${file} (a source file itself)`);
    for (const spec of scan(file, text).specifiers) {
      const target = resolve(file, spec);
      if (target !== null && !carried(target)) missing.add(`${target} (imported by ${file})`);
    }
  }
  assert.deepEqual([...missing], [], `not in the bundle's SOURCES: ${[...missing].join('; ')}`);
});
