// One training-mode power iteration of spectral normalisation and the gradient of 1 / sigma, for float32 weights,
// as aot custom operators (common/cpu_kernels.py compiles this file; common/spectral_norm.py's SpectralNorm calls it
// on CPU in training mode).
//
// Why: as MindSpore operators one training-mode spectral norm is about 16 kernels forward (three MatMuls, the two
// normalisations' Mul/ReduceSum/Sqrt/Maximum/Div, ...) and 6 backward. OSMIS's 64x64 step evaluates 160 of them,
// half its ~6,900 kernels, and the runtime's bookkeeping per kernel sits on the step's critical path. Here the
// iteration is one kernel and its gradient another: two passes over W forward, one backward; weights of a MiB
// or more split over the cores (parallel.h), smaller ones on one thread (MindSpore runs another kernel of the step
// on the other core meanwhile).
//
// Interface (MindSpore aot, CPU): params = inputs then outputs; shapes[i] their shapes. W [R, ...] is read as the
// [R, K] matrix of its rows (K = the product of the other dimensions).
//   SpectralNormPower(W float32, u [R], v [K], eps [1]) -> (u' [R], v' [K], s [1]):
//     v' = W^T u / max(|W^T u|, eps), u' = W v' / max(|W v'|, eps), s = 1 / (u'^T W v')   (torch's update)
//   SpectralNormPowerGrad(ds [1], u' [R], v' [K], s [1], W) -> dW [R, ...] = -ds * s^2 * u' v'^T
// The gradient treats u' and v' as constants, as PyTorch does. Sums are taken in double.
//
// The layer's output in the form conv(x, W) * s + b (common.conv.ScaledBiasAdd, for SpectralNorm), one kernel
// each way instead of a Mul and a BiasAdd forward and about eight kernels backward (the Mul's two products and
// reduction, the bias gradient's staged sums and their reshapes):
//   ScaleBias(y [B, C, ...] float32, s [1], b [C]) -> z = y * s + b[c]
//   ScaleBiasGrad(dz, y, s, b) -> (dy = dz * s, ds [1] = sum(dz * y), db [C] = sum of dz over all but C)
// The sums go per (sample, channel) plane in double, then over the planes in order: the same bits on any thread
// count.
#include <cmath>
#include <cstdint>
#include <vector>

#include "parallel.h"

namespace {

int64_t Elements(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int d = 0; d < ndim; ++d) n *= shape[d];
  return n;
}

// sum of a[i] * b[i] in double, in eight independent partial sums (vectorised without reassociating the loop)
double Dot(const float *a, const float *b, int64_t n) {
  double partial[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) partial[k] += static_cast<double>(a[i + k]) * b[i + k];
  double sum = 0.0;
  for (; i < n; ++i) sum += static_cast<double>(a[i]) * b[i];
  for (int k = 0; k < 8; ++k) sum += partial[k];
  return sum;
}

// sum of a[i] in double, in eight partial sums as Dot
double Sum(const float *a, int64_t n) {
  double partial[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) partial[k] += a[i + k];
  double sum = 0.0;
  for (; i < n; ++i) sum += a[i];
  for (int k = 0; k < 8; ++k) sum += partial[k];
  return sum;
}

}  // namespace

extern "C" int SpectralNormPower(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                 void *stream, void *extra) {
  if (nparam != 7 || ndims[0] < 2) return 1;
  const int64_t rows = shapes[0][0], cols = Elements(ndims[0], shapes[0]) / rows;
  if (Elements(ndims[1], shapes[1]) != rows || Elements(ndims[2], shapes[2]) != cols ||
      Elements(ndims[3], shapes[3]) != 1)
    return 1;
  const float *w = static_cast<const float *>(params[0]);
  const float *u = static_cast<const float *>(params[1]);
  const double eps = *static_cast<const float *>(params[3]);
  float *u_out = static_cast<float *>(params[4]);
  float *v_out = static_cast<float *>(params[5]);
  float *s_out = static_cast<float *>(params[6]);
  const int64_t bytes = rows * cols * static_cast<int64_t>(sizeof(float));

  std::vector<double> t(cols, 0.0);  // W^T u: each thread a range of columns, row by row
  synthzoo::ParallelFor(cols, bytes, [&](int64_t first, int64_t stop) {
    for (int64_t r = 0; r < rows; ++r) {
      const double ur = u[r];
      const float *row = w + r * cols;
      for (int64_t c = first; c < stop; ++c) t[c] += ur * row[c];
    }
  });
  double norm = 0.0;
  for (int64_t c = 0; c < cols; ++c) norm += t[c] * t[c];
  const double v_scale = 1.0 / std::fmax(std::sqrt(norm), eps);
  for (int64_t c = 0; c < cols; ++c) v_out[c] = static_cast<float>(t[c] * v_scale);

  std::vector<double> wv(rows);  // W v'
  synthzoo::ParallelFor(rows, bytes, [&](int64_t first, int64_t stop) {
    for (int64_t r = first; r < stop; ++r) wv[r] = Dot(w + r * cols, v_out, cols);
  });
  norm = 0.0;
  for (int64_t r = 0; r < rows; ++r) norm += wv[r] * wv[r];
  const double u_scale = 1.0 / std::fmax(std::sqrt(norm), eps);
  double sigma = 0.0;  // u'^T (W v'), with u' as stored
  for (int64_t r = 0; r < rows; ++r) {
    u_out[r] = static_cast<float>(wv[r] * u_scale);
    sigma += static_cast<double>(u_out[r]) * wv[r];
  }
  s_out[0] = static_cast<float>(1.0 / sigma);
  return 0;
}

extern "C" int SpectralNormPowerGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                     void *stream, void *extra) {
  if (nparam != 6 || ndims[4] < 2 || ndims[5] != ndims[4]) return 1;
  const int64_t rows = shapes[4][0], cols = Elements(ndims[4], shapes[4]) / rows;
  if (Elements(ndims[0], shapes[0]) != 1 || Elements(ndims[1], shapes[1]) != rows ||
      Elements(ndims[2], shapes[2]) != cols || Elements(ndims[3], shapes[3]) != 1)
    return 1;
  const float ds = *static_cast<const float *>(params[0]);
  const float *u = static_cast<const float *>(params[1]);
  const float *v = static_cast<const float *>(params[2]);
  const float s = *static_cast<const float *>(params[3]);
  float *dw = static_cast<float *>(params[5]);
  const float scale = -ds * s * s;
  synthzoo::ParallelFor(rows, rows * cols * static_cast<int64_t>(sizeof(float)), [&](int64_t first, int64_t stop) {
    for (int64_t r = first; r < stop; ++r) {
      const float ur = scale * u[r];
      float *row = dw + r * cols;
      for (int64_t c = 0; c < cols; ++c) row[c] = ur * v[c];
    }
  });
  return 0;
}

extern "C" int ScaleBias(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                         void *extra) {
  if (nparam != 4 || ndims[0] < 2 || Elements(ndims[1], shapes[1]) != 1 ||
      Elements(ndims[2], shapes[2]) != shapes[0][1])
    return 1;
  const int64_t channels = shapes[0][1], planes = shapes[0][0] * channels;
  const int64_t plane = Elements(ndims[0], shapes[0]) / planes;
  const float *y = static_cast<const float *>(params[0]);
  const float s = *static_cast<const float *>(params[1]);
  const float *b = static_cast<const float *>(params[2]);
  float *z = static_cast<float *>(params[3]);
  synthzoo::ParallelFor(planes, planes * plane * static_cast<int64_t>(sizeof(float)), [&](int64_t first, int64_t stop) {
    for (int64_t p = first; p < stop; ++p) {
      const float bias = b[p % channels];
      const float *in = y + p * plane;
      float *out = z + p * plane;
      for (int64_t i = 0; i < plane; ++i) out[i] = in[i] * s + bias;
    }
  });
  return 0;
}

extern "C" int ScaleBiasGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                             void *stream, void *extra) {
  if (nparam != 7 || ndims[0] < 2 || Elements(ndims[0], shapes[0]) != Elements(ndims[1], shapes[1]) ||
      Elements(ndims[2], shapes[2]) != 1 || Elements(ndims[3], shapes[3]) != shapes[0][1])
    return 1;
  const int64_t batch = shapes[0][0], channels = shapes[0][1], planes = batch * channels;
  const int64_t plane = Elements(ndims[0], shapes[0]) / planes;
  const float *dz = static_cast<const float *>(params[0]);
  const float *y = static_cast<const float *>(params[1]);
  const float s = *static_cast<const float *>(params[2]);
  float *dy = static_cast<float *>(params[4]);
  float *ds = static_cast<float *>(params[5]);
  float *db = static_cast<float *>(params[6]);
  std::vector<double> scale_sums(planes), bias_sums(planes);
  synthzoo::ParallelFor(planes, planes * plane * static_cast<int64_t>(sizeof(float)), [&](int64_t first, int64_t stop) {
    for (int64_t p = first; p < stop; ++p) {
      const float *g = dz + p * plane;
      float *out = dy + p * plane;
      for (int64_t i = 0; i < plane; ++i) out[i] = g[i] * s;
      scale_sums[p] = Dot(g, y + p * plane, plane);
      bias_sums[p] = Sum(g, plane);
    }
  });
  double scale_sum = 0.0;
  for (int64_t p = 0; p < planes; ++p) scale_sum += scale_sums[p];
  ds[0] = static_cast<float>(scale_sum);
  for (int64_t c = 0; c < channels; ++c) {
    double total = 0.0;
    for (int64_t n = 0; n < batch; ++n) total += bias_sums[n * channels + c];
    db[c] = static_cast<float>(total);
  }
  return 0;
}
