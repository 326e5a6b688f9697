// mlmkit's CPU kernels: 128-bit WebAssembly SIMD over the wasm backend's own memory.
//
// This module imports the memory of @tensorflow/tfjs-backend-wasm (the `env.memory` import) and
// works on its tensors in place: every pointer argument is a byte offset into that memory, as
// `typedArrayFromHeap(t).byteOffset` gives it (training/backend/simd-wasm.ts). It owns no memory
// of its own: no data segment, no static variable, no shadow stack (no local has its address
// taken), so nothing here can overwrite the backend's heap; scripts/build-simd-kernels.sh checks
// the built module for that.
//
// Each kernel does one range of rows (or of columns, or of entries) so that the caller can split
// a tensor between threads; the result of every entry depends only on its own row (column), so it
// is the same however the work is split. Tails shorter than 4 lanes go through the same vector
// code on a partly filled vector, so they round exactly as full vectors do.
//
// The contracts (what each kernel computes, and the plain TF.js composite each is tested against)
// are in training/kernels/; the formulas are repeated above each kernel.
#include <stdint.h>
#include <wasm_simd128.h>

#define EXPORT(name) __attribute__((export_name(#name)))
#define INLINE static inline __attribute__((always_inline))

typedef v128_t f4;

INLINE f4 splat(float v) { return wasm_f32x4_splat(v); }
INLINE f4 add(f4 a, f4 b) { return wasm_f32x4_add(a, b); }
INLINE f4 sub(f4 a, f4 b) { return wasm_f32x4_sub(a, b); }
INLINE f4 mul(f4 a, f4 b) { return wasm_f32x4_mul(a, b); }
INLINE f4 fma_(f4 a, f4 b, f4 c) { return add(mul(a, b), c); } // a b + c, two roundings
INLINE float hsum(f4 v) {
  return (wasm_f32x4_extract_lane(v, 0) + wasm_f32x4_extract_lane(v, 1)) + (wasm_f32x4_extract_lane(v, 2) + wasm_f32x4_extract_lane(v, 3));
}
INLINE float hmax(f4 v) {
  float a = wasm_f32x4_extract_lane(v, 0), b = wasm_f32x4_extract_lane(v, 1);
  float c = wasm_f32x4_extract_lane(v, 2), d = wasm_f32x4_extract_lane(v, 3);
  float ab = a > b ? a : b, cd = c > d ? c : d;
  return ab > cd ? ab : cd;
}

// The first n (1..3) floats at p in a vector, the rest `fill`; and the first n lanes of v stored.
INLINE f4 load_part(const float *p, int n, float fill) {
  return wasm_f32x4_make(p[0], n > 1 ? p[1] : fill, n > 2 ? p[2] : fill, fill);
}
INLINE void store_part(float *p, f4 v, int n) {
  p[0] = wasm_f32x4_extract_lane(v, 0);
  if (n > 1) p[1] = wasm_f32x4_extract_lane(v, 1);
  if (n > 2) p[2] = wasm_f32x4_extract_lane(v, 2);
}
INLINE f4 load(const float *p) { return wasm_v128_load(p); }
INLINE void store(float *p, f4 v) { wasm_v128_store(p, v); }

// exp(x), lanewise, within ~2 ulp: x = n ln2 + r with |r| <= ln2 / 2 (ln2 in two parts, as
// Cephes's expf), e^r by a degree-6 polynomial (Cephes's coefficients), times 2^n built in the
// exponent bits. Inputs below -87.3 give 0 (the smallest normal float is e^-87.34), above 88.7
// the largest finite value's neighbourhood; NaN stays NaN.
INLINE f4 exp4(f4 x) {
  const f4 lo = splat(-87.33654f), hi = splat(88.37625f);
  f4 under = wasm_f32x4_lt(x, lo);
  f4 xc = wasm_f32x4_pmin(wasm_f32x4_pmax(x, lo), hi);
  f4 n = wasm_f32x4_nearest(mul(xc, splat(1.44269504088896341f)));
  f4 r = sub(sub(xc, mul(n, splat(0.693359375f))), mul(n, splat(-2.12194440e-4f)));
  f4 p = splat(1.9875691500e-4f);
  p = fma_(p, r, splat(1.3981999507e-3f));
  p = fma_(p, r, splat(8.3334519073e-3f));
  p = fma_(p, r, splat(4.1665795894e-2f));
  p = fma_(p, r, splat(1.6666665459e-1f));
  p = fma_(p, r, splat(5.0000001201e-1f));
  p = add(fma_(p, mul(r, r), r), splat(1.0f));
  v128_t bits = wasm_i32x4_shl(wasm_i32x4_add(wasm_i32x4_trunc_sat_f32x4(n), wasm_i32x4_splat(127)), 23);
  f4 y = mul(p, bits);
  y = wasm_v128_andnot(y, under);
  // pmin/pmax keep x when it is NaN (they return their first operand then): NaN in, NaN out.
  return y;
}

// -------------------------------------------------------------------------------------------------
// GELU (training/kernels/bias-gelu.ts): z = x + b per column.
// exact: y = z Phi(z), Phi(z) = (1 + erf(z / sqrt 2)) / 2, y' = Phi(z) + z phi(z),
//   phi(z) = exp(-z^2 / 2) / sqrt(2 pi). erf by Abramowitz and Stegun 7.1.26 (absolute error
//   under 1.5e-7, the formula of TF.js's cpu Erf), erf(a) = 1 - q(t) exp(-a^2), t = 1 / (1 + p a):
//   its exp(-a^2) with a = |z| / sqrt 2 is the exp(-z^2 / 2) of phi, so one exp serves both. Phi
//   is formed as 1 - q e / 2 or q e / 2 by the sign of z, not as (1 + erf) / 2, which would lose
//   the small tail values to cancellation.
// tanh: y = z s, s = sigmoid(u), u = c (z + 0.044715 z^3), c = 2 sqrt(2 / pi);
//   y' = s + z s (1 - s) c (1 + 3 0.044715 z^2).

typedef struct { f4 y, dy; } gelu_t;

INLINE gelu_t gelu4(f4 z, int tanh_form) {
  gelu_t g;
  if (tanh_form) {
    const f4 c = splat(1.5957691216057308f), a = splat(0.044715f);
    f4 z2 = mul(z, z);
    f4 u = mul(c, mul(z, fma_(a, z2, splat(1.0f))));
    f4 s = wasm_f32x4_div(splat(1.0f), add(splat(1.0f), exp4(wasm_f32x4_neg(u))));
    g.y = mul(z, s);
    f4 du = mul(c, fma_(splat(3.0f * 0.044715f), z2, splat(1.0f)));
    g.dy = add(s, mul(mul(mul(z, s), sub(splat(1.0f), s)), du));
    return g;
  }
  f4 e = exp4(mul(splat(-0.5f), mul(z, z)));
  f4 aa = mul(wasm_f32x4_abs(z), splat(0.70710678118654752f));
  f4 t = wasm_f32x4_div(splat(1.0f), fma_(splat(0.3275911f), aa, splat(1.0f)));
  f4 q = splat(1.061405429f);
  q = fma_(q, t, splat(-1.453152027f));
  q = fma_(q, t, splat(1.421413741f));
  q = fma_(q, t, splat(-0.284496736f));
  q = fma_(q, t, splat(0.254829592f));
  q = mul(q, t);
  f4 tail = mul(splat(0.5f), mul(q, e)); // Phi(-|z|)
  f4 cdf = wasm_v128_bitselect(tail, sub(splat(1.0f), tail), wasm_f32x4_lt(z, splat(0.0f)));
  g.y = mul(z, cdf);
  g.dy = add(cdf, mul(z, mul(e, splat(0.3989422804014327f))));
  return g;
}

// y = gelu(x + b) for rows [r0, r1) of x [rows, cols].
EXPORT(bias_gelu)
void bias_gelu(const float *x, const float *b, float *y, int cols, int tanh_form, int r0, int r1) {
  for (int r = r0; r < r1; r++) {
    const float *xr = x + (long)r * cols;
    float *yr = y + (long)r * cols;
    int c = 0;
    for (; c + 4 <= cols; c += 4) store(yr + c, gelu4(add(load(xr + c), load(b + c)), tanh_form).y);
    if (c < cols) store_part(yr + c, gelu4(add(load_part(xr + c, cols - c, 0), load_part(b + c, cols - c, 0)), tanh_form).y, cols - c);
  }
}

// dx = dy gelu'(x + b) for rows [r0, r1).
EXPORT(bias_gelu_grad)
void bias_gelu_grad(const float *dy, const float *x, const float *b, float *dx, int cols, int tanh_form, int r0, int r1) {
  for (int r = r0; r < r1; r++) {
    long o = (long)r * cols;
    int c = 0;
    for (; c + 4 <= cols; c += 4) store(dx + o + c, mul(load(dy + o + c), gelu4(add(load(x + o + c), load(b + c)), tanh_form).dy));
    if (c < cols) {
      int n = cols - c;
      store_part(dx + o + c, mul(load_part(dy + o + c, n, 0), gelu4(add(load_part(x + o + c, n, 0), load_part(b + c, n, 0)), tanh_form).dy), n);
    }
  }
}

// -------------------------------------------------------------------------------------------------
// Column sums: out[c] = sum over rows r of x[r, c], for columns [c0, c1), accumulated in float64
// in ascending r and rounded once. Sixteen columns at a time (a cache line of each row), in eight
// float64x2 accumulators.

INLINE void acc_add(v128_t *lo, v128_t *hi, f4 v) {
  *lo = wasm_f64x2_add(*lo, wasm_f64x2_promote_low_f32x4(v));
  *hi = wasm_f64x2_add(*hi, wasm_f64x2_promote_low_f32x4(wasm_i32x4_shuffle(v, v, 2, 3, 0, 1)));
}
INLINE f4 acc_round(v128_t lo, v128_t hi) {
  f4 a = wasm_f32x4_demote_f64x2_zero(lo), b = wasm_f32x4_demote_f64x2_zero(hi);
  return wasm_i32x4_shuffle(a, b, 0, 1, 4, 5);
}

EXPORT(column_sums)
void column_sums(const float *x, float *out, int rows, int cols, int c0, int c1) {
  int c = c0;
  for (; c + 16 <= c1; c += 16) {
    v128_t a0 = wasm_f64x2_splat(0), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    const float *p = x + c;
    for (int r = 0; r < rows; r++, p += cols) {
      acc_add(&a0, &a1, load(p));
      acc_add(&a2, &a3, load(p + 4));
      acc_add(&a4, &a5, load(p + 8));
      acc_add(&a6, &a7, load(p + 12));
    }
    store(out + c, acc_round(a0, a1));
    store(out + c + 4, acc_round(a2, a3));
    store(out + c + 8, acc_round(a4, a5));
    store(out + c + 12, acc_round(a6, a7));
  }
  for (; c < c1; c += 4) {
    int n = c1 - c < 4 ? c1 - c : 4;
    v128_t a0 = wasm_f64x2_splat(0), a1 = a0;
    const float *p = x + c;
    for (int r = 0; r < rows; r++, p += cols) acc_add(&a0, &a1, n == 4 ? load(p) : load_part(p, n, 0));
    if (n == 4) store(out + c, acc_round(a0, a1));
    else store_part(out + c, acc_round(a0, a1), n);
  }
}

// -------------------------------------------------------------------------------------------------
// LayerNorm over rows of x [N, H] (training/kernels/layer-norm.ts): mean, biased variance,
// rstd = 1 / sqrt(var + eps), y = (x - mean) rstd gamma + beta; stats [N, 2] = (mean, rstd).

INLINE float row_sum(const float *p, int n, f4 shift, int squares) {
  f4 s0 = splat(0), s1 = splat(0);
  int c = 0;
  for (; c + 8 <= n; c += 8) {
    f4 a = sub(load(p + c), shift), b = sub(load(p + c + 4), shift);
    s0 = add(s0, squares ? mul(a, a) : a);
    s1 = add(s1, squares ? mul(b, b) : b);
  }
  for (; c < n; c += 4) {
    int k = n - c < 4 ? n - c : 4;
    f4 a = sub(k == 4 ? load(p + c) : load_part(p + c, k, 0), shift);
    if (k < 4) a = wasm_v128_and(a, wasm_i32x4_make(-1, k > 1 ? -1 : 0, k > 2 ? -1 : 0, 0));
    s0 = add(s0, squares ? mul(a, a) : a);
  }
  return hsum(add(s0, s1));
}

EXPORT(layer_norm)
void layer_norm(const float *x, const float *gamma, const float *beta, float *y, float *stats, int H, float eps, int r0, int r1) {
  for (int r = r0; r < r1; r++) {
    const float *xr = x + (long)r * H;
    float *yr = y + (long)r * H;
    float mean = row_sum(xr, H, splat(0), 0) / (float)H;
    float var = row_sum(xr, H, splat(mean), 1) / (float)H;
    float rstd = 1.0f / __builtin_sqrtf(var + eps);
    stats[2 * r] = mean;
    stats[2 * r + 1] = rstd;
    f4 m = splat(mean), s = splat(rstd);
    int c = 0;
    for (; c + 4 <= H; c += 4) store(yr + c, add(mul(mul(sub(load(xr + c), m), s), load(gamma + c)), load(beta + c)));
    if (c < H) {
      int n = H - c;
      store_part(yr + c, add(mul(mul(sub(load_part(xr + c, n, 0), m), s), load_part(gamma + c, n, 0)), load_part(beta + c, n, 0)), n);
    }
  }
}

// The gradient's rows: g = dy gamma, xhat = (x - mean) rstd,
// dx = rstd (g - mean(g) - xhat mean(g xhat)), for rows [r0, r1).
EXPORT(layer_norm_grad_rows)
void layer_norm_grad_rows(const float *dy, const float *x, const float *stats, const float *gamma, float *dx, int H, int r0, int r1) {
  for (int r = r0; r < r1; r++) {
    long o = (long)r * H;
    f4 m = splat(stats[2 * r]), s = splat(stats[2 * r + 1]);
    f4 sg = splat(0), sgx = splat(0);
    int c = 0;
    for (; c + 4 <= H; c += 4) {
      f4 g = mul(load(dy + o + c), load(gamma + c));
      f4 xh = mul(sub(load(x + o + c), m), s);
      sg = add(sg, g);
      sgx = add(sgx, mul(g, xh));
    }
    if (c < H) {
      int n = H - c;
      f4 g = mul(load_part(dy + o + c, n, 0), load_part(gamma + c, n, 0));
      f4 xh = mul(sub(load_part(x + o + c, n, 0), m), s); // garbage in unused lanes, but g is 0 there
      sg = add(sg, g);
      sgx = add(sgx, mul(g, wasm_v128_and(xh, wasm_i32x4_make(-1, n > 1 ? -1 : 0, n > 2 ? -1 : 0, 0))));
    }
    f4 mg = splat(hsum(sg) / (float)H), mgx = splat(hsum(sgx) / (float)H);
    for (c = 0; c + 4 <= H; c += 4) {
      f4 g = mul(load(dy + o + c), load(gamma + c));
      f4 xh = mul(sub(load(x + o + c), m), s);
      store(dx + o + c, mul(sub(sub(g, mg), mul(xh, mgx)), s));
    }
    if (c < H) {
      int n = H - c;
      f4 g = mul(load_part(dy + o + c, n, 0), load_part(gamma + c, n, 0));
      f4 xh = mul(sub(load_part(x + o + c, n, 0), m), s);
      store_part(dx + o + c, mul(sub(sub(g, mg), mul(xh, mgx)), s), n);
    }
  }
}

// The gradient's columns [c0, c1): dgamma = sum over rows of dy xhat, dbeta = sum of dy, in
// float64 (as column_sums), four columns at a time.
EXPORT(layer_norm_grad_columns)
void layer_norm_grad_columns(const float *dy, const float *x, const float *stats, float *dgamma, float *dbeta, int N, int H, int c0, int c1) {
  for (int c = c0; c < c1; c += 4) {
    int n = c1 - c < 4 ? c1 - c : 4;
    v128_t g0 = wasm_f64x2_splat(0), g1 = g0, b0 = g0, b1 = g0;
    for (int r = 0; r < N; r++) {
      long o = (long)r * H + c;
      f4 d = n == 4 ? load(dy + o) : load_part(dy + o, n, 0);
      f4 xh = mul(sub(n == 4 ? load(x + o) : load_part(x + o, n, 0), splat(stats[2 * r])), splat(stats[2 * r + 1]));
      acc_add(&g0, &g1, mul(d, xh));
      acc_add(&b0, &b1, d);
    }
    if (n == 4) {
      store(dgamma + c, acc_round(g0, g1));
      store(dbeta + c, acc_round(b0, b1));
    } else {
      store_part(dgamma + c, acc_round(g0, g1), n);
      store_part(dbeta + c, acc_round(b0, b1), n);
    }
  }
}

// -------------------------------------------------------------------------------------------------
// Dropout masks (training/kernels/dropout-mask.ts): entry i is dropped when
// hash(i) = mix(mix(mix(i + k0) ^ k1) ^ k2) < threshold (unsigned), mix = "lowbias32"; a kept entry
// is multiplied by `scale`. keep4 gives the mask factors (0 or scale) of entries i .. i + 3.

typedef struct { uint32_t k0, k1, k2, threshold; float scale; } drop_t;

INLINE v128_t mix4(v128_t x) {
  x = wasm_v128_xor(x, wasm_u32x4_shr(x, 16));
  x = wasm_i32x4_mul(x, wasm_i32x4_splat(0x7feb352d));
  x = wasm_v128_xor(x, wasm_u32x4_shr(x, 15));
  x = wasm_i32x4_mul(x, wasm_i32x4_splat((int32_t)0x846ca68bu));
  return wasm_v128_xor(x, wasm_u32x4_shr(x, 16));
}

INLINE f4 keep4(uint32_t i, drop_t d) {
  v128_t h = wasm_i32x4_add(wasm_i32x4_make(i, i + 1, i + 2, i + 3), wasm_i32x4_splat(d.k0));
  h = mix4(wasm_v128_xor(mix4(wasm_v128_xor(mix4(h), wasm_i32x4_splat(d.k1))), wasm_i32x4_splat(d.k2)));
  return wasm_v128_andnot(splat(d.scale), wasm_u32x4_lt(h, wasm_i32x4_splat(d.threshold)));
}

// out[i] = the mask factor of entry i, for i in [i0, i1).
EXPORT(dropout_mask)
void dropout_mask(float *out, uint32_t k0, uint32_t k1, uint32_t k2, uint32_t threshold, float scale, int i0, int i1) {
  drop_t d = {k0, k1, k2, threshold, scale};
  int i = i0;
  for (; i + 4 <= i1; i += 4) store(out + i, keep4((uint32_t)i, d));
  if (i < i1) store_part(out + i, keep4((uint32_t)i, d), i1 - i);
}

// dx[i] = dy[i] times the mask factor of entry i, for i in [i0, i1).
EXPORT(dropout_apply)
void dropout_apply(const float *dy, float *dx, uint32_t k0, uint32_t k1, uint32_t k2, uint32_t threshold, float scale, int i0, int i1) {
  drop_t d = {k0, k1, k2, threshold, scale};
  int i = i0;
  for (; i + 4 <= i1; i += 4) store(dx + i, mul(load(dy + i), keep4((uint32_t)i, d)));
  if (i < i1) store_part(dx + i, mul(load_part(dy + i, i1 - i, 0), keep4((uint32_t)i, d)), i1 - i);
}

// Bias + dropout + residual (training/kernels/bias-dropout-residual.ts), rows [r0, r1) of
// [N, H]: y = (x + b) mask + residual; without dropout (`dropout` 0) the mask is 1.
EXPORT(bias_dropout_residual)
void bias_dropout_residual(const float *x, const float *b, const float *res, float *y, int H, int dropout, uint32_t k0, uint32_t k1, uint32_t k2, uint32_t threshold, float scale, int r0, int r1) {
  drop_t d = {k0, k1, k2, threshold, scale};
  for (int r = r0; r < r1; r++) {
    long o = (long)r * H;
    int c = 0;
    for (; c + 4 <= H; c += 4) {
      f4 h = add(load(x + o + c), load(b + c));
      if (dropout) h = mul(h, keep4((uint32_t)(o + c), d));
      store(y + o + c, add(h, load(res + o + c)));
    }
    if (c < H) {
      int n = H - c;
      f4 h = add(load_part(x + o + c, n, 0), load_part(b + c, n, 0));
      if (dropout) h = mul(h, keep4((uint32_t)(o + c), d));
      store_part(y + o + c, add(h, load_part(res + o + c, n, 0)), n);
    }
  }
}

// -------------------------------------------------------------------------------------------------
// Attention softmax (training/kernels/attention-softmax.ts) over rows of length Tk of scores
// [B, heads, Tq, Tk]: z = scores scale + bias[b, k], p = softmax(z), out = p mask (mask of the
// flat index). Row r belongs to batch entry r / (heads Tq). The backward recomputes p and the
// mask: g = dy mask, dz = scale p (g - sum(p g)).

// p = exp(z - max) / sum for one row into `out` (unnormalised first); returns 1 / sum.
INLINE float softmax_row(const float *s, const float *bias, float *out, int Tk, f4 scale) {
  f4 mx = splat(-__builtin_inff());
  int k = 0;
  for (; k + 4 <= Tk; k += 4) {
    f4 z = fma_(load(s + k), scale, load(bias + k));
    store(out + k, z);
    mx = wasm_f32x4_pmax(mx, z);
  }
  if (k < Tk) {
    int n = Tk - k;
    f4 z = fma_(load_part(s + k, n, 0), scale, load_part(bias + k, n, 0));
    store_part(out + k, z, n);
    mx = wasm_f32x4_pmax(mx, wasm_v128_bitselect(z, splat(-__builtin_inff()), wasm_i32x4_make(-1, n > 1 ? -1 : 0, n > 2 ? -1 : 0, 0)));
  }
  f4 m = splat(hmax(mx));
  f4 sum = splat(0);
  for (k = 0; k + 4 <= Tk; k += 4) {
    f4 e = exp4(sub(load(out + k), m));
    store(out + k, e);
    sum = add(sum, e);
  }
  if (k < Tk) {
    int n = Tk - k;
    f4 e = exp4(sub(load_part(out + k, n, 0), m));
    store_part(out + k, e, n);
    sum = add(sum, wasm_v128_and(e, wasm_i32x4_make(-1, n > 1 ? -1 : 0, n > 2 ? -1 : 0, 0)));
  }
  return 1.0f / hsum(sum);
}

EXPORT(attention_softmax)
void attention_softmax(const float *scores, const float *bias, float *out, int rowsPerBatch, int Tk, float scale, int dropout, uint32_t k0, uint32_t k1, uint32_t k2, uint32_t threshold, float keepScale, int r0, int r1) {
  drop_t d = {k0, k1, k2, threshold, keepScale};
  for (int r = r0; r < r1; r++) {
    long o = (long)r * Tk;
    float inv = softmax_row(scores + o, bias + (long)(r / rowsPerBatch) * Tk, out + o, Tk, splat(scale));
    f4 iv = splat(inv);
    int k = 0;
    for (; k + 4 <= Tk; k += 4) {
      f4 p = mul(load(out + o + k), iv);
      store(out + o + k, dropout ? mul(p, keep4((uint32_t)(o + k), d)) : p);
    }
    if (k < Tk) {
      int n = Tk - k;
      f4 p = mul(load_part(out + o + k, n, 0), iv);
      store_part(out + o + k, dropout ? mul(p, keep4((uint32_t)(o + k), d)) : p, n);
    }
  }
}

// dscores for rows [r0, r1); `dz` first holds the recomputed unnormalised probabilities.
EXPORT(attention_softmax_grad)
void attention_softmax_grad(const float *scores, const float *bias, const float *dy, float *dz, int rowsPerBatch, int Tk, float scale, int dropout, uint32_t k0, uint32_t k1, uint32_t k2, uint32_t threshold, float keepScale, int r0, int r1) {
  drop_t d = {k0, k1, k2, threshold, keepScale};
  for (int r = r0; r < r1; r++) {
    long o = (long)r * Tk;
    f4 iv = splat(softmax_row(scores + o, bias + (long)(r / rowsPerBatch) * Tk, dz + o, Tk, splat(scale)));
    f4 dot = splat(0);
    int k = 0;
    for (; k + 4 <= Tk; k += 4) {
      f4 g = load(dy + o + k);
      if (dropout) g = mul(g, keep4((uint32_t)(o + k), d));
      dot = add(dot, mul(mul(load(dz + o + k), iv), g));
    }
    if (k < Tk) {
      int n = Tk - k;
      f4 g = load_part(dy + o + k, n, 0);
      if (dropout) g = mul(g, keep4((uint32_t)(o + k), d));
      dot = add(dot, mul(mul(load_part(dz + o + k, n, 0), iv), g));
    }
    f4 dt = splat(hsum(dot));
    f4 sc = splat(scale);
    for (k = 0; k + 4 <= Tk; k += 4) {
      f4 g = load(dy + o + k);
      if (dropout) g = mul(g, keep4((uint32_t)(o + k), d));
      store(dz + o + k, mul(mul(mul(load(dz + o + k), iv), sub(g, dt)), sc));
    }
    if (k < Tk) {
      int n = Tk - k;
      f4 g = load_part(dy + o + k, n, 0);
      if (dropout) g = mul(g, keep4((uint32_t)(o + k), d));
      store_part(dz + o + k, mul(mul(mul(load_part(dz + o + k, n, 0), iv), sub(g, dt)), sc), n);
    }
  }
}

// -------------------------------------------------------------------------------------------------
// Masked cross-entropy (training/kernels/masked-cross-entropy.ts), rows [r0, r1) of logits
// [N, V]: loss = w (logsumexp(row) - row[target]); the gradient (softmax(row) - onehot(target)) w dy.
// `weights` may be 0 (none: every weight 1). Sums of exponentials in float64 per vector lane.

INLINE float row_max(const float *p, int n) {
  f4 mx = splat(-__builtin_inff());
  int k = 0;
  for (; k + 4 <= n; k += 4) mx = wasm_f32x4_pmax(mx, load(p + k));
  float m = hmax(mx);
  for (; k < n; k++) m = p[k] > m ? p[k] : m;
  return m;
}

// sum over the row of exp(p[k] - m); with `out` (not 0) also out[k] = exp(p[k] - m).
INLINE float row_exp_sum(const float *p, float *out, int n, float m) {
  f4 mm = splat(m);
  v128_t a0 = wasm_f64x2_splat(0), a1 = a0;
  int k = 0;
  for (; k + 4 <= n; k += 4) {
    f4 e = exp4(sub(load(p + k), mm));
    if (out) store(out + k, e);
    acc_add(&a0, &a1, e);
  }
  if (k < n) {
    int c = n - k;
    f4 e = exp4(sub(load_part(p + k, c, 0), mm));
    if (out) store_part(out + k, e, c);
    acc_add(&a0, &a1, wasm_v128_and(e, wasm_i32x4_make(-1, c > 1 ? -1 : 0, c > 2 ? -1 : 0, 0)));
  }
  v128_t s = wasm_f64x2_add(a0, a1);
  return (float)(wasm_f64x2_extract_lane(s, 0) + wasm_f64x2_extract_lane(s, 1));
}

// log(v) for v > 0 finite, in float64: v = m 2^e with m in [sqrt(1/2), sqrt(2)),
// log v = e ln 2 + 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172, by its series to s^17 (the next
// term is under 1e-15 of the result). One call per row, so speed does not matter here.
static double log_(double v) {
  union { double d; uint64_t u; } x = {v};
  int e = (int)((x.u >> 52) & 0x7ff) - 1023;
  x.u = (x.u & 0x000fffffffffffffull) | 0x3ff0000000000000ull; // m in [1, 2)
  double m = x.d;
  if (m > 1.4142135623730951) { m *= 0.5; e += 1; }
  double s = (m - 1) / (m + 1), s2 = s * s, term = s, sum = 0;
  for (int k = 1; k <= 17; k += 2) { sum += term / k; term *= s2; }
  return e * 0.6931471805599453 + 2 * sum;
}

EXPORT(masked_cross_entropy)
void masked_cross_entropy(const float *logits, const int32_t *targets, const float *weights, float *loss, int V, int r0, int r1) {
  for (int r = r0; r < r1; r++) {
    const float *row = logits + (long)r * V;
    float m = row_max(row, V);
    float lse = (float)(m + log_(row_exp_sum(row, 0, V, m)));
    int t = targets[r];
    float picked = t >= 0 && t < V ? row[t] : 0.0f;
    loss[r] = (weights ? weights[r] : 1.0f) * (lse - picked);
  }
}

EXPORT(masked_cross_entropy_grad)
void masked_cross_entropy_grad(const float *logits, const int32_t *targets, const float *weights, const float *dyScalar, float *dl, int V, int r0, int r1) {
  for (int r = r0; r < r1; r++) {
    const float *row = logits + (long)r * V;
    float *out = dl + (long)r * V;
    float m = row_max(row, V);
    float f = (weights ? weights[r] : 1.0f) * dyScalar[0];
    // The exponentials go into the output as they are summed, then are scaled there: one exp per
    // entry instead of two, and the row (V floats, in the core's cache by then) read once more.
    f4 scale = splat(f / row_exp_sum(row, out, V, m));
    int k = 0;
    for (; k + 4 <= V; k += 4) store(out + k, mul(load(out + k), scale));
    if (k < V) store_part(out + k, mul(load_part(out + k, V - k, 0), scale), V - k);
    int t = targets[r];
    if (t >= 0 && t < V) out[t] -= f;
  }
}

// -------------------------------------------------------------------------------------------------
// AdamW over one parameter (training/kernels/adamw.ts), entries [i0, i1): the per-tensor update of
// training/optimizer.ts, each float32 operation in the same order, so the results are the same
// bits as the composite's:
//   m1 = m b1 + g b1c;  v1 = v b2 + (g g) b2c;  denom = sqrt(v1) inv + eps;
//   p1 = (decay ? p keep : p) + (m1 / denom) negStep.
EXPORT(adamw)
void adamw(const float *p, const float *m, const float *v, const float *g, float *p1, float *m1, float *v1,
           float b1, float b2, float b1c, float b2c, float inv, float eps, float negStep, float keep, int decay, int i0, int i1) {
  f4 B1 = splat(b1), B2 = splat(b2), B1C = splat(b1c), B2C = splat(b2c), INV = splat(inv), EPS = splat(eps), NS = splat(negStep), KEEP = splat(keep);
  int i = i0;
  for (; i + 4 <= i1; i += 4) {
    f4 gg = load(g + i);
    f4 mm = add(mul(load(m + i), B1), mul(gg, B1C));
    f4 vv = add(mul(load(v + i), B2), mul(mul(gg, gg), B2C));
    f4 den = add(mul(wasm_f32x4_sqrt(vv), INV), EPS);
    f4 pp = load(p + i);
    if (decay) pp = mul(pp, KEEP);
    store(p1 + i, add(pp, mul(wasm_f32x4_div(mm, den), NS)));
    store(m1 + i, mm);
    store(v1 + i, vv);
  }
  for (; i < i1; i++) {
    float gg = g[i];
    float mm = m[i] * b1 + gg * b1c;
    float vv = v[i] * b2 + (gg * gg) * b2c;
    float den = __builtin_sqrtf(vv) * inv + eps;
    float pp = decay ? p[i] * keep : p[i];
    p1[i] = pp + (mm / den) * negStep;
    m1[i] = mm;
    v1[i] = vv;
  }
}

// The sum of squares of x[0 .. n), in float64 (four lanes of pairs, then added in a fixed order).
EXPORT(sum_squares)
double sum_squares(const float *x, int n) {
  v128_t a0 = wasm_f64x2_splat(0), a1 = a0, a2 = a0, a3 = a0;
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    f4 u = load(x + i), w = load(x + i + 4);
    acc_add(&a0, &a1, mul(u, u));
    acc_add(&a2, &a3, mul(w, w));
  }
  v128_t s = wasm_f64x2_add(wasm_f64x2_add(a0, a1), wasm_f64x2_add(a2, a3));
  double total = wasm_f64x2_extract_lane(s, 0) + wasm_f64x2_extract_lane(s, 1);
  for (; i < n; i++) total += (double)(x[i] * x[i]);
  return total;
}

// n floats from s to d, four at a time.
INLINE void copy_floats(const float *s, float *d, int n) {
  int c = 0;
  for (; c + 4 <= n; c += 4) store(d + c, load(s + c));
  for (; c < n; c++) d[c] = s[c];
}

// Columns [c0, c0 + n) of src [rows, srcCols] into dst [rows, n], rows [r0, r1) (a split along the
// last axis: training/backend/simd-wasm.ts routes TF.js's SplitV here).
EXPORT(copy_columns)
void copy_columns(const float *src, float *dst, int srcCols, int c0, int n, int r0, int r1) {
  for (int r = r0; r < r1; r++) {
    const float *s = src + (long)r * srcCols + c0;
    copy_floats(s, dst + (long)r * n, n);
  }
}

// Attention heads out of rows (training/kernels/attention-heads.ts, one part per call): columns
// [c0, c0 + heads hs) of rows [B T, C] as [B, heads, T, hs], i.e. row r = b T + t, head h goes to
// out[((b heads + h) T + t) hs ...]. Rows [r0, r1).
EXPORT(rows_to_heads)
void rows_to_heads(const float *x, float *out, int C, int c0, int T, int heads, int hs, int r0, int r1) {
  for (int r = r0; r < r1; r++) {
    int b = r / T, t = r - b * T;
    const float *s = x + (long)r * C + c0;
    for (int h = 0; h < heads; h++) copy_floats(s + (long)h * hs, out + (((long)b * heads + h) * T + t) * hs, hs);
  }
}

// The inverse: x [B, heads, T, hs] into columns [c0, c0 + heads hs) of rows [B T, C]. Rows [r0, r1).
EXPORT(heads_to_rows)
void heads_to_rows(const float *x, float *out, int C, int c0, int T, int heads, int hs, int r0, int r1) {
  for (int r = r0; r < r1; r++) {
    int b = r / T, t = r - b * T;
    float *d = out + (long)r * C + c0;
    for (int h = 0; h < heads; h++) copy_floats(x + (((long)b * heads + h) * T + t) * hs, d + (long)h * hs, hs);
  }
}
