"""CoCosNet import of the official PyTorch checkpoints: state dicts written by the test with the reference's
key names (spectral norm as weight_orig/weight_u/weight_v, the unused D decoder, a DataParallel prefix,
a scalar attention gain) are read without torch, mapped to ours, and load as a snapshot eval/predict use; and
the whole official correspondence and translation networks, restated in PyTorch (bench/torch_cocosnet.py) and
saved with torch.save, compute through the import what they compute in PyTorch."""
import os

import numpy as np
import pytest

import common  # noqa: F401
import mindspore as ms

from common import drivers
from common.checkpoint import load_cell
from common.spectral_norm import spectral_sigma
from cocosnet.src.convert import TorchImportError, reference_to_ours
from cocosnet.src.model import build_discriminator
from cocosnet.src.spec import CoCosNetSpec

torch = pytest.importorskip("torch")
import torch_cocosnet as official  # noqa: E402  (bench/torch_cocosnet.py: the official networks restated)

SPEC = CoCosNetSpec()
ARCH = {"label_nc": 5, "size": 64, "ngf": 4, "corr_channels": 8, "spade_hidden": 8, "ndf": 8, "num_D": 2}
# keys as the reference code names them (models/networks/{correspondence,generator,architecture,discriminator}.py)
REFERENCE_KEYS = {
    "Corr": ["adaptive_model_seg.layer1.0.weight_orig", "adaptive_model_seg.layer1.0.weight_u",
             "adaptive_model_img.head_0.norm_0.mlp_shared.1.weight", "adaptive_model_img.G_middle_1.conv_s.weight_orig",
             "layer.0.conv1.weight", "layer.3.prelu.weight", "theta.weight", "phi.bias"],
    "G": ["fc.weight", "head_0.conv_0.weight_orig", "head_0.conv_0.bias", "head_0.conv_0.weight_v",
          "up_0.conv_s.weight_orig", "up_3.norm_1.mlp_gamma.weight", "attn.gamma", "attn.theta.weight_orig",
          "conv_img.weight"],
    "D": ["discriminator_0.model0.0.weight", "discriminator_1.model1.0.0.weight_orig", "discriminator_0.attn.o.weight_u",
          "discriminator_1.model4.0.bias"],
}


def reference_d_keys(num_D=2):
    """Every key of the reference ``MultiscaleDiscriminator`` (4 layers, ``spectralinstance``) but its unused decoder,
    from models/networks/discriminator.py: ``modelK = Sequential(*[norm_layer(conv), LeakyReLU])`` and
    ``norm_layer(conv) = Sequential(spectral_norm(conv) without bias, InstanceNorm2d)`` for K = 1, 2, 3."""
    sn = ("weight_orig", "weight_u", "weight_v")
    one = ["model0.0.weight", "model0.0.bias", "model4.0.weight", "model4.0.bias", "attn.gamma"]
    one += [f"model{k}.0.0.{leaf}" for k in (1, 2, 3) for leaf in sn]
    one += [f"attn.{conv}.{leaf}" for conv in ("theta", "phi", "g", "o") for leaf in sn]
    return {f"discriminator_{i}.{key}" for i in range(num_D) for key in one}


def reference_state(net, rng):
    """Our parameters under the reference names, with fresh random values: a spectral-normalised layer's
    ``X.conv.weight`` is ``X.weight_orig``, and the discriminator's ``discriminator_N.modelK.0`` is the reference's
    ``discriminator_N.modelK.0.0`` (see :func:`reference_d_keys`)."""
    wrapped = {p.name[:-len(".weight_u")] for p in net.get_parameters() if p.name.endswith(".weight_u")}
    state = {}
    for p in net.get_parameters():
        module, _, leaf = p.name.rpartition(".")
        if module.endswith(".conv") and module[:-len(".conv")] in wrapped:
            module, leaf = module[:-len(".conv")], "weight_orig" if leaf == "weight" else "bias"
        if module.startswith("discriminator_") and module in wrapped and ".model" in module:
            module += ".0"
        state[f"{module}.{leaf}"] = torch.tensor(rng.normal(size=p.shape).astype(np.float32))
    return state


@pytest.fixture(scope="module")
def torch_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference")
    cfg = drivers.parse(SPEC, [f"--{k}={v}" for k, v in ARCH.items()])
    nets = dict(SPEC.build_inference(cfg), D=build_discriminator(ARCH["label_nc"], ARCH["ndf"], ARCH["num_D"]))
    rng = np.random.default_rng(0)
    states = {}
    for name, net in nets.items():
        state = reference_state(net, rng)
        assert set(REFERENCE_KEYS[name]) <= set(state), sorted(set(REFERENCE_KEYS[name]) - set(state))
        if name == "D":
            assert set(state) == reference_d_keys(ARCH["num_D"]), sorted(set(state) ^ reference_d_keys(ARCH["num_D"]))
            state["discriminator_0.dec.0.weight"] = torch.zeros(4, 4, 3, 3)  # registered, never called
        if name == "G":
            state["attn.gamma"] = torch.tensor(0.25)  # a 0-d Parameter in the reference
            state = {"module." + k: v for k, v in state.items()}  # saved from DataParallel
        torch.save(state, str(folder / f"latest_net_{name}.pth"))
        states[name] = {k.replace("module.", "", 1): v.numpy() for k, v in state.items()}
    return str(folder), states


def test_import_maps_every_reference_key_and_loads_as_a_snapshot(torch_dir, tmp_path):
    from cocosnet.import_torch import main
    folder, states = torch_dir
    out = main([f"--torch_ckpt_dir={folder}", f"--ckpt={tmp_path / 'imported'}"] + [f"--{k}={v}" for k, v in ARCH.items()])
    assert sorted(os.listdir(out)) == ["Corr.ckpt", "D.ckpt", "G.ckpt"]
    cfg = drivers.parse(SPEC, [f"--ckpt={out}"])
    inference, path = drivers.load_inference(SPEC, cfg, log=lambda *_: None)  # spectral norms folded
    assert path == os.path.join(out, "Corr.ckpt")
    nets = SPEC.build_inference(cfg)
    for name, net in nets.items():
        load_cell(net, os.path.join(out, f"{name}.ckpt"), dict(SPEC.arch(cfg), model="cocosnet"))
    params = {name: {p.name: p.asnumpy() for p in net.get_parameters()} for name, net in nets.items()}
    corr, g = states["Corr"], states["G"]
    key = "adaptive_model_seg.layer1.0"
    sigma = spectral_sigma(corr[f"{key}.weight_orig"], corr[f"{key}.weight_u"], corr[f"{key}.weight_v"])
    folded = {p.name: p.asnumpy() for p in inference["Corr"].get_parameters()}[f"{key}.conv.weight"]
    np.testing.assert_allclose(folded, corr[f"{key}.weight_orig"] / sigma, rtol=1e-6)
    np.testing.assert_array_equal(params["Corr"]["adaptive_model_seg.layer1.0.conv.weight"],
                                  corr["adaptive_model_seg.layer1.0.weight_orig"])
    np.testing.assert_array_equal(params["Corr"]["adaptive_model_seg.layer1.0.weight_u"],
                                  corr["adaptive_model_seg.layer1.0.weight_u"])
    np.testing.assert_array_equal(params["Corr"]["layer.0.conv1.weight"], corr["layer.0.conv1.weight"])
    np.testing.assert_array_equal(params["G"]["head_0.conv_0.conv.bias"], g["head_0.conv_0.bias"])
    np.testing.assert_array_equal(params["G"]["up_0.conv_s.conv.weight"], g["up_0.conv_s.weight_orig"])
    assert float(params["G"]["attn.gamma"]) == 0.25
    d = build_discriminator(ARCH["label_nc"], ARCH["ndf"], ARCH["num_D"])
    load_cell(d, os.path.join(out, "D.ckpt"), dict(ARCH, model="cocosnet"))
    np.testing.assert_array_equal(d.discriminator_1.model1[0].conv.weight.asnumpy(),
                                  states["D"]["discriminator_1.model1.0.0.weight_orig"])
    np.testing.assert_array_equal(d.discriminator_0.model3[0].weight_u.asnumpy(),
                                  states["D"]["discriminator_0.model3.0.0.weight_u"])


def test_import_errors_name_the_key(torch_dir):
    folder, states = torch_dir
    cfg = drivers.parse(SPEC, [f"--{k}={v}" for k, v in ARCH.items()])
    corr = SPEC.build_inference(cfg)["Corr"]
    bad = dict(states["Corr"], **{"theta.weight": np.zeros((3, 3), np.float32)})
    with pytest.raises(TorchImportError, match=r"net_Corr.pth: theta.weight has shape \(3, 3\)"):
        reference_to_ours(bad, corr, "net_Corr.pth")
    with pytest.raises(TorchImportError, match=r"1 keys have no counterpart, e.g. \['head_0.fc.weight'\]"):
        reference_to_ours(dict(states["Corr"], **{"head_0.fc.weight": np.zeros(1)}), corr)
    partial = {k: v for k, v in states["Corr"].items() if k != "phi.bias"}
    with pytest.raises(TorchImportError, match=r"1 parameters are missing, e.g. \['phi.bias'\]"):
        reference_to_ours(partial, corr)


@pytest.mark.usefixtures("pynative")
def test_official_networks_loaded_through_the_import_compute_the_official_outputs(tmp_path):
    """The official ``NoVGGCorrespondence`` and ``SPADEGenerator`` (PyTorch restatement under the official key names,
    at ARCH's widths) with trained-like weights (:func:`torch_cocosnet.randomize`: spectral vectors from a
    training-mode forward, so sigma = u^T W v is 0.6-1.0 of the largest singular value; random PReLU slopes and
    attention gain), saved with ``torch.save``, imported by ``import_torch.main`` and loaded as eval/predict load
    them (``load_inference``: spectral norms folded): on the same one-hot label map, exemplar and exemplar label
    map (random per pixel, so that every nearest resize's choice of pixel shows; batch 2), both in eval mode, the
    warped exemplar, the warped mask and the translated image agree.

    Tolerance: 1e-4 of each output's scale. float32 rounding through the ~40 convolution / normalisation layers and
    the correlation, whose temperature (1/0.01) turns the ~1e-7 rounding of the cosine similarities into ~1e-5 of
    the logits, gave 1.3e-5 (warp), 1.6e-5 (mask) and 2.5e-6 (image) of the scale (1.5e-5, 2.0e-5, 3.3e-6 for
    another input draw); there, the smallest wrong mapping tried (one spectral vector of G's up_1.conv_0 replaced)
    moved the image by 2.4e-2 of it, a PReLU slope back at 0.25 the warp by 1.3e-1, theta and phi swapped
    everything by O(1). (The encoders' layer1..5 spectral norms cannot
    show: an instance norm without affine follows each, so sigma cancels; their mapping is checked by name.)
    PyNative: without two graph compiles (graph mode gave the same differences to the last digit, 2026-12-07).
    """
    label_nc, size = ARCH["label_nc"], ARCH["size"]
    rng = np.random.default_rng(3)
    seg, ref_seg = (np.eye(label_nc, dtype=np.float32)[rng.integers(0, label_nc, (2, size, size))].transpose(0, 3, 1, 2)
                    for _ in range(2))
    ref = rng.uniform(-1, 1, (2, 3, size, size)).astype(np.float32)
    seg_t, ref_t, ref_seg_t = (torch.from_numpy(a) for a in (seg, ref, ref_seg))

    torch.manual_seed(0)
    corr = official.NoVGGCorrespondence(label_nc, ARCH["ngf"], ARCH["corr_channels"], ARCH["spade_hidden"])
    gen = official.SPADEGenerator(label_nc, ARCH["ngf"], ARCH["spade_hidden"], crop_size=size)
    official.randomize(corr, ref_t, None, seg_t, ref_seg_t, seed=1)
    with torch.no_grad():
        official.randomize(gen, seg_t, torch.cat((corr(ref_t, None, seg_t, ref_seg_t)["warp_out"], seg_t), 1), seed=2)
        want = corr(ref_t, None, seg_t, ref_seg_t)
        want["image"] = gen(seg_t, torch.cat((want["warp_out"], seg_t), 1))
    want = {k: v.numpy() for k, v in want.items()}
    assert 0.1 < want["image"].std() and np.abs(want["image"]).max() < 0.99  # tanh not saturated: errors would show
    folder = tmp_path / "official"
    folder.mkdir()
    torch.save(corr.state_dict(), str(folder / "latest_net_Corr.pth"))
    torch.save(gen.state_dict(), str(folder / "latest_net_G.pth"))

    from cocosnet.import_torch import main
    out = main([f"--torch_ckpt_dir={folder}", f"--ckpt={tmp_path / 'imported'}", "--mode=pynative"]
               + [f"--{k}={v}" for k, v in ARCH.items()])  # main sets the mode (init_runtime)
    nets, _ = drivers.load_inference(SPEC, drivers.parse(SPEC, [f"--ckpt={out}"]), log=lambda *_: None)
    assert not any(net.training for net in nets.values())
    warp_out, warp_mask = nets["Corr"](*(ms.Tensor(a) for a in (seg, ref, ref_seg)))
    assert ms.get_context("mode") == ms.PYNATIVE_MODE
    image = nets["G"](ms.ops.cat((warp_out, ms.Tensor(seg)), 1))
    got = {"warp_out": warp_out.asnumpy(), "warp_mask": warp_mask.asnumpy(), "image": image.asnumpy()}
    for name, value in got.items():
        assert value.shape == want[name].shape, name
        scale = float(np.abs(want[name]).max())
        err = float(np.abs(value - want[name]).max())
        assert err <= 1e-4 * scale, f"{name}: max difference {err:.3g}, {err / scale:.3g} of the scale {scale:.3g}"
