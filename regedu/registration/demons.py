r"""Demons registration (Thirion, 1998), a classical dense baseline, with its diffeomorphic variant.

Thirion's demons treat registration like optical flow: at every voxel a "demon" pushes the moving image
along the intensity gradient, in proportion to the intensity difference. With pull-back warping
:math:`M_\varphi = M \circ \varphi` and a gradient :math:`J`, the update is

.. math:: \delta u(x) = \frac{\big(F(x) - M_\varphi(x)\big)\, J(x)}{\|J(x)\|^2 + \big(F(x) - M_\varphi(x)\big)^2 / \kappa^2}

whose length is at most :math:`\kappa/2` voxels (``max_step`` = :math:`\kappa`; Vercauteren et al., 2009,
eq. 5). ``force="symmetric"`` uses :math:`J = (\nabla F + \nabla M_\varphi)/2` (the efficient
second-order "ESM" force), ``"fixed"`` Thirion's :math:`J = \nabla F`, ``"moving"`` :math:`J = \nabla M_\varphi`.

Each iteration then regularises twice with Gaussians, as in the lecture's "demons" family:

1. *fluid-like*: smooth the update, :math:`\delta u \leftarrow G_{\sigma_{fluid}} * \delta u`;
2. add it: :math:`u \leftarrow u + \delta u` (classic), or, with ``diffeomorphic=True``, compose with its
   exponential, :math:`\varphi \leftarrow \varphi \circ \exp(\delta u)` (diffeomorphic demons, Vercauteren et
   al., 2009), so the result stays invertible;
3. *diffusion-like*: smooth the whole field, :math:`u \leftarrow G_{\sigma_{diffusion}} * u`.

No gradient descent on a loss and no autograd: the update is closed-form. The loss recorded in the
history is the MSE between the fixed and the moved image (the energy that demons decrease).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import torch

from .._checks import check_choice
from ..fields import compose, integrate_velocity
from ..filters import spatial_gradient
from ..similarity import mse
from ..spatial_transformer import resize_dvf, warp
from .history import HistoryRecorder
from .models import smooth
from .planning import check_count, check_number, check_pair, per_level, plan_levels, pyramid, threads_for
from .result import RegistrationResult

DEFAULT_LEVELS = 3

_smooth = smooth  # the name before the models shared it


def demons(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    iterations: int | Sequence[int] = (60, 40, 20),
    sigma_fluid: float = 1.0,
    sigma_diffusion: float = 1.5,
    levels: int | None = None,
    diffeomorphic: bool = True,
    force: str = "symmetric",
    max_step: float = 2.0,
    mask: torch.Tensor | None = None,
    progress: bool = True,
    callback: Callable[[int, int, float, torch.Tensor], Any] | None = None,
    snapshot_every: int = 0,
) -> RegistrationResult:
    r"""Demons registration of ``moving`` to ``fixed`` on a resolution pyramid (coarse to fine).

    Args:
        fixed, moving: ``(B, 1, H, W)`` or ``(B, 1, D, H, W)`` images with the same spatial size and
            comparable intensities (demons compare intensities directly, like SSD).
        iterations: per level (one number or one per level, coarse to fine).
        sigma_fluid: Gaussian width (voxels of the level) for the update (0: none).
        sigma_diffusion: Gaussian width for the whole field after each update (0: none).
        levels: pyramid levels (default 3, fewer for small images).
        diffeomorphic: compose with the exponential of the update (diffeomorphic demons) instead of adding it.
        force: ``"symmetric"`` (default), ``"fixed"`` (Thirion's original) or ``"moving"``.
        max_step: :math:`\kappa`, bounds every update to :math:`\kappa/2` voxels.
        mask: optional fixed-image mask ``(B or 1, 1, *spatial)``: demons act only inside it.
        progress: show a ``tqdm.auto`` progress bar.
        callback: ``callback(level, iteration, loss, dvf)``; return ``True`` to stop.
        snapshot_every: record ``(iteration, moved, dvf)`` at full resolution every that many iterations.

    Returns:
        A :class:`RegistrationResult` with ``matrix=None`` and ``transform="demons"``.

    References: Thirion (1998), *Image matching as a diffusion process: an analogy with Maxwell's
    demons*, Medical Image Analysis 2(3); Vercauteren, Pennec, Perchant & Ayache (2009), *Diffeomorphic
    demons: efficient non-parametric image registration*, NeuroImage 45(1).
    """
    fn = "demons"
    start = time.perf_counter()
    pair = check_pair(fn, fixed, moving, mask, channels=1)
    check_choice(fn, "force", force, ("symmetric", "fixed", "moving"))
    sigma_fluid = check_number(fn, "sigma_fluid", sigma_fluid)
    sigma_diffusion = check_number(fn, "sigma_diffusion", sigma_diffusion)
    max_step = check_number(fn, "max_step", max_step, strict=True)
    shapes = plan_levels(fn, pair.shape, levels, DEFAULT_LEVELS, coarsest=8)
    levels = len(shapes)
    if isinstance(iterations, (list, tuple)) and len(iterations) > levels:
        iterations = tuple(iterations)[-levels:]
    iters = [check_count(fn, "iterations", v) for v in per_level(fn, "iterations", iterations, levels, lambda v: v)]

    u = torch.zeros(pair.batch, pair.ndim, *shapes[0], dtype=pair.fixed.dtype, device=pair.fixed.device)
    recorder = HistoryRecorder(fn, sum(iters), "demons", progress, snapshot_every,
                               snapshot=lambda: _moved_and_field(u, pair.moving, pair.shape), callback=callback, start=start)
    try:
        with threads_for(pair.fixed.device, pair.fixed[0, 0].numel()), torch.no_grad():
            fixed_pyr, moving_pyr = pyramid(pair.fixed, shapes), pyramid(pair.moving, shapes)
            mask_pyr = pyramid(pair.mask, shapes) if pair.mask is not None else [None] * levels
            for level in range(levels):
                if recorder.stopped:
                    break
                if tuple(u.shape[2:]) != shapes[level]:
                    u = resize_dvf(u, shapes[level])
                f_l, m_l, k_l = fixed_pyr[level], moving_pyr[level], mask_pyr[level]
                grad_f = spatial_gradient(f_l)[:, 0] if force != "moving" else None
                for it in range(iters[level]):
                    moved = warp(m_l, u)
                    u = _demons_step(u, f_l, moved, grad_f, k_l, force, max_step, sigma_fluid, sigma_diffusion, diffeomorphic)
                    loss = float(mse(f_l, moved, mask=k_l))
                    if recorder.record(level, it, loss, loss, 0.0, u, level_budget=iters[level]):
                        break
    finally:
        recorder.close()

    u = _full(u, pair.shape)
    return RegistrationResult(
        dvf=u,
        moved=warp(pair.moving, u),
        matrix=None,
        history=recorder.history,
        time=time.perf_counter() - start,
        transform="demons",
        model=None,
        stopped_early=recorder.stopped,
    )


def _full(u: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A level's field on the full-resolution grid."""
    return resize_dvf(u, shape) if tuple(u.shape[2:]) != tuple(shape) else u


def _moved_and_field(u: torch.Tensor, moving: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(moved, dvf)`` at full resolution, for the history's snapshots."""
    full = _full(u, shape)
    return warp(moving, full), full


def _demons_step(u, fixed, moved, grad_f, mask, force: str, max_step: float, sigma_fluid: float, sigma_diffusion: float,
                 diffeomorphic: bool, eps: float = 1e-12) -> torch.Tensor:
    """One demons iteration (module docstring): the bounded force, fluid smoothing, update, diffusion smoothing."""
    diff = fixed - moved
    if force == "fixed":
        J = grad_f
    else:
        grad_m = spatial_gradient(moved)[:, 0]
        J = grad_m if force == "moving" else 0.5 * (grad_f + grad_m)
    denom = J.pow(2).sum(1, keepdim=True) + diff.pow(2) / max_step**2
    du = diff * J / denom.clamp_min(eps)
    du = torch.where(denom > eps, du, torch.zeros_like(du))
    if mask is not None:
        du = du * mask
    du = smooth(du, sigma_fluid)
    u = compose(u, integrate_velocity(du, steps=4)) if diffeomorphic else u + du
    return smooth(u, sigma_diffusion)
