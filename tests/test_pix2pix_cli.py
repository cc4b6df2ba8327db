"""Entry points through the scripts users run: train, eval of two models (with FCN-score), predict, --help, errors."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--netG=unet_64", "--ngf=8", "--ndf=8", "--crop_size=64", "--load_size=72", "--demo_size=64",
        "--demo_train=16", "--demo_val=4", "--num_workers=0"]


def lpips_weights_available():
    from common.pretrained import pretrained_path
    try:
        pretrained_path("alexnet")
        pretrained_path("lpips_alexnet")
        return True
    except FileNotFoundError:
        return False


def run(cmd, env, timeout=400):
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_cache):
    """A tiny pix2pix run trained through scripts/run_train.sh into a private outputs folder.

    Without conftest's ONEDNN_MAX_CPU_ISA pin, as on a user's machine: the scripts pick the CPU
    convolution path themselves (matmul at AVX-512 where the CPU has it).
    """
    out = tmp_path_factory.mktemp("outputs")
    env = dict(os.environ, SYNTHZOO_OUTPUTS=str(out))
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    rc, log = run(["bash", "scripts/run_train.sh", "pix2pix", "CPU", "--max_steps=6"] + TINY, env)
    assert rc == 0, log[-3000:]
    return out, env


def test_run_train_writes_outputs(trained):
    from common.runtime import cpu_flags
    out, _ = trained
    assert (out / "pix2pix" / "ckpt" / "latest").is_file()
    log = (out / "pix2pix" / "train.log").read_text()
    assert "epoch: 1 step: 1, d_loss" in log
    flags = cpu_flags()
    expected = "mixed (ONEDNN_MAX_CPU_ISA=AVX512_CORE)" if "avx512f" in flags else "mixed (ONEDNN_MAX_CPU_ISA=AVX2)"
    assert f"CPU convolutions: {expected}" in log
    assert "trim_heap" not in log  # off by default


CRN_TINY = ["--size=32", "--width_mult=0.0625", "--num_outputs=3", "--max_train_samples=4", "--num_workers=0"]


def test_run_eval_all_two_models_with_fcn_score_and_summary_table(trained, tmp_path):
    out, env = trained
    # PyNative for the runs this test adds (the subject is run_eval.sh's plumbing, not the compiled graphs)
    rc, log = run(["bash", "scripts/run_train.sh", "crn", "CPU", "--max_steps=2", "--mode=pynative"] + CRN_TINY, env)
    assert rc == 0, log[-3000:]
    from common.demo_data import ensure_demo_dataset
    cityscapes = os.path.join(ensure_demo_dataset(n_train=16, n_val=4, size=64), "cityscapes")
    image_metrics = ["psnr", "ssim"] + (["lpips_alexnet"] if lpips_weights_available() else [])
    scorer = tmp_path / "fcn.ckpt"
    rc, log = run([sys.executable, "-m", "common.metrics.train_fcn", "--data", cityscapes, "--out", str(scorer),
                   "--tiny", "--epochs", "1", "--height", "32", "--width", "64", "--batch-size", "4"], env)
    assert rc == 0, log[-3000:]
    # no training flag is repeated; --eval_protocol and --demo_* are pix2pix keys that CRN must not receive
    rc, log = run(["bash", "scripts/run_eval.sh", "all", "CPU", f"--fcn_ckpt={scorer}", "--num_val=2", "--mode=pynative",
                   "--eval_protocol=eval", "--demo_size=64", "--demo_train=16", "--demo_val=4",
                   f"--metrics={','.join(image_metrics)}"], env)
    assert rc == 0, log[-3000:]
    assert "== evaluating crn --fcn_ckpt" in log and "--eval_protocol" not in log.split("== evaluating crn")[1].split("\n")[0]
    record = json.loads((out / "pix2pix" / "eval" / "metrics.json").read_text())
    assert record["images"] == 2 and record["model"] == "pix2pix" and record["settings"]["eval_protocol"] == "eval"
    metrics = {k: v["value"] for k, v in record["metrics"].items()}
    for key in ["l1", "fcn_pixel_acc", "fcn_mean_class_acc", "fcn_mean_iou"] + image_metrics:
        assert key in metrics and record["metrics"][key]["protocol"], key
    assert 0.0 <= metrics["fcn_pixel_acc"] <= 1.0 and 0 < metrics["l1"] < 2
    assert (out / "pix2pix" / "eval" / "index.html").read_text().count("<img") == 6
    assert len(os.listdir(out / "pix2pix" / "eval" / "fake_B")) == 2
    assert (out / "pix2pix" / "eval" / "fcn_per_class.md").is_file()
    assert len(os.listdir(out / "pix2pix" / "eval" / "fcn" / "labels")) == 2  # only the evaluated frames
    crn = json.loads((out / "crn" / "eval" / "metrics.json").read_text())
    assert crn["settings"]["k"] == 3 and "k" not in crn["metrics"] and "fcn_mean_iou" in crn["metrics"]
    summary = json.loads((out / "eval_summary.json").read_text())
    assert {"pix2pix", "crn"} <= {m["model"] for m in summary["models"]} and "psnr" in log

    rc, log = run(["bash", "scripts/run_eval.sh", "all", "CPU", "--no_such_key=1"], env)
    assert rc == 2 and "no evaluated model" in log and "no_such_key" in log
    assert "== evaluating" not in log  # refused before any model is evaluated


@pytest.mark.parametrize("model", ["pix2pix", "crn", "cocosnet", "osmis"])
@pytest.mark.parametrize("entry", ["train", "eval", "predict", "export"])
def test_every_entry_point_answers_help(model, entry):
    rc, log = run([sys.executable, f"{model}/{entry}.py", "--help"], dict(os.environ), timeout=120)
    assert rc == 0 and "usage: python" in log and "--seed=0" in log and "--output_dir=outputs/" + model in log


@pytest.mark.parametrize("args", [["run_train.sh", "osmis", "--help"], ["run_train.sh", "osmis", "CPU", "--help"],
                                  ["run_eval.sh", "osmis", "--help"], ["run_eval.sh", "cocosnet", "--help"],
                                  ["run_export.sh", "osmis", "-h"], ["run_distribute_train.sh", "osmis", "--help"]])
def test_every_script_answers_help(args):
    rc, log = run(["bash", f"scripts/{args[0]}"] + args[1:], dict(os.environ), timeout=120)
    assert rc == 0 and f"Usage: bash scripts/{args[0]}" in log and f"usage: python {args[1]}/" in log, log[-2000:]


@pytest.mark.parametrize("script", ["check_device.sh", "get_pretrained.sh", "prepare_data.sh", "run_demo.sh"])
def test_scripts_without_a_model_answer_help(script, tmp_path):
    """--help prints the script's usage on stdout with exit 0 and does nothing else (get_pretrained.sh used to
    run the conversion, check_device.sh and prepare_data.sh exited 2)."""
    proc = subprocess.run(["bash", f"scripts/{script}", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, SYNTHZOO_CACHE=str(tmp_path)))
    assert proc.returncode == 0 and f"Usage: bash scripts/{script}" in proc.stdout, proc.stdout + proc.stderr
    assert not proc.stderr.strip() and not os.listdir(tmp_path), proc.stderr


@pytest.mark.parametrize("args", [["check_device.sh", "CPU", "extra"], ["get_pretrained.sh", "extra"]])
def test_scripts_refuse_unexpected_arguments(args, tmp_path):
    proc = subprocess.run(["bash", f"scripts/{args[0]}"] + args[1:], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, SYNTHZOO_CACHE=str(tmp_path)))
    assert proc.returncode == 2 and "error: unexpected argument 'extra'" in proc.stderr, proc.stdout + proc.stderr
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("command,usage", [
    (["cocosnet/import_torch.py"], "python cocosnet/import_torch.py --torch_ckpt_dir="),
    (["-m", "cocosnet.build_ref_list"], "python -m cocosnet.build_ref_list --dataroot="),
    (["pix2pix/import_torch.py"], "python pix2pix/import_torch.py --torch_ckpt="),
    (["crn/import_tf.py"], "python crn/import_tf.py --tf_ckpt="),
    (["-m", "common.prepare"], "python -m common.prepare DATASET SRC DST"),
    (["-m", "common.report"], "python -m common.report [OUTPUTS_DIR]"),
    (["-m", "common.metrics"], "usage: python -m common.metrics"),
    (["-m", "common.pretrained"], "--archive ARCHIVE"),
    (["-m", "common.gpu_runtime"], "python -m common.gpu_runtime check"),
    (["-m", "common.config"], "usage: python -m common.config known MODEL/default_config.yaml"),
    (["demo/app.py"], "Usage: python -m demo.app [MODEL]"),
    (["bench/torch_vgg19_step.py"], "size batch steps"),
])
def test_tools_answer_help(command, usage):
    """Every tool besides the drivers answers --help on stdout with exit 0 (common.report used to read
    "--help" as its outputs folder, common.prepare exited 2, demo/app.py could not find ``common``)."""
    proc = subprocess.run([sys.executable, *command, "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and usage in proc.stdout and not proc.stderr.strip(), proc.stdout + proc.stderr


HELP_WITHOUT_MINDSPORE = """
import runpy, sys
sys.modules["mindspore"] = None  # any import of MindSpore now raises ImportError
for script in sys.argv[1:]:
    sys.argv = [script, "--help"]
    runpy.run_path(script, run_name="__main__")
"""


def test_help_answers_before_mindspore_loads():
    """--help reads the YAML configs only (common.entry): no MindSpore import, so it answers at once."""
    scripts = [f"{m}/{e}.py" for m in ("pix2pix", "crn", "cocosnet", "osmis") for e in ("train", "eval", "predict", "export")]
    rc, log = run([sys.executable, "-c", HELP_WITHOUT_MINDSPORE] + scripts, dict(os.environ), timeout=120)
    assert rc == 0 and log.count("usage: python") == 16, log[-2000:]


@pytest.mark.parametrize("args,message", [
    (["--foo=1"], "error: unknown config key(s) ['foo']"),
    (["--batch_size=abc"], "error: --batch_size=abc: expected an integer"),
    (["--dataroot=/no/such/folder"], "error: dataroot /no/such/folder does not exist"),
    (["--trim_heap=-1"], "error: --trim_heap=-1.0: the seconds between two trims of the C heap; 0 turns it off"),
])
def test_bad_input_is_one_clean_line(args, message, tmp_path):
    rc, log = run([sys.executable, "pix2pix/train.py", f"--output_dir={tmp_path / 'run'}"] + args, dict(os.environ))
    assert rc == 2 and message in log and "Traceback" not in log, log[-2000:]
    assert not (tmp_path / "run").exists()  # a failed start leaves no half-written run
    rc, log = run([sys.executable, "pix2pix/train.py", f"--output_dir={tmp_path / 'run'}", "--debug"] + args,
                  dict(os.environ))
    assert rc == 2 and "Traceback" in log


def test_checkpoint_of_another_model_is_refused_cleanly(trained):
    out, env = trained
    rc, log = run([sys.executable, "crn/eval.py", f"--ckpt={out / 'pix2pix' / 'ckpt'}"], env)
    assert rc == 2 and "holds a pix2pix network, not crn" in log and "Traceback" not in log


def test_predict_folder(trained, tmp_path):
    out, env = trained
    from common.demo_data import render_scene
    from common import cityscapes as cs
    from common.io import write_image
    for i in range(2):
        write_image(str(tmp_path / "in" / f"scene{i}.png"), cs.colorize(render_scene(i, 64, 64)[1]))
    rc, log = run([sys.executable, "pix2pix/predict.py", f"--input={tmp_path / 'in'}",
                   f"--output_dir={out / 'pix2pix'}"], env)  # the 64x64 input size comes from the checkpoint
    assert rc == 0, log[-3000:]
    from common.io import read_image
    for i in range(2):
        assert read_image(str(out / "pix2pix" / "predict" / f"scene{i}.png")).shape == (64, 64, 3)
    wide = tmp_path / "wide"
    write_image(str(wide / "street.png"), cs.colorize(render_scene(5, 64, 128)[1]))
    rc, log = run([sys.executable, "pix2pix/predict.py", f"--input={wide}", f"--output_dir={out / 'pix2pix'}"], env)
    assert rc == 0 and "translated as 2 overlapping 64x64 tiles (--fit=tile)" in log, log[-3000:]
    assert read_image(str(out / "pix2pix" / "predict" / "street.png")).shape == (64, 128, 3)  # aspect kept


@pytest.mark.parametrize("args,message", [
    ([], "Usage: bash scripts/run_train.sh MODEL DEVICE"),
    (["nomodel", "CPU"], "'nomodel' is not a model with train.py"),
    (["pix2pix", "TPU"], "device 'TPU' is not CPU, GPU or Ascend"),
    (["pix2pix", "CPU", "lr=1"], "unexpected argument 'lr=1'"),
])
def test_run_train_usage_errors(args, message):
    rc, log = run(["bash", "scripts/run_train.sh"] + args, dict(os.environ))
    assert rc == 2 and message in log


def test_run_train_rejects_unknown_key(tmp_path):
    rc, log = run(["bash", "scripts/run_train.sh", "pix2pix", "CPU", "--learning_rate=1"],
                  dict(os.environ, SYNTHZOO_OUTPUTS=str(tmp_path)))
    assert rc != 0 and "unknown config key(s) ['learning_rate']" in log and "valid keys" in log


def test_separate_compile_trains_alike_and_keeps_no_temporary_folder(demo_cache, tmp_path):
    """--separate_compile=true: a child process compiles the train step and this one loads it (MindSpore says
    so at GLOG_v=2), with the losses of an in-process compile; the run's temporary folder is gone afterwards.
    With --compile_cache=true the child fills the configuration's folder, and a rerun loads it with no child."""
    env = dict(os.environ, GLOG_v="2")
    cmd = [sys.executable, "pix2pix/train.py", "--max_steps=2", "--log_every=1", "--lambda_L1=80"] + TINY
    runs = {}
    for name, extra in (("inline", ["--separate_compile=false"]), ("apart", ["--separate_compile=true"]),
                        ("kept", ["--separate_compile=true", "--compile_cache=true"]),
                        ("rerun", ["--separate_compile=true", "--compile_cache=true"])):
        rc, out = run(cmd + [f"--output_dir={tmp_path / name}"] + extra, env)
        assert rc == 0, out[-3000:]
        runs[name] = ((tmp_path / name / "train.log").read_text(), out)
    assert "separate compile" not in runs["inline"][0] and "Use the compilation cache" not in runs["inline"][1]
    for name in ("apart", "kept"):
        log, out = runs[name]
        assert "separate compile: the train step compiled in a child process in" in log, log
        assert "Use the compilation cache" in out
    temporary = runs["apart"][0].split("compile cache: ")[1].split(",")[0]
    assert "for this run only" in runs["apart"][0] and not os.path.exists(temporary)
    kept = runs["kept"][0].split("compile cache: ")[1].split()[0]
    assert kept.startswith(os.path.join(demo_cache, "graphs", "pix2pix-")) and os.path.isdir(kept)
    assert "holds this configuration's train step" in runs["rerun"][0] and "separate compile" not in runs["rerun"][0]

    def losses(log):
        return [line.split(" epoch: ")[1].split(", ms/step")[0] for line in log.splitlines() if " epoch: " in line]
    assert len(losses(runs["inline"][0])) == 2
    assert all(losses(runs[name][0]) == losses(runs["inline"][0]) for name in ("apart", "kept", "rerun"))


@pytest.mark.parametrize("args", [[], ["CPU"], ["--num_val=2"], ["GPU", "--num_val=2"]])
def test_run_eval_without_checkpoints(args, tmp_path):
    """MODEL is optional (all): a device or a --key=value in its place is read as such."""
    rc, log = run(["bash", "scripts/run_eval.sh"] + args, dict(os.environ, SYNTHZOO_OUTPUTS=str(tmp_path)))
    assert rc == 1 and "no model has a checkpoint" in log, log


def test_compile_cache_rerun_loads_the_train_step_and_trains_alike(demo_cache, tmp_path):
    """--compile_cache=true, compiling in the training process: a rerun of one configuration loads the train step
    that the first run compiled (MindSpore says so at GLOG_v=2) and logs the same losses; another loss weight gets
    its own folder."""
    env = dict(os.environ, GLOG_v="2")
    cmd = [sys.executable, "pix2pix/train.py", "--max_steps=2", "--log_every=1", "--compile_cache=true",
           "--separate_compile=false"] + TINY
    runs = {}
    for name, extra in (("first", []), ("rerun", ["--resume=true", "--save_epoch_freq=3"]), ("other", ["--lambda_L1=50"])):
        rc, out = run(cmd + [f"--output_dir={tmp_path / name}"] + extra, env)
        assert rc == 0, out[-3000:]
        runs[name] = ((tmp_path / name / "train.log").read_text(), out)
    folders = {name: log.split("compile cache: ")[1].split()[0] for name, (log, _) in runs.items()}
    assert folders["first"] == folders["rerun"] != folders["other"]
    assert folders["first"].startswith(os.path.join(demo_cache, "graphs", "pix2pix-"))
    assert "is empty: this run's compile fills it" in runs["first"][0]
    assert "holds this configuration's train step" in runs["rerun"][0]
    assert "is empty" in runs["other"][0]
    assert "Use the compilation cache" in runs["rerun"][1]
    assert "Use the compilation cache" not in runs["first"][1] + runs["other"][1]

    def losses(log):
        return [line.split(" epoch: ")[1].split(", ms/step")[0] for line in log.splitlines() if " epoch: " in line]
    assert losses(runs["first"][0]) == losses(runs["rerun"][0]) and len(losses(runs["first"][0])) == 2
    assert losses(runs["other"][0]) != losses(runs["first"][0])

    def weights(name):  # the loaded graph trains the networks' own parameters: the snapshot holds them
        import mindspore as ms
        snapshot = (tmp_path / name / "ckpt" / "latest").read_text().strip()
        saved = ms.load_checkpoint(str(tmp_path / name / "ckpt" / snapshot / "G.ckpt"))
        return {k: v.asnumpy() for k, v in saved.items() if isinstance(v, ms.Tensor)}
    first, rerun, other = weights("first"), weights("rerun"), weights("other")
    assert all((first[k] == rerun[k]).all() for k in first)
    assert any((first[k] != other[k]).any() for k in first)
