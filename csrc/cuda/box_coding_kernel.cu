#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../box_math.h"
#include "../ops/box_coding_checks.h"
#include "cuda_utils.cuh"

namespace ssd_ext {
namespace {

constexpr int kThreads = 256;

enum class Direction { kEncode, kDecode };

// One thread per box; box n pairs with prior n % num_priors, so [B, P, 4] against [P, 4]
// reads the priors straight from their own (cached) rows instead of an expanded copy.
template <typename scalar_t, Direction direction>
__global__ void __launch_bounds__(kThreads) box_coding_kernel(
    const scalar_t* __restrict__ in, const scalar_t* __restrict__ priors, int64_t rows,
    int64_t num_priors, at::opmath_type<scalar_t> v_center, at::opmath_type<scalar_t> v_size,
    scalar_t* __restrict__ out) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; n < rows;
       n += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const scalar_t* a = in + 4 * n;
    const scalar_t* p = priors + 4 * (n % num_priors);
    acc_t result[4];
    if constexpr (direction == Direction::kEncode) {
      box_math::encode_box<acc_t>(
          a[0], a[1], a[2], a[3], p[0], p[1], p[2], p[3], v_center, v_size, result);
    } else {
      box_math::decode_box<acc_t>(
          a[0], a[1], a[2], a[3], p[0], p[1], p[2], p[3], v_center, v_size, result);
    }
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      out[4 * n + c] = static_cast<scalar_t>(result[c]);
    }
  }
}

template <Direction direction>
at::Tensor box_coding_cuda(
    const at::Tensor& input, const at::Tensor& priors, c10::ArrayRef<double> variances) {
  constexpr const char* input_name = direction == Direction::kEncode ? "boxes" : "loc";
  check_box_coding_args(input, input_name, priors, variances);
  const c10::cuda::CUDAGuard device_guard(input.device());
  at::Tensor out = at::empty(input.sizes(), input.options());
  if (out.numel() == 0) {
    return out;
  }
  const at::Tensor in_c = input.contiguous();
  const at::Tensor priors_c = priors.contiguous();
  const int64_t rows = in_c.numel() / 4;
  const int64_t num_priors = priors_c.numel() / 4;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const unsigned int blocks = blocks_for(rows, kThreads);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, in_c.scalar_type(), "box_coding_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        box_coding_kernel<scalar_t, direction><<<blocks, kThreads, 0, stream>>>(
            in_c.const_data_ptr<scalar_t>(), priors_c.const_data_ptr<scalar_t>(), rows,
            num_priors, static_cast<acc_t>(variances[0]), static_cast<acc_t>(variances[1]),
            out.mutable_data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(ssd_ext, CUDA, m) {
  m.impl("encode", &box_coding_cuda<Direction::kEncode>);
  m.impl("decode", &box_coding_cuda<Direction::kDecode>);
}

}  // namespace ssd_ext
