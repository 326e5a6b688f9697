// Benchmark of `mlm prepare` on a large generated corpus: text throughput (MB/s) and peak RSS of
// the prepare process. A benchmark, not a test: it prints figures. Its usage: USAGE below (--help
// prints it).
//
// --dir is a new or empty folder, or one this script made (its .mlmkit-bench-prepare file): a run
// replaces the corpus, tokenizers and prepared data it finds there under its own names, so a
// folder holding anything else is refused (exit 2).
//
// --long-line MB,...: instead, one file per size holding a single line of that many MB with no
// whitespace (`letters`: random a-z, one giant word; `mixed`: letters, digits, punctuation and
// accented letters), prepared with a tokenizer trained on 2 MB of the prose corpus; prints the
// peak RSS of each `mlm prepare` (pathological input must not blow memory up).
//
// The corpus is synthetic but shaped like prose: words drawn from a Zipf distribution over a
// generated lexicon, sentences, paragraphs separated by blank lines, spread over several .txt
// and .jsonl files. A WordPiece vocabulary of 8,000 is trained on the first 20 MB, then the whole
// corpus is prepared in a child process whose peak resident memory (VmHWM) is sampled from /proc.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Rng } from '../common/rng.ts';
import { readScriptOptions } from './script-args.ts';
import { claimFolder, type OwnFolder } from './own-folder.ts';

const USAGE = `usage: node --import tsx scripts/bench-prepare.ts [--gb 1] [--dir .bench/prepare] [--keep]
       node --import tsx scripts/bench-prepare.ts --long-line 50,500 [--family bert|roberta] [--line letters|mixed]`;

const here = path.dirname(fileURLToPath(import.meta.url));
const options = readScriptOptions(process.argv.slice(2), {
  program: 'bench-prepare',
  usage: USAGE,
  options: {
    gb: { type: 'number', default: 1 },
    dir: { type: 'string', default: path.join(here, '..', '.bench', 'prepare') },
    keep: { type: 'switch' },
    'long-line': { type: 'string' },
    family: { type: 'string', default: 'bert' },
    line: { type: 'string', default: 'letters' },
  },
});
const gb = options.gb;
const dir = path.resolve(options.dir);
const keep = options.keep;
const benchFolder: OwnFolder = {
  dir,
  marker: '.mlmkit-bench-prepare',
  names: ['corpus', 'tokenizer', 'sample.txt', 'prepared', 'long-line', 'long-line-tokenizer-bert', 'long-line-tokenizer-roberta'],
  defaultDir: path.join(here, '..', '.bench', 'prepare'),
  flag: '--dir',
  madeBy: 'This folder holds the generated corpus and outputs of mlmkit\'s scripts/bench-prepare.ts: a second run replaces them.',
};
const mlm = path.join(here, 'mlm.mjs');

function lexicon(rng: Rng, n: number): string[] {
  const onsets = ['b', 'c', 'd', 'f', 'g', 'h', 'l', 'm', 'n', 'p', 'r', 's', 't', 'v', 'st', 'tr', 'pl', 'ch', 'th', 'gr'];
  const vowels = ['a', 'e', 'i', 'o', 'u', 'ea', 'io', 'ou', 'y'];
  const codas = ['', '', 'n', 'r', 's', 't', 'l', 'm', 'ng', 'ck', 'st'];
  const words = new Set<string>();
  while (words.size < n) {
    const syll = 1 + rng.int(4);
    let w = '';
    for (let s = 0; s < syll; s++) w += onsets[rng.int(onsets.length)] + vowels[rng.int(vowels.length)] + codas[rng.int(codas.length)];
    words.add(w);
  }
  return [...words];
}

/** Writes `bytes` of text into files under dir; returns the file list. */
function generateCorpus(target: number): string[] {
  const corpusDir = path.join(dir, 'corpus');
  const stamp = path.join(corpusDir, `.complete-${target}`);
  const files = Array.from({ length: 8 }, (_, i) => path.join(corpusDir, i % 4 === 3 ? `part-${i}.jsonl` : `part-${i}.txt`));
  if (fs.existsSync(stamp)) return files;
  fs.rmSync(corpusDir, { recursive: true, force: true });
  fs.mkdirSync(corpusDir, { recursive: true });
  const rng = new Rng(2026);
  const words = lexicon(rng, 50_000);
  // Zipf(1) over ranks: cumulative weights for inverse-CDF sampling.
  const cdf = new Float64Array(words.length);
  let acc = 0;
  for (let i = 0; i < words.length; i++) cdf[i] = acc += 1 / (i + 1);
  const draw = () => {
    const u = rng.next() * acc;
    let lo = 0, hi = cdf.length - 1;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (cdf[mid] < u) lo = mid + 1; else hi = mid; }
    return words[lo];
  };
  const paragraph = () => {
    const sentences: string[] = [];
    const n = 2 + rng.int(6);
    for (let s = 0; s < n; s++) {
      const len = 6 + rng.int(18);
      const ws: string[] = [];
      for (let k = 0; k < len; k++) ws.push(draw());
      ws[0] = ws[0][0].toUpperCase() + ws[0].slice(1);
      if (rng.int(4) === 0) ws[rng.int(len)] += ',';
      sentences.push(ws.join(' ') + (rng.int(10) === 0 ? '?' : '.'));
    }
    return sentences.join(' ');
  };
  const perFile = Math.ceil(target / files.length);
  for (const file of files) {
    const fd = fs.openSync(file, 'w');
    let written = 0;
    while (written < perFile) {
      const chunk: string[] = [];
      let len = 0;
      while (len < 1 << 20) {
        const p = file.endsWith('.jsonl') ? JSON.stringify({ text: paragraph(), id: written + len }) + '\n' : paragraph() + '\n\n';
        chunk.push(p);
        len += p.length;
      }
      const buf = Buffer.from(chunk.join(''));
      fs.writeSync(fd, buf);
      written += buf.length;
    }
    fs.closeSync(fd);
    process.stderr.write(`generated ${file} (${(written / 1e6).toFixed(0)} MB)\n`);
  }
  fs.writeFileSync(stamp, '');
  return files;
}

function run(cmd: string[], sampleRss: boolean): Promise<{ seconds: number; peakRssMb: number; code: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, cmd, { stdio: ['ignore', 'inherit', 'inherit'] });
    let peakKb = 0;
    const timer = sampleRss
      ? setInterval(() => {
          try {
            const status = fs.readFileSync(`/proc/${child.pid}/status`, 'utf8');
            const m = /VmHWM:\s+(\d+) kB/.exec(status);
            if (m) peakKb = Math.max(peakKb, Number(m[1]));
          } catch { /* the process has exited */ }
        }, 100)
      : null;
    child.on('error', reject);
    child.on('exit', (code) => {
      if (timer) clearInterval(timer);
      resolve({ seconds: (performance.now() - t0) / 1000, peakRssMb: peakKb / 1024, code: code ?? 1 });
    });
  });
}

/** A file holding one line of `mb` MB without whitespace (see the header). */
function longLineFile(mb: number, kind: string): string {
  const file = path.join(dir, 'long-line', `${kind}-${mb}mb.txt`);
  if (fs.existsSync(file) && fs.statSync(file).size === Math.round(mb * 1e6)) return file;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const rng = new Rng(7);
  const mixed = Buffer.from('abcdefghijklmnopqrstuvwxyz0123456789.,;:-()\'"', 'latin1');
  const fd = fs.openSync(file, 'w');
  const block = Buffer.alloc(1 << 20);
  let left = Math.round(mb * 1e6);
  while (left > 0) {
    const n = Math.min(left, block.length);
    for (let i = 0; i < n; i++) block[i] = kind === 'letters' ? 97 + rng.int(26) : mixed[rng.int(mixed.length)];
    if (kind !== 'letters') for (let i = 0; i + 1 < n; i += 97) block.write('\u00e9', i, 'utf8'); // 2 bytes: an accented letter
    fs.writeSync(fd, block, 0, n);
    left -= n;
  }
  fs.closeSync(fd);
  return file;
}

async function longLines(sizes: number[]): Promise<void> {
  const family = options.family;
  const kind = options.line;
  // Both name files under --dir: only the listed values.
  if (family !== 'bert' && family !== 'roberta') refuse(`--family takes bert or roberta, got '${family}'`);
  if (kind !== 'letters' && kind !== 'mixed') refuse(`--line takes letters or mixed, got '${kind}'`);
  const tokDir = path.join(dir, `long-line-tokenizer-${family}`);
  if (!fs.existsSync(path.join(tokDir, 'tokenizer.json'))) {
    generateCorpusSample(path.join(dir, 'long-line', 'sample.txt'));
    const r = await run([mlm, 'tokenizer', 'train', '--corpus', path.join(dir, 'long-line', 'sample.txt'), '--family', family, '--vocab-size', '4000', '--out', tokDir, '--overwrite', '--no-progress'], false);
    if (r.code !== 0) throw new Error('tokenizer training failed');
  }
  const rows = [];
  for (const mb of sizes) {
    const file = longLineFile(mb, kind);
    const out = path.join(dir, 'long-line', 'prepared');
    const r = await run([mlm, 'prepare', '--corpus', file, '--tokenizer', tokDir, '--out', out, '--overwrite', '--no-progress', '--validation-split', '0'], true);
    if (r.code !== 0) throw new Error(`mlm prepare exited with ${r.code} on ${file}`);
    const m = JSON.parse(fs.readFileSync(path.join(out, 'manifest.json'), 'utf8'));
    rows.push({ line_mb: mb, kind, family, seconds: +r.seconds.toFixed(1), tokens: m.splits.train.tokens, peak_rss_mb: Math.round(r.peakRssMb) });
    fs.rmSync(out, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify({ rows, node: process.version }, null, 2) + '\n');
}

/** 2 MB of the generated prose (for the long-line tokenizer). */
function generateCorpusSample(file: string): void {
  if (fs.existsSync(file)) return;
  const rng = new Rng(3);
  const words = lexicon(rng, 5000);
  const parts: string[] = [];
  let len = 0;
  while (len < 2e6) {
    const p = Array.from({ length: 12 }, () => words[rng.int(words.length)]).join(' ') + '.\n';
    parts.push(p);
    len += p.length;
  }
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, parts.join(''));
}

function refuse(line: string): never {
  process.stderr.write(`bench-prepare: ${line}\n`);
  process.exit(2);
}

async function main(): Promise<void> {
  const refused = claimFolder(benchFolder);
  if (refused !== null) refuse(refused);
  if (options['long-line'] !== undefined) return longLines(options['long-line'].split(',').map(Number));
  const target = Math.round(gb * 1e9);
  const files = generateCorpus(target);
  const bytes = files.reduce((s, f) => s + fs.statSync(f).size, 0);
  const tokDir = path.join(dir, 'tokenizer');
  if (!fs.existsSync(path.join(tokDir, 'tokenizer.json'))) {
    const sample = path.join(dir, 'sample.txt');
    const fd = fs.openSync(files[0], 'r');
    const buf = Buffer.alloc(20 << 20);
    fs.readSync(fd, buf, 0, buf.length, 0);
    fs.closeSync(fd);
    fs.writeFileSync(sample, buf.subarray(0, buf.lastIndexOf('\n\n')));
    const r = await run([mlm, 'tokenizer', 'train', '--corpus', sample, '--vocab-size', '8000', '--lowercase', '--out', tokDir, '--overwrite'], false);
    if (r.code !== 0) throw new Error('tokenizer training failed');
    process.stderr.write(`trained the tokenizer on 20 MB in ${r.seconds.toFixed(1)} s\n`);
  }
  const out = path.join(dir, 'prepared');
  const r = await run([mlm, 'prepare', '--corpus', ...files, '--tokenizer', tokDir, '--out', out, '--overwrite', '--split-paragraphs'], true);
  if (r.code !== 0) throw new Error(`mlm prepare exited with ${r.code}`);
  const manifest = JSON.parse(fs.readFileSync(path.join(out, 'manifest.json'), 'utf8'));
  const tokens = manifest.splits.train.tokens + manifest.splits.validation.tokens;
  const result = {
    corpus_mb: +(bytes / 1e6).toFixed(1),
    files: files.length,
    seconds: +r.seconds.toFixed(1),
    mb_per_second: +(bytes / 1e6 / r.seconds).toFixed(1),
    tokens,
    tokens_per_second: Math.round(tokens / r.seconds),
    peak_rss_mb: Math.round(r.peakRssMb),
    node: process.version,
    cpus: (await import('node:os')).cpus().length,
  };
  process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  if (!keep) fs.rmSync(out, { recursive: true, force: true });
}

main().catch((err) => {
  process.stderr.write(`bench-prepare: ${err instanceof Error ? err.message : err}\n`);
  process.exitCode = 1;
});
