// CUDA kernel of detect, the fused SSD detection post-processing.
//
// softmax (ATen), one kernel writing per-(image, class) thresholded keys, one
// segmented stable sort (ATen) for the per-class top-k, one decode + clip kernel, one NMS
// kernel with a block per (image, class), one segmented stable sort for the per-image top-k and
// one gather kernel: no loop over images or classes on the host, no host sync.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "../box_math.h"
#include "../ops/detect_checks.h"
#include "cuda_utils.cuh"

namespace ssd_ext {
namespace {

// keys[(b * (C-1) + c - 1) * P + p] = score[b, p, c] if > threshold else -1 (NaN fails).
template <typename acc_t>
__global__ void detect_keys_kernel(const acc_t* __restrict__ scores, int64_t batch,
                                   int64_t num_priors, int64_t num_classes, acc_t threshold,
                                   acc_t* __restrict__ keys) {
  const int64_t object_classes = num_classes - 1;
  const int64_t total = batch * object_classes * num_priors;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < total;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t p = k % num_priors;
    const int64_t segment = k / num_priors;
    const int64_t label = segment % object_classes + 1;
    const int64_t image = segment / object_classes;
    const acc_t s = scores[(image * num_priors + p) * num_classes + label];
    keys[k] = s > threshold ? s : acc_t(-1);
  }
}

// Decoded boxes rounded to the input dtype (like the reference's decode), then clamped to
// [0, 1] (exact in any dtype).
template <typename scalar_t>
__global__ void detect_decode_kernel(const scalar_t* __restrict__ loc,
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

// One block per (image, class) segment: greedy NMS over its first min(K, passing) candidates
// (sorted keys), keeping at most kept_cap; writes the kept (score, prior) into the segment's
// kept_cap merge slots, the rest of them score -1.
template <typename scalar_t>
__global__ void detect_nms_kernel(const at::opmath_type<scalar_t>* __restrict__ sorted_keys,
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
  const acc_t* keys = sorted_keys + segment * num_priors;
  const int64_t* priors = sorted_priors + segment * num_priors;
  const scalar_t* image_boxes = boxes + image * num_priors * 4;
  unsigned char* dead = suppressed + segment * candidates;
  acc_t* out_keys = merge_keys + segment * kept_cap;
  int64_t* out_priors = merge_priors + segment * kept_cap;

  // Passing keys are > threshold >= 0, the others -1, and keys are sorted: count the passing.
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
__global__ void detect_gather_kernel(const at::opmath_type<scalar_t>* __restrict__ top_keys,
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

    at::Tensor keys = at::empty({segments, num_priors}, scores.options());
    detect_keys_kernel<acc_t><<<blocks_for(keys.numel(), kThreads), kThreads, 0, stream>>>(
        scores.const_data_ptr<acc_t>(), batch, num_priors, num_classes,
        static_cast<acc_t>(score_threshold), keys.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    // Per (image, class) segment: stable descending, so equal scores keep prior order.
    const auto class_sorted = at::sort(keys, /*stable=*/true, /*dim=*/1, /*descending=*/true);
    const at::Tensor sorted_keys = std::get<0>(class_sorted).contiguous();
    const at::Tensor sorted_priors = std::get<1>(class_sorted).contiguous();

    at::Tensor boxes = at::empty({batch, num_priors, 4}, l.options());
    detect_decode_kernel<scalar_t><<<blocks_for(batch * num_priors, kThreads), kThreads, 0, stream>>>(
        l.const_data_ptr<scalar_t>(), p.const_data_ptr<scalar_t>(), batch * num_priors, num_priors,
        static_cast<acc_t>(variance_center), static_cast<acc_t>(variance_size),
        boxes.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();

    at::Tensor suppressed = at::zeros({segments, candidates}, l.options().dtype(at::kByte));
    at::Tensor merge_keys = at::empty({batch, object_classes * kept_cap}, scores.options());
    at::Tensor merge_priors = at::empty({batch, object_classes * kept_cap}, l.options().dtype(at::kLong));
    detect_nms_kernel<scalar_t><<<static_cast<unsigned int>(segments), 128, 0, stream>>>(
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
