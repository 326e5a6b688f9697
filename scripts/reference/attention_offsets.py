#!/usr/bin/env python3
# Where a BERT's attention looks from masked positions: for each layer and head, the mean attention
# probability that a [MASK] query gives to the token at relative offset -3..+3, next to what uniform
# attention over the row would give. A model that has learned word order puts several times the
# uniform share on its neighbours; a model on the unigram plateau attends by content only, and its
# neighbour shares sit at the uniform level (the README's demo section has both cases).
#
#   python3 scripts/reference/attention_offsets.py --model DIR --data DIR [--rows 256] [--seed 0] [--json]
#
# --model: a BERT folder as transformers or `mlm export` writes it (config.json, model.safetensors in
# float32, transformers' names). --data: a folder `mlm prepare` wrote with that model's tokenizer; its
# validation rows are the inputs, 15% of their ordinary tokens replaced by [MASK] (seeded).
# The forward pass is written here in numpy (post-LayerNorm layers, the config's activation, padding
# keys masked out) so it needs numpy only.
import argparse
import json
import math
import os
import struct
import sys

from prepared import read_manifest, special_ids, split_rows  # scripts/reference/prepared.py


def fail(message):
    print("attention_offsets: %s" % message, file=sys.stderr)
    sys.exit(2)


def load_safetensors(path, np):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            fail("%s: tensor %s is %s; this script reads float32 checkpoints" % (path, name, info["dtype"]))
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=np.float32).reshape(info["shape"]).astype(np.float64)
    return out


def main():
    ap = argparse.ArgumentParser(description="attention by relative offset at masked positions")
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    for f in ("config.json", "model.safetensors"):
        if not os.path.isfile(os.path.join(args.model, f)):
            fail("%s has no %s: give a model folder written by `mlm export` or transformers" % (args.model, f))
    m = read_manifest(args.data)
    if m is None:
        fail("%s has no manifest.json: give a folder written by `mlm prepare`" % args.data)
    if args.rows < 1:
        fail("--rows must be at least 1, got %d" % args.rows)
    try:
        import numpy as np
    except ImportError:
        fail("needs numpy (apt install python3-numpy)")
    with open(os.path.join(args.model, "config.json")) as f:
        c = json.load(f)
    if c.get("model_type") != "bert":
        fail("%s is a %s model; this script reads BERT checkpoints" % (args.model, c.get("model_type")))
    tok, T = m["tokenizer"], m["seq_len"]
    W = load_safetensors(os.path.join(args.model, "model.safetensors"), np)
    pre = "bert." if "bert.embeddings.word_embeddings.weight" in W else ""
    if pre + "embeddings.word_embeddings.weight" not in W:
        fail("%s/model.safetensors has no embeddings.word_embeddings.weight (with or without 'bert.')" % args.model)
    V = W[pre + "embeddings.word_embeddings.weight"].shape[0]
    if V != tok["vocab_size"]:
        fail("the model's vocabulary (%d) is not the data's (%d): prepare the data with the model's tokenizer" % (V, tok["vocab_size"]))
    H, L, nh = c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"]
    eps, dh = c.get("layer_norm_eps", 1e-12), c["hidden_size"] // c["num_attention_heads"]
    act = c.get("hidden_act", "gelu")
    erf = np.vectorize(math.erf)
    acts = {
        "gelu": lambda x: 0.5 * x * (1 + erf(x / math.sqrt(2))),
        "gelu_new": lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),
        "relu": lambda x: np.maximum(x, 0),
    }
    acts["gelu_pytorch_tanh"] = acts["gelu_new"]
    if act not in acts:
        fail("hidden_act %s is not one of %s" % (act, ", ".join(sorted(acts))))

    ids = split_rows(args.data, m, "validation", np)[: args.rows]
    if len(ids) == 0:
        fail("%s has no validation split" % args.data)
    special = special_ids(tok)
    rng = np.random.default_rng(args.seed)
    masked = (rng.random(ids.shape) < 0.15) & ~np.isin(ids, special)
    inputs = np.where(masked, tok["mask_token_id"], ids)
    keys_ok = inputs != tok["pad_token_id"]  # [B, T]

    def ln(x, name):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * W[name + ".weight"] + W[name + ".bias"]

    def lin(x, name):
        return x @ W[name + ".weight"].T + W[name + ".bias"]

    x = W[pre + "embeddings.word_embeddings.weight"][inputs] + W[pre + "embeddings.position_embeddings.weight"][:T][None] + W[pre + "embeddings.token_type_embeddings.weight"][0]
    x = ln(x, pre + "embeddings.LayerNorm")
    B = x.shape[0]
    offsets = list(range(-3, 4))
    # uniform share at a masked query: 1 / (unpadded keys in its row)
    uniform = float((1.0 / keys_ok.sum(1, keepdims=True).repeat(T, 1))[masked].mean())
    report = []
    for layer in range(L):
        b = "%sencoder.layer.%d." % (pre, layer)
        heads = lambda t: t.reshape(B, T, nh, dh).transpose(0, 2, 1, 3)
        q, k, v = (heads(lin(x, b + "attention.self." + n)) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(dh) + np.where(keys_ok, 0.0, -1e9)[:, None, None, :]
        scores -= scores.max(-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(-1, keepdims=True)  # [B, nh, T, T]
        for h in range(nh):
            shares = {}
            for off in offsets:
                picked = []
                for i in range(max(0, -off), min(T, T - off)):
                    rows = masked[:, i] & keys_ok[:, i + off]
                    picked.append(probs[rows, h, i, i + off])
                got = np.concatenate(picked)
                shares[off] = float(got.mean()) if got.size else float("nan")
            p = probs[:, h][masked]
            entropy = float(-(p * np.log(np.clip(p, 1e-30, None))).sum(-1).mean())
            report.append({"layer": layer, "head": h, "shares": shares, "entropy": entropy})
        a = (probs @ v).transpose(0, 2, 1, 3).reshape(B, T, H)
        x = ln(x + lin(a, b + "attention.output.dense"), b + "attention.output.LayerNorm")
        x = ln(x + lin(acts[act](lin(x, b + "intermediate.dense")), b + "output.dense"), b + "output.LayerNorm")

    if args.json:
        print(json.dumps({"model": args.model, "data": args.data, "rows": int(B), "masked": int(masked.sum()), "uniform": uniform,
                          "heads": [dict(r, shares={str(k): v for k, v in r["shares"].items()}) for r in report]}))
        return
    print("%s on %d rows of %s (%d masked queries); uniform share %.4f, uniform entropy %.2f" % (
        args.model, B, args.data, int(masked.sum()), uniform, math.log(T)))
    print("layer head  " + "  ".join("%6s" % ("%+d" % o) for o in offsets) + "  neighbours/uniform  entropy")
    for r in report:
        s = r["shares"]
        print("%5d %4d  %s  %18.2f  %7.2f" % (r["layer"], r["head"], "  ".join("%6.3f" % s[o] for o in offsets),
                                              (s[-1] + s[1]) / (2 * uniform), r["entropy"]))


if __name__ == "__main__":
    main()
