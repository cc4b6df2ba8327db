"""``python -m common.metrics --fake DIR --real DIR``: scores against skimage, clean errors, --help."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from common.io import write_image
from common.metrics.__main__ import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RNG = np.random.RandomState(1)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "common.metrics", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONPATH=REPO))


def _folders(tmp_path, n=4):
    """Real/generated folders; names differ by the Cityscapes suffixes only, sizes differ between frames."""
    reals, fakes = [], []
    for i in range(n):
        shape = (20, 24, 3) if i % 2 else (16, 32, 3)
        real = RNG.randint(0, 256, shape).astype(np.uint8)
        fake = np.clip(real.astype(int) + RNG.randint(-40, 41, shape), 0, 255).astype(np.uint8)
        write_image(str(tmp_path / "real" / f"city_{i:02d}_leftImg8bit.png"), real)
        write_image(str(tmp_path / "fake" / f"city_{i:02d}_synthesized_image.png"), fake)
        reals.append(real)
        fakes.append(fake)
    return reals, fakes


def test_cli_scores_folders_like_skimage(tmp_path):
    reals, fakes = _folders(tmp_path)
    out = tmp_path / "scores" / "metrics.json"
    run = _cli("--fake", str(tmp_path / "fake"), "--real", str(tmp_path / "real"), "--metrics=psnr,ssim",
               "--batch_size=3", f"--out={out}")
    assert run.returncode == 0, run.stderr
    record = json.loads(out.read_text())
    psnr = np.mean([peak_signal_noise_ratio(r, f, data_range=255) for r, f in zip(reals, fakes)])
    ssim = np.mean([structural_similarity(r, f, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                          data_range=255, channel_axis=-1) for r, f in zip(reals, fakes)])
    assert record["metrics"]["psnr"]["value"] == pytest.approx(psnr, abs=1e-6)
    assert record["metrics"]["ssim"]["value"] == pytest.approx(ssim, abs=1e-4)
    assert (record["schema"], record["model"], record["images"]) == ("synthzoo.metrics/1", "folders", 4)
    assert record["settings"]["fake"] == str(tmp_path / "fake") and record["not_computed"] == {}
    assert f"| folders | - | 4 | {psnr:.4f} | {ssim:.4f} |" in run.stdout


def test_cli_errors_are_one_line(tmp_path, capsys):
    _folders(tmp_path, n=2)
    run = _cli("--fake", str(tmp_path / "missing"), "--real", str(tmp_path / "real"), "--metrics=psnr")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines() == [f"error: generated-image folder {tmp_path / 'missing'} does not exist"]
    debug = _cli("--fake", str(tmp_path / "missing"), "--real", str(tmp_path / "real"), "--metrics=psnr", "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr

    write_image(str(tmp_path / "fake" / "city_01_synthesized_image.png"), np.zeros((8, 8, 3), np.uint8))
    assert main(["--fake", str(tmp_path / "fake"), "--real", str(tmp_path / "real"), "--metrics=psnr,ssim",
                 f"--out={tmp_path / 'm.json'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {tmp_path / 'fake' / 'city_01_synthesized_image.png'} is 8x8 but its real image")
    assert not (tmp_path / "m.json").exists()
    os.remove(tmp_path / "real" / "city_00_leftImg8bit.png")
    assert main(["--fake", str(tmp_path / "fake"), "--real", str(tmp_path / "real"), "--metrics=psnr"]) == 2
    assert "1 results without a label (e.g. ['city_00'])" in capsys.readouterr().err
    assert main(["--fake", str(tmp_path / "fake"), "--real", str(tmp_path / "real"), "--metrics=fid"]) == 2
    assert "error: metric fid needs the FID InceptionV3 weights: pass --inception_path=" in capsys.readouterr().err


def test_cli_help():
    run = _cli("--help")
    assert run.returncode == 0 and "--fake FAKE --real REAL" in run.stdout and "--inception_path" in run.stdout
