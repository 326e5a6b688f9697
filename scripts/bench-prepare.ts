// Benchmark of `mlm prepare` on a large generated corpus: text throughput (MB/s) and peak RSS of
// the prepare process. A benchmark, not a test: it prints figures.
//
//   node --import tsx scripts/bench-prepare.ts [--gb 1] [--dir .bench/prepare] [--keep]
//
// The corpus is synthetic but shaped like prose: words drawn from a Zipf distribution over a
// generated lexicon, sentences, paragraphs separated by blank lines, spread over several .txt
// and .jsonl files. A WordPiece vocabulary of 8,000 is trained on the first 20 MB, then the whole
// corpus is prepared in a child process whose peak resident memory (VmHWM) is sampled from /proc.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Rng } from '../data/rng.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const opt = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const gb = Number(opt('gb', '1'));
const dir = path.resolve(opt('dir', path.join(here, '..', '.bench', 'prepare')));
const keep = args.includes('--keep');
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

async function main(): Promise<void> {
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
