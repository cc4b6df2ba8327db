// Winograd F(m x m, r x r) tile transforms for float32 NCHW tensors, as aot custom operators (common/conv.py's
// _WinogradMatMul calls them on CPU; common/cpu_kernels.py compiles this file with im2col.cc).
//
// Why: the transforms are products with small constant matrices. Done as Im2Col (tap-major rows) and a
// [a*a, a*a] MatMul over every channel and tile, oneDNN runs them at a few GFLOPS (M = K = 36 is too small
// for its GEMM) and the tile matrix makes one more pass over memory. Here each row of tiles of one channel is
// gathered once and transformed separably (B^T d B, A^T M A: 2 a^3 multiply-adds per tile instead of a^4),
// vectorised over the tiles of the row, and written straight into the transform-domain matrix (or the image).
//
// Interface (MindSpore aot, CPU): params = inputs then output; shapes[i] their shapes.
//   WinogradInput(x [B, C, H, W], cfg [4] int64, bt [a, a]) -> V [a*a, C, B*T]
//   WinogradInputAdjoint(dV [a*a, C, B*T], cfg, bt [a, a], like [H, W] uint8) -> dx [B, C, H, W]
//   WinogradOutput(M [a*a, N, B*T], cfg, at [m, a], like [OH, OW] uint8) -> y [B, N, OH, OW]
//   WinogradOutputBias(M, cfg, at, like, bias [N]) -> y + bias (per channel: the convolution's bias, fused)
//   WinogradOutputAdjoint(dy [B, N, OH, OW], cfg, at [m, a]) -> dM [a*a, N, B*T]
// cfg = (m, r, ph, pw): output tile side, kernel side, symmetric zero padding. OH = H + 2 ph - r + 1 (OW alike);
// the tiles, TH = ceil(OH / m) by TW = ceil(OW / m) (T = TH * TW, row-major), start at (ty * m - ph,
// tx * m - pw) in the input and span a = m + r - 1 rows and columns; input outside the image reads as zero
// and outputs past (OH, OW) are dropped, so any map size takes whole tiles without padding copies. The samples'
// tiles follow each other (column b * T + t), so one matrix product serves the whole batch.
// Row k = i * a + j of V / M holds tap (i, j): V[k, c, t] = (B^T d_{c,t} B)[i, j], y's tile = A^T M_{n,t} A.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "parallel.h"

namespace {

using synthzoo::ParallelFor;

constexpr int64_t kMaxA = 6;

struct Tiles {
  int64_t m, r, a, ph, pw, H, W, OH, OW, TH, TW;

  Tiles(const int64_t *cfg, int64_t h, int64_t w)
      : m(cfg[0]), r(cfg[1]), a(cfg[0] + cfg[1] - 1), ph(cfg[2]), pw(cfg[3]), H(h), W(w),
        OH(h + 2 * cfg[2] - cfg[1] + 1), OW(w + 2 * cfg[3] - cfg[1] + 1), TH((OH + m - 1) / m),
        TW((OW + m - 1) / m) {}

  bool valid() const { return m >= 1 && r >= 1 && a <= kMaxA && OH >= 1 && OW >= 1; }

  // Tile rows per block: the transforms run over ~256 tiles at a time (vectors long enough on small maps,
  // buffers of a*a*256 floats that stay in L1/L2 on large ones).
  int64_t block_rows() const { return std::max(int64_t{1}, std::min(TH, 256 / TW)); }
};

// A small row-major matrix, or its transpose (a view with the steps swapped).
struct Matrix {
  const float *p;
  int64_t rows, cols, row_step, col_step;

  Matrix(const float *data, int64_t r, int64_t c) : p(data), rows(r), cols(c), row_step(c), col_step(1) {}
  Matrix T() const { return Matrix(p, cols, rows, col_step, row_step); }
  float operator()(int64_t i, int64_t u) const { return p[i * row_step + u * col_step]; }

 private:
  Matrix(const float *data, int64_t r, int64_t c, int64_t rs, int64_t cs)
      : p(data), rows(r), cols(c), row_step(rs), col_step(cs) {}
};

// out[i][.] = sum_u mat(i, u) * in[u][.] for rows of `len` floats (row strides in_stride / out_stride); zero
// entries skipped.
inline void Combine(const Matrix &mat, const float *in, int64_t in_stride, float *out, int64_t out_stride,
                    int64_t len) {
  for (int64_t i = 0; i < mat.rows; ++i) {
    float *o = out + i * out_stride;
    std::fill(o, o + len, 0.f);
    for (int64_t u = 0; u < mat.cols; ++u) {
      const float c = mat(i, u);
      if (c == 0.f) continue;
      const float *v = in + u * in_stride;
      for (int64_t t = 0; t < len; ++t) o[t] += c * v[t];
    }
  }
}

}  // namespace

extern "C" int WinogradInput(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                             void *stream, void *extra) {
  if (nparam != 4 || ndims[0] != 4 || shapes[1][0] != 4) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *bt = static_cast<const float *>(params[2]);
  float *v = static_cast<float *>(params[3]);
  const int64_t B = shapes[0][0], C = shapes[0][1];
  const Tiles g(static_cast<const int64_t *>(params[1]), shapes[0][2], shapes[0][3]);
  if (!g.valid() || shapes[2][0] != g.a) return 1;
  const int64_t a = g.a, T = g.TH * g.TW, BT = B * T, tw = g.TW, rows = g.block_rows(), most = rows * tw;
  const Matrix Bt(bt, a, a);
  ParallelFor(B * C, a * a * C * BT * 4, [&](int64_t first, int64_t stop) {
    // per block of tile rows (n tiles): d[u][v][n] the tiles; s[i][v][n] = (B^T d)[i][v]; V rows (s B)[i][j]
    std::vector<float> d(a * a * most), s(a * a * most);
    for (int64_t bc = first; bc < stop; ++bc) {
      const int64_t b = bc / C, c = bc % C;
      const float *plane = x + bc * g.H * g.W;
      for (int64_t ty0 = 0; ty0 < g.TH; ty0 += rows) {
        const int64_t n = std::min(rows, g.TH - ty0) * tw;
        for (int64_t u = 0; u < a; ++u) {
          for (int64_t q = 0; q < a; ++q) {
            float *row = d.data() + (u * a + q) * n;
            for (int64_t ty = ty0; ty * tw < ty0 * tw + n; ++ty, row += tw) {
              const int64_t ih = ty * g.m - g.ph + u;
              if (ih < 0 || ih >= g.H) {
                std::fill(row, row + tw, 0.f);
                continue;
              }
              const float *in = plane + ih * g.W;
              for (int64_t tx = 0; tx < tw; ++tx) {
                const int64_t iw = tx * g.m - g.pw + q;
                row[tx] = (iw >= 0 && iw < g.W) ? in[iw] : 0.f;
              }
            }
          }
        }
        Combine(Bt, d.data(), a * n, s.data(), a * n, a * n);  // rows u -> i, each [v][n]
        for (int64_t i = 0; i < a; ++i) {
          float *out = v + (i * a * C + c) * BT + b * T + ty0 * tw;  // row (i*a + j): C * BT further per j
          Combine(Bt, s.data() + i * a * n, n, out, C * BT, n);
        }
      }
    }
  });
  return 0;
}

extern "C" int WinogradInputAdjoint(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                    void *stream, void *extra) {
  if (nparam != 5 || ndims[0] != 3 || ndims[4] != 4 || shapes[1][0] != 4) return 1;
  const float *dv = static_cast<const float *>(params[0]);
  const float *bt = static_cast<const float *>(params[2]);
  float *dx = static_cast<float *>(params[4]);
  const int64_t B = shapes[4][0], C = shapes[4][1];
  const Tiles g(static_cast<const int64_t *>(params[1]), shapes[4][2], shapes[4][3]);
  const int64_t a = g.a, T = g.TH * g.TW, BT = B * T, tw = g.TW;
  if (!g.valid() || shapes[0][0] != a * a || shapes[0][1] != C || shapes[0][2] != BT) return 1;
  const int64_t rows = g.block_rows(), most = rows * tw;
  const Matrix Bt(bt, a, a);
  ParallelFor(B * C, a * a * C * BT * 4, [&](int64_t first, int64_t stop) {
    // per block of tile rows: s[i][v][n] = (dV B^T)[i][v]; d[u][v][n] = (B s)[u][v], added into the image
    std::vector<float> s(a * a * most), d(a * a * most);
    for (int64_t bc = first; bc < stop; ++bc) {
      const int64_t b = bc / C, c = bc % C;
      float *plane = dx + bc * g.H * g.W;
      std::memset(plane, 0, g.H * g.W * sizeof(float));
      for (int64_t ty0 = 0; ty0 < g.TH; ty0 += rows) {
        const int64_t n = std::min(rows, g.TH - ty0) * tw;
        for (int64_t i = 0; i < a; ++i) {
          const float *in = dv + (i * a * C + c) * BT + b * T + ty0 * tw;
          Combine(Bt.T(), in, C * BT, s.data() + i * a * n, n, n);
        }
        Combine(Bt.T(), s.data(), a * n, d.data(), a * n, a * n);
        for (int64_t u = 0; u < a; ++u) {
          for (int64_t q = 0; q < a; ++q) {
            const float *row = d.data() + (u * a + q) * n;
            for (int64_t ty = ty0; ty * tw < ty0 * tw + n; ++ty, row += tw) {
              const int64_t ih = ty * g.m - g.ph + u;
              if (ih < 0 || ih >= g.H) continue;
              float *out = plane + ih * g.W;
              for (int64_t tx = 0; tx < tw; ++tx) {
                const int64_t iw = tx * g.m - g.pw + q;
                if (iw >= 0 && iw < g.W) out[iw] += row[tx];
              }
            }
          }
        }
      }
    }
  });
  return 0;
}

namespace {

// y = A^T M A per tile (the output transform), plus bias[n] per channel when bias is not null.
int OutputTransform(const float *mm, const int64_t *mm_shape, const int64_t *cfg, const float *at, int64_t at_rows,
                    const float *bias, float *y, const int64_t *y_shape) {
  const int64_t B = y_shape[0], N = y_shape[1], OH = y_shape[2], OW = y_shape[3];
  // the input size that gives this output: H + 2 ph - r + 1 = OH
  const Tiles g(cfg, OH - 2 * cfg[2] + cfg[1] - 1, OW - 2 * cfg[3] + cfg[1] - 1);
  const int64_t a = g.a, m = g.m, T = g.TH * g.TW, BT = B * T, tw = g.TW;
  if (!g.valid() || mm_shape[0] != a * a || mm_shape[1] != N || mm_shape[2] != BT || at_rows != m) return 1;
  const int64_t rows = g.block_rows(), most = rows * tw;
  const Matrix At(at, m, a);
  ParallelFor(B * N, a * a * N * BT * 4, [&](int64_t first, int64_t stop) {
    // per block of tile rows (k tiles): s[p][j][k] = (A^T M)[p][j]; o[p][q][k] = (s A)[p][q]
    std::vector<float> s(m * a * most), o(m * m * most);
    for (int64_t bn = first; bn < stop; ++bn) {
      const int64_t b = bn / N, n = bn % N;
      const float shift = bias ? bias[n] : 0.f;
      float *plane = y + bn * OH * OW;
      for (int64_t ty0 = 0; ty0 < g.TH; ty0 += rows) {
        const int64_t k = std::min(rows, g.TH - ty0) * tw;
        for (int64_t j = 0; j < a; ++j) {  // rows i*a + j, i = 0..a-1, stride a * N * BT
          Combine(At, mm + (j * N + n) * BT + b * T + ty0 * tw, a * N * BT, s.data() + j * k, a * k, k);
        }
        for (int64_t p = 0; p < m; ++p) {
          Combine(At, s.data() + p * a * k, k, o.data() + p * m * k, k, k);
        }
        for (int64_t p = 0; p < m; ++p) {
          for (int64_t q = 0; q < m; ++q) {
            const float *row = o.data() + (p * m + q) * k;
            for (int64_t ty = ty0; ty * tw < ty0 * tw + k; ++ty, row += tw) {
              const int64_t oh = ty * m + p;
              if (oh >= OH) continue;
              float *out = plane + oh * OW;
              for (int64_t tx = 0; tx < tw; ++tx) {
                const int64_t ow = tx * m + q;
                if (ow < OW) out[ow] = row[tx] + shift;
              }
            }
          }
        }
      }
    }
  });
  return 0;
}

}  // namespace

extern "C" int WinogradOutput(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                              void *stream, void *extra) {
  if (nparam != 5 || ndims[0] != 3 || ndims[4] != 4 || shapes[1][0] != 4) return 1;
  return OutputTransform(static_cast<const float *>(params[0]), shapes[0], static_cast<const int64_t *>(params[1]),
                         static_cast<const float *>(params[2]), shapes[2][0], nullptr, static_cast<float *>(params[4]),
                         shapes[4]);
}

extern "C" int WinogradOutputBias(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                  void *stream, void *extra) {
  if (nparam != 6 || ndims[0] != 3 || ndims[5] != 4 || shapes[1][0] != 4 || shapes[4][0] != shapes[5][1]) return 1;
  return OutputTransform(static_cast<const float *>(params[0]), shapes[0], static_cast<const int64_t *>(params[1]),
                         static_cast<const float *>(params[2]), shapes[2][0], static_cast<const float *>(params[4]),
                         static_cast<float *>(params[5]), shapes[5]);
}

extern "C" int WinogradOutputAdjoint(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                     void *stream, void *extra) {
  if (nparam != 4 || ndims[0] != 4 || shapes[1][0] != 4) return 1;
  const float *dy = static_cast<const float *>(params[0]);
  const int64_t *cfg = static_cast<const int64_t *>(params[1]);
  const float *at = static_cast<const float *>(params[2]);
  float *dm = static_cast<float *>(params[3]);
  const int64_t B = shapes[0][0], N = shapes[0][1], OH = shapes[0][2], OW = shapes[0][3];
  const Tiles g(cfg, OH - 2 * cfg[2] + cfg[1] - 1, OW - 2 * cfg[3] + cfg[1] - 1);
  const int64_t a = g.a, m = g.m, T = g.TH * g.TW, BT = B * T, tw = g.TW;
  if (!g.valid() || shapes[2][0] != m) return 1;
  const int64_t rows = g.block_rows(), most = rows * tw;
  const Matrix At(at, m, a);
  ParallelFor(B * N, a * a * N * BT * 4, [&](int64_t first, int64_t stop) {
    // per block of tile rows: o[p][q][k] the output tiles (zero past the map); s[i][q][k] = (A o)[i][q];
    // dM rows (s A^T)[i][j]
    std::vector<float> o(m * m * most), s(a * m * most);
    for (int64_t bn = first; bn < stop; ++bn) {
      const int64_t b = bn / N, n = bn % N;
      const float *plane = dy + bn * OH * OW;
      for (int64_t ty0 = 0; ty0 < g.TH; ty0 += rows) {
        const int64_t k = std::min(rows, g.TH - ty0) * tw;
        for (int64_t p = 0; p < m; ++p) {
          for (int64_t q = 0; q < m; ++q) {
            float *row = o.data() + (p * m + q) * k;
            for (int64_t ty = ty0; ty * tw < ty0 * tw + k; ++ty, row += tw) {
              const int64_t oh = ty * m + p;
              if (oh >= OH) {
                std::fill(row, row + tw, 0.f);
                continue;
              }
              const float *in = plane + oh * OW;
              for (int64_t tx = 0; tx < tw; ++tx) {
                const int64_t ow = tx * m + q;
                row[tx] = ow < OW ? in[ow] : 0.f;
              }
            }
          }
        }
        Combine(At.T(), o.data(), m * k, s.data(), m * k, m * k);  // rows p -> i, each [q][k]
        for (int64_t i = 0; i < a; ++i) {
          Combine(At.T(), s.data() + i * m * k, k, dm + (i * a * N + n) * BT + b * T + ty0 * tw, N * BT, k);
        }
      }
    }
  });
  return 0;
}

