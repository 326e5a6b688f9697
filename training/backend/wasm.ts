// The wasm backend (@tensorflow/tfjs-backend-wasm, XNNPACK) in Node.js.
//
// The .wasm binaries are located in node_modules next to the package's main file, so the
// backend loads wherever mlmkit is installed or run from. SIMD is used when the runtime validates
// it (Node 20 does). Threads: the package disables its threaded build in Node (tfjs issue 3830),
// so kernels run on one thread; the device string says so. The missing UnsortedSegmentSum kernel
// (the gradient of gather) is registered before the backend starts (segment_sum_wasm.ts), and
// GatherV2 with batchDims > 0, wrong as shipped, is routed to a correct version (gather_wasm.ts),
// which also serves every other gather of numbers, faster. Batched and transposed matMuls go through
// XNNPACK (batch_matmul_wasm.ts), and sums over leading axes add rows in place (sum_wasm.ts).
import { existsSync } from 'node:fs';
import path from 'node:path';
import { BackendUnavailable, assertSharedCore, firstLine, resolveInstalled, type LoadedBackend, type Tf } from './common.ts';
import { registerWasmBatchMatMul } from './batch_matmul_wasm.ts';
import { fixWasmGatherBatchDims } from './gather_wasm.ts';
import { registerWasmUnsortedSegmentSum } from './segment_sum_wasm.ts';
import { registerWasmSumLeadingAxes } from './sum_wasm.ts';

const PKG = '@tensorflow/tfjs-backend-wasm';
const BINARIES = ['tfjs-backend-wasm.wasm', 'tfjs-backend-wasm-simd.wasm', 'tfjs-backend-wasm-threaded-simd.wasm'] as const;

export async function loadWasm(tf: Tf): Promise<LoadedBackend> {
  const hint = `reinstall it: npm install ${PKG}`;
  const main = resolveInstalled(PKG);
  if (main === null) throw new BackendUnavailable(`${PKG} not installed`, hint);
  assertSharedCore(PKG, main);
  const dir = path.dirname(main);
  const missing = BINARIES.filter((b) => !existsSync(path.join(dir, b)));
  if (missing.length > 0) {
    throw new BackendUnavailable(`${PKG} is missing ${missing.join(', ')} in ${dir}`, hint);
  }

  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  registerWasmUnsortedSegmentSum(tf);
  fixWasmGatherBatchDims(tf);
  registerWasmBatchMatMul(tf);
  registerWasmSumLeadingAxes(tf);
  try {
    // Harmless once the backend is up; throws only after an earlier failed initialisation.
    wasm.setWasmPaths(dir + path.sep);
  } catch (err) {
    throw new BackendUnavailable(`wasm: ${firstLine(err)}`, hint);
  }
  if (!(await tf.setBackend('wasm'))) {
    throw new BackendUnavailable('the wasm module failed to initialise (TF.js printed why above)', hint);
  }
  const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
  const threaded = await tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT');
  const threads = threaded ? wasm.getThreadsCount() : 1;
  return {
    tfBackend: tf.getBackend(),
    device: `CPU (wasm, ${simd ? 'SIMD' : 'no SIMD'}, ${threads} thread${threads === 1 ? '' : 's'})`,
  };
}
