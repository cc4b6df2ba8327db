"""Spectral normalisation (Miyato et al., ICLR 2018) of convolutions, as ``torch.nn.utils.spectral_norm``.

:class:`SpectralNorm` wraps a :class:`common.conv.Conv2d` and makes it compute with
``W / sigma(W)``, where ``sigma`` is the largest singular value of ``W`` reshaped to [C_out, C_in*kh*kw],
estimated by power iteration:

* training mode, each forward: ``v = normalize(W^T u)``, ``u = normalize(W v)`` (one iteration,
  ``normalize(x) = x / max(|x|, eps)``), the new ``u``, ``v`` are written back in place; then
  ``sigma = u^T W v``;
* inference mode: ``sigma = u^T W v`` with the stored ``u``, ``v`` (no update); also in training mode once a
  :class:`SpectralVectors` took over the iteration (a step that runs a forward twice, e.g. CoCosNet's
  ``recompute``, iterates where the forward would have and reruns the forward on the same vectors).

The training-mode update is :class:`common.layers.PowerIteration`: one compiled kernel each way on CPU once
``common.conv.use_conv_impl`` gave it the project's kernels (MindSpore's operators otherwise).

``u`` [C_out] and ``v`` [C_in*kh*kw] are non-trainable Parameters (``weight_u``, ``weight_v``), so they
are saved in checkpoints and a resumed run continues the same estimate; :func:`count_params` of
``common.layers`` counts only the wrapped weight (and bias). Gradients flow through ``W`` in ``sigma``
but not through ``u`` and ``v``, as in PyTorch.

Each call runs the wrapped cell's convolution (:meth:`common.conv.Conv2d.convolve`, with the cell's own
fast path) in whichever of two equal forms holds fewer values (the convolution is linear in its
weight, so values and gradients are the same):

* on ``W / sigma``, as PyTorch does: the extra tensors are weight-sized, but MindSpore's graph mode keeps
  about :attr:`SpectralNorm.WEIGHT_TEMPORARIES` of them per layer for the backward (``bench/graph_memory.py``:
  15.2 parameter copies for 40 layers, against 2.2 for the other form): CoCosNet's 1024-channel layers at
  8x8-32x32 needed 17.9 GB at 128x128 this way, 11.3 GB with the choice;
* on ``W``, the output multiplied by ``1 / sigma`` and the bias added after (:class:`common.conv.ScaledBiasAdd`,
  one compiled kernel each way on CPU): the extra tensors are output-sized (sigma's gradient reduces over the
  output), which cost OSMIS (64-256 channels, batch 5, up to 320x320) about a third of its step time when every
  layer took this form.

Export: :func:`fold_spectral_norm` replaces every wrapper by its convolution with weight ``W / sigma``
(the inference-mode value), so the exported graph holds a plain ``Conv``.
"""
import numpy as np

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, initializer

from common.conv import Conv2d, ScaledBiasAdd
from common.export import replace_cells
from common.layers import PowerIteration

__all__ = ["SpectralNorm", "SpectralVectors", "spectral_norm", "fold_spectral_norm", "spectral_sigma"]


class SpectralNorm(nn.Cell):
    """``conv`` computing with its weight divided by its spectral norm.

    Args:
        conv: a :class:`common.conv.Conv2d`; its ``weight`` and ``bias`` stay its Parameters.
        eps: floor of the vector norms in the power iteration (PyTorch's 1e-12).
        seed: seed of the N(0, 1) initial ``u``, ``v`` (each normalised); None uses MindSpore's
            global seed (``mindspore.set_seed``).

    Shapes: as ``conv``, [B, C_in, H, W] -> [B, C_out, H', W'].
    """

    WEIGHT_TEMPORARIES = 14  # weight-sized tensors graph mode keeps per W / sigma (module doc)

    def __init__(self, conv, eps=1e-12, seed=None):
        super().__init__()
        if not isinstance(conv, Conv2d):
            raise TypeError(f"SpectralNorm wraps a common.conv.Conv2d (an nn.Conv2d that takes a weight argument); "
                            f"got {type(conv).__name__} (wrap the convolution, not a container holding it)")
        self.conv = conv
        self.eps = float(eps)
        rows = int(conv.weight.shape[0])
        cols = int(np.prod(conv.weight.shape[1:]))
        self.rows = rows
        self.weight_size = rows * cols
        u, v = _initial_vectors(rows, cols, seed, self.eps)
        self.weight_u = Parameter(Tensor(u), name="weight_u", requires_grad=False)
        self.weight_v = Parameter(Tensor(v), name="weight_v", requires_grad=False)
        self.power_iteration = PowerIteration(self.eps)
        self.scaled_add_bias = ScaledBiasAdd()
        self.iterate_in_forward = True
        # u, v read once x exists: a call whose input comes after another call's output then sees that call's
        # update (graph mode does not order two calls' reads and writes by program order alone).
        # common.train.mixed_precision turns it off in a float16 cell, whose Depend would round u, v to float16.
        self.reads_after_input = True

    def iterate(self, after=None):
        """One power iteration, the new ``u``, ``v`` written back (what a training-mode forward does first) once
        ``after`` (a tensor or tuple; None: no wait) exists; returns a token to order later work after it."""
        w = ops.stop_gradient(ops.cast(self.conv.weight, ms.float32))
        u, v, _ = self.power_iteration(w, ops.stop_gradient(self.weight_u), ops.stop_gradient(self.weight_v))
        if after is not None:
            u, v = ops.depend(u, after), ops.depend(v, after)
        return ops.depend(ops.assign(self.weight_u, u), ops.assign(self.weight_v, v))

    def construct(self, x):
        # graph mode: the power iteration and sigma run in float32 also when mixed precision makes this cell
        # float16 (PyNative casts every op of a float16 cell, these too, as PyTorch's autocast does)
        w = ops.cast(self.conv.weight, ms.float32)
        # the Depend takes the Parameter itself (one on its cast value did not order the read in graph mode); each
        # branch reads it in one statement (a local holding the Parameter rounded u, v under float16 even without it)
        if self.reads_after_input:
            u = ops.cast(ops.stop_gradient(ops.depend(self.weight_u, x)), ms.float32)
            v = ops.cast(ops.stop_gradient(ops.depend(self.weight_v, x)), ms.float32)
        else:
            u = ops.cast(ops.stop_gradient(self.weight_u), ms.float32)
            v = ops.cast(ops.stop_gradient(self.weight_v), ms.float32)
        if self.training and self.iterate_in_forward:
            u, v, inv_sigma = self.power_iteration(w, u, v)
            x = ops.depend(x, ops.assign(self.weight_v, v))
            x = ops.depend(x, ops.assign(self.weight_u, u))
        else:
            inv_sigma = 1 / ops.reduce_sum(u * ops.matmul(w.reshape(self.rows, -1), v))
        # x's dtype: float16 under mixed precision
        if self.scales_output(x.shape):
            # y is float16 where the convolution is (amp_level O1 / O2); the scale and the bias follow it
            y = self.conv.convolve(x, ops.cast(self.conv.weight, x.dtype), add_bias=False)
            scale = ops.cast(inv_sigma, y.dtype)
            if not self.conv.has_bias:
                return y * scale
            return self.scaled_add_bias(y, scale, ops.cast(self.conv.bias, y.dtype))
        # times 1 / sigma: a Div by sigma would hold 16 bytes of broadcast indices per weight (common.layers.expand)
        return self.conv.convolve(x, ops.cast(self.conv.weight * inv_sigma, x.dtype))

    def scales_output(self, shape):
        """Whether an input of ``shape`` [B, C_in, H, W] takes the ``conv(x, W) / sigma`` form: its output holds
        fewer values than :attr:`WEIGHT_TEMPORARIES` weights (a compile-time choice in graph mode)."""
        sh, sw = self.conv.strides
        return shape[0] * self.rows * (shape[2] // sh) * (shape[3] // sw) < self.WEIGHT_TEMPORARIES * self.weight_size

    def sigma(self):
        """The current ``u^T W v`` (inference-mode value) as a Python float."""
        return spectral_sigma(self.conv.weight.asnumpy(), self.weight_u.asnumpy(), self.weight_v.asnumpy())

    def folded(self):
        """The wrapped convolution with its weight replaced, in place, by ``W / sigma``."""
        w = self.conv.weight
        w.set_data(Tensor(w.asnumpy() / self.sigma(), w.dtype))
        return self.conv


class SpectralVectors(nn.Cell):
    """The spectral norms of ``net`` iterated by the caller instead of in their forward, for a step that runs a
    forward twice (recomputation) and needs both runs to give the same values.

    Construction sets every :class:`SpectralNorm` in ``net`` to ``iterate_in_forward = False``: in training mode
    they then compute ``sigma = u^T W v`` from the stored vectors, which is the value training mode gives right
    after its iteration. The caller runs :meth:`iterate` (one training-mode iteration of each, written back)
    where the forward would have iterated. ``take_over=False`` leaves the forwards iterating too: :meth:`iterate`
    then adds an iteration (a step that runs one forward on a batch the reference passes in two calls).

    ``slots`` sets of snapshot buffers (non-trainable Parameters named ``<vector>.slot<k>``, outside the networks'
    checkpoints): :meth:`save` copies the current vectors into one, :meth:`restore` writes it back. Both are
    ``Assign`` s, which graph mode keeps in program order among the step's other writes whatever its passes
    remove: a snapshot held as an ordinary tensor (``u * 1``) is folded into a read of the live vector, which
    sees the later writes once MindSpore's copies of Parameter reads are off
    (:func:`common.runtime.drop_parameter_read_copies`).
    """

    def __init__(self, net, *, take_over=True, slots=0):
        super().__init__(auto_prefix=False)
        layers = [cell for _, cell in net.cells_and_names() if isinstance(cell, SpectralNorm)]
        for cell in layers:
            cell.iterate_in_forward = not take_over
        self.layers = nn.CellList(layers, auto_prefix=False)
        self.vectors = ms.ParameterTuple([p for cell in layers for p in (cell.weight_u, cell.weight_v)])
        self.slots = ms.ParameterTuple([Parameter(p.value().copy(), name=f"{p.name}.slot{k}", requires_grad=False)
                                        for k in range(slots) for p in self.vectors])

    def iterate(self, after=None):
        """One power iteration of every layer, written once ``after`` (a tensor or tuple; None: no wait) exists;
        returns a token to order later work after it. Pass as ``after`` the outputs of every pass that reads the
        vectors before this write and is not otherwise ordered before it."""
        done = ms.Tensor(True)
        for layer in self.layers:
            done = ops.depend(done, layer.iterate(after))
        return done

    def save(self, slot, after=None):
        """Copy the vectors into snapshot ``slot`` (a Python int) once ``after`` exists; returns a token."""
        n = len(self.vectors)
        done = ms.Tensor(True)
        for i in range(n):
            value = self.vectors[i] if after is None else ops.depend(self.vectors[i], after)
            done = ops.depend(done, ops.assign(self.slots[slot * n + i], value))
        return done

    def restore(self, slot, after=None):
        """Write snapshot ``slot`` back into the vectors once ``after`` exists; returns a token."""
        n = len(self.vectors)
        done = ms.Tensor(True)
        for i in range(n):
            value = self.slots[slot * n + i] if after is None else ops.depend(self.slots[slot * n + i], after)
            done = ops.depend(done, ops.assign(self.vectors[i], value))
        return done


def _initial_vectors(rows, cols, seed, eps):
    if seed is None:
        u = initializer(Normal(1.0), (rows,), ms.float32).init_data().asnumpy()
        v = initializer(Normal(1.0), (cols,), ms.float32).init_data().asnumpy()
    else:
        rng = np.random.default_rng(seed)
        u, v = rng.standard_normal(rows), rng.standard_normal(cols)
    u = u / max(np.linalg.norm(u), eps)
    v = v / max(np.linalg.norm(v), eps)
    return u.astype(np.float32), v.astype(np.float32)


def spectral_sigma(weight, u, v):
    """``u^T W v`` with ``W`` = ``weight`` [C_out, ...] reshaped to [C_out, -1] (NumPy, float64)."""
    w = np.asarray(weight, np.float64).reshape(np.shape(weight)[0], -1)
    return float(np.asarray(u, np.float64) @ w @ np.asarray(v, np.float64))


def spectral_norm(conv, eps=1e-12, seed=None):
    """``SpectralNorm(conv)``: the functional spelling of ``torch.nn.utils.spectral_norm``."""
    return SpectralNorm(conv, eps=eps, seed=seed)


def fold_spectral_norm(net):
    """Replace, in place, every :class:`SpectralNorm` in ``net`` by its convolution with weight ``W / sigma``.

    The stored ``u``, ``v`` give ``sigma`` (no power iteration): the folded network computes what ``net``
    computes in inference mode. Returns how many were folded.
    """
    return replace_cells(net, lambda c: isinstance(c, SpectralNorm), lambda c: c.folded())
