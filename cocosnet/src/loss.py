"""CoCosNet loss pieces that are not generic GAN/perceptual terms.

* :func:`contextual_loss` - the contextual loss (Mechrez et al., ECCV 2018) as the CoCosNet reference
  computes it with ``--PONO`` (``ContextualLoss_forward``): features centred per position by the
  exemplar's channel mean, cosine distances, relative distances, affinities with bandwidth ``h``.
"""
from mindspore import ops

from cocosnet.src.blocks import feature_normalize

__all__ = ["contextual_loss"]


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
    mu = y.mean(axis=1, keep_dims=True)
    xn = feature_normalize(x - mu).reshape(b, c, hh * ww)
    yn = feature_normalize(y - mu).reshape(b, c, hh * ww)
    d = 1.0 - ops.BatchMatMul(transpose_a=True)(xn, yn)  # [B, N, N]
    d_rel = d / (d.min(axis=-1, keepdims=True) + rel_eps)
    w = ops.exp((1.0 - d_rel) / h)
    a = w / w.sum(axis=-1, keepdims=True)
    cx = a.max(axis=-1).mean(axis=1)
    return -ops.log(cx)
