"""Dataset preparation (common/prepare, scripts/prepare_data.sh) on tiny archives with the official names:
counts, ids, sizes, pairing, resume and atomic writes, bad-input reports; then pix2pix and CRN each train one
step on the prepared Cityscapes, and every model reads a prepared custom folder (the folders layout ADE20K
shares), taking its class count from its classes.yaml (pix2pix, CRN and OSMIS train a step through train.py)."""
import io
import os
import subprocess
import sys
import tarfile
import zipfile

import cv2
import numpy as np
import pytest

from common.classes import load_class_table
from common.prepare import prepare
from common.prepare import core
from common.prepare.core import PrepareError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CITIES = {"train": ("aachen", "bochum"), "val": ("frankfurt", "lindau")}
# labelId -> trainId and colour, from cityscapesScripts helpers/labels.py (a few rows, written out by hand)
LABEL_ROWS = {0: (255, (0, 0, 0)), 5: (255, (111, 74, 0)), 7: (0, (128, 64, 128)), 11: (2, (70, 70, 70)),
              23: (10, (70, 130, 180)), 24: (11, (220, 20, 60)), 26: (13, (0, 0, 142)), 29: (255, (0, 0, 90)),
              33: (18, (119, 11, 32))}


def png(img):
    ok, buf = cv2.imencode(".png", img[..., ::-1] if img.ndim == 3 else img)
    assert ok
    return buf.tobytes()


def jpg(img):
    ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return buf.tobytes()


def smooth_photo(rng, h, w):
    return cv2.resize(rng.randint(0, 256, (h // 8, w // 8, 3)).astype(np.uint8), (w, h),
                      interpolation=cv2.INTER_CUBIC)


def block_ids(rng, h, w, values):
    """[h, w] ids constant on 8x8 blocks drawn from ``values``, the block edges shifted to odd rows/columns (so that
    pixel-centre and top-left nearest neighbour differ at a factor of 2)."""
    blocks = np.kron(rng.choice(values, (h // 8, w // 8)), np.ones((8, 8), np.int64)).astype(np.uint8)
    return np.roll(blocks, (1, 1), axis=(0, 1))


def frames():
    """(split, city, frame id) of the tiny Cityscapes: 2 cities x 2 frames per split."""
    return [(split, city, f"{city}_{seq:06d}_{19 + 7 * seq:06d}")
            for split, cities in CITIES.items() for city in cities for seq in range(2)]


def write_cityscapes_zips(folder, skip=(), extra=None, corrupt=None):
    """leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip at 64x128; returns (zips, {frame: (photo, ids)}).

    ``skip``: member names left out; ``extra``: {member: bytes} added; ``corrupt``: a member whose stored bytes
    are flipped after writing (its CRC no longer matches)."""
    rng = np.random.RandomState(0)
    data, members = {}, {"leftImg8bit": {}, "gtFine": {}}
    for split, city, frame in frames():
        photo, ids = smooth_photo(rng, 64, 128), block_ids(rng, 64, 128, list(LABEL_ROWS))
        data[frame] = photo, ids
        colors = np.zeros((34, 3), np.uint8)
        for label_id, (_, color) in LABEL_ROWS.items():
            colors[label_id] = color
        members["leftImg8bit"][f"leftImg8bit/{split}/{city}/{frame}_leftImg8bit.png"] = png(photo)
        members["gtFine"][f"gtFine/{split}/{city}/{frame}_gtFine_labelIds.png"] = png(ids)
        members["gtFine"][f"gtFine/{split}/{city}/{frame}_gtFine_color.png"] = png(colors[ids])
        members["gtFine"][f"gtFine/{split}/{city}/{frame}_gtFine_polygons.json"] = b"{}"
    for name, content in (extra or {}).items():
        members[name.split("/")[0]][name] = content
    paths = []
    for archive, files in members.items():
        path = os.path.join(folder, f"{archive}_trainvaltest.zip")
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
            z.writestr("license.txt", b"tiny test archive")
            for name, content in files.items():
                if name not in skip:
                    z.writestr(name, content)
        if corrupt in files:
            raw = bytearray(open(path, "rb").read())
            at = raw.index(files[corrupt]) + len(files[corrupt]) // 2
            raw[at] ^= 0xFF
            open(path, "wb").write(bytes(raw))
        paths.append(path)
    return ",".join(paths), data


def bicubic_antialiased(photo, h, w):
    """PyTorch's antialiased bicubic resize (its own implementation of the PIL filter) as the reference."""
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(photo.astype(np.float32)).permute(2, 0, 1)[None]
    y = torch.nn.functional.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
    return y[0].permute(1, 2, 0).clamp(0, 255).round().numpy()


def read(path, flags=cv2.IMREAD_UNCHANGED):
    img = cv2.imread(str(path), flags)
    assert img is not None, path
    return img[..., ::-1] if img.ndim == 3 else img


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cityscapes_src")
    src, data = write_cityscapes_zips(str(folder))
    dst = tmp_path_factory.mktemp("cityscapes_dst") / "cityscapes"
    report = prepare("cityscapes", src, str(dst), ["--size=32", "--ab_size=64"])
    return dst, data, report, src


def test_cityscapes_layout_ids_and_sizes(cityscapes):
    dst, data, report, _ = cityscapes
    assert report.ok and (report.prepared, report.skipped, report.failed) == (8, 0, 0), report.summary()
    for split, city, frame in frames():
        photo, ids = data[frame]
        out = read(dst / "leftImg8bit" / split / city / f"{frame}_leftImg8bit.png")
        assert out.shape == (32, 64, 3)
        assert np.abs(out.astype(np.float32) - bicubic_antialiased(photo, 32, 64)).max() <= 1
        label_ids = read(dst / "gtFine" / split / city / f"{frame}_gtFine_labelIds.png")
        np.testing.assert_array_equal(label_ids, ids[1::2, 1::2])  # pixel-centre nearest at a factor of 2
        train_ids = read(dst / "gtFine" / split / city / f"{frame}_gtFine_labelTrainIds.png")
        color = read(dst / "gtFine" / split / city / f"{frame}_gtFine_color.png")
        for label_id, (train_id, rgb) in LABEL_ROWS.items():
            assert (train_ids[label_ids == label_id] == train_id).all()
            assert (color[label_ids == label_id] == rgb).all()
        ab = read(dst / "pix2pix" / split / f"{frame}.jpg")
        assert ab.shape == (64, 128, 3)
        assert np.abs(ab[:, :64].astype(np.float32) - bicubic_antialiased(photo, 64, 64)).mean() < 1.5
        colors = np.zeros((34, 3), np.uint8)
        for label_id, (_, rgb) in LABEL_ROWS.items():
            colors[label_id] = rgb
        assert np.abs(ab[:, 64:].astype(np.float32) - colors[ids[:, 1::2]]).mean() < 1.5
        fcn = dst / "fcn_labels" / "val" / city / f"{frame}_gtFine_labelIds.png"
        assert fcn.is_file() == (split == "val")
        if split == "val":
            np.testing.assert_array_equal(read(fcn), ids)
    assert sorted(os.listdir(dst)) == ["fcn_labels", "gtFine", "leftImg8bit", "pix2pix", "prepare.json"]


def test_cityscapes_output_is_what_the_loaders_read(cityscapes):
    from common.metrics.segmentation import match_by_name
    from crn.src.dataset import CRNDataset
    from pix2pix.src.dataset import AlignedDataset
    dst = str(cityscapes[0])
    onehots = [CRNDataset(dst, "val", 32, label_format=f).get(0)[0] for f in ("labelIds", "trainIds", "color")]
    np.testing.assert_array_equal(onehots[0], onehots[1])
    np.testing.assert_array_equal(onehots[0], onehots[2])
    assert len(CRNDataset(dst, "train", 32)) == 4
    ab = AlignedDataset(os.path.join(dst, "pix2pix"), "val", load_size=64, crop_size=64, train=False)
    assert len(ab) == 4 and ab.get(0, None)[0].shape == (3, 64, 64)
    # the FCN-score pairs pix2pix results (named by frame id) with the val labelIds
    pairs = match_by_name(os.path.join(dst, "pix2pix", "val"), os.path.join(dst, "fcn_labels", "val"),
                          r"_gtFine_labelIds\.png$")
    assert sorted(p[0] for p in pairs) == sorted(f for s, _, f in frames() if s == "val")


def test_resume_skips_finished_files_refuses_other_options_threads_agree(cityscapes, tmp_path):
    dst, _, _, src = cityscapes
    again = prepare("cityscapes", src, str(dst), ["--size=32", "--ab_size=64"])
    assert (again.prepared, again.skipped) == (0, 8)
    os.remove(dst / "pix2pix" / "train" / "aachen_000000_000019.jpg")
    again = prepare("cityscapes", src, str(dst), ["--size=32", "--ab_size=64"])
    assert (again.prepared, again.skipped) == (1, 7) and (dst / "pix2pix" / "train" / "aachen_000000_000019.jpg").is_file()
    with pytest.raises(PrepareError, match=r"was prepared as cityscapes with options .*'size': 32.*delete"):
        prepare("cityscapes", src, str(dst), ["--size=64"])
    threaded = prepare("cityscapes", src, str(tmp_path / "threaded"), ["--size=32", "--ab_size=64", "--workers=3"])
    assert threaded.ok and threaded.prepared == 8
    files = sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(tmp_path / "threaded")) for p in (tmp_path / "threaded").rglob("*")
                           if p.is_file())
    for name in files:
        assert (dst / name).read_bytes() == (tmp_path / "threaded" / name).read_bytes(), name


def test_colour_annotations_give_the_same_labels(cityscapes, tmp_path):
    dst, _, _, src = cityscapes
    report = prepare("cityscapes", src, str(tmp_path / "c"), ["--size=32", "--ab_size=0", "--label_source=color"])
    assert report.ok and report.prepared == 8
    for split, city, frame in frames():
        for kind in ("labelIds", "labelTrainIds", "color"):
            name = f"gtFine/{split}/{city}/{frame}_gtFine_{kind}.png"
            np.testing.assert_array_equal(read(tmp_path / "c" / name), read(dst / name))
    folder = tmp_path / "odd"
    (folder / "leftImg8bit" / "val" / "ulm").mkdir(parents=True)
    (folder / "gtFine" / "val" / "ulm").mkdir(parents=True)
    cv2.imwrite(str(folder / "leftImg8bit" / "val" / "ulm" / "ulm_000000_000001_leftImg8bit.png"),
                np.zeros((16, 32, 3), np.uint8))
    cv2.imwrite(str(folder / "gtFine" / "val" / "ulm" / "ulm_000000_000001_gtFine_color.png"),
                np.full((16, 32, 3), 77, np.uint8))
    odd = prepare("cityscapes", str(folder), str(tmp_path / "o"), ["--splits=val", "--label_source=color"])
    assert odd.failed == 1 and "ulm_000000_000001_gtFine_color.png: colours [(77, 77, 77)] are not in" in odd.problems[0]


def test_interrupted_run_leaves_no_partial_file_and_resumes(cityscapes, tmp_path, monkeypatch):
    src, dst = cityscapes[3], tmp_path / "out"
    real_save, calls = core.Image.Image.save, []

    def save_then_interrupt(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) == 3:  # the third AB jpg: write part of it, then stop as Ctrl-C would
            open(fp, "wb").write(b"\xff\xd8 partial")
            raise KeyboardInterrupt
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(core.Image.Image, "save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        prepare("cityscapes", src, str(dst), ["--size=32", "--ab_size=64"])
    monkeypatch.undo()
    written = sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file())
    assert not [p for p in written if os.path.basename(p).startswith(".tmp_")], written
    assert len([p for p in written if p.startswith("pix2pix")]) == 2
    for p in written:
        if p.endswith((".png", ".jpg")):
            assert cv2.imread(str(dst / p)) is not None, p
    report = prepare("cityscapes", src, str(dst), ["--size=32", "--ab_size=64"])
    assert report.ok and report.prepared + report.skipped == 8 and report.skipped == 2


def test_bad_cityscapes_input_is_reported_with_files_and_counts(tmp_path):
    rng = np.random.RandomState(3)
    extra = {"gtFine/train/aachen/aachen_000099_000001_gtFine_labelIds.png": png(block_ids(rng, 64, 128, [7])),
             "gtFine/val/lindau/lindau_000000_000019_gtFine_labelIds.png": png(np.full((64, 128), 40, np.uint8)),
             "gtFine/val/lindau/lindau_000001_000026_gtFine_labelIds.png": png(np.full((32, 128), 7, np.uint8))}
    src, _ = write_cityscapes_zips(str(tmp_path), extra=extra, corrupt="leftImg8bit/train/bochum/bochum_000001_000026_leftImg8bit.png",
                                   skip={"gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"})
    proc = subprocess.run(["bash", "scripts/prepare_data.sh", "cityscapes", src, str(tmp_path / "out"), "--size=32",
                           "--ab_size=0"], cwd=REPO, capture_output=True, text=True, timeout=120)
    err = proc.stderr
    assert proc.returncode == 1, err
    assert "4 prepared, 0 already done, 3 failed, 5 problem(s)" in err
    assert "aachen_000000_000019_leftImg8bit.png: no label for this photo" in err
    assert "aachen_000099_000001_gtFine_labelIds.png: no photo for this label" in err
    assert "bochum_000001_000026_leftImg8bit.png: cannot read this archive member (BadZipFile" in err
    assert "lindau_000000_000019_gtFine_labelIds.png: label ids [40] are not Cityscapes labelIds" in err
    assert "lindau_000001_000026_gtFine_labelIds.png is 128x32 but its photo" in err
    assert not (tmp_path / "out" / "pix2pix").exists()
    assert len(list((tmp_path / "out" / "leftImg8bit").rglob("*.png"))) == 4


def test_size_mismatch_and_usage_errors(tmp_path):
    rng = np.random.RandomState(4)
    folder = tmp_path / "cs"
    for split, city, frame in frames()[:1]:
        (folder / "leftImg8bit" / split / city).mkdir(parents=True)
        (folder / "gtFine" / split / city).mkdir(parents=True)
        cv2.imwrite(str(folder / "leftImg8bit" / split / city / f"{frame}_leftImg8bit.png"), smooth_photo(rng, 64, 128))
        cv2.imwrite(str(folder / "gtFine" / split / city / f"{frame}_gtFine_labelIds.png"), np.full((32, 64), 7, np.uint8))
    report = prepare("cityscapes", str(folder), str(tmp_path / "out"), ["--splits=train"])
    assert (report.prepared, report.failed) == (0, 1)
    assert "aachen_000000_000019_gtFine_labelIds.png is 64x32 but its photo" in report.problems[0]
    assert "aachen_000000_000019_leftImg8bit.png is 128x64" in report.problems[0]
    with pytest.raises(PrepareError, match="unknown option '--sise=3'; options of this dataset: --size"):
        prepare("cityscapes", str(folder), str(tmp_path / "o2"), ["--sise=3"])
    with pytest.raises(PrepareError, match=r"source .*nothing\.zip does not exist"):
        prepare("cityscapes", str(tmp_path / "nothing.zip"), str(tmp_path / "o3"))
    proc = subprocess.run(["bash", "scripts/prepare_data.sh", "mnist", str(folder), str(tmp_path / "o4")], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown dataset 'mnist'; choose one of cityscapes, ade20k" in proc.stderr


def write_ade_zip(path, label_values=(0, 150)):
    rng = np.random.RandomState(5)
    data = {}
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("ADEChallengeData2016/objectInfo150.txt", b"Idx\tRatio\tTrain\tVal\tName\n")
        for split, prefix, n in (("training", "train", 2), ("validation", "val", 1)):
            for i in range(1, n + 1):
                stem = f"ADE_{prefix}_{i:08d}"
                photo, ids = smooth_photo(rng, 48, 64), block_ids(rng, 48, 64, list(label_values))
                data[split, stem] = jpg(photo), ids
                z.writestr(f"ADEChallengeData2016/images/{split}/{stem}.jpg", data[split, stem][0])
                z.writestr(f"ADEChallengeData2016/annotations/{split}/{stem}.png", png(ids))
    return data


def test_ade20k_pairs_with_151_classes(tmp_path):
    from crn.src.dataset import CRNDataset
    data = write_ade_zip(str(tmp_path / "ADEChallengeData2016.zip"))
    report = prepare("ade20k", str(tmp_path / "ADEChallengeData2016.zip"), str(tmp_path / "ade"))
    assert report.ok and report.prepared == 3, report.summary()
    for (split, stem), (photo_bytes, ids) in data.items():
        short = {"training": "train", "validation": "val"}[split]
        assert (tmp_path / "ade" / short / "images" / f"{stem}.jpg").read_bytes() == photo_bytes
        np.testing.assert_array_equal(read(tmp_path / "ade" / short / "labels" / f"{stem}.png"), ids)
    ds = CRNDataset(str(tmp_path / "ade"), "train", 32, aspect=1, num_classes=151, data_format="folders",
                    label_format="trainIds")
    label, photo = ds.get(0)
    assert len(ds) == 2 and label.shape == (152, 32, 32) and photo.shape == (3, 32, 32)
    assert label[150].sum() > 0 and label[151].sum() == 0  # class 150 present, nothing void

    resized = prepare("ade20k", str(tmp_path / "ADEChallengeData2016.zip"), str(tmp_path / "ade24"), ["--size=24"])
    assert resized.ok
    ids = data["validation", "ADE_val_00000001"][1]
    cols = [int((j + 0.5) * 64 / 24) for j in range(24)]  # pixel centres of a 64 -> 24 reduction
    np.testing.assert_array_equal(read(tmp_path / "ade24" / "val" / "labels" / "ADE_val_00000001.png"),
                                  ids[1::2][:, cols])
    assert read(tmp_path / "ade24" / "val" / "images" / "ADE_val_00000001.png").shape == (24, 24, 3)

    write_ade_zip(str(tmp_path / "bad.zip"), label_values=(3, 151))
    bad = prepare("ade20k", str(tmp_path / "bad.zip"), str(tmp_path / "ade_bad"))
    assert (bad.prepared, bad.failed) == (0, 3)
    assert "annotations/training/ADE_train_00000001.png: class ids [151] are outside 0..150" in bad.problems[0]


def test_facades_tar_gz_copied_and_checked(tmp_path):
    from pix2pix.src.dataset import AlignedDataset
    rng = np.random.RandomState(6)
    files = {f"facades/{split}/{i}.jpg": jpg(smooth_photo(rng, 32, 64))
             for split, n in (("train", 3), ("val", 1), ("test", 2)) for i in range(1, n + 1)}
    files["facades/test/3.jpg"] = jpg(smooth_photo(rng, 32, 32))
    with tarfile.open(tmp_path / "facades.tar.gz", "w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    report = prepare("facades", str(tmp_path / "facades.tar.gz"), str(tmp_path / "facades"))
    assert (report.prepared, report.failed) == (6, 1)
    assert "facades.tar.gz:facades/test/3.jpg is 32x32; a facades AB image is twice as wide" in report.problems[0]
    for name, content in files.items():
        if name != "facades/test/3.jpg":
            assert (tmp_path / name).read_bytes() == content
    assert not (tmp_path / "facades" / ".prepare_tmp").exists()
    assert len(AlignedDataset(str(tmp_path / "facades"), "train", load_size=32, crop_size=32)) == 3


def test_custom_folder_with_class_table(tmp_path):
    from crn.src.dataset import CRNDataset
    rng = np.random.RandomState(7)
    src = tmp_path / "mine"
    (src / "train" / "images").mkdir(parents=True)
    (src / "train" / "labels").mkdir(parents=True)
    (src / "classes.yaml").write_text("classes:\n  - {id: 0, name: ground, color: [10, 20, 30]}\n"
                                      "  - {id: 2, name: sky, color: [90, 160, 250]}\n"
                                      "  - {id: 1, name: tree, color: [0, 200, 0]}\n")
    colors = {0: (10, 20, 30), 1: (0, 200, 0), 2: (90, 160, 250)}
    ids_a, ids_b = block_ids(rng, 32, 32, [0, 1, 2]), block_ids(rng, 32, 32, [0, 2])
    cv2.imwrite(str(src / "train" / "images" / "a.jpg"), smooth_photo(rng, 32, 32))
    cv2.imwrite(str(src / "train" / "images" / "b.png"), smooth_photo(rng, 32, 32))
    cv2.imwrite(str(src / "train" / "images" / "c.png"), smooth_photo(rng, 32, 32))
    cv2.imwrite(str(src / "train" / "labels" / "a.png"), ids_a)
    lut = np.zeros((3, 3), np.uint8)
    lut[list(colors)] = list(colors.values())
    cv2.imwrite(str(src / "train" / "labels" / "b.png"), lut[ids_b][..., ::-1])
    bad = lut[ids_b].copy()
    bad[0, 0] = (1, 2, 3)
    cv2.imwrite(str(src / "train" / "labels" / "c.png"), bad[..., ::-1])
    report = prepare("custom", str(src), str(tmp_path / "out"), ["--splits=train", "--ab_size=32"])
    assert (report.prepared, report.failed) == (3, 1), report.summary()  # classes.yaml, a, b
    assert "train/labels/c.png: colours [(1, 2, 3)] are not in the class table" in report.problems[0]
    np.testing.assert_array_equal(read(tmp_path / "out" / "train" / "labels" / "a.png"), ids_a)
    np.testing.assert_array_equal(read(tmp_path / "out" / "train" / "labels" / "b.png"), ids_b)
    ab = read(tmp_path / "out" / "pix2pix" / "train" / "b.jpg")
    assert ab.shape == (32, 64, 3) and np.abs(ab[:, 32:].astype(np.float32) - lut[ids_b]).mean() < 2
    written = load_class_table(str(tmp_path / "out" / "classes.yaml"))
    assert written.names == ("ground", "tree", "sky") and written.colors.tolist() == [list(colors[i]) for i in range(3)]
    assert (tmp_path / "out" / "pix2pix" / "classes.yaml").read_text() == (tmp_path / "out" / "classes.yaml").read_text()
    ds = CRNDataset(str(tmp_path / "out"), "train", 32, aspect=1, num_classes=3, data_format="folders",
                    label_format="trainIds")
    assert len(ds) == 2 and ds.get(1)[0].shape == (4, 32, 32)
    (src / "classes.yaml").write_text("- {id: 0, name: a, color: [1, 2, 3]}\n- {id: 0, name: b, color: [4, 5, 6]}\n")
    with pytest.raises(PrepareError, match=r"classes\.yaml, line 2: id 0 is already used on .*classes\.yaml, line 1"):
        prepare("custom", str(src), str(tmp_path / "out2"), ["--splits=train"])


def test_pix2pix_and_crn_train_one_step_on_prepared_cityscapes(cityscapes, tmp_path):
    from tests.test_crn_train import VGG19_LAYERS, write_matconvnet_vgg19
    dst = cityscapes[0]
    vgg = str(tmp_path / "imagenet-vgg-verydeep-19.mat")
    write_matconvnet_vgg19(vgg, VGG19_LAYERS)
    env = dict(os.environ, SYNTHZOO_CACHE=str(tmp_path / "cache"))
    runs = {"pix2pix": [f"--dataroot={dst}/pix2pix", "--netG=unet_64", "--ngf=8", "--ndf=8", "--crop_size=64",
                        "--load_size=64"],
            "crn": [f"--dataroot={dst}", "--size=32", "--width_mult=0.03125", "--num_outputs=1",
                    f"--vgg_path={vgg}"]}
    for model, args in runs.items():
        out = tmp_path / model
        proc = subprocess.run([sys.executable, f"{model}/train.py", "--max_steps=1", "--num_workers=0",
                               f"--output_dir={out}", "--mode=pynative"] + args,  # PyNative: no graph compile
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        log = (out / "train.log").read_text()
        assert "epoch: 1 step: 1," in log and "4 training samples" in log, log[-2000:]
        assert (out / "ckpt" / "latest").is_file()


def test_ade20k_script_writes_reference_lists_cocosnet_reads(tmp_path):
    import mindspore as ms
    from common.vgg import VGG
    from cocosnet.src.dataset import ExemplarDataset
    write_ade_zip(str(tmp_path / "ADEChallengeData2016.zip"))
    vgg = VGG("vgg19", ("pool5",))
    vgg_path = str(tmp_path / "vgg19.ckpt")
    ms.save_checkpoint([{"name": f"{n}.{k}", "data": getattr(c, k)} for n, c in vgg.conv_layers().items()
                        for k in ("weight", "bias")], vgg_path)
    dst = tmp_path / "ade"
    script = ["bash", "scripts/prepare_data.sh", "ade20k", str(tmp_path / "ADEChallengeData2016.zip"), str(dst)]
    build = [f"--vgg_path={vgg_path}", "--retrieval_size=32", "--mode=pynative"]
    proc = subprocess.run(script + build, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    train = [line.strip().split(",") for line in open(dst / "ref_train.txt")]
    assert train == [["ADE_train_00000001.jpg", "ADE_train_00000002.jpg"],
                     ["ADE_train_00000002.jpg", "ADE_train_00000001.jpg"]]
    val = open(dst / "ref_val.txt").read().strip().split(",")
    assert val[0] == "ADE_val_00000001.jpg" and val[1:] in (["ADE_train_00000001.jpg", "ADE_train_00000002.jpg"],
                                                          ["ADE_train_00000002.jpg", "ADE_train_00000001.jpg"])
    ds = ExemplarDataset(str(dst), "folders", "val", str(dst / "ref_val.txt"), 151, 64)
    assert len(ds) == 1 and ds.get(0)[0].shape == (151, 64, 64)

    (dst / "ref_train.txt").write_text("ADE_train_00000001,ADE_train_00000001\n"
                                       "ADE_train_00000002,ADE_train_00000002\n")
    given = tmp_path / "mine.txt"
    given.write_text("ADE_val_00000001.jpg,ADE_train_00000002.jpg\n")
    proc = subprocess.run(script + build + [f"--ref_list_val={given}"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "ref_train.txt exists; kept" in proc.stdout, proc.stdout + proc.stderr
    assert (dst / "ref_train.txt").read_text().startswith("ADE_train_00000001,ADE_train_00000001\n")
    (dst / "ref_val.txt").unlink()
    proc = subprocess.run(script + build + [f"--ref_list_val={given}"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and (dst / "ref_val.txt").read_text() == given.read_text(), proc.stderr
    proc = subprocess.run(script + [f"--ref_list={tmp_path / 'none.txt'}"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "none.txt (--ref_list / --ref_list_val) does not exist" in proc.stderr


def test_custom_osmis_copy_with_more_than_31_classes(tmp_path):
    """OSMIS reads the prepared masks through the table copied beside them: ids above 30 stay ids (no binary rule)."""
    from osmis.src.dataset import OSMISDataset
    rng = np.random.RandomState(3)
    src = tmp_path / "mine"
    for sub in ("images", "labels"):
        (src / "train" / sub).mkdir(parents=True)
    cv2.imwrite(str(src / "train" / "images" / "a.jpg"), smooth_photo(rng, 48, 64))
    cv2.imwrite(str(src / "train" / "labels" / "a.png"), block_ids(rng, 48, 64, [0, 35, 39]))
    (src / "classes.yaml").write_text("".join(f"- {{id: {i}, name: c{i}, color: [{i}, {2 * i}, {3 * i}]}}\n"
                                              for i in range(40)))
    report = prepare("custom", str(src), str(tmp_path / "out"), ["--ab_size=0", "--splits=train", "--osmis=true"])
    assert report.ok, report.summary()
    frames = OSMISDataset(str(tmp_path / "out" / "osmis" / "train"),
                          class_table=load_class_table(str(tmp_path / "out" / "osmis" / "train" / "classes.yaml")))
    assert (frames.kind, frames.num_mask_channels) == ("index", 40)
    assert set(np.unique(frames.load(0, (48, 64))[1].argmax(0))) == {0, 35, 39}


def test_custom_dataset_every_model_reads_its_class_table(tmp_path):
    """A prepared custom folder (3 classes): pix2pix, CRN, CoCosNet and OSMIS each find DATAROOT/classes.yaml
    and take their class count from it. pix2pix, CRN and OSMIS train one step through train.py (the count stored
    in the checkpoint); CoCosNet, whose train step compiles for 90 s on 2 cores (graph mode only), builds its
    training pairs through its spec as train.py does (its training on the folders layout: test_cocosnet_train).
    CRN's sample grid and the masks OSMIS predict paints are in the table's colours."""
    from cocosnet.src.spec import CoCosNetSpec
    from common import drivers
    from common.checkpoint import read_meta, resolve_checkpoint
    from common.classes import apply_class_table
    from common.config import load_config
    from osmis.src.dataset import OSMISDataset
    from tests.test_crn_train import VGG19_LAYERS, write_matconvnet_vgg19
    rng = np.random.RandomState(8)
    src = tmp_path / "mine"
    colors = [(10, 20, 30), (0, 200, 0), (90, 160, 250)]
    for split, stems in (("train", ("a", "b")), ("val", ("c",))):
        for sub in ("images", "labels"):
            (src / split / sub).mkdir(parents=True)
        for stem in stems:
            cv2.imwrite(str(src / split / "images" / f"{stem}.jpg"), smooth_photo(rng, 48, 64))
            cv2.imwrite(str(src / split / "labels" / f"{stem}.png"), block_ids(rng, 48, 64, [0, 1, 2]))
    (src / "classes.yaml").write_text("".join(f"- {{id: {i}, name: c{i}, color: {list(c)}}}\n"
                                              for i, c in enumerate(colors)))
    dst = tmp_path / "out"
    report = prepare("custom", str(src), str(dst), ["--ab_size=64", "--osmis=true"])
    assert report.ok and report.prepared == 4, report.summary()
    table_text = (dst / "classes.yaml").read_text()
    for copy in ("pix2pix", "osmis/train", "osmis/val"):
        assert (dst / copy / "classes.yaml").read_text() == table_text
    root = dst / "osmis" / "train"
    np.testing.assert_array_equal(read(root / "mask" / "a.png"), read(dst / "train" / "labels" / "a.png"))
    frames = OSMISDataset(str(root))
    assert (frames.kind, frames.num_mask_channels, frames.size) == ("index", 3, (64, 48))
    (dst / "ref_train.txt").write_text("a,b\nb,a\n")
    (dst / "ref_val.txt").write_text("c,a\n")

    spec = CoCosNetSpec()
    cfg = drivers.parse(spec, [f"--dataroot={dst}", "--data_format=folders", "--size=64", "--load_size=64"])
    apply_class_table(cfg, spec.class_count_key, load_config(spec.config_path).label_nc)  # as drivers.train
    assert cfg.label_nc == spec.arch(cfg)["label_nc"] == 3
    pairs = spec.datasets(cfg, None).train
    assert pairs.table == {"a": ["b"], "b": ["a"]}
    seg, ref, ref_seg, real, _ = pairs.get(0, np.random.RandomState(0))
    assert seg.shape == ref_seg.shape == (3, 64, 64) and ref.shape == real.shape == (3, 64, 64)
    assert (seg.sum(0) == 1).all() and (ref_seg.sum(0) == 1).all()

    vgg19_mat = str(tmp_path / "imagenet-vgg-verydeep-19.mat")
    write_matconvnet_vgg19(vgg19_mat, VGG19_LAYERS)
    runs = {"pix2pix": (None, [f"--dataroot={dst}/pix2pix", "--netG=unet_64", "--ngf=8", "--ndf=8", "--crop_size=64",
                               "--load_size=64"]),
            "crn": ("num_classes", [f"--dataroot={dst}", "--data_format=folders", "--label_format=trainIds",
                                    "--size=32", "--aspect=1", "--width_mult=0.03125", "--num_outputs=1",
                                    "--max_train_samples=1", f"--vgg_path={vgg19_mat}"]),
            "osmis": ("num_mask_channels", [f"--dataroot={root}", "--ch_G=2", "--ch_D=2", "--batch_size=2",
                                            "--samples_per_epoch=2", "--num_blocks_d=3", "--num_blocks_d0=1",
                                            "--max_size=64"])}
    env = dict(os.environ, SYNTHZOO_CACHE=str(tmp_path / "cache"))
    for model, (key, args) in runs.items():
        out = tmp_path / model
        # PyNative spares a graph compile per model (10-25 s each on 2 cores)
        proc = subprocess.run([sys.executable, f"{model}/train.py", "--max_steps=1", "--num_workers=0",
                               f"--output_dir={out}", "--mode=pynative"] + args, cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, model + proc.stdout[-2000:] + proc.stderr[-2000:]
        assert "epoch: 1 step: 1," in (out / "train.log").read_text()
        if key:
            first = "G_ema" if model == "osmis" else "G"
            assert read_meta(resolve_checkpoint(str(out / "ckpt"), first))[key] == 3, model
    sheet = read(tmp_path / "crn" / "samples" / "epoch_0001.png")  # label | photo | output, label in table colours
    assert all((sheet == c).all(-1).sum() >= 16 for c in colors)
    proc = subprocess.run([sys.executable, "osmis/predict.py", f"--dataroot={root}", "--num_generated=2",
                           f"--output_dir={tmp_path / 'osmis'}"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for i in range(2):
        mask = read(tmp_path / "osmis" / "predict" / f"{i:04d}_mask.png")
        ids = read(tmp_path / "osmis" / "predict" / f"{i:04d}_mask_ids.png")
        np.testing.assert_array_equal(mask, np.array(colors, np.uint8)[ids])
