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

from typing import Callable

import torch

from ._checks import HALF_DTYPES, check_choice, check_dvf
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


REGULARISERS = {"diffusion": diffusion, "bending": bending_energy, "bending_energy": bending_energy}


def get_regulariser(name: str | Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., torch.Tensor]:
    """A regulariser from a name (``"diffusion"``, ``"bending"``) or a callable ``dvf -> scalar``."""
    if callable(name):
        return name
    if isinstance(name, str) and name in REGULARISERS:
        return REGULARISERS[name]
    raise ValueError(f"get_regulariser: regulariser must be one of {', '.join(repr(k) for k in REGULARISERS)} or a callable, got {name!r}")
