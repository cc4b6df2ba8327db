"""pix2pix helpers of the spec: network/optimizer builders, validation, samples, FCN-score labels, bench step."""
import os

import common  # noqa: F401
import mindspore as ms
import numpy as np
from mindspore import nn

from common.compile_cache import BoundStep
from common.conv import use_conv_impl, use_inference_conv_impl
from common.io import make_grid, tensor_to_uint8
from pix2pix.src.dataset import AlignedDataset, check_image_size
from pix2pix.src.model import define_D, define_G, valid_sizes

__all__ = ["build_generator", "build_networks", "build_optimizers", "val_dataset", "generate", "validation_l1",
           "sample_grid", "fcn_label_dir", "frame_labels", "make_bench_step"]


def build_generator(cfg, size=None, *, size_key="crop_size"):
    """G of ``cfg``; ``size`` (default ``cfg.crop_size``), set by option ``size_key``, is checked against what the
    U-Net can take."""
    check_image_size(cfg.crop_size if size is None else size, valid_sizes(cfg.netG), cfg.netG, size_key=size_key)
    return define_G(cfg.netG, cfg.input_nc, cfg.output_nc, cfg.ngf, cfg.norm, cfg.use_dropout,
                    cfg.init_type, cfg.init_gain)


def build_networks(cfg):
    """(G, D) from the config; D sees input and output stacked on channels."""
    netG = build_generator(cfg)
    netD = define_D(cfg.netD, cfg.input_nc + cfg.output_nc, cfg.ndf, cfg.n_layers_D, cfg.norm,
                    cfg.init_type, cfg.init_gain)
    return netG, netD


def build_optimizers(cfg, netG, netD):
    """Adam for G and D with a settable scalar learning rate (see :func:`common.train.set_lr`)."""
    def adam(net):
        return nn.Adam(net.trainable_params(), learning_rate=ms.Tensor(cfg.lr, ms.float32),
                       beta1=cfg.beta1, beta2=cfg.beta2)
    return adam(netG), adam(netD)


def val_dataset(cfg, dataroot):
    return AlignedDataset(dataroot, cfg.val_phase, cfg.direction, cfg.crop_size, cfg.crop_size, train=False)


def generate(netG, real_a):
    """[B, Cin, H, W] numpy -> [B, Cout, H, W] numpy with G in its current train/eval mode."""
    return netG(ms.Tensor(real_a)).asnumpy()


def validation_l1(netG, dataset, limit=0, protocol="paper"):
    """Mean |G(x) - y| over the validation set in [-1, 1] units (the paper's test protocol by default).

    ``protocol='paper'`` runs G in training mode (batch statistics, dropout on) without touching its
    BatchNorm moving statistics or dropout counters, which are restored afterwards.
    """
    n = len(dataset) if not limit else min(limit, len(dataset))
    snapshot = [(p, p.data.asnumpy().copy()) for p in netG.get_parameters() if not p.requires_grad]
    netG.set_train(protocol == "paper")
    total = 0.0
    rng = np.random.RandomState(0)
    for i in range(n):
        a, b = dataset.get(i, rng)
        total += float(np.abs(generate(netG, a[None]) - b[None]).mean())
    for p, value in snapshot:
        p.set_data(ms.Tensor(value, p.dtype))
    return total / max(n, 1)


def sample_grid(netG, dataset, num=4):
    """Rows of (input | output | target) for the first ``num`` validation pairs: uint8 [H, W, 3]."""
    rows = []
    rng = np.random.RandomState(0)
    for i in range(min(num, len(dataset))):
        a, b = dataset.get(i, rng)
        fake = generate(netG, a[None])[0]
        rows.append([tensor_to_uint8(a[:3]), tensor_to_uint8(fake[:3]), tensor_to_uint8(b[:3])])
    return make_grid(rows)


def fcn_label_dir(cfg, root, demo):
    """Folder of ``*_gtFine_labelIds.png`` for the FCN-score (the demo's when ``root`` is the demo data)."""
    if cfg.fcn_label_dir:
        return cfg.fcn_label_dir
    if demo:
        return os.path.join(os.path.dirname(root), "cityscapes", "gtFine", cfg.val_phase)
    raise ValueError("--fcn_ckpt needs --fcn_label_dir: the gtFine/<split> folder whose *_gtFine_labelIds.png "
                     "match the validation images")


def frame_labels(names, label_dir):
    """Map AB file stems to ``(frame id, labelIds path)``.

    Frame-id stems match their label by name; numeric stems ``1..N`` (the reference
    ``prepare_cityscapes_dataset.py`` numbering) map to the label files in sorted-path order.
    """
    from common.metrics.segmentation import frame_id
    labels = sorted(os.path.join(r, n) for r, _, ns in os.walk(label_dir) for n in ns if n.endswith("_gtFine_labelIds.png"))
    by_id = {frame_id(p): p for p in labels}
    out = {}
    for name in names:
        if name.isdigit():
            k = int(name) - 1
            if not 0 <= k < len(labels):
                raise ValueError(f"validation image {name} has no label: {label_dir} holds {len(labels)} label files")
            out[name] = (frame_id(labels[k]), labels[k])
        elif frame_id(name) in by_id:
            out[name] = (frame_id(name), by_id[frame_id(name)])
        else:
            raise ValueError(f"validation image {name} has no {frame_id(name)}_gtFine_labelIds.png under {label_dir}; "
                             f"pass the gtFine/<split> folder of the evaluated split as --fcn_label_dir")
    return out


def _bench_networks(size, batch, netG):
    """The config and (G, D) of the benchmarks: ``netG`` or the deepest U-Net ``size`` fits (unet_256 / 128 / 64 for
    multiples of 256 / 128 / 64; native convolutions)."""
    from common.config import load_config
    net_name = netG or next((f"unet_{s}" for s in (256, 128, 64) if size % s == 0), None)
    if net_name is None:
        raise ValueError(f"--size {size}: the pix2pix U-Nets take multiples of 64 (unet_64), 128 or 256")
    cfg = load_config(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "default_config.yaml"),
                      netG=net_name, crop_size=size, batch_size=batch)
    G, D = build_networks(cfg)
    return cfg, G, D


def make_bench_inference(size=256, batch=1, netG=None, conv_impl="native"):
    """A zero-argument callable running the generator once in eval mode (what predict.py runs) on random data."""
    _, G, _ = _bench_networks(size, batch, netG)
    use_inference_conv_impl(G, conv_impl)  # as load_inference: mixed takes winograd, weights packed
    G.set_train(False)
    x = ms.Tensor(np.random.RandomState(0).uniform(-1, 1, (batch, 3, size, size)).astype(np.float32))

    def run():
        return G(x).asnumpy()
    return run


def make_bench_step(size=256, batch=1, netG=None, conv_impl="native"):
    """A zero-argument callable running one full pix2pix train step (D then G) on random data."""
    from pix2pix.src.train_step import Pix2PixTrainStep
    cfg, G, D = _bench_networks(size, batch, netG)
    use_conv_impl(G, conv_impl)
    use_conv_impl(D, conv_impl)
    opt_G, opt_D = build_optimizers(cfg, G, D)
    step = Pix2PixTrainStep(G, D, opt_G, opt_D, cfg.gan_mode, cfg.lambda_L1)
    step.set_train()
    rng = np.random.RandomState(0)
    a = ms.Tensor(rng.uniform(-1, 1, (batch, 3, size, size)).astype(np.float32))
    b = ms.Tensor(rng.uniform(-1, 1, (batch, 3, size, size)).astype(np.float32))

    return BoundStep(step, (a, b))
