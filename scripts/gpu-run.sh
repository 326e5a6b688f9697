#!/usr/bin/env bash
# mlmkit's WebGPU backend on an NVIDIA GPU, against PyTorch on the same GPU, from the bundle that
# scripts/gpu-bundle.sh builds (Node.js, the project with its node_modules, Debian's Vulkan loader,
# OpenBLAS, prepared data). For a Linux x86-64 machine with NVIDIA's Vulkan driver, Python with
# torch (and transformers), possibly no Node.js, no internet. Run from the repository root:
#
#   scripts/gpu-run.sh [BUNDLE] [--allow-software] [--quick] [--bundled-node] [--keep] [--out DIR]
#                      [--time-limit S]
#
#   BUNDLE            the tarball (default dist/gpu-bundle.tar.xz)
#   --allow-software  run the WebGPU stages when the adapter is a software one (llvmpipe...);
#                     without it they are skipped (exit 3): the point is the GPU
#   --quick           a smoke test of every stage (bert-tiny at 4 x 32, 2 steps; 5-step training
#                     runs at batch 4): for checking the bundle on a machine without a GPU
#   --bundled-node    use the bundle's Node.js even when the machine has Node.js >= 20
#   --keep            keep the unpacked bundle (its path is printed)
#   --out DIR         where results go (default: $OUT when set, else ./gpu-results): a new or empty
#                     folder, or one this script made (it leaves a .mlmkit-gpu-run file there; the
#                     default folder holding only this script's names counts too); a folder holding
#                     anything else is refused (exit 2), since a run replaces its results there
#   --time-limit S    seconds for the whole run, unpacking included (default 520; 600 with
#                     --quick): each stage's own limit is cut to what is left, and a stage with
#                     under 10 s left is skipped. The GPU machine's device call allows 600 s a
#                     command: 520 leaves a margin for packing and for the stage that overruns.
#
# Stages, most important first (full mode; all at batch 32 x 128):
#   1. mlm bench --backend webgpu --config bert-mini bert-base, float32 (--rows-per-pass 32: the
#      whole batch in one pass, as PyTorch does): train tokens/s, dispatches, host and GPU ms per step
#   1b. scripts/check-fp16.ts: both f16 matmul variants (subgroup matrices, scalar) against float32
#      and their TFLOP/s (check-fp16.json)
#   2. the same with --precision fp16 (f16 matmuls on tensor cores); when mlm bench has no
#      --precision flag, or refuses fp16 here, that is recorded and the run goes on
#   3. scripts/bench-torch.py --device auto, one process: bert-base and bert-mini, strict float32
#      (TF32 off) and bf16 autocast (torch.autocast("cuda", torch.bfloat16)); transformers'
#      BertForMaskedLM when the package imports, else the torch.nn rebuild (the summary says which)
#   4. scripts/profile-step.ts --backend webgpu --config bert-base: GPU time of one training step
#      by kernel and by shader pipeline (profile-webgpu.txt, profile-webgpu.json)
#   5. mlm train --backend webgpu --config bert-base on the bundled data (Brown, WordPiece 30,522):
#      --precision fp16, then float32, same seed and steps (200, fewer when the time left at this
#      point is short: the same number for both, said in the log and the summary), one held-out
#      evaluation each (20 batches); the summary compares the held-out losses (fp16 within 2%)
#   6. scripts/cpu-peer.sh, when the bundle has it, with the time left: mlmkit (wasm + native
#      BLAS) against PyTorch on the same two pinned CPU cores. It runs from the bundle's app
#      folder with: PATH starting with the bundle's Node.js, MLM_NODE (that node), MLM_PYTHON (the
#      python with torch, when found), CPU_PEER_SECONDS (its time), CPU_PEER_OUT (a folder for its
#      files; a summary.md there goes into this run's summary), and MLM_BLAS set to the bundle's
#      OpenBLAS when the machine has no libopenblas.so.0 of its own
#   7. summary: one table (config, backend and precision, train tok/s, step ms, model TFLOP/s,
#      dispatches, host and GPU ms per step), the WebGPU/PyTorch ratios, the issue's targets met
#      or not, the fp16/fp32 training comparison, the profile's top kernels
# --quick: the same stages on bert-tiny at 4 x 32 (2 steps), the torch stage on whatever device
# torch has, the training runs 5 steps of bert-tiny at batch 4.
#
# Results. In DIR (the device tool returns at most 8 files from $OUT): gpu-run.log (everything
# printed, written as it goes), summary.md, summary.json and results.tar.gz, which holds
# results/: env.json, probe.json, bench-webgpu-fp32.json, bench-webgpu-fp16.json,
# torch-CONFIG-PRECISION.json, profile-webgpu.txt/.json, train-webgpu-PRECISION.json,
# train-metrics-PRECISION.jsonl, train-report-PRECISION.md, cpu-peer.log, cpu-peer/, and copies of
# the summaries. The results/ folder is filled as the run goes (so that a run stopped from outside
# still leaves its files) and removed after packing when DIR is the device tool's $OUT; elsewhere
# it is kept. A results/ folder and those four files left in DIR by an earlier run are replaced.
# Exit status: 0 when every stage gave its figures; 1 when one did not (the summary still prints
# what there is); 3 when the adapter is software and --allow-software is not given; 4 when there
# is no WebGPU adapter (3 and 4: the WebGPU stages are skipped, PyTorch and the CPU peer still run
# and the summary is written); 2 for bad usage.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUNDLE_TAR=
ALLOW_SOFTWARE=0
QUICK=0
BUNDLED_NODE=0
KEEP=0
OUTDIR=
TIME_LIMIT=

die() { echo "gpu-run: error: $1" >&2; exit "${2:-1}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --allow-software) ALLOW_SOFTWARE=1; shift ;;
    --quick) QUICK=1; shift ;;
    --bundled-node) BUNDLED_NODE=1; shift ;;
    --keep) KEEP=1; shift ;;
    --out) OUTDIR=${2:?--out needs a folder}; shift 2 ;;
    --time-limit) TIME_LIMIT=${2:?--time-limit needs seconds}; shift 2 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option '$1' (see --help)" 2 ;;
    *) [ -z "$BUNDLE_TAR" ] || die "one bundle only (got '$BUNDLE_TAR' and '$1')" 2; BUNDLE_TAR=$1; shift ;;
  esac
done
# Packed and removed afterwards only in the device tool's $OUT.
DEVICE_OUT=0
if [ -z "$OUTDIR" ] && [ -n "${OUT:-}" ]; then OUTDIR=$OUT; DEVICE_OUT=1; fi
BUNDLE_TAR=${BUNDLE_TAR:-dist/gpu-bundle.tar.xz}
[ -f "$BUNDLE_TAR" ] || die "no bundle at $BUNDLE_TAR: build it with scripts/gpu-bundle.sh (on a machine with npm ci done) and carry it here" 2
BUNDLE_TAR=$(cd "$(dirname "$BUNDLE_TAR")" && pwd)/$(basename "$BUNDLE_TAR")
DEFAULT_OUT=$PWD/gpu-results
OUTDIR=${OUTDIR:-$DEFAULT_OUT}
# What a run writes at the top of DIR, all it replaces there; its marker file.
OWN_NAMES=(results summary.md summary.json results.tar.gz results.tar.gz.tmp gpu-run.log)
MARKER=.mlmkit-gpu-run
[ ! -e "$OUTDIR" ] || [ -d "$OUTDIR" ] || die "--out $OUTDIR is a file, not a folder: pass a new or empty folder" 2
if [ -d "$OUTDIR" ] && [ ! -e "$OUTDIR/$MARKER" ]; then
  foreign=0
  while IFS= read -r -d '' entry; do
    name=${entry##*/}
    if [ "$OUTDIR" -ef "$DEFAULT_OUT" ] && [[ " ${OWN_NAMES[*]} " == *" $name "* ]]; then continue; fi
    foreign=1; break
  done < <(find "$OUTDIR" -mindepth 1 -maxdepth 1 -print0)
  [ "$foreign" = 0 ] || die "--out $OUTDIR holds files this script did not make (no $MARKER there): pass a new or empty folder" 2
fi
mkdir -p "$OUTDIR" || die "cannot create $OUTDIR" 2
OUTDIR=$(cd "$OUTDIR" && pwd)
echo "This folder holds the results of mlmkit's scripts/gpu-run.sh: a second run replaces them." > "$OUTDIR/$MARKER"
R=$OUTDIR/results
rm -rf "$R"
rm -f "$OUTDIR"/{summary.md,summary.json,results.tar.gz,gpu-run.log}
mkdir -p "$R"
exec > >(tee "$OUTDIR/gpu-run.log") 2>&1
TEE_PID=$!

# Stage parameters.
if [ "$QUICK" = 1 ]; then
  CONFIGS=(bert-tiny); BATCH=4; SEQ=32; STEPS=2; WARMUP=1; EVAL_STEPS=1; MAX_SECONDS=30
  TORCH_CONFIGS=(bert-tiny); PROFILE_CONFIG=bert-tiny
  TRAIN_CONFIG=bert-tiny; TRAIN_STEPS=5; MIN_TRAIN_STEPS=2; TRAIN_BATCH=4; EVAL_BATCHES=2; TRAIN_OVERHEAD=20
  T_BENCH=150; T_CHECK=120; CHECK_ARGS=(--small --iters 2); T_TORCH=150; T_PROFILE=150; T_TRAIN=200; PEER_RESERVE=60; TIME_LIMIT=${TIME_LIMIT:-600}
else
  CONFIGS=(bert-mini bert-base); BATCH=32; SEQ=128; STEPS=10; WARMUP=3; EVAL_STEPS=3; MAX_SECONDS=15
  TORCH_CONFIGS=(bert-base bert-mini); PROFILE_CONFIG=bert-base
  TRAIN_CONFIG=bert-base; TRAIN_STEPS=200; MIN_TRAIN_STEPS=20; TRAIN_BATCH=32; EVAL_BATCHES=20; TRAIN_OVERHEAD=30
  T_BENCH=110; T_CHECK=45; CHECK_ARGS=(--iters 10); T_TORCH=100; T_PROFILE=60; T_TRAIN=200; PEER_RESERVE=60; TIME_LIMIT=${TIME_LIMIT:-520}
fi
SEED=42
[[ "$TIME_LIMIT" =~ ^[0-9]+$ ]] || die "--time-limit takes whole seconds, got '$TIME_LIMIT'" 2
FAILED=()
NOTES=()
started=$SECONDS
stage() { echo; echo "=== $* ($((SECONDS - started)) s elapsed)"; }
left() { echo $((started + TIME_LIMIT - SECONDS)); }
# Runs a stage under `timeout` (coreutils; it signals the whole process group, so mlm bench's child
# processes too): the stage's own limit or what is left of --time-limit, whichever is less.
# Exit 124 = stopped by the limit; 125 = not started, under 10 s left.
limit() {
  local s=$1 left; left=$(left); shift
  [ "$left" -lt "$s" ] && s=$left
  if [ "$s" -lt 10 ]; then echo "gpu-run: skipped, ${left} s left of --time-limit $TIME_LIMIT" >&2; return 125; fi
  if command -v timeout >/dev/null; then timeout --kill-after=5 "$s" "$@"; else "$@"; fi
}
why() { case "$1" in 124|137) echo "exit $1: stopped by the time limit" ;; 125) echo "not run: no time left" ;; *) echo "exit $1" ;; esac; }
# The last line of a file that is a JSON document (Dawn prints validation messages on stdout).
last_json() { grep -E '^[[{]' "$1" | tail -n 1; }
# The one-line error an mlm command printed last (its stderr is in the given file).
mlm_error() { grep -E '^mlm: (error|failed): ' "$1" | tail -n 1 | sed -E 's/^mlm: (error|failed): //'; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mlmkit-gpu.XXXXXX") || die "mktemp failed"
finish() {
  # Pack what there is, also after an early exit or a signal.
  if [ -d "$R" ] && [ ! -f "$OUTDIR/results.tar.gz" ]; then
    cp "$OUTDIR/summary.md" "$OUTDIR/summary.json" "$R/" 2>/dev/null || true
    if tar -C "$OUTDIR" -czf "$OUTDIR/results.tar.gz.tmp" results && mv "$OUTDIR/results.tar.gz.tmp" "$OUTDIR/results.tar.gz"; then
      echo "gpu-run: packed $OUTDIR/results.tar.gz ($(stat -c %s "$OUTDIR/results.tar.gz") bytes)"
      [ "$DEVICE_OUT" = 1 ] && rm -rf "$R"
    fi
  fi
  if [ "$KEEP" = 1 ]; then echo "gpu-run: kept $WORK"; else rm -rf "$WORK"; fi
  # Let tee write the log's last lines before this script's exit ends the run.
  exec >&- 2>&-
  wait "$TEE_PID" 2>/dev/null || true
}
trap finish EXIT
trap 'echo "gpu-run: stopped by a signal"; exit 143' TERM INT
# Temporary files of every step (tsx's compile cache, wasm worker scripts) go away with $WORK.
mkdir -p "$WORK/tmp"
export TMPDIR=$WORK/tmp

# --- unpack ------------------------------------------------------------------------------------
stage "unpacking $BUNDLE_TAR ($(stat -c %s "$BUNDLE_TAR") bytes) into $WORK"
if ! tar -xJf "$BUNDLE_TAR" -C "$WORK" 2>/dev/null; then
  # No xz on this machine: Python's tarfile reads .tar.xz itself.
  rm -rf "${WORK:?}"/gpu-bundle
  # (tarfile's "data" filter, where this Python has it, keeps every member inside $WORK.)
  python3 -c 'import sys, tarfile; kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2], **kw)' "$BUNDLE_TAR" "$WORK" \
    || die "cannot unpack $BUNDLE_TAR (neither tar -J nor python3's tarfile worked)"
fi
B=$WORK/gpu-bundle
APP=$B/app
[ -f "$B/bundle.json" ] || die "$BUNDLE_TAR is not a gpu-bundle (no gpu-bundle/bundle.json)"

# --- Node.js -----------------------------------------------------------------------------------
NODE=
if [ "$BUNDLED_NODE" = 0 ] && command -v node >/dev/null; then
  v=$(node -p 'process.versions.node' 2>/dev/null || echo 0)
  if [ "${v%%.*}" -ge 20 ] 2>/dev/null; then NODE=$(command -v node); NODE_FROM="system, $v"; fi
fi
if [ -z "$NODE" ]; then
  NODE=$B/node/bin/node
  v=$("$NODE" -p 'process.versions.node' 2>&1) || die "the bundled Node.js does not start here: $v"
  NODE_FROM="bundled, $v"
fi
echo "node: $NODE ($NODE_FROM)"

# --- Vulkan: the bundled loader, NVIDIA's driver -------------------------------------------------
export LD_LIBRARY_PATH="$B/vulkan/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# dawn.node needs libstdc++ with GLIBCXX_3.4.30 (GCC 12); an older system gets the bundled one.
# The dynamic linker's cache (ldconfig may be outside a non-root PATH).
ldcache() { ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null || true; }
sys_stdcxx=$(ldcache | awk '/libstdc\+\+\.so\.6 .*x86-64/ { print $NF; exit }')
if [ -z "$sys_stdcxx" ] || ! grep -qa 'GLIBCXX_3\.4\.30' "$sys_stdcxx"; then
  echo "libstdc++: ${sys_stdcxx:-none found} lacks GLIBCXX_3.4.30; using the bundled one"
  export LD_LIBRARY_PATH="$B/compat:$LD_LIBRARY_PATH"
fi
ICD=
for d in /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/nvidia/share/vulkan/icd.d /usr/local/share/vulkan/icd.d; do
  for f in "$d"/nvidia_icd*.json; do
    if [ -f "$f" ]; then ICD=$f; break 2; fi
  done
done
if [ -z "$ICD" ]; then
  # Containers given the GPU without the 'graphics' capability may lack the ICD file but have the
  # driver library that implements Vulkan; describe it ourselves.
  glx=$(ldcache | awk '/libGLX_nvidia\.so\.0 .*x86-64/ { print $NF; exit }')
  for d in /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
    [ -z "$glx" ] && [ -f "$d/libGLX_nvidia.so.0" ] && glx=$d/libGLX_nvidia.so.0
  done
  if [ -n "$glx" ]; then
    ICD=$WORK/nvidia_icd.json
    printf '{"file_format_version": "1.0.0", "ICD": {"library_path": "%s", "api_version": "1.3.0"}}\n' "$glx" > "$ICD"
    echo "vulkan: no nvidia_icd.json found; wrote $ICD for $glx"
  fi
fi
# NVIDIA's driver reaches libglvnd's EGL (bundled); tell it where NVIDIA's EGL vendor file is.
if [ -z "${__EGL_VENDOR_LIBRARY_FILENAMES:-}" ]; then
  for f in /usr/share/glvnd/egl_vendor.d/10_nvidia.json /etc/glvnd/egl_vendor.d/10_nvidia.json /usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json; do
    if [ -f "$f" ]; then export __EGL_VENDOR_LIBRARY_FILENAMES=$f; echo "egl: NVIDIA vendor file $f (__EGL_VENDOR_LIBRARY_FILENAMES)"; break; fi
  done
fi
if [ -n "$ICD" ]; then
  export VK_DRIVER_FILES=$ICD VK_ICD_FILENAMES=$ICD
  echo "vulkan: NVIDIA ICD $ICD (VK_DRIVER_FILES, VK_ICD_FILENAMES)"
else
  echo "vulkan: no NVIDIA ICD (nvidia_icd*.json or libGLX_nvidia.so.0); the loader uses whatever drivers are installed"
fi
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
if command -v nvidia-smi >/dev/null; then
  # A driver in a bad state can hang nvidia-smi: it gets 20 s, not the run's time.
  limit 20 nvidia-smi -L
  limit 20 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
else
  echo "nvidia-smi: not found"
fi

# --- Python with torch ---------------------------------------------------------------------------
PY=
for p in "${PYTHON:-}" python3 /usr/bin/python3 python; do
  [ -n "$p" ] && command -v "$p" >/dev/null || continue
  if "$p" -c 'import torch' 2>/dev/null; then PY=$(command -v "$p"); break; fi
done
IMPL=nn
if [ -n "$PY" ]; then
  echo "python: $PY, $("$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1 | tail -n 1)"
  if "$PY" -c 'import transformers' 2>/dev/null; then IMPL=transformers; fi
  echo "pytorch model: $([ "$IMPL" = transformers ] && echo "transformers' BertForMaskedLM" || echo "the torch.nn rebuild of BertForMaskedLM (transformers does not import)")"
else
  echo "python: none with torch (tried \$PYTHON, python3, /usr/bin/python3, python): no PyTorch figures"
fi

# --- probe: is the adapter the GPU? --------------------------------------------------------------
stage "WebGPU adapter"
probe_args=()
[ "$ALLOW_SOFTWARE" = 1 ] && probe_args+=(--allow-software)
(cd "$APP" && limit 120 "$NODE" --import tsx scripts/gpu-report.ts probe "$R/probe.json" "${probe_args[@]}")
PROBE_RC=$?
# Without a usable adapter the WebGPU stages (1, 1b, 2, 4, 5) are skipped; PyTorch and the CPU
# peer, which need none, still run, and the exit status is the probe's (3, 4; else 1).
WEBGPU=1
if [ "$PROBE_RC" != 0 ]; then
  WEBGPU=0
  FAILED+=("WebGPU: $(case "$PROBE_RC" in 3) echo "the adapter is a software one (--allow-software not given)" ;; 4) echo "no adapter" ;; *) echo "the probe failed ($(why "$PROBE_RC"))" ;; esac): the WebGPU stages were skipped")
  echo "gpu-run: no usable WebGPU adapter: skipping the WebGPU stages; PyTorch and the CPU peer still run"
fi
ADAPTER=$("$NODE" -p "require('$R/probe.json').adapter" 2>/dev/null || echo null)
SOFTWARE=$("$NODE" -p "require('$R/probe.json').software" 2>/dev/null || echo null)


write_env() {
  "$NODE" -e '
    const fs = require("fs");
    const [file, bundle, node, adapter, software, icd, py, impl, quick, cfg, steps, batch, seq, evalBatches, seed, limit] = process.argv.slice(1);
    let smi = null;
    try { smi = require("child_process").execSync("nvidia-smi -L", { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"], timeout: 20000 }).trim(); } catch {}
    fs.writeFileSync(file, JSON.stringify({
      bundle: JSON.parse(fs.readFileSync(bundle, "utf8")), node, adapter, adapter_software: software === "true",
      vulkan_icd: icd || null, nvidia_smi: smi, python: py || null, pytorch_impl: impl, quick: quick === "1", time_limit_s: Number(limit),
      train: { config: cfg, steps: Number(steps), batch_size: Number(batch), seq_len: Number(seq), eval_batches: Number(evalBatches), seed: Number(seed), data_label: "Brown, WordPiece 30522" },
    }, null, 2) + "\n");
  ' "$R/env.json" "$B/bundle.json" "$NODE_FROM" "$ADAPTER" "$SOFTWARE" "$ICD" "$PY" "$IMPL" "$QUICK" "$TRAIN_CONFIG" "$TRAIN_STEPS" "$TRAIN_BATCH" 128 "$EVAL_BATCHES" "$SEED" "$TIME_LIMIT"
}
write_env
# Precision statuses for the summary: ran | flag missing | refused: why.
declare -A PRECISION_STATUS=()
PRECISION_FLAG=1

# --- 1, 2. mlm bench on webgpu, fp32 then fp16 ----------------------------------------------------
# --rows-per-pass: the whole batch in one pass, as PyTorch does. mlmkit cannot ask WebGPU how much
# memory the GPU has and by default budgets ~6 GB a pass (bert-base: 3 rows a pass, 11 passes).
run_bench() {
  local prec=$1 extra=()
  [ "$prec" = fp32 ] || extra=(--precision "$prec")
  if [ "$prec" != fp32 ] && [ "$PRECISION_FLAG" = 0 ]; then
    PRECISION_STATUS[$prec]="flag missing (mlm has no --precision)"; return
  fi
  local args=(bench --backend webgpu --config "${CONFIGS[@]}" --batch-size "$BATCH" --seq-len "$SEQ" --steps "$STEPS"
    --warmup-steps "$WARMUP" --eval-steps "$EVAL_STEPS" --max-seconds "$MAX_SECONDS" --rows-per-pass "$BATCH" --seed "$SEED" --no-matmul-peak --json "${extra[@]}")
  stage "mlm bench, webgpu $prec: ${CONFIGS[*]} at $BATCH x $SEQ"
  echo "\$ mlm ${args[*]}"
  # stdout (the JSON) to a file, stderr (progress, errors) to the log and a file.
  (cd "$APP" && limit "$T_BENCH" "$NODE" scripts/mlm.mjs "${args[@]}" 2>&1 >"$WORK/bench-$prec.out") | tee "$WORK/bench-$prec.err"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" = 2 ] && grep -q 'Unknown argument: precision' "$WORK/bench-$prec.err"; then
    PRECISION_FLAG=0
    PRECISION_STATUS[$prec]="flag missing (mlm bench has no --precision)"
    echo "gpu-run: mlm bench has no --precision flag: no $prec figures"
    return
  fi
  if last_json "$WORK/bench-$prec.out" > "$R/bench-webgpu-$prec.json" && [ -s "$R/bench-webgpu-$prec.json" ]; then
    PRECISION_STATUS[$prec]=ran
    [ "$rc" = 0 ] || FAILED+=("mlm bench $prec: $(why "$rc")")
  else
    rm -f "$R/bench-webgpu-$prec.json"
    local err; err=$(mlm_error "$WORK/bench-$prec.err")
    if [ "$rc" = 2 ] && [ "$prec" != fp32 ]; then
      PRECISION_STATUS[$prec]="refused: ${err:-exit 2}"
      echo "gpu-run: $prec refused: ${err:-exit 2}"
    else
      PRECISION_STATUS[$prec]="failed: ${err:-$(why "$rc")}"
      FAILED+=("mlm bench $prec printed no result ($(why "$rc")${err:+: $err})")
    fi
  fi
}
[ "$WEBGPU" = 1 ] && run_bench fp32

# --- 1b. the f16 matmul kernels against float32, and their speed ------------------------------------
# The only check that the subgroup-matrix (tensor-core) kernel compiles on this driver and is right;
# both variants' max error against its bound and TFLOP/s at 4096^3 and bert-base's FFN shapes.
if [ "$WEBGPU" = 1 ]; then
  stage "scripts/check-fp16.ts ${CHECK_ARGS[*]}"
  (cd "$APP" && limit "$T_CHECK" "$NODE" --import tsx scripts/check-fp16.ts --json "${CHECK_ARGS[@]}" 2>"$WORK/check-fp16.err" >"$WORK/check-fp16.out")
  rc=$?
  cat "$WORK/check-fp16.err"
  last_json "$WORK/check-fp16.out" > "$R/check-fp16.json" && cat "$R/check-fp16.json"
  [ "$rc" = 0 ] || FAILED+=("check-fp16: $(why "$rc")")

  run_bench fp16
fi

# --- 3. PyTorch ----------------------------------------------------------------------------------
if [ -n "$PY" ]; then
  torch_cfgs=()
  for c in "${TORCH_CONFIGS[@]}"; do torch_cfgs+=("$APP/configs/$c.json"); done
  torch_args=(--config "${torch_cfgs[@]}" --precision fp32 bf16 --batch-size "$BATCH" --seq-len "$SEQ" --steps "$STEPS" --warmup-steps "$WARMUP"
    --eval-steps "$EVAL_STEPS" --threads "$(nproc 2>/dev/null || echo 2)" --device auto --impl "$IMPL" --json)
  stage "PyTorch ${TORCH_CONFIGS[*]}, fp32 (TF32 off) and bf16 autocast: bench-torch.py ${torch_args[*]:${#torch_cfgs[@]}+1}"
  limit "$T_TORCH" "$PY" "$APP/scripts/bench-torch.py" "${torch_args[@]}" > "$WORK/torch.out"
  rc=$?
  # One JSON line per run, as each finishes: torch-CONFIG-PRECISION.json.
  "$PY" - "$WORK/torch.out" "$R" <<'PY'
import json, os, sys
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    try:
        r = json.loads(line)
    except ValueError:
        continue
    name = os.path.basename(r["config"]).replace(".json", "")
    with open(os.path.join(sys.argv[2], "torch-%s-%s.json" % (name, r["precision"])), "w") as f:
        json.dump(r, f, indent=2)
    print("pytorch %s %s on %s: %.0f train tok/s, %.1f ms/step" % (name, r["precision"], r["device"], r["train_tokens_per_second"], r["train_step_ms_median"]))
PY
  for c in "${TORCH_CONFIGS[@]}"; do
    for p in fp32 bf16; do
      [ -f "$R/torch-$c-$p.json" ] || FAILED+=("PyTorch $c $p: no result ($(why "$rc"))")
    done
  done
else
  FAILED+=("no PyTorch (no python with torch)")
fi

# --- 4. where a bert-base step's GPU time goes -----------------------------------------------------
if [ "$WEBGPU" = 1 ]; then
  PROFILE_ARGS=(--backend webgpu --config "$PROFILE_CONFIG" --batch-size "$BATCH" --seq-len "$SEQ" --top 40 --json "$R/profile-webgpu.json")
  stage "scripts/profile-step.ts ${PROFILE_ARGS[*]}"
  (cd "$APP" && limit "$T_PROFILE" "$NODE" --import tsx scripts/profile-step.ts "${PROFILE_ARGS[@]}") > "$R/profile-webgpu.txt" 2>&1
  rc=$?
  case "$rc" in
    0) grep -v '^Warning' "$R/profile-webgpu.txt" | head -n 20 ;;
    *) FAILED+=("profile-step: $(why "$rc")"); tail -n 5 "$R/profile-webgpu.txt" ;;
  esac
fi

# --- 5. mlm train, fp16 and fp32, the same steps ----------------------------------------------------
# Steps: TRAIN_STEPS, or fewer when the time left (less the cpu-peer stage's reserve) does not fit
# two runs at the step time mlm bench measured for this config (x 1.25: real data, evaluation).
HAVE_PEER=0
[ -f "$APP/scripts/cpu-peer.sh" ] && HAVE_PEER=1
reserve=$((HAVE_PEER * PEER_RESERVE + 10))
step_ms=$(CFG="$TRAIN_CONFIG" "$NODE" -e '
  const fs = require("fs"); let ms = 0;
  for (const f of process.argv.slice(1)) {
    let doc; try { doc = JSON.parse(fs.readFileSync(f, "utf8")); } catch { continue; }
    for (const r of [].concat(doc)) if (String(r.config).endsWith(process.env.CFG + ".json") && r.train_step_ms_median > ms) ms = r.train_step_ms_median;
  }
  console.log(Math.round(ms));
' "$R/bench-webgpu-fp32.json" "$R/bench-webgpu-fp16.json" 2>/dev/null || echo 0)
# fp16 runs unless mlm has no --precision flag or mlm bench refused fp16 here.
TRAIN_RUNS=(fp32)
if [ "$WEBGPU" = 0 ]; then
  TRAIN_RUNS=()
elif [ "$PRECISION_FLAG" = 0 ]; then
  PRECISION_STATUS[train-fp16]="flag missing (mlm has no --precision)"
  echo "gpu-run: mlm has no --precision flag: no fp16 training run"
elif [[ "${PRECISION_STATUS[fp16]:-}" == refused* ]]; then
  PRECISION_STATUS[train-fp16]="not run: mlm bench ${PRECISION_STATUS[fp16]}"
  echo "gpu-run: no fp16 training run (mlm bench ${PRECISION_STATUS[fp16]})"
else
  TRAIN_RUNS=(fp16 fp32)
fi
avail=$(( $(left) - reserve ))
steps=$TRAIN_STEPS
if [ "$step_ms" -gt 0 ] && [ "${#TRAIN_RUNS[@]}" -gt 0 ]; then
  fit=$(( ((avail / ${#TRAIN_RUNS[@]} - TRAIN_OVERHEAD) * 1000) / (step_ms * 5 / 4) ))
  [ "$fit" -lt "$steps" ] && steps=$fit
fi
if [ "${#TRAIN_RUNS[@]}" = 0 ]; then
  :
elif [ "$steps" -lt "$MIN_TRAIN_STEPS" ]; then
  NOTES+=("training runs skipped: ${avail} s left for ${#TRAIN_RUNS[@]} run(s) of ${step_ms} ms steps")
  FAILED+=("mlm train: no time left for the fp16/fp32 comparison")
  TRAIN_RUNS=()
elif [ "$steps" -lt "$TRAIN_STEPS" ]; then
  NOTES+=("training runs cut to $steps steps each (from $TRAIN_STEPS): ${avail} s left for ${#TRAIN_RUNS[@]} run(s) at ~${step_ms} ms a step (mlm bench)")
  echo "gpu-run: ${NOTES[-1]}"
fi
TRAIN_STEPS=$steps
write_env
for prec in "${TRAIN_RUNS[@]}"; do
  extra=()
  [ "$PRECISION_FLAG" = 1 ] && extra=(--precision "$prec")
  # The first of two runs gets half of what is left, the last all of it, less the reserve.
  cap=$(( $(left) - reserve ))
  [ "$prec" = fp16 ] && cap=$(( cap / 2 ))
  [ "$cap" -gt "$T_TRAIN" ] && cap=$T_TRAIN
  args=(train --backend webgpu --config "configs/$TRAIN_CONFIG.json" --data "$B/data/brown-128" --out "$WORK/train-$prec"
    --steps "$TRAIN_STEPS" --batch-size "$TRAIN_BATCH" --rows-per-pass "$TRAIN_BATCH" --eval-every 0 --eval-batches "$EVAL_BATCHES"
    --save-every 0 --log-every 10 --seed "$SEED" --no-progress --json "${extra[@]}")
  stage "mlm train, webgpu $prec, $TRAIN_CONFIG: $TRAIN_STEPS steps of $TRAIN_BATCH x 128 (at most $cap s)"
  echo "\$ mlm ${args[*]}"
  t0=$SECONDS
  (cd "$APP" && limit "$cap" "$NODE" scripts/mlm.mjs "${args[@]}" 2>&1 >"$WORK/train-$prec.out") | tee "$WORK/train-$prec.err"
  rc=${PIPESTATUS[0]}
  # The metrics of the steps done, also when the run was stopped (the summary then uses them).
  cp "$WORK/train-$prec/metrics.jsonl" "$R/train-metrics-$prec.jsonl" 2>/dev/null || true
  if [ "$rc" = 0 ] && last_json "$WORK/train-$prec.out" > "$R/train-webgpu-$prec.json" && [ -s "$R/train-webgpu-$prec.json" ]; then
    cp "$WORK/train-$prec/report.md" "$R/train-report-$prec.md" 2>/dev/null || true
    PRECISION_STATUS[train-$prec]=ran
    "$NODE" -e '
      const r = require(process.argv[1]); const tokens = Number(process.argv[2]) * 128;
      console.log(`mlm train ${process.argv[4]}: ${r.step} steps in ${process.argv[3]} s wall; ${Math.round(r.tokens_per_second)} train tok/s, ${(1000 * tokens / r.tokens_per_second).toFixed(1)} ms/step (all steps); train loss ${r.train_loss?.toFixed(4)}, held-out loss ${r.eval_loss?.toFixed(4)}`);
    ' "$R/train-webgpu-$prec.json" "$TRAIN_BATCH" "$((SECONDS - t0))" "$prec"
  else
    rm -f "$R/train-webgpu-$prec.json"
    err=$(mlm_error "$WORK/train-$prec.err")
    if [ "$rc" = 2 ] && [ "$prec" != fp32 ]; then
      PRECISION_STATUS[train-$prec]="refused: ${err:-exit 2}"
    else
      PRECISION_STATUS[train-$prec]="failed: ${err:-$(why "$rc")}"
      FAILED+=("mlm train $prec: $(why "$rc")${err:+: $err}")
    fi
  fi
  rm -rf "$WORK/train-$prec"   # its checkpoint (GBs for bert-base with the optimizer state)
done

# --- 6. the CPU peer: mlmkit wasm + BLAS against PyTorch on two pinned cores ------------------------
if [ "$HAVE_PEER" = 1 ]; then
  peer_s=$(( $(left) - 10 ))
  stage "scripts/cpu-peer.sh (${peer_s} s)"
  mkdir -p "$R/cpu-peer"
  peer_env=(PATH="$(dirname "$NODE"):$PATH" MLM_NODE="$NODE" CPU_PEER_SECONDS="$((peer_s - 5))" CPU_PEER_OUT="$R/cpu-peer")
  [ -n "$PY" ] && peer_env+=(MLM_PYTHON="$PY")
  if ldcache | grep -q 'libopenblas\.so\.0 .*x86-64'; then
    echo "blas: the machine's libopenblas.so.0"
  elif [ -f "$B/blas/libopenblas.so.0" ]; then
    peer_env+=(MLM_BLAS="$B/blas/libopenblas.so.0" LD_LIBRARY_PATH="$B/blas:$LD_LIBRARY_PATH")
    echo "blas: no libopenblas.so.0 here; MLM_BLAS=$B/blas/libopenblas.so.0 (the bundle's)"
  fi
  (cd "$APP" && limit "$peer_s" env "${peer_env[@]}" bash scripts/cpu-peer.sh) 2>&1 | tee "$R/cpu-peer.log"
  rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || FAILED+=("cpu-peer.sh: $(why "$rc")")
else
  echo; echo "gpu-run: no scripts/cpu-peer.sh in the bundle: no CPU peer stage"
fi

# --- 7. summary -----------------------------------------------------------------------------------
stage "summary"
{
  for k in "${!PRECISION_STATUS[@]}"; do printf '%s\t%s\n' "$k" "${PRECISION_STATUS[$k]}"; done
} > "$R/precision-status.tsv"
printf '%s\n' "${NOTES[@]}" > "$R/notes.txt"
printf '%s\n' "${FAILED[@]}" > "$R/failed.txt"
(cd "$APP" && "$NODE" --import tsx scripts/gpu-report.ts summary "$R" "$OUTDIR") || FAILED+=("the summary lists problems")
echo
echo "results in $OUTDIR ($((SECONDS - started)) s in all)"
if [ "$WEBGPU" = 1 ] && [ "$SOFTWARE" = true ]; then echo "NOTE: the WebGPU adapter was SOFTWARE ($ADAPTER): these figures are not the GPU's"; fi
if [ "${#FAILED[@]}" -gt 0 ]; then
  printf 'gpu-run: FAILED: %s\n' "${FAILED[@]}"
  case "$PROBE_RC" in 3|4) exit "$PROBE_RC" ;; esac
  exit 1
fi
echo "gpu-run: done"
