r"""The :class:`Volume` container (an image with its labels and its place in the world) and resampling.

A ``Volume`` keeps together what registration code needs to know about a scan:

* ``image``: ``(1, 1, *S)`` float32 intensities,
* ``labels``: ``(1, 1, *S)`` int64 class indices (0 is background),
* ``affine``: ``(4, 4)`` float64 matrix mapping a voxel index to world coordinates in mm
  (the NIfTI ``qform``/``sform``), ``world = affine @ (i, j, k, 1)``,
* ``spacing``: voxel size in mm, one float per spatial axis.

Voxel indices are in **tensor axis order** (``(i, j, k)`` = axes 2, 3, 4 of the tensor). A 2D slice
keeps a ``(4, 4)`` affine: it is the affine of the one-voxel-thick 3D volume the slice was cut from,
so ``world = affine @ (i, j, 0, 1)`` and the slice can be saved as a NIfTI file as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch

from ..warping import affine_warp


@dataclass
class Volume:
    """An image with its label map, voxel-to-world affine and voxel spacing (2D or 3D).

    Attributes:
        image: ``(1, 1, *S)`` float32, intensities in ``[0, 1]`` for the course's data.
        labels: ``(1, 1, *S)`` int64 class indices (0 background; for the brain 1 CSF, 2 GM, 3 WM).
        affine: ``(4, 4)`` float64, voxel index (tensor axis order) -> world mm.
        spacing: voxel size in mm per spatial axis (``len(spacing) == ndim``).
        tissues: optional ``(1, K, *S)`` float32 class probabilities (brain: CSF, GM, WM).
        name: a short description of where the data come from.
        points: optional ``(N, ndim)`` landmarks in voxel coordinates (tensor axis order), moved along by
            the preprocessing steps in :mod:`regedu.data.preprocess`.
    """

    image: torch.Tensor
    labels: torch.Tensor
    affine: torch.Tensor
    spacing: tuple[float, ...]
    tissues: torch.Tensor | None = None
    name: str = ""
    points: torch.Tensor | None = None

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return self.image.dim() - 2

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape ``S``."""
        return tuple(self.image.shape[2:])

    @property
    def mask(self) -> torch.Tensor:
        """Foreground mask ``labels > 0`` as ``(1, 1, *S)`` float32 (the brain mask for the template)."""
        return (self.labels > 0).to(self.image.dtype)

    def to(self, device=None, dtype: torch.dtype | None = None) -> "Volume":
        """A copy with image (and tissues) on ``device``/``dtype`` and labels on ``device`` (affine stays float64 on CPU)."""
        img = self.image.to(device=device, dtype=dtype)
        tis = None if self.tissues is None else self.tissues.to(device=device, dtype=dtype)
        return replace(self, image=img, labels=self.labels.to(device), tissues=tis)

    def __repr__(self) -> str:
        return (f"Volume({self.name!r}, shape={self.shape}, spacing={tuple(round(s, 3) for s in self.spacing)}, "
                f"labels={sorted(int(v) for v in torch.unique(self.labels))}, device={self.image.device})")


def _centred_resampling_matrix(old: Sequence[int], new: Sequence[int], factor: float) -> torch.Tensor:
    """Homogeneous matrix mapping a voxel of the ``new`` grid to the ``old`` grid: same centre,
    ``factor`` old voxels per new voxel. With ``factor == 1`` the shift is rounded to whole voxels
    (pure cropping/padding, no interpolation)."""
    n = len(old)
    M = torch.eye(n + 1, dtype=torch.float64)
    for k in range(n):
        shift = (old[k] - 1) / 2.0 - factor * (new[k] - 1) / 2.0
        if factor == 1.0:
            shift = float(round(shift))
        M[k, k] = factor
        M[k, n] = shift
    return M


def fit_volume(volume: Volume, size: int | Sequence[int], mode: str = "fit") -> Volume:
    """Resample ``volume`` onto a grid of ``size`` with the same centre and isotropic scaling.

    ``mode="fit"`` scales so that the whole field of view fits inside the new grid (the rest is
    zero-padded): one new voxel covers ``max_k (S_k - 1) / (size_k - 1)`` old voxels. ``mode="pad"``
    keeps the voxel size and only crops/pads (centred). Image and tissues are resampled linearly,
    labels with nearest neighbour; ``affine`` and ``spacing`` are updated so world coordinates stay
    correct.
    """
    n = volume.ndim
    size = (int(size),) * n if isinstance(size, int) else tuple(int(s) for s in size)
    if len(size) != n or min(size) < 2:
        raise ValueError(f"fit_volume: size must be one int or {n} ints of at least 2, got {size}")
    if mode not in ("fit", "pad"):
        raise ValueError(f"fit_volume: mode must be 'fit' or 'pad', got {mode!r}")
    old = volume.shape
    if mode == "pad":
        factor = 1.0
    else:
        factor = max((o - 1) / (s - 1) for o, s in zip(old, size))
        if abs(factor - 1.0) < 1e-9:
            factor = 1.0
    M = _centred_resampling_matrix(old, size, factor)
    interp = "nearest" if factor == 1.0 else "linear"
    Mf = M.to(volume.image.dtype).to(volume.image.device)
    image = affine_warp(volume.image, Mf, shape=size, mode=interp, padding_mode="zeros")
    labels = affine_warp(volume.labels, M.float().to(volume.labels.device), shape=size, mode="nearest", padding_mode="zeros")
    tissues = None
    if volume.tissues is not None:
        tissues = affine_warp(volume.tissues, Mf, shape=size, mode=interp, padding_mode="zeros")
    # the world affine works on 3 voxel axes; a 2D slice has a third (unit) axis that does not move
    M3 = torch.eye(4, dtype=torch.float64)
    M3[:n, :n] = M[:n, :n]
    M3[:n, 3] = M[:n, n]
    affine = volume.affine @ M3
    spacing = tuple(float(s) * factor for s in volume.spacing)
    points = volume.points
    if points is not None:  # landmarks: old voxel -> new voxel, the inverse of M
        Minv = torch.linalg.inv(M)
        points = (points.double() @ Minv[:n, :n].T + Minv[:n, n]).to(points.dtype)
    return replace(volume, image=image, labels=labels, tissues=tissues, affine=affine, spacing=spacing, points=points)


__all__ = ["Volume", "fit_volume"]
