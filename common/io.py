"""Image and file IO with clear errors, atomic writes and result pages."""
import contextlib
import html
import io
import os
import shutil
import tempfile

import cv2
import numpy as np
from PIL import Image

__all__ = ["IMAGE_EXTENSIONS", "list_images", "read_image", "read_label", "image_header", "check_image_complete", "check_image_pair",
           "check_lossless_label",
           "resize_photo", "resize_nearest", "write_image", "atomic_dir", "atomic_file", "cache_root", "tensor_to_uint8", "make_grid", "write_html"]

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


def _decode_error(path, detail):
    return ValueError(f"cannot decode image file {path}: truncated or corrupt image ({detail}); "
                      f"re-export or remove it")


def _jpeg_missing_end(buf):
    """Why the JPEG bytes ``buf`` end before their EOI marker, or None if the stream is complete.

    Walks the marker segments (APPn, tables, SOF, SOS, ...) by their lengths and each scan's
    entropy-coded data up to the next marker (``FF 00`` stuffing and ``FF D0..D7`` restarts belong to
    the scan), so an embedded EXIF thumbnail's EOI does not count and bytes after EOI are ignored.
    """
    n, pos = len(buf), 2
    while True:
        if pos + 2 > n:
            return f"the file ends after {n} bytes, before the end-of-image marker"
        if buf[pos] != 0xFF:
            return f"no JPEG marker at byte {pos}"
        marker = buf[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker == 0xD9:
            return None
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if pos + 4 > n:
            return f"the file ends after {n} bytes, inside a marker segment"
        pos += 2 + ((buf[pos + 2] << 8) | buf[pos + 3])
        if marker != 0xDA:
            continue
        while True:
            pos = buf.find(b"\xff", pos)
            if pos < 0 or pos + 1 >= n:
                return f"the file ends after {n} bytes, inside the compressed image data"
            nxt = buf[pos + 1]
            if nxt == 0x00 or 0xD0 <= nxt <= 0xD7 or nxt == 0xFF:
                pos += 1 if nxt == 0xFF else 2
                continue
            break


def _png_missing_end(buf):
    """Why the PNG bytes ``buf`` end before their IEND chunk, or None if every chunk is complete."""
    n, pos = len(buf), 8
    while True:
        if pos + 12 > n:
            return f"the file ends after {n} bytes, before the IEND chunk"
        length = int.from_bytes(buf[pos:pos + 4], "big")
        kind = buf[pos + 4:pos + 8]
        pos += 12 + length
        if pos > n:
            return f"the file ends after {n} bytes, inside a {kind.decode('latin-1')} chunk"
        if kind == b"IEND":
            return None


_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def _missing_end(head, tail, read_all):
    """Truncation check of a JPEG or PNG from its first and last bytes; the full walk only if those fail."""
    if head[:2] == b"\xff\xd8":
        if tail.rstrip(b"\x00")[-2:] == b"\xff\xd9":
            return None
        return _jpeg_missing_end(read_all())
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        if tail[-12:] == _PNG_END:
            return None
        return _png_missing_end(read_all())
    return None


def check_image_complete(path, data=None):
    """Raise ``ValueError`` naming ``path`` if its JPEG or PNG stream is truncated; other formats pass.

    Cheap: the first and last bytes decide for well-formed files (``data``: the file's ``bytes``, if
    already read); only a file that does not end with its end marker is walked in full, which also
    accepts files with trailing bytes after the image (camera trailers).
    """
    if data is None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image file {path} does not exist")
        with open(path, "rb") as f:
            head = f.read(8)
            f.seek(max(os.fstat(f.fileno()).st_size - 64, 0))
            tail = f.read()

        def read_all():
            with open(path, "rb") as f:
                return f.read()
    else:
        head, tail = data[:8], data[-64:]

        def read_all():
            return data
    problem = _missing_end(head, tail, read_all)
    if problem is not None:
        raise _decode_error(path, problem)


def image_header(path, *, palette_indices=False):
    """(width, height, channels) of an image file from its header, without decoding the pixels.

    ``channels`` is 1 for grey/id maps (8 or 16 bit), 3 for RGB and palette images, 4 with alpha; with
    ``palette_indices`` a palette image counts as 1 (its indices, as :func:`read_label` reads them).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file {path} does not exist")
    try:
        with Image.open(path) as im:
            size, mode = im.size, im.mode
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise _decode_error(path, f"unreadable header: {e}") from None
    if mode == "P":
        return size[0], size[1], 1 if palette_indices else 3
    return size[0], size[1], Image.getmodebands(mode)


_JPEG_MAGIC = b"\xff\xd8\xff"


def check_lossless_label(path, head=None):
    """Raise ``ValueError`` naming ``path`` if the label map is a JPEG file (``head``: its first bytes, if read).

    JPEG's lossy compression changes pixel values at class borders (a border between ids 1 and 7 gains 2..6,
    a colour border gains colours that are no class), so the ids read are not the ones drawn: label maps
    must be stored losslessly (PNG).
    """
    if head is None:
        with open(path, "rb") as f:
            head = f.read(3)
    if bytes(head[:3]) == _JPEG_MAGIC:
        raise ValueError(f"label map {path} is a JPEG file: JPEG compression changes the pixel values at class "
                         f"borders, so its class ids (or colours) are not the ones drawn; save label maps as PNG "
                         f"(lossless) and use that file")


def check_image_pair(image_path, label_path, *, colour_labels=False, fix=""):
    """Check a (photo, label map) pair from headers and last bytes, without decoding pixels.

    Both files must be complete image streams (:func:`check_image_complete`), the label map must have the
    photo's width and height, be stored losslessly (not JPEG: :func:`check_lossless_label`), and have one
    channel (class ids; a palette PNG's indices count) or, with ``colour_labels``, at least three (colour-coded).
    Raises ``ValueError``/``FileNotFoundError`` naming the file; ``fix`` (the dataset's remedy, e.g. the option to
    pass instead) ends a channel error.
    """
    check_image_complete(image_path)
    check_image_complete(label_path)
    check_lossless_label(label_path)
    iw, ih, _ = image_header(image_path)
    lw, lh, lc = image_header(label_path, palette_indices=not colour_labels)
    if (lw, lh) != (iw, ih):
        raise ValueError(f"label map {label_path} is {lw}x{lh} but its photo {image_path} is {iw}x{ih}; label maps "
                         f"must have the photo's size")
    tail = f". {fix}" if fix else ""
    if colour_labels and lc < 3:
        raise ValueError(f"label file {label_path} has {lc} channel; expected a colour-coded label image{tail}")
    if not colour_labels and lc != 1:
        raise ValueError(f"label file {label_path} has {lc} channels (colour or palette image); expected a "
                         f"single-channel class-id map{tail}")


def _read_bytes(path, what):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file {path} " + ("is a folder" if os.path.isdir(path) else "does not exist"))
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise _decode_error(path, "the file is empty")
    check_image_complete(path, data)
    return np.frombuffer(data, np.uint8)


def read_image(path):
    """Read an image file as [H, W, 3] uint8 RGB; error naming the file if it is truncated or cannot be decoded."""
    img = cv2.imdecode(_read_bytes(path, "image"), cv2.IMREAD_COLOR)
    if img is None:
        raise _decode_error(path, "not an image OpenCV can read")
    return img[..., ::-1].copy()


def read_label(path, *, fix="For colour-coded labels (Cityscapes *_gtFine_color.png) pass --label_format=color"):
    """Read a single-channel label map as [H, W] integer array (8 or 16 bit kept as is; a palette PNG gives its
    indices, as PIL and the reference loaders read VOC/ADE-style palette label maps); ``fix`` ends the error for a
    colour image. A JPEG file is an error (:func:`check_lossless_label`)."""
    data = _read_bytes(path, "label")
    check_lossless_label(path, data[:3].tobytes())
    indices = _palette_indices(data)
    if indices is not None:
        return indices
    lab = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if lab is None:
        raise _decode_error(path, "not an image OpenCV can read")
    if lab.ndim == 3:
        raise ValueError(f"label file {path} has {lab.shape[2]} channels; expected a single-channel id map. {fix}")
    return lab


def _palette_indices(data):
    """[H, W] uint8 palette indices of a palette image's file bytes ``data`` (OpenCV would expand them to the
    palette's colours), or None for any other image."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im).copy() if im.mode == "P" else None


_PIL_FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}


def resize_photo(rgb, height, width, *, method="bicubic"):
    """[H, W, 3] (or [H, W]) uint8 -> [height, width, ...] uint8 through PIL, as the reference loaders resize
    (torchvision's ``Resize`` on a PIL image: pix2pix and CoCosNet bicubic, OSMIS bilinear).

    PIL widens the filter by the reduction factor when it shrinks (area-weighted), so downscaling is antialiased,
    like torchvision's ``antialias=True``; OpenCV's ``INTER_CUBIC`` / ``INTER_LINEAR`` sample only the nearest
    4x4 / 2x2 source pixels and alias (one-pixel stripes shrunk 3x keep their full contrast). No
    ``reducing_gap`` shortcut is used. The same size returns the input.
    """
    if rgb.shape[:2] == (height, width):
        return rgb
    if method not in _PIL_FILTERS:
        raise ValueError(f"method={method!r}: choose one of {sorted(_PIL_FILTERS)}")
    return np.asarray(Image.fromarray(rgb).resize((width, height), _PIL_FILTERS[method]))


def resize_nearest(ids, height, width):
    """[H, W, ...] -> [height, width, ...] by pixel-centre nearest neighbour: output pixel (i, j) takes input
    pixel (floor((i + 0.5) * H / height), floor((j + 0.5) * W / width)), as PIL's NEAREST does (OpenCV's
    ``INTER_NEAREST`` takes floor(i * H / height), shifting labels against their bicubic photo). Any dtype:
    label ids, index or colour masks."""
    h, w = ids.shape[:2]
    if (h, w) == (height, width):
        return ids
    rows = ((np.arange(height) + 0.5) * h / height).astype(np.int64)
    cols = ((np.arange(width) + 0.5) * w / width).astype(np.int64)
    return ids[rows][:, cols]


def _process_umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _process_umask()  # read once, at import: os.umask can only be read by setting it


@contextlib.contextmanager
def atomic_dir(final_path):
    """Build a folder in a temporary sibling and move it to ``final_path`` only if the block succeeds. The folder
    gets the mode ``os.makedirs`` would give it (not ``mkdtemp``'s private 0700)."""
    parent = os.path.dirname(os.path.abspath(final_path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp_", dir=parent)
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        if os.path.isdir(final_path):
            shutil.rmtree(final_path)
        os.replace(tmp, final_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def cache_root(*parts):
    """``$SYNTHZOO_CACHE`` (default ``~/.cache/synthzoo``) joined with ``parts``: where the repository keeps what
    it converts, generates or compiles (weights, demo data, kernels)."""
    root = os.environ.get("SYNTHZOO_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "synthzoo"))
    return os.path.join(root, *parts)


@contextlib.contextmanager
def atomic_file(final_path):
    """Yield a temporary path; it replaces ``final_path`` only if the block succeeds. The file gets the mode
    ``open(path, "w")`` would give it (not ``mkstemp``'s private 0600)."""
    parent = os.path.dirname(os.path.abspath(final_path))
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=os.path.splitext(final_path)[1], dir=parent)
    os.fchmod(fd, 0o666 & ~_UMASK)
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
    """Write a result page: ``rows`` are lists of cells, each an image path (relative to the page; captioned with
    its file name), an (image path, caption) pair or text."""
    cells = []
    for row in rows:
        tds = []
        for c in row:
            image, caption = c if isinstance(c, tuple) else (c, os.path.basename(str(c)))
            if isinstance(image, str) and image.lower().endswith(IMAGE_EXTENSIONS):
                tds.append(f'<td><img src="{html.escape(image)}" width="256"><br>{html.escape(caption)}</td>')
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
