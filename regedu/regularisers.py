r"""Smoothness regularisers :math:`R(u)` of a displacement field (losses to minimise, >= 0).

Dense registration minimises :math:`-S(F, M \circ \varphi) + \lambda R(u)`; the weight
:math:`\lambda` trades accuracy against smoothness (and folding). Both regularisers use finite
differences in voxel units, work in 2D and 3D, and return a scalar (mean over the batch) or,
with ``reduction="none"``, one value per field.

Degenerate axes are legal: along an axis of size 1 (a volume of one slice) there are no first
differences, and along an axis of size <= 2 no second differences; those terms are 0 rather than
the NaN of a mean over nothing. Half precision is computed and returned in float32 (the measure
policy of :mod:`regedu._checks`).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable, Sequence

import torch

from ._checks import HALF_DTYPES, check_choice, check_dvf, check_tensor
from .filters import forward_differences


def _mean_square(d: torch.Tensor) -> torch.Tensor:
    """Per field ``(B,)``: mean over voxels of the squared differences, summed over components; 0 if
    there are no differences along this axis (size 1, or <= 2 for second differences)."""
    if d.numel() == 0:
        return torch.zeros(d.shape[0], dtype=d.dtype, device=d.device)
    return d.pow(2).flatten(2).mean(2).sum(1)


def diffusion(dvf: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    r"""Diffusion regulariser :math:`\frac{1}{|\Omega|}\sum_x \|\nabla u(x)\|^2`
    (sum over components and directions, mean over voxels; forward differences).

    Zero for a constant field (a translation), penalises any variation of ``u``.
    Used by VoxelMorph (Balakrishnan et al., 2019) as the smoothness term.
    """
    dvf = check_dvf("diffusion", "dvf", dvf)
    check_choice("diffusion", "reduction", reduction, ("mean", "none"))
    u = dvf.float() if dvf.dtype in HALF_DTYPES else dvf
    value = torch.stack([_mean_square(d) for d in forward_differences(u)]).sum(0)
    return value.mean() if reduction == "mean" else value


def bending_energy(dvf: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    r"""Bending energy :math:`\frac{1}{|\Omega|}\sum_x \sum_{p,q} \left(\frac{\partial^2 u}{\partial x_p \partial x_q}\right)^2`
    (thin-plate penalty; Rueckert et al., 1999).

    Zero for every affine field (it has no curvature), so it penalises only non-affine deformation.
    Second differences ``u[i+1] - 2u[i] + u[i-1]`` on the diagonal, mixed differences off it
    (each mixed term counted twice, as in the sum over all ``p, q``).
    """
    dvf = check_dvf("bending_energy", "dvf", dvf)
    check_choice("bending_energy", "reduction", reduction, ("mean", "none"))
    u = dvf.float() if dvf.dtype in HALF_DTYPES else dvf
    ndim = u.dim() - 2
    total = torch.zeros(u.shape[0], dtype=u.dtype, device=u.device)
    first = forward_differences(u)
    for p in range(ndim):
        for q in range(p, ndim):
            if first[p].shape[2 + q] < 2:
                continue  # no second difference along this axis
            second = torch.diff(first[p], dim=2 + q)
            weight = 1.0 if p == q else 2.0
            total = total + weight * _mean_square(second)
    return total.mean() if reduction == "mean" else total


# --------------------------------------------------------------------------------------------
# the same values for a B-spline field, computed on its control grid
# --------------------------------------------------------------------------------------------

@lru_cache(maxsize=64)
def _difference_factor(size: int, spacing: float, n_ctrl: int, order: int) -> tuple[torch.Tensor, int]:
    """``(R, m)`` with ``R^T R = A^T A`` for ``A`` = the ``order``-th forward difference (along the voxels)
    of the B-spline weight matrix ``W`` ``(size, n_ctrl)``, and ``m`` = A's number of rows (``size - order``).

    ``sum((A c)^2) = sum((R c)^2)`` for every coefficient vector ``c``: a sum of squares on the control
    grid (``n_ctrl`` rows) that equals the sum of squares of the field's differences on the voxel grid
    (``size`` rows). ``R = sqrt(L) Q^T`` from the eigen-decomposition of the Gram matrix, in float64."""
    from .fields import bspline_weights

    A = bspline_weights(size, spacing, n_ctrl, dtype=torch.float64)
    for _ in range(order):
        A = A[1:] - A[:-1]
    if A.shape[0] == 0:
        return torch.zeros(n_ctrl, n_ctrl, dtype=torch.float64), 0
    evals, evecs = torch.linalg.eigh(A.T @ A)
    return evals.clamp_min(0).sqrt()[:, None] * evecs.T, A.shape[0]


def _terms(ndim: int, kind: str) -> list[tuple[tuple[int, ...], float]]:
    """The terms of a regulariser as (difference order per axis, weight): bending energy has d2/dp2 once
    and d2/dp dq (p < q) twice (the sum over all p, q); diffusion has d/dp once per axis."""
    if kind == "diffusion":
        return [(tuple(1 if k == p else 0 for k in range(ndim)), 1.0) for p in range(ndim)]
    terms = [(tuple(2 if k == p else 0 for k in range(ndim)), 1.0) for p in range(ndim)]
    return terms + [(tuple(1 if k in (p, q) else 0 for k in range(ndim)), 2.0) for p in range(ndim) for q in range(p + 1, ndim)]


@lru_cache(maxsize=32)
def _factor_stacks(shape: tuple[int, ...], spacing: tuple[float, ...], grid: tuple[int, ...], kind: str,
                   dtype: torch.dtype, device: torch.device) -> list[torch.Tensor] | None:
    """Per axis, the transposed factors of every term stacked ``(T, n_k, n_k)``, broadcastable against the
    coefficients with a term axis; each term's ``weight / rows`` folded into the first axis' factor.
    ``None`` when no term has any differences (every axis too short)."""
    stacks: list[list[torch.Tensor]] = [[] for _ in shape]
    for orders, weight in _terms(len(shape), kind):
        factors = [_difference_factor(shape[k], spacing[k], grid[k], orders[k]) for k in range(len(shape))]
        rows = math.prod(m for _, m in factors)
        if rows == 0:
            continue  # no differences of this order along an axis of this size (as bending_energy / diffusion)
        for k, (R, _) in enumerate(factors):
            stacks[k].append((R * math.sqrt(weight / rows) if k == 0 else R).T)
    if not stacks[0]:
        return None
    ndim = len(shape)
    # (1, T, 1, [1,] n, n): batch, term, component (and the third axis in 3D) broadcast in the matmul
    return [torch.stack(f).reshape(1, len(f), *([1] * (ndim - 1)), grid[k], grid[k]).to(dtype=dtype, device=device)
            for k, f in enumerate(stacks)]


def bspline_regulariser(coefficients: torch.Tensor, shape: Sequence[int], spacing: float | Sequence[float],
                        kind: str = "bending", reduction: str = "mean") -> torch.Tensor:
    r"""``bending_energy`` (``kind="bending"``) or ``diffusion`` of ``bspline_to_dvf(coefficients, shape, spacing)``,
    computed on the control grid without building the field.

    The field is linear in the coefficients, separably along each axis (:func:`regedu.fields.bspline_to_dvf`),
    and so are its finite differences, so every sum of squared differences is a quadratic form of the
    coefficients: :math:`\sum (A_0 \otimes A_1 \otimes A_2\, c)^2 = \sum (R_0 \otimes R_1 \otimes R_2\, c)^2`
    with :math:`R_k^T R_k = A_k^T A_k` (:func:`_difference_factor`; :math:`A_k` is the B-spline weight
    matrix of axis ``k``, differenced along the voxels where the term differentiates along ``k``). The
    values equal those of the dense field to rounding; the cost is that of the control grid (for a
    spacing of 4 voxels, 16x (2D) to 64x (3D) fewer points), which is what makes the B-spline model's
    regulariser cheap (3D: ~15x faster than on the dense field, forward and backward).
    """
    coefficients = check_tensor("bspline_regulariser", "coefficients", coefficients)
    check_choice("bspline_regulariser", "kind", kind, ("bending", "diffusion"))
    check_choice("bspline_regulariser", "reduction", reduction, ("mean", "none"))
    from .fields import bspline_grid_shape

    shape = tuple(int(s) for s in shape)
    ndim = len(shape)
    sp = tuple([float(spacing)] * ndim if isinstance(spacing, (int, float)) else [float(s) for s in spacing])
    grid = bspline_grid_shape(shape, sp)
    if coefficients.dim() != ndim + 2 or coefficients.shape[1] != ndim or tuple(coefficients.shape[2:]) != grid:
        raise ValueError(f"bspline_regulariser: coefficients must have shape (B, {ndim}, {', '.join(map(str, grid))}) for image "
                         f"shape {shape} and spacing {sp}, got {tuple(coefficients.shape)}")
    c = coefficients.float() if coefficients.dtype in HALF_DTYPES else coefficients
    stacks = _factor_stacks(shape, sp, grid, kind, c.dtype, c.device)
    if stacks is None:
        total = torch.zeros(c.shape[0], dtype=c.dtype, device=c.device)
    else:
        y = c.unsqueeze(1)  # (B, term, ndim, *grid)
        for k, RT in enumerate(stacks):
            y = torch.movedim(torch.movedim(y, 3 + k, -1) @ RT, -1, 3 + k)
        total = y.pow(2).flatten(1).sum(1)
    return total.mean() if reduction == "mean" else total


REGULARISERS = {"diffusion": diffusion, "bending": bending_energy, "bending_energy": bending_energy}


def get_regulariser(name: str | Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., torch.Tensor]:
    """A regulariser from a name (``"diffusion"``, ``"bending"``) or a callable ``dvf -> scalar``."""
    if callable(name):
        return name
    if isinstance(name, str) and name in REGULARISERS:
        return REGULARISERS[name]
    raise ValueError(f"get_regulariser: regulariser must be one of {', '.join(repr(k) for k in REGULARISERS)} or a callable, got {name!r}")
