"""Score a folder of generated images against the real images of the same names (like pytorch-fid).

    python -m common.metrics --fake DIR --real DIR [--metrics auto|psnr,ssim,lpips_alexnet,lpips_vgg16,fid]
                             [--inception_path=pt_inception-2015-12-05-6726825d.pth] [--out metrics.json]
                             [--batch_size 16] [--device_target CPU] [--debug]

Files are paired by name (frame id: ``aachen_000000_000019_leftImg8bit.png`` matches
``aachen_000000_000019_synthesized_image.png``; see ``common.metrics.segmentation.frame_id``), never by
position. Prints a table; ``--out`` also writes ``metrics.json`` (schema ``synthzoo.metrics/1``, model
``folders``). Bad input ends with one ``error:`` line on stderr and exit code 2 (``--debug``: traceback).
"""
import argparse
import os
import sys

import common  # noqa: F401  (oneDNN ISA before mindspore)
from common.metrics.evaluate import (FID_WEIGHTS, METRIC_NAMES, build_metrics, evaluate_folders, match_folders,
                                     metrics_record, needs_networks, select_metrics, write_metrics_json)
from common.report import format_table

EXIT_BAD_INPUT = 2


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m common.metrics",
        description="Score generated images in --fake against the real images of the same names in --real.")
    parser.add_argument("--fake", required=True, help="folder of generated images")
    parser.add_argument("--real", required=True, help="folder of real images (same names / frame ids)")
    parser.add_argument("--metrics", default="auto",
                        help=f"auto (psnr, ssim, lpips_alexnet if its weights are cached, fid/kid/is with "
                             f"--inception_path) or a comma list of {', '.join(METRIC_NAMES)} (default: auto)")
    parser.add_argument("--inception_path", default="",
                        help=f"FID InceptionV3 weights ({FID_WEIGHTS}); given, FID, KID and IS are computed")
    parser.add_argument("--out", default="", help="also write the results to this metrics.json")
    parser.add_argument("--batch_size", type=int, default=16, help="images per batch (default: 16)")
    parser.add_argument("--device_target", default="CPU", choices=("CPU", "GPU", "Ascend"),
                        help="device of the metric networks (LPIPS, InceptionV3) (default: CPU)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    return parser.parse_args(argv)


def score(args):
    """Evaluate the folders of ``args``; returns the metrics record (written to ``args.out`` if set)."""
    if args.batch_size < 1:
        raise ValueError(f"--batch_size={args.batch_size}; pass a positive number of images per batch")
    names, not_computed = select_metrics(args.metrics, inception_path=args.inception_path)
    match_folders(args.fake, args.real)  # folder and name errors before any network is built
    if needs_networks(names):
        from common.runtime import init_runtime
        init_runtime(args.device_target, distributed=False)
    result = evaluate_folders(args.fake, args.real, build_metrics(names, args.inception_path or None),
                              batch_size=args.batch_size)
    protocol, images = result.pop("protocol"), result.pop("images")
    fields = dict(model="folders", checkpoint=None, metrics=result, protocol=protocol, images=images,
                  settings={"fake": os.path.abspath(args.fake), "real": os.path.abspath(args.real)},
                  not_computed=not_computed)
    return write_metrics_json(args.out, **fields) if args.out else metrics_record(**fields)


def main(argv=None):
    args = parse_args(argv)
    try:
        record = score(args)
    except Exception as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(format_table([record]))
    if args.out:
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
