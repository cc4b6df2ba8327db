"""Shared machinery of dataset preparation: sources, decoding, resizing, a resumable atomic job runner.

* A *source* is a folder or an archive (``.zip``, ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``);
  its files are :class:`Member` s addressed by ``/``-separated paths inside it. Archives are read in place,
  one member at a time (a compressed tar is first decompressed, streaming, into a scratch ``.tar`` under
  ``DST/.prepare_tmp`` so that members can be read in any order; it is deleted at the end).
* A :class:`Job` makes a few output files from a few members. :func:`run_jobs` skips jobs whose outputs all
  exist (every file is written through :func:`common.io.atomic_file`, so an existing file is complete and an
  interrupted run leaves no half-written image), keeps going past bad input (:class:`PrepareError`) and
  returns a :class:`Report` with the counts and every problem, each naming its files.
* ``DST/prepare.json`` records the dataset and options of a folder; resuming with other options is refused.
"""
import bz2
import gzip
import json
import lzma
import os
import re
import shutil
import tarfile
import threading
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from common.io import atomic_file

__all__ = ["PrepareError", "Member", "open_sources", "find_members", "decode_image", "decode_label",
           "check_same_size", "pair", "Job", "Report", "run_jobs", "parse_options", "check_manifest",
           "write_manifest", "remove_scratch", "split_list"]

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
SCRATCH = ".prepare_tmp"
MANIFEST = "prepare.json"


class PrepareError(ValueError):
    """Bad input: the message names the file(s), the problem and the fix."""


@dataclass(frozen=True)
class Member:
    """One file of a source: ``source`` is the folder/archive object, ``path`` its ``/``-separated name."""
    source: object
    path: str

    @property
    def label(self):
        """``folder/path`` or ``archive.zip:path``: how reports name the file."""
        return self.source.label(self.path)

    def read(self):
        """The member's bytes; :class:`PrepareError` naming it if the archive cannot deliver them."""
        return self.source.read(self.path)


class _FolderSource:
    def __init__(self, path, exclude):
        self.path, self.exclude = path, exclude

    def members(self):
        out = []
        for root, dirs, names in os.walk(self.path):
            dirs[:] = sorted(d for d in dirs if os.path.abspath(os.path.join(root, d)) != self.exclude)
            rel = os.path.relpath(root, self.path)
            out += [n if rel == "." else f"{rel.replace(os.sep, '/')}/{n}" for n in sorted(names)]
        return out

    def label(self, path):
        return os.path.join(self.path, *path.split("/"))

    def read(self, path):
        try:
            with open(self.label(path), "rb") as f:
                return f.read()
        except OSError as err:
            raise PrepareError(f"{self.label(path)}: cannot read this file ({err})") from None


def _damaged(label, err):
    return PrepareError(f"{label}: cannot read this archive member ({type(err).__name__}: {err}); the archive is "
                        f"damaged or truncated: download it again (or extract it and pass the folder)")


class _ZipSource:
    def __init__(self, path):
        self.lock = threading.Lock()
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as err:
            raise PrepareError(f"{path} is not a readable zip archive ({err}); download it again") from None
        self.path = path

    def members(self):
        return [i.filename for i in self.zip.infolist() if not i.is_dir()]

    def label(self, path):
        return f"{self.path}:{path}"

    def read(self, path):
        try:
            with self.lock:
                return self.zip.read(path)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
            raise _damaged(self.label(path), err) from None


class _TarSource:
    def __init__(self, path, scratch):
        self.path, self.lock = path, threading.Lock()
        try:
            if path.lower().endswith(".tar"):
                self.tar = tarfile.open(path, "r:")
            else:
                os.makedirs(scratch, exist_ok=True)
                plain = os.path.join(scratch, os.path.basename(path) + ".tar")
                with atomic_file(plain) as tmp:
                    _decompress(path, tmp)
                self.tar = tarfile.open(plain, "r:")
            self.index = {m.name: m for m in self.tar.getmembers() if m.isfile()}
        except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as err:
            raise PrepareError(f"{path} is not a readable tar archive ({type(err).__name__}: {err}); "
                               f"download it again") from None

    def members(self):
        return list(self.index)

    def label(self, path):
        return f"{self.path}:{path}"

    def read(self, path):
        try:
            with self.lock:
                return self.tar.extractfile(self.index[path]).read()
        except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
            raise _damaged(self.label(path), err) from None


def _decompress(path, out_path):
    """Stream the decompressed bytes of a ``.tar.gz``/``.tar.bz2``/``.tar.xz`` archive into ``out_path``."""
    name = path.lower()
    opener = bz2.open if name.endswith(("bz2", "tbz2")) else lzma.open if name.endswith(("xz", "txz")) else gzip.open
    with opener(path, "rb") as src, open(out_path, "wb") as out, \
            tqdm(desc=f"decompressing {os.path.basename(path)}", unit="B", unit_scale=True) as bar:
        while True:
            chunk = src.read(1 << 22)
            if not chunk:
                break
            out.write(chunk)
            bar.update(len(chunk))


def open_sources(spec, dst):
    """Open the comma-separated folders/archives of ``spec``; returns a list of sources. Folders skip ``dst``
    (an output folder inside a source is not read back); compressed tars are unpacked to ``dst/.prepare_tmp``.

    Raises:
        PrepareError: a path does not exist or is neither a folder nor a supported archive.
    """
    sources = []
    for path in [p for p in spec.split(",") if p]:
        path = os.path.expanduser(path)
        if os.path.isdir(path):
            sources.append(_FolderSource(path, os.path.abspath(dst)))
        elif not os.path.exists(path):
            raise PrepareError(f"source {path} does not exist; pass the downloaded archive or its extracted folder")
        elif path.lower().endswith(".zip"):
            sources.append(_ZipSource(path))
        elif path.lower().endswith(ARCHIVE_SUFFIXES):
            sources.append(_TarSource(path, os.path.join(dst, SCRATCH)))
        else:
            raise PrepareError(f"source {path} is neither a folder nor an archive ({', '.join(ARCHIVE_SUFFIXES)})")
    if not sources:
        raise PrepareError("no source given: SRC is a folder or archive (several separated by commas)")
    return sources


def find_members(sources, pattern):
    """``[(match, Member)]`` of every member whose path matches the regular expression ``pattern``
    (``re.search``), in source order then path order."""
    regex = re.compile(pattern)
    found = []
    for src in sources:
        for path in sorted(src.members()):
            m = regex.search(path)
            if m:
                found.append((m, Member(src, path)))
    return found


def _decode(member, flags):
    data = np.frombuffer(member.read(), np.uint8)
    img = cv2.imdecode(data, flags) if data.size else None
    if img is None:
        raise PrepareError(f"{member.label}: cannot decode this image (empty, truncated or not an image); "
                           f"replace it or download the archive again")
    return img


def decode_image(member):
    """[H, W, 3] uint8 RGB photo of ``member``."""
    return _decode(member, cv2.IMREAD_COLOR)[..., ::-1].copy()


def decode_label(member):
    """A label image as stored: [H, W] integer ids, or [H, W, 3] uint8 RGB for colour maps (alpha dropped)."""
    img = _decode(member, cv2.IMREAD_UNCHANGED)
    if img.ndim == 3:
        img = img[..., 2::-1].copy() if img.shape[2] >= 3 else img[..., 0]
    return img


def check_same_size(photo, label, photo_member, label_member):
    """Raise :class:`PrepareError` naming both files when a photo and its label map differ in size."""
    if photo.shape[:2] != label.shape[:2]:
        raise PrepareError(f"{label_member.label} is {label.shape[1]}x{label.shape[0]} but its photo "
                           f"{photo_member.label} is {photo.shape[1]}x{photo.shape[0]}; a label map must have its "
                           f"photo's size (check the pairing or replace the file)")


def pair(photos, labels, splits, report, photo_hint, label_hint):
    """Match photos and labels given as ``{(split, stem): Member}``; returns sorted ``[(split, stem, photo,
    label)]``. Into ``report.problems``: a split without photos or labels (``photo_hint``/``label_hint``, with
    ``{split}``, say what to pass), and every photo without a label or label without a photo."""
    photo_splits, label_splits = {s for s, _ in photos}, {s for s, _ in labels}
    for split in splits:
        if split not in photo_splits:
            report.problems.append(f"no photos for split {split} in the sources: {photo_hint.format(split=split)}")
        if split not in label_splits:
            report.problems.append(f"no labels for split {split} in the sources: {label_hint.format(split=split)}")
    pairs = []
    for key in sorted(set(photos) | set(labels)):
        if key not in labels:
            if key[0] in label_splits:
                report.problems.append(f"{photos[key].label}: no label for this photo ({label_hint.format(split=key[0])})")
        elif key not in photos:
            if key[0] in photo_splits:
                report.problems.append(f"{labels[key].label}: no photo for this label ({photo_hint.format(split=key[0])})")
        else:
            pairs.append((key[0], key[1], photos[key], labels[key]))
    return pairs


@dataclass
class Job:
    """Make ``outputs`` (paths relative to DST): ``make()`` returns ``{output: bytes or image array}``."""
    name: str
    outputs: list
    make: object


@dataclass
class Report:
    """Counts of a run: ``prepared`` jobs done now, ``skipped`` already done, ``failed``; ``problems`` are
    messages naming files (failed jobs and input found unusable while planning)."""
    dataset: str
    dst: str
    prepared: int = 0
    skipped: int = 0
    failed: int = 0
    problems: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def ok(self):
        return not self.problems

    def summary(self, max_problems=20):
        lines = [f"{self.dataset} -> {self.dst}: {self.prepared} prepared, {self.skipped} already done, "
                 f"{self.failed} failed, {len(self.problems)} problem(s)"]
        lines += [f"  problem: {p}" for p in self.problems[:max_problems]]
        if len(self.problems) > max_problems:
            lines.append(f"  ... and {len(self.problems) - max_problems} more problem(s)")
        lines += [f"  {n}" for n in self.notes]
        return "\n".join(lines)


def write_output(path, data):
    """Write bytes as they are, or an image array by extension (PNG lossless; JPEG quality 100, 4:4:4
    chroma, as the pix2pix reference saves its AB files), atomically."""
    with atomic_file(path) as tmp:
        if isinstance(data, bytes):
            with open(tmp, "wb") as f:
                f.write(data)
        elif path.lower().endswith((".jpg", ".jpeg")):
            Image.fromarray(data).save(tmp, format="JPEG", quality=100, subsampling=0)
        else:
            arr = data[..., ::-1] if data.ndim == 3 else data
            ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr))
            if not ok:
                raise ValueError(f"cannot encode an image of shape {data.shape} for {path}")
            buf.tofile(tmp)


def _run_job(job, dst):
    """'skipped', 'prepared' or the :class:`PrepareError` message of one job."""
    paths = [os.path.join(dst, *o.split("/")) for o in job.outputs]
    if all(os.path.isfile(p) for p in paths):
        return "skipped"
    try:
        outputs = job.make()
    except PrepareError as err:
        return str(err)
    for out, path in zip(job.outputs, paths):
        write_output(path, outputs[out])
    return "prepared"


def run_jobs(jobs, report, desc, workers=1):
    """Run ``jobs`` into ``report.dst`` with a progress bar, skipping finished ones; fills ``report``.

    ``workers`` > 1 runs jobs in that many threads (decoding, resizing and encoding release the GIL); an
    interrupt cancels the queued jobs and lets the running ones finish their atomic writes.
    """
    pool = ThreadPoolExecutor(workers) if workers > 1 else None
    results = pool.map(lambda job: _run_job(job, report.dst), jobs) if pool else \
        (_run_job(job, report.dst) for job in jobs)
    try:
        for result in tqdm(results, total=len(jobs), desc=desc, unit="file"):
            if result in ("skipped", "prepared"):
                setattr(report, result, getattr(report, result) + 1)
            else:
                report.failed += 1
                report.problems.append(result)
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    return report


def split_list(text, allowed, option="splits"):
    """Comma-separated names of ``text``, each one of ``allowed``."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in allowed]
    if bad or not names:
        raise PrepareError(f"--{option}={text}: choose from {', '.join(allowed)} (comma-separated)")
    return names


def parse_options(defaults, args):
    """``--key=value`` arguments over ``defaults`` ({key: (default, help)}); values take the default's type."""
    opts = {k: v[0] for k, v in defaults.items()}
    for arg in args:
        key, sep, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if not sep or key not in defaults:
            known = ", ".join(f"--{k}" for k in defaults) or "none"
            raise PrepareError(f"unknown option {arg!r}; options of this dataset: {known}")
        kind = type(defaults[key][0])
        try:
            opts[key] = kind(value) if kind is not bool else {"true": True, "false": False}[value.lower()]
        except (ValueError, KeyError):
            raise PrepareError(f"--{key}={value}: expected a {kind.__name__} value") from None
    return opts


def check_manifest(dst, dataset, opts):
    """Refuse a DST folder that was prepared with another dataset or other options."""
    path = os.path.join(dst, MANIFEST)
    if not os.path.isfile(path):
        return
    with open(path) as f:
        old = json.load(f)
    if old.get("dataset") != dataset or old.get("options") != opts:
        raise PrepareError(f"{dst} was prepared as {old.get('dataset')} with options {old.get('options')}, not "
                           f"{dataset} with {opts}; pick another DST or delete {dst} to start over")


def write_manifest(dst, dataset, opts, report=None):
    """Record the dataset, options and (after a run) the counts in ``DST/prepare.json``."""
    info = {"dataset": dataset, "options": opts}
    if report is not None:
        info.update(complete=report.ok, prepared=report.prepared + report.skipped, failed=report.failed,
                    problems=len(report.problems))
    with atomic_file(os.path.join(dst, MANIFEST)) as tmp:
        with open(tmp, "w") as f:
            json.dump(info, f, indent=1)


def remove_scratch(dst):
    """Delete the scratch folder of decompressed tars."""
    shutil.rmtree(os.path.join(dst, SCRATCH), ignore_errors=True)
