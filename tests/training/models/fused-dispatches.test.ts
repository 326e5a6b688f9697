// The encoder on webgpu runs mlmkit's fused kernels (training/kernels/: attention softmax, the
// residual LayerNorm, masked cross-entropy), and they cut the step's GPU dispatches. One training
// forward and backward of bert-tiny (vocabulary cut to 1,000, batch 4 x 33 with padded rows,
// dropout on), counted twice in one process: with the backend's capabilities, and with the same
// capabilities less these kernels (the reference composites). Asserted: each kernel program runs
// as often as the model's structure says (per layer: one attention softmax forward and one
// backward, two residual LayerNorm forwards and two backwards, and no separate bias + dropout +
// residual; one cross-entropy forward and one backward), the loss agrees within 1e-5 relative,
// and the fused run needs fewer dispatches. The counts are printed as diagnostics (they depend on
// TF.js's own kernels). Dispatches are counted by wrapping the backend's `recordAndSubmit`, which
// encodes each TF.js program's one dispatch, and the raw seam's `dispatch` (by pipeline label).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { MlmBatch } from '../../../data/masking.ts';
import { Rng } from '../../../common/rng.ts';
import { selectBackend } from '../../../training/backend.ts';
import { rawWebGpu } from '../../../training/backend/webgpu/raw.ts';
import { parseModelConfig, updateModelConfig } from '../../../training/models/config.ts';
import { createMaskedLM } from '../../../training/models/roberta.ts';
import { computeGradients } from '../../../training/train-step.ts';
import { webgpuSkip } from '../kernels/kernel-helpers.ts';
import { ROOT } from '../train-helpers.ts';

const MINE = [
  'MlmkitAttentionSoftmax',
  'MlmkitAttentionSoftmaxGrad',
  'MlmkitMaskedCrossEntropy',
  'MlmkitMaskedCrossEntropyGrad',
  'MlmkitBiasDropoutResidual',
  'MlmkitBiasDropoutResidualGrad',
  'MlmkitBiasDropoutResidualGradSum',
  'MlmkitResidualLayerNorm',
  'MlmkitResidualLayerNormGrad',
];

function batchOf(B: number, T: number, vocab: number): MlmBatch {
  const rng = new Rng(17);
  const n = B * T;
  const b: MlmBatch = { batchSize: B, seqLen: T, inputIds: new Int32Array(n), attentionMask: new Int32Array(n), tokenTypeIds: new Int32Array(n), labels: new Int32Array(n).fill(-100) };
  for (let r = 0; r < B; r++) {
    for (let t = 0; t < T; t++) {
      const i = r * T + t;
      const real = t < T - 5 * r; // rows of 33, 28, 23, 18 real tokens
      b.attentionMask[i] = real ? 1 : 0;
      b.inputIds[i] = real ? 5 + Math.floor(rng.next() * (vocab - 5)) : 0;
      if (real && (t % 4 === 1 || t === 0)) b.labels[i] = 5 + Math.floor(rng.next() * (vocab - 5));
    }
  }
  return b;
}

test('webgpu: a bert-tiny training pass runs the fused kernels, with fewer dispatches than the reference composites', { skip: await webgpuSkip() }, async (t) => {
  const sel = await selectBackend('webgpu', { log: () => {} });
  const tf = sel.tf;
  try {
    for (const k of MINE) assert.ok(sel.capabilities.kernels.has(k), `webgpu registers ${k}`);
    const file = path.join(ROOT, 'configs/bert-tiny.json');
    const config = updateModelConfig(parseModelConfig(JSON.parse(fs.readFileSync(file, 'utf8')), file), { vocab_size: 1000 }, file);
    const batch = batchOf(4, 33, 1000);
    const backend = tf.backend() as unknown as { recordAndSubmit: (program: { constructor: { name: string } }, ...rest: unknown[]) => unknown };
    const original = backend.recordAndSubmit;
    const raw = rawWebGpu(tf);
    const rawDispatch = raw.dispatch;
    const run = async (withKernels: boolean) => {
      const kernels = new Set([...sel.capabilities.kernels].filter((k) => withKernels || !MINE.includes(k)));
      const model = createMaskedLM(tf, config, { seed: 3, capabilities: { ...sel.capabilities, kernels } });
      const programs = new Map<string, number>();
      let total = 0;
      const count = (name: string) => {
        total++;
        programs.set(name, (programs.get(name) ?? 0) + 1);
      };
      backend.recordAndSubmit = function (this: unknown, program, ...rest) {
        count(program.constructor.name);
        return original.call(this, program, ...rest);
      };
      raw.dispatch = function (this: typeof raw, pipeline, ...rest) {
        count(pipeline.label);
        return rawDispatch.call(this, pipeline, ...rest);
      };
      try {
        const g = computeGradients(tf, model, [batch], { training: true, dropoutSeeds: [5] });
        const loss = (await g.loss.data())[0];
        tf.dispose([g.loss, ...g.grads.values()]);
        return { total, programs, loss };
      } finally {
        backend.recordAndSubmit = original;
        raw.dispatch = rawDispatch;
        model.dispose();
      }
    };
    const reference = await run(false);
    const fused = await run(true);
    const L = config.num_hidden_layers;
    t.diagnostic(`dispatches of one forward + backward: ${fused.total} fused, ${reference.total} reference composites`);
    assert.equal(fused.programs.get('AttentionSoftmaxProgram'), 2 * L, 'attention softmax: a forward and a backward per layer');
    // Both residual branches end in the fused residual LayerNorm: one dispatch forward, and (132
    // rows: nine blocks) the backward's two.
    assert.equal(fused.programs.get('mlmkit-residual-layer-norm'), 2 * L, 'residual LayerNorm: two forwards per layer');
    assert.equal(fused.programs.get('mlmkit-residual-layer-norm-grad'), 2 * L, 'residual LayerNorm: two backwards per layer');
    assert.equal(fused.programs.get('mlmkit-column-sums/layer-norm-partials/3'), 2 * L, 'residual LayerNorm: the partial rows summed once per backward');
    assert.equal(fused.programs.get('BiasDropoutResidualProgram'), undefined, 'no separate bias + dropout + residual');
    assert.equal(fused.programs.get('CrossEntropyProgram'), 2, 'cross-entropy: one forward, one backward');
    for (const name of ['AttentionSoftmaxProgram', 'mlmkit-residual-layer-norm', 'mlmkit-residual-layer-norm-grad', 'CrossEntropyProgram']) {
      assert.equal(reference.programs.get(name), undefined, `the reference run uses no ${name}`);
    }
    assert.ok(Math.abs(fused.loss - reference.loss) <= 1e-5 * Math.abs(reference.loss), `loss ${fused.loss} against ${reference.loss}`);
    assert.ok(fused.total < reference.total, `fused ${fused.total} < reference ${reference.total}`);
  } finally {
    await selectBackend('cpu', { log: () => {} });
  }
});
