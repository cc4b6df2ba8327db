// LeakyReLU and its gradient for float32 tensors of any shape, as aot custom operators (common/cpu_kernels.py
// compiles this file; common/layers.py's LeakyReLU calls it on CPU).
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
#include <cstdint>

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
