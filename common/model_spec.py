"""The model contract: what a model folder tells the shared drivers (``common/drivers.py``).

Each model folder defines one :class:`ModelSpec` subclass in ``MODEL/src/spec.py``; its entry points
are ``common.entry.run("MODEL.src.spec.Spec", "train")`` and so on, which run ``drivers.main(Spec(), "train")``.
The spec says

* how to build the networks, optimizers and train step from the config (:meth:`ModelSpec.build_trainer`,
  returning a :class:`Trainer` that names every checkpoint component);
* which config keys define the architecture (:attr:`ModelSpec.arch_keys`, stored in every checkpoint)
  and how to rebuild the inference networks from them alone (:meth:`ModelSpec.build_inference`), so
  eval, predict and export never need the training flags repeated;
* its datasets (:meth:`ModelSpec.datasets`), its eval generation (:meth:`ModelSpec.generate_eval`,
  the shared driver then scores the folders), its prediction and its exported graph;
* each inference network as a numpy runner in its exported graph's signature (:meth:`ModelSpec.network_runner`),
  which ``--backend=onnxruntime|openvino`` replaces by the ONNX file (``common.backends``,
  ``common.drivers.load_runners``), so eval and predict code is the same for every backend.
"""
import abc
import os
from dataclasses import dataclass, field
from typing import Callable, Optional

__all__ = ["ModelSpec", "Trainer", "Datasets", "EvalRun", "ExportGraph"]


@dataclass
class Datasets:
    """Training and validation sets (objects with ``__len__`` and ``get(index, rng)``) and their root."""
    train: object
    val: object
    root: str
    demo: bool = False


@dataclass
class Trainer:
    """What one training run holds.

    Attributes:
        step: compiled train step, ``step(*batch) -> tuple of scalar losses`` (``common.train``).
        loss_names: names of the step's outputs, in order (log, losses.json, loss curve).
        networks: ``{component: Cell}`` saved in every snapshot (``G``, ``D``, ``Corr``, ``G_ema`` ...).
        optimizers: ``{component: Optimizer}`` saved too (``opt_G``, ``opt_D`` ...).
        frozen: ``{name: Cell}`` loss networks that are not trained nor saved (VGG); the process's
            convolution path applies to them as to ``networks``.
        n_epochs: epochs of the whole schedule.
        learning_rates: ``epoch -> {optimizer component: lr}`` set before each epoch (None: constant).
        on_fresh_start: called with the log function when the run does not resume (e.g. fine-tuning init).
        notes: lines logged at the start (which loss network, which schedule ...).
        keep_conv_transforms: on the ``winograd`` CPU path, the 3x3 layers keep their transformed inputs for
            the backward instead of recomputing them (``common.conv.use_conv_impl``): faster, more memory.
    """
    step: object
    loss_names: tuple
    networks: dict
    optimizers: dict
    n_epochs: int
    frozen: dict = field(default_factory=dict)
    learning_rates: Optional[Callable[[int], dict]] = None
    on_fresh_start: Optional[Callable] = None
    notes: list = field(default_factory=list)
    keep_conv_transforms: bool = False

    @property
    def components(self):
        return dict(self.networks, **self.optimizers)


@dataclass
class EvalRun:
    """What a model's eval generation produced, for the shared scorer.

    ``fake_dir`` / ``real_dir`` hold name-matched images that every image metric scores; ``metrics``,
    ``protocol`` and ``settings`` add the model's own figures (e.g. CRN's LPIPS diversity) and eval
    settings; ``fcn_pairs`` ({frame id: (generated image, labelIds file)}) is given by models whose paper
    reports the FCN-score (None otherwise).
    """
    fake_dir: str
    real_dir: str
    images: int
    metrics: dict = field(default_factory=dict)
    protocol: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    not_computed: dict = field(default_factory=dict)
    fcn_pairs: Optional[dict] = None


@dataclass
class ExportGraph:
    """The network to export, an example input tuple, tensor names and the JSON note written beside it.

    ``component`` names the inference component (:attr:`ModelSpec.inference_components`) whose
    :meth:`ModelSpec.network_runner` this graph computes, feed for feed and output for output: its ONNX
    file replaces that network under ``--backend=onnxruntime|openvino``. Empty for a graph no runner uses
    (CoCosNet's composite).

    ``onnx_parts`` / ``onnx_glue``: for a graph made of graphs exported before it in the same list, its ONNX
    file is those files joined by glue nodes (:func:`common.export.compose_onnx`: ``{prefix: part stem}`` and
    the nodes) instead of a new trace of ``net``; ``net`` still gives the outputs it is checked against.
    """
    net: object
    inputs: tuple
    input_names: tuple
    output_names: tuple
    stem: str
    note: dict = field(default_factory=dict)
    component: str = ""
    onnx_parts: dict = field(default_factory=dict)
    onnx_glue: tuple = ()


class ModelSpec(abc.ABC):
    """Base class of the per-model specs; subclasses set the attributes and implement the methods.

    Attributes:
        name: model name (folder, checkpoint metadata, reports).
        config_path: the model's ``default_config.yaml``.
        arch_keys: config keys that define the architecture; stored in every checkpoint and restored from
            it by eval/predict/export.
        inference_components: checkpoint components eval/predict/export load (``("G",)``; OSMIS
            ``("G_ema",)``; CoCosNet ``("Corr", "G")``).
        data_layout: what ``--dataroot`` must hold (for error messages).
        data_keys: config keys that say how ``dataroot`` is read (CRN ``data_format``, ``label_format``; every
            model's ``class_table`` is recorded too: ``common.drivers.DATA_KEYS``); stored
            beside it in every checkpoint and taken with it by eval/predict/export (``common.drivers.load_inference``).
        demo_data_keys: config keys that pick the built-in demo data set (pix2pix ``demo_size``, ``demo_train``,
            ``demo_val``); stored and taken like :attr:`data_keys` after a demo run.
        predict_input: whether predict translates ``--input`` files (False: it samples, e.g. OSMIS).
        class_count_key: the config key holding the number of classes (``num_classes``, ``label_nc`` ...),
            set from the class table (``common.classes.apply_class_table``); None when there is none (pix2pix).
        bf16_refusal: why the model refuses ``--precision=bf16`` on MindSpore (train/predict), or "" when it
            takes it (oneDNN's bf16 mode holds for every MatMul of the process, so a model with a product that
            must stay float32 cannot use it).
        demo_keys: ``{key: demo_key}`` pairs whose demo value replaces the key's default on the built-in demo
            data (:meth:`demo_values`; CoCosNet ``{"size": "demo_size", ...}``).
        parameter_read_copies: False when the model's train step gives the same bits without MindSpore's copies
            of Parameter reads (a test compares the two): its train command then runs without them, faster and
            in less memory (``common.runtime.drop_parameter_read_copies``).
    """
    name = "model"
    config_path = ""
    arch_keys = ()
    inference_components = ("G",)
    data_layout = "a dataset folder"
    data_keys = ()
    demo_data_keys = ()
    predict_input = True
    class_count_key = None
    bf16_refusal = ""
    demo_keys = {}
    parameter_read_copies = True

    def dataroot(self, cfg):
        """``(root, demo)``: ``cfg.dataroot`` (checked), or the demo data's folder when it is empty."""
        if not cfg.dataroot:
            return self.demo_dataroot(cfg), True
        if not os.path.isdir(cfg.dataroot):
            raise FileNotFoundError(f"dataroot {cfg.dataroot} does not exist; pass --dataroot=<{self.data_layout}>, "
                                    f"or leave it empty for the built-in demo data")
        return cfg.dataroot, False

    @abc.abstractmethod
    def demo_dataroot(self, cfg):
        """The built-in demo data's folder (generated on first use)."""

    def demo_values(self, cfg, defaults=None):
        """``{key: cfg[demo_key]}`` for the :attr:`demo_keys` whose key still holds its default (``defaults``: the
        model's default config, read when not given). A key set to another value keeps it; one set to its default
        value cannot be told from an unset one and is replaced too (``--demo_<key>`` sets the demo's own)."""
        if defaults is None:
            from common.config import load_config
            defaults = load_config(self.config_path)
        return {key: cfg[demo_key] for key, demo_key in self.demo_keys.items() if cfg[key] == defaults[key]}

    def use_demo_values(self, cfg, chosen, *, data, advice):
        """Set ``chosen`` (:meth:`demo_values`, with any keys the model adds) in ``cfg``; returns the log note
        naming them: ``demo data (<data>): key=value, ...; --demo_<key> ... change them; pass --dataroot for
        <advice>``."""
        cfg.update(chosen)
        demo_flags = ", ".join(f"--{k}" for k in self.demo_keys.values())
        return (f"demo data ({data}): " + ", ".join(f"{k}={v}" for k, v in chosen.items())
                + f"; {demo_flags} change them; pass --dataroot for {advice}")

    def static_memory_plan(self, cfg):
        """Whether the train step of ``cfg`` (its derived keys set) runs faster with its memory planned before it
        runs (``common.runtime.plan_memory_statically``), at a memory cost the model accepts; default: no."""
        return False

    def arch(self, cfg):
        """Architecture metadata of a config (stored in checkpoints)."""
        return {key: cfg[key] for key in self.arch_keys}

    def check(self, cfg, rt, demo):
        """Refuse (ConfigError) or adjust a configuration before anything is written; return log notes."""
        return []

    @abc.abstractmethod
    def datasets(self, cfg, rt):
        """-> :class:`Datasets`, validated up front (a bad file fails here, before training starts)."""

    @abc.abstractmethod
    def build_trainer(self, cfg, rt, data):
        """-> :class:`Trainer`."""

    @abc.abstractmethod
    def sample_grid(self, cfg, trainer, data):
        """The sample grid of the current networks on the first validation samples: uint8 [H, W, 3]."""

    @abc.abstractmethod
    def build_inference(self, cfg):
        """-> ``{component: Cell}`` for :attr:`inference_components`, built from ``cfg`` (whose arch keys
        come from the checkpoint), weights not yet loaded."""

    @abc.abstractmethod
    def network_runner(self, cfg, component, net):
        """The MindSpore network ``component`` as a :class:`common.backends.CellRunner`: numpy feeds named as
        its exported graph's inputs -> that graph's outputs (the :class:`ExportGraph` whose ``component`` it is),
        in the mode eval/predict run it."""

    def runners(self, cfg, nets):
        """``{component: runner(feeds) -> list of numpy}`` for :meth:`generate_eval` / :meth:`predict`:
        MindSpore networks through :meth:`network_runner`, backend runners (``--backend``: ONNX files in
        onnxruntime/OpenVINO, ``common.drivers.load_runners``) as they are."""
        from common.backends import GraphRunner
        return {k: v if isinstance(v, GraphRunner) else self.network_runner(cfg, k, v) for k, v in nets.items()}

    @abc.abstractmethod
    def generate_eval(self, cfg, rt, nets, out_dir):
        """Generate the validation set into ``out_dir`` (images, index.html) -> :class:`EvalRun`; ``nets``:
        ``{component: network or backend runner}``, called through :meth:`runners`."""

    @abc.abstractmethod
    def predict(self, cfg, nets, paths, out_dir):
        """Translate the input files ``paths`` into ``out_dir`` (``nets`` as in :meth:`generate_eval`);
        returns the written paths."""

    @abc.abstractmethod
    def export_graph(self, cfg, nets, out_dir):
        """-> :class:`ExportGraph` (the inference networks prepared for export, native convolutions), or a
        list of them (e.g. CoCosNet's two published networks and their composite), each exported."""
