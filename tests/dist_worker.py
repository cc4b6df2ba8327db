"""Training worker for tests/test_distributed.py: the shared train driver, recording what each rank did.

Usage (under msrun, or plain for one process): ``dist_worker.py MODEL RECORD_DIR [--key=value ...]``.
It runs ``common.drivers.main(spec, "train")`` for MODEL (pix2pix, crn, cocosnet or osmis) with a spec whose training set
records every sample index it serves and whose trainer is kept; it writes

* ``RECORD_DIR/pid_rank<r>`` (this process's id) once the runtime is up, and
* ``RECORD_DIR/rank<r>_of<n>.npz`` after training: every parameter of every trained network
  (``<component>/<name>``), its initial value (``init:<component>/<name>``) and ``indices`` (the
  samples this rank trained on, in order).

The exit status is the driver's (130/143 when stopped by a signal, 2 on a bad input).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from common import drivers  # noqa: E402


def spec_class(model):
    if model == "pix2pix":
        from pix2pix.src.spec import Pix2PixSpec
        return Pix2PixSpec
    if model == "crn":
        from crn.src.spec import CRNSpec
        return CRNSpec
    if model == "cocosnet":
        from cocosnet.src.spec import CoCosNetSpec
        return CoCosNetSpec
    if model == "osmis":
        from osmis.src.spec import OSMISSpec
        return OSMISSpec
    raise ValueError(f"unknown model {model!r}")


class RecordingDataset:
    """A training set that appends every index it serves to ``seen``."""

    def __init__(self, dataset):
        self.dataset, self.seen = dataset, []

    def __len__(self):
        return len(self.dataset)

    def get(self, index, rng):
        self.seen.append(int(index))
        return self.dataset.get(index, rng)


def recording_spec(model, record_dir):
    """An instance of MODEL's spec that records its training samples and trainer (attribute ``record``)."""
    base = spec_class(model)

    class Recording(base):
        record = {}

        def datasets(self, cfg, rt):
            data = super().datasets(cfg, rt)
            data.train = self.record["train"] = RecordingDataset(data.train)
            return data

        def build_trainer(self, cfg, rt, data):
            trainer = super().build_trainer(cfg, rt, data)
            self.record.update(rt=rt, trainer=trainer, init=parameters(trainer, prefix="init:"))
            with open(os.path.join(record_dir, f"pid_rank{rt.rank}"), "w") as f:
                f.write(str(os.getpid()))
            return self.record["trainer"]

    return Recording()


def parameters(trainer, prefix=""):
    """``{prefix<component>/<name>: array}`` of every parameter of the trainer's networks."""
    return {f"{prefix}{component}/{name}": p.asnumpy().copy() for component, net in trainer.networks.items()
            for name, p in net.parameters_and_names()}


def save_record(spec, record_dir):
    """Write ``rank<r>_of<n>.npz`` with the trained networks' parameters and the samples seen; returns its path."""
    rt = spec.record["rt"]
    path = os.path.join(record_dir, f"rank{rt.rank}_of{rt.group_size}.npz")
    np.savez(path, indices=np.array(spec.record["train"].seen), **parameters(spec.record["trainer"]),
             **spec.record["init"])
    return path


def main():
    model, record_dir, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    spec = recording_spec(model, record_dir)
    drivers.main(spec, "train", argv)
    save_record(spec, record_dir)


if __name__ == "__main__":
    main()
