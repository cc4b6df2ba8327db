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
    monkeypatch.setattr(compile_cache, "_active_folder", None)
    monkeypatch.setattr(compile_cache.sys, "argv", ["-c"])  # python -c, pytest-xdist's workers
    line = compile_cache.use_compile_cache("pix2pix", MODEL_FOLDER, {}, Runtime(device_target="CPU", mode="graph"), nets)
    assert line.startswith("compile cache: off (MindSpore's cache hashes the entry script's imports")
    assert compile_cache.caching_folder() is None and "MS_COMPILER_CACHE_PATH" not in os.environ


def test_only_the_first_graph_is_cached(monkeypatch, tmp_path):
    from common import compile_cache
    monkeypatch.setenv("SYNTHZOO_CACHE", str(tmp_path))
    monkeypatch.setattr(compile_cache.sys, "argv", [__file__])  # an entry script, as train.py is
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


def test_a_temporary_folder_lives_until_the_first_step(monkeypatch, tmp_path):
    """separate_compile without compile_cache: a fresh folder per run, gone after the step's first call."""
    from common import compile_cache
    monkeypatch.setattr(compile_cache, "_active_folder", None)
    monkeypatch.setattr(compile_cache.tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(compile_cache.sys, "argv", [__file__])
    for name in ("MS_COMPILER_CACHE_ENABLE", "MS_COMPILER_CACHE_PATH"):
        monkeypatch.delenv(name, raising=False)
    assert compile_cache.caching_folder() is None
    line = compile_cache.use_compile_cache("pix2pix", MODEL_FOLDER, {}, Runtime(device_target="CPU", mode="graph"),
                                           {"G": nn.Dense(2, 2)}, temporary=True)
    folder = compile_cache.caching_folder()
    assert os.path.dirname(folder) == str(tmp_path) and os.path.isdir(folder)
    assert line == f"compile cache: {folder}, for this run only (compile_cache=false)"
    assert os.environ["MS_COMPILER_CACHE_PATH"] == folder + os.sep
    compile_cache.stop_caching()
    assert not os.path.exists(folder) and compile_cache.caching_folder() is None


def test_a_failed_separate_compile_leaves_nothing_to_load(tmp_path, monkeypatch):
    """The child process fails (here: its dataset folder is missing): train() is told so, and whatever the
    child wrote is removed, so that this process compiles the step itself."""
    from common import drivers
    from pix2pix.src.spec import Pix2PixSpec
    spec = Pix2PixSpec()
    cfg = drivers.parse(spec, [f"--dataroot={tmp_path / 'missing'}", "--num_workers=0"])
    folder = tmp_path / "graph"
    (folder / "rank_0" / "graph_cache").mkdir(parents=True)
    (folder / "rank_0" / "graph_cache" / "compile_cache_0.mindir").write_bytes(b"a partial graph")
    line = drivers._separate_compile(spec, cfg, str(folder))
    assert line.startswith("separate compile: the child process failed (") and "missing" in line
    assert line.endswith("compiling in this process") and not (folder / "rank_0").exists()
