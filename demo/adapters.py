"""Per-model demo adapters: what the paint-a-scene page needs of a model, keyed by its spec name.

The page (``demo/app.py``) is generic: it shows a canvas in an adapter's class palette, turns the
painting or an uploaded colour label map into ``[H, W]`` class ids (void = ``IGNORE``), and hands them
to :meth:`DemoAdapter.generate` (MindSpore, the networks of ``common.drivers.load_inference``) or
:meth:`DemoAdapter.generate_onnx` (an ``export.py`` file run by onnxruntime). A new model plugs in with
one subclass and one entry in :data:`ADAPTERS`; a model with an exemplar (CoCosNet) sets
``needs_exemplar`` (the page then asks for one and passes it as ``[H, W, 3]`` uint8 ``exemplar``) and
names its extra images (the warped exemplar) in :meth:`DemoAdapter.output_names`.
"""
import numpy as np

from common import cityscapes as cs

__all__ = ["IGNORE", "DemoAdapter", "Pix2PixDemo", "CRNDemo", "ADAPTERS", "adapter_for"]

IGNORE = cs.IGNORE


class DemoAdapter:
    """Base class; subclasses set the attributes and implement :meth:`size`, :meth:`generate`, :meth:`generate_onnx`.

    Attributes:
        name: the model's spec name (``ModelSpec.name``), the key of :data:`ADAPTERS`.
        needs_exemplar: the page shows an exemplar upload and passes it to ``generate``.
    """
    name = ""
    needs_exemplar = False

    def spec(self):
        """A fresh instance of the model's :class:`common.model_spec.ModelSpec`."""
        raise NotImplementedError

    def label_set(self, cfg):
        """Words shown on the page for the label set the palette encodes."""
        return "Cityscapes 19 classes + void"

    def class_names(self, cfg):
        """Names of the classes, void last (the palette's rows)."""
        return list(cs.CLASS_NAMES) + ["void"]

    def palette(self, cfg):
        """``[num_classes + 1, 3]`` uint8 RGB, void (black) last."""
        return np.concatenate([cs.PALETTE, np.zeros((1, 3), np.uint8)])

    def size(self, cfg):
        """(height, width) of the label maps the loaded network takes."""
        raise NotImplementedError

    def output_names(self, cfg, n):
        """Captions of the ``n`` images :meth:`generate` returns (gallery, in order)."""
        return [f"output {i}" for i in range(n)] if n > 1 else ["output"]

    def prepare(self, cfg, nets):
        """Put the loaded networks in the mode ``predict.py`` uses (called once after loading)."""

    def generate(self, cfg, nets, ids, exemplar=None):
        """``[H, W]`` class ids (void = IGNORE) -> list of ``[H, W, 3]`` uint8 images (one, or k diverse)."""
        raise NotImplementedError

    def generate_onnx(self, cfg, session, ids, exemplar=None):
        """As :meth:`generate` through an onnxruntime ``InferenceSession`` of the model's exported file."""
        raise NotImplementedError

    def colorize(self, cfg, ids):
        """``[H, W]`` class ids -> ``[H, W, 3]`` uint8 colour label map in :meth:`palette` (void black)."""
        palette = self.palette(cfg)
        ids = np.asarray(ids)
        return palette[np.where(ids == IGNORE, len(palette) - 1, np.minimum(ids, len(palette) - 1))]


class Pix2PixDemo(DemoAdapter):
    """pix2pix labels->photo: the colour label map itself is the input image (``direction: BtoA``)."""
    name = "pix2pix"

    def spec(self):
        from pix2pix.src.spec import Pix2PixSpec
        return Pix2PixSpec()

    def size(self, cfg):
        side = cfg.image_size or cfg.crop_size
        return side, side

    def prepare(self, cfg, nets):
        """Put G in the mode ``predict.py`` uses (``eval_protocol``)."""
        nets["G"].set_train(cfg.eval_protocol == "paper")

    def generate(self, cfg, nets, ids, exemplar=None):
        from pix2pix.src.utils import generate
        image, _ = self.spec().translate(cfg, lambda x: generate(nets["G"], x), self.colorize(cfg, ids))
        return [image]

    def generate_onnx(self, cfg, session, ids, exemplar=None):
        name = session.get_inputs()[0].name
        image, _ = self.spec().translate(cfg, lambda x: session.run(None, {name: x.astype(np.float32)})[0],
                                         self.colorize(cfg, ids))
        return [image]


class CRNDemo(DemoAdapter):
    """CRN: one-hot label map -> k diverse images (the page's gallery)."""
    name = "crn"

    def spec(self):
        from crn.src.spec import CRNSpec
        return CRNSpec()

    def class_names(self, cfg):
        names = list(cs.CLASS_NAMES[:cfg.num_classes])
        return names + [f"class {i}" for i in range(len(names), cfg.num_classes)] + ["void"]

    def palette(self, cfg):
        from crn.src.utils import label_palette
        return label_palette(cfg.num_classes)

    def label_set(self, cfg):
        return ("Cityscapes 19 classes" if cfg.num_classes == cs.NUM_CLASSES else f"{cfg.num_classes} classes") + " + void"

    def size(self, cfg):
        return cfg.size, cfg.aspect * cfg.size

    def _onehot(self, cfg, ids):
        from crn.src.dataset import encode_label
        return encode_label(np.where(ids == IGNORE, cfg.ignore_index, ids), cfg.num_classes, cfg.ignore_index)

    def generate(self, cfg, nets, ids, exemplar=None):
        from crn.src.utils import generate
        return list(generate(nets["G"], self._onehot(cfg, ids)[None])[0])

    def generate_onnx(self, cfg, session, ids, exemplar=None):
        name = session.get_inputs()[0].name
        out = session.run(None, {name: self._onehot(cfg, ids)[None]})[0][0]  # [k, 3, H, W] in 0..1
        return list(np.rint(np.clip(out, 0, 1) * 255).astype(np.uint8).transpose(0, 2, 3, 1))


ADAPTERS = {adapter.name: adapter for adapter in (Pix2PixDemo(), CRNDemo())}


def adapter_for(name):
    """The adapter of model ``name``; error listing the models the demo knows."""
    if name not in ADAPTERS:
        raise ValueError(f"model '{name}' has no demo adapter; choose one of {sorted(ADAPTERS)} "
                         f"(a model adds one in demo/adapters.py)")
    return ADAPTERS[name]
