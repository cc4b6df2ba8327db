"""Training-loop building blocks shared by all models.

* :class:`GradientUpdate` - gradients of one parameter set -> data-parallel mean, loss-scale check,
  clipping, optimizer step; every train step below sends each of its gradient sets through one.
* :class:`StepCell` - base of the train steps: MindSpore's per-call bookkeeping visits each sub-cell once.
* :class:`TrainOneStep` - loss cell in, one optimizer step out (graph-compiled): single-network models (CRN).
* :class:`GANTrainStep` - one generator forward, D and G updates in either order, after-step hooks.
* :class:`EMA` - after-step hook keeping an exponential moving average of a network (OSMIS).
* :func:`linear_decay` / :func:`set_lr` - the pix2pix schedule: constant, then linear decay to zero.
* :class:`TrainLogger` - ``epoch: E step: S, g_loss X d_loss Y, ms/step Z`` lines to console and file,
  a tqdm bar, ``losses.json`` and a loss-curve PNG.
* :class:`TrainLoop` - epochs and steps with resume, snapshots, logging and signal handling.
* :class:`RankSync` - host-side agreement between data-parallel ranks (stop vote, barrier, equal values).
* :class:`StopSignal` - turns SIGINT/SIGTERM into a flag so the loop can checkpoint before exiting.
"""
import json
import logging
import os
import signal
import sys
import time

import common  # noqa: F401
import mindspore as ms
import numpy as np
from mindspore import amp, nn, ops
from tqdm import tqdm

from common.io import atomic_file
from common.spectral_norm import SpectralNorm

__all__ = ["StepCell", "GradientUpdate", "TrainOneStep", "parse_loss_scale", "GANTrainStep", "EMA", "make_loss_scaler", "TrainLoop", "RankSync", "linear_decay", "set_lr", "TrainLogger", "StopSignal", "get_logger", "timer_ms", "to_float", "mixed_precision"]


def _parallel_mode():
    return ms.get_auto_parallel_context("parallel_mode")


def _data_parallel():
    return _parallel_mode() in (ms.ParallelMode.DATA_PARALLEL, ms.ParallelMode.HYBRID_PARALLEL)


def parse_loss_scale(text):
    """The config's ``loss_scale`` (``"0"``, a number, or ``"dynamic"``) as :func:`make_loss_scaler` takes it."""
    text = str(text).strip()
    if text == "dynamic":
        return text
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0 or value != value:
        raise ValueError(f"--loss_scale={text}: expected 0 (no scaling), a positive number (static) or dynamic")
    return value


def mixed_precision(net, amp_level):
    """Apply the config's ``amp_level`` to ``net`` in place (a compiled train step already holds it); returns it.

    ``O0``: nothing. ``O1``: the cells of MindSpore's white list (``mindspore.amp.get_white_list``: convolutions,
    dense layers, ...) run in float16 (``to_float``); everything else stays float32. ``O2``:
    ``mindspore.amp.auto_mixed_precision(net, "O2")``, whose changes are in place (float16 everywhere, batch
    norms float32); its float32 output wrapper is not used. (MindSpore's own O1 rewrites the network into a
    new object, which a train step built beforehand would never run.) Cells that must compute in float32 (CoCosNet's
    correlation, the spectral norms' power iteration, CRN's layer norm) refuse the lower precision themselves
    (:class:`common.layers.Float32Only`). Under O2 each :class:`common.spectral_norm.SpectralNorm` reads its vectors
    without waiting for its input (``reads_after_input``).
    """
    if amp_level not in ("O0", "O1", "O2"):
        raise ValueError(f"--amp_level={amp_level}: choose O0, O1 or O2")
    if amp_level == "O0":
        return net
    if amp_level == "O1":
        white = tuple(c for c in amp.get_white_list() if isinstance(c, type) and issubclass(c, nn.Cell))
        for _, cell in net.cells_and_names():
            if isinstance(cell, white):
                cell.to_float(ms.float16)
    else:
        amp.auto_mixed_precision(net, "O2")
        for _, cell in net.cells_and_names():
            if isinstance(cell, SpectralNorm):
                cell.reads_after_input = False  # a float16 cell: its Depend would round u, v to float16
    return net


def make_loss_scaler(loss_scale, name="G"):
    """``0``: no scaling; ``> 0``: a static scale; ``"dynamic"``: MindSpore's dynamic loss scaler (2^16 start).

    Loss scaling is for mixed precision on GPU/Ascend (fp16 gradients underflow); fp32 CPU runs use 0.
    ``name`` keeps the scaler's state parameters apart from another optimizer's in the same graph.
    """
    if loss_scale in (0, 0.0, None, ""):
        return None
    scaler = amp.DynamicLossScaler(2.0 ** 16, 2, 1000) if loss_scale == "dynamic" else amp.StaticLossScaler(float(loss_scale))
    for attr, value in vars(scaler).items():
        if isinstance(value, ms.Parameter):
            value.name = f"loss_scaler_{name}.{attr}"
    return scaler


class StepCell(nn.Cell):
    """Base of the top-level train steps, cells called once per step.

    On every call of a top-level cell MindSpore 2.10 (``_CellGraphExecutor.compile``) sets its
    ``compile_phase``, whose setter sets it again on each child through ``Cell.__setattr__``, once per path
    to a sub-cell: OSMIS's step reaches its 1,084 cells 5,022 times, ~48 ms of Python per step (5 %) before
    the graph runs. Here each sub-cell gets the same value once, directly (MindSpore builds a new phase string
    for each call, so a child already holding this very object was reached earlier in the walk).
    """

    @property
    def compile_phase(self):
        return self._compile_phase

    @compile_phase.setter
    def compile_phase(self, value):
        if not isinstance(value, str):
            raise TypeError(f"compile_phase must be a str, got {type(value).__name__}")
        object.__setattr__(self, "_compile_phase", value)
        todo = [self]
        while todo:
            for child in todo.pop()._cells.values():
                if child is not None and child._compile_phase is not value:  # not yet reached by this call
                    object.__setattr__(child, "_compile_phase", value)
                    todo.append(child)


class GradientUpdate(nn.Cell):
    """Gradients of one parameter set -> one optimizer step, inside the compiled graph.

    In order: the data-parallel mean over ranks (when the process runs under msrun), loss-scale unscaling
    (the step is skipped, and a dynamic scale lowered, when a gradient is not finite), clipping to a global
    norm, then ``optimizer(grads)``. Returns True (a tensor) when the step was applied.
    """

    def __init__(self, optimizer, *, clip_norm=0.0, loss_scaler=None):
        super().__init__(auto_prefix=False)
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.reducer = nn.DistributedGradReducer(self.weights, mean=True) if _data_parallel() else nn.Identity()
        self.clip_norm = float(clip_norm)
        self.loss_scaler = loss_scaler

    def construct(self, grads):
        grads = self.reducer(grads)
        if self.loss_scaler is not None:
            grads = self.loss_scaler.unscale(grads)
            finite = amp.all_finite(grads)
            self.loss_scaler.adjust(finite)
            if self.clip_norm > 0:
                grads = ops.clip_by_global_norm(grads, self.clip_norm)
            if finite:
                self.optimizer(grads)
            return finite
        if self.clip_norm > 0:
            grads = ops.clip_by_global_norm(grads, self.clip_norm)
        return ops.depend(ms.Tensor(True), self.optimizer(grads))


class _DifferentiatedLoss(nn.Cell):
    """``loss_cell`` with its (first) output multiplied by the loss scale (the gradient's scale), when a
    scaler is given; with ``has_aux``, one placeholder output appended (see :class:`_LossGrad`).

    The loss is scaled in float32: under mixed precision it may come out of float16 cells, and a loss of 20 times
    the dynamic scaler's first 2^16 is past float16's largest value (65,504); the gradient that flows back into the
    float16 cells is the scale alone."""

    def __init__(self, loss_cell, loss_scaler, *, has_aux=True):
        super().__init__(auto_prefix=False)
        self.loss_cell = loss_cell
        self.loss_scaler = loss_scaler
        self.has_aux = has_aux
        self.placeholder = ms.Tensor(0.0, ms.float32)

    def construct(self, *inputs):
        outputs = self.loss_cell(*inputs)
        loss = outputs[0] if self.has_aux else outputs
        if self.loss_scaler is not None:
            loss = self.loss_scaler.scale(ops.cast(loss, ms.float32))
        if not self.has_aux:
            return loss
        return (loss,) + outputs[1:] + (self.placeholder,)


class _LossGrad(nn.Cell):
    """value_and_grad of a loss cell returning ``(loss, *aux)`` (``has_aux=False``: a bare loss), its loss
    scaled when a scaler is given: ``(*inputs) -> (outputs, grads)``. A ``(loss,)`` without aux works in both
    modes: the differentiated cell returns a placeholder more, dropped here (PyNative's value_and_grad refuses
    ``has_aux`` with fewer than two outputs)."""

    def __init__(self, loss_cell, loss_scaler, grad_position, weights, *, has_aux=True):
        super().__init__(auto_prefix=False)
        self.has_aux = has_aux
        self.loss = _DifferentiatedLoss(loss_cell, loss_scaler, has_aux=has_aux)
        self.value_and_grad = ops.value_and_grad(self.loss, grad_position, weights, has_aux=has_aux)

    def construct(self, *inputs):
        outputs, grads = self.value_and_grad(*inputs)
        return (outputs[:-1] if self.has_aux else outputs), grads


def after(tensors, event):
    """``tensors`` (a tensor or a flat tuple of tensors), each ordered after ``event``.

    MindSpore's runtime starts an operator as soon as its inputs exist (those reading Parameters also wait for the
    side effects before them), and a Depend on a tuple does not hold back the operators that read its elements:
    with ``ops.depend(out, g_outputs)``, the Parameter-free start of CoCosNet's D step (its input batch, the
    downsampling, the first layers' Im2Col) ran on the detached fake during G's backward and kept 481 MiB alive
    through it (docs/performance.md). Hence one Depend per tensor."""
    if isinstance(tensors, tuple):
        return tuple(ops.depend(t, event) for t in tensors)
    return ops.depend(tensors, event)


def _unscaled(outputs, loss_scaler):
    if loss_scaler is None:
        return outputs
    return (loss_scaler.unscale(outputs[0]),) + outputs[1:]


class EMA(nn.Cell):
    """After-step hook: ``ema = decay * ema + (1 - decay) * net`` for every parameter of ``net``.

    Covers the non-trainable state too (BatchNorm moving statistics, spectral-norm vectors), so the EMA
    network is complete for eval and export. ``ema_net`` must have ``net``'s structure.
    """

    def __init__(self, net, ema_net, decay=0.9999):
        super().__init__(auto_prefix=False)
        own, ema = net.parameters_dict(), ema_net.parameters_dict()
        if [tuple(p.shape) for p in own.values()] != [tuple(p.shape) for p in ema.values()]:
            raise ValueError("EMA: the EMA network does not have the structure of the trained network")
        self.source = ms.ParameterTuple(list(own.values()))
        self.target = ms.ParameterTuple(list(ema.values()))
        self.decay = float(decay)

    def construct(self):
        done = ms.Tensor(True)
        for src, dst in zip(self.source, self.target):
            done = ops.depend(done, ops.assign(dst, dst * self.decay + src * (1.0 - self.decay)))
        return done


def _run_hooks(hooks, outputs):
    for hook in hooks:
        outputs = ops.depend(outputs, hook())
    return outputs


class TrainOneStep(StepCell):
    """One optimizer step on ``loss_cell``; returns its outputs ``(loss, *aux)`` (or the loss alone).

    Gradients are taken of the (first) loss w.r.t. ``optimizer.parameters`` only (other networks inside
    the loss cell are not updated) and pass through :class:`GradientUpdate` (data-parallel mean, loss
    scale, clipping). ``hooks`` are cells called with no argument after the update (e.g. :class:`EMA`).
    """

    def __init__(self, loss_cell, optimizer, *, has_aux=False, clip_norm=0.0, loss_scale=0, hooks=()):
        super().__init__(auto_prefix=False)
        self.loss_cell = loss_cell
        self.has_aux = has_aux
        scaler = make_loss_scaler(loss_scale)
        self.loss_scaler = scaler
        self.update = GradientUpdate(optimizer, clip_norm=clip_norm, loss_scaler=scaler)
        self.grad_fn = _LossGrad(loss_cell, scaler, None, self.update.weights, has_aux=has_aux)
        self.hooks = nn.CellList(list(hooks))

    def construct(self, *inputs):
        outputs, grads = self.grad_fn(*inputs)
        if not self.has_aux:
            outputs = (outputs,)
        outputs = ops.depend(_unscaled(outputs, self.loss_scaler), self.update(grads))
        outputs = _run_hooks(self.hooks, outputs)
        return outputs if self.has_aux else outputs[0]


class GANTrainStep(StepCell):
    """One GAN iteration with a single generator forward pass, D and G updated in either order.

    ``out = generator(*batch[:generator_inputs])`` (a tensor or a tuple: image, warped exemplar,
    features ...) is computed once and its vector-Jacobian product kept (PyTorch's retained graph):

    * ``d_loss(stop_gradient(out), *batch) -> (loss, *aux)`` updates D (``opt_D``);
    * ``g_loss(out, *batch) -> (loss, *aux)`` gives the gradient w.r.t. ``out``, pulled back through
      the stored forward to the weights of ``opt_G`` (which may span several networks, e.g. CoCosNet's
      correspondence and translation nets), and updates them.

    ``order="D_then_G"`` (pix2pix: G's loss sees the updated D) or ``"G_then_D"`` (SPADE/CoCosNet: D
    learns from the output of the same step's G forward). Every gradient set goes through
    :class:`GradientUpdate` (data-parallel mean, loss scale, clipping); ``hooks`` (e.g. :class:`EMA` of
    G) run after both updates. Returns ``(*d_outputs, *g_outputs)``, D first in either order.
    """

    ORDERS = ("D_then_G", "G_then_D")

    def __init__(self, generator, d_loss, g_loss, opt_G, opt_D, *, generator_inputs=1, order="D_then_G",
                 clip_norm=0.0, loss_scale=0, hooks=()):
        super().__init__(auto_prefix=False)
        if order not in self.ORDERS:
            raise ValueError(f"order={order!r}; choose one of {self.ORDERS}")
        self.generator = generator
        self.generator_inputs = generator_inputs
        self.d_first = order == "D_then_G"
        self.scaler_G, self.scaler_D = make_loss_scaler(loss_scale, "G"), make_loss_scaler(loss_scale, "D")
        self.update_G = GradientUpdate(opt_G, clip_norm=clip_norm, loss_scaler=self.scaler_G)
        self.update_D = GradientUpdate(opt_D, clip_norm=clip_norm, loss_scaler=self.scaler_D)
        self.weights_G = self.update_G.weights
        self.d_loss, self.g_loss = d_loss, g_loss  # registered, so set_train() reaches D's norm layers
        self.d_grad = _LossGrad(d_loss, self.scaler_D, None, self.update_D.weights)
        self.g_grad = _LossGrad(g_loss, self.scaler_G, 0, None)
        self.hooks = nn.CellList(list(hooks))

    def construct(self, *batch):
        out, pullback = ms.vjp(self.generator, *batch[:self.generator_inputs], weights=self.weights_G)
        if self.d_first:
            d_outputs = self.discriminator_step(out, batch)
            out = after(out, d_outputs)
            g_outputs, d_out = self.g_grad(out, *batch)
            _, g_grads = pullback(d_out)
            g_outputs = self.generator_update(g_outputs, g_grads)
        else:
            g_outputs, d_out = self.g_grad(out, *batch)
            _, g_grads = pullback(d_out)
            g_outputs = self.generator_update(g_outputs, g_grads)
            d_outputs = self.discriminator_step(after(out, g_outputs), after(batch, g_outputs))
        return self.after_step(d_outputs + g_outputs)

    def generator_update(self, g_outputs, g_grads):
        """``opt_G``'s step on ``g_grads`` -> G's loss outputs (unscaled), ordered after the update."""
        return ops.depend(_unscaled(g_outputs, self.scaler_G), self.update_G(g_grads))

    def discriminator_step(self, out, batch):
        """D's loss on the detached generator outputs ``out`` and ``opt_D``'s step -> D's loss outputs (unscaled),
        ordered after the update."""
        d_outputs, d_grads = self.d_grad(ops.stop_gradient(out), *batch)
        return ops.depend(_unscaled(d_outputs, self.scaler_D), self.update_D(d_grads))

    def after_step(self, outputs):
        """The ``hooks`` run after both updates; returns ``outputs`` ordered after them."""
        return _run_hooks(self.hooks, outputs)


def linear_decay(epoch, lr, n_epochs, n_epochs_decay):
    """LR of 0-based ``epoch``: ``lr`` for ``n_epochs``, then linearly to 0 over ``n_epochs_decay``.

    Matches the reference rule ``lr * (1 - max(0, epoch + 1 - n_epochs) / (n_epochs_decay + 1))``.
    """
    return lr * (1.0 - max(0, epoch + 1 - n_epochs) / float(n_epochs_decay + 1))


def set_lr(optimizer, value):
    """Set an optimizer's (scalar) learning rate in place."""
    optimizer.learning_rate.set_data(ms.Tensor(value, ms.float32))


def get_logger(name, log_file=None):
    """A logger printing plain lines to stdout and, if given, appending to ``log_file``."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(console)
    if log_file:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        fh = logging.FileHandler(log_file)
        fh.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(fh)
    return logger


class TrainLogger:
    """Per-step log lines and progress bar; loss history (means between log lines) and its curve, written at each
    epoch's end and when a run stops inside one.

    Args:
        out_dir: where ``train.log``, ``losses.json`` and ``loss_curve.png`` go.
        steps_per_epoch: for the progress bar.
        log_every: print a log line every this many steps.
        enabled: False on ranks other than 0 (they stay silent).
    """

    def __init__(self, out_dir, name, steps_per_epoch, log_every=100, enabled=True):
        self.out_dir = out_dir
        self.steps_per_epoch = steps_per_epoch
        self.log_every = max(int(log_every), 1)
        self.enabled = enabled
        self.logger = get_logger(f"synthzoo.{name}", os.path.join(out_dir, "train.log") if enabled else None)
        self.history_path = os.path.join(out_dir, "losses.json")
        self.history = {"step": []}
        if enabled and os.path.isfile(self.history_path):
            with open(self.history_path) as f:
                self.history = json.load(f)
        self.bar = None
        self._epoch_sums = {}
        self._epoch_count = 0
        self._interval_sums, self._interval_count, self._last_step = {}, 0, 0

    def info(self, msg):
        if self.enabled:
            (self.bar.write if self.bar is not None else self.logger.info)(msg)
            if self.bar is not None:
                for h in self.logger.handlers:
                    if isinstance(h, logging.FileHandler):
                        h.emit(logging.LogRecord(self.logger.name, logging.INFO, "", 0, msg, None, None))

    def start_epoch(self, epoch, n_epochs, start_step=0):
        self._epoch_sums, self._epoch_count = {}, 0
        if self.enabled:
            self.bar = tqdm(total=self.steps_per_epoch, initial=start_step, desc=f"epoch {epoch}/{n_epochs}",
                            dynamic_ncols=True, leave=False, file=sys.stderr,
                            disable=not sys.stderr.isatty() and os.environ.get("SYNTHZOO_PROGRESS") != "1")

    def step(self, epoch, step, global_step, losses, ms_per_step):
        """Record one step; ``losses`` maps names (``g_loss``, ``d_loss`` ...) to floats."""
        for k, v in losses.items():
            self._epoch_sums[k] = self._epoch_sums.get(k, 0.0) + float(v)
        self._epoch_count += 1
        if not self.enabled:
            return
        self.bar.update(1)
        self.bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=False)
        for k, v in losses.items():
            self._interval_sums[k] = self._interval_sums.get(k, 0.0) + float(v)
        self._interval_count += 1
        self._last_step = int(global_step)
        if step % self.log_every == 0 or step == 1:
            text = " ".join(f"{k} {float(v):.6f}" for k, v in losses.items())
            self.info(f"epoch: {epoch} step: {step}, {text}, ms/step {ms_per_step:.1f}")
            self._record()

    def _record(self):
        """Append the mean losses since the last record to the history (the loss curve's points)."""
        if not self._interval_count:
            return
        self.history["step"].append(self._last_step)
        for k, v in self._interval_sums.items():
            self.history.setdefault(k, []).append(v / self._interval_count)
        self._interval_sums, self._interval_count = {}, 0

    def end_epoch(self, epoch, seconds, lr=None):
        """Log the epoch means and write ``losses.json`` and ``loss_curve.png``."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        means = {k: v / max(self._epoch_count, 1) for k, v in self._epoch_sums.items()}
        text = ", ".join(f"{k} {v:.6f}" for k, v in means.items())
        lr_text = f", lr {lr:.3g}" if lr is not None else ""
        self.info(f"epoch: {epoch} done in {seconds:.1f} s, mean {text}{lr_text}")
        self.write_history()

    def write_history(self):
        """Write ``losses.json`` and ``loss_curve.png`` with every point so far: at each epoch's end, and when a run
        stops inside an epoch (``max_steps``, a signal)."""
        if not self.enabled:
            return
        self._record()
        with atomic_file(self.history_path) as tmp:
            with open(tmp, "w") as f:
                json.dump(self.history, f)
        self.plot(os.path.join(self.out_dir, "loss_curve.png"))

    def keep_history_until(self, step):
        """Drop the history's points after global ``step``: the run restarts there (0: a fresh start)."""
        steps = self.history["step"]
        dropped = sum(1 for s in steps if s > step)
        if dropped:
            for key, values in self.history.items():
                self.history[key] = values[:max(len(values) - dropped, 0)]

    def plot(self, path):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        keys = [k for k in self.history if k != "step"]
        if not keys or not self.history["step"]:
            return
        fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
        for ax, k in zip(axes[0], keys):
            ax.plot(self.history["step"][-len(self.history[k]):], self.history[k])
            ax.set_title(k)
            ax.set_xlabel("step")
        fig.tight_layout()
        with atomic_file(path) as tmp:
            fig.savefig(tmp, format="png", dpi=80)
        plt.close(fig)


class RankSync:
    """Host-side agreement between the data-parallel ranks of an msrun job (no-ops for one process).

    Each call is one small compiled AllReduce (sum: the only reduction MindSpore's CPU collective has),
    so every rank must make the same calls in the same order. :class:`TrainLoop` votes on stopping after
    every step, checks that all ranks resume from the same snapshot and holds the others at a barrier
    while rank 0 writes the final snapshot.
    """

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self, rank=0, group_size=1):
        self.rank, self.group_size = int(rank), int(group_size)
        self._sum = _AllReduceSum() if self.group_size > 1 else None

    def sum(self, values):
        """Element-wise sum over the ranks of a list of floats (a list of floats)."""
        if self._sum is None:
            return [float(v) for v in values]
        return [float(v) for v in self._sum(ms.Tensor(np.asarray(values, np.float32))).asnumpy()]

    def stop_vote(self, requested):
        """The signal some rank received (``"SIGINT"`` before ``"SIGTERM"``), or None: the same on every rank."""
        votes = self.sum([float(requested == name) for name in self.SIGNALS])
        return next((name for name, v in zip(self.SIGNALS, votes) if v > 0), None)

    def all_equal(self, value):
        """True on every rank when every rank passed the same number."""
        total, squares = self.sum([value, float(value) ** 2])
        return abs(squares / self.group_size - (total / self.group_size) ** 2) < 1e-3

    def barrier(self):
        """Return when every rank has called it."""
        self.sum([0.0])


class _AllReduceSum(nn.Cell):
    def __init__(self):
        super().__init__()
        self.all_reduce = ops.AllReduce(ops.ReduceOp.SUM)

    def construct(self, x):
        return self.all_reduce(x)


class TrainLoop:
    """The epoch/step loop every model runs: resume, logging, periodic and final snapshots, signals.

    Args:
        manager: :class:`common.checkpoint.CheckpointManager` of the run.
        components: ``{name: Cell}`` saved in every snapshot (networks and optimizers).
        log: :class:`TrainLogger`.
        loader: :class:`common.data.BatchLoader`.
        n_epochs: epochs to run in total.
        save_epoch_freq: snapshot every this many epochs (and always at the end).
        max_steps: stop after this many steps in total (0: no limit).
        sync: :class:`RankSync` of the data-parallel group (default: one process); only rank 0 writes
            snapshots.

    ``run(step_fn, on_epoch_start, on_epoch_end)`` calls ``step_fn(*batch) -> {loss name: float}`` per
    batch, ``on_epoch_start(epoch) -> lr or None`` before and ``on_epoch_end(epoch)`` after each epoch
    (0-based). SIGINT/SIGTERM on any rank stops every rank after the same step: rank 0 saves one snapshot
    while the others wait, then all exit with 130/143; ``--resume`` continues exactly, with the same
    number of workers (stored in the snapshot as ``group_size``).
    """

    def __init__(self, manager, components, log, loader, n_epochs, save_epoch_freq=1, max_steps=0, sync=None):
        self.manager, self.components, self.log, self.loader = manager, components, log, loader
        self.n_epochs, self.save_epoch_freq, self.max_steps = n_epochs, max(int(save_epoch_freq), 1), max_steps
        self.sync = sync or RankSync()
        self.is_main = self.sync.rank == 0
        self.epoch = self.step_in_epoch = self.global_step = 0
        self.saved_at = None
        self.losses = {}

    def resume(self, enabled):
        """Restore the latest snapshot when ``enabled``; note existing snapshots otherwise.

        Raises:
            CheckpointError: the snapshot was written by a run with another number of workers, or the
                ranks do not all see the same snapshot (several nodes without a shared output folder).
        """
        from common.checkpoint import CheckpointError
        latest = self.manager.latest()
        if not enabled:
            if latest is not None and self.is_main:
                self.log.info(f"note: {self.manager.directory} already holds snapshots; this run starts from scratch "
                              f"(use --resume=true to continue)")
            self.log.keep_history_until(0)  # the loss curve starts again too
            return False
        state = self.manager.read_state(latest) if latest is not None else None
        if not self.sync.all_equal(-1 if state is None else state["step"]):
            raise CheckpointError(f"rank {self.sync.rank} finds {latest or 'no snapshot'} in {self.manager.directory}, "
                                  f"other ranks find another: every node must see the same output_dir (a shared "
                                  f"folder, or copy ckpt/ to every node) to resume")
        if latest is None:
            self.log.info(f"resume: no snapshot in {self.manager.directory}; starting from scratch")
            self.log.keep_history_until(0)
            return False
        workers, model = state.get("group_size", 1), self.manager.meta.get("model", "MODEL")
        if workers != self.sync.group_size:
            raise CheckpointError(
                f"snapshot {latest} was written by a run on {workers} worker(s), and this run has "
                f"{self.sync.group_size}: the data shards and the position in the epoch depend on the worker "
                f"count. Resume with {workers} worker(s) (" + (f"python {model}/train.py --resume=true" if workers == 1
                else f"bash scripts/run_distribute_train.sh {model} DEVICE {workers} --resume=true")
                + "), or start a new run with --resume=false and another output_dir")
        self.manager.restore(self.components, latest)
        self.epoch, self.step_in_epoch, self.global_step = state["epoch"], state["step_in_epoch"], state["step"]
        self.log.keep_history_until(self.global_step)
        self.saved_at = self.global_step
        self.log.info(f"resumed from {latest} at epoch {self.epoch} step {self.step_in_epoch} (global {self.global_step})")
        return True

    def save(self):
        self.saved_at = self.global_step
        if self.is_main:
            path = self.manager.save(self.components, {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                                                       "step": self.global_step, "group_size": self.sync.group_size})
            self.log.info(f"saved snapshot {path}")

    def _limit_reached(self):
        return bool(self.max_steps) and self.global_step >= self.max_steps

    def finished(self):
        """Whether nothing is left to train (a resumed run that had already reached n_epochs or max_steps)."""
        return self.epoch >= self.n_epochs or self._limit_reached()

    def run(self, step_fn, on_epoch_start=None, on_epoch_end=None):
        """Train to ``n_epochs`` (or ``max_steps``); returns {epoch, step_in_epoch, step, losses}."""
        stopping = None
        with StopSignal() as stop:
            while not self.finished():
                lr = on_epoch_start(self.epoch) if on_epoch_start else None
                self.log.start_epoch(self.epoch + 1, self.n_epochs, self.step_in_epoch)
                t_epoch = time.perf_counter()
                for batch in self.loader.epoch(self.epoch, self.step_in_epoch):
                    t = time.perf_counter()
                    self.losses = step_fn(*batch)
                    stop.install()
                    self.step_in_epoch += 1
                    self.global_step += 1
                    self.log.step(self.epoch + 1, self.step_in_epoch, self.global_step, self.losses, timer_ms(t))
                    stopping = self.sync.stop_vote(stop.requested)
                    if stopping or self._limit_reached():
                        break
                if self.step_in_epoch >= len(self.loader):
                    self.log.end_epoch(self.epoch + 1, time.perf_counter() - t_epoch, lr)
                    if on_epoch_end:
                        on_epoch_end(self.epoch)
                    self.epoch, self.step_in_epoch = self.epoch + 1, 0
                    if self.epoch % self.save_epoch_freq == 0 and not stopping:
                        self.save()
                if stopping:
                    self.log.write_history()
                    self.save()
                    self.sync.barrier()
                    where = "" if stop.requested == stopping else " on another rank"
                    message = f"stopped by {stopping}{where}; resume with --resume=true"
                    if self.is_main:
                        self.log.info(message)
                    else:  # the other ranks' logs (msrun's worker_<rank>.log) say it too
                        print(message, flush=True)
                    raise SystemExit(130 if stopping == "SIGINT" else 143)
        if self.step_in_epoch:  # stopped inside an epoch by max_steps
            self.log.write_history()
        if self.global_step and self.saved_at != self.global_step:
            self.save()
        self.sync.barrier()
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "step": self.global_step,
                "losses": self.losses}


class StopSignal:
    """Context manager: SIGINT/SIGTERM set ``self.requested`` instead of killing the process.

    The loop checks ``requested`` after each step, saves a checkpoint and exits (130 for SIGINT, 143 for
    SIGTERM). The first signal decides: MindSpore's runtime may follow a Ctrl-C with a SIGTERM of its own,
    which is then ignored. The same signal a second time gets the default behaviour (Ctrl-C twice still
    kills a stuck process). :meth:`install` re-takes the handlers, which MindSpore's runtime replaces with
    its own (turning SIGINT into SIGTERM) when it compiles a graph; the loop calls it after every step. A Ctrl-C
    that lands while MindSpore's handler holds the signal (seen under heavy load, during a step) arrives as SIGTERM:
    the loop then stops the same way with 143.
    """

    def __init__(self):
        self.requested = None
        self._old = {}

    def _handle(self, signum, frame):
        if self.requested is None:
            self.requested = signal.Signals(signum).name
            signal.signal(signum, self._old.get(signum, signal.SIG_DFL))

    def install(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            if self.requested != signal.Signals(sig).name:
                signal.signal(sig, self._handle)

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.getsignal(sig)
        self.install()
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def timer_ms(start):
    """Milliseconds since ``start`` (a ``time.perf_counter()`` value)."""
    return (time.perf_counter() - start) * 1000.0


def to_float(x):
    """Tensor or number -> Python float."""
    return float(x.asnumpy()) if hasattr(x, "asnumpy") else float(np.asarray(x))
