// Counting what a training step asks of the backend: TF.js kernel calls on every backend, and on
// webgpu the compute dispatches, compute passes and queue submissions it encodes, with the GPU time
// of those passes from timestamp queries. `mlm bench` (training/bench.ts) reports them per step;
// scripts/profile-step.ts attributes the GPU time to kernels and shader pipelines.
//
// Kernels. Every registered kernel a program runs goes through the engine's `runKernelFunc`
// (tfjs-core's Engine: `runKernel` calls it); it is wrapped on the engine instance, so the count is
// of engine-level kernel calls (a kernel that calls another backend function directly counts once).
//
// Dispatches. Counted at the WebGPU API, not in TF.js's program runner, so that pipelines that
// other modules build on the backend's device and encode into its command stream count too: the
// device's `createCommandEncoder` is wrapped; each encoder it returns gets a wrapped
// `beginComputePass`; each pass a wrapped `dispatchWorkgroups` / `dispatchWorkgroupsIndirect`.
// Only encoders created while the watch runs are seen, so `watchKernels` first submits whatever the
// backend has encoded (a half-filled encoder would otherwise go uncounted).
//
// GPU time. Where the device has `timestamp-query`, every compute pass begun without timestamp
// writes of its own (TF.js adds them only inside `tf.profile`/`backend.time`) gets a pair, begin
// and end, in query sets of this module's (4096 queries each, allocated as needed up to
// MAX_QUERY_SETS; passes beyond that are counted as untimed). `takeGpuTime` submits the backend's
// pending commands, resolves the queries and sums end - begin over the passes: the time the GPU
// spent executing compute passes, not counting the gaps between passes (waiting for the host, or
// buffer copies and uploads outside passes). Dawn quantizes timestamps to 65.536 us unless its
// toggle `timestamp_quantization` is disabled (training/backend/webgpu.ts disables it); the sum
// over many passes is still unbiased then, per-pass figures are not, and `quantized` says so.
//
// Attribution (opts.attribute): each dispatch records the innermost kernel running and the label
// of the pipeline set on its pass (TF.js labels pipelines with its program's class name); a pass's
// time is split evenly over its dispatches, which is exact when each pass holds one dispatch
// (profile-step.ts sets WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE to 1 for that).
import type { Tf } from './backend.ts';

/** Queries per query set: the most WebGPU allows in one (4096). */
const QUERIES_PER_SET = 4096;
/** At most this many query sets: 64 x 2048 timed passes between two `takeGpuTime` calls. */
const MAX_QUERY_SETS = 64;
/** Dawn's timestamp quantization masks the low 16 bits (65,536 ns). */
const QUANTUM_NS = 65536n;

export interface KernelCounts {
  /** Engine-level kernel calls. */
  kernels: number;
  /** webgpu: compute dispatches (null elsewhere). */
  dispatches: number | null;
  /** webgpu: compute passes begun. */
  passes: number | null;
  /** webgpu: command buffers submitted to the backend's queue (calls of queue.submit). */
  submits: number | null;
}

export interface GpuTimeEntry {
  ms: number;
  dispatches: number;
}

export interface GpuTime {
  /** Sum over timed passes of (end - begin), milliseconds. */
  ms: number;
  /** Passes timed, and passes begun without our timestamps (TF.js's own profiling, or no query left). */
  passes: number;
  untimed: number;
  /** Every timestamp read was a multiple of 65.536 us (Dawn's quantization on). */
  quantized: boolean;
  /** With opts.attribute: GPU time by innermost kernel name, and by pipeline label. */
  byKernel: Map<string, GpuTimeEntry> | null;
  byPipeline: Map<string, GpuTimeEntry> | null;
}

export interface KernelWatch {
  /** 'timestamp-query' when GPU time is measured; else why not. */
  readonly gpuTimer: string;
  counts(): KernelCounts;
  /** With opts.attribute: kernel calls by kernel name since the start (null without). */
  callsByKernel(): Map<string, number> | null;
  /** webgpu: submits the backend's pending commands and waits until the GPU has run all it was given. */
  drain(): Promise<void>;
  /** GPU time of the passes begun since the last call (or the start); null without a GPU timer. */
  takeGpuTime(): Promise<GpuTime | null>;
  /** Puts every wrapped method back and frees the query sets. */
  stop(): void;
}

/** The parts of tfjs-backend-webgpu's WebGPUBackend used here (all public in its typings). */
interface WebGpuBackendLike {
  device: GPUDevice;
  queue: GPUQueue;
  ensureCommandEncoderReady(): void;
  endComputePassEncoder(): void;
  submitQueue(): void;
}

/** Replaces `target[method]` by `make(original)` as an own property; returns the undo. */
function wrapMethod<T extends object>(target: T, method: string, make: (original: (...a: unknown[]) => unknown) => (...a: unknown[]) => unknown): () => void {
  const t = target as Record<string, unknown>;
  const original = t[method];
  if (typeof original !== 'function') throw new Error(`kernel-watch: ${method} is not a method here`);
  const own = Object.prototype.hasOwnProperty.call(t, method);
  t[method] = make(original as (...a: unknown[]) => unknown);
  return () => {
    if (own) t[method] = original;
    else delete t[method];
  };
}

interface PassRecord {
  /** Query index of the begin timestamp within all sets (set = floor(i / QUERIES_PER_SET)); -1: untimed. */
  query: number;
  /** With attribution: one [kernel, pipeline] per dispatch. */
  dispatches: [string, string][] | null;
}

/**
 * Starts counting on `tf`'s active backend (see the file header). Call `stop()` when done; the
 * counts are cumulative, so take differences around what you measure.
 */
export function watchKernels(tf: Tf, opts: { attribute?: boolean } = {}): KernelWatch {
  const attribute = opts.attribute === true;
  const restore: (() => void)[] = [];
  const c: KernelCounts = { kernels: 0, dispatches: null, passes: null, submits: null };

  // Kernel calls, and the stack of kernel names for attribution.
  const stack: string[] = [];
  const calls = attribute ? new Map<string, number>() : null;
  const engine = tf.engine() as unknown as object;
  restore.push(
    wrapMethod(engine, 'runKernelFunc', (original) =>
      // One argument (the kernel's parameters): no spread on this path, it runs for every op.
      function (this: unknown, params: unknown) {
        const name = (params as { kernelName?: string } | undefined)?.kernelName;
        if (name === undefined) return original.call(this, params);
        c.kernels++;
        if (!attribute) return original.call(this, params);
        calls!.set(name, (calls!.get(name) ?? 0) + 1);
        stack.push(name);
        try {
          return original.call(this, params);
        } finally {
          stack.pop();
        }
      },
    ),
  );

  const webgpu = tf.getBackend() === 'webgpu';
  if (!webgpu) {
    return {
      gpuTimer: `none: the ${tf.getBackend()} backend has no GPU timer`,
      counts: () => ({ ...c }),
      callsByKernel: () => (calls === null ? null : new Map(calls)),
      drain: async () => {},
      takeGpuTime: async () => null,
      stop: () => {
        for (const r of restore.reverse()) r();
        restore.length = 0;
      },
    };
  }

  const backend = tf.backend() as unknown as WebGpuBackendLike;
  const device = backend.device;
  c.dispatches = 0;
  c.passes = 0;
  c.submits = 0;
  const flush = () => {
    backend.ensureCommandEncoderReady();
    backend.endComputePassEncoder();
    backend.submitQueue();
  };
  // Whatever was encoded before the watch began is submitted now, uncounted.
  flush();

  const timed = device.features.has('timestamp-query');
  const gpuTimer = timed ? 'timestamp-query' : 'none: the WebGPU device has no timestamp-query feature';
  const sets: GPUQuerySet[] = [];
  const resolveBuffers: GPUBuffer[] = [];
  const stagingBuffers: GPUBuffer[] = [];
  let nextQuery = 0;
  let passes: PassRecord[] = [];
  const createEncoder = device.createCommandEncoder.bind(device);

  /** A begin/end query pair for one more pass, or -1 when none is left. */
  const takeQueryPair = (): number => {
    if (!timed) return -1;
    const set = Math.floor(nextQuery / QUERIES_PER_SET);
    if (set >= MAX_QUERY_SETS) return -1;
    if (set === sets.length) {
      sets.push(device.createQuerySet({ type: 'timestamp', count: QUERIES_PER_SET }));
      resolveBuffers.push(device.createBuffer({ size: QUERIES_PER_SET * 8, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC }));
      stagingBuffers.push(device.createBuffer({ size: QUERIES_PER_SET * 8, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST }));
    }
    const q = nextQuery;
    nextQuery += 2;
    return q;
  };

  const wrapPass = (pass: GPUComputePassEncoder, record: PassRecord) => {
    let pipeline = '';
    const count = (original: (...a: unknown[]) => unknown) =>
      function (this: unknown, x: unknown, y: unknown, z: unknown) {
        c.dispatches!++;
        record.dispatches?.push([stack[stack.length - 1] ?? '(no kernel)', pipeline]);
        // dispatchWorkgroups(x, y?, z?) and dispatchWorkgroupsIndirect(buffer, offset): the
        // arguments given, no more (Dawn checks undefined against its defaults).
        return arguments.length === 3 ? original.call(this, x, y, z) : original.apply(this, [...arguments]);
      };
    for (const method of ['dispatchWorkgroups', 'dispatchWorkgroupsIndirect']) {
      if (typeof (pass as unknown as Record<string, unknown>)[method] === 'function') wrapMethod(pass, method, count);
    }
    if (attribute) {
      wrapMethod(pass, 'setPipeline', (original) =>
        function (this: unknown, ...args: unknown[]) {
          pipeline = (args[0] as { label?: string } | undefined)?.label || '(unlabelled pipeline)';
          return original.apply(this, args);
        },
      );
    }
  };

  restore.push(
    wrapMethod(device, 'createCommandEncoder', (original) =>
      function (this: unknown, ...args: unknown[]) {
        const encoder = original.apply(this, args) as GPUCommandEncoder;
        wrapMethod(encoder, 'beginComputePass', (begin) =>
          function (this: unknown, ...passArgs: unknown[]) {
            c.passes!++;
            let descriptor = (passArgs[0] ?? {}) as GPUComputePassDescriptor;
            const record: PassRecord = { query: -1, dispatches: attribute ? [] : null };
            if (descriptor.timestampWrites === undefined) {
              record.query = takeQueryPair();
              if (record.query >= 0) {
                const set = sets[Math.floor(record.query / QUERIES_PER_SET)];
                const i = record.query % QUERIES_PER_SET;
                descriptor = { ...descriptor, timestampWrites: { querySet: set, beginningOfPassWriteIndex: i, endOfPassWriteIndex: i + 1 } };
              }
            }
            passes.push(record);
            const pass = begin.call(this, descriptor, ...passArgs.slice(1)) as GPUComputePassEncoder;
            wrapPass(pass, record);
            return pass;
          },
        );
        return encoder;
      },
    ),
  );
  restore.push(
    wrapMethod(backend.queue, 'submit', (original) =>
      function (this: unknown, ...args: unknown[]) {
        c.submits! += Array.isArray(args[0]) ? args[0].length : 1;
        return original.apply(this, args);
      },
    ),
  );

  const drain = async () => {
    flush();
    await device.queue.onSubmittedWorkDone();
  };

  const takeGpuTime = async (): Promise<GpuTime | null> => {
    if (!timed) return null;
    await drain();
    const used = Math.ceil(nextQuery / QUERIES_PER_SET);
    const stamps: BigUint64Array[] = [];
    if (used > 0) {
      const encoder = createEncoder();
      for (let s = 0; s < used; s++) {
        const count = Math.min(QUERIES_PER_SET, nextQuery - s * QUERIES_PER_SET);
        encoder.resolveQuerySet(sets[s], 0, count, resolveBuffers[s], 0);
        encoder.copyBufferToBuffer(resolveBuffers[s], 0, stagingBuffers[s], 0, count * 8);
      }
      device.queue.submit([encoder.finish()]);
      for (let s = 0; s < used; s++) {
        await stagingBuffers[s].mapAsync(GPUMapMode.READ);
        stamps.push(new BigUint64Array(stagingBuffers[s].getMappedRange().slice(0)));
        stagingBuffers[s].unmap();
      }
    }
    let totalNs = 0n;
    let untimed = 0;
    let timedPasses = 0;
    let quantized = true;
    let seen = 0;
    const byKernel = attribute ? new Map<string, GpuTimeEntry>() : null;
    const byPipeline = attribute ? new Map<string, GpuTimeEntry>() : null;
    const add = (map: Map<string, GpuTimeEntry>, key: string, ms: number) => {
      const e = map.get(key) ?? { ms: 0, dispatches: 0 };
      e.ms += ms;
      e.dispatches++;
      map.set(key, e);
    };
    for (const p of passes) {
      if (p.query < 0) {
        untimed++;
        continue;
      }
      const s = stamps[Math.floor(p.query / QUERIES_PER_SET)];
      const i = p.query % QUERIES_PER_SET;
      const begin = s[i];
      const end = s[i + 1];
      // A pass that never reached the GPU (an encoder dropped unsubmitted) reads as zeros.
      const ns = end > begin ? end - begin : 0n;
      for (const t of [begin, end]) {
        if (t !== 0n) {
          seen++;
          if (t % QUANTUM_NS !== 0n) quantized = false;
        }
      }
      totalNs += ns;
      timedPasses++;
      if (p.dispatches !== null && p.dispatches.length > 0) {
        const share = Number(ns) / 1e6 / p.dispatches.length;
        for (const [kernel, pipeline] of p.dispatches) {
          add(byKernel!, kernel, share);
          add(byPipeline!, pipeline, share);
        }
      }
    }
    passes = [];
    nextQuery = 0;
    return { ms: Number(totalNs) / 1e6, passes: timedPasses, untimed, quantized: seen >= 8 && quantized, byKernel, byPipeline };
  };

  return {
    gpuTimer,
    counts: () => ({ ...c }),
    callsByKernel: () => (calls === null ? null : new Map(calls)),
    drain,
    takeGpuTime,
    stop: () => {
      for (const r of restore.reverse()) r();
      restore.length = 0;
      for (const q of sets) q.destroy();
      for (const b of [...resolveBuffers, ...stagingBuffers]) b.destroy();
      sets.length = 0;
    },
  };
}
