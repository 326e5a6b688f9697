// Tests for training/checkpoint.ts: writeModelFolder + loadModelFolder round trip (bit-identical),
// the files and config.json written, atomic replacement, sharded checkpoints, vocabulary checks,
// and the one-line InputErrors for folders mlmkit cannot read.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { InputError } from '../../common/errors.ts';
import { hfWeightsOf, loadModelFolder, writeModelFolder } from '../../training/checkpoint.ts';
import { modelConfigToJson } from '../../training/models/config.ts';
import { initialWeights, parameterTable } from '../../training/models/weights.ts';
import { openSafetensors, saveSafetensors } from '../../training/safetensors.ts';
import { makeTinyCheckpoint, sameBits, tinyConfig, tinyTokenizer } from './tiny-checkpoint.ts';

let tmp: string;
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mlmkit-ckpt-test-'));
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

async function rejectsInput(p: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof InputError, `expected an InputError, got ${String(err)}`);
    assert.match(err.message, pattern);
    assert.ok(!err.message.includes('\n'), 'one line');
    return true;
  });
}

describe('writeModelFolder + loadModelFolder', () => {
  for (const family of ['bert', 'roberta'] as const) {
    test(`${family}: round trip is bit-identical and writes the save_pretrained files`, async () => {
      const dir = path.join(tmp, `rt-${family}`);
      const ck = await makeTinyCheckpoint(dir, family, { seed: 7 });
      const files = fs.readdirSync(dir).sort();
      const expected = ['config.json', 'model.safetensors', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json',
        ...(family === 'bert' ? ['vocab.txt'] : ['merges.txt', 'vocab.json'])].sort();
      assert.deepEqual(files, expected);
      // No temporary siblings left behind.
      assert.deepEqual(fs.readdirSync(tmp).filter((n) => n.startsWith('.')), []);

      const text = fs.readFileSync(path.join(dir, 'config.json'), 'utf8');
      const json = JSON.parse(text);
      assert.deepEqual(json.architectures, [family === 'bert' ? 'BertForMaskedLM' : 'RobertaForMaskedLM']);
      assert.equal(json.model_type, family);
      assert.equal(json.torch_dtype, 'float32');
      assert.equal(json.transformers_version, undefined);
      assert.deepEqual(Object.keys(json), Object.keys(json).sort(), 'sorted keys');
      assert.ok(text.endsWith('}\n') && text.startsWith('{\n  "'), 'indent 2 and a final newline');

      const st = openSafetensors(path.join(dir, 'model.safetensors'));
      assert.deepEqual(st.metadata, { format: 'pt' });
      assert.deepEqual(st.keys(), [...ck.hf.keys()].sort());
      for (const name of st.keys()) assert.equal(st.info(name).dtype, 'F32');
      st.close();

      const loaded = await loadModelFolder(dir);
      assert.equal(loaded.source, dir);
      assert.equal(loaded.revision, null);
      const { torch_dtype: _dtype, ...readBack } = modelConfigToJson(loaded.config);
      assert.equal(_dtype, 'float32');
      assert.deepEqual(readBack, modelConfigToJson(ck.config));
      assert.equal(loaded.tokenizer.sha256, ck.tokenizer.sha256);
      const init = initialWeights(ck.config, 7);
      for (const [name, t] of init.tensors) {
        const got = loaded.weights.tensors.get(name)!;
        assert.deepEqual(got.shape, t.shape, name);
        assert.ok(sameBits(got.data, t.data), `${name} differs`);
      }
      // And back out: the HF tensors equal what was written.
      const again = await hfWeightsOf(loaded.config, loaded.weights);
      for (const [name, t] of ck.hf) assert.ok(sameBits(again.get(name)!.data, t.data), name);
    });
  }

  test('replaces an existing folder only when the new one is complete; extra adds files', async () => {
    const dir = path.join(tmp, 'replace');
    const ck = await makeTinyCheckpoint(dir, 'bert', { seed: 1 });
    fs.writeFileSync(path.join(dir, 'stale.txt'), 'old');
    // A failing extra leaves the old folder as it was.
    await assert.rejects(
      writeModelFolder(dir, { config: ck.config, weights: ck.hf, tokenizer: ck.tokenizer, extra: async () => { throw new Error('boom'); } }),
      /boom/,
    );
    assert.ok(fs.existsSync(path.join(dir, 'stale.txt')));
    assert.deepEqual(fs.readdirSync(tmp).filter((n) => n.startsWith('.')), []);

    const hf2 = await hfWeightsOf(ck.config, initialWeights(ck.config, 2));
    await writeModelFolder(dir, {
      config: ck.config,
      weights: hf2,
      tokenizer: ck.tokenizer,
      extra: async (t) => {
        fs.writeFileSync(path.join(t, 'trainer_state.json'), '{"step": 3}\n');
        await saveSafetensors(path.join(t, 'optimizer.safetensors'), { m: { dtype: 'F32', shape: [1], data: new Float32Array([1]) } });
      },
    });
    assert.ok(!fs.existsSync(path.join(dir, 'stale.txt')));
    assert.ok(fs.existsSync(path.join(dir, 'trainer_state.json')));
    assert.ok(fs.existsSync(path.join(dir, 'optimizer.safetensors')));
    assert.deepEqual(fs.readdirSync(tmp).filter((n) => n.startsWith('.')), []);
    const loaded = await loadModelFolder(dir);
    const name = 'bert.embeddings.word_embeddings.weight';
    assert.ok(sameBits(loaded.weights.tensors.get(name)!.data, initialWeights(ck.config, 2).tensors.get(name)!.data));
  });

  test('refuses weights that do not match the config (a programming error)', async () => {
    const tok = await tinyTokenizer('bert');
    const config = tinyConfig('bert', tok);
    const hf = await hfWeightsOf(config, initialWeights(config, 1));
    hf.delete('cls.predictions.bias');
    await assert.rejects(writeModelFolder(path.join(tmp, 'bad'), { config, weights: hf, tokenizer: tok }), /lack cls\.predictions\.bias/);
    assert.ok(!fs.existsSync(path.join(tmp, 'bad')));
  });

  test('reads a sharded checkpoint (model.safetensors.index.json)', async () => {
    const dir = path.join(tmp, 'sharded');
    const ck = await makeTinyCheckpoint(dir, 'bert', { seed: 3 });
    fs.rmSync(path.join(dir, 'model.safetensors'));
    const names = [...ck.hf.keys()].sort();
    const half = Math.ceil(names.length / 2);
    const weightMap: Record<string, string> = {};
    for (const [i, part] of [names.slice(0, half), names.slice(half)].entries()) {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      const tensors = new Map(part.map((n) => [n, { dtype: 'F32' as const, shape: ck.hf.get(n)!.shape, data: ck.hf.get(n)!.data }]));
      await saveSafetensors(path.join(dir, file), tensors);
      for (const n of part) weightMap[n] = file;
    }
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }));
    const loaded = await loadModelFolder(dir, { source: 'org/sharded', revision: 'abc' });
    assert.equal(loaded.source, 'org/sharded');
    assert.equal(loaded.revision, 'abc');
    const init = initialWeights(ck.config, 3);
    for (const [name, t] of init.tensors) assert.ok(sameBits(loaded.weights.tensors.get(name)!.data, t.data), name);
  });

  test('accepts a tokenizer smaller than vocab_size (padded embeddings), refuses a larger one', async () => {
    const padded = path.join(tmp, 'padded');
    const ck = await makeTinyCheckpoint(padded, 'bert', { padVocab: 8 });
    const loaded = await loadModelFolder(padded);
    assert.equal(loaded.config.vocab_size, ck.tokenizer.vocabSize + 8);

    // A config claiming fewer rows than the tokenizer has ids.
    const small = path.join(tmp, 'small');
    const tok = ck.tokenizer;
    const config = tinyConfig('bert', tok, { padVocab: -10 });
    await assert.rejects(
      writeModelFolder(small, { config, weights: await hfWeightsOf(config, initialWeights(config, 1)), tokenizer: tok }),
      /tokenizer has \d+ ids but the model's vocab_size is \d+/,
    );
    // The same mismatch in a folder on disk.
    fs.cpSync(padded, small, { recursive: true });
    const hf = await hfWeightsOf(config, initialWeights(config, 1));
    await saveSafetensors(path.join(small, 'model.safetensors'), new Map([...hf].map(([n, t]) => [n, { dtype: 'F32' as const, shape: t.shape, data: t.data }])));
    const cfg = JSON.parse(fs.readFileSync(path.join(small, 'config.json'), 'utf8'));
    cfg.vocab_size = config.vocab_size;
    fs.writeFileSync(path.join(small, 'config.json'), JSON.stringify(cfg));
    await rejectsInput(loadModelFolder(small), /tokenizer has \d+ ids but the model's vocab_size is \d+/);
  });
});

describe('loadModelFolder errors (one line, InputError)', () => {
  let good: string;
  before(async () => {
    good = path.join(tmp, 'good');
    await makeTinyCheckpoint(good, 'bert');
  });
  const variant = (name: string, edit: (dir: string) => void): string => {
    const dir = path.join(tmp, name);
    fs.cpSync(good, dir, { recursive: true });
    edit(dir);
    return dir;
  };

  test('missing folder, a file, missing config.json, invalid JSON, unknown key', async () => {
    await rejectsInput(loadModelFolder(path.join(tmp, 'nope')), /model folder .*nope not found/);
    await rejectsInput(loadModelFolder(path.join(good, 'config.json')), /is a file, not a model folder/);
    await rejectsInput(loadModelFolder(variant('no-config', (d) => fs.rmSync(path.join(d, 'config.json')))), /has no config\.json/);
    await rejectsInput(loadModelFolder(variant('bad-json', (d) => fs.writeFileSync(path.join(d, 'config.json'), '{"model_type": '))), /config\.json is not valid JSON/);
    await rejectsInput(
      loadModelFolder(variant('bad-key', (d) => {
        const c = JSON.parse(fs.readFileSync(path.join(d, 'config.json'), 'utf8'));
        c.hiden_size = 3;
        fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify(c));
      })),
      /unknown key 'hiden_size'/,
    );
  });

  test('pickle, TF and Flax weights only: says why and how to convert; a tfjs export: what it is for', async () => {
    const only = (name: string) => variant(`only-${name}`, (d) => {
      fs.rmSync(path.join(d, 'model.safetensors'));
      fs.writeFileSync(path.join(d, name), 'x');
    });
    await rejectsInput(
      loadModelFolder(only('pytorch_model.bin')),
      /holds only pytorch_model\.bin; mlmkit reads safetensors only, because loading a pickle can run arbitrary code\. Convert it in Python: `AutoModelForMaskedLM\.from_pretrained\(.*\)\.save_pretrained\(.*, safe_serialization=True\)`/,
    );
    await rejectsInput(loadModelFolder(only('tf_model.h5')), /holds only tf_model\.h5 .*from_tf=True/);
    await rejectsInput(loadModelFolder(only('flax_model.msgpack')), /holds only flax_model\.msgpack .*from_flax=True/);
    const tfjs = variant('tfjs-export', (d) => {
      fs.rmSync(path.join(d, 'model.safetensors'));
      fs.writeFileSync(path.join(d, 'model.json'), '{}');
      fs.writeFileSync(path.join(d, 'group1-shard1of1.bin'), 'x');
    });
    await rejectsInput(loadModelFolder(tfjs), /is a tfjs export \(model\.json and weight shards\), made for the browser: open it with mlm serve --model \S+, or give the model folder it was exported from$/);
    await rejectsInput(loadModelFolder(variant('no-weights', (d) => fs.rmSync(path.join(d, 'model.safetensors')))), /has no model\.safetensors/);
  });

  test('corrupted safetensors and missing tokenizer files', async () => {
    const truncated = variant('truncated', (d) => {
      const f = path.join(d, 'model.safetensors');
      fs.truncateSync(f, fs.statSync(f).size - 100);
    });
    await rejectsInput(loadModelFolder(truncated), /not a valid safetensors file: .*truncated/);
    const garbage = variant('garbage', (d) => fs.writeFileSync(path.join(d, 'model.safetensors'), Buffer.alloc(64, 0xff)));
    await rejectsInput(loadModelFolder(garbage), /not a valid safetensors file/);
    const noTok = variant('no-tok', (d) => {
      for (const f of ['tokenizer.json', 'vocab.txt', 'tokenizer_config.json', 'special_tokens_map.json']) fs.rmSync(path.join(d, f));
    });
    await rejectsInput(loadModelFolder(noTok), /no tokenizer files/);
    const wrongShape = variant('wrong-shape', (d) => {
      const c = JSON.parse(fs.readFileSync(path.join(d, 'config.json'), 'utf8'));
      c.intermediate_size = 40;
      fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify(c));
    });
    await rejectsInput(loadModelFolder(wrongShape), /has shape \[37, 32\] but the config implies \[40, 32\]/);
  });

  test('every weight of the table is read', async () => {
    const loaded = await loadModelFolder(good);
    assert.deepEqual([...loaded.weights.tensors.keys()].sort(), parameterTable(loaded.config).map((s) => s.name).sort());
  });
});
