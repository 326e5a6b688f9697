// The tiling of mlmkit's f16 matrix product, in one place: C = op(A) op(B) for f32 A and B (op:
// optional transpose), with f16 operands and f32 accumulation, batched over the grid's z axis.
//
// Each workgroup computes one BM x BN block of C. It walks K in steps of BK: its threads copy the
// BM x BK block of op(A) and the BK x BN block of op(B) from global memory into workgroup memory,
// converting f32 to f16 on the way (zeros outside the matrices, so no shape needs to divide the
// tiles), then the inner product multiplies the staged blocks. Two inner products share this
// skeleton (training/backend/webgpu/matmul-f16.ts): subgroup matrices (tensor cores; each subgroup
// holds several result tiles) and a scalar one (f16 loads, f32 FMA; a thread holds an 8 x 8 block).
//
// The epilogue: with a bias or an addend (uniform flags), the workgroup's threads then read their
// block of C back, add them in f32 and write it again, after a storage barrier (the block may have
// been stored by other threads, or by subgroup-matrix stores). It follows the inner product's
// `store`, whichever that is, so the scalar product (tested on llvmpipe) runs the same code as the
// tensor-core one. Without flags the whole epilogue is skipped (a uniform branch).
//
// The f32 -> f16 conversion: values beyond f16's range become +-infinity explicitly (a bit test, as
// WGSL leaves the conversion of out-of-range values undefined and lets compilers assume there is no
// NaN), so an overflow shows as a non-finite product that dynamic loss scaling detects
// (training/loss-scale.ts). Copies read global memory along its contiguous axis for either layout.

/** Block sizes of the tiling (elements). */
export interface Tiling {
  /** Rows and columns of C per workgroup, and the K step staged at a time. */
  BM: number;
  BN: number;
  BK: number;
}

/** The tiling both inner products use. Workgroup memory: (BM + BN) x BK f16 = 12 KiB. */
export const TILING: Tiling = { BM: 128, BN: 64, BK: 32 };

/** What the shape of one product is: C [M, N] = op(A) [M, K] x op(B) [K, N], `batch` times. */
export interface MatmulDims {
  M: number;
  N: number;
  K: number;
  batch: number;
  transposeA: boolean;
  transposeB: boolean;
}

/**
 * An inner product over the staged blocks `As` (BM x BK, row-major, f16) and `Bs` (BK x BN,
 * row-major, f16), and the store of the result into `c` (f32). The skeleton calls `init` once,
 * `step` after every staged block (between barriers), and `store` at the end; in all three the
 * names `m0`, `n0` (the block's first row and column), `cOff` (the batch's offset into c), `dims`
 * (M, N, K), `lid` (local invocation index) and the constants BM, BN, BK are in scope.
 */
export interface InnerProduct {
  /** 'subgroup-matrix' or 'scalar'. */
  readonly name: string;
  /** Threads per workgroup (x). */
  readonly workgroupSize: number;
  /** `enable` lines besides `enable f16;`. */
  readonly enables: string[];
  /** Global directives after the enables (diagnostics). */
  readonly directives: string[];
  /** Extra entry-point parameters (builtins), each ending in a comma. */
  readonly builtins: string;
  declarations(t: Tiling): string;
  init(t: Tiling): string;
  step(t: Tiling): string;
  store(t: Tiling): string;
}

/** Workgroups to dispatch: x over N, y over M, z over the batch. */
export function workgroupCount(d: MatmulDims, t: Tiling = TILING): [number, number, number] {
  return [Math.ceil(d.N / t.BN), Math.ceil(d.M / t.BM), d.batch];
}

/** Epilogue flags (the uniform's `epilogue` field): add a bias [N] to every row, add an addend shaped like C. */
export const EPILOGUE_BIAS = 1;
export const EPILOGUE_ADDEND = 2;

/**
 * The uniform block: M, N, K, then the element strides between batch entries of a, b and c
 * (0 for an operand shared by the whole batch; the addend has c's), the epilogue flags, padded to
 * 32 bytes.
 */
export function uniformData(d: MatmulDims, strides: { a: number; b: number; c: number }, epilogue = 0): Uint32Array {
  return Uint32Array.from([d.M, d.N, d.K, strides.a, strides.b, strides.c, epilogue, 0]);
}

/** The WGSL of one product with the given transposes and inner product. */
export function matmulShader(o: { transposeA: boolean; transposeB: boolean; inner: InnerProduct; tiling?: Tiling }): string {
  const t = o.tiling ?? TILING;
  const { BM, BN, BK } = t;
  const wg = o.inner.workgroupSize;
  if ((BM * BK) % wg !== 0 || (BK * BN) % wg !== 0) throw new Error(`tiling ${BM}x${BN}x${BK} does not split over ${wg} threads`);
  // Element (row r, column k) of op(A), and (row k, column n) of op(B), in their buffers.
  const aIndex = o.transposeA ? 'aOff + gk * dims.M + gr' : 'aOff + gr * dims.K + gk';
  const bIndex = o.transposeB ? 'bOff + gn * dims.K + gk' : 'bOff + gk * dims.N + gn';
  // Which staged element thread-step e copies: along the buffer's contiguous axis.
  const aSplit = o.transposeA ? `let k = e / ${BM}u; let r = e % ${BM}u;` : `let r = e / ${BK}u; let k = e % ${BK}u;`;
  const bSplit = o.transposeB ? `let n = e / ${BK}u; let k = e % ${BK}u;` : `let k = e / ${BN}u; let n = e % ${BN}u;`;
  return `enable f16;
${o.inner.enables.map((e) => `enable ${e};`).join('\n')}
${o.inner.directives.join('\n')}

struct Dims { M : u32, N : u32, K : u32, strideA : u32, strideB : u32, strideC : u32, epilogue : u32, pad0 : u32 }

@group(0) @binding(0) var<storage, read> a : array<f32>;
@group(0) @binding(1) var<storage, read> b : array<f32>;
@group(0) @binding(2) var<storage, read_write> c : array<f32>;
@group(0) @binding(3) var<uniform> dims : Dims;
// Read only when the epilogue's flag is set (any buffer is bound otherwise).
@group(0) @binding(4) var<storage, read> bias : array<f32>;
@group(0) @binding(5) var<storage, read> addend : array<f32>;

const BM = ${BM}u;
const BN = ${BN}u;
const BK = ${BK}u;

var<workgroup> As : array<f16, ${BM * BK}>;
var<workgroup> Bs : array<f16, ${BK * BN}>;
${o.inner.declarations(t)}

// f32 -> f16, with values beyond f16's range (and NaN) as infinity of their sign.
fn toF16(x : f32) -> f16 {
  let bits = bitcast<u32>(x);
  if ((bits & 0x7fffffffu) > 0x477fefffu) {
    // f16 infinity (0x7c00) with x's sign, in the low half of a u32 (a value computed at run time:
    // an infinite constant is a compile error).
    return bitcast<vec2<f16>>(0x7c00u | ((bits >> 16u) & 0x8000u)).x;
  }
  return f16(x);
}

@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_index) lid : u32, ${o.inner.builtins}) {
  let m0 = wid.y * BM;
  let n0 = wid.x * BN;
  let aOff = wid.z * dims.strideA;
  let bOff = wid.z * dims.strideB;
  let cOff = wid.z * dims.strideC;
${o.inner.init(t)}
  for (var k0 = 0u; k0 < dims.K; k0 += BK) {
    for (var e = lid; e < ${BM * BK}u; e += ${wg}u) {
      ${aSplit}
      let gr = m0 + r;
      let gk = k0 + k;
      var v = f16(0.0);
      if (gr < dims.M && gk < dims.K) { v = toF16(a[${aIndex}]); }
      As[r * BK + k] = v;
    }
    for (var e = lid; e < ${BK * BN}u; e += ${wg}u) {
      ${bSplit}
      let gn = n0 + n;
      let gk = k0 + k;
      var v = f16(0.0);
      if (gn < dims.N && gk < dims.K) { v = toF16(b[${bIndex}]); }
      Bs[k * BN + n] = v;
    }
    workgroupBarrier();
${o.inner.step(t)}
    workgroupBarrier();
  }
${o.inner.store(t)}
  if (dims.epilogue != 0u) {
    storageBarrier();
    for (var e = lid; e < ${BM * BN}u; e += ${wg}u) {
      let gm = m0 + e / BN;
      let gn = n0 + e % BN;
      if (gm < dims.M && gn < dims.N) {
        let i = cOff + gm * dims.N + gn;
        var v = c[i];
        if ((dims.epilogue & ${EPILOGUE_BIAS}u) != 0u) { v = v + bias[gn]; }
        if ((dims.epilogue & ${EPILOGUE_ADDEND}u) != 0u) { v = v + addend[i]; }
        c[i] = v;
      }
    }
  }
}
`;
}
