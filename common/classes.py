"""Class tables: the id, name and colour of every class of a label set (``classes.yaml``), and the built-in ones.

A class table file is YAML, a list (or a ``classes:`` list) of one entry per class::

    - {id: 0, name: road, color: [128, 64, 128]}
    - {id: 1, name: tree, color: [0, 200, 0]}

Each broken rule is a :class:`ClassTableError` naming the file, the entry's line and the value:

* an entry has exactly the keys ``id``, ``name`` and ``color``;
* the ids are 0..N-1, each once, in any order: an id is the pixel value of the label maps and the model's
  one-hot channel, so gaps are refused (renumber the classes and their label maps);
* names are distinct non-empty text; colours are distinct ``[r, g, b]`` with 0..255 (colour-coded label
  maps are read back into ids through them).

Models find the table through the config key ``class_table`` (``common/base_config.yaml``): a file, or empty
for ``DATAROOT/classes.yaml`` when that exists (``python -m common.prepare custom`` writes one into every
dataroot it prepares). The drivers call :func:`apply_class_table`, which sets the model's class count from
the table; specs colourise label maps with :meth:`ClassTable.colorize` of :func:`config_class_table`.
The built-in label sets are tables too: :func:`cityscapes_table` and :func:`ade20k_table`
(:func:`builtin_table` picks one by class count).
"""
import json
import os
from dataclasses import dataclass

import numpy as np
import yaml

__all__ = ["CLASS_TABLE_FILE", "ClassTable", "ClassTableError", "parse_class_table", "load_class_table",
           "dump_class_table", "cityscapes_table", "ade20k_table", "builtin_table", "class_table_path", "config_class_table",
           "apply_class_table", "unknown_ids_error"]

CLASS_TABLE_FILE = "classes.yaml"
KEYS = ("id", "name", "color")


class ClassTableError(ValueError):
    """A class table file is missing or breaks a rule; the message names the file, line and value."""


def _rgb_code(colors):
    colors = np.asarray(colors).astype(np.int64)
    return (colors[..., 0] << 16) | (colors[..., 1] << 8) | colors[..., 2]


@dataclass(frozen=True, eq=False)
class ClassTable:
    """The classes of a label set; class ``i`` has ``names[i]`` and ``colors[i]``.

    Attributes:
        names: [N] class names, by id.
        colors: [N, 3] uint8 RGB, by id.
        source: the file the table was read from (or a description of a built-in table), for messages.
    """
    names: tuple
    colors: np.ndarray
    source: str = "built-in table"

    def __post_init__(self):
        colors = np.asarray(self.colors)
        if colors.shape != (len(self.names), 3):
            raise ValueError(f"{self.source}: colors of shape {colors.shape} for {len(self.names)} names")
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "colors", colors.astype(np.uint8))

    @property
    def ids(self):
        """[N] int64 class ids 0..N-1."""
        return np.arange(len(self.names), dtype=np.int64)

    @property
    def num_classes(self):
        return len(self.names)

    def palette(self, void_color=(0, 0, 0)):
        """[N + 1, 3] uint8: the class colours, then ``void_color`` (the demo's palette layout)."""
        return np.concatenate([self.colors, np.asarray([void_color], np.uint8)])

    def colorize(self, ids, void_color=(0, 0, 0)):
        """[H, W] ids -> [H, W, 3] uint8 colour map; ids outside 0..N-1 (void, 255) take ``void_color``."""
        ids = np.asarray(ids).astype(np.int64)
        known = (ids >= 0) & (ids < self.num_classes)
        return self.palette(void_color)[np.where(known, ids, self.num_classes)]

    def check_ids(self, ids, source):
        """Raise :class:`ClassTableError` naming ``source`` and the ids of ``ids`` [H, W] outside the table."""
        ids = np.asarray(ids).astype(np.int64)
        bad = (ids < 0) | (ids >= self.num_classes)
        if bad.any():
            raise unknown_ids_error(source, np.unique(ids[bad]), self.num_classes, class_table=self.source)

    def to_ids(self, label, source):
        """A label map -> [H, W] int64 ids: [H, W] ids (checked) or [H, W, 3] RGB matched to the colours.

        Raises:
            ClassTableError: an id or colour that is not in the table; names ``source`` and the values.
        """
        label = np.asarray(label)
        if label.ndim == 2:
            self.check_ids(label, source)
            return label.astype(np.int64)
        code, keys = _rgb_code(label[..., :3]), _rgb_code(self.colors)
        order = np.argsort(keys, kind="stable")
        pos = np.clip(np.searchsorted(keys[order], code), 0, len(keys) - 1)
        unknown = keys[order][pos] != code
        if unknown.any():
            bad = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in np.unique(code[unknown])[:5].tolist()]
            raise ClassTableError(f"{source}: colours {bad} are not in the class table {self.source}; add them to it "
                                  f"or fix the label map (PNG, no antialiasing)")
        return order[pos].astype(np.int64)


def unknown_ids_error(source, values, num_classes, *, class_table="", key="num_classes"):
    """The error for label ids of ``source`` outside 0..num_classes-1: the fix is the class table when one is
    in effect, else the model's class-count config ``key``."""
    values = [int(v) for v in values][:10]
    if class_table:
        return ClassTableError(f"{source}: class ids {values} are not in the class table {class_table} (ids 0.."
                               f"{num_classes - 1}); add those classes to the table or fix the label map")
    return ClassTableError(f"{source}: class ids {values} are outside 0..{num_classes - 1}; set --{key} to at least "
                           f"{max(values) + 1}, give a class table (--class_table), or fix the label map")


def _entry_error(where, entry, why):
    return ClassTableError(f"{where}: entry {entry!r} {why}; an entry is {{id: 0, name: road, color: [128, 64, 128]}}")


def parse_class_table(text, source):
    """A :class:`ClassTable` from the YAML ``text`` (str or bytes) of the file ``source`` (for messages)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as err:
        raise ClassTableError(f"{source}: not valid YAML ({err})") from None
    finally:
        loader.dispose()
    items = node.value if isinstance(data, list) else None
    if isinstance(data, dict):
        extra = [k for k in data if k != "classes"]
        if extra:
            raise ClassTableError(f"{source}: unknown top-level key(s) {extra}; a class table is a list of {{id, "
                                  f"name, color}} entries, or a mapping with only 'classes:' holding that list")
        data = data.get("classes")
        items = next(v for k, v in node.value if k.value == "classes").value if isinstance(data, list) else None
    if not isinstance(data, list) or not data:
        raise ClassTableError(f"{source}: expected a list of {{id, name, color}} entries (or a 'classes:' list), "
                              f"one per class")
    by_id, seen_names, seen_colors = {}, {}, {}
    for entry, item in zip(data, items):
        where = f"{source}, line {item.start_mark.line + 1}"
        if not isinstance(entry, dict):
            raise _entry_error(where, entry, "is not a mapping")
        unknown = [k for k in entry if k not in KEYS]
        if unknown:
            raise _entry_error(where, entry, f"has unknown key(s) {unknown} (allowed: {', '.join(KEYS)})")
        missing = [k for k in KEYS if k not in entry]
        if missing:
            raise _entry_error(where, entry, f"lacks {', '.join(missing)}")
        cid, name, color = entry["id"], entry["name"], entry["color"]
        if not isinstance(cid, int) or isinstance(cid, bool) or cid < 0:
            raise _entry_error(where, entry, f"has id {cid!r}; ids are integers 0..N-1")
        if not isinstance(name, str) or not name.strip():
            raise _entry_error(where, entry, f"has name {name!r}; names are non-empty text")
        if not (isinstance(color, list) and len(color) == 3
                and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color)):
            raise _entry_error(where, entry, f"has color {color!r}; colours are [r, g, b] with 0..255")
        for what, value, seen in (("id", cid, by_id), ("name", name, seen_names), ("color", tuple(color), seen_colors)):
            if value in seen:
                raise ClassTableError(f"{where}: {what} {list(value) if what == 'color' else value!r} is already "
                                      f"used on {seen[value][0]}; every class needs its own {what}")
        by_id[cid] = (where, name, color)
        seen_names[name] = seen_colors[tuple(color)] = (where,)
    gaps = sorted(set(range(max(by_id) + 1)) - set(by_id))
    if gaps:
        raise ClassTableError(f"{source}: ids {sorted(by_id)[:20]} leave out {gaps[:20]}; ids must be 0..N-1 without "
                              f"gaps (an id is the label maps' pixel value and the model's one-hot channel): "
                              f"renumber the classes and their label maps")
    return ClassTable(tuple(by_id[i][1] for i in range(len(by_id))),
                      np.array([by_id[i][2] for i in range(len(by_id))], np.uint8), source)


def load_class_table(path):
    """The :class:`ClassTable` of the file ``path``; :class:`ClassTableError` naming it when missing or bad."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except FileNotFoundError:
        raise ClassTableError(f"class table {path} does not exist; write one ({{id, name, color}} per class, see "
                              f"common/classes.py) or pass another --class_table") from None
    except OSError as err:
        raise ClassTableError(f"class table {path} cannot be read ({err})") from None
    return parse_class_table(text, path)


def dump_class_table(table):
    """The YAML text of ``table``, one ``{id, name, color}`` entry per line (what :func:`load_class_table` reads)."""
    lines = [f"- {{id: {i}, name: {json.dumps(name)}, color: [{', '.join(str(int(c)) for c in color)}]}}"
             for i, (name, color) in enumerate(zip(table.names, table.colors))]
    return "# class table: id (label pixel value), name, color [r, g, b]\n" + "\n".join(lines) + "\n"


def cityscapes_table():
    """The 19 Cityscapes evaluation classes (trainIds) and their ``gtFine_color`` colours; void (255) is no class."""
    from common import cityscapes as cs
    return ClassTable(cs.CLASS_NAMES, cs.PALETTE, "Cityscapes 19 classes")


def ade20k_table():
    """ADE20K SceneParsing: 0 "other" + the 150 classes, standard colours (road and skyscraper share one)."""
    from common import ade20k
    return ClassTable(ade20k.CLASS_NAMES, ade20k.PALETTE, "ADE20K 150 classes + other")


def builtin_table(num_classes):
    """The built-in table with ``num_classes`` classes (19: Cityscapes, 151: ADE20K), or None: the colours a model
    falls back to for label maps when no class table file is in effect."""
    for make in (cityscapes_table, ade20k_table):
        table = make()
        if table.num_classes == num_classes:
            return table
    return None


def class_table_path(cfg):
    """The class table file of a config: ``cfg.class_table`` (must exist), else ``DATAROOT/classes.yaml`` when
    it exists, else ""."""
    if cfg.class_table:
        if not os.path.isfile(cfg.class_table):
            raise ClassTableError(f"--class_table={cfg.class_table} does not exist; pass a classes.yaml ({{id, name, "
                                  f"color}} per class) or leave it empty for <dataroot>/{CLASS_TABLE_FILE}")
        return cfg.class_table
    auto = os.path.join(cfg.dataroot, CLASS_TABLE_FILE) if cfg.dataroot else ""
    return auto if auto and os.path.isfile(auto) else ""


def config_class_table(cfg):
    """The :class:`ClassTable` in effect for ``cfg`` (:func:`class_table_path`), or None."""
    path = class_table_path(cfg)
    return load_class_table(path) if path else None


def apply_class_table(cfg, count_key=None, default=None, *, given_by=""):
    """Load the class table of ``cfg``, record its file in ``cfg.class_table`` and fit the class count to it.

    Args:
        count_key: the model's class-count key (``num_classes``, ``label_nc`` ...); None: the model has none.
        default: that key's default; a count left at it takes the table's number of classes.
        given_by: where ``cfg[count_key]`` came from when it must match as it is (e.g. ``"checkpoint PATH"``).

    Returns:
        the :class:`ClassTable`, or None when there is none.

    Raises:
        ClassTableError: the table is bad, or a given count differs from its number of classes.
    """
    path = class_table_path(cfg)
    if not path:
        return None
    table = load_class_table(path)
    cfg.class_table = path
    if count_key:
        have, want = cfg[count_key], table.num_classes
        if given_by and have == 0:  # a checkpoint trained without labels (OSMIS without masks)
            return table
        if not given_by and have == default:
            cfg[count_key] = want
        elif have != want:
            origin = given_by or f"--{count_key}={have}"
            raise ClassTableError(f"{count_key}={have} ({origin}) but the class table {path} has {want} classes (ids "
                                  f"0..{want - 1}); " + (f"drop --{count_key} (the table sets it) or" if not given_by
                                                         else "use the table the checkpoint was trained with, or")
                                  + " pass the matching --class_table")
    return table
