"""Convolutions computed as one matrix multiply each: the fast CPU path for pix2pix-style networks.

Why. MindSpore's CPU convolutions run through oneDNN on plain NCHW tensors. Capped at AVX2 (see
``common/__init__.py``) oneDNN executes them as im2col + an AVX2 GEMM; at AVX-512 it selects
``jit_uni_ncsp:conv+ref``, a reference kernel ~100x slower. oneDNN's matrix multiply, however, has
AVX-512 ``brg_matmul`` kernels (~118 GFLOPS on 2 cores against 35-53 at AVX2). With
``set_conv_impl("matmul")`` (``common.runtime.init_runtime(cpu_conv=...)``, which also lifts the ISA cap)

* :class:`Conv2d`: ``cols = Im2Col(x)`` [C_in*kh*kw, B*H'*W'], then ``W.view(C_out, -1) @ cols``;
* :class:`ConvTranspose2d`: ``Z = W.view(C_in, -1)^T @ x`` [C_out*kh*kw, B*H*W], then
  ``Col2Im(Z)`` sums the overlapping kernel taps into the output (the adjoint of ``Conv2d``).

Both are the same sums as ``nn.Conv2d`` / ``nn.Conv2dTranspose`` in another order (tests compare values
and gradients), and keep their parameters (names, shapes, init), so checkpoints are interchangeable.
The weight is used in its stored layout and ``ops.MatMul`` takes transposed operands by flag, so no
weight or gradient is ever transposed in memory. Unsupported configurations (groups, dilation,
``pad_mode="same"``, unequal top/bottom or left/right padding of a ``Conv2d``), other devices and
``conv_impl() == "native"`` run MindSpore's own kernel. ``common.export.prepare_for_export`` switches
every cell back to the native operator, so exported graphs hold ``Conv`` / ``ConvTranspose``.

Memory: the im2col matrix, kept for the weight gradient, is ``kh*kw/(sh*sw)`` times the input (4x for
pix2pix's 4x4 stride-2 layers, 9x for 3x3 stride-1), which is why CRN's full-resolution 3x3 stacks
stay native.
"""
from mindspore import Tensor, int32, nn, ops

__all__ = ["CONV_IMPLS", "Conv2d", "ConvTranspose2d", "conv_impl", "set_conv_impl", "set_native"]

CONV_IMPLS = ("native", "matmul")
_IMPL = {"value": "native"}


def set_conv_impl(impl):
    """Choose how :class:`Conv2d` / :class:`ConvTranspose2d` built from now on compute: native | matmul."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl={impl!r} is not supported; choose one of {CONV_IMPLS}")
    _IMPL["value"] = impl


def conv_impl():
    """The implementation new convolution cells get (``native`` unless :func:`set_conv_impl` changed it)."""
    return _IMPL["value"]


def set_native(net):
    """Switch every :class:`Conv2d` / :class:`ConvTranspose2d` in ``net`` to the native operator.

    Returns how many were switched (before exporting, or to compare the two paths).
    """
    switched = 0
    for _, cell in net.cells_and_names():
        if isinstance(cell, (Conv2d, ConvTranspose2d)) and cell.matmul:
            cell.matmul = False
            switched += 1
    return switched


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _matmul_requested(cell, impl):
    """The matmul path is asked for (``impl`` or :func:`conv_impl`) and the cell has one group, no dilation."""
    return (impl or conv_impl()) == "matmul" and cell.group == 1 and _pair(cell.dilation) == (1, 1)


def _symmetric_padding(cell):
    """(pad_h, pad_w) when top == bottom and left == right, else None."""
    if cell.pad_mode == "valid":
        return 0, 0
    if cell.pad_mode != "pad":
        return None
    p = cell.padding
    if isinstance(p, int):
        return p, p
    top, bottom, left, right = p
    return (top, left) if top == bottom and left == right else None


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` that, with ``conv_impl() == "matmul"``, runs as Im2Col + one MatMul.

    ``impl`` overrides :func:`conv_impl` for this cell. [B, C_in, H, W] -> [B, C_out, H', W'].
    """

    def __init__(self, *args, impl=None, **kwargs):
        super().__init__(*args, **kwargs)
        padding = _symmetric_padding(self)
        self.matmul = _matmul_requested(self, impl) and padding is not None
        self.mm = ops.MatMul()
        self.pads = padding or (0, 0)
        self.kernel, self.strides = _pair(self.kernel_size), _pair(self.stride)

    def construct(self, x):
        if not self.matmul:
            return super().construct(x)
        b, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.strides, self.pads
        out_h, out_w = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        cols = ops.unfold(x, self.kernel, 1, self.pads, self.strides)  # [B, C*kh*kw, H'*W']
        if b > 1:
            cols = cols.transpose(1, 0, 2)
        y = self.mm(self.weight.reshape(self.out_channels, -1), cols.reshape(c * kh * kw, b * out_h * out_w))
        if b > 1:
            y = y.reshape(self.out_channels, b, out_h, out_w).transpose(1, 0, 2, 3)
        else:
            y = y.reshape(1, self.out_channels, out_h, out_w)
        if self.has_bias:
            y = y + self.bias.reshape(1, -1, 1, 1)
        return y


class ConvTranspose2d(nn.Conv2dTranspose):
    """``nn.Conv2dTranspose`` that, with ``conv_impl() == "matmul"``, runs as one MatMul + Col2Im.

    Unequal paddings (how :mod:`pix2pix.src.model` expresses PyTorch's ``output_padding``) are applied
    by cropping the full output. ``impl`` overrides :func:`conv_impl` for this cell.
    [B, C_in, H, W] -> [B, C_out, (H-1)*s + k - pad_top - pad_bottom, ...].
    """

    def __init__(self, *args, impl=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.matmul = _matmul_requested(self, impl) and self.pad_mode == "pad"
        self.mm = ops.MatMul(transpose_a=True)
        self.kernel, self.strides = _pair(self.kernel_size), _pair(self.stride)
        symmetric = _symmetric_padding(self)
        self.fold_pads = symmetric or (0, 0)
        self.crop = tuple(self.padding) if self.matmul and symmetric is None else (0, 0, 0, 0)

    def construct(self, x):
        if not self.matmul:
            return super().construct(x)
        b, c, h, w = x.shape
        n, (kh, kw), (sh, sw) = self.out_channels, self.kernel, self.strides
        ph, pw = self.fold_pads
        out_h, out_w = (h - 1) * sh + kh - 2 * ph, (w - 1) * sw + kw - 2 * pw
        if b > 1:
            x = x.transpose(1, 0, 2, 3)
        z = self.mm(self.weight.reshape(c, n * kh * kw), x.reshape(c, b * h * w))  # [C_out*kh*kw, B*H*W]
        if b > 1:
            z = z.reshape(n * kh * kw, b, h * w).transpose(1, 0, 2)
        else:
            z = z.reshape(1, n * kh * kw, h * w)
        y = ops.fold(z, Tensor((out_h, out_w), int32), self.kernel, 1, self.fold_pads, self.strides)
        top, bottom, left, right = self.crop
        if top or bottom or left or right:
            y = ops.slice(y, (0, 0, top, left), (b, n, out_h - top - bottom, out_w - left - right))
        if self.has_bias:
            y = y + self.bias.reshape(1, -1, 1, 1)
        return y
