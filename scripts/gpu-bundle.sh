#!/usr/bin/env bash
# Builds dist/gpu-bundle.tar.xz: everything scripts/gpu-run.sh needs to run mlmkit's WebGPU backend
# on a Linux x86-64 machine with an NVIDIA GPU and its Vulkan driver, with no internet and possibly
# no Node.js there:
#   node/bin/node         this machine's Node.js binary (x86-64, >= 20, linked to glibc only)
#   app/                  the project's runtime sources (package.json, scripts/, data/, training/,
#                         common/, configs/, index.ts, browser.ts) with its production node_modules, pruned to linux-x64 and to
#                         what Node loads: no types, source maps, browser/minified bundles, other
#                         platforms' native binaries (dawn.node, tokenizers), dev dependencies
#   vulkan/               Debian's Vulkan loader (libvulkan1) and libglvnd (libglvnd0, libegl1,
#                         libgl1, libglx0, libopengl0, libgles2; NVIDIA's Vulkan driver needs them),
#                         from `apt-get download`, extracted with dpkg-deb -x; gpu-run.sh puts
#                         their lib folder on LD_LIBRARY_PATH
#   compat/               this machine's libstdc++.so.6 (dawn.node needs GLIBCXX_3.4.30); used by
#                         gpu-run.sh only when the GPU machine's own is older
#   blas/                 Debian's OpenBLAS (libopenblas0-pthread) with libgfortran5 and
#                         libquadmath0, shared libraries only: gpu-run.sh gives it to the CPU peer
#                         stage (scripts/cpu-peer.sh, native BLAS for the wasm backend) when the GPU
#                         machine has no libopenblas.so.0 of its own
#   data/                 Brown (the demo's general corpus) with a 30,522-piece WordPiece
#                         vocabulary, prepared at seq_len 128: the 200-step training run's data
#   bundle.json           what went in: commit, versions, sizes
#
#   scripts/gpu-bundle.sh [--out dist/gpu-bundle.tar.xz] [--node /usr/bin/node] [--fresh]
#
# Run from anywhere in a checkout after `npm ci`, on Linux x86-64 with apt (for the .debs).
# Needs network only for `apt-get download` of those (cached under dist/gpu-cache/ after that)
# and, when data/corpora is missing, nothing: the corpora come from installed dev packages.
# The prepared data and the .deb are cached in dist/gpu-cache/ (keyed on their inputs; --fresh
# rebuilds them); the staging folder is rebuilt every time. The tar has sorted names, fixed owners
# and the mtime of the commit, so the same inputs give the same tarball. It must stay within 60 MB
# (a device call carries at most 64 MiB, the repository included): the build fails past that.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

OUT_TAR=dist/gpu-bundle.tar.xz
NODE_BIN=$(command -v node || true)
FRESH=0
LIMIT_BYTES=$((60 * 1000 * 1000))
VOCAB=30522
SEQ_LEN=128

die() { echo "gpu-bundle: error: $*" >&2; exit 1; }
say() { echo "gpu-bundle: $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT_TAR=${2:?--out needs a file}; shift 2 ;;
    --node) NODE_BIN=${2:?--node needs a path}; shift 2 ;;
    --fresh) FRESH=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

# --- checks -----------------------------------------------------------------------------------
[ "$(uname -s)/$(uname -m)" = "Linux/x86_64" ] || die "build on Linux x86-64 (the bundle's binaries are this machine's); this is $(uname -s)/$(uname -m)"
for tool in tar xz git npm dpkg-deb sha256sum find; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done
[ -n "$NODE_BIN" ] && [ -x "$NODE_BIN" ] || die "no node binary (give --node PATH)"
NODE_BIN=$(readlink -f "$NODE_BIN")
NODE_VERSION=$("$NODE_BIN" -p 'process.versions.node')
[ "${NODE_VERSION%%.*}" -ge 20 ] || die "$NODE_BIN is Node.js $NODE_VERSION; the bundle needs >= 20"
if ldd "$NODE_BIN" 2>/dev/null | grep -Eq 'libnode|libuv|libssl|libicu'; then
  die "$NODE_BIN links to shared libnode/libuv/openssl/icu (a distribution build); give a self-contained build with --node (nodejs.org or NodeSource)"
fi
[ -d node_modules/@tensorflow/tfjs ] || die "node_modules is missing or incomplete: run npm ci first"
[ -f node_modules/webgpu/dist/linux-x64/dawn.node ] || die "node_modules/webgpu has no linux-x64 dawn.node: run npm ci"

CACHE=$ROOT/dist/gpu-cache
STAGE=$ROOT/dist/gpu-bundle.stage
B=$STAGE/gpu-bundle
mkdir -p dist "$CACHE"
rm -rf "$STAGE"
mkdir -p "$B"
NODE_CMD=("$NODE_BIN" "$ROOT/scripts/mlm.mjs")

# --- 1. Node.js --------------------------------------------------------------------------------
say "node: $NODE_BIN ($NODE_VERSION)"
mkdir -p "$B/node/bin"
cp "$NODE_BIN" "$B/node/bin/node"
chmod 755 "$B/node/bin/node"
for f in /usr/share/doc/nodejs/copyright /usr/share/doc/nodejs/LICENSE "$(dirname "$NODE_BIN")/../LICENSE"; do
  if [ -f "$f" ]; then cp "$f" "$B/node/LICENSE"; break; fi
done

# --- 2. the project ----------------------------------------------------------------------------
say "app: runtime sources"
# Every top-level source folder and file the runtime imports (tests/structure/layering.test.ts checks
# that the list covers the imports of scripts/, training/, data/ and common/).
SOURCES=(package.json package-lock.json tsconfig.json 'LICENSE*' configs data scripts training common index.ts browser.ts)
mkdir -p "$B/app"
git ls-files -z --cached --others --exclude-standard -- "${SOURCES[@]}" \
  | while IFS= read -r -d '' f; do
      [ -f "$f" ] || continue   # deleted in the work tree
      mkdir -p "$B/app/$(dirname "$f")"
      cp "$f" "$B/app/$f"
    done

say "app: production node_modules (npm ls --omit=dev --omit=optional)"
mapfile -t PKGS < <(npm ls --omit=dev --omit=optional --all --parseable 2>/dev/null | sed -n "s|^$ROOT/||p" | grep '^node_modules/' | sort)
[ "${#PKGS[@]}" -gt 20 ] || die "npm ls listed only ${#PKGS[@]} production packages; is node_modules complete (npm ci)?"
# Packages that Node never loads here: type declarations, and tfjs's browser polyfills (only
# tfjs's index_with_polyfills.js requires core-js/regenerator-runtime; Node loads dist/tf.node.js).
skip_pkg() {
  case "$1" in
    */@types/*|*/@webgpu/types|*/undici-types|*/core-js|*/regenerator-runtime) return 0 ;;
  esac
  return 1
}
for p in "${PKGS[@]}"; do
  skip_pkg "$p" && continue
  mkdir -p "$B/app/$p"
  # The package's own files; nested node_modules come as their own entries of the list.
  (cd "$p" && find . -mindepth 1 -maxdepth 1 ! -name node_modules -exec cp -a {} "$B/app/$p/" \;)
done

say "app: pruning node_modules"
NM=$B/app/node_modules
# Never loaded by Node: declarations, maps, TypeScript sources, docs, tests, browser bundles.
find "$NM" -type f \( -name '*.map' -o -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.ts' -o -name '*.mts' -o -name '*.cts' \
  -o -name '*.tsbuildinfo' -o -name '*.md' -o -name '*.markdown' -o -name '*.html' -o -name 'tsconfig*.json' -o -name '.npmignore' \
  -o -name '.eslintrc*' -o -name '.prettierrc*' -o -name '.editorconfig' -o -name '*.min.js' -o -name '*.flow' \) -delete
find "$NM" -depth -type d \( -name test -o -name tests -o -name __tests__ -o -name example -o -name examples -o -name docs -o -name .github -o -name browser -o -name miniprogram \) -exec rm -rf {} +
# TF.js: Node loads each package's main (dist/*.node.js, one CommonJS file); wasm adds its binaries.
for dir in "$NM"/@tensorflow/*; do
  main=$("$NODE_BIN" -p "require('$dir/package.json').main")
  [ -f "$dir/$main" ] || die "$dir: main $main is missing"
  find "$dir" -type f ! -name package.json ! -name 'LICENSE*' ! -path "$dir/$main" ! -name '*.wasm' ! -path "$dir/wasm-out/*" -delete
done
# webgpu (Dawn): the linux-x64 build only; build/ is its install and packaging tooling.
find "$NM/webgpu/dist" -mindepth 1 -maxdepth 1 -type d ! -name linux-x64 -exec rm -rf {} +
rm -rf "$NM/webgpu/build"
# tokenizers: the linux-x64 glibc binary only.
find "$NM/tokenizers" -maxdepth 1 -name '*.node' ! -name 'tokenizers.linux-x64-gnu.node' -delete
# parquet-wasm: Node resolves "." to node/ (exports condition "node").
rm -rf "$NM/parquet-wasm/bundler" "$NM/parquet-wasm/esm"
# koffi (the FFI package of the native-BLAS kernels, when installed): its linux-x64 build only;
# src/ and vendor/ are its C++ sources (28 MB in all for 2.16).
if [ -d "$NM/koffi" ]; then
  [ -d "$NM/koffi/build/koffi" ] && find "$NM/koffi/build/koffi" -mindepth 1 -maxdepth 1 -type d ! -name linux_x64 -exec rm -rf {} +
  rm -rf "$NM/koffi/src" "$NM/koffi/vendor" "$NM/koffi/doc"
  [ -e "$NM/koffi/build/koffi/linux_x64/koffi.node" ] || die "pruning removed koffi/build/koffi/linux_x64/koffi.node"
fi
# esbuild (tsx compiles the project's .ts with it): the JS API and the linux-x64 binary.
find "$NM/@esbuild" -mindepth 1 -maxdepth 1 -type d ! -name linux-x64 -exec rm -rf {} +
rm -f "$NM/esbuild/bin/esbuild"   # the CLI's copy of @esbuild/linux-x64/bin/esbuild; the JS API uses the latter
find "$NM" -depth -type d -empty -delete
for f in webgpu/dist/linux-x64/dawn.node tokenizers/tokenizers.linux-x64-gnu.node @esbuild/linux-x64/bin/esbuild \
         @tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm tsx/package.json parquet-wasm/node/parquet_wasm_bg.wasm; do
  [ -e "$NM/$f" ] || die "pruning removed $f"
done

# --- 3. the Vulkan loader (Debian's libvulkan1) and GL vendor-neutral dispatch (libglvnd) --------
# On an H200 machine with only NVIDIA's driver mounted, the loader found the driver
# (libGLX_nvidia.so.0) but not its vkCreateInstance ("Could not get 'vkCreateInstance' via
# 'vk_icdGetInstanceProcAddr'"): no adapter. With libglvnd's libraries on LD_LIBRARY_PATH and
# __EGL_VENDOR_LIBRARY_FILENAMES naming NVIDIA's EGL vendor file (gpu-run.sh sets it) it found the
# GPU; which of the two it needed was not tried apart.
PKGS=(libvulkan1 libglvnd0 libegl1 libgl1 libglx0 libopengl0 libgles2)
mkdir -p "$B/vulkan"
DEBS=()
# The newest cached .deb of a package (apt-get download into the cache first when there is none,
# or with --fresh), in $DEB.
cached_deb() {
  local pkg=$1
  DEB=$(ls "$CACHE"/"${pkg}"_*_amd64.deb 2>/dev/null | sort -V | tail -1 || true)
  if [ "$FRESH" = 1 ] || [ -z "$DEB" ]; then
    say "apt-get download $pkg"
    rm -f "$CACHE"/"${pkg}"_*.deb
    (cd "$CACHE" && apt-get -q -oAPT::Architecture=amd64 download "$pkg" 2>&1 | { grep -v '^W: Download is performed unsandboxed' || true; } >&2) \
      || die "apt-get download $pkg failed (run apt-get update first?)"
    DEB=$(ls "$CACHE"/"${pkg}"_*_amd64.deb | sort -V | tail -1)
  fi
}
for pkg in "${PKGS[@]}"; do
  cached_deb "$pkg"
  dpkg-deb -x "$DEB" "$B/vulkan"
  cp "$DEB" "$B/vulkan/"
  DEBS+=("$(basename "$DEB")")
done
say "vulkan: ${DEBS[*]}"
for lib in libvulkan.so.1 libGLdispatch.so.0 libEGL.so.1 libGLX.so.0; do
  [ -e "$B/vulkan/usr/lib/x86_64-linux-gnu/$lib" ] || die "the .debs (${DEBS[*]}) hold no usr/lib/x86_64-linux-gnu/$lib"
done
DEB="${DEBS[*]}"

# --- 3b. OpenBLAS for the CPU peer stage ----------------------------------------------------------
# Shared libraries only (not the .debs: the library alone is 6.7 MB packed), flat in blas/.
mkdir -p "$B/blas"
BLAS_TMP=$STAGE/blas-deb
for pkg in libopenblas0-pthread libgfortran5 libquadmath0; do
  cached_deb "$pkg"
  rm -rf "$BLAS_TMP"
  dpkg-deb -x "$DEB" "$BLAS_TMP"
  # The sonames (libopenblas.so.0, libgfortran.so.5, libquadmath.so.0), not the files they link to
  # nor Debian's libblas/liblapack alternatives.
  find "$BLAS_TMP" -regextype posix-extended -regex '.*/lib(openblas|gfortran|quadmath)\.so\.[0-9]+' -exec cp -L {} "$B/blas/" \;
  DEBS+=("$(basename "$DEB")")
done
rm -rf "$BLAS_TMP"
for lib in libopenblas.so.0 libgfortran.so.5 libquadmath.so.0; do
  [ -f "$B/blas/$lib" ] || die "the OpenBLAS .debs hold no $lib"
done
DEB="${DEBS[*]}"

# --- 4. libstdc++ for older GPU machines ---------------------------------------------------------
STDCXX=$(ldd "$NM/webgpu/dist/linux-x64/dawn.node" | awk '/libstdc\+\+/ && $3 ~ /^\// { print $3 }')
[ -n "$STDCXX" ] || die "ldd finds no libstdc++ for dawn.node on this machine"
mkdir -p "$B/compat"
cp "$(readlink -f "$STDCXX")" "$B/compat/libstdc++.so.6"

# --- 5. training data --------------------------------------------------------------------------
CORPUS=data/corpora/general
if [ ! -d "$CORPUS/train" ]; then
  say "data: extracting the corpora (node --import tsx scripts/corpora.ts)"
  "$NODE_BIN" --import tsx scripts/corpora.ts >&2
fi
KEY=$( { echo "vocab=$VOCAB seq=$SEQ_LEN"; sha256sum data/*.ts scripts/commands/tokenizer.ts scripts/commands/prepare.ts package-lock.json;
         (cd "$CORPUS" && find . -type f | LC_ALL=C sort | xargs sha256sum); } | sha256sum | cut -c1-16)
DATA_CACHE=$CACHE/data-$KEY
if [ "$FRESH" = 1 ] || [ ! -f "$DATA_CACHE/brown-128/manifest.json" ]; then
  rm -rf "$CACHE"/data-*
  mkdir -p "$DATA_CACHE.tmp"
  REL=$(realpath --relative-to="$DATA_CACHE.tmp" "$CORPUS")
  say "data: WordPiece $VOCAB on Brown, then prepare at seq_len $SEQ_LEN (cached in $DATA_CACHE)"
  (cd "$DATA_CACHE.tmp" && "${NODE_CMD[@]}" tokenizer train --corpus "$REL/train" --vocab-size "$VOCAB" --lowercase --out tokenizer --no-progress >&2 \
    && "${NODE_CMD[@]}" prepare --corpus "$REL/train" --validation "$REL/heldout" --tokenizer tokenizer --out brown-128 --seq-len "$SEQ_LEN" --no-progress >&2)
  rm -rf "$DATA_CACHE"
  mv "$DATA_CACHE.tmp" "$DATA_CACHE"
else
  say "data: reusing $DATA_CACHE"
fi
mkdir -p "$B/data"
cp -a "$DATA_CACHE/tokenizer" "$DATA_CACHE/brown-128" "$B/data/"
# `mlm prepare` records the tokenizer's absolute path; `mlm train` also finds a relative one beside
# the data folder (training/trainer.ts loadDataTokenizer), which is what travels.
"$NODE_BIN" -e '
  const fs = require("fs"), f = process.argv[1];
  const m = JSON.parse(fs.readFileSync(f, "utf8"));
  m.tokenizer.source = "tokenizer";
  fs.writeFileSync(f, JSON.stringify(m, null, 2) + "\n");
' "$B/data/brown-128/manifest.json"

# --- 6. bundle.json, then the tarball ------------------------------------------------------------
COMMIT=$(git rev-parse HEAD)
CHANGED=$(git status --porcelain --untracked-files=normal -- "${SOURCES[@]}")
DIRTY=$([ -n "$CHANGED" ] && echo true || echo false)
EPOCH=$(git log -1 --format=%ct)
"$NODE_BIN" -e '
  const fs = require("fs"), path = require("path");
  const [b, commit, dirty, deb, nodeVersion] = process.argv.slice(1);
  const size = (d) => { let n = 0; for (const e of fs.readdirSync(d, { withFileTypes: true })) { const p = path.join(d, e.name); n += e.isDirectory() ? size(p) : e.isFile() ? fs.statSync(p).size : 0; } return n; };
  const manifest = JSON.parse(fs.readFileSync(path.join(b, "data/brown-128/manifest.json"), "utf8"));
  const doc = {
    format: "mlmkit-gpu-bundle/1",
    commit, dirty: dirty === "true",
    node: nodeVersion,
    debs: deb.split(" "),
    webgpu: require(path.resolve(b, "app/node_modules/webgpu/package.json")).version,
    tfjs: require(path.resolve(b, "app/node_modules/@tensorflow/tfjs-core/package.json")).version,
    data: { folder: "data/brown-128", tokenizer: "data/tokenizer", seq_len: manifest.seq_len, vocab_size: manifest.tokenizer.vocab_size, splits: manifest.splits && Object.fromEntries(Object.entries(manifest.splits).map(([k, v]) => [k, { rows: v.rows, tokens: v.tokens }])) },
    bytes: Object.fromEntries(["node", "app", "app/node_modules", "vulkan", "blas", "compat", "data"].map((d) => [d, size(path.join(b, d))])),
  };
  fs.writeFileSync(path.join(b, "bundle.json"), JSON.stringify(doc, null, 2) + "\n");
' "$B" "$COMMIT" "$DIRTY" "$DEB" "$NODE_VERSION"

say "packing (xz -9, one thread: a minute or two)"
TMP_TAR="$OUT_TAR.$$.tmp"
trap 'rm -f "$TMP_TAR"' EXIT
mkdir -p "$(dirname "$OUT_TAR")"
tar -C "$STAGE" --sort=name --mtime="@$EPOCH" --owner=0 --group=0 --numeric-owner \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime -cf - gpu-bundle \
  | xz -9 -T1 -c > "$TMP_TAR"
BYTES=$(stat -c %s "$TMP_TAR")
if [ "$BYTES" -gt "$LIMIT_BYTES" ]; then
  die "the tarball is $BYTES bytes, over the 60 MB limit (a device call carries at most 64 MiB); nothing written to $OUT_TAR"
fi
mv "$TMP_TAR" "$OUT_TAR"
trap - EXIT
say "contents (bytes before compression): $("$NODE_BIN" -p "JSON.stringify(require('$B/bundle.json').bytes)")"
rm -rf "$STAGE"
echo "gpu-bundle: wrote $OUT_TAR: $BYTES bytes ($(awk -v b="$BYTES" 'BEGIN { printf "%.1f MB", b / 1e6 }')), sha256 $(sha256sum "$OUT_TAR" | cut -c1-16)"
echo "gpu-bundle: carry it to the GPU machine and run: scripts/gpu-run.sh [$OUT_TAR]"
