"""CRN networks and losses: parameter counts from the channel table, shapes, layer norm and hindsight loss
against NumPy, label encoding and bad-input errors."""
import numpy as np
import pytest

import common  # noqa: F401
import mindspore as ms
from mindspore import Tensor, nn

from common.layers import LayerNorm2d, count_params
from common.perceptual import PerceptualLoss, HindsightLoss, hindsight_reduce
from crn.src.dataset import encode_label
from crn.src.model import (CascadedRefinementNetwork, LayerNormLReLU, expected_param_count, module_channels,
                           module_heights)

ms.set_context(mode=ms.GRAPH_MODE)
ms.set_device("CPU")


def table_count(heights, channels, label_nc, k):
    """Parameters written out by hand from the reference table (no helper shared with the model)."""
    total, prev = 0, 0
    for c in channels:
        total += 3 * 3 * (prev + label_nc) * c + 2 * c + 3 * 3 * c * c + 2 * c
        prev = c
    return total + prev * 3 * k + 3 * k


REFERENCE = {
    256: ([1024] * 5 + [512] * 2, 9),
    512: ([1024] * 5 + [512] * 2 + [128], 1),
    1024: ([1024] * 5 + [512] * 2 + [128, 32], 1),
}


@pytest.mark.parametrize("size", [256, 512, 1024])
def test_parameter_counts_match_the_reference_table(size):
    channels, k = REFERENCE[size]
    net = CascadedRefinementNetwork(size, 20, k)
    assert module_heights(size) == tuple(4 * 2 ** i for i in range(len(channels)))
    assert [module_channels(h) for h in module_heights(size)] == channels
    want = table_count(module_heights(size), channels, 20, k)
    assert count_params(net) == want == expected_param_count(size, 20, k)
    assert want == {256: 97_875_483, 512: 98_622_851, 1024: 98_674_531}[size]
    assert net.refine[0].conv1.weight.shape == (channels[0], 20, 3, 3)
    assert net.refine[-1].conv1.weight.shape == (channels[-1], channels[-2] + 20, 3, 3)
    assert net.refine[0].conv1.bias is None and net.to_rgb.bias.shape == (3 * k,)
    assert net.input_shape == (20, size, 2 * size)


@pytest.mark.usefixtures("pynative")
@pytest.mark.parametrize("size,k", [(256, 9), (512, 1)])
def test_forward_shapes_narrow(size, k):
    net = CascadedRefinementNetwork(size, 5, k, width_mult=1 / 64)
    out = net(Tensor(np.random.RandomState(0).rand(1, 5, size, 2 * size).astype(np.float32)))
    assert out.shape == (1, k, 3, size, 2 * size)


@pytest.mark.usefixtures("pynative")
def test_output_layout_is_colour_major():
    """Image i, colour c is channel c*k + i of the 1x1 conv (the TF reference layout)."""
    k = 3
    net = CascadedRefinementNetwork(8, 4, k, width_mult=1 / 64)
    w = np.zeros(net.to_rgb.weight.shape, np.float32)
    b = np.arange(3 * k, dtype=np.float32)
    net.to_rgb.weight.set_data(Tensor(w))
    net.to_rgb.bias.set_data(Tensor(b))
    out = net(Tensor(np.zeros((1, 4, 8, 16), np.float32))).asnumpy()
    for i in range(k):
        for c in range(3):
            np.testing.assert_allclose(out[0, i, c], (b[c * k + i] + 1) * 127.5)


def test_layer_norm_matches_numpy():
    rng = np.random.RandomState(1)
    x = rng.randn(2, 3, 4, 5).astype(np.float32) * 3 + 1
    ln = LayerNorm2d(3)
    gamma, beta = rng.rand(3).astype(np.float32) + 0.5, rng.randn(3).astype(np.float32)
    ln.gamma.set_data(Tensor(gamma))
    ln.beta.set_data(Tensor(beta))
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    var = x.var(axis=(1, 2, 3), keepdims=True)  # biased, as slim.layer_norm
    want = (x - mean) / np.sqrt(var + 1e-12) * gamma[None, :, None, None] + beta[None, :, None, None]
    np.testing.assert_allclose(ln(Tensor(x)).asnumpy(), want, rtol=1e-5, atol=1e-5)


class _WeightedSum(nn.Cell):
    """sum(act(norm(x)) * w): a scalar whose gradient exercises every element of the backward."""

    def __init__(self, norm, act, w):
        super().__init__()
        self.norm, self.act, self.w = norm, act, w

    def construct(self, x):
        return (self.act(self.norm(x)) * self.w).sum()


def test_lean_layer_norm_lrelu_matches_autodiff_of_the_composed_ops():
    """LayerNormLReLU (hand-written backward) == LeakyReLU(0.2)(LayerNorm2d(x)): values and the gradients
    w.r.t. x, gamma and beta."""
    rng = np.random.RandomState(5)
    x = Tensor(rng.randn(2, 3, 4, 5).astype(np.float32) * 3 + 1)
    w = Tensor(rng.randn(2, 3, 4, 5).astype(np.float32))
    gamma, beta = rng.rand(3).astype(np.float32) + 0.5, rng.randn(3).astype(np.float32)
    results = []
    for norm, act in ((LayerNormLReLU(3), nn.Identity()), (LayerNorm2d(3), nn.LeakyReLU(0.2))):
        norm.gamma.set_data(Tensor(gamma))
        norm.beta.set_data(Tensor(beta))
        value, (dx, (d_gamma, d_beta)) = ms.value_and_grad(_WeightedSum(norm, act, w), 0, [norm.gamma, norm.beta])(x)
        results.append([t.asnumpy() for t in (value, dx, d_gamma, d_beta)])
    assert np.abs(results[1][1]).max() > 0.1  # a gradient that can tell the two apart
    for lean, composed in zip(*results):
        np.testing.assert_allclose(lean, composed, rtol=1e-4, atol=1e-5)


def numpy_hindsight(fake, real, onehot, weight_pixel):
    """Pixel-term hindsight loss in NumPy: masks area-pooled to each term's size (here: full size)."""
    b, k = fake.shape[:2]
    p = onehot.shape[1]
    cost = np.zeros((b, k, p))
    for i in range(b):
        for u in range(k):
            err = np.abs(fake[i, u] - real[i]).mean(axis=0)
            for c in range(p):
                cost[i, u, c] = weight_pixel * (err * onehot[i, c]).mean()
    return cost, (0.999 * cost.min(axis=1) + 0.001 * cost.mean(axis=1)).sum(axis=1).mean()


@pytest.mark.usefixtures("pynative")
def test_hindsight_loss_matches_numpy():
    rng = np.random.RandomState(2)
    b, k, p, h, w = 2, 3, 4, 4, 6
    fake = rng.uniform(0, 255, (b, k, 3, h, w)).astype(np.float32)
    real = rng.uniform(0, 255, (b, 3, h, w)).astype(np.float32)
    onehot = np.stack([encode_label(rng.randint(0, p - 1, (h, w)), p - 1) for _ in range(b)])
    onehot[:, :, 0, 0] = [1.0 / p] * p  # a soft (area-averaged) pixel
    loss = PerceptualLoss({"pixel": 0.5})
    cost = loss(Tensor(fake), Tensor(real), Tensor(onehot)).asnumpy()
    want_cost, want = numpy_hindsight(fake, real, onehot, 0.5)
    np.testing.assert_allclose(cost, want_cost, rtol=1e-5)
    np.testing.assert_allclose(HindsightLoss(loss)(Tensor(fake), Tensor(real), Tensor(onehot)).asnumpy(), want,
                               rtol=1e-5)
    # the min is per class: the loss is below the one of the best single output
    assert want < cost.sum(axis=2).min(axis=1).mean()


def test_hindsight_reduce_takes_the_minimum_per_class():
    cost = np.array([[[1.0, 9.0], [8.0, 2.0]]], np.float32)  # output 0 wins class 0, output 1 class 1
    got = hindsight_reduce(Tensor(cost), 0.999).asnumpy()
    assert np.isclose(got, 0.999 * (1 + 2) + 0.001 * (4.5 + 5.5))


@pytest.mark.usefixtures("pynative")
def test_masked_cost_sums_to_plain_cost_through_vgg():
    """With masks that sum to 1 per pixel, summing the per-class costs gives the unmasked loss, also for
    the VGG terms whose masks are area-downsampled."""
    rng = np.random.RandomState(3)
    loss = PerceptualLoss({"pixel": 1.0, "relu1_2": 0.5, "relu3_2": 0.25}, arch="vgg19")
    fake = Tensor(rng.uniform(0, 255, (1, 2, 3, 16, 32)).astype(np.float32))
    real = Tensor(rng.uniform(0, 255, (1, 3, 16, 32)).astype(np.float32))
    onehot = Tensor(encode_label(rng.randint(0, 3, (16, 32)), 3)[None])
    per_class = loss(fake, real, onehot).asnumpy()
    assert per_class.shape == (1, 2, 4)
    np.testing.assert_allclose(per_class.sum(axis=2), loss(fake, real).asnumpy(), rtol=1e-4)


def test_encode_label_one_hot_with_void():
    ids = np.array([[0, 1], [255, 2]])
    enc = encode_label(ids, 3)
    assert enc.shape == (4, 2, 2)
    np.testing.assert_array_equal(enc.argmax(0), [[0, 1], [3, 2]])
    np.testing.assert_array_equal(enc.sum(0), 1)


def test_label_ids_beyond_class_count_are_rejected():
    with pytest.raises(ValueError, match=r"labels/a\.png: label ids \[3, 7\] are outside 0\.\.2.*num_classes"):
        encode_label(np.array([[0, 3], [7, 255]]), 3, source="labels/a.png")


def test_wrong_label_tensor_shape_is_rejected():
    net = CascadedRefinementNetwork(8, 4, 2, width_mult=1 / 64)
    net.check_input((1, 4, 8, 16))
    with pytest.raises(ValueError, match=r"x\.png.*\(1, 5, 8, 16\).*\[B, 4, 8, 16\]"):
        net.check_input((1, 5, 8, 16), "x.png")
    with pytest.raises(ValueError, match=r"resize the label map to 8x16"):
        net.check_input((1, 4, 16, 32))
