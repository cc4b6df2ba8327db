"""Layers every model shares, written from mean/var ops so they run on CPU and export to ONNX cleanly.

* :func:`reduce_mean` / :func:`reduce_sum` - reductions over several axes of [B, C, H, W] through a 2-D reshape.
* :class:`Float32Only` - mixin of the cells that stay float32 under mixed precision (they refuse ``to_float``'s
  float16).
* :class:`CompiledCell` - base of the cells with a compiled CPU form (``use_library``).
* :class:`LeakyReLU` - the same function, faster than ``nn.LeakyReLU`` on CPU (one compiled pass each way).
* :func:`expand` - a statistic broadcast to a tensor's shape as its own op (graph-mode memory: see its docstring).
* :class:`Standardize` - ``(x - mean) / sqrt(var + eps)`` over any axes, with a hand-written backward that
  keeps only ``x``; the norms below and CoCosNet's positional norm.
* :class:`PowerIteration` - spectral normalisation's power iteration, one compiled kernel each way on CPU.
* :class:`NearestUpsample` / :class:`AvgPool2d` - nearest upsampling and block-average pooling by integer
  factors, compiled on CPU.
* :class:`AffineResample` - per-sample affine warps (bilinear, reflection padding), compiled on CPU.
* :class:`PairwiseMeanAbs` - mean absolute differences between a batch's samples, compiled on CPU.
* :class:`Softmax` - last-axis softmax with a hand-written backward, one compiled pass on CPU (attention, correlation);
  :class:`Float32Softmax` stays float32 (the correlation's).
* :class:`InstanceNorm2d` - per sample and channel over H, W (``nn.InstanceNorm2d`` has no CPU kernel).
* :class:`LayerNorm2d` - per sample over C, H, W with per-channel scale/offset (TF ``slim.layer_norm``).
* :class:`BatchStatNorm2d` - batch normalisation that always uses the current batch's statistics
  (the pix2pix test protocol), built from an ``nn.BatchNorm2d``'s gamma/beta for export.
* :class:`CounterDropout` - dropout whose masks are a hash of a step counter held as a Parameter, so a
  checkpoint restores the random stream exactly and a resumed run repeats the uninterrupted one;
  :func:`set_dropout_rank` gives each data-parallel rank its own stream.
"""
import itertools

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.ops import constexpr
from mindspore.common.initializer import Normal, initializer

__all__ = ["ChannelAffine", "reduce_mean", "reduce_sum", "expand", "Standardize", "Softmax", "Float32Softmax", "Float32Only", "CompiledCell", "LeakyReLU", "nearest_upsample", "NearestUpsample", "AvgPool2d", "AffineResample", "PairwiseMeanAbs", "PowerIteration", "InstanceNorm2d", "LayerNorm2d", "BatchStatNorm2d", "CounterDropout", "set_dropout_rank", "init_weights", "count_params"]


@constexpr
def _reduction_plan(shape, axes, keep_dims):
    """How :func:`reduce_sum` reduces ``shape`` over ``axes``, fixed at compile time: (form, [rows, cols] of each
    last-axis stage, output shape or the axes of the fallback, element count)."""
    ndim = len(shape)
    axes = tuple(sorted(a % ndim for a in axes))
    count = int(np.prod([shape[a] for a in axes]))
    kept = tuple(1 if i in axes else n for i, n in enumerate(shape))
    out = kept if keep_dims else tuple(n for i, n in enumerate(shape) if i not in axes)
    if axes == tuple(range(axes[0], ndim)):  # trailing axes, innermost first
        return "trailing", _last_axis_stages(shape, axes), out, count
    if ndim == 4 and axes == (0, 2, 3):  # W, then H, of every (sample, channel); then the batch
        return "channel", _last_axis_stages(shape, (2, 3)), out, count
    if axes == tuple(range(axes[0], axes[-1] + 1)):  # a block of inner axes: [lead, count, trail]
        return "inner", (int(np.prod(shape[:axes[0]])), count, int(np.prod(shape[axes[-1] + 1:]))), out, count
    return "other", (), axes, count


def _last_axis_stages(shape, trailing_axes):
    """[rows, cols] of the 2-D reshape that sums each of ``trailing_axes`` away, innermost first."""
    return tuple((int(np.prod(shape[:i])), shape[i]) for i in reversed(trailing_axes))


def reduce_sum(x, axes, keep_dims=True):
    """``x.sum(axis=axes, keepdims=keep_dims)``, in the form MindSpore's CPU kernels run fastest:

    * the trailing axes of ``x`` (e.g. (1, 2, 3) or (2, 3) of [B, C, H, W]) and (0, 2, 3) (per channel): one
      last-axis sum of a 2-D reshape per reduced axis. MindSpore 2.10's CPU kernels reduce several axes of a
      4-D tensor about 6x slower than the last axis of a 2-D one (the mean of a [1, 512, 256, 512] tensor:
      249 ms, 39 ms in stages, with float32 errors of 8e-9 and 7e-8 against float64; one flat 2-D row of all
      C*H*W values is as fast but 5e-6 off, too coarse for a layer norm);
    * a block of inner axes (e.g. (1,) of [B, C, H, W], the channels of a positional norm): a matrix product
      with a row of ones, ``ones[1, K] @ x[lead, K, trail]``. The CPU ReduceSum over an inner axis is 4-16x
      slower (axis 1 of [1, 128, 256, 256]: 21 ms against 5 ms; of [1, 2304, 4096]: 62 against 4 ms).

    Other axis sets fall back to ``x.sum``. Shapes: [B, C, H, W] -> the reduced axes kept as 1 (or dropped).
    """
    form, stages, out, _ = _reduction_plan(x.shape, axes, keep_dims)
    if form == "other":
        return x.sum(axis=out, keepdims=keep_dims)
    if form == "inner":
        lead, count, trail = stages
        rows = x.reshape((count, trail) if lead == 1 else (lead, count, trail))  # 2-D: MatMul, not BatchMatMul
        return ops.matmul(ops.ones((1, count), x.dtype), rows).reshape(out)
    shape = x.shape
    for rows_cols in stages:
        x = x.reshape(rows_cols).sum(axis=1)
    if form == "channel":  # [B * C] -> [C]
        x = x.reshape(-1, shape[1]).sum(axis=0)
    return x.reshape(out)


def reduce_mean(x, axes, keep_dims=True):
    """``x.mean(axis=axes, keep_dims=keep_dims)`` through :func:`reduce_sum` (same axis sets, same speed-up)."""
    return reduce_sum(x, axes, keep_dims) / _reduction_plan(x.shape, axes, keep_dims)[3]


@constexpr
def _inner_broadcast(stat_shape, shape):
    """(lead, count, trail) when ``stat_shape`` is ``shape`` with one block of inner axes set to 1 (e.g. [B, 1, H, W]
    of [B, C, H, W]), else None."""
    axes = [i for i, (a, b) in enumerate(zip(stat_shape, shape)) if a != b]
    if (len(stat_shape) != len(shape) or not axes or axes[-1] == len(shape) - 1
            or axes != list(range(axes[0], axes[-1] + 1)) or any(stat_shape[i] != 1 for i in axes)):
        return None
    return (int(np.prod(shape[:axes[0]])), int(np.prod(shape[axes[0]:axes[-1] + 1])),
            int(np.prod(shape[axes[-1] + 1:])))


def expand(stat, x):
    """``stat`` (e.g. [B, C, 1, 1], [1, C, 1, 1], [B, 1, H, W] or [B, N, 1]) broadcast to ``x``'s shape as its own op.

    In MindSpore 2.10's CPU graphs an arithmetic op that broadcasts an operand by itself keeps full-size
    buffers for the whole run: its kernel holds index tables of the output's size (Div: two 8-byte indices per
    output value, even for a scalar operand; ``README.md`` Performance); BroadcastTo followed by a same-shape op
    does not (``python bench/graph_memory.py --stack norm``). Over a block of inner axes (a per-position
    statistic over channels) the broadcast is the outer product ``ones[K, 1] @ stat[lead, 1, trail]``, 2.5x
    faster than BroadcastTo (to [1, 128, 256, 256]: 7 against 18 ms), and its gradient is a matrix product too
    (:func:`reduce_sum`'s form); other shapes take BroadcastTo. Exports to ONNX as Expand or MatMul.
    """
    inner = _inner_broadcast(stat.shape, x.shape)
    if inner is None:
        return ops.broadcast_to(stat, x.shape)
    lead, count, trail = inner
    row = stat.reshape((1, trail) if lead == 1 else (lead, 1, trail))  # 2-D: MatMul, not BatchMatMul
    return ops.matmul(ops.ones((count, 1), stat.dtype), row).reshape(x.shape)


class Standardize(nn.Cell):
    """``(x - mean) / sqrt(var + eps)`` over ``axes``, the variance with divisor ``N - ddof`` (N values per
    group), with a hand-written backward that keeps only ``x`` and recomputes the rest:

        dx = (dy - mean(dy) - y * sum(dy * y) / (N - ddof)) / sqrt(var + eps)   (sums over ``axes``).

    Why: MindSpore 2.10's graph-mode autodiff of the composed ops keeps about 17 full-size buffers per layer
    until the step ends; this cell about 0.5 (``python bench/graph_memory.py --stack norm``).
    ``axes=(2, 3)``: instance norm; ``(1, 2, 3)``: layer norm; ``(1,)`` with ``ddof=1``: positional norm.

    Shapes: [B, C, H, W] -> [B, C, H, W].
    """

    def __init__(self, axes, eps=1e-5, ddof=0):
        super().__init__()
        self.axes = tuple(axes)
        self.eps = eps
        self.ddof = ddof

    def _normalize(self, x):
        """(y, 1 / sqrt(var + eps) expanded to x's shape)."""
        count = _reduction_plan(x.shape, self.axes, True)[3]
        centred = x - expand(reduce_mean(x, self.axes), x)
        # reduce_mean, rescaled: reduce_sum on the squares here makes MindSpore 2.10's graph compiler fail on
        # this bprop ("The func graph is empty")
        var = reduce_mean(ops.square(centred), self.axes) * (count / (count - self.ddof))
        # a Pow of the small statistics (ONNX export has no Rsqrt or Reciprocal), then a full-size Mul: a
        # full-size Div keeps buffers alive like a broadcasting op (8 activations per layer instead of 0.5)
        rstd = expand(ops.pow(var + self.eps, -0.5), x)
        return centred * rstd, rstd

    def construct(self, x):
        return self._normalize(x)[0]

    def bprop(self, x, out, dout):
        y, rstd = self._normalize(x)
        count = _reduction_plan(x.shape, self.axes, True)[3]
        mean_d = expand(reduce_mean(dout, self.axes), x)
        k = expand(reduce_sum(dout * y, self.axes) / (count - self.ddof), x)
        return ((dout - mean_d - y * k) * rstd,)


def _scale_shift(y, gamma, beta):
    """``y * gamma + beta`` per channel: y [B, C, H, W], gamma and beta [C] (through :func:`expand`)."""
    return y * expand(gamma.reshape(1, -1, 1, 1), y) + expand(beta.reshape(1, -1, 1, 1), y)


class ChannelAffine(nn.Cell):
    """``(x - mean) / sqrt(var + eps) * scale + shift`` with one value of each per (sample, channel), computed
    by BatchNorm's inference kernel on [1, B*C, H, W]; with ``mean`` and ``var`` left out, ``x * scale +
    shift``.

    Why: in MindSpore 2.10's CPU graph mode a Mul or Add that broadcasts a [1, C, 1, 1] operand over a full
    tensor keeps several full-size buffers alive until the step ends (a scalar operand or BatchNorm's kernel does
    not; CRN's 128p train step: 10.3 -> 4.8 GB with this cell and ``common.conv``'s BiasAdd). Forward
    only (no gradient): for cells with a hand-written backward, such as ``crn.src.model.LayerNormLReLU``.

    Shapes: x [B, C, H, W]; scale, shift, mean, var [B, C] -> [B, C, H, W].
    """

    UNIT_VAR, UNIT_EPS = 0.75, 0.25  # sqrt(0.75 + 0.25) = 1 exactly: the plain affine map

    def __init__(self, eps=1e-5):
        super().__init__()
        self.normalize = ops.BatchNorm(is_training=False, epsilon=eps)
        self.affine = ops.BatchNorm(is_training=False, epsilon=self.UNIT_EPS)

    def construct(self, x, scale, shift, mean=None, var=None):
        b, c, h, w = x.shape
        flat = x.reshape(1, b * c, h, w)
        scale, shift = scale.reshape(-1), shift.reshape(-1)
        if mean is None:
            zeros = ops.zeros_like(scale)
            y = self.affine(flat, scale, shift, zeros, zeros + self.UNIT_VAR)[0]
        else:
            y = self.normalize(flat, scale, shift, mean.reshape(-1), var.reshape(-1))[0]
        return y.reshape(b, c, h, w)


class Float32Only:
    """Mixin (first base) for a cell that computes in float32 whatever precision the network runs in.

    MindSpore marks a cell's precision through ``add_flags_recursive``: ``to_float`` calls it, mixed precision calls
    ``to_float`` (O2's ``mindspore.amp.auto_mixed_precision`` on every cell, children one by one). Here a float16
    or bfloat16 mark turns into float32, for the cell and everything below it, so MindSpore casts the cell's
    inputs to float32. ``common.train.mixed_precision`` needs no list of exceptions, and neither does a user's own
    ``net.to_float(mstype.float16)``.
    """

    def add_flags_recursive(self, **flags):
        if flags.get("fp16") or flags.get("bf16"):
            flags = dict(flags, fp16=False, bf16=False, fp32=True)
        return super().add_flags_recursive(**flags)


class CompiledCell(nn.Cell):
    """A cell with a compiled CPU form (:mod:`common.cpu_kernels`) beside its MindSpore-operator form.
    ``common.conv.use_conv_impl`` hands every such cell in a network the library's path on every convolution path,
    ``common.conv.use_compiled_kernels`` those of a train step's loss cells (:meth:`use_library`); ``self.custom``
    is then the primitive that :meth:`compiled_op` builds from it, None without a path. Subclasses call the
    primitive where it applies (float32) and their operators otherwise."""

    def __init__(self):
        super().__init__()
        self.library, self.custom = None, None

    def use_library(self, path):
        """Run on the compiled kernels of ``path`` (None: on MindSpore's)."""
        if path != self.library:
            self.library = path
            self.custom = None if path is None else self.compiled_op(path)

    def compiled_op(self, path):
        """The ``ops.Custom`` primitive (with its backward) from the library at ``path``."""
        raise NotImplementedError


def _leaky_relu_op(path):
    """The compiled LeakyReLU (``common/kernels/activations.cc``) as an ``ops.Custom`` primitive whose backward is
    the compiled gradient, read from the output."""
    forward = ops.Custom(f"{path}:LeakyRelu", out_shape=lambda x, slope: x, out_dtype=lambda x, slope: x,
                         func_type="aot")
    gradient = ops.Custom(f"{path}:LeakyReluGrad", out_shape=lambda dy, y, slope: dy,
                          out_dtype=lambda dy, y, slope: dy, func_type="aot")

    def bprop(x, slope, out, dout):
        return gradient(dout, out, slope), ops.zeros_like(slope)

    forward.bprop = bprop
    return forward


class LeakyReLU(CompiledCell):
    """LeakyReLU, ``max(x, slope * x)``. Float32 on CPU, once :meth:`use_library` gave the path of the project's
    compiled kernels (``common.conv.use_conv_impl`` does, :mod:`common.cpu_kernels`): one pass each way,
    the gradient read from the output. Otherwise ``relu(x) - slope * relu(-x)``, whose gradient runs on two
    ReLU-gradient kernels instead of MindSpore's Maximum/Select chain (about twice as fast on CPU as
    ``nn.LeakyReLU``, fwd + bwd); exports to ONNX as Relu/Neg/Mul/Sub. Same values either way; the gradient
    at exactly 0 is ``slope * dy`` compiled (as PyTorch's), 0 otherwise.
    """

    def __init__(self, slope=0.2):
        super().__init__()
        if not 0.0 <= slope < 1.0:
            raise ValueError(f"LeakyReLU slope={slope} must be in [0, 1)")
        self.slope = slope
        self.slope_tensor = Tensor(np.array([slope], np.float32))

    def compiled_op(self, path):
        return _leaky_relu_op(path)

    def construct(self, x):
        if self.custom is not None and x.dtype == ms.float32:
            return self.custom(x, self.slope_tensor)
        return ops.relu(x) - self.slope * ops.relu(-x)


def nearest_upsample(x, fh, fw):
    """[B, C, H, W] -> [B, C, H*fh, W*fw], each value repeated into an fh x fw block: a reshape + broadcast (its
    gradient a ReduceSum; exports to ONNX as Reshape / Expand, where MindSpore's nearest resize has no export)."""
    b, c, h, w = x.shape
    return ops.broadcast_to(x.reshape(b, c, h, 1, w, 1), (b, c, h, fh, w, fw)).reshape(b, c, h * fh, w * fw)


def _nearest_upsample_op(path, factors):
    """The compiled nearest upsampling by ``factors`` (fh, fw) (``common/kernels/resize.cc``) as an ``ops.Custom``
    primitive whose backward is the compiled block sum."""
    fh, fw = factors
    forward = ops.Custom(f"{path}:NearestUpsample", out_dtype=lambda x, f: x, func_type="aot",
                         out_shape=lambda x, f: [x[0], x[1], x[2] * fh, x[3] * fw])
    gradient = ops.Custom(f"{path}:NearestUpsampleGrad", out_dtype=lambda dy, f: dy, func_type="aot",
                          out_shape=lambda dy, f: [dy[0], dy[1], dy[2] // fh, dy[3] // fw])
    for prim in (forward, gradient):  # distinct attributes: PyNative reuses inferred shapes of equal primitives
        prim.add_prim_attr("factors", (fh, fw))

    def bprop(x, f, out, dout):
        return gradient(dout, f), ops.zeros_like(f)

    forward.bprop = bprop
    return forward


class NearestUpsample(CompiledCell):
    """Nearest-neighbour upsampling by integer factors: [B, C, H, W] -> [B, C, H*fh, W*fw] (``factor``: one int
    or (fh, fw)). Float32 on CPU, once :meth:`use_library` gave the compiled kernels' path (``use_conv_impl``
    does): one pass each way. Otherwise :func:`nearest_upsample` (as exported graphs hold it). Same values either
    way."""

    def __init__(self, factor=2):
        super().__init__()
        self.factors = (factor, factor) if isinstance(factor, int) else tuple(factor)
        if min(self.factors) < 1:
            raise ValueError(f"NearestUpsample factor={factor} must be positive integers")
        self.factor_tensor = Tensor(np.array(self.factors, np.int64))

    def compiled_op(self, path):
        return _nearest_upsample_op(path, self.factors)

    def construct(self, x):
        if self.custom is not None and x.dtype == ms.float32:
            return self.custom(x, self.factor_tensor)
        fh, fw = self.factors
        return nearest_upsample(x, fh, fw)


def _avg_pool_op(path, factors):
    """The compiled average pooling over ``factors`` (fh, fw) blocks (``common/kernels/resize.cc``) as an
    ``ops.Custom`` primitive whose backward is the compiled spread of the gradient over each block."""
    fh, fw = factors
    forward = ops.Custom(f"{path}:AvgPool", out_dtype=lambda x, f: x, func_type="aot",
                         out_shape=lambda x, f: [x[0], x[1], x[2] // fh, x[3] // fw])
    gradient = ops.Custom(f"{path}:AvgPoolGrad", out_dtype=lambda dy, f, like: dy, func_type="aot",
                          out_shape=lambda dy, f, like: [dy[0], dy[1], like[0], like[1]])
    for prim in (forward, gradient):  # distinct attributes, as in _nearest_upsample_op
        prim.add_prim_attr("factors", (fh, fw))

    def bprop(x, f, out, dout):
        return gradient(dout, f, ops.zeros(x.shape[2:], ms.uint8)), ops.zeros_like(f)

    forward.bprop = bprop
    return forward


class AvgPool2d(CompiledCell):
    """Average pooling over ``factor`` x ``factor`` blocks with stride ``factor`` (``nn.AvgPool2d(factor, factor)``:
    rows and columns past the last whole block are left out): [B, C, H, W] -> [B, C, H // f, W // f]. Float32 on
    CPU, once :meth:`use_library` gave the compiled kernels' path: one pass each way (MindSpore's AvgPool and its
    gradient took 5 and 4 ms per call on OSMIS's 192x320 discriminator maps). Otherwise ``nn.AvgPool2d``."""

    def __init__(self, factor=2):
        super().__init__()
        if factor < 1:
            raise ValueError(f"AvgPool2d factor={factor} must be a positive integer")
        self.factors = (factor, factor)
        self.factor_tensor = Tensor(np.array(self.factors, np.int64))
        self.pool = nn.AvgPool2d(factor, factor)

    def compiled_op(self, path):
        return _avg_pool_op(path, self.factors)

    def construct(self, x):
        if self.custom is not None and x.dtype == ms.float32:
            return self.custom(x, self.factor_tensor)
        return self.pool(x)


def _affine_resample_op(path):
    """The compiled affine warp (``common/kernels/grid_sample.cc``) as an ``ops.Custom`` primitive whose backward is
    the compiled adjoint (``theta`` gets no gradient)."""
    forward = ops.Custom(f"{path}:AffineGridSample", out_shape=lambda x, theta: x, out_dtype=lambda x, theta: x,
                         func_type="aot")
    adjoint = ops.Custom(f"{path}:AffineGridSampleGrad", out_shape=lambda dy, theta: dy,
                         out_dtype=lambda dy, theta: dy, func_type="aot")

    def bprop(x, theta, out, dout):
        return adjoint(dout, theta), ops.zeros_like(theta)

    forward.bprop = bprop
    return forward


class AffineResample(CompiledCell):
    """Per-sample affine warps: ``(x [B, C, H, W], theta [B, 2, 3]) -> [B, C, H, W]``, ``theta`` mapping output to
    input in normalised coordinates: ``torch.nn.functional.affine_grid`` + ``grid_sample`` (bilinear, reflection
    padding, ``align_corners=False``). Differentiable w.r.t. ``x``; ``theta`` is data (no gradient). Float32 on
    CPU, once :meth:`use_library` gave the compiled kernels' path (``common.conv.use_conv_impl`` or, in a loss
    cell, ``common.conv.use_compiled_kernels`` does): one pass each way. Otherwise MindSpore's AffineGrid and
    GridSampler2D. Same values either way up to float rounding (the compiled kernel takes coordinates and weights
    in double). ``theta`` float32; a float16 ``x`` is sampled in float32 and returned as float16."""

    def compiled_op(self, path):
        return _affine_resample_op(path)

    def construct(self, x, theta):
        theta = ops.stop_gradient(theta)
        if self.custom is not None and x.dtype == ms.float32:
            return self.custom(x, theta)
        grid = ops.affine_grid(theta, x.shape, align_corners=False)
        # float32 grid and sampling for a float16 x (a mixed-precision network's output): GridSampler2D needs one dtype
        y = ops.grid_sample(ops.cast(x, theta.dtype), grid, "bilinear", "reflection", align_corners=False)
        return ops.cast(y, x.dtype)


def _pairwise_mean_abs_op(path):
    """The compiled pairwise mean absolute differences (``common/kernels/pairwise.cc``) as an ``ops.Custom`` primitive
    whose backward is the compiled gradient."""
    forward = ops.Custom(f"{path}:PairwiseMeanAbs", func_type="aot", out_dtype=lambda x: x,
                         out_shape=lambda x: [x[0] * (x[0] - 1) // 2])
    gradient = ops.Custom(f"{path}:PairwiseMeanAbsGrad", out_shape=lambda dd, x: x, out_dtype=lambda dd, x: x,
                          func_type="aot")

    def bprop(x, out, dout):
        return (gradient(dout, x),)

    forward.bprop = bprop
    return forward


class PairwiseMeanAbs(CompiledCell):
    """Mean absolute differences between the samples of a batch: ``x [B, ...] -> [B(B-1)/2]``, ``mean |x_k - x_m|``
    for the pairs ``k < m`` in ``itertools.combinations`` order (the gradient of ``|0|`` is 0, as PyTorch's). Float32
    on CPU, once :meth:`use_library` gave the compiled kernels' path (as :class:`AffineResample`): one pass each
    way. Otherwise two Gathers of the pairs' samples, Sub, Abs and a mean. Same values either way up to float
    rounding."""

    def __init__(self, batch_size):
        super().__init__()
        pairs = list(itertools.combinations(range(batch_size), 2))
        self.first = Tensor(np.array([k for k, _ in pairs], np.int32))
        self.second = Tensor(np.array([m for _, m in pairs], np.int32))

    def compiled_op(self, path):
        return _pairwise_mean_abs_op(path)

    def construct(self, x):
        if self.custom is not None and x.dtype == ms.float32:
            return self.custom(x)
        d = ops.abs(ops.gather(x, self.first, 0) - ops.gather(x, self.second, 0))
        return d.reshape(d.shape[0], -1).mean(axis=1)


def _normalize(x, eps):
    """``x / max(|x|_2, eps)`` of a vector (``torch.nn.functional.normalize``)."""
    return x / ops.maximum(ops.sqrt(ops.reduce_sum(x * x)), eps)


def _power_iteration_op(path):
    """The compiled power iteration (``common/kernels/spectral_norm.cc``) as an ``ops.Custom`` primitive whose
    backward is the compiled gradient of ``1 / sigma``."""
    forward = ops.Custom(f"{path}:SpectralNormPower", func_type="aot",
                         out_shape=lambda w, u, v, eps: (u, v, [1]), out_dtype=lambda w, u, v, eps: (w, w, w))
    gradient = ops.Custom(f"{path}:SpectralNormPowerGrad", func_type="aot",
                          out_shape=lambda ds, u, v, s, w: w, out_dtype=lambda ds, u, v, s, w: w)

    def bprop(w, u, v, eps, out, dout):
        return gradient(dout[2], out[0], out[1], out[2], w), ops.zeros_like(u), ops.zeros_like(v), ops.zeros_like(eps)

    forward.bprop = bprop
    return forward


class PowerIteration(Float32Only, CompiledCell):
    """One training-mode power iteration of spectral normalisation (``torch.nn.utils.spectral_norm``) and the
    reciprocal of the spectral norm it estimates.

    ``(W [R, ...], u [R], v [K]) -> (u' [R], v' [K], 1 / sigma [1])`` with ``W`` read as [R, K] (K the product of its
    other dimensions), ``v' = n(W^T u)``, ``u' = n(W v')``, ``sigma = u'^T W v'`` and ``n(x) = x / max(|x|, eps)``.
    The gradient reaches ``W`` through ``sigma`` only (``u'``, ``v'`` are constants, as in PyTorch). Float32 on
    CPU, once :meth:`use_library` gave the compiled kernels' path (``common.conv.use_conv_impl`` does): one kernel
    each way instead of about 16 forward and 6 backward. Otherwise MindSpore's MatMuls and elementwise operators.
    Same values either way up to float rounding (the compiled kernel sums in double). Float32 under mixed precision too
    (:class:`Float32Only`).
    """

    def __init__(self, eps=1e-12):
        super().__init__()
        self.eps = float(eps)
        self.eps_tensor = Tensor(np.array([eps], np.float32))

    def compiled_op(self, path):
        return _power_iteration_op(path)

    def construct(self, w, u, v):
        if self.custom is not None and w.dtype == ms.float32:
            return self.custom(w, u, v, self.eps_tensor)
        w = w.reshape(w.shape[0], -1)
        w_const = ops.stop_gradient(w)
        v = _normalize(ops.matmul(u, w_const), self.eps)
        u = _normalize(ops.matmul(w_const, v), self.eps)
        sigma = ops.reduce_sum(u * ops.matmul(w, v))
        return u, v, ops.reshape(1 / sigma, (1,))


def _softmax_grad_op(path):
    """The compiled softmax gradient (``common/kernels/activations.cc``) as an ``ops.Custom`` primitive:
    ``(dy, y) -> y * (dy - rowsum(dy * y))`` over the last axis."""
    return ops.Custom(f"{path}:SoftmaxGrad", out_shape=lambda dy, y: dy, out_dtype=lambda dy, y: dy,
                      func_type="aot")


class Softmax(CompiledCell):
    """Softmax over the last axis (``ops.softmax(x, -1)``) with a hand-written backward,
    ``dx = y * (dy - (dy * y) @ 1)``. Float32 on CPU, once :meth:`use_library` gave the compiled kernels' path
    (``common.conv.use_conv_impl`` does): one pass per row and no tensor beside ``dx``. Otherwise MindSpore's
    operators, the row sums one matrix-vector product.

    Why: MindSpore 2.10's CPU softmax gradient reduces and broadcasts through ReduceSum and a broadcasting Sub;
    on CoCosNet's attention map [1, 16384, 4096] the forward and backward took 1589 ms that way, 335 ms with the
    operators below (values within 1e-9), which still hold four tensors of the map's size and a fifth on the C heap
    (MindSpore's CPU BroadcastTo). Shapes: [..., M] -> [..., M].
    """

    def compiled_op(self, path):
        return _softmax_grad_op(path)

    def construct(self, x):
        return ops.softmax(x, -1)

    def bprop(self, x, out, dout):
        if self.custom is not None and out.dtype == ms.float32:
            return (self.custom(dout, out),)
        row_sums = ops.matmul(dout * out, ops.ones((out.shape[-1], 1), out.dtype))  # [..., 1]
        # broadcast_to, not expand: graph mode fails to compile expand's constexpr branch inside a bprop
        return (out * (dout - ops.broadcast_to(row_sums, out.shape)),)


class Float32Softmax(Float32Only, Softmax):
    """:class:`Softmax` that stays float32 under mixed precision (CoCosNet's correlation: logits up to 100, where a
    float16 rounding of 1e-3 of a cosine similarity would move a logit by 0.1)."""


class InstanceNorm2d(nn.Cell):
    """Instance normalisation of [B, C, H, W] with optional per-channel affine (PyTorch semantics):
    :class:`Standardize` over (H, W)."""

    def __init__(self, num_features, eps=1e-5, affine=False):
        super().__init__()
        self.norm = Standardize((2, 3), eps)
        self.affine = affine
        if affine:
            self.gamma = Parameter(initializer("ones", (num_features,)), name="gamma")
            self.beta = Parameter(initializer("zeros", (num_features,)), name="beta")

    def construct(self, x):
        y = self.norm(x)
        if self.affine:
            y = _scale_shift(y, self.gamma, self.beta)
        return y


class LayerNorm2d(nn.Cell):
    """Layer normalisation of [B, C, H, W] over (C, H, W) with per-channel gamma/beta of shape [C]:
    :class:`Standardize` over (C, H, W), then the affine map."""

    def __init__(self, num_features, eps=1e-12):
        super().__init__()
        self.norm = Standardize((1, 2, 3), eps)
        self.gamma = Parameter(initializer("ones", (num_features,)), name="gamma")
        self.beta = Parameter(initializer("zeros", (num_features,)), name="beta")

    def construct(self, x):
        y = self.norm(x)
        return _scale_shift(y, self.gamma, self.beta)


class BatchStatNorm2d(nn.Cell):
    """Batch normalisation from the current batch's statistics with the gamma/beta of ``bn``.

    For batch size 1 this is instance normalisation with affine parameters: the pix2pix paper's
    test-time behaviour, as explicit ops that ONNX can hold (see ``common.export.prepare_for_export``).
    """

    def __init__(self, bn):
        super().__init__()
        self.norm = Standardize((0, 2, 3), float(bn.eps))
        self.gamma = bn.gamma
        self.beta = bn.beta

    def construct(self, x):
        y = self.norm(x)
        return _scale_shift(y, self.gamma, self.beta)


class CounterDropout(nn.Cell):
    """Inverted dropout with counter-based masks.

    The mask of call ``n`` is a deterministic hash of (``n``, ``salt``, element index); ``n`` lives in
    the non-trainable Parameter ``counter`` and is saved with the network, so resuming from a
    checkpoint continues the same random stream. ``rank`` (the data-parallel rank, set by the training
    driver through :func:`set_dropout_rank` from the runtime's rank) selects the stream, so ranks drop
    different units. Active in training mode, or always with ``always_on=True`` (the pix2pix test
    protocol keeps dropout on).
    """

    def __init__(self, p=0.5, salt=0, always_on=False, rank=0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability p={p} must be in [0, 1)")
        self.p = p
        self.base_salt = int(salt)
        self.set_rank(rank)
        self.always_on = always_on
        self.counter = Parameter(Tensor(0.0, ms.float32), name="counter", requires_grad=False)

    def construct(self, x):
        if not (self.training or self.always_on) or self.p == 0.0:
            return x
        step = ops.stop_gradient(self.counter)
        x = ops.depend(x, ops.assign_add(self.counter, ops.ones((), ms.float32)))
        idx = ops.arange(0, x.size, dtype=ms.float32).reshape(x.shape)
        h = ops.sin(idx * 12.9898 + ops.sin(step * 0.7548776662 + self.salt) * 4375.85453 + self.salt) * 43758.5453
        u = h - ops.floor(h)
        h = ops.sin(u * 78.233 + idx * 0.0137 + step * 0.0191) * 24634.6345
        u = h - ops.floor(h)
        keep = ops.cast(u >= self.p, x.dtype)
        return x * keep * (1.0 / (1.0 - self.p))

    def set_rank(self, rank):
        """Draw the stream of data-parallel ``rank`` (before the network is compiled)."""
        self.rank = int(rank)
        self.salt = float((self.base_salt + 101 * self.rank) % 997) * 0.6180339887 + 0.1234


def set_dropout_rank(net, rank):
    """Give every :class:`CounterDropout` of ``net`` the stream of data-parallel ``rank``; returns their count.

    The training driver calls it with ``Runtime.rank`` on every trained network, so each rank draws its
    own masks (rank 0 draws the single-process stream).
    """
    cells = [cell for _, cell in net.cells_and_names() if isinstance(cell, CounterDropout)]
    for cell in cells:
        cell.set_rank(rank)
    return len(cells)


def init_weights(net, init_type="normal", gain=0.02):
    """Initialise conv weights (N(0, gain), Xavier or Kaiming), zero conv biases, BN gamma ~ N(1, gain).

    This is the pix2pix reference initialisation; MindSpore's defaults differ and its conv bias
    default is not zero.
    """
    conv_types = (nn.Conv2d, nn.Conv2dTranspose, nn.Dense)
    for _, cell in net.cells_and_names():
        if isinstance(cell, conv_types):
            w = cell.weight
            if init_type == "normal":
                w.set_data(initializer(Normal(gain), w.shape, w.dtype))
            elif init_type == "xavier":
                w.set_data(initializer(ms.common.initializer.XavierNormal(gain), w.shape, w.dtype))
            elif init_type == "kaiming":
                w.set_data(initializer(ms.common.initializer.HeNormal(mode="fan_in"), w.shape, w.dtype))
            else:
                raise ValueError(f"init_type={init_type!r}; choose normal, xavier or kaiming")
            if getattr(cell, "bias", None) is not None:
                cell.bias.set_data(initializer("zeros", cell.bias.shape, cell.bias.dtype))
        elif isinstance(cell, nn.BatchNorm2d):
            cell.gamma.set_data(initializer(Normal(gain, 1.0), cell.gamma.shape, cell.gamma.dtype))
            cell.beta.set_data(initializer("zeros", cell.beta.shape, cell.beta.dtype))


def count_params(net, trainable_only=True):
    """Number of scalar parameters of ``net`` (trainable ones by default)."""
    params = net.trainable_params() if trainable_only else net.get_parameters()
    return int(sum(np.prod(p.shape) for p in params))
