// Test-only record of which intra-op threads ran a kernel's parallel tasks, so that a test
// can prove the work is split (tests/ops/test_threads.py, through ssd_ext._C). Off by
// default: then each task pays one relaxed atomic load.
#pragma once

#include <ATen/Parallel.h>

#include <atomic>
#include <cstdint>

namespace ssd_ext {
namespace thread_trace {

inline std::atomic<bool> enabled{false};
inline std::atomic<uint64_t> threads_seen{0};

// Called at the start of a parallel_for task: marks at::get_thread_num() (0..63) as seen.
inline void note_task() {
  if (enabled.load(std::memory_order_relaxed)) {
    threads_seen.fetch_or(uint64_t{1} << (at::get_thread_num() & 63), std::memory_order_relaxed);
  }
}

}  // namespace thread_trace
}  // namespace ssd_ext
