#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <vector>

// IEEE results are unchanged by this (see box_iou_kernel.cpp): it lets GCC if-convert IoU's
// `union > 0 ? inter / union : 0` and vectorise the per-prior IoU loop.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include "../box_math.h"
#include "../ops/matching_checks.h"
#include "simd_clones.h"
#include "thread_trace.h"

namespace ssd_ext {
namespace {

// Priors handled by one task of the per-prior pass; fixed (not derived from the thread
// count) so that the work split never depends on the machine.
constexpr int64_t kPriorChunk = 1024;

// xyxy boxes with areas as separate arrays in the math type.
template <typename acc_t>
struct Columns {
  std::vector<acc_t> x1, y1, x2, y2, area;
  explicit Columns(int64_t count)
      : x1(count), y1(count), x2(count), y2(count), area(count) {}
  void set(int64_t k, acc_t a, acc_t b, acc_t c, acc_t d) {
    x1[k] = a;
    y1[k] = b;
    x2[k] = c;
    y2[k] = d;
    area[k] = box_math::box_area(a, b, c, d);
  }
  acc_t iou(int64_t i, const Columns& other, int64_t j) const {
    return box_math::iou_with_areas(
        x1[i], y1[i], x2[i], y2[i], area[i],
        other.x1[j], other.y1[j], other.x2[j], other.y2[j], other.area[j]);
  }
};

// The priors in the two forms the passes need: xyxy columns for IoU (the reference's
// cxcywh -> xyxy conversion, rounded the same way) and cxcywh in the math type for encoding.
template <typename acc_t>
struct PriorColumns {
  Columns<acc_t> xyxy;
  std::vector<acc_t> cx, cy, w, h;
  explicit PriorColumns(int64_t count)
      : xyxy(count), cx(count), cy(count), w(count), h(count) {}
};

template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
PriorColumns<acc_t> prior_columns(const scalar_t* prior, int64_t num_priors) {
  PriorColumns<acc_t> columns(num_priors);
  at::parallel_for(0, num_priors, 4096, [&](int64_t begin, int64_t end) {
    thread_trace::note_task();
    for (int64_t p = begin; p < end; ++p) {
      const acc_t cx = prior[4 * p], cy = prior[4 * p + 1];
      const acc_t w = prior[4 * p + 2], h = prior[4 * p + 3];
      columns.cx[p] = cx;
      columns.cy[p] = cy;
      columns.w[p] = w;
      columns.h[p] = h;
      columns.xyxy.set(p, cx - acc_t(0.5) * w, cy - acc_t(0.5) * h, cx + acc_t(0.5) * w,
                       cy + acc_t(0.5) * h);
    }
  });
  return columns;
}

template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
Columns<acc_t> gt_columns(const scalar_t* gt, int64_t total_gt) {
  Columns<acc_t> columns(total_gt);
  for (int64_t g = 0; g < total_gt; ++g) {
    columns.set(g, gt[4 * g], gt[4 * g + 1], gt[4 * g + 2], gt[4 * g + 3]);
  }
  return columns;
}

// What best_gt_per_prior leaves for the later passes. Per (image, prior): the best IoU and
// the best ground truth (index within the image, -1: none). Per (chunk of priors, ground
// truth): the best IoU within the chunk and its prior.
template <typename acc_t>
struct BestMatches {
  int64_t chunks;
  std::vector<acc_t> best_iou;
  std::vector<int32_t> best_gt;
  std::vector<acc_t> chunk_best_iou;
  std::vector<int32_t> chunk_best_prior;
  BestMatches(int64_t batch, int64_t num_priors, int64_t total_gt)
      : chunks((num_priors + kPriorChunk - 1) / kPriorChunk),
        best_iou(batch * num_priors),
        best_gt(batch * num_priors),
        chunk_best_iou(chunks * total_gt),
        chunk_best_prior(chunks * total_gt) {}
};

// Prior columns a task reads, as plain pointers (no aliasing questions for the vectoriser).
template <typename acc_t>
struct PriorSpan {
  const acc_t *x1, *y1, *x2, *y2, *area;
};

// The hot loop: IoU of one ground truth (x1, y1, x2, y2, area) with `count` priors, kept in
// `row_iou`, and each prior's best so far updated (a strictly greater IoU wins, so ties keep
// the lower gt). Branch-free over structure-of-arrays columns, so it vectorises.
// __restrict: the eight arrays never overlap, and without it GCC gives up on the run-time
// overlap checks it would need and leaves the loop scalar.
template <typename acc_t>
inline void update_best_gt_span(const acc_t* gt, PriorSpan<acc_t> p, int64_t count,
                                int32_t gt_index, acc_t* __restrict row_iou,
                                acc_t* __restrict best_iou, int32_t* __restrict best_gt) {
  const acc_t gx1 = gt[0], gy1 = gt[1], gx2 = gt[2], gy2 = gt[3], garea = gt[4];
  const acc_t* __restrict x1 = p.x1;
  const acc_t* __restrict y1 = p.y1;
  const acc_t* __restrict x2 = p.x2;
  const acc_t* __restrict y2 = p.y2;
  const acc_t* __restrict area = p.area;
  for (int64_t j = 0; j < count; ++j) {
    const acc_t value = box_math::iou_with_areas(
        gx1, gy1, gx2, gy2, garea, x1[j], y1[j], x2[j], y2[j], area[j]);
    row_iou[j] = value;
    const bool better = value > best_iou[j];
    best_iou[j] = better ? value : best_iou[j];
    best_gt[j] = better ? gt_index : best_gt[j];
  }
}

SSD_EXT_SIMD_CLONES void update_best_gt_float(const float* gt, PriorSpan<float> p, int64_t count,
                                              int32_t gt_index, float* row_iou, float* best_iou,
                                              int32_t* best_gt) {
  update_best_gt_span(gt, p, count, gt_index, row_iou, best_iou, best_gt);
}

SSD_EXT_SIMD_CLONES void update_best_gt_double(const double* gt, PriorSpan<double> p,
                                               int64_t count, int32_t gt_index, double* row_iou,
                                               double* best_iou, int32_t* best_gt) {
  update_best_gt_span(gt, p, count, gt_index, row_iou, best_iou, best_gt);
}

inline void update_best_gt(const float* gt, PriorSpan<float> p, int64_t count, int32_t gt_index,
                           float* row_iou, float* best_iou, int32_t* best_gt) {
  update_best_gt_float(gt, p, count, gt_index, row_iou, best_iou, best_gt);
}

inline void update_best_gt(const double* gt, PriorSpan<double> p, int64_t count,
                           int32_t gt_index, double* row_iou, double* best_iou,
                           int32_t* best_gt) {
  update_best_gt_double(gt, p, count, gt_index, row_iou, best_iou, best_gt);
}

// Index of the first maximum of `count` > 0 IoU values. IoU values are never NaN or -0.0
// (box_math::iou_with_areas), so their bit patterns order like the values: the maximum is
// a vectorisable integer max reduction, then a short scan finds its first occurrence.
template <typename acc_t>
int64_t first_max_index(const acc_t* values, int64_t count) {
  using bits_t = std::conditional_t<sizeof(acc_t) == 4, uint32_t, uint64_t>;
  bits_t top = 0;
  for (int64_t j = 0; j < count; ++j) {
    bits_t bits;
    std::memcpy(&bits, &values[j], sizeof(bits));
    top = std::max(top, bits);
  }
  for (int64_t j = 0;; ++j) {
    bits_t bits;
    std::memcpy(&bits, &values[j], sizeof(bits));
    if (bits == top) {
      return j;
    }
  }
}

// Over (image, chunk of priors): each prior's best ground truth (ties -> lower gt index) and,
// per ground truth, its best prior within the chunk (ties -> lower prior).
template <typename acc_t>
void best_gt_per_prior(const Columns<acc_t>& gt_xyxy, const Columns<acc_t>& prior_xyxy,
                       const int64_t* offsets, int64_t batch, int64_t num_priors,
                       BestMatches<acc_t>& best) {
  const int64_t chunks = best.chunks;
  const int64_t total_gt = static_cast<int64_t>(gt_xyxy.x1.size());
  at::parallel_for(0, batch * chunks, 1, [&](int64_t begin, int64_t end) {
    thread_trace::note_task();
    std::vector<acc_t> row(kPriorChunk);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / chunks;
      const int64_t chunk = task % chunks;
      const int64_t p0 = chunk * kPriorChunk;
      const int64_t count = std::min(kPriorChunk, num_priors - p0);
      acc_t* image_best_iou = best.best_iou.data() + b * num_priors + p0;
      int32_t* image_best_gt = best.best_gt.data() + b * num_priors + p0;
      std::fill(image_best_iou, image_best_iou + count, acc_t(-1));
      std::fill(image_best_gt, image_best_gt + count, -1);
      const int64_t g0 = offsets[b];
      const acc_t* px1 = prior_xyxy.x1.data() + p0;
      const acc_t* py1 = prior_xyxy.y1.data() + p0;
      const acc_t* px2 = prior_xyxy.x2.data() + p0;
      const acc_t* py2 = prior_xyxy.y2.data() + p0;
      const acc_t* parea = prior_xyxy.area.data() + p0;
      acc_t* row_iou = row.data();
      for (int64_t g = g0; g < offsets[b + 1]; ++g) {
        const acc_t gx1 = gt_xyxy.x1[g], gy1 = gt_xyxy.y1[g];
        const acc_t gx2 = gt_xyxy.x2[g], gy2 = gt_xyxy.y2[g], garea = gt_xyxy.area[g];
        const int32_t local_g = static_cast<int32_t>(g - g0);
        const acc_t gt_box[5] = {gx1, gy1, gx2, gy2, garea};
        const PriorSpan<acc_t> span{px1, py1, px2, py2, parea};
        update_best_gt(gt_box, span, count, local_g, row_iou, image_best_iou, image_best_gt);
        const int64_t top_j = first_max_index(row_iou, count);
        best.chunk_best_iou[chunk * total_gt + g] = row_iou[top_j];
        best.chunk_best_prior[chunk * total_gt + g] = static_cast<int32_t>(p0 + top_j);
      }
      if (offsets[b + 1] == g0) {
        std::fill(image_best_iou, image_best_iou + count, acc_t(0));
      }
    }
  });
}

// Per image: the greedy bipartite pass. Each unassigned ground truth caches its best
// unforced prior; the global maximum over (unassigned gt) x (unforced prior) with ties to
// the lower gt index and then the lower prior index is the best cached value with ties to
// the lower gt. Forcing prior p invalidates only caches pointing at p. Returns the forced
// flag of every (image, prior) and points best.best_gt of forced priors at their gt.
template <typename acc_t>
std::vector<uint8_t> force_matches(const Columns<acc_t>& gt_xyxy, const Columns<acc_t>& prior_xyxy,
                                   const int64_t* offsets, int64_t batch, int64_t num_priors,
                                   BestMatches<acc_t>& best) {
  const int64_t chunks = best.chunks;
  const int64_t total_gt = static_cast<int64_t>(gt_xyxy.x1.size());
  std::vector<uint8_t> forced(batch * num_priors, 0);
  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    thread_trace::note_task();
    for (int64_t b = begin; b < end; ++b) {
      const int64_t g0 = offsets[b];
      const int64_t count = offsets[b + 1] - g0;
      if (count == 0) {
        continue;
      }
      uint8_t* image_forced = forced.data() + b * num_priors;
      int32_t* image_best_gt = best.best_gt.data() + b * num_priors;
      std::vector<acc_t> cached_iou(count);
      std::vector<int32_t> cached_prior(count);
      std::vector<uint8_t> assigned(count, 0);
      for (int64_t g = 0; g < count; ++g) {
        acc_t top = acc_t(-1);
        int32_t top_p = 0;
        for (int64_t chunk = 0; chunk < chunks; ++chunk) {
          const acc_t value = best.chunk_best_iou[chunk * total_gt + g0 + g];
          if (value > top) {
            top = value;
            top_p = best.chunk_best_prior[chunk * total_gt + g0 + g];
          }
        }
        cached_iou[g] = top;
        cached_prior[g] = top_p;
      }
      for (int64_t round = 0; round < count; ++round) {
        int64_t chosen = -1;
        acc_t chosen_iou = acc_t(0);  // only IoU > 0 forces a match
        for (int64_t g = 0; g < count; ++g) {
          if (!assigned[g] && cached_iou[g] > chosen_iou) {
            chosen = g;
            chosen_iou = cached_iou[g];
          }
        }
        if (chosen < 0) {
          break;
        }
        const int32_t p = cached_prior[chosen];
        assigned[chosen] = 1;
        image_forced[p] = 1;
        image_best_gt[p] = static_cast<int32_t>(chosen);
        for (int64_t g = 0; g < count; ++g) {
          if (assigned[g] || cached_prior[g] != p || !(cached_iou[g] > acc_t(0))) {
            continue;
          }
          acc_t top = acc_t(-1);
          int32_t top_p = 0;
          for (int64_t q = 0; q < num_priors; ++q) {
            if (image_forced[q]) {
              continue;
            }
            const acc_t value = gt_xyxy.iou(g0 + g, prior_xyxy, q);
            if (value > top) {
              top = value;
              top_p = static_cast<int32_t>(q);
            }
          }
          cached_iou[g] = top;
          cached_prior[g] = top_p;
        }
      }
    }
  });
  return forced;
}

// Over all (image, prior): labels and encoded targets of the positives (forced, or best IoU
// >= iou_threshold), zeros and label 0 elsewhere.
template <typename scalar_t, typename acc_t>
void encode_matches(const Columns<acc_t>& gt_xyxy, const int64_t* gt_label,
                    const PriorColumns<acc_t>& priors, const int64_t* offsets,
                    const BestMatches<acc_t>& best, const std::vector<uint8_t>& forced,
                    double iou_threshold, double variance_center, double variance_size,
                    at::Tensor& loc_out, at::Tensor& labels_out) {
  const int64_t batch = labels_out.size(0);
  const int64_t num_priors = labels_out.size(1);
  const acc_t threshold = static_cast<acc_t>(iou_threshold);
  const acc_t v_center = static_cast<acc_t>(variance_center);
  const acc_t v_size = static_cast<acc_t>(variance_size);
  scalar_t* loc = loc_out.mutable_data_ptr<scalar_t>();
  int64_t* label = labels_out.mutable_data_ptr<int64_t>();
  at::parallel_for(0, batch * num_priors, 4096, [&](int64_t begin, int64_t end) {
    thread_trace::note_task();
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / num_priors;
      const int64_t p = i - b * num_priors;
      const int32_t g = best.best_gt[i];
      const bool positive = g >= 0 && (forced[i] || best.best_iou[i] >= threshold);
      if (!positive) {
        label[i] = 0;
        loc[4 * i] = loc[4 * i + 1] = loc[4 * i + 2] = loc[4 * i + 3] = scalar_t(0);
        continue;
      }
      const int64_t row = offsets[b] + g;
      label[i] = gt_label[row];
      acc_t target[4];
      box_math::encode_box<acc_t>(
          gt_xyxy.x1[row], gt_xyxy.y1[row], gt_xyxy.x2[row], gt_xyxy.y2[row],
          priors.cx[p], priors.cy[p], priors.w[p], priors.h[p], v_center, v_size, target);
      for (int k = 0; k < 4; ++k) {
        loc[4 * i + k] = static_cast<scalar_t>(target[k]);
      }
    }
  });
}

// The three passes of the CUDA twin (csrc/cuda/matching_kernel.cu), same names and
// boundaries; the rules are stated in python/ssd_reference/matching.py.
template <typename scalar_t>
void match_cpu_impl(
    const at::Tensor& gt_boxes, const at::Tensor& gt_labels, const int64_t* offsets,
    const at::Tensor& priors, double iou_threshold, double variance_center,
    double variance_size, at::Tensor& loc_out, at::Tensor& labels_out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t batch = labels_out.size(0);
  const int64_t num_priors = priors.size(0);
  const int64_t total_gt = gt_boxes.size(0);
  const PriorColumns<acc_t> prior_cols =
      prior_columns<scalar_t>(priors.const_data_ptr<scalar_t>(), num_priors);
  const Columns<acc_t> gt_xyxy = gt_columns<scalar_t>(gt_boxes.const_data_ptr<scalar_t>(), total_gt);
  BestMatches<acc_t> best(batch, num_priors, total_gt);
  best_gt_per_prior(gt_xyxy, prior_cols.xyxy, offsets, batch, num_priors, best);
  const std::vector<uint8_t> forced =
      force_matches(gt_xyxy, prior_cols.xyxy, offsets, batch, num_priors, best);
  encode_matches<scalar_t>(gt_xyxy, gt_labels.const_data_ptr<int64_t>(), prior_cols, offsets,
                           best, forced, iou_threshold, variance_center, variance_size, loc_out,
                           labels_out);
}

std::tuple<at::Tensor, at::Tensor> match_cpu(
    const at::Tensor& gt_boxes, const at::Tensor& gt_labels, const at::Tensor& gt_offsets,
    const at::Tensor& priors, double iou_threshold, double variance_center,
    double variance_size) {
  check_match_args(
      gt_boxes, gt_labels, gt_offsets, priors, iou_threshold, variance_center, variance_size);
  const at::Tensor offsets = gt_offsets.contiguous();
  const int64_t batch = offsets.size(0) - 1;
  check_offsets_values(offsets.const_data_ptr<int64_t>(), batch, gt_boxes.size(0));
  const int64_t num_priors = priors.size(0);
  at::Tensor loc = at::empty({batch, num_priors, 4}, priors.options());
  at::Tensor labels = at::empty({batch, num_priors}, priors.options().dtype(at::kLong));
  if (labels.numel() == 0) {
    return {loc, labels};
  }
  const at::Tensor boxes = gt_boxes.contiguous();
  const at::Tensor box_labels = gt_labels.contiguous();
  const at::Tensor prior_boxes = priors.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, boxes.scalar_type(), "match_cpu", [&] {
        match_cpu_impl<scalar_t>(
            boxes, box_labels, offsets.const_data_ptr<int64_t>(), prior_boxes, iou_threshold,
            variance_center, variance_size, loc, labels);
      });
  return {loc, labels};
}

// One candidate negative: its ranking key and prior index. Ranked by key (higher first),
// then by index (lower first).
template <typename key_t>
struct Candidate {
  key_t key;
  int32_t index;
};

template <typename scalar_t>
void mining_cpu_impl(
    const at::Tensor& conf_loss, const at::Tensor& labels, int64_t neg_pos_ratio,
    int64_t min_negatives, at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  using key_t = decltype(box_math::ranking_key(acc_t(0)));
  const int64_t batch = conf_loss.size(0);
  const int64_t num_priors = conf_loss.size(1);
  const scalar_t* loss = conf_loss.const_data_ptr<scalar_t>();
  const int64_t* label = labels.const_data_ptr<int64_t>();
  bool* keep = out.mutable_data_ptr<bool>();
  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    thread_trace::note_task();
    std::vector<Candidate<key_t>> candidates;
    for (int64_t b = begin; b < end; ++b) {
      const scalar_t* row_loss = loss + b * num_priors;
      const int64_t* row_label = label + b * num_priors;
      bool* row_keep = keep + b * num_priors;
      int64_t positives = 0;
      int64_t negatives = 0;
      for (int64_t p = 0; p < num_priors; ++p) {
        positives += row_label[p] > 0;
        negatives += row_label[p] == 0;
        row_keep[p] = row_label[p] > 0;
      }
      const int64_t quota = box_math::mining_quota(positives, negatives, neg_pos_ratio, min_negatives);
      if (quota == 0) {
        continue;
      }
      if (quota == negatives) {
        for (int64_t p = 0; p < num_priors; ++p) {
          row_keep[p] = row_keep[p] || row_label[p] == 0;
        }
        continue;
      }
      // Selection, not a sort: nth_element leaves the `quota` best candidates in front.
      candidates.clear();
      candidates.reserve(negatives);
      for (int64_t p = 0; p < num_priors; ++p) {
        if (row_label[p] == 0) {
          candidates.push_back(
              {box_math::ranking_key(static_cast<acc_t>(row_loss[p])), static_cast<int32_t>(p)});
        }
      }
      std::nth_element(
          candidates.begin(), candidates.begin() + quota, candidates.end(),
          [](const Candidate<key_t>& a, const Candidate<key_t>& b) {
            return a.key > b.key || (a.key == b.key && a.index < b.index);
          });
      for (int64_t i = 0; i < quota; ++i) {
        row_keep[candidates[i].index] = true;
      }
    }
  });
}

at::Tensor hard_negative_mining_cpu(
    const at::Tensor& conf_loss, const at::Tensor& labels, int64_t neg_pos_ratio,
    int64_t min_negatives) {
  check_mining_args(conf_loss, labels, neg_pos_ratio, min_negatives);
  at::Tensor out = at::empty(conf_loss.sizes(), conf_loss.options().dtype(at::kBool));
  if (out.numel() == 0) {
    return out;
  }
  const at::Tensor loss = conf_loss.contiguous();
  const at::Tensor label = labels.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, loss.scalar_type(), "hard_negative_mining_cpu",
      [&] { mining_cpu_impl<scalar_t>(loss, label, neg_pos_ratio, min_negatives, out); });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(ssd_ext, CPU, m) {
  m.impl("match", &match_cpu);
  m.impl("hard_negative_mining", &hard_negative_mining_cpu);
}

}  // namespace ssd_ext
