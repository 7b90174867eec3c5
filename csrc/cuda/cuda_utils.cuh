// Small launch helpers shared by the CUDA kernels.
#pragma once

#include <cstdint>

namespace ssd_ext {

inline unsigned int ceil_div(int64_t value, int64_t divisor) {
  return static_cast<unsigned int>((value + divisor - 1) / divisor);
}

// Blocks for a 1-D grid-stride loop over `count` items: enough to fill the device, capped
// so that the grid dimension stays valid for any count.
inline unsigned int blocks_for(int64_t count, int threads_per_block) {
  const int64_t wanted = (count + threads_per_block - 1) / threads_per_block;
  const int64_t cap = 65535LL * 8;
  return static_cast<unsigned int>(wanted < 1 ? 1 : (wanted > cap ? cap : wanted));
}

}  // namespace ssd_ext
