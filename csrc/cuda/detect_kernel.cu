// CUDA kernel of detect, the fused SSD detection post-processing.
//
// softmax (ATen); one kernel transposing the scores into class-major thresholded keys; one
// selection kernel with a block per (image, class) keeping its first candidates_per_class
// keys by (score desc, prior asc) with a radix select (no sort of all B*(C-1)*P keys); one
// segmented stable sort of those candidates only; one decode + clip kernel; one NMS kernel
// with a block per (image, class); one segmented stable sort for the per-image top-k and one
// gather kernel: no loop over images or classes on the host, no host sync.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/gather.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <climits>
#include <cstdint>

#include "../box_math.h"
#include "../ops/detect_checks.h"
#include "cuda_utils.cuh"

namespace ssd_ext {
namespace {

constexpr int kTransposeTile = 32;
constexpr int kTransposeRows = 8;

// keys[(b * (C-1) + c - 1) * P + p] = score[b, p, c] if > threshold else -1 (NaN fails).
// Passing scores are softmax outputs > threshold >= 0, so a key is passing exactly when it is
// >= 0. The [P, C] -> [C-1, P] transpose goes through a shared tile so that both the reads
// (along classes) and the writes (along priors) are coalesced. Tiles are walked by a
// grid-stride loop, so any batch size fits the grid.
template <typename acc_t>
__global__ void __launch_bounds__(kTransposeTile* kTransposeRows)
    detect_keys_kernel(const acc_t* __restrict__ scores, int64_t batch, int64_t num_priors,
                       int64_t num_classes, acc_t threshold, acc_t* __restrict__ keys) {
  __shared__ acc_t tile[kTransposeTile][kTransposeTile + 1];
  const int64_t object_classes = num_classes - 1;
  const int64_t prior_tiles = (num_priors + kTransposeTile - 1) / kTransposeTile;
  const int64_t class_tiles = (object_classes + kTransposeTile - 1) / kTransposeTile;
  const int64_t tiles = batch * prior_tiles * class_tiles;
  const int tx = threadIdx.x;
  const int ty = threadIdx.y;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t class_tile = t % class_tiles;
    const int64_t prior_tile = (t / class_tiles) % prior_tiles;
    const int64_t image = t / (class_tiles * prior_tiles);
    const int64_t p0 = prior_tile * kTransposeTile;
    const int64_t c0 = class_tile * kTransposeTile;
    __syncthreads();  // the previous tile has been written out
    for (int r = ty; r < kTransposeTile; r += kTransposeRows) {
      const int64_t p = p0 + r;
      const int64_t c = c0 + tx;  // object class index; the score column is c + 1
      if (p < num_priors && c < object_classes) {
        const acc_t s = scores[(image * num_priors + p) * num_classes + c + 1];
        tile[r][tx] = s > threshold ? s : acc_t(-1);
      }
    }
    __syncthreads();
    for (int r = ty; r < kTransposeTile; r += kTransposeRows) {
      const int64_t c = c0 + r;
      const int64_t p = p0 + tx;
      if (p < num_priors && c < object_classes) {
        keys[(image * object_classes + c) * num_priors + p] = tile[tx][r];
      }
    }
  }
}

constexpr int kSelectThreads = 256;
constexpr int kSelectWarps = kSelectThreads / 32;
constexpr int kRadixBits = 8;
constexpr int kRadixBins = 1 << kRadixBits;

// Rank of this thread's flag among the set flags of lower threads in the block, and the
// block's total (every thread gets it). Needs all threads of the block.
__device__ __forceinline__ int block_exclusive_count(bool flag, int* warp_counts, int& total) {
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const unsigned ballot = __ballot_sync(0xFFFFFFFFu, flag);
  __syncthreads();  // warp_counts may still be read from the previous call
  if (lane == 0) {
    warp_counts[warp] = __popc(ballot);
  }
  __syncthreads();
  int rank = __popc(ballot & ((1u << lane) - 1u));
  total = 0;
  for (int w = 0; w < kSelectWarps; ++w) {
    rank += w < warp ? warp_counts[w] : 0;
    total += warp_counts[w];
  }
  return rank;
}

// One block per (image, class) segment: keeps the first `candidates` passing keys of the
// segment by (score desc, prior asc) and writes them, in prior order, into the segment's
// `candidates` slots (the unused slots get key -1 and prior 0). The candidates-th key T is
// found by a radix select over the order-preserving keys (8 bits per pass, a shared
// histogram); every key above T is taken, and of the keys equal to T the lowest priors.
template <typename acc_t>
__global__ void __launch_bounds__(kSelectThreads)
    detect_select_kernel(const acc_t* __restrict__ keys, int64_t num_priors, int64_t candidates,
                         acc_t* __restrict__ selected_keys, int64_t* __restrict__ selected_priors) {
  using key_t = decltype(box_math::ranking_key(acc_t(0)));
  __shared__ unsigned int histogram[kRadixBins];
  __shared__ int warp_counts[kSelectWarps];
  __shared__ unsigned int passing_count;
  __shared__ int chosen_digit;
  __shared__ long long chosen_remaining;
  const int64_t segment = blockIdx.x;
  const acc_t* row = keys + segment * num_priors;
  acc_t* out_keys = selected_keys + segment * candidates;
  int64_t* out_priors = selected_priors + segment * candidates;

  if (threadIdx.x == 0) {
    passing_count = 0;
  }
  __syncthreads();
  unsigned int mine = 0;
  for (int64_t p = threadIdx.x; p < num_priors; p += kSelectThreads) {
    mine += row[p] >= acc_t(0) ? 1u : 0u;
  }
  atomicAdd(&passing_count, mine);
  __syncthreads();
  const int64_t passing = passing_count;

  // Threshold key and how many keys equal to it to take; with at most `candidates` passing,
  // every passing key is taken.
  const bool take_all = passing <= candidates;
  key_t threshold = 0;
  int64_t ties_wanted = 0;
  if (!take_all) {
    key_t prefix = 0;
    key_t prefix_mask = 0;
    int64_t remaining = candidates;  // rank, from the top, of T among the keys with `prefix`
    for (int shift = static_cast<int>(sizeof(key_t) * 8) - kRadixBits; shift >= 0;
         shift -= kRadixBits) {
      for (int bin = threadIdx.x; bin < kRadixBins; bin += kSelectThreads) {
        histogram[bin] = 0;
      }
      __syncthreads();
      for (int64_t p = threadIdx.x; p < num_priors; p += kSelectThreads) {
        const acc_t value = row[p];
        if (value >= acc_t(0)) {
          const key_t key = box_math::ranking_key(value);
          if ((key & prefix_mask) == prefix) {
            atomicAdd(&histogram[static_cast<int>((key >> shift) & key_t(kRadixBins - 1))], 1u);
          }
        }
      }
      __syncthreads();
      if (threadIdx.x == 0) {
        int64_t above = 0;
        int digit = kRadixBins - 1;
        for (; digit > 0; --digit) {
          if (above + histogram[digit] >= remaining) {
            break;
          }
          above += histogram[digit];
        }
        chosen_digit = digit;
        chosen_remaining = remaining - above;
      }
      __syncthreads();
      prefix |= static_cast<key_t>(chosen_digit) << shift;
      prefix_mask |= static_cast<key_t>(kRadixBins - 1) << shift;
      remaining = chosen_remaining;
      __syncthreads();  // chosen_* are read before the next pass overwrites them
    }
    threshold = prefix;
    ties_wanted = remaining;
  }

  // Ordered compaction over the priors, one block-wide chunk at a time.
  int64_t ties_seen = 0;
  int64_t written = 0;
  for (int64_t base = 0; base < num_priors; base += kSelectThreads) {
    const int64_t p = base + threadIdx.x;
    const acc_t value = p < num_priors ? row[p] : acc_t(-1);
    bool take = false;
    bool tie = false;
    if (value >= acc_t(0)) {
      if (take_all) {
        take = true;
      } else {
        const key_t key = box_math::ranking_key(value);
        take = key > threshold;
        tie = key == threshold;
      }
    }
    int tie_total = 0;
    const int tie_rank = block_exclusive_count(tie, warp_counts, tie_total);
    take = take || (tie && ties_seen + tie_rank < ties_wanted);
    ties_seen += tie_total;
    int take_total = 0;
    const int take_rank = block_exclusive_count(take, warp_counts, take_total);
    if (take && written + take_rank < candidates) {
      out_keys[written + take_rank] = value;
      out_priors[written + take_rank] = p;
    }
    written += take_total;
  }
  for (int64_t k = written + threadIdx.x; k < candidates; k += kSelectThreads) {
    out_keys[k] = acc_t(-1);
    out_priors[k] = 0;
  }
}

// Decoded boxes rounded to the input dtype (like the reference's decode), then clamped to
// [0, 1] (exact in any dtype).
template <typename scalar_t>
__global__ void __launch_bounds__(256) detect_decode_kernel(const scalar_t* __restrict__ loc,
                                     const scalar_t* __restrict__ priors, int64_t total,
                                     int64_t num_priors, at::opmath_type<scalar_t> variance_center,
                                     at::opmath_type<scalar_t> variance_size,
                                     scalar_t* __restrict__ boxes) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < total;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const scalar_t* l = loc + 4 * k;
    const scalar_t* p = priors + 4 * (k % num_priors);
    acc_t decoded[4];
    box_math::decode_box<acc_t>(l[0], l[1], l[2], l[3], p[0], p[1], p[2], p[3], variance_center,
                                variance_size, decoded);
    for (int d = 0; d < 4; ++d) {
      const acc_t rounded = static_cast<acc_t>(static_cast<scalar_t>(decoded[d]));
      boxes[4 * k + d] = static_cast<scalar_t>(box_math::clamp_unit(rounded));
    }
  }
}

constexpr int kNmsThreads = 128;

// One block per (image, class) segment: greedy NMS over its candidates (sorted keys, -1 for
// unused slots), keeping at most kept_cap; writes the kept (score, prior) into the segment's
// kept_cap merge slots, the rest of them score -1.
template <typename scalar_t>
__global__ void __launch_bounds__(kNmsThreads) detect_nms_kernel(const at::opmath_type<scalar_t>* __restrict__ sorted_keys,
                                  const int64_t* __restrict__ sorted_priors,
                                  const scalar_t* __restrict__ boxes, int64_t num_priors,
                                  int64_t object_classes, int64_t candidates, int64_t kept_cap,
                                  at::opmath_type<scalar_t> iou_threshold,
                                  unsigned char* __restrict__ suppressed,
                                  at::opmath_type<scalar_t>* __restrict__ merge_keys,
                                  int64_t* __restrict__ merge_priors) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t segment = blockIdx.x;
  const int64_t image = segment / object_classes;
  const acc_t* keys = sorted_keys + segment * candidates;
  const int64_t* priors = sorted_priors + segment * candidates;
  const scalar_t* image_boxes = boxes + image * num_priors * 4;
  unsigned char* dead = suppressed + segment * candidates;
  acc_t* out_keys = merge_keys + segment * kept_cap;
  int64_t* out_priors = merge_priors + segment * kept_cap;

  // Candidates are > threshold >= 0, unused slots -1, and keys are sorted: count the first.
  __shared__ int passing;
  if (threadIdx.x == 0) {
    passing = 0;
  }
  __syncthreads();
  int mine = 0;
  for (int64_t j = threadIdx.x; j < candidates; j += blockDim.x) {
    mine += keys[j] >= acc_t(0) ? 1 : 0;
  }
  atomicAdd(&passing, mine);
  __syncthreads();
  const int64_t count = passing;

  int64_t kept = 0;
  for (int64_t i = 0; i < count && kept < kept_cap; ++i) {
    __syncthreads();
    if (dead[i]) {
      continue;
    }
    if (threadIdx.x == 0) {
      out_keys[kept] = keys[i];
      out_priors[kept] = priors[i];
    }
    ++kept;
    const scalar_t* a = image_boxes + 4 * priors[i];
    const acc_t ax1 = a[0], ay1 = a[1], ax2 = a[2], ay2 = a[3];
    const acc_t area_a = box_math::box_area(ax1, ay1, ax2, ay2);
    for (int64_t j = i + 1 + threadIdx.x; j < count; j += blockDim.x) {
      if (dead[j]) {
        continue;
      }
      const scalar_t* b = image_boxes + 4 * priors[j];
      const acc_t bx1 = b[0], by1 = b[1], bx2 = b[2], by2 = b[3];
      const acc_t overlap = box_math::iou_with_areas(
          ax1, ay1, ax2, ay2, area_a, bx1, by1, bx2, by2, box_math::box_area(bx1, by1, bx2, by2));
      if (overlap > iou_threshold) {
        dead[j] = 1;
      }
    }
  }
  for (int64_t k = kept + threadIdx.x; k < kept_cap; k += blockDim.x) {
    out_keys[k] = acc_t(-1);
    out_priors[k] = 0;
  }
}

// Row k < D of image b from the per-image sorted merge keys; counts[b] += valid rows.
template <typename scalar_t>
__global__ void __launch_bounds__(256) detect_gather_kernel(const at::opmath_type<scalar_t>* __restrict__ top_keys,
                                     const int64_t* __restrict__ top_positions, int64_t row_length,
                                     const int64_t* __restrict__ merge_priors,
                                     const scalar_t* __restrict__ boxes, int64_t batch,
                                     int64_t num_priors, int64_t kept_cap, int64_t max_detections,
                                     int64_t taken, scalar_t* __restrict__ out_boxes,
                                     scalar_t* __restrict__ out_scores,
                                     int64_t* __restrict__ out_labels,
                                     unsigned long long* __restrict__ counts) {
  const int64_t total = batch * taken;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < total;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t image = k / taken;
    const int64_t rank = k % taken;
    const auto key = top_keys[image * row_length + rank];
    if (!(key >= 0)) {
      continue;  // padding rows keep their zeros / -1
    }
    const int64_t position = top_positions[image * row_length + rank];
    const int64_t prior = merge_priors[image * row_length + position];
    const int64_t row = image * max_detections + rank;
    const scalar_t* b = boxes + (image * num_priors + prior) * 4;
    for (int d = 0; d < 4; ++d) {
      out_boxes[4 * row + d] = b[d];
    }
    out_scores[row] = static_cast<scalar_t>(key);
    out_labels[row] = position / kept_cap + 1;
    atomicAdd(counts + image, 1ULL);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> detect_cuda(
    const at::Tensor& loc, const at::Tensor& conf_logits, const at::Tensor& priors,
    double score_threshold, double iou_threshold, int64_t candidates_per_class,
    int64_t max_detections, double variance_center, double variance_size) {
  check_detect_args(loc, conf_logits, priors, score_threshold, iou_threshold, candidates_per_class,
                    max_detections, variance_center, variance_size);
  const c10::cuda::CUDAGuard device_guard(loc.device());
  const int64_t batch = loc.size(0);
  const int64_t num_priors = loc.size(1);
  const int64_t num_classes = conf_logits.size(2);
  const int64_t object_classes = num_classes - 1;
  at::Tensor out_boxes = at::zeros({batch, max_detections, 4}, loc.options());
  at::Tensor out_scores = at::zeros({batch, max_detections}, loc.options());
  at::Tensor out_labels = at::full({batch, max_detections}, -1, loc.options().dtype(at::kLong));
  at::Tensor counts = at::zeros({batch}, loc.options().dtype(at::kLong));
  if (batch == 0 || num_priors == 0 || max_detections == 0 || candidates_per_class == 0) {
    return {out_boxes, out_scores, out_labels, counts};
  }
  // Grid x holds one block per (image, class), and the per-segment counters are 32-bit.
  TORCH_CHECK_VALUE(batch * object_classes <= INT32_MAX,
                    "detect on CUDA supports at most 2^31 - 1 (image, class) pairs, got B * (C - 1) = ",
                    batch * object_classes);
  TORCH_CHECK_VALUE(num_priors <= INT32_MAX, "detect on CUDA supports at most 2^31 - 1 priors, got P = ",
                    num_priors);
  const int64_t candidates = std::min(candidates_per_class, num_priors);
  const int64_t kept_cap = std::min(candidates, max_detections);
  const int64_t segments = batch * object_classes;
  const at::Tensor l = loc.contiguous();
  const at::Tensor p = priors.contiguous();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  constexpr int kThreads = 256;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, l.scalar_type(), "detect_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto acc_type = c10::CppTypeToScalarType<acc_t>::value;
    const at::Tensor scores = at::softmax(conf_logits.to(acc_type), -1).contiguous();

    // Class-major thresholded keys, then each segment's first `candidates` of them (by score
    // desc, prior asc) in prior order, then a stable sort of those few per segment only: equal
    // scores keep prior order.
    at::Tensor keys = at::empty({segments, num_priors}, scores.options());
    const int64_t tiles = batch * ((num_priors + kTransposeTile - 1) / kTransposeTile) *
                          ((object_classes + kTransposeTile - 1) / kTransposeTile);
    const dim3 transpose_block(kTransposeTile, kTransposeRows);
    detect_keys_kernel<acc_t><<<blocks_for(tiles, 1), transpose_block, 0, stream>>>(
        scores.const_data_ptr<acc_t>(), batch, num_priors, num_classes,
        static_cast<acc_t>(score_threshold), keys.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    at::Tensor selected_keys = at::empty({segments, candidates}, scores.options());
    at::Tensor selected_priors = at::empty({segments, candidates}, l.options().dtype(at::kLong));
    detect_select_kernel<acc_t><<<static_cast<unsigned int>(segments), kSelectThreads, 0, stream>>>(
        keys.const_data_ptr<acc_t>(), num_priors, candidates,
        selected_keys.mutable_data_ptr<acc_t>(), selected_priors.mutable_data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    keys.reset();  // the [segments, P] scratch is not needed past the selection
    const auto class_sorted =
        at::sort(selected_keys, /*stable=*/true, /*dim=*/1, /*descending=*/true);
    const at::Tensor sorted_keys = std::get<0>(class_sorted).contiguous();
    const at::Tensor sorted_priors =
        selected_priors.gather(1, std::get<1>(class_sorted)).contiguous();

    at::Tensor boxes = at::empty({batch, num_priors, 4}, l.options());
    detect_decode_kernel<scalar_t><<<blocks_for(batch * num_priors, kThreads), kThreads, 0, stream>>>(
        l.const_data_ptr<scalar_t>(), p.const_data_ptr<scalar_t>(), batch * num_priors, num_priors,
        static_cast<acc_t>(variance_center), static_cast<acc_t>(variance_size),
        boxes.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();

    at::Tensor suppressed = at::zeros({segments, candidates}, l.options().dtype(at::kByte));
    at::Tensor merge_keys = at::empty({batch, object_classes * kept_cap}, scores.options());
    at::Tensor merge_priors = at::empty({batch, object_classes * kept_cap}, l.options().dtype(at::kLong));
    detect_nms_kernel<scalar_t><<<static_cast<unsigned int>(segments), kNmsThreads, 0, stream>>>(
        sorted_keys.const_data_ptr<acc_t>(), sorted_priors.const_data_ptr<int64_t>(),
        boxes.const_data_ptr<scalar_t>(), num_priors, object_classes, candidates, kept_cap,
        static_cast<acc_t>(iou_threshold), suppressed.mutable_data_ptr<unsigned char>(),
        merge_keys.mutable_data_ptr<acc_t>(), merge_priors.mutable_data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();

    // Per image: the merge slots are class-major and, within a class, in (score desc, prior
    // asc) order, so a stable descending sort breaks ties by lower class, then lower prior.
    const auto image_sorted = at::sort(merge_keys, /*stable=*/true, /*dim=*/1, /*descending=*/true);
    const at::Tensor top_keys = std::get<0>(image_sorted).contiguous();
    const at::Tensor top_positions = std::get<1>(image_sorted).contiguous();
    const int64_t row_length = object_classes * kept_cap;
    const int64_t taken = std::min(max_detections, row_length);
    detect_gather_kernel<scalar_t><<<blocks_for(batch * taken, kThreads), kThreads, 0, stream>>>(
        top_keys.const_data_ptr<acc_t>(), top_positions.const_data_ptr<int64_t>(), row_length,
        merge_priors.const_data_ptr<int64_t>(), boxes.const_data_ptr<scalar_t>(), batch, num_priors,
        kept_cap, max_detections, taken, out_boxes.mutable_data_ptr<scalar_t>(),
        out_scores.mutable_data_ptr<scalar_t>(), out_labels.mutable_data_ptr<int64_t>(),
        reinterpret_cast<unsigned long long*>(counts.mutable_data_ptr<int64_t>()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out_boxes, out_scores, out_labels, counts};
}

}  // namespace

TORCH_LIBRARY_IMPL(ssd_ext, CUDA, m) {
  m.impl("detect", &detect_cuda);
}

}  // namespace ssd_ext
