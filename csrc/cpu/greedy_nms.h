// Greedy NMS on the CPU, shared by nms / batched_nms (nms_kernel.cpp) and detect
// (detect_kernel.cpp).
//
// Greedy NMS runs over structure-of-arrays copies of the candidates (coordinates and areas in
// the math type) in visiting order, with branch-free sweeps and periodic compaction of the
// boxes still alive (see greedy_nms): the same decisions as the textbook loop over suppression
// flags, with vectorised IoUs and less memory traffic. The rules it implements are stated in
// python/ssd_reference/nms.py and docs/ARCHITECTURE.md "NMS and detection post-processing".
#pragma once

#include <cstdint>
#include <vector>

#include "../box_math.h"

namespace ssd_ext {
namespace cpu {

// The IoU sweep of greedy NMS, written so that GCC vectorises it: the same values as
// box_math::iou_with_areas bit for bit (NaN-propagating min/max, products rounded on their
// own, zero union -> 0), with bitwise instead of short-circuit logic and the division run on
// every lane with a safe divisor. GCC only if-converts the comparisons without
// -ftrapping-math; that flag only concerns floating-point exception flags, never values.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
#endif
template <typename T>
inline T sweep_min(T a, T b) {
  return ((a < b) | (a != a)) ? a : b;
}

template <typename T>
inline T sweep_max(T a, T b) {
  return ((a > b) | (a != a)) ? a : b;
}

// box_math::clamp_min_zero, defined here too: GCC does not inline functions compiled with
// other optimisation options into this region, and a call would stop the vectorisation.
template <typename T>
inline T sweep_clamp_min_zero(T v) {
  return v > T(0) ? v : T(0);
}

// ORs into dead[j] (j in [first, last)) whether box j's IoU with box a is > threshold;
// returns how many of them are still alive.
template <typename acc_t>
int64_t suppression_sweep(
    const acc_t* __restrict x1, const acc_t* __restrict y1, const acc_t* __restrict x2,
    const acc_t* __restrict y2, const acc_t* __restrict area, int32_t* __restrict dead,
    int64_t first, int64_t last, acc_t ax1, acc_t ay1, acc_t ax2, acc_t ay2, acc_t area_a,
    acc_t iou_threshold) {
  int32_t live = 0;
  for (int64_t j = first; j < last; ++j) {
    const acc_t inter_w = sweep_clamp_min_zero(sweep_min(ax2, x2[j]) - sweep_max(ax1, x1[j]));
    const acc_t inter_h = sweep_clamp_min_zero(sweep_min(ay2, y2[j]) - sweep_max(ay1, y1[j]));
    const acc_t inter = inter_w * inter_h;
    const acc_t uni = (area_a + area[j]) - inter;
    const bool positive = uni > acc_t(0);
    const acc_t ratio = inter / (positive ? uni : acc_t(1));
    const acc_t overlap = positive ? ratio : acc_t(0);
    const int32_t now_dead = dead[j] | (overlap > iou_threshold ? 1 : 0);
    dead[j] = now_dead;
    live += 1 - now_dead;
  }
  return live;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

// Boxes still alive in a greedy NMS, in visiting order, with an id per box (whatever the
// caller needs back: a rank in a sorted order, a candidate slot).
template <typename acc_t>
struct AliveBoxes {
  std::vector<acc_t> x1, y1, x2, y2, area;
  std::vector<int64_t> id;

  void reserve(size_t count) {
    for (auto* v : {&x1, &y1, &x2, &y2, &area}) {
      v->reserve(count);
    }
    id.reserve(count);
  }

  void push(acc_t bx1, acc_t by1, acc_t bx2, acc_t by2, int64_t box_id) {
    x1.push_back(bx1);
    y1.push_back(by1);
    x2.push_back(bx2);
    y2.push_back(by2);
    area.push_back(box_math::box_area(bx1, by1, bx2, by2));
    id.push_back(box_id);
  }
};

// Greedy NMS over `alive` (consumed): appends the ids of the kept boxes, in visiting order, to
// `kept`, at most `max_keep` of them. A box is dropped when its IoU with a kept one is > thr.
//
// Each kept box sweeps the boxes after it with a branch-free, vectorised loop
// (suppression_sweep) that ORs suppression flags.
// When more than a quarter of the swept boxes are dead, the live ones are compacted to the
// front so that later sweeps skip them.
template <typename acc_t>
void greedy_nms(AliveBoxes<acc_t>& alive, acc_t iou_threshold, int64_t max_keep,
                std::vector<int64_t>& kept) {
  acc_t* x1 = alive.x1.data();
  acc_t* y1 = alive.y1.data();
  acc_t* x2 = alive.x2.data();
  acc_t* y2 = alive.y2.data();
  acc_t* area = alive.area.data();
  int64_t* id = alive.id.data();
  int64_t count = static_cast<int64_t>(alive.id.size());
  std::vector<int32_t> dead_flags(count, 0);
  int32_t* dead = dead_flags.data();
  int64_t head = 0;
  int64_t kept_count = 0;
  while (kept_count < max_keep) {
    while (head < count && dead[head]) {
      ++head;
    }
    if (head == count) {
      break;
    }
    kept.push_back(id[head]);
    ++kept_count;
    const acc_t ax1 = x1[head], ay1 = y1[head], ax2 = x2[head], ay2 = y2[head];
    const acc_t area_a = area[head];
    const int64_t live = suppression_sweep(x1, y1, x2, y2, area, dead, head + 1, count, ax1, ay1,
                                           ax2, ay2, area_a, iou_threshold);
    const int64_t swept = count - head - 1;
    if (4 * live < 3 * swept) {
      int64_t write = 0;
      for (int64_t j = head + 1; j < count; ++j) {
        if (!dead[j]) {
          x1[write] = x1[j];
          y1[write] = y1[j];
          x2[write] = x2[j];
          y2[write] = y2[j];
          area[write] = area[j];
          id[write] = id[j];
          dead[write] = 0;
          ++write;
        }
      }
      count = write;
      head = 0;
    } else {
      ++head;
    }
  }
}

}  // namespace cpu
}  // namespace ssd_ext
