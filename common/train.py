"""Training-loop building blocks shared by all models.

* :class:`TrainOneStep` - loss cell in, one optimizer step out (graph-compiled), with the data-parallel
  gradient reducer applied when the process runs under msrun. Used for D and for G.
* :class:`GANTrainStep` - D step then G step against the updated D, with one generator forward.
* :func:`linear_decay` / :func:`set_lr` - the pix2pix schedule: constant, then linear decay to zero.
* :class:`TrainLogger` - ``epoch: E step: S, g_loss X d_loss Y, ms/step Z`` lines to console and file,
  a tqdm bar, ``losses.json`` and a loss-curve PNG.
* :class:`TrainLoop` - epochs and steps with resume, snapshots, logging and signal handling.
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
from mindspore import nn, ops
from tqdm import tqdm

from common.io import atomic_file

__all__ = ["TrainOneStep", "GANTrainStep", "TrainLoop", "linear_decay", "set_lr", "TrainLogger", "StopSignal", "get_logger", "timer_ms", "to_float"]


def _parallel_mode():
    return ms.get_auto_parallel_context("parallel_mode")


class TrainOneStep(nn.Cell):
    """One optimizer step on ``loss_cell``.

    ``loss_cell(*inputs)`` returns the scalar loss, or ``(loss, *aux)`` with ``has_aux=True``; gradients
    are taken of the loss w.r.t. ``optimizer.parameters`` only (other networks inside the loss cell are
    not updated). In data-parallel mode the gradients are averaged across ranks first.

    Returns the loss cell's outputs.
    """

    def __init__(self, loss_cell, optimizer, has_aux=False):
        super().__init__(auto_prefix=False)
        self.loss_cell = loss_cell
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.grad_fn = ops.value_and_grad(loss_cell, None, self.weights, has_aux=has_aux)
        self.reducer = nn.Identity()
        if _parallel_mode() in (ms.ParallelMode.DATA_PARALLEL, ms.ParallelMode.HYBRID_PARALLEL):
            self.reducer = nn.DistributedGradReducer(self.weights, mean=True)

    def construct(self, *inputs):
        outputs, grads = self.grad_fn(*inputs)
        grads = self.reducer(grads)
        return ops.depend(outputs, self.optimizer(grads))


class GANTrainStep(nn.Cell):
    """One GAN iteration with a single generator forward pass: D step, then G step against the updated D.

    ``fake = netG(x)`` is computed once and its vector-Jacobian product kept (PyTorch's retained
    graph). D is updated by ``TrainOneStep(d_loss_cell)(stop_gradient(fake), *inputs)``; then
    ``g_loss_cell(fake, *inputs) -> (loss, *aux)`` runs through the updated D, its gradient w.r.t.
    ``fake`` is pulled back through the stored forward to G's weights, and G's optimizer steps. In
    data-parallel mode both gradient sets are averaged across ranks.

    Returns ``(d_loss, g_loss, *g_aux)``.
    """

    def __init__(self, netG, d_loss_cell, g_loss_cell, opt_D, opt_G):
        super().__init__(auto_prefix=False)
        self.netG = netG
        self.step_D = TrainOneStep(d_loss_cell, opt_D)
        self.g_loss_grad = ops.value_and_grad(g_loss_cell, 0, None, has_aux=True)
        self.opt_G = opt_G
        self.weights_G = opt_G.parameters
        self.reducer_G = nn.Identity()
        if _parallel_mode() in (ms.ParallelMode.DATA_PARALLEL, ms.ParallelMode.HYBRID_PARALLEL):
            self.reducer_G = nn.DistributedGradReducer(self.weights_G, mean=True)

    def construct(self, x, *inputs):
        fake, pullback = ms.vjp(self.netG, x, weights=self.weights_G)
        loss_d = self.step_D(ops.stop_gradient(fake), *inputs)
        fake = ops.depend(fake, loss_d)
        outputs, d_fake = self.g_loss_grad(fake, *inputs)
        _, grads = pullback(d_fake)
        grads = self.reducer_G(grads)
        return ops.depend((loss_d,) + outputs, self.opt_G(grads))


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
    """Per-step log lines and progress bar; loss history (means between log lines) and curve per epoch.

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
        self._record()
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        means = {k: v / max(self._epoch_count, 1) for k, v in self._epoch_sums.items()}
        text = ", ".join(f"{k} {v:.6f}" for k, v in means.items())
        lr_text = f", lr {lr:.3g}" if lr is not None else ""
        self.info(f"epoch: {epoch} done in {seconds:.1f} s, mean {text}{lr_text}")
        with atomic_file(self.history_path) as tmp:
            with open(tmp, "w") as f:
                json.dump(self.history, f)
        self.plot(os.path.join(self.out_dir, "loss_curve.png"))

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
        is_main: only rank 0 writes snapshots.

    ``run(step_fn, on_epoch_start, on_epoch_end)`` calls ``step_fn(*batch) -> {loss name: float}`` per
    batch, ``on_epoch_start(epoch) -> lr or None`` before and ``on_epoch_end(epoch)`` after each epoch
    (0-based). SIGINT/SIGTERM saves a snapshot and exits with 130/143; ``--resume`` continues exactly.
    """

    def __init__(self, manager, components, log, loader, n_epochs, save_epoch_freq=1, max_steps=0, is_main=True):
        self.manager, self.components, self.log, self.loader = manager, components, log, loader
        self.n_epochs, self.save_epoch_freq, self.max_steps = n_epochs, max(int(save_epoch_freq), 1), max_steps
        self.is_main = is_main
        self.epoch = self.step_in_epoch = self.global_step = 0
        self.saved_at = None
        self.losses = {}

    def resume(self, enabled):
        """Restore the latest snapshot when ``enabled``; note existing snapshots otherwise."""
        latest = self.manager.latest()
        if not enabled:
            if latest is not None and self.is_main:
                self.log.info(f"note: {self.manager.directory} already holds snapshots; this run starts from scratch "
                              f"(use --resume=true to continue)")
            return False
        if latest is None:
            self.log.info(f"resume: no snapshot in {self.manager.directory}; starting from scratch")
            return False
        state = self.manager.restore(self.components)
        self.epoch, self.step_in_epoch, self.global_step = state["epoch"], state["step_in_epoch"], state["step"]
        self.saved_at = self.global_step
        self.log.info(f"resumed from {latest} at epoch {self.epoch} step {self.step_in_epoch} (global {self.global_step})")
        return True

    def save(self):
        self.saved_at = self.global_step
        if self.is_main:
            path = self.manager.save(self.components, {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                                                       "step": self.global_step})
            self.log.info(f"saved snapshot {path}")

    def _limit_reached(self):
        return bool(self.max_steps) and self.global_step >= self.max_steps

    def run(self, step_fn, on_epoch_start=None, on_epoch_end=None):
        """Train to ``n_epochs`` (or ``max_steps``); returns {epoch, step_in_epoch, step, losses}."""
        with StopSignal() as stop:
            while self.epoch < self.n_epochs and not self._limit_reached():
                lr = on_epoch_start(self.epoch) if on_epoch_start else None
                self.log.start_epoch(self.epoch + 1, self.n_epochs, self.step_in_epoch)
                t_epoch = time.perf_counter()
                for batch in self.loader.epoch(self.epoch, self.step_in_epoch):
                    t = time.perf_counter()
                    self.losses = step_fn(*batch)
                    self.step_in_epoch += 1
                    self.global_step += 1
                    self.log.step(self.epoch + 1, self.step_in_epoch, self.global_step, self.losses, timer_ms(t))
                    if stop.requested or self._limit_reached():
                        break
                if self.step_in_epoch >= len(self.loader):
                    self.log.end_epoch(self.epoch + 1, time.perf_counter() - t_epoch, lr)
                    if on_epoch_end:
                        on_epoch_end(self.epoch)
                    self.epoch, self.step_in_epoch = self.epoch + 1, 0
                    if self.epoch % self.save_epoch_freq == 0 and not stop.requested:
                        self.save()
                if stop.requested:
                    self.save()
                    self.log.info(f"stopped by {stop.requested}; resume with --resume=true")
                    raise SystemExit(130 if stop.requested == "SIGINT" else 143)
        if self.global_step and self.saved_at != self.global_step:
            self.save()
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "step": self.global_step,
                "losses": self.losses}


class StopSignal:
    """Context manager: SIGINT/SIGTERM set ``self.requested`` instead of killing the process.

    The loop checks ``requested`` after each step, saves a checkpoint and exits. A second signal
    restores the default behaviour (so Ctrl-C twice still kills a stuck process).
    """

    def __init__(self):
        self.requested = None
        self._old = {}

    def _handle(self, signum, frame):
        self.requested = signal.Signals(signum).name
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
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
