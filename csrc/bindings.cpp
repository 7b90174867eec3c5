// The Python extension module ssd_ext._C. Loading it runs the TORCH_LIBRARY registrations of
// every op in this shared object; the module itself only reports how it was built.
#include <ATen/Config.h>
#include <ATen/Parallel.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "cpu/thread_trace.h"

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

// The backend at::parallel_for was compiled with in this extension (it is header-inline):
// "OpenMP" or "native" (torch's own pool), or "serial" when torch uses OpenMP but the
// extension was built without it (then every kernel runs on the calling thread).
std::string parallel_backend() {
#if AT_PARALLEL_OPENMP && defined(_OPENMP)
  return "OpenMP";
#elif AT_PARALLEL_NATIVE
  return "native";
#else
  return "serial";
#endif
}

pybind11::dict parallel_info() {
  pybind11::dict info;
  info["backend"] = parallel_backend();
#ifdef SSD_EXT_PARALLEL_BACKEND
  info["torch_backend"] = std::string(SSD_EXT_PARALLEL_BACKEND);
#endif
  info["num_threads"] = at::get_num_threads();
  return info;
}

void start_thread_trace() {
  ssd_ext::thread_trace::threads_seen.store(0);
  ssd_ext::thread_trace::enabled.store(true);
}

std::vector<int> stop_thread_trace() {
  ssd_ext::thread_trace::enabled.store(false);
  const uint64_t seen = ssd_ext::thread_trace::threads_seen.exchange(0);
  std::vector<int> threads;
  for (int t = 0; t < 64; ++t) {
    if ((seen >> t) & 1u) {
      threads.push_back(t);
    }
  }
  return threads;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "ssd_ext C++/CUDA kernels; the ops live in torch.ops.ssd_ext";
  m.def("version", [] { return std::string(SSD_EXT_VERSION); },
        "Version string the extension was compiled as.");
  m.def("cuda_compiled", &cuda_compiled, "Whether CUDA kernels were compiled in.");
  m.def("cuda_archs", [] { return std::string(SSD_EXT_CUDA_ARCHS); },
        "TORCH_CUDA_ARCH_LIST the CUDA kernels were compiled for ('' without CUDA).");
  m.def("parallel_info", &parallel_info,
        "How the CPU kernels run in parallel: {'backend': 'OpenMP'|'native'|'serial' (what "
        "at::parallel_for was compiled with here), 'torch_backend': torch's own (as read at "
        "build time), 'num_threads': at::get_num_threads() now}.");
  m.def("_start_thread_trace", &start_thread_trace,
        "Test only: start recording which intra-op threads run the CPU kernels' tasks.");
  m.def("_stop_thread_trace", &stop_thread_trace,
        "Test only: stop recording; the sorted at::get_thread_num() values seen since start.");
}
