// Im2Col and Col2Im for float32 NCHW tensors: MindSpore's ops.unfold / ops.fold, as an aot custom operator
// (common/cpu_kernels.py compiles this file; common/conv.py's Im2Col / Col2Im cells call it on CPU).
//
// Why: MindSpore 2.10's CPU Im2Col / Col2Im kernels move 2 GB/s on this project's 2-core machines, a third
// of an elementwise copy, and the matmul / Winograd convolution paths run one of each per layer and sample.
// Here each output row is a strided copy (a memcpy for stride 1), each Col2Im channel accumulates its own
// kernel taps (no two threads write one channel), and rows / channels are split over the process's cores by
// threads that end with the call (OpenMP's workers would spin after it, taking the cores from the MatMul
// that follows: a pix2pix step went from 739 to 916 ms with them, to 624 ms without the spinning).
//
// Interface (MindSpore aot, CPU): params = inputs then output; shapes[i] their shapes.
//   Im2Col(x [B, C, H, W] float32, cfg [9] int64) -> cols [B, C*kh*kw, OH*OW]
//   Col2Im(cols [B, C*kh*kw, OH*OW] float32, cfg [9] int64, like [H, W] uint8) -> y [B, C, H, W]
// cfg = (kh, kw, sh, sw, ph, pw, dh, dw, tap_major): kernel, stride, symmetric zero padding, dilation, row order.
// Row (c*kh + i)*kw + j of cols holds tap (i, j) of channel c at every output position, as ops.unfold orders
// it; with tap_major = 1, row (i*kw + j)*C + c does (the Winograd transforms' order: no regrouping copy).
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "parallel.h"

namespace {

using synthzoo::ParallelFor;

struct Geometry {
  int64_t kh, kw, sh, sw, ph, pw, dh, dw, H, W, OH, OW, C;
  bool tap_major;

  Geometry(const int64_t *cfg, int64_t c, int64_t h, int64_t w)
      : kh(cfg[0]), kw(cfg[1]), sh(cfg[2]), sw(cfg[3]), ph(cfg[4]), pw(cfg[5]), dh(cfg[6]), dw(cfg[7]), H(h), W(w),
        OH((h + 2 * cfg[4] - cfg[6] * (cfg[0] - 1) - 1) / cfg[2] + 1),
        OW((w + 2 * cfg[5] - cfg[7] * (cfg[1] - 1) - 1) / cfg[3] + 1), C(c), tap_major(cfg[8] != 0) {}

  // Row of cols holding tap t (= i*kw + j) of channel c.
  int64_t row(int64_t c, int64_t t) const { return tap_major ? t * C + c : c * kh * kw + t; }

  // Output columns [first, stop) whose input column ow*sw + offset lies inside [0, W) for kernel column j.
  void columns(int64_t j, int64_t *offset, int64_t *first, int64_t *stop) const {
    *offset = j * dw - pw;
    int64_t lo = *offset >= 0 ? 0 : (-*offset + sw - 1) / sw;
    int64_t hi = W - *offset <= 0 ? 0 : (W - *offset + sw - 1) / sw;
    hi = hi > OW ? OW : hi;
    *stop = hi;
    *first = lo > hi ? hi : lo;
  }
};

}  // namespace

extern "C" int Im2Col(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                      void *extra) {
  if (nparam != 3 || ndims[0] != 4 || shapes[1][0] != 9) return 1;
  const float *x = static_cast<const float *>(params[0]);
  float *cols = static_cast<float *>(params[2]);
  const int64_t B = shapes[0][0], C = shapes[0][1];
  const Geometry g(static_cast<const int64_t *>(params[1]), C, shapes[0][2], shapes[0][3]);
  const int64_t taps = g.kh * g.kw, rows = C * taps, L = g.OH * g.OW;
  ParallelFor(B * rows, B * rows * L * 4, [&](int64_t first_row, int64_t stop_row) {
    for (int64_t br = first_row; br < stop_row; ++br) {
      // in channel-major order whatever the rows' order: the taps of one channel read the same input rows
      const int64_t b = br / rows, c = (br % rows) / taps, t = br % taps;
      const int64_t i = t / g.kw, j = t % g.kw;
      const float *plane = x + (b * C + c) * g.H * g.W;
      float *out = cols + (b * rows + g.row(c, t)) * L;
      int64_t offset, first, stop;
      g.columns(j, &offset, &first, &stop);
      for (int64_t oh = 0; oh < g.OH; ++oh) {
        float *o = out + oh * g.OW;
        const int64_t ih = oh * g.sh - g.ph + i * g.dh;
        if (ih < 0 || ih >= g.H) {
          std::memset(o, 0, g.OW * sizeof(float));
          continue;
        }
        const float *row = plane + ih * g.W + offset;
        std::memset(o, 0, first * sizeof(float));
        if (g.sw == 1) {
          std::memcpy(o + first, row + first, (stop - first) * sizeof(float));
        } else {
          for (int64_t ow = first; ow < stop; ++ow) o[ow] = row[ow * g.sw];
        }
        std::memset(o + stop, 0, (g.OW - stop) * sizeof(float));
      }
    }
  });
  return 0;
}

extern "C" int Col2Im(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                      void *extra) {
  if (nparam != 4 || ndims[3] != 4 || shapes[1][0] != 9) return 1;
  const float *cols = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[3]);
  const int64_t B = shapes[3][0], C = shapes[3][1];
  const Geometry g(static_cast<const int64_t *>(params[1]), C, shapes[3][2], shapes[3][3]);
  const int64_t taps = g.kh * g.kw, rows = C * taps, L = g.OH * g.OW;
  ParallelFor(B * C, B * rows * L * 4, [&](int64_t first_plane, int64_t stop_plane) {
    for (int64_t bc = first_plane; bc < stop_plane; ++bc) {
      const int64_t b = bc / C, c = bc % C;
      float *plane = y + (b * C + c) * g.H * g.W;
      std::memset(plane, 0, g.H * g.W * sizeof(float));
      for (int64_t i = 0; i < g.kh; ++i) {
        for (int64_t j = 0; j < g.kw; ++j) {
          const float *in = cols + (b * rows + g.row(c, i * g.kw + j)) * L;
          int64_t offset, first, stop;
          g.columns(j, &offset, &first, &stop);
          for (int64_t oh = 0; oh < g.OH; ++oh) {
            const int64_t ih = oh * g.sh - g.ph + i * g.dh;
            if (ih < 0 || ih >= g.H) continue;
            float *row = plane + ih * g.W + offset;
            const float *v = in + oh * g.OW;
            if (g.sw == 1) {
              for (int64_t ow = first; ow < stop; ++ow) row[ow] += v[ow];
            } else {
              for (int64_t ow = first; ow < stop; ++ow) row[ow * g.sw] += v[ow];
            }
          }
        }
      }
    }
  });
  return 0;
}
