// Tests for scripts/bench-torch.py (the PyTorch peer), where a python with torch is installed
// (skipped otherwise): several runs share one process, and one that raises is reported on stderr
// while the runs after it still print their JSON lines; the exit status is then 1.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ROOT } from '../training/tiny-checkpoint.ts';

const python = [process.env.MLM_PYTHON, 'python3', '/usr/bin/python3', 'python']
  .find((p) => p !== undefined && p !== '' && spawnSync(p, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0);

test('bench-torch.py: a run that raises does not stop the runs after it', { skip: python === undefined && 'no python with torch' }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-torch-test-'));
  try {
    const tiny = JSON.parse(fs.readFileSync(path.join(ROOT, 'configs/bert-tiny.json'), 'utf8'));
    // 3 heads do not divide hidden_size 128: building the model raises.
    const bad = path.join(dir, 'bad-heads.json');
    fs.writeFileSync(bad, JSON.stringify({ ...tiny, num_attention_heads: 3 }));
    const r = spawnSync(python!, ['scripts/bench-torch.py', '--config', bad, 'configs/bert-tiny.json', '--batch-size', '2', '--seq-len', '16', '--steps', '1',
      '--warmup-steps', '1', '--eval-steps', '1', '--threads', '1', '--json'], { cwd: ROOT, encoding: 'utf8', timeout: 180_000 });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /^bench-torch: .*bad-heads\.json fp32 failed: \w+: /m);
    const lines = r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { config: string; precision: string; train_tokens_per_second: number });
    assert.deepEqual(lines.map((l) => [l.config, l.precision]), [['configs/bert-tiny.json', 'fp32']]);
    assert.ok(lines[0].train_tokens_per_second > 0);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
