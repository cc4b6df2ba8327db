"""Class tables (common/classes.py): the loader's errors, the built-in tables, the config key that sets each
model's class count, the label-id checks that name the table, and the colours of colourised label maps."""
import os

import cv2
import numpy as np
import pytest

from common import cityscapes as cs
from common.classes import (ClassTableError, ade20k_table, apply_class_table, builtin_table, cityscapes_table,
                            dump_class_table, load_class_table, parse_class_table)
from common.config import load_config

TABLE = ("classes:\n"
         "  - {id: 2, name: sky, color: [90, 160, 250]}\n"
         "  - {id: 0, name: ground, color: [10, 20, 30]}\n"
         "  - {id: 1, name: tree, color: [0, 200, 0]}\n")
COLORS = [(10, 20, 30), (0, 200, 0), (90, 160, 250)]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config(model, *args):
    return load_config(os.path.join(REPO, model, "default_config.yaml"), list(args))


def write_table(folder, text=TABLE):
    path = folder / "classes.yaml"
    path.write_text(text)
    return str(path)


def test_table_is_read_by_id_and_round_trips():
    table = parse_class_table(TABLE, "t.yaml")
    assert table.names == ("ground", "tree", "sky") and table.colors.tolist() == [list(c) for c in COLORS]
    assert table.ids.tolist() == [0, 1, 2] and table.num_classes == 3
    again = parse_class_table(dump_class_table(table), "dumped")
    assert again.names == table.names and np.array_equal(again.colors, table.colors)


@pytest.mark.parametrize("text, message", [
    ("- {id: 0, name: a, color: [1, 2, 3]}\n- {id: 0, name: b, color: [4, 5, 6]}\n",
     r"t\.yaml, line 2: id 0 is already used on t\.yaml, line 1"),
    ("- {id: 0, name: a, color: [1, 2, 3]}\n- {id: 2, name: b, color: [4, 5, 6]}\n",
     r"t\.yaml: ids \[0, 2\] leave out \[1\]; ids must be 0\.\.N-1 without gaps"),
    ("- {id: 1, name: a, color: [1, 2, 3]}\n", r"ids \[1\] leave out \[0\]"),
    ("- {id: 0, name: a, color: [1, 2, 3]}\n\n- {id: 1, name: b, color: [1, 2, 256]}\n",
     r"t\.yaml, line 3: .* has color \[1, 2, 256\]; colours are \[r, g, b\] with 0\.\.255"),
    ("- {id: 0, name: a, color: [1, 2]}\n", r"line 1: .* has color \[1, 2\]"),
    ("- {id: 0, name: a, color: [1, 2, 3]}\n- {id: 1, name: b, color: [1, 2, 3]}\n",
     r"line 2: color \[1, 2, 3\] is already used on t\.yaml, line 1"),
    ("- {id: 0, name: a, color: [1, 2, 3]}\n- {id: 1, name: a, color: [4, 5, 6]}\n", r"line 2: name 'a' is already used"),
    ("- {id: 0, name: a, colour: [1, 2, 3]}\n", r"line 1: .* has unknown key\(s\) \['colour'\] \(allowed: id, name, color\)"),
    ("- {id: 0, name: a}\n", r"line 1: .* lacks color"),
    ("- {id: -1, name: a, color: [1, 2, 3]}\n", r"has id -1"),
    ("- {id: 0, name: '', color: [1, 2, 3]}\n", r"has name ''"),
    ("palette: []\nclasses: []\n", r"t\.yaml: unknown top-level key\(s\) \['palette'\]"),
    ("classes: 3\n", r"t\.yaml: expected a list of \{id, name, color\} entries"),
    ("", r"t\.yaml: expected a list"),
    ("- {id: 0, name: a, color: [1, 2, 3]\n", r"t\.yaml: not valid YAML"),
])
def test_loader_errors_name_the_file_line_and_value(text, message):
    with pytest.raises(ClassTableError, match=message):
        parse_class_table(text, "t.yaml")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ClassTableError, match=r"class table .*nope\.yaml does not exist"):
        load_class_table(str(tmp_path / "nope.yaml"))


def test_builtin_tables():
    city = cityscapes_table()
    assert city.names == cs.CLASS_NAMES and np.array_equal(city.colors, cs.PALETTE)
    assert city.palette().tolist()[-1] == [0, 0, 0] and len(city.palette()) == 20
    ade = ade20k_table()
    assert ade.num_classes == 151 and ade.names[:4] == ("other", "wall", "building", "sky")
    # the standard SceneParse150 colours (objectInfo150 order), a few rows written out by hand
    expected = {0: (0, 0, 0), 1: (120, 120, 120), 3: (6, 230, 230), 13: (150, 5, 61), 150: (92, 0, 255)}
    assert {i: tuple(ade.colors[i].tolist()) for i in expected} == expected
    assert ade.names[150] == "flag"
    assert builtin_table(19).source == city.source and builtin_table(151).source == ade.source
    assert builtin_table(5) is None


def test_colour_and_id_maps_to_ids():
    table = parse_class_table(TABLE, "t.yaml")
    ids = np.array([[0, 1], [2, 0]])
    colour = np.array(COLORS, np.uint8)[ids]
    np.testing.assert_array_equal(table.to_ids(colour, "lab.png"), ids)
    np.testing.assert_array_equal(table.colorize(np.array([[2, 255]])), [[COLORS[2], (0, 0, 0)]])
    colour[0, 0] = (1, 2, 3)
    with pytest.raises(ClassTableError, match=r"lab\.png: colours \[\(1, 2, 3\)\] are not in the class table t\.yaml"):
        table.to_ids(colour, "lab.png")
    with pytest.raises(ClassTableError, match=r"lab\.png: class ids \[3, 7\] are not in the class table t\.yaml"):
        table.to_ids(np.array([[0, 3], [7, 1]]), "lab.png")


@pytest.mark.parametrize("model, key", [("crn", "num_classes"), ("cocosnet", "label_nc"),
                                        ("osmis", "num_mask_channels")])
def test_config_takes_the_class_count_from_the_table(tmp_path, model, key):
    path = write_table(tmp_path)
    cfg = config(model, f"--dataroot={tmp_path}")
    default = cfg[key]
    assert apply_class_table(cfg, key, default).num_classes == 3
    assert cfg[key] == 3 and cfg.class_table == path
    cfg = config(model, f"--dataroot={tmp_path}", f"--{key}=5")
    with pytest.raises(ClassTableError, match=rf"{key}=5 \(--{key}=5\) but the class table {path} has 3 classes"):
        apply_class_table(cfg, key, default)
    cfg[key] = 4
    with pytest.raises(ClassTableError, match=rf"{key}=4 \(checkpoint ck/G\.ckpt\) but the class table {path} has 3"):
        apply_class_table(cfg, key, given_by="checkpoint ck/G.ckpt")


def test_config_without_table_and_explicit_path(tmp_path):
    cfg = config("crn", f"--dataroot={tmp_path}")
    assert apply_class_table(cfg, "num_classes", 19) is None and cfg.num_classes == 19 and cfg.class_table == ""
    other = tmp_path / "elsewhere"
    other.mkdir()
    cfg = config("crn", f"--class_table={write_table(other)}")
    assert apply_class_table(cfg, "num_classes", 19).num_classes == 3 and cfg.num_classes == 3
    cfg = config("crn", f"--class_table={tmp_path / 'missing.yaml'}")
    with pytest.raises(ClassTableError, match=r"--class_table=.*missing\.yaml does not exist"):
        apply_class_table(cfg, "num_classes", 19)


def test_label_ids_outside_the_table_name_the_file_and_the_table(tmp_path):
    from cocosnet.src.dataset import read_ids
    from crn.src.dataset import encode_label
    from osmis.src.dataset import OSMISDataset
    path = write_table(tmp_path)
    label = tmp_path / "lab.png"
    cv2.imwrite(str(label), np.array([[0, 1], [2, 5]], np.uint8))
    with pytest.raises(ClassTableError, match=rf"label map {label}: class ids \[5\] are not in the class table {path}"):
        read_ids(str(label), 3, class_table=path)
    with pytest.raises(ClassTableError, match=rf"lab: class ids \[5\] are not in the class table {path}"):
        encode_label(np.array([[0, 5]]), 3, source="lab", class_table=path)
    assert encode_label(np.array([[0, 255]]), 3, source="lab", class_table=path).shape == (4, 1, 2)  # void stays void
    for sub in ("image", "mask"):
        (tmp_path / "osmis" / sub).mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "osmis" / "image" / "x.png"), np.zeros((2, 2, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "osmis" / "mask" / "x.png"), np.array([[0, 1], [2, 5]], np.uint8))
    with pytest.raises(ClassTableError, match=r"mask .*osmis/mask/x\.png: class ids \[5\] are not in the class table"):
        OSMISDataset(str(tmp_path / "osmis"), class_table=load_class_table(path))
    colour = np.array(COLORS, np.uint8)[np.array([[0, 1], [2, 2]])]
    cv2.imwrite(str(tmp_path / "osmis" / "mask" / "x.png"), colour[..., ::-1])
    frames = OSMISDataset(str(tmp_path / "osmis"), class_table=load_class_table(path))
    assert frames.num_mask_channels == 3
    np.testing.assert_array_equal(frames.load(0, (2, 2))[1].argmax(0), [[0, 1], [2, 2]])


def test_colourised_label_maps_use_the_table_colours(tmp_path):
    from cocosnet.src.utils import colorize
    from crn.src.dataset import encode_label
    from crn.src.utils import colorize_onehot
    from osmis.src.spec import paint_mask
    from pix2pix.src.spec import input_image
    table = parse_class_table(TABLE, "t.yaml")
    ids = np.array([[0, 1], [2, 1]])
    want = np.array(COLORS, np.uint8)[ids]
    np.testing.assert_array_equal(colorize_onehot(encode_label(ids, 3), table), want)
    np.testing.assert_array_equal(colorize(np.eye(3, dtype=np.float32)[ids].transpose(2, 0, 1), table), want)
    np.testing.assert_array_equal(paint_mask(ids, 3, table), want)
    label = tmp_path / "ids.png"
    cv2.imwrite(str(label), ids.astype(np.uint8))
    np.testing.assert_array_equal(input_image(str(label), table), want)
    assert input_image(str(label)).shape == (2, 2, 3) and not np.array_equal(input_image(str(label)), want)
    cv2.imwrite(str(label), np.array([[0, 9]], np.uint8))
    with pytest.raises(ClassTableError, match=r"label map .*ids\.png: class ids \[9\]"):
        input_image(str(label), table)
