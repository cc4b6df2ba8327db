"""Folder evaluation (batches, matching by name, metrics.json) and the summary report."""
import json

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

from common import report
from common.io import write_image
from common.metrics.evaluate import build_metrics, evaluate_folders, write_metrics_json

RNG = np.random.RandomState(0)


def test_evaluate_folders_then_report(tmp_path, capsys):
    fake_dir, real_dir = tmp_path / "fake", tmp_path / "real"
    reals, fakes = {}, {}
    for i in range(5):
        reals[i] = RNG.randint(0, 256, (24, 24, 3)).astype(np.uint8)
        fakes[i] = np.clip(reals[i].astype(int) + RNG.randint(-30, 31, (24, 24, 3)), 0, 255).astype(np.uint8)
        write_image(str(real_dir / f"frame{i}_leftImg8bit.png"), reals[i])
        write_image(str(fake_dir / f"frame{i}_synthesized_image.png"), fakes[i])
    result = evaluate_folders(str(fake_dir), str(real_dir), build_metrics(["psnr", "ssim"]), batch_size=2)
    expected = np.mean([peak_signal_noise_ratio(reals[i], fakes[i], data_range=255) for i in range(5)])
    assert result["psnr"] == pytest.approx(expected, abs=1e-6) and result["images"] == 5
    assert "data_range 255" in result["protocol"]["psnr"]
    outputs = tmp_path / "outputs"
    write_metrics_json(str(outputs / "pix2pix" / "eval" / "metrics.json"), result, "pix2pix", "G_200.ckpt")
    write_metrics_json(str(outputs / "crn" / "eval" / "metrics.json"),
                       {"ssim": 0.5, "protocol": {"ssim": "other recipe"}}, "crn", "crn.ckpt")
    records = report.main([str(outputs)])
    out = capsys.readouterr().out
    assert [r["model"] for r in records] == ["crn", "pix2pix"]
    assert "| crn | crn.ckpt | - | 0.5000 | - |" in out and "| pix2pix | G_200.ckpt | 5 |" in out and "not comparable" in out
    summary = json.load(open(outputs / "eval_summary.json"))
    assert summary["metrics"] == ["ssim", "psnr"]


def test_evaluate_errors(tmp_path):
    (tmp_path / "fake").mkdir()
    write_image(str(tmp_path / "real" / "a.png"), np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="1 labels without a result"):
        evaluate_folders(str(tmp_path / "fake"), str(tmp_path / "real"), build_metrics(["psnr"]))
    write_image(str(tmp_path / "fake" / "a.png"), np.zeros((8, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="different sizes"):
        evaluate_folders(str(tmp_path / "fake"), str(tmp_path / "real"), build_metrics(["psnr"]))
    with pytest.raises(ValueError, match="unknown metric"):
        build_metrics(["mse"])
    with pytest.raises(SystemExit, match="no .*metrics.json"):
        report.main([str(tmp_path)])
