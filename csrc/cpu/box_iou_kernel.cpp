#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

// IEEE results are unchanged by this: it only lets GCC assume that floating-point exceptions
// are not trapped, so it may if-convert IoU's `union > 0 ? inter / union : 0` and vectorise
// the inner loop over boxes2 (about 2-3x faster; the default -ftrapping-math keeps it scalar).
// It applies to the functions below, including box_math's once inlined here.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include "../box_math.h"
#include "../ops/box_iou_checks.h"
#include "simd_clones.h"
#include "thread_trace.h"

namespace ssd_ext {
namespace {

// Columns of boxes2 as separate arrays (structure of arrays) in the math type, with areas
// precomputed, so that the inner loop over boxes2 is a straight vectorisable sweep.
template <typename acc_t>
struct BoxColumns {
  std::vector<acc_t> x1, y1, x2, y2, area;
};

template <typename scalar_t, typename acc_t>
BoxColumns<acc_t> to_columns(const scalar_t* boxes, int64_t count) {
  BoxColumns<acc_t> cols;
  for (auto* v : {&cols.x1, &cols.y1, &cols.x2, &cols.y2, &cols.area}) {
    v->resize(count);
  }
  for (int64_t k = 0; k < count; ++k) {
    const acc_t x1 = boxes[4 * k], y1 = boxes[4 * k + 1];
    const acc_t x2 = boxes[4 * k + 2], y2 = boxes[4 * k + 3];
    cols.x1[k] = x1;
    cols.y1[k] = y1;
    cols.x2[k] = x2;
    cols.y2[k] = y2;
    cols.area[k] = box_math::box_area(x1, y1, x2, y2);
  }
  return cols;
}

// Columns a task reads, as plain pointers (no aliasing questions for the vectoriser).
template <typename acc_t>
struct ColumnSpan {
  const acc_t *x1, *y1, *x2, *y2, *area;
};

// The hot loop: IoU of box `a` (x1, y1, x2, y2, area) with `count` boxes of `b`.
// Branch-free over structure-of-arrays columns, so it vectorises.
template <typename scalar_t, typename acc_t>
inline void iou_span(const acc_t* a, ColumnSpan<acc_t> b, int64_t count, scalar_t* out) {
  for (int64_t j = 0; j < count; ++j) {
    out[j] = static_cast<scalar_t>(box_math::iou_with_areas(
        a[0], a[1], a[2], a[3], a[4], b.x1[j], b.y1[j], b.x2[j], b.y2[j], b.area[j]));
  }
}

SSD_EXT_SIMD_CLONES void iou_span_float(const float* a, ColumnSpan<float> b, int64_t count,
                                        float* out) {
  iou_span<float, float>(a, b, count, out);
}

SSD_EXT_SIMD_CLONES void iou_span_double(const double* a, ColumnSpan<double> b, int64_t count,
                                         double* out) {
  iou_span<double, double>(a, b, count, out);
}

template <typename scalar_t, typename acc_t>
void iou_span_dispatch(const acc_t* a, ColumnSpan<acc_t> b, int64_t count, scalar_t* out) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    iou_span_float(a, b, count, out);
  } else if constexpr (std::is_same_v<scalar_t, double>) {
    iou_span_double(a, b, count, out);
  } else {
    iou_span<scalar_t, acc_t>(a, b, count, out);
  }
}

// Columns of boxes2 per task: a wide boxes2 is cut in blocks, so that a few rows against many
// boxes still make enough tasks for every thread.
constexpr int64_t kColumnBlock = 8192;

template <typename scalar_t>
void box_iou_cpu_impl(const at::Tensor& boxes1, const at::Tensor& boxes2, at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t n = boxes1.size(0);
  const int64_t m = boxes2.size(0);
  const scalar_t* a = boxes1.const_data_ptr<scalar_t>();
  const BoxColumns<acc_t> b = to_columns<scalar_t, acc_t>(boxes2.const_data_ptr<scalar_t>(), m);
  scalar_t* iou = out.mutable_data_ptr<scalar_t>();

  // Tasks are (row, block of columns); the grain keeps a thread's share at >= ~32k pairs.
  const int64_t blocks = (m + kColumnBlock - 1) / kColumnBlock;
  const int64_t block_width = std::min(m, kColumnBlock);
  const int64_t grain = std::max<int64_t>(1, 32768 / block_width);
  at::parallel_for(0, n * blocks, grain, [&](int64_t begin, int64_t end) {
    thread_trace::note_task();
    for (int64_t task = begin; task < end; ++task) {
      const int64_t i = task / blocks;
      const int64_t j0 = (task - i * blocks) * kColumnBlock;
      const acc_t ax1 = a[4 * i], ay1 = a[4 * i + 1], ax2 = a[4 * i + 2], ay2 = a[4 * i + 3];
      const acc_t box_a[5] = {ax1, ay1, ax2, ay2, box_math::box_area(ax1, ay1, ax2, ay2)};
      const ColumnSpan<acc_t> span{b.x1.data() + j0, b.y1.data() + j0, b.x2.data() + j0,
                                   b.y2.data() + j0, b.area.data() + j0};
      iou_span_dispatch<scalar_t, acc_t>(box_a, span, std::min(kColumnBlock, m - j0),
                                         iou + i * m + j0);
    }
  });
}

at::Tensor box_iou_cpu(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  check_box_iou_args(boxes1, boxes2);
  at::Tensor out = at::empty({boxes1.size(0), boxes2.size(0)}, boxes1.options());
  if (out.numel() == 0) {
    return out;
  }
  const at::Tensor b1 = boxes1.contiguous();
  const at::Tensor b2 = boxes2.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, b1.scalar_type(), "box_iou_cpu",
      [&] { box_iou_cpu_impl<scalar_t>(b1, b2, out); });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(ssd_ext, CPU, m) {
  m.impl("box_iou", &box_iou_cpu);
}

}  // namespace ssd_ext
