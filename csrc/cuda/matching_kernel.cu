#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <climits>
#include <cstdint>
#include <tuple>

#include "../box_math.h"
#include "../ops/matching_checks.h"
#include "cuda_utils.cuh"

namespace ssd_ext {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpSize = 32;
constexpr int kWarps = kThreads / kWarpSize;
constexpr unsigned kFullMask = 0xFFFFFFFFu;

constexpr int kOffsetThreads = 1024;

// Offsets made safe on the device, without a host sync: ordered[b] = min(max(offsets[0..b]),
// total) clamped at 0, a non-decreasing sequence inside [0, total], so image ranges never
// overlap and never leave the ground truth (the CPU kernel rejects such offsets instead; the
// wrapper always builds valid ones, for which this is the identity). One block: each thread
// takes a contiguous chunk, the chunk maxima are scanned in shared memory, then written out.
__global__ void __launch_bounds__(kOffsetThreads)
    ordered_offsets_kernel(const int64_t* __restrict__ offsets, int64_t count, int64_t total,
                           int64_t* __restrict__ ordered) {
  __shared__ int64_t chunk_max[kOffsetThreads];
  const int64_t chunk = (count + kOffsetThreads - 1) / kOffsetThreads;
  const int64_t begin = threadIdx.x * chunk;
  const int64_t end = begin + chunk < count ? begin + chunk : count;
  int64_t running = 0;
  for (int64_t i = begin; i < end; ++i) {
    running = offsets[i] > running ? offsets[i] : running;
  }
  chunk_max[threadIdx.x] = running;
  __syncthreads();
  // Inclusive prefix max over the chunks (Hillis-Steele).
  for (int stride = 1; stride < kOffsetThreads; stride *= 2) {
    const int64_t other = threadIdx.x >= stride ? chunk_max[threadIdx.x - stride] : 0;
    __syncthreads();
    if (other > chunk_max[threadIdx.x]) {
      chunk_max[threadIdx.x] = other;
    }
    __syncthreads();
  }
  running = threadIdx.x > 0 ? chunk_max[threadIdx.x - 1] : 0;
  for (int64_t i = begin; i < end; ++i) {
    running = offsets[i] > running ? offsets[i] : running;
    ordered[i] = running < total ? running : total;
  }
}

// Image b's ground-truth rows [begin, end) from the ordered offsets.
__device__ __forceinline__ void image_range(
    const int64_t* offsets, int64_t b, int64_t& begin, int64_t& end) {
  begin = offsets[b];
  end = offsets[b + 1];
}

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void load_prior_xyxy(
    const scalar_t* priors, int64_t p, acc_t& x1, acc_t& y1, acc_t& x2, acc_t& y2, acc_t& area) {
  const acc_t cx = priors[4 * p], cy = priors[4 * p + 1];
  const acc_t w = priors[4 * p + 2], h = priors[4 * p + 3];
  x1 = cx - acc_t(0.5) * w;
  y1 = cy - acc_t(0.5) * h;
  x2 = cx + acc_t(0.5) * w;
  y2 = cy + acc_t(0.5) * h;
  area = box_math::box_area(x1, y1, x2, y2);
}

// (value, index) pairs ordered by value (higher first) then index (lower first).
template <typename acc_t>
__device__ __forceinline__ bool ranks_before(acc_t v1, int32_t i1, acc_t v2, int32_t i2) {
  return v1 > v2 || (v1 == v2 && i1 < i2);
}

template <typename acc_t>
__device__ __forceinline__ void warp_argmax(acc_t& value, int32_t& index) {
  for (int shift = kWarpSize / 2; shift > 0; shift /= 2) {
    const acc_t other_value = __shfl_down_sync(kFullMask, value, shift);
    const int32_t other_index = __shfl_down_sync(kFullMask, index, shift);
    if (ranks_before(other_value, other_index, value, index)) {
      value = other_value;
      index = other_index;
    }
  }
}

// Kernel 1, grid (images x prior blocks): each thread takes one prior and scans the image's
// ground truth (staged through shared memory in tiles) for its best IoU; ties -> lower gt.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) best_gt_per_prior_kernel(
    const scalar_t* __restrict__ gt_boxes, const int64_t* __restrict__ offsets, int64_t total_gt,
    const scalar_t* __restrict__ priors, int64_t num_priors,
    at::opmath_type<scalar_t>* __restrict__ best_iou, int32_t* __restrict__ best_gt) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t tile[kThreads][5];
  // Images and prior blocks share grid x (no 65535 limit from grid y).
  const int64_t prior_blocks = (num_priors + kThreads - 1) / kThreads;
  const int64_t b = blockIdx.x / prior_blocks;
  const int64_t p = (blockIdx.x % prior_blocks) * kThreads + threadIdx.x;
  int64_t g0, g1;
  image_range(offsets, b, g0, g1);
  acc_t px1 = 0, py1 = 0, px2 = 0, py2 = 0, parea = 0;
  if (p < num_priors) {
    load_prior_xyxy(priors, p, px1, py1, px2, py2, parea);
  }
  acc_t top = acc_t(-1);
  int32_t top_g = -1;
  for (int64_t base = g0; base < g1; base += kThreads) {
    const int64_t g = base + threadIdx.x;
    if (g < g1) {
      const acc_t x1 = gt_boxes[4 * g], y1 = gt_boxes[4 * g + 1];
      const acc_t x2 = gt_boxes[4 * g + 2], y2 = gt_boxes[4 * g + 3];
      tile[threadIdx.x][0] = x1;
      tile[threadIdx.x][1] = y1;
      tile[threadIdx.x][2] = x2;
      tile[threadIdx.x][3] = y2;
      tile[threadIdx.x][4] = box_math::box_area(x1, y1, x2, y2);
    }
    __syncthreads();
    const int64_t count = g1 - base < kThreads ? g1 - base : kThreads;
    if (p < num_priors) {
      for (int64_t j = 0; j < count; ++j) {
        const acc_t value = box_math::iou_with_areas(
            tile[j][0], tile[j][1], tile[j][2], tile[j][3], tile[j][4], px1, py1, px2, py2, parea);
        if (value > top) {
          top = value;
          top_g = static_cast<int32_t>(base + j - g0);
        }
      }
    }
    __syncthreads();
  }
  if (p < num_priors) {
    best_iou[b * num_priors + p] = top_g < 0 ? acc_t(0) : top;
    best_gt[b * num_priors + p] = top_g;
  }
}

// Best unforced prior of ground truth g, computed by one warp (IoU on the fly); the result
// is valid in every lane. Ties -> lower prior index.
template <typename scalar_t, typename acc_t>
__device__ void warp_best_prior(
    const scalar_t* gt_boxes, int64_t g, const scalar_t* priors, int64_t num_priors,
    const uint8_t* forced, acc_t& best_value, int32_t& best_prior) {
  const acc_t x1 = gt_boxes[4 * g], y1 = gt_boxes[4 * g + 1];
  const acc_t x2 = gt_boxes[4 * g + 2], y2 = gt_boxes[4 * g + 3];
  const acc_t area = box_math::box_area(x1, y1, x2, y2);
  acc_t top = acc_t(-1);
  int32_t top_p = static_cast<int32_t>(num_priors);
  const int lane = threadIdx.x % kWarpSize;
  for (int64_t p = lane; p < num_priors; p += kWarpSize) {
    if (forced[p]) {
      continue;
    }
    acc_t px1, py1, px2, py2, parea;
    load_prior_xyxy(priors, p, px1, py1, px2, py2, parea);
    const acc_t value = box_math::iou_with_areas(x1, y1, x2, y2, area, px1, py1, px2, py2, parea);
    if (value > top) {
      top = value;
      top_p = static_cast<int32_t>(p);
    }
  }
  warp_argmax(top, top_p);
  best_value = __shfl_sync(kFullMask, top, 0);
  best_prior = __shfl_sync(kFullMask, top_p, 0);
}

// Kernel 2, one block per image: the greedy bipartite pass. Every unassigned ground truth
// caches its best unforced prior; each round takes the best cache (IoU, then lower gt
// index; the cache already carries the lower prior index), forces that prior, and the
// warps recompute the caches that pointed at it. Scratch lives in global memory, so there
// is no cap on ground truth per image.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) force_matches_kernel(
    const scalar_t* __restrict__ gt_boxes, const int64_t* __restrict__ offsets, int64_t total_gt,
    const scalar_t* __restrict__ priors, int64_t num_priors,
    at::opmath_type<scalar_t>* cached_iou, int32_t* cached_prior, uint8_t* assigned,
    uint8_t* forced, int32_t* best_gt) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ int32_t chosen_gt;
  __shared__ int32_t chosen_prior;
  const int64_t b = blockIdx.x;
  int64_t g0, g1;
  image_range(offsets, b, g0, g1);
  if (g1 == g0) {
    return;
  }
  uint8_t* image_forced = forced + b * num_priors;
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  for (int64_t g = g0 + warp; g < g1; g += kWarps) {
    acc_t value;
    int32_t prior;
    warp_best_prior(gt_boxes, g, priors, num_priors, image_forced, value, prior);
    if (lane == 0) {
      cached_iou[g] = value;
      cached_prior[g] = prior;
      assigned[g] = 0;
    }
  }
  __syncthreads();
  for (int64_t round = 0; round < g1 - g0; ++round) {
    if (warp == 0) {
      acc_t top = acc_t(0);  // only IoU > 0 forces a match
      int32_t top_g = static_cast<int32_t>(g1 - g0);
      for (int64_t g = g0 + lane; g < g1; g += kWarpSize) {
        if (!assigned[g] && cached_iou[g] > top) {
          top = cached_iou[g];
          top_g = static_cast<int32_t>(g - g0);
        }
      }
      warp_argmax(top, top_g);
      if (lane == 0) {
        // The cache holds the sentinel prior num_priors when every prior is forced; its IoU
        // is then -1 and never chosen, but the index is checked before it is written through.
        const int32_t p = top_g < g1 - g0 ? cached_prior[g0 + top_g] : -1;
        if (p >= 0 && p < num_priors) {
          const int64_t g = g0 + top_g;
          assigned[g] = 1;
          image_forced[p] = 1;
          best_gt[b * num_priors + p] = top_g;
          chosen_gt = top_g;
          chosen_prior = p;
        } else {
          chosen_gt = -1;
        }
      }
    }
    __syncthreads();
    if (chosen_gt < 0) {
      break;
    }
    const int32_t p = chosen_prior;
    for (int64_t g = g0 + warp; g < g1; g += kWarps) {
      // The condition reads memory only lane 0 of warp 0 wrote before the barrier, so it is
      // uniform across the warp (warp_best_prior needs every lane).
      if (assigned[g] || cached_prior[g] != p || !(cached_iou[g] > acc_t(0))) {
        continue;
      }
      acc_t value;
      int32_t prior;
      warp_best_prior(gt_boxes, g, priors, num_priors, image_forced, value, prior);
      if (lane == 0) {
        cached_iou[g] = value;
        cached_prior[g] = prior;
      }
    }
    __syncthreads();
  }
}

// Kernel 3, over all (image, prior): labels and encoded targets.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) encode_matches_kernel(
    const scalar_t* __restrict__ gt_boxes, const int64_t* __restrict__ gt_labels,
    const int64_t* __restrict__ offsets, int64_t total_gt, const scalar_t* __restrict__ priors,
    int64_t batch, int64_t num_priors, const at::opmath_type<scalar_t>* __restrict__ best_iou,
    const int32_t* __restrict__ best_gt, const uint8_t* __restrict__ forced,
    at::opmath_type<scalar_t> threshold, at::opmath_type<scalar_t> v_center,
    at::opmath_type<scalar_t> v_size, scalar_t* __restrict__ loc, int64_t* __restrict__ labels) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t count = batch * num_priors;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / num_priors;
    const int64_t p = i - b * num_priors;
    const int32_t g = best_gt[i];
    int64_t g0, g1;
    image_range(offsets, b, g0, g1);
    const bool positive = g >= 0 && g0 + g < g1 && (forced[i] || best_iou[i] >= threshold);
    if (!positive) {
      labels[i] = 0;
      loc[4 * i] = loc[4 * i + 1] = loc[4 * i + 2] = loc[4 * i + 3] = scalar_t(0);
      continue;
    }
    const int64_t row = g0 + g;
    labels[i] = gt_labels[row];
    acc_t target[4];
    box_math::encode_box<acc_t>(
        gt_boxes[4 * row], gt_boxes[4 * row + 1], gt_boxes[4 * row + 2], gt_boxes[4 * row + 3],
        priors[4 * p], priors[4 * p + 1], priors[4 * p + 2], priors[4 * p + 3], v_center, v_size,
        target);
    for (int k = 0; k < 4; ++k) {
      loc[4 * i + k] = static_cast<scalar_t>(target[k]);
    }
  }
}

std::tuple<at::Tensor, at::Tensor> match_cuda(
    const at::Tensor& gt_boxes, const at::Tensor& gt_labels, const at::Tensor& gt_offsets,
    const at::Tensor& priors, double iou_threshold, double variance_center,
    double variance_size) {
  check_match_args(
      gt_boxes, gt_labels, gt_offsets, priors, iou_threshold, variance_center, variance_size);
  const c10::cuda::CUDAGuard device_guard(priors.device());
  const int64_t batch = gt_offsets.size(0) - 1;
  const int64_t num_priors = priors.size(0);
  const int64_t total_gt = gt_boxes.size(0);
  at::Tensor loc = at::empty({batch, num_priors, 4}, priors.options());
  at::Tensor labels = at::empty({batch, num_priors}, priors.options().dtype(at::kLong));
  if (labels.numel() == 0) {
    return {loc, labels};
  }
  const int64_t prior_blocks = (num_priors + kThreads - 1) / kThreads;
  TORCH_CHECK_VALUE(
      batch * prior_blocks <= INT32_MAX, "match on CUDA supports at most 2^31 - 1 blocks of ",
      kThreads, " priors over all images, got B = ", batch, " images of P = ", num_priors,
      " priors");
  const at::Tensor boxes = gt_boxes.contiguous();
  const at::Tensor box_labels = gt_labels.contiguous();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor offsets = at::empty({batch + 1}, gt_offsets.options());
  {
    const at::Tensor raw_offsets = gt_offsets.contiguous();
    ordered_offsets_kernel<<<1, kOffsetThreads, 0, stream>>>(
        raw_offsets.const_data_ptr<int64_t>(), batch + 1, total_gt,
        offsets.mutable_data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  const at::Tensor prior_boxes = priors.contiguous();
  const auto acc_type = at::toOpMathType(boxes.scalar_type());
  at::Tensor best_iou = at::empty({batch, num_priors}, priors.options().dtype(acc_type));
  at::Tensor best_gt = at::empty({batch, num_priors}, priors.options().dtype(at::kInt));
  at::Tensor forced = at::zeros({batch, num_priors}, priors.options().dtype(at::kByte));
  at::Tensor cached_iou = at::empty({total_gt}, priors.options().dtype(acc_type));
  at::Tensor cached_prior = at::empty({total_gt}, priors.options().dtype(at::kInt));
  at::Tensor assigned = at::empty({total_gt}, priors.options().dtype(at::kByte));
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, boxes.scalar_type(), "match_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const unsigned int grid = static_cast<unsigned int>(batch * prior_blocks);
        best_gt_per_prior_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(
            boxes.const_data_ptr<scalar_t>(), offsets.const_data_ptr<int64_t>(), total_gt,
            prior_boxes.const_data_ptr<scalar_t>(), num_priors,
            best_iou.mutable_data_ptr<acc_t>(), best_gt.mutable_data_ptr<int32_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        if (total_gt > 0) {
          force_matches_kernel<scalar_t><<<static_cast<unsigned int>(batch), kThreads, 0, stream>>>(
              boxes.const_data_ptr<scalar_t>(), offsets.const_data_ptr<int64_t>(), total_gt,
              prior_boxes.const_data_ptr<scalar_t>(), num_priors,
              cached_iou.mutable_data_ptr<acc_t>(), cached_prior.mutable_data_ptr<int32_t>(),
              assigned.mutable_data_ptr<uint8_t>(), forced.mutable_data_ptr<uint8_t>(),
              best_gt.mutable_data_ptr<int32_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
        encode_matches_kernel<scalar_t><<<blocks_for(batch * num_priors, kThreads), kThreads, 0, stream>>>(
            boxes.const_data_ptr<scalar_t>(), box_labels.const_data_ptr<int64_t>(),
            offsets.const_data_ptr<int64_t>(), total_gt, prior_boxes.const_data_ptr<scalar_t>(),
            batch, num_priors, best_iou.const_data_ptr<acc_t>(), best_gt.const_data_ptr<int32_t>(),
            forced.const_data_ptr<uint8_t>(), static_cast<acc_t>(iou_threshold),
            static_cast<acc_t>(variance_center), static_cast<acc_t>(variance_size),
            loc.mutable_data_ptr<scalar_t>(), labels.mutable_data_ptr<int64_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return {loc, labels};
}

// Block-wide sum, returned to every thread. `scratch` holds one slot per warp.
__device__ int64_t block_sum(int64_t value, int64_t* scratch) {
  for (int shift = kWarpSize / 2; shift > 0; shift /= 2) {
    value += __shfl_down_sync(kFullMask, value, shift);
  }
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) {
    scratch[warp] = value;
  }
  __syncthreads();
  int64_t total = 0;
  for (int w = 0; w < kWarps; ++w) {
    total += scratch[w];
  }
  return total;
}

// One block per image. The k-th highest negative key T is found by a bitwise binary search
// (the largest T with #{key >= T} >= k); the keys above T are all taken, and of the keys
// equal to T the lowest-index ones, by an ordered block scan.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) hard_negative_mining_kernel(
    const scalar_t* __restrict__ conf_loss, const int64_t* __restrict__ labels,
    int64_t num_priors, int64_t neg_pos_ratio, int64_t min_negatives, bool* __restrict__ keep) {
  using acc_t = at::opmath_type<scalar_t>;
  using key_t = decltype(box_math::ranking_key(acc_t(0)));
  __shared__ int64_t scratch[kWarps];
  const int64_t b = blockIdx.x;
  const scalar_t* row_loss = conf_loss + b * num_priors;
  const int64_t* row_label = labels + b * num_priors;
  bool* row_keep = keep + b * num_priors;

  int64_t positives = 0, negatives = 0;
  for (int64_t p = threadIdx.x; p < num_priors; p += kThreads) {
    const int64_t label = row_label[p];
    positives += label > 0;
    negatives += label == 0;
    row_keep[p] = label > 0;
  }
  positives = block_sum(positives, scratch);
  negatives = block_sum(negatives, scratch);
  const int64_t quota = box_math::mining_quota(positives, negatives, neg_pos_ratio, min_negatives);
  if (quota == 0) {
    return;
  }
  if (quota == negatives) {
    for (int64_t p = threadIdx.x; p < num_priors; p += kThreads) {
      if (row_label[p] == 0) {
        row_keep[p] = true;
      }
    }
    return;
  }
  key_t threshold = 0;
  for (int bit = static_cast<int>(sizeof(key_t) * 8) - 1; bit >= 0; --bit) {
    const key_t candidate = threshold | (key_t(1) << bit);
    int64_t at_least = 0;
    for (int64_t p = threadIdx.x; p < num_priors; p += kThreads) {
      at_least += row_label[p] == 0 &&
                  box_math::ranking_key(static_cast<acc_t>(row_loss[p])) >= candidate;
    }
    if (block_sum(at_least, scratch) >= quota) {
      threshold = candidate;
    }
  }
  int64_t above = 0;
  for (int64_t p = threadIdx.x; p < num_priors; p += kThreads) {
    if (row_label[p] == 0 && box_math::ranking_key(static_cast<acc_t>(row_loss[p])) > threshold) {
      row_keep[p] = true;
      ++above;
    }
  }
  const int64_t ties_wanted = quota - block_sum(above, scratch);
  // Ordered pass over the priors in index order, one block-wide chunk at a time.
  __shared__ int32_t warp_counts[kWarps];
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  int64_t taken = 0;
  for (int64_t base = 0; base < num_priors && taken < ties_wanted; base += kThreads) {
    const int64_t p = base + threadIdx.x;
    const bool tie = p < num_priors && row_label[p] == 0 &&
                     box_math::ranking_key(static_cast<acc_t>(row_loss[p])) == threshold;
    const unsigned ballot = __ballot_sync(kFullMask, tie);
    if (lane == 0) {
      warp_counts[warp] = __popc(ballot);
    }
    __syncthreads();
    int64_t rank = taken + __popc(ballot & ((1u << lane) - 1u));
    int64_t chunk_total = 0;
    for (int w = 0; w < kWarps; ++w) {
      rank += w < warp ? warp_counts[w] : 0;
      chunk_total += warp_counts[w];
    }
    if (tie && rank < ties_wanted) {
      row_keep[p] = true;
    }
    taken += chunk_total;
    __syncthreads();
  }
}

at::Tensor hard_negative_mining_cuda(
    const at::Tensor& conf_loss, const at::Tensor& labels, int64_t neg_pos_ratio,
    int64_t min_negatives) {
  check_mining_args(conf_loss, labels, neg_pos_ratio, min_negatives);
  const c10::cuda::CUDAGuard device_guard(conf_loss.device());
  at::Tensor out = at::empty(conf_loss.sizes(), conf_loss.options().dtype(at::kBool));
  if (out.numel() == 0) {
    return out;
  }
  const int64_t batch = conf_loss.size(0);
  TORCH_CHECK_VALUE(
      batch <= 2147483647LL, "hard_negative_mining: too many images for one launch: ", batch);
  const at::Tensor loss = conf_loss.contiguous();
  const at::Tensor label = labels.contiguous();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, loss.scalar_type(), "hard_negative_mining_cuda", [&] {
        hard_negative_mining_kernel<scalar_t><<<static_cast<unsigned int>(batch), kThreads, 0, stream>>>(
            loss.const_data_ptr<scalar_t>(), label.const_data_ptr<int64_t>(), loss.size(1),
            neg_pos_ratio, min_negatives, out.mutable_data_ptr<bool>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(ssd_ext, CUDA, m) {
  m.impl("match", &match_cuda);
  m.impl("hard_negative_mining", &hard_negative_mining_cuda);
}

}  // namespace ssd_ext
