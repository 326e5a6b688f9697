#!/usr/bin/env bash
# mlmkit's WebGPU backend on an NVIDIA GPU, against PyTorch on the same GPU, from the bundle that
# scripts/gpu-bundle.sh builds (Node.js, the project with its node_modules, Debian's Vulkan loader,
# prepared data). For a Linux x86-64 machine with NVIDIA's Vulkan driver, Python with torch (and
# transformers), possibly no Node.js, no internet. Run from the repository root:
#
#   scripts/gpu-run.sh [BUNDLE] [--allow-software] [--quick] [--bundled-node] [--keep] [--out DIR]
#
#   BUNDLE            the tarball (default dist/gpu-bundle.tar.xz)
#   --allow-software  go on when the WebGPU adapter is a software one (llvmpipe...); without it
#                     that is an error: the point is the GPU
#   --quick           a smoke test (bert-tiny + bert-mini at 4 x 32, 2 steps; a 5-step bert-mini
#                     training run at batch 4): for checking the bundle on a machine without a GPU
#   --bundled-node    use the bundle's Node.js even when the machine has Node.js >= 20
#   --keep            keep the unpacked bundle (its path is printed)
#   --out DIR         where results go (default: $OUT when set, else ./gpu-results)
#   --time-limit S    seconds for the whole run (default 400; 900 with --quick): each stage's own
#                     limit is cut to what is left, and a stage with under 10 s left is skipped
#
# What runs (full mode):
#   1. mlm bench --backend webgpu --config bert-mini bert-base bert-base-nodropout --batch-size 32
#      --seq-len 128 --rows-per-pass 32 (bert-base-nodropout: bert-base with dropout 0, written at
#      run time; see below)
#   2. mlm train --backend webgpu --config bert-mini, 200 steps of 32 x 128 on the bundled data
#      (Brown, WordPiece 30,522), one evaluation and one checkpoint at the end
#   3. scripts/bench-torch.py --device auto for the same three configs at 32 x 128: strict fp32
#      (TF32 off), then with TF32 allowed (labelled); transformers' BertForMaskedLM when the
#      package imports, else the torch.nn rebuild (the summary says which)
#   4. scripts/profile-step.ts --backend webgpu for the training config: GPU time per kernel of one
#      step (profile-webgpu.txt)
#   5. one table (config, backend, train tok/s, step ms, model TFLOP/s, adapter/device) and the
#      WebGPU/PyTorch ratio of train tokens/s per config
# Results: gpu-run.log (everything printed), env.json, probe.json, bench-webgpu.json,
# train-webgpu.json, train-metrics.jsonl, torch-CONFIG-fp32.json, torch-CONFIG-tf32.json,
# profile-webgpu.txt, summary.json, summary.md. Each stage has a time limit and all share --time-limit, so the whole
# run stays within ~7 minutes (plus unpacking, ~10 s).
# Exit status: 0 when every stage gave its figures; 1 when one did not (the summary still prints
# what there is); 3 when the adapter is software and --allow-software is not given; 4 when there
# is no WebGPU adapter; 2 for bad usage.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUNDLE_TAR=
ALLOW_SOFTWARE=0
QUICK=0
BUNDLED_NODE=0
KEEP=0
RESULTS=${OUT:-}
TIME_LIMIT=

die() { echo "gpu-run: error: $*" >&2; exit "${2:-1}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --allow-software) ALLOW_SOFTWARE=1; shift ;;
    --quick) QUICK=1; shift ;;
    --bundled-node) BUNDLED_NODE=1; shift ;;
    --keep) KEEP=1; shift ;;
    --out) RESULTS=${2:?--out needs a folder}; shift 2 ;;
    --time-limit) TIME_LIMIT=${2:?--time-limit needs seconds}; shift 2 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option '$1' (see --help)" 2 ;;
    *) [ -z "$BUNDLE_TAR" ] || die "one bundle only (got '$BUNDLE_TAR' and '$1')" 2; BUNDLE_TAR=$1; shift ;;
  esac
done
BUNDLE_TAR=${BUNDLE_TAR:-dist/gpu-bundle.tar.xz}
[ -f "$BUNDLE_TAR" ] || die "no bundle at $BUNDLE_TAR: build it with scripts/gpu-bundle.sh (on a machine with npm ci done) and carry it here" 2
BUNDLE_TAR=$(cd "$(dirname "$BUNDLE_TAR")" && pwd)/$(basename "$BUNDLE_TAR")
RESULTS=${RESULTS:-$PWD/gpu-results}
mkdir -p "$RESULTS" || die "cannot create $RESULTS" 2
RESULTS=$(cd "$RESULTS" && pwd)
rm -f "$RESULTS"/{env,probe,bench-webgpu,train-webgpu,summary}.json "$RESULTS"/torch-*.json "$RESULTS"/train-metrics.jsonl "$RESULTS"/summary.md
exec > >(tee "$RESULTS/gpu-run.log") 2>&1
TEE_PID=$!

# Stage parameters.
if [ "$QUICK" = 1 ]; then
  CONFIGS=(bert-tiny bert-mini); BATCH=4; SEQ=32; STEPS=2; WARMUP=1; EVAL_STEPS=1; MAX_SECONDS=30
  TRAIN_CONFIG=bert-mini; TRAIN_STEPS=5; TRAIN_BATCH=4; EVAL_BATCHES=2
  T_BENCH=420; T_TRAIN=300; T_TORCH=120; T_PROFILE=120; TIME_LIMIT=${TIME_LIMIT:-900}
else
  CONFIGS=(bert-mini bert-base); BATCH=32; SEQ=128; STEPS=10; WARMUP=3; EVAL_STEPS=3; MAX_SECONDS=30
  TRAIN_CONFIG=bert-mini; TRAIN_STEPS=200; TRAIN_BATCH=32; EVAL_BATCHES=20
  T_BENCH=160; T_TRAIN=150; T_TORCH=40; T_PROFILE=60; TIME_LIMIT=${TIME_LIMIT:-400}
fi
[[ "$TIME_LIMIT" =~ ^[0-9]+$ ]] || die "--time-limit takes whole seconds, got '$TIME_LIMIT'" 2
FAILED=()
started=$SECONDS
stage() { echo; echo "=== $* ($((SECONDS - started)) s elapsed)"; }
# Runs a stage under `timeout` (coreutils; it signals the whole process group, so mlm bench's child
# processes too): the stage's own limit or what is left of --time-limit, whichever is less.
# Exit 124 = stopped by the limit; 125 = not started, under 10 s left.
limit() {
  local s=$1 left=$((started + TIME_LIMIT - SECONDS)); shift
  [ "$left" -lt "$s" ] && s=$left
  if [ "$s" -lt 10 ]; then echo "gpu-run: skipped, ${left} s left of --time-limit $TIME_LIMIT" >&2; return 125; fi
  if command -v timeout >/dev/null; then timeout --kill-after=10 "$s" "$@"; else "$@"; fi
}
why() { case "$1" in 124|137) echo "exit $1: stopped by the time limit" ;; 125) echo "not run: no time left" ;; *) echo "exit $1" ;; esac; }
# The last line of a file that is a JSON document (Dawn prints validation messages on stdout).
last_json() { grep -E '^[[{]' "$1" | tail -n 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mlmkit-gpu.XXXXXX") || die "mktemp failed"
cleanup() {
  if [ "$KEEP" = 1 ]; then echo "gpu-run: kept $WORK"; else rm -rf "$WORK"; fi
  # Let tee write the log's last lines before this script's exit ends the run.
  exec >&- 2>&-
  wait "$TEE_PID" 2>/dev/null || true
}
trap cleanup EXIT
# Temporary files of every step (tsx's compile cache, wasm worker scripts) go away with $WORK.
mkdir -p "$WORK/tmp"
export TMPDIR=$WORK/tmp

# --- unpack ------------------------------------------------------------------------------------
stage "unpacking $BUNDLE_TAR ($(stat -c %s "$BUNDLE_TAR") bytes) into $WORK"
if ! tar -xJf "$BUNDLE_TAR" -C "$WORK" 2>/dev/null; then
  # No xz on this machine: Python's tarfile reads .tar.xz itself.
  rm -rf "${WORK:?}"/gpu-bundle
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2])' "$BUNDLE_TAR" "$WORK" \
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

# The largest config once more with dropout off (hidden and attention): TF.js draws dropout masks
# in JavaScript and uploads them (~0.6 GB a step for bert-base at 32 x 128), so this row shows the
# GPU's own speed beside the full one; PyTorch runs the same config.
NODROP=${CONFIGS[${#CONFIGS[@]}-1]}-nodropout
"$NODE" -e '
  const fs = require("fs"); const c = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
  c.hidden_dropout_prob = 0; c.attention_probs_dropout_prob = 0;
  fs.writeFileSync(process.argv[2], JSON.stringify(c, null, 2) + "\n");
' "$APP/configs/${CONFIGS[${#CONFIGS[@]}-1]}.json" "$APP/configs/$NODROP.json" || die "cannot write $NODROP.json"
CONFIGS+=("$NODROP")

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
  nvidia-smi -L
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
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
(cd "$APP" && limit 120 "$NODE" --import tsx scripts/gpu-report.ts probe "$RESULTS/probe.json" "${probe_args[@]}")
rc=$?
[ "$rc" = 0 ] || exit "$rc"
ADAPTER=$("$NODE" -p "require('$RESULTS/probe.json').adapter")
SOFTWARE=$("$NODE" -p "require('$RESULTS/probe.json').software")

write_env() {
  "$NODE" -e '
    const fs = require("fs");
    const [file, bundle, node, adapter, software, icd, py, impl, quick, cfg, steps, batch, seq, logEvery] = process.argv.slice(1);
    let smi = null;
    try { smi = require("child_process").execSync("nvidia-smi -L", { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim(); } catch {}
    fs.writeFileSync(file, JSON.stringify({
      bundle: JSON.parse(fs.readFileSync(bundle, "utf8")), node, adapter, adapter_software: software === "true",
      vulkan_icd: icd || null, nvidia_smi: smi, python: py || null, pytorch_impl: impl, quick: quick === "1",
      train: { config: cfg, steps: Number(steps), batch_size: Number(batch), seq_len: Number(seq), log_every: Number(logEvery), data_label: "Brown, WordPiece 30522" },
    }, null, 2) + "\n");
  ' "$RESULTS/env.json" "$B/bundle.json" "$NODE_FROM" "$ADAPTER" "$SOFTWARE" "$ICD" "$PY" "$IMPL" "$QUICK" "$TRAIN_CONFIG" "$TRAIN_STEPS" "$TRAIN_BATCH" 128 10
}
write_env

# --- 1. mlm bench on webgpu ----------------------------------------------------------------------
stage "mlm bench --backend webgpu --config ${CONFIGS[*]} --batch-size $BATCH --seq-len $SEQ"
# --rows-per-pass: the whole batch in one pass, as PyTorch does. mlmkit cannot ask WebGPU how much
# memory the GPU has and by default budgets ~6 GB a pass (bert-base: 3 rows a pass, 11 passes).
mlm_bench=(bench --backend webgpu --config "${CONFIGS[@]}" --batch-size "$BATCH" --seq-len "$SEQ" --steps "$STEPS"
  --warmup-steps "$WARMUP" --eval-steps "$EVAL_STEPS" --max-seconds "$MAX_SECONDS" --rows-per-pass "$BATCH" --no-matmul-peak --json)
echo "\$ mlm ${mlm_bench[*]}"
(cd "$APP" && limit "$T_BENCH" "$NODE" scripts/mlm.mjs "${mlm_bench[@]}") > "$WORK/bench.out"
rc=$?
if last_json "$WORK/bench.out" > "$RESULTS/bench-webgpu.json" && [ -s "$RESULTS/bench-webgpu.json" ]; then
  [ "$rc" = 0 ] || FAILED+=("mlm bench: $(why $rc)")
else
  rm -f "$RESULTS/bench-webgpu.json"
  FAILED+=("mlm bench printed no result ($(why $rc))")
fi

# --- 2. mlm train on webgpu ----------------------------------------------------------------------
stage "mlm train --backend webgpu --config $TRAIN_CONFIG: $TRAIN_STEPS steps of $TRAIN_BATCH x 128"
mlm_train=(train --backend webgpu --config "configs/$TRAIN_CONFIG.json" --data "$B/data/brown-128" --out "$WORK/train-run"
  --steps "$TRAIN_STEPS" --batch-size "$TRAIN_BATCH" --rows-per-pass "$TRAIN_BATCH" --eval-every 0 --eval-batches "$EVAL_BATCHES"
  --save-every 0 --log-every 10 --no-progress --json)
echo "\$ mlm ${mlm_train[*]}"
t0=$SECONDS
(cd "$APP" && limit "$T_TRAIN" "$NODE" scripts/mlm.mjs "${mlm_train[@]}") > "$WORK/train.out"
rc=$?
# The metrics of the steps done, also when the run was stopped (the summary then uses them).
cp "$WORK/train-run/metrics.jsonl" "$RESULTS/train-metrics.jsonl" 2>/dev/null || true
if last_json "$WORK/train.out" > "$RESULTS/train-webgpu.json" && [ -s "$RESULTS/train-webgpu.json" ] && [ "$rc" = 0 ]; then
  cp "$WORK/train-run/report.md" "$RESULTS/train-report.md" 2>/dev/null || true
  "$NODE" -e '
    const r = require(process.argv[1]); const tokens = Number(process.argv[2]) * 128;
    console.log(`mlm train: ${r.step} steps in ${process.argv[3]} s wall; ${Math.round(r.tokens_per_second)} train tok/s, ${(1000 * tokens / r.tokens_per_second).toFixed(1)} ms/step (all steps); train loss ${r.train_loss?.toFixed(3)}, eval loss ${r.eval_loss?.toFixed(3)}`);
  ' "$RESULTS/train-webgpu.json" "$TRAIN_BATCH" "$((SECONDS - t0))"
else
  rm -f "$RESULTS/train-webgpu.json"
  FAILED+=("mlm train: $(why $rc)")
fi

# --- 3. PyTorch ----------------------------------------------------------------------------------
if [ -n "$PY" ]; then
  # Every config in strict fp32 first (the comparison this run is for), then TF32 while time lasts.
  for prec in fp32 tf32; do
    for cfg in "${CONFIGS[@]}"; do
      extra=()
      if [ "$prec" = tf32 ]; then
        # TF32 only means something on CUDA.
        "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null || continue
        extra=(--tf32)
      fi
      stage "PyTorch $cfg ($prec): bench-torch.py --device auto --impl $IMPL --batch-size $BATCH --seq-len $SEQ"
      limit "$T_TORCH" "$PY" "$APP/scripts/bench-torch.py" --config "$APP/configs/$cfg.json" --batch-size "$BATCH" --seq-len "$SEQ" \
        --steps "$STEPS" --warmup-steps "$WARMUP" --eval-steps "$EVAL_STEPS" --threads "$(nproc 2>/dev/null || echo 2)" \
        --device auto --impl "$IMPL" "${extra[@]}" --json > "$WORK/torch.out"
      rc=$?
      if [ "$rc" = 0 ] && last_json "$WORK/torch.out" > "$RESULTS/torch-$cfg-$prec.json" && [ -s "$RESULTS/torch-$cfg-$prec.json" ]; then
        "$PY" -c 'import json, sys; r = json.load(open(sys.argv[1])); print("pytorch %s on %s: %.0f train tok/s, %.1f ms/step" % (sys.argv[2], r["device"], r["train_tokens_per_second"], r["train_step_ms_median"]))' "$RESULTS/torch-$cfg-$prec.json" "$cfg"
      else
        rm -f "$RESULTS/torch-$cfg-$prec.json"
        FAILED+=("PyTorch $cfg $prec: $(why $rc)")
      fi
    done
  done
else
  FAILED+=("no PyTorch (no python with torch)")
fi

# --- 4. where a step's time goes ------------------------------------------------------------------
# GPU time per kernel of one bert-mini training step (tf.profile; scripts/profile-step.ts), for the
# next round of work rather than for the table. Skipped without failing when no time is left.
PROFILE_ARGS=(--backend webgpu --config "$TRAIN_CONFIG" --batch-size "$BATCH" --seq-len "$SEQ" --top 40)
stage "scripts/profile-step.ts ${PROFILE_ARGS[*]}"
(cd "$APP" && limit "$T_PROFILE" "$NODE" --import tsx scripts/profile-step.ts "${PROFILE_ARGS[@]}") > "$RESULTS/profile-webgpu.txt" 2>&1
rc=$?
case "$rc" in
  0) grep -v '^Warning\|^    at ' "$RESULTS/profile-webgpu.txt" | head -n 12 ;;
  125) echo "gpu-run: profile skipped (no time left)"; rm -f "$RESULTS/profile-webgpu.txt" ;;
  *) FAILED+=("profile-step: $(why $rc)") ;;
esac

# --- 5. summary -----------------------------------------------------------------------------------
stage "summary"
(cd "$APP" && "$NODE" --import tsx scripts/gpu-report.ts summary "$RESULTS") || FAILED+=("the summary lists problems")
echo
echo "results in $RESULTS ($((SECONDS - started)) s in all)"
if [ "$SOFTWARE" = true ]; then echo "NOTE: the WebGPU adapter was SOFTWARE ($ADAPTER): these figures are not the GPU's"; fi
if [ "${#FAILED[@]}" -gt 0 ]; then
  printf 'gpu-run: FAILED: %s\n' "${FAILED[@]}"
  exit 1
fi
echo "gpu-run: done"
