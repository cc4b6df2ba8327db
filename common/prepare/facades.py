"""CMP facades as distributed for pix2pix (``facades.tar.gz`` or its folder) -> ``DST/<split>/<name>.jpg``.

The release already holds aligned AB images (photo left, label colours right, 512x256); each is checked (it
decodes and is exactly twice as wide as high, as :class:`pix2pix.src.dataset.AlignedDataset` requires) and
copied byte for byte. Train pix2pix with ``--dataroot={report.dst} --direction=BtoA``.
"""
from common.prepare.core import Job, PrepareError, decode_image, find_members, split_list

OPTIONS = {
    "splits": ("train,val,test", "comma-separated splits to copy (train, val, test)"),
}
AB = r"(?:^|/)(?P<split>train|val|test)/(?P<name>[^/]+\.(?:jpg|jpeg|png))$"


def plan(sources, opts, report):
    """One copy job per AB image of the chosen splits; a split with no images is a problem."""
    splits = split_list(opts["splits"], ("train", "val", "test"))
    found = [(m, member) for m, member in find_members(sources, AB) if m["split"] in splits]
    for split in splits:
        if not any(m["split"] == split for m, _ in found):
            report.problems.append(f"no {split}/<n>.jpg AB images in the sources; pass facades.tar.gz (from the "
                                   f"pix2pix datasets) or its extracted facades/ folder")
    report.notes.append(f"train: pix2pix --dataroot={report.dst} --direction=BtoA")
    return [Job(member.label, [f"{m['split']}/{m['name']}"], _maker(member, f"{m['split']}/{m['name']}"))
            for m, member in found]


def _maker(member, name):
    def make():
        ab = decode_image(member)
        h, w = ab.shape[:2]
        if w != 2 * h:
            raise PrepareError(f"{member.label} is {w}x{h}; a facades AB image is twice as wide as high (photo | "
                               f"label, 512x256): replace it or download facades.tar.gz again")
        return {name: member.read()}
    return make
