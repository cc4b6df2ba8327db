// LeakyReLU and its gradient, and the gradient of a softmax over the last axis, for float32 tensors of any shape, as
// aot custom operators (common/cpu_kernels.py compiles this file; common/layers.py's LeakyReLU and Softmax call them
// on CPU).
//
// Why: MindSpore 2.10 has no fast LeakyReLU on CPU: its LeakyReLU kernel's gradient is a Maximum/Select chain,
// and relu(x) - slope * relu(-x) (common.layers.LeakyReLU without this library) runs five elementwise kernels
// forward and four backward, each a pass over memory. Here each direction is one pass.
//
// Interface (MindSpore aot, CPU): params = inputs then output; shapes[i] their shapes.
//   LeakyRelu(x float32, slope [1] float32) -> y = x > 0 ? x : slope * x
//   LeakyReluGrad(dy float32, y float32, slope [1] float32) -> dx = y > 0 ? dy : slope * dy
// The gradient reads the output y (y > 0 exactly where x > 0 for 0 <= slope < 1): the layer after keeps y for its
// own backward, so the activation keeps nothing more. At x = 0 the gradient is slope * dy, as PyTorch's.
// One thread: a pass over memory gains little from the second core, which MindSpore gives to another kernel of the
// step meanwhile (pix2pix's 1M-value LeakyReLU took 2.5 ms split over two threads, 0.4-0.7 ms on one).
//
// The softmax's gradient, as MindSpore operators (common.layers.Softmax without this library), is a Mul, a
// MatMul for the row sums, a BroadcastTo of them, a Sub and a Mul: four tensors of the softmax's size, and
// MindSpore's CPU BroadcastTo takes a fifth from the C heap while it runs. CoCosNet's attention map is
// [1, 16384, 4096] (256 MiB each). Here it is one pass per row and no tensor beside the gradient:
//   SoftmaxGrad(dy [..., M] float32, y [..., M] float32) -> dx = y * (dy - sum_j dy_j y_j)   (per row; the sum in
//   double), rows split over the cores (parallel.h).
#include <cstdint>

#include "parallel.h"

namespace {

int64_t Elements(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int d = 0; d < ndim; ++d) n *= shape[d];
  return n;
}

}  // namespace

extern "C" int LeakyRelu(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                         void *extra) {
  if (nparam != 3 || Elements(ndims[1], shapes[1]) != 1) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float slope = *static_cast<const float *>(params[1]);
  float *y = static_cast<float *>(params[2]);
  const int64_t n = Elements(ndims[0], shapes[0]);
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : slope * x[i];
  return 0;
}

extern "C" int LeakyReluGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                             void *stream, void *extra) {
  if (nparam != 4 || Elements(ndims[0], shapes[0]) != Elements(ndims[1], shapes[1]) ||
      Elements(ndims[2], shapes[2]) != 1)
    return 1;
  const float *dy = static_cast<const float *>(params[0]);
  const float *y = static_cast<const float *>(params[1]);
  const float slope = *static_cast<const float *>(params[2]);
  float *dx = static_cast<float *>(params[3]);
  const int64_t n = Elements(ndims[0], shapes[0]);
  for (int64_t i = 0; i < n; ++i) dx[i] = y[i] > 0.0f ? dy[i] : slope * dy[i];
  return 0;
}

extern "C" int SoftmaxGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                           void *extra) {
  if (nparam != 3 || ndims[0] < 1 || ndims[0] != ndims[1]) return 1;
  for (int d = 0; d < ndims[0]; ++d)
    if (shapes[0][d] != shapes[1][d]) return 1;
  const float *dy = static_cast<const float *>(params[0]);
  const float *y = static_cast<const float *>(params[1]);
  float *dx = static_cast<float *>(params[2]);
  const int64_t m = shapes[0][ndims[0] - 1], n = Elements(ndims[0], shapes[0]);
  if (m == 0) return 0;
  synthzoo::ParallelFor(n / m, n * 4, [=](int64_t first, int64_t stop) {
    for (int64_t r = first; r < stop; ++r) {
      const float *g = dy + r * m, *p = y + r * m;
      double lanes[8] = {0.0};  // eight partial sums: the loop vectorises (one double sum would not reorder)
      int64_t j = 0;
      for (; j + 8 <= m; j += 8)
        for (int k = 0; k < 8; ++k) lanes[k] += static_cast<double>(g[j + k]) * p[j + k];
      for (; j < m; ++j) lanes[0] += static_cast<double>(g[j]) * p[j];
      double sum = 0.0;
      for (double lane : lanes) sum += lane;
      const float s = static_cast<float>(sum);
      float *out = dx + r * m;
      for (j = 0; j < m; ++j) out[j] = p[j] * (g[j] - s);
    }
  });
  return 0;
}
