r"""Resampling: the same field of view on a finer or coarser grid, and multi-resolution pyramids.

Geometry (``align_corners=True``, as everywhere in regedu): an axis of ``S`` voxels spans ``S - 1``
voxel spacings from the centre of its first voxel to the centre of its last. Resampling keeps those
two end points and changes the number of voxels in between. A grid ``factor`` times coarser has

.. math:: S' = \mathrm{round}\big((S - 1) / \text{factor}\big) + 1 \quad (\text{at least } 2)

voxels (:func:`coarse_shape`): 64 -> 33 for a factor of 2, so that coarse voxel ``k`` sits exactly on
fine voxel ``2k``. :func:`resize` with ``scale`` and :func:`image_pyramid` both use this rule, as does
the registration engine's pyramid.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from . import transforms
from ._checks import HALF_DTYPES, check_choice, check_dvf, check_image, check_number
from .filters import gaussian_blur
from .warping import affine_warp


def coarse_shape(shape: Sequence[int], factor: float) -> tuple[int, ...]:
    """The same field of view on a grid ``factor`` times coarser (``factor < 1``: finer).

    ``S' = max(2, round((S - 1) / factor) + 1)`` per axis (see the module docstring): voxel ``k`` of the
    new grid lies at ``k * factor`` voxels of the old one. ``coarse_shape((64, 48), 2) == (33, 25)``.
    """
    factor = check_number("coarse_shape", "factor", factor, low=0, low_inclusive=False)
    shape = tuple(int(s) for s in shape)
    if not shape or min(shape) < 1:
        raise ValueError(f"coarse_shape: shape must be positive sizes, got {shape}")
    return tuple(max(2, int(round((s - 1) / factor)) + 1) for s in shape)


def resize(image: torch.Tensor, shape: Sequence[int] | None = None, scale: float | None = None, mode: str = "linear") -> torch.Tensor:
    """Resample ``image`` to ``shape`` (or by ``scale``) on the same field of view (``align_corners=True``).

    ``scale`` (> 0) gives ``shape = coarse_shape(image.shape[2:], 1 / scale)``: ``scale=0.5`` maps
    64 voxels to 33, the same rule as :func:`image_pyramid`. ``mode``: ``"linear"`` or ``"nearest"``
    (label maps; integer dtypes are kept). Half precision is interpolated in float32 and cast back;
    integer images need ``mode="nearest"``. Use :func:`resize_dvf` for displacement fields: their
    values must be rescaled too.
    """
    image = check_image("resize", "image", image)
    ndim = image.dim() - 2
    if (shape is None) == (scale is None):
        raise ValueError("resize: give exactly one of shape and scale")
    if shape is None:
        scale = check_number("resize", "scale", scale, low=0, low_inclusive=False)
        shape = coarse_shape(image.shape[2:], 1.0 / scale)
    shape = tuple(int(s) for s in shape)
    if len(shape) != ndim or min(shape) < 1:
        raise ValueError(f"resize: shape must have {ndim} positive entries for a {ndim}D image, got {shape}")
    m = check_choice("resize", "mode", mode, ("linear", "nearest"))
    if m == "nearest":
        # sample the nearest voxel of the same field of view (align_corners=True geometry)
        factors = [(s_in - 1) / max(s_out - 1, 1) for s_in, s_out in zip(image.shape[2:], shape)]
        A = transforms.scaling_matrix(torch.tensor(factors, dtype=torch.float64, device=image.device))
        return affine_warp(image, A, shape=shape, mode="nearest")
    if not image.is_floating_point():
        raise TypeError(f"resize: an integer image ({image.dtype}) can only be resized with mode='nearest' (label maps); "
                        "convert it with .float() to interpolate intensities")
    interp = "bilinear" if ndim == 2 else "trilinear"
    if image.dtype in HALF_DTYPES:
        return F.interpolate(image.float(), size=shape, mode=interp, align_corners=True).to(image.dtype)
    return F.interpolate(image, size=shape, mode=interp, align_corners=True)


def resize_dvf(dvf: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Resample a displacement field to a grid of ``shape`` covering the same field of view.

    Interpolates each component linearly and rescales component ``k`` by ``(S'_k - 1) / (S_k - 1)``,
    because displacements are measured in voxels of the grid they live on.
    """
    dvf = check_dvf("resize_dvf", "dvf", dvf)
    ndim = dvf.dim() - 2
    shape = tuple(int(s) for s in shape)
    if len(shape) != ndim or min(shape) < 1:
        raise ValueError(f"resize_dvf: shape must have {ndim} positive entries for a {ndim}D field, got {shape}")
    return _resize_dvf(dvf, shape)


def _resize_dvf(dvf: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """:func:`resize_dvf` without the checks (for a checked field, e.g. inside a network's forward pass).

    The components are rescaled before the interpolation (both are linear), on the smaller of the grids."""
    ndim = dvf.dim() - 2
    interp = "bilinear" if ndim == 2 else "trilinear"
    work = dvf.float() if dvf.dtype in HALF_DTYPES else dvf
    factors = torch.tensor([(n - 1) / (o - 1) if o > 1 else 1.0 for n, o in zip(shape, dvf.shape[2:])], dtype=work.dtype, device=dvf.device)
    scale = factors.reshape(1, ndim, *([1] * ndim))
    if math.prod(shape) <= math.prod(dvf.shape[2:]):
        out = F.interpolate(work, size=shape, mode=interp, align_corners=True) * scale
    else:
        out = F.interpolate(work * scale, size=shape, mode=interp, align_corners=True)
    return out.to(dvf.dtype)


def image_pyramid(image: torch.Tensor, levels: int, factor: float = 2.0, smooth: bool = True) -> list[torch.Tensor]:
    """Multi-resolution pyramid, **coarsest first**, finest (the input) last.

    Each level is :func:`coarse_shape` of the next with ``factor`` (64 -> 33 -> 17 for ``factor=2``);
    it is Gaussian-smoothed (sigma = factor / 2 voxels) before downsampling to avoid aliasing.
    Integer images (label maps) are resampled with nearest neighbour and without smoothing.
    """
    image = check_image("image_pyramid", "image", image)
    levels = check_number("image_pyramid", "levels", levels, low=1, integer=True)
    factor = check_number("image_pyramid", "factor", factor, low=1, low_inclusive=False)
    out = [image]
    current = image
    for _ in range(levels - 1):
        shape = coarse_shape(current.shape[2:], factor)
        if not current.is_floating_point():
            current = resize(current, shape=shape, mode="nearest")
        else:
            src = gaussian_blur(current, factor / 2.0) if smooth else current
            current = resize(src, shape=shape)
        out.append(current)
    return out[::-1]


__all__ = ["coarse_shape", "resize", "resize_dvf", "image_pyramid"]
