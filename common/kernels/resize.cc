// Nearest-neighbour upsampling by integer factors and its gradient for float32 NCHW tensors, as aot custom
// operators (common/cpu_kernels.py compiles this file; common/layers.py's NearestUpsample calls it on CPU).
//
// Why: as MindSpore operators the upsampling is a reshape + BroadcastTo, and its gradient a ReduceSum over the
// broadcast axes; on OSMIS's 192x320 generator their CPU kernels took 60-120 ms per call on outputs of 40-80 MB,
// several times a single pass over that memory. Here each direction is one pass, on one thread (as
// activations.cc: MindSpore runs another kernel of the step on the other core meanwhile).
//
// Interface (MindSpore aot, CPU): params = inputs then output; shapes[i] their shapes.
//   NearestUpsample(x [B, C, H, W] float32, factors [2] int64 (fh, fw)) -> y [B, C, H*fh, W*fw],
//     y[b, c, i, j] = x[b, c, i / fh, j / fw]
//   NearestUpsampleGrad(dy [B, C, H*fh, W*fw] float32, factors) -> dx [B, C, H, W], the sum of each fh x fw block
#include <cstdint>
#include <cstring>

extern "C" int NearestUpsample(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                               void *stream, void *extra) {
  if (nparam != 3 || ndims[0] != 4 || ndims[1] != 1 || shapes[1][0] != 2) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const int64_t *factors = static_cast<const int64_t *>(params[1]);
  float *y = static_cast<float *>(params[2]);
  const int64_t fh = factors[0], fw = factors[1], rows = shapes[0][0] * shapes[0][1] * shapes[0][2], W = shapes[0][3];
  const int64_t out_w = W * fw;
  for (int64_t r = 0; r < rows; ++r) {
    const float *src = x + r * W;
    float *dst = y + r * fh * out_w;
    for (int64_t j = 0; j < W; ++j)
      for (int64_t k = 0; k < fw; ++k) dst[j * fw + k] = src[j];
    for (int64_t i = 1; i < fh; ++i) std::memcpy(dst + i * out_w, dst, out_w * sizeof(float));
  }
  return 0;
}

extern "C" int NearestUpsampleGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                   void *stream, void *extra) {
  if (nparam != 3 || ndims[0] != 4 || ndims[1] != 1 || shapes[1][0] != 2 || ndims[2] != 4) return 1;
  const float *dy = static_cast<const float *>(params[0]);
  const int64_t *factors = static_cast<const int64_t *>(params[1]);
  float *dx = static_cast<float *>(params[2]);
  const int64_t fh = factors[0], fw = factors[1], rows = shapes[2][0] * shapes[2][1] * shapes[2][2], W = shapes[2][3];
  const int64_t out_w = W * fw;
  for (int64_t r = 0; r < rows; ++r) {
    float *dst = dx + r * W;
    const float *src = dy + r * fh * out_w;
    for (int64_t j = 0; j < W; ++j) {
      float sum = 0.0f;
      for (int64_t i = 0; i < fh; ++i)
        for (int64_t k = 0; k < fw; ++k) sum += src[i * out_w + j * fw + k];
      dst[j] = sum;
    }
  }
  return 0;
}
