"""pix2pix helpers shared by the entry scripts: data root, network/optimizer builders, validation, samples."""
import os

import common  # noqa: F401
import mindspore as ms
import numpy as np
from mindspore import nn

from common.checkpoint import CheckpointError, load_cell, read_meta, resolve_checkpoint
from common.conv import use_conv_impl
from common.demo_data import ensure_demo_dataset
from common.io import make_grid, tensor_to_uint8, write_image
from pix2pix.src.dataset import AlignedDataset, check_image_size
from pix2pix.src.model import define_D, define_G, valid_sizes

__all__ = ["resolve_dataroot", "model_meta", "build_generator", "load_generator", "build_networks", "build_optimizers",
           "val_dataset", "generate", "validation_l1", "write_sample_grid", "make_bench_step"]

ARCH_KEYS = ("netG", "ngf", "norm", "input_nc", "output_nc")


def resolve_dataroot(cfg):
    """``cfg.dataroot``, or the demo dataset's pix2pix folder (generated once) when it is empty."""
    if cfg.dataroot:
        if not os.path.isdir(cfg.dataroot):
            raise FileNotFoundError(f"dataroot {cfg.dataroot} does not exist; pass --dataroot=<folder with "
                                    f"{cfg.phase}/ and {cfg.val_phase}/ of AB images>, or leave it empty for the demo data")
        return cfg.dataroot
    root = ensure_demo_dataset(n_train=cfg.demo_train, n_val=cfg.demo_val, size=cfg.demo_size, seed=0)
    return os.path.join(root, "pix2pix")


def model_meta(cfg):
    """Architecture keys stored in every checkpoint so a mismatching load names the difference."""
    return dict({"model": "pix2pix"}, **{k: cfg[k] for k in ARCH_KEYS})


def build_generator(cfg, size=None):
    """G of ``cfg``; ``size`` (default ``cfg.crop_size``) is checked against what the U-Net can take."""
    check_image_size(cfg.crop_size if size is None else size, valid_sizes(cfg.netG), cfg.netG)
    return define_G(cfg.netG, cfg.input_nc, cfg.output_nc, cfg.ngf, cfg.norm, cfg.use_dropout,
                    cfg.init_type, cfg.init_gain)


def load_generator(cfg, size=None):
    """G with the weights of ``cfg.ckpt`` (default: the latest snapshot in ``<output_dir>/ckpt``).

    The architecture keys (netG, ngf, norm, input_nc, output_nc) are taken from the checkpoint's
    metadata, so eval/predict/export need no repeated options; a checkpoint of another model is refused.
    Returns (G, checkpoint path).
    """
    path = resolve_checkpoint(cfg.ckpt or os.path.join(cfg.output_dir, "ckpt"), "G")
    meta = read_meta(path)
    if meta.get("model", "pix2pix") != "pix2pix":
        raise CheckpointError(f"checkpoint {path} holds a {meta['model']} network, not a pix2pix generator; "
                              f"evaluate it with {meta['model']}/eval.py")
    for key in ARCH_KEYS:
        if key in meta and meta[key] != cfg[key]:
            print(f"[pix2pix] {key}={meta[key]!r} from the checkpoint {path} (config: {cfg[key]!r})")
            cfg[key] = meta[key]
    netG = build_generator(cfg, size)
    load_cell(netG, path, model_meta(cfg), what=f"pix2pix generator {cfg.netG} (ngf={cfg.ngf})")
    return netG, path


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


def write_sample_grid(netG, dataset, path, num=4):
    """Write rows of (input | output | target) for the first ``num`` validation pairs to ``path``."""
    rows = []
    rng = np.random.RandomState(0)
    for i in range(min(num, len(dataset))):
        a, b = dataset.get(i, rng)
        fake = generate(netG, a[None])[0]
        rows.append([tensor_to_uint8(a[:3]), tensor_to_uint8(fake[:3]), tensor_to_uint8(b[:3])])
    write_image(path, make_grid(rows))


def make_bench_step(size=256, batch=1, netG=None, conv_impl="native"):
    """A zero-argument callable running one full pix2pix train step (D then G) on random data, convolutions
    on ``conv_impl`` (native | matmul, :func:`common.conv.use_conv_impl`)."""
    from common.config import load_config
    from pix2pix.src.train_step import Pix2PixTrainStep
    net_name = netG or ("unet_256" if size % 256 == 0 else "unet_128")
    cfg = load_config(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "default_config.yaml"),
                      netG=net_name, crop_size=size, batch_size=batch)
    G, D = build_networks(cfg)
    use_conv_impl(G, conv_impl)
    use_conv_impl(D, conv_impl)
    opt_G, opt_D = build_optimizers(cfg, G, D)
    step = Pix2PixTrainStep(G, D, opt_G, opt_D, cfg.gan_mode, cfg.lambda_L1)
    step.set_train()
    rng = np.random.RandomState(0)
    a = ms.Tensor(rng.uniform(-1, 1, (batch, 3, size, size)).astype(np.float32))
    b = ms.Tensor(rng.uniform(-1, 1, (batch, 3, size, size)).astype(np.float32))

    def run():
        out = step(a, b)
        return float(out[0].asnumpy())
    return run
