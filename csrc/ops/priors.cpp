// Schema and device-independent part of prior_boxes.
//
// prior_boxes has no tensor input, so the dispatcher cannot pick a kernel by device. The
// public op is therefore CompositeExplicitAutograd: it checks the arguments, computes the
// (w, h) shapes of one cell of every level on the host (a handful of numbers), allocates the
// output on the requested device and hands it to the out-variant _prior_boxes_out, whose
// CPU and CUDA kernels tile those shapes over every cell of every level.
//
// List arguments are flattened so that the schema needs only plain lists:
//   feature_map_sizes  [h0, w0, h1, w1, ...]               (2 per level)
//   image_size         [h, w]
//   min_sizes          one per level, in input pixels
//   max_sizes          one per level (0 = no sqrt(min * max) square on that level), or empty
//   aspect_ratios      every level's ratios, concatenated
//   aspect_ratio_counts  how many of aspect_ratios belong to each level
//   steps              [step_y0, step_x0, ...] in input pixels, or empty for img / fmap
#include <ATen/ops/empty.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <cmath>
#include <optional>
#include <vector>

#include "priors_checks.h"

namespace ssd_ext {
namespace {

// The reference's cell_shapes for every level, flattened as (w, h) pairs.
struct CellShapes {
  std::vector<double> shapes;
  std::vector<int64_t> counts;
};

CellShapes compute_cell_shapes(
    c10::ArrayRef<double> min_sizes, c10::ArrayRef<double> max_sizes,
    c10::ArrayRef<double> aspect_ratios, c10::IntArrayRef aspect_ratio_counts,
    double image_h, double image_w) {
  CellShapes result;
  size_t ratio_index = 0;
  for (size_t level = 0; level < min_sizes.size(); ++level) {
    const double min_size = min_sizes[level];
    const size_t before = result.shapes.size();
    result.shapes.push_back(min_size / image_w);
    result.shapes.push_back(min_size / image_h);
    if (!max_sizes.empty() && max_sizes[level] > 0.0) {
      const double side = std::sqrt(min_size * max_sizes[level]);
      result.shapes.push_back(side / image_w);
      result.shapes.push_back(side / image_h);
    }
    for (int64_t r = 0; r < aspect_ratio_counts[level]; ++r) {
      const double root = std::sqrt(aspect_ratios[ratio_index++]);
      result.shapes.push_back(min_size / image_w * root);
      result.shapes.push_back(min_size / image_h / root);
      result.shapes.push_back(min_size / image_w / root);
      result.shapes.push_back(min_size / image_h * root);
    }
    result.counts.push_back(static_cast<int64_t>((result.shapes.size() - before) / 2));
  }
  return result;
}

void check_prior_box_args(
    c10::IntArrayRef feature_map_sizes, c10::ArrayRef<double> image_size,
    c10::ArrayRef<double> min_sizes, c10::ArrayRef<double> max_sizes,
    c10::ArrayRef<double> aspect_ratios, c10::IntArrayRef aspect_ratio_counts,
    c10::ArrayRef<double> steps) {
  const size_t num_levels = min_sizes.size();
  TORCH_CHECK_VALUE(
      feature_map_sizes.size() == 2 * num_levels,
      "feature_map_sizes must hold an (h, w) pair for each of the ", num_levels,
      " levels of min_sizes, got ", feature_map_sizes.size(), " values");
  TORCH_CHECK_VALUE(
      max_sizes.empty() || max_sizes.size() == num_levels, "max_sizes must be empty or have ",
      num_levels, " values (one per level), got ", max_sizes.size());
  TORCH_CHECK_VALUE(
      aspect_ratio_counts.size() == num_levels, "aspect_ratio_counts must have ", num_levels,
      " values (one per level), got ", aspect_ratio_counts.size());
  TORCH_CHECK_VALUE(
      steps.empty() || steps.size() == 2 * num_levels,
      "steps must be empty or hold a (y, x) pair per level (", 2 * num_levels,
      " values), got ", steps.size());
  int64_t ratio_total = 0;
  for (size_t level = 0; level < num_levels; ++level) {
    TORCH_CHECK_VALUE(
        is_positive_finite(min_sizes[level]), "min_sizes[", level,
        "] must be positive and finite, got ", min_sizes[level]);
    if (!max_sizes.empty()) {
      const double max_size = max_sizes[level];
      TORCH_CHECK_VALUE(
          max_size == 0.0 || (std::isfinite(max_size) && max_size >= min_sizes[level]),
          "max_sizes[", level, "] must be 0 (none) or at least min_sizes[", level, "] = ",
          min_sizes[level], ", got ", max_size);
    }
    // Bounding each count by the ratios still unclaimed keeps the running sum within
    // aspect_ratios.size(): counts such as 4 x 2^62 cannot wrap around to a matching total.
    const int64_t unclaimed = static_cast<int64_t>(aspect_ratios.size()) - ratio_total;
    TORCH_CHECK_VALUE(
        aspect_ratio_counts[level] >= 0 && aspect_ratio_counts[level] <= unclaimed,
        "aspect_ratio_counts[", level, "] must be between 0 and ", unclaimed,
        " (the aspect_ratios not taken by earlier levels, of ", aspect_ratios.size(),
        "), got ", aspect_ratio_counts[level]);
    ratio_total += aspect_ratio_counts[level];
  }
  TORCH_CHECK_VALUE(
      static_cast<int64_t>(aspect_ratios.size()) == ratio_total, "aspect_ratios must hold ",
      ratio_total, " values (the sum of aspect_ratio_counts), got ", aspect_ratios.size());
  for (size_t k = 0; k < aspect_ratios.size(); ++k) {
    TORCH_CHECK_VALUE(
        is_positive_finite(aspect_ratios[k]), "aspect_ratios[", k,
        "] must be positive and finite, got ", aspect_ratios[k]);
  }
  TORCH_CHECK_VALUE(
      image_size.size() == 2 && is_positive_finite(image_size[0]) &&
          is_positive_finite(image_size[1]),
      "image_size must be a positive finite (h, w) pair, got ", image_size);
}

using PriorBoxesOutFn = void(
    at::Tensor&, c10::IntArrayRef, c10::ArrayRef<double>, c10::ArrayRef<double>,
    c10::IntArrayRef, c10::ArrayRef<double>, double, bool);

at::Tensor prior_boxes(
    c10::IntArrayRef feature_map_sizes, c10::ArrayRef<double> image_size,
    c10::ArrayRef<double> min_sizes, c10::ArrayRef<double> max_sizes,
    c10::ArrayRef<double> aspect_ratios, c10::IntArrayRef aspect_ratio_counts,
    c10::ArrayRef<double> steps, double offset, bool clip,
    std::optional<at::ScalarType> dtype, std::optional<at::Device> device) {
  check_prior_box_args(
      feature_map_sizes, image_size, min_sizes, max_sizes, aspect_ratios, aspect_ratio_counts,
      steps);
  const at::ScalarType out_dtype = dtype.value_or(at::kFloat);
  TORCH_CHECK_TYPE(
      is_supported_float(out_dtype),
      "dtype must be float16, bfloat16, float32 or float64, got ", out_dtype);
  const double image_h = image_size[0];
  const double image_w = image_size[1];

  std::vector<double> level_steps(steps.begin(), steps.end());
  if (level_steps.empty()) {
    for (size_t level = 0; level < min_sizes.size(); ++level) {
      level_steps.push_back(image_h / static_cast<double>(feature_map_sizes[2 * level]));
      level_steps.push_back(image_w / static_cast<double>(feature_map_sizes[2 * level + 1]));
    }
  }
  const CellShapes cells = compute_cell_shapes(
      min_sizes, max_sizes, aspect_ratios, aspect_ratio_counts, image_h, image_w);
  // Checks feature map sizes and steps too, so nothing is allocated for bad arguments.
  const std::vector<PriorLevel> levels = prior_levels(
      feature_map_sizes, level_steps, cells.shapes, cells.counts, image_size, offset);

  const at::Device out_device = device.value_or(at::Device(at::kCPU));
  check_allocation("prior_boxes: the priors [P, 4]", {prior_count(levels), 4}, out_dtype,
                   out_device);
  at::Tensor out =
      at::empty({prior_count(levels), 4}, at::TensorOptions().dtype(out_dtype).device(out_device));
  static const auto out_op = c10::Dispatcher::singleton()
                                 .findSchemaOrThrow("ssd_ext::_prior_boxes_out", "")
                                 .typed<PriorBoxesOutFn>();
  out_op.call(out, feature_map_sizes, level_steps, cells.shapes, cells.counts, image_size,
              offset, clip);
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ssd_ext, m) {
  m.def(
      "prior_boxes(int[] feature_map_sizes, float[] image_size, float[] min_sizes, "
      "float[] max_sizes, float[] aspect_ratios, int[] aspect_ratio_counts, float[] steps, "
      "float offset=0.5, bool clip=True, *, ScalarType? dtype=None, Device? device=None) "
      "-> Tensor");
  // Writes the [P, 4] priors of levels given by their (h, w) feature map sizes, (y, x)
  // steps in pixels and normalised per-cell (w, h) shapes into `out`.
  m.def(
      "_prior_boxes_out(Tensor(a!) out, int[] feature_map_sizes, float[] steps, "
      "float[] cell_shapes, int[] shapes_per_level, float[] image_size, float offset, "
      "bool clip) -> ()");
}

TORCH_LIBRARY_IMPL(ssd_ext, CompositeExplicitAutograd, m) {
  m.impl("prior_boxes", &prior_boxes);
}

}  // namespace ssd_ext
