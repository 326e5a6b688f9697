#!/usr/bin/env python3
"""Fixtures from real transformers (5.x) + torch, for a machine that has them (the development machine
does not; the committed ones were written on the GPU machine with transformers 5.17.0, torch 2.11).

For bert and roberta, with the tiny configs of tests/fixtures/reference/<name>/config.json:
  1. builds a random BertForMaskedLM / RobertaForMaskedLM (initializer_range raised to 0.3 so the
     logits are far from zero), save_pretrained()s it into tests/fixtures/hf/<name>/ and writes its
     logits on the fixed inputs of tests/fixtures/reference/<name>/reference.json to
     tests/fixtures/hf/<name>/reference.json;
  2. loads the PyTorch-reference fixture (tests/fixtures/reference/<name>/) with from_pretrained and
     prints missing/unexpected keys and the largest logit difference from its reference.json.
Then writes the tensors save_pretrained writes for configs/bert-mini.json and
configs/distilroberta-base.json to tests/fixtures/hf/state-dict-*.json and prints how they differ
from tests/fixtures/reference/hf-state-dict-*.json (written from knowledge).

    python3 scripts/reference/hf_fixtures.py
"""
import json
import pathlib
import shutil
import struct
import tempfile

import torch
from transformers import AutoConfig, AutoModelForMaskedLM

ROOT = pathlib.Path(__file__).resolve().parents[2]
REF = ROOT / "tests" / "fixtures" / "reference"
HF = ROOT / "tests" / "fixtures" / "hf"


def config_from(path, **changes):
    d = dict(json.loads(path.read_text()), **changes)
    return AutoConfig.for_model(d.pop("model_type"), **d)


def safetensors_shapes(path):
    with open(path, "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    return {k: v["shape"] for k, v in sorted(header.items()) if k != "__metadata__"}


def logits_on(model, ref, family):
    kwargs = {"input_ids": torch.tensor(ref["input_ids"]), "attention_mask": torch.tensor(ref["attention_mask"])}
    if family == "bert":
        kwargs["token_type_ids"] = torch.tensor(ref["token_type_ids"])
    with torch.no_grad():
        out = model(**kwargs, output_hidden_states=True)
    return out.logits, out.hidden_states[-1]


def f32_list(t):
    return [[[float(f"{v:.9g}") for v in row] for row in seq] for seq in t.float().tolist()]


def main():
    import transformers
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    for seed, family in enumerate(("bert", "roberta")):
        ref = json.loads((REF / family / "reference.json").read_text())
        torch.manual_seed(seed)
        cfg = config_from(REF / family / "config.json", initializer_range=0.3)
        model = AutoModelForMaskedLM.from_config(cfg, attn_implementation="eager").eval()
        out = HF / family
        model.save_pretrained(out)  # safetensors: the only format in 5.x, the default since 4.35
        logits, hidden = logits_on(model, ref, family)
        (out / "reference.json").write_text(json.dumps({
            "note": "written by scripts/reference/hf_fixtures.py with a random model saved beside it",
            **{k: ref[k] for k in ("input_ids", "attention_mask", "token_type_ids")},
            "last_hidden_state": f32_list(hidden), "logits": f32_list(logits)}) + "\n")

        loaded = AutoModelForMaskedLM.from_pretrained(
            REF / family, attn_implementation="eager", output_loading_info=True)
        theirs, info = loaded if isinstance(loaded, tuple) else (loaded, {"missing_keys": "?", "unexpected_keys": "?"})
        diff = (logits_on(theirs.eval(), ref, family)[0] - torch.tensor(ref["logits"])).abs().max().item()
        print(f"{family}: wrote {out}; reference fixture loads with missing={info['missing_keys']} "
              f"unexpected={info['unexpected_keys']}, max |logits - reference| = {diff:.2e}")

    for name in ("bert-mini", "distilroberta-base"):
        model = AutoModelForMaskedLM.from_config(config_from(ROOT / "configs" / f"{name}.json"))
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            shapes = safetensors_shapes(pathlib.Path(tmp) / "model.safetensors")
        (HF / f"state-dict-{name}.json").write_text(json.dumps(shapes, indent=1) + "\n")
        known = json.loads((REF / f"hf-state-dict-{name}.json").read_text())["tensors"]
        extra = sorted(set(shapes) - set(known))
        lacking = sorted(set(known) - set(shapes))
        reshaped = sorted(k for k in set(known) & set(shapes) if known[k] != shapes[k])
        print(f"{name}: {len(shapes)} tensors; not in the fixture {extra}; fixture only {lacking}; shapes differ {reshaped}")
        del model
    shutil.rmtree(HF / "__pycache__", ignore_errors=True)


if __name__ == "__main__":
    main()
