// AdamW (training/optimizer.ts) against a float64 reference of the published algorithm
// (Loshchilov & Hutter 2019, Algorithm 2, with PyTorch's torch.optim.AdamW bias correction and
// eps placement), written independently below; which names are decayed; gradient scaling
// (clipping folded in); state save/restore; no tensor left behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Tensor, Variable } from '@tensorflow/tfjs';
import { Rng } from '../../common/rng.ts';
import { selectBackend } from '../../training/backend.ts';
import * as fs from 'node:fs';
import { parseModelConfig } from '../../training/models/config.ts';
import { decayedParameters, packedGroups, parameterTable } from '../../training/models/weights.ts';
import { AdamW } from '../../training/optimizer.ts';

const quiet = { log: (_: string) => {} };

/** torch.optim.AdamW, one parameter, float64. */
function referenceAdamW(
  p: Float64Array, m: Float64Array, v: Float64Array, g: Float64Array, t: number,
  o: { lr: number; beta1: number; beta2: number; eps: number; wd: number },
): void {
  const bc1 = 1 - Math.pow(o.beta1, t);
  const bc2 = 1 - Math.pow(o.beta2, t);
  for (let i = 0; i < p.length; i++) {
    p[i] *= 1 - o.lr * o.wd; // decoupled weight decay, on the parameter before the Adam step
    m[i] = o.beta1 * m[i] + (1 - o.beta1) * g[i];
    v[i] = o.beta2 * v[i] + (1 - o.beta2) * g[i] * g[i];
    const denom = Math.sqrt(v[i]) / Math.sqrt(bc2) + o.eps;
    p[i] -= (o.lr / bc1) * (m[i] / denom);
  }
}

function normals(rng: Rng, n: number, scale: number): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = scale * Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next());
  return out;
}

function maxRelErr(got: Float32Array, want: Float64Array): number {
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i] - want[i]) / Math.max(Math.abs(want[i]), 1e-3);
    worst = Math.max(worst, err);
  }
  return worst;
}

/**
 * transformers' Trainer rule (`get_decay_parameter_names`), the oracle for the parameter table's
 * `decay`: every parameter but biases and LayerNorm weights.
 */
function hfDecays(name: string): boolean {
  return !(name.endsWith('.bias') || /(^|\.)(LayerNorm|layer_norm)\.weight$/.test(name));
}

test("the parameter table's decay flags follow transformers' rule, for BERT and RoBERTa", () => {
  for (const file of ['configs/bert-mini.json', 'configs/distilroberta-base.json']) {
    const config = parseModelConfig(JSON.parse(fs.readFileSync(new URL(`../../${file}`, import.meta.url), 'utf8')), file);
    const table = parameterTable(config);
    const decayed = decayedParameters(config);
    for (const spec of table) assert.equal(spec.decay, hfDecays(spec.name), `${file}: ${spec.name}`);
    // The model's packed query/key/value variables decay as their parts (the same rule: weight yes, bias no).
    const packed = packedGroups(config).map((g) => g.name);
    assert.deepEqual([...decayed].sort(), [...table.map((s) => s.name), ...packed].filter(hfDecays).sort());
    // Both kinds are present: Linear/embedding weights decayed, biases and LayerNorm weights not.
    assert.ok(decayed.size > 0 && decayed.size < table.length, file);
  }
});

for (const backend of ['wasm', 'cpu'] as const) {
  test(`${backend}: AdamW equals a float64 reference within 1e-6 relative over 8 steps`, async () => {
    const { tf } = await selectBackend(backend, quiet);
    const rng = new Rng(7);
    const names = ['layer.dense.weight', 'layer.dense.bias', 'layer.LayerNorm.weight', 'embeddings.weight'];
    const shapes = [[5, 3], [3], [3], [7, 3]];
    const hp = { beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0.1 };
    const ref = names.map((_, k) => {
      const n = shapes[k].reduce((a, b) => a * b, 1);
      return { p: normals(rng, n, 1), m: new Float64Array(n), v: new Float64Array(n) };
    });
    const params = new Map<string, Variable>(names.map((name, k) => [name, tf.variable(tf.tensor(Float32Array.from(ref[k].p), shapes[k]))]));
    // The reference starts from the float32-rounded parameters the optimizer sees.
    for (const r of ref) for (let i = 0; i < r.p.length; i++) r.p[i] = Math.fround(r.p[i]);
    const opt = new AdamW(tf, params, new Set(names.filter(hfDecays)), hp);
    const before = tf.memory().numTensors;
    for (let t = 1; t <= 8; t++) {
      const lr = 1e-2 * (1 - t / 10); // a changing learning rate, as under a schedule
      const scale = t % 3 === 0 ? 0.5 : 1; // clipping coefficient on some steps
      const grads = new Map<string, Tensor>();
      names.forEach((name, k) => {
        // Gradients of very different sizes, some tiny (eps matters) and some large.
        const g = normals(rng, ref[k].p.length, k === 3 ? 1e-6 : 3);
        for (let i = 0; i < g.length; i++) g[i] = Math.fround(g[i]);
        grads.set(name, tf.tensor(Float32Array.from(g), shapes[k]));
        const scaled = g.map((x) => x * scale);
        referenceAdamW(ref[k].p, ref[k].m, ref[k].v, scaled, t, { lr, beta1: hp.beta1, beta2: hp.beta2, eps: hp.epsilon, wd: hfDecays(name) ? hp.weightDecay : 0 });
      });
      opt.apply(grads, lr, scale);
      tf.dispose([...grads.values()]);
      assert.equal(tf.memory().numTensors, before, `step ${t} left tensors behind`);
      for (const [k, name] of names.entries()) {
        const got = (await params.get(name)!.data()) as Float32Array;
        const err = maxRelErr(got, ref[k].p);
        assert.ok(err < 1e-6, `${name} at step ${t}: relative error ${err}`);
      }
    }
    assert.equal(opt.step, 8);

    // The moments, saved and restored into a fresh optimizer, continue identically.
    const state = await opt.getState((_, t) => tf.transpose(t));
    assert.deepEqual(state.tensors.get('layer.dense.weight.exp_avg')!.shape, [3, 5]);
    const m = (await opt.getState()).tensors.get('layer.dense.weight.exp_avg')!.data;
    for (let i = 0; i < m.length; i++) assert.ok(Math.abs(m[i] - ref[0].m[i]) <= 1e-6 * Math.max(1, Math.abs(ref[0].m[i])), `exp_avg[${i}]`);
    const copies = new Map<string, Variable>([...params].map(([n, p]) => [n, tf.variable(p.clone())]));
    const twin = new AdamW(tf, copies, new Set(names.filter(hfDecays)), hp);
    twin.setState(state, (_, a) => tf.tidy(() => tf.transpose(tf.tensor(a.data, a.shape))));
    assert.equal(twin.step, 8);
    const g = new Map<string, Tensor>(names.map((name, k) => [name, tf.fill(shapes[k] as number[], 0.25)]));
    opt.apply(g, 1e-3);
    twin.apply(g, 1e-3);
    for (const name of names) {
      assert.deepEqual(await params.get(name)!.data(), await copies.get(name)!.data(), `${name} after restore`);
    }
    tf.dispose([...g.values()]);
    opt.dispose();
    twin.dispose();
    tf.dispose([...params.values(), ...copies.values()]);
  });
}

test('a parameter without a gradient is left alone (no decay, no moment update)', async () => {
  const { tf } = await selectBackend('wasm', quiet);
  const params = new Map<string, Variable>([['a.weight', tf.variable(tf.tensor1d([1, 2]))], ['b.weight', tf.variable(tf.tensor1d([3, 4]))]]);
  const opt = new AdamW(tf, params, new Set(params.keys()), { beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0.5 });
  const g = tf.tensor1d([1, 1]);
  opt.apply(new Map([['a.weight', g]]), 0.1);
  assert.deepEqual(Array.from(await params.get('b.weight')!.data()), [3, 4]);
  assert.notDeepEqual(Array.from(await params.get('a.weight')!.data()), [1, 2]);
  g.dispose();
  opt.dispose();
  tf.dispose([...params.values()]);
});

test('AdamW keeps exactly its two moments per parameter, and globalNorm sums many gradients', async () => {
  const { globalNorm } = await import('../../training/train-step.ts');
  const { tf } = await selectBackend('cpu', { log: () => {} });
  const params = new Map<string, Variable>();
  const rng = new Rng(5);
  let expected = 0;
  const grads = new Map<string, Tensor>();
  for (let i = 0; i < 43; i++) {
    params.set(`w${i}`, tf.variable(tf.zeros([2, 3])));
    const g = Array.from({ length: 6 }, () => rng.next() - 0.5);
    for (const x of g) expected += x * x;
    grads.set(`w${i}`, tf.tensor2d(g, [2, 3]));
  }
  const before = tf.memory().numTensors;
  const opt = new AdamW(tf, params, new Set(params.keys()));
  assert.equal(tf.memory().numTensors - before, 2 * params.size, 'no stray zeros left behind');
  // 43 gradients: more than a WebGPU shader's 16 storage buffers in one addN.
  const norm = globalNorm(tf, grads);
  assert.ok(Math.abs(norm.dataSync()[0] - Math.sqrt(expected)) < 1e-5);
  tf.dispose([norm, ...grads.values(), ...params.values()]);
  opt.dispose();
});
