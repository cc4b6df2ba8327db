"""A custom dataset: photos, label PNGs and a class table -> the layouts CRN, CoCosNet, pix2pix and OSMIS read.

Source (a folder or an archive of it)::

    classes.yaml                  # or --classes=PATH
    <split>/images/<stem>.jpg|png
    <split>/labels/<stem>.png     # class ids (single channel), or colour maps using the table's colours

``classes.yaml`` is a class table (``common/classes.py``): a list (or a ``classes:`` list) of
``{id: 0, name: road, color: [128, 64, 128]}`` entries, ids 0..N-1, unique names and colours. Output::

    DST/classes.yaml                # the table, rewritten by common.classes.dump_class_table; a copy also
                                    # in DST/pix2pix and each DST/osmis/<split>, so that every model finds
                                    # it as <dataroot>/classes.yaml (config key class_table)
    DST/<split>/images/<stem>.png   # photo (PIL bicubic, antialiased, when size is set)
    DST/<split>/labels/<stem>.png   # class ids (8-bit, or 16-bit past 256 classes), nearest neighbour
    DST/pix2pix/<split>/<stem>.jpg  # photo | label colours, ab_size x ab_size per half (ab_size > 0)
    DST/osmis/<split>/image/<stem>.png, DST/osmis/<split>/mask/<stem>.png   # the photo and its class ids
                                    # again, in the layout OSMIS reads (osmis=true)

Every label pixel must be a table id (or colour); anything else is reported with the file and the values.
"""
import numpy as np

from common.classes import CLASS_TABLE_FILE, ClassTableError, dump_class_table, parse_class_table
from common.io import resize_nearest, resize_photo
from common.prepare.core import (Job, PrepareError, check_same_size, decode_image, decode_label, find_members, pair)

__all__ = ["OPTIONS", "load_table", "plan"]

OPTIONS = {
    "classes": ("", "class table YAML (empty: classes.yaml in SRC)"),
    "size": (0, "output height (0: keep each image's size)"),
    "aspect": (1.0, "output width / height when size is set"),
    "splits": ("train,val", "comma-separated splits to prepare"),
    "ab_size": (256, "side of each half of the pix2pix AB images (0: no pix2pix folder)"),
    "osmis": (False, "also write DST/osmis/<split>/image and mask (OSMIS --dataroot=DST/osmis/<split>)"),
}
PHOTO = r"(?:^|/)(?P<split>[^/]+)/images/(?P<stem>[^/]+)\.(?:jpg|jpeg|png|bmp|tif|tiff|webp)$"
LABEL = r"(?:^|/)(?P<split>[^/]+)/labels/(?P<stem>[^/]+)\.png$"


def load_table(sources, path):
    """The :class:`common.classes.ClassTable` of ``path`` or of the shallowest ``classes.yaml`` in the sources."""
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
        return parse_class_table(data, where)
    except ClassTableError as err:
        raise PrepareError(str(err)) from None


def plan(sources, opts, report):
    """Jobs of every paired image of the chosen splits, and the class table copies."""
    if opts["size"] < 0 or opts["aspect"] <= 0 or opts["ab_size"] < 0:
        raise PrepareError(f"--size={opts['size']} --aspect={opts['aspect']} --ab_size={opts['ab_size']}: sizes are "
                           f">= 0 (0: keep / no AB), aspect > 0")
    splits = [s.strip() for s in opts["splits"].split(",") if s.strip()]
    if not splits or any("/" in s for s in splits):
        raise PrepareError(f"--splits={opts['splits']}: comma-separated split folder names, e.g. train,val")
    table = load_table(sources, opts["classes"])
    found = [{}, {}]
    for tab, pattern in zip(found, (PHOTO, LABEL)):
        for m, member in find_members(sources, pattern):
            if m["split"] in splits:
                tab[m["split"], m["stem"]] = member
    pairs = pair(found[0], found[1], splits, report, "{split}/images/<stem>.jpg|png", "{split}/labels/<stem>.png")
    tables = [CLASS_TABLE_FILE] + ([f"pix2pix/{CLASS_TABLE_FILE}"] if opts["ab_size"] else []) \
        + ([f"osmis/{split}/{CLASS_TABLE_FILE}" for split in splits] if opts["osmis"] else [])
    text = dump_class_table(table).encode()
    jobs = [Job(CLASS_TABLE_FILE, tables, lambda: dict.fromkeys(tables, text))]
    for split, stem, photo, label in pairs:
        names = [f"{split}/images/{stem}.png", f"{split}/labels/{stem}.png"]
        if opts["ab_size"]:
            names.append(f"pix2pix/{split}/{stem}.jpg")
        if opts["osmis"]:
            names += [f"osmis/{split}/image/{stem}.png", f"osmis/{split}/mask/{stem}.png"]
        jobs.append(Job(f"{split}/{stem}", names, _maker(photo, label, table, opts, names)))
    report.notes.append(f"train: crn --dataroot={report.dst} --data_format=folders --label_format=trainIds; cocosnet "
                        f"--dataroot={report.dst} --data_format=folders; pix2pix --dataroot={report.dst}/pix2pix "
                        f"--direction=BtoA (the {table.num_classes} classes of {CLASS_TABLE_FILE} are read from the "
                        f"dataroot)")
    if opts["osmis"]:
        report.notes.append(f"train: osmis --dataroot={report.dst}/osmis/<split>")
    return jobs


def _maker(photo_member, label_member, table, opts, names):
    def make():
        photo = decode_image(photo_member)
        try:
            ids = table.to_ids(decode_label(label_member), label_member.label)
        except ClassTableError as err:
            raise PrepareError(str(err)) from None
        ids = ids.astype(np.uint8 if table.num_classes <= 256 else np.uint16)
        check_same_size(photo, ids, photo_member, label_member)
        out = {names[0]: photo, names[1]: ids}
        if opts["size"]:
            h, w = opts["size"], max(int(round(opts["aspect"] * opts["size"])), 1)
            out = {names[0]: resize_photo(photo, h, w), names[1]: resize_nearest(ids, h, w)}
        if opts["ab_size"]:
            s = opts["ab_size"]
            out[names[2]] = np.concatenate([resize_photo(photo, s, s), table.colors[resize_nearest(ids, s, s)]], axis=1)
        if opts["osmis"]:
            out[names[-2]], out[names[-1]] = out[names[0]], out[names[1]]
        return out
    return make

