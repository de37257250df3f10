"""Small image filters used across the library: Gaussian smoothing, box sums, finite differences.

All work on ``(B, C, *spatial)`` tensors in 2D and 3D, on any device, and are differentiable.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import torch
import torch.nn.functional as F

from ._checks import HALF_DTYPES, check_image, compute_dtype


def gaussian_kernel1d(sigma: float, truncate: float = 3.0, dtype=None, device=None) -> torch.Tensor:
    """Normalised 1D Gaussian kernel of standard deviation ``sigma`` (voxels), radius ``ceil(truncate*sigma)``."""
    if sigma <= 0:
        raise ValueError(f"gaussian_kernel1d: sigma must be positive, got {sigma}")
    radius = max(1, int(math.ceil(truncate * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=dtype or torch.get_default_dtype(), device=device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def separable_apply(x: torch.Tensor, matrices: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """Apply one matrix ``(n_out, n_in)`` per spatial axis to ``(B, C, *spatial)`` (``None`` skips the axis):
    a separable linear map, e.g. smoothing or B-spline interpolation. Returns a contiguous tensor.

    One matrix product per axis: the backward pass is a product with the transpose, which is much faster
    than the backward pass of a convolution on the CPU (measured in 3D: 40 x 48 x 40 x 3 Gaussian smoothing,
    forward+backward 2.8 ms vs 33 ms with ``conv3d``)."""
    out = x
    for axis, W in enumerate(matrices):
        if W is not None:
            out = torch.movedim(torch.movedim(out, 2 + axis, -1) @ W.T.to(out), -1, 2 + axis)
    return out.contiguous()


@lru_cache(maxsize=128)
def _blur_matrix(n: int, sigma: float, truncate: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(n, n)``: Gaussian smoothing of a line of ``n`` voxels with replicated borders, as a matrix. Row ``i``
    holds the kernel centred on voxel ``i``; a weight that falls outside the line goes to the edge voxel
    that replication would copy there. Cached per size, sigma, dtype and device (never modified)."""
    k = gaussian_kernel1d(sigma, truncate, torch.float64)
    r = (k.numel() - 1) // 2
    cols = (torch.arange(n).unsqueeze(1) + torch.arange(-r, r + 1)).clamp(0, n - 1)
    S = torch.zeros(n, n, dtype=torch.float64).scatter_add_(1, cols, k.expand(n, -1).contiguous())
    return S.to(dtype=dtype, device=device)


def gaussian_blur(x: torch.Tensor, sigma: float | Sequence[float], truncate: float = 3.0) -> torch.Tensor:
    """Gaussian smoothing with standard deviation ``sigma`` voxels (one value or one per axis; 0 leaves
    an axis alone), kernel radius ``ceil(truncate * sigma)``.

    Borders are extended by replication (SciPy's ``mode="nearest"``), so a constant image stays constant.
    Half precision is computed in float32 and returned in half precision; integer images give float32.
    """
    x = check_image("gaussian_blur", "x", x)
    ndim = x.dim() - 2
    sig = [float(sigma)] * ndim if isinstance(sigma, (int, float)) else [float(s) for s in sigma]
    if len(sig) != ndim:
        raise ValueError(f"gaussian_blur: sigma must have {ndim} entries for a {ndim}D image, got {len(sig)}")
    if truncate <= 0:
        raise ValueError(f"gaussian_blur: truncate must be positive, got {truncate}")
    for s in sig:
        if not (s >= 0 and math.isfinite(s)):
            raise ValueError(f"gaussian_blur: sigma must be finite and >= 0 (0 skips an axis), got {sigma}")
    # one smoothing matrix per axis (replicated borders folded in): a matrix product per axis, forward and
    # backward, is faster on the CPU than conv2d/conv3d, whose backward pass is ~10x its forward pass
    # half precision is computed in float32 and returned as it came; integer images come back as float32
    work = x.to(compute_dtype(x.dtype))
    mats = [_blur_matrix(int(n), s, float(truncate), work.dtype, work.device) if s > 0 else None
            for n, s in zip(x.shape[2:], sig)]
    out = separable_apply(work, mats)
    return out.to(x.dtype) if x.dtype in HALF_DTYPES else out


def box_sum(x: torch.Tensor, window: int) -> torch.Tensor:
    """Sum over a ``window``^ndim neighbourhood of every voxel (zero padding), same size as ``x``.

    ``window`` must be odd (the window is centred on the voxel). Computed axis by axis from cumulative
    sums, ``s[i] = c[i + r + 1] - c[i - r]``: the cost does not grow with the window (much faster than
    a convolution in 3D). Differentiable: the centred, zero-padded box filter is its own adjoint, so the
    backward pass is one more box sum of the incoming gradient (a third faster than differentiating the
    cumulative sums, which flips every axis twice; measured 53 -> 36 ms forward+backward at 80 x 96 x 80 x 3).
    """
    if not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise ValueError(f"box_sum: window must be a positive odd integer, got {window!r}")
    if x.requires_grad and torch.is_grad_enabled():
        return _BoxSum.apply(x, window)
    return _box_sum(x, window)


def _box_sum(x: torch.Tensor, window: int) -> torch.Tensor:
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


class _BoxSum(torch.autograd.Function):
    """:func:`box_sum` with its own backward pass: the box filter is symmetric, so its adjoint is itself."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, window: int) -> torch.Tensor:  # type: ignore[override]
        ctx.window = window
        return _box_sum(x, window)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return box_sum(grad, ctx.window), None  # differentiable again under create_graph=True (it is linear)


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
