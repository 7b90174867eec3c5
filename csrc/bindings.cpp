// The Python extension module ssd_ext._C. Loading it runs the TORCH_LIBRARY registrations of
// every op in this shared object; the module itself only reports how it was built.
#include <pybind11/pybind11.h>

#ifndef SSD_EXT_VERSION
#define SSD_EXT_VERSION "0.0.0+unknown"
#endif
#ifndef SSD_EXT_CUDA_ARCHS
#define SSD_EXT_CUDA_ARCHS ""
#endif

namespace {

bool cuda_compiled() {
#ifdef SSD_EXT_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "ssd_ext C++/CUDA kernels; the ops live in torch.ops.ssd_ext";
  m.def("version", [] { return std::string(SSD_EXT_VERSION); },
        "Version string the extension was compiled as.");
  m.def("cuda_compiled", &cuda_compiled, "Whether CUDA kernels were compiled in.");
  m.def("cuda_archs", [] { return std::string(SSD_EXT_CUDA_ARCHS); },
        "TORCH_CUDA_ARCH_LIST the CUDA kernels were compiled for ('' without CUDA).");
}
