"""Median milliseconds per training step of a model, optionally beside the PyTorch reference.

    python bench/train_step.py --model pix2pix --size 256 --batch 1 [--steps 7] [--torch] [--cpu_conv native]
    python bench/train_step.py --model osmis --size 192x320 --batch 5 [--no_masks] [--torch]
    python bench/train_step.py --model pix2pix --size 256 --precision bf16 [--torch]

Each model folder provides ``<model>/src/utils.py: make_bench_step(size, batch)``, a zero-argument
callable running one full train step on random data (``--size`` HxW: OSMIS only; ``--no_masks``: OSMIS
as SIV-GAN). ``--cpu_conv`` overrides the model config's CPU convolution path (``common/conv.py``;
pix2pix's ``auto``: Im2Col + AVX-512 MatMul where available). ``--torch`` first runs a PyTorch step in
the same run, for a same-machine comparison, and prints the ratio: ``../shared/bench/torch_pix2pix_step.py``
(pix2pix), ``../shared/bench/torch_crn_step.py SIZE 9 STEPS`` (CRN), ``bench/torch_osmis_step.py`` (OSMIS,
a restatement of the reference's step) or ``bench/torch_cocosnet_step.py`` (CoCosNet, a restatement of the
official iteration at its ADE20K widths).
``--precision bf16`` runs the step with bf16 MatMuls (``common.runtime.select_cpu_precision``; CPUs with AMX or
AVX512_BF16), and the PyTorch reference with its oneDNN bf16 mode for float32 convolutions and MatMuls
(``torch.backends.mkldnn.{conv,matmul}.fp32_precision = "bf16"``), so the ratio compares like with like.
``--recompute`` / ``--no-recompute`` (CoCosNet; default: the config's ``recompute``, on) builds the step of
``recompute: true`` (six parts' forwards rerun in their backward) or the single-pass step.
``--separate_compile`` does what ``train.py --separate_compile=true`` does: a child process compiles the step
(without running it) into a temporary compile cache, this process loads it; the child's time and peak are printed.
``--trim_heap SECONDS`` (default: the model config's ``trim_heap``, as ``train.py``; 0: off) gives the C heap's free
pages back to the system while the steps run (``common.runtime.heap_trimming``).
``--paired`` (with ``--torch``) keeps the reference running in a child process and alternates one step of each, so a
shared machine's load swings hit both sides of a pair alike: the ratio printed is the median of the per-pair ratios;
the reference's peak memory is printed too. OSMIS's and CoCosNet's references have a ``--serve`` mode
(:func:`serve`); the shared pix2pix and CRN scripts run as written (their own timing first) and then serve the
``step`` function they define.
Prints one line per measurement and the peak resident memory.
"""
import argparse
import importlib
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

TORCH_REFERENCES = {"pix2pix": os.path.join(os.path.dirname(REPO), "shared", "bench", "torch_pix2pix_step.py"),
                    "crn": os.path.join(os.path.dirname(REPO), "shared", "bench", "torch_crn_step.py"),
                    "osmis": os.path.join(REPO, "bench", "torch_osmis_step.py"),
                    "cocosnet": os.path.join(REPO, "bench", "torch_cocosnet_step.py")}
SERVED_REFERENCES = ("osmis", "cocosnet")  # the references with a --serve mode (:func:`serve`), for --paired


def parse_size(text):
    """``256`` -> 256; ``192x320`` -> (192, 320) (height x width)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size={text!r}: expected N or HxW, e.g. 64 or 192x320") from None
    if len(values) not in (1, 2) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--size={text!r}: expected N or HxW, e.g. 64 or 192x320")
    return values[0] if len(values) == 1 else tuple(values)


TORCH_BF16 = ("torch.backends.mkldnn.conv.fp32_precision = 'bf16'; "
              "torch.backends.mkldnn.matmul.fp32_precision = 'bf16'; ")
# a shared reference script (a step function, then its own timing at import) run as written, then serving its step
SERVE_SCRIPT = (f"sys.argv.remove('--serve'); sys.path.insert(0, {os.path.join(REPO, 'bench')!r}); "
                "from train_step import serve; serve(runpy.run_path(sys.argv[0], run_name='__main__')['step'])")


def torch_command(args, script):
    """The PyTorch reference's command line (after the interpreter) for the benchmarked model, size and precision."""
    if args.model == "osmis":
        h, w = args.size if isinstance(args.size, tuple) else (args.size, args.size)
        command = [script, str(h), str(w), "--steps", str(args.steps)] + (["--no_masks"] if args.no_masks else [])
    elif args.model == "crn":
        command = [script, str(args.size), "9", str(args.steps)]
    elif args.model == "cocosnet":
        command = [script, str(args.size), "--steps", str(args.steps)]
    else:
        command = [script, str(args.size)]
    served_script = args.paired and args.model not in SERVED_REFERENCES
    if args.precision != "bf16" and not served_script:
        return command
    run = SERVE_SCRIPT if served_script else "runpy.run_path(sys.argv[0], run_name='__main__')"
    bf16 = "import torch; " + TORCH_BF16 if args.precision == "bf16" else ""
    return ["-c", "import runpy, sys; " + bf16 + "sys.argv = sys.argv[1:]; " + run] + command


def step_builder(model, cpu_conv=None, device="CPU", mode="graph", no_masks=False, precision="f32", recompute=None):
    """Initialise the runtime on the model config's ``cpu_conv`` path (or ``cpu_conv``) at ``precision`` and return
    ``(runtime, build, config)``, where ``build(size, batch)`` makes ``<model>/src/utils.py: make_bench_step``'s
    step and ``config`` is the model's default config (its ``batch_size`` is the recipe's batch: OSMIS trains on 5,
    which its diversity loss needs) with ``recompute`` (CoCosNet; None: the config's) applied."""
    from common.config import load_config
    from common.model_spec import ModelSpec
    from common.drivers import configure_process
    from common.runtime import init_runtime
    module = importlib.import_module(f"{model}.src.spec")
    spec, = (v for v in vars(module).values()
             if isinstance(v, type) and issubclass(v, ModelSpec) and v is not ModelSpec)
    cfg = load_config(os.path.join(REPO, model, "default_config.yaml"),
                      **({} if recompute is None else {"recompute": recompute}))
    rt = init_runtime(device, mode, seed=0, precision=precision,
                      cpu_conv=(cpu_conv or cfg.cpu_conv) if "cpu_conv" in cfg else "native")
    utils = importlib.import_module(f"{model}.src.utils")
    extra = {"masks": not no_masks} if model == "osmis" else {}
    if "recompute" in cfg:
        extra["recompute"] = cfg.recompute

    def build(size, batch):
        if "train_size" in cfg:  # OSMIS: its automatic configuration keeps the benchmark's sizes
            cfg.update(train_size="x".join(map(str, (size, size) if isinstance(size, int) else size)))
        configure_process(spec(), cfg, mode)  # as the model's train.py does (common.drivers.train)
        return utils.make_bench_step(size, batch, conv_impl=rt.conv_impl, **extra)
    return rt, build, cfg


def compile_bench_step(model, cpu_conv, device, mode, no_masks, precision, recompute, size, batch):
    """``--separate_compile``'s child process: build the step as :func:`main` does and only compile it."""
    from common.runtime import peak_memory_gb
    _, build, _ = step_builder(model, cpu_conv, device, mode, no_masks, precision, recompute)
    build(size, batch).compile()
    return peak_memory_gb()


def timed_ms(step):
    """Milliseconds of one call of ``step``."""
    t = time.perf_counter()
    step()
    return (time.perf_counter() - t) * 1000.0


def median(values):
    return sorted(values)[len(values) // 2]


def median_ms(step, steps, warmup=2):
    for _ in range(warmup):
        step()
    return median([timed_ms(step) for _ in range(steps)])


def peak_rss_gb():
    """This process's peak resident memory in GiB (Linux's ``VmHWM``: unlike ``ru_maxrss``, not inherited from the
    process that started it; ``common.runtime.peak_memory_gb`` for the MindSpore side)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 2 ** 20


def serve(step, warmup=2):
    """A reference script's ``--serve`` mode (:func:`paired_ms`'s other side): after ``warmup`` steps print
    ``ready``, then run one step per line read from stdin and print its milliseconds; at the end of stdin, its
    peak resident memory in GB."""
    for _ in range(warmup):
        step()
    print("ready", flush=True)
    for _ in sys.stdin:
        print(f"{timed_ms(step):.3f}", flush=True)
    print(f"{peak_rss_gb():.3f}", flush=True)


class ServedReference:
    """A PyTorch reference running in ``--serve`` mode in a child process: :meth:`step` times one of its steps."""

    def __init__(self, command):
        self.log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen([sys.executable] + command + ["--serve"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.lines = []  # what it printed before ``ready`` (parameter counts)

    def _read(self):
        line = self.process.stdout.readline()
        if not line:
            self.log.seek(0)
            sys.exit(f"torch reference failed: {self.log.read()[-500:]}")
        return line.strip()

    def wait_ready(self):
        while (line := self._read()) != "ready":
            self.lines.append(line)

    def step(self):
        self.process.stdin.write("step\n")
        self.process.stdin.flush()
        return float(self._read())

    def close(self):
        """End the reference; returns its peak resident memory in GB."""
        self.process.stdin.close()
        peak_gb = float(self._read())
        self.process.wait()
        self.log.close()
        return peak_gb


def paired_ms(step, reference, steps, warmup=2):
    """``steps`` pairs of one ``reference`` step and one ``step``, alternating which goes first (both see the same
    moment of a shared, noisy machine): (our median ms, its median ms, the per-pair ratios ours / its, sorted)."""
    for _ in range(warmup):
        step()
    ours, theirs = [], []
    for i in range(steps):
        if i % 2:
            ours.append(timed_ms(step))
            theirs.append(reference.step())
        else:
            theirs.append(reference.step())
            ours.append(timed_ms(step))
    return median(ours), median(theirs), sorted(a / b for a, b in zip(ours, theirs))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pix2pix")
    parser.add_argument("--size", type=parse_size, default=256, help="N (square) or HxW (OSMIS)")
    parser.add_argument("--batch", type=int, help="samples per step (default: the model config's batch_size; OSMIS 5)")
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--device", default="CPU")
    parser.add_argument("--cpu_conv", choices=["auto", "native", "matmul", "winograd", "onednn", "mixed"],
                        help="CPU convolution path (common/conv.py); default: the model config's cpu_conv")
    parser.add_argument("--torch", action="store_true", help="also time the PyTorch reference (pix2pix, crn, osmis, cocosnet)")
    parser.add_argument("--paired", action="store_true",
                        help="with --torch: keep the reference running beside this process and "
                             "alternate one step of each; the ratio is the median of the per-pair ratios (load swings "
                             "of a shared machine hit both sides of a pair alike)")
    parser.add_argument("--no_masks", action="store_true", help="OSMIS: time SIV-GAN (no mask branch)")
    parser.add_argument("--precision", choices=["f32", "bf16"], default="f32",
                        help="bf16: MatMuls (matmul / winograd convolutions) with bf16 inputs, on AMX / AVX512_BF16 CPUs")
    parser.add_argument("--mode", choices=["graph", "pynative"], default="graph",
                        help="MindSpore execution mode of the step (CRN at 256p: see crn/README.md Performance)")
    parser.add_argument("--recompute", action=argparse.BooleanOptionalAction,
                        help="CoCosNet: the step that reruns six parts' forwards in their backward, or (--no-recompute) "
                             "the single-pass step (config key recompute; default: the config's, on)")
    parser.add_argument("--separate_compile", action="store_true",
                        help="compile the step in a child process first, as train.py --separate_compile=true")
    parser.add_argument("--trim_heap", type=float, default=None, metavar="SECONDS",
                        help="give the C heap's free pages back every SECONDS while stepping, as train.py does "
                             "(config key trim_heap; default: the model config's; 0: off)")
    args = parser.parse_args()
    if args.model != "osmis" and (isinstance(args.size, tuple) or args.no_masks):
        parser.error("--size HxW and --no_masks are OSMIS options")
    if args.recompute is not None and args.model != "cocosnet":
        parser.error("--recompute is a CoCosNet option")
    if args.paired and not args.torch:
        parser.error("--paired needs --torch")
    torch_ms = reference = None
    if args.torch:
        if args.model not in TORCH_REFERENCES:
            parser.error(f"--torch: no PyTorch reference for {args.model} (have: {', '.join(TORCH_REFERENCES)})")
        script = TORCH_REFERENCES[args.model]
        if not os.path.isfile(script):
            parser.error(f"PyTorch reference {script} not found")
    # the reference starts before MindSpore is loaded, with the caller's environment (no oneDNN ISA cap for torch)
    if args.paired:
        reference = ServedReference(torch_command(args, script))
        reference.wait_ready()  # built and warmed up before this process compiles: the two do not overlap
        print(" | ".join(reference.lines))
    elif args.torch:
        out = subprocess.run([sys.executable] + torch_command(args, script), capture_output=True, text=True)
        if out.returncode == 0:
            lines = out.stdout.strip().splitlines()
            print(" | ".join(line for line in lines if "ms" in line or "RSS" in line))
            torch_ms = float(next(line for line in lines if "median ms" in line).split()[-1])
        else:
            print(f"torch reference failed: {out.stderr[-500:]}")

    rt, build, cfg = step_builder(args.model, args.cpu_conv, args.device, args.mode, args.no_masks,
                                  args.precision, args.recompute)
    args.batch = args.batch or cfg.batch_size
    from common.compile_cache import caching_folder, compile_apart, stop_caching, use_compile_cache
    from common.runtime import heap_trimming, memory_planned_statically, parameter_read_copies_dropped, peak_memory_gb
    loaded = False
    if args.separate_compile:
        line = use_compile_cache(args.model, os.path.join(REPO, args.model), {}, rt, {}, temporary=True)
        if caching_folder() is None:
            print(f"separate compile: not here ({line}); the step compiles in this process")
        else:
            seconds, child_peak, error = compile_apart(compile_bench_step, args.model, args.cpu_conv, args.device,
                                                       args.mode, args.no_masks, args.precision, args.recompute,
                                                       args.size, args.batch)
            if error:
                stop_caching()  # removes the temporary folder
                sys.exit(f"separate compile failed: {error}")
            print(f"separate compile: {seconds:.1f} s in a child process, its peak RSS {child_peak:.2f} GB")
            loaded = True
    if args.trim_heap is None:
        args.trim_heap = cfg.trim_heap
    with heap_trimming(args.trim_heap, device=args.device):
        t = time.perf_counter()
        step = build(args.size, args.batch)
        step()
        first = time.perf_counter() - t
        stop_caching()  # after the first step, when separate: removes the temporary folder
        if reference:
            ms_step, torch_ms, ratios = paired_ms(step, reference, args.steps)
            torch_peak_gb = reference.close()
        else:
            ms_step = median_ms(step, args.steps)
    peak_gb = peak_memory_gb()
    settings = f"; recompute {'on' if cfg.recompute else 'off'}" if "recompute" in cfg else ""
    settings += "; Parameter reads not copied" if parameter_read_copies_dropped() else ""
    settings += "; static memory plan" if memory_planned_statically() else ""
    size = "x".join(map(str, args.size)) if isinstance(args.size, tuple) else args.size
    name = f"{args.model} (SIV-GAN)" if args.no_masks else args.model
    print(f"mindspore {name} size {size} batch {args.batch} on {args.device}: median {ms_step:.1f} ms/step "
          f"over {args.steps} steps (build+{'load' if loaded else 'compile'}+first step {first:.1f} s, peak RSS {peak_gb:.2f} GB; "
          f"trim_heap {args.trim_heap:g} s; {rt.describe_conv}, "
          f"{args.mode} mode{settings})")
    if reference:
        print(f"torch step median ms {torch_ms:.1f} over the same {args.steps} pairs; its peak RSS "
              f"{torch_peak_gb:.2f} GB (ours / its: {peak_gb / torch_peak_gb:.2f}x)")
        quartile = lambda q: ratios[round(q * (len(ratios) - 1))]  # noqa: E731
        print(f"ratio mindspore / torch: {median(ratios):.2f} (median of {args.steps} paired steps, middle half "
              f"{quartile(0.25):.2f}-{quartile(0.75):.2f}; ratio of the medians {ms_step / torch_ms:.2f})")
    elif torch_ms:
        print(f"ratio mindspore / torch: {ms_step / torch_ms:.2f}")


if __name__ == "__main__":
    main()
