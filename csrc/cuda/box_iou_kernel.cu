#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../box_math.h"
#include "../ops/box_iou_checks.h"
#include "cuda_utils.cuh"

namespace ssd_ext {
namespace {

constexpr int kTile = 32;

// A 32x32 tile of the IoU matrix per block: each block stages its 32 boxes of each side
// (and their areas) in shared memory once, so global loads drop from 8 per pair to 8 per
// row or column of the tile.
// kTile x kTile = 1024 threads: the bound makes ptxas fit 64 registers per thread in every
// build, -G debug builds included (without it such a build needs more and every launch fails).
template <typename scalar_t>
__global__ void __launch_bounds__(kTile* kTile) box_iou_kernel(
    const scalar_t* __restrict__ boxes1, const scalar_t* __restrict__ boxes2,
    int64_t n, int64_t m, scalar_t* __restrict__ out) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t tile_a[kTile][5];
  __shared__ acc_t tile_b[kTile][5];

  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int tx = threadIdx.x;
  const int ty = threadIdx.y;

  // Row ty of the block loads box (row0 + tx) of boxes1 when ty == 0, and box (col0 + tx) of
  // boxes2 when ty == 1.
  if (ty < 2) {
    const scalar_t* src = ty == 0 ? boxes1 : boxes2;
    const int64_t index = (ty == 0 ? row0 : col0) + tx;
    const int64_t limit = ty == 0 ? n : m;
    acc_t (*dst)[5] = ty == 0 ? tile_a : tile_b;
    if (index < limit) {
      const acc_t x1 = src[4 * index], y1 = src[4 * index + 1];
      const acc_t x2 = src[4 * index + 2], y2 = src[4 * index + 3];
      dst[tx][0] = x1;
      dst[tx][1] = y1;
      dst[tx][2] = x2;
      dst[tx][3] = y2;
      dst[tx][4] = box_math::box_area(x1, y1, x2, y2);
    }
  }
  __syncthreads();

  const int64_t i = row0 + ty;
  const int64_t j = col0 + tx;
  if (i < n && j < m) {
    const acc_t* a = tile_a[ty];
    const acc_t* b = tile_b[tx];
    out[i * m + j] = static_cast<scalar_t>(
        box_math::iou_with_areas(a[0], a[1], a[2], a[3], a[4], b[0], b[1], b[2], b[3], b[4]));
  }
}

at::Tensor box_iou_cuda(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  check_box_iou_args(boxes1, boxes2);
  const c10::cuda::CUDAGuard device_guard(boxes1.device());
  at::Tensor out = at::empty({boxes1.size(0), boxes2.size(0)}, boxes1.options());
  if (out.numel() == 0) {
    return out;
  }
  const at::Tensor b1 = boxes1.contiguous();
  const at::Tensor b2 = boxes2.contiguous();
  const int64_t n = b1.size(0);
  const int64_t m = b2.size(0);
  const dim3 block(kTile, kTile);
  const dim3 grid(ceil_div(m, kTile), ceil_div(n, kTile));
  TORCH_CHECK_VALUE(
      grid.y <= 65535, "box_iou: boxes1 has ", n, " boxes; at most ", 65535 * kTile,
      " are supported on CUDA");
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, b1.scalar_type(), "box_iou_cuda", [&] {
        box_iou_kernel<scalar_t><<<grid, block, 0, stream>>>(
            b1.const_data_ptr<scalar_t>(), b2.const_data_ptr<scalar_t>(), n, m,
            out.mutable_data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(ssd_ext, CUDA, m) {
  m.impl("box_iou", &box_iou_cuda);
}

}  // namespace ssd_ext
