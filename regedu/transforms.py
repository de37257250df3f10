r"""Homogeneous transformation matrices: rigid and affine transformations.

The lecture writes a rigid transformation as :math:`x' = R x + t` and an affine one as
:math:`x' = A x + t`. We store both as one homogeneous matrix

.. math::  \begin{pmatrix} x' \\ 1 \end{pmatrix} = \begin{bmatrix} A & t \\ 0 & 1 \end{bmatrix}
           \begin{pmatrix} x \\ 1 \end{pmatrix}

of shape ``(ndim+1, ndim+1)`` (or ``(B, ndim+1, ndim+1)`` for a batch).

Conventions (see DESIGN.md):

* Coordinates are **voxel indices in tensor axis order**: ``(i, j)`` = (row, column) in 2D,
  ``(i, j, k)`` = (depth, row, column) in 3D.
* A matrix maps a **fixed-image** voxel ``x`` to the **moving-image** voxel ``x'`` that is
  sampled there (pull-back warping): ``moved(x) = moving(A x)``.
* Rotations and scalings are about the image centre when ``center`` is given (the functions
  that build registration transforms default to the centre of the image).
* :func:`affine_to_theta` and :func:`theta_to_affine` convert to and from PyTorch's normalised
  ``theta`` (as used by ``F.affine_grid``); they live in :mod:`regedu.warping`, next to the one
  voxel <-> normalised coordinate rule, and are re-exported here.

Every function accepts Python numbers or tensors; tensor parameters with a leading batch
dimension give batched matrices, and gradients flow through every function.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ._checks import check_affine, check_tensor

Number = float | int
ParamLike = torch.Tensor | Sequence[Number] | Number


def _as_tensor(x: ParamLike, like: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x if x.is_floating_point() else x.float()
    dtype = like.dtype if like is not None else torch.get_default_dtype()
    device = like.device if like is not None else None
    return torch.as_tensor(x, dtype=dtype, device=device)


def _vector(fn: str, name: str, x: ParamLike, n: int) -> torch.Tensor:
    """``x`` as a tensor of shape ``(..., n)``; a scalar is repeated ``n`` times."""
    t = _as_tensor(x)
    if t.dim() == 0:
        t = t.repeat(n)
    if t.shape[-1] != n:
        raise ValueError(f"{fn}: {name} must have {n} entries (one per spatial axis), got shape {tuple(t.shape)}")
    return t


def _homogeneous(linear: torch.Tensor, translation: torch.Tensor | None = None) -> torch.Tensor:
    """Assemble ``[[linear, translation], [0, 1]]`` with broadcasting over leading dims."""
    n = linear.shape[-1]
    batch = linear.shape[:-2]
    if translation is None:
        translation = torch.zeros(*batch, n, dtype=linear.dtype, device=linear.device)
    batch = torch.broadcast_shapes(batch, translation.shape[:-1])
    top = torch.cat([linear.expand(*batch, n, n), translation.expand(*batch, n).unsqueeze(-1)], dim=-1)
    bottom = torch.zeros(*batch, 1, n + 1, dtype=linear.dtype, device=linear.device)
    bottom[..., 0, n] = 1
    return torch.cat([top, bottom], dim=-2)


def identity(ndim: int, batch: int | None = None, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """The identity transform, ``(ndim+1, ndim+1)`` or ``(batch, ndim+1, ndim+1)``."""
    if ndim not in (2, 3):
        raise ValueError(f"identity: ndim must be 2 or 3, got {ndim}")
    eye = torch.eye(ndim + 1, dtype=dtype or torch.get_default_dtype(), device=device)
    return eye if batch is None else eye.expand(batch, -1, -1).clone()


def translation_matrix(t: ParamLike) -> torch.Tensor:
    """Translation by ``t`` voxels, shape ``(..., ndim)`` -> ``(..., ndim+1, ndim+1)``."""
    t = _as_tensor(t)
    if t.dim() == 0 or t.shape[-1] not in (2, 3):
        raise ValueError(f"translation_matrix: t must have 2 or 3 entries (one per spatial axis), got shape {tuple(t.shape)}")
    eye = torch.eye(t.shape[-1], dtype=t.dtype, device=t.device)
    return _homogeneous(eye.expand(*t.shape[:-1], -1, -1), t)


def rotation_matrix_2d(angle: ParamLike) -> torch.Tensor:
    r"""2D rotation by ``angle`` radians, ``(...,)`` -> ``(..., 3, 3)``.

    .. math:: R = \begin{bmatrix} \cos\phi & -\sin\phi \\ \sin\phi & \cos\phi \end{bmatrix}

    acting on ``(i, j)`` = (row, column) voxel coordinates. Used for pull-back warping about the
    image centre, a positive angle makes the *moved* image appear rotated **clockwise** on screen
    (rows point down): for 90 degrees it equals ``torch.rot90(image, -1, dims=(-2, -1))``.
    """
    a = _as_tensor(angle)
    c, s = torch.cos(a), torch.sin(a)
    R = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    return _homogeneous(R)


def _axis_rotation(a: torch.Tensor, axis: int) -> torch.Tensor:
    """Right-handed rotation by ``a`` about tensor axis ``axis``: it turns axis ``p = axis + 1`` towards
    axis ``q = axis + 2`` (cyclically, mod 3), as the right-hand rule turns y towards z about x."""
    c, s = torch.cos(a), torch.sin(a)
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    p, q = (axis + 1) % 3, (axis + 2) % 3
    rows = [[one, zero, zero], [zero, one, zero], [zero, zero, one]]
    rows[p][p], rows[p][q], rows[q][p], rows[q][q] = c, -s, s, c
    return torch.stack([torch.stack(r, -1) for r in rows], -2)


def rotation_matrix_3d(angles: ParamLike) -> torch.Tensor:
    r"""3D rotation from Euler angles ``(a0, a1, a2)`` in radians about tensor axes 0, 1, 2.

    ``R = R_2(a2) @ R_1(a1) @ R_0(a0)``: first about axis 0, then axis 1, then axis 2 (fixed axes).
    Shape ``(..., 3)`` -> ``(..., 4, 4)``.

    **Handedness.** Every elementary rotation is **right-handed** about its tensor axis, treating the
    voxel coordinates ``(i, j, k)`` (tensor axes 0, 1, 2) as ``(x, y, z)``: ``R_0`` turns axis 1 towards
    axis 2, ``R_1`` turns axis 2 towards axis 0, ``R_2`` turns axis 0 towards axis 1, e.g.

    .. math:: R_1(a) = egin{bmatrix} \cos a & 0 & \sin a \ 0 & 1 & 0 \ -\sin a & 0 & \cos a \end{bmatrix}.

    This is SciPy's and MONAI's convention: the linear part equals
    ``scipy.spatial.transform.Rotation.from_euler("xyz", [a0, a1, a2]).as_matrix()`` (lower-case
    ``"xyz"``: extrinsic rotations about fixed axes x, y, z = tensor axes 0, 1, 2). Two things to keep
    apart: the matrix rotates *points* (it maps fixed voxels to moving voxels), so under pull-back
    warping the *image content* turns by the inverse rotation (as in 2D, see
    :func:`rotation_matrix_2d`); and tensor axes ``(D, H, W)`` are not the scanner's ``(x, y, z)``:
    convert with the NIfTI affine at the I/O boundary. (Before regedu 0.2, ``R_1`` turned the other way.)
    """
    a = _vector("rotation_matrix_3d", "angles", angles, 3)
    R = _axis_rotation(a[..., 2], 2) @ _axis_rotation(a[..., 1], 1) @ _axis_rotation(a[..., 0], 0)
    return _homogeneous(R)


def rotation_matrix(angles: ParamLike, ndim: int) -> torch.Tensor:
    """Rotation for ``ndim`` = 2 (one angle) or 3 (three Euler angles)."""
    if ndim == 2:
        a = _as_tensor(angles)
        if a.dim() > 0 and a.shape[-1] == 1:
            a = a[..., 0]
        return rotation_matrix_2d(a)
    if ndim == 3:
        return rotation_matrix_3d(angles)
    raise ValueError(f"rotation_matrix: ndim must be 2 or 3, got {ndim}")


def scaling_matrix(s: ParamLike) -> torch.Tensor:
    r"""Scaling :math:`S = \mathrm{diag}(s_0, \ldots)`, ``(..., ndim)`` -> ``(..., ndim+1, ndim+1)``."""
    s = _as_tensor(s)
    if s.dim() == 0 or s.shape[-1] not in (2, 3):
        raise ValueError(f"scaling_matrix: s must have 2 or 3 entries (one per spatial axis), got shape {tuple(s.shape)}")
    return _homogeneous(torch.diag_embed(s))


def shear_matrix(h: ParamLike) -> torch.Tensor:
    r"""Shear matrix.

    2D, ``h = (h0, h1)``: the lecture's :math:`H = \begin{bmatrix} 1 & h_0 \\ h_1 & 1 \end{bmatrix}`.
    3D, ``h = (h01, h02, h12, h10, h20, h21)``: ones on the diagonal and ``h_pq`` at row p,
    column q. Shape ``(..., 2)`` or ``(..., 6)`` -> ``(..., ndim+1, ndim+1)``.
    """
    h = _as_tensor(h)
    if h.dim() == 0 or h.shape[-1] not in (2, 6):
        raise ValueError(f"shear_matrix: h must have 2 entries (2D) or 6 entries (3D), got shape {tuple(h.shape)}")
    ndim = 2 if h.shape[-1] == 2 else 3
    M = torch.eye(ndim, dtype=h.dtype, device=h.device).expand(*h.shape[:-1], ndim, ndim).clone()
    pos = [(0, 1), (1, 0)] if ndim == 2 else [(0, 1), (0, 2), (1, 2), (1, 0), (2, 0), (2, 1)]
    for k, (p, q) in enumerate(pos):
        M[..., p, q] = h[..., k]
    return _homogeneous(M)


def about_center(A: torch.Tensor, center: ParamLike) -> torch.Tensor:
    """Conjugate ``A`` so that it acts about ``center``: ``T(c) @ A @ T(-c)``."""
    c = _as_tensor(center, like=A)
    return translation_matrix(c) @ A @ translation_matrix(-c)


def image_center(shape: Sequence[int]) -> torch.Tensor:
    """The centre voxel coordinate ``(S_k - 1) / 2`` of a spatial shape."""
    return torch.tensor([(s - 1) / 2 for s in shape], dtype=torch.get_default_dtype())


def compose_affines(*matrices: torch.Tensor) -> torch.Tensor:
    """Matrix product ``M_1 @ M_2 @ ... @ M_n``.

    Applied to a point, the **last** matrix acts first. With pull-back warping,
    ``affine_warp(affine_warp(m, A), B) == affine_warp(m, compose_affines(A, B))``.
    """
    if not matrices:
        raise ValueError("compose_affines: give at least one matrix")
    out = check_affine("compose_affines", "matrices[0]", matrices[0])
    for k, M in enumerate(matrices[1:], start=1):
        M = check_affine("compose_affines", f"matrices[{k}]", M)
        if M.shape[-1] != out.shape[-1]:
            raise ValueError(
                f"compose_affines: matrices[{k}] is {tuple(M.shape[-2:])} but matrices[0] is {tuple(out.shape[-2:])}; "
                "all must be for the same number of dimensions"
            )
        out = out @ M
    return out


def invert_affine(A: torch.Tensor) -> torch.Tensor:
    """Inverse transform (the matrix inverse)."""
    A = check_affine("invert_affine", "A", A)
    return torch.linalg.inv(A)


def apply_affine(A: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Map points ``(..., N, ndim)`` (or ``(N, ndim)``) by ``A``: ``x' = A[:n,:n] x + A[:n, n]``.

    A batched ``A`` ``(B, n+1, n+1)`` maps points ``(B, N, ndim)``.
    """
    A = check_affine("apply_affine", "A", A)
    points = check_tensor("apply_affine", "points", points)
    n = A.shape[-1] - 1
    if points.shape[-1] != n:
        raise ValueError(f"apply_affine: points must have {n} coordinates in the last dimension, got shape {tuple(points.shape)}")
    return points @ A[..., :n, :n].transpose(-1, -2) + A[..., None, :n, n]


# --------------------------------------------------------------------------------------------
# parameter vectors <-> matrices
# --------------------------------------------------------------------------------------------

def n_rigid_params(ndim: int) -> int:
    """Number of rigid parameters: 3 in 2D (angle, 2 translations), 6 in 3D."""
    return {2: 3, 3: 6}[ndim]


def n_affine_params(ndim: int) -> int:
    """Number of affine parameters: 6 in 2D, 12 in 3D (see :func:`affine_matrix`)."""
    return {2: 6, 3: 12}[ndim]


def _ndim_from(fn: str, params: torch.Tensor, counts: dict[int, int]) -> int:
    for ndim, n in counts.items():
        if params.shape[-1] == n:
            return ndim
    raise ValueError(
        f"{fn}: params must have " + " or ".join(f"{n} entries ({d}D)" for d, n in counts.items())
        + f" in the last dimension, got shape {tuple(params.shape)}"
    )


def rigid_matrix(params: ParamLike, center: ParamLike | None = None) -> torch.Tensor:
    r"""Rigid matrix from ``params``: 2D ``(angle, t0, t1)``, 3D ``(a0, a1, a2, t0, t1, t2)``.

    :math:`x' = R (x - c) + c + t`: rotation about ``center`` (default the origin), then translation.
    """
    p = _as_tensor(params)
    if p.dim() == 0:
        raise ValueError("rigid_matrix: params must be a vector, got a scalar")
    ndim = _ndim_from("rigid_matrix", p, {2: 3, 3: 6})
    na = 1 if ndim == 2 else 3
    R = rotation_matrix(p[..., :na], ndim)
    if center is not None:
        R = about_center(R, center)
    return translation_matrix(p[..., na:]) @ R


def rigid_params(A: torch.Tensor, center: ParamLike | None = None) -> torch.Tensor:
    """Inverse of :func:`rigid_matrix` (``A`` must be rigid: its linear part a rotation)."""
    A = check_affine("rigid_params", "A", A)
    n = A.shape[-1] - 1
    R = A[..., :n, :n]
    t = _translation_about(A, center)
    angles = torch.atan2(R[..., 1, 0], R[..., 0, 0]).unsqueeze(-1) if n == 2 else _euler_angles(R)
    return torch.cat([angles, t], dim=-1)


def _translation_about(A: torch.Tensor, center: ParamLike | None) -> torch.Tensor:
    """Translation ``t`` of ``x' = L (x - c) + c + t`` given ``A``: ``t = A_t - c + L c``."""
    n = A.shape[-1] - 1
    t = A[..., :n, n]
    if center is None:
        return t
    c = _as_tensor(center, like=A)
    return t - c + (A[..., :n, :n] @ c.unsqueeze(-1)).squeeze(-1)


def _euler_angles(R: torch.Tensor) -> torch.Tensor:
    """Euler angles ``(a0, a1, a2)`` with ``R = R_2(a2) R_1(a1) R_0(a0)`` (see :func:`rotation_matrix_3d`).

    Multiplying out gives ``R[2] = (-sin a1, cos a1 sin a0, cos a1 cos a0)`` and
    ``R[:2, 0] = (cos a2 cos a1, sin a2 cos a1)``; valid for ``|a1| < pi/2``.
    """
    a1 = -torch.asin(torch.clamp(R[..., 2, 0], -1.0, 1.0))
    a0 = torch.atan2(R[..., 2, 1], R[..., 2, 2])
    a2 = torch.atan2(R[..., 1, 0], R[..., 0, 0])
    return torch.stack([a0, a1, a2], dim=-1)


def affine_matrix(params: ParamLike, center: ParamLike | None = None) -> torch.Tensor:
    r"""Affine matrix from a parameter vector.

    2D ``params = (angle, s0, s1, shear, t0, t1)`` (6 entries);
    3D ``params = (a0, a1, a2, s0, s1, s2, h01, h02, h12, t0, t1, t2)`` (12 entries).

    :math:`x' = R\,H\,S\,(x - c) + c + t`, with ``R`` a rotation, ``H`` an upper-triangular
    shear (the lecture's :math:`H` with :math:`h_y = 0`, which keeps the parameterisation unique),
    ``S = diag(s)`` and ``c = center`` (default the origin). Identity: angles 0, scales 1, shears 0,
    translation 0. :func:`affine_params` is the inverse.
    """
    p = _as_tensor(params)
    if p.dim() == 0:
        raise ValueError("affine_matrix: params must be a vector, got a scalar")
    ndim = _ndim_from("affine_matrix", p, {2: 6, 3: 12})
    if ndim == 2:
        R = rotation_matrix_2d(p[..., 0])
        S = scaling_matrix(p[..., 1:3])
        H = shear_matrix(torch.stack([p[..., 3], torch.zeros_like(p[..., 3])], -1))
        t = p[..., 4:6]
    else:
        R = rotation_matrix_3d(p[..., 0:3])
        S = scaling_matrix(p[..., 3:6])
        z = torch.zeros_like(p[..., 6:9])
        H = shear_matrix(torch.cat([p[..., 6:9], z], -1))
        t = p[..., 9:12]
    L = R @ H @ S
    if center is not None:
        L = about_center(L, center)
    return translation_matrix(t) @ L


def affine_params(A: torch.Tensor, center: ParamLike | None = None) -> torch.Tensor:
    """Inverse of :func:`affine_matrix`: decompose ``A`` into rotation, scales, shears, translation.

    Uses the QR decomposition of the linear part, ``L = R (H S)`` with ``H S`` upper triangular
    and positive diagonal. Requires ``det(L) > 0`` (no reflection).
    """
    A = check_affine("affine_params", "A", A)
    n = A.shape[-1] - 1
    t_full = _translation_about(A, center)
    L = A[..., :n, :n]
    if bool((torch.linalg.det(L) <= 0).any()):
        raise ValueError("affine_params: the linear part of A must have a positive determinant (no reflection)")
    Q, U = torch.linalg.qr(L)
    # make U's diagonal positive
    sign = torch.sign(torch.diagonal(U, dim1=-2, dim2=-1))
    Q = Q * sign.unsqueeze(-2)
    U = U * sign.unsqueeze(-1)
    scales = torch.diagonal(U, dim1=-2, dim2=-1)
    HS = U / scales.unsqueeze(-2)  # H = U S^-1 (unit diagonal)
    if n == 2:
        angle = torch.atan2(Q[..., 1, 0], Q[..., 0, 0]).unsqueeze(-1)
        shear = HS[..., 0, 1].unsqueeze(-1)
        return torch.cat([angle, scales, shear, t_full], -1)
    angles = _euler_angles(Q)
    shear = torch.stack([HS[..., 0, 1], HS[..., 0, 2], HS[..., 1, 2]], -1)
    return torch.cat([angles, scales, shear, t_full], -1)


# --------------------------------------------------------------------------------------------
# voxel matrices <-> PyTorch's normalised theta: defined in regedu.warping (the one conversion)
# --------------------------------------------------------------------------------------------

from .warping import affine_to_theta, theta_to_affine, voxel_to_normalised_matrix  # noqa: E402,F401

_voxel_to_normalised = voxel_to_normalised_matrix  # old private name
