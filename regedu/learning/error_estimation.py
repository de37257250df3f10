r"""Learning a registration error estimate (lecture section A; Eppenhof & Pluim, 2018).

A finished registration rarely comes with a measure of its own accuracy. Eppenhof & Pluim train a
CNN on pairs of image patches that they misaligned themselves with known deformations, to regress
the local registration error :math:`\|v(x)\|`; applied to patches around every voxel of a registered
pair, it gives a **registration error map**, without any ground truth for that pair. In this course
the network is :class:`regedu.learning.SimilarityNet` (trained by :func:`~regedu.learning.train_similarity`),
whose output *is* the predicted error per patch; this module holds what is needed to check such an
estimate against the truth where the truth is known:

* :func:`true_error_map`: the true error of a registration, :math:`e(x) = \|u(x) - u^*(x)\|` for the
  found and the true pull-back displacements (both defined on the fixed image's grid, so the
  difference of the displacements is the distance between where the two transformations send
  :math:`x`);
* :func:`calibration`: predicted error binned against the mean true error per bin (a calibration
  plot: a calibrated estimator lies on the diagonal).

Reference: Eppenhof, K. A. J. & Pluim, J. P. W. (2018), Error estimation of deformable image
registration of pulmonary CT scans using convolutional neural networks, Journal of Medical Imaging 5(2).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .._checks import check_dvf, check_number

__all__ = ["true_error_map", "pool_to", "calibration"]


def true_error_map(dvf: torch.Tensor, dvf_true: torch.Tensor) -> torch.Tensor:
    r"""The true registration error per voxel, :math:`\|u(x) - u^*(x)\|`, ``(B, 1, *spatial)`` in voxels.

    ``dvf`` (found) and ``dvf_true`` are pull-back displacements ``(B, ndim, *spatial)`` on the fixed grid.
    """
    dvf = check_dvf("true_error_map", "dvf", dvf)
    dvf_true = check_dvf("true_error_map", "dvf_true", dvf_true, spatial=dvf.shape[2:])
    return (dvf - dvf_true.to(dvf)).pow(2).sum(1, keepdim=True).sqrt()


def pool_to(error: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Average ``error`` ``(B, 1, *spatial)`` over the cells of a coarser grid ``size`` (the network's output grid)."""
    pool = F.adaptive_avg_pool2d if error.dim() == 4 else F.adaptive_avg_pool3d
    return pool(error, tuple(int(s) for s in size))  # type: ignore[arg-type]


def calibration(predicted: torch.Tensor, true: torch.Tensor, bins: int = 8) -> dict[str, torch.Tensor]:
    """Calibration of an error estimate: bin the cells by predicted error (``bins`` equally populated bins).

    Returns ``predicted`` (mean predicted error per bin), ``true`` (mean true error per bin), ``count``
    (cells per bin), and the overall ``mae`` (mean absolute difference) and ``correlation`` (Pearson)
    of the two, over all cells. Both inputs are flattened; they must have the same number of elements.
    """
    p, t = predicted.detach().flatten().double(), true.detach().flatten().double()
    if p.numel() != t.numel() or p.numel() == 0:
        raise ValueError(f"calibration: predicted and true must have the same, non-zero number of elements, got {p.numel()} and {t.numel()}")
    bins = check_number("calibration", "bins", bins, low=1, high=p.numel(), integer=True)
    order = torch.argsort(p)
    groups = torch.tensor_split(order, bins)
    pm = torch.stack([p[g].mean() for g in groups])
    tm = torch.stack([t[g].mean() for g in groups])
    count = torch.tensor([len(g) for g in groups])
    corr = torch.corrcoef(torch.stack([p, t]))[0, 1]
    return {"predicted": pm.float(), "true": tm.float(), "count": count, "mae": (p - t).abs().mean().float(),
            "correlation": corr.float()}
