// CPU kernels of nms and batched_nms: score order, then greedy NMS (greedy_nms.h) per
// segment of boxes that may suppress each other.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "../ops/nms_checks.h"
#include "greedy_nms.h"
#include "thread_trace.h"

namespace ssd_ext {
namespace {

using cpu::AliveBoxes;
using cpu::greedy_nms;

// Indices of the non-NaN scores by decreasing score, ties lower index first.
template <typename score_t>
std::vector<int64_t> score_order(const score_t* scores, int64_t count) {
  std::vector<int64_t> order;
  order.reserve(count);
  for (int64_t i = 0; i < count; ++i) {
    if (!std::isnan(static_cast<double>(scores[i]))) {
      order.push_back(i);
    }
  }
  // (score, index) is a strict total order on the non-NaN scores, so std::sort is
  // deterministic; -0.0 == +0.0 here, so signed zeros tie.
  std::sort(order.begin(), order.end(), [scores](int64_t a, int64_t b) {
    const double sa = static_cast<double>(scores[a]);
    const double sb = static_cast<double>(scores[b]);
    return sa > sb || (sa == sb && a < b);
  });
  return order;
}

std::vector<int64_t> score_order_of(const at::Tensor& scores) {
  const at::Tensor s = scores.contiguous();
  std::vector<int64_t> order;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "nms_score_order",
                                  [&] { order = score_order(s.const_data_ptr<scalar_t>(), s.numel()); });
  return order;
}

at::Tensor indices_tensor(const std::vector<int64_t>& values, const at::Tensor& like) {
  at::Tensor out = at::empty({static_cast<int64_t>(values.size())}, like.options().dtype(at::kLong));
  std::copy(values.begin(), values.end(), out.mutable_data_ptr<int64_t>());
  return out;
}

// NMS of the ranks [begin, end) of the sorted order whose boxes are given by `order`;
// appends kept ranks.
template <typename scalar_t>
void nms_of_ranks(const scalar_t* boxes, const int64_t* ranks, int64_t count,
                  const std::vector<int64_t>& order, double iou_threshold, int64_t max_keep,
                  std::vector<int64_t>& kept_ranks) {
  using acc_t = at::opmath_type<scalar_t>;
  AliveBoxes<acc_t> alive;
  alive.reserve(count);
  for (int64_t k = 0; k < count; ++k) {
    const scalar_t* b = boxes + 4 * order[ranks[k]];
    alive.push(b[0], b[1], b[2], b[3], ranks[k]);
  }
  greedy_nms<acc_t>(alive, static_cast<acc_t>(iou_threshold), max_keep, kept_ranks);
}

at::Tensor nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold,
                   int64_t max_output) {
  check_nms_args(boxes, scores, iou_threshold, max_output);
  const int64_t n = boxes.size(0);
  const int64_t max_keep = max_output < 0 ? n : std::min(max_output, n);
  if (max_keep == 0) {
    return at::empty({0}, boxes.options().dtype(at::kLong));
  }
  const std::vector<int64_t> order = score_order_of(scores);
  std::vector<int64_t> ranks(order.size());
  std::iota(ranks.begin(), ranks.end(), 0);
  std::vector<int64_t> kept_ranks;
  const at::Tensor b = boxes.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b.scalar_type(), "nms_cpu", [&] {
    nms_of_ranks(b.const_data_ptr<scalar_t>(), ranks.data(), static_cast<int64_t>(ranks.size()),
                 order, iou_threshold, max_keep, kept_ranks);
  });
  for (auto& rank : kept_ranks) {
    rank = order[rank];
  }
  return indices_tensor(kept_ranks, boxes);
}

// Per-class NMS: the score order is split into one segment per class (stable, so each
// segment stays in score order), segments run in parallel, and the kept ranks of all classes
// merge back into score order. No coordinate offsets: classes never meet inside a segment.
at::Tensor batched_nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                           double iou_threshold, int64_t max_output) {
  check_batched_nms_args(boxes, scores, idxs, iou_threshold, max_output);
  const int64_t n = boxes.size(0);
  const int64_t max_keep = max_output < 0 ? n : std::min(max_output, n);
  if (max_keep == 0) {
    return at::empty({0}, boxes.options().dtype(at::kLong));
  }
  const std::vector<int64_t> order = score_order_of(scores);
  const at::Tensor classes_tensor = idxs.contiguous();
  const int64_t* classes = classes_tensor.const_data_ptr<int64_t>();
  std::vector<int64_t> ranks(order.size());
  std::iota(ranks.begin(), ranks.end(), 0);
  std::stable_sort(ranks.begin(), ranks.end(), [&](int64_t a, int64_t b) {
    return classes[order[a]] < classes[order[b]];
  });
  std::vector<int64_t> segment_starts;
  for (size_t k = 0; k < ranks.size(); ++k) {
    if (k == 0 || classes[order[ranks[k]]] != classes[order[ranks[k - 1]]]) {
      segment_starts.push_back(static_cast<int64_t>(k));
    }
  }
  const int64_t segments = static_cast<int64_t>(segment_starts.size());
  segment_starts.push_back(static_cast<int64_t>(ranks.size()));
  std::vector<std::vector<int64_t>> kept_per_segment(segments);
  const at::Tensor b = boxes.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b.scalar_type(), "batched_nms_cpu", [&] {
    const scalar_t* box_data = b.const_data_ptr<scalar_t>();
    at::parallel_for(0, segments, 1, [&](int64_t first, int64_t last) {
      thread_trace::note_task();
      for (int64_t s = first; s < last; ++s) {
        const int64_t begin = segment_starts[s];
        nms_of_ranks(box_data, ranks.data() + begin, segment_starts[s + 1] - begin, order,
                     iou_threshold, max_keep, kept_per_segment[s]);
      }
    });
  });
  std::vector<int64_t> kept;
  for (const auto& segment : kept_per_segment) {
    kept.insert(kept.end(), segment.begin(), segment.end());
  }
  // A rank is a position in the score order, so ascending ranks are decreasing scores with
  // ties by lower index: the required output order.
  std::sort(kept.begin(), kept.end());
  if (static_cast<int64_t>(kept.size()) > max_keep) {
    kept.resize(max_keep);
  }
  for (auto& rank : kept) {
    rank = order[rank];
  }
  return indices_tensor(kept, boxes);
}

}  // namespace

TORCH_LIBRARY_IMPL(ssd_ext, CPU, m) {
  m.impl("nms", &nms_cpu);
  m.impl("batched_nms", &batched_nms_cpu);
}

}  // namespace ssd_ext
