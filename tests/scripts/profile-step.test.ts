// Tests for scripts/profile-step.ts on wasm (bert-tiny, batch 2 x 16, --json): the kernel table
// lists kernels only (tf.profile also lists the op scopes around them, "unnamed scope" and
// "fusedMatMul__op", whose time is their kernels' and was counted twice), and the matrix products'
// FLOPs are counted for _FusedMatMul too (its inputs carry the bias, and it counted 0).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readConfigArgument } from '../../training/checkpoint.ts';
import { ROOT } from '../training/tiny-checkpoint.ts';

test('profile-step on wasm: kernels only in the table; _FusedMatMul calls carry their FLOPs', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-profile-'));
  try {
    const json = path.join(dir, 'profile.json');
    const args = ['--import', 'tsx', path.join(ROOT, 'scripts/profile-step.ts'), '--config', 'bert-tiny', '--backend', 'wasm',
      '--batch-size', '2', '--seq-len', '16', '--shapes', '_FusedMatMul', '--json', json];
    const r = await new Promise<{ code: number; stderr: string }>((resolve) => {
      execFile(process.execPath, args, { cwd: ROOT, timeout: 120_000 }, (err, _stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stderr }));
    });
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(fs.readFileSync(json, 'utf8')) as {
      profiled: { by_kernel: { name: string; calls: number }[] };
      calls: { name: string; inputs: (number[] | null)[]; output: number[]; flops: number }[];
    };
    const names = doc.profiled.by_kernel.map((e) => e.name);
    assert.ok(names.includes('BatchMatMul') && names.includes('_FusedMatMul'), names.join(', '));
    for (const name of names) assert.doesNotMatch(name, /scope|__op$/, `${name}: an op scope, not a kernel`);

    const { hidden_size: H, vocab_size: V } = readConfigArgument(path.join(ROOT, 'configs/bert-tiny.json'));
    assert.ok(doc.calls.length > 0 && doc.calls.every((c) => c.name === '_FusedMatMul'));
    for (const c of doc.calls) assert.ok(c.flops > 0, `${JSON.stringify(c.inputs)} -> ${JSON.stringify(c.output)}: ${c.flops} FLOPs`);
    // The tied decoder at the masked rows: [rows, H] x [V, H]^T + bias.
    const decoder = doc.calls.find((c) => c.output[c.output.length - 1] === V);
    assert.ok(decoder !== undefined, 'the decoder product is a _FusedMatMul');
    const rows = decoder.output[decoder.output.length - 2]!;
    assert.equal(decoder.flops, 2 * rows * V * H);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
