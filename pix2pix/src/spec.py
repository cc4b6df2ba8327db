"""pix2pix for the shared drivers: config -> data -> networks and step -> eval -> predict -> export."""
import os

import numpy as np
from mindspore import Tensor
from tqdm import tqdm

from common.backends import CellRunner
from common.classes import config_class_table
from common.demo_data import ensure_demo_dataset
from common.export import prepare_for_export
from common.io import image_header, read_image, read_label, tensor_to_uint8, write_html, write_image
from common.model_spec import Datasets, EvalRun, ExportGraph, ModelSpec, Trainer
from common.train import linear_decay, parse_loss_scale
from pix2pix.src.dataset import AlignedDataset, check_image_size, plan_tiles
from pix2pix.src.model import valid_sizes
from pix2pix.src.train_step import Pix2PixTrainStep
from pix2pix.src.utils import (build_generator, build_networks, build_optimizers, fcn_label_dir, frame_labels,
                               sample_grid, val_dataset)

__all__ = ["Pix2PixSpec", "input_image"]

EVAL_FOLDERS = ("real_A", "fake_B", "real_B")
NORM_NOTES = {
    "batch_stats": "BatchNorm from the statistics of the input batch (pix2pix test protocol; batch 1 = instance "
                   "norm with BN's gamma/beta), written as explicit mean/variance ops",
    "running_stats": "BatchNorm from the moving mean/variance learnt in training (PyTorch --eval)",
}

GREY_INPUT_NOTE = ("{path}: a single-channel image, translated as a grey picture (16 bit: its high byte); if it "
                   "is a class-id map, pass --class_table=<classes.yaml> so that its ids are painted in the table's "
                   "colours, the colour label maps pix2pix trains on")


class Pix2PixSpec(ModelSpec):
    """U-Net/ResNet generator + PatchGAN, D then G per step (Isola et al. 2017)."""
    name = "pix2pix"
    config_path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "default_config.yaml")
    arch_keys = ("netG", "ngf", "norm", "input_nc", "output_nc", "crop_size")
    data_keys = ("direction",)
    demo_data_keys = ("demo_size", "demo_train", "demo_val")
    data_layout = "folder of aligned AB images with train/ and val/ subfolders"

    def demo_dataroot(self, cfg):
        root = ensure_demo_dataset(n_train=cfg.demo_train, n_val=cfg.demo_val, size=cfg.demo_size, seed=0)
        return os.path.join(root, "pix2pix")

    def schedule(self, cfg, demo):
        """(constant epochs, decay epochs): the paper's, or the short demo schedule on the demo data."""
        return (cfg.demo_epochs, cfg.demo_epochs_decay) if demo else (cfg.n_epochs, cfg.n_epochs_decay)

    def check(self, cfg, rt, demo):
        check_image_size(cfg.crop_size, valid_sizes(cfg.netG), cfg.netG)
        if not demo:
            return []
        n_const, n_decay = self.schedule(cfg, demo)
        return [f"demo data: {n_const} + {n_decay} epochs (demo_epochs, demo_epochs_decay); pass --dataroot for "
                f"your data and the paper schedule (n_epochs, n_epochs_decay)"]

    def datasets(self, cfg, rt):
        root, demo = self.dataroot(cfg)
        train = AlignedDataset(root, cfg.phase, cfg.direction, cfg.load_size, cfg.crop_size, train=True, flip=cfg.flip)
        return Datasets(train=train, val=val_dataset(cfg, root), root=root, demo=demo)

    def build_trainer(self, cfg, rt, data):
        netG, netD = build_networks(cfg)
        opt_G, opt_D = build_optimizers(cfg, netG, netD)
        n_const, n_decay = self.schedule(cfg, data.demo)

        def learning_rates(epoch):
            lr = linear_decay(epoch, cfg.lr, n_const, n_decay)
            return {"opt_G": lr, "opt_D": lr}

        step = Pix2PixTrainStep(netG, netD, opt_G, opt_D, cfg.gan_mode, cfg.lambda_L1,
                                loss_scale=parse_loss_scale(cfg.loss_scale))
        return Trainer(step=step,
                       loss_names=("d_loss", "g_loss", "g_gan", "g_l1"), networks={"G": netG, "D": netD},
                       optimizers={"opt_G": opt_G, "opt_D": opt_D}, n_epochs=n_const + n_decay,
                       learning_rates=learning_rates)

    def sample_grid(self, cfg, trainer, data):
        return sample_grid(trainer.networks["G"], data.val, cfg.num_samples)

    def image_size(self, cfg):
        """Side of predict/export inputs: ``image_size``, or the training crop size (from the checkpoint)."""
        return cfg.image_size or cfg.crop_size

    def build_inference(self, cfg):
        size_key = "image_size" if cfg.image_size else "crop_size"
        return {"G": build_generator(cfg, self.image_size(cfg), size_key=size_key)}

    def network_runner(self, cfg, component, net):
        net.set_train(cfg.eval_protocol == "paper")
        return CellRunner(net, ("input",))

    def generate_eval(self, cfg, rt, nets, out_dir):
        netG = self.runners(cfg, nets)["G"]
        root, demo = self.dataroot(cfg)
        dataset = val_dataset(cfg, root)
        n = len(dataset) if not cfg.num_val else min(cfg.num_val, len(dataset))
        l1, rows = [], []
        rng = np.random.RandomState(0)
        for i in tqdm(range(n), desc="pix2pix generate", unit="img"):
            a, b = dataset.get(i, rng)
            fake = netG({"input": a[None]})[0][0]
            l1.append(float(np.abs(fake - b).mean()))
            name = dataset.name(i)
            files = [f"{sub}/{name}.png" for sub in EVAL_FOLDERS]
            for rel, img in zip(files, (a[:3], fake, b)):
                write_image(os.path.join(out_dir, rel), tensor_to_uint8(img))
            rows.append([name] + files)
        write_html(os.path.join(out_dir, "index.html"), f"pix2pix {cfg.netG} on {cfg.val_phase}",
                   ["name", "input", "output", "target"], rows)
        fcn_pairs = {}
        if cfg.fcn_ckpt:
            labels = frame_labels([r[0] for r in rows], fcn_label_dir(cfg, root, demo))
            fcn_pairs = {frame: (os.path.join(out_dir, "fake_B", f"{name}.png"), label)
                         for name, (frame, label) in labels.items()}
        return EvalRun(
            fake_dir=os.path.join(out_dir, "fake_B"), real_dir=os.path.join(out_dir, "real_B"), images=n,
            metrics={"l1": float(np.mean(l1))},
            protocol={"l1": f"mean |G(x) - y| in [-1, 1] units at {cfg.crop_size}x{cfg.crop_size} (bicubic resize), "
                            f"eval_protocol={cfg.eval_protocol}"},
            settings={"eval_protocol": cfg.eval_protocol, "crop_size": cfg.crop_size, "val_phase": cfg.val_phase},
            fcn_pairs=fcn_pairs)

    def predict(self, cfg, nets, paths, out_dir):
        netG = self.runners(cfg, nets)["G"]
        table = config_class_table(cfg)
        written = []
        for path in tqdm(paths, desc="pix2pix predict", unit="img"):
            if table is None and image_header(path)[2] == 1:
                tqdm.write(GREY_INPUT_NOTE.format(path=path))
            fake, note = self.translate(cfg, lambda x: netG({"input": x})[0], input_image(path, table))
            if note:
                tqdm.write(f"{path}: {note} (--fit={cfg.fit})")
            out = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0] + ".png")
            write_image(out, fake)
            written.append(out)
        return written

    def translate(self, cfg, generator, image):
        """One input image through ``generator`` as ``predict`` does (``--fit``, tiles merged).

        Args:
            generator: ``[B, input_nc, S, S] float32 in [-1, 1] -> [B, output_nc, S, S]`` (the MindSpore
                network or an exported graph), S = :meth:`image_size`.
            image: ``[H, W, 3]`` uint8 RGB.

        Returns:
            (``[H', W', output_nc]`` uint8 output, note on the resize/tiling; empty when none happened).
        """
        plan = plan_tiles(image.shape[0], image.shape[1], self.image_size(cfg), cfg.fit)
        fake = plan.merge(np.concatenate([generator(tile[None]) for tile in plan.split(image)]))
        return tensor_to_uint8(fake), plan.note

    def export_graph(self, cfg, nets, out_dir):
        net = prepare_for_export(nets["G"], cfg.export_norm)
        size = self.image_size(cfg)
        x = Tensor(np.random.default_rng(0).uniform(-1, 1, (1, cfg.input_nc, size, size)).astype(np.float32))
        return ExportGraph(net=net, inputs=(x,), input_names=("input",), output_names=("output",),
                           stem=os.path.join(out_dir, f"{cfg.file_name}_{cfg.export_norm}"), component="G",
                           note={"export_norm": cfg.export_norm, "normalisation": NORM_NOTES[cfg.export_norm],
                                 "dropout": "off", "value_range": [-1, 1]})


def input_image(path, table=None):
    """A predict input as [H, W, 3] uint8 RGB. With a class table (:class:`common.classes.ClassTable`), a
    single-channel file is a map of its class ids, painted in its colours (the colour label maps pix2pix
    trains on); an id outside the table is an error naming the file."""
    if table is not None and image_header(path)[2] == 1:
        return table.colorize(table.to_ids(read_label(path), f"label map {path}"))
    return read_image(path)
