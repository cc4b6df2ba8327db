"""Cityscapes: ``gtFine_trainvaltest.zip`` + ``leftImg8bit_trainvaltest.zip`` (or their extracted folders) ->

* ``DST/leftImg8bit/<split>/<city>/<frame>_leftImg8bit.png``: the photo, ``size`` x ``2*size`` (PIL bicubic,
  antialiased: :func:`common.io.resize_photo`);
* ``DST/gtFine/<split>/<city>/<frame>_gtFine_{labelIds,labelTrainIds,color}.png``: the labelIds (pixel-centre
  nearest neighbour), the 19 trainIds with 255 = void (:data:`common.cityscapes.LABEL_TO_TRAIN`) and the colour
  rendering of the labelIds (the gtFine colour table). This is the layout CRN reads with
  ``data_format=cityscapes`` (any ``label_format``);
* ``DST/fcn_labels/val/<city>/<frame>_gtFine_labelIds.png``: the val labelIds at the source resolution, the
  FCN-score's ``fcn_label_dir`` (the pix2pix protocol scores generated images resized to the full-resolution
  labels; ``DST/gtFine/val`` scores at the prepared size instead);
* ``DST/pix2pix/<split>/<frame>.jpg``: pix2pix AB pairs at ``ab_size`` x ``ab_size`` per half, photo left and
  colour label right, as the reference ``datasets/prepare_cityscapes_dataset.py`` makes them (JPEG quality 100,
  4:4:4; label -> photo is pix2pix's ``direction=BtoA``). Frame-id names let the FCN-score match each result
  to its labels.

Photos and labels are paired by frame id (``<city>_<seq>_<frame>``). Labels are read from
``*_gtFine_labelIds.png`` or, with ``--label_source=color``, from ``*_gtFine_color.png`` mapped back to labelIds
(the colour -> label step of the CRN reference's ``semantic2labels``; colours shared by several labelIds
take the first, which has the same trainId).
"""
import numpy as np

from common import cityscapes as cs
from common.io import resize_nearest, resize_photo
from common.prepare.core import (Job, PrepareError, check_same_size, decode_image, decode_label, find_members,
                                 pair, split_list)

OPTIONS = {
    "size": (256, "photo/label height; width = 2 * size (256, 512 or 1024; 1024 keeps the full resolution)"),
    "splits": ("train,val", "comma-separated splits to prepare (train, val, test; test labels are dummies)"),
    "label_source": ("labelIds", "labelIds: read *_gtFine_labelIds.png; color: read *_gtFine_color.png"),
    "ab_size": (256, "side of each half of the pix2pix AB images (0: no pix2pix folder)"),
}

# labelId -> colour of gtFine_color.png (cityscapesScripts helpers/labels.py, ids 0..33)
LABEL_COLORS = np.array([
    (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (111, 74, 0), (81, 0, 81), (128, 64, 128),
    (244, 35, 232), (250, 170, 160), (230, 150, 140), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (180, 165, 180), (150, 100, 100), (150, 120, 90), (153, 153, 153), (153, 153, 153), (250, 170, 30),
    (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142),
    (0, 0, 70), (0, 60, 100), (0, 0, 90), (0, 0, 110), (0, 80, 100), (0, 0, 230), (119, 11, 32),
], dtype=np.uint8)
NUM_LABEL_IDS = len(LABEL_COLORS)

PHOTO = r"(?:^|/)leftImg8bit/(?P<split>[^/]+)/(?P<city>[^/]+)/(?P<frame>[^/]+)_leftImg8bit\.png$"
LABEL = r"(?:^|/)gtFine/(?P<split>[^/]+)/(?P<city>[^/]+)/(?P<frame>[^/]+)_gtFine_{}\.png$"


def color_to_label_ids(color, member):
    """[H, W, 3] gtFine colour map -> [H, W] uint8 labelIds; an unknown colour is a :class:`PrepareError`."""
    code = (color[..., 0].astype(np.int64) << 16) | (color[..., 1].astype(np.int64) << 8) | color[..., 2]
    keys = (LABEL_COLORS[:, 0].astype(np.int64) << 16) | (LABEL_COLORS[:, 1].astype(np.int64) << 8) | LABEL_COLORS[:, 2]
    uniq, first = np.unique(keys, return_index=True)
    pos = np.clip(np.searchsorted(uniq, code), 0, len(uniq) - 1)
    unknown = uniq[pos] != code
    if unknown.any():
        bad = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in np.unique(code[unknown])[:5].tolist()]
        raise PrepareError(f"{member.label}: colours {bad} are not in the Cityscapes gtFine colour table; "
                           f"use --label_source=labelIds or replace the file")
    return first[pos].astype(np.uint8)


def read_label_ids(member, label_source):
    """[H, W] uint8 labelIds of a gtFine label file; ids above 33 are a :class:`PrepareError`."""
    lab = decode_label(member)
    if label_source == "color":
        if lab.ndim != 3:
            raise PrepareError(f"{member.label}: a single-channel image, not a colour map")
        return color_to_label_ids(lab, member)
    if lab.ndim != 2:
        raise PrepareError(f"{member.label}: {lab.shape[2]} channels; *_gtFine_labelIds.png holds one channel of "
                           f"labelIds (for colour maps use --label_source=color)")
    if lab.max() >= NUM_LABEL_IDS:
        bad = np.unique(lab[lab >= NUM_LABEL_IDS])
        raise PrepareError(f"{member.label}: label ids {bad[:10].tolist()} are not Cityscapes labelIds "
                           f"(0..{NUM_LABEL_IDS - 1}); is this a trainIds or instanceIds file?")
    return lab.astype(np.uint8)


def make_frame(photo_member, label_member, opts):
    """All outputs of one frame: {'photo', 'labelIds', 'trainIds', 'color', 'ab', 'fcn'} arrays."""
    photo = decode_image(photo_member)
    ids = read_label_ids(label_member, opts["label_source"])
    check_same_size(photo, ids, photo_member, label_member)
    h, w = opts["size"], 2 * opts["size"]
    small_ids = resize_nearest(ids, h, w)
    out = {"photo": resize_photo(photo, h, w), "labelIds": small_ids, "trainIds": cs.LABEL_TO_TRAIN[small_ids],
           "color": LABEL_COLORS[small_ids], "fcn": ids}
    if opts["ab_size"]:
        s = opts["ab_size"]
        out["ab"] = np.concatenate([resize_photo(photo, s, s), LABEL_COLORS[resize_nearest(ids, s, s)]], axis=1)
    return out


def plan(sources, opts, report):
    """Jobs of every paired frame of the chosen splits; unpaired files go to ``report.problems``."""
    if opts["size"] <= 0:
        raise PrepareError(f"--size={opts['size']}: give the output height, e.g. 256 (256x512)")
    if opts["label_source"] not in ("labelIds", "color"):
        raise PrepareError(f"--label_source={opts['label_source']}: choose labelIds or color")
    splits = split_list(opts["splits"], ("train", "val", "test"))
    photos, labels, cities = {}, {}, {}
    for m, member in find_members(sources, PHOTO):
        if m["split"] in splits:
            photos[m["split"], m["frame"]] = member
            cities[m["split"], m["frame"]] = m["city"]
    for m, member in find_members(sources, LABEL.format(opts["label_source"])):
        if m["split"] in splits:
            labels[m["split"], m["frame"]] = member
    suffix = f"_gtFine_{opts['label_source']}.png"
    pairs = pair(photos, labels, splits, report,
                 "leftImg8bit/{split}/<city>/<frame>_leftImg8bit.png, from leftImg8bit_trainvaltest.zip",
                 "gtFine/{split}/<city>/<frame>%s, from gtFine_trainvaltest.zip" % suffix)
    jobs = []
    for split, frame, photo_member, label_member in pairs:
        city = cities[split, frame]
        stem = f"{split}/{city}/{frame}"
        names = {"photo": f"leftImg8bit/{stem}_leftImg8bit.png", "labelIds": f"gtFine/{stem}_gtFine_labelIds.png",
                 "trainIds": f"gtFine/{stem}_gtFine_labelTrainIds.png", "color": f"gtFine/{stem}_gtFine_color.png"}
        if opts["ab_size"]:
            names["ab"] = f"pix2pix/{split}/{frame}.jpg"
        if split == "val":
            names["fcn"] = f"fcn_labels/val/{city}/{frame}_gtFine_labelIds.png"
        jobs.append(Job(frame, list(names.values()), _maker(photo_member, label_member, opts, names)))
    pix2pix = f"; pix2pix --dataroot={report.dst}/pix2pix --direction=BtoA" if opts["ab_size"] else ""
    report.notes.append(f"train: crn --dataroot={report.dst} (label_format labelIds, trainIds or color){pix2pix}; "
                        f"FCN-score: --fcn_label_dir={report.dst}/fcn_labels/val")
    return jobs


def _maker(photo_member, label_member, opts, names):
    def make():
        arrays = make_frame(photo_member, label_member, opts)
        return {names[k]: arrays[k] for k in names}
    return make
