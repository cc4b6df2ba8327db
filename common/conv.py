"""Convolutions computed as matrix multiplies: the fast CPU path, switched per network.

Why. MindSpore's CPU convolutions run through oneDNN on plain NCHW tensors. Capped at AVX2 (see
``common/__init__.py``) oneDNN executes them as im2col + an AVX2 GEMM; at AVX-512 it selects
``jit_uni_ncsp:conv+ref``, a reference kernel ~100x slower. oneDNN's matrix multiply, however, has
AVX-512 ``brg_matmul`` kernels (~118 GFLOPS on 2 Xeon cores against 35-53 at AVX2; on a 2-core AMD EPYC a
VGG19 step is at par with native AVX2, see README Performance). So the CPU convolution
path is a property of the process (``common.runtime.Runtime.conv_impl``, from ``init_runtime(cpu_conv=...)``,
which also sets the ISA cap), and every network the process runs gets it with :func:`use_conv_impl`.

Every convolution cell in ``common/`` and the model folders is a :class:`Conv2d` / :class:`ConvTranspose2d`
(subclasses of ``nn.Conv2d`` / ``nn.Conv2dTranspose``: same parameters, names and init, so checkpoints are
interchangeable). Cells are built native; ``use_conv_impl(net, "matmul")`` switches them to

* :class:`Conv2d`: per sample ``cols = Im2Col(x_b)`` [C_in*kh*kw, H'*W'], then ``W.view(C_out, -1) @ cols``
  (for 1x1, stride 1, no padding: ``x`` itself is the matrix, one MatMul over the batch; with
  ``group > 1`` one ``BatchMatMul`` over the groups);
* :class:`ConvTranspose2d`: ``Z = W.view(C_in, -1)^T @ x`` [C_out*kh*kw, B*H*W], then
  ``Col2Im(Z)`` sums the overlapping kernel taps into the output (the adjoint of ``Conv2d``).

Both are the same sums as the native operators in another order (tests compare values and gradients).
The weight is used in its stored layout and ``ops.MatMul`` takes transposed operands by flag, so no
weight or gradient is ever transposed in memory.

Coverage of the matmul path: any padding (``pad`` with one value, per dimension ``(top, bottom, left,
right)``, unequal sides included; ``valid``; ``same``), any kernel and stride, dilation, and for
:class:`Conv2d` groups. The only fallback, which stays on the native operator and is not counted by
:func:`use_conv_impl`: a :class:`ConvTranspose2d` with ``group > 1``, or with ``pad_mode="same"`` and a
kernel smaller than its stride; no network in this repository has either. Switch a network before its
first call: a compiled graph keeps the path it was compiled with. ``common.export.prepare_for_export``
switches every cell back to native, so exported graphs hold ``Conv`` / ``ConvTranspose``.

Memory: a :class:`Conv2d` keeps only its input for the backward, as the native operator does; its im2col
matrix (``kh*kw/(sh*sw)`` times one sample's input: 4x for pix2pix's 4x4 stride-2 layers, 9x for 3x3
stride 1) exists one sample at a time and is rebuilt in the backward (:class:`_Im2ColMatMul`). 1x1
convolutions (no matrix) and grouped ones (autodiff, batched) are the exceptions.
"""
from mindspore import Tensor, int32, nn, ops

__all__ = ["CONV_IMPLS", "Conv2d", "ConvTranspose2d", "use_conv_impl"]

CONV_IMPLS = ("native", "matmul")


def use_conv_impl(net, impl):
    """Switch every :class:`Conv2d` / :class:`ConvTranspose2d` in ``net`` to ``impl`` (``native`` | ``matmul``).

    Returns how many cells now run matmul (0 for ``native``; cells without a matmul form, see the module
    docstring, stay native and are not counted). Call it before ``net`` first runs in graph mode: a
    compiled graph keeps the path it was compiled with (a change to a net that has one is an error; one
    compiled through an enclosing cell, e.g. a train step, cannot be seen here). With ``matmul``, a plain
    ``nn.Conv2d`` / ``nn.Conv2dTranspose`` in ``net`` is an error: it could not follow the choice.
    """
    if impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl={impl!r} is not supported; choose one of {CONV_IMPLS}")
    cells = list(net.cells_and_names())
    if impl == "matmul":
        plain = [name or type(net).__name__ for name, cell in cells
                 if isinstance(cell, (nn.Conv2d, nn.Conv2dTranspose))
                 and not isinstance(cell, (Conv2d, ConvTranspose2d))]
        if plain:
            raise TypeError(f"{type(net).__name__}: cells {plain[:5]} are plain nn.Conv2d / nn.Conv2dTranspose and "
                            f"cannot take the matmul convolution path; build them with common.conv.Conv2d / "
                            f"ConvTranspose2d (same parameters)")
    convs = [cell for _, cell in cells if isinstance(cell, (Conv2d, ConvTranspose2d))]
    wanted = [impl == "matmul" and cell.has_matmul_form for cell in convs]
    changed = any(cell.matmul != want for cell, want in zip(convs, wanted))
    if changed and any(getattr(cell, "compile_cache", None) for _, cell in cells):
        raise RuntimeError(f"{type(net).__name__} already ran as a compiled graph, which keeps its convolution path; "
                           f"call use_conv_impl(net, {impl!r}) right after building the network")
    for cell, want in zip(convs, wanted):
        cell.matmul = want
    return sum(wanted)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _explicit_padding(cell):
    """(top, bottom, left, right) of a ``pad`` / ``valid`` cell; None for ``same`` (depends on the input)."""
    if cell.pad_mode == "valid":
        return 0, 0, 0, 0
    if cell.pad_mode == "same":
        return None
    p = cell.padding
    if isinstance(p, int):
        return p, p, p, p
    return (p[0], p[0], p[1], p[1]) if len(p) == 2 else tuple(p)


def _same_split(total):
    """MindSpore's ``same`` split of ``total`` padding: the odd element goes to the bottom / right."""
    return total // 2, total - total // 2


class _Im2ColMatMul(nn.Cell):
    """``y = W @ im2col(x)`` per sample, with a backward that recomputes ``im2col(x)`` instead of keeping it.

    Autodiff of Im2Col + MatMul keeps the im2col matrix (``kh*kw/(sh*sw)`` times the input) of every layer
    until the backward reaches it; this cell keeps only ``x`` (as a native convolution does) and rebuilds
    each layer's matrix in the backward, one sample at a time: ``dW = sum_b dY_b @ cols_b^T``,
    ``dx_b = Col2Im(W^T @ dY_b)``. The ``Depend`` on ``dout`` keeps the graph compiler from merging that
    recomputation with the forward's (common-subexpression elimination would keep the forward matrix alive).
    The reshaped weight [N, C*kh*kw] likewise depends on ``x`` (forward) and ``dout`` (backward): with no
    input in common with the activations, graph mode computes every layer's copy at the start of the step
    and keeps them all (``bench/graph_memory.py --cpu_conv matmul``: 2.5 -> 1.6 parameter copies).
    One matmul per sample: a batched matrix [C*kh*kw, B*H'*W'] needs a transposed copy of the im2col matrix
    and, in MindSpore 2.10's CPU graphs, 2-5x its size in peak memory, for no speed gain (measured: VGG19
    conv1_2 at 64x128, batch 10: 4.1 GB against 0.9 GB per sample, same time).

    Shapes: x [B, C, H, W] (symmetric padding ``pads`` applied by Im2Col), w [N, C, kh, kw] ->
    [B, N, H', W'].
    """

    def __init__(self, kernel, strides, dilations, pads):
        super().__init__()
        self.kernel, self.strides, self.dilations, self.pads = kernel, strides, dilations, pads
        self.mm, self.mm_ta, self.mm_tb = ops.MatMul(), ops.MatMul(transpose_a=True), ops.MatMul(transpose_b=True)

    def _out_size(self, h, w):
        (kh, kw), (sh, sw), (dh, dw), (ph, pw) = self.kernel, self.strides, self.dilations, self.pads
        return (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1

    def _cols(self, x):
        """x [1, C, H, W] -> [C*kh*kw, H'*W']."""
        cols = ops.unfold(x, self.kernel, self.dilations, self.pads, self.strides)
        return cols.reshape(cols.shape[1], cols.shape[2])

    def construct(self, x, w):
        b, _, h, wd = x.shape
        out_h, out_w = self._out_size(h, wd)
        n = w.shape[0]
        w2d = ops.depend(w, x).reshape(n, -1)
        if b == 1:
            return self.mm(w2d, self._cols(x)).reshape(1, n, out_h, out_w)
        return ops.cat([self.mm(w2d, self._cols(x[i:i + 1])).reshape(1, n, out_h, out_w) for i in range(b)])

    def bprop(self, x, w, out, dout):
        b, _, h, wd = x.shape
        out_h, out_w = self._out_size(h, wd)
        n = w.shape[0]
        w2d = ops.depend(w, dout).reshape(n, -1)
        x = ops.depend(x, dout)
        dw, dxs = None, []
        for i in range(b):
            dy = (dout if b == 1 else dout[i:i + 1]).reshape(n, out_h * out_w)
            part = self.mm_tb(dy, self._cols(x if b == 1 else x[i:i + 1]))  # [N, C*kh*kw]
            dw = part if dw is None else dw + part
            dcols = self.mm_ta(w2d, dy)  # [C*kh*kw, H'*W']
            dcols = dcols.reshape(1, dcols.shape[0], dcols.shape[1])
            dxs.append(ops.fold(dcols, Tensor((h, wd), int32), self.kernel, self.dilations, self.pads, self.strides))
        return (dxs[0] if b == 1 else ops.cat(dxs)), dw.reshape(w.shape)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` that, switched by :func:`use_conv_impl`, runs as Im2Col + MatMul.

    [B, C_in, H, W] -> [B, C_out, H', W'].
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.has_matmul_form = self.data_format == "NCHW"
        self.matmul = False
        self.mm, self.bmm = ops.MatMul(), ops.BatchMatMul()
        self.kernel, self.strides, self.dilations = _pair(self.kernel_size), _pair(self.stride), _pair(self.dilation)
        self.pads = _explicit_padding(self)
        if self.pads is None and self.strides == (1, 1):  # same, stride 1: the split does not depend on the input
            self.pads = _same_split(self.dilations[0] * (self.kernel[0] - 1)) + \
                _same_split(self.dilations[1] * (self.kernel[1] - 1))
        self.pointwise = self.kernel == (1, 1) and self.strides == (1, 1) and self.pads == (0, 0, 0, 0)
        # symmetric padding goes to Im2Col; any other (and same with a stride) is applied by an explicit pad
        top, bottom, left, right = self.pads or (1, 0, 1, 0)
        self.unfold_pads = (top, left) if (top, left) == (bottom, right) else (0, 0)
        self.im2col_matmul = _Im2ColMatMul(self.kernel, self.strides, self.dilations, self.unfold_pads)

    def _padding(self, h, w):
        if self.pads is not None:
            return self.pads
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
        total_h = max(0, ((h + sh - 1) // sh - 1) * sh + dh * (kh - 1) + 1 - h)
        total_w = max(0, ((w + sw - 1) // sw - 1) * sw + dw * (kw - 1) + 1 - w)
        return _same_split(total_h) + _same_split(total_w)

    def construct(self, x):
        return self.convolve(x, self.weight)

    def convolve(self, x, weight, output_scale=None):
        """The convolution with ``weight`` [C_out, C_in/group, kh, kw] in place of ``self.weight``, its result
        multiplied by the scalar ``output_scale`` (if given) before the bias is added.
        :class:`common.spectral_norm.SpectralNorm` passes ``W`` and ``1 / sigma``."""
        if not self.matmul:
            y = self.conv2d(x, weight)
            if output_scale is not None:
                y = y * ops.cast(output_scale, y.dtype)
            return self.bias_add(y, self.bias) if self.has_bias else y
        b, c, h, w = x.shape
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
        top, bottom, left, right = self._padding(h, w)
        n, g = self.out_channels, self.group
        if g == 1 and not self.pointwise:
            if (top, left) != self.unfold_pads or (bottom, right) != self.unfold_pads:
                x = ops.pad(x, (left, right, top, bottom))
            y = self.im2col_matmul(x, weight)
        else:
            if top != bottom or left != right:
                x = ops.pad(x, (left, right, top, bottom))
                h, w, ph, pw = h + top + bottom, w + left + right, 0, 0
            else:
                ph, pw = top, left
            out_h, out_w = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
            if self.pointwise:  # 1x1: the input is its own im2col matrix
                cols = x.reshape(b, c, h * w)
            else:
                cols = ops.unfold(x, self.kernel, self.dilations, (ph, pw), self.strides)  # [B, C*kh*kw, H'*W']
            if b > 1:
                cols = cols.transpose(1, 0, 2)
            if g == 1:
                y = self.mm(weight.reshape(n, -1), cols.reshape(c * kh * kw, b * out_h * out_w))
            else:
                y = self.bmm(weight.reshape(g, n // g, -1), cols.reshape(g, c // g * kh * kw, b * out_h * out_w))
            if b > 1:
                y = y.reshape(n, b, out_h, out_w).transpose(1, 0, 2, 3)
            else:
                y = y.reshape(1, n, out_h, out_w)
        if output_scale is not None:
            y = y * ops.cast(output_scale, y.dtype)
        if self.has_bias:
            y = y + self.bias.reshape(1, -1, 1, 1)
        return y


class ConvTranspose2d(nn.Conv2dTranspose):
    """``nn.Conv2dTranspose`` that, switched by :func:`use_conv_impl`, runs as one MatMul + Col2Im.

    Unequal paddings (how :mod:`pix2pix.src.model` expresses PyTorch's ``output_padding``) and ``same``
    are applied by cropping the full output.
    [B, C_in, H, W] -> [B, C_out, (H-1)*s + d*(k-1) + 1 - pad_top - pad_bottom, ...].
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.mm = ops.MatMul(transpose_a=True)
        self.kernel, self.strides, self.dilations = _pair(self.kernel_size), _pair(self.stride), _pair(self.dilation)
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
        pads = _explicit_padding(self)
        if pads is None:  # same: output H*s, the full output cropped by d*(k-1) + 1 - s
            pads = _same_split(dh * (kh - 1) + 1 - sh) + _same_split(dw * (kw - 1) + 1 - sw)
        self.has_matmul_form = self.group == 1 and min(pads) >= 0
        self.matmul = False
        top, bottom, left, right = pads
        self.fold_pads = (min(top, bottom), min(left, right))
        self.crop = (top - self.fold_pads[0], bottom - self.fold_pads[0], left - self.fold_pads[1],
                     right - self.fold_pads[1])

    def construct(self, x):
        if not self.matmul:
            return super().construct(x)
        b, c, h, w = x.shape
        n, (kh, kw), (sh, sw), (dh, dw) = self.out_channels, self.kernel, self.strides, self.dilations
        ph, pw = self.fold_pads
        out_h, out_w = (h - 1) * sh + dh * (kh - 1) + 1 - 2 * ph, (w - 1) * sw + dw * (kw - 1) + 1 - 2 * pw
        if b > 1:
            x = x.transpose(1, 0, 2, 3)
        z = self.mm(self.weight.reshape(c, n * kh * kw), x.reshape(c, b * h * w))  # [C_out*kh*kw, B*H*W]
        if b > 1:
            z = z.reshape(n * kh * kw, b, h * w).transpose(1, 0, 2)
        else:
            z = z.reshape(1, n * kh * kw, h * w)
        y = ops.fold(z, Tensor((out_h, out_w), int32), self.kernel, self.dilations, self.fold_pads, self.strides)
        top, bottom, left, right = self.crop
        if top or bottom or left or right:
            y = ops.slice(y, (0, 0, top, left), (b, n, out_h - top - bottom, out_w - left - right))
        if self.has_bias:
            y = y + self.bias.reshape(1, -1, 1, 1)
        return y
