"""Generate image-mask pairs with a trained OSMIS / SIV-GAN EMA generator (``--help`` lists the keys).

    python osmis/predict.py --output_dir=outputs/osmis --num_generated=100

Writes <output_dir>/predict/{NNNN.png, NNNN_mask.png (colour), NNNN_mask_ids.png (class ids),
contact_sheet.png}. The architecture comes from the checkpoint (--ckpt, default <output_dir>/ckpt).
OSMIS is unconditional, so unlike the other models there is no --input.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.drivers import _runtime, load_inference, parse, run_cli  # noqa: E402
from osmis.src.spec import OSMISSpec  # noqa: E402


def generate(spec, cfg):
    """The shared predict driver without --input: load G_ema, write ``num_generated`` pairs."""
    if cfg.input:
        raise ValueError(f"--input={cfg.input}: osmis generates from noise and takes no input; set --num_generated")
    rt = _runtime(cfg)
    nets, ckpt = load_inference(spec, cfg, rt.conv_impl)
    out_dir = os.path.join(cfg.output_dir, "predict")
    written = spec.predict(cfg, nets, [], out_dir)
    print(f"osmis: {cfg.num_generated} sample(s) from {ckpt}; wrote {len(written)} file(s) to {out_dir}")
    return written


if __name__ == "__main__":
    if "--help" in sys.argv or "-h" in sys.argv:
        print(__doc__ + "\nKeys (common/base_config.yaml + osmis/default_config.yaml):\n" + parse(OSMISSpec(), []).usage())
    else:
        run_cli(lambda args: generate(OSMISSpec(), parse(OSMISSpec(), args)), sys.argv[1:])
