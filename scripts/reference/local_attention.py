# `--init-attention local` for the Python reference scripts, written from its definition in
# training/init-attention.ts (the derivation is there): sinusoidal position embeddings whose first
# head_size/2 pairs use w_k = pi (k + 1/2) / n and the rest the Transformer's geometric
# frequencies, amplitude initializer_range * sqrt(2); layer 0's first min(4, heads) heads read those
# n pairs, the query rotated by offset * w_k, with offsets -1, +1, -2, +2 and a gain that gives the
# target a position logit of 5. numpy only; tests/scripts/reference-scripts.test.ts checks it
# against the TypeScript one.
import math

OFFSETS = (-1, 1, -2, 2)
PEAK_LOGIT = 5.0


def frequency(k, n, pairs):
    if k < n:
        return math.pi * (k + 0.5) / n
    return 10000.0 ** (-(k - n) / (pairs - n))


def local_attention(hidden, heads, positions, std, np):
    """Position embeddings [positions, hidden], and for each local head its offset and its query
    and key weights in PyTorch's nn.Linear layout [head_size out, hidden in]."""
    dh = hidden // heads
    if hidden % heads or dh % 2:
        raise ValueError("--init-attention local needs an even head size; hidden_size %d over %d heads" % (hidden, heads))
    n, pairs = dh // 2, hidden // 2
    w = np.array([frequency(k, n, pairs) for k in range(pairs)])
    t = np.arange(positions)[:, None]
    pos = np.zeros((positions, hidden))
    pos[:, 0::2] = std * math.sqrt(2) * np.sin(t * w[None])
    pos[:, 1::2] = std * math.sqrt(2) * np.cos(t * w[None])
    gain = math.sqrt(PEAK_LOGIT * math.sqrt(dh) / (n * 2.0 / 3.0))
    local = []
    for d in OFFSETS[:min(len(OFFSETS), heads)]:
        q = np.zeros((dh, hidden))
        k = np.zeros((dh, hidden))
        for j in range(n):
            a = w[j] * d
            k[2 * j, 2 * j] = gain
            k[2 * j + 1, 2 * j + 1] = gain
            q[2 * j, 2 * j] = gain * math.cos(a)
            q[2 * j, 2 * j + 1] = gain * math.sin(a)
            q[2 * j + 1, 2 * j] = -gain * math.sin(a)
            q[2 * j + 1, 2 * j + 1] = gain * math.cos(a)
        local.append((d, q, k))
    return pos, local
