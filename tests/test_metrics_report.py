"""Folder evaluation (batches, matching by name), metric selection, the metrics.json schema and the report."""
import json
import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

from common import report
from common.io import write_image
from common.metrics.evaluate import (SCHEMA, build_metrics, evaluate_folders, select_metrics, write_metrics_json)

RNG = np.random.RandomState(0)
FID_FIX = "not computed: pass --inception_path=pt_inception-2015-12-05-6726825d.pth"


def _strict_json(path):
    """json.load that rejects NaN / Infinity literals (standard JSON only)."""
    def refuse(token):
        raise ValueError(f"{path} holds the non-standard JSON literal {token}")
    with open(path) as f:
        return json.load(f, parse_constant=refuse)


def test_evaluate_folders_then_report(tmp_path, capsys):
    fake_dir, real_dir = tmp_path / "fake", tmp_path / "real"
    reals, fakes = {}, {}
    for i in range(5):
        size = (24, 24, 3) if i < 3 else (24, 32, 3)  # two image sizes: batched per size
        reals[i] = RNG.randint(0, 256, size).astype(np.uint8)
        fakes[i] = np.clip(reals[i].astype(int) + RNG.randint(-30, 31, size), 0, 255).astype(np.uint8)
        write_image(str(real_dir / f"frame{i}_leftImg8bit.png"), reals[i])
        write_image(str(fake_dir / f"frame{i}_synthesized_image.png"), fakes[i])
    result = evaluate_folders(str(fake_dir), str(real_dir), build_metrics(["psnr", "ssim"]), batch_size=4)
    expected = np.mean([peak_signal_noise_ratio(reals[i], fakes[i], data_range=255) for i in range(5)])
    assert result["psnr"] == pytest.approx(expected, abs=1e-6) and result["images"] == 5
    assert "data_range 255" in result["protocol"]["psnr"]

    outputs = tmp_path / "outputs"
    protocol, images = result.pop("protocol"), result.pop("images")
    pix = write_metrics_json(str(outputs / "pix2pix" / "eval" / "metrics.json"), model="pix2pix",
                             checkpoint="G_200.ckpt", metrics=dict(result, l1=np.float32(0.25)),
                             protocol=dict(protocol, l1="mean |G(x) - y|"), images=images,
                             settings={"eval_protocol": "paper", "num_val": np.int64(5)},
                             not_computed={"fid": FID_FIX, "kid": FID_FIX})
    assert pix["metrics"]["l1"] == {"value": 0.25, "protocol": "mean |G(x) - y|"}
    crn = write_metrics_json(str(outputs / "crn" / "eval" / "metrics.json"), model="crn", checkpoint="crn.ckpt",
                             metrics={"ssim": 0.5, "psnr": math.inf}, protocol={"ssim": "other recipe", "psnr": "dB"},
                             settings={"k": 3, "num_images": 4})
    on_disk = _strict_json(outputs / "crn" / "eval" / "metrics.json")
    assert on_disk == crn and on_disk["schema"] == SCHEMA
    assert on_disk["metrics"]["psnr"] == {"value": None, "protocol": "dB; value null: it was inf (identical "
                                                                     "images), which standard JSON cannot hold"}
    assert on_disk["settings"] == {"k": 3, "num_images": 4} and on_disk["images"] is None

    records = report.main([str(outputs)])
    out = capsys.readouterr().out
    assert [r["model"] for r in records] == ["crn", "pix2pix"]
    header = out.splitlines()[0]
    assert header == "| model | checkpoint | images | ssim | psnr | l1 | fid | kid |"  # settings are no columns
    assert "| crn | crn.ckpt | - | 0.5000 | null | - | - | - |" in out
    assert (f"| pix2pix | G_200.ckpt | 5 | {result['ssim']:.4f} | {expected:.4f} | 0.2500 | not computed | "
            f"not computed |") in out
    assert "(= skimage gaussian_weights=True, use_sample_covariance=False) || other recipe  [WARNING" in out
    assert "- l1: mean |G(x) - y|\n" in out  # one protocol: no warning
    assert f"- fid, kid (pix2pix): {FID_FIX}" in out
    assert "- crn: k=3, num_images=4" in out and "- pix2pix: eval_protocol=paper, num_val=5" in out
    summary = _strict_json(outputs / "eval_summary.json")
    assert summary["metrics"] == ["ssim", "psnr", "l1", "fid", "kid"]
    assert summary["models"][0]["metrics"]["psnr"]["value"] is None


def test_metrics_json_refuses_malformed_records(tmp_path):
    path = str(tmp_path / "m.json")
    kw = dict(model="m", checkpoint=None)
    with pytest.raises(ValueError, match="metric psnr has no protocol"):
        write_metrics_json(path, metrics={"psnr": 20.0}, protocol={}, **kw)
    with pytest.raises(ValueError, match="metric k is '3'.*settings="):
        write_metrics_json(path, metrics={"k": "3"}, protocol={"k": "x"}, **kw)
    with pytest.raises(ValueError, match=r"\['k'\] given both as metrics and as settings"):
        write_metrics_json(path, metrics={"k": 3}, protocol={"k": "x"}, settings={"k": 3}, **kw)
    with pytest.raises(ValueError, match="write 'not computed: <the flag"):
        write_metrics_json(path, metrics={}, protocol={}, not_computed={"fid": "skipped"}, **kw)
    with pytest.raises(ValueError, match="setting lr is nan"):
        write_metrics_json(path, metrics={}, protocol={}, settings={"lr": float("nan")}, **kw)
    assert not (tmp_path / "m.json").exists()


def test_report_refuses_old_flat_metrics_json(tmp_path):
    path = tmp_path / "pix2pix" / "eval" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"psnr": 20.0, "protocol": {"psnr": "dB"}, "model": "pix2pix"}))
    with pytest.raises(SystemExit, match=f"{path} has schema None, expected 'synthzoo.metrics/1'.*re-run"):
        report.main([str(tmp_path)])


def test_select_metrics(tmp_path):
    assert select_metrics("auto", lpips_available=True) == (
        ["psnr", "ssim", "lpips_alexnet"], {"fid": FID_FIX, "kid": FID_FIX, "is": FID_FIX})
    names, missing = select_metrics("auto", lpips_available=False)
    assert names == ["psnr", "ssim"] and missing["lpips_alexnet"] == "not computed: run bash scripts/get_pretrained.sh"
    inception = tmp_path / "pt_inception.pth"
    inception.write_bytes(b"")
    assert select_metrics("auto", inception_path=str(inception), lpips_available=False)[0] == ["psnr", "ssim", "fid"]
    assert select_metrics(" PSNR, kid ,is", inception_path=str(inception)) == (["psnr", "fid"], {})
    assert select_metrics("ssim", inception_path=str(inception)) == (["ssim", "fid"], {})
    with pytest.raises(ValueError, match="lpips_alexnet needs the LPIPS weights.*bash scripts/get_pretrained.sh"):
        select_metrics("psnr,lpips", lpips_available=False)
    with pytest.raises(ValueError, match="metric fid needs .*--inception_path=pt_inception-2015-12-05"):
        select_metrics("psnr,fid", lpips_available=True)
    with pytest.raises(ValueError, match="unknown metric 'mse'"):
        select_metrics("psnr,mse")
    with pytest.raises(FileNotFoundError, match="--inception_path=.*none.pth does not exist"):
        select_metrics("auto", inception_path=str(tmp_path / "none.pth"))


def test_select_metrics_checks_the_weights_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHZOO_CACHE", str(tmp_path))
    assert "lpips_alexnet" in select_metrics("auto")[1]
    (tmp_path / "weights").mkdir()
    for name in ("alexnet_imagenet.ckpt", "lpips_alexnet_v0.1.ckpt"):
        (tmp_path / "weights" / name).write_bytes(b"")
    assert select_metrics("auto")[0] == ["psnr", "ssim", "lpips_alexnet"]
    with pytest.raises(ValueError, match="lpips_vgg16 needs the LPIPS weights"):
        select_metrics("lpips_vgg16")


def test_evaluate_errors(tmp_path):
    (tmp_path / "fake").mkdir()
    write_image(str(tmp_path / "real" / "a.png"), np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="1 labels without a result"):
        evaluate_folders(str(tmp_path / "fake"), str(tmp_path / "real"), build_metrics(["psnr"]))
    write_image(str(tmp_path / "fake" / "a.png"), np.zeros((8, 16, 3), np.uint8))
    with pytest.raises(ValueError, match=r"fake/a.png is 16x8 but its real image .*real/a.png is 16x16"):
        evaluate_folders(str(tmp_path / "fake"), str(tmp_path / "real"), build_metrics(["psnr"]))
    with pytest.raises(FileNotFoundError, match="generated-image folder .*none does not exist"):
        evaluate_folders(str(tmp_path / "none"), str(tmp_path / "real"), build_metrics(["psnr"]))
    with pytest.raises(ValueError, match="unknown metric"):
        build_metrics(["mse"])
    with pytest.raises(SystemExit, match="no .*metrics.json"):
        report.main([str(tmp_path)])
