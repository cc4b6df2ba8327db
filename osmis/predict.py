"""Generate image-mask pairs with a trained OSMIS / SIV-GAN EMA generator (``--help`` lists the keys).

    python osmis/predict.py --output_dir=outputs/osmis --num_generated=100

Writes <output_dir>/predict/{NNNN.png, NNNN_mask.png (colour), NNNN_mask_ids.png (class ids, 16-bit past 256 classes),
contact_sheet.png}. The architecture comes from the checkpoint (--ckpt, default <output_dir>/ckpt).
OSMIS is unconditional, so unlike the other models there is no --input: every image and mask has the
checkpoint's train_size (HxW, from the training frames by the automatic configuration), as has the exported
ONNX/MINDIR file's output (input: noise [1, noise_dim, 1, 1], batch fixed at 1).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.entry import run  # noqa: E402  (--help answers before MindSpore loads)

if __name__ == "__main__":
    run("osmis.src.spec.OSMISSpec", "predict")
