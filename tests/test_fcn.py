"""FCN-8s: caffemodel reader on a caffemodel written with protobuf, geometry, FCN-score, scorer training."""
import os

import numpy as np
import pytest

import common  # noqa: F401
import cv2
import mindspore as ms

from common import cityscapes as cs
from common.demo_data import write_demo_dataset
from common.metrics.caffe import read_caffemodel
from common.metrics.fcn import FCN8s, fcn_score, fcn_score_files, init_fcn8s_from_vgg16, load_fcn8s, segment
from common.metrics.train_fcn import main as train_main

RNG = np.random.RandomState(0)
TINY = dict(channels=(4, 4, 8, 8, 8), fc=16)


def _caffe_classes():
    """NetParameter / LayerParameter / V1LayerParameter / BlobProto built from a descriptor (caffe.proto numbers)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="caffe_test.proto", package="caffe")

    def msg(name, fields):
        m = fdp.message_type.add(name=name)
        for fname, number, ftype, label, type_name, packed in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = f".caffe.{type_name}"
            if packed:
                f.options.packed = True
    rep, opt = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    msg("BlobShape", [("dim", 1, F.TYPE_INT64, rep, None, True)])
    msg("BlobProto", [("num", 1, F.TYPE_INT32, opt, None, False), ("channels", 2, F.TYPE_INT32, opt, None, False),
                      ("height", 3, F.TYPE_INT32, opt, None, False), ("width", 4, F.TYPE_INT32, opt, None, False),
                      ("data", 5, F.TYPE_FLOAT, rep, None, True), ("shape", 7, F.TYPE_MESSAGE, opt, "BlobShape", False)])
    msg("LayerParameter", [("name", 1, F.TYPE_STRING, opt, None, False), ("type", 2, F.TYPE_STRING, opt, None, False),
                           ("bottom", 3, F.TYPE_STRING, rep, None, False),
                           ("blobs", 7, F.TYPE_MESSAGE, rep, "BlobProto", False)])
    msg("V1LayerParameter", [("name", 4, F.TYPE_STRING, opt, None, False), ("type", 5, F.TYPE_INT32, opt, None, False),
                             ("blobs", 6, F.TYPE_MESSAGE, rep, "BlobProto", False)])
    msg("NetParameter", [("name", 1, F.TYPE_STRING, opt, None, False),
                         ("layers", 2, F.TYPE_MESSAGE, rep, "V1LayerParameter", False),
                         ("layer", 100, F.TYPE_MESSAGE, rep, "LayerParameter", False)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{n}"))
            for n in ("NetParameter", "BlobProto")}


def _write_caffemodel(path, net, v1_layer=None):
    classes = _caffe_classes()
    proto = classes["NetParameter"](name="fcn8s-test")
    proto.layer.add(name="data", type="Input")  # no blobs: skipped by the reader
    arrays = {}
    for p in net.get_parameters():
        arrays[p.name] = (RNG.randn(*p.shape) * 0.1).astype(np.float32)
    for layer in dict.fromkeys(k.split(".")[0] for k in arrays):
        kind = "Deconvolution" if layer.startswith("upscore") else "Convolution"
        lp = proto.layer.add(name=layer, type=kind, bottom=["x"])
        for suffix in ("weight", "bias"):
            if f"{layer}.{suffix}" in arrays:
                a = arrays[f"{layer}.{suffix}"]
                lp.blobs.add(shape={"dim": list(a.shape)}, data=a.ravel().tolist())
    if v1_layer is not None:  # old-format layer with legacy num/channels/height/width
        lp = proto.layers.add(name=v1_layer[0], type=4)
        a = v1_layer[1]
        lp.blobs.add(num=a.shape[0], channels=a.shape[1], height=a.shape[2], width=a.shape[3], data=a.ravel().tolist())
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())
    return arrays


def test_caffemodel_reader_and_fcn8s_loading(tmp_path):
    net = FCN8s(num_classes=5, **TINY)
    path = str(tmp_path / "fcn-8s-test.caffemodel")
    legacy = RNG.randn(2, 3, 1, 1).astype(np.float32)
    arrays = _write_caffemodel(path, net, v1_layer=("old_conv", legacy))
    layers = read_caffemodel(path)
    assert "data" not in layers and layers["upscore8"][0] == "Deconvolution"
    np.testing.assert_array_equal(layers["old_conv"][1][0], legacy)
    np.testing.assert_array_equal(layers["conv1_1"][1][0], arrays["conv1_1.weight"])
    load_fcn8s(net, path)
    for p in net.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), arrays[p.name])
    with pytest.raises(ValueError, match=r"conv1_1.weight has shape \(4, 3, 3, 3\).*\(64, 3, 3, 3\)"):
        load_fcn8s(FCN8s(num_classes=5), path)
    bad = tmp_path / "deploy.caffemodel"
    bad.write_bytes(b'layer {\n  name: "conv1_1"\n}\n')
    with pytest.raises(ValueError, match="not a valid .caffemodel|no layers with weights"):
        read_caffemodel(str(bad))


@pytest.mark.parametrize("hw", [(36, 52), (17, 23)])
def test_fcn8s_output_matches_input_size(hw):
    net = FCN8s(num_classes=3, **TINY)
    net.set_train(False)
    assert net(ms.Tensor(np.zeros((1, 3) + hw, np.float32))).shape == (1, 3) + hw


def test_init_from_vgg16_adapts_conv1_to_bgr_0_255():
    from common.vgg import vgg_conv_names
    weights = {n: (RNG.randn(*s).astype(np.float32), RNG.randn(s[0]).astype(np.float32))
               for n, s in zip(vgg_conv_names("vgg16"), [(64, 3, 3, 3), (64, 64, 3, 3), (128, 64, 3, 3), (128, 128, 3, 3)]
                               + [(256, 128, 3, 3)] + [(256, 256, 3, 3)] * 2 + [(512, 256, 3, 3)]
                               + [(512, 512, 3, 3)] * 5)}
    net = init_fcn8s_from_vgg16(FCN8s(num_classes=19, fc=8), weights)
    x_rgb = RNG.rand(3, 3, 3).astype(np.float32)  # one 3x3 patch, [C, kh, kw], in 0..1
    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
    torchvision_response = (weights["conv1_1"][0][0] * (x_rgb / std)).sum()
    fcn_response = (net.conv1_1.weight.asnumpy()[0] * (x_rgb[::-1] * 255.0)).sum()
    assert fcn_response == pytest.approx(torchvision_response, rel=1e-5)
    np.testing.assert_array_equal(net.conv5_3.weight.asnumpy(), weights["conv5_3"][0])


def _write_results(folder, gt_root, frames):
    os.makedirs(folder, exist_ok=True)
    for frame in frames:
        img = cv2.imread(os.path.join(gt_root, f"{frame}_leftImg8bit.png"))
        cv2.imwrite(os.path.join(folder, f"{frame}_leftImg8bit.png"), cv2.resize(img, (32, 32)))


def test_train_scorer_and_fcn_score_on_demo_data(tmp_path):
    root = write_demo_dataset(str(tmp_path / "demo"), n_train=2, n_val=2, size=32)
    cities = os.path.join(root, "cityscapes")
    out = str(tmp_path / "scorer" / "fcn8s.ckpt")
    train_main(["--data", cities, "--out", out, "--height", "32", "--width", "64", "--epochs", "2",
                "--batch-size", "2", "--tiny"])
    assert os.path.isfile(out) and "not comparable" in open(out[:-5] + ".json").read()
    net = load_fcn8s(FCN8s(cs.NUM_CLASSES, channels=(8, 8, 16, 16, 16), fc=32), out)
    img_dir = os.path.join(cities, "leftImg8bit", "val", "testville")
    frames = sorted(f[:-len("_leftImg8bit.png")] for f in os.listdir(img_dir))
    results = str(tmp_path / "results")
    _write_results(results, img_dir, frames)  # 32x32 results, labels 32x64: resized to the label size
    scores, table = fcn_score(net, results, os.path.join(cities, "gtFine", "val"), weights=out)
    correct = valid = 0
    for frame in frames:  # pooled pixel accuracy, computed directly
        ids = cv2.imread(os.path.join(cities, "gtFine", "val", "testville", f"{frame}_gtFine_labelIds.png"), 0)
        rgb = cv2.imread(os.path.join(results, f"{frame}_leftImg8bit.png"))[..., ::-1]
        pred = segment(net, cv2.resize(rgb, (64, 32), interpolation=cv2.INTER_LINEAR))
        train = cs.label_ids_to_train_ids(ids)
        correct += np.sum((pred == train) & (train != 255))
        valid += np.sum(train != 255)
    assert scores["pixel_acc"] == pytest.approx(correct / valid)
    assert "label size" in scores["protocol"]["mean_iou"] and table.startswith("| class | accuracy | IoU |")
    pairs = {frame: (os.path.join(results, f"{frame}_leftImg8bit.png"),
                     os.path.join(cities, "gtFine", "val", "testville", f"{frame}_gtFine_labelIds.png"))
             for frame in frames}
    matmul, _ = fcn_score_files(out, pairs, str(tmp_path / "staged"), conv_impl="matmul")  # the scorer on matmul
    assert matmul["pixel_acc"] == pytest.approx(correct / valid)
    lab = os.path.join(cities, "gtFine", "val", "testville", f"{frames[0]}_gtFine_labelIds.png")
    cv2.imwrite(lab, np.full((32, 64), 200, np.uint8))
    with pytest.raises(ValueError, match=r"label ids \[200\] are not Cityscapes labelIds"):
        fcn_score(net, results, os.path.join(cities, "gtFine", "val"))
