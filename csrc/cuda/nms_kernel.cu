// CUDA kernels of nms and batched_nms.
//
// nms / batched_nms: boxes sorted by score (stable), then a 2-D grid of 64x64 tiles of the
// upper triangle writes one 64-bit suppression word per (box, tile column); a single block
// then walks the boxes in order on the device, OR-ing the rows of kept boxes into a
// shared-memory "removed" bit set. No mask goes to the host; the only host sync is reading
// the kept count at the end (the output size). batched_nms sets a bit only between boxes of
// the same class, so classes never interact and no coordinate offsets are needed.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/add.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sort.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "../box_math.h"
#include "../ops/nms_checks.h"
#include "cuda_utils.cuh"

namespace ssd_ext {
namespace {

constexpr int kWordBits = 64;

// Suppression words of the sorted boxes: bit j of mask[i * words + w] is set when box
// (64 w + j) comes after box i and its IoU with box i is > threshold (and, batched, they share
// a class). Only tiles on or above the diagonal are computed and ever read.
template <typename scalar_t, bool kBatched>
__global__ void __launch_bounds__(kWordBits) nms_mask_kernel(const scalar_t* __restrict__ boxes,
                                const int64_t* __restrict__ classes, int64_t n, int64_t words,
                                at::opmath_type<scalar_t> iou_threshold,
                                unsigned long long* __restrict__ mask) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t row_block = blockIdx.y;
  const int64_t col_block = blockIdx.x;
  if (row_block > col_block) {
    return;
  }
  const int64_t row_start = row_block * kWordBits;
  const int64_t col_start = col_block * kWordBits;
  const int row_size = static_cast<int>(min(n - row_start, static_cast<int64_t>(kWordBits)));
  const int col_size = static_cast<int>(min(n - col_start, static_cast<int64_t>(kWordBits)));

  __shared__ acc_t col_boxes[kWordBits][5];
  __shared__ int64_t col_classes[kWordBits];
  const int t = threadIdx.x;
  if (t < col_size) {
    const scalar_t* b = boxes + 4 * (col_start + t);
    const acc_t x1 = b[0], y1 = b[1], x2 = b[2], y2 = b[3];
    col_boxes[t][0] = x1;
    col_boxes[t][1] = y1;
    col_boxes[t][2] = x2;
    col_boxes[t][3] = y2;
    col_boxes[t][4] = box_math::box_area(x1, y1, x2, y2);
    if (kBatched) {
      col_classes[t] = classes[col_start + t];
    }
  }
  __syncthreads();
  if (t >= row_size) {
    return;
  }
  const int64_t i = row_start + t;
  const scalar_t* a = boxes + 4 * i;
  const acc_t ax1 = a[0], ay1 = a[1], ax2 = a[2], ay2 = a[3];
  const acc_t area_a = box_math::box_area(ax1, ay1, ax2, ay2);
  const int64_t class_a = kBatched ? classes[i] : 0;
  unsigned long long bits = 0;
  for (int j = row_block == col_block ? t + 1 : 0; j < col_size; ++j) {
    if (kBatched && col_classes[j] != class_a) {
      continue;
    }
    const acc_t* b = col_boxes[j];
    const acc_t overlap =
        box_math::iou_with_areas(ax1, ay1, ax2, ay2, area_a, b[0], b[1], b[2], b[3], b[4]);
    if (overlap > iou_threshold) {
      bits |= 1ULL << j;
    }
  }
  mask[i * words + col_block] = bits;
}

constexpr int kReduceThreads = 1024;

// The greedy walk in one block. removed[] (shared) starts with the NaN-score boxes and the
// padding bits past n. Word w is final once every earlier kept box has been applied; its 64
// diagonal words (row i's word w, for the boxes i of word w) are staged in shared memory, so
// the serial scan over the word waits on no global load. Each kept box ORs its diagonal word
// into a register copy, and its later words into removed[], each word by one thread (so no
// atomics), with two barriers per word.
template <typename key_t>
__global__ void __launch_bounds__(kReduceThreads)
    nms_reduce_kernel(const unsigned long long* __restrict__ mask,
                      const key_t* __restrict__ sorted_keys, const int64_t* __restrict__ order,
                      int64_t n, int64_t words, int64_t max_keep, int64_t* __restrict__ keep_out,
                      int64_t* __restrict__ count_out) {
  extern __shared__ unsigned long long removed[];
  __shared__ unsigned long long diagonal[kWordBits];
  for (int64_t w = threadIdx.x; w < words; w += blockDim.x) {
    unsigned long long bits = 0;
    for (int b = 0; b < kWordBits; ++b) {
      const int64_t i = w * kWordBits + b;
      if (i >= n || sorted_keys[i] != sorted_keys[i]) {
        bits |= 1ULL << b;
      }
    }
    removed[w] = bits;
  }
  int64_t kept = 0;
  for (int64_t w = 0; w < words && kept < max_keep; ++w) {
    __syncthreads();  // removed[w] is final; diagonal[] of the previous word is no longer read
    if (threadIdx.x < kWordBits) {
      const int64_t i = w * kWordBits + threadIdx.x;
      diagonal[threadIdx.x] = i < n ? mask[i * words + w] : 0ULL;
    }
    __syncthreads();
    unsigned long long current = removed[w];
    for (int b = 0; b < kWordBits; ++b) {
      if ((current >> b) & 1ULL) {
        continue;
      }
      const int64_t i = w * kWordBits + b;
      if (threadIdx.x == 0) {
        keep_out[kept] = order[i];
      }
      ++kept;
      if (kept >= max_keep) {
        break;
      }
      current |= diagonal[b];
      const unsigned long long* row = mask + i * words;
      for (int64_t later = w + 1 + threadIdx.x; later < words; later += blockDim.x) {
        removed[later] |= row[later];
      }
    }
  }
  if (threadIdx.x == 0) {
    *count_out = kept;
  }
}

// Boxes sorted by score with NaN scores kept (they are removed in the walk). The keys are the
// scores in the math type plus 0.0, which turns -0.0 into +0.0 so that the signed zeros tie
// (the radix sort would order them by bits).
at::Tensor nms_cuda_impl(const at::Tensor& boxes, const at::Tensor& scores,
                         const at::Tensor* classes, double iou_threshold, int64_t max_output) {
  const c10::cuda::CUDAGuard device_guard(boxes.device());
  const int64_t n = boxes.size(0);
  const int64_t max_keep = max_output < 0 ? n : std::min(max_output, n);
  if (max_keep == 0) {
    return at::empty({0}, boxes.options().dtype(at::kLong));
  }
  TORCH_CHECK_VALUE(
      n <= kCudaNmsMaxBoxes, "nms on CUDA supports at most ", kCudaNmsMaxBoxes,
      " boxes (its suppression mask takes N^2/8 bytes: 2 GiB at that size), got N = ", n,
      "; filter the boxes by score first or run on the CPU");
  const at::ScalarType key_type = scores.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor keys = at::add(scores.to(key_type), 0.0);
  const auto sorted = at::sort(keys, /*stable=*/true, /*dim=*/0, /*descending=*/true);
  const at::Tensor sorted_keys = std::get<0>(sorted);
  const at::Tensor order = std::get<1>(sorted);
  const at::Tensor sorted_boxes = boxes.index_select(0, order).contiguous();
  at::Tensor sorted_classes;
  if (classes != nullptr) {
    sorted_classes = classes->index_select(0, order).contiguous();
  }
  const int64_t words = (n + kWordBits - 1) / kWordBits;
  at::Tensor mask = at::empty({n * words}, boxes.options().dtype(at::kLong));
  at::Tensor keep = at::empty({n}, boxes.options().dtype(at::kLong));
  at::Tensor count = at::empty({1}, boxes.options().dtype(at::kLong));
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  auto* mask_data = reinterpret_cast<unsigned long long*>(mask.mutable_data_ptr<int64_t>());
  const dim3 grid(static_cast<unsigned int>(words), static_cast<unsigned int>(words));
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, sorted_boxes.scalar_type(), "nms_mask_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const acc_t threshold = static_cast<acc_t>(iou_threshold);
        if (classes != nullptr) {
          nms_mask_kernel<scalar_t, true><<<grid, kWordBits, 0, stream>>>(
              sorted_boxes.const_data_ptr<scalar_t>(), sorted_classes.const_data_ptr<int64_t>(),
              n, words, threshold, mask_data);
        } else {
          nms_mask_kernel<scalar_t, false><<<grid, kWordBits, 0, stream>>>(
              sorted_boxes.const_data_ptr<scalar_t>(), nullptr, n, words, threshold, mask_data);
        }
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  // At least 64 threads (the diagonal staging), at most the launch bound.
  const int threads = static_cast<int>(
      std::min<int64_t>(kReduceThreads, std::max<int64_t>(kWordBits, (words + 31) / 32 * 32)));
  const size_t shared_bytes = static_cast<size_t>(words) * sizeof(unsigned long long);
  AT_DISPATCH_FLOATING_TYPES(sorted_keys.scalar_type(), "nms_reduce_cuda", [&] {
    nms_reduce_kernel<scalar_t><<<1, threads, shared_bytes, stream>>>(
        mask_data, sorted_keys.const_data_ptr<scalar_t>(), order.const_data_ptr<int64_t>(), n,
        words, max_keep, keep.mutable_data_ptr<int64_t>(), count.mutable_data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  // The one host sync: the number of kept boxes is the output's size.
  const int64_t kept = count.item<int64_t>();
  return keep.narrow(0, 0, kept);
}

at::Tensor nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold,
                    int64_t max_output) {
  check_nms_args(boxes, scores, iou_threshold, max_output);
  return nms_cuda_impl(boxes, scores, nullptr, iou_threshold, max_output);
}

at::Tensor batched_nms_cuda(const at::Tensor& boxes, const at::Tensor& scores,
                            const at::Tensor& idxs, double iou_threshold, int64_t max_output) {
  check_batched_nms_args(boxes, scores, idxs, iou_threshold, max_output);
  return nms_cuda_impl(boxes, scores, &idxs, iou_threshold, max_output);
}

}  // namespace

TORCH_LIBRARY_IMPL(ssd_ext, CUDA, m) {
  m.impl("nms", &nms_cuda);
  m.impl("batched_nms", &batched_nms_cuda);
}

}  // namespace ssd_ext
