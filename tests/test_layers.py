"""common.layers reductions: reduce_mean / reduce_sum (2-D reshape forms) against NumPy, values and gradients."""
import numpy as np
import pytest

import common  # noqa: F401
import mindspore as ms
from mindspore import Tensor, nn

from common.layers import reduce_mean, reduce_sum


class _Reduce(nn.Cell):
    def __init__(self, axes, keep_dims):
        super().__init__()
        self.axes, self.keep_dims = axes, keep_dims

    def construct(self, x):
        return reduce_mean(x, self.axes, self.keep_dims), reduce_sum(x, self.axes, self.keep_dims)


class _SquaredMean(nn.Cell):
    def __init__(self, axes):
        super().__init__()
        self.axes = axes

    def construct(self, x):
        return (reduce_mean(x, self.axes, False) ** 2).sum()


@pytest.mark.parametrize("axes", [(1, 2, 3), (2, 3), (3,), (0, 2, 3), (-1, -2), (0, 1)])
@pytest.mark.parametrize("keep_dims", [True, False])
def test_reductions_match_numpy(axes, keep_dims):
    """Trailing axes and (0, 2, 3) take the reshape forms, (0, 1) the fallback; odd sizes, batch 3."""
    x = np.random.default_rng(0).standard_normal((3, 4, 5, 7)).astype(np.float32) * 2 + 1
    mean, total = _Reduce(axes, keep_dims)(Tensor(x))
    np.testing.assert_allclose(mean.asnumpy(), x.mean(axis=axes, keepdims=keep_dims), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(total.asnumpy(), x.sum(axis=axes, keepdims=keep_dims), rtol=1e-5, atol=1e-4)
    grad = ms.grad(_SquaredMean(axes))(Tensor(x)).asnumpy()
    count = np.prod([x.shape[a] for a in axes])
    np.testing.assert_allclose(grad, np.broadcast_to(2 * x.mean(axis=axes, keepdims=True) / count, x.shape),
                               rtol=1e-5, atol=1e-7)
