"""Cityscapes label tables: the 19 evaluation classes (trainIds), their colours and the labelId mapping.

``LABEL_TO_TRAIN`` maps the 34 Cityscapes labelIds (plus -1, license plate) to trainIds 0..18, with
every other id mapped to ``IGNORE`` (255), as in ``cityscapesScripts/helpers/labels.py``.
"""
import numpy as np

IGNORE = 255

CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
    "bicycle",
)
NUM_CLASSES = len(CLASS_NAMES)

# trainId -> RGB colour of gtFine_color.png
PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
], dtype=np.uint8)

# labelId of each trainId (inverse of the table below)
TRAIN_TO_LABEL = np.array([7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33])

LABEL_TO_TRAIN = np.full(256, IGNORE, dtype=np.uint8)
LABEL_TO_TRAIN[TRAIN_TO_LABEL] = np.arange(NUM_CLASSES, dtype=np.uint8)


def label_ids_to_train_ids(label_ids):
    """[H, W] Cityscapes labelIds (int, -1 allowed) -> [H, W] uint8 trainIds with 255 = ignore."""
    ids = np.asarray(label_ids).astype(np.int64)
    out = np.full(ids.shape, IGNORE, dtype=np.uint8)
    valid = (ids >= 0) & (ids < 256)
    out[valid] = LABEL_TO_TRAIN[ids[valid]]
    return out


def colorize(train_ids, palette=PALETTE):
    """[H, W] trainIds -> [H, W, 3] uint8 colour image; ignore and out-of-table ids are black."""
    ids = np.asarray(train_ids)
    out = np.zeros(ids.shape + (3,), dtype=np.uint8)
    valid = ids < len(palette)
    out[valid] = palette[ids[valid]]
    return out


def color_to_train_ids(color, palette=PALETTE):
    """[H, W, 3] colour label map -> [H, W] uint8 trainIds by exact RGB match; other colours -> 255."""
    color = np.asarray(color, dtype=np.uint8)
    code = (color[..., 0].astype(np.int64) << 16) | (color[..., 1].astype(np.int64) << 8) | color[..., 2]
    keys = (palette[:, 0].astype(np.int64) << 16) | (palette[:, 1].astype(np.int64) << 8) | palette[:, 2]
    out = np.full(code.shape, IGNORE, dtype=np.uint8)
    for train_id, key in enumerate(keys):
        out[code == key] = train_id
    return out
