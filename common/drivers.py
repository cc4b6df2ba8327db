"""The shared drivers: train, eval, predict and export of any model through its :class:`ModelSpec`.

A model's entry points call :func:`main` through ``common.entry.run`` (which answers ``--help`` before
MindSpore loads)::

    from common.entry import run
    run("pix2pix.src.spec.Pix2PixSpec", "train")

:func:`main` answers ``--help`` (every key with its default and help text), turns a bad input into one
clean ``error: ...`` line on stderr and exit code 2 (``--debug`` shows the traceback), and runs the
command. Each driver is also callable with a parsed config (tests, notebooks).
"""
import functools
import os
import sys
import traceback

import common  # noqa: F401  (oneDNN ISA before mindspore)
import mindspore as ms

from common.checkpoint import CheckpointError, CheckpointManager, load_cell, read_meta, resolve_checkpoint
from common.classes import apply_class_table
from common.compile_cache import (caching_folder, compile_apart, compile_only, forget_train_step, holds_train_step,
                                  stop_caching, use_compile_cache)
from common.config import Config, ConfigError, load_config
from common.entry import usage, wants_help
from common.conv import use_compiled_kernels, use_conv_impl, use_inference_conv_impl
from common.data import BatchLoader
from common.export import (ExportError, check_mindir_parity, check_onnx_parity, compose_onnx, export_mindir,
                           export_onnx, outputs_numpy)
from common.io import atomic_dir, atomic_file, list_images, write_image
from common.layers import set_dropout_rank
from common.runtime import (drop_parameter_read_copies, eager, heap_trimming, init_runtime,
                            memory_planned_statically, parameter_read_copies_dropped, peak_memory_gb,
                            plan_memory_statically)
from common.spectral_norm import fold_spectral_norm
from common.train import (GradientUpdate, RankSync, TrainLogger, TrainLoop, mixed_precision, parse_loss_scale, set_lr,
                          to_float)

__all__ = ["main", "run_cli", "import_checkpoint", "parse", "configure_process", "train", "evaluate", "predict", "export",
           "load_inference", "prepare_inference", "load_runners"]

def parse(spec, argv, **overrides):
    """The config of ``spec`` with ``argv`` (``--key=value`` words) and keyword overrides applied."""
    return load_config(spec.config_path, argv, **overrides)


def main(spec, command, argv=None):
    """Run ``command`` for ``spec`` from the command line; returns the driver's result."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if wants_help(argv):
        print(usage(spec.name, command, spec.config_path))
        return None
    drivers = {"train": functools.partial(train, owns_process=True), "eval": evaluate, "predict": predict,
               "export": export}
    return run_cli(lambda args: drivers[command](spec, parse(spec, args)), argv)


def run_cli(run, argv, *, usage=None):
    """``run(argv)`` with every failure turned into one ``error: ...`` line on stderr and exit code 2.

    ``--debug`` (removed from ``argv``) prints the traceback as well. Entry points other than the four
    drivers (``import_torch.py``, ``import_tf.py``, ``build_ref_list.py``) use it too, passing their ``usage``
    text, which ``--help`` / ``-h`` prints instead of running.
    """
    if usage is not None and wants_help(argv):
        print(usage)
        return None
    debug = "--debug" in argv or "--debug=true" in argv
    argv = [a for a in argv if a not in ("--debug", "--debug=true")]
    try:
        return run(argv)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # every failure becomes one readable line; --debug shows where it came from
        if debug:
            traceback.print_exc()
        print(f"error: {e}" + ("" if debug else "  (run with --debug for the traceback)"), file=sys.stderr)
        raise SystemExit(2) from None


def _runtime(cfg, cpu_conv=None, precision=None):
    try:
        return init_runtime(cfg.device_target, cfg.mode, cfg.seed, cpu_conv=cpu_conv or cfg.cpu_conv,
                            precision=precision or cfg.precision)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _check_precision(spec, cfg, scores=False):
    """``--precision=bf16`` on MindSpore: refused where the process ``scores`` (eval.py's metric networks would
    run in bf16 too) and by a model whose spec says why (``ModelSpec.bf16_refusal``)."""
    if cfg.precision == "f32" or cfg.backend != "mindspore":
        return
    if scores:
        raise ConfigError(f"--precision={cfg.precision} with --backend=mindspore: oneDNN's bf16 mode holds for the "
                          f"whole process, so the metric networks (Inception, LPIPS, FCN) would score in bf16 too; "
                          f"evaluate with --precision=f32, or the model alone in bf16 with --backend=openvino")
    if spec.bf16_refusal:
        raise ConfigError(f"--precision={cfg.precision}: {spec.bf16_refusal}; use --precision=f32")


def _backend_runtime(cfg):
    """eval/predict: with an ONNX backend MindSpore only exports (native convolutions, as ``export.py``) and
    runs the metric networks, so the process stays on the native path (no AVX-512 oneDNN cap lift) and f32
    (``--precision`` is then the backend's)."""
    if cfg.backend == "mindspore":
        return _runtime(cfg)
    return _runtime(cfg, cpu_conv="native", precision="f32")


def check_amp_level(cfg, rt):
    """Mixed precision is refused on CPU (float16 there is slower and partly unsupported)."""
    if cfg.amp_level != "O0" and rt.device_target == "CPU":
        raise ConfigError(f"--amp_level={cfg.amp_level}: mixed precision (float16) is for GPU and Ascend; on CPU "
                          f"use --amp_level=O0")


def _build_training(spec, cfg):
    """``(runtime, notes, datasets, trainer, matmul count)`` of a run: what :func:`train` builds, and the
    separate compile's process (:func:`_compile_train_step`) alike."""
    _check_precision(spec, cfg)
    rt = _runtime(cfg)
    check_amp_level(cfg, rt)
    demo = not cfg.dataroot
    key = spec.class_count_key
    apply_class_table(cfg, key, load_config(spec.config_path)[key] if key else None)
    notes = list(spec.check(cfg, rt, demo))
    if cfg.trim_heap < 0:
        raise ConfigError(f"--trim_heap={cfg.trim_heap}: the seconds between two trims of the C heap; 0 turns it off")
    data = spec.datasets(cfg, rt)
    trainer = spec.build_trainer(cfg, rt, data)
    check_loss_scale(spec, cfg, trainer)
    for net in trainer.networks.values():
        set_dropout_rank(net, rt.rank)
        mixed_precision(net, cfg.amp_level)
    matmul = sum(use_conv_impl(net, rt.conv_impl, keep_transforms=trainer.keep_conv_transforms)
                 for net in list(trainer.networks.values()) + list(trainer.frozen.values()))
    use_compiled_kernels(trainer.step)  # the loss cells' own (OSMIS's augmentation and diversity term)
    trainer.step.set_train()
    return rt, notes, data, trainer, matmul


def _compile_train_step(spec, cfg):
    """The separate compile's process: build the train step as :func:`train` does and compile it, without
    running it, into the compile-cache folder that its parent chose (``MS_COMPILER_CACHE_PATH``, inherited);
    returns the process's peak resident memory in GB."""
    rt, _, data, trainer, _ = _build_training(spec, cfg)
    batch = next(BatchLoader(data.train, batch_size=cfg.batch_size, seed=cfg.seed, rank=rt.rank,
                             group_size=rt.group_size, num_workers=0).epoch(0))
    compile_only(trainer.step, [ms.Tensor(b) for b in batch])
    return peak_memory_gb()


def _separate_compile(spec, cfg, folder):
    """``separate_compile``: compile the train step in a fresh process into ``folder``, which this process's
    first step then loads; returns a log line. If that process fails, this one compiles as usual."""
    seconds, peak, error = compile_apart(_compile_train_step, spec, cfg)
    if error is None and holds_train_step(folder):
        return (f"separate compile: the train step compiled in a child process in {seconds:.0f} s (peak "
                f"{peak:.2f} GB); this process loads it")
    forget_train_step(folder)
    return f"separate compile: the child process failed ({error or 'no graph written'}); compiling in this process"


def configure_process(spec, cfg, mode):
    """Apply the process-wide MindSpore settings that suit ``spec``'s train step at ``cfg``'s size: no copies of
    Parameter reads (``ModelSpec.parameter_read_copies``) and a static memory plan (graph ``mode``,
    ``ModelSpec.static_memory_plan``). For a process that trains this one step (the train command,
    ``bench/train_step.py``), once its configuration is final and before its first graph compile: MindSpore takes
    both once per process, so tests that train several models in one process keep the defaults."""
    if not spec.parameter_read_copies:
        drop_parameter_read_copies()
    if mode == "graph" and spec.static_memory_plan(cfg):
        plan_memory_statically()


def train(spec, cfg, *, owns_process=False):
    """Train as configured; returns the final loop state {epoch, step_in_epoch, step, losses}.

    Everything that can fail on the user's input (config fit, dataset files) is checked before the
    output folder is written. Under msrun the run is data-parallel: each rank trains on its shard of
    every epoch (``BatchLoader``), the compiled step averages every gradient set over the ranks
    (``common.train.GradientUpdate``), dropout draws the rank's stream (``set_dropout_rank``), the ranks
    agree on stopping after every step (``RankSync``) and only rank 0 writes logs, images and snapshots.
    With ``separate_compile`` (graph mode, one device) a child process compiles the train step first
    (:func:`_separate_compile`), given the configuration as it was passed in. ``owns_process`` (the train
    command): :func:`configure_process` before the first compile.
    """
    given = Config(cfg)
    rt, notes, data, trainer, matmul = _build_training(spec, cfg)
    if owns_process:
        configure_process(spec, cfg, rt.mode)
    loader = BatchLoader(data.train, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed, rank=rt.rank,
                         group_size=rt.group_size, drop_last=True, num_workers=cfg.num_workers)
    log = TrainLogger(cfg.output_dir, spec.name, len(loader), cfg.log_every, enabled=rt.is_main)
    manager = CheckpointManager(os.path.join(cfg.output_dir, "ckpt"), cfg.keep_ckpt,
                                dict(spec.arch(cfg), model=spec.name,
                                     dataroot=os.path.abspath(cfg.dataroot) if cfg.dataroot else "",
                                     data=recorded_data(spec, cfg)))
    loop = TrainLoop(manager, trainer.components, log, loader, trainer.n_epochs, cfg.save_epoch_freq,
                     cfg.max_steps, sync=RankSync(rt.rank, rt.group_size))
    for line in notes + trainer.notes:
        log.info(line)
    if not loop.resume(cfg.resume) and trainer.on_fresh_start is not None:
        trainer.on_fresh_start(log.info)
    log.info(f"{spec.name}: {len(data.train)} training samples from {data.root}, {len(loader)} steps/epoch on "
             f"{rt.group_size} {cfg.device_target} device(s), {trainer.n_epochs} epochs; {rt.describe_conv}"
             + (f" ({matmul} convolutions as matrix multiplies)" if rt.conv_impl != "native" else ""))
    if parameter_read_copies_dropped():
        log.info("graph mode reads Parameters without copying them (MS_DEV_SIDE_EFFECT_LOAD_ELIM=3; "
                 "common.runtime.drop_parameter_read_copies)")
    if memory_planned_statically():
        log.info("graph memory planned before the step runs (MindSpore's SOMAS, memory optimize level O1; "
                 "common.runtime.plan_memory_statically)")
    if cfg.compile_cache or cfg.separate_compile:
        log.info(use_compile_cache(spec.name, os.path.dirname(spec.config_path), cfg, rt,
                                   dict(trainer.networks, **trainer.frozen), temporary=not cfg.compile_cache))
    folder = caching_folder()
    if loop.finished():
        log.info(f"nothing left to train: the resumed run is at epoch {loop.epoch} of {trainer.n_epochs}, step "
                 f"{loop.global_step} (more epochs or a higher --max_steps train on)")
    elif cfg.separate_compile and folder is not None and not holds_train_step(folder):
        log.info("separate compile: compiling the train step in a child process (minutes for networks of the "
                 "papers' sizes); its working memory goes back to the system before training allocates")
        log.info(_separate_compile(spec, given, folder))
    elif rt.mode == "graph":
        log.info("the first step compiles the train step graph: minutes for networks of the papers' sizes (the "
                 "first log line's ms/step includes it" + ("" if cfg.compile_cache else "; --compile_cache=true "
                 "keeps it for the next run of this configuration") + ")")
    optimizers = trainer.optimizers

    def step(*batch):
        try:
            outputs = trainer.step(*(ms.Tensor(b) for b in batch))
        finally:  # after the first call (even a failed one) later graphs of the process compile as usual
            stop_caching()
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        return {name: to_float(v) for name, v in zip(trainer.loss_names, outputs)}

    def start_epoch(epoch):
        if trainer.learning_rates is None:
            return None
        rates = trainer.learning_rates(epoch)
        for name, lr in rates.items():
            set_lr(optimizers[name], lr)
        return next(iter(rates.values())) if len(set(rates.values())) == 1 else None

    def end_epoch(epoch):
        # Eager: compiling the sample networks cost more than their few forwards (a 64x64 CoCosNet: 27 s against
        # 3 s per grid) and kept the compiled graphs in memory beside the train step's. Every rank computes the
        # grid, so that the ranks reach the next collective together (README: data-parallel training).
        with eager():
            grid = spec.sample_grid(cfg, trainer, data)
        if rt.is_main:
            write_image(os.path.join(cfg.output_dir, "samples", f"epoch_{epoch + 1:04d}.png"), grid)

    with heap_trimming(cfg.trim_heap, device=rt.device_target) as trimming:
        if trimming:
            log.info(f"trim_heap: the C heap's free pages go back to the system every {cfg.trim_heap:g} s")
        state = loop.run(step, start_epoch, end_epoch)
    log.info(f"peak resident memory of this process: {peak_memory_gb():.2f} GB")
    return state


def check_loss_scale(spec, cfg, trainer):
    """Refuse a ``--loss_scale`` that the model's train step does not apply (its ``build_trainer`` must pass
    ``loss_scale=parse_loss_scale(cfg.loss_scale)`` to ``common.train.GANTrainStep`` / ``TrainOneStep``)."""
    if not parse_loss_scale(cfg.loss_scale):
        return
    updates = [cell for _, cell in trainer.step.cells_and_names() if isinstance(cell, GradientUpdate)]
    if not updates or any(u.loss_scaler is None for u in updates):
        raise ConfigError(f"--loss_scale={cfg.loss_scale}: the {spec.name} train step does not apply loss scaling; "
                          f"use --loss_scale=0")


def _component_path(path, component):
    """The ``component`` checkpoint beside ``path`` (a snapshot's ``G.ckpt`` -> its ``Corr.ckpt``)."""
    sibling = os.path.join(os.path.dirname(path), f"{component}.ckpt")
    if not os.path.isfile(sibling):
        raise CheckpointError(f"checkpoint {path} has no {component}.ckpt beside it; pass a snapshot folder "
                              f"(train.py writes them under <output_dir>/ckpt)")
    return sibling


DATA_KEYS = ("class_table",)  # how every model's data is read, beside ModelSpec.data_keys


def recorded_data(spec, cfg):
    """What a checkpoint records of how its data was read: :data:`DATA_KEYS`, ``spec.data_keys`` and
    ``spec.demo_data_keys``; a path to an existing file (``classes.yaml``, ``lists/val.txt``) made absolute, as
    eval may run from another folder."""
    def recorded(value):
        is_path = isinstance(value, str) and (os.sep in value or os.path.splitext(value)[1]) and os.path.exists(value)
        return os.path.abspath(value) if is_path else value
    return {key: recorded(cfg[key]) for key in DATA_KEYS + spec.data_keys + spec.demo_data_keys}


def _checkpoint_file(spec, ckpt, component):
    """The file holding ``component``'s weights in the snapshot whose first inference component's file is ``ckpt``."""
    return ckpt if component == spec.inference_components[0] else _component_path(ckpt, component)


def _graph_checkpoint(spec, graph, ckpt):
    """What an export note records as ``graph``'s checkpoint: the file of its component (CoCosNet's translation
    network: ``G.ckpt``, not the ``Corr.ckpt`` that ``ckpt`` names), or ``{component: file}`` for a graph of
    every inference component (CoCosNet's composite)."""
    if graph.component or len(spec.inference_components) == 1:
        return _checkpoint_file(spec, ckpt, graph.component or spec.inference_components[0])
    return {c: _checkpoint_file(spec, ckpt, c) for c in spec.inference_components}


def load_inference(spec, cfg, conv_impl="native", log=print):
    """The inference networks of ``spec`` with the weights of ``cfg.ckpt`` (default: latest snapshot).

    The architecture keys are read from the checkpoint's metadata and replace the config's (logged when
    they differ), so no training flag needs repeating; an empty ``dataroot`` becomes the one the checkpoint was
    trained on where that folder still exists (logged either way; empty for the demo data), and with it the recorded
    :func:`recorded_data` keys (``demo_data_keys`` after a demo run only) that still hold their defaults (a key
    given its default value explicitly cannot be told from an unset one and takes the recorded value too); a class
    table in effect must have the checkpoint's class count (``common.classes.apply_class_table``). The networks run on
    ``conv_impl`` (the process's ``Runtime.conv_impl``), their spectral-norm layers folded into their weights
    (``W / sigma``, the inference-mode value, as exported) and their matmul-path weights packed: inference only.
    Returns ``(nets, checkpoint path)``.
    """
    first = spec.inference_components[0]
    path = resolve_checkpoint(cfg.ckpt or os.path.join(cfg.output_dir, "ckpt"), first)
    meta = read_meta(path)
    if meta.get("model", spec.name) != spec.name:
        raise CheckpointError(f"checkpoint {path} holds a {meta['model']} network, not {spec.name}; use "
                              f"{meta['model']}/{os.path.basename(sys.argv[0]) or 'eval.py'} (or scripts/run_*.sh "
                              f"{meta['model']}) for it")
    defaults = load_config(spec.config_path)
    for key in spec.arch_keys:
        if key in meta and meta[key] != cfg[key]:
            if cfg[key] != defaults[key]:
                log(f"[{spec.name}] {key}={meta[key]!r} from the checkpoint {path} (--{key}={cfg[key]!r} ignored)")
            cfg[key] = meta[key]
    if not cfg.dataroot and "dataroot" in meta:
        root = meta["dataroot"]
        if not root or os.path.isdir(root):
            cfg.dataroot = root
            recorded = meta.get("data", {})
            taken = {key: recorded[key] for key in DATA_KEYS + spec.data_keys + (() if root else spec.demo_data_keys)
                     if key in recorded and cfg[key] == defaults[key] != recorded[key]}
            cfg.update(taken)
            what = (f"dataroot={root}" if root else "the demo data") + (
                f" ({', '.join(f'{k}={v}' for k, v in taken.items())})" if taken else "")
            if root or taken:
                log(f"[{spec.name}] {what}, the data the checkpoint {path} was trained on (pass --dataroot for other "
                    f"data)")
        else:
            log(f"[{spec.name}] the checkpoint {path} was trained on {root}, which is not there now: the demo data "
                f"stands in; pass --dataroot=<the data's new place> to evaluate on it")
    apply_class_table(cfg, spec.class_count_key, given_by=f"checkpoint {path}")
    nets = spec.build_inference(cfg)
    arch = dict(spec.arch(cfg), model=spec.name)
    for component, net in nets.items():
        load_cell(net, _checkpoint_file(spec, path, component), arch, what=f"{spec.name} {component}")
        prepare_inference(net, conv_impl)
    return nets, path


def prepare_inference(net, conv_impl="native"):
    """``net``, weights loaded, made inference-only in place: spectral norms folded into their weights (as
    exported), convolutions on ``conv_impl``, matmul-path weights packed."""
    fold_spectral_norm(net)
    use_inference_conv_impl(net, conv_impl)


def load_runners(spec, cfg, rt, log=print):
    """The inference networks of eval/predict on ``cfg.backend``: ``({component: network or runner}, checkpoint)``.

    ``mindspore``: :func:`load_inference` on the process's convolution path. ``onnxruntime`` / ``openvino``:
    the checkpoint's exported graphs (``ExportGraph.component``), each an ONNX file in a
    :class:`common.backends.GraphRunner` checked against the graph's input shapes and output names: the files
    of ``--onnx`` (comma-separated, in :attr:`ModelSpec.inference_components` order), or
    ``<output_dir>/export/<stem>.onnx`` as ``export.py`` writes it, exported again (ONNX only, parity-checked)
    unless its JSON note names this checkpoint with the same architecture and it is newer than the checkpoint.
    """
    if cfg.backend == "mindspore":
        if cfg.onnx:
            raise ConfigError(f"--onnx={cfg.onnx} is for --backend=onnxruntime or openvino; --backend=mindspore runs "
                              f"the checkpoint")
        return load_inference(spec, cfg, rt.conv_impl, log=log)
    from common.backends import load_backend
    nets, ckpt = load_inference(spec, cfg, log=log)
    graphs = spec.export_graph(cfg, nets, os.path.join(cfg.output_dir, "export"))
    graphs = {g.component: g for g in (graphs if isinstance(graphs, (list, tuple)) else [graphs]) if g.component}
    components = [c for c in spec.inference_components if c in graphs]
    given = [p.strip() for p in cfg.onnx.split(",")] if cfg.onnx else []
    if given and len(given) != len(components):
        raise ConfigError(f"--onnx={cfg.onnx}: {spec.name} runs {len(components)} ONNX file(s), one per network "
                          f"({', '.join(components)}), comma-separated in that order")
    runners = {}
    for i, component in enumerate(components):
        graph = graphs[component]
        path = given[i] if given else graph.stem + ".onnx"
        if not given and not _export_is_current(spec, cfg, graph, ckpt):
            log(f"[{spec.name}] exporting {component} of {ckpt} to {path} for --backend={cfg.backend}")
            _export_graph(spec, cfg, graph, ckpt, formats=("ONNX",))
        runner = load_backend(cfg.backend, path, precision=cfg.precision)
        runner.check({n: x.shape for n, x in zip(graph.input_names, graph.inputs)}, graph.output_names,
                     f"the {spec.name} {component} of {ckpt}")
        runners[component] = runner
    log(f"[{spec.name}] inference on " + "; ".join(f"{c}: {r.describe()}" for c, r in runners.items()))
    return runners, ckpt


def _export_is_current(spec, cfg, graph, ckpt):
    """Whether ``graph.stem``.onnx was exported from ``ckpt`` as it is now, with this architecture and note."""
    import json
    path, note_path = graph.stem + ".onnx", graph.stem + ".json"
    source = _graph_checkpoint(spec, graph, ckpt)
    sources = source.values() if isinstance(source, dict) else [source]
    if not (os.path.isfile(path) and os.path.isfile(note_path)) or any(
            os.path.getmtime(path) < os.path.getmtime(file) for file in sources):
        return False
    with open(note_path) as f:
        note = json.load(f)
    want = dict({"model": spec.name, "checkpoint": source}, **spec.arch(cfg), **graph.note)
    inputs = [{"name": n, "shape": list(x.shape), "dtype": "float32"} for n, x in zip(graph.input_names, graph.inputs)]
    return all(note.get(k) == v for k, v in want.items()) and note.get("inputs") == inputs and "ONNX" in note.get("files", {})


def evaluate(spec, cfg):
    """Generate the validation set, score it and write ``<output_dir>/eval/metrics.json``; returns the record.

    The eval folder is built anew and replaces the previous one only when the run succeeds, so the metrics score
    this run's images alone (the folder metrics read every image in ``fake/``)."""
    from common.metrics.evaluate import build_metrics, evaluate_folders, select_metrics, write_metrics_json
    names, not_computed = select_metrics(cfg.metrics, inception_path=cfg.inception_path)
    _check_precision(spec, cfg, scores=True)
    rt = _backend_runtime(cfg)
    nets, ckpt = load_runners(spec, cfg, rt)
    out_dir = os.path.join(cfg.output_dir, "eval")
    with atomic_dir(out_dir) as work:
        run = spec.generate_eval(cfg, rt, nets, work)
        result = evaluate_folders(run.fake_dir, run.real_dir,
                                  build_metrics(names, cfg.inception_path or None, conv_impl=rt.conv_impl))
        protocol = dict(result.pop("protocol"), **run.protocol)
        metrics = {k: v for k, v in result.items() if k != "images"}
        metrics.update(run.metrics)
        not_computed.update(run.not_computed)
        if run.fcn_pairs is not None:
            if cfg.fcn_ckpt:
                from common.metrics.fcn import fcn_score_files
                scores, table = fcn_score_files(cfg.fcn_ckpt, run.fcn_pairs, os.path.join(work, "fcn"),
                                                conv_impl=rt.conv_impl)
                protocol.update({f"fcn_{k}": v for k, v in scores.pop("protocol").items()})
                metrics.update({f"fcn_{k}": v for k, v in scores.items() if isinstance(v, float)})
                with open(os.path.join(work, "fcn_per_class.md"), "w") as f:
                    f.write(table + "\n")
            else:
                not_computed["fcn_score"] = ("not computed: pass --fcn_ckpt=<FCN-8s .caffemodel or .ckpt> "
                                             "(common/METRICS.md)")
        record = write_metrics_json(os.path.join(work, "metrics.json"), model=spec.name, checkpoint=ckpt,
                                    metrics=metrics, protocol=protocol, settings=run.settings,
                                    not_computed=not_computed, images=run.images)
    print(f"{spec.name} eval on {run.images} images ({ckpt}):")
    for name, value in metrics.items():
        print(f"  {name}: {value:.4f}" if isinstance(value, float) else f"  {name}: {value}")
    for name, why in not_computed.items():
        print(f"  {name}: {why}")
    print(f"results: {out_dir}/index.html, {out_dir}/metrics.json")
    return record


def import_checkpoint(cfg, source_key, tool, convert):
    """What every ``MODEL/import_*.py`` does: convert the file named by ``--<source_key>`` with
    ``convert(cfg, source, out)`` into ``--ckpt`` (default ``<output_dir>/imported/G.ckpt``); returns ``out``."""
    if not cfg[source_key]:
        raise ValueError(f"nothing to import: pass --{source_key}=<file> to {tool}")
    out = cfg.ckpt or os.path.join(cfg.output_dir, "imported", "G.ckpt")
    if not out.endswith(".ckpt"):
        raise ValueError(f"--ckpt={out}: {tool} writes one file; pass a path ending in .ckpt")
    _runtime(cfg, cpu_conv="native", precision="f32")
    convert(cfg, cfg[source_key], out)
    return out


def input_paths(path, what="input"):
    """``--input``: one file or every image in a folder; errors name the path and the fix."""
    if not path:
        raise ValueError("pass --input=<image file or folder of images>")
    if os.path.isdir(path):
        return list_images(path, what=f"{what} folder")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path} does not exist")
    return [path]


def predict(spec, cfg):
    """Run the inference networks on ``cfg.input`` (none for a spec whose ``predict_input`` is False, e.g.
    OSMIS, which samples from noise); returns the written paths."""
    _check_precision(spec, cfg)
    if spec.predict_input:
        paths = input_paths(cfg.input)
    elif cfg.input:
        raise ValueError(f"--input={cfg.input}: {spec.name} generates from noise and takes no input")
    else:
        paths = []
    rt = _backend_runtime(cfg)
    nets, ckpt = load_runners(spec, cfg, rt)
    out_dir = os.path.join(cfg.output_dir, "predict")
    written = spec.predict(cfg, nets, paths, out_dir)
    print(f"{spec.name}: {len(paths)} input(s), checkpoint {ckpt}; wrote {len(written)} file(s) to {out_dir}")
    return written


ONNX_ATOL = 1e-4


def export(spec, cfg):
    """Export the inference graph(s) to MINDIR/ONNX, check parity, write the JSON notes.

    ``spec.export_graph`` returns one :class:`ExportGraph` (result: {format: (path, diff)}) or a list of
    them, e.g. a model's sub-networks and their composite (result: {file stem: {format: (path, diff)}}).
    """
    _runtime(cfg, cpu_conv="native", precision="f32")
    nets, ckpt = load_inference(spec, cfg)
    out_dir = os.path.join(cfg.output_dir, "export")
    graph = spec.export_graph(cfg, nets, out_dir)
    if isinstance(graph, (list, tuple)):
        return {os.path.basename(g.stem): _export_graph(spec, cfg, g, ckpt) for g in graph}
    return _export_graph(spec, cfg, graph, ckpt)


def _export_graph(spec, cfg, graph, ckpt, formats=None):
    """Write one :class:`ExportGraph` in ``formats`` (default: the configured ``export_format``), parity-checked,
    with its JSON note."""
    import json
    formats = formats or (("MINDIR", "ONNX") if cfg.export_format == "ALL" else (cfg.export_format,))
    outputs = outputs_numpy(graph.net(*graph.inputs))  # once: the parity checks and the note share it
    done, written = {}, []
    try:
        if "MINDIR" in formats:
            written.append(export_mindir(graph.net, graph.inputs, graph.stem + ".mindir"))
            done["MINDIR"] = (written[-1], check_mindir_parity(graph.net, graph.inputs, written[-1], outputs=outputs))
        if "ONNX" in formats:
            written.append(graph.stem + ".onnx")
            if graph.onnx_parts:
                compose_onnx(written[-1], {p: stem + ".onnx" for p, stem in graph.onnx_parts.items()}, graph.onnx_glue,
                             {n: x.shape for n, x in zip(graph.input_names, graph.inputs)},
                             {n: y.shape for n, y in zip(graph.output_names, outputs)})
            else:
                export_onnx(graph.net, graph.inputs, written[-1], graph.input_names, graph.output_names)
            done["ONNX"] = (written[-1], check_onnx_parity(graph.net, graph.inputs, written[-1], atol=ONNX_ATOL,
                                                           outputs=outputs))
    except ExportError:
        for path in written:  # a file that does not reproduce the network must not be left for use
            if os.path.exists(path):
                os.remove(path)
        raise
    source = _graph_checkpoint(spec, graph, ckpt)
    note = dict({"model": spec.name, "checkpoint": source}, **spec.arch(cfg), **graph.note)
    note["inputs"] = [{"name": n, "shape": list(x.shape), "dtype": "float32"} for n, x in zip(graph.input_names, graph.inputs)]
    note["outputs"] = [{"name": n, "shape": list(y.shape), "dtype": "float32"} for n, y in zip(graph.output_names, outputs)]
    note["files"] = {fmt: {"path": os.path.basename(p), "max_abs_diff_vs_mindspore": d} for fmt, (p, d) in done.items()}
    with atomic_file(graph.stem + ".json") as tmp:
        with open(tmp, "w") as f:
            json.dump(note, f, indent=1)
    for fmt, (path, diff) in done.items():
        print(f"{fmt}: {path} from {', '.join(source.values()) if isinstance(source, dict) else source}, "
              f"max |diff| vs MindSpore = {diff:.3g}")
    return done
