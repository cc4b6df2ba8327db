"""The compile cache's key: what shapes the train step's graph changes it, run plumbing does not."""
import os

from mindspore import nn

from common.compile_cache import cache_key
from common.runtime import Runtime

MODEL_FOLDER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pix2pix")


def key(cfg=None, width=4, conv_impl="winograd"):
    cfg = dict({"ngf": 8, "lambda_L1": 100.0, "output_dir": "a", "resume": False, "max_steps": 0}, **(cfg or {}))
    rt = Runtime(device_target="CPU", mode="graph", conv_impl=conv_impl, onednn_isa="AVX512_CORE")
    return cache_key(MODEL_FOLDER, cfg, rt, {"G": nn.Dense(3, width), "D": nn.Dense(width, 1)})


def test_key_follows_the_graph_not_the_run_plumbing():
    base = key()
    assert key() == base
    assert key({"output_dir": "b", "resume": True, "max_steps": 7}) == base
    assert key({"lambda_L1": 50.0}) != base
    assert key(width=5) != base
    assert key(conv_impl="onednn") != base


def test_key_follows_the_sources(tmp_path):
    folder = tmp_path / "model"
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "net.py").write_text("WIDTH = 1\n")
    rt = Runtime(device_target="CPU", mode="graph")
    nets = {"G": nn.Dense(2, 2)}
    before = cache_key(str(folder), {}, rt, nets)
    (folder / "src" / "net.py").write_text("WIDTH = 2\n")
    assert cache_key(str(folder), {}, rt, nets) != before


def test_off_where_mindspore_cannot_serve_it(monkeypatch, tmp_path):
    from common import compile_cache
    monkeypatch.setenv("SYNTHZOO_CACHE", str(tmp_path))
    monkeypatch.delenv("MS_COMPILER_CACHE_PATH", raising=False)
    nets = {"G": nn.Dense(2, 2)}
    for rt in (Runtime(device_target="CPU", mode="pynative"), Runtime(device_target="CPU", mode="graph", group_size=2)):
        assert compile_cache.use_compile_cache("pix2pix", MODEL_FOLDER, {}, rt, nets).startswith("compile cache: off")
    monkeypatch.setattr(compile_cache, "_active_folder", str(tmp_path / "graphs" / "crn-0"))
    line = compile_cache.use_compile_cache("pix2pix", MODEL_FOLDER, {}, Runtime(device_target="CPU", mode="graph"), nets)
    assert line == f"compile cache: off (this process has cached a graph in {tmp_path / 'graphs' / 'crn-0'} already)"
    assert "MS_COMPILER_CACHE_PATH" not in os.environ


def test_only_the_first_graph_is_cached(monkeypatch, tmp_path):
    from common import compile_cache
    monkeypatch.setenv("SYNTHZOO_CACHE", str(tmp_path))
    monkeypatch.setattr(compile_cache, "_active_folder", None)
    for name in ("MS_COMPILER_CACHE_ENABLE", "MS_COMPILER_CACHE_PATH"):
        monkeypatch.delenv(name, raising=False)
    line = compile_cache.use_compile_cache("pix2pix", MODEL_FOLDER, {}, Runtime(device_target="CPU", mode="graph"),
                                           {"G": nn.Dense(2, 2)})
    folder = compile_cache._active_folder
    assert line == f"compile cache: {folder} is empty: this run's compile fills it for the next run of this configuration"
    assert os.environ["MS_COMPILER_CACHE_ENABLE"] == "1" and os.environ["MS_COMPILER_CACHE_PATH"] == folder + os.sep
    compile_cache.stop_caching()
    assert os.environ["MS_COMPILER_CACHE_ENABLE"] == "0"
