// CPU kernel of detect, in the steps of its CUDA twin (csrc/cuda/detect_kernel.cu):
// softmax, detect_decode (decode + clip every prior once), detect_nms (per image and class:
// threshold, top candidates, greedy NMS from greedy_nms.h) and detect_gather (per image: the
// top max_detections over all classes into the padded outputs).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "../box_math.h"
#include "../ops/detect_checks.h"
#include "greedy_nms.h"
#include "thread_trace.h"

namespace ssd_ext {
namespace {

using cpu::AliveBoxes;
using cpu::greedy_nms;

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

// Every prior of every image decoded and clipped once, [B, P, 4] in the input dtype: rounded
// to the input dtype like the reference's decode, then clamped (exact in any dtype, since 0
// and 1 are representable).
template <typename scalar_t>
at::Tensor detect_decode(const at::Tensor& loc, const at::Tensor& priors, double variance_center,
                         double variance_size) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t batch = loc.size(0);
  const int64_t num_priors = loc.size(1);
  at::Tensor boxes_tensor = at::empty({batch, num_priors, 4}, loc.options());
  const scalar_t* l = loc.const_data_ptr<scalar_t>();
  const scalar_t* p = priors.const_data_ptr<scalar_t>();
  scalar_t* out = boxes_tensor.mutable_data_ptr<scalar_t>();
  const acc_t vc = static_cast<acc_t>(variance_center);
  const acc_t vs = static_cast<acc_t>(variance_size);
  at::parallel_for(0, batch * num_priors, 2048, [&](int64_t first, int64_t last) {
    thread_trace::note_task();
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
  return boxes_tensor;
}

// Per (image, class): threshold, top candidates_per_class candidates, greedy NMS. Returns the
// kept (score, prior) of task image * (C - 1) + (class - 1), in NMS order.
template <typename scalar_t>
std::vector<std::vector<Scored<at::opmath_type<scalar_t>>>> detect_nms(
    const at::opmath_type<scalar_t>* scores, const scalar_t* boxes, int64_t batch,
    int64_t num_priors, int64_t num_classes, double score_threshold, double iou_threshold,
    int64_t candidates_per_class, int64_t max_detections) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t object_classes = num_classes - 1;
  const acc_t score_thr = static_cast<acc_t>(score_threshold);
  const acc_t iou_thr = static_cast<acc_t>(iou_threshold);
  std::vector<std::vector<Scored<acc_t>>> kept(batch * object_classes);
  at::parallel_for(0, batch * object_classes, 1, [&](int64_t first, int64_t last) {
    thread_trace::note_task();
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
  return kept;
}

// Per image: the top max_detections of the kept detections over all classes, written into
// rows [0, count) of the padded outputs, and the count.
template <typename scalar_t>
void detect_gather(const std::vector<std::vector<Scored<at::opmath_type<scalar_t>>>>& kept,
                   const scalar_t* boxes, int64_t batch, int64_t num_priors, int64_t num_classes,
                   int64_t max_detections, at::Tensor& out_boxes, at::Tensor& out_scores,
                   at::Tensor& out_labels, at::Tensor& out_counts) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t object_classes = num_classes - 1;
  scalar_t* box_out = out_boxes.mutable_data_ptr<scalar_t>();
  scalar_t* score_out = out_scores.mutable_data_ptr<scalar_t>();
  int64_t* label_out = out_labels.mutable_data_ptr<int64_t>();
  int64_t* count_out = out_counts.mutable_data_ptr<int64_t>();
  at::parallel_for(0, batch, 1, [&](int64_t first, int64_t last) {
    thread_trace::note_task();
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
  // Same ATen softmax as the reference (in the math type), so scores match it bit for bit.
  const at::Tensor scores =
      at::softmax(conf_logits.to(c10::CppTypeToScalarType<acc_t>::value), -1).contiguous();
  const at::Tensor boxes = detect_decode<scalar_t>(loc, priors, variance_center, variance_size);
  const auto kept = detect_nms<scalar_t>(
      scores.const_data_ptr<acc_t>(), boxes.const_data_ptr<scalar_t>(), batch, num_priors,
      num_classes, score_threshold, iou_threshold, candidates_per_class, max_detections);
  detect_gather<scalar_t>(kept, boxes.const_data_ptr<scalar_t>(), batch, num_priors, num_classes,
                          max_detections, out_boxes, out_scores, out_labels, out_counts);
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
  m.impl("detect", &detect_cpu);
}

}  // namespace ssd_ext
