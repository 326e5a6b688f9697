#!/usr/bin/env bash
# mlmkit on the CPU (wasm backend, matmuls through OpenBLAS) against the machine's own PyTorch,
# both pinned to the same two cores (`taskset -c 0,1`, 2 threads each): bert-mini, then bert-small
# when the time left allows, batch 32 x 128, through scripts/bench-peer.ts (alternating sides, fresh
# processes, OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset).
#
#   scripts/cpu-peer.sh [SECONDS [OUT_DIR]]
#
# SECONDS and OUT_DIR default to $CPU_PEER_SECONDS and $CPU_PEER_OUT, which scripts/gpu-run.sh sets
# when it runs this from the bundle's app folder on the GPU machine's host, with MLM_NODE (its
# Node.js), MLM_PYTHON (the python with torch) and, where that machine has no OpenBLAS, MLM_BLAS
# and LD_LIBRARY_PATH naming the bundle's copy. Without them: `node` from PATH, the first of
# python3, /usr/bin/python3, python that imports torch, and the system's BLAS. The PyTorch side is
# transformers' BertForMaskedLM when transformers imports, else bench-torch.py's torch.nn rebuild.
# Writes OUT_DIR/cpu-peer-CONFIG.json (bench-peer's JSON), OUT_DIR/summary.md (a table) and
# OUT_DIR/cpu-peer.log; stays within SECONDS (each config gets what is left, and is skipped when
# that is too little). Exit 0 when at least one config ran.
set -uo pipefail

BUDGET=${1:-${CPU_PEER_SECONDS:-}}
OUT=${2:-${CPU_PEER_OUT:-}}
[ -n "$BUDGET" ] && [ -n "$OUT" ] || { echo "usage: cpu-peer.sh SECONDS OUT_DIR (or CPU_PEER_SECONDS and CPU_PEER_OUT)" >&2; exit 2; }
[[ "$BUDGET" =~ ^[0-9]+$ ]] || { echo "cpu-peer: SECONDS must be a whole number, got '$BUDGET'" >&2; exit 2; }
START=$(date +%s)
APP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$OUT"
LOG=$OUT/cpu-peer.log
: > "$LOG"
say() { echo "cpu-peer: $*" | tee -a "$LOG" >&2; }
left() { echo $((BUDGET - ($(date +%s) - START))); }

NODE=${MLM_NODE:-node}
command -v "$NODE" >/dev/null || { say "no node binary ($NODE)"; exit 1; }
PRIV=$(mktemp -d "${TMPDIR:-/tmp}/mlmkit-cpu-peer.XXXXXX")
trap 'rm -rf "$PRIV"' EXIT
say "BLAS: ${MLM_BLAS:-searched for by mlmkit among the system libraries}"

# --- python with torch ----------------------------------------------------------------------------
# One start per candidate (importing torch takes seconds): its version, and whether transformers imports.
PY=
for p in "${MLM_PYTHON:-}" python3 /usr/bin/python3 python; do
  [ -n "$p" ] || continue
  if found=$("$p" -c '
import torch
try:
    import transformers
    impl = "transformers"
except Exception:
    impl = "nn"
print(torch.__version__, impl)' 2>/dev/null); then PY=$(command -v "$p"); break; fi
done
[ -n "$PY" ] || { say "no python with torch (tried \$MLM_PYTHON, python3, /usr/bin/python3, python)"; exit 1; }
IMPL=${found##* }
export MLM_PYTHON=$PY
say "python: $PY (torch ${found% *}), model: $IMPL ($(left) s left)"

PIN=()
if command -v taskset >/dev/null && taskset -c 0,1 true 2>/dev/null; then PIN=(taskset -c 0,1); else say "taskset is missing or cores 0,1 are not ours: not pinned"; fi
say "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) CPUs here, pinned to ${PIN[*]:-nothing}"

# --- the runs: bert-mini, then bert-small if the time left allows ---------------------------------
# Steps per side: bench-peer's minimum (2 measured + 1 warmup, 1 eval): a run cut by the time limit
# gives nothing. Needed seconds: rough figures for a current Xeon (PyTorch ~2.5 s a bert-mini step).
ran=0
for cfg in bert-mini bert-small; do
  steps=2; need=40
  [ "$cfg" = bert-small ] && need=60
  if [ "$(left)" -lt "$need" ]; then say "$cfg: skipped ($(left) s left, ~$need s needed)"; continue; fi
  say "$cfg: bench-peer, 1 run per side, $steps steps (time left $(left) s)"
  (cd "$APP" && timeout -k 5 "$(left)" "${PIN[@]}" "$NODE" --import tsx scripts/bench-peer.ts --config "configs/$cfg.json" \
      --runs 1 --steps "$steps" --warmup-steps 1 --eval-steps 1 --threads 2 --impl "$IMPL" --json) \
    > "$PRIV/$cfg.out" 2>> "$LOG"
  rc=$?
  line=$(grep '^{' "$PRIV/$cfg.out" | tail -n 1)
  if [ "$rc" = 0 ] && [ -n "$line" ]; then
    echo "$line" > "$OUT/cpu-peer-$cfg.json"
    ran=$((ran + 1))
  else
    say "$cfg: bench-peer failed (exit $rc; see cpu-peer.log)"
  fi
done

# --- the table ------------------------------------------------------------------------------------
"$NODE" -e '
  const fs = require("fs"), path = require("path");
  const [out, cpu, pin] = process.argv.slice(1);
  const rows = ["bert-mini", "bert-small"].map((c) => path.join(out, `cpu-peer-${c}.json`)).filter((f) => fs.existsSync(f)).map((f) => JSON.parse(fs.readFileSync(f, "utf8")));
  const fmt = (x) => Math.round(x).toLocaleString("en-US");
  const lines = [
    `# mlmkit (wasm + BLAS) vs PyTorch on the CPU, ${new Date().toISOString().slice(0, 10)}`, "",
    `${cpu}; both sides pinned to ${pin}, 2 threads; batch 32 x 128; training tokens/s (1 run per side).`, "",
    "| config | mlmkit tok/s | PyTorch tok/s | ratio | mlmkit matmuls | PyTorch BLAS | torch |",
    "| --- | --- | --- | --- | --- | --- | --- |",
    ...rows.map((r) => `| ${path.basename(r.config, ".json")} | ${fmt(r.mlmkit.train_tokens_per_second.median)} | ${fmt(r.pytorch.train_tokens_per_second.median)} | ${r.ratio_train_tokens_per_second.toFixed(2)}x | ${r.blas_kernels.mlmkit} | ${r.blas_kernels.pytorch} | ${r.pytorch.torch} |`),
    ...(rows.length ? [] : ["| (no config ran: see cpu-peer.log) | | | | | | |"]),
    "", ...rows.flatMap((r) => r.notes.map((n) => `- ${path.basename(r.config, ".json")}: ${n}`)),
  ];
  fs.writeFileSync(path.join(out, "summary.md"), lines.join("\n") + "\n");
  process.stdout.write(lines.join("\n") + "\n");
' "$OUT" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')" "${PIN[*]:-no pinning}"
say "done in $(($(date +%s) - START)) s"
[ "$ran" -gt 0 ]
