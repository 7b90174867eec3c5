// CPU kernels of the NMS family: nms, batched_nms and the fused SSD detect.
//
// Greedy NMS runs over structure-of-arrays copies of the candidates (coordinates and areas in
// the math type) in visiting order, with branch-free sweeps and periodic compaction of the
// boxes still alive (see greedy_nms): the same decisions as the textbook loop over suppression
// flags, with vectorised IoUs and less memory traffic.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "../box_math.h"
#include "../ops/nms.h"

namespace ssd_ext {
namespace {

// The IoU sweep of greedy NMS, written so that GCC vectorises it: the same values as
// box_math::iou_with_areas bit for bit (NaN-propagating min/max, products rounded on their
// own, zero union -> 0), with bitwise instead of short-circuit logic and the division run on
// every lane with a safe divisor. GCC only if-converts the comparisons without
// -ftrapping-math; that flag only concerns floating-point exception flags, never values.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
#endif
template <typename T>
inline T sweep_min(T a, T b) {
  return ((a < b) | (a != a)) ? a : b;
}

template <typename T>
inline T sweep_max(T a, T b) {
  return ((a > b) | (a != a)) ? a : b;
}

// box_math::clamp_min_zero, defined here too: GCC does not inline functions compiled with
// other optimisation options into this region, and a call would stop the vectorisation.
template <typename T>
inline T sweep_clamp_min_zero(T v) {
  return v > T(0) ? v : T(0);
}

// ORs into dead[j] (j in [first, last)) whether box j's IoU with box a is > threshold;
// returns how many of them are still alive.
template <typename acc_t>
int64_t suppression_sweep(
    const acc_t* __restrict x1, const acc_t* __restrict y1, const acc_t* __restrict x2,
    const acc_t* __restrict y2, const acc_t* __restrict area, int32_t* __restrict dead,
    int64_t first, int64_t last, acc_t ax1, acc_t ay1, acc_t ax2, acc_t ay2, acc_t area_a,
    acc_t iou_threshold) {
  int32_t live = 0;
  for (int64_t j = first; j < last; ++j) {
    const acc_t inter_w = sweep_clamp_min_zero(sweep_min(ax2, x2[j]) - sweep_max(ax1, x1[j]));
    const acc_t inter_h = sweep_clamp_min_zero(sweep_min(ay2, y2[j]) - sweep_max(ay1, y1[j]));
    const acc_t inter = inter_w * inter_h;
    const acc_t uni = (area_a + area[j]) - inter;
    const bool positive = uni > acc_t(0);
    const acc_t ratio = inter / (positive ? uni : acc_t(1));
    const acc_t overlap = positive ? ratio : acc_t(0);
    const int32_t now_dead = dead[j] | (overlap > iou_threshold ? 1 : 0);
    dead[j] = now_dead;
    live += 1 - now_dead;
  }
  return live;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

// Boxes still alive in a greedy NMS, in visiting order, with an id per box (whatever the
// caller needs back: a rank in a sorted order, a candidate slot).
template <typename acc_t>
struct AliveBoxes {
  std::vector<acc_t> x1, y1, x2, y2, area;
  std::vector<int64_t> id;

  void reserve(size_t count) {
    for (auto* v : {&x1, &y1, &x2, &y2, &area}) {
      v->reserve(count);
    }
    id.reserve(count);
  }

  void push(acc_t bx1, acc_t by1, acc_t bx2, acc_t by2, int64_t box_id) {
    x1.push_back(bx1);
    y1.push_back(by1);
    x2.push_back(bx2);
    y2.push_back(by2);
    area.push_back(box_math::box_area(bx1, by1, bx2, by2));
    id.push_back(box_id);
  }
};

// Greedy NMS over `alive` (consumed): appends the ids of the kept boxes, in visiting order, to
// `kept`, at most `max_keep` of them. A box is dropped when its IoU with a kept one is > thr.
//
// Each kept box sweeps the boxes after it with a branch-free, vectorised loop
// (suppression_sweep) that ORs suppression flags.
// When more than a quarter of the swept boxes are dead, the live ones are compacted to the
// front so that later sweeps skip them.
template <typename acc_t>
void greedy_nms(AliveBoxes<acc_t>& alive, acc_t iou_threshold, int64_t max_keep,
                std::vector<int64_t>& kept) {
  acc_t* x1 = alive.x1.data();
  acc_t* y1 = alive.y1.data();
  acc_t* x2 = alive.x2.data();
  acc_t* y2 = alive.y2.data();
  acc_t* area = alive.area.data();
  int64_t* id = alive.id.data();
  int64_t count = static_cast<int64_t>(alive.id.size());
  std::vector<int32_t> dead_flags(count, 0);
  int32_t* dead = dead_flags.data();
  int64_t head = 0;
  int64_t kept_count = 0;
  while (kept_count < max_keep) {
    while (head < count && dead[head]) {
      ++head;
    }
    if (head == count) {
      break;
    }
    kept.push_back(id[head]);
    ++kept_count;
    const acc_t ax1 = x1[head], ay1 = y1[head], ax2 = x2[head], ay2 = y2[head];
    const acc_t area_a = area[head];
    const int64_t live = suppression_sweep(x1, y1, x2, y2, area, dead, head + 1, count, ax1, ay1,
                                           ax2, ay2, area_a, iou_threshold);
    const int64_t swept = count - head - 1;
    if (4 * live < 3 * swept) {
      int64_t write = 0;
      for (int64_t j = head + 1; j < count; ++j) {
        if (!dead[j]) {
          x1[write] = x1[j];
          y1[write] = y1[j];
          x2[write] = x2[j];
          y2[write] = y2[j];
          area[write] = area[j];
          id[write] = id[j];
          dead[write] = 0;
          ++write;
        }
      }
      count = write;
      head = 0;
    } else {
      ++head;
    }
  }
}

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

// A detection candidate of one image and class: its score and prior index.
template <typename acc_t>
struct Scored {
  acc_t score;
  int64_t prior;
};

template <typename acc_t>
bool before(const Scored<acc_t>& a, const Scored<acc_t>& b) {
  return a.score > b.score || (a.score == b.score && a.prior < b.prior);
}

// A kept detection of one image: score, class and prior. Sorted by (score desc, class asc,
// prior asc), a strict total order, so the per-image top-k is deterministic.
template <typename acc_t>
struct Detection {
  acc_t score;
  int64_t label;
  int64_t prior;
};

template <typename acc_t>
bool before(const Detection<acc_t>& a, const Detection<acc_t>& b) {
  if (a.score != b.score) {
    return a.score > b.score;
  }
  return a.label != b.label ? a.label < b.label : a.prior < b.prior;
}

// The first `count` items of `items` by the `before` order, sorted.
template <typename T>
void keep_first(std::vector<T>& items, int64_t count) {
  auto by_order = [](const T& a, const T& b) { return before(a, b); };
  if (static_cast<int64_t>(items.size()) > count) {
    std::partial_sort(items.begin(), items.begin() + count, items.end(), by_order);
    items.resize(count);
  } else {
    std::sort(items.begin(), items.end(), by_order);
  }
}

template <typename scalar_t>
void detect_cpu_impl(const at::Tensor& loc, const at::Tensor& conf_logits, const at::Tensor& priors,
                     double score_threshold, double iou_threshold, int64_t candidates_per_class,
                     int64_t max_detections, double variance_center, double variance_size,
                     at::Tensor& out_boxes, at::Tensor& out_scores, at::Tensor& out_labels,
                     at::Tensor& out_counts) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t batch = loc.size(0);
  const int64_t num_priors = loc.size(1);
  const int64_t num_classes = conf_logits.size(2);
  const int64_t object_classes = num_classes - 1;

  // Same ATen softmax as the reference (in the math type), so scores match it bit for bit.
  const at::Tensor scores_tensor =
      at::softmax(conf_logits.to(c10::CppTypeToScalarType<acc_t>::value), -1).contiguous();
  const acc_t* scores = scores_tensor.const_data_ptr<acc_t>();

  // Decode + clip every prior of every image once: rounded to the input dtype like the
  // reference's decode, then clamped (exact in any dtype, since 0 and 1 are representable).
  at::Tensor boxes_tensor = at::empty({batch, num_priors, 4}, loc.options());
  {
    const scalar_t* l = loc.const_data_ptr<scalar_t>();
    const scalar_t* p = priors.const_data_ptr<scalar_t>();
    scalar_t* out = boxes_tensor.mutable_data_ptr<scalar_t>();
    const acc_t vc = static_cast<acc_t>(variance_center);
    const acc_t vs = static_cast<acc_t>(variance_size);
    at::parallel_for(0, batch * num_priors, 2048, [&](int64_t first, int64_t last) {
      for (int64_t k = first; k < last; ++k) {
        const scalar_t* lk = l + 4 * k;
        const scalar_t* pk = p + 4 * (k % num_priors);
        acc_t decoded[4];
        box_math::decode_box<acc_t>(lk[0], lk[1], lk[2], lk[3], pk[0], pk[1], pk[2], pk[3], vc, vs,
                                    decoded);
        for (int d = 0; d < 4; ++d) {
          const acc_t rounded = static_cast<acc_t>(static_cast<scalar_t>(decoded[d]));
          out[4 * k + d] = static_cast<scalar_t>(box_math::clamp_unit(rounded));
        }
      }
    });
  }
  const scalar_t* boxes = boxes_tensor.const_data_ptr<scalar_t>();

  // Per (image, class): threshold, top candidates, NMS. Kept (score, prior) in NMS order.
  const acc_t score_thr = static_cast<acc_t>(score_threshold);
  const acc_t iou_thr = static_cast<acc_t>(iou_threshold);
  std::vector<std::vector<Scored<acc_t>>> kept(batch * object_classes);
  at::parallel_for(0, batch * object_classes, 1, [&](int64_t first, int64_t last) {
    std::vector<Scored<acc_t>> candidates;
    std::vector<int64_t> kept_slots;
    AliveBoxes<acc_t> alive;
    for (int64_t task = first; task < last; ++task) {
      const int64_t image = task / object_classes;
      const int64_t label = task % object_classes + 1;
      const acc_t* image_scores = scores + image * num_priors * num_classes + label;
      candidates.clear();
      for (int64_t p = 0; p < num_priors; ++p) {
        const acc_t s = image_scores[p * num_classes];
        if (s > score_thr) {
          candidates.push_back({s, p});
        }
      }
      keep_first(candidates, candidates_per_class);
      alive = AliveBoxes<acc_t>();
      alive.reserve(candidates.size());
      const scalar_t* image_boxes = boxes + image * num_priors * 4;
      for (size_t slot = 0; slot < candidates.size(); ++slot) {
        const scalar_t* b = image_boxes + 4 * candidates[slot].prior;
        alive.push(b[0], b[1], b[2], b[3], static_cast<int64_t>(slot));
      }
      kept_slots.clear();
      // One class can fill at most max_detections places of the image's result.
      greedy_nms<acc_t>(alive, iou_thr, max_detections, kept_slots);
      auto& out = kept[task];
      out.reserve(kept_slots.size());
      for (const int64_t slot : kept_slots) {
        out.push_back(candidates[slot]);
      }
    }
  });

  // Per image: the top max_detections over all classes.
  scalar_t* box_out = out_boxes.mutable_data_ptr<scalar_t>();
  scalar_t* score_out = out_scores.mutable_data_ptr<scalar_t>();
  int64_t* label_out = out_labels.mutable_data_ptr<int64_t>();
  int64_t* count_out = out_counts.mutable_data_ptr<int64_t>();
  at::parallel_for(0, batch, 1, [&](int64_t first, int64_t last) {
    std::vector<Detection<acc_t>> found;
    for (int64_t image = first; image < last; ++image) {
      found.clear();
      for (int64_t c = 0; c < object_classes; ++c) {
        for (const auto& item : kept[image * object_classes + c]) {
          found.push_back({item.score, c + 1, item.prior});
        }
      }
      keep_first(found, max_detections);
      const int64_t count = static_cast<int64_t>(found.size());
      count_out[image] = count;
      for (int64_t k = 0; k < count; ++k) {
        const int64_t row = image * max_detections + k;
        const scalar_t* b = boxes + (image * num_priors + found[k].prior) * 4;
        std::copy(b, b + 4, box_out + 4 * row);
        score_out[row] = static_cast<scalar_t>(found[k].score);
        label_out[row] = found[k].label;
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> detect_cpu(
    const at::Tensor& loc, const at::Tensor& conf_logits, const at::Tensor& priors,
    double score_threshold, double iou_threshold, int64_t candidates_per_class,
    int64_t max_detections, double variance_center, double variance_size) {
  check_detect_args(loc, conf_logits, priors, score_threshold, iou_threshold, candidates_per_class,
                    max_detections, variance_center, variance_size);
  const int64_t batch = loc.size(0);
  at::Tensor boxes = at::zeros({batch, max_detections, 4}, loc.options());
  at::Tensor scores = at::zeros({batch, max_detections}, loc.options());
  at::Tensor labels = at::full({batch, max_detections}, -1, loc.options().dtype(at::kLong));
  at::Tensor counts = at::zeros({batch}, loc.options().dtype(at::kLong));
  if (batch == 0 || loc.size(1) == 0 || max_detections == 0 || candidates_per_class == 0) {
    return {boxes, scores, labels, counts};
  }
  const at::Tensor l = loc.contiguous();
  const at::Tensor c = conf_logits.contiguous();
  const at::Tensor p = priors.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, l.scalar_type(), "detect_cpu", [&] {
    detect_cpu_impl<scalar_t>(l, c, p, score_threshold, iou_threshold, candidates_per_class,
                              max_detections, variance_center, variance_size, boxes, scores,
                              labels, counts);
  });
  return {boxes, scores, labels, counts};
}

}  // namespace

TORCH_LIBRARY_IMPL(ssd_ext, CPU, m) {
  m.impl("nms", &nms_cpu);
  m.impl("batched_nms", &batched_nms_cpu);
  m.impl("detect", &detect_cpu);
}

}  // namespace ssd_ext
