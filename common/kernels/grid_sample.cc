// Affine warps by bilinear sampling with reflection padding, and their adjoint, for float32 NCHW tensors, as aot
// custom operators (common/cpu_kernels.py compiles this file; common/layers.py's AffineResample calls it on CPU).
//
// Why: as MindSpore operators a warp is AffineGrid + GridSampler2D, and its gradient GridSampler2DGrad; on OSMIS's
// 192x320 training step (augmentation of every image scale and the mask, three passes) their CPU kernels took
// 27 ms per forward call and 78 ms per gradient call on [5, 3, 192, 320], several times a pass over that memory.
// Here each direction is one pass, on one thread (as activations.cc: MindSpore runs another kernel of the step on
// the other core meanwhile).
//
// The map is torch.nn.functional.affine_grid + grid_sample(mode="bilinear", padding_mode="reflection",
// align_corners=False): output pixel (i, j) has normalised coordinates x = (2j + 1) / W - 1, y = (2i + 1) / H - 1,
// samples the input at theta @ (x, y, 1), unnormalised as ((g + 1) * size - 1) / 2, reflected at -0.5 and
// size - 0.5, clipped to [0, size - 1]. Coordinates and weights are computed in double (an identity theta returns
// the input to float rounding).
//
// Interface (MindSpore aot, CPU): params = inputs then output; shapes[i] their shapes.
//   AffineGridSample(x [B, C, H, W] float32, theta [B, 2, 3] float32) -> y [B, C, H, W]
//   AffineGridSampleGrad(dy [B, C, H, W] float32, theta [B, 2, 3] float32) -> dx [B, C, H, W], the adjoint: each
//     output's gradient spread over its four source pixels with the same weights (theta gets no gradient).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

// Where output pixels read: for each pixel, the top-left source index (row-major) and the bilinear weights of
// its four neighbours; dx / dy are 1 or 0 (the neighbour to the right / below, 0 at the last column / row, whose
// weight is then 0).
struct Taps {
  std::vector<int64_t> index;
  std::vector<int32_t> dx, dy;
  std::vector<float> w00, w01, w10, w11;
};

double reflect(double v, int64_t size) {
  const double lo = -0.5, span = static_cast<double>(size);
  double d = std::fabs(v - lo);
  const double extra = std::fmod(d, span);
  const int64_t flips = static_cast<int64_t>(std::floor(d / span));
  v = (flips % 2 == 0) ? extra + lo : span - extra + lo;
  return std::fmin(std::fmax(v, 0.0), static_cast<double>(size - 1));
}

void sample_taps(const float *theta, int64_t H, int64_t W, Taps *t) {
  const int64_t n = H * W;
  t->index.resize(n);
  t->dx.resize(n);
  t->dy.resize(n);
  t->w00.resize(n);
  t->w01.resize(n);
  t->w10.resize(n);
  t->w11.resize(n);
  const double a = theta[0], b = theta[1], c = theta[2], d = theta[3], e = theta[4], f = theta[5];
  for (int64_t i = 0; i < H; ++i) {
    const double y = (2.0 * i + 1.0) / H - 1.0;
    for (int64_t j = 0; j < W; ++j) {
      const double x = (2.0 * j + 1.0) / W - 1.0;
      const double ix = reflect(((a * x + b * y + c + 1.0) * W - 1.0) / 2.0, W);
      const double iy = reflect(((d * x + e * y + f + 1.0) * H - 1.0) / 2.0, H);
      const int64_t x0 = static_cast<int64_t>(std::floor(ix)), y0 = static_cast<int64_t>(std::floor(iy));
      const double fx = ix - x0, fy = iy - y0;
      const int64_t p = i * W + j;
      t->index[p] = y0 * W + x0;
      t->dx[p] = x0 + 1 < W ? 1 : 0;
      t->dy[p] = y0 + 1 < H ? static_cast<int32_t>(W) : 0;
      t->w00[p] = static_cast<float>((1.0 - fx) * (1.0 - fy));
      t->w01[p] = static_cast<float>(fx * (1.0 - fy));
      t->w10[p] = static_cast<float>((1.0 - fx) * fy);
      t->w11[p] = static_cast<float>(fx * fy);
    }
  }
}

bool valid(int nparam, int *ndims, int64_t **shapes) {
  return nparam == 3 && ndims[0] == 4 && ndims[1] == 3 && ndims[2] == 4 && shapes[1][0] == shapes[0][0] &&
         shapes[1][1] == 2 && shapes[1][2] == 3;
}

// params = (input [B, C, H, W], theta [B, 2, 3], output [B, C, H, W]): plane(taps, input plane, output plane, H * W)
// for every sample and channel, the taps computed once per sample.
template <typename Plane>
int each_plane(int nparam, void **params, int *ndims, int64_t **shapes, Plane plane) {
  if (!valid(nparam, ndims, shapes)) return 1;
  const float *in = static_cast<const float *>(params[0]);
  const float *theta = static_cast<const float *>(params[1]);
  float *out = static_cast<float *>(params[2]);
  const int64_t B = shapes[0][0], C = shapes[0][1], H = shapes[0][2], W = shapes[0][3], n = H * W;
  Taps t;
  for (int64_t b = 0; b < B; ++b) {
    sample_taps(theta + 6 * b, H, W, &t);
    for (int64_t ch = 0; ch < C; ++ch) plane(t, in + (b * C + ch) * n, out + (b * C + ch) * n, n);
  }
  return 0;
}

}  // namespace

extern "C" int AffineGridSample(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                void *stream, void *extra) {
  return each_plane(nparam, params, ndims, shapes, [](const Taps &t, const float *src, float *dst, int64_t n) {
    for (int64_t p = 0; p < n; ++p) {
      const float *s = src + t.index[p];
      const int64_t r = t.dy[p], q = t.dx[p];
      dst[p] = s[0] * t.w00[p] + s[q] * t.w01[p] + s[r] * t.w10[p] + s[r + q] * t.w11[p];
    }
  });
}

extern "C" int AffineGridSampleGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                    void *stream, void *extra) {
  return each_plane(nparam, params, ndims, shapes, [](const Taps &t, const float *g, float *dst, int64_t n) {
    std::memset(dst, 0, sizeof(float) * n);
    for (int64_t p = 0; p < n; ++p) {
      float *s = dst + t.index[p];
      const int64_t r = t.dy[p], q = t.dx[p];
      s[0] += g[p] * t.w00[p];
      s[q] += g[p] * t.w01[p];
      s[r] += g[p] * t.w10[p];
      s[r + q] += g[p] * t.w11[p];
    }
  });
}
