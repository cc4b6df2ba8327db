"""The whole OSMIS / SIV-GAN generator, discriminator and both steps' losses and gradients against a PyTorch
restatement of the official code (``bench/torch_osmis.py``, also the networks of the speed benchmark).

The piece tests (``test_osmis_model.py``) check blocks, the diversity term, the weighted cross-entropy and the
branch weights one by one; this one checks their wiring: which features feed the content and layout branches,
the per-class masked means (class-major), the layout pooling, the low-level branch over the image pyramid, which
outputs get which loss weight, the mask head's softmax, the diversity pairs, the real pyramid, the Bernoulli and
argmax hardening of fake masks with their straight-through gradient.

Setup: the reference's configuration of a 64x96 frame (G 5 blocks, noise 4x6, D 6 blocks of which 2 low-level;
layout outputs 8x12 ... 1x1) at ch_G 4, ch_D 8, batch 3 (odd: a sample without a partner), 3 mask classes
(OSMIS; per-pixel random real masks, so the nearest resizes must pick the same pixels) or none (SIV-GAN). Our
initial weights are copied into the torch modules; both sides run in training mode, ours on the convolution path
and compiled kernels train.py uses (``cpu_conv: onednn``). Augmentation is off on both sides: identity affine
maps and zero feature-augmentation draws here, the restatement without the augmentation pipeline (see
``test_reference_augmentation_at_probability_zero_blurs_the_lower_scales`` for what the reference's pipeline
still does at probability 0). The G step's fake masks are hardened by Bernoulli draws that both sides are fed
(iteration 0 < warm-up), the D step's by argmax (iteration = warm-up; no near-ties, checked).

Spectral norm: both sides in training mode (one power iteration per forward, as the reference trains), from the
same ``u``, ``v``: the exact leading singular vectors of each weight (float64 SVD). They are a fixed point of the
power iteration, so every forward on either side uses sigma = the largest singular value (to float32 rounding),
whatever the number and order of forwards. That is what makes the comparison well defined: our train step runs D
before G and its D step iterates the low-level vectors once more before one joint pass on reals and fakes (both
documented in ``osmis/README.md``), and this test runs extra forwards to read D's outputs per branch. Random
vectors with one iteration each would compare those documented orders, not the networks. Our single-iteration
semantics against ``torch.nn.utils.spectral_norm`` from random vectors are checked by ``test_spectral_norm.py``.
The vectors are checked to be still equal on both sides at the end.

Tolerance: float32 on both sides, and the two frameworks sum convolutions in other orders, so values agree to a
few float32 ulps of the magnitudes involved, compounded over some 20 layers. Each tensor is compared elementwise
with ``|ours - theirs| <= 1e-4 * scale + 1e-6`` (scale = max|theirs|; the floor, about 10 ulps at 1, covers
outputs that are small differences of O(0.1) terms); gradients with ``2e-4 * scale + 1e-8``, where a D gradient's
scale is the larger of the reference's two backward passes' (reals, fakes: their sum may cancel) and the floor
covers the exactly-zero gradients of 1x1x1x1 spectral-normalised weights (W / sigma = sign(W)), which come out as
~2e-9 of rounding. The worst seen use under 20 % of that (``-s`` prints them: about 1e-6 of scale). Wiring errors
tried by hand (the class order of the masked means reversed, the content weight 1/D instead of 0.5/D, the
Bernoulli comparison flipped, the layout branch on a blurred feature) failed it by 300-5000x the tolerance.
"""
import itertools
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import mindspore as ms  # noqa: E402
from mindspore import Tensor, nn  # noqa: E402

import torch_osmis as ref  # noqa: E402  (bench/, put on sys.path by tests/conftest.py)
from common.conv import use_compiled_kernels, use_conv_impl  # noqa: E402
from common.spectral_norm import SpectralNorm  # noqa: E402
from osmis.src.augment import LayoutFA, LayoutSlots, reference_rectangle, sample_layout_fa  # noqa: E402
from osmis.src.config import reference_config  # noqa: E402
from osmis.src.loss import BATCH_FIELDS, DiscriminatorLoss, GeneratorLoss  # noqa: E402
from osmis.src.model import Discriminator, Generator, TrainingOutputs, resize_nearest  # noqa: E402

# the reference's automatic configuration of a 64x96 (HxW) frame, checked below: non-square, so that a swapped
# height and width anywhere (noise shape, pyramid, pooling, masks) shows
B, RES, CH_G, CH_D = 3, (64, 96), 4, 8
NOISE, NUM_G, NUM_D, NUM_D0 = (4, 6), 5, 6, 2
LOW = (RES[0] // 2 ** NUM_D0, RES[1] // 2 ** NUM_D0)
WARMUP, LAMBDA_DR = 10, 0.15
TOL_VALUE, TOL_GRAD = 1e-4, 2e-4  # relative to scale (module docstring)
FLOOR_VALUE, FLOOR_GRAD = 1e-6, 1e-8  # absolute: ~10 float32 ulps at 1; gradients that are exactly 0
CPU_CONV = "onednn"


def set_leading_singular_vectors(net):
    """Every spectral norm's u, v := the leading singular pair of its weight (a power-iteration fixed point)."""
    for _, cell in net.cells_and_names():
        if isinstance(cell, SpectralNorm):
            w = cell.conv.weight.asnumpy().astype(np.float64)
            u, _, vt = np.linalg.svd(w.reshape(w.shape[0], -1), full_matrices=False)
            cell.weight_u.set_data(Tensor(u[:, 0].astype(np.float32)))
            cell.weight_v.set_data(Tensor(vt[0].astype(np.float32)))


class Compare:
    """Elementwise comparisons: ``|ours - theirs| <= tol * scale + floor``, ``scale`` = max|theirs| unless given,
    ``floor`` by the kind of ``tol``.
    Keeps, per kind, the comparison that used the largest share of its allowance (printed with ``-s``)."""

    def __init__(self):
        self.worst = {}

    def __call__(self, kind, name, ours, theirs, tol, scale=None):
        ours = ours.asnumpy() if isinstance(ours, Tensor) else np.asarray(ours)
        theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
        assert ours.shape == theirs.shape, (name, ours.shape, theirs.shape)
        if scale is None:
            scale = float(np.abs(theirs).max())
        diff = float(np.abs(ours - theirs).max())
        allowed = tol * scale + (FLOOR_GRAD if tol == TOL_GRAD else FLOOR_VALUE)
        assert diff <= allowed, f"{kind} {name}: max |diff| {diff:.3g} at scale {scale:.3g}"
        if diff / allowed >= self.worst.get(kind, (0.0,))[0]:
            self.worst[kind] = (diff / allowed, name, diff, scale)

    def report(self):
        print("\nworst comparison per kind (|ours - torch|, scale, share of the tolerance used):")
        for kind, (share, name, diff, scale) in self.worst.items():
            print(f"  {kind:18s} {diff:.2e} at {scale:.2e} ({share:.1%}; {name})")


def _inputs(classes, rng):
    c = max(classes, 1)
    image = rng.uniform(-1, 1, (B, 3) + RES).astype(np.float32)
    if classes:
        ids = rng.randint(0, classes, (B,) + RES)  # per-pixel classes: the nearest resizes must pick alike
        mask = np.eye(classes, dtype=np.float32)[ids].transpose(0, 3, 1, 2)
    else:
        mask = np.zeros((B, 1, 1, 1), np.float32)
    theta = np.tile(np.array([[1, 0, 0], [0, 1, 0]], np.float32), (B, 1, 1))
    content_channels = CH_D * 4  # the low-level feature's channels (D_CHANNELS[NUM_D0] * ch_D)
    batch = dict(z_g=rng.standard_normal((B, 64, 1, 1)), z_d=rng.standard_normal((B, 64, 1, 1)), image=image,
                 mask=mask, theta_g=theta, theta_real=theta, theta_d=theta,
                 bern_g=rng.uniform(size=(B, c) + (LOW if classes else (1, 1))),
                 bern_d=rng.uniform(size=(B, c) + (LOW if classes else (1, 1))),
                 fa_mix=np.zeros((B, content_channels + 1)), fa_drop=np.zeros((B, content_channels)),
                 fa_layout=np.zeros((B, LayoutSlots(classes).size)))
    return {k: v.astype(np.float32) for k, v in batch.items()}


@pytest.mark.parametrize("classes", [3, 0], ids=["osmis", "siv_gan"])
def test_whole_networks_and_step_losses_match_the_torch_restatement(classes, pynative):
    auto = reference_config(*RES)
    assert (auto.resolution, auto.noise_shape, auto.num_blocks_g, auto.num_blocks_d, auto.num_blocks_d0) == \
        (RES, NOISE, NUM_G, NUM_D, NUM_D0)
    ms.set_seed(0)
    torch.manual_seed(0)
    masks = classes > 0
    net_g = Generator(NOISE, NUM_G, classes, ch_G=CH_G)
    net_d = Discriminator(NUM_D, NUM_D0, classes, ch_D=CH_D, batch_size=B)
    for net in (net_g, net_d):
        set_leading_singular_vectors(net)
        use_conv_impl(net, CPU_CONV)  # what train.py runs (osmis default_config: cpu_conv onednn)
        net.set_train()
    t_g = ref.Generator(NOISE, NUM_G, classes, CH_G)
    t_d = ref.Discriminator(NUM_D, NUM_D0, classes, CH_D, WARMUP)
    names_g, names_d = ref.copy_from_mindspore(t_g, net_g), ref.copy_from_mindspore(t_d, net_d)
    t_g.train(), t_d.train()
    losses = ref.Losses(NUM_D, masks, LAMBDA_DR)
    arch = {"num_blocks_g": NUM_G, "num_blocks_d0": NUM_D0, "num_blocks_d": NUM_D, "num_mask_channels": classes,
            "low_level_size": LOW, "norm_D": "none"}
    outputs = TrainingOutputs(net_g, NUM_D0, RES)
    g_loss = GeneratorLoss(outputs, net_d, arch, B, WARMUP, LAMBDA_DR)
    d_loss = DiscriminatorLoss(outputs, net_d, arch, B, WARMUP)
    for cell in (g_loss, d_loss):
        use_compiled_kernels(cell)  # the loss cells' own (augmentation, diversity term), as train.py
    batch = _inputs(classes, np.random.RandomState(0))
    assert tuple(batch) == BATCH_FIELDS and net_d.feature_channels == batch["fa_drop"].shape[1]
    ms_batch = tuple(Tensor(v) for v in batch.values())
    tt = {k: torch.from_numpy(v) for k, v in batch.items()}
    t_mask = tt["mask"] if masks else None
    check = Compare()

    def set_iteration(value):
        net_d.iteration.set_data(Tensor(float(value), ms.float32))

    # --- G step: generator outputs, D's outputs per branch on the fakes, the loss terms, G's gradients --- #
    set_iteration(0)  # Bernoulli warm-up: both sides harden the fake mask with the draws bern_g
    t_out, t_logits, t_losses = ref.g_step_losses(t_g, t_d, losses, tt["z_g"], 0, tt["bern_g"])
    t_g.zero_grad()
    sum(t_losses.values()).backward()
    out = net_g(ms_batch[0])
    for k in range(NUM_G):
        check("G image", f"scale {k}", out[k], t_out["images"][k], TOL_VALUE)
        check("G feature", f"scale {k}", out[NUM_G + k], t_out["features"][k], TOL_VALUE)
    if masks:
        check("G mask", "softmax", out[2 * NUM_G], t_out["masks"], TOL_VALUE)
        hard = g_loss.hard_fake_mask(out[2 * NUM_G], ms_batch[7])
        assert set(np.unique(hard.asnumpy().round(5))) <= {0.0, 1.0}
    d_out = net_d(out[NUM_G - NUM_D0:NUM_G], hard if masks else None)
    _check_branches(check, "D on G-step fakes", d_out, t_logits)

    class GStep(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.outputs, self.loss = outputs, g_loss

        def construct(self, *fields):
            return self.loss(self.outputs(fields[0]), *fields)

    params_g = net_g.trainable_params()
    (g_total, *g_terms), grads = ms.value_and_grad(GStep(), None, params_g, has_aux=True)(*ms_batch)
    check("G loss", "total", g_total, sum(t_losses.values()), TOL_VALUE)
    for name, ours in zip(("low-level", "content", "layout", "DR"), g_terms):
        check("G loss", name, ours, t_losses[name], TOL_VALUE)
    t_params = dict(t_g.named_parameters())
    for p, g in zip(params_g, grads):
        check("G gradient", p.name, g, _grad(t_params[names_g[p.name]]), TOL_GRAD)
    # the image scales D never sees get no gradient on either side (the diversity term reads the features)
    assert not np.any(grads[[p.name for p in params_g].index("rgb_converters.0.conv.weight")].asnumpy())

    # --- D step: D's outputs per branch on reals and on new fakes, the loss terms, D's gradients --- #
    set_iteration(WARMUP)  # past the warm-up: fake masks hardened by argmax
    t_real, t_fake, t_lreal, t_lfake = ref.d_step_losses(t_g, t_d, losses, tt["image"], t_mask, tt["z_d"], WARMUP,
                                                         tt["bern_d"])
    # the reference's two backward calls, kept apart: a D gradient is the sum of the two, which may cancel
    t_params = dict(t_d.named_parameters())
    params_d = net_d.trainable_params()
    t_list = [t_params[names_d[p.name]] for p in params_d]
    t_grads = [[g if g is not None else torch.zeros_like(t) for g, t in zip(
        torch.autograd.grad(sum(part.values()), t_list, retain_graph=True, allow_unused=True), t_list)]
        for part in (t_lreal, t_lfake)]
    image = ms_batch[2]
    pyramid = (d_loss.pool(image), image)
    real_mask = resize_nearest(ms_batch[3], LOW) if masks else None
    d_real = net_d(pyramid, real_mask)
    _check_branches(check, "D on reals", d_real, t_real)
    fake = net_g(ms_batch[1])
    fake_mask = None
    if masks:
        soft = resize_nearest(fake[2 * NUM_G], LOW).asnumpy()
        top2 = np.sort(soft, axis=1)[:, -2:]
        assert (top2[:, 1] - top2[:, 0]).min() > 1e-4  # no near-tie: both argmaxes pick the same class
        fake_mask = g_loss.hard_fake_mask(fake[2 * NUM_G], ms_batch[8])
    d_fake = net_d(fake[NUM_G - NUM_D0:NUM_G], fake_mask)
    _check_branches(check, "D on D-step fakes", d_fake, t_fake)
    for name, ours in zip(("low-level", "content", "layout"), d_loss.adversarial(d_real, True, ms_batch[3])):
        check("D loss", f"real {name}", ours, t_lreal[name], TOL_VALUE)
    fake_full = fake[2 * NUM_G] if masks else None
    for name, ours in zip(("low-level", "content", "layout"), d_loss.adversarial(d_fake, False, fake_full)):
        check("D loss", f"fake {name}", ours, t_lfake[name], TOL_VALUE)

    class DStep(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.loss = d_loss

        def construct(self, out, *fields):
            return self.loss(out, *fields)

    flat = outputs(ms_batch[0])  # the G step's output: the D step's fakes are only ordered after it
    (d_total, d_real_sum, d_fake_sum), grads = ms.value_and_grad(DStep(), None, params_d, has_aux=True)(flat, *ms_batch)
    check("D loss", "total", d_total, sum(t_lreal.values()) + sum(t_lfake.values()), TOL_VALUE)
    check("D loss", "real", d_real_sum, sum(t_lreal.values()), TOL_VALUE)
    check("D loss", "fake", d_fake_sum, sum(t_lfake.values()), TOL_VALUE)
    for p, g, g_real, g_fake in zip(params_d, grads, *t_grads):
        scale = max(float(g_real.abs().max()), float(g_fake.abs().max()))
        check("D gradient", p.name, g, g_real + g_fake, TOL_GRAD, scale=scale)

    # the power iterations stayed at their fixed point on both sides
    for net, module, names in ((net_g, t_g, names_g), (net_d, t_d, names_d)):
        buffers = dict(module.named_buffers())
        for p in net.get_parameters():
            if p.name.endswith(("weight_u", "weight_v")):
                check("u, v", p.name, p, buffers[names[p.name]], TOL_VALUE)
    check.report()


def _grad(param):
    """A torch parameter's gradient; zeros where the loss does not reach it (torch leaves None)."""
    return param.grad if param.grad is not None else torch.zeros_like(param)


def _check_branches(check, what, ours, theirs):
    for branch, outs in zip(("low-level", "content", "layout"), ours):
        assert len(outs) == len(theirs[branch]), (what, branch)
        for k, (x, y) in enumerate(zip(outs, theirs[branch])):
            check(what, f"{branch} {k}", x, y, TOL_VALUE)


def test_reference_augmentation_at_probability_zero_blurs_the_lower_scales():
    """The reference's ``AugmentPipe_kornia`` resizes every scale to full size and back even when no op fires: a
    half-size scale comes back filtered by [1/8, 3/4, 1/8] along each axis, a quarter-size one by [1/16, 7/8, 1/16]
    (edges replicated); ours leaves the scales as they are at identity
    (``test_osmis_model.py::test_identity_augmentation_is_exact``). Documented in ``osmis/README.md``
    (differences)."""
    rng = np.random.RandomState(0)
    quarter, half = (torch.from_numpy(rng.standard_normal((2, 3, 4 * k, 6 * k)).astype(np.float32)) for k in (1, 2))
    (low, mid, _), _ = ref.AugmentPipe(0.0)([quarter, half, torch.zeros(2, 3, 16, 24)])

    def blur(a, axis, side):
        n = a.shape[axis]
        before = a.index_select(axis, torch.tensor([0] + list(range(n - 1))))
        after = a.index_select(axis, torch.tensor(list(range(1, n)) + [n - 1]))
        return (1 - 2 * side) * a + side * (before + after)

    for x, y, side in ((half, mid, 1 / 8), (quarter, low, 1 / 16)):
        np.testing.assert_allclose(y.numpy(), blur(blur(x, 2, side), 3, side).numpy(), atol=1e-6)
        assert np.abs(y.numpy() - x.numpy()).max() > 0.1


@pytest.mark.parametrize("classes", [3, 4])
def test_reference_augmentation_moves_scales_and_mask_alike(classes):
    """The restated kornia pipeline with every op firing: two scales that are the mask painted (linear in the mask, so
    bilinear resampling commutes with painting) come out as the augmented mask painted, for masks of one and of two
    3-channel chunks; so all scales and the mask of a sample share its transform, and the ops did move pixels."""
    random.seed(1)
    torch.manual_seed(1)
    rng = np.random.RandomState(0)
    ids = np.kron(rng.randint(0, classes, (2, 4, 6)), np.ones((1, 8, 8), np.int64))  # [2, 32, 48] in 8x8 blocks
    mask = torch.from_numpy(np.eye(classes, dtype=np.float32)[ids].transpose(0, 3, 1, 2).copy())
    paints = [torch.from_numpy(rng.uniform(0, 1, (3, classes)).astype(np.float32)) for _ in range(2)]
    scales = [torch.einsum("kc,bchw->bkhw", p, mask) for p in paints]
    for _ in range(3):
        out, moved = ref.AugmentPipe(2.0)(scales, mask)  # probability 2: the zoom (probability / 2) fires too
        assert moved.shape == mask.shape
        for p, x in zip(paints, out):
            np.testing.assert_allclose(x.numpy(), torch.einsum("kc,bchw->bkhw", p, moved).numpy(), atol=1e-5)
        assert np.abs(moved.numpy() - mask.numpy()).max() > 0.5


def test_reference_step_builds_the_official_networks_and_trains():
    """``bench/torch_osmis_step.py``'s step at 64x64: the parameter counts the official code reports (issue #11)
    and two steps with every augmentation on, G and D moving."""
    import torch_osmis_step

    for masks, counts in ((True, (3398610, 1705580)), (False, (3397743, 649568))):
        step, net_g, net_d, size = torch_osmis_step.build_step(64, 64, masks=masks)
        assert size == (64, 64)
        assert tuple(sum(p.numel() for p in n.parameters()) for n in (net_g, net_d)) == counts
        before = [n.first_linear.weight.detach().clone() for n in (net_g,)] + [
            net_d.final_ll[0].weight_orig.detach().clone()]
        for _ in range(2):
            step()
        after = [net_g.first_linear.weight, net_d.final_ll[0].weight_orig]
        for b, a in zip(before, after):
            assert torch.isfinite(a).all() and (a - b).abs().max() > 0


class ReplayDraws(ref.ReferenceDraws):
    """The restatement's layout feature-augmentation draws, read from our per-sample draw vectors
    (``sample_layout_fa``) role by role."""

    def __init__(self, draws, classes):
        super().__init__(prob=None)
        self.d, self.slots = draws, LayoutSlots(classes)
        rows = draws[0, self.slots.move] if classes else np.zeros(0)
        self.move = rows.reshape(self.slots.objects, -1) if classes else rows

    def fires(self, role, i, j=None):
        if role in ("swap", "background", "paste"):
            return bool(self.d[i, getattr(self.slots, {"swap": "swap_fires", "background": "background_fires",
                                                       "paste": "paste"}[role])][0])
        return bool(self.move[j, 2 if role == "duplicate" else 3])

    def rectangle(self, role, shape, i, t, size=None):
        if role == "swap":
            rects = self.d[i, self.slots.swap_rects]
        else:
            rects = self.d[i, self.slots.background_target if t is None else self.slots.background_sources]
        return tuple(int(v) for v in rects.reshape(-1, 4)[t or 0])

    def paste_class(self, i, objects):
        return int(self.d[i, self.slots.paste][1])

    def move_classes(self, objects):
        return [int(row[0]) - 1 for row in self.move if row[1]]

    def place(self, j, t, rows, cols):
        u = self.move[j, 4 + 2 * t: 6 + 2 * t]
        return int(np.floor(u[0] * rows)), int(np.floor(u[1] * cols))


@pytest.mark.parametrize("batch,classes", [(5, 3), (5, 4), (3, 3), (4, 2), (5, 0)])
def test_layout_feature_augmentation_matches_the_reference_with_the_same_draws(batch, classes):
    """Our in-graph ``LayoutFA`` against the restatement of the reference's loops (``Layout_FA``), both fed the same
    draws (``sample_layout_fa`` at probability 0.9), on masks of rectangular objects at 12x16: every rectangle
    swap, background copy, object paste, duplication and removal lands on the same pixels. Batches of 3 and 4 reach
    the background copy's tries beyond the batch (the reference tests the masks of samples 0..4)."""
    h, w, ch = 12, 16, 3
    rng = np.random.RandomState(batch * 10 + classes)
    layout_fa = LayoutFA(batch, num_mask_channels=classes)
    changed = 0
    for trial in range(12):
        y = rng.standard_normal((batch, ch, h, w)).astype(np.float32)
        ids = np.zeros((batch, h, w), np.int64)
        for i, k in itertools.product(range(batch), range(rng.randint(1, 4) if classes > 1 else 0)):
            top, left = rng.randint(0, h - 3), rng.randint(0, w - 3)
            ids[i, top:top + rng.randint(1, 4), left:left + rng.randint(1, 5)] = rng.randint(1, classes)
        draws = np.stack([sample_layout_fa(rng, 0.9, h, w, classes) for _ in range(batch)])
        mask = np.eye(max(classes, 1), dtype=np.float32)[ids].transpose(0, 3, 1, 2) if classes else None
        ours = layout_fa(Tensor(y), Tensor(draws), None if mask is None else Tensor(mask)).asnumpy()
        theirs = ref.LayoutFA(None, ReplayDraws(draws, classes))(
            torch.from_numpy(y), None if mask is None else torch.from_numpy(mask)).numpy()
        np.testing.assert_array_equal(ours, theirs, err_msg=f"trial {trial}")
        changed += not np.array_equal(ours, y)
    assert changed >= 6


def test_rectangle_draws_match_the_reference_rule():
    """``reference_rectangle`` (our host draws) and the restatement's ``gen_rectangle`` turn the same four uniforms
    into the same rectangle, with and without a given size, on maps where the rule pushes rectangles back inside."""
    class Uniforms:
        def uniform(self):
            return random.random()

    for seed, (h, w) in itertools.product(range(200), [(12, 16), (5, 3)]):
        random.seed(seed)
        theirs = ref.rectangle((1, 1, h, w)), ref.rectangle((1, 1, h, w), size=(2, 1))
        random.seed(seed)
        assert (reference_rectangle(Uniforms(), h, w), reference_rectangle(Uniforms(), h, w, (2, 1))) == theirs
