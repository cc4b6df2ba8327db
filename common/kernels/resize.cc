// Nearest-neighbour upsampling and average pooling by integer factors, and their gradients, for float32 NCHW tensors,
// as aot custom operators (common/cpu_kernels.py compiles this file; common/layers.py's NearestUpsample and AvgPool2d
// call it on CPU).
//
// Why: as MindSpore operators the upsampling is a reshape + BroadcastTo, and its gradient a ReduceSum over the
// broadcast axes; on OSMIS's 192x320 generator their CPU kernels took 60-120 ms per call on outputs of 40-80 MB,
// several times a single pass over that memory; MindSpore's AvgPool and its gradient took 5 and 4 ms per call on
// its 192x320 discriminator's maps. Here each direction is one pass, on one thread (as activations.cc: MindSpore
// runs another kernel of the step on the other core meanwhile). The two operations are each other's adjoint up to
// the scale 1 / (fh * fw): both rest on SumBlocks and SpreadBlocks.
//
// Interface (MindSpore aot, CPU): params = inputs then output; shapes[i] their shapes.
//   NearestUpsample(x [B, C, H, W] float32, factors [2] int64 (fh, fw)) -> y [B, C, H*fh, W*fw],
//     y[b, c, i, j] = x[b, c, i / fh, j / fw]
//   NearestUpsampleGrad(dy [B, C, H*fh, W*fw] float32, factors) -> dx [B, C, H, W], the sum of each fh x fw block
//   AvgPool(x [B, C, H, W] float32, factors) -> y [B, C, H / fh, W / fw], the mean of each fh x fw block (rows and
//     columns past the last whole block left out, as nn.AvgPool2d(f, f))
//   AvgPoolGrad(dy [B, C, H / fh, W / fw] float32, factors, like [H, W] uint8: gives the size) -> dx [B, C, H, W],
//     dy / (fh * fw) spread over each block, 0 past the last whole block
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

// x [planes, H, W] -> y [planes, H / fh, W / fw]: scale * the sum of each fh x fw block (rows and columns past the
// last whole block left out). Each output row first sums its fh input rows (contiguous, vectorised), then each run of
// fw neighbours.
void SumBlocks(const float *x, float *y, int64_t planes, int64_t H, int64_t W, int64_t fh, int64_t fw, float scale) {
  const int64_t oh = H / fh, ow = W / fw, span = ow * fw;
  std::vector<float> rows(span);
  float *acc = rows.data();
  for (int64_t p = 0; p < planes; ++p)
    for (int64_t i = 0; i < oh; ++i) {
      const float *src = x + (p * H + i * fh) * W;
      float *dst = y + (p * oh + i) * ow;
      std::memcpy(acc, src, span * sizeof(float));
      for (int64_t a = 1; a < fh; ++a)
        for (int64_t j = 0; j < span; ++j) acc[j] += src[a * W + j];
      if (fw == 2) {
        for (int64_t j = 0; j < ow; ++j) dst[j] = (acc[2 * j] + acc[2 * j + 1]) * scale;
        continue;
      }
      for (int64_t j = 0; j < ow; ++j) {
        float sum = acc[j * fw];
        for (int64_t b = 1; b < fw; ++b) sum += acc[j * fw + b];
        dst[j] = sum * scale;
      }
    }
}

// y [planes, H / fh, W / fw] -> x [planes, H, W]: x[p, i, j] = scale * y[p, i / fh, j / fw] inside the whole blocks,
// 0 past them.
void SpreadBlocks(const float *y, float *x, int64_t planes, int64_t H, int64_t W, int64_t fh, int64_t fw,
                  float scale) {
  const int64_t oh = H / fh, ow = W / fw;
  for (int64_t p = 0; p < planes; ++p) {
    for (int64_t i = 0; i < oh * fh; ++i) {
      float *dst = x + (p * H + i) * W;
      if (i % fh) {  // a block's later rows repeat its first
        std::memcpy(dst, dst - W, W * sizeof(float));
        continue;
      }
      const float *src = y + (p * oh + i / fh) * ow;
      if (fw == 2) {
        for (int64_t j = 0; j < ow; ++j) dst[2 * j] = dst[2 * j + 1] = src[j] * scale;
      } else {
        for (int64_t j = 0; j < ow; ++j)
          for (int64_t b = 0; b < fw; ++b) dst[j * fw + b] = src[j] * scale;
      }
      for (int64_t j = ow * fw; j < W; ++j) dst[j] = 0.0f;
    }
    for (int64_t i = oh * fh; i < H; ++i)
      for (int64_t j = 0; j < W; ++j) x[(p * H + i) * W + j] = 0.0f;
  }
}

// params[1] holds the factors (fh, fw): [2] int64.
bool Factors(int *ndims, int64_t **shapes, void **params, int64_t *fh, int64_t *fw) {
  if (ndims[1] != 1 || shapes[1][0] != 2) return false;
  const int64_t *factors = static_cast<const int64_t *>(params[1]);
  *fh = factors[0];
  *fw = factors[1];
  return *fh > 0 && *fw > 0;
}

// The four operators: the block sum (SumBlocks over the input's planes) or the spread (SpreadBlocks over the output's
// planes) of params[0] into the last of `nparam` (`expected`) operands; the average pooling scales by 1 / (fh * fw).
int Blocks(bool sum, bool mean, int nparam, int expected, void **params, int *ndims, int64_t **shapes) {
  int64_t fh, fw;
  const int out = nparam - 1;
  if (nparam != expected || ndims[0] != 4 || ndims[out] != 4 || !Factors(ndims, shapes, params, &fh, &fw)) return 1;
  const int64_t *full = sum ? shapes[0] : shapes[out];  // the full-resolution side
  (sum ? SumBlocks : SpreadBlocks)(static_cast<const float *>(params[0]), static_cast<float *>(params[out]),
                                   full[0] * full[1], full[2], full[3], fh, fw,
                                   mean ? 1.0f / static_cast<float>(fh * fw) : 1.0f);
  return 0;
}

}  // namespace

extern "C" int NearestUpsample(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                               void *stream, void *extra) {
  return Blocks(/*sum=*/false, /*mean=*/false, nparam, 3, params, ndims, shapes);
}

extern "C" int NearestUpsampleGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                   void *stream, void *extra) {
  return Blocks(/*sum=*/true, /*mean=*/false, nparam, 3, params, ndims, shapes);
}

extern "C" int AvgPool(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                       void *extra) {
  return Blocks(/*sum=*/true, /*mean=*/true, nparam, 3, params, ndims, shapes);
}

extern "C" int AvgPoolGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                           void *stream, void *extra) {
  if (nparam != 4 || ndims[2] != 2) return 1;  // params[2]: like [H, W]
  return Blocks(/*sum=*/false, /*mean=*/true, nparam, 4, params, ndims, shapes);
}
