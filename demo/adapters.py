"""Per-model demo adapters: what the paint-a-scene page needs of a model, keyed by its spec name.

The page (``demo/app.py``) is generic: it shows a canvas in an adapter's class palette, turns the
painting or an uploaded colour label map into ``[H, W]`` class ids (void = ``IGNORE``), and hands them
to :meth:`DemoAdapter.generate` with the model's runners (``ModelSpec.runners``: the networks of
``common.drivers.load_inference``, or the ``export.py`` ONNX files named by :attr:`DemoAdapter.onnx_parts` in
onnxruntime, ``common.backends``), so both backends run the code ``predict.py`` runs. A new model plugs in with
one subclass and one entry in :data:`ADAPTERS`; a model with an exemplar (CoCosNet) sets
``needs_exemplar`` (the page then asks for one and passes it as ``[H, W, 3]`` uint8 ``exemplar``) and
names its extra images (the warped exemplar) in :meth:`DemoAdapter.output_names`. A model that samples
without a label map (OSMIS) sets ``takes_label_map = False`` and implements :meth:`DemoAdapter.sample`
instead (the page then shows a "sample N" control in place of the canvas).

With a class table in effect (config key ``class_table``, or ``<dataroot>/classes.yaml``;
``common.classes``), the palette and class names are the table's.
"""
import numpy as np

from common import cityscapes as cs
from common import ade20k
from common.classes import ade20k_table, builtin_table, cityscapes_table, config_class_table

__all__ = ["IGNORE", "DemoAdapter", "Pix2PixDemo", "CRNDemo", "CoCosNetDemo", "OSMISDemo", "ADAPTERS",
           "adapter_for", "distinct_colours", "page_palette"]

IGNORE = cs.IGNORE
VOID_COLOR = (0, 0, 0)


def distinct_colours(palette, taken=()):
    """``[N, 3]`` uint8 -> a copy whose repeated rows are nudged (blue channel, +-1 steps) until every row
    differs from all others and from the colours ``taken``: a painted or uploaded colour must name one class.
    (The standard ADE20K table, ``common.classes.ade20k_table``, gives road and skyscraper one colour.)"""
    out = np.array(palette, np.uint8)
    seen = {tuple(int(c) for c in colour) for colour in taken}
    for i, row in enumerate(out):
        colour = tuple(int(c) for c in row)
        step = 1 if colour[2] < 255 else -1
        while colour in seen:
            colour = colour[:2] + (colour[2] + step,)
        seen.add(colour)
        out[i] = colour
    return out


def page_palette(table):
    """The page's palette of a :class:`common.classes.ClassTable`: ``[N + 1, 3]`` uint8, its colours with
    repeats (and void's black) nudged by :func:`distinct_colours`, void black last."""
    return np.concatenate([distinct_colours(table.colors, taken=[VOID_COLOR]), np.asarray([VOID_COLOR], np.uint8)])


class DemoAdapter:
    """Base class; subclasses set the attributes and implement :meth:`size` and :meth:`generate` (or :meth:`sample`).

    Attributes:
        name: the model's spec name (``ModelSpec.name``), the key of :data:`ADAPTERS`.
        needs_exemplar: the page shows an exemplar upload and passes it to ``generate``.
        takes_label_map: False for a model that samples from noise (:meth:`sample`, no canvas).
        onnx_parts: file-stem suffixes of the ``export.py`` ONNX files the ONNX backend runs together
            (``("",)``: one file), one per ``ModelSpec.inference_components`` entry, in that order.
    """
    name = ""
    needs_exemplar = False
    takes_label_map = True
    onnx_parts = ("",)

    def spec(self):
        """A fresh instance of the model's :class:`common.model_spec.ModelSpec`."""
        raise NotImplementedError

    def label_set(self, cfg):
        """Words shown on the page for the label set the palette encodes."""
        table = config_class_table(cfg) or cityscapes_table()
        return f"{table.source}: {table.num_classes} classes + void"

    def class_names(self, cfg):
        """Names of the classes, void last (the palette's rows)."""
        return list((config_class_table(cfg) or cityscapes_table()).names) + ["void"]

    def palette(self, cfg):
        """``[num_classes + 1, 3]`` uint8 RGB, void (black) last: the class table's, else Cityscapes
        (:func:`page_palette`)."""
        return page_palette(config_class_table(cfg) or cityscapes_table())

    def size(self, cfg):
        """(height, width) of the label maps the loaded network takes."""
        raise NotImplementedError

    def output_names(self, cfg, n):
        """Captions of the ``n`` images :meth:`generate` returns (gallery, in order)."""
        return [f"output {i}" for i in range(n)] if n > 1 else ["output"]

    def scene_ids(self, cfg, ids):
        """A demo street layout in Cityscapes train ids (void = IGNORE) -> the same scene in the model's ids."""
        return ids

    def generate(self, cfg, runners, ids, exemplar=None):
        """``[H, W]`` class ids (void = IGNORE) -> list of ``[H, W, 3]`` uint8 images (one, or k diverse);
        ``runners``: ``{component: runner(feeds) -> outputs}`` (``ModelSpec.runners``)."""
        raise NotImplementedError

    def sample(self, cfg, runners, n, seed):
        """``n`` samples from noise seeded by ``seed`` -> (list of ``[H, W, 3]`` uint8 images, their captions)."""
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

    def scene_ids(self, cfg, ids):
        """A demo street layout in Cityscapes train ids (void = IGNORE) -> the same scene in the model's ids."""
        return ids

    def generate(self, cfg, runners, ids, exemplar=None):
        image, _ = self.spec().translate(cfg, lambda x: runners["G"]({"input": x})[0], self.colorize(cfg, ids))
        return [image]


class CRNDemo(DemoAdapter):
    """CRN: one-hot label map -> k diverse images (the page's gallery)."""
    name = "crn"

    def spec(self):
        from crn.src.spec import CRNSpec
        return CRNSpec()

    def _table(self, cfg):
        """The class table in effect, else the built-in one of ``num_classes`` (as ``crn.src.utils.label_palette``)."""
        return config_class_table(cfg) or builtin_table(cfg.num_classes)

    def class_names(self, cfg):
        table = self._table(cfg)
        if table is not None:
            return list(table.names) + ["void"]
        names = list(cs.CLASS_NAMES[:cfg.num_classes])
        return names + [f"class {i}" for i in range(len(names), cfg.num_classes)] + ["void"]

    def palette(self, cfg):
        """``crn.src.utils.label_palette``'s colours (the class table's, a built-in table's, else Cityscapes then
        pseudo-random ones), a table's made distinct for the page (:func:`page_palette`)."""
        table = self._table(cfg)
        if table is not None:
            return page_palette(table)
        from crn.src.utils import label_palette
        return label_palette(cfg.num_classes)

    def label_set(self, cfg):
        table = config_class_table(cfg)
        if table is not None:
            return f"{table.source}: {table.num_classes} classes + void"
        table = builtin_table(cfg.num_classes)
        return (table.source if table is not None else f"{cfg.num_classes} classes") + " + void"

    def size(self, cfg):
        return cfg.size, cfg.aspect * cfg.size

    def _onehot(self, cfg, ids):
        from crn.src.dataset import encode_label
        return encode_label(np.where(ids == IGNORE, cfg.ignore_index, ids), cfg.num_classes, cfg.ignore_index)

    def generate(self, cfg, runners, ids, exemplar=None):
        from crn.src.utils import images_uint8
        return list(images_uint8(runners["G"]({"label": self._onehot(cfg, ids)[None]})[0])[0])


class CoCosNetDemo(DemoAdapter):
    """CoCosNet: label map + exemplar photo -> output in the exemplar's style, and the warped exemplar.

    Class 0 is CoCosNet's "other"; the page's void paints as class 0 too. The exemplar has no label map
    here (as ``predict.py`` without ``--exemplar_label``: all zeros, matched on image features alone).
    With ``label_nc`` 151 the classes are ADE20K's (``common.classes.ade20k_table``). ONNX: the two-network export
    (correspondence, then translation of [warped exemplar, label map]), which also gives the warped exemplar.
    """
    name = "cocosnet"
    needs_exemplar = True
    onnx_parts = ("_correspondence", "_translation")
    OTHER_COLOR = (128, 128, 128)

    def spec(self):
        from cocosnet.src.spec import CoCosNetSpec
        return CoCosNetSpec()

    def _styled(self, cfg):
        from common.demo_data import STYLED_LABEL_NC
        return cfg.label_nc == STYLED_LABEL_NC

    def _ade20k(self, cfg):
        return cfg.label_nc == ade20k.NUM_CLASSES

    def label_set(self, cfg):
        table = config_class_table(cfg)
        if table is not None:
            return f"{table.source}: {table.num_classes} classes (void paints class 0)"
        if self._styled(cfg):
            return "styled demo streets: 7 Cityscapes classes + other"
        if self._ade20k(cfg):
            return ade20k_table().source
        return f"{cfg.label_nc} classes (0 = other)"

    def class_names(self, cfg):
        table = config_class_table(cfg)
        if table is not None:
            return list(table.names) + [f"void (= {table.names[0]})"]
        if self._styled(cfg):
            from common.demo_data import DEMO_CLASSES
            names = [cs.CLASS_NAMES[c] for c in DEMO_CLASSES]
        elif self._ade20k(cfg):
            names = list(ade20k_table().names[1:])
        else:
            names = [f"class {i}" for i in range(1, cfg.label_nc)]
        return ["other"] + names + ["void (= other)"]

    def palette(self, cfg):
        """The class table's colours; else styled demo: the Cityscapes colours of its classes; ADE20K (label_nc
        151): ``common.classes.ade20k_table``'s (the one repeat nudged, :func:`distinct_colours`); else
        ``cocosnet.src.utils.palette``. Without a table, class 0 grey (black is void)."""
        table = config_class_table(cfg)
        if table is not None:
            return table.palette()
        if self._styled(cfg):
            from common.demo_data import DEMO_CLASSES
            colours = np.concatenate([np.zeros((1, 3), np.uint8), cs.PALETTE[list(DEMO_CLASSES)]])
        elif self._ade20k(cfg):
            colours = distinct_colours(ade20k_table().colors)
        else:
            from cocosnet.src.utils import palette
            colours = palette(cfg.label_nc)
        colours[0] = self.OTHER_COLOR
        return np.concatenate([colours, np.zeros((1, 3), np.uint8)])

    def size(self, cfg):
        return cfg.size, cfg.size

    def output_names(self, cfg, n):
        return ["output", "warped exemplar"]

    def scene_ids(self, cfg, ids):
        """Cityscapes ids -> the styled demo's ids (its classes 1..7, the rest 0 = other)."""
        from common.demo_data import DEMO_CLASSES
        table = np.zeros(256, np.int64)
        table[list(DEMO_CLASSES)] = np.arange(1, len(DEMO_CLASSES) + 1)
        out = table[np.where(ids == IGNORE, 255, ids)]
        return np.where(out < cfg.label_nc, out, 0)

    def inputs(self, cfg, ids, exemplar):
        """(seg [1, L, S, S], exemplar [1, 3, S, S] in [-1, 1], all-zero exemplar seg), as ``predict.py``."""
        from cocosnet.src.dataset import one_hot
        from cocosnet.src.spec import exemplar_photo
        if exemplar is None:
            raise ValueError("cocosnet translates with an exemplar photo: upload one")
        ref = exemplar_photo(np.asarray(exemplar), cfg.size)
        seg = one_hot(np.where(ids == IGNORE, 0, ids), cfg.label_nc)
        return seg[None], ref[None], np.zeros_like(seg)[None]

    def generate(self, cfg, runners, ids, exemplar=None):
        """The output and the warped exemplar (the ONNX backend: the two published networks, chained alike)."""
        from cocosnet.src.spec import translate_runners
        out, warped = translate_runners(runners["Corr"], runners["G"], *self.inputs(cfg, ids, exemplar))
        return [out[0], warped[0]]


class OSMISDemo(DemoAdapter):
    """OSMIS: no label map; "sample N image+mask pairs" from noise (a gallery of images and colour masks)."""
    name = "osmis"
    takes_label_map = False

    def spec(self):
        from osmis.src.spec import OSMISSpec
        return OSMISSpec()

    def label_set(self, cfg):
        c = cfg.num_mask_channels
        return f"samples from noise with {c}-class masks" if c else "samples from noise (images only)"

    def class_names(self, cfg):
        table = config_class_table(cfg)
        if table is not None:
            return list(table.names)
        return [f"mask class {i}" for i in range(cfg.num_mask_channels)]

    def palette(self, cfg):
        table = config_class_table(cfg)
        if table is not None:
            return table.colors
        from osmis.src.spec import palette
        return palette(cfg.num_mask_channels)

    def size(self, cfg):
        from osmis.src.spec import network_arch
        return network_arch(cfg)["resolution"]

    def sample(self, cfg, runners, n, seed):
        """As ``osmis/predict.py --num_generated=n --seed=seed``: the same noise, one sample at a time."""
        from osmis.src.spec import sample_pairs
        return self._sample(cfg, n, seed, lambda z: sample_pairs(runners["G_ema"], z))

    def _sample(self, cfg, n, seed, generate):
        """``generate(z [1, noise_dim, 1, 1])`` -> (images [1, H, W, 3] uint8, mask ids [1, H, W] or None), per sample."""
        from osmis.src.spec import paint_mask
        n, table = int(n), config_class_table(cfg)
        if not 1 <= n <= 64:
            raise ValueError(f"number of samples {n}: choose 1 to 64")
        z = np.random.RandomState(int(seed)).standard_normal((n, cfg.noise_dim, 1, 1)).astype(np.float32)
        images, captions = [], []
        for i in range(n):
            image, mask = generate(z[i:i + 1])
            images.append(image[0])
            captions.append(f"sample {i}")
            if mask is not None:
                images.append(paint_mask(mask[0], cfg.num_mask_channels, table))
                captions.append(f"sample {i} mask")
        return images, captions


ADAPTERS = {adapter.name: adapter for adapter in (Pix2PixDemo(), CRNDemo(), CoCosNetDemo(), OSMISDemo())}


def adapter_for(name):
    """The adapter of model ``name``; error listing the models the demo knows."""
    if name not in ADAPTERS:
        raise ValueError(f"model '{name}' has no demo adapter; choose one of {sorted(ADAPTERS)} "
                         f"(a model adds one in demo/adapters.py)")
    return ADAPTERS[name]
