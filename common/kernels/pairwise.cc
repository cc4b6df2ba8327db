// Mean absolute differences between the samples of a batch, for every pair, and their gradient, for float32
// tensors, as aot custom operators (common/cpu_kernels.py compiles this file; common/layers.py's PairwiseMeanAbs
// calls it on CPU).
//
// Why: as MindSpore operators each of OSMIS's diversity terms is two Gathers of the pairs' samples, a Sub, an Abs
// and a mean, and its gradient a RealDiv, a Sign, a Mul and two UnsortedSegmentSums; on the 192x320 generator's
// seven feature maps those took about 0.35 s of a training step, each a pass over ten pairs' copies. Here each
// direction is one pass over the samples, block by block (all pairs of a block while it is in cache). One thread
// (as activations.cc: MindSpore runs another kernel of the step on the other core meanwhile).
//
// Interface (MindSpore aot, CPU): params = inputs then output; shapes[i] their shapes.
//   PairwiseMeanAbs(x [B, ...] float32) -> d [B(B-1)/2]: d_p = mean |x_k - x_m| over the pairs k < m in
//     lexicographic order (itertools.combinations); block sums in float, the total in double
//   PairwiseMeanAbsGrad(dd [P] float32, x [B, ...] float32) -> dx [B, ...]:
//     dx_k = sum_{m != k} sign(x_k - x_m) dd_{pair(k, m)} / n, with sign(0) = 0 (PyTorch's |.| gradient)
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr int64_t kBlock = 512;

int64_t per_sample(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 1; i < ndim; ++i) n *= shape[i];
  return n;
}

}  // namespace

extern "C" int PairwiseMeanAbs(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                               void *stream, void *extra) {
  if (nparam != 2 || ndims[0] < 1 || ndims[1] != 1) return 1;
  const int64_t B = shapes[0][0], n = per_sample(ndims[0], shapes[0]), P = B * (B - 1) / 2;
  if (shapes[1][0] != P) return 1;
  const float *x = static_cast<const float *>(params[0]);
  float *d = static_cast<float *>(params[1]);
  std::vector<double> total(P, 0.0);
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t len = n - start < kBlock ? n - start : kBlock;
    int64_t p = 0;
    for (int64_t k = 0; k < B; ++k)
      for (int64_t m = k + 1; m < B; ++m, ++p) {
        const float *a = x + k * n + start, *b = x + m * n + start;
        float sum = 0.0f;
        for (int64_t i = 0; i < len; ++i) sum += std::fabs(a[i] - b[i]);
        total[p] += sum;
      }
  }
  for (int64_t p = 0; p < P; ++p) d[p] = static_cast<float>(total[p] / static_cast<double>(n));
  return 0;
}

extern "C" int PairwiseMeanAbsGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                   void *stream, void *extra) {
  if (nparam != 3 || ndims[0] != 1 || ndims[1] < 1 || ndims[2] != ndims[1]) return 1;
  const int64_t B = shapes[1][0], n = per_sample(ndims[1], shapes[1]), P = B * (B - 1) / 2;
  if (shapes[0][0] != P) return 1;
  const float *dd = static_cast<const float *>(params[0]);
  const float *x = static_cast<const float *>(params[1]);
  float *dx = static_cast<float *>(params[2]);
  std::vector<float> scale(B * B, 0.0f);  // scale[k * B + m] = scale[m * B + k]: the pair's dd / n
  int64_t p = 0;
  for (int64_t k = 0; k < B; ++k)
    for (int64_t m = k + 1; m < B; ++m, ++p)
      scale[k * B + m] = scale[m * B + k] = static_cast<float>(dd[p] / static_cast<double>(n));
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t len = n - start < kBlock ? n - start : kBlock;
    for (int64_t k = 0; k < B; ++k) {
      const float *a = x + k * n + start;
      float *g = dx + k * n + start;
      for (int64_t i = 0; i < len; ++i) g[i] = 0.0f;
      for (int64_t m = 0; m < B; ++m) {
        if (m == k) continue;
        const float *b = x + m * n + start;
        const float s = scale[k * B + m];
        for (int64_t i = 0; i < len; ++i) {
          const float diff = a[i] - b[i];
          g[i] += diff > 0.0f ? s : (diff < 0.0f ? -s : 0.0f);
        }
      }
    }
  }
  return 0;
}
