r"""The spatial transformer: sampling grids and (pull-back) warping of images and label maps.

Warping **pulls back**: the moved image at a fixed-image voxel ``x`` is the moving image sampled at
``phi(x) = x + u(x)``,

.. math:: (M \circ \varphi)(x) = M(x + u(x)),

with ``u`` a displacement field ``(B, ndim, *spatial)`` in voxel units, channel ``k`` the displacement
along tensor axis ``k``. Sampling is (bi/tri)linear for images and nearest for label maps, with
``align_corners=True`` (voxel ``0`` and voxel ``S-1`` are the centres of the first and last voxel).

This is the sampler of Jaderberg et al. (2015), *Spatial Transformer Networks*, NeurIPS, and the warp
layer of VoxelMorph (Balakrishnan et al., 2019). It is differentiable with respect to both the image
and the displacement field.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch
import torch.nn.functional as F

from . import transforms
from ._checks import _shape, check_affine, check_choice, check_dvf, check_image, check_same_spatial
from .filters import gaussian_blur

MODES = ("linear", "bilinear", "trilinear", "nearest", "bicubic")
PADDING = ("border", "zeros", "reflection")


def identity_grid(shape: Sequence[int], dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """Voxel coordinates of every voxel: ``(ndim, *shape)``, entry ``[k, i, j]`` = index along axis ``k``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"identity_grid: shape must have 2 or 3 entries, got {shape}")
    axes = [torch.arange(s, dtype=dtype or torch.get_default_dtype(), device=device) for s in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)


@lru_cache(maxsize=32)
def _normalised_axes(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> tuple[tuple[torch.Tensor, float], ...]:
    """Per spatial axis: grid_sample's normalised coordinate of every index (shaped to broadcast
    along that axis) and the scale from voxels to normalised units, ``2 / (S - 1)``."""
    ndim = len(shape)
    out = []
    for k, s in enumerate(shape):
        view = [1] * ndim
        view[k] = s
        coords = torch.linspace(-1, 1, s, dtype=dtype, device=device) if s > 1 else torch.zeros(1, dtype=dtype, device=device)
        out.append((coords.reshape(1, *view), 2.0 / (s - 1) if s > 1 else 0.0))
    return tuple(out)


def _grid(dvf: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    """The normalised grid of ``dvf`` (see :func:`dvf_to_grid`) and the per-axis scales used."""
    ndim = dvf.dim() - 2
    axes = _normalised_axes(tuple(dvf.shape[2:]), dvf.dtype, dvf.device)
    # channel-first (contiguous writes); grid_sample accepts the channel-last view as it is
    out = torch.empty_like(dvf, memory_format=torch.contiguous_format)
    for k, (coords, scale) in enumerate(axes):
        torch.add(coords, dvf[:, k], alpha=scale, out=out[:, ndim - 1 - k])
    return out.movedim(1, -1), [scale for _, scale in axes]


class _DvfToGrid(torch.autograd.Function):
    """Voxel DVF -> normalised grid in one pass per axis; the backward pass is one scaled copy.

    (A plain ``torch.stack`` of per-axis terms costs two extra passes forward and backward.)
    """

    @staticmethod
    def forward(ctx, dvf: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grid, ctx.scales = _grid(dvf)
        return grid

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_grid: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ndim = grad_grid.shape[-1]
        grad = torch.empty(grad_grid.shape[0], ndim, *grad_grid.shape[1:-1], dtype=grad_grid.dtype, device=grad_grid.device)
        for k, scale in enumerate(ctx.scales):
            torch.mul(grad_grid[..., ndim - 1 - k], scale, out=grad[:, k])
        return grad


def dvf_to_grid(dvf: torch.Tensor) -> torch.Tensor:
    """Displacement field (voxels) -> the ``grid`` argument of ``F.grid_sample`` (``align_corners=True``).

    ``grid[..., ndim-1-k] = 2 (x_k + u_k(x)) / (S_k - 1) - 1``: channel-last, axes in x/y(/z) order.
    """
    if dvf.requires_grad and torch.is_grad_enabled():
        return _DvfToGrid.apply(dvf)
    return _grid(dvf)[0]  # no autograd bookkeeping when no gradient is needed


def _grid_mode(fn: str, mode: str) -> str:
    check_choice(fn, "mode", mode, MODES)
    return "bilinear" if mode in ("linear", "bilinear", "trilinear") else mode


def warp(image: torch.Tensor, dvf: torch.Tensor, mode: str = "linear", padding_mode: str = "border") -> torch.Tensor:
    r"""Warp ``image`` by the displacement field ``dvf`` (pull-back): ``moved(x) = image(x + dvf(x))``.

    Args:
        image: ``(B, C, *spatial)``, 2D or 3D; batch 1 is broadcast against ``dvf``'s batch.
        dvf: ``(B, ndim, *spatial)`` displacement in voxels, channel ``k`` along tensor axis ``k``.
        mode: ``"linear"`` (bi/trilinear; ``"bilinear"``/``"trilinear"`` are aliases),
            ``"nearest"`` (label maps) or ``"bicubic"`` (2D only).
        padding_mode: value outside the image: ``"border"`` (nearest edge value, the default),
            ``"zeros"`` or ``"reflection"``.

    Returns:
        The moved image, ``(B, C, *spatial)``, on the device and with the dtype of ``image``.
    """
    image = check_image("warp", "image", image)
    dvf = check_dvf("warp", "dvf", dvf)
    check_same_spatial("warp", "image", image, "dvf", dvf, hint="resample one of them first (regedu.resize / regedu.resize_dvf)")
    if image.shape[0] != dvf.shape[0]:
        b = max(image.shape[0], dvf.shape[0])
        image = image.expand(b, *image.shape[1:])
        dvf = dvf.expand(b, *dvf.shape[1:])
    m = _grid_mode("warp", mode)
    check_choice("warp", "padding_mode", padding_mode, PADDING)
    if m == "bicubic" and image.dim() != 4:
        raise ValueError("warp: mode 'bicubic' is only available in 2D")
    if not image.is_floating_point():
        if m != "nearest":
            raise TypeError(f"warp: an integer image ({image.dtype}) can only be warped with mode='nearest' (label maps)")
        moved = F.grid_sample(image.to(dvf.dtype), dvf_to_grid(dvf), mode="nearest", padding_mode=padding_mode, align_corners=True)
        return moved.round().to(image.dtype)
    if dvf.dtype != image.dtype:
        dvf = dvf.to(image.dtype)
    return F.grid_sample(image, dvf_to_grid(dvf), mode=m, padding_mode=padding_mode, align_corners=True)


def warp_labels(labels: torch.Tensor, dvf: torch.Tensor, num_classes: int | None = None, mode: str = "nearest") -> torch.Tensor:
    """Warp a label map ``(B, 1, *spatial)`` of integer classes.

    ``mode="nearest"`` samples the nearest label; ``mode="linear"`` warps the one-hot encoding
    linearly and takes the arg-max (smoother boundaries). The result has the dtype of ``labels``.
    """
    labels = check_image("warp_labels", "labels", labels)
    check_choice("warp_labels", "mode", mode, ("nearest", "linear"))
    if labels.shape[1] != 1:
        raise ValueError(f"warp_labels: labels must have one channel of class indices, got shape {_shape(labels)}")
    if mode == "nearest":
        out = warp(labels.to(dvf.dtype) if labels.is_floating_point() else labels, dvf, mode="nearest")
        return out.to(labels.dtype)
    k = int(labels.max()) + 1 if num_classes is None else num_classes
    onehot = F.one_hot(labels[:, 0].long(), k).movedim(-1, 1).to(dvf.dtype)
    return warp(onehot, dvf, mode="linear").argmax(1, keepdim=True).to(labels.dtype)


def affine_to_dvf(A: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The displacement field of an affine matrix: ``u(x) = A x - x`` on a grid of ``shape``.

    ``A`` is ``(ndim+1, ndim+1)`` or ``(B, ndim+1, ndim+1)`` (voxel coordinates, fixed -> moving);
    returns ``(B, ndim, *shape)``. ``warp(m, affine_to_dvf(A, s))`` equals ``affine_warp(m, A)``.
    """
    ndim = len(shape)
    A = check_affine("affine_to_dvf", "A", A, ndim=ndim)
    if A.dim() == 2:
        A = A.unsqueeze(0)
    grid = identity_grid(shape, dtype=A.dtype, device=A.device).reshape(ndim, -1)
    mapped = A[:, :ndim, :ndim] @ grid + A[:, :ndim, ndim:]
    return (mapped - grid).reshape(A.shape[0], ndim, *shape)


def affine_warp(
    image: torch.Tensor,
    A: torch.Tensor,
    shape: Sequence[int] | None = None,
    mode: str = "linear",
    padding_mode: str = "border",
) -> torch.Tensor:
    """Warp ``image`` by an affine matrix (pull-back): ``moved(x) = image(A x)``.

    ``A`` maps output (fixed) voxel coordinates to input (moving) voxel coordinates;
    ``shape`` is the output spatial size (default: the image's).
    """
    image = check_image("affine_warp", "image", image)
    ndim = image.dim() - 2
    A = check_affine("affine_warp", "A", A, ndim=ndim)
    shape = tuple(image.shape[2:]) if shape is None else tuple(shape)
    theta = transforms.affine_to_theta(A.to(image.dtype) if image.is_floating_point() else A, shape, tuple(image.shape[2:]))
    B = max(image.shape[0], theta.shape[0])
    if theta.shape[0] != B:
        theta = theta.expand(B, -1, -1)
    if image.shape[0] != B:
        image = image.expand(B, *image.shape[1:])
    m = _grid_mode("affine_warp", mode)
    check_choice("affine_warp", "padding_mode", padding_mode, PADDING)
    src = image if image.is_floating_point() else image.to(theta.dtype)
    grid = F.affine_grid(theta.to(src.dtype), [B, image.shape[1], *shape], align_corners=True)
    out = F.grid_sample(src, grid, mode=m, padding_mode=padding_mode, align_corners=True)
    return out if image.is_floating_point() else out.round().to(image.dtype)


def resize(image: torch.Tensor, shape: Sequence[int] | None = None, scale: float | None = None, mode: str = "linear") -> torch.Tensor:
    """Resample ``image`` to ``shape`` (or by ``scale``) on the same field of view (``align_corners=True``).

    Use :func:`resize_dvf` for displacement fields: their values must be rescaled too.
    """
    image = check_image("resize", "image", image)
    ndim = image.dim() - 2
    if (shape is None) == (scale is None):
        raise ValueError("resize: give exactly one of shape and scale")
    if shape is None:
        shape = [max(2, int(round(s * scale))) for s in image.shape[2:]]
    shape = tuple(int(s) for s in shape)
    if len(shape) != ndim:
        raise ValueError(f"resize: shape must have {ndim} entries for a {ndim}D image, got {shape}")
    m = check_choice("resize", "mode", mode, ("linear", "nearest"))
    if m == "nearest":
        # sample the nearest voxel of the same field of view (align_corners=True geometry)
        A = transforms.scaling_matrix(torch.tensor([(s_in - 1) / max(s_out - 1, 1) for s_in, s_out in zip(image.shape[2:], shape)],
                                                   dtype=torch.float64 if not image.is_floating_point() else image.dtype,
                                                   device=image.device))
        return affine_warp(image, A.to(image.dtype) if image.is_floating_point() else A.float(), shape=shape, mode="nearest")
    interp = "bilinear" if ndim == 2 else "trilinear"
    return F.interpolate(image, size=shape, mode=interp, align_corners=True)


def resize_dvf(dvf: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Resample a displacement field to a grid of ``shape`` covering the same field of view.

    Interpolates each component linearly and rescales component ``k`` by ``(S'_k - 1) / (S_k - 1)``,
    because displacements are measured in voxels of the grid they live on.
    """
    dvf = check_dvf("resize_dvf", "dvf", dvf)
    ndim = dvf.dim() - 2
    shape = tuple(int(s) for s in shape)
    if len(shape) != ndim:
        raise ValueError(f"resize_dvf: shape must have {ndim} entries for a {ndim}D field, got {shape}")
    interp = "bilinear" if ndim == 2 else "trilinear"
    out = F.interpolate(dvf, size=shape, mode=interp, align_corners=True)
    factors = torch.tensor([(n - 1) / (o - 1) if o > 1 else 1.0 for n, o in zip(shape, dvf.shape[2:])], dtype=dvf.dtype, device=dvf.device)
    return out * factors.reshape(1, ndim, *([1] * ndim))


def image_pyramid(image: torch.Tensor, levels: int, factor: float = 2.0, smooth: bool = True) -> list[torch.Tensor]:
    """Multi-resolution pyramid, **coarsest first**, finest (the input) last.

    Each level is ``factor`` times smaller per axis than the next; it is Gaussian-smoothed
    (sigma = factor / 2 voxels) before downsampling to avoid aliasing.
    """
    image = check_image("image_pyramid", "image", image)
    if levels < 1:
        raise ValueError(f"image_pyramid: levels must be at least 1, got {levels}")
    out = [image]
    current = image
    for _ in range(levels - 1):
        src = gaussian_blur(current, factor / 2.0) if smooth else current
        shape = [max(2, int(round((s - 1) / factor)) + 1) for s in current.shape[2:]]
        current = resize(src, shape=shape)
        out.append(current)
    return out[::-1]
