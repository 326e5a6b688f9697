#!/usr/bin/env bash
# Builds mlmkit's WebAssembly SIMD kernels (training/backend/simd/kernels.c) into the two modules
# the wasm backend loads (training/backend/simd-wasm.ts): kernels.wasm imports an ordinary memory
# (the backend's single-threaded build), kernels-shared.wasm a shared one (its threaded build).
# The built modules are committed, so users need no compiler; CI rebuilds them with the same
# compiler and fails if they differ (tests/training/backend/simd-wasm.test.ts).
#
#   bash scripts/build-simd-kernels.sh [--check]   (needs clang, lld and wabt: apt-get install clang lld wabt)
#
# --check builds into a temporary folder and compares with the committed modules instead.
# Both modules must own no memory: they work inside the backend's heap, where a data segment or a
# stack of their own would overwrite its tensors. The build fails if a module has a data segment,
# or code that reads or writes a global (the linker's stack pointer is the only global; code that
# needed a stack would use it).
set -euo pipefail
cd "$(dirname "$0")/.."
src=training/backend/simd/kernels.c
out=training/backend/simd
if [ "${1:-}" = "--check" ]; then out=$(mktemp -d); trap 'rm -rf "$out"' EXIT; fi
for tool in clang wasm-ld wasm-objdump; do
  command -v $tool > /dev/null || { echo "build-simd-kernels: needs $tool (apt-get install clang lld wabt)" >&2; exit 2; }
done
flags=(--target=wasm32 -O3 -msimd128 -nostdlib -fno-builtin -Wall -Werror -Wl,--no-entry -Wl,--import-memory -Wl,--strip-all -Wl,-z,stack-size=0)
clang "${flags[@]}" -o "$out/kernels.wasm" "$src"
clang "${flags[@]}" -matomics -mbulk-memory -Wl,--shared-memory -Wl,--max-memory=4294967296 -o "$out/kernels-shared.wasm" "$src"
node - "$out/kernels.wasm" "$out/kernels-shared.wasm" <<'JS'
// Section ids: 11 data, 12 data count.
const fs = require('node:fs');
for (const file of process.argv.slice(2)) {
  const m = new WebAssembly.Module(fs.readFileSync(file));
  const imports = WebAssembly.Module.imports(m).map((i) => `${i.module}.${i.name}`);
  const globals = WebAssembly.Module.exports(m).filter((e) => e.kind !== 'function');
  const bytes = fs.readFileSync(file);
  const sections = [];
  for (let p = 8; p < bytes.length; ) {
    const id = bytes[p++];
    let size = 0, shift = 0, b;
    do { b = bytes[p++]; size |= (b & 0x7f) << shift; shift += 7; } while (b & 0x80);
    sections.push(id);
    p += size;
  }
  const own = sections.filter((id) => id === 11 || id === 12);
  if (imports.join() !== 'env.memory' || globals.length > 0 || own.length > 0) {
    console.error(`build-simd-kernels: ${file} owns memory or imports more than env.memory (imports ${imports}, sections ${sections})`);
    process.exit(1);
  }
}
JS
for f in "$out/kernels.wasm" "$out/kernels-shared.wasm"; do
  if wasm-objdump -d "$f" | grep -q 'global\.[gs]et'; then
    echo "build-simd-kernels: $f has code that uses a global (the stack pointer): some local's address is taken" >&2
    exit 1
  fi
done
if [ "${1:-}" = "--check" ]; then
  for f in kernels.wasm kernels-shared.wasm; do
    cmp -s "$out/$f" "training/backend/simd/$f" || { echo "build-simd-kernels: training/backend/simd/$f differs from a rebuild of $src: run bash scripts/build-simd-kernels.sh and commit" >&2; exit 1; }
  done
  echo "build-simd-kernels: the committed modules match $src"
else
  ls -l "$out"/*.wasm
fi
