"""CRN helpers of the spec: fine-tuning from a lower resolution, the trainable-parameter selection, label
input for predict, image output, sample grids and the benchmark step."""

import cv2
import numpy as np

import common  # noqa: F401  (oneDNN ISA before mindspore)
import mindspore as ms
from mindspore import Tensor, nn

from common import cityscapes as cs
from common.checkpoint import CheckpointError, resolve_checkpoint
from common.classes import builtin_table
from common.compile_cache import BoundStep
from common.conv import use_conv_impl
from common.io import make_grid
from crn.src.dataset import encode_label, label_file_to_ids
from crn.src.model import CascadedRefinementNetwork, default_num_outputs

__all__ = ["init_from_lower_resolution", "trainable_parameters", "read_label_input", "generate", "label_palette",
           "colorize_onehot", "sample_grid", "make_bench_step"]


def init_from_lower_resolution(net, path, log=print):
    """Fine-tuning: copy every parameter of the checkpoint at ``path`` whose name and shape ``net`` shares.

    A 256p checkpoint fills modules 4..256 of a 512p CRN; the new module and the 1x1 output conv (other
    channels) keep their initialisation. Returns the names loaded.
    """
    path = resolve_checkpoint(path, "G")
    stored = ms.load_checkpoint(path)
    loaded, skipped = [], []
    for p in net.get_parameters():
        value = stored.get(p.name)
        if value is not None and tuple(value.shape) == tuple(p.shape):
            p.set_data(Tensor(value.asnumpy(), p.dtype))
            loaded.append(p.name)
        else:
            skipped.append(p.name)
    if not loaded:
        raise CheckpointError(f"init_from={path}: no parameter of this CRN is in the file; pass a CRN checkpoint "
                              f"with the same num_classes and width_mult")
    modules = sorted({n.split(".")[1] for n in skipped if n.startswith("refine.")}, key=int)
    log(f"init_from {path}: loaded {len(loaded)} parameters; new (from scratch): refinement modules "
        f"{[net.heights[int(i)] for i in modules]} and {sorted({n for n in skipped if n.startswith('to_rgb')})}")
    return loaded


def trainable_parameters(net, last_modules=0):
    """All generator parameters, or only those of the last ``last_modules`` modules and the output conv."""
    if last_modules == 0:
        return net.trainable_params()
    if not 0 < last_modules <= len(net.refine):
        raise ValueError(f"train_last_modules={last_modules}: the {net.size}p CRN has {len(net.refine)} modules")
    first = len(net.refine) - last_modules
    return [p for p in net.trainable_params() if p.name.startswith("to_rgb") or int(p.name.split(".")[1]) >= first]


def read_label_input(path, cfg):
    """Label file -> [num_classes + 1, size, aspect*size] one-hot, resized if only the scale differs."""
    ids = label_file_to_ids(path, cfg.label_format)
    height, width = cfg.size, cfg.aspect * cfg.size
    if ids.shape != (height, width):
        if ids.shape[1] * height != ids.shape[0] * width:
            raise ValueError(f"label map {path} is {ids.shape[1]}x{ids.shape[0]} (WxH) but the {cfg.size}p model "
                             f"makes {width}x{height} images; crop it to aspect {cfg.aspect}:1 or pass the "
                             f"size/aspect the model was trained with")
        print(f"{path}: resized {ids.shape[1]}x{ids.shape[0]} -> {width}x{height} (nearest)")
        ids = cv2.resize(ids.astype(np.uint16), (width, height), interpolation=cv2.INTER_NEAREST)
    return encode_label(ids, cfg.num_classes, cfg.ignore_index, path, class_table=cfg.class_table)


def generate(net, label):
    """[B, P, H, W] one-hot float32 -> [B, k, H, W, 3] uint8 (clipped to 0..255, as the reference saves)."""
    net.check_input(label.shape)
    out = net(Tensor(np.ascontiguousarray(label, np.float32))).asnumpy()
    return np.rint(np.clip(out, 0, 255)).astype(np.uint8).transpose(0, 1, 3, 4, 2)


def images_uint8(images):
    """The exported graph's ``images`` [B, k, 3, H, W] in 0..1 -> [B, k, H, W, 3] uint8, as :func:`generate`."""
    return np.rint(np.clip(images * 255.0, 0, 255)).astype(np.uint8).transpose(0, 1, 3, 4, 2)


def label_palette(num_classes, table=None):
    """[num_classes + 1, 3] uint8, void black last: the colours of the class table ``table``
    (:class:`common.classes.ClassTable`), else of the built-in table with ``num_classes`` classes (Cityscapes,
    ADE20K), else the Cityscapes colours first and fixed pseudo-random ones after."""
    table = table or builtin_table(num_classes)
    if table is not None:
        return table.palette()
    extra = np.random.RandomState(1234).randint(0, 256, (max(num_classes - len(cs.PALETTE), 0), 3))
    return np.concatenate([cs.PALETTE[:num_classes], extra, np.zeros((1, 3))]).astype(np.uint8)


def colorize_onehot(label, table=None):
    """[P, H, W] one-hot (void last) -> [H, W, 3] uint8 colour image (:func:`label_palette` colours)."""
    return label_palette(label.shape[0] - 1, table)[np.argmax(label, axis=0)]


def sample_grid(net, dataset, indices, table=None):
    """One row per sample: colour label (``table``'s colours, if given), real photo, then the k outputs.
    Returns [H', W', 3] uint8."""
    rows = []
    for i in indices:
        label, photo = dataset.get(i)
        fakes = generate(net, label[None])[0]
        real = np.clip(photo, 0, 255).astype(np.uint8).transpose(1, 2, 0)
        rows.append([colorize_onehot(label, table), real] + list(fakes))
    return make_grid(rows)


def make_bench_step(size: int, batch: int, conv_impl="native"):
    """A zero-argument callable running one full CRN training step at ``size``p (blocking), convolutions
    (generator and VGG) on ``conv_impl`` (native | matmul, :func:`common.conv.use_conv_impl`).

    The step is the real one: generator forward, VGG19 hindsight loss (k = 9 at 256p) or plain loss
    (k = 1 above), backward and Adam on all generator parameters, on a random 20-channel label map and
    photo. The VGG19 is randomly initialised: its weights do not change the work done.

    Runs in the process's mode (``bench/train_step.py --mode``): on CPU, MindSpore 2.10's graph mode holds
    more of the step's intermediates than PyNative, which frees each tensor after its last use; the 256p
    step fits in 24 GB only in PyNative (crn/README.md, Performance).
    """
    from common.perceptual import CRN_LAYER_WEIGHTS, PerceptualLoss
    from common.train import TrainOneStep
    from crn.src.loss import CRNWithLoss

    rng = np.random.RandomState(0)
    label_nc = cs.NUM_CLASSES + 1
    net = CascadedRefinementNetwork(size, label_nc, default_num_outputs(size))
    use_conv_impl(net, conv_impl)
    perceptual = PerceptualLoss(CRN_LAYER_WEIGHTS[max(256, size)], arch="vgg19", pool="avg", normalize="caffe",
                                conv_impl=conv_impl)
    opt = nn.Adam(net.trainable_params(), learning_rate=1e-4, beta1=0.9, beta2=0.999, eps=1e-8)
    step = TrainOneStep(CRNWithLoss(net, perceptual), opt)
    step.set_train()
    ids = rng.randint(0, label_nc, (batch, 2 * size // 16 + 1, 2 * size // 16 + 1))
    onehot = np.eye(label_nc, dtype=np.float32)[ids].transpose(0, 3, 1, 2)
    label = Tensor(np.ascontiguousarray(np.repeat(np.repeat(onehot, 16, 2), 16, 3)[:, :, :size, :2 * size]))
    photo = Tensor(rng.uniform(0, 255, (batch, 3, size, 2 * size)).astype(np.float32))

    return BoundStep(step, (label, photo))
