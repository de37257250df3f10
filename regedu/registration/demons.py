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

import math
import time
from typing import Any, Callable, Sequence

import torch

from .._checks import _shape, check_choice, check_image, check_same_spatial
from ..fields import compose, integrate_velocity
from ..filters import gaussian_blur, spatial_gradient
from ..similarity import mse
from ..spatial_transformer import image_pyramid, resize_dvf, warp
from .engine import MIN_LEVEL_SIZE, _level_shapes, _max_levels, _per_level, _threads_for
from .result import RegistrationResult


def _smooth(u: torch.Tensor, sigma: float) -> torch.Tensor:
    return gaussian_blur(u, sigma) if sigma > 0 else u


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
    fixed = check_image(fn, "fixed", fixed)
    moving = check_image(fn, "moving", moving)
    if fixed.dim() != moving.dim() or fixed.shape[2:] != moving.shape[2:]:
        raise ValueError(
            f"{fn}: fixed and moving must have the same spatial size, got fixed {_shape(fixed)} and moving "
            f"{_shape(moving)}; resample the moving image first with regedu.resize"
        )
    check_same_spatial(fn, "fixed", fixed, "moving", moving)
    if fixed.shape[1] != 1 or moving.shape[1] != 1:
        raise ValueError(f"{fn}: fixed and moving must have one channel, got {fixed.shape[1]} and {moving.shape[1]}")
    check_choice(fn, "force", force, ("symmetric", "fixed", "moving"))
    for name, value in (("sigma_fluid", sigma_fluid), ("sigma_diffusion", sigma_diffusion)):
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"{fn}: {name} must be a finite number >= 0, got {value}")
    if not max_step > 0:
        raise ValueError(f"{fn}: max_step must be positive, got {max_step}")
    moving = moving.to(fixed.dtype)
    shape = tuple(fixed.shape[2:])
    ndim = len(shape)
    batch = max(fixed.shape[0], moving.shape[0])
    if mask is not None:
        mask = check_image(fn, "mask", mask)
        check_same_spatial(fn, "fixed", fixed, "mask", mask)
        mask = mask.to(fixed)
    if levels is None:
        levels = min(3, _max_levels(shape))
    if not isinstance(levels, int) or levels < 1:
        raise ValueError(f"{fn}: levels must be a positive integer, got {levels!r}")
    shapes = _level_shapes(shape, levels)
    if levels > 1 and min(shapes[0]) < MIN_LEVEL_SIZE:
        raise ValueError(f"{fn}: levels={levels} makes the coarsest level {shapes[0]} too small; use levels <= {_max_levels(shape)}")
    if isinstance(iterations, (list, tuple)) and len(iterations) > levels:
        iterations = tuple(iterations)[-levels:]
    iters = _per_level(fn, "iterations", iterations, levels, int)

    fixed_pyr, moving_pyr = image_pyramid(fixed, levels), image_pyramid(moving, levels)
    mask_pyr = image_pyramid(mask, levels) if mask is not None else [None] * levels
    history: dict[str, list[Any]] = {k: [] for k in ("loss", "similarity", "regulariser", "level", "iteration", "time")}
    history["snapshots"] = []
    u = torch.zeros(batch, ndim, *shapes[0], dtype=fixed.dtype, device=fixed.device)
    eps = 1e-12
    step = 0
    stopped = False

    from tqdm.auto import tqdm

    bar = tqdm(total=sum(iters), desc="demons", disable=not progress, leave=False)
    try:
        with _threads_for(fixed.device, math.prod(shape)), torch.no_grad():
            for level in range(levels):
                if stopped:
                    break
                if tuple(u.shape[2:]) != shapes[level]:
                    u = resize_dvf(u, shapes[level])
                f_l, m_l, k_l = fixed_pyr[level], moving_pyr[level], mask_pyr[level]
                grad_f = spatial_gradient(f_l)[:, 0] if force != "moving" else None
                for it in range(iters[level]):
                    moved = warp(m_l, u)
                    diff = f_l - moved
                    if force == "fixed":
                        J = grad_f
                    else:
                        grad_m = spatial_gradient(moved)[:, 0]
                        J = grad_m if force == "moving" else 0.5 * (grad_f + grad_m)
                    denom = J.pow(2).sum(1, keepdim=True) + diff.pow(2) / max_step**2
                    du = diff * J / denom.clamp_min(eps)
                    du = torch.where(denom > eps, du, torch.zeros_like(du))
                    if k_l is not None:
                        du = du * k_l
                    du = _smooth(du, sigma_fluid)
                    u = compose(u, integrate_velocity(du, steps=4)) if diffeomorphic else u + du
                    u = _smooth(u, sigma_diffusion)

                    loss = float(mse(f_l, moved, mask=k_l))
                    history["loss"].append(loss)
                    history["similarity"].append(loss)
                    history["regulariser"].append(0.0)
                    history["level"].append(level)
                    history["iteration"].append(step)
                    history["time"].append(time.perf_counter() - start)
                    step += 1
                    bar.update(1)
                    if snapshot_every and step % snapshot_every == 0:
                        full = resize_dvf(u, shape) if tuple(u.shape[2:]) != shape else u
                        history["snapshots"].append((step, warp(moving, full).cpu(), full.cpu()))
                    if callback is not None and callback(level, it, loss, u) is True:
                        stopped = True
                        break
    finally:
        bar.close()

    if tuple(u.shape[2:]) != shape:
        u = resize_dvf(u, shape)
    return RegistrationResult(
        dvf=u,
        moved=warp(moving, u),
        matrix=None,
        history=history,
        time=time.perf_counter() - start,
        transform="demons",
        model=None,
        stopped_early=stopped,
    )
