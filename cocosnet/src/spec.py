"""CoCosNet for the shared drivers: config -> exemplar data -> Corr + G + D and the G_then_D step -> eval
(PSNR/SSIM/FID via the driver, plus the exemplar-style figure) -> predict (output + warped exemplar) ->
export (the published correspondence and translation networks, and their composite)."""
import os

import numpy as np
from mindspore import Tensor
from tqdm import tqdm

from common.backends import CellRunner
from common.classes import config_class_table
from common.config import ConfigError, load_config
from common.demo_data import STYLED_LABEL_NC, ensure_demo_dataset
from common.export import prepare_for_export
from common.io import (check_image_pair, image_header, make_grid, read_image, resize_nearest, resize_photo,
                       tensor_to_uint8, write_html, write_image)
from common.layers import count_params, init_weights
from common.model_spec import Datasets, EvalRun, ExportGraph, ModelSpec, Trainer
from common.spectral_norm import fold_spectral_norm
from common.train import parse_loss_scale
from cocosnet.src.dataset import ExemplarDataset, one_hot, read_ids
from cocosnet.src.model import CoCosNet, build_correspondence, build_discriminator, build_generator
from cocosnet.src.train_step import LOSS_NAMES, build_train_step, build_vgg_features
from cocosnet.src.utils import adam, colorize, palette_distance, ttur_rates

__all__ = ["CoCosNetSpec", "default_ref_lists", "exemplar_photo", "export_graphs", "read_exemplar", "resize_note",
           "translate_runners"]

# the published two-network form (OpenVINO Open Model Zoo cocosnet-correspondence / cocosnet-generator)
# and the current single network
CORR_NAMES = (("input.1", "input.70", "ref_seg_map"), ("warped_exemplar", "warped_mask"))
GEN_NAMES = (("seg",), ("exemplar_based_output",))
COMPOSITE_NAMES = (("input_seg_map", "ref_image", "ref_seg_map"), ("exemplar_based_output",))


def translate_runners(corr, generator, seg, ref, ref_seg):
    """Exemplar-based translation through runners of the two published networks (``CoCosNetSpec.runners``:
    MindSpore cells, or their ONNX files under ``--backend``; the demo's onnxruntime sessions): correspondence
    -> warped exemplar, then translation of [warped exemplar, seg] on channels, as
    :meth:`cocosnet.src.model.CoCosNet.translate` chains them.

    ([B,L,H,W] one-hot, [B,3,H,W] in [-1, 1], [B,L,H,W]) -> (output, warped exemplar), uint8 [B, H, W, 3]."""
    warped, _ = corr(dict(zip(CORR_NAMES[0], (seg, ref, ref_seg))))
    image = generator({GEN_NAMES[0][0]: np.concatenate([warped, seg], 1)})[0]
    return tensor_to_uint8(image), tensor_to_uint8(warped)


def default_ref_lists(root, data_format):
    """(training list, validation pairs) default paths of a dataset (reference names for ADE20K)."""
    if data_format == "ade20k":
        return os.path.join(root, "ade20k_ref.txt"), os.path.join(root, "ade20k_ref_test.txt")
    return os.path.join(root, "ref_train.txt"), os.path.join(root, "ref_val.txt")


class CoCosNetSpec(ModelSpec):
    """Cross-domain correspondence + SPADE translation, hinge GAN with two-scale D (Zhang et al. 2020)."""
    name = "cocosnet"
    config_path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "default_config.yaml")
    arch_keys = ("label_nc", "size", "ngf", "corr_channels", "spade_hidden", "ndf", "num_D")
    inference_components = ("Corr", "G")
    data_layout = "ADEChallengeData2016 (data_format=ade20k) or a folder with {train,val}/{images,labels}"
    data_keys = ("data_format", "ref_list_val")
    demo_data_keys = ("demo_size", "demo_train", "demo_val")
    class_count_key = "label_nc"
    bf16_refusal = ("CoCosNet's correlation stays float32 (its softmax at temperature 0.01 scales cosine similarities "
                    "by 100, so bf16's ~4e-3 rounding would move the logits by ~0.4), and oneDNN's bf16 mode would "
                    "reach it with every other MatMul of the process; it was no faster either (17.2 against 17.0 "
                    "s/iteration at 256x256, docs/performance.md)")
    demo_keys = {"size": "demo_size", "ngf": "demo_ngf", "corr_channels": "demo_corr_channels",
                 "spade_hidden": "demo_spade_hidden", "ndf": "demo_ndf", "n_epochs": "demo_epochs",
                 "n_epochs_decay": "demo_epochs_decay", "recompute": "demo_recompute", "trim_heap": "demo_trim_heap"}
    # every Parameter write of either step waits for the reads before it (the recomputing step's spectral-vector
    # snapshots are Assigns): the same bits without MindSpore's read copies (tests/test_cocosnet_recompute.py); at
    # 256x256 the copies' pool blocks cost 0.5 GB of peak memory (cocosnet/README.md, Performance)
    parameter_read_copies = False

    def demo_dataroot(self, cfg):
        return ensure_demo_dataset(n_train=cfg.demo_train, n_val=cfg.demo_val, size=cfg.demo_size, seed=0,
                                   styled=True)

    def check(self, cfg, rt, demo):
        if cfg.mode == "pynative":
            raise ConfigError("--mode=pynative: MindSpore 2.10's PyNative cannot differentiate CoCosNet's train step "
                              "(cocosnet/README.md, Performance); train with --mode=graph (predict, eval and export "
                              "run in either mode)")
        notes = []
        if demo:
            defaults = load_config(self.config_path)
            chosen = self.demo_values(cfg, defaults)
            if cfg.load_size == defaults.load_size:
                size = chosen.get("size", cfg.size)
                chosen["load_size"] = size + size // 8
            chosen.update(label_nc=STYLED_LABEL_NC, data_format="folders")
            notes.append(self.use_demo_values(cfg, chosen, data="styled synthetic streets",
                                              advice="your data and the reference sizes"))
        if cfg.size % 32 or cfg.size < 64:
            raise ConfigError(f"size={cfg.size}: CoCosNet needs a multiple of 32, at least 64 (256 in the paper)")
        if not 0 <= cfg.hard_reference_probability <= cfg.real_reference_probability <= 1:
            raise ConfigError(f"hard_reference_probability={cfg.hard_reference_probability} and real_reference_"
                              f"probability={cfg.real_reference_probability}: need 0 <= hard <= real <= 1")
        return notes

    def data_source(self, cfg):
        """(root, data_format, demo): the dataset, or the styled demo data (folders layout)."""
        root, demo = self.dataroot(cfg)
        return root, "folders" if demo else cfg.data_format, demo

    def ref_lists(self, cfg, root, data_format):
        """(training list, validation pairs): the configured files or the dataset's defaults."""
        train, val = default_ref_lists(root, data_format)
        return cfg.ref_list or train, cfg.ref_list_val or val

    def _val_set(self, cfg):
        root, fmt, _ = self.data_source(cfg)
        return ExemplarDataset(root, fmt, "val", self.ref_lists(cfg, root, fmt)[1], cfg.label_nc, cfg.size,
                               max_samples=cfg.num_val, class_table=cfg.class_table)

    def datasets(self, cfg, rt):
        root, fmt, demo = self.data_source(cfg)
        train = ExemplarDataset(root, fmt, "train", self.ref_lists(cfg, root, fmt)[0], cfg.label_nc, cfg.size,
                                cfg.load_size, train=True, real_reference_probability=cfg.real_reference_probability,
                                hard_reference_probability=cfg.hard_reference_probability,
                                max_samples=cfg.max_train_samples, class_table=cfg.class_table)
        return Datasets(train=train, val=self._val_set(cfg), root=root, demo=demo)

    def build_inference(self, cfg):
        corr = build_correspondence(cfg.label_nc, cfg.ngf, cfg.corr_channels, cfg.spade_hidden)
        netG = build_generator(cfg.label_nc, cfg.ngf, cfg.spade_hidden)
        corr.set_train(False)
        netG.set_train(False)
        return {"Corr": corr, "G": netG}

    def build_trainer(self, cfg, rt, data):
        notes = []
        vgg = build_vgg_features(cfg.vgg_path, notes.append)
        return self.build_training(cfg, vgg, notes)

    def build_training(self, cfg, vgg, notes):
        """The Trainer of ``cfg`` with the loss network ``vgg`` (:class:`VGGFeatures`); ``notes`` is extended."""
        nets = self.build_inference(cfg)
        corr, netG = nets["Corr"], nets["G"]
        netD = build_discriminator(cfg.label_nc, cfg.ndf, cfg.num_D)
        for net in (corr, netG, netD):
            init_weights(net, "xavier", cfg.init_variance)
        opt_G = adam(corr.trainable_params() + netG.trainable_params(), cfg.lr / 2, cfg.beta1, cfg.beta2, cfg.eps_G)
        opt_D = adam(netD.trainable_params(), cfg.lr * 2, cfg.beta1, cfg.beta2, 1e-8)
        weights = dict(weight_gan=cfg.weight_gan, lambda_feat=cfg.lambda_feat, lambda_vgg=cfg.lambda_vgg,
                       fm_ratio=cfg.fm_ratio, weight_perceptual=cfg.weight_perceptual, ctx_w=cfg.ctx_w,
                       weight_align=cfg.novgg_featpair, weight_mask=cfg.weight_mask)
        step = build_train_step(corr, netG, netD, vgg, opt_G, opt_D, weights,
                                loss_scale=parse_loss_scale(cfg.loss_scale), recompute=cfg.recompute)
        notes.append(f"CoCosNet {cfg.size}x{cfg.size}, {cfg.label_nc} classes: correspondence {count_params(corr):,}, "
                     f"translation {count_params(netG):,}, discriminator {count_params(netD):,} parameters; "
                     f"G+Corr lr {cfg.lr / 2:g}, D lr {cfg.lr * 2:g}, Adam betas ({cfg.beta1}, {cfg.beta2}); train step: "
                     + ("recompute (six parts' forwards rerun in their backward: less memory, about a tenth more time; "
                        "--recompute=false for the single pass)" if cfg.recompute else "single pass"))

        def learning_rates(epoch):
            return ttur_rates(epoch, cfg.lr, cfg.n_epochs, cfg.n_epochs_decay)

        return Trainer(step=step, loss_names=LOSS_NAMES, networks={"Corr": corr, "G": netG, "D": netD},
                       optimizers={"opt_G": opt_G, "opt_D": opt_D}, frozen={"VGG": vgg},
                       n_epochs=cfg.n_epochs + cfg.n_epochs_decay, learning_rates=learning_rates, notes=notes,
                       keep_conv_transforms=True)  # 256x256: 19.0 -> 18.3 s; peak memory level since (cocosnet/README.md)

    def sample_grid(self, cfg, trainer, data):
        nets = {k: trainer.networks[k] for k in self.inference_components}
        for net in nets.values():
            net.set_train(False)
        runners = self.runners(cfg, nets)
        table = config_class_table(cfg)
        rows = []
        for i in range(min(cfg.num_samples, len(data.val))):
            seg, ref, ref_seg, real, _ = data.val.get(i)
            out, warped = translate_runners(runners["Corr"], runners["G"], seg[None], ref[None], ref_seg[None])
            rows.append([colorize(seg, table), _uint8(ref), warped[0], out[0], _uint8(real)])
        for net in nets.values():
            net.set_train(True)
        return make_grid(rows)

    def network_runner(self, cfg, component, net):
        names = {"Corr": CORR_NAMES[0], "G": GEN_NAMES[0]}[component]
        return CellRunner(net, names)

    def generate_eval(self, cfg, rt, nets, out_dir):
        val = self._val_set(cfg)
        runners = self.runners(cfg, nets)
        table = config_class_table(cfg)
        to_ref, to_real, warp_l1, rows = [], [], [], []
        for i in tqdm(range(len(val)), desc="cocosnet generate", unit="img"):
            seg, ref, ref_seg, real, _ = val.get(i)
            out, warped = translate_runners(runners["Corr"], runners["G"], seg[None], ref[None], ref_seg[None])
            name = val.name(i)
            images = {"fake": out[0], "real": _uint8(real), "exemplar": _uint8(ref), "warped": warped[0],
                      "label": colorize(seg, table)}
            scored = {}
            if cfg.eval_size == "original":
                photo = read_image(val.photo_path(i))
                scored = {"fake": resize_photo(out[0], *photo.shape[:2]), "real": photo}
            for sub, img in dict(images, **scored).items():
                write_image(os.path.join(out_dir, sub, f"{name}.png"), img)
            ids, ref_ids = seg.argmax(0), ref_seg.argmax(0)
            to_ref.append(palette_distance(out[0], ids, images["exemplar"], ref_ids))
            to_real.append(palette_distance(out[0], ids, images["real"], ids))
            warp_l1.append(float(np.abs(warped[0].astype(np.float64) - images["real"]).mean()))
            cells = {sub: f"{sub}/{name}.png" for sub in ("label", "exemplar", "warped", "fake", "real")}
            cells["exemplar"] = (cells["exemplar"], f"exemplar: {val.exemplar_name(i)}")
            rows.append([name] + list(cells.values()))
        write_html(os.path.join(out_dir, "index.html"), f"CoCosNet {cfg.size}x{cfg.size}",
                   ["name", "label", "exemplar", "warped exemplar", "output", "target"], rows)
        run = EvalRun(fake_dir=os.path.join(out_dir, "fake"), real_dir=os.path.join(out_dir, "real"), images=len(val),
                      settings={"size": cfg.size, "label_nc": cfg.label_nc, "eval_size": cfg.eval_size,
                                "pairs": self.ref_lists(cfg, *self.data_source(cfg)[:2])[1]})
        run.metrics["warped_exemplar_l1"] = float(np.mean(warp_l1))
        run.protocol["warped_exemplar_l1"] = ("mean |warped exemplar - target| in 0..255 (uint8 RGB at size x size): how "
                                              "close the correspondence brings the exemplar to the target")
        shared = [(a, b) for a, b in zip(to_ref, to_real) if not np.isnan(a)]
        if shared:
            run.metrics["style_palette_to_exemplar"] = float(np.mean([a for a, _ in shared]))
            run.metrics["style_palette_to_target"] = float(np.mean([b for _, b in shared]))
            run.protocol["style_palette_to_exemplar"] = (
                "style relevance: mean over images and shared classes (id > 0) of |per-class mean RGB of the output "
                "- that of the exemplar| in 0..255; lower follows the exemplar's palette more closely")
            run.protocol["style_palette_to_target"] = "the same against the ground-truth target (same label map)"
        else:
            run.not_computed["style_palette_to_exemplar"] = "no validation pair shares a class with its exemplar"
        return run

    def predict(self, cfg, nets, paths, out_dir):
        if not cfg.exemplar:
            raise ValueError("pass --exemplar=<exemplar photo> (and --exemplar_label=<its label map PNG> if you have it)")
        runners = self.runners(cfg, nets)
        if not cfg.exemplar_label:
            tqdm.write("no --exemplar_label: the exemplar's label map is all zeros, so the correspondence matches "
                       "image features alone")
        ref, ref_seg = read_exemplar(cfg.exemplar, cfg.exemplar_label, cfg.label_nc, cfg.size,
                                     class_table=cfg.class_table)
        _log_resize(cfg.exemplar, cfg.size, "exemplar")
        written = []
        for path in tqdm(paths, desc="cocosnet predict", unit="img"):
            _log_resize(path, cfg.size, "label map")
            seg = one_hot(_resized_ids(path, cfg.label_nc, cfg.size, cfg.class_table), cfg.label_nc)
            out, warped = translate_runners(runners["Corr"], runners["G"], seg[None], ref[None], ref_seg[None])
            stem = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0])
            write_image(stem + ".png", out[0])
            write_image(stem + "_warped.png", warped[0])
            written += [stem + ".png", stem + "_warped.png"]
        return written

    def export_graph(self, cfg, nets, out_dir):
        return export_graphs(nets["Corr"], nets["G"], cfg.label_nc, cfg.size, os.path.join(out_dir, cfg.file_name))


def export_graphs(corr, netG, label_nc, size, stem):
    """The three exported graphs, spectral norm folded in place: correspondence and translation in the
    published two-network form (tensor names of OpenVINO's cocosnet-correspondence / -generator) and the
    composite (its current single network; as ONNX, the two files joined, warped exemplar and label map
    concatenated as ``seg``)."""
    for net in (corr, netG):
        fold_spectral_norm(net)
        prepare_for_export(net)
    composite = prepare_for_export(CoCosNet(corr, netG))
    rng = np.random.default_rng(0)
    seg = Tensor(one_hot(_blocky_ids(rng, label_nc, size), label_nc)[None])
    ref_seg = Tensor(one_hot(_blocky_ids(rng, label_nc, size), label_nc)[None])
    ref = Tensor(rng.uniform(-1, 1, (1, 3, size, size)).astype(np.float32))
    warped, _ = corr(seg, ref, ref_seg)
    g_in = Tensor(np.concatenate([warped.asnumpy(), seg.asnumpy()], 1))
    note = {"value_range": [-1, 1], "label_maps": f"one-hot [1, {label_nc}, {size}, {size}]",
            "spectral_norm": "folded into the weights (W / sigma with the checkpoint's u, v)"}
    return [
        ExportGraph(net=corr, inputs=(seg, ref, ref_seg), input_names=CORR_NAMES[0], output_names=CORR_NAMES[1],
                    stem=f"{stem}_correspondence", note=dict(note, exemplar="RGB in [-1, 1]"), component="Corr"),
        ExportGraph(net=netG, inputs=(g_in,), input_names=GEN_NAMES[0], output_names=GEN_NAMES[1],
                    stem=f"{stem}_translation", note=dict(note, seg="[warped_exemplar (3), label one-hot] on channels"),
                    component="G"),
        ExportGraph(net=composite, inputs=(seg, ref, ref_seg), input_names=COMPOSITE_NAMES[0],
                    output_names=COMPOSITE_NAMES[1], stem=f"{stem}_composite", note=note,
                    onnx_parts={"corr": f"{stem}_correspondence", "gen": f"{stem}_translation"}, onnx_glue=(
                        *(("Identity", [mine], [f"corr/{theirs}"], {})
                          for mine, theirs in zip(COMPOSITE_NAMES[0], CORR_NAMES[0])),
                        ("Concat", [f"corr/{CORR_NAMES[1][0]}", COMPOSITE_NAMES[0][0]], [f"gen/{GEN_NAMES[0][0]}"],
                         {"axis": 1}),
                        ("Identity", [f"gen/{GEN_NAMES[1][0]}"], [COMPOSITE_NAMES[1][0]], {}))),
    ]


def _blocky_ids(rng, label_nc, size):
    coarse = rng.integers(0, label_nc, (size // 16, size // 16))
    return np.kron(coarse, np.ones((16, 16), np.int64))


def _uint8(photo):
    return np.rint((np.clip(photo, -1, 1) + 1) * 127.5).astype(np.uint8).transpose(1, 2, 0)


def read_exemplar(exemplar, exemplar_label, label_nc, size, *, class_table=""):
    """predict.py's exemplar: (ref [3, size, size] in [-1, 1], ref_seg [label_nc, size, size] one-hot).

    ``exemplar_label`` empty: an all-zero label map. Errors name the file: a label map that is not the
    exemplar's size or not single-channel (:func:`common.io.check_image_pair`), class ids >= ``label_nc`` (naming
    the class table file ``class_table`` label_nc came from, if any).
    """
    if not exemplar_label:
        return _photo(exemplar, size), np.zeros((label_nc, size, size), np.float32)
    check_image_pair(exemplar, exemplar_label, fix=f"--exemplar_label is the class-id map (0..{label_nc - 1}) of "
                                                   f"--exemplar")
    return _photo(exemplar, size), one_hot(_resized_ids(exemplar_label, label_nc, size, class_table), label_nc)


def resize_note(path, size, what):
    """What predict does to an input of another size than the network's ``size`` x ``size``, or "" when none.

    Every input (label map, exemplar and its label map) is resized to the square the networks were trained
    at, labels nearest and photos bicubic; a non-square input is squashed (its aspect ratio is not kept) and
    the output is ``size`` x ``size``.
    """
    width, height = image_header(path)[:2]
    if (width, height) == (size, size):
        return ""
    squash = "; its aspect ratio is not kept" if width != height else ""
    return (f"{path}: {what} resized {width}x{height} -> {size}x{size}, the network's size{squash} (outputs are "
            f"{size}x{size})")


def _log_resize(path, size, what):
    note = resize_note(path, size, what)
    if note:
        tqdm.write(note)


def exemplar_photo(rgb, size):
    """[H, W, 3] uint8 photo -> [3, size, size] float32 in [-1, 1], resized as the loaders resize (PIL bicubic):
    the exemplar that ``predict.py`` and the web demo feed the correspondence network."""
    return resize_photo(rgb, size, size).transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0


def _photo(path, size):
    return exemplar_photo(read_image(path), size)


def _resized_ids(path, label_nc, size, class_table=""):
    return resize_nearest(read_ids(path, label_nc, class_table=class_table), size, size).astype(np.int64)
