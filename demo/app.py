"""Paint-a-scene web demo (gradio): paint a label map in a model's class palette, get its photo
(CoCosNet: with an uploaded exemplar; OSMIS takes no label map and samples N image+mask pairs).

Usage: python -m demo.app [MODEL] [--ckpt=PATH] [--host=127.0.0.1] [--port=7860] [--backend=mindspore|onnx]
                          [--key=value ...]
(or ``bash scripts/run_demo.sh``). ``--key=value`` words are MODEL's config keys, as for its predict.py
(e.g. ``--eval_protocol=eval``); when MODEL has no checkpoint under ``<outputs>/MODEL/ckpt`` the
built-in demo model is trained first with them. The runtime keys among them (``RUNTIME_KEYS``: device, execution
mode, CPU convolution path and precision; one process holds one MindSpore runtime) apply to every model the page
switches to as well. Each model is loaded once, on first use; a bad input or checkpoint becomes a message on the
page and the server keeps serving.
"""
import atexit
import html
import os
import shutil
import signal
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # python demo/app.py works too

from common.demo_data import render_scene  # noqa: E402
from common.drivers import run_cli  # noqa: E402
from common.io import write_image  # noqa: E402
from demo.adapters import ADAPTERS, IGNORE, adapter_for  # noqa: E402
from demo.core import (DemoModel, check_size, colors_to_ids, ensure_checkpoint, flood_fill, model_config,  # noqa: E402
                       painting_to_ids, read_exemplar)

__all__ = ["DemoServer", "build_app", "launch", "main", "model_argv"]

BACKENDS = {"MindSpore": "mindspore", "ONNX (onnxruntime)": "onnx"}
MIN_CANVAS_WIDTH = 512
DEMO_OPTIONS = ("host", "port", "backend")
RUNTIME_KEYS = ("device_target", "mode", "cpu_conv", "precision")


def model_argv(name, initial, argv):
    """The config overrides model ``name`` is loaded with: all of ``argv`` for the ``initial`` model, only its
    runtime keys (:data:`RUNTIME_KEYS`) for the others (``--device_target=GPU`` serves every model on the GPU)."""
    if name == initial:
        return list(argv)
    return [word for word in argv if word[2:].split("=", 1)[0] in RUNTIME_KEYS]


class DemoServer:
    """The page's state: models loaded once per (name, checkpoint, backend), outputs written to ``work_dir``.

    Args:
        outputs: the outputs root (``<outputs>/<model>/ckpt`` holds each model's snapshots).
        initial: the model shown first, with ``argv`` (its config overrides; their runtime keys also for the
            models the page switches to, :func:`model_argv`) and ``ckpt``.
    """

    def __init__(self, outputs, initial, argv=(), ckpt="", backend="mindspore", log=print):
        self.outputs, self.initial, self.argv, self.log = outputs, initial, list(argv), log
        self.models = {}
        self.work_dir = tempfile.mkdtemp(prefix="synthzoo_demo_")
        atexit.register(shutil.rmtree, self.work_dir, ignore_errors=True)
        self.requests = 0
        self.current = self.model(initial, ckpt, backend)

    def config(self, name, ckpt=""):
        return model_config(name, self.outputs, model_argv(name, self.initial, self.argv), ckpt)

    def model(self, name, ckpt="", backend="mindspore"):
        """The loaded :class:`DemoModel` (cached: a model is loaded once, not per request)."""
        key = (name, ckpt.strip(), backend)
        if key not in self.models:
            self.models[key] = DemoModel(name, self.config(name, ckpt.strip()), backend, log=self.log)
        return self.models[key]

    def scene(self, model, seed):
        """A random street label map (the demo data's layouts) at the model's size, as ids."""
        _, ids = render_scene(int(seed), *model.size)
        return model.adapter.scene_ids(model.cfg, ids.astype(np.int64))

    def canvas_scale(self, model):
        return max(1, MIN_CANVAS_WIDTH // model.size[1])

    def canvas_image(self, model, ids):
        """ids -> the colour image the canvas shows (scaled up by :meth:`canvas_scale`, nearest)."""
        f = self.canvas_scale(model)
        return np.kron(model.adapter.colorize(model.cfg, ids), np.ones((f, f, 1), np.uint8))

    def canvas_ids(self, model, value):
        """The canvas editor's value -> ``[H, W]`` ids at the model's size (an empty canvas is all void)."""
        if value is None or value.get("composite") is None:
            return np.full(model.size, IGNORE, np.int64)
        return painting_to_ids(value["composite"], model.palette, model.size)

    def class_id(self, model, class_name):
        """A name of the class picker -> its id (the last entry, void, is IGNORE)."""
        names = model.adapter.class_names(model.cfg)
        if class_name not in names:
            raise ValueError(f"class '{class_name}' is not one of {model.name}'s classes; pick one in the list")
        index = names.index(class_name)
        return IGNORE if index == len(names) - 1 else index

    def bucket_fill(self, model, value, class_name, xy):
        """Fill the region of the canvas ``value`` holding the clicked pixel ``xy`` = (x, y) of the
        :meth:`canvas_image` view with ``class_name`` -> the filled ``[H, W]`` ids."""
        f = self.canvas_scale(model)
        return flood_fill(self.canvas_ids(model, value), (int(xy[1]) // f, int(xy[0]) // f),
                          self.class_id(model, class_name))

    def translate(self, model, ids, number, exemplar=None):
        """Request ``number`` -> (first image path, gallery [(path, caption)], files to download, latency text)."""
        images, ms = model.run(ids, exemplar)
        stem = os.path.join(self.work_dir, f"{model.name}_{number:05d}")
        label_path = f"{stem}_label.png"
        write_image(label_path, model.adapter.colorize(model.cfg, ids))
        first, gallery, files, latency = self._write(model, stem, images,
                                                     model.adapter.output_names(model.cfg, len(images)), ms)
        return first, gallery, files + [label_path], latency

    def sample(self, model, n, seed, number):
        """A model without label maps: request ``number`` of ``n`` samples -> as :meth:`translate`."""
        images, captions, ms = model.sample(n, seed)
        return self._write(model, os.path.join(self.work_dir, f"{model.name}_{number:05d}"), images, captions, ms)

    def _write(self, model, stem, images, captions, ms):
        paths = []
        for i, image in enumerate(images):
            paths.append(f"{stem}_k{i}.png" if len(images) > 1 else f"{stem}.png")
            write_image(paths[-1], image)
        h, w = images[0].shape[:2]
        latency = (f"**{ms:.1f} ms** model time ({'ONNX' if model.onnx_path else 'MindSpore'}, "
                   f"{len(images)} image(s) of {w}x{h})")
        return paths[0], list(zip(paths, captions)), paths, latency


def legend_html(model):
    """The palette as coloured chips with class names."""
    names = model.adapter.class_names(model.cfg)
    chips = "".join(
        f'<span class="chip" title="{html.escape(n)}"><span style="background:rgb{tuple(int(c) for c in rgb)}">'
        f'</span>{html.escape(n)}</span>' for n, rgb in zip(names, model.palette))
    return f'<div class="legend">{chips}</div>'


def hex_colors(model):
    return ["#%02x%02x%02x" % tuple(int(c) for c in rgb) for rgb in model.palette]


CSS = """
.legend {display:flex; flex-wrap:wrap; gap:4px 10px; font-size:12px}
.chip {display:inline-flex; align-items:center; gap:4px}
.chip span {display:inline-block; width:14px; height:14px; border:1px solid #888}
#output img, #fill-view img {image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain}
"""


def build_app(server):
    """The gradio Blocks of ``server`` (a :class:`DemoServer`)."""
    import gradio as gr

    first = server.current

    def editor_value(model, ids):
        image = server.canvas_image(model, ids)
        return {"background": image, "layers": [], "composite": image}

    def editor(model, ids):
        """The canvas in ``model``'s palette (empty for a model without label maps: it stays hidden)."""
        h, w = model.size
        f = server.canvas_scale(model)
        colors = hex_colors(model) or ["#000000"]
        return gr.ImageEditor(
            value=editor_value(model, ids) if model.adapter.takes_label_map else None, label="Canvas (pick a class colour in the brush menu)", type="numpy",
            image_mode="RGBA", format="png", canvas_size=(w * f, h * f), fixed_canvas=True, layers=False,
            sources=["upload"], transforms=[], elem_id="canvas",
            brush=gr.Brush(colors=colors, default_color=colors[0], color_mode="fixed", default_size=max(4, 3 * f)),
            eraser=gr.Eraser(default_size=max(4, 3 * f)))

    def fail(message):
        return f'<div id="demo-error">Error in {html.escape(message)}</div>'

    def status_text(model):
        return f"Loaded: {html.escape(model.describe())}"

    def select_model(name, ckpt, backend):
        try:
            model = server.model(name, ckpt, BACKENDS[backend])
        except Exception as e:  # a bad checkpoint or missing export is a message; the page keeps the old model
            server.log(f"[demo] load {name} failed: {e}")
            return (fail(f"loading {name}: {e}"),) + tuple(gr.update() for _ in range(7))
        server.current = model
        names = model.adapter.class_names(model.cfg)
        paints = model.adapter.takes_label_map
        scene = server.scene(model, 0) if paints else None
        return (status_text(model), legend_html(model),
                editor(model, scene) if paints else gr.update(),
                server.canvas_image(model, scene) if paints else gr.update(),
                gr.update(choices=names, value=names[0] if names else None),
                gr.update(visible=model.adapter.needs_exemplar), gr.update(visible=paints),
                gr.update(visible=not paints))

    def respond(work):
        """Run ``work(model, number)`` -> (first image, gallery, files, latency) as the page's results."""
        model = server.current
        server.requests += 1
        number = server.requests
        try:
            first_path, gallery, files, latency = work(model, number)
        except Exception as e:  # bad input: message on the page, server keeps serving
            server.log(f"[demo] request {number} failed: {e}")
            return fail(f"request {number}: {e}"), gr.update(), gr.update(), gr.update(), gr.update()
        return (f"Request {number} done. {status_text(model)}", first_path,
                gr.update(value=gallery, visible=len(gallery) > 1), files, latency)

    def run_ids(get_ids, exemplar_path):
        def work(model, number):
            if not model.adapter.takes_label_map:
                raise ValueError(f"{model.name} samples from noise: use 'Sample' instead")
            ids = get_ids(model)
            return server.translate(model, ids, number, read_exemplar(model.adapter, exemplar_path))
        return respond(work)

    def from_noise(count, noise_seed):
        def work(model, number):
            if model.adapter.takes_label_map:
                raise ValueError(f"{model.name} translates label maps: paint or upload one instead")
            return server.sample(model, count, noise_seed, number)
        return respond(work)

    def from_painting(value, exemplar_path):
        def ids(model):
            if value is None or value.get("composite") is None:
                raise ValueError("the canvas is empty: paint a scene or press 'New random scene'")
            return server.canvas_ids(model, value)
        return run_ids(ids, exemplar_path)

    def from_file(path, exemplar_path):
        def ids(model):
            from common.io import read_image
            if not path:
                raise ValueError("upload a colour label map (PNG) first")
            source = f"label map {os.path.basename(path)}"
            rgb = read_image(path)
            check_size(rgb.shape, model.size, source)
            return colors_to_ids(rgb, model.palette, source)
        return run_ids(ids, exemplar_path)

    def canvas_update(model, ids):
        """The canvas and its bucket-fill view showing ``ids``."""
        return editor_value(model, ids), server.canvas_image(model, ids)

    def fill(class_name):
        model = server.current
        try:
            ids = np.full(model.size, server.class_id(model, class_name), np.int64)
        except ValueError as e:
            return gr.update(), gr.update(), fail(f"fill: {e}")
        return canvas_update(model, ids) + (gr.update(),)

    def bucket(value, class_name, evt: gr.SelectData):
        """A click on the bucket-fill view: fill the clicked region of the canvas with the chosen class."""
        model = server.current
        try:
            if not model.adapter.takes_label_map:
                raise ValueError(f"{model.name} samples from noise: it has no canvas to fill")
            ids = server.bucket_fill(model, value, class_name, evt.index)
        except ValueError as e:
            return gr.update(), gr.update(), fail(f"bucket fill: {e}")
        return canvas_update(model, ids) + (gr.update(),)

    def view(value):
        """The canvas as the bucket-fill view shows it (each pixel snapped to its class colour)."""
        model = server.current
        if not model.adapter.takes_label_map:
            return gr.update()
        return server.canvas_image(model, server.canvas_ids(model, value))

    def new_scene(seed):
        model = server.current
        return canvas_update(model, server.scene(model, seed)) + ((int(seed) + 1) % 100000,)

    with gr.Blocks(title="synthzoo: paint a scene") as app:
        gr.Markdown("## synthzoo: paint a scene\nPaint regions with class colours (brush menu; size, undo and "
                    "eraser in the canvas toolbar) or upload a colour label map, then generate the photo.")
        with gr.Row():
            model_box = gr.Dropdown(sorted(ADAPTERS), value=first.name, label="Model", elem_id="model")
            ckpt_box = gr.Textbox(value="", label="Checkpoint (empty: newest under outputs/<model>/ckpt)",
                                  elem_id="ckpt")
            backend_box = gr.Radio(list(BACKENDS), value="MindSpore", label="Backend", elem_id="backend")
            load_btn = gr.Button("Load model", elem_id="load")
        status = gr.HTML(status_text(first), elem_id="status")
        legend = gr.HTML(legend_html(first), elem_id="legend")
        paints = first.adapter.takes_label_map
        with gr.Row():
            with gr.Column():
                with gr.Column(visible=not paints, elem_id="sample-inputs") as sample_inputs:
                    with gr.Row():
                        count_box = gr.Number(value=4, precision=0, minimum=1, maximum=64, label="Samples N",
                                              elem_id="sample-count")
                        noise_box = gr.Number(value=0, precision=0, label="Noise seed", elem_id="sample-seed")
                    sample_btn = gr.Button("Sample N image+mask pairs", variant="primary", elem_id="sample")
                with gr.Column(visible=paints, elem_id="label-inputs") as label_inputs:
                    with gr.Tab("Paint"):
                        first_scene = server.scene(first, 0) if paints else None
                        canvas = editor(first, first_scene)
                        with gr.Row():
                            names = first.adapter.class_names(first.cfg)
                            class_box = gr.Dropdown(names, value=names[0] if names else None, label="Class",
                                                    elem_id="fill-class")
                            fill_btn = gr.Button("Fill canvas with class", elem_id="fill")
                            seed = gr.Number(value=1, precision=0, visible=False)
                            scene_btn = gr.Button("New random scene", elem_id="scene")
                        paint_btn = gr.Button("Generate from painting", variant="primary", elem_id="generate-paint")
                        fill_view = gr.Image(server.canvas_image(first, first_scene) if paints else None,
                                             label="Bucket fill: click a region to fill it with the class",
                                             type="numpy", format="png", interactive=False, height=260,
                                             buttons=[], elem_id="fill-view")
                    with gr.Tab("Upload a label map", elem_id="upload-tab"):
                        label_file = gr.File(label="Colour label map (PNG, the palette above, the model's size)",
                                             elem_id="label-file")
                        file_btn = gr.Button("Generate from file", variant="primary", elem_id="generate-file")
                exemplar = gr.File(label="Exemplar photo (the style to follow)", visible=first.adapter.needs_exemplar,
                                   elem_id="exemplar")
            with gr.Column():
                output = gr.Image(label="Output", type="filepath", format="png", interactive=False, height=360,
                                  buttons=["download"], elem_id="output")
                gallery = gr.Gallery(label="All outputs", columns=3, height=260, visible=False, elem_id="gallery")
                latency = gr.Markdown(elem_id="latency")
                downloads = gr.File(label="Download (outputs + label map)", file_count="multiple",
                                    interactive=False, elem_id="downloads")
        results = [status, output, gallery, downloads, latency]
        paint_btn.click(from_painting, [canvas, exemplar], results)
        file_btn.click(from_file, [label_file, exemplar], results)
        fill_btn.click(fill, class_box, [canvas, fill_view, status])
        fill_view.select(bucket, [canvas, class_box], [canvas, fill_view, status])
        canvas.change(view, canvas, fill_view, show_progress="hidden")
        scene_btn.click(new_scene, seed, [canvas, fill_view, seed])
        sample_btn.click(from_noise, [count_box, noise_box], results)
        load_btn.click(select_model, [model_box, ckpt_box, backend_box],
                       [status, legend, canvas, fill_view, class_box, exemplar, label_inputs, sample_inputs])
    app.queue(default_concurrency_limit=1)
    return app


def launch(app, server, host="127.0.0.1", port=7860, block=True):
    """Serve ``app`` on ``host:port``; ``block=False`` returns at once (``app.close()`` stops it)."""
    import gradio as gr
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    app.launch(server_name=host, server_port=int(port), show_error=False, theme=theme, css=CSS, footer_links=[],
               allowed_paths=[server.work_dir], prevent_thread_lock=not block, quiet=not block)


def parse_args(argv):
    """[MODEL] [--host=] [--port=] [--backend=] [--ckpt=] [--key=value ...] -> (model, options, ckpt, model argv)."""
    name = "pix2pix"
    if argv and not argv[0].startswith("--"):
        name, argv = argv[0], argv[1:]
    adapter_for(name)
    options = {"host": "127.0.0.1", "port": "7860", "backend": "mindspore"}
    ckpt, rest = "", []
    for word in argv:
        if not word.startswith("--") or "=" not in word:
            raise ValueError(f"unexpected argument '{word}'; options are --key=value (see --help)")
        key, value = word[2:].split("=", 1)
        if key in DEMO_OPTIONS:
            options[key] = value
        elif key == "ckpt":
            ckpt = value
        else:
            rest.append(word)
    if options["backend"] not in ("mindspore", "onnx"):
        raise ValueError(f"--backend={options['backend']}: choose mindspore or onnx")
    if not (options["port"].isdigit() and 0 < int(options["port"]) < 65536):
        raise ValueError(f"--port={options['port']}: expected a port number (1..65535)")
    return name, options, ckpt, rest


def main(argv=None):
    """Parse, train the demo model if needed, load, serve until Ctrl-C."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        print(__doc__)
        return None

    def run(args):
        os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
        name, options, ckpt, rest = parse_args(args)
        outputs = os.environ.get("SYNTHZOO_OUTPUTS", "outputs")
        ensure_checkpoint(name, model_config(name, outputs, rest, ckpt))
        server = DemoServer(outputs, name, rest, ckpt, options["backend"])
        app = build_app(server)
        print(f"[demo] {server.current.describe()}")
        print(f"[demo] serving on http://{options['host']}:{options['port']} (Ctrl-C stops)", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a terminated server still removes its files
        launch(app, server, options["host"], options["port"])
        return server

    return run_cli(run, argv)


if __name__ == "__main__":
    main()
