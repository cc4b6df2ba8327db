"""A custom dataset: photos, label PNGs and a class table -> the layouts CRN, CoCosNet, pix2pix and OSMIS read.

Source (a folder or an archive of it)::

    classes.yaml                  # or --classes=PATH
    <split>/images/<stem>.jpg|png
    <split>/labels/<stem>.png     # class ids (single channel), or colour maps using the table's colours

``classes.yaml`` is a list (or a ``classes:`` list) of ``{id: 0, name: road, color: [128, 64, 128]}``
entries with unique ids and colours. Output::

    DST/classes.yaml
    DST/<split>/images/<stem>.png   # photo (PIL bicubic, antialiased, when size is set)
    DST/<split>/labels/<stem>.png   # class ids (8-bit, or 16-bit when an id exceeds 255), nearest neighbour
    DST/pix2pix/<split>/<stem>.jpg  # photo | label colours, ab_size x ab_size per half (ab_size > 0)
    DST/osmis/<split>/image/<stem>.png, DST/osmis/<split>/mask/<stem>.png   # the photo and its class ids
                                    # again, in the layout OSMIS reads (osmis=true; ids at most 30)

Every label pixel must be a table id (or colour); anything else is reported with the file and the values.
"""
import numpy as np
import yaml

from common.prepare.core import (Job, PrepareError, check_same_size, decode_image, decode_label, find_members, pair,
                                 resize_nearest, resize_photo)

__all__ = ["OPTIONS", "ClassTable", "load_table", "plan"]

OPTIONS = {
    "classes": ("", "class table YAML (empty: classes.yaml in SRC)"),
    "size": (0, "output height (0: keep each image's size)"),
    "aspect": (1.0, "output width / height when size is set"),
    "splits": ("train,val", "comma-separated splits to prepare"),
    "ab_size": (256, "side of each half of the pix2pix AB images (0: no pix2pix folder)"),
    "osmis": (False, "also write DST/osmis/<split>/image and mask (OSMIS --dataroot=DST/osmis/<split>)"),
}
OSMIS_MAX_ID = 30  # OSMIS reads a single-channel mask with a value above 30 as a binary 0/255 mask
PHOTO = r"(?:^|/)(?P<split>[^/]+)/images/(?P<stem>[^/]+)\.(?:jpg|jpeg|png|bmp|tif|tiff|webp)$"
LABEL = r"(?:^|/)(?P<split>[^/]+)/labels/(?P<stem>[^/]+)\.png$"


class ClassTable:
    """``ids`` [N] int64 and ``colors`` [N, 3] uint8 of a class table; ``names`` [N] str."""

    def __init__(self, entries, where):
        entries = entries.get("classes") if isinstance(entries, dict) else entries
        if not isinstance(entries, list) or not entries:
            raise PrepareError(f"{where}: expected a list of {{id, name, color}} entries (or a 'classes:' list)")
        ids, names, colors = [], [], []
        for i, e in enumerate(entries):
            ok = isinstance(e, dict) and isinstance(e.get("id"), int) and 0 <= e["id"] < 65536 \
                and isinstance(e.get("name"), str) and isinstance(e.get("color"), list) and len(e["color"]) == 3 \
                and all(isinstance(c, int) and 0 <= c < 256 for c in e["color"])
            if not ok:
                raise PrepareError(f"{where}: entry {i} ({e!r}) must be {{id: 0..65535, name: text, color: [r, g, b] "
                                   f"with 0..255}}")
            ids.append(e["id"])
            names.append(e["name"])
            colors.append(tuple(e["color"]))
        for what, values in (("id", ids), ("color", colors)):
            dup = sorted({v for v in values if values.count(v) > 1})
            if dup:
                raise PrepareError(f"{where}: {what}s {dup} appear more than once; every class needs its own")
        self.ids, self.names = np.array(ids, np.int64), names
        self.colors = np.array(colors, np.uint8)
        self.lut = np.zeros((int(self.ids.max()) + 1, 3), np.uint8)
        self.lut[self.ids] = self.colors

    def to_ids(self, lab, member):
        """[H, W] ids or [H, W, 3] colours -> [H, W] ids (uint8, or uint16 past 255); unknown values raise."""
        if lab.ndim == 3:
            code = (lab[..., 0].astype(np.int64) << 16) | (lab[..., 1].astype(np.int64) << 8) | lab[..., 2]
            keys = (self.colors[:, 0].astype(np.int64) << 16) | (self.colors[:, 1].astype(np.int64) << 8) \
                | self.colors[:, 2]
            order = np.argsort(keys)
            pos = np.clip(np.searchsorted(keys[order], code), 0, len(keys) - 1)
            unknown = keys[order][pos] != code
            if unknown.any():
                bad = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in np.unique(code[unknown])[:5].tolist()]
                raise PrepareError(f"{member.label}: colours {bad} are not in the class table; add them to it or "
                                   f"fix the label map")
            ids = self.ids[order][pos]
        else:
            ids = lab.astype(np.int64)
            unknown = ~np.isin(ids, self.ids)
            if unknown.any():
                raise PrepareError(f"{member.label}: class ids {np.unique(ids[unknown])[:10].tolist()} are not in the "
                                   f"class table (ids {self.ids.tolist()[:20]}); add them to it or fix the label map")
        return ids.astype(np.uint8 if self.ids.max() < 256 else np.uint16)


def load_table(sources, path):
    """The class table from ``path`` or from the shallowest ``classes.yaml`` in the sources."""
    if path:
        try:
            with open(path, "rb") as f:
                data, where = f.read(), path
        except OSError as err:
            raise PrepareError(f"--classes={path}: cannot read it ({err})") from None
    else:
        found = sorted(find_members(sources, r"(?:^|/)classes\.yaml$"), key=lambda mm: mm[1].path.count("/"))
        if not found:
            raise PrepareError("no classes.yaml in SRC; add one (a list of {id, name, color}) or pass --classes=PATH")
        data, where = found[0][1].read(), found[0][1].label
    try:
        return ClassTable(yaml.safe_load(data), where), data
    except yaml.YAMLError as err:
        raise PrepareError(f"{where}: not valid YAML ({err})") from None


def plan(sources, opts, report):
    """Jobs of every paired image of the chosen splits, and the class table copy."""
    if opts["size"] < 0 or opts["aspect"] <= 0 or opts["ab_size"] < 0:
        raise PrepareError(f"--size={opts['size']} --aspect={opts['aspect']} --ab_size={opts['ab_size']}: sizes are "
                           f">= 0 (0: keep / no AB), aspect > 0")
    splits = [s.strip() for s in opts["splits"].split(",") if s.strip()]
    if not splits or any("/" in s for s in splits):
        raise PrepareError(f"--splits={opts['splits']}: comma-separated split folder names, e.g. train,val")
    table, table_bytes = load_table(sources, opts["classes"])
    if opts["osmis"] and table.ids.max() > OSMIS_MAX_ID:
        raise PrepareError(f"--osmis=true: the class table has id {int(table.ids.max())}, but OSMIS reads a mask "
                           f"with values above {OSMIS_MAX_ID} as a binary mask; renumber the classes 0..{OSMIS_MAX_ID}")
    found = [{}, {}]
    for tab, pattern in zip(found, (PHOTO, LABEL)):
        for m, member in find_members(sources, pattern):
            if m["split"] in splits:
                tab[m["split"], m["stem"]] = member
    pairs = pair(found[0], found[1], splits, report, "{split}/images/<stem>.jpg|png", "{split}/labels/<stem>.png")
    jobs = [Job("classes.yaml", ["classes.yaml"], lambda: {"classes.yaml": table_bytes})]
    for split, stem, photo, label in pairs:
        names = [f"{split}/images/{stem}.png", f"{split}/labels/{stem}.png"]
        if opts["ab_size"]:
            names.append(f"pix2pix/{split}/{stem}.jpg")
        if opts["osmis"]:
            names += [f"osmis/{split}/image/{stem}.png", f"osmis/{split}/mask/{stem}.png"]
        jobs.append(Job(f"{split}/{stem}", names, _maker(photo, label, table, opts, names)))
    report.notes.append(f"train: crn --dataroot={report.dst} --data_format=folders --label_format=trainIds "
                        f"--num_classes={int(table.ids.max()) + 1}; pix2pix --dataroot={report.dst}/pix2pix --direction=BtoA")
    if opts["osmis"]:
        report.notes.append(f"train: osmis --dataroot={report.dst}/osmis/<split>")
    return jobs


def _maker(photo_member, label_member, table, opts, names):
    def make():
        photo = decode_image(photo_member)
        ids = table.to_ids(decode_label(label_member), label_member)
        check_same_size(photo, ids, photo_member, label_member)
        out = {names[0]: photo, names[1]: ids}
        if opts["size"]:
            h, w = opts["size"], max(int(round(opts["aspect"] * opts["size"])), 1)
            out = {names[0]: resize_photo(photo, h, w), names[1]: resize_nearest(ids, h, w)}
        if opts["ab_size"]:
            s = opts["ab_size"]
            out[names[2]] = np.concatenate([resize_photo(photo, s, s), table.lut[resize_nearest(ids, s, s)]], axis=1)
        if opts["osmis"]:
            out[names[-2]], out[names[-1]] = out[names[0]], out[names[1]]
        return out
    return make

