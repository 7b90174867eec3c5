// Argument checks and host-side preparation shared by prior_boxes and its CPU / CUDA kernels.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "common_checks.h"

namespace ssd_ext {

// Everything _prior_boxes_out needs about one level, in the units of the reference:
// centres are (j + offset) * step_x / image_w and (i + offset) * step_y / image_h.
struct PriorLevel {
  int64_t prior_begin;  // index of the level's first prior in the output
  int64_t rows;         // feature map height
  int64_t cols;         // feature map width
  int64_t shape_begin;  // index of the level's first (w, h) cell shape
  int64_t shape_count;  // priors per cell
  double step_y;
  double step_x;
};

inline bool is_positive_finite(double v) {
  return v > 0.0 && std::isfinite(v);
}

// Checks the arguments of _prior_boxes_out and splits them into levels. Shapes are
// normalised (w, h) pairs, `shapes_per_level` of them per level, flattened.
inline std::vector<PriorLevel> prior_levels(
    c10::IntArrayRef feature_map_sizes, c10::ArrayRef<double> steps,
    c10::ArrayRef<double> cell_shapes, c10::IntArrayRef shapes_per_level,
    c10::ArrayRef<double> image_size, double offset) {
  const int64_t num_levels = static_cast<int64_t>(shapes_per_level.size());
  TORCH_CHECK_VALUE(
      static_cast<int64_t>(feature_map_sizes.size()) == 2 * num_levels,
      "feature_map_sizes must hold an (h, w) pair per level (", 2 * num_levels,
      " values for ", num_levels, " levels), got ", feature_map_sizes.size(), " values");
  TORCH_CHECK_VALUE(
      static_cast<int64_t>(steps.size()) == 2 * num_levels,
      "steps must hold a (y, x) pair per level (", 2 * num_levels, " values), got ",
      steps.size(), " values");
  TORCH_CHECK_VALUE(
      image_size.size() == 2 && is_positive_finite(image_size[0]) &&
          is_positive_finite(image_size[1]),
      "image_size must be a positive finite (h, w) pair, got ", image_size);
  TORCH_CHECK_VALUE(
      std::isfinite(offset) && offset >= 0.0 && offset <= 1.0,
      "offset must be in [0, 1], got ", offset);
  for (double v : cell_shapes) {
    TORCH_CHECK_VALUE(
        is_positive_finite(v), "cell_shapes must be positive and finite, got ", cell_shapes);
  }
  std::vector<PriorLevel> levels;
  levels.reserve(num_levels);
  int64_t prior_begin = 0;
  int64_t shape_begin = 0;
  for (int64_t level = 0; level < num_levels; ++level) {
    const int64_t rows = feature_map_sizes[2 * level];
    const int64_t cols = feature_map_sizes[2 * level + 1];
    TORCH_CHECK_VALUE(
        rows > 0 && cols > 0, "feature_map_sizes[", level, "] must be positive, got (", rows,
        ", ", cols, ")");
    const double step_y = steps[2 * level];
    const double step_x = steps[2 * level + 1];
    TORCH_CHECK_VALUE(
        is_positive_finite(step_y) && is_positive_finite(step_x), "steps[", level,
        "] must be positive and finite, got (", step_y, ", ", step_x, ")");
    const int64_t count = shapes_per_level[level];
    // Bounded by the shapes still unclaimed, so shape_begin can never wrap around.
    const int64_t unclaimed = static_cast<int64_t>(cell_shapes.size()) / 2 - shape_begin;
    TORCH_CHECK_VALUE(
        count > 0 && count <= unclaimed, "shapes_per_level[", level, "] must be between 1 and ",
        unclaimed, " (the (w, h) pairs of cell_shapes not taken by earlier levels), got ", count);
    // 2^40 priors (16 TiB in float32) is past any device; the bound keeps every index the
    // kernels form (4 * prior + coordinate) far inside int64.
    TORCH_CHECK_VALUE(
        rows <= (int64_t{1} << 40) / cols / count, "feature_map_sizes[", level, "] = (", rows,
        ", ", cols, ") with ", count, " priors per cell gives ",
        static_cast<double>(rows) * static_cast<double>(cols) * static_cast<double>(count),
        " priors; at most 2^40 are supported (16 TiB as float32)");
    levels.push_back({prior_begin, rows, cols, shape_begin, count, step_y, step_x});
    prior_begin += rows * cols * count;
    shape_begin += count;
    TORCH_CHECK_VALUE(
        prior_begin <= (int64_t{1} << 40), "feature_map_sizes: the levels up to ", level,
        " give ", prior_begin, " priors, more than 2^40");
  }
  TORCH_CHECK_VALUE(
      static_cast<int64_t>(cell_shapes.size()) == 2 * shape_begin,
      "cell_shapes must hold ", 2 * shape_begin, " values (a (w, h) pair per shape), got ",
      cell_shapes.size());
  return levels;
}

inline int64_t prior_count(const std::vector<PriorLevel>& levels) {
  if (levels.empty()) {
    return 0;
  }
  const PriorLevel& last = levels.back();
  return last.prior_begin + last.rows * last.cols * last.shape_count;
}

inline void check_prior_out(const at::Tensor& out, int64_t num_priors) {
  TORCH_CHECK_VALUE(
      out.dim() == 2 && out.size(0) == num_priors && out.size(1) == 4,
      "out must have shape [", num_priors, ", 4], got ", out.sizes());
  check_floating(out, "out");
  TORCH_CHECK_VALUE(out.is_contiguous(), "out must be contiguous");
}

}  // namespace ssd_ext
