#!/usr/bin/env python3
# An independent check of mlmkit's pretraining curve: the same masked-LM training, written in plain
# PyTorch, on a folder that `mlm prepare` wrote. Its question is whether a BERT of a given size
# leaves the unigram plateau within a given number of steps on that data, whichever implementation
# trains it; the answer says whether a plateau seen in mlmkit is the data and budget or mlmkit.
#
#   python3 scripts/reference/torch_pretrain_check.py --data DIR --config configs/bert-tiny.json \
#       [--steps 4000] [--batch-size 16] [--lr 2e-3] [--warmup 0.1] [--mlm-probability 0.3] \
#       [--eval-every 500] [--eval-rows 0] [--threads 2] [--seed 42] [--init-attention local] [--out DIR]
#
# --out writes the trained model as transformers saves a BertForMaskedLM (config.json, model.safetensors
# with transformers' names and [out, in] Linear weights, the data's tokenizer files), so that
# `mlm evaluate --model DIR MLMKIT_RUN --data DATA` scores both models on the same masks.
#
# What matches `mlm train` (training/trainer.ts, training/models/bert.ts): transformers' BERT with
# post-LayerNorm layers and exact GELU, initialised with normal(0, initializer_range), zero biases;
# the output bias set to the log unigram frequencies of the training tokens (`--init-bias unigram`);
# with --init-attention local, the position embeddings and layer 0's first heads as `mlm train
# --init-attention local` sets them (scripts/reference/local_attention.py);
# the decoder tied to the word embeddings; AdamW (betas 0.9/0.999, eps 1e-8 as torch's default,
# weight decay 0.01 on everything but biases and LayerNorm weights), gradient clipping at 1.0, linear
# warmup over --warmup of the steps then linear decay to 0; masking as transformers' collator
# (--mlm-probability of the non-special tokens, 80% [MASK], 10% random, 10% kept); the loss at the
# selected positions only. The held-out evaluation masks 15% of the validation rows with a fixed
# generator (the same selections at every evaluation) and reports the mean loss and accuracy.
# Rows are read as `mlm prepare` wrote them (uint16 or uint32 ids, seq_len a row).
#
# It needs PyTorch (Debian's python3-torch is enough) and numpy; it prints one line an evaluation.
import argparse
import json
import math
import os
import sys
import time

from local_attention import local_attention  # scripts/reference/local_attention.py
from prepared import read_manifest, special_ids, split_rows  # scripts/reference/prepared.py


def main():
    ap = argparse.ArgumentParser(description="PyTorch pretraining curve on an mlmkit data folder")
    ap.add_argument("--data", required=True)
    ap.add_argument("--config", default="configs/bert-tiny.json")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=float, default=0.1)
    ap.add_argument("--mlm-probability", type=float, default=0.3)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--eval-rows", type=int, default=0, help="validation rows scored (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--init-attention", choices=("standard", "local"), default="standard",
                    help="local: layer 0's first heads start on offsets -1, +1, -2, +2 (as mlm train --init-attention local)")
    ap.add_argument("--out", help="write the trained model here (a new folder)")
    args = ap.parse_args()
    if args.out and os.path.exists(args.out):
        print("torch_pretrain_check: --out %s exists: give a new folder" % args.out, file=sys.stderr)
        sys.exit(2)
    manifest = read_manifest(args.data)
    if manifest is None:
        print("torch_pretrain_check: %s has no manifest.json: give a folder written by `mlm prepare`" % args.data, file=sys.stderr)
        sys.exit(2)
    with open(args.config) as f:
        c = json.load(f)
    if args.init_attention == "local" and (c["hidden_size"] % c["num_attention_heads"] or (c["hidden_size"] // c["num_attention_heads"]) % 2):
        print("torch_pretrain_check: --init-attention local needs an even head size; %s has hidden_size %d over %d heads" % (
            args.config, c["hidden_size"], c["num_attention_heads"]), file=sys.stderr)
        sys.exit(2)
    try:
        import numpy as np
        import torch
        from torch import nn
        import torch.nn.functional as F
    except ImportError as e:
        print("torch_pretrain_check: %s: install python3-torch and python3-numpy (apt)" % e, file=sys.stderr)
        sys.exit(2)
    tok = manifest["tokenizer"]
    T = manifest["seq_len"]
    train, valid = split_rows(args.data, manifest, "train", np), split_rows(args.data, manifest, "validation", np)
    if len(train) == 0 or len(valid) == 0:
        print("torch_pretrain_check: %s needs train-*.bin and validation-*.bin shards" % args.data, file=sys.stderr)
        sys.exit(2)
    V = tok["vocab_size"]
    H, L, nh, I = c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"], c["intermediate_size"]
    eps, p_drop, std = c.get("layer_norm_eps", 1e-12), c.get("hidden_dropout_prob", 0.1), c.get("initializer_range", 0.02)
    pad, mask_id = tok["pad_token_id"], tok["mask_token_id"]
    special = torch.tensor(special_ids(tok))
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv, self.out = nn.Linear(H, 3 * H), nn.Linear(H, H)
            self.norm1, self.norm2 = nn.LayerNorm(H, eps=eps), nn.LayerNorm(H, eps=eps)
            self.up, self.down = nn.Linear(H, I), nn.Linear(I, H)

        def forward(self, x, bias):
            B = x.shape[0]
            q, k, v = self.qkv(x).view(B, T, 3, nh, H // nh).permute(2, 0, 3, 1, 4)
            scores = q @ k.transpose(-1, -2) / math.sqrt(H // nh) + bias
            probs = F.dropout(scores.softmax(-1), p_drop, self.training)
            a = (probs @ v).transpose(1, 2).reshape(B, T, H)
            x = self.norm1(x + F.dropout(self.out(a), p_drop, self.training))
            return self.norm2(x + F.dropout(self.down(F.gelu(self.up(x))), p_drop, self.training))

    class Bert(nn.Module):
        def __init__(self):
            super().__init__()
            self.words, self.positions = nn.Embedding(V, H), nn.Embedding(c["max_position_embeddings"], H)
            self.types = nn.Embedding(c.get("type_vocab_size", 2), H)
            self.norm = nn.LayerNorm(H, eps=eps)
            self.layers = nn.ModuleList(Layer() for _ in range(L))
            self.transform, self.transform_norm = nn.Linear(H, H), nn.LayerNorm(H, eps=eps)
            self.decoder_bias = nn.Parameter(torch.zeros(V))
            for m in self.modules():
                if isinstance(m, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(m.weight, 0.0, std)
                if isinstance(m, nn.Linear):
                    nn.init.zeros_(m.bias)

        def forward(self, ids, picked):
            B = ids.shape[0]
            pos = torch.arange(T)
            x = self.norm(self.words(ids) + self.positions(pos)[None] + self.types.weight[0])
            x = F.dropout(x, p_drop, self.training)
            bias = torch.where(ids == pad, -1e9, 0.0)[:, None, None, :]
            for layer in self.layers:
                x = layer(x, bias)
            h = x.reshape(B * T, H)[picked]
            h = self.transform_norm(F.gelu(self.transform(h)))
            return h @ self.words.weight.t() + self.decoder_bias

    model = Bert()
    # --init-bias unigram (training/init-bias.ts): add-half smoothed log frequencies of the training
    # tokens; the special tokens, never targets, get the smallest value.
    counts = np.bincount(train.reshape(-1), minlength=V)[:V].astype(np.float64)
    never = special.numpy()
    counts[never] = 0
    prior = np.log((counts + 0.5) / (counts.sum() + 0.5 * (V - len(never))))
    prior[never] = np.delete(prior, never).min()
    with torch.no_grad():
        model.decoder_bias.copy_(torch.from_numpy(prior - prior.mean()).float())
    if args.init_attention == "local":
        pos, local = local_attention(H, nh, c["max_position_embeddings"], std, np)
        dh = H // nh
        with torch.no_grad():
            model.positions.weight.copy_(torch.from_numpy(pos).float())
            qkv = model.layers[0].qkv.weight  # [3H, H]: the query's rows, then the key's, then the value's
            for h, (_, q, k) in enumerate(local):
                qkv[h * dh:(h + 1) * dh] = torch.from_numpy(q).float()
                qkv[H + h * dh:H + (h + 1) * dh] = torch.from_numpy(k).float()
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "norm" in n]
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "norm" in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    warm = max(1, int(round(args.warmup * args.steps)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: s / warm if s < warm else max(0.0, (args.steps - s) / max(1, args.steps - warm)))

    def mask(ids, prob, gen):
        ids = ids.clone()
        labels = ids.clone()
        chosen = (torch.rand(ids.shape, generator=gen) < prob) & ~torch.isin(ids, special)
        replace = chosen & (torch.rand(ids.shape, generator=gen) < 0.8)
        rand = chosen & ~replace & (torch.rand(ids.shape, generator=gen) < 0.5)
        ids[replace] = mask_id
        ids[rand] = torch.randint(V, ids.shape, generator=gen)[rand]
        return ids, chosen.reshape(-1), labels.reshape(-1)[chosen.reshape(-1)]

    eval_gen = torch.Generator().manual_seed(1234)
    eval_rows = torch.from_numpy(valid[: args.eval_rows] if args.eval_rows > 0 else valid)
    eval_batches = [mask(eval_rows[i:i + 32], 0.15, eval_gen) for i in range(0, len(eval_rows), 32)]

    def evaluate():
        model.eval()
        total, right, n = 0.0, 0, 0
        with torch.no_grad():
            for ids, picked, labels in eval_batches:
                logits = model(ids, picked)
                total += F.cross_entropy(logits, labels, reduction="sum").item()
                right += (logits.argmax(-1) == labels).sum().item()
                n += len(labels)
        model.train()
        return total / n, right / n, n

    gen = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(train), generator=gen)
    cursor, start = 0, time.time()
    print("torch %s, %d threads; %d training rows of %d, %d held-out masked tokens; %s, vocab %d" % (
        torch.__version__, torch.get_num_threads(), len(train), T, sum(len(b[2]) for b in eval_batches), args.config, V), flush=True)
    for step in range(1, args.steps + 1):
        if cursor + args.batch_size > len(order):
            order, cursor = torch.randperm(len(train), generator=gen), 0
        ids, picked, labels = mask(torch.from_numpy(train[order[cursor:cursor + args.batch_size].numpy()]), args.mlm_probability, gen)
        cursor += args.batch_size
        loss = F.cross_entropy(model(ids, picked), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % args.eval_every == 0 or step == args.steps:
            loss_e, acc, n = evaluate()
            print("step %d: train loss %.4f, held-out loss %.4f, accuracy %.1f%% (%d masked tokens), %.0f s" % (
                step, loss.item(), loss_e, 100 * acc, n, time.time() - start), flush=True)
    if args.out:
        save(model, args.out, c, V, tok)


def save(model, out, config, V, tok):
    """The model as transformers' BertForMaskedLM.save_pretrained writes it (tied decoder left out)."""
    import shutil
    from torch_bert_reference import write_safetensors  # this script's folder is on sys.path
    H = config["hidden_size"]
    tensors = {
        "bert.embeddings.word_embeddings.weight": model.words.weight,
        "bert.embeddings.position_embeddings.weight": model.positions.weight,
        "bert.embeddings.token_type_embeddings.weight": model.types.weight,
        "bert.embeddings.LayerNorm.weight": model.norm.weight,
        "bert.embeddings.LayerNorm.bias": model.norm.bias,
        "cls.predictions.transform.dense.weight": model.transform.weight,
        "cls.predictions.transform.dense.bias": model.transform.bias,
        "cls.predictions.transform.LayerNorm.weight": model.transform_norm.weight,
        "cls.predictions.transform.LayerNorm.bias": model.transform_norm.bias,
        "cls.predictions.bias": model.decoder_bias,
    }
    for i, layer in enumerate(model.layers):
        p = "bert.encoder.layer.%d." % i
        for j, name in enumerate(("query", "key", "value")):
            tensors[p + "attention.self.%s.weight" % name] = layer.qkv.weight[j * H:(j + 1) * H]
            tensors[p + "attention.self.%s.bias" % name] = layer.qkv.bias[j * H:(j + 1) * H]
        for name, m in (("attention.output.dense", layer.out), ("attention.output.LayerNorm", layer.norm1),
                        ("intermediate.dense", layer.up), ("output.dense", layer.down), ("output.LayerNorm", layer.norm2)):
            tensors[p + name + ".weight"] = m.weight
            tensors[p + name + ".bias"] = m.bias
    os.makedirs(out)
    write_safetensors(os.path.join(out, "model.safetensors"), tensors)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(dict(config, vocab_size=V, architectures=["BertForMaskedLM"], model_type="bert"), f, indent=2)
    source = tok.get("source")
    copied = 0
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if source and os.path.isfile(os.path.join(source, name)):
            shutil.copy(os.path.join(source, name), os.path.join(out, name))
            copied += 1
    if copied == 0:
        print("note: the data's tokenizer (%s) is not on this machine; copy its files into %s before `mlm evaluate`" % (source, out), file=sys.stderr)
    print("wrote %s" % out, flush=True)


if __name__ == "__main__":
    main()
