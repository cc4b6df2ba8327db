"""The model scripts' front door: ``python MODEL/{train,eval,predict,export}.py [--key=value ...]``.

``--help`` is answered from the YAML configs alone, before MindSpore is imported (0.3 s instead of 3 s on
2 cores); any other call builds the model's :class:`~common.model_spec.ModelSpec` and runs the shared driver
(:func:`common.drivers.main`). A model's script is::

    from common.entry import run
    run("pix2pix.src.spec.Pix2PixSpec", "train")
"""
import ast
import importlib
import os
import sys

from common.config import load_config

__all__ = ["run", "usage", "wants_help"]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USAGE = """usage: python {model}/{script}.py [--key=value ...] [--config_path=FILE] [--debug] [--help]

{what}

Keys (common/base_config.yaml + {model}/default_config.yaml):
{keys}"""
WHAT = {
    "train": "Train {model}; with no --dataroot on the built-in demo data. Ctrl-C saves a snapshot; "
             "--resume=true continues it.",
    "eval": "Evaluate a checkpoint of {model} (architecture read from it) on the validation split: images, "
            "index.html and metrics.json under <output_dir>/eval.",
    "predict": "Run a checkpoint of {model} on --input (a file or a folder; models that sample from noise take "
               "none); outputs under <output_dir>/predict.",
    "export": "Export a checkpoint of {model} to MINDIR/ONNX under <output_dir>/export, parity-checked.",
}


def wants_help(argv):
    return "--help" in argv or "-h" in argv


def usage(model, command, config_path):
    """What ``--help`` prints: the command and its script's docstring (what it reads and writes, the sizes of
    its inputs and outputs), then every key with its default, allowed values and help text."""
    what = "\n\n".join(filter(None, [WHAT[command].format(model=model), script_doc(model, command)]))
    return USAGE.format(model=model, script=command, what=what, keys=load_config(config_path, []).usage())


def script_doc(model, command):
    """The docstring of ``MODEL/COMMAND.py``, read from its source without importing it ("" if it has none)."""
    path = os.path.join(REPO, model, f"{command}.py")
    if not os.path.isfile(path):
        return ""
    with open(path, encoding="utf-8") as f:
        return ast.get_docstring(ast.parse(f.read())) or ""


def run(spec_class, command, argv=None):
    """Run ``command`` (train, eval, predict or export) for the spec named by its dotted path
    (``MODEL.src.spec.Class``; ``MODEL/default_config.yaml`` holds its keys); returns the driver's result."""
    argv = list(sys.argv[1:] if argv is None else argv)
    model = spec_class.split(".")[0]
    if wants_help(argv):
        print(usage(model, command, os.path.join(REPO, model, "default_config.yaml")))
        return None
    module, name = spec_class.rsplit(".", 1)
    spec = getattr(importlib.import_module(module), name)()
    from common import drivers  # MindSpore loads here
    return drivers.main(spec, command, argv)
