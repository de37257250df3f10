r"""Initialisation of iterative registration: centre of mass, principal axes (moments), exhaustive search.

Gradient descent only finds the optimum whose basin it starts in: the **capture range** of an
iterative registration is the set of initial misalignments from which it still converges. Classical
registration packages therefore start from a cheap, global guess:

* **centre of mass** (first moments): translate so that the intensity-weighted centres coincide,
  :math:`c = \sum_x I(x)\,x / \sum_x I(x)`;
* **principal axes** (second moments): also rotate so that the eigenvectors of the intensity-weighted
  covariance :math:`\Sigma = \sum_x I(x)(x - c)(x - c)^\top / \sum_x I(x)` coincide (Alpert et al. 1990).
  An eigenvector's sign is arbitrary, so every sign choice that is a proper rotation is a candidate;
  the similarity measure picks one;
* **coarse exhaustive search**: evaluate the similarity on a grid of rotations (and translations) on
  downsampled images and keep the best: slow in many dimensions, but global.

Each function returns regedu's homogeneous matrix (fixed voxel -> moving voxel, DESIGN.md), ready to be
passed as ``init=`` to :func:`regedu.register`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from .._checks import check_image, check_same_spatial
from ..similarity import LOSSES, get_loss
from ..spatial_transformer import affine_warp, resize
from ..transforms import rotation_matrix, translation_matrix
from .models import rescale_matrix

Similarity = str | Callable[..., torch.Tensor]


def _weights(fn: str, name: str, image: torch.Tensor) -> torch.Tensor:
    """Non-negative voxel weights ``(B, *spatial)`` (channels summed); raises for an empty image."""
    w = image.clamp_min(0).sum(1)
    total = w.flatten(1).sum(1)
    if bool((total <= 0).any()):
        raise ValueError(f"{fn}: {name} has no positive intensity (all voxels <= 0); its centre of mass is undefined")
    return w


def centre_of_mass(image: torch.Tensor) -> torch.Tensor:
    r"""Intensity-weighted centre :math:`c = \sum_x I(x)\, x / \sum_x I(x)` in voxels (tensor axis order).

    ``image`` ``(B, C, *spatial)``; negative intensities count as 0. Returns ``(B, ndim)``.
    """
    image = check_image("centre_of_mass", "image", image)
    if not image.is_floating_point():
        image = image.float()
    w = _weights("centre_of_mass", "image", image)
    n = image.dim() - 2
    axes = torch.meshgrid(*[torch.arange(s, dtype=w.dtype, device=w.device) for s in image.shape[2:]], indexing="ij")
    total = w.flatten(1).sum(1)
    return torch.stack([(w * axes[k]).flatten(1).sum(1) / total for k in range(n)], dim=1)


def principal_axes(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Centre of mass, principal axes and variances of the intensity distribution.

    Returns ``(centre (B, n), axes (B, n, n), variances (B, n))``: column ``k`` of ``axes`` is the unit
    eigenvector of the weighted covariance :math:`\Sigma` with the ``k``-th largest variance (in voxels^2).
    """
    image = check_image("principal_axes", "image", image)
    if not image.is_floating_point():
        image = image.float()
    w = _weights("principal_axes", "image", image).double()
    c = centre_of_mass(image).double()
    n = image.dim() - 2
    axes = torch.meshgrid(*[torch.arange(s, dtype=w.dtype, device=w.device) for s in image.shape[2:]], indexing="ij")
    total = w.flatten(1).sum(1)
    cov = torch.empty(image.shape[0], n, n, dtype=w.dtype, device=w.device)
    for i in range(n):
        for j in range(i, n):
            d = (axes[i] - c[:, i].reshape(-1, *[1] * n)) * (axes[j] - c[:, j].reshape(-1, *[1] * n))
            cov[:, i, j] = cov[:, j, i] = (w * d).flatten(1).sum(1) / total
    var, vec = torch.linalg.eigh(cov)                                 # ascending
    return c.to(image.dtype), vec.flip(-1).to(image.dtype), var.flip(-1).to(image.dtype)


def _homogeneous(L: torch.Tensor, c_fixed: torch.Tensor, c_moving: torch.Tensor) -> torch.Tensor:
    """``x -> L (x - c_fixed) + c_moving`` as ``(B, n+1, n+1)``."""
    B, n = c_fixed.shape
    A = torch.eye(n + 1, dtype=L.dtype, device=L.device).repeat(B, 1, 1)
    A[:, :n, :n] = L
    A[:, :n, n] = c_moving - (L @ c_fixed.unsqueeze(-1)).squeeze(-1)
    return A


def _score(fn: str, similarity: Similarity, fixed: torch.Tensor, moved: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Loss per candidate ``(K,)`` (lower is better) of ``moved`` ``(K, C, *S)`` against ``fixed`` ``(1, C, *S)``."""
    if isinstance(similarity, str):
        if similarity.lower() not in LOSSES:
            raise ValueError(f"{fn}: similarity must be one of {', '.join(repr(k) for k in LOSSES)} or a callable "
                             f"loss(fixed, moved, mask=None), got {similarity!r}")
        loss = get_loss(similarity.lower())
        if similarity.lower() != "ssd":
            try:
                return loss(fixed.expand_as(moved), moved, mask, reduction="none").reshape(-1)
            except TypeError:
                pass
    elif not callable(similarity):
        raise TypeError(f"{fn}: similarity must be a name or a callable, got {type(similarity).__name__}")
    else:
        loss = similarity
    return torch.stack([torch.as_tensor(loss(fixed, moved[k:k + 1], mask)).reshape(()) for k in range(moved.shape[0])])


def _pair(fn: str, fixed: torch.Tensor, moving: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    fixed = check_image(fn, "fixed", fixed)
    moving = check_image(fn, "moving", moving)
    if fixed.dim() != moving.dim():
        check_same_spatial(fn, "fixed", fixed, "moving", moving)
    if fixed.shape[0] != 1 or moving.shape[0] != 1:
        raise ValueError(f"{fn}: give one image pair (batch size 1), got fixed {tuple(fixed.shape)} and moving {tuple(moving.shape)}")
    if fixed.shape[1] != moving.shape[1]:
        raise ValueError(f"{fn}: fixed and moving must have the same number of channels, got {fixed.shape[1]} and {moving.shape[1]}")
    return (fixed if fixed.is_floating_point() else fixed.float()), (moving if moving.is_floating_point() else moving.float())


def moments_initialisation(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    rotation: bool = True,
    similarity: Similarity = "ncc",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Initial rigid matrix from image moments: centres of mass, and (``rotation=True``) principal axes.

    Without rotation: :math:`A x = x + c_M - c_F` (translation only). With rotation:
    :math:`A x = R (x - c_F) + c_M` with :math:`R = E_M D E_F^\top` (``E`` the principal axes, ``D`` a
    diagonal of signs with :math:`\det R = +1`); the sign choice with the lowest ``similarity`` loss wins
    (``"mse"``, ``"ncc"``, ``"lncc"``, ``"mi"`` or a callable ``loss(fixed, moved, mask=None)``).
    Principal axes are unreliable when two variances are nearly equal (a round object): then use
    ``rotation=False`` or :func:`exhaustive_search`.

    Args:
        fixed, moving: one image each, ``(1, C, *spatial)`` (2D or 3D; the sizes may differ).
        mask: optional fixed-image mask for the similarity.

    Returns:
        ``(1, n+1, n+1)`` matrix, fixed voxel -> moving voxel (pass it as ``init=`` to ``regedu.register``).
    """
    fn = "moments_initialisation"
    fixed, moving = _pair(fn, fixed, moving)
    n = fixed.dim() - 2
    c_f, e_f, _ = principal_axes(fixed)
    c_m, e_m, _ = principal_axes(moving)
    eye = torch.eye(n, dtype=fixed.dtype, device=fixed.device).unsqueeze(0)
    if not rotation:
        return _homogeneous(eye, c_f, c_m)
    candidates = []
    for bits in range(2 ** n):
        d = torch.tensor([-1.0 if bits >> k & 1 else 1.0 for k in range(n)], dtype=fixed.dtype, device=fixed.device)
        R = e_m @ torch.diag(d) @ e_f.transpose(-1, -2)
        if float(torch.linalg.det(R[0])) > 0:
            candidates.append(_homogeneous(R, c_f, c_m))
    A = torch.cat(candidates)
    moved = affine_warp(moving, A, shape=fixed.shape[2:], padding_mode="zeros")
    best = int(torch.argmin(_score(fn, similarity, fixed, moved, mask)))
    return A[best:best + 1]


def exhaustive_search(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    angles: Sequence[float] | torch.Tensor,
    translations: Sequence[Sequence[float]] | torch.Tensor | None = None,
    similarity: Similarity = "ncc",
    size: int | None = 32,
    mask: torch.Tensor | None = None,
    chunk: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Coarse exhaustive search over rigid transformations about the centres of mass.

    Every candidate is :math:`A x = R(\alpha)(x - c_F) + c_M + t`: the centres of mass are aligned
    (first moments) and the search is over the rotation :math:`\alpha` and an extra translation ``t``.
    The similarity is evaluated on copies resized so that the longest axis has ``size`` voxels (the
    search is coarse by design; ``None`` keeps the full size).

    Args:
        fixed, moving: one image each, ``(1, C, *spatial)`` with the same spatial size.
        angles: 2D: ``K`` angles in radians; 3D: ``(K, 3)`` Euler angles (see
            :func:`regedu.transforms.rotation_matrix_3d`).
        translations: ``(T, ndim)`` extra translations in full-resolution voxels (default: none).
        similarity: loss name or callable, as in :func:`regedu.register` (lower is better).
        size: longest axis of the images the search is evaluated on.
        mask: optional fixed-image mask (full resolution).
        chunk: candidates warped at once (memory).

    Returns:
        ``(best, losses)``: the best matrix ``(1, n+1, n+1)`` in full-resolution voxels, and the loss of
        every candidate, ``(K, T)`` (rotation x translation).
    """
    fn = "exhaustive_search"
    fixed, moving = _pair(fn, fixed, moving)
    check_same_spatial(fn, "fixed", fixed, "moving", moving)
    n = fixed.dim() - 2
    a = torch.as_tensor(angles, dtype=fixed.dtype, device=fixed.device)
    if n == 2:
        a = a.reshape(-1)
    elif a.dim() != 2 or a.shape[-1] != 3:
        raise ValueError(f"{fn}: in 3D angles must be (K, 3) Euler angles, got shape {tuple(a.shape)}")
    if a.numel() == 0:
        raise ValueError(f"{fn}: angles must hold at least one angle")
    t = (torch.zeros(1, n, dtype=fixed.dtype, device=fixed.device) if translations is None
         else torch.as_tensor(translations, dtype=fixed.dtype, device=fixed.device))
    if t.dim() != 2 or t.shape[-1] != n or t.shape[0] == 0:
        raise ValueError(f"{fn}: translations must have shape (T, {n}) (voxels per tensor axis), got shape {tuple(t.shape)}")
    if size is not None and (not isinstance(size, int) or size < 8):
        raise ValueError(f"{fn}: size must be an integer >= 8 or None, got {size!r}")
    full = tuple(fixed.shape[2:])
    c_f, c_m = centre_of_mass(fixed), centre_of_mass(moving)
    R = rotation_matrix(a, n)[..., :n, :n]                               # (K, n, n)
    K = R.shape[0]
    A = _homogeneous(R, c_f.expand(K, n), c_m.expand(K, n))             # (K, n+1, n+1)
    A = (translation_matrix(t).unsqueeze(0) @ A.unsqueeze(1)).reshape(-1, n + 1, n + 1)  # (K*T, ...)
    small = full if size is None else tuple(max(2, round(s * size / max(full))) for s in full)
    f_s = resize(fixed, small) if small != full else fixed
    m_s = resize(moving, small) if small != full else moving
    mask_s = None if mask is None else (resize(mask.float(), small) if small != full else mask.float())
    A_s = rescale_matrix(A, full, small)
    losses = []
    for k in range(0, A_s.shape[0], chunk):
        moved = affine_warp(m_s, A_s[k:k + chunk], padding_mode="zeros")
        losses.append(_score(fn, similarity, f_s, moved, mask_s))
    losses_t = torch.cat(losses)
    best = int(torch.argmin(losses_t))
    return A[best:best + 1], losses_t.reshape(K, t.shape[0])


__all__ = ["centre_of_mass", "principal_axes", "moments_initialisation", "exhaustive_search"]
