"""CoCosNet helpers for the spec: optimizers, inference on numpy arrays, label colours, the style figure."""
import numpy as np
from mindspore import Tensor, nn

from common import ade20k
from common.classes import ade20k_table
from common.compile_cache import BoundStep

__all__ = ["adam", "ttur_rates", "colorize", "palette", "palette_distance", "make_bench_step",
           "make_bench_inference"]

TINY_BETA1 = 1e-12  # MindSpore's Adam wants beta1 in (0, 1); 1 - 1e-12 == 1 in float32


def adam(params, lr, beta1, beta2, eps):
    """``nn.Adam``; beta1 = 0 (the reference TTUR setting) runs as 1e-12, equal to 0 in float32 arithmetic."""
    return nn.Adam(params, learning_rate=lr, beta1=max(float(beta1), TINY_BETA1), beta2=beta2, eps=eps)


def ttur_rates(epoch, lr, n_epochs, n_epochs_decay):
    """{opt_G: lr/2, opt_D: 2 lr} times the schedule factor of 0-based ``epoch``: 1 for ``n_epochs``, then
    down by 1/n_epochs_decay per epoch (the reference subtracts lr/niter_decay after each epoch past niter)."""
    factor = 1.0 - max(0, epoch - n_epochs) / float(max(n_epochs_decay, 1))
    return {"opt_G": lr / 2 * factor, "opt_D": lr * 2 * factor}


def palette(label_nc):
    """[label_nc, 3] uint8: the ADE20K colours for 151 classes (``common.classes.ade20k_table``), else fixed
    pseudo-random ones (class 0 black)."""
    if label_nc == ade20k.NUM_CLASSES:
        return ade20k_table().colors
    colours = np.random.RandomState(7).randint(40, 256, (label_nc, 3)).astype(np.uint8)
    colours[0] = 0
    return colours


def colorize(onehot, table=None):
    """[L, H, W] one-hot -> [H, W, 3] uint8 colour image (all-zero pixels black), in the colours of the class
    table ``table`` (:class:`common.classes.ClassTable`) when given, else :func:`palette`."""
    ids = onehot.argmax(0)
    out = (palette(onehot.shape[0]) if table is None else table.colors)[ids]
    out[onehot.max(0) == 0] = 0
    return out


def palette_distance(image, ids, other, other_ids):
    """Mean |per-class mean colour of ``image`` - that of ``other``| (0..255) over the classes (id > 0) both
    label maps hold; NaN when they share none.

    image, other: [H, W, 3] uint8; ids, other_ids: [H, W] class ids.
    """
    shared = [c for c in np.intersect1d(np.unique(ids), np.unique(other_ids)) if c > 0]
    if not shared:
        return float("nan")
    diffs = [np.abs(image[ids == c].mean(0) - other[other_ids == c].mean(0)).mean() for c in shared]
    return float(np.mean(diffs))


def _bench_inputs(rng, label_nc, size, batch):
    """Random one-hot label maps of 16x16 blocks (``label_map()``) and images in [-1, 1] (``image()``)."""
    def label_map():
        ids = np.repeat(np.repeat(rng.randint(0, label_nc, (batch, size // 16, size // 16)), 16, 1), 16, 2)
        return Tensor(np.eye(label_nc, dtype=np.float32)[ids].transpose(0, 3, 1, 2).copy())

    def image():
        return Tensor(rng.uniform(-1, 1, (batch, 3, size, size)).astype(np.float32))
    return label_map, image


def make_bench_inference(size, batch, conv_impl="native"):
    """A zero-argument callable translating ``batch`` random label maps with random exemplars at ``size`` x
    ``size`` (ADE20K widths, 151 channels) as predict.py does: the correspondence, then the translation network on
    [warped exemplar, label map], spectral norms folded and weights packed
    (``common.drivers.prepare_inference``, as ``load_inference`` does)."""
    from mindspore import ops

    from cocosnet.src.spec import CoCosNetSpec
    from common.config import load_config
    from common.drivers import prepare_inference

    spec = CoCosNetSpec()
    cfg = load_config(spec.config_path, [f"--size={size}"])
    nets = spec.build_inference(cfg)
    for net in nets.values():
        prepare_inference(net, conv_impl)
    label_map, image = _bench_inputs(np.random.RandomState(0), cfg.label_nc, size, batch)
    seg, ref, ref_seg = label_map(), image(), label_map()

    def run():
        warped = nets["Corr"](seg, ref, ref_seg)[0]
        return nets["G"](ops.cat((warped, seg), 1)).asnumpy()
    return run


def make_bench_step(size, batch, conv_impl="native", recompute=False):
    """A zero-argument callable running one full CoCosNet training iteration (blocking) at ``size`` x ``size``,
    batch ``batch``, with the reference's widths and 151 ADE20K channels: correspondence + translation
    forward, the seven generator losses through a randomly initialised VGG19 (the reference's loss
    network: its weights do not change the work), the G step, then the D step. Random one-hot label maps
    of 16x16 blocks, random images; every other sample is self-referenced. ``recompute``: the config key
    (:class:`cocosnet.src.train_step.RecomputingStep`)."""
    from cocosnet.src.spec import CoCosNetSpec
    from cocosnet.src.train_step import VGGFeatures
    from common.config import load_config
    from common.conv import use_conv_impl

    spec = CoCosNetSpec()
    cfg = load_config(spec.config_path, [f"--size={size}"], recompute=bool(recompute))
    trainer = spec.build_training(cfg, VGGFeatures("vgg19", "caffe_bgr"), [])
    for net in list(trainer.networks.values()) + list(trainer.frozen.values()):
        use_conv_impl(net, conv_impl, keep_transforms=trainer.keep_conv_transforms)
    trainer.step.set_train()
    label_map, image = _bench_inputs(np.random.RandomState(0), cfg.label_nc, size, batch)
    return BoundStep(trainer.step, (label_map(), image(), label_map(), image(),
                                    Tensor((np.arange(batch) % 2).astype(np.float32))))
