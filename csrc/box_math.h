// Box math shared by the CPU and CUDA kernels: one definition of IoU, encode and decode.
// Every function computes in the accumulation type T (float for half/bfloat16/float
// inputs, double for double), so CPU and CUDA round identically.
#pragma once

#include <cmath>

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

// Area of an xyxy box. Inverted boxes (x2 < x1) have zero area rather than a negative one,
// so that they can never produce an IoU outside [0, 1].
template <typename T>
SSD_HOST_DEVICE T box_area(T x1, T y1, T x2, T y2) {
  return clamp_min_zero(x2 - x1) * clamp_min_zero(y2 - y1);
}

// IoU of two xyxy boxes given their precomputed areas. A zero union gives 0, never NaN.
template <typename T>
SSD_HOST_DEVICE T iou_with_areas(
    T ax1, T ay1, T ax2, T ay2, T area_a,
    T bx1, T by1, T bx2, T by2, T area_b) {
  const T inter_w = clamp_min_zero(min_of(ax2, bx2) - max_of(ax1, bx1));
  const T inter_h = clamp_min_zero(min_of(ay2, by2) - max_of(ay1, by1));
  const T inter = inter_w * inter_h;
  const T uni = area_a + area_b - inter;
  return uni > T(0) ? inter / uni : T(0);
}

template <typename T>
SSD_HOST_DEVICE T iou(const T* a, const T* b) {
  return iou_with_areas(
      a[0], a[1], a[2], a[3], box_area(a[0], a[1], a[2], a[3]),
      b[0], b[1], b[2], b[3], box_area(b[0], b[1], b[2], b[3]));
}

// SSD regression target of an xyxy box against a cxcywh prior:
// ((cx - pcx) / (v0 * pw), (cy - pcy) / (v0 * ph), log(w / pw) / v1, log(h / ph) / v1).
template <typename T>
SSD_HOST_DEVICE void encode_box(
    T x1, T y1, T x2, T y2,
    T pcx, T pcy, T pw, T ph,
    T v_center, T v_size, T* out) {
  const T w = x2 - x1;
  const T h = y2 - y1;
  const T cx = x1 + T(0.5) * w;
  const T cy = y1 + T(0.5) * h;
  out[0] = (cx - pcx) / (v_center * pw);
  out[1] = (cy - pcy) / (v_center * ph);
  out[2] = ::log(w / pw) / v_size;
  out[3] = ::log(h / ph) / v_size;
}

// Inverse of encode_box, returning xyxy. The scaled log-size offsets are clamped from above
// at kDecodeLogScaleClamp before exp().
template <typename T>
SSD_HOST_DEVICE void decode_box(
    T l_cx, T l_cy, T l_w, T l_h,
    T pcx, T pcy, T pw, T ph,
    T v_center, T v_size, T* out) {
  const T cx = pcx + l_cx * v_center * pw;
  const T cy = pcy + l_cy * v_center * ph;
  const T max_log = T(kDecodeLogScaleClamp);
  const T w = pw * ::exp(min_of(l_w * v_size, max_log));
  const T h = ph * ::exp(min_of(l_h * v_size, max_log));
  out[0] = cx - T(0.5) * w;
  out[1] = cy - T(0.5) * h;
  out[2] = cx + T(0.5) * w;
  out[3] = cy + T(0.5) * h;
}

// Product rounded on its own, never contracted into a fused multiply-add: nvcc contracts
// a * b + c into fma() by default while the host compiler (x86-64 without -mfma) does not,
// which would make CPU and CUDA IoUs differ in the last bit and flip NMS decisions at the
// threshold.
template <typename T>
SSD_HOST_DEVICE T mul_rn(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(T) == sizeof(double)) {
    return __dmul_rn(a, b);
  } else {
    return __fmul_rn(a, b);
  }
#else
  return a * b;
#endif
}

// box_area and iou_with_areas with every product rounded on its own (mul_rn): the same
// values as the reference's elementwise torch ops, bit for bit, on the CPU and on CUDA.
// NMS decides with these so that CPU, CUDA and the reference keep identical indices.
template <typename T>
SSD_HOST_DEVICE T box_area_rn(T x1, T y1, T x2, T y2) {
  return mul_rn(clamp_min_zero(x2 - x1), clamp_min_zero(y2 - y1));
}

template <typename T>
SSD_HOST_DEVICE T iou_with_areas_rn(
    T ax1, T ay1, T ax2, T ay2, T area_a,
    T bx1, T by1, T bx2, T by2, T area_b) {
  const T inter_w = clamp_min_zero(min_of(ax2, bx2) - max_of(ax1, bx1));
  const T inter_h = clamp_min_zero(min_of(ay2, by2) - max_of(ay1, by1));
  const T inter = mul_rn(inter_w, inter_h);
  const T uni = (area_a + area_b) - inter;
  return uni > T(0) ? inter / uni : T(0);
}

// Clamp to [0, 1] keeping NaN (like torch.clamp), for clipping decoded boxes.
template <typename T>
SSD_HOST_DEVICE T clamp_unit(T v) {
  return min_of(max_of(v, T(0)), T(1));
}

}  // namespace box_math
}  // namespace ssd_ext
