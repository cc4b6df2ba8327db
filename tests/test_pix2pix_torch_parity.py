"""The pix2pix train step equals an independent PyTorch step (issue 8 "Must show").

The torch twin restates the reference layout of ``shared/bench/torch_pix2pix_step.py`` (junyanz's
``UnetSkipConnectionBlock``, from ``bench/inference.py``, and ``NLayerDiscriminator`` with BatchNorm) at
unet_128 / ngf=8 / ndf=8, nested so that its parameter names are MindSpore's with PyTorch's BatchNorm names. The MindSpore
networks' initial weights are copied in, dropout is off, and one step of each side runs on the same
inputs: torch as ``optimize_parameters`` (D on fake then real, then G through the updated D, vanilla
GAN + 100 * L1, Adam lr 2e-4 betas (0.5, 0.999)), MindSpore through ``Pix2PixTrainStep`` in graph mode.

Two conventions differ and are mapped, not tolerated:

* BatchNorm momentum: MindSpore keeps ``momentum * running + (1 - momentum) * batch`` (0.9), PyTorch
  ``(1 - momentum) * running + momentum * batch`` (0.1).
* Adam's epsilon: MindSpore divides by ``sqrt(v) + eps`` and folds the bias corrections into the step
  size, PyTorch by ``sqrt(v_hat) + eps``. At step t the two agree when PyTorch's eps is
  ``eps / sqrt(1 - beta2^t)``; this test runs one step, so t = 1.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn_t = torch.nn

import mindspore as ms  # noqa: E402
from mindspore import nn  # noqa: E402

from pix2pix.src.model import define_D, define_G  # noqa: E402
from pix2pix.src.train_step import Pix2PixTrainStep  # noqa: E402

from inference import torch_unet  # noqa: E402  (bench/inference.py: the reference U-Net restated in PyTorch)

LR, BETAS, EPS, LAMBDA_L1 = 2e-4, (0.5, 0.999), 1e-8, 100.0
SIZE, NGF, NDF = 128, 8, 8


class TorchPatchGAN(nn_t.Module):
    """junyanz ``NLayerDiscriminator`` (n_layers=3, BatchNorm) on 6 channels."""

    def __init__(self, ndf, n_layers=3):
        super().__init__()
        seq = [nn_t.Conv2d(6, ndf, 4, 2, 1), nn_t.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            seq += [nn_t.Conv2d(ndf * prev, ndf * mult, 4, 2, 1, bias=False), nn_t.BatchNorm2d(ndf * mult),
                    nn_t.LeakyReLU(0.2)]
        prev, mult = mult, min(2 ** n_layers, 8)
        seq += [nn_t.Conv2d(ndf * prev, ndf * mult, 4, 1, 1, bias=False), nn_t.BatchNorm2d(ndf * mult),
                nn_t.LeakyReLU(0.2), nn_t.Conv2d(ndf * mult, 1, 4, 1, 1)]
        self.model = nn_t.Sequential(*seq)

    def forward(self, x):
        return self.model(x)


TORCH_NAME = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}


def torch_name(ms_name):
    head, _, last = ms_name.rpartition(".")
    return f"{head}.{TORCH_NAME.get(last, last)}"


def ms_state(net):
    """{torch name: numpy value} of every MindSpore parameter (weights and BatchNorm statistics)."""
    return {torch_name(name): p.asnumpy().copy() for name, p in net.parameters_and_names()}


def torch_state(net):
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}


def load_into_torch(net, state):
    ours = torch_state(net)
    assert sorted(ours) == sorted(state), "the torch twin's parameters do not mirror the MindSpore network's"
    for k, v in state.items():
        assert ours[k].shape == v.shape, k
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    for m in net.modules():
        if isinstance(m, nn_t.BatchNorm2d):
            m.momentum = 0.1


def torch_step(G, D, real_a, real_b):
    """junyanz ``Pix2PixModel.optimize_parameters`` with vanilla GAN.

    Returns (loss_D, loss_G, {"G"|"D": {name: gradient each optimizer stepped with}}).
    """
    bias_corrected_eps = EPS / np.sqrt(1.0 - BETAS[1])
    opt_G = torch.optim.Adam(G.parameters(), LR, betas=BETAS, eps=bias_corrected_eps)
    opt_D = torch.optim.Adam(D.parameters(), LR, betas=BETAS, eps=bias_corrected_eps)
    bce = nn_t.BCEWithLogitsLoss()
    G.train()
    D.train()
    fake = G(real_a)
    opt_D.zero_grad()
    pred_fake = D(torch.cat([real_a, fake.detach()], 1))
    pred_real = D(torch.cat([real_a, real_b], 1))
    loss_d = 0.5 * (bce(pred_fake, torch.zeros_like(pred_fake)) + bce(pred_real, torch.ones_like(pred_real)))
    loss_d.backward()
    grads = {"D": {k: p.grad.numpy().copy() for k, p in D.named_parameters()}}
    opt_D.step()
    opt_G.zero_grad()
    pred_fake = D(torch.cat([real_a, fake], 1))
    loss_g = bce(pred_fake, torch.ones_like(pred_fake)) + LAMBDA_L1 * (fake - real_b).abs().mean()
    loss_g.backward()
    grads["G"] = {k: p.grad.numpy().copy() for k, p in G.named_parameters()}
    opt_G.step()
    return loss_d.item(), loss_g.item(), grads


def test_pix2pix_step_matches_pytorch():
    torch.manual_seed(0)
    ms.set_seed(0)
    netG = define_G("unet_128", 3, 3, NGF, "batch", use_dropout=False)
    netD = define_D("basic", 6, NDF, 3, "batch")
    tG, tD = torch_unet(NGF, 7, dropout=False), TorchPatchGAN(NDF)
    before_G, before_D = ms_state(netG), ms_state(netD)
    load_into_torch(tG, before_G)
    load_into_torch(tD, before_D)

    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (1, 3, SIZE, SIZE)).astype(np.float32)
    b = np.tanh(rng.normal(0, 1, (1, 3, SIZE, SIZE))).astype(np.float32)

    def adam(net):
        return nn.Adam(net.trainable_params(), learning_rate=LR, beta1=BETAS[0], beta2=BETAS[1], eps=EPS)
    step = Pix2PixTrainStep(netG, netD, adam(netG), adam(netD), "vanilla", LAMBDA_L1)
    step.set_train()
    loss_d, loss_g = (float(v.asnumpy()) for v in step(ms.Tensor(a), ms.Tensor(b))[:2])
    t_loss_d, t_loss_g, t_grads = torch_step(tG, tD, torch.from_numpy(a), torch.from_numpy(b))

    checked = np.zeros(2, np.int64)
    assert abs(loss_d - t_loss_d) < 1e-4 and abs(loss_g - t_loss_g) < 1e-4, (loss_d, t_loss_d, loss_g, t_loss_g)
    for name, net, tnet, before in (("G", netG, tG, before_G), ("D", netD, tD, before_D)):
        after, t_after = ms_state(net), torch_state(tnet)
        grads = t_grads[name]
        changed = [k for k in after if not np.array_equal(after[k], before[k])]
        assert len(changed) == len(after), f"{name}: parameters the step left unchanged: {set(after) - set(changed)}"
        for k in after:
            np.testing.assert_allclose(after[k], t_after[k], rtol=0, atol=1e-4, err_msg=f"{name} {k}")
            if k in grads:
                # Adam's first update is lr * g / (|g| + eps'), about lr for every weight, so check
                # it to 0.5 % of a step where the gradient is clear of eps' (3e-7) and rounding cannot sway it.
                clear = np.abs(grads[k]) > 1e-5
                checked += [clear.sum(), clear.size]
                np.testing.assert_allclose((after[k] - before[k])[clear], (t_after[k] - before[k])[clear],
                                           rtol=0, atol=1e-6, err_msg=f"{name} {k}: update")
    assert checked[0] > 0.5 * checked[1], f"only {checked[0]} of {checked[1]} updates had a clear gradient"
