"""Synthesise k images for each label map.

    python crn/predict.py --input=labels/ --ckpt=outputs/crn/ckpt [--label_format=trainIds]

``input`` is a label file or a folder of them, read according to ``label_format`` (labelIds,
trainIds or color). A label map with the model's aspect ratio but another size is resized with nearest
neighbour (logged); any other size is an error. Writes <output_dir>/predict/<name>_k<i>.png for each of
the k outputs and <name>_grid.png (colour label, then the k images).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

import common  # noqa: E402,F401  (oneDNN ISA before mindspore)
from common.config import load_config  # noqa: E402
from common.io import list_images, make_grid, write_image  # noqa: E402
from common.runtime import init_runtime  # noqa: E402
from crn.src.dataset import encode_label, label_file_to_ids  # noqa: E402
from crn.src.utils import colorize_onehot, generate, load_generator  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_config.yaml")


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
    return encode_label(ids, cfg.num_classes, cfg.ignore_index, path)


def main(argv=None):
    """Run prediction; returns the list of written image paths."""
    cfg = load_config(CONFIG, sys.argv[1:] if argv is None else argv)
    if not cfg.input:
        raise ValueError("input is empty: pass --input=<label file or folder>")
    init_runtime(cfg.device_target, cfg.mode, cfg.seed)
    paths = list_images(cfg.input, "label folder") if os.path.isdir(cfg.input) else [cfg.input]
    net, ckpt = load_generator(cfg, cfg.num_classes + 1)
    out_dir = os.path.join(cfg.output_dir, "predict")
    print(f"{len(paths)} label map(s), checkpoint {ckpt}, k = {net.num_outputs}")
    written = []
    for path in paths:
        label = read_label_input(path, cfg)
        images = generate(net, label[None])[0]
        name = os.path.splitext(os.path.basename(path))[0]
        for i, img in enumerate(images):
            written.append(os.path.join(out_dir, f"{name}_k{i}.png"))
            write_image(written[-1], img)
        write_image(os.path.join(out_dir, f"{name}_grid.png"), make_grid([[colorize_onehot(label)] + list(images)]))
    print(f"wrote {len(written)} images to {out_dir}")
    return written


if __name__ == "__main__":
    main()
