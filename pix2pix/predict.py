"""Translate input images with a trained generator: ``python pix2pix/predict.py --input=IMG_OR_DIR``.

Each input (e.g. a colour label map for labels->photo) is resized (bicubic, as in training) to
``image_size`` and translated; outputs go to ``<output_dir>/predict/<name>.png`` at ``image_size``.
The generator runs under ``eval_protocol`` (default: the paper's, batch statistics and dropout on).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tqdm import tqdm  # noqa: E402

from common.config import load_config  # noqa: E402
from common.io import IMAGE_EXTENSIONS, list_images, read_image, tensor_to_uint8, write_image  # noqa: E402
from common.conv import use_conv_impl  # noqa: E402
from common.runtime import init_runtime  # noqa: E402
from pix2pix.src.dataset import resize_bicubic, to_tensor_layout  # noqa: E402
from pix2pix.src.utils import generate, load_generator  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_config.yaml")


def input_paths(path):
    """A single image file or every image in a folder."""
    if not path:
        raise ValueError("pass --input=<image file or folder of images> to predict.py")
    if os.path.isdir(path):
        return list_images(path, what="input folder")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"input {path} does not exist")
    if not path.lower().endswith(IMAGE_EXTENSIONS):
        raise ValueError(f"input {path} is not an image file ({', '.join(IMAGE_EXTENSIONS)})")
    return [path]


def predict(cfg):
    """Translate ``cfg.input``; returns the list of written output paths."""
    paths = input_paths(cfg.input)
    rt = init_runtime(cfg.device_target, cfg.mode, cfg.seed, cpu_conv=cfg.cpu_conv)
    netG, _ = load_generator(cfg, cfg.image_size)
    use_conv_impl(netG, rt.conv_impl)
    netG.set_train(cfg.eval_protocol == "paper")
    out_dir = os.path.join(cfg.output_dir, "predict")
    written = []
    for path in tqdm(paths, desc="pix2pix predict", unit="img"):
        x = to_tensor_layout(resize_bicubic(read_image(path), cfg.image_size))
        fake = generate(netG, x[None])[0]
        out = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0] + ".png")
        write_image(out, tensor_to_uint8(fake))
        written.append(out)
    print(f"wrote {len(written)} image(s) to {out_dir}")
    return written


def main(argv=None):
    predict(load_config(CONFIG, sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
