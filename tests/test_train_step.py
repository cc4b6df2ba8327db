"""common.train: the generalised GAN step (order, loss scaling, clipping, hooks) against hand-derived updates.

Linear G(x) = Wg x and D(y) = wd . y with SGD make every update a closed form:
g_loss = -D(G(x)) gives dWg = -wd x^T; d_loss = D(fake) - D(real) gives dwd = fake - real.
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import common  # noqa: F401
import mindspore as ms
from mindspore import nn

from common.train import EMA, GANTrainStep, TrainOneStep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LR = 0.1
X = np.array([[0.5, -1.0, 2.0]], np.float32)
REAL = np.array([[1.0, 0.25]], np.float32)
WG = np.array([[0.1, 0.2, -0.3], [0.4, -0.5, 0.6]], np.float32)
WD = np.array([[0.7, -0.2]], np.float32)


class Linear(nn.Cell):
    def __init__(self, weight):
        super().__init__()
        self.weight = ms.Parameter(ms.Tensor(weight), name="weight")

    def construct(self, x):
        return ms.ops.matmul(x, self.weight.T)


class DLoss(nn.Cell):
    def __init__(self, netD):
        super().__init__()
        self.netD = netD

    def construct(self, fake, x, real):
        return (self.netD(fake).sum() - self.netD(real).sum(),)


class GLoss(nn.Cell):
    def __init__(self, netD):
        super().__init__()
        self.netD = netD

    def construct(self, fake, x, real):
        score = self.netD(fake).sum()
        return -score, score


def run_step(order, **kw):
    G, D = Linear(WG), Linear(WD)
    step = GANTrainStep(G, DLoss(D), GLoss(D), nn.SGD(G.trainable_params(), LR), nn.SGD(D.trainable_params(), LR),
                        generator_inputs=1, order=order, **kw)
    outputs = [float(o.asnumpy()) for o in step(ms.Tensor(X), ms.Tensor(REAL))]
    return G.weight.asnumpy(), D.weight.asnumpy(), outputs


def expected(order):
    fake = X @ WG.T
    if order == "G_then_D":
        wg = WG + LR * WD.T @ X
        wd = WD - LR * (fake - REAL)
        d_loss, g_loss = float(((fake - REAL) @ WD.T).item()), float(-(fake @ WD.T).item())
    else:
        wd = WD - LR * (fake - REAL)
        wg = WG + LR * wd.T @ X
        d_loss, g_loss = float(((fake - REAL) @ WD.T).item()), float(-(fake @ wd.T).item())
    return wg, wd, [d_loss, g_loss, -g_loss]


@pytest.mark.parametrize("mode", [ms.GRAPH_MODE, ms.PYNATIVE_MODE])
@pytest.mark.parametrize("order", ["D_then_G", "G_then_D"])
def test_gan_step_orders_match_the_hand_derived_updates(order, mode):
    """In both modes, with a D loss returning ``(loss,)`` alone (pix2pix's; PyNative once refused it)."""
    ms.set_context(mode=mode)
    try:
        wg, wd, outputs = run_step(order)
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
    want_g, want_d, want_out = expected(order)
    np.testing.assert_allclose(wg, want_g, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(wd, want_d, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(outputs, want_out, rtol=1e-6, atol=1e-7)


def test_static_loss_scale_gives_the_same_update():
    wg, wd, outputs = run_step("D_then_G", loss_scale=1024.0)
    want_g, want_d, want_out = expected("D_then_G")
    np.testing.assert_allclose(wg, want_g, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(wd, want_d, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(outputs, want_out, rtol=1e-6, atol=1e-6)


def test_gradient_clipping_to_a_global_norm():
    clip = 0.05
    wg, wd, _ = run_step("D_then_G", clip_norm=clip)
    fake = X @ WG.T
    grad_d = fake - REAL
    wd_want = WD - LR * grad_d * min(1.0, clip / np.linalg.norm(grad_d))
    grad_g = -wd_want.T @ X
    np.testing.assert_allclose(wd, wd_want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(wg, WG - LR * grad_g * min(1.0, clip / np.linalg.norm(grad_g)), rtol=1e-5, atol=1e-7)


def test_ema_hook_runs_after_the_update_inside_the_step():
    net, ema_net = Linear(WG), Linear(np.zeros_like(WG))
    loss = nn.WithLossCell(net, nn.MSELoss())
    step = TrainOneStep(loss, nn.SGD(net.trainable_params(), LR), hooks=[EMA(net, ema_net, decay=0.9)])
    target = np.zeros((1, 2), np.float32)
    step(ms.Tensor(X), ms.Tensor(target))
    fake = X @ WG.T
    updated = WG - LR * (2.0 / fake.size) * (fake - target).T @ X
    np.testing.assert_allclose(net.weight.asnumpy(), updated, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ema_net.weight.asnumpy(), 0.1 * updated, rtol=1e-6, atol=1e-7)


def test_ema_refuses_a_network_of_another_structure():
    with pytest.raises(ValueError, match="structure"):
        EMA(Linear(WG), Linear(np.zeros((3, 3), np.float32)))


def test_unknown_order_is_refused():
    with pytest.raises(ValueError, match="G_then_D"):
        run_step("both")


def reachable_cells(cell):
    """``cell`` and its sub-cells, once per path (as MindSpore's own ``compile_phase`` setter reaches them)."""
    yield cell
    for child in cell._cells.values():
        if child is not None:
            yield from reachable_cells(child)


def test_step_cells_give_every_sub_cell_the_phase_of_the_call():
    """common.train.StepCell reaches each sub-cell once (here D is shared by both losses; hooks is an empty
    CellList) and leaves every cell with the call's phase, as MindSpore's setter does: after a step, and again
    after G, compiled and run alone, took a phase of its own."""
    G, D = Linear(WG), Linear(WD)
    step = GANTrainStep(G, DLoss(D), GLoss(D), nn.SGD(G.trainable_params(), LR), nn.SGD(D.trainable_params(), LR))
    inputs = ms.Tensor(X), ms.Tensor(REAL)
    step(*inputs)
    assert sum(c is D for c in reachable_cells(step)) > 1
    assert {c.compile_phase for c in reachable_cells(step)} == {step.compile_phase}
    G(inputs[0])
    assert G.compile_phase != step.compile_phase
    step(*inputs)
    assert {c.compile_phase for c in reachable_cells(step)} == {step.compile_phase}
    with pytest.raises(TypeError, match="str"):
        step.compile_phase = 1


class SquaredOutput(nn.Cell):
    """A bare loss (not a tuple): 0.5 * |W x|^2, gradient (W x) x^T."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def construct(self, x):
        return 0.5 * (self.net(x) ** 2).sum()


@pytest.mark.parametrize("mode, loss_scale", [(ms.PYNATIVE_MODE, 0), (ms.PYNATIVE_MODE, 8), (ms.GRAPH_MODE, 8)])
def test_train_one_step_with_a_bare_loss(mode, loss_scale):
    """TrainOneStep on a loss cell returning a bare loss (CRN's) in both modes: returns the loss, SGD update
    W - lr (W x) x^T (PyNative once refused it: value_and_grad's has_aux needs two outputs)."""
    ms.set_context(mode=mode)
    try:
        net = Linear(WG)
        step = TrainOneStep(SquaredOutput(net), nn.SGD(net.trainable_params(), learning_rate=LR),
                            loss_scale=loss_scale)
        loss = step(ms.Tensor(X))
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
    y = X @ WG.T
    assert float(loss.asnumpy()) == pytest.approx(0.5 * float((y ** 2).sum()), rel=1e-6)
    np.testing.assert_allclose(net.weight.asnumpy(), WG - LR * y.T @ X, rtol=1e-6, atol=1e-7)


class Float16SquaredOutput(SquaredOutput):
    """The same loss rounded to float16, as a loss built on float16 cells (mixed precision O2) comes out; with
    ``has_aux``, ``(loss, loss)``."""

    def __init__(self, net, *, has_aux):
        super().__init__(net)
        self.has_aux = has_aux

    def construct(self, x):
        loss = ms.ops.cast(super().construct(x), ms.float16)
        return (loss, loss) if self.has_aux else loss


@pytest.mark.parametrize("has_aux", [False, True])
def test_loss_scale_multiplies_a_float16_loss_in_float32(has_aux):
    """A float16 loss of about 834 with a static scale of 1024: the scaled loss (854,000) is past float16's
    largest value (65,504), so it is scaled in float32 (d scaled / d loss = 1024 still fits float16). The step
    reports the loss and makes the SGD update of the unscaled gradient; scaled in float16, both were inf."""
    net = Linear(WG)
    step = TrainOneStep(Float16SquaredOutput(net, has_aux=has_aux), nn.SGD(net.trainable_params(), learning_rate=LR),
                        has_aux=has_aux, loss_scale=1024.0)
    x = 20 * X
    out = step(ms.Tensor(x))
    y = x @ WG.T
    for loss in (out if has_aux else (out,)):
        assert float(loss.asnumpy()) == pytest.approx(0.5 * float((y ** 2).sum()), rel=1e-3)
    np.testing.assert_allclose(net.weight.asnumpy(), WG - LR * y.T @ x, rtol=1e-6, atol=1e-6)


# The D step's place in a G_then_D step, seen in the memory pool's peak. T = 16 MiB (one tensor of N floats).
N = 4 * 2**20


class SineChain(nn.Cell):
    """A generator returning a tuple (as CoCosNet's): (h * h, h), h = sin^8(w x); its backward keeps 8 tensors."""

    def __init__(self):
        super().__init__()
        self.w = ms.Parameter(ms.Tensor(np.ones(1, np.float32)), name="w")

    def construct(self, x):
        h = x * self.w
        for _ in range(8):
            h = ms.ops.sin(h)
        return h * h, h


class WideD(nn.Cell):
    """|w [y, y]|^2: its weight gradient keeps 2 tensors of twice y's size until D's backward."""

    def __init__(self):
        super().__init__()
        self.w = ms.Parameter(ms.Tensor(np.ones(1, np.float32)), name="wd")

    def construct(self, y):
        z = ms.ops.cat((y, y)) * self.w
        return (z * z).sum()


class BatchedDLoss(nn.Cell):
    """D on [fake, real] as one batch, as CoCosNet's D step."""

    def __init__(self, netD):
        super().__init__()
        self.netD = netD

    def construct(self, out, x, real):
        return (self.netD(ms.ops.cat((out[0], real))),)


class TupleGLoss(nn.Cell):
    def construct(self, out, x, real):
        return (ms.ops.sin(out[0]).sum() + out[1].sum(),)


class PhaseAlone(nn.Cell):
    """The generator and one loss, for a TrainOneStep of one phase (``detach``: D's phase)."""

    def __init__(self, generator, loss, *, detach):
        super().__init__()
        self.generator, self.loss, self.detach = generator, loss, detach

    def construct(self, x, real):
        out = self.generator(x)
        return self.loss(ms.ops.stop_gradient(out) if self.detach else out, x, real)


def run_for_pool_peak(what):
    """In a fresh process: one G_then_D step (``what="step"``) or the step of one phase alone ("G", "D")."""
    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    G, D = SineChain(), WideD()
    opt_G, opt_D = nn.SGD(G.trainable_params(), LR), nn.SGD(D.trainable_params(), LR)
    if what == "step":
        step = GANTrainStep(G, BatchedDLoss(D), TupleGLoss(), opt_G, opt_D, order="G_then_D")
    else:
        loss = TupleGLoss() if what == "G" else BatchedDLoss(D)
        step = TrainOneStep(PhaseAlone(G, loss, detach=what == "D"), opt_G if what == "G" else opt_D, has_aux=True)
    rng = np.random.default_rng(0)
    step(*(ms.Tensor(rng.uniform(0, 1, N).astype(np.float32)) for _ in range(2)))


def test_g_then_d_step_runs_d_after_the_g_update_so_their_tensors_never_coexist():
    """MindSpore starts an operator once its inputs exist: D's phase must wait for G's update explicitly (per
    tensor: a Depend on the generator's output tuple held nothing back, and CoCosNet's D step then kept 481 MiB
    alive through G's backward). The pool's peak (MS_DEV_RUNTIME_CONF memory_statistics, printed at exit) of the
    step is that of its larger phase, each measured alone, within one tensor; with D's phase run during G's
    backward it was 320 against 192 MiB (that Depend in place of the per-tensor ones)."""
    env = dict(os.environ, MS_DEV_RUNTIME_CONF="memory_statistics:True")
    runs = {what: subprocess.Popen([sys.executable, "-c", "import sys; from tests.test_train_step import "
                                    "run_for_pool_peak; run_for_pool_peak(sys.argv[1])", what], cwd=REPO, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for what in ("step", "G", "D")}
    peaks = {}
    for what, proc in runs.items():
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out[-2000:]
        found = re.findall(r"(?<!actual )peak used mem:(\d+)M", out)
        assert found, out[-2000:]
        peaks[what] = int(found[0])
    assert peaks["G"] >= 8 * 16 and peaks["D"] >= 6 * 16, peaks  # each phase holds what its docstring says
    assert peaks["step"] <= max(peaks["G"], peaks["D"]) + 16, peaks
