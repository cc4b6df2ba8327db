"""OSMIS helpers outside the drivers: the benchmark step."""
import os
import tempfile

import cv2
import numpy as np
import mindspore as ms

from common.compile_cache import BoundStep
from common.config import load_config
from common.conv import use_compiled_kernels, use_conv_impl
from common.data import BatchLoader

__all__ = ["make_bench_step"]


def make_bench_step(size, batch, conv_impl="native", masks=True):
    """A zero-argument callable running one full OSMIS training step (blocking) on a ``size`` x ``size``
    (or ``size = (height, width)``) training image with a 3-class mask (``masks=False``: SIV-GAN), batch
    ``batch``, ``max_size`` = the longer side (the automatic configuration may then train at a nearby
    size: 192x320 and 320x320 are kept), reference widths and
    augmentation probability 0.7: G forward for both noise batches, augmentation, D on reals and fakes,
    both updates, EMA. The image and mask are random (the work does not depend on them)."""
    from osmis.src.spec import OSMISSpec
    spec = OSMISSpec()
    root = tempfile.mkdtemp(prefix="osmis_bench_")
    h, w = (size, size) if isinstance(size, int) else size
    rng = np.random.RandomState(0)
    os.makedirs(os.path.join(root, "image"))
    cv2.imwrite(os.path.join(root, "image", "frame.png"), rng.randint(0, 256, (h, w, 3), np.uint8))
    if masks:
        os.makedirs(os.path.join(root, "mask"))
        cv2.imwrite(os.path.join(root, "mask", "frame.png"), rng.randint(0, 3, (h, w), np.uint8))
    cfg = load_config(spec.config_path, [f"--dataroot={root}", f"--max_size={max(h, w)}", f"--batch_size={batch}",
                                         f"--samples_per_epoch={batch}"])
    data = spec.datasets(cfg, None)
    trainer = spec.build_trainer(cfg, None, data)
    for net in trainer.networks.values():
        use_conv_impl(net, conv_impl)
    use_compiled_kernels(trainer.step)
    trainer.step.set_train()
    arrays = next(BatchLoader(data.train, batch, seed=0, num_workers=0).epoch(0))
    return BoundStep(trainer.step, [ms.Tensor(a) for a in arrays])
