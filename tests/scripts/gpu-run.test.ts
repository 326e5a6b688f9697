// Tests for scripts/gpu-run.sh on a stand-in bundle (bundle.json, this checkout as app/, this
// Node.js as node/bin/node), on a machine whose WebGPU adapter is missing or a software one: the
// probe's failure skips the WebGPU stages but not the rest (PyTorch when a python with torch is
// found, the CPU peer), the summary is written, and the exit status is the probe's (3 or 4).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ROOT } from '../training/tiny-checkpoint.ts';

const hasTarXz = spawnSync('sh', ['-c', 'command -v xz && command -v tar'], { encoding: 'utf8' }).status === 0;

test('gpu-run.sh without a usable WebGPU adapter: the other stages run, the summary is written, exit 3 or 4', { skip: !hasTarXz && 'needs tar and xz' }, () => {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'gpu-run-test-'));
  try {
    const b = path.join(base, 'gpu-bundle');
    fs.mkdirSync(path.join(b, 'node', 'bin'), { recursive: true });
    fs.symlinkSync(process.execPath, path.join(b, 'node', 'bin', 'node'));
    fs.symlinkSync(ROOT, path.join(b, 'app'));
    fs.writeFileSync(path.join(b, 'bundle.json'), '{"format": "mlmkit-gpu-bundle/1"}\n');
    const tarball = path.join(base, 'bundle.tar.xz');
    assert.equal(spawnSync('tar', ['-C', base, '-cJf', tarball, 'gpu-bundle']).status, 0);
    const out = path.join(base, 'out');
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env.OUT;
    // --time-limit 30: the CPU peer stage gets too little time for a config and skips them.
    const r = spawnSync('bash', [path.join(ROOT, 'scripts/gpu-run.sh'), tarball, '--quick', '--out', out, '--time-limit', '30'], { cwd: ROOT, env, encoding: 'utf8', timeout: 240_000 });
    assert.ok(r.status === 3 || r.status === 4, `exit ${r.status}: ${r.stdout.slice(-2000)}`);
    assert.match(r.stdout, /skipping the WebGPU stages/);
    assert.doesNotMatch(r.stdout, /=== mlm bench|=== scripts\/check-fp16|=== scripts\/profile-step|=== mlm train/);
    assert.match(r.stdout, /=== scripts\/cpu-peer\.sh/);
    const summary = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8')) as { problems: string[] };
    assert.ok(summary.problems.some((p) => /^WebGPU: .*the WebGPU stages were skipped$/.test(p)), summary.problems.join('\n'));
    assert.ok(fs.existsSync(path.join(out, 'summary.md')) && fs.existsSync(path.join(out, 'results.tar.gz')));
  } finally {
    fs.rmSync(base, { recursive: true, force: true });
  }
});
