// Raw WebGPU work inside TF.js's own command stream: the seam for kernels that TF.js's program
// wrapper cannot express (a WGSL `enable f16;` or `enable subgroups;` directive, which must come
// first in a module while TF.js prepends its own declarations; in-place updates of a tensor's
// buffer; copies between buffers at offsets).
//
// What it relies on in @tensorflow/tfjs-backend-webgpu (pinned to an exact version in
// package.json: these are the backend's internals, not its API; `rawWebGpu` checks that they are
// there and refuses with the version it needs otherwise):
//   - `device`, `queue`, `bufferManager` (acquireBuffer / releaseBuffer, numBytesUsed);
//   - `tensorMap.get(dataId)`: { resource: GPUBuffer, values, refCount } (values: a CPU copy,
//     cached after a read, which an in-place write must drop);
//   - `uploadToGPU(dataId)`: moves a tensor whose values are still on the CPU into a buffer;
//   - the pending command stream: `ensureCommandEncoderReady()`, `commandEncoder`, the open
//     `computePassEncoder` (closed by `endComputePassEncoder()`), `dispatchCountInPass`, and
//     `submitQueue()`, which submits and then releases what was waiting for the submit
//     (`commandQueueOwnedIds` tensors disposed meanwhile, `uniformPendingDisposal` buffers);
//   - the flag WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE (dispatches per submit).
// Work encoded here goes into the same encoder (and the same compute pass) as TF.js's kernels, so
// it runs in program order with them with no extra submit or wait: a dispatch here sees what the
// TF.js kernels encoded before it wrote, and TF.js kernels encoded after it see its writes
// (WebGPU orders dispatches within a pass and commands within an encoder).
//
// Buffer lifetimes follow TF.js's rules: a tensor used here is marked as owned by the pending
// commands (its buffer returns to TF.js's pool only after the next submit, as TF.js does for its
// own kernels), and uniforms are written to fresh pooled buffers released after the submit, never
// rewritten while a pending command may still read them (`queue.writeBuffer` runs ahead of
// commands not yet submitted).
import type { TensorInfo } from '@tensorflow/tfjs';
import type { Tf } from '../common.ts';

/** The exact @tensorflow/tfjs-backend-webgpu version whose internals this file uses. */
export const TFJS_WEBGPU_VERSION = '4.22.0';

interface TensorData {
  resource?: GPUBuffer | GPUTexture | null;
  values?: unknown;
  refCount: number;
  dtype: string;
  shape: number[];
}

interface BufferManagerLike {
  acquireBuffer(size: number, usage: number, mappedAtCreation?: boolean, reuse?: boolean): GPUBuffer;
  releaseBuffer(buffer: GPUBuffer, reuse?: boolean): void;
}

/** The parts of tfjs-backend-webgpu's WebGPUBackend this seam uses (see the header). */
interface WebGpuBackendInternals {
  device: GPUDevice;
  queue: GPUQueue;
  bufferManager: BufferManagerLike;
  tensorMap: { get(dataId: object): TensorData | undefined; has(dataId: object): boolean };
  uploadToGPU(dataId: object): void;
  ensureCommandEncoderReady(): void;
  endComputePassEncoder(): void;
  submitQueue(): void;
  getBufferData(buffer: GPUBuffer): Promise<ArrayBuffer>;
  commandEncoder: GPUCommandEncoder | null;
  computePassEncoder: GPUComputePassEncoder | null;
  dispatchCountInPass: number;
  commandQueueOwnedIds: WeakSet<object>;
  uniformPendingDisposal: GPUBuffer[];
}

const REQUIRED_METHODS = ['uploadToGPU', 'ensureCommandEncoderReady', 'endComputePassEncoder', 'submitQueue', 'getBufferData'] as const;
const REQUIRED_FIELDS = ['device', 'queue', 'bufferManager', 'tensorMap', 'commandQueueOwnedIds', 'uniformPendingDisposal'] as const;

/** Usage of the storage buffers this seam makes: bound to shaders, and copied to and from. */
export const STORAGE_USAGE = 0x80 /* STORAGE */ | 0x04 /* COPY_SRC */ | 0x08 /* COPY_DST */;
const UNIFORM_USAGE = 0x40 /* UNIFORM */ | 0x08; /* COPY_DST */

/** Counts of what this seam encoded (for dispatch counts in tests and `mlm bench`). */
export interface RawCounts {
  dispatches: number;
  copies: number;
}

/** A buffer bound at one binding of a bind group: a whole buffer, or a range of it. */
export type Binding = GPUBuffer | { buffer: GPUBuffer; offset?: number; size?: number };

/**
 * Raw access to one webgpu backend: its device, the buffers behind tensors, cached pipelines and
 * bind groups, and dispatches and copies encoded into its command stream.
 */
export class RawWebGpu {
  readonly device: GPUDevice;
  readonly counts: RawCounts = { dispatches: 0, copies: 0 };
  private readonly pipelines = new Map<string, GPUComputePipeline>();
  private readonly bindGroups = new Map<string, { buffers: Binding[]; group: GPUBindGroup }>();

  constructor(
    private readonly tf: Tf,
    private readonly backend: WebGpuBackendInternals,
  ) {
    this.device = backend.device;
  }

  /** Whether the device was created with `feature` (e.g. 'shader-f16', 'subgroups'). */
  hasFeature(feature: string): boolean {
    return this.device.features.has(feature);
  }

  /**
   * The GPUBuffer holding tensor `t` (moved to the GPU first if its values are on the CPU), marked
   * as used by the pending commands so that disposing `t` before the next submit cannot hand its
   * buffer to another tensor early. Only the first `size(t) * 4` bytes are the tensor's.
   */
  bufferOf(t: TensorInfo): GPUBuffer {
    const data = this.backend.tensorMap.get(t.dataId);
    if (data === undefined) throw new Error('rawWebGpu: the tensor is disposed or belongs to another backend');
    if (data.dtype === 'complex64' || data.dtype === 'string') throw new Error(`rawWebGpu: ${data.dtype} tensors have no single buffer`);
    this.backend.uploadToGPU(t.dataId);
    const resource = data.resource;
    if (!(resource instanceof GPUBuffer)) throw new Error('rawWebGpu: the tensor is held in a texture, not a buffer');
    this.backend.commandQueueOwnedIds.add(t.dataId);
    return resource;
  }

  /** How many tensors share `t`'s buffer (TF.js reshapes and clones share; in-place writes must not). */
  sharers(t: TensorInfo): number {
    return this.backend.tensorMap.get(t.dataId)?.refCount ?? 0;
  }

  /**
   * Call after encoding a write into `t`'s buffer: drops the CPU copy TF.js caches after a read,
   * so the next read downloads the new values.
   */
  written(t: TensorInfo): void {
    const data = this.backend.tensorMap.get(t.dataId);
    if (data !== undefined) data.values = null;
  }

  /** A compute pipeline for `code`, created once per `key` (the key must change when the code does). */
  pipeline(key: string, code: string, entryPoint = 'main'): GPUComputePipeline {
    let p = this.pipelines.get(key);
    if (p === undefined) {
      const module = this.device.createShaderModule({ code, label: key });
      p = this.device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint }, label: key });
      this.pipelines.set(key, p);
    }
    return p;
  }

  /**
   * A bind group of `pipeline`'s group 0 with `bindings` at 0, 1, 2..., cached under `key` while
   * the same buffers are bound (TF.js recycles buffers, so a tensor's buffer can change).
   */
  bindGroup(key: string, pipeline: GPUComputePipeline, bindings: Binding[]): GPUBindGroup {
    const cached = this.bindGroups.get(key);
    if (cached !== undefined && cached.buffers.length === bindings.length && cached.buffers.every((b, i) => sameBinding(b, bindings[i]))) {
      return cached.group;
    }
    const group = this.device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: bindings.map((b, i) => ({ binding: i, resource: b instanceof GPUBuffer ? { buffer: b } : b })),
    });
    this.bindGroups.set(key, { buffers: bindings, group });
    return group;
  }

  /**
   * A uniform buffer holding `data` (a multiple of 4 bytes; padded to 16), from TF.js's pool and
   * given back after the next submit, as TF.js does with its own uniforms.
   */
  uniform(data: ArrayBuffer): GPUBuffer {
    const size = Math.max(16, Math.ceil(data.byteLength / 16) * 16);
    const buffer = this.backend.bufferManager.acquireBuffer(size, UNIFORM_USAGE);
    this.backend.queue.writeBuffer(buffer, 0, data, 0, data.byteLength);
    this.backend.uniformPendingDisposal.push(buffer);
    return buffer;
  }

  /**
   * Encodes one dispatch of `pipeline` with `bindGroup` into TF.js's open compute pass (opening
   * one if needed); submits when TF.js would (every WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE dispatches).
   */
  dispatch(pipeline: GPUComputePipeline, bindGroup: GPUBindGroup, workgroups: [number, number?, number?]): void {
    const b = this.backend;
    b.ensureCommandEncoderReady();
    if (b.computePassEncoder === null) b.computePassEncoder = b.commandEncoder!.beginComputePass({});
    const pass = b.computePassEncoder;
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(workgroups[0], workgroups[1] ?? 1, workgroups[2] ?? 1);
    this.counts.dispatches++;
    b.dispatchCountInPass++;
    if ((this.tf.env().get('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE') as number) <= b.dispatchCountInPass) {
      b.endComputePassEncoder();
      b.submitQueue();
    }
  }

  /** Encodes a buffer-to-buffer copy (offsets and size multiples of 4) into TF.js's command stream. */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, size: number): void {
    if (size === 0) return;
    const b = this.backend;
    b.ensureCommandEncoderReady();
    b.endComputePassEncoder();
    b.commandEncoder!.copyBufferToBuffer(src, srcOffset, dst, dstOffset, size);
    this.counts.copies++;
  }

  /** Encodes zeroing `size` bytes of `buffer` from `offset` (multiples of 4). */
  clear(buffer: GPUBuffer, offset: number, size: number): void {
    if (size === 0) return;
    const b = this.backend;
    b.ensureCommandEncoderReady();
    b.endComputePassEncoder();
    b.commandEncoder!.clearBuffer(buffer, offset, size);
  }

  /** Submits everything encoded so far (TF.js's work and this seam's). */
  submit(): void {
    const b = this.backend;
    if (b.commandEncoder === null) return;
    b.endComputePassEncoder();
    b.submitQueue();
  }

  /**
   * The contents of `buffer` once every command encoded before this call has run (submits them).
   * Async: WebGPU maps buffers for reading asynchronously. The promise can be awaited later.
   */
  read(buffer: GPUBuffer): Promise<ArrayBuffer> {
    return this.backend.getBufferData(buffer);
  }

  /** A zero-filled storage buffer of `bytes` (a multiple of 4) from TF.js's pool (counted in tf.memory()). */
  createStorage(bytes: number): GPUBuffer {
    const size = Math.max(4, Math.ceil(bytes / 4) * 4);
    const buffer = this.backend.bufferManager.acquireBuffer(size, STORAGE_USAGE);
    this.clear(buffer, 0, size); // a pooled buffer may hold an earlier tensor's values
    return buffer;
  }

  /** Gives a buffer from `createStorage` back to TF.js's pool, after the commands using it are submitted. */
  releaseStorage(buffer: GPUBuffer): void {
    this.submit();
    this.backend.bufferManager.releaseBuffer(buffer);
  }
}

function sameBinding(a: Binding, b: Binding): boolean {
  if (a instanceof GPUBuffer || b instanceof GPUBuffer) return a === b;
  return a.buffer === b.buffer && (a.offset ?? 0) === (b.offset ?? 0) && a.size === b.size;
}

const instances = new WeakMap<object, RawWebGpu>();

/**
 * The raw seam of the active webgpu backend (one per backend instance, so its caches live as long
 * as the device). Throws, saying what is missing, on another backend or a tfjs-backend-webgpu
 * whose internals differ from those of the pinned version.
 */
export function rawWebGpu(tf: Tf): RawWebGpu {
  if (tf.getBackend() !== 'webgpu') throw new Error(`rawWebGpu needs the webgpu backend; the active one is ${tf.getBackend()}`);
  const backend = tf.backend() as unknown as Record<string, unknown>;
  let raw = instances.get(backend);
  if (raw !== undefined) return raw;
  const missing = [
    ...REQUIRED_FIELDS.filter((f) => backend[f] === undefined || backend[f] === null),
    ...REQUIRED_METHODS.filter((m) => typeof backend[m] !== 'function'),
    ...(['commandEncoder', 'computePassEncoder', 'dispatchCountInPass'] as const).filter((f) => !(f in backend)),
  ];
  if (missing.length > 0) {
    throw new Error(
      `the installed @tensorflow/tfjs-backend-webgpu lacks ${missing.join(', ')}, which mlmkit's raw WebGPU kernels use; install version ${TFJS_WEBGPU_VERSION} (npm install @tensorflow/tfjs-backend-webgpu@${TFJS_WEBGPU_VERSION})`,
    );
  }
  raw = new RawWebGpu(tf, backend as unknown as WebGpuBackendInternals);
  instances.set(backend, raw);
  return raw;
}
