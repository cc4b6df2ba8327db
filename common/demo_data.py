"""Synthetic streets: a deterministic demo dataset of Cityscapes-like label maps and photo-like images.

Each scene has sky, buildings, vegetation, road, sidewalk, cars and people, labelled in Cityscapes
trainId space and rendered with per-class textures, a shading gradient and sensor noise. The dataset
is written in the on-disk formats the real loaders read, so the demo exercises the real input path:

* pix2pix aligned AB files: ``<root>/pix2pix/{train,val}/<i>.jpg``, photo left, colour label right
  (label->photo is ``direction: BtoA``, as for the paper's Cityscapes set);
* Cityscapes folders: ``<root>/cityscapes/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png``
  and ``gtFine/<split>/<city>/..._gtFine_{labelIds,color}.png``.

The *styled* variant (``ensure_demo_dataset(styled=True)``, for exemplar-based models such as CoCosNet)
renders the same scenes under per-scene colour styles (:data:`STYLES`: noon, sunset, night, sepia), so an
exemplar's palette is something a model can transfer and a metric can measure. Layout:
``<root>/{train,val}/{images,labels}/<stem>.png`` with class ids 1..7 (0 = "other", unused; 8 classes),
``<root>/ref_train.txt`` (``key,easy,hard``: other training scenes of the key's style) and
``<root>/ref_val.txt`` (``key,exemplar``: a training scene of the next style), and ``styles.json``.
The unstyled files above are unchanged by it.
"""
import contextlib
import json
import os
import shutil
import socket
import tempfile
import time

import cv2
import numpy as np

from common import cityscapes as cs
from common.io import atomic_dir, cache_root

__all__ = ["DEMO_CLASSES", "STYLES", "STYLED_LABEL_NC", "render_scene", "stylize", "write_demo_dataset",
           "ensure_demo_dataset"]

ROAD, SIDEWALK, BUILDING, VEGETATION, SKY, PERSON, CAR = 0, 1, 2, 8, 10, 11, 13
DEMO_CLASSES = (ROAD, SIDEWALK, BUILDING, VEGETATION, SKY, PERSON, CAR)
DEMO_VERSION = 1
STYLED_VERSION = 1
# name -> (3x3 colour matrix applied to RGB, RGB offset); every scene of the styled demo has one
STYLES = {
    "noon": (np.eye(3), (0.0, 0.0, 0.0)),
    "sunset": (np.diag((1.15, 0.8, 0.5)), (30.0, 8.0, 0.0)),
    "night": (np.diag((0.3, 0.38, 0.75)), (0.0, 6.0, 30.0)),
    "sepia": (np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]]), (0.0, 0.0, 0.0)),
}
STYLED_LABEL_NC = len(DEMO_CLASSES) + 1  # ids 1..7 for DEMO_CLASSES, 0 = "other"


def _layout(rng, h, w):
    """Paint a random street layout into an [H, W] uint8 trainId map."""
    lab = np.full((h, w), SKY, np.uint8)
    horizon = int(h * rng.uniform(0.38, 0.52))
    vx = int(w * rng.uniform(0.35, 0.65))
    x = 0
    while x < w:
        bw = int(w * rng.uniform(0.08, 0.25))
        top = int(horizon - h * rng.uniform(0.1, 0.4))
        lab[max(top, 0):horizon, x:x + bw] = BUILDING
        x += bw + int(w * rng.uniform(0.0, 0.06))
    for _ in range(rng.randint(1, 4)):
        cx, cy = int(rng.uniform(0, w)), int(horizon - h * rng.uniform(0.02, 0.15))
        cv2.ellipse(lab, (cx, cy), (int(w * rng.uniform(0.04, 0.12)), int(h * rng.uniform(0.06, 0.15))),
                    0, 0, 360, int(VEGETATION), -1)
    lab[horizon:] = SIDEWALK
    half_bottom = int(w * rng.uniform(0.3, 0.45))
    road = np.array([[vx, horizon], [vx + 1, horizon], [w // 2 + half_bottom, h], [w // 2 - half_bottom, h]],
                    np.int32)
    cv2.fillPoly(lab, [road], int(ROAD))
    for _ in range(rng.randint(1, 4)):
        t = rng.uniform(0.15, 0.9)
        cy = int(horizon + t * (h - horizon))
        scale = t * 0.8 + 0.2
        cw, ch = int(w * 0.16 * scale), int(h * 0.1 * scale)
        cx = int(vx + (rng.uniform(-0.6, 0.6) * half_bottom * t))
        cv2.rectangle(lab, (cx - cw // 2, cy - ch), (cx + cw // 2, cy), int(CAR), -1)
    for _ in range(rng.randint(0, 4)):
        t = rng.uniform(0.1, 0.9)
        cy = int(horizon + t * (h - horizon))
        side = rng.choice([-1, 1])
        cx = int(vx + side * (half_bottom * t + w * 0.03))
        ph, pw = int(h * (0.06 + 0.14 * t)), max(int(w * (0.008 + 0.02 * t)), 1)
        cv2.ellipse(lab, (cx, cy - ph // 2), (pw, ph // 2), 0, 0, 360, int(PERSON), -1)
    return lab


def _texture(rng, cls, h, w, yy, xx):
    """[H, W, 3] float texture of one class, values around its base colour (0..255)."""
    base = cs.PALETTE[cls].astype(np.float32)
    photo = {ROAD: (90, 90, 95), SIDEWALK: (150, 140, 135), BUILDING: (140, 110, 95),
             VEGETATION: (60, 110, 45), SKY: (120, 170, 225), PERSON: (170, 60, 60), CAR: (40, 50, 120)}
    col = np.array(photo.get(cls, base), np.float32) * rng.uniform(0.85, 1.15, 3)
    tex = np.broadcast_to(col, (h, w, 3)).copy()
    if cls == SKY:
        tex *= (0.75 + 0.35 * yy / max(h, 1))[..., None]
    elif cls == BUILDING:
        period = max(int(rng.uniform(6, 12) * w / 256), 3)
        windows = ((xx // period) % 2 == 0) & ((yy // period) % 2 == 0)
        tex[windows] *= 0.55
    elif cls == VEGETATION:
        tex *= (0.8 + 0.4 * rng.rand(h, w))[..., None]
    elif cls == ROAD:
        stripes = (np.abs(xx - w / 2) < max(w // 128, 1)) & ((yy // max(h // 16, 1)) % 2 == 0)
        tex[stripes] = (220, 220, 210)
    elif cls == CAR:
        tex[yy % max(h // 24, 2) == 0] *= 1.6
    return tex


def render_scene(seed, height=256, width=256):
    """Render one scene.

    Returns:
        (photo [H, W, 3] uint8 RGB, label [H, W] uint8 trainIds).
    """
    rng = np.random.RandomState(seed)
    lab = _layout(rng, height, width)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.zeros((height, width, 3), np.float32)
    for cls in np.unique(lab):
        mask = lab == cls
        img[mask] = _texture(rng, int(cls), height, width, yy, xx)[mask]
    light = 0.85 + 0.3 * (xx / max(width - 1, 1) if rng.rand() < 0.5 else 1 - xx / max(width - 1, 1))
    img *= light[..., None]
    img = cv2.GaussianBlur(img, (3, 3), 0.7)
    img += rng.normal(0, 4.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), lab


def stylize(photo, style):
    """[H, W, 3] uint8 RGB under the colour style ``style`` (a :data:`STYLES` name) -> [H, W, 3] uint8."""
    matrix, offset = STYLES[style]
    out = photo.astype(np.float64) @ np.asarray(matrix).T + np.asarray(offset)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _write_styled_files(tmp, n_train, n_val, size, seed):
    """Write the styled demo (module doc) into the existing empty folder ``tmp``."""
    names = list(STYLES)
    ids = np.zeros(256, np.uint8)
    ids[list(DEMO_CLASSES)] = np.arange(1, len(DEMO_CLASSES) + 1)
    if n_train < len(names):
        raise ValueError(f"the styled demo needs at least {len(names)} training scenes (one per style); got {n_train}")
    styles = {}
    for split, n, offset in (("train", n_train, 0), ("val", n_val, 100000)):
        for sub in ("images", "labels"):
            os.makedirs(os.path.join(tmp, split, sub))
        for i in range(n):
            photo, lab = render_scene(seed * 1_000_003 + offset + i, size, size)
            stem = f"{split}_{i:04d}"
            styles[stem] = names[i % len(names)]
            cv2.imwrite(os.path.join(tmp, split, "images", stem + ".png"), stylize(photo, styles[stem])[..., ::-1])
            cv2.imwrite(os.path.join(tmp, split, "labels", stem + ".png"), ids[lab])
    k = len(names)
    with open(os.path.join(tmp, "ref_train.txt"), "w") as f:
        for i in range(n_train):
            same = [j for j in range(i % k, n_train, k) if j != i] or [i]
            easy, hard = same[i // k % len(same)], same[(i // k + 1) % len(same)]
            f.write(f"train_{i:04d}.png,train_{easy:04d}.png,train_{hard:04d}.png\n")
    with open(os.path.join(tmp, "ref_val.txt"), "w") as f:
        for i in range(n_val):
            other = [j for j in range(n_train) if j % k == (i + 1) % k]
            f.write(f"val_{i:04d}.png,train_{other[i // k % len(other)]:04d}.png\n")
    with open(os.path.join(tmp, "styles.json"), "w") as f:
        json.dump(styles, f, indent=1)
    with open(os.path.join(tmp, "demo.json"), "w") as f:
        json.dump({"version": STYLED_VERSION, "n_train": n_train, "n_val": n_val, "size": size, "seed": seed,
                   "label_nc": STYLED_LABEL_NC, "styles": names,
                   "classes": ["other"] + [cs.CLASS_NAMES[c] for c in DEMO_CLASSES]}, f, indent=1)


def write_demo_dataset(root, n_train=64, n_val=16, size=256, seed=0):
    """Write the demo dataset under ``root`` (see module doc), replacing it if it exists; returns ``root``."""
    with atomic_dir(root) as tmp:
        _write_files(tmp, n_train, n_val, size, seed)
    return root


def _write_files(tmp, n_train, n_val, size, seed):
    """Write the demo files into the existing empty folder ``tmp``."""
    for split, n, offset in (("train", n_train, 0), ("val", n_val, 100000)):
        ab_dir = os.path.join(tmp, "pix2pix", split)
        city = "demotown" if split == "train" else "testville"
        img_dir = os.path.join(tmp, "cityscapes", "leftImg8bit", split, city)
        gt_dir = os.path.join(tmp, "cityscapes", "gtFine", split, city)
        for d in (ab_dir, img_dir, gt_dir):
            os.makedirs(d)
        for i in range(n):
            photo, lab = render_scene(seed * 1_000_003 + offset + i, size, 2 * size)
            color = cs.colorize(lab)
            photo_sq = cv2.resize(photo, (size, size), interpolation=cv2.INTER_AREA)
            color_sq = cv2.resize(color, (size, size), interpolation=cv2.INTER_NEAREST)
            ab = np.concatenate([photo_sq, color_sq], axis=1)
            cv2.imwrite(os.path.join(ab_dir, f"{i + 1}.jpg"), ab[..., ::-1],
                        [cv2.IMWRITE_JPEG_QUALITY, 100])
            stem = f"{city}_{0:06d}_{i:06d}"
            cv2.imwrite(os.path.join(img_dir, f"{stem}_leftImg8bit.png"), photo[..., ::-1])
            cv2.imwrite(os.path.join(gt_dir, f"{stem}_gtFine_labelIds.png"), cs.TRAIN_TO_LABEL[lab].astype(np.uint8))
            cv2.imwrite(os.path.join(gt_dir, f"{stem}_gtFine_color.png"), color[..., ::-1])
    with open(os.path.join(tmp, "demo.json"), "w") as f:
        json.dump({"version": DEMO_VERSION, "n_train": n_train, "n_val": n_val, "size": size,
                   "seed": seed, "classes": [cs.CLASS_NAMES[c] for c in DEMO_CLASSES]}, f, indent=1)


def _lock_owner(lock):
    """(host, pid) written in a lock file, or None if it is unreadable (being written or gone)."""
    try:
        with open(lock) as f:
            host, pid = f.read().split()
        return host, int(pid)
    except (OSError, ValueError):
        return None


def _stale(lock):
    """True if ``lock`` was taken by a process of this host that no longer runs."""
    owner = _lock_owner(lock)
    if owner is None or owner[0] != socket.gethostname():
        return False
    try:
        os.kill(owner[1], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def ensure_demo_dataset(cache_dir=None, n_train=64, n_val=16, size=256, seed=0, wait_s=1800.0, *, styled=False):
    """Return the demo dataset folder, generating it once into ``cache_dir``.

    ``styled=True``: the styled variant for exemplar-based models (module doc) in its own folder.

    ``cache_dir`` defaults to ``$SYNTHZOO_CACHE`` or ``~/.cache/synthzoo``. A folder made with other
    settings is kept beside it under its own name.

    Safe when several processes (msrun ranks, parallel jobs) call it at once: the one that creates the
    lock file ``<folder>.lock`` generates the data into a temporary folder and renames it into place;
    the others wait for the finished folder (its ``demo.json``) for up to ``wait_s`` seconds. A
    finished folder is never deleted, and a lock left by a dead process of this host is taken over.
    """
    cache_dir = cache_dir or cache_root()
    kind = f"demo_styled_streets_v{STYLED_VERSION}" if styled else f"demo_streets_v{DEMO_VERSION}"
    root = os.path.join(cache_dir, f"{kind}_{size}px_{n_train}x{n_val}_s{seed}")
    marker, lock = os.path.join(root, "demo.json"), root + ".lock"
    deadline = time.monotonic() + wait_s
    waiting = False
    while not os.path.isfile(marker):
        os.makedirs(cache_dir, exist_ok=True)
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if _stale(lock):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(lock)
                continue
            if time.monotonic() > deadline:
                owner = _lock_owner(lock)
                who = f"pid {owner[1]} on {owner[0]}" if owner else "unknown"
                raise TimeoutError(f"waited {wait_s:.0f} s for another process ({who}) to generate the demo "
                                   f"dataset {root}; if no such process is running, delete the lock file {lock} "
                                   f"and start again")
            if not waiting:
                print(f"[synthzoo] waiting for another process to generate the demo dataset {root} ...", flush=True)
                waiting = True
            time.sleep(0.2)
            continue
        try:
            with os.fdopen(fd, "w") as f:
                f.write(f"{socket.gethostname()} {os.getpid()}\n")
            if not os.path.isfile(marker):
                _generate(root, n_train, n_val, size, seed, _write_styled_files if styled else _write_files)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(lock)
    return root


def _generate(root, n_train, n_val, size, seed, write):
    """Write the dataset (``write(tmp, n_train, n_val, size, seed)``) into a temporary sibling and rename it
    to ``root``; never replaces a folder."""
    if os.path.exists(root):
        raise FileExistsError(f"{root} exists but is not a finished demo dataset (no demo.json); "
                              f"delete it and start again")
    print(f"[synthzoo] generating the synthetic-streets demo dataset into {root} ...", flush=True)
    tmp = tempfile.mkdtemp(prefix=".tmp_demo_", dir=os.path.dirname(root))
    try:
        write(tmp, n_train, n_val, size, seed)
        os.rename(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.isfile(os.path.join(root, "demo.json")):
            raise
