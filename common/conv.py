"""Convolutions computed as matrix multiplies: the fast CPU path, switched per network.

Why. MindSpore's CPU convolutions run through oneDNN on plain NCHW tensors. Capped at AVX2 (see
``common/__init__.py``) oneDNN executes them as im2col + an AVX2 GEMM; at AVX-512 it selects
``jit_uni_ncsp:conv+ref``, a reference kernel ~100x slower. oneDNN's matrix multiply, however, has
AVX-512 ``brg_matmul`` kernels (~118 GFLOPS on 2 Xeon cores against 35-53 at AVX2; on a 2-core AMD EPYC a
VGG19 step is at par with native AVX2, see docs/performance.md). So the CPU convolution
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

``use_conv_impl(net, "winograd")`` is ``matmul``, except that 3x3 stride-1 layers (no dilation, no groups: every
layer of VGG, CRN and CoCosNet's SPADE blocks, most of OSMIS's) run Winograd's minimal filtering F(4x4, 3x3) or
F(2x2, 3x3) (:class:`_WinogradMatMul`; the tile chosen per call by :func:`winograd_tile`): 2.25 (F(4x4)) or 4
(F(2x2)) multiplies per output instead of 9, in the forward and in both gradients; 2.9-3.2x faster per layer than
Im2Col + MatMul on CRN's layers (``bench/conv_layer.py --both``). 4x4 stride-1 layers (the PatchGAN discriminators'
last two) run F(3x3, 4x4): 4 multiplies per output instead of 16. The sums are exact in real arithmetic; in float32
they differ from the direct ones by up to ~2e-5 of the output's scale for F(4x4) and ~2e-6 for F(2x2) (direct Im2Col
+ MatMul: ~1e-6), as cuDNN's and oneDNN's Winograd convolutions do. ``matmul`` keeps the direct sums. Where the
process's MatMuls run in bf16 (:func:`bf16_matmuls`, ``init_runtime(precision="bf16")``) only F(2x2) is used: its
output transform amplifies the products' rounding far less (see :func:`winograd_tile`). A layer's bias is added
by the compiled output transform as it writes y (:class:`_WinogradMatMulBias`), not by a separate ``BiasAdd`` pass.

``use_conv_impl(net, "onednn")`` runs each :class:`Conv2d` / :class:`ConvTranspose2d` on oneDNN's own convolution
kernels, called directly from this project's compiled library (``common/kernels/onednn_conv.cc``, the
``libdnnl.so.3`` that MindSpore ships): asked for the layouts it prefers, oneDNN runs its jit AVX-512 direct
convolutions (forward, backward data, backward weights) where MindSpore's own operator finds only the reference
kernel; each call reorders the plain NCHW operands into oneDNN's blocked layout and back. Same direct sums as
native (tests compare values and gradients with ``nn.Conv2d``), the memory of the native operator (only the input
is kept), any padding, groups and dilation, the bias added inside the forward and its gradient inside the weight
gradient's pass; transposed convolutions run as the backward-data pass. A 5x256x64x64 3x3 layer's forward and
gradients take 0.52x the native operator's time, a 5x64x32x32 one 0.4x (``bench/conv_layer.py --paths``); no
Winograd, so at f32 the 3x3-heavy CRN, VGG and CoCosNet stay faster on ``winograd`` (0.69x onednn's time on the
first layer) while OSMIS's many small layers gain (docs/performance.md). Under :func:`bf16_matmuls` its operands
are rounded to bf16 and AMX kernels run (sums and results in f32; the first layer: 0.48x winograd's bf16 time). ``same``
padding with a stride (the split depends on the input size) takes the matmul form; without the compiled library
the whole path does.

``use_conv_impl(net, "mixed")`` is ``winograd``, except that each :class:`Conv2d` call takes oneDNN's kernels where
:func:`onednn_is_faster` says they win for its geometry (a compile-time choice from the input's shape, like the
Winograd tile): strided layers with at least 256 output pixels per call and layers with fewer than 16 output
channels, where neither Winograd nor one large MatMul applies. pix2pix's step mixes them: its 4x4 stride-2 layers at
32x32 and above ran in 0.55-0.75x the matmul path's time inside the step, its PatchGAN's 512->1 layer in 0.4x, while
its 256->512 4x4 stride-1 layer stays on Winograd (0.66x oneDNN's time) and the transposed convolutions on MatMul +
Col2Im (level in total). Values are the direct sums wherever oneDNN runs, Winograd's elsewhere.

Coverage of the matmul path: any padding (``pad`` with one value, per dimension ``(top, bottom, left,
right)``, unequal sides included; ``valid``; ``same``), any kernel and stride, dilation, and for
:class:`Conv2d` groups. The only fallback, which stays on the native operator and is not counted by
:func:`use_conv_impl`: a :class:`ConvTranspose2d` with ``group > 1``, or with ``pad_mode="same"`` and a
kernel smaller than its stride; no network in this repository has either. Switch a network before its
first call: a compiled graph keeps the path it was compiled with. ``common.export.prepare_for_export``
switches every cell back to native, so exported graphs hold ``Conv`` / ``ConvTranspose``. Inference networks
(``common.drivers.load_inference``, the metric scorers) then store each Im2Col / Col2Im layer's weight as its
MatMul's matrix (:func:`pack_weights`): graph mode would copy a 4-D weight into that view at every call.

Im2Col and Col2Im (:class:`Im2Col`, :class:`Col2Im`: every matmul / Winograd layer runs one of each per sample,
or more) run on this project's compiled CPU kernels (``common/kernels/im2col.cc``, :mod:`common.cpu_kernels`),
2-6x faster than MindSpore 2.10's, wherever a C++ compiler is found; else on MindSpore's (same values). So do
the Winograd layers' tile transforms (``common/kernels/winograd.cc``: gathered and transformed in one pass;
else Im2Col / Col2Im and a MatMul with the [a*a, a*a] Kronecker matrix).

Memory: a :class:`Conv2d` keeps only its input for the backward, as the native operator does; its im2col
matrix (``kh*kw/(sh*sw)`` times one sample's input: 4x for pix2pix's 4x4 stride-2 layers, 9x for 3x3
stride 1) exists one sample at a time and is rebuilt in the backward (:class:`_Im2ColMatMul`); the Winograd
transform of the input (2.25x the input for F(4x4), 4x for F(2x2)) is rebuilt likewise, for the whole batch at
once on the compiled kernels. 1x1 convolutions (no matrix) and grouped ones (autodiff, batched) are the
exceptions.
"""
import os

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, int32, nn, ops

from common import cpu_kernels
from common.layers import CompiledCell, reduce_sum
from common.winograd import winograd_factors, winograd_matrices

__all__ = ["CONV_IMPLS", "Conv2d", "ConvTranspose2d", "Unfold", "Im2Col", "Col2Im", "ScaledBiasAdd", "use_conv_impl",
           "use_compiled_kernels", "use_inference_conv_impl", "pack_weights", "winograd_tile", "onednn_is_faster",
           "bf16_matmuls"]

CONV_IMPLS = ("native", "matmul", "winograd", "onednn", "mixed")


def bf16_matmuls():
    """True when oneDNN may compute this process's float32 MatMuls with bf16 inputs
    (``ONEDNN_DEFAULT_FPMATH_MODE=BF16``: set by ``init_runtime(precision="bf16")``, or by you)."""
    return os.environ.get("ONEDNN_DEFAULT_FPMATH_MODE", "").upper() == "BF16"


def _kernel_library(compiled_kernels):
    """The compiled kernels' path where they run (CPU, built, wanted), else None."""
    return cpu_kernels.library() if compiled_kernels and ms.get_context("device_target") == "CPU" else None


def use_compiled_kernels(net):
    """Hand every :class:`common.layers.CompiledCell` in ``net`` the compiled kernels (on CPU, where they can be
    built; else MindSpore's operators), as :func:`use_conv_impl` does for a network's: for a train step whose loss
    cells hold such cells (OSMIS's augmentation and diversity term). Call it before ``net`` first runs."""
    library = _kernel_library(True)
    for _, cell in net.cells_and_names():
        if isinstance(cell, CompiledCell):
            cell.use_library(library)


def use_conv_impl(net, impl, keep_transforms=False, compiled_kernels=True):
    """Switch every :class:`Conv2d` / :class:`ConvTranspose2d` / :class:`Unfold` in ``net`` to ``impl`` (one of
    :data:`CONV_IMPLS`), and, on CPU, its convolutions' Im2Col / Col2Im and Winograd transforms and its
    :class:`common.layers.CompiledCell` cells (LeakyReLU, Softmax, NearestUpsample, AffineResample, PairwiseMeanAbs,
    spectral norms' PowerIteration) to the project's compiled kernels (:mod:`common.cpu_kernels`; with
    ``compiled_kernels=False``, or where they cannot be built, to MindSpore's own operators, as exported graphs need).

    Returns how many convolutions now run off the native operator, as matrix multiplies or on oneDNN's kernels
    (0 for ``native``; cells without a matmul form, see the module docstring, stay native and are not counted;
    :class:`Unfold` cells switch but are not convolutions); with ``winograd``, the 3x3 stride-1 ones among them use
    :func:`winograd_tile`'s choice per call (F(2x2) at most under :func:`bf16_matmuls`), and
    ``keep_transforms=True`` makes them keep their transformed inputs for the backward instead of recomputing them
    (:class:`_WinogradMatMul`: faster, more memory; for training steps that fit); with ``onednn``, the cells
    without a oneDNN form (``same`` padding with a stride) and every cell where the compiled library is missing
    take the matmul form; with ``mixed``, each :class:`Conv2d` with a oneDNN form chooses per call between oneDNN's
    kernels and the ``winograd`` path (:func:`onednn_is_faster`), the other cells take ``winograd`` (all of them do
    where the compiled library is missing). Call it before ``net`` first runs in graph mode: a compiled graph keeps
    the path it was compiled with (a change to a net that has one is an error; one compiled through an enclosing
    cell, e.g. a train step, cannot be seen here). Off ``native``, a plain ``nn.Conv2d`` / ``nn.Conv2dTranspose``
    in ``net`` is an error: it could not follow.
    """
    if impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl={impl!r} is not supported; choose one of {CONV_IMPLS}")
    cells = list(net.cells_and_names())
    if impl != "native":
        plain = [name or type(net).__name__ for name, cell in cells
                 if isinstance(cell, (nn.Conv2d, nn.Conv2dTranspose))
                 and not isinstance(cell, (Conv2d, ConvTranspose2d))]
        if plain:
            raise TypeError(f"{type(net).__name__}: cells {plain[:5]} are plain nn.Conv2d / nn.Conv2dTranspose and "
                            f"cannot take the {impl} convolution path; build them with common.conv.Conv2d / "
                            f"ConvTranspose2d (same parameters)")
    convs = [cell for _, cell in cells if isinstance(cell, (Conv2d, ConvTranspose2d, Unfold))]
    library = _kernel_library(compiled_kernels)
    onednn = impl == "onednn" and library is not None  # else the matmul path stands in
    mixed = impl == "mixed" and library is not None  # else the winograd path
    wanted = [(impl != "native" and cell.has_matmul_form and not (onednn and cell.has_onednn_form),
               impl in ("winograd", "mixed") and cell.has_winograd_form, onednn and cell.has_onednn_form,
               mixed and cell.has_onednn_form and isinstance(cell, Conv2d)) for cell in convs]
    keep = bool(keep_transforms) and impl in ("winograd", "mixed")
    largest_tile = 2 if bf16_matmuls() else 4
    on_library = [cell for _, cell in cells if isinstance(cell, CompiledCell) or (
        impl != "native" and isinstance(cell, (_Columns, _WinogradMatMul))) or (
        (onednn or mixed) and isinstance(cell, _OnednnConv))]  # the others do not run
    changed = any((cell.matmul, cell.winograd, cell.onednn, cell.mixed) != want
                  for cell, want in zip(convs, wanted)) or any(
        (cell.keep_transforms, cell.largest_tile) != (keep, largest_tile)
        for cell in convs if cell.has_winograd_form) or any(cell.library != library for cell in on_library)
    packed = [cell for cell in convs if getattr(cell, "packed", False)]
    if changed and packed:
        path = "winograd" if packed[0].winograd else "matmul"
        raise RuntimeError(f"{type(net).__name__}'s weights are packed for inference (pack_weights) on the {path} "
                           f"path; build and load it again for {impl!r}")
    if changed and any(getattr(cell, "compile_cache", None) for _, cell in cells):
        raise RuntimeError(f"{type(net).__name__} already ran as a compiled graph, which keeps its convolution path; "
                           f"call use_conv_impl(net, {impl!r}) right after building the network")
    for cell, (matmul, winograd, on_onednn, per_call) in zip(convs, wanted):
        cell.matmul, cell.winograd, cell.onednn, cell.mixed = matmul, winograd, on_onednn, per_call
        if cell.has_winograd_form:
            cell.keep_transforms = keep
            for winograd in cell.winograd_cells():
                winograd.keep_transforms = keep
            cell.largest_tile = largest_tile
    for cell in on_library:
        cell.use_library(library)
    return sum(matmul or on_onednn for (matmul, _, on_onednn, _), cell in zip(wanted, convs)
               if not isinstance(cell, Unfold))


def use_inference_conv_impl(net, impl):
    """Switch ``net``, a network that only runs forwards (inference, metric scorers), to ``impl`` and pack its
    matmul-path weights (:func:`use_conv_impl`, then :func:`pack_weights`); returns how many were packed.

    ``mixed`` takes ``winograd`` here: its per-layer rule (:func:`onednn_is_faster`) was measured on training
    steps, forward and both gradients, where oneDNN's kernels win on the strided layers. A forward alone pays
    their reorders with no gradient to share them: pix2pix's generator at 256x256 took 152 / 122 ms per image
    on ``mixed`` against 124 / 102 ms on ``winograd``, alternating (``bench/inference.py --model pix2pix
    --backends mindspore --cpu_conv mixed|winograd``, Zen 4).
    """
    use_conv_impl(net, "winograd" if impl == "mixed" else impl)
    return pack_weights(net)


def pack_weights(net):
    """Store the weight of every convolution of ``net`` that runs as Im2Col + MatMul (or MatMul + Col2Im) as that
    MatMul's matrix, for inference: :class:`Conv2d` [C_out, C_in*kh*kw], :class:`ConvTranspose2d`
    [C_in, C_out*kh*kw]; same values, same Parameter names.

    MindSpore's graph mode copies a 4-D weight Parameter into its matrix view at every call (a ``Reshape``
    kernel: 22 ms of a 103 ms pix2pix generator forward at 256x256, ``bench/profile_step.py --inference``);
    a 2-D Parameter is read in place. Native, Winograd-path, grouped and ``mixed`` layers (which may run on
    oneDNN's kernels) keep their 4-D weights. A
    packed network is for inference: load its checkpoint and pack it before its first call; its packed weights
    are frozen, and :func:`common.checkpoint.save_cell` and :func:`use_conv_impl` (another path) refuse it.
    Returns how many weights were packed.
    """
    count = 0
    for _, cell in net.cells_and_names():
        if isinstance(cell, (Conv2d, ConvTranspose2d)) and cell.matmul and not cell.winograd and cell.group == 1 \
                and not cell.mixed and not cell.packed:
            w = cell.weight
            matrix = w.asnumpy().reshape(w.shape[0], -1)
            cell.weight = Parameter(Tensor(matrix, w.dtype), name=w.name, requires_grad=False)
            cell.packed = True
            count += 1
    return count


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


def samples(x):
    """The samples of a batch, each [1, ...]: ``(x,)`` for batch 1, else one Split (MindSpore 2.10's CPU StridedSlice
    copies one [1, 157, 128, 128] sample of a batch of 2 in ~50 ms, Split both in ~3 ms)."""
    return (x,) if x.shape[0] == 1 else ops.split(x, 1, axis=0)


def _input_channels(w, first, stop):
    """``w[:, first:stop]``; ``w`` itself (no copy) when that is every input channel."""
    return w if (first, stop) == (0, w.shape[1]) else w[:, first:stop]


def _zero_pad_channels(dx, before, after):
    """``dx`` [B, K, H, W] with ``before`` zero channels in front and ``after`` behind (no copy when both are 0)."""
    return ops.pad(dx, (0, 0, 0, 0, before, after)) if before or after else dx


def _aot_pair(path, kernel, dilation, padding, stride, tap_major):
    """The compiled Im2Col and Col2Im (``common/kernels/im2col.cc``) of one geometry as ``ops.Custom``
    primitives, each the other's gradient."""
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = kernel, dilation, padding, stride

    def cols_shape(x, cfg):
        out_h, out_w = (x[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (x[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        return [x[0], x[1] * kh * kw, out_h * out_w]

    def image_shape(cols, cfg, like):
        return [cols[0], cols[1] // (kh * kw), like[0], like[1]]

    im2col = ops.Custom(f"{path}:Im2Col", out_shape=cols_shape, out_dtype=lambda x, cfg: x, func_type="aot")
    col2im = ops.Custom(f"{path}:Col2Im", out_shape=image_shape, out_dtype=lambda cols, cfg, like: cols,
                        func_type="aot")

    def im2col_bprop(x, cfg, out, dout):
        return col2im(dout, cfg, ops.zeros(x.shape[2:], ms.uint8)), ops.zeros_like(cfg)

    def col2im_bprop(cols, cfg, like, out, dout):
        return im2col(dout, cfg), ops.zeros_like(cfg), ops.zeros_like(like)

    im2col.bprop, col2im.bprop = im2col_bprop, col2im_bprop
    for op in (im2col, col2im):  # distinct attributes: PyNative reuses inferred shapes of equal primitives
        op.add_prim_attr("geometry", (kh, kw, dh, dw, ph, pw, sh, sw, int(tap_major)))
    return im2col, col2im


def _winograd_ops(path, tile, kernel, pads):
    """The compiled tile transforms (``common/kernels/winograd.cc``) of one Winograd layer as ``ops.Custom``
    primitives: input, its adjoint, output, its adjoint, output plus a per-channel bias (no autodiff:
    :class:`_WinogradMatMul` has its own backward)."""
    a, (ph, pw) = tile + kernel - 1, pads

    def tiles(out_h, out_w):  # per sample
        return -(-out_h // tile) * -(-out_w // tile)

    def input_tiles(h, w):  # per sample, from the input's size
        return tiles(h + 2 * ph - kernel + 1, w + 2 * pw - kernel + 1)

    def transformed(x, cfg, bt):
        return [a * a, x[1], x[0] * input_tiles(x[2], x[3])]

    def image(dv, cfg, bt, like):
        return [dv[2] // input_tiles(like[0], like[1]), dv[1], like[0], like[1]]

    def output(m, cfg, at, like, bias=None):
        return [m[2] // tiles(like[0], like[1]), m[1], like[0], like[1]]

    def output_adjoint(dy, cfg, at):
        return [a * a, dy[1], dy[0] * tiles(dy[2], dy[3])]

    prims = [ops.Custom(f"{path}:{name}", out_shape=shape, out_dtype=lambda x, *rest: x, func_type="aot")
             for name, shape in (("WinogradInput", transformed), ("WinogradInputAdjoint", image),
                                 ("WinogradOutput", output), ("WinogradOutputAdjoint", output_adjoint),
                                 ("WinogradOutputBias", output))]
    for prim in prims:  # distinct attributes: PyNative reuses inferred shapes of equal primitives
        prim.add_prim_attr("geometry", (tile, kernel, ph, pw))
    return prims


class _Columns(nn.Cell):
    """Im2Col / Col2Im of one geometry (kernel, dilation, symmetric padding, stride): MindSpore's kernels, or the
    compiled ones once :meth:`use_library` gave a path (:func:`use_conv_impl` does, on the matmul and Winograd
    paths on CPU; :mod:`common.cpu_kernels`). Values are the same either way.

    ``tap_major=True`` orders the matrix's rows ``tap * channels + c`` instead of ``c * taps + tap`` (the
    Winograd transforms' order): the compiled kernels write (read) that order directly, MindSpore's are followed
    (preceded) by a row Gather.
    """

    PAIR_INDEX = 0  # which of _aot_pair's primitives this cell runs

    def __init__(self, kernel, dilation, padding, stride, tap_major=False, channels=None):
        super().__init__()
        self.kernel, self.dilation, self.padding, self.stride = (_pair(v) for v in (kernel, dilation, padding, stride))
        self.tap_major = bool(tap_major)
        self.cfg = Tensor(np.array(self.kernel + self.stride + self.padding + self.dilation + (int(self.tap_major),),
                                   np.int64))
        taps = self.kernel[0] * self.kernel[1]
        if self.tap_major:  # MindSpore's kernels' rows (c, tap) -> (tap, c), and back
            self.to_tap_major, self.to_channel_major = _row_order(channels, taps), _row_order(taps, channels)
        self.library, self.custom = None, None

    def use_library(self, path):
        """Run on the compiled kernels of ``path`` (None: on MindSpore's)."""
        if path != self.library:
            self.library = path
            self.custom = None if path is None else _aot_pair(path, self.kernel, self.dilation, self.padding,
                                                              self.stride, self.tap_major)[self.PAIR_INDEX]


class Im2Col(_Columns):
    """``ops.unfold(x, kernel, dilation, padding, stride)``: [B, C, H, W] -> [B, C*kh*kw, H'*W'] (row
    ``(c*kh + i)*kw + j`` holds tap (i, j) of channel c); its gradient is :class:`Col2Im`'s sum."""

    def construct(self, x):
        if self.custom is not None:
            return self.custom(x, self.cfg)
        cols = ops.unfold(x, self.kernel, self.dilation, self.padding, self.stride)
        return ops.gather(cols, self.to_tap_major, 1) if self.tap_major else cols


class Col2Im(_Columns):
    """``ops.fold(cols, size, kernel, dilation, padding, stride)``, the adjoint of :class:`Im2Col`: sums each
    column's taps into the image. [B, C*kh*kw, H'*W'], ``size`` = (H, W) -> [B, C, H, W]."""

    PAIR_INDEX = 1

    def construct(self, cols, size):
        if self.custom is not None:
            return self.custom(cols, self.cfg, ops.zeros(size, ms.uint8))
        if self.tap_major:
            cols = ops.gather(cols, self.to_channel_major, 1)
        return ops.fold(cols, Tensor(size, int32), self.kernel, self.dilation, self.padding, self.stride)


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

    ``grad_channels=(first, stop)``: the backward computes ``dx`` for input channels ``first:stop`` (``(0, C)``:
    all), zeros for the others (see :class:`Conv2d`).

    Shapes: x [B, C, H, W] (symmetric padding ``pads`` applied by Im2Col), w [N, C, kh, kw] ->
    [B, N, H', W'].
    """

    def __init__(self, kernel, strides, dilations, pads, grad_channels):
        super().__init__()
        self.kernel, self.strides, self.dilations, self.pads = kernel, strides, dilations, pads
        self.grad_channels = grad_channels
        self.mm, self.mm_ta, self.mm_tb = ops.MatMul(), ops.MatMul(transpose_a=True), ops.MatMul(transpose_b=True)
        self.im2col, self.col2im = Im2Col(kernel, dilations, pads, strides), Col2Im(kernel, dilations, pads, strides)

    def _out_size(self, h, w):
        (kh, kw), (sh, sw), (dh, dw), (ph, pw) = self.kernel, self.strides, self.dilations, self.pads
        return (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1

    def _cols(self, x):
        """x [1, C, H, W] -> [C*kh*kw, H'*W']."""
        cols = self.im2col(x)
        return cols.reshape(cols.shape[1], cols.shape[2])

    def construct(self, x, w):
        b, _, h, wd = x.shape
        out_h, out_w = self._out_size(h, wd)
        n = w.shape[0]
        w2d = ops.depend(w, x).reshape(n, -1)
        if b == 1:
            return self.mm(w2d, self._cols(x)).reshape(1, n, out_h, out_w)
        return ops.cat([self.mm(w2d, self._cols(xi)).reshape(1, n, out_h, out_w) for xi in samples(x)])

    def bprop(self, x, w, out, dout):
        b, c, h, wd = x.shape
        out_h, out_w = self._out_size(h, wd)
        n = w.shape[0]
        first, stop = self.grad_channels
        w2d = _input_channels(ops.depend(w, dout), first, stop).reshape(n, -1)  # [N, (stop - first)*kh*kw]
        # samples() inlined, with the Split primitive: MindSpore 2.10 found the graph of a function called from this
        # bprop empty (samples() in a CRN step, ops.split in OSMIS's batch-5 step)
        if b == 1:
            xs, dys = (ops.depend(x, dout),), (dout,)
        else:
            xs, dys = ops.Split(0, b)(ops.depend(x, dout)), ops.Split(0, b)(dout)
        dw, dxs = None, []
        for i in range(b):
            dy = dys[i].reshape(n, out_h * out_w)
            part = self.mm_tb(dy, self._cols(xs[i]))  # [N, C*kh*kw]
            dw = part if dw is None else dw + part
            dcols = self.mm_ta(w2d, dy)  # [(stop - first)*kh*kw, H'*W']
            dcols = dcols.reshape(1, dcols.shape[0], dcols.shape[1])
            dxs.append(self.col2im(dcols, (h, wd)))
        dx = dxs[0] if b == 1 else ops.cat(dxs)
        return _zero_pad_channels(dx, first, c - stop), dw.reshape(w.shape)


def winograd_tile(batch, in_channels, out_h, out_w, largest=4, kernel=3):
    """The Winograd tile m for a ``kernel`` x ``kernel`` stride-1 layer on the ``winograd`` path (4 or 2 for 3x3,
    3 for 4x4), or 0 for Im2Col + MatMul.

    Measured on a 2-core AVX-512 CPU (forward + both gradients, one layer; ``bench/conv_layer.py --both``):
    F(4x4) is 2.9x faster than Im2Col + MatMul from ~1,000 output pixels per call (1024 channels at 64x128:
    688 against 1962 ms); F(2x2) below that (1044->1024 at 16x32: 86 ms against 145; a noisy size, another run
    gave 143 against 119). The thresholds themselves (F(2x2) from 128 pixels, F(4x4) from 1,024, where its 36
    transformed kernels stop costing more than its products save, and at least 16 input channels) come from
    one-off measurements that forced each tile; below them the transforms cost more than they save. Output
    sides must be multiples of m (no padding to a whole tile: an odd map runs Im2Col + MatMul).

    4x4 stride-1 layers (pix2pix's and CoCosNet's PatchGAN discriminators end with two) take F(3x3, 4x4), 4
    multiplies per output instead of 16, on any map size (the last tiles run past the map and are cropped), from
    512 output pixels per call: 256->512 channels at 32x32 took 36-49 ms against 43-69 ms direct, at 24x24 25-28
    against 27-45, and at 16x16 (225 output pixels, where the 36 transformed kernels cost more than the products
    save) 20 against 11 (``bench/conv_layer.py --kernel 4 --both``, noisy 2-core Xeon).

    ``largest=2`` rules F(4x4) and F(3x3, 4x4) out; :func:`use_conv_impl` passes it under bf16 MatMuls, where
    F(4x4)'s output transform (entries up to 8) amplifies the products' bf16 rounding: one 96-channel layer's output
    was off by 7.9e-2 of its scale, against 4.1e-3 with F(2x2) and 2.6e-3 with Im2Col + MatMul (the script of
    ``tests/test_conv.py::test_bf16_precision_*``).
    """
    pixels = batch * out_h * out_w
    if in_channels < 16:
        return 0
    if kernel == 4:
        return 3 if largest == 4 and pixels >= 512 else 0
    if largest == 4 and pixels >= 1024 and out_h % 4 == 0 and out_w % 4 == 0:
        return 4
    if pixels >= 128 and out_h % 2 == 0 and out_w % 2 == 0:
        return 2
    return 0


def onednn_is_faster(batch, out_channels, out_h, out_w, *, winograd_tile_size, pointwise):
    """On the ``mixed`` path: whether a :class:`Conv2d` call runs on oneDNN's kernels rather than the ``winograd``
    path (Winograd tile ``winograd_tile_size``, 0 for Im2Col + MatMul; ``pointwise``: a 1x1 stride-1 layer, one
    MatMul over the batch, kept on it).

    Measured inside pix2pix's 256x256 step on a 2-core AMD EPYC (Zen 4), forward and both gradients of each layer
    (``bench/profile_step.py --model pix2pix --cpu_conv winograd|onednn``, the per-layer sums of the kernels):
    4x4 stride-2 layers with 32x32 outputs and more took 0.55-0.75x the Im2Col + MatMul time on oneDNN (64->128
    from 128x128 to 64x64: 17 against 28 ms), level at 16x16 outputs (18.5 against 20 ms), slower below (512->512
    with 4x4 and 2x2 outputs: 10 against 4-5 ms); the PatchGAN's 512->1 4x4 stride-1 layer 10 against 26 ms on
    Winograd F(3x3, 4x4) (one output channel leaves the transforms and the MatMul nothing to share), while its
    256->512 one took 164 against 108 ms on Winograd. Hence: oneDNN for fewer than 16 output channels, else for
    the layers Winograd does not take and that have at least 256 output pixels per call (batch included).
    """
    if pointwise:
        return False
    if out_channels < 16:
        return True
    return winograd_tile_size == 0 and batch * out_h * out_w >= 256


def _row_order(rows, groups):
    """Gather indices that regroup the rows of a [rows * groups, T] matrix from ``r * groups + g`` to
    ``g * rows + r`` order (channel-major to tap-major and back)."""
    return Tensor(np.arange(rows * groups).reshape(rows, groups).T.ravel().astype(np.int32))


class _WinogradMatMul(nn.Cell):
    """r x r stride-1 convolution (r = ``kernel``, 3 or 4) as Winograd F(m x m, r x r): per sample, the input's
    a x a tiles (a = m + r - 1, stride m) and the kernels go to the transform domain, where the convolution is a^2
    independent matrix products ``U_k [N, C] @ V_k [C, T]`` (one ``BatchMatMul``, T = tiles); the products return to
    m x m output tiles. The tile transforms run on the compiled kernels (:meth:`use_library`), else as Im2Col /
    Col2Im and a MatMul with the Kronecker matrix. Multiplies per output: a^2 / m^2 (4 for m = 2, 2.25 for m = 4; 4
    for F(3x3, 4x4)) against r^2 for im2col + GEMM, in the forward and in both gradients. The backward needs ``V``
    for ``dU_k = dM_k @ V_k^T`` (and ``dV_k = U_k^T @ dM_k`` for the input): by default it keeps only ``x`` and
    recomputes ``V`` (as :class:`_Im2ColMatMul`); with ``keep_transforms`` (:func:`use_conv_impl`) the forward
    returns ``V`` beside ``y`` and the backward reuses it, for 2.25x (F(4x4)) or 4x (F(2x2)) the layer
    input kept until the backward (CoCosNet's 256x256 iteration: 19.0 -> 18.3 s, 14.7 -> 16.1 GB,
    ``bench/train_step.py --model cocosnet --size 256``).

    ``grad_channels=(first, stop)``: the backward computes ``dx`` for input channels ``first:stop`` (``(0, C)``:
    all), zeros for the others (see :class:`Conv2d`).

    Shapes: x [B, C, H, W] (p: symmetric zero padding ``pads``; the last tiles may run past the output and are
    cropped), w [N, C, r, r] -> y [B, N, H + 2p - r + 1, W + 2p - r + 1]; with ``keep_transforms``, the tuple of
    y and the transformed input: on the compiled kernels one V [a*a, C, B*T] for the whole batch (one BatchMatMul
    per layer and direction), else the B per-sample V [a*a, C, T]; T = ceil(out_h / m) * ceil(out_w / m).
    """

    def __init__(self, in_channels, out_channels, tile, pads, grad_channels, kernel=3):
        super().__init__()
        self.tile, self.pads, self.kernel = tile, pads, kernel
        self.grad_channels = grad_channels
        first, stop = grad_channels
        self.keep_transforms = False
        k_in, k_w, k_out = winograd_matrices(tile, kernel)
        self.k_in, self.k_w, self.k_out = (Tensor(k.astype(np.float32)) for k in (k_in, k_w, k_out))
        self.mm, self.mm_ta, self.mm_tb = ops.MatMul(), ops.MatMul(transpose_a=True), ops.MatMul(transpose_b=True)
        self.bmm, self.bmm_ta = ops.BatchMatMul(), ops.BatchMatMul(transpose_a=True)
        self.bmm_tb = ops.BatchMatMul(transpose_b=True)
        a = tile + kernel - 1  # rows of the tile matrices: (tap, channel)
        self.input_tiles = Im2Col(a, 1, pads, tile, tap_major=True, channels=in_channels)
        self.input_untiles = Col2Im(a, 1, pads, tile, tap_major=True, channels=stop - first)
        self.output_tiles = Im2Col(tile, 1, 0, tile, tap_major=True, channels=out_channels)
        self.output_untiles = Col2Im(tile, 1, 0, tile, tap_major=True, channels=out_channels)
        bt, _, at = winograd_factors(tile, kernel)
        self.bt, self.at = Tensor(bt.astype(np.float32)), Tensor(at.astype(np.float32))
        self.cfg = Tensor(np.array((tile, kernel) + tuple(pads), np.int64))
        self.use_library(None)

    def use_library(self, path):
        """Run the tile transforms on the compiled kernels of ``path`` (None: Im2Col / Col2Im and MatMuls with the
        Kronecker matrices, the last output tiles completed by zero padding and cropped)."""
        self.library, self.compiled_transforms = path, path is not None
        ops_ = _winograd_ops(path, self.tile, self.kernel, self.pads) if self.compiled_transforms else (None,) * 5
        self.transform, self.transform_adjoint, self.untransform, self.untransform_adjoint, self.untransform_bias = ops_

    def _padding_to_whole_tiles(self, out_h, out_w):
        """Rows and columns of zeros after an out_h x out_w output that complete its last tiles."""
        return (-out_h) % self.tile, (-out_w) % self.tile

    def _input_transform(self, x):
        """x [1, C, H, W] -> V [a*a, C, T] (on MindSpore's kernels)."""
        a, c = self.tile + self.kernel - 1, x.shape[1]
        eh, ew = self._padding_to_whole_tiles(*self._out_size(x.shape[2], x.shape[3]))
        if eh or ew:
            x = ops.pad(x, (0, ew, 0, eh))
        cols = self.input_tiles(x)  # [1, a*a*C, T]
        t = cols.shape[2]
        return self.mm(self.k_in, cols.reshape(a * a, c * t)).reshape(a * a, c, t)

    def _out_size(self, h, w):
        return h + 2 * self.pads[0] - self.kernel + 1, w + 2 * self.pads[1] - self.kernel + 1

    def _weight_transform(self, w):
        """w [N, C, r, r] -> U [a*a, N, C]."""
        n, c = w.shape[0], w.shape[1]
        return self.mm_tb(self.k_w, w.reshape(n * c, self.kernel ** 2)).reshape(self.k_w.shape[0], n, c)

    def _output_transform(self, m, out_h, out_w):
        """M [a*a, N, T] -> y [1, N, out_h, out_w] (on MindSpore's kernels)."""
        taps, n, t = m.shape
        p = self.tile
        eh, ew = self._padding_to_whole_tiles(out_h, out_w)
        y = self.mm(self.k_out, m.reshape(taps, n * t)).reshape(1, p * p * n, t)
        y = self.output_untiles(y, (out_h + eh, out_w + ew))
        return ops.slice(y, (0, 0, 0, 0), (1, n, out_h, out_w)) if eh or ew else y

    def _output_transform_adjoint(self, dy):
        """dy [1, N, out_h, out_w] -> dM [a*a, N, T] (on MindSpore's kernels)."""
        n, p = dy.shape[1], self.tile
        eh, ew = self._padding_to_whole_tiles(dy.shape[2], dy.shape[3])
        if eh or ew:
            dy = ops.pad(dy, (0, ew, 0, eh))
        cols = self.output_tiles(dy)  # [1, p*p*N, T]
        t = cols.shape[2]
        return self.mm_ta(self.k_out, cols.reshape(p * p, n * t)).reshape(self.k_out.shape[1], n, t)

    def _input_transform_adjoint(self, dv, h, w):
        """dV [a*a, C, T] -> dx [1, C, h, w] (on MindSpore's kernels)."""
        taps, c, t = dv.shape
        eh, ew = self._padding_to_whole_tiles(*self._out_size(h, w))
        cols = self.mm_ta(self.k_in, dv.reshape(taps, c * t)).reshape(1, taps * c, t)
        dx = self.input_untiles(cols, (h + eh, w + ew))
        return ops.slice(dx, (0, 0, 0, 0), (1, c, h, w)) if eh or ew else dx

    def construct(self, x, w):
        return self._forward(x, w, None)

    def _forward(self, x, w, bias):
        b, _, h, wd = x.shape
        out_h, out_w = self._out_size(h, wd)
        u = self._weight_transform(ops.depend(w, x))
        if self.compiled_transforms:  # the whole batch at once, its samples' tiles side by side: V [a*a, C, B*T]
            v = self.transform(x, self.cfg, self.bt)
            like = ops.zeros((out_h, out_w), ms.uint8)
            if bias is None:
                y = self.untransform(self.bmm(u, v), self.cfg, self.at, like)
            else:
                y = self.untransform_bias(self.bmm(u, v), self.cfg, self.at, like, bias)
            return (y, v) if self.keep_transforms else y
        vs = [self._input_transform(xi) for xi in samples(x)]
        ys = [self._output_transform(self.bmm(u, v), out_h, out_w) for v in vs]
        y = ys[0] if b == 1 else ops.cat(ys)
        if bias is not None:
            y = ops.bias_add(y, bias)
        return (y,) + tuple(vs) if self.keep_transforms else y

    def bprop(self, x, w, out, dout):
        return self._gradients(x, w, out, dout)

    def _output_gradient(self, dout):
        """dy of ``dout``: with ``keep_transforms`` the forward returned (y, transformed inputs)."""
        return dout[0] if self.keep_transforms else dout

    def _gradients(self, x, w, out, dout):
        """(dx, dw) of :meth:`_forward`."""
        b, c, h, wd = x.shape
        first, stop = self.grad_channels
        dy = self._output_gradient(dout)
        u = self._weight_transform(_input_channels(ops.depend(w, dy), first, stop))  # [a*a, N, stop - first]
        if self.compiled_transforms:
            dm = self.untransform_adjoint(dy, self.cfg, self.at)  # [a*a, N, B*T]
            v = out[1] if self.keep_transforms else self.transform(ops.depend(x, dy), self.cfg, self.bt)
            du = self.bmm_tb(dm, v)  # [a*a, N, C]: summed over every sample's tiles
            dx = self.transform_adjoint(self.bmm_ta(u, dm), self.cfg, self.bt, ops.zeros((h, wd), ms.uint8))
            dw = self.mm_ta(du.reshape(du.shape[0], -1), self.k_w)  # [N*C, r*r]
            return _zero_pad_channels(dx, first, c - stop), dw.reshape(w.shape)
        if b == 1:  # samples() inlined with the Split primitive, as in _Im2ColMatMul.bprop
            xs, dys = (ops.depend(x, dy),), (dy,)
        else:
            xs, dys = ops.Split(0, b)(ops.depend(x, dy)), ops.Split(0, b)(dy)
        du, dxs = None, []
        for i in range(b):
            dm = self._output_transform_adjoint(dys[i])  # [a*a, N, T]
            v = out[1 + i] if self.keep_transforms else self._input_transform(xs[i])
            part = self.bmm_tb(dm, v)  # [a*a, N, C]
            du = part if du is None else du + part
            dxs.append(self._input_transform_adjoint(self.bmm_ta(u, dm), h, wd))
        taps, n, _ = du.shape
        dw = self.mm_ta(du.reshape(taps, n * c), self.k_w)  # [N*C, r*r]
        return _zero_pad_channels(dxs[0] if b == 1 else ops.cat(dxs), first, c - stop), dw.reshape(w.shape)


class _WinogradMatMulBias(_WinogradMatMul):
    """:class:`_WinogradMatMul` plus the convolution's bias [N], added by the output transform (one pass over y
    fewer than a separate ``BiasAdd``: CoCosNet's 256x256 inference spent 0.26 of 6.0 s in those); its
    gradient sums dy over the batch and the map. x [B, C, H, W], w [N, C, r, r], bias [N] -> y [B, N, H', W']."""

    def construct(self, x, w, bias):
        return self._forward(x, w, bias)

    def bprop(self, x, w, bias, out, dout):
        return self._gradients(x, w, out, dout) + (ops.reduce_sum(self._output_gradient(dout), (0, 2, 3)),)


class _OnednnConv(nn.Cell):
    """One convolution geometry on oneDNN's own convolution kernels (``common/kernels/onednn_conv.cc``), forward
    and backward: x [B, C, H, W], w [O, C/g, kh, kw] -> [B, O, H', W'];
    :class:`_OnednnConvTranspose` is its adjoint, the transposed convolution.

    oneDNN picks its blocked layouts (jit AVX-512 direct convolutions at f32; under :func:`bf16_matmuls` the
    operands are rounded to bf16 and AMX kernels run, sums and results in f32). Memory as the native
    operator: the input is kept for the weight gradient; the reordered copies live in per-thread buffers.
    ``pads`` = (top, bottom, left, right) zero padding of the convolution (any sides).
    """

    def __init__(self, kernel, strides, dilations, pads, groups):
        super().__init__()
        (kh, kw), (sh, sw), (dh, dw), (top, bottom, left, right) = kernel, strides, dilations, pads
        self.geometry = (sh, sw, top, bottom, left, right, dh, dw, groups)
        self.library = None  # use_library sets it, the operators and their cfg (the geometry and the bf16 flag)

        def conv_size(size, k, s, d, before, after):
            return (size + before + after - d * (k - 1) - 1) // s + 1

        self.conv_shape = lambda x, w, cfg: [x[0], w[0], conv_size(x[2], kh, sh, dh, top, bottom),
                                            conv_size(x[3], kw, sw, dw, left, right)]

    def use_library(self, path):
        """Build the three operators from the compiled library ``path`` (:mod:`common.cpu_kernels`)."""
        self.library = path
        self.cfg = Tensor(np.array(self.geometry + (int(bf16_matmuls()),), np.int64))
        self.forward = ops.Custom(f"{path}:OnednnConv", out_shape=self.conv_shape, out_dtype=lambda x, w, cfg: x,
                                  func_type="aot")
        self.backward_data = ops.Custom(f"{path}:OnednnConvData", out_dtype=lambda dy, w, cfg, like: dy,
                                        out_shape=lambda dy, w, cfg, like: [dy[0], w[1] * self.geometry[8],
                                                                            like[0], like[1]], func_type="aot")
        self.backward_weights = ops.Custom(f"{path}:OnednnConvWeights", out_shape=lambda x, dy, w, cfg: w,
                                           out_dtype=lambda x, dy, w, cfg: x, func_type="aot")
        for op in (self.forward, self.backward_data, self.backward_weights):  # PyNative reuses equal primitives
            op.add_prim_attr("geometry", self.geometry)

    def construct(self, x, w):
        return self.forward(x, w, self.cfg)

    def bprop(self, x, w, out, dout):
        return (self.backward_data(dout, w, self.cfg, ops.zeros(x.shape[2:], ms.uint8)),
                self.backward_weights(x, dout, w, self.cfg))


class _OnednnConvBias(_OnednnConv):
    """:class:`_OnednnConv` with the bias b [O] added by the convolution's output pass and its gradient summed by
    the weight gradient's (no separate BiasAdd and reduction over the output)."""

    def use_library(self, path):
        super().use_library(path)
        self.forward_bias = ops.Custom(f"{path}:OnednnConvBias", out_dtype=lambda x, w, b, cfg: x,
                                       out_shape=lambda x, w, b, cfg: self.conv_shape(x, w, cfg), func_type="aot")
        self.backward_weights_bias = ops.Custom(f"{path}:OnednnConvWeightsBias", func_type="aot",
                                                out_shape=lambda x, dy, w, cfg: ([*w], [w[0]]),
                                                out_dtype=lambda x, dy, w, cfg: (x, x))
        for op in (self.forward_bias, self.backward_weights_bias):
            op.add_prim_attr("geometry", self.geometry)

    def construct(self, x, w, b):
        return self.forward_bias(x, w, b, self.cfg)

    def bprop(self, x, w, b, out, dout):
        dw, db = self.backward_weights_bias(x, dout, w, self.cfg)
        return self.backward_data(dout, w, self.cfg, ops.zeros(x.shape[2:], ms.uint8)), dw, db


class _OnednnConvTranspose(_OnednnConv):
    """The adjoint of :class:`_OnednnConv`'s convolution: x [B, O, H', W'], w [O, C/g, kh, kw] and ``like``
    [H, W] (any values: its shape is the output's size) -> [B, C, H, W]; ``pads`` are the convolution's."""

    def construct(self, x, w, like):
        return self.backward_data(x, w, self.cfg, like)

    def bprop(self, x, w, like, out, dout):
        return self.forward(dout, w, self.cfg), self.backward_weights(dout, x, w, self.cfg), ops.zeros_like(like)


class _BiasAdd(nn.Cell):
    """``x + bias`` per channel through BiasAdd, its bias gradient through :func:`common.layers.reduce_sum`.

    A broadcast ``x + bias.reshape(1, -1, 1, 1)`` keeps full-size buffers alive until the end of the step in
    MindSpore 2.10's CPU graphs (``common.layers.ChannelAffine`` says more); BiasAdd does not. Its own gradient
    (BiasAddGrad) sums in another order than the broadcast's ReduceSum, enough to make a two-rank data-parallel
    pix2pix run drift from one process with twice the batch (``tests/test_distributed.py``); the staged sum
    keeps them equal. Shapes: x [B, C, H, W], bias [C] -> [B, C, H, W].
    """

    def __init__(self):
        super().__init__()
        self.bias_add = ops.BiasAdd()

    def construct(self, x, bias):
        return self.bias_add(x, bias)

    def bprop(self, x, bias, out, dout):
        return dout, reduce_sum(dout, (0, 2, 3), keep_dims=False)


def _scaled_bias_add_op(path):
    """``ScaleBias`` (``common/kernels/spectral_norm.cc``) as an ``ops.Custom`` primitive whose backward is the
    compiled ``ScaleBiasGrad``."""
    forward = ops.Custom(f"{path}:ScaleBias", out_shape=lambda y, s, b: y, out_dtype=lambda y, s, b: y,
                         func_type="aot")
    gradient = ops.Custom(f"{path}:ScaleBiasGrad", out_shape=lambda dz, y, s, b: (y, s, b),
                          out_dtype=lambda dz, y, s, b: (y, s, b), func_type="aot")

    def bprop(y, s, b, out, dout):
        dy, ds, db = gradient(dout, y, s, b)
        return dy, ds, db

    forward.bprop = bprop
    return forward


class ScaledBiasAdd(CompiledCell):
    """``y * s + bias`` per channel: a spectral-norm layer's output in the ``conv(x, W) / sigma`` form
    (:class:`common.spectral_norm.SpectralNorm`). Float32 on CPU with the compiled kernels: one kernel each
    way (``ScaleBias``, ``ScaleBiasGrad``: ``dy = dz * s``, ``ds = sum(dz * y)``, ``dbias`` per channel; sums in
    double), instead of a Mul and a BiasAdd forward and about eight kernels backward. Otherwise the Mul and
    :class:`_BiasAdd`. Shapes: y [B, C, H, W], s [1] or [], bias [C] -> [B, C, H, W].
    """

    def __init__(self):
        super().__init__()
        self.add_bias = _BiasAdd()

    def compiled_op(self, path):
        return _scaled_bias_add_op(path)

    def construct(self, y, scale, bias):
        if self.custom is not None and y.dtype == ms.float32:
            return self.custom(y, scale.reshape(1), bias)
        return self.add_bias(y * scale, bias)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` that, switched by :func:`use_conv_impl`, runs as Im2Col + MatMul.

    ``grad_channels=(first, stop)`` (keyword; default: every channel) declares that only input channels
    ``first:stop`` can carry a gradient, the rest being data (e.g. a one-hot label map concatenated to an
    image): on the matmul and Winograd paths the backward computes ``dx`` for those channels and returns zeros
    for the others, as PyTorch skips the input gradient of a tensor that does not require one. The weight
    gradient, the native path and 1x1 / grouped layers are unaffected (full ``dx``).

    [B, C_in, H, W] -> [B, C_out, H', W'].
    """

    def __init__(self, *args, grad_channels=None, **kwargs):
        super().__init__(*args, **kwargs)
        first, stop = (0, self.in_channels) if grad_channels is None else grad_channels
        if not 0 <= first < stop <= self.in_channels:
            raise ValueError(f"grad_channels={grad_channels} must satisfy 0 <= first < stop <= in_channels "
                             f"({self.in_channels})")
        self.grad_channels = grad_channels = (int(first), int(stop))
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
        self.im2col_matmul = _Im2ColMatMul(self.kernel, self.strides, self.dilations, self.unfold_pads,
                                           grad_channels)
        self.add_bias = _BiasAdd()
        self.has_winograd_form = (self.has_matmul_form and self.kernel in ((3, 3), (4, 4)) and self.strides == (1, 1)
                                  and self.dilations == (1, 1) and self.group == 1)
        self.winograd = self.packed = self.keep_transforms = self.onednn = self.mixed = False
        self.largest_tile = 4
        self.has_onednn_form = self.has_matmul_form and self.pads is not None
        if self.has_onednn_form:
            self.onednn_conv = _OnednnConv(self.kernel, self.strides, self.dilations, self.pads, self.group)
        if self.has_onednn_form and self.has_bias:
            self.onednn_conv_bias = _OnednnConvBias(self.kernel, self.strides, self.dilations, self.pads, self.group)
        winograd = _WinogradMatMulBias if self.has_bias else _WinogradMatMul
        if self.has_winograd_form and self.kernel == (3, 3):
            self.winograd_f2 = winograd(self.in_channels, self.out_channels, 2, self.unfold_pads, grad_channels)
            self.winograd_f4 = winograd(self.in_channels, self.out_channels, 4, self.unfold_pads, grad_channels)
        elif self.has_winograd_form:
            self.winograd_f3 = winograd(self.in_channels, self.out_channels, 3, self.unfold_pads, grad_channels,
                                        kernel=4)

    def winograd_cells(self):
        """This layer's Winograd forms (one per tile size; none without a Winograd form)."""
        if not self.has_winograd_form:
            return []
        return [self.winograd_f2, self.winograd_f4] if self.kernel == (3, 3) else [self.winograd_f3]

    def _padding(self, h, w):
        if self.pads is not None:
            return self.pads
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
        total_h = max(0, ((h + sh - 1) // sh - 1) * sh + dh * (kh - 1) + 1 - h)
        total_w = max(0, ((w + sw - 1) // sw - 1) * sw + dw * (kw - 1) + 1 - w)
        return _same_split(total_h) + _same_split(total_w)

    def construct(self, x):
        return self.convolve(x, self.weight)

    def convolve(self, x, weight, *, add_bias=True):
        """The convolution with ``weight`` [C_out, C_in/group, kh, kw] in place of ``self.weight`` (and without the
        bias when ``add_bias=False``: :class:`common.spectral_norm.SpectralNorm` scales the output first)."""
        add_bias = add_bias and self.has_bias
        if not self.matmul and not self.onednn:
            y = self.conv2d(x, weight)
            return self.bias_add(y, self.bias) if add_bias else y
        b, c, h, w = x.shape
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
        top, bottom, left, right = self._padding(h, w)
        n, g = self.out_channels, self.group
        tile = (winograd_tile(b, c, h + top + bottom - kh + 1, w + left + right - kw + 1, self.largest_tile, kh)
                if self.winograd else 0)
        out_h = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
        out_w = (w + left + right - dw * (kw - 1) - 1) // sw + 1
        if self.onednn or (self.mixed and onednn_is_faster(b, n, out_h, out_w, winograd_tile_size=tile,
                                                           pointwise=self.pointwise)):
            return self.onednn_conv_bias(x, weight, self.bias) if add_bias else self.onednn_conv(x, weight)
        bias_added = False  # by the Winograd output transform
        if g == 1 and not self.pointwise:
            if (top, left) != self.unfold_pads or (bottom, right) != self.unfold_pads:
                x = ops.pad(x, (left, right, top, bottom))
            if tile:  # a bias is added by the output transform (a layer that has one takes zeros without add_bias)
                cell = self.winograd_f4 if tile == 4 else self.winograd_f3 if tile == 3 else self.winograd_f2
                if self.has_bias:
                    y = cell(x, weight, self.bias if add_bias else ops.zeros_like(self.bias))
                else:
                    y = cell(x, weight)
                if self.keep_transforms:  # (y, transformed inputs kept for the backward)
                    y = y[0]
                bias_added = add_bias
            else:
                y = self.im2col_matmul(x, weight)
        else:
            if top != bottom or left != right:
                x = ops.pad(x, (left, right, top, bottom))
                h, w, ph, pw = h + top + bottom, w + left + right, 0, 0
            else:
                ph, pw = top, left
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
        return self.add_bias(y, self.bias) if add_bias and not bias_added else y


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
        self.has_winograd_form = False  # use_conv_impl's flags, shared with Conv2d
        self.has_onednn_form = min(pads) >= 0
        self.add_bias = _BiasAdd()
        self.matmul = self.winograd = self.packed = self.onednn = self.mixed = False
        if self.has_onednn_form:
            self.onednn_conv = _OnednnConvTranspose(self.kernel, self.strides, self.dilations, pads, self.group)
        top, bottom, left, right = pads
        self.fold_pads = (min(top, bottom), min(left, right))
        self.crop = (top - self.fold_pads[0], bottom - self.fold_pads[0], left - self.fold_pads[1],
                     right - self.fold_pads[1])
        self.col2im = Col2Im(self.kernel, self.dilations, self.fold_pads, self.strides)

    def construct(self, x):
        if self.onednn:
            (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
            top, bottom, left, right = self.onednn_conv.geometry[2:6]
            out_h = (x.shape[2] - 1) * sh + dh * (kh - 1) + 1 - top - bottom
            out_w = (x.shape[3] - 1) * sw + dw * (kw - 1) + 1 - left - right
            y = self.onednn_conv(x, self.weight, ops.zeros((out_h, out_w), ms.uint8))
            return self.add_bias(y, self.bias) if self.has_bias else y
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
        y = self.col2im(z, (out_h, out_w))
        top, bottom, left, right = self.crop
        if top or bottom or left or right:
            y = ops.slice(y, (0, 0, top, left), (b, n, out_h - top - bottom, out_w - left - right))
        if self.has_bias:
            y = self.add_bias(y, self.bias)
        return y


class Unfold(nn.Cell):
    """The zero-padded ``kernel x kernel`` neighbourhood of every position (PyTorch ``F.unfold`` with padding
    ``kernel // 2``): [B, C, H, W] -> [B, C*k*k, H*W], row ``c * k*k + dy * k + dx`` holding channel c of the
    neighbour at offset (dy - k//2, dx - k//2).

    Switched by :func:`use_conv_impl` like the convolutions: on the matmul and winograd paths one Im2Col (its
    gradient one Col2Im); natively, and so in exported graphs (ONNX has no Im2Col), a pad and k*k slices,
    which MindSpore's CPU runs far slower with their gradients (CoCosNet's [1, 256, 64, 64] matching
    features: 18 slices and their gradients, ~0.5 s of a 256x256 iteration).
    """

    def __init__(self, kernel=3):
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"Unfold kernel={kernel} must be odd (a centred neighbourhood)")
        self.kernel = kernel
        self.im2col = Im2Col(kernel, 1, kernel // 2, 1)
        self.has_matmul_form, self.has_winograd_form, self.has_onednn_form = True, False, False  # use_conv_impl's
        self.matmul = self.winograd = self.onednn = self.mixed = False

    def construct(self, x):
        b, c, h, w = x.shape
        k, p = self.kernel, self.kernel // 2
        if k == 1:
            return x.reshape(b, c, h * w)
        if self.matmul:
            return self.im2col(x)
        padded = ops.Pad(((0, 0), (0, 0), (p, p), (p, p)))(x)
        taps = []
        for dy in range(k):
            for dx in range(k):
                taps.append(padded[:, :, dy:dy + h, dx:dx + w].reshape(b, c, 1, h * w))
        return ops.cat(taps, 2).reshape(b, c * k * k, h * w)
