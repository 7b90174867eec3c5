// Schemas of encode and decode: SSD regression targets of xyxy boxes against cxcywh priors,
// and their inverse. `priors` has the shape of the trailing dimensions of `boxes` / `loc`
// (e.g. [P, 4] against [B, P, 4]); variances are (centre, size).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ssd_ext, m) {
  m.def("encode(Tensor boxes, Tensor priors, float[] variances) -> Tensor");
  m.def("decode(Tensor loc, Tensor priors, float[] variances) -> Tensor");
}
