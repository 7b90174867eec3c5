#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/log.h>
#include <torch/library.h>

#include "../box_math.h"
#include "../ops/box_coding_checks.h"
#include "thread_trace.h"

namespace ssd_ext {
namespace {

enum class Direction { kEncode, kDecode };

constexpr int64_t kGrain = 4096;

// Row n of `in` pairs with row n % num_priors of `priors`: the priors are never expanded.
// The transcendental of each size term (log for encode, exp for decode) runs between two
// passes as one at::log_ / at::exp_ over a contiguous [rows, 2] buffer: ATen's SIMD versions
// (the same the reference calls) instead of scalar libm calls, which were the op's whole cost.
template <typename scalar_t, Direction direction>
void box_coding_cpu_impl(
    const scalar_t* in, const scalar_t* priors, int64_t rows, int64_t num_priors,
    double v_center_d, double v_size_d, scalar_t* out) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t v_center = static_cast<acc_t>(v_center_d);
  const acc_t v_size = static_cast<acc_t>(v_size_d);
  at::Tensor size_terms_tensor =
      at::empty({rows, 2}, at::TensorOptions().dtype(c10::CppTypeToScalarType<acc_t>::value));
  acc_t* size_terms = size_terms_tensor.mutable_data_ptr<acc_t>();

  // Pass 1: encode's centre offsets (kept in `out`) and size ratios, or decode's clamped
  // log-size offsets.
  at::parallel_for(0, rows, kGrain, [&](int64_t begin, int64_t end) {
    thread_trace::note_task();
    int64_t prior = begin % num_priors;
    for (int64_t n = begin; n < end; ++n, prior = prior + 1 == num_priors ? 0 : prior + 1) {
      const scalar_t* a = in + 4 * n;
      const scalar_t* p = priors + 4 * prior;
      if constexpr (direction == Direction::kEncode) {
        acc_t result[4];
        box_math::encode_box_offsets_and_ratios<acc_t>(
            a[0], a[1], a[2], a[3], p[0], p[1], p[2], p[3], v_center, result);
        out[4 * n] = static_cast<scalar_t>(result[0]);
        out[4 * n + 1] = static_cast<scalar_t>(result[1]);
        size_terms[2 * n] = result[2];
        size_terms[2 * n + 1] = result[3];
      } else {
        size_terms[2 * n] = box_math::decode_log_scale<acc_t>(a[2], v_size);
        size_terms[2 * n + 1] = box_math::decode_log_scale<acc_t>(a[3], v_size);
      }
    }
  });

  if constexpr (direction == Direction::kEncode) {
    at::log_(size_terms_tensor);
  } else {
    at::exp_(size_terms_tensor);
  }

  // Pass 2: encode's size targets, or decode's whole box.
  at::parallel_for(0, rows, kGrain, [&](int64_t begin, int64_t end) {
    thread_trace::note_task();
    int64_t prior = begin % num_priors;
    for (int64_t n = begin; n < end; ++n, prior = prior + 1 == num_priors ? 0 : prior + 1) {
      if constexpr (direction == Direction::kEncode) {
        out[4 * n + 2] =
            static_cast<scalar_t>(box_math::encode_size_target(size_terms[2 * n], v_size));
        out[4 * n + 3] =
            static_cast<scalar_t>(box_math::encode_size_target(size_terms[2 * n + 1], v_size));
      } else {
        const scalar_t* a = in + 4 * n;
        const scalar_t* p = priors + 4 * prior;
        acc_t result[4];
        box_math::decode_box_with_scales<acc_t>(
            a[0], a[1], size_terms[2 * n], size_terms[2 * n + 1], p[0], p[1], p[2], p[3],
            v_center, result);
        for (int c = 0; c < 4; ++c) {
          out[4 * n + c] = static_cast<scalar_t>(result[c]);
        }
      }
    }
  });
}

template <Direction direction>
at::Tensor box_coding_cpu(
    const at::Tensor& input, const at::Tensor& priors, c10::ArrayRef<double> variances) {
  constexpr const char* input_name = direction == Direction::kEncode ? "boxes" : "loc";
  check_box_coding_args(input, input_name, priors, variances);
  at::Tensor out = at::empty(input.sizes(), input.options());
  if (out.numel() == 0) {
    return out;
  }
  const at::Tensor in_c = input.contiguous();
  const at::Tensor priors_c = priors.contiguous();
  const int64_t rows = in_c.numel() / 4;
  const int64_t num_priors = priors_c.numel() / 4;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, in_c.scalar_type(), "box_coding_cpu", [&] {
        box_coding_cpu_impl<scalar_t, direction>(
            in_c.const_data_ptr<scalar_t>(), priors_c.const_data_ptr<scalar_t>(), rows,
            num_priors, variances[0], variances[1], out.mutable_data_ptr<scalar_t>());
      });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(ssd_ext, CPU, m) {
  m.impl("encode", &box_coding_cpu<Direction::kEncode>);
  m.impl("decode", &box_coding_cpu<Direction::kDecode>);
}

}  // namespace ssd_ext
