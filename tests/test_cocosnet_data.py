"""CoCosNet data: ADE20K and folders layouts, reference lists and the 50/20/30 exemplar draw, clear errors
(class ids, missing exemplars, mismatched sizes), the styled demo data, and the VGG retrieval tool."""
import os
import re

import cv2
import numpy as np
import pytest

import common  # noqa: F401
import mindspore as ms

from common import demo_data
from common.runtime import eager
from cocosnet.src.dataset import ExemplarDataset, find_pairs, read_ids, read_ref_list
from cocosnet.src.retrieval import build_ref_list, top_k
from cocosnet.src.spec import read_exemplar
from cocosnet.src.utils import palette_distance

RNG = np.random.default_rng(3)


def write_pair(image_dir, label_dir, stem, ids, colour, ext=".png"):
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(label_dir, exist_ok=True)
    photo = np.zeros(ids.shape + (3,), np.uint8) + np.asarray(colour, np.uint8)
    cv2.imwrite(os.path.join(image_dir, stem + ext), photo[..., ::-1])
    cv2.imwrite(os.path.join(label_dir, stem + ".png"), ids.astype(np.uint8))


def folders_dataset(root, n_train=4, n_val=2, size=16, label_nc=5):
    """Train images of one flat colour each (index i: grey level 40 i), labels = class i % label_nc."""
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            ids = np.full((size, size), i % label_nc)
            ids[: size // 2] = (i + 1) % label_nc
            write_pair(os.path.join(root, split, "images"), os.path.join(root, split, "labels"), f"{split}{i}",
                       ids, (40 * i, 40 * i, 40 * i))
    with open(os.path.join(root, "ref_train.txt"), "w") as f:
        for i in range(n_train):
            f.write(f"train{i}.png,train{(i + 1) % n_train}.png,train{(i + 2) % n_train}\n")
    with open(os.path.join(root, "ref_val.txt"), "w") as f:
        for i in range(n_val):
            f.write(f"val{i}.png,train{i}.png\n")
    return root


def test_ade20k_layout_pairs_by_stem_and_reads_the_reference_test_list(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    for split, name in (("training", "ADE_train_0000000"), ("validation", "ADE_val_0000000")):
        for i in (1, 2):
            write_pair(str(root / "images" / split), str(root / "annotations" / split), f"{name}{i}",
                       np.full((8, 8), 150 * (i - 1)), (10, 20, 30), ext=".jpg")
    (root / "ade20k_ref_test.txt").write_text("ADE_val_00000001.jpg,ADE_train_00000002.jpg\n"
                                              "ADE_val_00000002.jpg,ADE_train_00000001.jpg\n")
    for where in (tmp_path, root):  # the parent of ADEChallengeData2016 works too
        pairs = find_pairs(str(where), "ade20k", "val")
        assert list(pairs) == ["ADE_val_00000001", "ADE_val_00000002"]
    data = ExemplarDataset(str(tmp_path), "ade20k", "val", str(root / "ade20k_ref_test.txt"), 151, 8)
    seg, ref, ref_seg, real, self_ref = data.get(0)
    assert seg.shape == ref_seg.shape == (151, 8, 8) and ref.shape == real.shape == (3, 8, 8)
    assert seg[0].all() and ref_seg[150].all() and self_ref == 0  # key has class 0, its exemplar class 150
    assert data.exemplar_name(0) == "ADE_train_00000002"
    np.testing.assert_allclose(real[:, 0, 0], np.array([10, 20, 30]) / 127.5 - 1, atol=0.05)  # JPEG


def test_training_draw_is_50_first_20_last_30_self(tmp_path):
    root = folders_dataset(str(tmp_path))
    data = ExemplarDataset(root, "folders", "train", os.path.join(root, "ref_train.txt"), 5, 16, 18, train=True)
    first, last = 40 * 1 / 127.5 - 1, 40 * 2 / 127.5 - 1
    counts = {"first": 0, "last": 0, "self": 0}
    n = 600
    for k in range(n):
        seg, ref, ref_seg, real, self_ref = data.get(0, np.random.RandomState(k))
        level = ref[0, 0, 0]
        if self_ref:
            counts["self"] += 1
            assert np.allclose(level, real[0, 0, 0])
        elif abs(level - first) < 1e-3:
            counts["first"] += 1
        else:
            assert abs(level - last) < 1e-3
            counts["last"] += 1
        assert seg.shape == (5, 16, 16) and np.allclose(seg.sum(0), 1)
    assert abs(counts["first"] / n - 0.5) < 0.06 and abs(counts["last"] / n - 0.2) < 0.05
    assert abs(counts["self"] / n - 0.3) < 0.05
    val = ExemplarDataset(root, "folders", "val", os.path.join(root, "ref_val.txt"), 5, 16)
    assert all(val.get(1, np.random.RandomState(k))[1][0, 0, 0] == pytest.approx(first, abs=1e-3) for k in range(5))


def test_clear_errors_name_the_file(tmp_path):
    root = folders_dataset(str(tmp_path))
    train_list = os.path.join(root, "ref_train.txt")
    with pytest.raises(ValueError, match=r"train\d\.png holds class ids \[4\].*--label_nc to at least 5"):
        ExemplarDataset(root, "folders", "train", train_list, 4, 16).get(3)
    bad = tmp_path / "bad_ref.txt"
    bad.write_text("".join(f"train{i}.png,train{i}.png\n" for i in range(3)) + "train3.png,nowhere.jpg\n")
    with pytest.raises(FileNotFoundError, match=r"bad_ref.txt:4: exemplar\(s\) \['nowhere'\]"):
        ExemplarDataset(root, "folders", "train", str(bad), 5, 16)
    layout = f"{re.escape(root)} has the folders layout: pass --data_format=folders"
    with pytest.raises(FileNotFoundError, match=layout):
        ExemplarDataset(root, "ade20k", "train", train_list, 5, 16)
    absent = str(tmp_path / "absent.txt")  # the command that writes it, for this dataset's layout
    with pytest.raises(FileNotFoundError, match=re.escape(f"build_ref_list --dataroot={root} --data_format=folders "
                                                          f"--ref_split=train --ref_out={absent}`")):
        ExemplarDataset(root, "folders", "train", absent, 5, 16)
    cv2.imwrite(os.path.join(root, "train", "labels", "train2.png"), np.zeros((8, 16), np.uint8))
    with pytest.raises(ValueError, match=r"train2.png is 16x8 but its photo .*train2.png is 16x16"):
        ExemplarDataset(root, "folders", "train", train_list, 5, 16)


def test_exemplar_label_errors_name_the_file(tmp_path):
    """The exemplar's label map (not the input's) with an id >= label_nc, a colour label map, and predict's
    --exemplar/--exemplar_label pair (wrong size, bad ids, missing file)."""
    root = folders_dataset(str(tmp_path))
    train_labels = os.path.join(root, "train", "labels")
    cv2.imwrite(os.path.join(train_labels, "train1.png"), np.full((16, 16), 7, np.uint8))
    val = ExemplarDataset(root, "folders", "val", os.path.join(root, "ref_val.txt"), 5, 16)
    assert val.get(0)[2].shape == (5, 16, 16)  # val0's exemplar is train0
    with pytest.raises(ValueError, match=r"labels.train1\.png holds class ids \[7\].*--label_nc to at least 8"):
        val.get(1)  # val1's own label map is fine, its exemplar train1's is not

    photo = os.path.join(root, "train", "images", "train0.png")
    ref, ref_seg = read_exemplar(photo, os.path.join(train_labels, "train0.png"), 5, 8)
    assert ref.shape == (3, 8, 8) and abs(ref.mean() + 1) < 1e-6  # train0 is black: -1 everywhere
    np.testing.assert_array_equal(ref_seg.argmax(0)[:4], 1)  # top half class 1, bottom half class 0
    np.testing.assert_array_equal(ref_seg.argmax(0)[4:], 0)
    assert read_exemplar(photo, "", 5, 8)[1].sum() == 0
    with pytest.raises(ValueError, match=r"train1\.png holds class ids \[7\].*predict\.py take it from the check"):
        read_exemplar(photo, os.path.join(train_labels, "train1.png"), 5, 8)
    cv2.imwrite(str(tmp_path / "colour.png"), np.zeros((8, 8, 3), np.uint8))  # predict.py --input of a colour map
    with pytest.raises(ValueError, match=r"colour\.png has 3 channels.*reads class ids 0\.\.4 as pixel values"):
        read_ids(str(tmp_path / "colour.png"), 5)
    cv2.imwrite(str(tmp_path / "short.png"), np.zeros((8, 16), np.uint8))
    with pytest.raises(ValueError, match=r"short\.png is 16x8 but its photo .*train0\.png is 16x16"):
        read_exemplar(photo, str(tmp_path / "short.png"), 5, 8)
    with pytest.raises(FileNotFoundError, match=r"nowhere\.png does not exist"):
        read_exemplar(str(tmp_path / "nowhere.png"), os.path.join(train_labels, "train0.png"), 5, 8)
    with pytest.raises(FileNotFoundError, match=r"image file .*images is a folder"):  # predict.py --exemplar=FOLDER
        read_exemplar(os.path.join(root, "train", "images"), "", 5, 8)

    cv2.imwrite(os.path.join(root, "val", "labels", "val0.png"), np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match=r"val0\.png has 3 channels .*class ids 0\.\.4"):
        ExemplarDataset(root, "folders", "val", os.path.join(root, "ref_val.txt"), 5, 16)


def test_styled_demo_keeps_the_plain_demo_and_pairs_by_style(tmp_path):
    plain = demo_data.ensure_demo_dataset(str(tmp_path), n_train=2, n_val=1, size=32, seed=0)
    styled = demo_data.ensure_demo_dataset(str(tmp_path), n_train=8, n_val=4, size=32, seed=0, styled=True)
    assert plain != styled and sorted(os.listdir(plain)) == ["cityscapes", "demo.json", "pix2pix"]
    photo, lab = demo_data.render_scene(0, 32, 32)
    stored = cv2.imread(os.path.join(styled, "train", "images", "train_0000.png"))[..., ::-1]
    np.testing.assert_array_equal(stored, demo_data.stylize(photo, "noon"))  # style 0 is the plain render
    night = demo_data.stylize(photo, "night")
    assert night.mean() < 0.7 * photo.mean() and night[..., 2].mean() > night[..., 0].mean()
    import json
    styles = json.load(open(os.path.join(styled, "styles.json")))
    for line in open(os.path.join(styled, "ref_train.txt")):
        key, *refs = [os.path.splitext(n)[0] for n in line.strip().split(",")]
        assert all(styles[r] == styles[key] and r != key for r in refs)
    for line in open(os.path.join(styled, "ref_val.txt")):
        key, ref = [os.path.splitext(n)[0] for n in line.strip().split(",")]
        assert styles[ref] != styles[key]
    data = ExemplarDataset(styled, "folders", "val", os.path.join(styled, "ref_val.txt"), demo_data.STYLED_LABEL_NC, 32)
    seg = data.get(0)[0]
    assert seg[1:].sum() == 32 * 32  # every pixel is one of the 7 demo classes


def test_palette_distance_by_hand():
    ids = np.array([[0, 1], [2, 2]])
    image = np.array([[[9, 9, 9], [10, 20, 30]], [[0, 0, 0], [4, 4, 4]]], np.uint8)
    other_ids = np.array([[1, 1], [3, 0]])
    other = np.array([[[12, 20, 30], [14, 20, 30]], [[0, 0, 0], [0, 0, 0]]], np.uint8)
    assert palette_distance(image, ids, other, other_ids) == pytest.approx(3 / 3)  # class 1 only: |10-13|/3
    assert np.isnan(palette_distance(image, ids, other, np.full((2, 2), 3)))


def test_top_k_is_cosine_ranking_without_the_query():
    gallery = np.array([[1, 0], [0.8, 0.6], [0, 1], [0.6, 0.8]])
    np.testing.assert_array_equal(top_k(gallery, gallery, 2, np.arange(4)), [[1, 3], [3, 0], [3, 1], [1, 2]])
    np.testing.assert_array_equal(top_k(np.array([[0.0, 1.0]]), gallery, 1), [[2]])


def test_build_ref_list_retrieves_the_duplicate_first(tmp_path):
    """A random-weight VGG19 file: a copy of a training image is its nearest exemplar."""
    from common.vgg import VGG
    root = str(tmp_path / "data")
    for split, n in (("train", 4), ("val", 1)):
        for i in range(n):
            photo = (RNG.uniform(0, 255, (32, 32, 3))).astype(np.uint8)
            d = os.path.join(root, split)
            os.makedirs(os.path.join(d, "images"), exist_ok=True)
            os.makedirs(os.path.join(d, "labels"), exist_ok=True)
            cv2.imwrite(os.path.join(d, "images", f"{split}{i}.png"), photo)
            cv2.imwrite(os.path.join(d, "labels", f"{split}{i}.png"), np.zeros((32, 32), np.uint8))
    dup = cv2.imread(os.path.join(root, "train", "images", "train2.png"))
    cv2.imwrite(os.path.join(root, "train", "images", "train3.png"), dup)
    cv2.imwrite(os.path.join(root, "val", "images", "val0.png"), dup)
    vgg = VGG("vgg19", ("pool5",))
    weights = [{"name": f"{n}.{k}", "data": getattr(c, k)} for n, c in vgg.conv_layers().items() for k in ("weight", "bias")]
    vgg_path = str(tmp_path / "vgg19.ckpt")
    ms.save_checkpoint(weights, vgg_path)
    logs = []
    with eager():
        out = build_ref_list(root, "folders", "train", str(tmp_path / "train.txt"), k=2, size=32, vgg_path=vgg_path,
                             log=logs.append)
        val = build_ref_list(root, "folders", "val", str(tmp_path / "val.txt"), k=3, size=32, vgg_path=vgg_path)
    assert logs[0].startswith(f"retrieval features: VGG19 from {vgg_path}")
    lines = [line.strip().split(",") for line in open(out)]
    assert [line[0] for line in lines] == [f"train{i}.png" for i in range(4)]
    assert lines[2][1] == "train3.png" and lines[3][1] == "train2.png"
    assert all(len(line) == 3 and line[0] not in line[1:] for line in lines)
    first = open(val).read().strip().split(",")
    assert first[0] == "val0.png" and first[1] in ("train2.png", "train3.png") and len(first) == 4
    table = read_ref_list(out, [f"train{i}" for i in range(4)], find_pairs(root, "folders", "train"))
    assert table["train2"][0] == "train3"
