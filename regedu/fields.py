r"""Displacement vector fields (DVFs): random smooth fields, Jacobians, composition, integration.

A deformation is :math:`\varphi = \mathrm{Id} + u` (point-wise :math:`\varphi(x) = x + u(x)`) with
the displacement :math:`u: \Omega \to \mathbb{R}^d`. Here ``u`` is a tensor ``(B, ndim, *spatial)``
in voxel units; channel ``k`` is the displacement along tensor axis ``k``.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import torch

from ._checks import check_dvf, check_number, check_tensor
from .filters import gaussian_blur, separable_apply, spatial_gradient
from .warping import _warp_checked_inputs, warp


def _generator(seed: int | None, device) -> torch.Generator | None:
    if seed is None:
        return None
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    return g


def _check_shape(fn: str, shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 2:
        raise ValueError(f"{fn}: shape must be 2 or 3 spatial sizes of at least 2, got {shape}")
    return shape


def scale_to_max(u: torch.Tensor, max_length: float | Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Scale each field of the batch ``u`` ``(B, ndim, *spatial)`` so that its longest vector has length
    ``max_length`` (voxels): one number for every field, or one per field (``B`` values), all >= 0.

    Only the scale changes (the mean is kept; subtract it first for a zero-mean field). A field that is
    zero everywhere stays zero.
    """
    u = check_tensor("scale_to_max", "u", u)
    target = torch.as_tensor(max_length, dtype=u.dtype, device=u.device).reshape(-1)
    if target.numel() not in (1, u.shape[0]) or not bool(torch.isfinite(target).all()) or bool((target < 0).any()):
        raise ValueError(f"scale_to_max: max_length must be one finite number >= 0 or one per field ({u.shape[0]}), "
                         f"got {max_length!r}")
    norm = u.pow(2).sum(1).flatten(1).amax(1).sqrt().clamp_min(1e-12)
    return u * (target / norm).reshape(-1, *([1] * (u.dim() - 1)))


_scale_to_max = scale_to_max  # old private name (regedu.data.synthetic imported it)


def smooth_noise(
    shape: Sequence[int],
    smoothness: float,
    channels: int = 1,
    batch: int = 1,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device=None,
) -> torch.Tensor:
    """Gaussian-smoothed white noise ``(batch, channels, *shape)``, statistically the same everywhere.

    Standard-normal noise is drawn on a grid larger by the kernel radius ``3 * smoothness`` on every
    side, smoothed with a Gaussian of standard deviation ``smoothness`` voxels and cropped, so the
    border is no different from the centre (blurring with replicated borders would make it so).
    ``generator`` (a CPU ``torch.Generator``) makes it reproducible.
    """
    shape = _check_shape("smooth_noise", shape)
    smoothness = check_number("smooth_noise", "smoothness", smoothness, low=0, low_inclusive=False)
    r = int(math.ceil(3.0 * smoothness))
    noise = torch.randn(batch, channels, *(s + 2 * r for s in shape), generator=generator, dtype=dtype or torch.get_default_dtype())
    u = gaussian_blur(noise.to(device), smoothness)
    return u[(slice(None), slice(None)) + tuple(slice(r, r + s) for s in shape)]


def random_dvf(
    shape: Sequence[int],
    max_displacement: float = 4.0,
    smoothness: float = 8.0,
    batch: int = 1,
    seed: int | None = None,
    dtype: torch.dtype | None = None,
    device=None,
) -> torch.Tensor:
    """Smooth random displacement field: Gaussian-smoothed white noise.

    Args:
        shape: spatial shape ``(H, W)`` or ``(D, H, W)``.
        max_displacement: the largest displacement length in the field, in voxels.
        smoothness: standard deviation of the Gaussian (voxels); larger is smoother.
        batch: number of independent fields.
        seed: makes the field reproducible (``None`` uses torch's global generator).

    Returns:
        ``(batch, ndim, *shape)``.
    """
    shape = _check_shape("random_dvf", shape)
    smoothness = check_number("random_dvf", "smoothness", smoothness, low=0, low_inclusive=False)
    max_displacement = check_number("random_dvf", "max_displacement", max_displacement, low=0)
    batch = check_number("random_dvf", "batch", batch, low=1, integer=True)
    u = smooth_noise(shape, smoothness, len(shape), batch, _generator(seed, device), dtype, device)
    u = u - u.mean(dim=tuple(range(2, u.dim())), keepdim=True)
    return scale_to_max(u, max_displacement)


def bspline_weights(size: int, spacing: float, n_ctrl: int | None = None, dtype: torch.dtype | None = None,
                    device=None) -> torch.Tensor:
    r"""Matrix ``W`` ``(size, n_ctrl)`` of cubic B-spline weights: voxel ``x`` gets :math:`\sum_c W[x, c]\, c_c`.

    Control point ``c`` sits at voxel position ``(c - 1) * spacing``, so one control point lies outside
    the image on each side (the cubic B-spline's support is 4 control points). ``n_ctrl`` defaults to
    :func:`bspline_grid_shape`'s count, ``ceil((size - 1) / spacing) + 3``. Every row sums to 1 (where all
    4 supporting control points exist). Cached per arguments; do not modify the result in place.
    """
    size = check_number("bspline_weights", "size", size, low=1, integer=True)
    spacing = check_number("bspline_weights", "spacing", spacing, low=0, low_inclusive=False)
    n = int(math.ceil((size - 1) / spacing)) + 3 if n_ctrl is None else check_number("bspline_weights", "n_ctrl", n_ctrl, low=1, integer=True)
    return _bspline_weights(size, spacing, n, dtype or torch.get_default_dtype(), torch.device(device or "cpu"))


@lru_cache(maxsize=32)
def _bspline_weights(size: int, spacing: float, n_ctrl: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Cached :func:`bspline_weights` (positional arguments; the old private name, kept as it is)."""
    x = torch.arange(size, dtype=torch.float64) / spacing + 1.0
    t = (x[:, None] - torch.arange(n_ctrl, dtype=torch.float64)).abs()  # distance of voxel x to control point c
    W = torch.where(t < 1, (4 - 6 * t**2 + 3 * t**3) / 6, torch.where(t < 2, (2 - t).clamp_min(0) ** 3 / 6, torch.zeros_like(t)))
    return W.to(dtype=dtype, device=device)


def bspline_grid_shape(shape: Sequence[int], spacing: float | Sequence[float]) -> tuple[int, ...]:
    """Number of control points per axis for an image of ``shape`` and control-point ``spacing`` (voxels)."""
    sp = [float(spacing)] * len(shape) if isinstance(spacing, (int, float)) else [float(s) for s in spacing]
    for s, d in zip(shape, sp):
        if d <= 0 or d > s - 1:
            raise ValueError(
                f"bspline: control-point spacing must be positive and at most the image size minus 1 "
                f"along every axis, got spacing {tuple(sp)} for an image of shape {tuple(shape)}"
            )
    return tuple(int(math.ceil((s - 1) / d)) + 3 for s, d in zip(shape, sp))


def bspline_to_dvf(coefficients: torch.Tensor, shape: Sequence[int], spacing: float | Sequence[float]) -> torch.Tensor:
    """Dense DVF from cubic B-spline control-point displacements (free-form deformation).

    Rueckert et al. (1999), *Nonrigid registration using free-form deformations*, IEEE TMI.

    ``coefficients`` ``(B, ndim, *grid)`` with ``grid = bspline_grid_shape(shape, spacing)``;
    returns ``(B, ndim, *shape)``. Linear in the coefficients and differentiable.
    """
    coefficients = check_tensor("bspline_to_dvf", "coefficients", coefficients)
    shape = _check_shape("bspline_to_dvf", shape)
    ndim = len(shape)
    sp = [float(spacing)] * ndim if isinstance(spacing, (int, float)) else [float(s) for s in spacing]
    grid = bspline_grid_shape(shape, sp)
    if coefficients.dim() != ndim + 2 or coefficients.shape[1] != ndim or tuple(coefficients.shape[2:]) != grid:
        raise ValueError(
            f"bspline_to_dvf: coefficients must have shape (B, {ndim}, {', '.join(map(str, grid))}) for image shape "
            f"{shape} and spacing {tuple(sp)}, got {tuple(coefficients.shape)}"
        )
    return separable_apply(coefficients, [_bspline_weights(shape[k], sp[k], grid[k], coefficients.dtype, coefficients.device)
                                          for k in range(ndim)])


def random_bspline_dvf(
    shape: Sequence[int],
    spacing: float = 16.0,
    max_displacement: float = 4.0,
    batch: int = 1,
    seed: int | None = None,
    dtype: torch.dtype | None = None,
    device=None,
) -> torch.Tensor:
    """Smooth random DVF from a B-spline control grid with random displacements at the control points."""
    shape = _check_shape("random_bspline_dvf", shape)
    max_displacement = check_number("random_bspline_dvf", "max_displacement", max_displacement, low=0)
    batch = check_number("random_bspline_dvf", "batch", batch, low=1, integer=True)
    grid = bspline_grid_shape(shape, spacing)
    dtype = dtype or torch.get_default_dtype()
    coef = torch.randn(batch, len(shape), *grid, generator=_generator(seed, device), dtype=dtype).to(device)
    return scale_to_max(bspline_to_dvf(coef, shape, spacing), max_displacement)


def jacobian_matrix(dvf: torch.Tensor) -> torch.Tensor:
    r"""Jacobian of :math:`\varphi = \mathrm{Id} + u`: ``(B, ndim, ndim, *spatial)``, ``J[:, p, q] = d phi_p / d x_q``.

    Central differences inside, one-sided at the border (exact for affine fields).
    """
    dvf = check_dvf("jacobian_matrix", "dvf", dvf)
    ndim = dvf.dim() - 2
    J = spatial_gradient(dvf)
    eye = torch.eye(ndim, dtype=dvf.dtype, device=dvf.device).reshape(1, ndim, ndim, *([1] * ndim))
    return J + eye


def jacobian_determinant(dvf: torch.Tensor) -> torch.Tensor:
    r"""Jacobian determinant :math:`\det J_\varphi(x) = \det(I + \nabla u(x))` at every voxel.

    ``(B, ndim, *spatial)`` -> ``(B, *spatial)``. Values > 1 mean local expansion, < 1 compression,
    and <= 0 folding (the deformation is not invertible there).

    **Whose expansion?** The Jacobian belongs to :math:`\varphi` (fixed -> moving): ``det J = 2`` at ``x``
    means a small region around the fixed-image point ``x`` maps onto a moving-image region twice as
    large. Under pull-back warping, ``moved(x) = moving(phi(x))`` squeezes that larger moving region
    into the small fixed region, so where ``det J > 1`` the *moved* anatomy appears **shrunk** by
    ``1 / det J`` (and grown where ``det J < 1``). The displacement ``u`` has the same sign convention
    as :func:`regedu.warp`.
    """
    J = jacobian_matrix(dvf)
    if dvf.shape[1] == 2:
        return J[:, 0, 0] * J[:, 1, 1] - J[:, 0, 1] * J[:, 1, 0]
    return (
        J[:, 0, 0] * (J[:, 1, 1] * J[:, 2, 2] - J[:, 1, 2] * J[:, 2, 1])
        - J[:, 0, 1] * (J[:, 1, 0] * J[:, 2, 2] - J[:, 1, 2] * J[:, 2, 0])
        + J[:, 0, 2] * (J[:, 1, 0] * J[:, 2, 1] - J[:, 1, 1] * J[:, 2, 0])
    )


def folding_fraction(dvf: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Share of voxels (inside ``mask`` if given) where ``det J <= 0``; ``(B,)`` in ``[0, 1]``."""
    det = jacobian_determinant(dvf)
    fold = (det <= 0).to(dvf.dtype)
    if mask is None:
        return fold.flatten(1).mean(1)
    mask = check_tensor("folding_fraction", "mask", mask)
    m = mask.reshape(mask.shape[0], *mask.shape[-(dvf.dim() - 2):]).to(dvf.dtype) if mask.dim() == dvf.dim() else mask.to(dvf.dtype)
    if m.shape[-(dvf.dim() - 2):] != det.shape[1:]:
        raise ValueError(f"folding_fraction: mask must have the spatial size {tuple(det.shape[1:])}, got {tuple(mask.shape)}")
    m = m.expand_as(det)
    return (fold * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1)


def compose(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    r"""Displacement of :math:`\varphi_u \circ \varphi_v`: :math:`w(x) = v(x) + u(x + v(x))`.

    With pull-back warping, ``warp(m, compose(u, v)) ~= warp(warp(m, u), v)``: warping by ``u``
    first and then by ``v`` is one warp by ``compose(u, v)`` (up to interpolation).
    """
    u = check_dvf("compose", "u", u)
    v = check_dvf("compose", "v", v, spatial=u.shape[2:])
    return v + warp(u, v, mode="linear", padding_mode="border")


def integrate_velocity(velocity: torch.Tensor, steps: int = 7) -> torch.Tensor:
    r"""Scaling and squaring: the displacement of :math:`\exp(v)` for a stationary velocity field.

    :math:`\varphi^{(1/2^N)} = \mathrm{Id} + v / 2^N`, then :math:`\varphi^{(1/2^{k-1})} =
    \varphi^{(1/2^k)} \circ \varphi^{(1/2^k)}` for ``N`` = ``steps`` squarings
    (Arsigny et al., 2006; Dalca et al., 2018). Smooth velocities give diffeomorphisms (no folding).
    """
    velocity = check_dvf("integrate_velocity", "velocity", velocity)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"integrate_velocity: steps must be a non-negative integer, got {steps!r}")
    return _integrate(velocity, steps)


def _integrate(velocity: torch.Tensor, steps: int) -> torch.Tensor:
    """:func:`integrate_velocity` of a checked velocity (e.g. a B-spline model's own field)."""
    u = velocity / (2**steps)
    for _ in range(steps):  # finite in, finite out: the squarings skip warp's input test
        u = u + _warp_checked_inputs(u, u, padding_mode="border")
    return u


def invert_dvf(dvf: torch.Tensor, iterations: int = 20) -> torch.Tensor:
    r"""Approximate inverse displacement by fixed-point iteration.

    Finds ``v`` with ``compose(u, v) = v(x) + u(x + v(x)) = 0``, i.e. ``phi_u o phi_v = Id``,
    by iterating :math:`v \leftarrow -u(x + v(x))` (Chen et al., 2008). Converges for smooth fields
    without folding.
    """
    dvf = check_dvf("invert_dvf", "dvf", dvf)
    iterations = check_number("invert_dvf", "iterations", iterations, low=0, integer=True)
    v = -dvf
    for _ in range(iterations):
        v = -warp(dvf, v, mode="linear", padding_mode="border")
    return v


def dof(shape_or_dvf: torch.Tensor | Sequence[int]) -> int:
    r"""Degrees of freedom of a dense DVF: :math:`d \cdot N_1 \cdots N_d` (one vector per voxel).

    Accepts a spatial shape or a DVF ``(B, ndim, *spatial)`` (counted per field).
    """
    if isinstance(shape_or_dvf, torch.Tensor):
        dvf = check_dvf("dof", "dvf", shape_or_dvf, finite=False)
        shape = tuple(dvf.shape[2:])
    else:
        shape = tuple(int(s) for s in shape_or_dvf)
        if len(shape) not in (2, 3):
            raise ValueError(f"dof: shape must have 2 or 3 entries, got {shape}")
    return len(shape) * math.prod(shape)


def magnitude(dvf: torch.Tensor, spacing: Sequence[float] | None = None) -> torch.Tensor:
    """Length of the displacement at every voxel, ``(B, *spatial)``; in mm when ``spacing`` is given."""
    dvf = check_dvf("magnitude", "dvf", dvf)
    if spacing is not None:
        sp = torch.as_tensor(spacing, dtype=dvf.dtype, device=dvf.device).reshape(1, -1, *([1] * (dvf.dim() - 2)))
        dvf = dvf * sp
    return dvf.pow(2).sum(1).sqrt()


def endpoint_error(dvf: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    r"""Mean end-point error :math:`\frac{1}{|\Omega|}\sum_x \|u(x) - \hat u(x)\|` per field, ``(B,)``, in voxels.

    With ``mask`` ``(B, 1, *spatial)`` the mean is taken over the mask (the masked loss of
    Eppenhof & Pluim, 2018, weights each voxel by the mask).
    """
    dvf = check_dvf("endpoint_error", "dvf", dvf)
    target = check_dvf("endpoint_error", "target", target, spatial=dvf.shape[2:])
    err = (dvf - target).pow(2).sum(1).add(1e-12).sqrt()
    if mask is None:
        return err.flatten(1).mean(1)
    m = mask[:, 0].to(err.dtype) if mask.dim() == dvf.dim() else mask.to(err.dtype)
    m = m.expand_as(err)
    return (err * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1e-12)
