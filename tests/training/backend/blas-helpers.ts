// What the BLAS tests share: the library found here (2 threads), the skip reason when there is
// none (not under MLM_REQUIRE_BLAS=1, CI, where the tests then fail), and a Blas that counts its
// sgemm calls, the idle-CPU measure of OpenBLAS's threads, and a batch of products as the worker
// threads' BLAS job describes it (simd-pool.ts), a product's float64 reference, and the loss and
// gradients of a tiny BERT to compare between matmul libraries.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Tensor2D } from '@tensorflow/tfjs';
import { Rng } from '../../../common/rng.ts';
import type { Tf } from '../../../training/backend.ts';
import { openBlas, type Blas } from '../../../training/backend/blas.ts';
import { createBert, IGNORE_INDEX, type MlmInputs } from '../../../training/models/bert.ts';
import { parseModelConfig, type ModelConfig } from '../../../training/models/config.ts';

export const found = openBlas({ threads: 2 });
export const skip = found.blas !== null || process.env.MLM_REQUIRE_BLAS === '1' ? false : `no BLAS library: ${found.reason}`;

/** The library, failing with the search's reason when there is none. */
export function library(): Blas {
  assert.ok(found.blas !== null, found.blas === null ? found.reason : '');
  return found.blas;
}

/** A Blas that counts its sgemm calls (made on the calling thread). */
export function counting(blas: Blas): Blas & { calls: number } {
  const c = {
    calls: 0,
    get name() { return blas.name; },
    get path() { return blas.path; },
    get threads() { return blas.threads; },
    get worker() { return blas.worker; },
    setThreads: (n: number) => blas.setThreads(n),
    sgemm(...args: Parameters<Blas['sgemm']>) {
      c.calls++;
      blas.sgemm(...args);
    },
  };
  return c;
}

/**
 * One 512^3 product on two library threads, then the CPU time (ms) the whole process uses while
 * this thread waits 80 ms: OpenBLAS threads that poll for work burn a core for ~0.1 s after a
 * call (sched_yield in a loop); asleep, next to none. `first` is the product's first entry (32).
 */
export function idleCpuAfterProduct(blas: Blas): { first: number; ms: number } {
  blas.setThreads(2);
  const n = 512;
  const x = new Float32Array(n * n).fill(0.25);
  const y = new Float32Array(n * n);
  blas.sgemm(false, false, n, n, n, 1, x, n, x, n, 0, y, n);
  const since = process.cpuUsage();
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 80);
  const used = process.cpuUsage(since);
  return { first: y[0]!, ms: (used.user + used.system) / 1000 };
}

/** One batch on `heap`: the job's numbers as matmul-blas.ts writes them, and its slices run here. */
export function batchJob(blas: Blas, heap: ArrayBufferLike, d: { ta: boolean; tb: boolean; M: number; N: number; K: number; a: number; aStep: number; b: number; bStep: number; c: number }) {
  const { ta, tb, M, N, K } = d;
  const lda = ta ? M : K;
  const ldb = tb ? K : N;
  const cStep = M * N * 4;
  const job = [Number(ta), Number(tb), M, N, K, lda, ldb, d.a, d.aStep, d.b, d.bStep, d.c, cStep];
  let own = 0;
  const run = (lo: number, hi: number) => {
    for (let i = lo; i < hi; i++) {
      own++;
      blas.sgemm(ta, tb, M, N, K, 1, new Float32Array(heap, d.a + i * d.aStep, M * K), lda, new Float32Array(heap, d.b + i * d.bStep, K * N), ldb, 0, new Float32Array(heap, d.c + i * cStep, M * N), N);
    }
  };
  return { job, run, ownSlices: () => own };
}

/**
 * The float64 sums of op(a) op(b) (row-major, m x n, stored transposed where the flag says, as
 * Blas.sgemm takes them) and, per entry, the sum of the products' magnitudes, the scale of the
 * rounding a float32 result may carry.
 */
export function float64Product(ta: boolean, tb: boolean, M: number, N: number, K: number, a: Float32Array, b: Float32Array): { sum: Float64Array; abs: Float64Array } {
  const sum = new Float64Array(M * N);
  const abs = new Float64Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = 0;
      let m = 0;
      for (let k = 0; k < K; k++) {
        const p = (ta ? a[k * M + i]! : a[i * K + k]!) * (tb ? b[j * K + k]! : b[k * N + j]!);
        s += p;
        m += Math.abs(p);
      }
      sum[i * N + j] = s;
      abs[i * N + j] = m;
    }
  }
  return { sum, abs };
}

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/** The tiny BERT of tests/fixtures/reference/bert. */
export function tinyBertConfig(): ModelConfig {
  return parseModelConfig(JSON.parse(readFileSync(path.join(ROOT, 'tests/fixtures/reference/bert/config.json'), 'utf8')), 'tiny bert');
}

/**
 * A tiny BERT (weights from `seed`) and a batch of `batch` x `seqLen` random ids, 30% of them
 * labelled; `gradients()` runs one training pass (dropout from `dropoutSeed`) with whatever matmul
 * library the backend has at that moment and returns every gradient and the loss ('loss') as
 * Float32Arrays, leaving no tensors behind.
 */
export function tinyBertGradients(tf: Tf, config: ModelConfig, o: { seed: number; dataSeed: number; dropoutSeed: number; batch: number; seqLen: number }) {
  const rng = new Rng(o.dataSeed);
  const ids = Array.from({ length: o.batch * o.seqLen }, () => 1 + rng.int(config.vocab_size - 1));
  const labels = Int32Array.from(ids, (id) => (rng.next() < 0.3 ? id : IGNORE_INDEX));
  const inputs: MlmInputs = {
    inputIds: tf.tensor2d(ids, [o.batch, o.seqLen], 'int32') as Tensor2D,
    attentionMask: tf.ones([o.batch, o.seqLen], 'int32') as Tensor2D,
  };
  const model = createBert(tf, config, { seed: o.seed });
  return {
    gradients(): Map<string, Float32Array> {
      const { value, grads } = tf.variableGrads(() => model.maskedLoss(inputs, labels, { training: true, dropoutSeed: o.dropoutSeed }).loss);
      const out = new Map(Object.entries(grads).map(([k, g]) => [k, g.dataSync() as Float32Array]));
      out.set('loss', value.dataSync() as Float32Array);
      tf.dispose([value, ...Object.values(grads)]);
      return out;
    },
    dispose(): void {
      tf.dispose([inputs.inputIds, inputs.attentionMask]);
      model.dispose();
    },
  };
}

/**
 * Per tensor, the largest difference between `got` and `want` relative to the tensor's largest
 * value in `want`, floored at 1e-2: some gradients are zero in exact arithmetic (a key bias shifts
 * all of a query's scores alike) and hold only rounding noise.
 */
export function gradientDifferences(got: Map<string, Float32Array>, want: Map<string, Float32Array>): Map<string, number> {
  assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort(), 'the same tensors');
  const out = new Map<string, number>();
  for (const [k, w] of want) {
    const g = got.get(k)!;
    const scale = Math.max(1e-2, ...Array.from(w, Math.abs));
    let diff = 0;
    for (let i = 0; i < w.length; i++) diff = Math.max(diff, Math.abs(g[i]! - w[i]!));
    out.set(k, diff / scale);
  }
  return out;
}
