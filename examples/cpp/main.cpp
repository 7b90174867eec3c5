// A LibTorch program calling ssd_ext ops; run by ctest. Exits non-zero on a wrong answer.
#include <ssd_ext.h>

#include <torch/torch.h>

#include <cmath>
#include <iostream>

namespace {

bool near(double actual, double expected, const char* what) {
  const bool ok = std::abs(actual - expected) < 1e-5;
  std::cout << (ok ? "ok   " : "FAIL ") << what << ": " << actual << " (expected " << expected
            << ")\n";
  return ok;
}

}  // namespace

int main() {
  bool ok = true;

  const at::Tensor boxes1 = torch::tensor({0.0f, 0.0f, 2.0f, 2.0f}).reshape({1, 4});
  const at::Tensor boxes2 =
      torch::tensor({1.0f, 1.0f, 3.0f, 3.0f, 0.0f, 0.0f, 2.0f, 2.0f}).reshape({2, 4});
  const at::Tensor iou = ssd_ext::box_iou(boxes1, boxes2);
  ok &= near(iou[0][0].item<double>(), 1.0 / 7.0, "box_iou partial overlap");
  ok &= near(iou[0][1].item<double>(), 1.0, "box_iou identical boxes");

  return ok ? 0 : 1;
}
