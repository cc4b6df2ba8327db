"""Paint-a-scene demo: label-map reading on hand-derived cases, then the page in a real headless browser.

The browser tests start ``bash scripts/run_demo.sh pix2pix`` on an empty outputs folder (so it trains the
tiny demo model first), drive Debian's chromium through Playwright, and compare the page's outputs with
``pix2pix/predict.py`` on the same label maps, and bucket-fill a region of a demo scene by a click. They
skip when chromium, Playwright or gradio is missing (``pip install -r requirements-demo.txt``; ``apt-get
install chromium``). The last two switch the page to OSMIS and to CoCosNet (tiny saved networks) and compare
the samples, the output and the warped exemplar with their predict. The page's screenshots (``demo.png``,
``demo_cocosnet.png``) are saved under the tests' tmp folders; SYNTHZOO_DEMO_SCREENSHOTS=DIR copies them
there too. CoCosNet and OSMIS are also checked in process against their predict and their ONNX exports with
tiny freshly built networks. (docs/demo.png and docs/demo_cocosnet.png show the same page with
better-trained models: 64x64 pix2pix, ngf 32, 20 demo epochs; the 64x64 CoCosNet demo model, 10 epochs.)
"""
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from common import cityscapes as cs
from common.io import read_image, write_image
from demo.adapters import IGNORE, adapter_for, distinct_colours
from demo.core import colors_to_ids, flood_fill, painting_to_ids

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = "/usr/bin/chromium"
SIZE = 64
TINY = ["--netG=unet_64", "--ngf=8", "--ndf=8", "--crop_size=64", "--load_size=72", "--demo_size=64",
        "--demo_train=16", "--demo_val=4", "--num_workers=0"]
PALETTE = np.array([(128, 64, 128), (70, 70, 70), (0, 0, 142), (0, 0, 0)], np.uint8)  # 3 classes + void
CAR = (0, 0, 142)


def test_colors_to_ids_exact_match_void_last():
    ids = np.array([[0, 1, 2], [IGNORE, 2, 0]])
    rgb = np.zeros((2, 3, 3), np.uint8)
    for (y, x), i in np.ndenumerate(ids):
        rgb[y, x] = PALETTE[3 if i == IGNORE else i]
    np.testing.assert_array_equal(colors_to_ids(rgb, PALETTE), ids)


def test_colors_to_ids_names_unknown_colours_and_the_file():
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[0, :2] = (1, 2, 3)
    rgb[3, 3] = (255, 255, 254)
    with pytest.raises(ValueError, match=r"label map a\.png: 3 pixels .*2 colours: #010203 \(2 px\), #fffffe \(1 px\)"):
        colors_to_ids(rgb, PALETTE, "label map a.png")


def test_painting_snaps_antialiased_edges_transparency_is_void_and_resizes_nearest():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (128, 64, 128)
    rgba[..., 3] = 255
    rgba[0:2, 2:4, :3] = (60, 60, 90)      # a blend of building and car edges: nearest is building (70, 70, 70)
    rgba[2:4, 0:2, :3] = (10, 10, 120)     # nearest is car
    rgba[2:4, 2:4, 3] = 0                  # never painted
    np.testing.assert_array_equal(painting_to_ids(rgba, PALETTE, (2, 2)), [[0, 1], [2, IGNORE]])


def test_flood_fill_takes_the_4_connected_region_of_the_point_only():
    ids = np.array([[0, 0, 1, 2],
                    [1, 0, 1, 2],
                    [0, 1, 0, 0],
                    [0, 1, 0, IGNORE]])
    # (1, 1) and (2, 2) are both 0 but touch at a corner only: two regions
    np.testing.assert_array_equal(flood_fill(ids, (0, 0), 5), [[5, 5, 1, 2], [1, 5, 1, 2], [0, 1, 0, 0], [0, 1, 0, IGNORE]])
    np.testing.assert_array_equal(flood_fill(ids, (3, 2), IGNORE),
                                  [[0, 0, 1, 2], [1, 0, 1, 2], [0, 1, IGNORE, IGNORE], [0, 1, IGNORE, IGNORE]])
    np.testing.assert_array_equal(flood_fill(ids, (3, 3), 2), np.where(np.arange(16).reshape(4, 4) == 15, 2, ids))
    np.testing.assert_array_equal(ids[0], [0, 0, 1, 2])  # the input is left as it was
    with pytest.raises(ValueError, match=r"fill point \(x=4, y=0\) is outside the 4x4 label map"):
        flood_fill(ids, (0, 4), 1)


def test_cocosnet_ade20k_picker_has_the_150_classes_in_distinct_colours():
    from types import SimpleNamespace
    from common.classes import ade20k_table
    adapter, cfg = adapter_for("cocosnet"), SimpleNamespace(label_nc=151, class_table="", dataroot="")
    names, palette = adapter.class_names(cfg), adapter.palette(cfg)
    assert len(names) == len(palette) == 152 and adapter.label_set(cfg) == "ADE20K 150 classes + other"
    assert (names[1], names[7], names[49], names[150]) == ("wall", "road", "skyscraper", "flag")
    assert tuple(palette[1]) == (120, 120, 120) and tuple(palette[150]) == (92, 0, 255)
    standard = ade20k_table().colors
    assert tuple(standard[7]) == tuple(standard[49]) == (140, 140, 140)  # the published repeat
    assert tuple(palette[7]) == (140, 140, 140) and tuple(palette[49]) == (140, 140, 141)
    assert len({tuple(c) for c in palette}) == 152 and tuple(palette[-1]) == (0, 0, 0)
    np.testing.assert_array_equal(distinct_colours([[1, 2, 3], [1, 2, 3], [1, 2, 4], [9, 9, 255], [9, 9, 255]]),
                                  [[1, 2, 3], [1, 2, 4], [1, 2, 5], [9, 9, 255], [9, 9, 254]])
    np.testing.assert_array_equal(distinct_colours([[0, 0, 0], [1, 1, 1]], taken=[(0, 0, 0)]), [[0, 0, 1], [1, 1, 1]])


def test_crn_ade20k_picker_is_crns_label_palette_made_distinct():
    """CRN with 151 classes: the ADE20K names, and crn's label_palette colours but for the two that would name two
    classes on the page (skyscraper = road; "other" black = void)."""
    from types import SimpleNamespace
    from crn.src.utils import label_palette
    adapter, cfg = adapter_for("crn"), SimpleNamespace(num_classes=151, class_table="", dataroot="")
    names, palette, standard = adapter.class_names(cfg), adapter.palette(cfg), label_palette(151)
    assert len(names) == len(palette) == len(standard) == 152 and adapter.label_set(cfg) == "ADE20K 150 classes + other + void"
    assert (names[0], names[7], names[49], names[-1]) == ("other", "road", "skyscraper", "void")
    changed = np.flatnonzero((palette != standard).any(1)).tolist()
    assert changed == [0, 49] and tuple(palette[0]) == (0, 0, 1) and tuple(palette[49]) == (140, 140, 141)
    assert len({tuple(c) for c in palette}) == 152 and tuple(palette[-1]) == (0, 0, 0)
    cs_cfg = SimpleNamespace(num_classes=19, class_table="", dataroot="")
    np.testing.assert_array_equal(adapter.palette(cs_cfg), label_palette(19))  # Cityscapes: unchanged
    assert adapter.label_set(cs_cfg) == "Cityscapes 19 classes + void"


def test_cocosnet_onnx_backend_names_the_files_it_runs(tmp_path):
    from common import drivers
    from demo.core import DemoModel
    spec = adapter_for("cocosnet").spec()
    with pytest.raises(ValueError, match=r"runs the files \*_correspondence\.onnx \+ \*_translation\.onnx of one export"):
        DemoModel("cocosnet", drivers.parse(spec, [f"--ckpt={tmp_path / 'c_composite.onnx'}"]), "onnx")
    (tmp_path / "c_correspondence.onnx").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="c_translation.onnx is missing"):
        DemoModel("cocosnet", drivers.parse(spec, [f"--ckpt={tmp_path / 'c_correspondence.onnx'}"]), "onnx")


def test_parse_args_defaults_to_localhost_and_rejects_bare_words():
    from demo.app import parse_args
    name, options, ckpt, rest = parse_args(["crn", "--ckpt=x.ckpt", "--port=9", "--size=32"])
    assert (name, ckpt, rest, options["host"], options["port"]) == ("crn", "x.ckpt", ["--size=32"], "127.0.0.1", "9")
    with pytest.raises(ValueError, match="unexpected argument 'foo'"):
        parse_args(["pix2pix", "foo"])
    with pytest.raises(ValueError, match="has no demo adapter"):
        parse_args(["nosuch"])
    for port in ("abc", "0", "70000"):  # refused before the demo model is trained, not when the server starts
        with pytest.raises(ValueError, match=f"--port={port}: expected a port number"):
            parse_args(["pix2pix", f"--port={port}"])


def test_switched_models_take_the_command_lines_runtime_keys_only():
    from demo.app import model_argv
    from demo.core import model_config
    argv = ["--mode=pynative", "--netG=unet_64", "--cpu_conv=native", "--device_target=CPU", "--precision=f32"]
    assert model_argv("pix2pix", "pix2pix", argv) == argv
    assert model_argv("cocosnet", "pix2pix", argv) == ["--mode=pynative", "--cpu_conv=native", "--device_target=CPU",
                                                       "--precision=f32"]
    cfg = model_config("cocosnet", "outputs", model_argv("cocosnet", "pix2pix", argv))
    assert (cfg.mode, cfg.cpu_conv, cfg.output_dir) == ("pynative", "native", os.path.join("outputs", "cocosnet"))


def browser_missing():
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} missing (apt-get install chromium)"
    for module in ("playwright", "gradio"):
        if importlib.util.find_spec(module) is None:
            return f"{module} missing (pip install -r requirements-demo.txt)"
    return None


needs_browser = pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc):
    """SIGTERM the server's process group, SIGKILL after 10 s; bounded."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_cache):
    """run_demo.sh on an empty outputs folder: trains the tiny demo model, then serves on 127.0.0.1.

    Two steps from a wide init (init_gain 0.1) leave a generator whose output depends strongly on the
    label map, so comparing outputs with predict.py compares content, not a constant grey. In PyNative, for
    every model the page loads (``--mode`` is a runtime key): the page is the subject here, and graph compiles
    of the models it switches to took minutes of the suite (graph-mode serving: the CRN and OSMIS adapter tests).
    """
    outputs = tmp_path_factory.mktemp("demo_outputs")
    port = free_port()
    log_path = outputs / "server.log"
    env = dict(os.environ, SYNTHZOO_OUTPUTS=str(outputs), GRADIO_ANALYTICS_ENABLED="False",
               GRADIO_TEMP_DIR=str(outputs / "gradio"))
    with open(log_path, "w") as log:
        proc = subprocess.Popen(["bash", "scripts/run_demo.sh", "pix2pix", f"--port={port}", "--eval_protocol=eval",
                                 "--max_steps=2", "--init_gain=0.1", "--mode=pynative"] + TINY, cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 240
        while "serving on" not in log_path.read_text():
            assert proc.poll() is None and time.time() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.5)
        yield {"url": f"http://127.0.0.1:{port}/", "outputs": outputs, "log": log_path, "env": env}
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60000)
            page.goto(server["url"])
            page.wait_for_selector("#canvas canvas")
            yield page
        finally:
            browser.close()


class Requests:
    """Counts the page's generate requests: the status line names each by number."""
    count = 0


def generate(page, button):
    """Click a generate button; wait for the status of that request; (ok, status text)."""
    Requests.count += 1
    page.click(button)
    page.wait_for_function("n => document.querySelector('#status').innerText.toLowerCase().includes('request ' + n)",
                           arg=Requests.count)
    text = page.inner_text("#status")
    return "Error" not in text, text


def upload(page, path):
    page.get_by_role("tab", name="Upload a label map").click()
    clear = page.locator("#label-file button[aria-label='Clear']")
    if clear.count():
        clear.click()
    page.set_input_files("#label-file input[type=file]", str(path))
    page.wait_for_selector(f"#label-file td.filename[aria-label='{os.path.basename(str(path))}']")  # upload done
    return generate(page, "#generate-file")


def download(page, suffix, dest):
    """Fetch the download link ending in ``suffix`` from the page's file list into ``dest``."""
    links = page.eval_on_selector_all("#downloads a", "els => els.map(e => e.href)")
    href = [link for link in links if link.endswith(suffix)]
    assert href, links
    dest.write_bytes(page.request.get(href[0]).body())
    return read_image(str(dest))


def predict(server, inputs, out):
    ckpt = server["outputs"] / "pix2pix" / "ckpt"
    proc = subprocess.run([sys.executable, "pix2pix/predict.py", f"--ckpt={ckpt}", f"--input={inputs}",
                           "--eval_protocol=eval", f"--output_dir={out}"] + TINY, cwd=REPO, env=server["env"],
                          capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_browser
def test_page_loads_after_training_the_demo_model(server, page):
    assert "training the built-in demo model first" in server["log"].read_text()
    assert page.title() == "synthzoo: paint a scene"
    assert "pix2pix (MindSpore" in page.inner_text("#status") and "64x64" in page.inner_text("#status")
    assert page.locator("#legend .chip").count() == cs.NUM_CLASSES + 1


@needs_browser
def test_painted_stroke_and_uploaded_label_map_match_predict(server, page, tmp_path):
    # a car-coloured stroke across the sky of the initial scene (render_scene seed 0)
    page.click("#canvas button[aria-label='Brush']")
    page.click("#canvas button[aria-label='Color']")
    page.click(f"#canvas menu.swatch button[style*='rgb{CAR}']")
    page.click("#canvas button[aria-label='Color']")  # closes the swatch menu, which lies over the canvas
    box = page.locator("#canvas canvas").first.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 20, cy - 60)
    page.mouse.down()
    page.mouse.move(cx + 120, cy - 60, steps=20)
    page.mouse.up()
    ok, status = generate(page, "#generate-paint")
    assert ok, status
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    painted = download(page, "_label.png", inputs / "painted.png")
    painted_out = download(page, f"_{Requests.count:05d}.png", tmp_path / "painted_out.png")
    from common.demo_data import render_scene
    scene = cs.colorize(render_scene(0, SIZE, SIZE)[1])
    stroke = np.all(painted == CAR, axis=-1) & ~np.all(scene == CAR, axis=-1)
    assert stroke.sum() > 40 and stroke.any(axis=1).sum() <= 12  # a horizontal band of car pixels was painted

    label = cs.colorize(render_scene(3, SIZE, SIZE)[1])
    write_image(str(inputs / "scene3.png"), label)
    ok, status = upload(page, inputs / "scene3.png")
    assert ok, status
    np.testing.assert_array_equal(download(page, "_label.png", tmp_path / "scene3_label.png"), label)
    uploaded_out = download(page, f"_{Requests.count:05d}.png", tmp_path / "scene3_out.png")
    assert "ms model time (MindSpore, 1 image(s) of 64x64)" in page.inner_text("#latency")

    predict(server, inputs, tmp_path / "pred")
    for mine, name in ((painted_out, "painted"), (uploaded_out, "scene3")):
        ref = read_image(str(tmp_path / "pred" / "predict" / f"{name}.png"))
        assert mine.shape == ref.shape == (SIZE, SIZE, 3)
        assert np.abs(mine.astype(int) - ref.astype(int)).max() <= 1, name
    assert np.abs(painted_out.astype(int) - uploaded_out.astype(int)).mean() > 3  # two label maps, two photos

    screenshot(page, tmp_path / "demo.png")


def screenshot(page, path):
    """The whole page as ``path`` (a test artifact), copied into $SYNTHZOO_DEMO_SCREENSHOTS when set."""
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10000
    if os.environ.get("SYNTHZOO_DEMO_SCREENSHOTS"):
        shutil.copy(path, os.path.join(os.environ["SYNTHZOO_DEMO_SCREENSHOTS"], path.name))


def image_point(page, selector, x, y):
    """Page coordinates of pixel (x, y) of the image ``selector`` shows with ``object-fit: contain``."""
    box = page.eval_on_selector(selector, """img => {
        const r = img.getBoundingClientRect(), s = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight);
        return {left: r.left + (r.width - s * img.naturalWidth) / 2, top: r.top + (r.height - s * img.naturalHeight) / 2,
                scale: s};
    }""")
    return box["left"] + (x + 0.5) * box["scale"], box["top"] + (y + 0.5) * box["scale"]


@needs_browser
def test_bucket_fill_fills_the_clicked_region_with_the_class(server, page, tmp_path):
    from common.demo_data import render_scene
    page.get_by_role("tab", name="Paint").click()
    page.click("#scene")  # the first press shows scene 1
    page.click("#fill-class input")
    page.get_by_role("option", name="car", exact=True).click()
    old = page.get_attribute("#fill-view img", "src")
    scale = 512 // SIZE  # the canvas and its fill view show each label pixel as scale x scale
    page.mouse.click(*image_point(page, "#fill-view img", 10 * scale + 3, 2 * scale + 3))  # label pixel (2, 10): sky
    page.wait_for_function("old => document.querySelector('#fill-view img').src !== old", arg=old)
    ok, status = generate(page, "#generate-paint")
    assert ok, status
    filled = download(page, "_label.png", tmp_path / "filled.png")
    scene = render_scene(1, SIZE, SIZE)[1].astype(np.int64)
    assert scene[2, 10] == cs.CLASS_NAMES.index("sky")
    np.testing.assert_array_equal(filled, cs.colorize(flood_fill(scene, (2, 10), cs.CLASS_NAMES.index("car"))))


@needs_browser
def test_bad_inputs_are_messages_and_the_server_keeps_serving(server, page, tmp_path):
    from common.demo_data import render_scene
    label = cs.colorize(render_scene(4, SIZE, SIZE)[1])
    odd = label.copy()
    odd[5, 5:8] = (1, 2, 3)
    write_image(str(tmp_path / "odd.png"), odd)
    write_image(str(tmp_path / "small.png"), label[:32, :32])
    (tmp_path / "notes.txt").write_text("not an image")
    for path, message in ((tmp_path / "odd.png", "3 pixels have colours outside the model's palette (1 colours: #010203"),
                          (tmp_path / "small.png", "is 32x32 (WxH) but the loaded model takes 64x64"),
                          (tmp_path / "notes.txt", "not an image")):
        ok, status = upload(page, path)
        assert not ok and message in status, status

    import mindspore.nn as nn
    from common.checkpoint import save_cell
    save_cell(nn.Dense(2, 2), str(tmp_path / "G.ckpt"), {"model": "crn"})
    page.fill("#ckpt textarea", str(tmp_path / "G.ckpt"))
    page.click("#load")
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('holds a crn network')")

    write_image(str(tmp_path / "good.png"), label)
    ok, status = upload(page, tmp_path / "good.png")
    assert ok and "pix2pix (MindSpore" in status, status


@needs_browser
def test_onnx_backend_matches_predict(server, page, tmp_path):
    env = server["env"]
    proc = subprocess.run(["bash", "scripts/run_export.sh", "pix2pix", "ONNX", "--export_norm=running_stats"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    page.fill("#ckpt textarea", "")
    page.get_by_label("ONNX (onnxruntime)").check()
    page.click("#load")
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('pix2pix (ONNX')")
    from common.demo_data import render_scene
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    write_image(str(inputs / "scene6.png"), cs.colorize(render_scene(6, SIZE, SIZE)[1]))
    ok, status = upload(page, inputs / "scene6.png")
    assert ok and "pix2pix (ONNX" in status, status
    assert "model time (ONNX, 1 image(s) of 64x64)" in page.inner_text("#latency")
    mine = download(page, f"_{Requests.count:05d}.png", tmp_path / "scene6_out.png")
    predict(server, inputs, tmp_path / "pred")  # eval protocol: running statistics, no dropout, as exported
    ref = read_image(str(tmp_path / "pred" / "predict" / "scene6.png"))
    assert mine.shape == ref.shape and np.abs(mine.astype(int) - ref.astype(int)).max() <= 1


def test_crn_adapter_gives_the_k_images_of_predict_with_void(tmp_path):
    from common.checkpoint import save_cell
    from common.drivers import parse, predict
    from common.demo_data import render_scene
    from crn.src.spec import CRNSpec
    from demo.core import DemoModel, model_config
    spec = CRNSpec()
    cfg = parse(spec, ["--size=32", "--width_mult=0.0625", "--num_outputs=3"])
    ckpt = tmp_path / "G.ckpt"
    save_cell(spec.build_inference(cfg)["G"], str(ckpt), dict(spec.arch(cfg), model="crn"))
    model = DemoModel("crn", model_config("crn", str(tmp_path), ckpt=str(ckpt)))
    ids = render_scene(2, 32, 64)[1].astype(np.int64)
    ids[:4] = IGNORE
    images, ms = model.run(ids)
    assert model.size == (32, 64) and len(images) == 3 and ms > 0
    label = tmp_path / "label.png"
    write_image(str(label), model.adapter.colorize(model.cfg, ids))
    predict(spec, parse(spec, ["--label_format=color", f"--ckpt={ckpt}", f"--input={label}"],
                        output_dir=str(tmp_path / "pred")))
    for i, image in enumerate(images):
        ref = read_image(str(tmp_path / "pred" / "predict" / f"label_k{i}.png"))
        np.testing.assert_array_equal(image, ref)
    assert images[0].std() > 1 and np.abs(images[0].astype(int) - images[1].astype(int)).mean() > 1


def save_tiny(spec, argv, out_dir):
    """Freshly built inference networks of ``spec`` saved as ``out_dir/ckpt`` (one snapshot, the right metadata)."""
    from common import drivers
    from common.checkpoint import save_cell
    cfg = drivers.parse(spec, argv + [f"--output_dir={out_dir}"])
    snapshot = os.path.join(str(out_dir), "ckpt", "step_1")
    os.makedirs(snapshot)
    for component, net in spec.build_inference(cfg).items():
        save_cell(net, os.path.join(snapshot, f"{component}.ckpt"), dict(spec.arch(cfg), model=spec.name))
    with open(os.path.join(str(out_dir), "ckpt", "latest"), "w") as f:
        f.write("step_1")
    return drivers.parse(spec, [f"--output_dir={out_dir}"])


def test_cocosnet_adapter_matches_predict_and_rejects_a_bad_exemplar(tmp_path):
    import mindspore as ms
    from common import drivers
    from common.demo_data import STYLED_LABEL_NC
    from demo.core import DemoModel, read_exemplar
    spec = adapter_for("cocosnet").spec()
    save_tiny(spec, [f"--label_nc={STYLED_LABEL_NC}"] + COCO_TINY, tmp_path / "run")
    # PyNative for both sides (the same kernels, so equal outputs): two graph compiles took 2.5 minutes in the suite
    cfg = drivers.parse(spec, [f"--output_dir={tmp_path / 'run'}", "--mode=pynative"])
    try:
        model = DemoModel("cocosnet", cfg, log=lambda *_: None)
        assert model.size == (64, 64) and len(model.palette) == STYLED_LABEL_NC + 1
        rng = np.random.default_rng(3)
        ids = np.kron(rng.integers(0, STYLED_LABEL_NC, (4, 4)), np.ones((16, 16), np.int64))
        ids[:16, :16] = IGNORE  # void paints as class 0 ("other")
        exemplar = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
        write_image(str(tmp_path / "ex.png"), exemplar)
        cv2_write_ids(tmp_path / "label.png", np.where(ids == IGNORE, 0, ids))
        images, _ = model.run(ids, read_exemplar(model.adapter, str(tmp_path / "ex.png")))

        pcfg = drivers.parse(spec, [f"--output_dir={tmp_path / 'run'}", f"--exemplar={tmp_path / 'ex.png'}",
                                    "--mode=pynative"])
        nets, _ = drivers.load_inference(spec, pcfg, drivers._runtime(pcfg).conv_impl)  # as predict.py
        os.makedirs(tmp_path / "predict")
        spec.predict(pcfg, nets, [str(tmp_path / "label.png")], str(tmp_path / "predict"))
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
    assert len(images) == 2 and model.adapter.output_names(model.cfg, 2) == ["output", "warped exemplar"]
    assert images[0].shape == (64, 64, 3) and images[1].std() > 0  # the warped exemplar is no constant image
    np.testing.assert_array_equal(images[0], read_image(str(tmp_path / "predict" / "label.png")))
    np.testing.assert_array_equal(images[1], read_image(str(tmp_path / "predict" / "label_warped.png")))

    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"exemplar notes\.txt is not an image"):
        read_exemplar(model.adapter, str(tmp_path / "notes.txt"))
    with pytest.raises(ValueError, match="upload one"):
        model.run(ids, None)


def test_osmis_adapter_samples_what_predict_writes(tmp_path):
    from common import drivers
    from demo.core import DemoModel
    spec = adapter_for("osmis").spec()
    cfg = save_tiny(spec, ["--train_size=32x48", "--noise_shape=2x3", "--num_blocks_g=5", "--num_blocks_d=4",
                           "--num_blocks_d0=2", "--num_mask_channels=3", "--ch_G=2", "--ch_D=2"], tmp_path / "osmis")
    model = DemoModel("osmis", cfg, log=lambda *_: None)
    assert model.size == (32, 48) and not model.adapter.takes_label_map
    images, captions, _ = model.sample(2, 5)
    assert captions == ["sample 0", "sample 0 mask", "sample 1", "sample 1 mask"]

    pcfg = drivers.parse(spec, [f"--output_dir={tmp_path / 'osmis'}", "--num_generated=2", "--seed=5"])
    nets, _ = drivers.load_inference(spec, pcfg, drivers._runtime(pcfg).conv_impl)  # as predict.py
    os.makedirs(tmp_path / "predict")
    spec.predict(pcfg, nets, [], str(tmp_path / "predict"))
    for i in range(2):
        np.testing.assert_array_equal(images[2 * i], read_image(str(tmp_path / "predict" / f"{i:04d}.png")))
        np.testing.assert_array_equal(images[2 * i + 1], read_image(str(tmp_path / "predict" / f"{i:04d}_mask.png")))
    with pytest.raises(ValueError, match="choose 1 to 64"):
        model.sample(0, 5)

    pytest.importorskip("gradio")
    from demo.app import DemoServer, build_app
    server = DemoServer(str(tmp_path), "osmis", log=lambda *_: None)
    first, gallery, files, latency = server.sample(server.current, 2, 5, 1)
    assert [caption for _, caption in gallery] == captions and files == [path for path, _ in gallery]
    np.testing.assert_array_equal(read_image(first), images[0])
    assert "ms** model time" in latency
    build_app(server)  # the page without a canvas input builds


COCO_TINY = ["--size=64", "--ngf=4", "--corr_channels=8", "--spade_hidden=8"]


def close_images(mine, ref):
    """uint8 images of two float computations that agree to ~1e-4: equal but for rare rounding steps of 1."""
    diff = np.abs(mine.astype(int) - ref.astype(int))
    return mine.shape == ref.shape and diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_osmis_onnx_backend_samples_as_mindspore(tmp_path):
    """OSMIS's ``export.py`` file (the EMA generator: noise in, image and mask out) run by onnxruntime gives
    the MindSpore samples for the same request (CoCosNet's pair: tests/test_cocosnet_export.py)."""
    pytest.importorskip("onnxruntime")
    from common import drivers
    from demo.core import DemoModel
    spec = adapter_for("osmis").spec()
    cfg = save_tiny(spec, OSMIS_TINY, tmp_path / "osmis")
    drivers.export(spec, drivers.parse(spec, [f"--output_dir={cfg.output_dir}", "--export_format=ONNX"]))
    onnx_model = DemoModel("osmis", drivers.parse(spec, [f"--output_dir={cfg.output_dir}"]), "onnx", log=lambda *_: None)
    assert "osmis (ONNX " in onnx_model.describe() and onnx_model.size == (32, 48)
    mine, captions, _ = onnx_model.sample(2, 5)
    ref, ref_captions, _ = DemoModel("osmis", cfg, log=lambda *_: None).sample(2, 5)
    assert captions == ref_captions and len(mine) == 4
    for a, b in zip(mine, ref):
        assert close_images(a, b) and b.std() > 0
    os.rename(onnx_model.onnx_path, tmp_path / "G.onnx")
    with pytest.raises(FileNotFoundError, match="no ONNX export of osmis"):
        DemoModel("osmis", drivers.parse(spec, [f"--output_dir={cfg.output_dir}"]), "onnx")
    with pytest.raises(FileNotFoundError, match="G.onnx has no G.json beside it"):
        DemoModel("osmis", drivers.parse(spec, [f"--ckpt={tmp_path / 'G.onnx'}"]), "onnx")


def cv2_write_ids(path, ids):
    import cv2
    cv2.imwrite(str(path), ids.astype(np.uint8))


OSMIS_TINY = ["--train_size=32x48", "--noise_shape=2x3", "--num_blocks_g=5", "--num_blocks_d=4", "--num_blocks_d0=2",
              "--num_mask_channels=3", "--ch_G=2", "--ch_D=2"]


@needs_browser
def test_page_switches_to_osmis_and_samples_what_predict_writes(server, page, tmp_path):
    from common import drivers
    spec = adapter_for("osmis").spec()
    cfg = save_tiny(spec, OSMIS_TINY, server["outputs"] / "osmis")
    page.click("#model input")
    page.get_by_role("option", name="osmis").click()
    page.click("#backend label:has-text('MindSpore')")  # the ONNX test may have left ONNX chosen
    page.click("#load")
    try:
        page.wait_for_function("() => document.querySelector('#status').innerText.includes('osmis (MindSpore')")
    except Exception:  # the page's message and the server log say why
        raise AssertionError(page.inner_text("#status") + server["log"].read_text()[-2000:])
    page.wait_for_selector("#generate-paint", state="hidden", timeout=10000)
    assert page.locator("#sample").is_visible()
    page.fill("#sample-count input", "2")
    page.fill("#sample-seed input", "5")
    ok, status = generate(page, "#sample")
    assert ok, status
    page.wait_for_function("() => document.querySelectorAll('#gallery img').length >= 4")
    out = tmp_path / "predict"
    os.makedirs(out)
    pcfg = drivers.parse(spec, [f"--ckpt={cfg.output_dir}/ckpt", "--num_generated=2", "--seed=5"])
    nets, _ = drivers.load_inference(spec, pcfg, drivers._runtime(pcfg).conv_impl)  # as predict.py
    spec.predict(pcfg, nets, [], str(out))
    np.testing.assert_array_equal(download(page, "_k2.png", tmp_path / "k2.png"), read_image(str(out / "0001.png")))
    np.testing.assert_array_equal(download(page, "_k1.png", tmp_path / "k1.png"),
                                  read_image(str(out / "0000_mask.png")))


@needs_browser
def test_page_switches_to_cocosnet_shows_the_warped_exemplar_and_matches_predict(server, page, tmp_path):
    import mindspore as ms
    from common import drivers
    from common.demo_data import STYLED_LABEL_NC
    spec = adapter_for("cocosnet").spec()
    cfg = save_tiny(spec, [f"--label_nc={STYLED_LABEL_NC}"] + COCO_TINY, server["outputs"] / "cocosnet")
    page.fill("#ckpt textarea", "")  # the newest snapshot under outputs/cocosnet
    page.click("#model input")
    page.get_by_role("option", name="cocosnet").click()
    page.click("#backend label:has-text('MindSpore')")
    page.click("#load")
    try:
        page.wait_for_function("() => document.querySelector('#status').innerText.includes('cocosnet (MindSpore')",
                               timeout=180000)
    except Exception:
        raise AssertionError(page.inner_text("#status") + server["log"].read_text()[-2000:])
    assert page.locator("#legend .chip").count() == STYLED_LABEL_NC + 1
    page.get_by_role("tab", name="Paint").click()  # the canvas shows a demo scene in CoCosNet's classes
    (tmp_path / "notes.txt").write_text("not an image")
    rng = np.random.default_rng(7)
    write_image(str(tmp_path / "exemplar.png"), np.kron(rng.integers(0, 256, (6, 5, 3)), np.ones((8, 8, 1))).astype(np.uint8))
    for name in ("notes.txt", "exemplar.png"):
        clear = page.locator("#exemplar button[aria-label='Clear']")
        if clear.count():
            clear.click()
        page.set_input_files("#exemplar input[type=file]", str(tmp_path / name))
        page.wait_for_selector(f"#exemplar td.filename[aria-label='{name}']")
        ok, status = generate(page, "#generate-paint")
        assert ok == (name == "exemplar.png") and (ok or "exemplar notes.txt is not an image" in status), status
    page.wait_for_function("() => document.querySelectorAll('#gallery img').length >= 2")
    assert "warped exemplar" in page.inner_text("#gallery")
    label = download(page, "_label.png", tmp_path / "label.png")
    output = download(page, "_k0.png", tmp_path / "output.png")
    warped = download(page, "_k1.png", tmp_path / "warped.png")
    screenshot(page, tmp_path / "demo_cocosnet.png")

    # PyNative compiles nothing (the runtime sets the mode from the config): this test 64 -> 24 s alone on 2 cores
    pcfg = drivers.parse(spec, [f"--ckpt={cfg.output_dir}/ckpt", f"--exemplar={tmp_path / 'exemplar.png'}",
                                "--mode=pynative"])
    os.makedirs(tmp_path / "predict")
    try:
        nets, _ = drivers.load_inference(spec, pcfg, drivers._runtime(pcfg).conv_impl,
                                            log=lambda *_: None)  # label_nc etc. from the checkpoint
        ids = colors_to_ids(label, adapter_for("cocosnet").palette(pcfg))
        cv2_write_ids(tmp_path / "scene.png", np.where(ids == IGNORE, 0, ids))
        spec.predict(pcfg, nets, [str(tmp_path / "scene.png")], str(tmp_path / "predict"))
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
    for mine, name in ((output, "scene.png"), (warped, "scene_warped.png")):
        ref = read_image(str(tmp_path / "predict" / name))
        assert mine.shape == ref.shape == (SIZE, SIZE, 3) and np.abs(mine.astype(int) - ref.astype(int)).max() <= 1
    assert warped.std() > 0 and len(np.unique(ids)) > 2
