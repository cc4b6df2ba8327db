"""Dataset preparation: official archives (or extracted folders) -> the layouts the models read.

    python -m common.prepare DATASET SRC DST [--key=value ...]      # or bash scripts/prepare_data.sh

``DATASET`` is one of :data:`DATASETS` (one module each, with its ``OPTIONS`` and output layout in its
docstring); ``SRC`` is one or more comma-separated archives or folders; ``DST`` the output folder. The shared
core (:mod:`common.prepare.core`) streams one image at a time, writes every file atomically, skips finished
files on a rerun and ends with a report of the counts and of every bad input, naming the files.
"""
import importlib
import os

__all__ = ["DATASETS", "RUN_OPTIONS", "dataset_module", "prepare"]

DATASETS = ("cityscapes", "ade20k", "facades", "custom")
# options of every dataset that do not change the output (a resumed run may change them)
RUN_OPTIONS = {"workers": (1, "threads preparing files in parallel (each holds one image pair in memory)")}


def dataset_module(name):
    """The module of dataset ``name`` (``OPTIONS`` and ``plan``)."""
    from common.prepare.core import PrepareError
    if name not in DATASETS:
        raise PrepareError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return importlib.import_module(f"common.prepare.{name}")


def prepare(dataset, src, dst, args=()):
    """Prepare ``dataset`` from ``src`` (comma-separated archives/folders) into ``dst``.

    Args:
        args: ``--key=value`` options of the dataset module and :data:`RUN_OPTIONS`.

    Returns:
        :class:`common.prepare.core.Report`; ``report.ok`` is False when any input was bad (the good part
        is still prepared, and a rerun skips it).

    Raises:
        common.prepare.core.PrepareError: unusable arguments or sources (nothing is prepared).
    """
    from common.prepare import core
    module = dataset_module(dataset)
    opts = core.parse_options({**module.OPTIONS, **RUN_OPTIONS}, list(args))
    workers = max(opts.pop("workers"), 1)
    dst = os.path.abspath(os.path.expanduser(dst))
    core.check_manifest(dst, dataset, opts)
    report = core.Report(dataset, dst)
    try:
        sources = core.open_sources(src, dst)
        jobs = module.plan(sources, opts, report)
        core.write_manifest(dst, dataset, opts)
        core.run_jobs(jobs, report, f"{dataset} -> {os.path.basename(dst)}", workers)
        core.write_manifest(dst, dataset, opts, report)
    finally:
        core.remove_scratch(dst)
    return report
