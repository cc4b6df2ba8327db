"""Evaluate a trained CRN on the validation split.

    python crn/eval.py --ckpt=outputs/crn/ckpt [--inception_path=pt_inception-2015-12-05-6726825d.pth]
                       [--fcn_ckpt=fcn8s.ckpt --fcn_label_dir=/data/cityscapes/gtFine/val]

1. Generates every validation label map: <output_dir>/eval/images/<name>_k<i>.png for all k outputs,
   <output_dir>/eval/grids/<name>.png (colour label, real photo, the k outputs) and index.html.
2. Scores through common.metrics and writes <output_dir>/eval/metrics.json (metric -> value, plus
   "protocol", "model", "checkpoint"):
   * ``lpips_diversity_alexnet``: mean LPIPS (v0.1, AlexNet) over all pairs of the k outputs of a label
     map, averaged over the set (k > 1 only; higher = more diverse);
   * ``lpips_alexnet``: mean LPIPS between output 0 and the real photo;
   * ``fid`` / ``kid`` / ``is``: output 0 of every label map against the real photos, at the model
     resolution, when ``inception_path`` gives the FID Inception weights;
   * ``fcn_pixel_acc`` / ``fcn_mean_class_acc`` / ``fcn_mean_iou``: the FCN-score (pix2pix protocol,
     ``common.metrics.fcn``) of output 0 of every label map against its Cityscapes labelIds, when
     ``fcn_ckpt`` gives an FCN-8s scorer; the per-class table goes to fcn_per_class.md. The scored images
     and their labels are copied to <output_dir>/eval/fcn/{results,labels} as
     ``<frame id>_leftImg8bit.png`` / ``<frame id>_gtFine_labelIds.png``, so a ``num_val`` subset is scored
     on its own labels.
"""
import glob
import itertools
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import common  # noqa: E402,F401  (oneDNN ISA before mindspore)
from common.config import load_config  # noqa: E402
from common.io import atomic_file, make_grid, write_html, write_image  # noqa: E402
from common.metrics.fid import InceptionMetrics  # noqa: E402
from common.metrics.lpips import LPIPSMetric  # noqa: E402
from common.runtime import init_runtime  # noqa: E402
from crn.src.dataset import build_dataset, resolve_dataroot  # noqa: E402
from crn.src.utils import colorize_onehot, generate, load_generator  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_config.yaml")
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"


def fcn_label_dir(cfg):
    """Folder searched (recursively) for the ``*_gtFine_labelIds.png`` ground truth of the FCN-score."""
    if cfg.fcn_label_dir:
        return cfg.fcn_label_dir
    if cfg.data_format == "cityscapes":
        return os.path.join(resolve_dataroot(cfg), "gtFine", "val")
    raise ValueError("--fcn_ckpt with data_format=folders needs --fcn_label_dir: a folder of Cityscapes labelIds "
                     "files named <image stem>_gtFine_labelIds.png for the validation images")


def fcn_scores(cfg, out_dir, names):
    """FCN-score of output 0 (``images/<name>_k0.png``) of every evaluated label map ``names``.

    Returns ``(scores, table)`` of :func:`common.metrics.fcn.fcn_score`.
    """
    from common.metrics.fcn import fcn_score_files
    label_dir = fcn_label_dir(cfg)
    labels = {os.path.basename(p)[:-len(LABEL_IDS_SUFFIX)]: p
              for p in glob.glob(os.path.join(label_dir, "**", "*" + LABEL_IDS_SUFFIX), recursive=True)}
    missing = [n for n in names if n not in labels]
    if missing:
        raise FileNotFoundError(f"fcn_label_dir={label_dir}: no <frame id>{LABEL_IDS_SUFFIX} for {len(missing)} of the "
                                f"{len(names)} evaluated label maps (e.g. {missing[:3]}); pass the gtFine/<split> "
                                f"folder of the evaluated split as --fcn_label_dir")
    pairs = {name: (os.path.join(out_dir, "images", f"{name}_k0.png"), labels[name]) for name in names}
    return fcn_score_files(cfg.fcn_ckpt, pairs, os.path.join(out_dir, "fcn"))


def main(argv=None):
    """Generate and score the validation set; returns the metrics dict written to metrics.json."""
    cfg = load_config(CONFIG, sys.argv[1:] if argv is None else argv)
    init_runtime(cfg.device_target, cfg.mode, cfg.seed)
    val_set = build_dataset(cfg, "val", cfg.num_val)
    net, ckpt = load_generator(cfg, val_set.label_nc)
    k = net.num_outputs
    out_dir = os.path.join(cfg.output_dir, "eval")
    fidelity = LPIPSMetric("alexnet")
    diversity = LPIPSMetric("alexnet", model=fidelity.model) if k > 1 else None
    inception = InceptionMetrics(cfg.inception_path) if cfg.inception_path else None
    rows = []
    for index in range(len(val_set)):
        label, photo = val_set.get(index)
        name = val_set.name(index)
        images = generate(net, label[None])[0]  # [k, H, W, 3]
        real = np.clip(photo, 0, 255).astype(np.uint8).transpose(1, 2, 0)
        files = [f"images/{name}_k{i}.png" for i in range(k)]
        for f, img in zip(files, images):
            write_image(os.path.join(out_dir, f), img)
        grid = make_grid([[colorize_onehot(label), real] + list(images)])
        write_image(os.path.join(out_dir, "grids", f"{name}.png"), grid)
        rows.append([name, f"grids/{name}.png"])
        fidelity.update(images[0], real)
        if diversity is not None:
            pairs = list(itertools.combinations(range(k), 2))
            diversity.update(images[[i for i, _ in pairs]], images[[j for _, j in pairs]])
        if inception is not None:
            inception.update(images[:1], real[None])
    write_html(os.path.join(out_dir, "index.html"), f"CRN {cfg.size}p, {ckpt}", ["name", "label | real | outputs"],
               rows)

    metrics = {"lpips_alexnet": fidelity.compute()["lpips_alexnet"]}
    protocol = {"lpips_alexnet": f"{fidelity.protocol}; output 0 vs the real photo at {cfg.size}p"}
    if diversity is not None:
        metrics["lpips_diversity_alexnet"] = diversity.compute()["lpips_alexnet"]
        base = diversity.protocol.replace("; lower is better", "")
        protocol["lpips_diversity_alexnet"] = (f"{base}; all {k * (k - 1) // 2} pairs of the k={k} "
                                               f"outputs of a label map, mean over pairs and label maps; higher "
                                               f"is more diverse")
    if inception is not None:
        scores = inception.compute()
        metrics.update(scores)
        protocol.update({m: f"{inception.protocol[m.split('_')[0]]}; output 0 vs the real photos at {cfg.size}p"
                         for m in scores})
    else:
        protocol["fid"] = "not computed: pass --inception_path=pt_inception-2015-12-05-6726825d.pth"
    if cfg.fcn_ckpt:
        scores, table = fcn_scores(cfg, out_dir, [row[0] for row in rows])
        for name, text in scores.pop("protocol").items():
            protocol[f"fcn_{name}"] = f"{text}; output 0 of the k={k} per label map at {cfg.size}p"
        metrics.update({f"fcn_{name}": value for name, value in scores.items() if isinstance(value, float)})
        with atomic_file(os.path.join(out_dir, "fcn_per_class.md")) as tmp:
            with open(tmp, "w") as f:
                f.write(table + "\n")
    else:
        protocol["fcn_mean_iou"] = "not computed: pass --fcn_ckpt (an FCN-8s scorer, see common/METRICS.md)"
    result = dict(metrics, num_images=len(val_set), k=k, model="crn", checkpoint=ckpt, protocol=protocol)
    with atomic_file(os.path.join(out_dir, "metrics.json")) as tmp:
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1)
    for name, value in metrics.items():
        print(f"{name}: {value:.4f}")
    print(f"wrote {out_dir}/metrics.json and {len(val_set)} grids")
    return result


if __name__ == "__main__":
    main()
