"""Inputs of other sizes and pixel formats at inference: palette and JPEG label maps, grey inputs, sizes the
network cannot take, resizes that change the aspect ratio, and what ``--help`` says about them."""
import cv2
import numpy as np
import pytest
from PIL import Image

from common.io import check_image_pair, read_label

IDS = np.kron(np.array([[0, 1, 7], [3, 7, 2]], np.uint8), np.ones((11, 13), np.uint8))  # [22, 39] class ids


def write_palette_png(path, ids):
    """A VOC/ADE-style label map: palette PNG whose indices are the class ids, shown in arbitrary colours."""
    im = Image.fromarray(ids, mode="L").convert("P")
    im.putpalette([(i * 37) % 256 for i in range(256)] + [(i * 91) % 256 for i in range(512)])
    im.putdata(ids.flatten().tolist())
    im.save(path)


def test_palette_label_map_reads_its_indices_as_class_ids(tmp_path):
    path = str(tmp_path / "label.png")
    write_palette_png(path, IDS)
    np.testing.assert_array_equal(read_label(path), IDS)
    Image.fromarray(np.zeros(IDS.shape + (3,), np.uint8)).save(tmp_path / "photo.png")
    check_image_pair(str(tmp_path / "photo.png"), path)  # an id map, not a colour image


@pytest.mark.parametrize("ext", [".jpg", ".jpeg", ".png"])
def test_jpeg_label_maps_are_errors_naming_the_file_and_the_fix(tmp_path, ext):
    path = str(tmp_path / f"label{ext}")
    Image.fromarray(IDS).save(path, format="JPEG", quality=90)  # a .png name does not make it lossless
    assert read_image_ids_changed(path)
    for check in (lambda: read_label(path), lambda: check_image_pair(photo(tmp_path), path)):
        with pytest.raises(ValueError, match=rf"label map \S*label{ext} is a JPEG file.*save label maps as PNG"):
            check()


def read_image_ids_changed(path):
    """Whether decoding the JPEG ``path`` gives other ids than :data:`IDS` (why it is refused)."""
    return not np.array_equal(np.asarray(Image.open(path)), IDS)


def photo(tmp_path):
    path = str(tmp_path / "photo.png")
    Image.fromarray(np.zeros(IDS.shape + (3,), np.uint8)).save(path)
    return path


def test_crn_colour_labels_refuse_grey_and_jpeg_files_instead_of_reading_them_as_void(tmp_path):
    from common import cityscapes as cs
    from crn.src.dataset import label_file_to_ids
    colour = cs.colorize(IDS)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    np.testing.assert_array_equal(label_file_to_ids(str(tmp_path / "colour.png"), "color"), IDS)
    Image.fromarray(colour).convert("L").save(tmp_path / "grey.png")
    with pytest.raises(ValueError, match=r"grey\.png has 1 channel; label_format=color .*--label_format=trainIds"):
        label_file_to_ids(str(tmp_path / "grey.png"), "color")
    Image.fromarray(colour).save(tmp_path / "colour.jpg", quality=95)
    with pytest.raises(ValueError, match=r"colour\.jpg is a JPEG file"):
        label_file_to_ids(str(tmp_path / "colour.jpg"), "color")
    write_palette_png(str(tmp_path / "palette.png"), IDS)
    np.testing.assert_array_equal(label_file_to_ids(str(tmp_path / "palette.png"), "trainIds"), IDS)


def test_pix2pix_image_size_the_unet_cannot_take_names_image_size(tmp_path):
    from common import drivers
    from pix2pix.src.spec import Pix2PixSpec
    spec = Pix2PixSpec()
    cfg = drivers.parse(spec, ["--netG=unet_64", "--ngf=8", "--crop_size=64", "--image_size=100",
                               f"--output_dir={tmp_path}"])
    with pytest.raises(ValueError, match=r"image_size=100 does not work with netG=unet_64: it needs a multiple of "
                                         r"64 .*; set --image_size to one of those \(0: the training crop_size\)"):
        spec.build_inference(cfg)


def test_pix2pix_predict_says_how_a_grey_input_is_read_without_a_class_table(tmp_path, capsys, monkeypatch):
    from common import drivers
    from pix2pix.src.spec import Pix2PixSpec
    spec = Pix2PixSpec()
    cfg = drivers.parse(spec, ["--netG=unet_64", "--crop_size=64", f"--output_dir={tmp_path}"])
    monkeypatch.setattr(spec, "runners", lambda cfg, nets: {"G": lambda feeds: [feeds["input"]]})  # identity G
    cv2.imwrite(str(tmp_path / "ids16.png"), np.kron(IDS, np.ones((2, 2), np.uint8)).astype(np.uint16))
    Image.fromarray(cv2.resize(IDS, (64, 64)) * 30).convert("RGB").save(tmp_path / "rgb.png")
    written = spec.predict(cfg, {}, [str(tmp_path / "ids16.png"), str(tmp_path / "rgb.png")], str(tmp_path / "out"))
    assert len(written) == 2
    out = capsys.readouterr().out
    assert "ids16.png: a single-channel image, translated as a grey picture (16 bit: its high byte)" in out
    assert "--class_table=<classes.yaml>" in out and "rgb.png: a single-channel" not in out


def test_cocosnet_predict_notes_each_resize_and_a_lost_aspect_ratio(tmp_path):
    from cocosnet.src.spec import resize_note
    for name, (h, w) in {"square": (64, 64), "large": (128, 128), "odd": (199, 301)}.items():
        Image.fromarray(np.zeros((h, w), np.uint8)).save(tmp_path / f"{name}.png")
    assert resize_note(str(tmp_path / "square.png"), 64, "label map") == ""
    assert resize_note(str(tmp_path / "large.png"), 64, "label map").endswith(
        "large.png: label map resized 128x128 -> 64x64, the network's size (outputs are 64x64)")
    assert resize_note(str(tmp_path / "odd.png"), 64, "exemplar").endswith(
        "odd.png: exemplar resized 301x199 -> 64x64, the network's size; its aspect ratio is not kept (outputs are "
        "64x64)")


@pytest.mark.parametrize("model, command, says", [
    ("pix2pix", "predict", ["--fit", "short side", "fixed input shape"]),
    ("pix2pix", "eval", ["crop_size"]),
    ("crn", "predict", ["aspect ratio", "nearest", "fixed input shape"]),
    ("crn", "eval", ["resized"]),
    ("cocosnet", "predict", ["squashed", "size x size", "fixed shapes"]),
    ("cocosnet", "eval", ["eval_size"]),
    ("osmis", "predict", ["train_size"]),
    ("osmis", "eval", ["train_size"]),
])
def test_help_of_predict_and_eval_states_what_happens_to_input_sizes(model, command, says):
    import os
    from common.entry import REPO, usage
    text = usage(model, command, os.path.join(REPO, model, "default_config.yaml"))
    head = " ".join(text.split("Keys (")[0].split())  # the script's own description, before the key list
    for phrase in says:
        assert phrase in head, (model, command, phrase)
