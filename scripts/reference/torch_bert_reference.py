#!/usr/bin/python3
"""Independent PyTorch reference for mlmkit's BERT and RoBERTa masked-LM forward pass.

Builds a tiny BERT and a tiny RoBERTa with random weights under Hugging Face names, computes MLM
logits on fixed inputs with padding, and writes, per model, into tests/fixtures/reference/<name>/:
  config.json       the transformers-style config (parsed by mlmkit's parseModelConfig)
  model.safetensors the weights as BertForMaskedLM / RobertaForMaskedLM.save_pretrained names them
                    (tied decoder names left out), written here with struct + json
  reference.json    inputs, final hidden states and logits (float32 values, 9 significant digits)

The encoder layers are torch.nn.TransformerEncoderLayer (post-LN, batch_first, exact GELU or a
tanh-GELU callable) with the HF weights mapped in: an implementation that shares no code with
transformers or mlmkit. Embeddings and the MLM head are a few lines of torch below. A hand-written
attention checks the torch layers before anything is written.

No transformers here: run with Debian's python3-torch (1.13) and python3-numpy:
    /usr/bin/python3 scripts/reference/torch_bert_reference.py
"""
import json
import math
import pathlib
import struct

import numpy as np
import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "reference"

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37, max_position_embeddings=64, initializer_range=0.02,
            hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
            position_embedding_type="absolute")
CONFIGS = {
    # BERT: exact GELU everywhere, two token types.
    "bert": dict(TINY, model_type="bert", architectures=["BertForMaskedLM"], hidden_act="gelu",
                 type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0),
    # RoBERTa: tanh GELU in the encoder (its head always uses exact GELU), one token type.
    "roberta": dict(TINY, model_type="roberta", architectures=["RobertaForMaskedLM"],
                    hidden_act="gelu_new", type_vocab_size=1, layer_norm_eps=1e-5,
                    pad_token_id=1, bos_token_id=0, eos_token_id=2),
}
T = 12  # two rows: one full, one with 4 padding tokens at the end


def inputs_for(cfg, gen):
    pad = cfg["pad_token_id"]
    ids = torch.randint(3, cfg["vocab_size"], (2, T), generator=gen)
    mask = torch.ones(2, T, dtype=torch.long)
    mask[1, 8:] = 0
    ids[1, 8:] = pad
    if cfg["model_type"] == "roberta":
        ids[:, 0] = cfg["bos_token_id"]
        ids[0, T - 1] = cfg["eos_token_id"]
        ids[1, 7] = cfg["eos_token_id"]
        types = torch.zeros(2, T, dtype=torch.long)
    else:
        types = torch.tensor([[0] * 5 + [1] * 7, [0] * 4 + [1] * 4 + [0] * 4])
    return ids, mask, types


def random_weights(cfg, gen):
    """HF-named tensors (Linear weights [out, in]); scales chosen so logits are O(1-10)."""
    H, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    base = cfg["model_type"]
    w = {}

    def normal(shape, std):
        return torch.randn(*shape, generator=gen) * std

    def linear(name, n_in, n_out):
        w[name + ".weight"] = normal((n_out, n_in), 1.0 / math.sqrt(n_in))
        w[name + ".bias"] = normal((n_out,), 0.1)

    def layer_norm(name):
        w[name + ".weight"] = 1.0 + normal((H,), 0.1)
        w[name + ".bias"] = normal((H,), 0.1)

    e = base + ".embeddings."
    w[e + "word_embeddings.weight"] = normal((V, H), 0.5)
    w[e + "position_embeddings.weight"] = normal((cfg["max_position_embeddings"], H), 0.5)
    w[e + "token_type_embeddings.weight"] = normal((cfg["type_vocab_size"], H), 0.5)
    layer_norm(e + "LayerNorm")
    for i in range(cfg["num_hidden_layers"]):
        p = f"{base}.encoder.layer.{i}."
        for part in ("query", "key", "value"):
            linear(p + "attention.self." + part, H, H)
        linear(p + "attention.output.dense", H, H)
        layer_norm(p + "attention.output.LayerNorm")
        linear(p + "intermediate.dense", H, I)
        linear(p + "output.dense", I, H)
        layer_norm(p + "output.LayerNorm")
    if base == "bert":
        linear("cls.predictions.transform.dense", H, H)
        layer_norm("cls.predictions.transform.LayerNorm")
        w["cls.predictions.bias"] = normal((V,), 0.5)
    else:
        linear("lm_head.dense", H, H)
        layer_norm("lm_head.layer_norm")
        w["lm_head.bias"] = normal((V,), 0.5)
    return w


def act_fn(name):
    if name == "gelu":
        return lambda x: F.gelu(x)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: F.gelu(x, approximate="tanh")
    raise ValueError(name)


def torch_layer(cfg, w, p):
    H = cfg["hidden_size"]
    act = "gelu" if cfg["hidden_act"] == "gelu" else act_fn(cfg["hidden_act"])
    layer = torch.nn.TransformerEncoderLayer(
        H, cfg["num_attention_heads"], cfg["intermediate_size"], dropout=0.0, activation=act,
        layer_norm_eps=cfg["layer_norm_eps"], batch_first=True, norm_first=False)
    with torch.no_grad():
        a = p + "attention."
        layer.self_attn.in_proj_weight.copy_(torch.cat([w[a + f"self.{n}.weight"] for n in ("query", "key", "value")]))
        layer.self_attn.in_proj_bias.copy_(torch.cat([w[a + f"self.{n}.bias"] for n in ("query", "key", "value")]))
        layer.self_attn.out_proj.weight.copy_(w[a + "output.dense.weight"])
        layer.self_attn.out_proj.bias.copy_(w[a + "output.dense.bias"])
        layer.norm1.weight.copy_(w[a + "output.LayerNorm.weight"])
        layer.norm1.bias.copy_(w[a + "output.LayerNorm.bias"])
        layer.linear1.weight.copy_(w[p + "intermediate.dense.weight"])
        layer.linear1.bias.copy_(w[p + "intermediate.dense.bias"])
        layer.linear2.weight.copy_(w[p + "output.dense.weight"])
        layer.linear2.bias.copy_(w[p + "output.dense.bias"])
        layer.norm2.weight.copy_(w[p + "output.LayerNorm.weight"])
        layer.norm2.bias.copy_(w[p + "output.LayerNorm.bias"])
    return layer.eval()


def hand_layer(cfg, w, p, x, mask):
    """The same layer written out, to check the torch module's use (mask, scaling, order)."""
    B, T_, H = x.shape
    nh = cfg["num_attention_heads"]
    hs = H // nh
    eps = cfg["layer_norm_eps"]
    lin = lambda t, n: t @ w[n + ".weight"].T + w[n + ".bias"]
    ln = lambda t, n: F.layer_norm(t, (H,), w[n + ".weight"], w[n + ".bias"], eps)
    heads = lambda t: t.view(B, T_, nh, hs).transpose(1, 2)
    q, k, v = (heads(lin(x, p + f"attention.self.{n}")) for n in ("query", "key", "value"))
    scores = q @ k.transpose(-1, -2) / math.sqrt(hs) + (1.0 - mask[:, None, None, :].float()) * -1e9
    ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T_, H)
    h = ln(lin(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
    ff = lin(act_fn(cfg["hidden_act"])(lin(h, p + "intermediate.dense")), p + "output.dense")
    return ln(ff + h, p + "output.LayerNorm")


def forward(cfg, w, ids, mask, types):
    base = cfg["model_type"]
    H, eps, pad = cfg["hidden_size"], cfg["layer_norm_eps"], cfg["pad_token_id"]
    if base == "roberta":  # pad + running count of real tokens; pad at padding
        real = ids.ne(pad).long()
        positions = torch.cumsum(real, 1) * real + pad
    else:
        positions = torch.arange(ids.shape[1]).expand_as(ids)
    e = base + ".embeddings."
    x = w[e + "word_embeddings.weight"][ids] + w[e + "position_embeddings.weight"][positions] \
        + w[e + "token_type_embeddings.weight"][types]
    x = F.layer_norm(x, (H,), w[e + "LayerNorm.weight"], w[e + "LayerNorm.bias"], eps)
    padding = mask.eq(0)  # True = ignore this key
    for i in range(cfg["num_hidden_layers"]):
        p = f"{base}.encoder.layer.{i}."
        expected = hand_layer(cfg, w, p, x, mask)
        # Grad left enabled: keeps TransformerEncoderLayer on its plain (non-fast-path) code.
        x = torch_layer(cfg, w, p)(x, src_key_padding_mask=padding).detach()
        diff = (x - expected).abs().max().item()
        assert diff < 1e-5, f"torch layer and hand-written layer differ by {diff}"
    hidden = x
    if base == "bert":
        dense, norm, bias, act = "cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm", \
            "cls.predictions.bias", act_fn(cfg["hidden_act"])
    else:
        dense, norm, bias, act = "lm_head.dense", "lm_head.layer_norm", "lm_head.bias", act_fn("gelu")
    h = act(hidden @ w[dense + ".weight"].T + w[dense + ".bias"])
    h = F.layer_norm(h, (H,), w[norm + ".weight"], w[norm + ".bias"], eps)
    logits = h @ w[e + "word_embeddings.weight"].T + w[bias]
    return hidden, logits


def write_safetensors(path, tensors):
    """safetensors: u64 little-endian header size, JSON header, then raw little-endian data."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        data = tensors[name].detach().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def f32_list(t):
    return json.loads(json.dumps(np.vectorize(lambda v: float(f"{v:.9g}"))(t.detach().numpy().astype(np.float32)).tolist()))


def main():
    torch.set_num_threads(1)
    for seed, (name, cfg) in enumerate(CONFIGS.items()):
        gen = torch.Generator().manual_seed(1000 + seed)
        w = random_weights(cfg, gen)
        ids, mask, types = inputs_for(cfg, gen)
        hidden, logits = forward(cfg, w, ids, mask, types)
        out = OUT / name
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        write_safetensors(out / "model.safetensors", w)
        ref = {
            "note": "written by scripts/reference/torch_bert_reference.py (torch %s)" % torch.__version__,
            "input_ids": ids.tolist(), "attention_mask": mask.tolist(), "token_type_ids": types.tolist(),
            "last_hidden_state": f32_list(hidden), "logits": f32_list(logits),
        }
        (out / "reference.json").write_text(json.dumps(ref) + "\n")
        print(f"{name}: logits {tuple(logits.shape)}, |logits| max {logits.abs().max().item():.3f} -> {out}")


if __name__ == "__main__":
    main()
