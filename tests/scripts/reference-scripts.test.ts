// The Python reference scripts' own checks (scripts/reference/): attention_offsets.py on a model
// whose attention is uniform by construction reports the uniform share at every offset, padding
// excluded; both it and torch_pretrain_check.py refuse bad input with exit 2 and one line, before
// they need numpy or torch; local_attention.py (torch_pretrain_check.py --init-attention local)
// sets the same weights as training/init-attention.ts.
//
// Python: `python3` on PATH, or MLM_PYTHON. The attention test needs numpy there; .ci/run makes
// sure of both and sets MLM_REQUIRE_PYTHON=1, so that their absence fails these tests in CI
// instead of skipping them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Rng } from '../../common/rng.ts';
import { localAttention } from '../../training/init-attention.ts';
import { parseModelConfig } from '../../training/models/config.ts';
import { initialWeights } from '../../training/models/weights.ts';
import { loadSafetensorsF32, saveSafetensors, type WritableTensor } from '../../training/safetensors.ts';
import { ROOT } from '../training/train-helpers.ts';

const python = process.env.MLM_PYTHON ?? 'python3';
const required = process.env.MLM_REQUIRE_PYTHON === '1';
const has = (code: string) => spawnSync(python, ['-c', code], { encoding: 'utf8' }).status === 0;
const havePython = has('pass');
const haveNumpy = havePython && has('import numpy');
const skipPython = !havePython && !required ? `${python} not found (MLM_PYTHON picks one)` : false;
const skipNumpy = !haveNumpy && !required ? `numpy not importable by ${python}` : false;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-refscripts-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
const run = (script: string, args: string[]) =>
  spawnSync(python, [path.join(ROOT, 'scripts', 'reference', script), ...args], { cwd: ROOT, encoding: 'utf8' });

/** Exit 2 and exactly one line on stderr matching `pattern`. */
function refused(r: ReturnType<typeof run>, pattern: RegExp) {
  assert.equal(r.status, 2, `exit ${r.status}; stderr: ${r.stderr}`);
  assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
  assert.match(r.stderr.trimEnd(), pattern);
}

/**
 * A folder as `mlm prepare` writes it, as far as the scripts read one: the manifest's tokenizer
 * ids, seq_len and dtype, and a validation shard. Every row has `real` ordinary tokens, then padding.
 */
function preparedFolder(dir: string, rows: number, seqLen: number, real: number): string {
  fs.mkdirSync(dir, { recursive: true });
  const tokenizer = { vocab_size: 99, pad_token_id: 0, unk_token_id: 1, cls_token_id: 2, sep_token_id: 3, mask_token_id: 4 };
  fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify({ format: 'mlmkit-shards', version: 1, tokenizer, seq_len: seqLen, dtype: 'uint16' }));
  const ids = new Uint16Array(rows * seqLen);
  const rng = new Rng(3);
  for (let r = 0; r < rows; r++) for (let i = 0; i < real; i++) ids[r * seqLen + i] = 5 + Math.floor(rng.next() * 94);
  fs.writeFileSync(path.join(dir, 'validation-00000.bin'), ids);
  return dir;
}

test('attention_offsets.py: with query and key zeroed, every head gives every offset the uniform share of the unpadded keys', { skip: skipNumpy }, async () => {
  // The reference BERT fixture (2 layers, 4 heads, vocabulary 99) with its query and key weights
  // and biases set to zero: every score is 0, so a query spreads its attention evenly over the keys
  // that are not padding, 1/12 each here. Padding that leaked into the softmax would give 1/16.
  const model = path.join(tmp, 'uniform-model');
  fs.mkdirSync(model);
  const fixture = path.join(ROOT, 'tests', 'fixtures', 'reference', 'bert');
  fs.copyFileSync(path.join(fixture, 'config.json'), path.join(model, 'config.json'));
  const weights = await loadSafetensorsF32(path.join(fixture, 'model.safetensors'));
  const out = new Map<string, WritableTensor>();
  let zeroed = 0;
  for (const [name, t] of weights) {
    const blank = /attention\.self\.(query|key)\.(weight|bias)$/.test(name);
    zeroed += blank ? 1 : 0;
    out.set(name, { dtype: 'F32', shape: t.shape, data: blank ? new Float32Array(t.data.length) : t.data });
  }
  assert.equal(zeroed, 8, 'query and key, weight and bias, in two layers');
  await saveSafetensors(path.join(model, 'model.safetensors'), out);
  const data = preparedFolder(path.join(tmp, 'uniform-data'), 64, 16, 12);

  const r = run('attention_offsets.py', ['--model', model, '--data', data, '--rows', '64', '--json']);
  assert.equal(r.status, 0, r.stderr);
  const got = JSON.parse(r.stdout) as { rows: number; masked: number; uniform: number; heads: { layer: number; head: number; shares: Record<string, number>; entropy: number }[] };
  assert.equal(got.rows, 64);
  // 15% of 768 ordinary tokens: ~115, far from 0 at any seed.
  assert.ok(got.masked >= 60, `${got.masked} masked queries`);
  assert.ok(Math.abs(got.uniform - 1 / 12) < 1e-12, `uniform ${got.uniform}`);
  assert.equal(got.heads.length, 2 * 4);
  for (const h of got.heads) {
    for (const [offset, share] of Object.entries(h.shares)) {
      assert.ok(Math.abs(share - 1 / 12) < 1e-9, `layer ${h.layer} head ${h.head} offset ${offset}: ${share}`);
    }
    assert.ok(Math.abs(h.entropy - Math.log(12)) < 1e-9, `layer ${h.layer} head ${h.head} entropy ${h.entropy}`);
  }
});

test('attention_offsets.py: a missing model file, a folder without a manifest and --rows 0 are exit 2 with one line', { skip: skipPython }, () => {
  const data = preparedFolder(path.join(tmp, 'refuse-data'), 4, 16, 12);
  const fixture = path.join(ROOT, 'tests', 'fixtures', 'reference', 'bert');
  refused(run('attention_offsets.py', ['--model', tmp, '--data', data]),
    /^attention_offsets: .* has no config\.json: give a model folder written by `mlm export` or transformers$/);
  refused(run('attention_offsets.py', ['--model', fixture, '--data', tmp]),
    /^attention_offsets: .* has no manifest\.json: give a folder written by `mlm prepare`$/);
  refused(run('attention_offsets.py', ['--model', fixture, '--data', data, '--rows', '0']), /^attention_offsets: --rows must be at least 1, got 0$/);
});

test('torch_pretrain_check.py: an --out that exists, a folder without a manifest and --init-attention local on an odd head size are exit 2 with one line, without torch', { skip: skipPython }, () => {
  const data = preparedFolder(path.join(tmp, 'torch-data'), 4, 16, 12);
  refused(run('torch_pretrain_check.py', ['--data', data, '--out', data]), /^torch_pretrain_check: --out .* exists: give a new folder$/);
  refused(run('torch_pretrain_check.py', ['--data', tmp]),
    /^torch_pretrain_check: .* has no manifest\.json: give a folder written by `mlm prepare`$/);
  const odd = path.join(tmp, 'odd-heads.json');
  fs.writeFileSync(odd, JSON.stringify({ hidden_size: 66, num_attention_heads: 2, num_hidden_layers: 1, intermediate_size: 64, max_position_embeddings: 16 }));
  refused(run('torch_pretrain_check.py', ['--data', data, '--config', odd, '--init-attention', 'local']),
    /^torch_pretrain_check: --init-attention local needs an even head size; .*odd-heads\.json has hidden_size 66 over 2 heads$/);
});

test('local_attention.py (the PyTorch check\'s --init-attention local) sets the same position embeddings and layer 0 query and key as training/init-attention.ts', { skip: skipNumpy }, () => {
  // 6 heads of 32: four local (offsets -1, +1, -2, +2), two standard; 16 sharp pairs of 96.
  const H = 192;
  const heads = 6;
  const positions = 70;
  const config = parseModelConfig({ model_type: 'bert', vocab_size: 50, hidden_size: H, num_hidden_layers: 1, num_attention_heads: heads,
    intermediate_size: 64, max_position_embeddings: positions, initializer_range: 0.02 }, 'test');
  const { weights, plan } = localAttention(config, initialWeights(config, 42));
  const code = [
    'import json, sys, numpy as np',
    `sys.path.insert(0, ${JSON.stringify(path.join(ROOT, 'scripts', 'reference'))})`,
    'from local_attention import local_attention',
    `pos, local = local_attention(${H}, ${heads}, ${positions}, 0.02, np)`,
    'print(json.dumps({"pos": pos.ravel().tolist(), "heads": [{"offset": d, "q": q.ravel().tolist(), "k": k.ravel().tolist()} for d, q, k in local]}))',
  ].join('\n');
  const r = spawnSync(python, ['-c', code], { encoding: 'utf8', maxBuffer: 64 << 20 });
  assert.equal(r.status, 0, r.stderr);
  const py = JSON.parse(r.stdout) as { pos: number[]; heads: { offset: number; q: number[]; k: number[] }[] };
  const close = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) <= 1e-6 * Math.max(1, Math.abs(b)), `${what}: ${a} (TypeScript) vs ${b} (Python)`);
  const pos = weights.tensors.get('bert.embeddings.position_embeddings.weight')!.data;
  assert.equal(py.pos.length, pos.length);
  py.pos.forEach((v, i) => close(pos[i], v, `position embedding ${i}`));
  assert.deepEqual(py.heads.map((h) => h.offset), plan.offsets);
  const dh = H / heads;
  const query = weights.tensors.get('bert.encoder.layer.0.attention.self.query.weight')!.data; // [in, out]
  const key = weights.tensors.get('bert.encoder.layer.0.attention.self.key.weight')!.data;
  py.heads.forEach((h, head) => {
    // Python: [head_size out, hidden in] as nn.Linear; mlmkit: [hidden in, hidden out].
    for (let o = 0; o < dh; o++) {
      for (let i = 0; i < H; i++) {
        close(query[i * H + head * dh + o], h.q[o * H + i], `head ${head} query (${o}, ${i})`);
        close(key[i * H + head * dh + o], h.k[o * H + i], `head ${head} key (${o}, ${i})`);
      }
    }
  });
});
