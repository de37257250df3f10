r"""Transformation models :math:`T(x, \theta)` as ``torch.nn.Module``\ s.

The lecture's recipe is *transformation model x similarity measure x optimisation*. A model here
owns the parameters :math:`\theta` that the optimiser changes and turns them into a transformation
of the **current pyramid level's** voxel grid:

* ``matrix()``: a homogeneous matrix ``(B, n+1, n+1)`` (fixed voxel -> moving voxel) for the
  parametric models (translation, rigid, affine), ``None`` for the deformable ones;
* ``displacement()``: the displacement field ``u`` ``(B, ndim, *shape)`` in voxels of that grid
  (pull-back: ``moved(x) = moving(x + u(x))``);
* ``regularised_field()``: the field a smoothness regulariser acts on (``None`` if there is none).

``set_level(shape)`` moves the parameters to another grid covering the same field of view, which is
how the resolution pyramid carries the transformation from a coarse level to the next finer one.
Voxel coordinates on two grids of the same field of view are related by ``x_a = D x_b`` with
``D = diag((S_a - 1) / (S_b - 1))`` (``align_corners=True`` geometry), so

* matrices are conjugated, :math:`A_b = D^{-1} A_a D` (:func:`rescale_matrix`);
* displacement fields are resampled and their components rescaled (:func:`regedu.resize_dvf`);
* B-spline coefficients keep their control points (same physical positions) and are rescaled per axis;
* stationary velocity fields are resampled like displacement fields.

Parametric models are defined once, in voxels of the **full-resolution** grid about the image centre,
with the translation measured in units of the image radius ``r`` (half the mean image extent): a
rotation by :math:`\delta\phi` and a translation by :math:`\delta t` then move the image border by about
:math:`r\,\delta\phi` and :math:`r\,\delta t` voxels, so one learning rate suits both.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .. import transforms
from ..fields import _integrate, bspline_grid_shape, bspline_to_dvf, integrate_velocity
from ..filters import gaussian_blur
from ..regularisers import bending_energy, bspline_regulariser, diffusion
from ..resampling import _resize_dvf, coarse_shape
from ..spatial_transformer import affine_to_dvf, resize_dvf


def grid_scaling(from_shape: Sequence[int], to_shape: Sequence[int]) -> list[float]:
    """Per-axis factors ``(S_from - 1) / (S_to - 1)``: a voxel ``x`` of ``to_shape`` is voxel ``D x`` of ``from_shape``."""
    return [(a - 1) / (b - 1) if b > 1 else 1.0 for a, b in zip(from_shape, to_shape)]


def rescale_matrix(A: torch.Tensor, from_shape: Sequence[int], to_shape: Sequence[int]) -> torch.Tensor:
    r"""The same transformation on another grid of the same field of view: :math:`A' = D^{-1} A D`.

    ``A`` ``(..., n+1, n+1)`` maps voxels of ``from_shape`` to voxels of ``from_shape``; the result maps
    voxels of ``to_shape`` to voxels of ``to_shape``, with ``D = diag((S_from - 1) / (S_to - 1), 1)``.
    """
    d = grid_scaling(from_shape, to_shape) + [1.0]
    D = torch.diag(torch.tensor(d, dtype=A.dtype, device=A.device))
    D_inv = torch.diag(torch.tensor([1.0 / v for v in d], dtype=A.dtype, device=A.device))
    return D_inv @ A @ D


class TransformationModel(nn.Module):
    """Base class of the transformation models (see the module docstring for the interface).

    Args:
        shape: full-resolution spatial shape ``(H, W)`` or ``(D, H, W)``.
        batch: number of image pairs registered at once (one transformation each).
    """

    parametric: bool = False
    name: str = "model"
    #: largest parameter change of L-BFGS's first trial step (voxels for deformable models)
    first_step: float = 1.0

    def __init__(self, shape: Sequence[int], batch: int = 1):
        super().__init__()
        self.full_shape = tuple(int(s) for s in shape)
        if len(self.full_shape) not in (2, 3):
            raise ValueError(f"{type(self).__name__}: shape must have 2 or 3 entries, got {self.full_shape}")
        self.ndim = len(self.full_shape)
        self.batch = int(batch)
        self.shape = self.full_shape

    def set_level(self, shape: Sequence[int]) -> None:
        """Move the transformation to a grid of ``shape`` (same field of view)."""
        self.shape = tuple(int(s) for s in shape)

    def matrix(self) -> torch.Tensor | None:
        """Homogeneous matrix ``(B, n+1, n+1)`` on the current grid, or ``None`` (deformable models)."""
        return None

    def displacement(self) -> torch.Tensor:
        """Displacement ``(B, ndim, *shape)`` in voxels of the current grid."""
        raise NotImplementedError

    def regularised_field(self) -> torch.Tensor | None:
        """The field the regulariser penalises (the displacement unless a model says otherwise)."""
        return self.displacement()

    def forward(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(displacement, regularised field)`` on the current grid, computing shared work once."""
        u = self.displacement()
        return u, u

    def regulariser_value(self, regulariser) -> torch.Tensor | None:
        """``regulariser(regularised_field(), reduction="none")`` computed without the dense field where the
        model knows how (``None``: it does not, the caller evaluates the regulariser on the field)."""
        return None

    def extra_repr(self) -> str:
        return f"shape={self.shape}, full_shape={self.full_shape}, batch={self.batch}"

    def _param(self) -> torch.Tensor:
        return next(self.parameters())


# --------------------------------------------------------------------------------------------
# parametric models
# --------------------------------------------------------------------------------------------

class _MatrixModel(TransformationModel):
    r"""A matrix :math:`x' = L(x - c) + c + r\,t` in full-resolution voxels (``c`` the image centre)."""

    parametric = True
    first_step = 0.02  # radians / relative scale / image radii: about one voxel at the border

    def __init__(self, shape: Sequence[int], batch: int = 1):
        super().__init__(shape, batch)
        self.radius = sum((s - 1) / 2 for s in self.full_shape) / self.ndim
        self.translation = nn.Parameter(torch.zeros(self.batch, self.ndim))

    def linear(self) -> torch.Tensor:
        """The linear part ``L`` ``(B, n, n)``."""
        raise NotImplementedError

    def full_matrix(self) -> torch.Tensor:
        """The matrix on the full-resolution grid, ``(B, n+1, n+1)``."""
        t = self.translation
        L = self.linear()
        c = torch.tensor([(s - 1) / 2 for s in self.full_shape], dtype=t.dtype, device=t.device)
        offset = c + self.radius * t - (L @ c)
        top = torch.cat([L, offset.unsqueeze(-1)], dim=-1)
        bottom = torch.zeros(t.shape[0], 1, self.ndim + 1, dtype=t.dtype, device=t.device)
        bottom[..., -1] = 1
        return torch.cat([top, bottom], dim=-2)

    def matrix(self) -> torch.Tensor:
        return rescale_matrix(self.full_matrix(), self.full_shape, self.shape)

    def displacement(self) -> torch.Tensor:
        return affine_to_dvf(self.matrix(), self.shape)

    def regularised_field(self) -> torch.Tensor | None:
        return None

    def forward(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.displacement(), None


class TranslationModel(_MatrixModel):
    """Translation :math:`x' = x + t` (``ndim`` parameters)."""

    name = "translation"

    def linear(self) -> torch.Tensor:
        t = self.translation
        return torch.eye(self.ndim, dtype=t.dtype, device=t.device).expand(t.shape[0], -1, -1)


class RigidModel(_MatrixModel):
    r"""Rigid :math:`x' = R(x - c) + c + t` about the image centre (3 parameters in 2D, 6 in 3D).

    2D: one angle (radians); 3D: Euler angles about tensor axes 0, 1, 2 (see
    :func:`regedu.transforms.rotation_matrix_3d`).
    """

    name = "rigid"

    def __init__(self, shape: Sequence[int], batch: int = 1):
        super().__init__(shape, batch)
        self.angles = nn.Parameter(torch.zeros(self.batch, 1 if self.ndim == 2 else 3))

    def linear(self) -> torch.Tensor:
        # (B, 1) angles in 2D, (B, 3) Euler angles in 3D
        return transforms.rotation_matrix(self.angles, self.ndim)[..., : self.ndim, : self.ndim]


class AffineModel(_MatrixModel):
    r"""Affine :math:`x' = (I + P)(x - c) + c + t` about the image centre (6 parameters in 2D, 12 in 3D).

    ``P`` is the deviation of the linear part from the identity (rotation, scaling and shear together);
    :func:`regedu.transforms.affine_params` decomposes the result into angle, scales and shears.
    """

    name = "affine"

    def __init__(self, shape: Sequence[int], batch: int = 1):
        super().__init__(shape, batch)
        self.linear_offset = nn.Parameter(torch.zeros(self.batch, self.ndim, self.ndim))

    def linear(self) -> torch.Tensor:
        P = self.linear_offset
        return torch.eye(self.ndim, dtype=P.dtype, device=P.device) + P


# --------------------------------------------------------------------------------------------
# deformable models
# --------------------------------------------------------------------------------------------

def smooth(u: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of a field or image ``(B, C, *spatial)`` by ``sigma`` voxels; ``sigma=0`` returns ``u``.

    The one smoothing step of the deformable models (``u = G_sigma * p``) and of demons (fluid-like and
    diffusion-like regularisation); borders are replicated (:func:`regedu.filters.gaussian_blur`).
    """
    return gaussian_blur(u, sigma) if sigma > 0 else u


_blur = smooth  # the name before demons shared it


class DenseModel(TransformationModel):
    r"""Dense (non-parametric) DVF: one displacement vector per grid point, :math:`u = G_\sigma * p`.

    ``sigma`` > 0 smooths the parameter field ``p`` with a Gaussian (voxels of its grid) before use,
    which preconditions the optimisation (fewer noisy updates); ``sigma=0`` optimises the displacements
    directly.

    ``grid_factor`` (default 2 in 3D, 1 in 2D): the parameter field lives on a grid ``grid_factor`` times
    coarser than the full-resolution image (never finer than the current pyramid level) and is
    resampled linearly to the level's grid. With 2 in 3D this is 8 times fewer parameters and a field
    that is cheaper to smooth and (for :class:`SVFModel`) to integrate; the similarity is still computed
    on the level's full grid. ``grid_factor=1`` is one vector per voxel, :math:`\mathrm{DOF} = d \cdot N_1 \cdots N_d`.
    """

    name = "dense"

    def __init__(self, shape: Sequence[int], batch: int = 1, sigma: float = 1.0, grid_factor: int | None = None):
        super().__init__(shape, batch)
        if not (sigma >= 0 and math.isfinite(sigma)):
            raise ValueError(f"{type(self).__name__}: sigma must be a finite number >= 0, got {sigma}")
        if grid_factor is None:
            grid_factor = 2 if self.ndim == 3 else 1
        if isinstance(grid_factor, bool) or not isinstance(grid_factor, int) or grid_factor < 1:
            raise ValueError(f"{type(self).__name__}: grid_factor must be a whole number >= 1, got {grid_factor!r}")
        self.sigma = float(sigma)
        self.grid_factor = grid_factor
        self.finest_grid = _coarser(self.full_shape, grid_factor)
        self.field = nn.Parameter(torch.zeros(self.batch, self.ndim, *self.grid_shape(self.shape)))

    def grid_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The parameter grid used on a level of ``shape``: the level's grid, at most ``finest_grid``."""
        return tuple(min(int(s), g) for s, g in zip(shape, self.finest_grid))

    def set_level(self, shape: Sequence[int]) -> None:
        grid = self.grid_shape(shape)
        if grid != tuple(self.field.shape[2:]):
            with torch.no_grad():
                self.field = nn.Parameter(resize_dvf(self.field.detach(), grid))
        super().set_level(shape)

    def _to_level(self, u: torch.Tensor) -> torch.Tensor:
        """A field on the parameter grid resampled to the level's grid (displacements rescaled)."""
        return u if tuple(u.shape[2:]) == self.shape else resize_dvf(u, self.shape)

    def displacement(self) -> torch.Tensor:
        return self._to_level(smooth(self.field, self.sigma))

    def forward(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        p = smooth(self.field, self.sigma)
        return self._to_level(p), p  # the regulariser acts on the parameter grid (fewer voxels, same mean)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", sigma={self.sigma}, grid={tuple(self.field.shape[2:])}"


def _coarser(shape: Sequence[int], factor: int) -> tuple[int, ...]:
    """The same field of view on a grid ``factor`` times coarser (:func:`regedu.resampling.coarse_shape`; an axis of one voxel stays one)."""
    return tuple(s if s == 1 else c for s, c in zip(shape, coarse_shape(shape, factor)))


class SVFModel(DenseModel):
    r"""Diffeomorphic model: a stationary velocity field ``v`` and :math:`\varphi = \exp(v)`.

    The exponential is computed by scaling and squaring (:func:`regedu.integrate_velocity`, ``steps``
    squarings; Arsigny et al., 2006; Ashburner, 2007) on the parameter grid (see :class:`DenseModel`'s
    ``grid_factor``), then resampled to the level's grid. A smooth ``v`` gives a diffeomorphism, i.e. no
    folding. The regulariser acts on the velocity.
    """

    name = "svf"

    def __init__(self, shape: Sequence[int], batch: int = 1, sigma: float = 1.0, steps: int = 7, grid_factor: int | None = None):
        super().__init__(shape, batch, sigma, grid_factor)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"SVFModel: steps must be a whole number >= 0, got {steps!r}")
        self.steps = int(steps)

    def velocity(self) -> torch.Tensor:
        """The (smoothed) velocity field ``(B, ndim, *shape)`` in voxels of the current level."""
        return self._to_level(smooth(self.field, self.sigma))

    def displacement(self) -> torch.Tensor:
        return self._to_level(integrate_velocity(smooth(self.field, self.sigma), self.steps))

    def regularised_field(self) -> torch.Tensor:
        return smooth(self.field, self.sigma)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        v = smooth(self.field, self.sigma)
        return self._to_level(integrate_velocity(v, self.steps)), v


class BSplineModel(TransformationModel):
    r"""Cubic B-spline free-form deformation (Rueckert et al., 1999).

    :math:`u(x) = \sum_{c} \beta^3\!\left(\frac{x - x_c}{\delta}\right) \phi_c` with control points
    :math:`x_c` every ``spacing`` voxels (of the full-resolution image; one value or one per axis).
    The control points keep their physical positions on every pyramid level, so moving between levels
    only rescales the coefficients ``phi`` (voxel units of the level) per axis.

    ``diffeomorphic=True`` reads the B-spline field as a stationary *velocity* and integrates it by
    scaling and squaring (``steps`` squarings, :func:`regedu.integrate_velocity`), so the transformation
    is invertible (no folding) at a small extra cost; the regulariser then acts on the velocity.
    """

    name = "bspline"

    def __init__(self, shape: Sequence[int], batch: int = 1, spacing: float | Sequence[float] = 8.0,
                 diffeomorphic: bool = False, steps: int = 7):
        super().__init__(shape, batch)
        if not isinstance(diffeomorphic, bool):
            raise ValueError(f"BSplineModel: diffeomorphic must be True or False, got {diffeomorphic!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"BSplineModel: steps must be a whole number >= 0, got {steps!r}")
        self.diffeomorphic, self.steps = diffeomorphic, steps
        sp = [float(spacing)] * self.ndim if isinstance(spacing, (int, float)) else [float(s) for s in spacing]
        if len(sp) != self.ndim:
            raise ValueError(f"BSplineModel: spacing must be one number or {self.ndim} numbers, got {spacing!r}")
        if min(self.full_shape) < 2:
            raise ValueError(
                f"BSplineModel: every axis needs at least 2 voxels for a control grid, got an image of shape {self.full_shape}; "
                f"register a single slice as a 2D image (drop the axis of size 1) or use transform='dense'"
            )
        for s, d in zip(self.full_shape, sp):
            if not d > 0 or d > s - 1:
                raise ValueError(
                    f"BSplineModel: control-point spacing must be positive and at most the image size minus 1 "
                    f"along every axis, got spacing {tuple(sp)} for an image of shape {self.full_shape}; "
                    f"choose a spacing of at most {min(self.full_shape) - 1} voxels"
                )
        self.spacing = tuple(sp)
        self.grid = bspline_grid_shape(self.full_shape, sp)
        self.coefficients = nn.Parameter(torch.zeros(self.batch, self.ndim, *self.grid))

    def level_spacing(self, shape: Sequence[int]) -> tuple[float, ...]:
        """Control-point spacing in voxels of a grid of ``shape``, placing the control points where they are at full resolution."""
        shape = tuple(int(s) for s in shape)
        cache = self.__dict__.setdefault("_spacing_cache", {})
        if shape not in cache:
            cache[shape] = self._level_spacing(shape)
        return cache[shape]

    def _level_spacing(self, shape: tuple[int, ...]) -> tuple[float, ...]:
        out = []
        for s_full, s, d, n in zip(self.full_shape, shape, self.spacing, self.grid):
            if s < 2:
                raise ValueError(f"BSplineModel: pyramid level of shape {tuple(shape)} is too small for a B-spline grid")
            sp = d * (s - 1) / (s_full - 1)
            # guard against round-off changing ceil((s - 1) / sp) + 3
            for candidate in (sp, math.nextafter(sp, math.inf), math.nextafter(sp, 0.0)):
                if int(math.ceil((s - 1) / candidate)) + 3 == n:
                    sp = candidate
                    break
            out.append(sp)
        if bspline_grid_shape(shape, out) != self.grid:
            raise ValueError(f"BSplineModel: cannot place the control grid {self.grid} on a level of shape {tuple(shape)}")
        return tuple(out)

    def set_level(self, shape: Sequence[int]) -> None:
        shape = tuple(int(s) for s in shape)
        if shape != self.shape:
            factors = grid_scaling(shape, self.shape)
            f = torch.tensor(factors, dtype=self.coefficients.dtype, device=self.coefficients.device)
            with torch.no_grad():
                self.coefficients = nn.Parameter(self.coefficients.detach() * f.reshape(1, -1, *([1] * self.ndim)))
        self.level_spacing(shape)  # validates
        super().set_level(shape)

    def _field(self, shape: Sequence[int] | None = None) -> torch.Tensor:
        """The B-spline field on a grid of ``shape`` (default: the current level) covering the same field of view."""
        shape = self.shape if shape is None else tuple(shape)
        return bspline_to_dvf(self.coefficients, shape, self.level_spacing(shape))

    def _velocity_grid(self) -> tuple[int, ...]:
        """Where a diffeomorphic B-spline is integrated: a grid 2x coarser than the level when the control
        points are at least 4 level voxels apart (the velocity is smooth on that scale, so the coarser
        grid loses nothing visible and the squarings cost 4x (2D) to 8x (3D) less), else the level."""
        if min(self.level_spacing(self.shape)) < 4:
            return self.shape
        grid = tuple(1 if s == 1 else c for s, c in zip(self.shape, coarse_shape(self.shape, 2)))
        try:
            self.level_spacing(grid)  # the control grid must fit on it
        except ValueError:
            return self.shape
        return grid

    def _displacement_from(self, v: torch.Tensor | None) -> torch.Tensor:
        """The displacement of the level's field ``v`` (``None``: computed here where it is needed)."""
        if not self.diffeomorphic:
            return self._field() if v is None else v
        grid = self._velocity_grid()
        if grid == self.shape:
            return _integrate(self._field() if v is None else v, self.steps)
        # the coefficients are in voxels of the level: express the velocity in voxels of the coarser grid
        c = self.coefficients
        f = torch.tensor(grid_scaling(grid, self.shape), dtype=c.dtype, device=c.device).reshape(1, -1, *([1] * self.ndim))
        u = _integrate(self._field(grid) * f, self.steps)  # the model's own finite field: no input checks
        return _resize_dvf(u, self.shape)

    def displacement(self) -> torch.Tensor:
        return self._displacement_from(None)  # builds the level's field only where it is used

    def regularised_field(self) -> torch.Tensor:
        return self._field()

    def regulariser_value(self, regulariser) -> torch.Tensor | None:
        """Bending energy and diffusion of the level's B-spline field, computed exactly on the control grid
        (:func:`regedu.regularisers.bspline_regulariser`: equal to the dense values to rounding, and 15x
        cheaper in 3D); ``None`` for any other regulariser."""
        kind = {bending_energy: "bending", diffusion: "diffusion"}.get(regulariser)
        if kind is None:
            return None
        return bspline_regulariser(self.coefficients, self.shape, self.level_spacing(self.shape), kind, reduction="none")

    def forward(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        v = self._field()  # the regulariser acts on the field (the velocity) on the level's grid
        return self._displacement_from(v), v

    def extra_repr(self) -> str:
        return super().extra_repr() + f", spacing={self.spacing}, grid={self.grid}, diffeomorphic={self.diffeomorphic}"


MODELS: dict[str, type[TransformationModel]] = {
    "translation": TranslationModel,
    "rigid": RigidModel,
    "affine": AffineModel,
    "bspline": BSplineModel,
    "dense": DenseModel,
    "svf": SVFModel,
}
