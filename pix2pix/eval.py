"""Evaluate a pix2pix generator on the validation split: ``python pix2pix/eval.py [--ckpt=...]``.

Writes ``<output_dir>/eval/{real_A,fake_B,real_B}/<name>.png``, an ``index.html`` page
(input | output | target) and ``metrics.json`` with L1 and ``--metrics`` (PSNR, SSIM, LPIPS), FID/KID/IS
given ``--inception_path``, and the FCN-score given ``--fcn_ckpt`` (per-pixel accuracy, mean class
accuracy, mean IoU, per-class table). Every value is stored with its protocol.

Test protocol (``--eval_protocol=paper``, default): as in the paper, G runs exactly as in training
(BatchNorm from the test batch's statistics, batch size 1, dropout on), so outputs vary slightly with
the dropout stream; ``--eval_protocol=eval`` uses running statistics and no dropout.
"""
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from common.config import load_config  # noqa: E402
from common.io import atomic_file, tensor_to_uint8, write_html, write_image  # noqa: E402
from common.conv import use_conv_impl  # noqa: E402
from common.metrics.evaluate import build_metrics, evaluate_folders  # noqa: E402
from common.runtime import init_runtime  # noqa: E402
from pix2pix.src.utils import generate, load_generator, resolve_dataroot, val_dataset  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_config.yaml")
FOLDERS = ("real_A", "fake_B", "real_B")


def fcn_label_dir(cfg):
    """Folder of ``*_gtFine_labelIds.png`` for the FCN-score (the demo's when training on demo data)."""
    if cfg.fcn_label_dir:
        return cfg.fcn_label_dir
    if not cfg.dataroot:
        return os.path.join(os.path.dirname(resolve_dataroot(cfg)), "cityscapes", "gtFine", cfg.val_phase)
    raise ValueError("--fcn_ckpt needs --fcn_label_dir: the gtFine/<split> folder whose *_gtFine_labelIds.png "
                     "match the validation images")


def frame_labels(names, label_dir):
    """Map AB file stems to ``(frame id, labelIds path)``.

    Frame-id stems match their label by name; numeric stems ``1..N`` (the reference
    ``prepare_cityscapes_dataset.py`` numbering) map to the label files in sorted-path order.
    """
    from common.metrics.segmentation import frame_id
    labels = sorted(os.path.join(r, n) for r, _, ns in os.walk(label_dir) for n in ns if n.endswith("_gtFine_labelIds.png"))
    by_id = {frame_id(p): p for p in labels}
    out = {}
    for name in names:
        if name.isdigit():
            k = int(name) - 1
            if not 0 <= k < len(labels):
                raise ValueError(f"validation image {name} has no label: {label_dir} holds {len(labels)} label files")
            out[name] = (frame_id(labels[k]), labels[k])
        elif frame_id(name) in by_id:
            out[name] = (frame_id(name), by_id[frame_id(name)])
        else:
            raise ValueError(f"validation image {name} has no {frame_id(name)}_gtFine_labelIds.png under {label_dir}; "
                             f"pass the gtFine/<split> folder of the evaluated split as --fcn_label_dir")
    return out


def evaluate(cfg):
    """Generate the validation set, write images/HTML/metrics.json; returns the metrics dict."""
    names = [m.strip() for m in cfg.metrics.split(",") if m.strip()] + (["fid"] if cfg.inception_path else [])
    rt = init_runtime(cfg.device_target, cfg.mode, cfg.seed, cpu_conv=cfg.cpu_conv)
    netG, ckpt_path = load_generator(cfg)
    use_conv_impl(netG, rt.conv_impl)
    netG.set_train(cfg.eval_protocol == "paper")
    dataset = val_dataset(cfg, resolve_dataroot(cfg))
    n = len(dataset) if not cfg.num_val else min(cfg.num_val, len(dataset))
    out = os.path.join(cfg.output_dir, "eval")
    for sub in FOLDERS:
        shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
    l1, rows = [], []
    rng = np.random.RandomState(0)
    for i in tqdm(range(n), desc="pix2pix generate", unit="img"):
        a, b = dataset.get(i, rng)
        fake = generate(netG, a[None])[0]
        l1.append(float(np.abs(fake - b).mean()))
        name = dataset.name(i)
        files = [f"{sub}/{name}.png" for sub in FOLDERS]
        for rel, img in zip(files, (a[:3], fake, b)):
            write_image(os.path.join(out, rel), tensor_to_uint8(img))
        rows.append([name] + files)
    write_html(os.path.join(out, "index.html"), f"pix2pix {cfg.netG} on {cfg.val_phase} ({ckpt_path})",
               ["name", "input", "output", "target"], rows)

    result = evaluate_folders(os.path.join(out, "fake_B"), os.path.join(out, "real_B"),
                              build_metrics(names, cfg.inception_path or None, conv_impl=rt.conv_impl))
    protocol = result.pop("protocol")
    protocol["l1"] = (f"mean |G(x) - y| in [-1, 1] units at {cfg.crop_size}x{cfg.crop_size} (bicubic resize), "
                      f"eval_protocol={cfg.eval_protocol}")
    metrics = dict({"model": "pix2pix", "checkpoint": ckpt_path, "l1": float(np.mean(l1))}, **result)
    if cfg.fcn_ckpt:
        scores, table = fcn_scores(cfg, out, [r[0] for r in rows], rt.conv_impl)
        protocol.update({f"fcn_{k}": v for k, v in scores.pop("protocol").items()})
        metrics.update({f"fcn_{k}": v for k, v in scores.items() if isinstance(v, float)})
        with atomic_file(os.path.join(out, "fcn_per_class.md")) as tmp:
            with open(tmp, "w") as f:
                f.write(table + "\n")
    metrics["protocol"] = protocol
    with atomic_file(os.path.join(out, "metrics.json")) as tmp:
        with open(tmp, "w") as f:
            json.dump(metrics, f, indent=1)
    summary = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    print(f"pix2pix eval on {n} images: {summary}\nresults: {out}/index.html, {out}/metrics.json")
    return metrics


def fcn_scores(cfg, out, names, conv_impl):
    """FCN-score of the generated images (renamed to frame ids) against the Cityscapes labels, the scorer's
    convolutions on ``conv_impl`` (native | matmul)."""
    from common.metrics.fcn import fcn_score_files
    pairs = {frame: (os.path.join(out, "fake_B", f"{name}.png"), label)
             for name, (frame, label) in frame_labels(names, fcn_label_dir(cfg)).items()}
    scores, table = fcn_score_files(cfg.fcn_ckpt, pairs, os.path.join(out, "fcn"), conv_impl)
    print(table)
    return scores, table


def main(argv=None):
    evaluate(load_config(CONFIG, sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
