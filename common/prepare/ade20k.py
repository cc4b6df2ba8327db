"""ADE20K (SceneParsing, ``ADEChallengeData2016.zip`` or its folder) -> the ``folders`` layout CRN and CoCosNet read:

* ``DST/<split>/images/<stem>.jpg``: the photo, copied byte for byte (``size=0``), or resized (PIL bicubic,
  antialiased) to ``size`` x ``round(aspect * size)`` and stored as ``<stem>.png``;
* ``DST/<split>/labels/<stem>.png``: the annotation's 151 class ids (0 = "other", 1..150 the objectInfo150
  classes), resized with pixel-centre nearest neighbour when ``size`` is set.

``training`` becomes ``train`` and ``validation`` ``val``; photos and annotations are paired by file stem
(``ADE_train_00000001``). Train CRN with ``--data_format=folders --label_format=trainIds --num_classes=151
--aspect=1``; CoCosNet with ``--data_format=folders`` and the reference lists ``DST/ref_train.txt`` and
``DST/ref_val.txt``, which ``scripts/prepare_data.sh ade20k`` adds after this step (``common`` does not
import model folders; see that script's header).
"""
from common.io import resize_nearest, resize_photo
from common.prepare.core import (Job, PrepareError, check_same_size, decode_image, decode_label, find_members,
                                 pair, split_list)

NUM_CLASSES = 151
OPTIONS = {
    "size": (0, "output height (0: keep every image's own size and copy the JPEG photos unchanged)"),
    "aspect": (1.0, "output width / height when size is set"),
    "splits": ("train,val", "comma-separated splits to prepare (train, val)"),
}
SPLIT_NAMES = {"training": "train", "validation": "val"}
PHOTO = r"(?:^|/)images/(?P<split>training|validation)/(?P<stem>[^/]+)\.jpg$"
LABEL = r"(?:^|/)annotations/(?P<split>training|validation)/(?P<stem>[^/]+)\.png$"


def read_ids(member):
    """[H, W] class ids 0..150 of an ADE20K annotation; anything else is a :class:`PrepareError`."""
    ids = decode_label(member)
    if ids.ndim != 2:
        raise PrepareError(f"{member.label}: {ids.shape[2]} channels; ADE20K annotations hold one channel of "
                           f"class ids 0..150 (the SceneParsing release, not the full ADE20K index)")
    if ids.max() >= NUM_CLASSES:
        bad = sorted(set(ids[ids >= NUM_CLASSES].tolist()))
        raise PrepareError(f"{member.label}: class ids {bad[:10]} are outside 0..{NUM_CLASSES - 1}; "
                           f"this is not an ADEChallengeData2016 annotation")
    return ids


def plan(sources, opts, report):
    """Jobs of every paired image of the chosen splits; unpaired files go to ``report.problems``."""
    if opts["size"] < 0 or opts["aspect"] <= 0:
        raise PrepareError(f"--size={opts['size']} --aspect={opts['aspect']}: size >= 0 (0 keeps the size), aspect > 0")
    splits = split_list(opts["splits"], ("train", "val"))
    found = [{}, {}]
    for table, pattern in zip(found, (PHOTO, LABEL)):
        for m, member in find_members(sources, pattern):
            if SPLIT_NAMES[m["split"]] in splits:
                table[SPLIT_NAMES[m["split"]], m["stem"]] = member
    pairs = pair(found[0], found[1], splits, report, "images/training|validation/<stem>.jpg of ADEChallengeData2016",
                 "annotations/training|validation/<stem>.png of ADEChallengeData2016")
    jobs = []
    for split, stem, photo, label in pairs:
        ext = ".png" if opts["size"] else ".jpg"
        names = [f"{split}/images/{stem}{ext}", f"{split}/labels/{stem}.png"]
        jobs.append(Job(stem, names, _maker(photo, label, opts, names)))
    report.notes.append(f"train: crn --dataroot={report.dst} --data_format=folders --label_format=trainIds "
                        f"--num_classes={NUM_CLASSES} --aspect=1; cocosnet --dataroot={report.dst} "
                        f"--data_format=folders (reference lists: bash scripts/prepare_data.sh ade20k)")
    return jobs


def _maker(photo_member, label_member, opts, names):
    def make():
        photo, ids = decode_image(photo_member), read_ids(label_member)
        check_same_size(photo, ids, photo_member, label_member)
        if not opts["size"]:
            return {names[0]: photo_member.read(), names[1]: ids}
        h, w = opts["size"], max(int(round(opts["aspect"] * opts["size"])), 1)
        return {names[0]: resize_photo(photo, h, w), names[1]: resize_nearest(ids, h, w)}
    return make
