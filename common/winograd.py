"""Winograd's minimal filtering algorithms F(m x m, r x r) as matrices (NumPy only).

:mod:`common.conv` runs them on MindSpore's kernels (the ``winograd`` CPU path) and :mod:`common.onnx_winograd`
writes them into an ONNX graph for onnxruntime; both take the transforms from here.
"""
import numpy as np

__all__ = ["winograd_factors", "winograd_matrices"]


def winograd_matrices(tile, kernel=3):
    """Transforms of Winograd's minimal filtering F(m x m, r x r), m = ``tile``, r = ``kernel``, as Kronecker
    products acting on row-major vectorised tiles (Lavin & Gray, "Fast Algorithms for Convolutional Neural
    Networks", 2016; Toom-Cook with the first a - 1 of the points 0, 1, -1, 2, -2, 1/2, -1/2, and infinity). With
    a = m + r - 1 (4, 6 or 8: F(2x2, 3x3), F(4x4, 3x3), F(3x3, 4x4), F(6x6, 3x3)), an a x a input tile ``d`` and an
    r x r kernel ``g`` (both vectorised):
    ``y = K_out @ ((K_w @ g) * (K_in @ d))`` is the m x m valid correlation of ``d`` with ``g``.

    One dimension: with the a - 1 finite points p_j, M(x) = prod_j (x - p_j) and f_j = prod_(l != j) (p_j - p_l),
    ``A^T[i, j] = p_j^i``, ``G[j, k] = p_j^k / f_j``, row j of ``B^T`` the coefficients of M(x) / (x - p_j); the
    point at infinity adds ``A^T[m-1, a-1] = G[a-1, r-1] = 1`` and the coefficients of M(x) as the last row of ``B^T``.

    Returns float64 arrays ``K_in`` [a*a, a*a], ``K_w`` [a*a, r*r], ``K_out`` [m*m, a*a].
    """
    bt, g, at = winograd_factors(tile, kernel)
    return np.kron(bt, bt), np.kron(g, g), np.kron(at, at)


def winograd_factors(tile, kernel):
    """The one-dimensional ``B^T`` [a, a], ``G`` [a, r], ``A^T`` [m, a] of :func:`winograd_matrices`."""
    a = tile + kernel - 1
    if tile < 2 or kernel < 2 or a not in (4, 6, 8):
        raise ValueError(f"Winograd F({tile}x{tile}, {kernel}x{kernel}) is not supported; tile + kernel - 1 must be "
                         f"4, 6 or 8 (F(2x2, 3x3), F(4x4, 3x3), F(3x3, 4x4), F(6x6, 3x3))")
    points = (0., 1., -1., 2., -2., .5, -.5)[:a - 1]
    poly = np.polynomial.polynomial
    at, g, bt = np.zeros((tile, a)), np.zeros((a, kernel)), np.zeros((a, a))
    for j, p in enumerate(points):
        others = points[:j] + points[j + 1:]
        at[:, j] = [p ** i for i in range(tile)]
        g[j] = [p ** k / np.prod([p - q for q in others]) for k in range(kernel)]
        bt[j, :a - 1] = poly.polyfromroots(others)
    at[tile - 1, a - 1] = g[a - 1, kernel - 1] = 1
    bt[a - 1] = poly.polyfromroots(points)
    return bt, g, at
