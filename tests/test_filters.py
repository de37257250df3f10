"""regedu.filters: the fast box sum behind LNCC (zero padding, as a convolution with a box of ones) and Gaussian
smoothing with replicated borders (one matrix product per axis), checked against SciPy."""

import pytest
import torch
import torch.nn.functional as F

from regedu.filters import box_sum, gaussian_blur, separable_apply


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


@pytest.mark.parametrize("shape, sigma", [((2, 3, 17, 13), 1.0), ((1, 1, 20, 9), (1.5, 0.5)), ((1, 2, 9, 11, 7), 1.0),
                                          ((1, 1, 12, 5, 8), (2.0, 0.0, 1.0)), ((1, 1, 1, 10), 1.0), ((1, 1, 4, 6), 4.0)])
def test_gaussian_blur_equals_scipy_with_nearest_borders(shape, sigma):
    """Replicated borders are scipy's mode="nearest"; a radius larger than the axis and an axis of one voxel included."""
    ndimage = pytest.importorskip("scipy.ndimage")
    torch.manual_seed(1)
    x = torch.randn(*shape, dtype=torch.float64)
    ndim = len(shape) - 2
    sig = (sigma,) * ndim if isinstance(sigma, float) else sigma
    reference = torch.stack([torch.stack([torch.from_numpy(ndimage.gaussian_filter(c.numpy(), sig, mode="nearest", truncate=3.0))
                                          for c in b]) for b in x])
    assert torch.allclose(gaussian_blur(x, sigma), reference, atol=1e-10)
    assert torch.allclose(gaussian_blur(x.float(), sigma).double(), reference, atol=1e-5)


def test_gaussian_blur_gradient_and_dtypes():
    x = torch.randn(1, 2, 7, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: gaussian_blur(t, (1.0, 0.7)), (x,))
    const = torch.full((1, 1, 6, 7, 5), 0.25)
    assert torch.allclose(gaussian_blur(const, 2.0), const)  # replicated borders keep a constant image constant
    half = torch.rand(1, 1, 8, 8).half()
    assert gaussian_blur(half, 1.0).dtype == torch.float16
    assert torch.allclose(gaussian_blur(half, 1.0).float(), gaussian_blur(half.float(), 1.0), atol=1e-3)
    assert gaussian_blur(torch.ones(1, 1, 5, 5, dtype=torch.int64), 1.0).dtype == torch.float32
    out = separable_apply(torch.randn(1, 1, 4, 5, 6), [None, torch.eye(5), torch.eye(6)[:3]])
    assert out.shape == (1, 1, 4, 5, 3) and out.is_contiguous()


@pytest.mark.parametrize("sigma, message", [(-1.0, "sigma must be finite and >= 0"), (float("nan"), "sigma must be finite"),
                                            ((1.0,), "sigma must have 2 entries")])
def test_gaussian_blur_rejects_bad_sigma(sigma, message):
    with pytest.raises(ValueError, match=f"gaussian_blur: {message}"):
        gaussian_blur(torch.zeros(1, 1, 8, 8), sigma)


def test_box_sum_gradient_is_the_box_sum_of_the_gradient():
    """The custom backward pass (the box filter is its own adjoint) against autograd's numerical check, in 2D
    and 3D, and second derivatives (create_graph) through it."""
    for shape in [(1, 2, 7, 6), (1, 1, 5, 4, 6)]:
        x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t: box_sum(t, 3), (x,))
        assert torch.autograd.gradgradcheck(lambda t: box_sum(t, 3) ** 2, (x,))
