#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <vector>

#include "../box_math.h"
#include "../ops/matching.h"

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

template <typename scalar_t>
void match_cpu_impl(
    const at::Tensor& gt_boxes, const at::Tensor& gt_labels, const int64_t* offsets,
    const at::Tensor& priors, double iou_threshold, double variance_center,
    double variance_size, at::Tensor& loc_out, at::Tensor& labels_out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t batch = labels_out.size(0);
  const int64_t num_priors = priors.size(0);
  const int64_t total_gt = gt_boxes.size(0);
  const scalar_t* gt = gt_boxes.const_data_ptr<scalar_t>();
  const int64_t* gt_label = gt_labels.const_data_ptr<int64_t>();
  const scalar_t* prior = priors.const_data_ptr<scalar_t>();

  // Priors as xyxy (the reference's cxcywh -> xyxy conversion, rounded the same way).
  Columns<acc_t> prior_xyxy(num_priors);
  std::vector<acc_t> pcx(num_priors), pcy(num_priors), pw(num_priors), ph(num_priors);
  at::parallel_for(0, num_priors, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const acc_t cx = prior[4 * p], cy = prior[4 * p + 1];
      const acc_t w = prior[4 * p + 2], h = prior[4 * p + 3];
      pcx[p] = cx;
      pcy[p] = cy;
      pw[p] = w;
      ph[p] = h;
      prior_xyxy.set(p, cx - acc_t(0.5) * w, cy - acc_t(0.5) * h, cx + acc_t(0.5) * w,
                     cy + acc_t(0.5) * h);
    }
  });
  Columns<acc_t> gt_xyxy(total_gt);
  for (int64_t g = 0; g < total_gt; ++g) {
    gt_xyxy.set(g, gt[4 * g], gt[4 * g + 1], gt[4 * g + 2], gt[4 * g + 3]);
  }

  // Pass 1, over (image, chunk of priors): each prior's best ground truth (ties -> lower gt
  // index) and, per ground truth, its best prior within the chunk (ties -> lower prior).
  const int64_t chunks = (num_priors + kPriorChunk - 1) / kPriorChunk;
  std::vector<acc_t> best_iou(batch * num_priors);
  std::vector<int32_t> best_gt(batch * num_priors);  // index within the image, -1: none
  std::vector<acc_t> chunk_best_iou(chunks * total_gt);
  std::vector<int32_t> chunk_best_prior(chunks * total_gt);
  at::parallel_for(0, batch * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> row(kPriorChunk);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / chunks;
      const int64_t chunk = task % chunks;
      const int64_t p0 = chunk * kPriorChunk;
      const int64_t count = std::min(kPriorChunk, num_priors - p0);
      acc_t* image_best_iou = best_iou.data() + b * num_priors + p0;
      int32_t* image_best_gt = best_gt.data() + b * num_priors + p0;
      std::fill(image_best_iou, image_best_iou + count, acc_t(-1));
      std::fill(image_best_gt, image_best_gt + count, -1);
      const int64_t g0 = offsets[b];
      for (int64_t g = g0; g < offsets[b + 1]; ++g) {
        for (int64_t j = 0; j < count; ++j) {
          row[j] = gt_xyxy.iou(g, prior_xyxy, p0 + j);
        }
        const int32_t local_g = static_cast<int32_t>(g - g0);
        for (int64_t j = 0; j < count; ++j) {
          const bool better = row[j] > image_best_iou[j];
          image_best_iou[j] = better ? row[j] : image_best_iou[j];
          image_best_gt[j] = better ? local_g : image_best_gt[j];
        }
        acc_t top = acc_t(-1);
        int64_t top_j = 0;
        for (int64_t j = 0; j < count; ++j) {
          if (row[j] > top) {
            top = row[j];
            top_j = j;
          }
        }
        chunk_best_iou[chunk * total_gt + g] = top;
        chunk_best_prior[chunk * total_gt + g] = static_cast<int32_t>(p0 + top_j);
      }
      if (offsets[b + 1] == g0) {
        std::fill(image_best_iou, image_best_iou + count, acc_t(0));
      }
    }
  });

  // Pass 2, per image: the greedy bipartite pass. Each unassigned ground truth caches its
  // best unforced prior; the global maximum over (unassigned gt) x (unforced prior) with
  // ties to the lower gt index and then the lower prior index is the best cached value
  // with ties to the lower gt. Forcing prior p invalidates only caches pointing at p.
  std::vector<uint8_t> forced(batch * num_priors, 0);
  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t g0 = offsets[b];
      const int64_t count = offsets[b + 1] - g0;
      if (count == 0) {
        continue;
      }
      uint8_t* image_forced = forced.data() + b * num_priors;
      int32_t* image_best_gt = best_gt.data() + b * num_priors;
      std::vector<acc_t> cached_iou(count);
      std::vector<int32_t> cached_prior(count);
      std::vector<uint8_t> assigned(count, 0);
      for (int64_t g = 0; g < count; ++g) {
        acc_t top = acc_t(-1);
        int32_t top_p = 0;
        for (int64_t chunk = 0; chunk < chunks; ++chunk) {
          const acc_t value = chunk_best_iou[chunk * total_gt + g0 + g];
          if (value > top) {
            top = value;
            top_p = chunk_best_prior[chunk * total_gt + g0 + g];
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

  // Pass 3, over all (image, prior): labels and encoded targets of the positives.
  const acc_t threshold = static_cast<acc_t>(iou_threshold);
  const acc_t v_center = static_cast<acc_t>(variance_center);
  const acc_t v_size = static_cast<acc_t>(variance_size);
  scalar_t* loc = loc_out.mutable_data_ptr<scalar_t>();
  int64_t* label = labels_out.mutable_data_ptr<int64_t>();
  at::parallel_for(0, batch * num_priors, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / num_priors;
      const int64_t p = i - b * num_priors;
      const int32_t g = best_gt[i];
      const bool positive = g >= 0 && (forced[i] || best_iou[i] >= threshold);
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
          pcx[p], pcy[p], pw[p], ph[p], v_center, v_size, target);
      for (int k = 0; k < 4; ++k) {
        loc[4 * i + k] = static_cast<scalar_t>(target[k]);
      }
    }
  });
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
