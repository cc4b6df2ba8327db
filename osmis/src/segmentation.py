"""mIoU of generated masks: a small segmentation net trained on one set of image-mask pairs, scored on the
other (the OSMIS protocol, fake->real and real->fake), for any number of classes.

The reference trains an ImageNet ResNet18-UNet for 500 iterations (batch 5, Adam 1e-4, 0.5 BCE-with-logits +
0.5 Dice on one-hot masks, light flips/shifts) and reads the generated masks back from painted PNGs, which
only works for 2 classes. This port trains :class:`SegNet`, a small U-Net from scratch (no pretrained
encoder), with the same loss, Adam and batch on the index masks, horizontal flips with probability 0.15, and
scores with one confusion matrix over the test set (``common.metrics.segmentation.ConfusionMatrix``: pixel
accuracy and mean IoU over the classes present or predicted) instead of the reference's per-image
COCO-thresholded IoU. Numbers are therefore not comparable with the paper's.
"""
import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from common.conv import Conv2d, use_conv_impl
from common.layers import LeakyReLU, NearestUpsample, reduce_sum
from common.metrics.segmentation import ConfusionMatrix
from common.train import TrainOneStep

__all__ = ["SegNet", "SegLoss", "train_segmenter", "segment", "transfer_scores", "class_frequency_scores"]

FLIP_PROB = 0.15


def _conv(cin, cout):
    return nn.SequentialCell([Conv2d(cin, cout, 3, pad_mode="pad", padding=1, has_bias=True), LeakyReLU(0.2)])


class SegNet(nn.Cell):
    """Two-level U-Net: [B, 3, H, W] (H, W divisible by 4) -> class logits [B, C, H, W]."""

    def __init__(self, num_classes, width=16):
        super().__init__()
        w = width
        self.enc1 = nn.SequentialCell([_conv(3, w), _conv(w, w)])
        self.enc2 = nn.SequentialCell([_conv(w, 2 * w), _conv(2 * w, 2 * w)])
        self.mid = nn.SequentialCell([_conv(2 * w, 4 * w), _conv(4 * w, 4 * w)])
        self.dec2 = _conv(6 * w, 2 * w)
        self.dec1 = _conv(3 * w, w)
        self.head = Conv2d(w, num_classes, 1, has_bias=True)
        self.pool = nn.AvgPool2d(2, 2)
        self.up = NearestUpsample(2)

    def construct(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        m = self.mid(self.pool(e2))
        d2 = self.dec2(ops.concat((self.up(m), e2), axis=1))
        d1 = self.dec1(ops.concat((self.up(d2), e1), axis=1))
        return self.head(d1)


class SegLoss(nn.Cell):
    """0.5 * BCE-with-logits + 0.5 * Dice (smooth 1, per sample and class) against one-hot masks."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def construct(self, images, onehot):
        logits = self.net(images)
        bce = (ops.relu(logits) - logits * onehot + ops.log1p(ops.exp(-ops.abs(logits)))).mean()
        p = ops.sigmoid(logits)
        inter = reduce_sum(p * onehot, (2, 3), keep_dims=False)
        dice = 1.0 - (2.0 * inter + 1.0) / (reduce_sum(p, (2, 3), keep_dims=False) + reduce_sum(onehot, (2, 3), keep_dims=False) + 1.0)
        return 0.5 * bce + 0.5 * dice.mean()


def train_segmenter(images, masks, num_classes, iterations, *, batch=5, lr=1e-4, seed=0, conv_impl="native"):
    """Train a :class:`SegNet` on images [N, H, W, 3] uint8 and class ids [N, H, W]; returns the net."""
    ms.set_seed(seed)
    rng = np.random.RandomState(seed)
    net = SegNet(num_classes)
    use_conv_impl(net, conv_impl)
    step = TrainOneStep(SegLoss(net), nn.Adam(net.trainable_params(), learning_rate=lr))
    step.set_train()
    x = images.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0
    y = np.eye(num_classes, dtype=np.float32)[masks].transpose(0, 3, 1, 2)
    for _ in range(iterations):
        idx = rng.randint(0, len(x), batch)
        xb, yb = x[idx].copy(), y[idx].copy()
        flip = rng.uniform(size=batch) < FLIP_PROB
        xb[flip], yb[flip] = xb[flip][..., ::-1], yb[flip][..., ::-1]
        step(Tensor(xb), Tensor(yb))
    net.set_train(False)
    return net


def segment(net, images):
    """Class ids [N, H, W] of images [N, H, W, 3] uint8."""
    out = []
    for img in images:
        x = Tensor(img.astype(np.float32).transpose(2, 0, 1)[None] / 127.5 - 1.0)
        out.append(net(x).asnumpy()[0].argmax(axis=0))
    return np.stack(out)


def transfer_scores(train_images, train_masks, test_images, test_masks, num_classes, iterations, **kwargs):
    """Train on one set, score on the other: {pixel_acc, mean_iou} from one confusion matrix."""
    net = train_segmenter(train_images, train_masks, num_classes, iterations, **kwargs)
    cm = ConfusionMatrix(num_classes, ignore=-1)
    for pred, label in zip(segment(net, test_images), test_masks):
        cm.update(pred, label)
    scores = cm.compute()
    return {"pixel_acc": scores["pixel_acc"], "mean_iou": scores["mean_iou"]}


def class_frequency_scores(generated_masks, training_masks, num_classes):
    """Do the generated masks use the training masks' classes in their proportions?

    ``p_gen`` / ``p_train``: the fraction of pixels of each class over all masks ([N, H, W] class ids of
    each set; sizes may differ). Returns ``class_frequency_l1`` = sum_c |p_gen(c) - p_train(c)| (0: the same
    proportions, 2: disjoint classes), ``classes_missing``: training classes no generated mask shows, and
    ``classes_extra``: generated classes absent from the training masks.
    """
    def frequencies(masks):
        counts = np.bincount(np.asarray(masks, np.int64).ravel(), minlength=num_classes)
        if counts.size > num_classes:
            raise ValueError(f"mask class id {counts.size - 1} >= num_classes={num_classes}")
        return counts / counts.sum()

    p_gen, p_train = frequencies(generated_masks), frequencies(training_masks)
    return {"class_frequency_l1": float(np.abs(p_gen - p_train).sum()),
            "classes_missing": int(((p_train > 0) & (p_gen == 0)).sum()),
            "classes_extra": int(((p_gen > 0) & (p_train == 0)).sum())}
