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

  // A box twice its prior's size, centred 0.05 right of it: encode gives
  // ((0.05) / (0.1 * 0.1), 0, log(2) / 0.2, log(2) / 0.2); decode gives the box back.
  const at::Tensor priors = torch::tensor({0.5f, 0.5f, 0.1f, 0.2f}).reshape({1, 4});
  const at::Tensor boxes = torch::tensor({0.45f, 0.3f, 0.65f, 0.7f}).reshape({1, 1, 4});
  const at::Tensor loc = ssd_ext::encode(boxes, priors);
  ok &= near(loc[0][0][0].item<double>(), 5.0, "encode centre x");
  ok &= near(loc[0][0][1].item<double>(), 0.0, "encode centre y");
  ok &= near(loc[0][0][2].item<double>(), std::log(2.0) / 0.2, "encode log width");
  const at::Tensor decoded = ssd_ext::decode(loc, priors);
  ok &= near(decoded[0][0][2].item<double>(), 0.65, "decode(encode(box)) x2");
  ok &= near(decoded[0][0][3].item<double>(), 0.7, "decode(encode(box)) y2");

  return ok ? 0 : 1;
}
