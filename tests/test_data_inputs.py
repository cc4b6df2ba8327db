"""Input data: truncated files are errors, datasets are validated up front, pix2pix inputs of any aspect."""
import multiprocessing
import os
import re
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from PIL import Image

from common import demo_data
from common.data import BatchLoader, validate_files
from common.io import check_image_complete, image_header, read_image, read_label, resize_nearest, resize_photo
from crn.src.dataset import CRNDataset
from pix2pix.src.dataset import AlignedDataset, plan_tiles, resize_bicubic, to_tensor_layout


def smooth_image(h, w, seed=0):
    """[H, W, 3] uint8 with structure (so JPEG files have a few kB of scan data)."""
    rng = np.random.RandomState(seed)
    return cv2.GaussianBlur((rng.rand(h, w, 3) * 255).astype(np.uint8), (9, 9), 3)


def truncate(path, n_bytes):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:n_bytes])


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_truncated_images_are_errors_naming_the_file(tmp_path, ext):
    path = str(tmp_path / f"photo{ext}")
    cv2.imwrite(path, smooth_image(256, 512))
    assert read_image(path).shape == (256, 512, 3)
    check_image_complete(path)
    size = os.path.getsize(path)
    truncate(path, 2000 if ext == ".jpg" else size // 2)
    # OpenCV alone decodes the truncated JPEG with a black lower half and no error.
    assert cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR) is not None or ext == ".png"
    for fn in (read_image, read_label, check_image_complete):
        with pytest.raises(ValueError, match=rf"cannot decode image file .*photo\{ext}: truncated or corrupt image "
                                             rf".*re-export or remove it"):
            fn(path)


def test_complete_jpegs_with_thumbnail_trailer_or_progressive_scans_pass(tmp_path):
    img = Image.fromarray(smooth_image(128, 192, seed=1))
    thumb = tmp_path / "thumb.jpg"
    img.resize((32, 24)).save(thumb)
    # A JPEG thumbnail inside an APP1 segment carries its own EOI marker, before the main image.
    app1 = b"Exif\x00\x00" + thumb.read_bytes()
    plain = tmp_path / "plain.jpg"
    img.save(plain, quality=90)
    body = plain.read_bytes()
    with_thumb = body[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + body[2:]
    (tmp_path / "thumb_inside.jpg").write_bytes(with_thumb)
    (tmp_path / "trailer.jpg").write_bytes(body + b"camera trailer \xff\xda\x00\x04..")
    img.save(tmp_path / "progressive.jpg", progressive=True, quality=90)
    for name in ("thumb_inside.jpg", "trailer.jpg", "progressive.jpg"):
        check_image_complete(str(tmp_path / name))
        assert read_image(str(tmp_path / name)).shape == (128, 192, 3)
    # Cut inside the main scan: the thumbnail's EOI must not make it look complete.
    (tmp_path / "cut.jpg").write_bytes(with_thumb[:len(app1) + 1500])
    with pytest.raises(ValueError, match="inside the compressed image data"):
        check_image_complete(str(tmp_path / "cut.jpg"))


def test_written_outputs_get_the_modes_open_and_mkdir_give(tmp_path):
    """Images, JSON records and the eval folder are written through temporary files (common.io.atomic_file /
    atomic_dir); they take the process umask's modes, not mkstemp's private 0600 and mkdtemp's 0700."""
    import stat
    from common.io import atomic_dir, atomic_file, write_image
    mask = os.umask(0o022)
    os.umask(mask)
    write_image(str(tmp_path / "out" / "a.png"), np.zeros((4, 4, 3), np.uint8))
    with atomic_file(str(tmp_path / "out" / "metrics.json")) as tmp:
        with open(tmp, "w") as f:
            f.write("{}")
    with atomic_dir(str(tmp_path / "eval")) as work:
        write_image(os.path.join(work, "b.png"), np.zeros((4, 4), np.uint8))
    modes = {name: stat.S_IMODE(os.stat(tmp_path / name).st_mode) for name in ("out/a.png", "out/metrics.json",
                                                                               "eval", "eval/b.png")}
    want = 0o666 & ~mask
    assert modes == {"out/a.png": want, "out/metrics.json": want, "eval": 0o777 & ~mask, "eval/b.png": want}


def test_image_header_reads_size_and_channels_without_decoding(tmp_path):
    cv2.imwrite(str(tmp_path / "c.png"), smooth_image(20, 30))
    cv2.imwrite(str(tmp_path / "g.png"), np.zeros((20, 30), np.uint16))
    Image.fromarray(np.zeros((20, 30), np.uint8)).convert("P").save(tmp_path / "p.png")
    assert image_header(str(tmp_path / "c.png")) == (30, 20, 3)
    assert image_header(str(tmp_path / "g.png")) == (30, 20, 1)
    assert image_header(str(tmp_path / "p.png")) == (30, 20, 3)
    (tmp_path / "x.png").write_bytes(b"nothing")
    with pytest.raises(ValueError, match=r"x\.png: truncated or corrupt image \(unreadable header"):
        image_header(str(tmp_path / "x.png"))


def test_validate_files_lists_the_first_failures_and_the_count():
    def check(i):
        if i % 3 == 0:
            raise ValueError(f"file {i} is bad")
    with pytest.raises(ValueError) as err:
        validate_files(range(30), check, "test files", "Fix them.", show=2)
    msg = str(err.value)
    assert msg.startswith("10 of 30 test files cannot be used:\n  - file 0 is bad\n  - file 3 is bad\n")
    assert "... and 8 more" in msg and msg.endswith("Fix them.") and "file 6" not in msg
    validate_files(range(30), lambda i: None, "test files")


def test_aligned_dataset_is_validated_before_any_read(tmp_path):
    train = tmp_path / "train"
    train.mkdir()
    for i in range(1, 5):
        cv2.imwrite(str(train / f"{i}.jpg"), smooth_image(64, 128, seed=i))
    AlignedDataset(str(tmp_path), "train", load_size=64, crop_size=64)
    cv2.imwrite(str(train / "2.png"), smooth_image(256, 400))
    truncate(str(train / "3.jpg"), 2000)
    with pytest.raises(ValueError) as err:
        AlignedDataset(str(tmp_path), "train", load_size=64, crop_size=64)
    msg = str(err.value)
    assert msg.startswith("2 of 5 pix2pix train images cannot be used:")
    assert "2.png is 400x256 (width x height)" in msg and "twice as wide" in msg
    assert "3.jpg: truncated or corrupt image" in msg


def write_pair(root, stem, photo_hw, label):
    for sub in ("images", "labels"):
        os.makedirs(os.path.join(root, "train", sub), exist_ok=True)
    cv2.imwrite(os.path.join(root, "train", "images", stem + ".png"), smooth_image(*photo_hw))
    cv2.imwrite(os.path.join(root, "train", "labels", stem + ".png"), label)


def test_crn_dataset_is_validated_before_any_read(tmp_path):
    root = str(tmp_path)
    write_pair(root, "a", (32, 64), np.zeros((32, 64), np.uint8))
    assert len(CRNDataset(root, "train", 32, data_format="folders", label_format="trainIds")) == 1
    write_pair(root, "b", (32, 64), np.zeros((16, 64), np.uint8))
    write_pair(root, "c", (32, 64), np.zeros((32, 64, 3), np.uint8))
    with pytest.raises(ValueError) as err:
        CRNDataset(root, "train", 32, data_format="folders", label_format="trainIds")
    msg = str(err.value)
    assert msg.startswith("2 of 3 CRN train (photo, label) pairs cannot be used:")
    assert re.search(r"labels/b\.png is 64x16 but its photo \S*images/b\.png is 64x32", msg)
    assert "labels/c.png has 3 channels" in msg and "--label_format=color" in msg


def test_colour_label_read_as_ids_suggests_label_format_color(tmp_path):
    cv2.imwrite(str(tmp_path / "l.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"l\.png has 3 channels.*--label_format=color"):
        read_label(str(tmp_path / "l.png"))


@pytest.mark.parametrize("mode, shape, out_shape, n_tiles", [
    ("tile", (256, 512), (64, 128), 2),
    ("tile", (300, 500), (64, 107), 2),
    ("tile", (700, 100), (448, 64), 7),
    ("tile", (64, 200), (64, 200), 4),
    ("pad", (256, 512), (32, 64), 1),
    ("pad", (500, 300), (64, 38), 1),
    ("resize", (256, 512), (64, 64), 1),
    ("tile", (128, 128), (64, 64), 1),
])
def test_identity_generator_round_trips_to_the_aspect_kept_resize(mode, shape, out_shape, n_tiles):
    image = smooth_image(*shape)
    plan = plan_tiles(shape[0], shape[1], 64, mode)
    tiles = plan.split(image)
    assert tiles.shape == (n_tiles, 3, 64, 64) and tiles.dtype == np.float32
    out = plan.merge(tiles)
    assert out.shape == (3,) + out_shape == (3,) + plan.out_shape
    np.testing.assert_array_equal(out, to_tensor_layout(resize_bicubic(image, out_shape)))
    if mode != "resize":
        assert abs(out_shape[1] / out_shape[0] - shape[1] / shape[0]) < 0.02
    assert ("aspect ratio is not kept" in plan.note) == (mode == "resize")


def test_tiles_are_averaged_where_they_overlap():
    plan = plan_tiles(64, 100, 64, "tile")
    assert plan.origins == [(0, 0), (0, 36)]
    out = plan.merge(np.stack([np.zeros((1, 64, 64), np.float32), np.ones((1, 64, 64), np.float32)]))
    np.testing.assert_array_equal(out[0, :, :36], 0.0)
    np.testing.assert_array_equal(out[0, :, 36:64], 0.5)
    np.testing.assert_array_equal(out[0, :, 64:], 1.0)
    with pytest.raises(ValueError, match="merge expects 2 outputs of 64x64"):
        plan.merge(np.zeros((1, 1, 64, 64)))
    with pytest.raises(ValueError, match="fit mode 'crop' is not supported"):
        plan_tiles(64, 100, 64, "crop")


def test_tile_and_pad_notes_name_a_resize_only_where_one_happens():
    """An input already at the generator's scale is not reported as resized (it read "resized 128x64 to 128x64")."""
    assert plan_tiles(64, 128, 64, "tile").note == "translated as 2 overlapping 64x64 tiles"
    assert plan_tiles(128, 256, 64, "tile").note == ("resized 256x128 to 128x64 and translated as 2 overlapping "
                                                     "64x64 tiles")
    assert plan_tiles(32, 64, 64, "pad").note == "reflect-padded to 64x64; the output is cropped back to 64x32"


def test_batch_loader_takes_options_by_keyword():
    class Ones:
        def __len__(self):
            return 5

        def get(self, i, rng):
            return (np.full(2, i),)
    with pytest.raises(TypeError):
        BatchLoader(Ones(), 2, True)
    loader = BatchLoader(Ones(), 2, shuffle=False, drop_last=False, num_workers=0)
    assert [b[0][:, 0].tolist() for b in loader.epoch(0)] == [[0, 1], [2, 3], [4]]


def _ensure_in_child(cache, barrier, queue):
    """Generate the demo data in a fresh process, counting (slowed-down) generations."""
    calls = []
    write = demo_data._write_files

    def counting_write(*args):
        calls.append(args)
        time.sleep(1.0)
        write(*args)
    demo_data._write_files = counting_write
    barrier.wait()
    root = demo_data.ensure_demo_dataset(cache, n_train=3, n_val=2, size=32, seed=5)
    queue.put((root, len(calls), sorted(os.listdir(os.path.join(root, "pix2pix", "train")))))


def test_concurrent_processes_generate_the_demo_data_once(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_ensure_in_child, args=(str(tmp_path), barrier, queue)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len({r[0] for r in results}) == 1
    assert sum(r[1] for r in results) == 1
    assert all(r[2] == ["1.jpg", "2.jpg", "3.jpg"] for r in results)
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(results[0][0])]


def test_demo_data_waits_for_a_live_lock_and_takes_over_a_dead_one(tmp_path):
    root = os.path.join(str(tmp_path), "demo_streets_v1_32px_2x1_s0")
    with open(root + ".lock", "w") as f:
        f.write(f"{os.uname().nodename} {os.getpid()}\n")
    with pytest.raises(TimeoutError, match=rf"pid {os.getpid()} .*delete the lock file .*\.lock"):
        demo_data.ensure_demo_dataset(str(tmp_path), n_train=2, n_val=1, size=32, wait_s=0.5)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with open(root + ".lock", "w") as f:
        f.write(f"{os.uname().nodename} {dead.pid}\n")
    assert demo_data.ensure_demo_dataset(str(tmp_path), n_train=2, n_val=1, size=32, wait_s=5) == root
    assert os.path.isfile(os.path.join(root, "demo.json")) and not os.path.exists(root + ".lock")


def test_resizes_follow_pil_as_the_reference_loaders_do():
    """The reference loaders resize PIL images (torchvision ``Resize``): shrinking is antialiased, and nearest
    takes the source pixel under each output pixel's centre. Hand-derived cases, then PIL itself."""
    stripes = np.zeros((96, 96, 3), np.uint8)
    stripes[::2] = 255  # one-pixel rows
    for method in ("bilinear", "bicubic"):
        small = resize_photo(stripes, 32, 32, method=method).astype(np.float64)
        assert small.std() < 30 and abs(small.mean() - 127.5) < 45, method
    assert cv2.resize(stripes, (32, 32), interpolation=cv2.INTER_LINEAR).std() > 100  # what OpenCV did
    ids = np.arange(10)[None].repeat(3, 0)
    np.testing.assert_array_equal(resize_nearest(ids, 3, 4)[0], [1, 3, 6, 8])  # floor((j + 0.5) * 10 / 4)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 151, (37, 53), dtype=np.uint8)
    for h, w in ((16, 24), (64, 90), (37, 20)):
        np.testing.assert_array_equal(resize_nearest(labels, h, w),
                                      np.asarray(Image.fromarray(labels).resize((w, h), Image.NEAREST)))
    photo = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    assert resize_photo(photo, 37, 53) is photo
    with pytest.raises(ValueError, match="method='area'"):
        resize_photo(photo, 10, 10, method="area")
