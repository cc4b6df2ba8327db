"""CRN for the shared drivers: config -> data -> generator + VGG loss -> eval -> predict -> export."""
import itertools
import os

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn

from common.backends import CellRunner
from common.checkpoint import CheckpointError, resolve_checkpoint
from common.classes import config_class_table
from common.config import ConfigError
from common.demo_data import ensure_demo_dataset
from common.export import prepare_for_export
from common.io import make_grid, write_html, write_image
from common.layers import count_params
from common.model_spec import Datasets, EvalRun, ExportGraph, ModelSpec, Trainer
from common.runtime import total_memory_gb
from common.train import TrainOneStep, parse_loss_scale
from crn.src.dataset import CRNDataset, encode_label
from crn.src.loss import CRNWithLoss, build_loss_network
from crn.src.model import build_generator, default_num_outputs, module_channels, module_heights
from crn.src.utils import (colorize_onehot, images_uint8, init_from_lower_resolution, read_label_input, sample_grid,
                           trainable_parameters)

__all__ = ["CRNSpec", "estimated_train_memory_gb"]

SAMPLE_ROWS = 2
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
# Peak-memory model of one CPU train step (batch 1, graph mode, winograd convolutions): the networks, gradients and
# Adam moments (4 x 97.9M float32) plus the runtime; the loss VGG19's 14 ReLU outputs to relu5_2 kept for the
# backward (292 float32 per pixel of each of the k images); and a part that grows with the generator's features
# (sum of H*W*C over the modules), fitted to the peak RSS that crn/README.md Performance reports (4.56 GB at 128p,
# 8.34 GB at 256p, k = 9, full width, 2026-12-01; the model gives both).
# PyNative measured 14.2 GB at 256p (before the ChannelAffine layer norm), 1.33x graph's variable part.
NETWORKS_GB = 3.07
GRAPH_BYTES_PER_FEATURE = 40.9
VGG_BYTES_PER_OUTPUT_PIXEL = 1168.0
PYNATIVE_FACTOR = 1.33


def estimated_train_memory_gb(size, aspect, num_outputs, width_mult, mode):
    """Estimated peak host memory (GB) of a CPU train step at batch 1 (see the constants above)."""
    features = sum(h * aspect * h * module_channels(h, width_mult) for h in module_heights(size))
    graph = (GRAPH_BYTES_PER_FEATURE * features + VGG_BYTES_PER_OUTPUT_PIXEL * num_outputs * size * aspect * size) / 1e9
    return NETWORKS_GB + graph * (PYNATIVE_FACTOR if mode == "pynative" else 1.0)


class CRNSpec(ModelSpec):
    """Cascaded Refinement Network trained with the VGG19 (hindsight) loss, no GAN (Chen & Koltun 2017)."""
    name = "crn"
    config_path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "default_config.yaml")
    arch_keys = ("size", "aspect", "num_classes", "num_outputs", "width_mult")
    data_keys = ("data_format", "label_format", "ignore_index")
    data_layout = "Cityscapes root holding leftImg8bit/ and gtFine/, or see data_format"
    class_count_key = "num_classes"
    demo_keys = {"size": "demo_size", "width_mult": "demo_width_mult", "n_epochs": "demo_epochs"}

    def demo_dataroot(self, cfg):
        return os.path.join(ensure_demo_dataset(), "cityscapes")

    def arch(self, cfg):
        return dict(super().arch(cfg), num_outputs=cfg.num_outputs or default_num_outputs(cfg.size))

    def check(self, cfg, rt, demo):
        chosen = self.demo_values(cfg) if demo else {}
        notes = [self.use_demo_values(cfg, chosen, data="synthetic streets",
                                      advice="your data and the reference recipe")] if chosen else []
        module_heights(cfg.size)
        if rt.device_target == "CPU":
            k = cfg.num_outputs or default_num_outputs(cfg.size)
            need = estimated_train_memory_gb(cfg.size, cfg.aspect, k, cfg.width_mult, cfg.mode) * cfg.batch_size
            have = total_memory_gb()
            if need > 0.9 * have:
                hint = "; --mode=graph needs less" if cfg.mode == "pynative" else ""
                raise ConfigError(f"a {cfg.size}p CRN train step (k={k}, width_mult={cfg.width_mult}, batch "
                                  f"{cfg.batch_size}, {cfg.mode} mode) needs about {need:.0f} GB on CPU, and this "
                                  f"machine has {have:.0f} GB: use a GPU, a smaller --size or --width_mult{hint}")
        return notes

    def _dataset(self, cfg, root, split, max_samples):
        return CRNDataset(root, split, cfg.size, cfg.aspect, cfg.num_classes, cfg.data_format, cfg.label_format,
                          cfg.ignore_index, max_samples, class_table=cfg.class_table)

    def datasets(self, cfg, rt):
        root, demo = self.dataroot(cfg)
        return Datasets(train=self._dataset(cfg, root, "train", cfg.max_train_samples),
                        val=self._dataset(cfg, root, "val", cfg.num_val), root=root, demo=demo)

    def build_trainer(self, cfg, rt, data):
        net = build_generator(cfg, cfg.num_classes + 1)
        notes = []
        perceptual = build_loss_network(cfg, notes.append)
        params = trainable_parameters(net, cfg.train_last_modules)
        opt = nn.Adam(params, learning_rate=Tensor(cfg.lr, ms.float32), beta1=0.9, beta2=0.999, eps=1e-8)
        step = TrainOneStep(CRNWithLoss(net, perceptual, cfg.min_weight), opt, loss_scale=parse_loss_scale(cfg.loss_scale))
        notes.append(f"{cfg.size}p CRN, k={net.num_outputs}, {len(net.refine)} modules, {count_params(net):,} "
                     f"parameters ({sum(p.size for p in params):,} trained)")

        if cfg.init_from and not cfg.resume:  # a bad path is refused before the output folder is written
            try:
                resolve_checkpoint(cfg.init_from, "G")
            except CheckpointError as e:
                raise ConfigError(f"--init_from={cfg.init_from}: {e}") from None

        def fresh_start(log):
            if cfg.init_from:
                init_from_lower_resolution(net, cfg.init_from, log)

        return Trainer(step=step, loss_names=("loss",), networks={"G": net}, optimizers={"opt_G": opt},
                       frozen={"VGG": perceptual}, n_epochs=cfg.n_epochs, learning_rates=lambda epoch: {"opt_G": cfg.lr},
                       on_fresh_start=fresh_start, notes=notes)

    def sample_grid(self, cfg, trainer, data):
        return sample_grid(trainer.networks["G"], data.val, range(min(SAMPLE_ROWS, len(data.val))),
                           config_class_table(cfg))

    def build_inference(self, cfg):
        net = build_generator(cfg, cfg.num_classes + 1)
        net.set_train(False)
        return {"G": net}

    def network_runner(self, cfg, component, net):
        return CellRunner(ExportedCRN(net), ("label",))

    def generate_eval(self, cfg, rt, nets, out_dir):
        from common.metrics.lpips import LPIPSMetric
        from common.pretrained import pretrained_path
        net = self.runners(cfg, nets)["G"]
        root, demo = self.dataroot(cfg)
        val_set = self._dataset(cfg, root, "val", cfg.num_val)
        k = self.arch(cfg)["num_outputs"]
        table = config_class_table(cfg)
        try:
            pretrained_path("lpips_alexnet")
            diversity = LPIPSMetric("alexnet", conv_impl=rt.conv_impl) if k > 1 else None
        except FileNotFoundError:
            diversity = None
        rows, names = [], []
        for index in range(len(val_set)):
            label, photo = val_set.get(index)
            name = val_set.name(index)
            images = images_uint8(net({"label": label[None]})[0])[0]  # [k, H, W, 3]
            real = np.clip(photo, 0, 255).astype(np.uint8).transpose(1, 2, 0)
            for i, img in enumerate(images):
                write_image(os.path.join(out_dir, "images", f"{name}_k{i}.png"), img)
            write_image(os.path.join(out_dir, "fake", f"{name}.png"), images[0])
            write_image(os.path.join(out_dir, "real", f"{name}.png"), real)
            write_image(os.path.join(out_dir, "grids", f"{name}.png"), make_grid([[colorize_onehot(label, table), real] + list(images)]))
            rows.append([name, f"grids/{name}.png"])
            names.append(name)
            if diversity is not None:
                pairs = list(itertools.combinations(range(k), 2))
                diversity.update(images[[i for i, _ in pairs]], images[[j for _, j in pairs]])
        write_html(os.path.join(out_dir, "index.html"), f"CRN {cfg.size}p", ["name", "label | real | outputs"], rows)
        run = EvalRun(fake_dir=os.path.join(out_dir, "fake"), real_dir=os.path.join(out_dir, "real"), images=len(names),
                      settings={"k": k, "size": cfg.size, "scored_output": 0}, fcn_pairs={})
        if diversity is not None:
            run.metrics["lpips_diversity_alexnet"] = diversity.compute()["lpips_alexnet"]
            base = diversity.protocol.replace("; lower is better", "")
            run.protocol["lpips_diversity_alexnet"] = (f"{base}; all {k * (k - 1) // 2} pairs of the k={k} outputs of "
                                                       f"a label map, mean over pairs and label maps; higher is more diverse")
        elif k > 1:
            run.not_computed["lpips_diversity_alexnet"] = "not computed: run bash scripts/get_pretrained.sh"
        if cfg.fcn_ckpt:
            run.fcn_pairs = self.fcn_pairs(cfg, root, out_dir, names)
        return run

    def fcn_pairs(self, cfg, root, out_dir, names):
        """{frame: (output 0, labelIds file)} from ``fcn_label_dir`` (default <dataroot>/gtFine/val)."""
        import glob
        if cfg.fcn_label_dir:
            label_dir = cfg.fcn_label_dir
        elif cfg.data_format == "cityscapes":
            label_dir = os.path.join(root, "gtFine", "val")
        else:
            raise ValueError("--fcn_ckpt with data_format=folders needs --fcn_label_dir: a folder of Cityscapes "
                             "labelIds files named <image stem>_gtFine_labelIds.png for the validation images")
        labels = {os.path.basename(p)[:-len(LABEL_IDS_SUFFIX)]: p
                  for p in glob.glob(os.path.join(label_dir, "**", "*" + LABEL_IDS_SUFFIX), recursive=True)}
        missing = [n for n in names if n not in labels]
        if missing:
            raise FileNotFoundError(f"fcn_label_dir={label_dir}: no <frame id>{LABEL_IDS_SUFFIX} for {len(missing)} of "
                                    f"the {len(names)} evaluated label maps (e.g. {missing[:3]}); pass the "
                                    f"gtFine/<split> folder of the evaluated split as --fcn_label_dir")
        return {name: (os.path.join(out_dir, "images", f"{name}_k0.png"), labels[name]) for name in names}

    def predict(self, cfg, nets, paths, out_dir):
        net = self.runners(cfg, nets)["G"]
        table = config_class_table(cfg)
        written = []
        for path in paths:
            label = read_label_input(path, cfg)
            images = images_uint8(net({"label": label[None]})[0])[0]
            name = os.path.splitext(os.path.basename(path))[0]
            for i, img in enumerate(images):
                written.append(os.path.join(out_dir, f"{name}_k{i}.png"))
                write_image(written[-1], img)
            written.append(os.path.join(out_dir, f"{name}_grid.png"))
            write_image(written[-1], make_grid([[colorize_onehot(label, table)] + list(images)]))
        return written

    def export_graph(self, cfg, nets, out_dir):
        net = prepare_for_export(ExportedCRN(nets["G"].prepare_export()))
        label = Tensor(example_label(cfg.num_classes, cfg.size, cfg.aspect * cfg.size))
        return ExportGraph(net=net, inputs=(label,), input_names=("label",), output_names=("images",),
                           stem=os.path.join(out_dir, f"crn_{cfg.size}p"), component="G",
                           note={"value_range": [0, 1], "layout": "images [1, k, 3, H, W]; clip to 0..1 before saving"})


class ExportedCRN(nn.Cell):
    """The generator with its output in 0..1 units: label [1, P, H, W] -> images [1, k, 3, H, W]."""

    def __init__(self, generator):
        super().__init__(auto_prefix=False)
        self.generator = generator

    def construct(self, label):
        return self.generator(label) / 255.0


def example_label(num_classes, height, width, seed=0):
    """A blocky random label map, one-hot encoded: [1, num_classes + 1, H, W] (parity-check input)."""
    rng = np.random.RandomState(seed)
    coarse = rng.randint(0, num_classes + 1, (max(height // 8, 1), max(width // 8, 1)))
    ids = np.kron(coarse, np.ones((8, 8), np.int64))[:height, :width]
    return encode_label(np.where(ids == num_classes, 255, ids), num_classes)[None]
