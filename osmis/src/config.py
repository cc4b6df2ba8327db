"""Automatic configuration of OSMIS / SIV-GAN from the training image size.

The reference (``core/recommended_config.py`` of boschresearch/one-shot-synthesis) keeps the noise map
between 3 and 7 pixels a side and the D layout map near 32x32:

1. :func:`bounded_resolution`: scale (W, H) down so that max(W, H) <= ``max_size`` (aspect kept, ``int``
   truncation) -> ``(H, W)``.
2. :func:`reference_config`: for G blocks 5..9 a side is "ok" when ``3 <= side / 2^(G-1) <= 7``; walking G
   upward, the first G at which both sides have been ok at some G' <= G wins; ``noise = round(side /
   2^(G-1))``, training resolution ``noise * 2^(G-1)``; D and D0 blocks from :data:`RECOMMENDED_BLOCKS`.

The reference crashes where no G qualifies (854x480 at max_size 64: 35x64) and where the layout branch
pools its map below one pixel (854x480 at max_size 128: the 8x16 low-level map pools 4x8 -> 2x4 -> 1x2 ->
0x1). :func:`auto_config` keeps the reference result wherever it works and otherwise takes the nearest
valid configuration, saying so in ``notes``:

* no G qualifies: the G whose noise sides are closest to [3, 7] in log2 distance (ties: fewer blocks),
  each noise side at least 1;
* too many layout blocks: ``num_blocks_d`` is lowered until the layout branch keeps at least 1x1;
* a low-level branch with no room for one layout block: ``num_blocks_d0`` is lowered.
"""
import math
from dataclasses import dataclass, field

__all__ = ["RECOMMENDED_BLOCKS", "NOISE_RANGE", "AutoConfig", "bounded_resolution", "reference_config",
           "auto_config", "low_level_size", "layout_sizes"]

NOISE_RANGE = (3, 7)
# G blocks -> (D blocks, D low-level blocks); the reference's table (~1024, 512, 256, 128, 64 pixels)
RECOMMENDED_BLOCKS = {5: (6, 2), 6: (7, 3), 7: (7, 3), 8: (7, 4), 9: (8, 4)}
MAX_D_BLOCKS = 8  # the D channel table has 9 entries


@dataclass
class AutoConfig:
    """Architecture derived from the image size.

    Attributes:
        resolution: training (H, W) = noise_shape * 2^(num_blocks_g - 1).
        noise_shape: (h, w) of the generator's first feature map.
        num_blocks_g: generator blocks (scales).
        num_blocks_d: discriminator blocks (low-level + content/layout).
        num_blocks_d0: low-level blocks (image scales D sees).
        notes: what differs from the reference rule and why.
    """
    resolution: tuple
    noise_shape: tuple
    num_blocks_g: int
    num_blocks_d: int
    num_blocks_d0: int
    notes: list = field(default_factory=list)


def bounded_resolution(width, height, max_size):
    """(H, W) after scaling (W, H) down so that neither side exceeds ``max_size`` (reference truncation)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size {width}x{height} must be positive")
    w, h = float(width), float(height)
    if w > max_size:
        w, h = max_size, h / (w / max_size)
    if h > max_size:
        w, h = w / (h / max_size), max_size
    return int(h), int(w)


def _ok(side, g):
    return NOISE_RANGE[0] <= side / 2 ** (g - 1) <= NOISE_RANGE[1]


def _from_g(height, width, g):
    m = 2 ** (g - 1)
    noise = (max(int(round(height / m)), 1), max(int(round(width / m)), 1))
    return (noise[0] * m, noise[1] * m), noise


def reference_config(height, width):
    """The reference rule for an (H, W) image: ``AutoConfig`` or None where the reference crashes
    (no G qualifies, or a noise side rounds to 0)."""
    ok_h = ok_w = False
    for g in sorted(RECOMMENDED_BLOCKS):
        ok_h, ok_w = ok_h or _ok(height, g), ok_w or _ok(width, g)
        if ok_h and ok_w:
            m = 2 ** (g - 1)
            noise = (int(round(height / m)), int(round(width / m)))
            if min(noise) < 1:
                return None
            d, d0 = RECOMMENDED_BLOCKS[g]
            return AutoConfig((noise[0] * m, noise[1] * m), noise, g, d, d0)
    return None


def _log_distance(side, g):
    r = side / 2 ** (g - 1)
    return max(0.0, math.log2(NOISE_RANGE[0] / r), math.log2(r / NOISE_RANGE[1]))


def low_level_size(resolution, num_blocks_d0):
    """(h, w) of the D low-level feature: the resolution halved ``num_blocks_d0`` times."""
    return resolution[0] // 2 ** num_blocks_d0, resolution[1] // 2 ** num_blocks_d0


def layout_sizes(resolution, num_blocks_d, num_blocks_d0):
    """Spatial sizes of the layout outputs (each block average-pools by 2, flooring)."""
    h, w = low_level_size(resolution, num_blocks_d0)
    sizes = []
    for _ in range(num_blocks_d - num_blocks_d0):
        h, w = h // 2, w // 2
        sizes.append((h, w))
    return sizes


def auto_config(height, width, num_blocks_d=0, num_blocks_d0=0):
    """Configuration for training images of (H, W) (already bounded by max_size), always trainable.

    ``num_blocks_d`` / ``num_blocks_d0`` > 0 override the recommended D depths (reference options).
    """
    if min(height, width) < 16:
        raise ValueError(f"training size {height}x{width}: the smallest OSMIS generator (5 blocks) needs at least "
                         f"16 pixels a side; use larger images or a larger max_size")
    cfg = reference_config(height, width)
    if cfg is None:
        g = min(sorted(RECOMMENDED_BLOCKS), key=lambda k: _log_distance(height, k) + _log_distance(width, k))
        resolution, noise = _from_g(height, width, g)
        d, d0 = RECOMMENDED_BLOCKS[g]
        cfg = AutoConfig(resolution, noise, g, d, d0)
        cfg.notes.append(f"{height}x{width}: no generator depth puts both noise sides in {list(NOISE_RANGE)} (the "
                         f"reference crashes here); nearest: {g} G blocks, noise {noise[0]}x{noise[1]}, training at "
                         f"{resolution[0]}x{resolution[1]}")
    if num_blocks_d0 > 0:
        cfg.num_blocks_d0 = int(num_blocks_d0)
    if num_blocks_d > 0:
        cfg.num_blocks_d = int(num_blocks_d)
    if cfg.num_blocks_d0 > cfg.num_blocks_g:
        cfg.notes.append(f"num_blocks_d0={cfg.num_blocks_d0} > {cfg.num_blocks_g} generator scales: lowered to "
                         f"{cfg.num_blocks_g}")
        cfg.num_blocks_d0 = cfg.num_blocks_g
    if cfg.num_blocks_d > MAX_D_BLOCKS:
        cfg.notes.append(f"num_blocks_d={cfg.num_blocks_d} > {MAX_D_BLOCKS}: lowered to {MAX_D_BLOCKS}")
        cfg.num_blocks_d = MAX_D_BLOCKS
    while cfg.num_blocks_d0 > 1 and min(low_level_size(cfg.resolution, cfg.num_blocks_d0)) < 2:
        cfg.notes.append(f"low-level map {low_level_size(cfg.resolution, cfg.num_blocks_d0)} leaves no room for a "
                         f"layout block: num_blocks_d0 lowered to {cfg.num_blocks_d0 - 1}")
        cfg.num_blocks_d0 -= 1
    most = cfg.num_blocks_d0 + int(math.floor(math.log2(min(low_level_size(cfg.resolution, cfg.num_blocks_d0)))))
    if cfg.num_blocks_d > most:
        cfg.notes.append(f"{cfg.num_blocks_d - cfg.num_blocks_d0} layout blocks would pool the "
                         f"{'x'.join(map(str, low_level_size(cfg.resolution, cfg.num_blocks_d0)))} low-level map "
                         f"below 1 pixel (the reference crashes here): num_blocks_d lowered to {most}")
        cfg.num_blocks_d = most
    if cfg.num_blocks_d <= cfg.num_blocks_d0:
        raise ValueError(f"num_blocks_d={cfg.num_blocks_d} must exceed num_blocks_d0={cfg.num_blocks_d0} (at least one "
                         f"content/layout block)")
    return cfg
