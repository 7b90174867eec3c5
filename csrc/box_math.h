// Box math shared by the CPU and CUDA kernels: one definition of IoU, encode and decode.
// Every function computes in the accumulation type T (float for half/bfloat16/float
// inputs, double for double), so CPU and CUDA round identically.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define SSD_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SSD_HOST_DEVICE inline
#endif

namespace ssd_ext {
namespace box_math {

// log(1000 / 16): torchvision's and Detectron's bound on decoded log-scale offsets, so that
// exp() cannot overflow into inf boxes for wild regression outputs.
constexpr double kDecodeLogScaleClamp = 4.135166556742356;

// NaN maps to 0 here on purpose: together with the NaN-propagating min_of/max_of below it
// makes a box with any NaN coordinate overlap nothing (IoU 0), exactly like the reference's
// torch.where(union > 0, inter / union, 0).
template <typename T>
SSD_HOST_DEVICE T clamp_min_zero(T v) {
  return v > T(0) ? v : T(0);
}

// NaN-propagating like torch.minimum / torch.maximum (a plain ternary would drop a NaN `a`).
template <typename T>
SSD_HOST_DEVICE T min_of(T a, T b) {
  return (a < b || a != a) ? a : b;
}

template <typename T>
SSD_HOST_DEVICE T max_of(T a, T b) {
  return (a > b || a != a) ? a : b;
}

// A product that the compiler may not fuse into a neighbouring add (nvcc contracts a * b + c
// into one fma by default, which rounds differently from the CPU). IoU values decide
// integer outputs (matches, thresholds, ties), so they must round identically everywhere.
SSD_HOST_DEVICE float mul_no_fma(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

SSD_HOST_DEVICE double mul_no_fma(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

// Area of an xyxy box. Inverted boxes (x2 < x1) have zero area rather than a negative one,
// so that they can never produce an IoU outside [0, 1].
template <typename T>
SSD_HOST_DEVICE T box_area(T x1, T y1, T x2, T y2) {
  return mul_no_fma(clamp_min_zero(x2 - x1), clamp_min_zero(y2 - y1));
}

// IoU of two xyxy boxes given their precomputed areas. A zero union gives 0, never NaN.
template <typename T>
SSD_HOST_DEVICE T iou_with_areas(
    T ax1, T ay1, T ax2, T ay2, T area_a,
    T bx1, T by1, T bx2, T by2, T area_b) {
  const T inter_w = clamp_min_zero(min_of(ax2, bx2) - max_of(ax1, bx1));
  const T inter_h = clamp_min_zero(min_of(ay2, by2) - max_of(ay1, by1));
  const T inter = mul_no_fma(inter_w, inter_h);
  const T uni = area_a + area_b - inter;
  return uni > T(0) ? inter / uni : T(0);
}

template <typename T>
SSD_HOST_DEVICE T iou(const T* a, const T* b) {
  return iou_with_areas(
      a[0], a[1], a[2], a[3], box_area(a[0], a[1], a[2], a[3]),
      b[0], b[1], b[2], b[3], box_area(b[0], b[1], b[2], b[3]));
}

// log / exp in T itself. On the host a bare ::log(float) would be the C library's double
// log (the float overloads live in std::), making float math both slower and unlike CUDA's
// logf; device code gets CUDA's overloads of ::log / ::exp.
template <typename T>
SSD_HOST_DEVICE T log_of(T v) {
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
  return ::log(v);
#else
  return std::log(v);
#endif
}

template <typename T>
SSD_HOST_DEVICE T exp_of(T v) {
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
  return ::exp(v);
#else
  return std::exp(v);
#endif
}

// SSD regression target of an xyxy box against a cxcywh prior:
// ((cx - pcx) / (v0 * pw), (cy - pcy) / (v0 * ph), log(w / pw) / v1, log(h / ph) / v1).
// Split in two steps so that a CPU kernel can run the logs of many boxes through a
// vectorised log between them: step 1 gives the centre offsets and the size ratios
// (w / pw, h / ph); step 2 turns one ratio's log into its target.
template <typename T>
SSD_HOST_DEVICE void encode_box_offsets_and_ratios(
    T x1, T y1, T x2, T y2,
    T pcx, T pcy, T pw, T ph,
    T v_center, T* out) {
  const T w = x2 - x1;
  const T h = y2 - y1;
  // mul_no_fma: an fma would skip the rounding of 0.5 * w, which differs for subnormal w.
  const T cx = x1 + mul_no_fma(T(0.5), w);
  const T cy = y1 + mul_no_fma(T(0.5), h);
  out[0] = (cx - pcx) / mul_no_fma(v_center, pw);
  out[1] = (cy - pcy) / mul_no_fma(v_center, ph);
  out[2] = w / pw;
  out[3] = h / ph;
}

template <typename T>
SSD_HOST_DEVICE T encode_size_target(T log_ratio, T v_size) {
  return log_ratio / v_size;
}

// Natural log of a double from +, -, * and / alone, each IEEE-rounded and no product fused
// into an add (mul_no_fma), so the host and every GPU return the same bits: the C library's
// log and CUDA's log are both faithful but not correctly rounded, and may differ in the last
// bit. Accurate to a few units in the last place of a double, so a float rounded from it is
// the correctly rounded float log except within a few double ulps of a float midpoint (and
// there too it is the same on every device). Special values as std::log: log(+-0) = -inf,
// log(x < 0) = NaN, log(inf) = inf, NaN stays NaN.
SSD_HOST_DEVICE double portable_log(double x) {
  if (!(x > 0.0)) {
    return x == 0.0 ? -HUGE_VAL : (x - x) / (x - x);  // -inf for +-0; NaN for NaN and x < 0
  }
  if (x > 1.7976931348623157e308) {
    return x;  // +inf
  }
  int exponent = 0;
  if (x < 2.2250738585072014e-308) {
    x = x * 18014398509481984.0;  // 2^54: subnormals become normal, exactly
    exponent = -54;
  }
  uint64_t bits;
  memcpy(&bits, &x, sizeof(bits));
  exponent += static_cast<int>((bits >> 52) & 0x7ff) - 1023;
  bits = (bits & 0x000fffffffffffffull) | 0x3ff0000000000000ull;  // mantissa m in [1, 2)
  double m;
  memcpy(&m, &bits, sizeof(m));
  if (m > 1.4142135623730951) {  // m in [sqrt(1/2), sqrt(2)): |s| below 0.172
    m = m * 0.5;
    exponent += 1;
  }
  // log(m) = 2 atanh(s) = 2 s (1 + s^2/3 + s^4/5 + ...) with s = (m - 1) / (m + 1); m - 1 is
  // exact here, and 12 terms leave a truncation error below 1e-19 for s^2 <= 0.0295.
  const double f = m - 1.0;
  const double s = f / (2.0 + f);
  const double s2 = mul_no_fma(s, s);
  double series = 1.0 / 23.0;
  series = mul_no_fma(series, s2) + 1.0 / 21.0;
  series = mul_no_fma(series, s2) + 1.0 / 19.0;
  series = mul_no_fma(series, s2) + 1.0 / 17.0;
  series = mul_no_fma(series, s2) + 1.0 / 15.0;
  series = mul_no_fma(series, s2) + 1.0 / 13.0;
  series = mul_no_fma(series, s2) + 1.0 / 11.0;
  series = mul_no_fma(series, s2) + 1.0 / 9.0;
  series = mul_no_fma(series, s2) + 1.0 / 7.0;
  series = mul_no_fma(series, s2) + 1.0 / 5.0;
  series = mul_no_fma(series, s2) + 1.0 / 3.0;
  const double log_m = mul_no_fma(2.0 * s, mul_no_fma(series, s2)) + 2.0 * s;
  // ln 2 split so that exponent * kLn2High is exact (kLn2High has 32 significant bits).
  constexpr double kLn2High = 6.93147180369123816490e-01;
  constexpr double kLn2Low = 1.90821492927058770002e-10;
  const double e = static_cast<double>(exponent);
  return mul_no_fma(e, kLn2High) + (mul_no_fma(e, kLn2Low) + log_m);
}

// The size target log(ratio) / v_size with the log and the division in double, rounded once
// to T: the same bits on the host and on every GPU (see portable_log), so match's loc targets
// are identical across devices.
template <typename T>
SSD_HOST_DEVICE T encode_size_target_exact(T ratio, T v_size) {
  return static_cast<T>(portable_log(static_cast<double>(ratio)) / static_cast<double>(v_size));
}

// encode_box_offsets_and_ratios followed by encode_size_target_exact: the encoder of match
// (CPU and CUDA) and of the CUDA encode kernel.
template <typename T>
SSD_HOST_DEVICE void encode_box(
    T x1, T y1, T x2, T y2,
    T pcx, T pcy, T pw, T ph,
    T v_center, T v_size, T* out) {
  encode_box_offsets_and_ratios(x1, y1, x2, y2, pcx, pcy, pw, ph, v_center, out);
  out[2] = encode_size_target_exact(out[2], v_size);
  out[3] = encode_size_target_exact(out[3], v_size);
}

// Inverse of encode_box, returning xyxy, in the same two steps around the exp: step 1 is
// the scaled log-size offset, clamped from above at kDecodeLogScaleClamp (NaN kept); step 2
// builds the box from the centre offsets and the size scales exp(step 1).
template <typename T>
SSD_HOST_DEVICE T decode_log_scale(T l_size, T v_size) {
  return min_of(l_size * v_size, T(kDecodeLogScaleClamp));
}

template <typename T>
SSD_HOST_DEVICE void decode_box_with_scales(
    T l_cx, T l_cy, T scale_w, T scale_h,
    T pcx, T pcy, T pw, T ph,
    T v_center, T* out) {
  // mul_no_fma: nvcc would fuse the add into an fma and round differently from the CPU and
  // the reference; decoded boxes feed NMS decisions in detect.
  const T cx = pcx + mul_no_fma(mul_no_fma(l_cx, v_center), pw);
  const T cy = pcy + mul_no_fma(mul_no_fma(l_cy, v_center), ph);
  const T w = pw * scale_w;
  const T h = ph * scale_h;
  out[0] = cx - T(0.5) * w;
  out[1] = cy - T(0.5) * h;
  out[2] = cx + T(0.5) * w;
  out[3] = cy + T(0.5) * h;
}

template <typename T>
SSD_HOST_DEVICE void decode_box(
    T l_cx, T l_cy, T l_w, T l_h,
    T pcx, T pcy, T pw, T ph,
    T v_center, T v_size, T* out) {
  decode_box_with_scales(
      l_cx, l_cy, exp_of(decode_log_scale(l_w, v_size)), exp_of(decode_log_scale(l_h, v_size)),
      pcx, pcy, pw, ph, v_center, out);
}

// Order-preserving unsigned key of a loss value for top-k selection (hard negative mining):
// key(a) > key(b) exactly when a ranks before b. NaN ranks above everything (like
// torch.sort), all NaNs are equal, and -0.0 equals +0.0, so that ties between equal values
// are left to the index rule.
SSD_HOST_DEVICE uint32_t ranking_key(float value) {
  if (value != value) {
    return 0xFFFFFFFFu;
  }
  if (value == 0.0f) {
    value = 0.0f;
  }
  uint32_t bits;
  memcpy(&bits, &value, sizeof(bits));
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

SSD_HOST_DEVICE uint64_t ranking_key(double value) {
  if (value != value) {
    return 0xFFFFFFFFFFFFFFFFull;
  }
  if (value == 0.0) {
    value = 0.0;
  }
  uint64_t bits;
  memcpy(&bits, &value, sizeof(bits));
  return (bits & 0x8000000000000000ull) ? ~bits : (bits | 0x8000000000000000ull);
}

// Negatives hard negative mining keeps in one image:
// min(max(ratio * positives, min_negatives), negatives), saturating instead of overflowing.
SSD_HOST_DEVICE int64_t mining_quota(
    int64_t num_positives, int64_t num_negatives, int64_t neg_pos_ratio, int64_t min_negatives) {
  const int64_t max_value = INT64_MAX;
  int64_t wanted = num_positives > 0 && neg_pos_ratio > max_value / num_positives
                       ? max_value
                       : neg_pos_ratio * num_positives;
  wanted = wanted > min_negatives ? wanted : min_negatives;
  return wanted < num_negatives ? wanted : num_negatives;
}

// Clamp to [0, 1] keeping NaN (like torch.clamp), for clipping decoded boxes.
template <typename T>
SSD_HOST_DEVICE T clamp_unit(T v) {
  return min_of(max_of(v, T(0)), T(1));
}

}  // namespace box_math
}  // namespace ssd_ext
