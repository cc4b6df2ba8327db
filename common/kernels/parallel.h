// ParallelFor, shared by the project's compiled CPU kernels (im2col.cc, winograd.cc): threads that end with the
// call (OpenMP's workers would spin after it, taking the cores from the MatMul that follows; see im2col.cc).
#ifndef SYNTHZOO_KERNELS_PARALLEL_H_
#define SYNTHZOO_KERNELS_PARALLEL_H_

#include <sched.h>

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

namespace synthzoo {

// body(first, stop) over [0, n) in contiguous chunks: the calling thread and up to (cores - 1) others, one
// per MiB of output at least, at most 8.
template <typename Body>
void ParallelFor(int64_t n, int64_t bytes, Body body) {
  cpu_set_t set;
  int64_t cores = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
  int64_t threads = std::min({cores, int64_t{8}, std::max(int64_t{1}, bytes >> 20), n});
  if (threads <= 1) {
    body(int64_t{0}, n);
    return;
  }
  std::vector<std::thread> workers;
  const int64_t chunk = (n + threads - 1) / threads;
  for (int64_t t = 1; t < threads; ++t) {
    const int64_t first = std::min(n, t * chunk), stop = std::min(n, (t + 1) * chunk);
    workers.emplace_back([=] { body(first, stop); });
  }
  body(int64_t{0}, std::min(n, chunk));
  for (auto &w : workers) w.join();
}

}  // namespace synthzoo

#endif  // SYNTHZOO_KERNELS_PARALLEL_H_
