"""Reading a folder that `mlm prepare` wrote (data/shards.ts): its manifest, one split's rows, and
the special token ids (never prediction targets). numpy is passed in so that callers decide how
to report its absence."""
import json
import os


def read_manifest(folder):
    """The parsed manifest.json, or None where the folder has none."""
    path = os.path.join(folder, "manifest.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def split_rows(folder, manifest, split, np):
    """Every row of `split` ("train" or "validation") as int64 [rows, seq_len], shards in order."""
    T = manifest["seq_len"]
    dtype = np.uint16 if manifest.get("dtype", "uint16") == "uint16" else np.uint32
    names = sorted(n for n in os.listdir(folder) if n.startswith(split + "-") and n.endswith(".bin") and not n.endswith(".words.bin"))
    parts = [np.fromfile(os.path.join(folder, n), dtype=dtype).astype(np.int64).reshape(-1, T) for n in names]
    return np.concatenate(parts) if parts else np.zeros((0, T), np.int64)


def special_ids(tokenizer):
    """The manifest tokenizer's special ids (padding, [CLS], [SEP], [MASK], unknown), sorted."""
    keys = ("pad_token_id", "cls_token_id", "sep_token_id", "mask_token_id", "unk_token_id")
    return sorted({tokenizer[k] for k in keys if tokenizer.get(k) is not None})
