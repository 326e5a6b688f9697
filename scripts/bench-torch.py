#!/usr/bin/env python3
# The PyTorch peer of `mlm bench`: the same masked-LM training step, written with plain torch.nn,
# timed the same way, for a like-for-like throughput comparison on the same CPU
# (scripts/bench-peer.ts runs both sides alternately and compares them), or on an NVIDIA GPU
# (scripts/gpu-run.sh, against mlmkit's WebGPU backend).
#
#   /usr/bin/python3 scripts/bench-torch.py [--config configs/bert-mini.json ...] [--batch-size 32]
#       [--seq-len 128] [--steps 5] [--warmup-steps 1] [--eval-steps 2] [--threads 2] [--json]
#       [--device cpu|cuda|auto] [--impl nn|transformers] [--precision fp32|tf32|bf16 ...] [--tf32]
#
# Several --config files and --precision values run one after the other in this one process (the
# imports and CUDA's start are paid once), each from a fresh model and the same seed; with --json
# each run prints its JSON object on a line of its own, as soon as it is done. A run that raises is
# reported on stderr and the next one runs; the exit status is then 1.
#
# --device cuda (or auto, which takes CUDA when torch sees a GPU, else the CPU) runs the model on
# the GPU. Precisions:
#   fp32  float32 with TF32 OFF (torch >= 2.9: torch.backends.cuda.matmul.fp32_precision = "ieee";
#         older: torch.backends.cuda.matmul.allow_tf32 = False and the same for cudnn), so that
#         its matmuls do the arithmetic WebGPU's float32 kernels do (the default);
#   tf32  TF32 matmuls allowed (a separate, labelled figure; --tf32 is the same);
#   bf16  mixed precision as PyTorch users train: float32 weights and optimizer, forward and loss
#         under torch.autocast(device, torch.bfloat16) (matmuls in bfloat16, reductions and the
#         loss in float32 as autocast chooses), backward outside it, no loss scaling (bfloat16
#         has float32's range); TF32 off for what autocast leaves in float32.
# Batches are drawn on the CPU with the same
# generator as on the CPU path and copied to the GPU inside the timed step (mlmkit uploads its
# batches too); every timing is bracketed by torch.cuda.synchronize(). Defaults (cpu, nn) are the
# CPU comparison of scripts/bench-peer.ts, unchanged.
# --impl transformers builds transformers' own BertForMaskedLM(BertConfig(**config)) (its init, its
# attention implementation; its logits, with the same full-vocabulary cross-entropy as the nn path)
# instead of the torch.nn rebuild below; it needs the transformers package.
#
# The model is transformers' BertForMaskedLM rebuilt from torch.nn with the config's sizes
# (transformers is not needed): word + position + token-type embeddings, LayerNorm, dropout;
# post-LayerNorm encoder layers (nn.TransformerEncoderLayer, gelu, norm_first=False, batch_first);
# the MLM head (dense, gelu, LayerNorm, decoder tied to the word embeddings plus its own bias)
# computing FULL-VOCABULARY logits at every position, as BertForMaskedLM does; cross-entropy with
# ignore_index -100. Same parameter count as mlmkit's model. AdamW (torch.optim.AdamW, no decay on
# biases and LayerNorm weights), gradient clipping at 1.0, float32, dropout on while training.
# Porting note: nn.TransformerEncoderLayer uses one dropout rate for attention probabilities and
# hidden states (BERT configs give both 0.1), and its attention runs through
# nn.MultiheadAttention's fused in-projection: the same arithmetic as BertSelfAttention.
#
# One training step = draw random ids, mask them (15%, 80/10/10, as transformers'
# DataCollatorForLanguageModeling), forward, loss, backward, clip, AdamW step, read the loss
# (`.item()`, the synchronisation mlmkit's step also has). Rows are [CLS] random ids [SEP], no
# padding, as mlmkit's synthetic rows. An evaluation step is forward + loss under no_grad in eval
# mode (PyTorch's own inference path).
#
# Model FLOPs per trained token: 6 N + 12 L H T + 6 H V f with f = 1 (full-vocabulary logits):
# the formula of training/bench.ts, where mlmkit's f is the masked fraction (~0.15).
import argparse
import ctypes
import json
import math
import os
import resource
import statistics
import sys
import time


def parse_args():
    ap = argparse.ArgumentParser(description="PyTorch peer of `mlm bench` (BertForMaskedLM-shaped MLM training step).")
    ap.add_argument("--config", nargs="+", default=["configs/bert-mini.json"], help="one or more model configs")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5, help="measured training steps")
    ap.add_argument("--warmup-steps", type=int, default=1)
    ap.add_argument("--eval-steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--mlm-probability", type=float, default=0.15)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu",
                    help="cpu (default), cuda, or auto (cuda when available, else cpu)")
    ap.add_argument("--impl", choices=["nn", "transformers"], default="nn",
                    help="nn: the torch.nn rebuild below (default); transformers: BertForMaskedLM itself")
    ap.add_argument("--precision", nargs="+", choices=["fp32", "tf32", "bf16"], default=None,
                    help="one or more of fp32 (strict float32, the default), tf32 (CUDA: TF32 matmuls), bf16 (bfloat16 autocast)")
    ap.add_argument("--tf32", action="store_true", help="the same as --precision tf32")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = ap.parse_args()
    if args.precision is None:
        args.precision = ["tf32" if args.tf32 else "fp32"]
    elif args.tf32:
        ap.error("give --tf32 or --precision, not both")
    return args


def blas_kernel():
    """Which OpenBLAS core is loaded in this process, if any (read from the library itself)."""
    try:
        paths = sorted({l.split()[-1] for l in open("/proc/self/maps") if "blas" in l.lower() and ".so" in l})
    except OSError:
        return None
    for p in paths:
        try:
            lib = ctypes.CDLL(p)
            core = lib.openblas_get_corename
            core.restype = ctypes.c_char_p
            return "%s (%d threads)" % (core().decode(), lib.openblas_get_num_threads())
        except (OSError, AttributeError):
            continue
    if paths:
        return paths[0]
    # Wheels from pytorch.org link MKL into libtorch itself: say so, with the CPU code path in use.
    import torch
    if torch.backends.mkl.is_available():
        capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")()
        return "MKL in libtorch (%s, %d threads)" % (capability, torch.get_num_threads())
    return None


def main():
    args = parse_args()
    try:
        import torch
    except ImportError:
        print("bench-torch: PyTorch is not installed for %s: install python3-torch and libopenblas0-pthread (apt) to compare" % sys.executable, file=sys.stderr)
        sys.exit(3)
    torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench-torch: --device cuda, but torch %s sees no CUDA device (torch.cuda.is_available() is False)" % torch.__version__, file=sys.stderr)
        sys.exit(3)
    if "tf32" in args.precision and args.device != "cuda":
        print("bench-torch: --precision tf32 means something on CUDA only (--device %s)" % args.device, file=sys.stderr)
        sys.exit(2)
    failed = 0
    for config in args.config:
        for precision in args.precision:
            # A run that raises (out of memory, an op autocast refuses...) is reported and the next
            # one runs: several runs share this process (scripts/gpu-run.sh asks for four).
            result = None
            try:
                result = bench_one(args, config, precision)
            except Exception as err:  # noqa: BLE001 (any error of one run)
                failed += 1
                print("bench-torch: %s %s failed: %s: %s" % (config, precision, type(err).__name__, str(err).split("\n")[0]), file=sys.stderr, flush=True)
            if result is None:
                # The failed run's model and optimizer went with its traceback: give their memory back.
                if args.device == "cuda":
                    torch.cuda.empty_cache()
                continue
            if args.json:
                print(json.dumps(result), flush=True)
            else:
                for k, v in result.items():
                    print("%-24s %s" % (k, v))
                print(flush=True)
    if failed:
        sys.exit(1)


def bench_one(args, config_path, precision):
    """One training benchmark of config_path at precision; returns the result document."""
    import torch
    from torch import nn
    import torch.nn.functional as F

    with open(config_path) as f:
        c = json.load(f)
    B, T = args.batch_size, args.seq_len
    H, V, L = c["hidden_size"], c["vocab_size"], c["num_hidden_layers"]
    I, nh = c["intermediate_size"], c["num_attention_heads"]
    eps = c.get("layer_norm_eps", 1e-12)
    p_hidden = c.get("hidden_dropout_prob", 0.1)
    pad = c.get("pad_token_id", 0)
    if c.get("hidden_act", "gelu") != "gelu":
        print("bench-torch: only hidden_act gelu is built here, the config has %s" % c.get("hidden_act"), file=sys.stderr)
        sys.exit(2)
    if T > c["max_position_embeddings"]:
        print("bench-torch: --seq-len %d is longer than max_position_embeddings %d" % (T, c["max_position_embeddings"]), file=sys.stderr)
        sys.exit(2)

    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    tf32 = precision == "tf32"
    if cuda:
        # Strict float32 unless tf32: the arithmetic WebGPU's float32 matmuls do.
        # torch >= 2.9 has fp32_precision ("ieee" | "tf32") and warns about the older flags.
        if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
            torch.backends.cuda.matmul.fp32_precision = "tf32" if tf32 else "ieee"
            if hasattr(torch.backends.cudnn, "conv"):
                torch.backends.cudnn.conv.fp32_precision = "tf32" if tf32 else "ieee"
        else:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    # bf16: forward and loss under autocast; a no-op context otherwise.
    import contextlib
    autocast = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext

    def sync():
        if cuda:
            torch.cuda.synchronize()

    class BertForMaskedLMPeer(nn.Module):
        def __init__(self):
            super().__init__()
            self.word_embeddings = nn.Embedding(V, H, padding_idx=pad)
            self.position_embeddings = nn.Embedding(c["max_position_embeddings"], H)
            self.token_type_embeddings = nn.Embedding(c.get("type_vocab_size", 2), H)
            self.embeddings_norm = nn.LayerNorm(H, eps=eps)
            self.embeddings_dropout = nn.Dropout(p_hidden)
            layer = nn.TransformerEncoderLayer(H, nh, I, dropout=p_hidden, activation="gelu", layer_norm_eps=eps, batch_first=True, norm_first=False)
            self.encoder = nn.TransformerEncoder(layer, L, enable_nested_tensor=False)
            self.transform = nn.Linear(H, H)
            self.transform_norm = nn.LayerNorm(H, eps=eps)
            self.decoder_bias = nn.Parameter(torch.zeros(V))
            for m in self.modules():  # transformers' _init_weights
                if isinstance(m, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(m.weight, std=c.get("initializer_range", 0.02))
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
            for mha in (l.self_attn for l in self.encoder.layers):
                nn.init.normal_(mha.in_proj_weight, std=c.get("initializer_range", 0.02))
                nn.init.zeros_(mha.in_proj_bias)

        def forward(self, ids, types):  # ids, types [B, T] -> logits [B, T, V]
            positions = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
            x = self.word_embeddings(ids) + self.position_embeddings(positions) + self.token_type_embeddings(types)
            x = self.encoder(self.embeddings_dropout(self.embeddings_norm(x)))
            # .float(): under bf16 autocast, LayerNorm in float32 (CUDA's autocast does this by
            # itself; torch 1.13's CPU autocast refuses a bfloat16 input with float32 weights).
            h = self.transform_norm(F.gelu(self.transform(x)).float())
            return F.linear(h, self.word_embeddings.weight, self.decoder_bias)  # tied decoder

    attn_impl = None
    if args.impl == "transformers":
        try:
            import transformers
            from transformers import BertConfig, BertForMaskedLM
        except ImportError:
            print("bench-torch: --impl transformers needs the transformers package for %s (pip install transformers), or use --impl nn" % sys.executable, file=sys.stderr)
            sys.exit(3)
        hf = BertForMaskedLM(BertConfig(**{k: v for k, v in c.items() if k not in ("architectures", "transformers_version", "model_type", "torch_dtype")}))
        attn_impl = getattr(hf.config, "_attn_implementation", None)
        emb = hf.bert.embeddings
        embedding_modules = (emb.word_embeddings, emb.position_embeddings, emb.token_type_embeddings)

        class HfLogits(nn.Module):  # the peer's interface: (ids, types) -> logits
            def __init__(self):
                super().__init__()
                self.hf = hf

            def forward(self, ids, types):
                return self.hf(input_ids=ids, token_type_ids=types).logits

        model = HfLogits()
        norm_name = "LayerNorm"
    else:
        model = BertForMaskedLMPeer()
        embedding_modules = (model.word_embeddings, model.position_embeddings, model.token_type_embeddings)
        norm_name = "norm"
    model.to(dev)
    params = sum(p.numel() for p in model.parameters())
    embedding_tables = sum(m.weight.numel() for m in embedding_modules)
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or norm_name in n)]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or norm_name in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)

    # BERT-style special ids as mlmkit's synthetic rows (training/bench.ts syntheticSpecialIds).
    cls_id, sep_id, mask_id, unk_id = (101, 102, 103, 100) if V > 104 else (1, 2, 3, 4)
    specials = torch.tensor(sorted({pad, cls_id, sep_id, mask_id, unk_id}))
    ordinary = torch.ones(V, dtype=torch.bool)
    ordinary[specials] = False
    ordinary_ids = ordinary.nonzero().squeeze(1)
    gen = torch.Generator().manual_seed(args.seed)

    def batch():
        ids = ordinary_ids[torch.randint(len(ordinary_ids), (B, T), generator=gen)]
        ids[:, 0], ids[:, -1] = cls_id, sep_id
        labels = ids.clone()
        prob = torch.full((B, T), args.mlm_probability)
        prob[:, 0] = prob[:, -1] = 0.0
        selected = torch.bernoulli(prob, generator=gen).bool()
        labels[~selected] = -100
        replaced = torch.bernoulli(torch.full((B, T), 0.8), generator=gen).bool() & selected
        ids[replaced] = mask_id
        randomised = torch.bernoulli(torch.full((B, T), 0.5), generator=gen).bool() & selected & ~replaced
        ids[randomised] = torch.randint(V, (B, T), generator=gen)[randomised]
        return ids.to(dev), torch.zeros_like(ids).to(dev), labels.to(dev)

    def train_step():
        sync()
        t0 = time.perf_counter()
        ids, types, labels = batch()
        model.train()
        opt.zero_grad(set_to_none=True)
        with autocast():
            logits = model(ids, types)
            loss = F.cross_entropy(logits.view(-1, V), labels.view(-1), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        value = loss.item()
        sync()
        return (time.perf_counter() - t0) * 1000, value

    def eval_step():
        sync()
        t0 = time.perf_counter()
        ids, types, labels = batch()
        model.eval()
        with torch.no_grad(), autocast():
            loss = F.cross_entropy(model(ids, types).view(-1, V), labels.view(-1), ignore_index=-100)
            value = loss.item()
        sync()
        return (time.perf_counter() - t0) * 1000, value

    log = (lambda s: None) if args.json else (lambda s: print(s, file=sys.stderr, flush=True))
    loss_first = None
    for i in range(args.warmup_steps):
        ms, loss = train_step()
        loss_first = loss if loss_first is None else loss_first
        log("  warmup step %d/%d: %.2f s, loss %.4f" % (i + 1, args.warmup_steps, ms / 1000, loss))
    train_ms = []
    for i in range(args.steps):
        ms, loss = train_step()
        loss_first = loss if loss_first is None else loss_first
        train_ms.append(ms)
        log("  train step %d/%d: %.2f s, loss %.4f" % (i + 1, args.steps, ms / 1000, loss))
    eval_note = None
    try:
        eval_step()  # untimed: the inference path's first call
        eval_ms = [eval_step()[0] for _ in range(args.eval_steps)]
    except RuntimeError as err:
        if precision != "bf16":
            raise
        # torch 1.13's fused inference path of nn.TransformerEncoderLayer (the nn rebuild, on the
        # CPU) refuses bfloat16 autocast; the training figures stand.
        eval_ms = []
        eval_note = "evaluation failed under bf16 autocast: %s" % str(err).split("\n")[0]

    def spread(xs):
        s = sorted(xs)
        q = statistics.quantiles(s, n=4, method="inclusive") if len(s) > 1 else [s[0]] * 3
        return {"median": statistics.median(s), "min": s[0], "max": s[-1], "q1": q[0], "q3": q[2]}

    tps = B * T * len(train_ms) / (sum(train_ms) / 1000)
    flops_per_token = 6 * (params - embedding_tables) + 12 * L * H * T + 6 * H * V * 1.0
    tr = spread(train_ms)
    ev = spread(eval_ms) if eval_ms else None
    result = {
        "peer": "pytorch",
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(dev) if cuda else "cpu",
        "device_type": dev.type,
        "impl": args.impl if args.impl == "nn" else "transformers %s BertForMaskedLM" % transformers.__version__,
        "attn_implementation": attn_impl,
        "dtype": "float32",
        "precision": precision,
        "autocast": "bfloat16" if precision == "bf16" else None,
        "tf32": tf32 if cuda else False,
        "threads": torch.get_num_threads(),
        "blas": blas_kernel(),
        "config": config_path,
        "batch_size": B,
        "seq_len": T,
        "params": params,
        "non_embedding_params": params - embedding_tables,
        "train_tokens_per_second": tps,
        "train_step_ms_median": tr["median"],
        "train_step_ms_min": tr["min"],
        "train_step_ms_q1": tr["q1"],
        "train_step_ms_q3": tr["q3"],
        "train_step_ms_max": tr["max"],
        "train_steps": len(train_ms),
        "warmup_steps": args.warmup_steps,
        "eval_tokens_per_second": (B * T * len(eval_ms) / (sum(eval_ms) / 1000)) if eval_ms else None,
        "eval_step_ms_median": ev["median"] if ev else None,
        "eval_note": eval_note,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_memory_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if cuda else None,
        "model_flops_per_token": flops_per_token,
        "model_tflops_per_second": tps * flops_per_token / 1e12,
        "scored_fraction": 1.0,
        "loss_first": loss_first,
        "loss_last": loss,
        "loss_ok": abs(loss_first - math.log(V)) < 1.0,
    }
    del model, opt
    return result


if __name__ == "__main__":
    main()
