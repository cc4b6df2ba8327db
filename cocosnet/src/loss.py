"""CoCosNet loss pieces that are not generic GAN/perceptual terms.

* :func:`contextual_loss` - the contextual loss (Mechrez et al., ECCV 2018) as the CoCosNet reference
  computes it with ``--PONO`` (``ContextualLoss_forward``): features centred per position by the
  exemplar's channel mean, cosine distances, relative distances, affinities with bandwidth ``h``.
* :func:`warped_mask_loss` - NLL of the warped exemplar label map against the input label map.
* :func:`self_reference_l1` - L1 weighted per sample by the self-reference flags (VGG feature matching).
"""
from mindspore import ops

from common.layers import expand, reduce_mean

from cocosnet.src.blocks import feature_normalize

__all__ = ["contextual_loss", "warped_mask_loss", "self_reference_l1"]


def contextual_loss(x, y, h=0.1, rel_eps=1e-3):
    """Contextual loss of features ``x`` (output) against ``y`` (exemplar), per sample.

    With ``mu_y`` the mean of ``y`` over channels at each position, ``x' = x - mu_y``, ``y' = y - mu_y``,
    both L2-normalised over channels (:func:`feature_normalize`):

    * ``d_ij = 1 - x'_i . y'_j`` (i over x's positions, j over y's),
    * ``d~_ij = d_ij / (min_j d_ij + rel_eps)``, ``w_ij = exp((1 - d~_ij) / h)``, ``A_ij = w_ij / sum_j w_ij``,
    * ``CX = mean_i max_j A_ij``; loss ``= -log CX``.

    Args:
        x, y: [B, C, H, W] features of the same shape (VGG relu maps in CoCosNet).
        h: bandwidth (0.1).
        rel_eps: added to the row minimum before dividing (the reference's 1e-3).

    Returns:
        [B] losses (>= 0; 0 when every x position has exactly one dominant match).
    """
    if x.shape != y.shape:
        raise ValueError(f"contextual_loss: x {x.shape} and y {y.shape} must have the same shape [B, C, H, W]")
    b, c, hh, ww = x.shape
    mu = expand(reduce_mean(y, (1,)), y)
    xn = feature_normalize(x - mu).reshape(b, c, hh * ww)
    yn = feature_normalize(y - mu).reshape(b, c, hh * ww)
    d = 1.0 - ops.BatchMatMul(transpose_a=True)(xn, yn)  # [B, N, N]
    # row statistics broadcast by common.layers.expand, scalars multiplied: a broadcasting Div (or Mul) would keep
    # index tables of the [B, N, N] size for the whole run
    d_rel = d * expand(ops.reciprocal(d.min(axis=-1, keepdims=True) + rel_eps), d)
    w = ops.exp((1.0 - d_rel) * (1.0 / h))
    a = w * expand(ops.reciprocal(w.sum(axis=-1, keepdims=True)), w)
    cx = a.max(axis=-1).mean(axis=1)
    return -ops.log(cx)


def warped_mask_loss(warp_mask, seg_small, ref_seg_small, eps=1e-10):
    """The warped-mask loss (reference ``mask`` term, ``warp_mask_losstype=direct``), unweighted.

    NLL of the warped exemplar mask at the input's class, per position of the correlation grid:
    ``sum_p w_p * -log(warp_mask[label_p, p] + eps) / (sum_p w_p + 1e-5)``, with ``w_p = 0`` where the
    input's class is 0 ("other") or does not occur in the exemplar's label map, else 1.

    Args:
        warp_mask: [B, L, h, w] soft class probabilities (:class:`CorrespondenceNet` output).
        seg_small: [B, L, h, w] one-hot input label map at the grid size (nearest resized).
        ref_seg_small: [B, L, h, w] one-hot exemplar label map at the grid size.

    Returns:
        scalar.
    """
    present = ref_seg_small[:, 1:].max(axis=(2, 3), keepdims=True)  # [B, L-1, 1, 1] classes the exemplar has
    weight = (seg_small[:, 1:] * present).sum(axis=1)  # [B, h, w]
    nll = -(seg_small * ops.log(warp_mask + eps)).sum(axis=1)
    return (nll * weight).sum() / (weight.sum() + 1e-5)


def self_reference_l1(fake, real, self_ref):
    """``mean(|fake - real| * s_b / (sum_b s_b + 1e-5))`` over all elements: the reference's
    ``weighted_l1_loss`` with per-sample weights from the self-reference flags ``self_ref`` [B] (0/1).

    fake, real: [B, C, H, W] -> scalar (0 when no sample of the batch is a self-reference pair).
    """
    err = ops.abs(fake - real)
    return (err * expand((self_ref / (self_ref.sum() + 1e-5)).reshape(-1, 1, 1, 1), err)).mean()
