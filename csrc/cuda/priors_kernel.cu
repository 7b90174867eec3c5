#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../ops/priors_checks.h"
#include "cuda_utils.cuh"

namespace ssd_ext {
namespace {

constexpr int kThreads = 256;
// Per level in the level table: prior_begin, rows, cols, shape_begin, shape_count.
constexpr int kLevelFields = 5;
// Tables up to this size travel as a kernel argument (2.2 KB of the 4 KB parameter space):
// every preset has at most 7 levels and 6 shapes per level.
constexpr int kMaxInlineLevels = 12;
constexpr int kMaxInlineShapes = 96;

// The level table and the reals: each level's (step_y, step_x), then every (w, h) cell shape.
struct PriorTables {
  int64_t levels[kMaxInlineLevels * kLevelFields];
  double reals[2 * kMaxInlineLevels + 2 * kMaxInlineShapes];
};

__device__ __forceinline__ double clip_unit(double v) {
  return fmin(fmax(v, 0.0), 1.0);
}

// One thread per prior: find its level (a short scan over the few levels), then its cell and
// shape. The tables are read from the kernel argument (__grid_constant__: addressed in place,
// not copied per thread), or, for configurations too large for it, from `level_table` and
// `reals` in device memory. Math in double, like the reference and the CPU kernel.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) prior_boxes_kernel(
    const __grid_constant__ PriorTables inline_tables, const int64_t* __restrict__ level_table,
    const double* __restrict__ reals, int num_levels, double image_h, double image_w,
    double offset, bool clip, int64_t num_priors, scalar_t* __restrict__ out) {
  const int64_t* table = level_table != nullptr ? level_table : inline_tables.levels;
  const double* real_values = reals != nullptr ? reals : inline_tables.reals;
  const double* shapes = real_values + 2 * num_levels;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < num_priors;
       p += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    int level = 0;
    while (level + 1 < num_levels && table[kLevelFields * (level + 1)] <= p) {
      ++level;
    }
    const int64_t* info = table + kLevelFields * level;
    const int64_t local = p - info[0];
    const int64_t cols = info[2];
    const int64_t count = info[4];
    const int64_t cell = local / count;
    const int64_t k = local - cell * count;
    const int64_t i = cell / cols;
    const int64_t j = cell - i * cols;
    double cx = (static_cast<double>(j) + offset) * real_values[2 * level + 1] / image_w;
    double cy = (static_cast<double>(i) + offset) * real_values[2 * level] / image_h;
    double w = shapes[2 * (info[3] + k)];
    double h = shapes[2 * (info[3] + k) + 1];
    if (clip) {
      cx = clip_unit(cx);
      cy = clip_unit(cy);
      w = clip_unit(w);
      h = clip_unit(h);
    }
    scalar_t* row = out + 4 * p;
    row[0] = static_cast<scalar_t>(cx);
    row[1] = static_cast<scalar_t>(cy);
    row[2] = static_cast<scalar_t>(w);
    row[3] = static_cast<scalar_t>(h);
  }
}

void fill_tables(const std::vector<PriorLevel>& levels, c10::ArrayRef<double> cell_shapes,
                 int64_t* table, double* real_values) {
  const int num_levels = static_cast<int>(levels.size());
  for (int level = 0; level < num_levels; ++level) {
    const PriorLevel& info = levels[level];
    table[kLevelFields * level] = info.prior_begin;
    table[kLevelFields * level + 1] = info.rows;
    table[kLevelFields * level + 2] = info.cols;
    table[kLevelFields * level + 3] = info.shape_begin;
    table[kLevelFields * level + 4] = info.shape_count;
    real_values[2 * level] = info.step_y;
    real_values[2 * level + 1] = info.step_x;
  }
  std::copy(cell_shapes.begin(), cell_shapes.end(), real_values + 2 * num_levels);
}

void prior_boxes_out_cuda(
    at::Tensor& out, c10::IntArrayRef feature_map_sizes, c10::ArrayRef<double> steps,
    c10::ArrayRef<double> cell_shapes, c10::IntArrayRef shapes_per_level,
    c10::ArrayRef<double> image_size, double offset, bool clip) {
  const std::vector<PriorLevel> levels = prior_levels(
      feature_map_sizes, steps, cell_shapes, shapes_per_level, image_size, offset);
  const int64_t num_priors = prior_count(levels);
  check_prior_out(out, num_priors);
  if (num_priors == 0) {
    return;
  }
  const c10::cuda::CUDAGuard device_guard(out.device());
  const int num_levels = static_cast<int>(levels.size());
  const int64_t num_reals = 2 * num_levels + static_cast<int64_t>(cell_shapes.size());

  // The tables are a few dozen numbers. They go to the kernel as its argument: no copy from
  // pageable memory (a stream sync, and illegal under CUDA-graph capture). A configuration
  // too large for that stages them in pinned memory and copies them asynchronously on the
  // stream (the caching host allocator keeps the buffer alive until the copy is done).
  PriorTables inline_tables{};
  at::Tensor level_table_device;
  at::Tensor reals_device;
  const bool fits_inline =
      num_levels <= kMaxInlineLevels && num_reals <= 2 * kMaxInlineLevels + 2 * kMaxInlineShapes;
  if (fits_inline) {
    fill_tables(levels, cell_shapes, inline_tables.levels, inline_tables.reals);
  } else {
    const auto pinned = at::TensorOptions().pinned_memory(true);
    at::Tensor level_table = at::empty({num_levels * kLevelFields}, pinned.dtype(at::kLong));
    at::Tensor reals = at::empty({num_reals}, pinned.dtype(at::kDouble));
    fill_tables(levels, cell_shapes, level_table.mutable_data_ptr<int64_t>(),
                reals.mutable_data_ptr<double>());
    level_table_device = level_table.to(out.device(), /*non_blocking=*/true);
    reals_device = reals.to(out.device(), /*non_blocking=*/true);
  }

  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const unsigned int blocks = blocks_for(num_priors, kThreads);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, out.scalar_type(), "prior_boxes_cuda", [&] {
        prior_boxes_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
            inline_tables,
            fits_inline ? nullptr : level_table_device.const_data_ptr<int64_t>(),
            fits_inline ? nullptr : reals_device.const_data_ptr<double>(), num_levels,
            image_size[0], image_size[1], offset, clip, num_priors,
            out.mutable_data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(ssd_ext, CUDA, m) {
  m.impl("_prior_boxes_out", &prior_boxes_out_cuda);
}

}  // namespace ssd_ext
