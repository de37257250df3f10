r"""Point-based (landmark, fiducial) registration: closed-form least squares, and its error theory.

The lecture lists "point or feature-based (e.g. landmarks, fiducials)" first among the ways to find a
rigid or affine transformation. Given corresponding points :math:`p_i` in the fixed image and
:math:`q_i` in the moving image, the transformation that minimises

.. math:: \sum_i \| A p_i + t - q_i \|^2

has a closed form, no iterations and no image intensities needed:

* **rigid** (:math:`A = R`, a rotation): Kabsch's / Arun's / Umeyama's SVD solution. With centred
  points :math:`\tilde p_i = p_i - \bar p`, :math:`\tilde q_i = q_i - \bar q` and the cross-covariance
  :math:`C = \sum_i \tilde q_i \tilde p_i^\top = U \Sigma V^\top`,
  :math:`R = U \,\mathrm{diag}(1, \ldots, 1, \det(U V^\top))\, V^\top` and :math:`t = \bar q - R \bar p`
  (the last sign stops the SVD from returning a reflection);
* **similarity** (:math:`A = sR`): Umeyama's scale :math:`s = \mathrm{tr}(\Sigma D) / \sum_i \|\tilde p_i\|^2`;
* **affine**: ordinary linear least squares on homogeneous coordinates :math:`(p_i, 1)`.

Conventions (DESIGN.md): points are ``(N, ndim)`` voxel coordinates in tensor axis order, and the
result is regedu's homogeneous ``(ndim+1, ndim+1)`` matrix mapping a **fixed** voxel to the
**moving** voxel, so ``regedu.affine_warp(moving, A)`` is the moving image aligned to the fixed one.
With ``spacing`` (mm per voxel) the fit is done in millimetres, where "rigid" means rigid: with
anisotropic voxels a rotation in mm is *not* a rotation of voxel indices.

Error theory (Fitzpatrick, West & Maurer 1998): fiducials are localised with a random error, the
**fiducial localisation error** (FLE, RMS over fiducials, all axes together). The residual at the
fiducials after the fit is the **fiducial registration error** (FRE); the error at a point of interest
that was *not* used in the fit is the **target registration error** (TRE). For a rigid fit with
independent, isotropic FLE, their expected squares are

.. math:: \langle \mathrm{FRE}^2 \rangle \approx \Big(1 - \frac{n+1}{2N}\Big) \mathrm{FLE}^2, \qquad
          \langle \mathrm{TRE}^2(r) \rangle \approx \frac{\mathrm{FLE}^2}{N}
          \Big(1 + \frac{1}{n} \sum_k \frac{d_k^2}{f_k^2}\Big)

(``n`` spatial dimensions, ``N`` fiducials, :math:`d_k` the distance of the target ``r`` from the
``k``-th principal axis of the fiducial configuration and :math:`f_k` the RMS distance of the fiducials
from that axis; in 2D the only rotation axis is perpendicular to the plane through the centroid). FRE does
not depend on where the target is, TRE does: a small FRE does **not** mean a small TRE.

References:
    Arun, Huang & Blostein (1987). Least-squares fitting of two 3-D point sets. IEEE TPAMI 9(5), 698-700.
    Umeyama (1991). Least-squares estimation of transformation parameters between two point patterns.
    IEEE TPAMI 13(4), 376-380.
    Fitzpatrick, West & Maurer (1998). Predicting error in rigid-body point-based registration.
    IEEE TMI 17(5), 694-702.
    Fitzpatrick (2009). Fiducial registration error and target registration error are uncorrelated.
    Proc. SPIE 7261, 726102.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .._checks import check_affine, check_finite, check_tensor
from ..transforms import apply_affine

POINT_MODELS = ("rigid", "similarity", "affine")


def _points(fn: str, name: str, p: object) -> torch.Tensor:
    p = check_tensor(fn, name, p)
    if p.dim() != 2 or p.shape[-1] not in (2, 3):
        raise ValueError(f"{fn}: {name} must have shape (N, 2) or (N, 3) (one row per point, voxel coordinates in "
                         f"tensor axis order), got shape {tuple(p.shape)}")
    check_finite(fn, name, p)
    return p if p.is_floating_point() else p.float()


def _spacing_matrix(fn: str, spacing: Sequence[float] | None, ndim: int, like: torch.Tensor) -> torch.Tensor | None:
    """``diag(spacing, 1)`` (voxel -> mm), or ``None`` without spacing."""
    if spacing is None:
        return None
    s = torch.as_tensor(spacing, dtype=like.dtype, device=like.device).flatten()
    if s.numel() != ndim or not bool(torch.isfinite(s).all()) or bool((s <= 0).any()):
        raise ValueError(f"{fn}: spacing must be {ndim} positive numbers (mm per voxel along each tensor axis), got {spacing!r}")
    return torch.diag(torch.cat([s, s.new_ones(1)]))


def fit_points(
    fixed_points: torch.Tensor,
    moving_points: torch.Tensor,
    model: str = "rigid",
    spacing: Sequence[float] | None = None,
    allow_reflection: bool = False,
) -> torch.Tensor:
    r"""Closed-form least-squares transformation from corresponding points (Kabsch / Umeyama).

    Finds the matrix ``A`` minimising :math:`\sum_i \|A p_i - q_i\|^2` (see the module docstring for the
    formulas) over rigid, similarity (rigid + one isotropic scale) or affine transformations.

    Args:
        fixed_points: ``(N, ndim)`` points ``p_i`` in fixed-image voxel coordinates (tensor axis order).
        moving_points: ``(N, ndim)`` corresponding points ``q_i`` in moving-image voxel coordinates.
        model: ``"rigid"`` (needs ``N >= 2`` distinct points in 2D, 3 not on one line in 3D),
            ``"similarity"`` (same) or ``"affine"`` (``ndim + 1`` points not on one line / plane).
        spacing: optional voxel size in mm (``ndim`` numbers, tensor axis order): the fit is done in mm,
            so a rigid result is rigid in the world, and the matrix is converted back to voxels,
            :math:`A_{vox} = S^{-1} A_{mm} S` with :math:`S = \mathrm{diag}(spacing, 1)`.
        allow_reflection: rigid/similarity only. ``False`` (default) always returns a proper rotation
            (:math:`\det R = +1`), the best one even if a mirror image would fit better; ``True`` returns
            the best orthogonal matrix, which may be a reflection (:math:`\det R = -1`).

    Returns:
        ``(ndim+1, ndim+1)`` homogeneous matrix, fixed voxel -> moving voxel (regedu's convention:
        ``regedu.affine_warp(moving, A)`` aligns the moving image to the fixed one), in the points' dtype.

    Raises:
        ValueError: mismatched shapes, too few points, or a degenerate configuration (coincident,
            collinear or coplanar points) for which the transformation is not unique.
    """
    fn = "fit_points"
    p = _points(fn, "fixed_points", fixed_points)
    q = _points(fn, "moving_points", moving_points).to(p.dtype)
    if p.shape != q.shape:
        raise ValueError(f"{fn}: fixed_points and moving_points must have the same shape (corresponding points), "
                         f"got {tuple(p.shape)} and {tuple(q.shape)}")
    if model not in POINT_MODELS:
        raise ValueError(f"{fn}: model must be one of {', '.join(repr(m) for m in POINT_MODELS)}, got {model!r}")
    n, N = p.shape[1], p.shape[0]
    S = _spacing_matrix(fn, spacing, n, p)
    if S is not None:
        p, q = p * S.diagonal()[:n], q * S.diagonal()[:n]

    # how many independent directions the fixed points span (their centred matrix's rank)
    p_mean, q_mean = p.mean(0), q.mean(0)
    pc, qc = p - p_mean, q - q_mean
    sv = torch.linalg.svdvals(pc.double()) if N > 1 else p.new_zeros(1)
    scale = float(pc.abs().max()) if N > 1 else 0.0
    rank = int((sv > 1e-6 * max(scale, 1e-12) * max(N, 1)).sum()) if scale > 0 else 0
    need = n if model == "affine" else n - 1
    if N < need + 1 or rank < need:
        what = {"affine": f"{n + 1} points that are not all on one {'line' if n == 2 else 'plane'}",
                "rigid": "2 distinct points" if n == 2 else "3 points that are not all on one line"}
        what["similarity"] = what["rigid"]
        raise ValueError(
            f"{fn}: a {model} transformation in {n}D needs at least {what[model]}; the {N} fixed points given span "
            f"{rank} direction(s), so the transformation is not unique (degenerate configuration: coincident, "
            f"collinear{' or coplanar' if n == 3 else ''} points)"
        )

    if model == "affine":
        X = torch.cat([p, p.new_ones(N, 1)], 1)                 # (N, n+1) homogeneous fixed points
        sol = torch.linalg.lstsq(X.double(), q.double()).solution.to(p.dtype)  # (n+1, n): q = X @ sol
        A = torch.eye(n + 1, dtype=p.dtype, device=p.device)
        A[:n, :] = sol.T
    else:
        C = (qc.T @ pc).double()                                 # cross-covariance, (n, n)
        U, sigma, Vh = torch.linalg.svd(C)
        d = torch.ones(n, dtype=C.dtype, device=C.device)
        if not allow_reflection:
            d[-1] = torch.sign(torch.linalg.det(U @ Vh))
            if d[-1] == 0:
                d[-1] = 1.0
        R = U @ torch.diag(d) @ Vh
        s = 1.0
        if model == "similarity":
            s = float((sigma * d).sum() / pc.double().pow(2).sum())
        A = torch.eye(n + 1, dtype=p.dtype, device=p.device)
        A[:n, :n] = (s * R).to(p.dtype)
        A[:n, n] = q_mean - A[:n, :n] @ p_mean
    if S is not None:
        A = torch.linalg.inv(S) @ A @ S
    return A


def _residuals(fn: str, fixed_points, moving_points, transform, spacing) -> torch.Tensor:
    p = _points(fn, "fixed_points", fixed_points)
    q = _points(fn, "moving_points", moving_points).to(p.dtype)
    if p.shape != q.shape:
        raise ValueError(f"{fn}: fixed_points and moving_points must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}")
    A = check_affine(fn, "transform", transform, ndim=p.shape[1])
    if A.dim() != 2:
        raise ValueError(f"{fn}: transform must be one matrix ({p.shape[1] + 1}, {p.shape[1] + 1}), got shape {tuple(A.shape)}")
    diff = apply_affine(A.to(p.dtype), p) - q
    S = _spacing_matrix(fn, spacing, p.shape[1], diff)
    return diff if S is None else diff * S.diagonal()[:-1]


def fiducial_registration_error(
    fixed_points: torch.Tensor,
    moving_points: torch.Tensor,
    transform: torch.Tensor,
    spacing: Sequence[float] | None = None,
) -> torch.Tensor:
    r"""Fiducial registration error: the RMS residual :math:`\sqrt{\frac1N \sum_i \|A p_i - q_i\|^2}`.

    ``fixed_points``/``moving_points`` ``(N, ndim)`` are the fiducials *used to compute* ``transform``
    (``(ndim+1, ndim+1)``, fixed voxel -> moving voxel). Voxels, or mm with ``spacing``. A scalar tensor.
    This is the root mean square, as in Fitzpatrick's theory (the module docstring); for the error at
    other points use :func:`regedu.target_registration_error` (the mean distance) or :func:`target_errors`.
    """
    r = _residuals("fiducial_registration_error", fixed_points, moving_points, transform, spacing)
    return r.pow(2).sum(-1).mean().sqrt()


def target_errors(
    fixed_points: torch.Tensor,
    moving_points: torch.Tensor,
    transform: torch.Tensor,
    spacing: Sequence[float] | None = None,
) -> torch.Tensor:
    r"""Per-point distances :math:`\|A r_j - s_j\|` ``(N,)`` between mapped fixed targets and their true
    moving positions (voxels, or mm with ``spacing``): the TRE at each target, not averaged."""
    r = _residuals("target_errors", fixed_points, moving_points, transform, spacing)
    return r.pow(2).sum(-1).sqrt()


def expected_fre(fle: float, n_fiducials: int, ndim: int) -> float:
    r"""Expected RMS FRE of a rigid fit, :math:`\sqrt{(1 - \frac{n+1}{2N})}\,\mathrm{FLE}` (Fitzpatrick et al. 1998).

    ``fle`` is the RMS fiducial localisation error (all axes together, isotropic, independent), in any unit.
    """
    if ndim not in (2, 3):
        raise ValueError(f"expected_fre: ndim must be 2 or 3, got {ndim!r}")
    if n_fiducials < ndim:
        raise ValueError(f"expected_fre: a rigid fit in {ndim}D needs at least {ndim} fiducials for the formula, got {n_fiducials}")
    if fle < 0:
        raise ValueError(f"expected_fre: fle must be >= 0, got {fle}")
    return float(fle * (1 - (ndim + 1) / (2 * n_fiducials)) ** 0.5)


def expected_tre(fiducials: torch.Tensor, targets: torch.Tensor, fle: float, spacing: Sequence[float] | None = None) -> torch.Tensor:
    r"""Expected RMS TRE of a rigid fit at each target (Fitzpatrick, West & Maurer 1998).

    .. math:: \mathrm{TRE}(r) \approx \frac{\mathrm{FLE}}{\sqrt N}\Big(1 + \frac1n \sum_k \frac{d_k^2}{f_k^2}\Big)^{1/2}

    with ``N`` fiducials, ``n`` dimensions, :math:`d_k` the distance of ``r`` from the ``k``-th principal
    axis of the (centred) fiducial configuration and :math:`f_k` the RMS distance of the fiducials from that
    axis. In 2D there is one rotation axis (perpendicular to the plane, through the centroid):
    :math:`d` is the distance from the centroid and :math:`f` the fiducials' RMS distance from it.

    Args:
        fiducials: ``(N, ndim)`` fiducial positions (voxels, tensor axis order).
        targets: ``(M, ndim)`` targets.
        fle: RMS fiducial localisation error (all axes together), in mm if ``spacing`` is given, else voxels.
        spacing: optional voxel size in mm: positions are converted to mm first.

    Returns:
        ``(M,)`` expected RMS TRE, in the unit of ``fle``.
    """
    fn = "expected_tre"
    f = _points(fn, "fiducials", fiducials).double()
    t = _points(fn, "targets", targets).double()
    n = f.shape[1]
    if t.shape[1] != n:
        raise ValueError(f"{fn}: targets must be {n}D like the fiducials, got shape {tuple(t.shape)}")
    if fle < 0:
        raise ValueError(f"{fn}: fle must be >= 0, got {fle}")
    S = _spacing_matrix(fn, spacing, n, f)
    if S is not None:
        f, t = f * S.diagonal()[:n], t * S.diagonal()[:n]
    centre = f.mean(0)
    fc, tc = f - centre, t - centre
    N = f.shape[0]
    if n == 2:
        f2 = fc.pow(2).sum(-1).mean()
        if f2 <= 0:
            raise ValueError(f"{fn}: the fiducials coincide; a rigid fit is not defined")
        ratio = tc.pow(2).sum(-1) / f2 / 2
    else:
        _, _, Vh = torch.linalg.svd(fc, full_matrices=True)
        fa, ta = fc @ Vh.T, tc @ Vh.T                            # coordinates along the principal axes
        ratio = torch.zeros(t.shape[0], dtype=f.dtype)
        for k in range(3):
            others = [j for j in range(3) if j != k]
            fk2 = fa[:, others].pow(2).sum(-1).mean()             # RMS^2 distance of fiducials from axis k
            if fk2 <= 0:
                raise ValueError(f"{fn}: the fiducials are collinear; a rigid fit is not defined")
            ratio = ratio + ta[:, others].pow(2).sum(-1) / fk2 / 3
    return (fle**2 / N * (1 + ratio)).sqrt().to(targets.dtype if targets.is_floating_point() else torch.float32)


__all__ = ["POINT_MODELS", "fit_points", "fiducial_registration_error", "target_errors", "expected_fre", "expected_tre"]
