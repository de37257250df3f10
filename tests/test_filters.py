"""regedu.filters: the fast box sum behind LNCC (zero padding, as a convolution with a box of ones)."""

import pytest
import torch
import torch.nn.functional as F

from regedu.filters import box_sum


@pytest.mark.parametrize("shape", [(2, 3, 17, 13), (1, 2, 9, 11, 7)])
@pytest.mark.parametrize("window", [1, 3, 9])
def test_box_sum_equals_zero_padded_convolution(shape, window):
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64)
    ndim = len(shape) - 2
    kernel = torch.ones((1, 1) + (window,) * ndim, dtype=torch.float64)
    conv = F.conv2d if ndim == 2 else F.conv3d
    reference = conv(x.reshape(-1, 1, *shape[2:]), kernel, padding=window // 2).reshape(shape)
    assert torch.allclose(box_sum(x, window), reference, atol=1e-10)


def test_box_sum_rejects_even_window():
    with pytest.raises(ValueError, match="box_sum: window must be a positive odd integer, got 4"):
        box_sum(torch.zeros(1, 1, 8, 8), 4)
