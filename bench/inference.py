"""Milliseconds per image of one model's inference network on each backend, in the same run.

    python bench/inference.py --model pix2pix --size 256 [--runs 10] [--backends mindspore,mindspore-bf16,onnxruntime,onnxruntime-direct,openvino,openvino-bf16,torch]
    python bench/inference.py --model crn --size 256 [--runs 3] [--backends mindspore,onnxruntime,openvino,torch]
    python bench/inference.py --model cocosnet --size 256 [--runs 3] [--backends mindspore,onnxruntime,openvino,torch]
    python bench/inference.py --model crn --size 256 --backends mindspore,onnxruntime --rounds 3   # alternating

One random-weight checkpoint (seed 0) is written and its ``export.py`` graph written to ONNX
(``common.export.export_onnx``), then every backend runs in its own subprocess on the same
input, batch 1: ``mindspore`` (graph mode, the model config's ``cpu_conv`` path or ``--cpu_conv``; what
``predict.py --backend=mindspore`` runs; ``mindspore-bf16``: the same with ``--precision=bf16``, on CPUs with AMX or
AVX512_BF16), ``onnxruntime`` / ``openvino`` / ``openvino-bf16`` (the ONNX
file through ``common.backends.load_backend``, as ``--backend=... [--precision=bf16]``; onnxruntime with its large
3x3 convolutions as Winograd F(6x6 or 4x4, 3x3), ``onnxruntime-direct`` with the file's own ``Conv`` nodes) and ``torch``
(the network restated in PyTorch, eval mode, no_grad: pix2pix's unet with its own random weights; CRN with
the checkpoint's weights, so its outputs are compared too; CoCosNet: ``bench/torch_cocosnet_step.py --inference``'s
restatement of the official networks, its own random weights and inputs). Each line: median ms/image over ``--runs`` after
2 warm-up runs, load/compile time, peak RSS of that process and the max |output - MindSpore output| (not for
the pix2pix and CoCosNet torch lines, whose weights differ). Models: pix2pix (``unet_256`` at
256, ``unet_128`` at 128; eval mode: BatchNorm running statistics, no dropout), CRN (``--size`` p, k and
width from its config) and CoCosNet (ADE20K widths, 151 channels; one translation: the correspondence, then
the translation network on [warped exemplar, label map]; its ONNX file is the composite of the two).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

BACKENDS = ("mindspore", "mindspore-bf16", "onnxruntime", "onnxruntime-direct", "openvino", "openvino-bf16", "torch")
WARMUP = 2


def model_args(model, size):
    """Config words of the benchmarked network (eval-mode pix2pix, full-size CRN)."""
    if model == "pix2pix":
        return [f"--netG=unet_{256 if size % 256 == 0 else 128}", f"--crop_size={size}", "--eval_protocol=eval",
                "--export_norm=running_stats"]
    return [f"--size={size}"]


def spec_of(model):
    if model == "pix2pix":
        from pix2pix.src.spec import Pix2PixSpec
        return Pix2PixSpec()
    if model == "cocosnet":
        from cocosnet.src.spec import CoCosNetSpec
        return CoCosNetSpec()
    from crn.src.spec import CRNSpec
    return CRNSpec()


def time_it(run, runs):
    """(median ms over ``runs`` after the warm-up runs, last output)."""
    for _ in range(WARMUP):
        out = run()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        out = run()
        times.append((time.perf_counter() - t) * 1000.0)
    return sorted(times)[len(times) // 2], out


def worker_export(args):
    """Random-weight checkpoint, its ONNX export (``export.py``'s graph and writer) and the input feeds under
    ``args.dir``. No parity gate: random weights can exceed the 1e-4 of trained ones (CRN), and every
    backend's max |diff| vs MindSpore is printed anyway."""
    import numpy as np
    import common  # noqa: F401
    import mindspore as ms
    from common import drivers
    from common.checkpoint import save_cell
    from common.export import export_onnx
    spec = spec_of(args.model)
    cfg = drivers.parse(spec, model_args(args.model, args.size) + [f"--output_dir={args.dir}"])
    drivers._runtime(cfg, cpu_conv="native")
    ms.set_seed(0)
    component = spec.inference_components[0]
    nets = spec.build_inference(cfg)
    for name, net in nets.items():
        save_cell(net, os.path.join(args.dir, "ckpt", f"{name}.ckpt"), dict(spec.arch(cfg), model=spec.name))
    if args.model == "crn":
        np.savez(os.path.join(args.dir, "weights.npz"),
                 **{k: v.asnumpy() for k, v in nets[component].parameters_dict().items()})
    graph = spec.export_graph(cfg, nets, os.path.join(args.dir, "export"))
    if isinstance(graph, list):  # CoCosNet: correspondence, translation, composite
        graph = graph[-1]
    os.makedirs(os.path.dirname(graph.stem), exist_ok=True)
    export_onnx(graph.net, graph.inputs, graph.stem + ".onnx", graph.input_names, graph.output_names)
    np.savez(os.path.join(args.dir, "feeds.npz"), **{n: x.asnumpy() for n, x in zip(graph.input_names, graph.inputs)})
    return {"onnx": graph.stem + ".onnx", "ckpt": os.path.join(args.dir, "ckpt", f"{component}.ckpt")}


def torch_unet(ngf, downs, *, dropout=True):
    """The pix2pix U-Net generator (Isola et al.) in PyTorch, as ``pix2pix/src/model.py`` builds it, with the
    reference's module tree (``UnetGenerator.model``, nested ``UnetSkipConnectionBlock``s: its state-dict keys,
    which ``tests/test_pix2pix_import.py`` imports); ``dropout=False`` leaves out the inner blocks' dropout
    (``tests/test_pix2pix_torch_parity.py``)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, outer, inner, sub=None, outermost=False, innermost=False, dropout=False, in_nc=None):
            super().__init__()
            self.outermost = outermost
            down = nn.Conv2d(in_nc or outer, inner, 4, 2, 1, bias=False)
            if outermost:
                layers = [down, sub, nn.ReLU(True), nn.ConvTranspose2d(inner * 2, outer, 4, 2, 1), nn.Tanh()]
            elif innermost:
                layers = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True),
                          nn.ConvTranspose2d(inner, outer, 4, 2, 1, bias=False), nn.BatchNorm2d(outer)]
            else:
                layers = [nn.LeakyReLU(0.2, True), down, nn.BatchNorm2d(inner), sub, nn.ReLU(True),
                          nn.ConvTranspose2d(inner * 2, outer, 4, 2, 1, bias=False), nn.BatchNorm2d(outer)]
                layers += [nn.Dropout(0.5)] if dropout else []
            self.model = nn.Sequential(*layers)

        def forward(self, x):
            return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)

    class UnetGenerator(nn.Module):
        def __init__(self):
            super().__init__()
            block = Block(ngf * 8, ngf * 8, innermost=True)
            for _ in range(downs - 5):
                block = Block(ngf * 8, ngf * 8, block, dropout=dropout)
            block = Block(ngf * 4, ngf * 8, block)
            block = Block(ngf * 2, ngf * 4, block)
            block = Block(ngf, ngf * 2, block)
            self.model = Block(3, ngf, block, outermost=True, in_nc=3)

        def forward(self, x):
            return self.model(x)

    return UnetGenerator()


def torch_crn(weights, num_modules, k):
    """CRN's generator (Chen & Koltun) in PyTorch with ``weights`` (``crn/src/model.py`` parameter names), as
    ``crn.src.spec`` exports it: one-hot label [1, C, H, W] -> images [1, k, 3, H, W] in 0..1 units."""
    import torch
    import torch.nn.functional as F
    w = {name: torch.from_numpy(v) for name, v in weights.items()}

    def conv_ln_lrelu(x, module, j):
        """3x3 conv without bias -> layer norm over C, H, W with per-channel affine -> LReLU 0.2."""
        x = F.conv2d(x, w[f"refine.{module}.conv{j}.weight"], padding=1)
        x = F.group_norm(x, 1, w[f"refine.{module}.norm{j}.gamma"], w[f"refine.{module}.norm{j}.beta"], eps=1e-12)
        return F.leaky_relu(x, 0.2)

    def forward(label):
        pyramid = [label]
        for _ in range(num_modules - 1):
            pyramid.append(F.avg_pool2d(pyramid[-1], 2))
        x = None
        for i in range(num_modules):
            lab = pyramid[num_modules - 1 - i]
            if x is not None:
                x = torch.cat([F.interpolate(x, lab.shape[2:], mode="bilinear", align_corners=True), lab], 1)
            else:
                x = lab
            x = conv_ln_lrelu(conv_ln_lrelu(x, i, 1), i, 2)
        y = (F.conv2d(x, w["to_rgb.weight"], w["to_rgb.bias"]) + 1.0) / 2.0
        b, _, h, wd = y.shape
        return y.reshape(b, 3, k, h, wd).transpose(1, 2)  # image i, colour c = channel c*k + i
    return forward


def worker_run(args):
    """Time one backend on the exported model; writes its output to ``<dir>/out_<backend>.npy``."""
    import numpy as np
    from train_step import peak_rss_gb  # bench/, this script's folder (standard library only: no oneDNN cap)
    feeds = dict(np.load(os.path.join(args.dir, "feeds.npz")))
    info = json.load(open(os.path.join(args.dir, "export.json")))
    t = time.perf_counter()
    if args.worker == "torch":
        import torch
        torch.manual_seed(0)
        if args.model == "cocosnet":
            sys.path.insert(0, os.path.join(REPO, "bench"))
            from torch_cocosnet_step import make_step
            translate, _ = make_step(args.size, inference=True)
            net = lambda x: translate()  # noqa: E731 (its own inputs)
        elif args.model == "pix2pix":
            net = torch_unet(64, 8 if args.size % 256 == 0 else 7).eval()
        else:
            weights = dict(np.load(os.path.join(args.dir, "weights.npz")))
            k = weights["to_rgb.bias"].shape[0] // 3
            net = torch_crn(weights, 1 + max(int(n.split(".")[1]) for n in weights if n.startswith("refine.")), k)
        x = torch.from_numpy(feeds[next(iter(feeds))])

        def run():
            with torch.no_grad():
                return net(x).numpy()
        note = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    elif args.worker in ("mindspore", "mindspore-bf16"):
        import common  # noqa: F401
        from common import drivers
        spec = spec_of(args.model)
        words = model_args(args.model, args.size) + [f"--ckpt={info['ckpt']}", f"--output_dir={args.dir}",
                                                      f"--precision={'bf16' if args.worker.endswith('bf16') else 'f32'}"]
        cfg = drivers.parse(spec, words + ([f"--cpu_conv={args.cpu_conv}"] if args.cpu_conv else []))
        rt = drivers._runtime(cfg)
        nets, _ = drivers.load_inference(spec, cfg, rt.conv_impl, log=lambda *_: None)
        runners = spec.runners(cfg, nets)
        if args.model == "cocosnet":  # the composite's feeds through the two networks, as predict.py chains them
            from cocosnet.src.spec import COMPOSITE_NAMES, CORR_NAMES, GEN_NAMES
            seg, ref, ref_seg = (feeds[name] for name in COMPOSITE_NAMES[0])

            def run():
                warped = runners["Corr"](dict(zip(CORR_NAMES[0], (seg, ref, ref_seg))))[0]
                return runners["G"]({GEN_NAMES[0][0]: np.concatenate([warped, seg], 1)})[0]
        else:
            runner = runners[spec.inference_components[0]]

            def run():
                return runner(feeds)[0]
        note = f"graph mode, {rt.describe_conv}"
    else:
        import common  # noqa: F401  (the oneDNN cap of a predict.py process; OpenVINO compiles without it)
        from common.backends import load_backend
        kind, _, variant = args.worker.partition("-")
        runner = load_backend(kind, info["onnx"], precision="bf16" if variant == "bf16" else "f32",
                              winograd=variant != "direct")

        def run():
            return runner(feeds)[0]
        note = runner.describe()
    run()
    load_s = time.perf_counter() - t
    ms_image, out = time_it(run, args.runs)
    np.save(os.path.join(args.dir, f"out_{args.worker}.npy"), out)
    return {"ms": ms_image, "load_s": load_s, "rss_gb": peak_rss_gb(),
            "note": note}


def spawn(args, worker):
    """Run ``worker`` in a fresh Python (its own oneDNN settings and peak RSS); its JSON result or the error."""
    cmd = [sys.executable, os.path.abspath(__file__), f"--model={args.model}", f"--size={args.size}",
           f"--runs={args.runs}", f"--dir={args.dir}", f"--worker={worker}"] + \
        ([f"--cpu_conv={args.cpu_conv}"] if args.cpu_conv else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["exit code %d" % proc.returncode])[-1][:300]}
    return json.loads(lines[-1][len("RESULT "):])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["pix2pix", "crn", "cocosnet"], default="pix2pix")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--backends", help="comma-separated, from " + ",".join(BACKENDS) + " (default: all)")
    parser.add_argument("--cpu_conv", choices=["auto", "native", "matmul", "winograd", "onednn", "mixed"],
                        help="MindSpore's CPU convolution path (default: the model config's cpu_conv)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="time the backends in turn this many times (fresh processes, every other round in the "
                             "reverse order, for a noisy machine); each line gives every round's median and the "
                             "median over rounds")
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = worker_export(args) if args.worker == "export" else worker_run(args)
        print("RESULT " + json.dumps(result))
        return
    backends = [b.strip() for b in args.backends.split(",")] if args.backends else list(BACKENDS)
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        parser.error(f"--backends: unknown {unknown}; choose from {BACKENDS}")
    import numpy as np
    with tempfile.TemporaryDirectory() as tmp:
        args.dir = tmp
        info = spawn(args, "export")
        if "error" in info:
            raise SystemExit(f"export failed: {info['error']}")
        json.dump(info, open(os.path.join(tmp, "export.json"), "w"))
        print(f"{args.model} {args.size}: batch 1, median of {args.runs} runs "
              f"after {WARMUP} warm-up, each backend in its own process" +
              (f", {args.rounds} rounds in turn (median over rounds)" if args.rounds > 1 else ""))
        # every other round in the reverse order, so that a machine speeding up or slowing down during the run
        # favours no backend
        rounds = [{b: spawn(args, b) for b in (backends if i % 2 == 0 else backends[::-1])} for i in range(args.rounds)]
        results = {}
        for name in backends:
            failed = [r[name] for r in rounds if "error" in r[name]]
            results[name] = failed[0] if failed else dict(rounds[-1][name], all_ms=[r[name]["ms"] for r in rounds])
            if not failed:
                results[name]["ms"] = sorted(results[name]["all_ms"])[len(rounds) // 2]
        ref = os.path.join(tmp, "out_mindspore.npy")
        base = results.get("mindspore", {}).get("ms")
        for name, r in results.items():
            if "error" in r:
                print(f"  {name:14s} failed: {r['error']}")
                continue
            diff = ""
            if name != "mindspore" and not (name == "torch" and args.model != "crn") and os.path.isfile(ref):
                diff = f", max |diff| vs mindspore {np.abs(np.load(os.path.join(tmp, f'out_{name}.npy')) - np.load(ref)).max():.2g}"
            ratio = f" ({r['ms'] / base:.2f}x mindspore)" if base and name != "mindspore" else ""
            each = f" (rounds: {' / '.join(f'{t:.1f}' for t in r['all_ms'])})" if args.rounds > 1 else ""
            print(f"  {name:14s} {r['ms']:8.1f} ms/image{ratio}{each}, load+first {r['load_s']:.1f} s, peak RSS "
                  f"{r['rss_gb']:.2f} GB{diff}  [{r['note']}]")


if __name__ == "__main__":
    main()
