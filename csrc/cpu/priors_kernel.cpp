#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../ops/priors_checks.h"
#include "thread_trace.h"

namespace ssd_ext {
namespace {

inline double clip_unit(double v) {
  return v < 0.0 ? 0.0 : (v > 1.0 ? 1.0 : v);
}

// Priors are computed in double (as the reference does) and rounded once to the output type.
template <typename scalar_t>
void prior_boxes_cpu_impl(
    const std::vector<PriorLevel>& levels, const double* shapes, double image_h, double image_w,
    double offset, bool clip, scalar_t* out) {
  for (const PriorLevel& level : levels) {
    const int64_t cells = level.rows * level.cols;
    const double* level_shapes = shapes + 2 * level.shape_begin;
    scalar_t* level_out = out + 4 * level.prior_begin;
    const int64_t grain = std::max<int64_t>(1, 4096 / level.shape_count);
    at::parallel_for(0, cells, grain, [&](int64_t begin, int64_t end) {
      thread_trace::note_task();
      for (int64_t cell = begin; cell < end; ++cell) {
        const int64_t i = cell / level.cols;
        const int64_t j = cell % level.cols;
        double cx = (static_cast<double>(j) + offset) * level.step_x / image_w;
        double cy = (static_cast<double>(i) + offset) * level.step_y / image_h;
        if (clip) {
          cx = clip_unit(cx);
          cy = clip_unit(cy);
        }
        scalar_t* row = level_out + 4 * cell * level.shape_count;
        for (int64_t k = 0; k < level.shape_count; ++k) {
          double w = level_shapes[2 * k];
          double h = level_shapes[2 * k + 1];
          if (clip) {
            w = clip_unit(w);
            h = clip_unit(h);
          }
          row[4 * k] = static_cast<scalar_t>(cx);
          row[4 * k + 1] = static_cast<scalar_t>(cy);
          row[4 * k + 2] = static_cast<scalar_t>(w);
          row[4 * k + 3] = static_cast<scalar_t>(h);
        }
      }
    });
  }
}

void prior_boxes_out_cpu(
    at::Tensor& out, c10::IntArrayRef feature_map_sizes, c10::ArrayRef<double> steps,
    c10::ArrayRef<double> cell_shapes, c10::IntArrayRef shapes_per_level,
    c10::ArrayRef<double> image_size, double offset, bool clip) {
  const std::vector<PriorLevel> levels = prior_levels(
      feature_map_sizes, steps, cell_shapes, shapes_per_level, image_size, offset);
  check_prior_out(out, prior_count(levels));
  if (out.numel() == 0) {
    return;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, out.scalar_type(), "prior_boxes_cpu", [&] {
        prior_boxes_cpu_impl<scalar_t>(
            levels, cell_shapes.data(), image_size[0], image_size[1], offset, clip,
            out.mutable_data_ptr<scalar_t>());
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(ssd_ext, CPU, m) {
  m.impl("_prior_boxes_out", &prior_boxes_out_cpu);
}

}  // namespace ssd_ext
