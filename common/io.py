"""Image and file IO with clear errors, atomic writes and result pages."""
import contextlib
import html
import os
import shutil
import tempfile

import cv2
import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "list_images", "read_image", "read_label", "write_image", "atomic_dir",
           "atomic_file", "tensor_to_uint8", "make_grid", "write_html"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def list_images(folder, what="image folder"):
    """Sorted image paths in ``folder`` (numeric names sort numerically); error if missing or empty."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{what} {folder} does not exist; check the path in your config "
                                f"(or leave it empty to use the built-in demo data)")
    names = [n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS)]
    if not names:
        raise FileNotFoundError(f"{what} {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")

    def key(name):
        stem = os.path.splitext(name)[0]
        return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)
    return [os.path.join(folder, n) for n in sorted(names, key=key)]


def read_image(path):
    """Read an image file as [H, W, 3] uint8 RGB; error naming the file if it cannot be decoded."""
    data = np.fromfile(path, dtype=np.uint8) if os.path.isfile(path) else None
    if data is None:
        raise FileNotFoundError(f"image file {path} does not exist")
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise ValueError(f"cannot decode image file {path}: it is empty, truncated or not an image; "
                         f"remove or replace it")
    return img[..., ::-1].copy()


def read_label(path):
    """Read a single-channel label map as [H, W] integer array (8 or 16 bit kept as is)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"label file {path} does not exist")
    data = np.fromfile(path, dtype=np.uint8)
    lab = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if lab is None:
        raise ValueError(f"cannot decode label file {path}: it is empty, truncated or not an image")
    if lab.ndim == 3:
        raise ValueError(f"label file {path} has {lab.shape[2]} channels; expected a single-channel id map "
                         f"(for colour label maps convert with common.cityscapes.color_to_train_ids)")
    return lab


@contextlib.contextmanager
def atomic_dir(final_path):
    """Build a folder in a temporary sibling and move it to ``final_path`` only if the block succeeds."""
    parent = os.path.dirname(os.path.abspath(final_path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp_", dir=parent)
    try:
        yield tmp
        if os.path.isdir(final_path):
            shutil.rmtree(final_path)
        os.replace(tmp, final_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(final_path):
    """Yield a temporary path; it replaces ``final_path`` only if the block succeeds."""
    parent = os.path.dirname(os.path.abspath(final_path))
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=os.path.splitext(final_path)[1], dir=parent)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, final_path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_image(path, rgb):
    """Write [H, W, 3] uint8 RGB (or [H, W]) atomically; the format follows the extension."""
    arr = np.asarray(rgb)
    if arr.ndim == 3:
        arr = arr[..., ::-1]
    ext = os.path.splitext(path)[1] or ".png"
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(arr))
    if not ok:
        raise ValueError(f"cannot encode an image of shape {arr.shape} as {ext} for {path}")
    with atomic_file(path) as tmp:
        buf.tofile(tmp)


def tensor_to_uint8(x, value_range=(-1.0, 1.0)):
    """[C, H, W] or [B, C, H, W] float array in ``value_range`` -> [..., H, W, C] uint8."""
    x = np.asarray(x, dtype=np.float32)
    lo, hi = value_range
    x = (np.clip(x, lo, hi) - lo) / (hi - lo) * 255.0
    return np.rint(np.moveaxis(x, -3, -1)).astype(np.uint8)


def make_grid(rows, pad=2):
    """Stack rows of equally-sized [H, W, 3] uint8 images into one image with ``pad`` white pixels."""
    h, w = rows[0][0].shape[:2]
    n_cols = max(len(r) for r in rows)
    grid = np.full((len(rows) * (h + pad) + pad, n_cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            if img.ndim == 2:
                img = np.repeat(img[..., None], 3, axis=2)
            if img.shape[:2] != (h, w):
                img = cv2.resize(img, (w, h), interpolation=cv2.INTER_NEAREST)
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            grid[y:y + h, x:x + w] = img
    return grid


def write_html(path, title, header, rows):
    """Write a result page: ``rows`` are lists of image paths (relative to the page) or text cells."""
    cells = []
    for row in rows:
        tds = []
        for c in row:
            if isinstance(c, str) and c.lower().endswith(IMAGE_EXTENSIONS):
                tds.append(f'<td><img src="{html.escape(c)}" width="256"><br>{html.escape(os.path.basename(c))}</td>')
            else:
                tds.append(f"<td>{html.escape(str(c))}</td>")
        cells.append("<tr>" + "".join(tds) + "</tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body><h2>{html.escape(title)}</h2><table border='1'><tr>{head}</tr>{''.join(cells)}</table>"
            f"</body></html>\n")
    with atomic_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(page)
