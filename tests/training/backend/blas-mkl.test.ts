// Tests for how training/backend/blas.ts opens Intel MKL's single library (mkl_rt), whose integer
// width is chosen at its first call: LP64 unless MKL_INTERFACE_LAYER=ILP64, and
// MKL_Set_Interface_Layer decides when it comes first. No real MKL can be installed on the
// development machine or in CI, so the library is a stand-in compiled here from
// tests/fixtures/blas/mkl-standin.c, which follows that rule and reads its dimensions at the width
// in force (a misread width gives NaN or wrong products). Checked:
//   - mlmkit asks for LP64 before any other call, so MKL_INTERFACE_LAYER=ILP64 in the environment
//     does not change the width it calls with;
//   - an MKL that something else in the process already set to ILP64 is called with 64-bit
//     integers (on this thread and in what the worker threads are told), and its name says so;
//   - the products equal float64 sums at either width, every transpose flag, odd shapes.
// Skipped, saying why, where no C compiler is found (CI installs clang).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { Rng } from '../../../common/rng.ts';
import { openBlas, type Blas } from '../../../training/backend/blas.ts';
import { float64Product } from './blas-helpers.ts';

const source = path.join(import.meta.dirname, '..', '..', 'fixtures', 'blas', 'mkl-standin.c');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-mkl-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const compiler = ['cc', 'clang', 'gcc'].find((c) => spawnSync(c, ['--version']).status === 0);
const skip = process.platform !== 'linux' ? 'Linux only' : compiler === undefined ? 'no C compiler (cc, clang or gcc) to build the MKL stand-in' : false;

let built = 0;
/** A fresh copy of the stand-in (each a library of its own: its width is fixed once per load). */
function standin(): string {
  const file = path.join(tmp, `libmkl_rt-standin-${++built}.so`);
  const r = spawnSync(compiler!, ['-shared', '-fPIC', '-O1', '-o', file, source, '-lm'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return file;
}

/** The stand-in's own record: how often MKL_Set_Interface_Layer was called, and the width in force. */
function record(file: string): { setCalls: number; layer: number } {
  const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
  const lib = koffi.load(file);
  return { setCalls: lib.func('int standin_set_calls()')() as number, layer: lib.func('int standin_layer()')() as number };
}

/** Opens a new stand-in with `env` set in the process environment while it loads. */
function openWith(env: Record<string, string>): { blas: Blas; file: string } {
  const file = standin();
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  Object.assign(process.env, env);
  try {
    const r = openBlas({ library: file, threads: 1 });
    assert.ok(r.blas !== null, r.blas === null ? r.reason : '');
    return { blas: r.blas, file };
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

function assertProducts(blas: Blas): void {
  const rng = new Rng(11);
  for (const [M, N, K] of [[1, 1, 1], [7, 13, 5], [33, 17, 65]] as const) {
    for (const ta of [false, true]) {
      for (const tb of [false, true]) {
        const a = Float32Array.from({ length: M * K }, () => rng.next() * 2 - 1);
        const b = Float32Array.from({ length: K * N }, () => rng.next() * 2 - 1);
        const got = new Float32Array(M * N).fill(Number.NaN);
        blas.sgemm(ta, tb, M, N, K, 1, a, ta ? M : K, b, tb ? K : N, 0, got, N);
        const { sum, abs } = float64Product(ta, tb, M, N, K, a, b);
        for (let e = 0; e < M * N; e++) {
          assert.ok(Math.abs(got[e]! - sum[e]!) <= 1e-6 * abs[e]! + 1e-30, `${blas.name} ${M}x${N}x${K} ta=${ta} tb=${tb} [${e}]: ${got[e]} vs ${sum[e]}`);
        }
      }
    }
  }
}

test('MKL is asked for LP64 before any other call: MKL_INTERFACE_LAYER=ILP64 in the environment does not change the width mlmkit calls with', { skip }, () => {
  for (const env of [{}, { MKL_INTERFACE_LAYER: 'ILP64' }] as Record<string, string>[]) {
    const { blas, file } = openWith(env);
    assert.equal(blas.name, 'oneMKL 2099.0 stand-in', JSON.stringify(env));
    assert.equal(blas.worker.int, 'int');
    assert.deepEqual(record(file), { setCalls: 1, layer: 0 });
    assertProducts(blas);
  }
});

test('an MKL already set to ILP64 by an earlier call is called with 64-bit integers, here and in the workers, and named so', { skip }, () => {
  const { blas, file } = openWith({ MKL_INTERFACE_LAYER: 'ILP64', STANDIN_CALLED_BEFORE: '1' });
  assert.equal(blas.name, 'oneMKL 2099.0 stand-in ILP64');
  assert.equal(blas.worker.int, 'int64_t');
  assert.equal(blas.worker.suffix, '');
  assert.deepEqual(record(file), { setCalls: 1, layer: 1 });
  assertProducts(blas);
});
