"""Small image filters used across the library: Gaussian smoothing, box sums, finite differences.

All work on ``(B, C, *spatial)`` tensors in 2D and 3D, on any device, and are differentiable.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from ._checks import check_image


def gaussian_kernel1d(sigma: float, truncate: float = 3.0, dtype=None, device=None) -> torch.Tensor:
    """Normalised 1D Gaussian kernel of standard deviation ``sigma`` (voxels), radius ``ceil(truncate*sigma)``."""
    if sigma <= 0:
        raise ValueError(f"gaussian_kernel1d: sigma must be positive, got {sigma}")
    radius = max(1, int(math.ceil(truncate * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=dtype or torch.get_default_dtype(), device=device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _separable(x: torch.Tensor, kernels: Sequence[torch.Tensor | None], padding_mode: str) -> torch.Tensor:
    """Apply one 1D kernel per spatial axis (None skips the axis), channel by channel."""
    ndim = x.dim() - 2
    B, C = x.shape[:2]
    conv = F.conv2d if ndim == 2 else F.conv3d
    y = x.reshape(B * C, 1, *x.shape[2:])
    for axis, k in enumerate(kernels):
        if k is None:
            continue
        r = (k.numel() - 1) // 2
        shape = [1, 1] + [1] * ndim
        shape[2 + axis] = k.numel()
        pad = [0, 0] * ndim
        # F.pad lists the last axis first
        pad[2 * (ndim - 1 - axis)] = r
        pad[2 * (ndim - 1 - axis) + 1] = r
        mode = padding_mode
        if mode == "reflect" and y.shape[2 + axis] <= r:
            mode = "replicate"
        y = conv(F.pad(y, pad, mode=mode), k.to(y).reshape(shape))
    return y.reshape(B, C, *y.shape[2:])


def gaussian_blur(x: torch.Tensor, sigma: float | Sequence[float], truncate: float = 3.0) -> torch.Tensor:
    """Gaussian smoothing with standard deviation ``sigma`` voxels (one value or one per axis).

    Borders are extended by replication, so a constant image stays constant.
    """
    x = check_image("gaussian_blur", "x", x)
    ndim = x.dim() - 2
    sig = [float(sigma)] * ndim if isinstance(sigma, (int, float)) else [float(s) for s in sigma]
    if len(sig) != ndim:
        raise ValueError(f"gaussian_blur: sigma must have {ndim} entries for a {ndim}D image, got {len(sig)}")
    kernels = [gaussian_kernel1d(s, truncate, x.dtype, x.device) if s > 0 else None for s in sig]
    return _separable(x, kernels, "replicate")


def box_sum(x: torch.Tensor, window: int) -> torch.Tensor:
    """Sum over a ``window``^ndim neighbourhood of every voxel (zero padding), same size as ``x``.

    ``window`` must be odd (the window is centred on the voxel). Computed axis by axis from cumulative
    sums, ``s[i] = c[i + r + 1] - c[i - r]``: the cost does not grow with the window (much faster than
    a convolution in 3D).
    """
    if not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise ValueError(f"box_sum: window must be a positive odd integer, got {window!r}")
    r = window // 2
    y = x
    for axis in range(2, x.dim()):
        pad = [0, 0] * (x.dim() - 2)
        # F.pad lists the last axis first; one extra zero in front makes c[i + window] - c[i] the window sum
        pad[2 * (x.dim() - 1 - axis)] = r + 1
        pad[2 * (x.dim() - 1 - axis) + 1] = r
        c = F.pad(y, pad).cumsum(axis)
        n = y.shape[axis]
        y = c.narrow(axis, window, n) - c.narrow(axis, 0, n)
    return y


def spatial_gradient(x: torch.Tensor) -> torch.Tensor:
    """Central finite differences of every channel along every spatial axis (one-sided at borders).

    ``(B, C, *spatial)`` -> ``(B, C, ndim, *spatial)`` with entry ``[:, c, k]`` = d x_c / d axis_k,
    in units per voxel. Exact for fields that are linear in the coordinates.
    """
    ndim = x.dim() - 2
    dims = tuple(range(2, 2 + ndim))
    if min(x.shape[2:]) < 2:
        raise ValueError(f"spatial_gradient: every spatial size must be at least 2, got {tuple(x.shape[2:])}")
    grads = torch.gradient(x, dim=dims)
    return torch.stack(grads, dim=2)


def forward_differences(x: torch.Tensor) -> list[torch.Tensor]:
    """Forward differences ``x[i+1] - x[i]`` along each spatial axis (one size shorter on that axis)."""
    ndim = x.dim() - 2
    return [torch.diff(x, dim=2 + k) for k in range(ndim)]
