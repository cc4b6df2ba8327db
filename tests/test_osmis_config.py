"""OSMIS automatic configuration against the reference rule's worked examples and its two crash sizes."""
import pytest

from osmis.src.config import auto_config, bounded_resolution, layout_sizes, low_level_size, reference_config

# (W, H, max_size) -> train (H, W), noise (h, w), G, D, D0: computed by hand with the reference rule
# (core/recommended_config.py + dataloading.bound_resolution of boschresearch/one-shot-synthesis)
REFERENCE = [
    ((400, 400, 330), (320, 320), (5, 5), 7, 7, 3),
    ((854, 480, 330), (192, 320), (3, 5), 7, 7, 3),
    ((854, 480, 1024), (512, 896), (4, 7), 8, 7, 4),
    ((854, 480, 256), (128, 256), (2, 4), 7, 7, 3),
    ((64, 64, 64), (64, 64), (4, 4), 5, 6, 2),
    ((96, 96, 1024), (96, 96), (6, 6), 5, 6, 2),
    ((128, 128, 1024), (128, 128), (4, 4), 6, 7, 3),
    ((256, 256, 1024), (256, 256), (4, 4), 7, 7, 3),
    ((512, 512, 1024), (512, 512), (4, 4), 8, 7, 4),
    ((1024, 1024, 1024), (1024, 1024), (4, 4), 9, 8, 4),
]


@pytest.mark.parametrize("size, resolution, noise, g, d, d0", REFERENCE)
def test_reference_rule(size, resolution, noise, g, d, d0):
    h, w = bounded_resolution(*size)
    ref = reference_config(h, w)
    assert (ref.resolution, ref.noise_shape, ref.num_blocks_g, ref.num_blocks_d, ref.num_blocks_d0) == \
        (resolution, noise, g, d, d0)
    ours = auto_config(h, w)
    assert (ours.resolution, ours.noise_shape, ours.num_blocks_g, ours.num_blocks_d, ours.num_blocks_d0) == \
        (resolution, noise, g, d, d0)
    assert ours.notes == []
    assert min(layout_sizes(ours.resolution, d, d0)[-1]) >= 1


def test_bounded_resolution_truncates():
    assert bounded_resolution(854, 480, 330) == (185, 330)
    assert bounded_resolution(480, 854, 330) == (330, 185)
    assert bounded_resolution(200, 100, 330) == (100, 200)


def test_published_shapes_320():
    assert low_level_size((320, 320), 3) == (40, 40)
    assert layout_sizes((320, 320), 7, 3) == [(20, 20), (10, 10), (5, 5), (2, 2)]
    assert layout_sizes((192, 320), 7, 3) == [(12, 20), (6, 10), (3, 5), (1, 2)]


def test_854x480_at_64_no_generator_depth():
    h, w = bounded_resolution(854, 480, 64)
    assert (h, w) == (35, 64)
    assert reference_config(h, w) is None  # the reference crashes: no G puts 35 in [3, 7] * 2^(G-1)
    cfg = auto_config(h, w)
    assert (cfg.resolution, cfg.noise_shape, cfg.num_blocks_g, cfg.num_blocks_d0) == ((32, 64), (2, 4), 5, 2)
    # 8x16 low-level map: 3 layout blocks (4x8, 2x4, 1x2), not the recommended 4
    assert cfg.num_blocks_d == 5
    assert layout_sizes(cfg.resolution, cfg.num_blocks_d, cfg.num_blocks_d0) == [(4, 8), (2, 4), (1, 2)]
    assert len(cfg.notes) == 2 and "crashes" in cfg.notes[0] and "num_blocks_d lowered to 5" in cfg.notes[1]


def test_854x480_at_128_layout_branch():
    h, w = bounded_resolution(854, 480, 128)
    ref = reference_config(h, w)
    assert (ref.resolution, ref.num_blocks_d, ref.num_blocks_d0) == ((64, 128), 7, 3)
    assert layout_sizes(ref.resolution, 7, 3)[-1] == (0, 1)  # the reference's crash
    cfg = auto_config(h, w)
    assert (cfg.resolution, cfg.noise_shape, cfg.num_blocks_g, cfg.num_blocks_d, cfg.num_blocks_d0) == \
        ((64, 128), (2, 4), 6, 6, 3)
    assert layout_sizes(cfg.resolution, 6, 3) == [(4, 8), (2, 4), (1, 2)]
    assert len(cfg.notes) == 1


@pytest.mark.parametrize("w, h", [(w, h) for w in (64, 80, 100, 160, 333, 700) for h in (64, 71, 128, 250, 512)])
def test_every_size_trains(w, h):
    for max_size in (64, 96, 128, 330, 1024):
        hh, ww = bounded_resolution(w, h, max_size)
        if min(hh, ww) < 16:
            continue
        cfg = auto_config(hh, ww)
        assert 5 <= cfg.num_blocks_g <= 9 and min(cfg.noise_shape) >= 1
        assert cfg.num_blocks_d0 <= cfg.num_blocks_g and cfg.num_blocks_d > cfg.num_blocks_d0
        assert min(layout_sizes(cfg.resolution, cfg.num_blocks_d, cfg.num_blocks_d0)[-1]) >= 1
        m = 2 ** (cfg.num_blocks_g - 1)
        assert cfg.resolution == (cfg.noise_shape[0] * m, cfg.noise_shape[1] * m)


def test_user_depths_and_errors():
    cfg = auto_config(320, 320, num_blocks_d=6, num_blocks_d0=2)
    assert (cfg.num_blocks_d, cfg.num_blocks_d0) == (6, 2)
    with pytest.raises(ValueError, match="num_blocks_d=2 must exceed"):
        auto_config(320, 320, num_blocks_d=2)
    with pytest.raises(ValueError, match="16 pixels"):
        auto_config(10, 300)
