r"""Iterative registration: transformation model x similarity measure x optimisation.

:func:`register` solves the lecture's optimisation problem

.. math:: \hat\theta = \arg\min_\theta \; \mathcal{L}_{sim}\big(F, M \circ T_\theta\big) + \lambda\, R(u_\theta)

by gradient descent (L-BFGS or Adam) on a resolution pyramid, coarse to fine. The pieces are
interchangeable: the transformation model (:mod:`regedu.registration.models`), the similarity loss
(:func:`regedu.similarity.get_loss`: a name or any callable ``loss(fixed, moved, mask=None)``, e.g. a
learned similarity network), the regulariser :math:`R` with its weight :math:`\lambda`
(:mod:`regedu.regularisers`) and the optimiser (any ``torch.optim`` class).

The engine is three named steps, each small enough to read on its own:

1. **planning** (:func:`register`'s body, with :mod:`.planning`): check the inputs, build the model and
   fix everything the optimisation needs in a :class:`RegistrationPlan` (levels, budgets, rates, loss,
   regulariser, initial transformation);
2. **the per-level loop** (:func:`optimise`): for each level, coarse to fine, a :class:`LevelObjective`
   (the loss on that level as an optimiser closure, which also remembers the best point it evaluated)
   is minimised by :func:`run_level`; the model keeps the best point of every level, and at the end the
   result is never worse than the starting transformation;
3. **the history** (:class:`~regedu.registration.history.HistoryRecorder`, shared with demons): the
   per-iteration record, progress bar, snapshots and callback.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .._checks import check_affine, check_dvf, check_same_device
from ..fields import compose
from ..regularisers import get_regulariser
from ..similarity import (LOSSES, _data_range, _histogram_of_unit_samples, _lncc_loss_checked_inputs, _mi_of_histogram,
                          _sample_index, _scale_to_unit, _to_unit, get_loss, mi_loss)
from ..spatial_transformer import affine_to_dvf, affine_warp, resize_dvf, warp
from ..warping import _PADDING_CODE, _warp_checked_inputs, voxel_to_normalised_matrix
from .history import HistoryRecorder
from .models import MODELS, SVFModel, TransformationModel, rescale_matrix
from .planning import (
    MIN_LEVEL_SIZE,
    SMALL_PROBLEM_VOXELS,
    ImagePair,
    check_pair,
    level_shapes,
    max_levels,
    per_level,
    plan_iterations,
    plan_levels,
    pyramid,
    threads_for,
)
from .result import RegistrationResult

# Defaults per transformation model, tuned on 2D brain slices (80-256 voxels a side) and brain volumes
# (benchmarks/iterative.py). "optimiser" is the default optimiser; "adam"/"lbfgs" give (iterations per
# level, coarse to fine: with fewer levels the finest entries are used; learning rate) for that
# optimiser (other optimisers use the "adam" entry; a one-level pyramid gets the sum of the two finest
# entries). For L-BFGS an iteration is one evaluation of loss and gradient (line searches included).
# "coarsest": the default pyramid has as many levels (at most DEFAULT_LEVELS) as keep the coarsest
# level at least this many voxels along every axis of more than one voxel.
DEFAULTS: dict[str, dict[str, Any]] = {
    "translation": dict(optimiser="adam", adam=((100, 60, 30), 0.02), lbfgs=((20, 10, 5), 1.0), regulariser=None, coarsest=16),
    "rigid": dict(optimiser="adam", adam=((100, 60, 30), 0.02), lbfgs=((20, 10, 5), 1.0), regulariser=None, coarsest=16),
    "affine": dict(optimiser="adam", adam=((100, 60, 30), 0.01), lbfgs=((20, 10, 5), 1.0), regulariser=None, coarsest=16),
    "bspline": dict(optimiser="lbfgs", adam=((100, 80, 50), 0.2), lbfgs=((20, 15, 8), 1.0), regulariser="bending", coarsest=32,
                    model=dict(spacing=4.0, diffeomorphic=True, steps=4)),
    "dense": dict(optimiser="lbfgs", adam=((100, 80, 50), 0.2), lbfgs=((20, 20, 10), 1.0), regulariser="diffusion", coarsest=32),
    "svf": dict(optimiser="lbfgs", adam=((100, 80, 50), 0.2), lbfgs=((20, 20, 10), 1.0), regulariser="diffusion", coarsest=32),
}
# "model": keyword arguments register gives the model unless the caller gives them. The recommended
# B-spline is a diffeomorphic one (the B-spline field read as a velocity, 4 squarings) with control points
# every 4 voxels and a light bending penalty: on real inter-subject anatomy (dipy's T1 slice from the MNI
# template) a spacing of 8 voxels loses 0.05 Dice against dipy's SyN and a plain B-spline with a light
# penalty folds (~1 % of the brain); on the smooth synthetic evaluation pairs spacing 8 scores higher
# (+0.02 Dice) but both beat SyN (benchmarks/iterative.py). L-BFGS evaluations (20, 15, 8) instead of (20, 20, 10):
# 2D 0.9275 vs 0.9289, 3D 0.9134 vs 0.9167 (SyN 0.911 and 0.899), real T1 0.719 vs 0.722 (SyN 0.726), at ~30 % less time.
# Measured and rejected: spacing 3 with bending 0.2 wins on the real T1 slices (0.741 vs SyN 0.726) but
# loses on the 3D pairs (0.895 vs SyN 0.899) and gains little in 2D (0.915 vs 0.911).
# The SVF model keeps 7 squarings, integrate_velocity's default, so integrate_velocity(result.velocity) is result.dvf;
# 5 gave the same Dice (3D 0.9064 vs 0.9062) at ~15 % less time, and 7 already runs within 2x of the B-spline model.
# regulariser weights per similarity (the similarities have different scales: the MSE of [0, 1] images
# is small, LNCC/NCC/MI losses are of order 1; SSD grows with the number of voxels, its weights suit
# images of about 10^4 voxels: prefer "mse")
DEFAULT_WEIGHTS: dict[str, dict[str, float]] = {
    "diffusion": {"mse": 0.01, "ssd": 100.0, "ncc": 0.5, "lncc": 0.5, "mi": 0.5, "callable": 0.1},
    "bending": {"mse": 0.1, "ssd": 1000.0, "ncc": 1.0, "lncc": 0.3, "mi": 1.0, "callable": 0.1},
}
# the similarity a user gets without asking: LNCC is robust to the intensity changes between scans of one
# modality (bias field, contrast) that mislead MSE (benchmarks/iterative.py: Dice +0.05 for B-splines)
DEFAULT_SIMILARITY = "lncc"
# ... and for the matrix models (translation, rigid, affine): global NCC. A dozen parameters are fixed by
# the image as a whole, so the local statistics of LNCC buy nothing there and cost ~10x per evaluation;
# measured on the real T1 slice from the MNI template (benchmarks/iterative.py, affine then B-spline):
# the same final Dice (0.7240 with NCC vs 0.7218 with LNCC for the affine stage), half the total time
DEFAULT_MATRIX_SIMILARITY = "ncc"
# MI in register with a matrix model (translation, rigid, affine): a 3D level above MI_SAMPLE_ABOVE voxels
# builds its joint histogram from a fixed random MI_SAMPLES share of them (as ANTs samples), which cuts the
# histogram's cost by 1 / MI_SAMPLES; smaller images (every 2D image, 3D up to ~25^3) and the deformable
# models use every voxel. Measured: a 112^3 T1/T2-like brain pair (1.4M voxels), affine Dice 0.7482 sampled
# vs 0.7488 full at 14.0 vs 29.3 s CPU; B-spline 0.7621 vs 0.7758 (a loss), so not sampled. An 80 x 96 x 80
# T1 -> T2-like rigid misalignment: TRE 0.10 vs 0.08 voxels at 3.5 vs 11.3 s CPU (every level sampled vs none);
# the real b=0 <- T1 pair of benchmarks/iterative.py (58 x 58 x 24): same final Dice (0.4603 vs 0.4599), affine
# stage 0.67 vs 1.12 s. Such a level also interpolates the moving image at the sampled voxels only, instead of
# warping it whole (_SampledMatrixMI): the real pair's affine stage 0.73 -> 0.44 s, final Dice 0.4608 vs 0.4623
MI_SAMPLE_ABOVE = 2**14
MI_SAMPLES = 0.25
DEFAULT_LEVELS = 3
# A similarity callable with the attribute ``full_resolution_only = True`` (``SimilarityNet.as_loss()``,
# ``feature_similarity``: networks trained on full-resolution images) gets a one-level pyramid unless
# ``levels`` is given. On the coarse levels of a pyramid such a network scores images of a scale it never
# saw: measured with the learned multi-modal similarity of tests/test_learning_similarity_rl.py (48 x 40 T2-like
# <- T1, rigid, 8 pairs), the default two levels left 1 to 3 of the 8 pairs 20-35 voxels off (the coarse level
# found a "better" loss far away), one level left 0 or 1 pair off (7 voxels) and the rest within 0.4 voxels.
FULL_RESOLUTION_ONLY = "full_resolution_only"
# L-BFGS runs its whole budget (no early stop on small changes)
LBFGS_OPTIONS: dict[str, float] = {"tolerance_change": 0.0, "tolerance_grad": 0.0}

OPTIMISERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "lbfgs": torch.optim.LBFGS,
}

Callback = Callable[[int, int, float, nn.Module], Any]

# the names of the planning helpers before they moved to .planning (kept for code that imported them)
_level_shapes, _max_levels, _per_level, _threads_for = level_shapes, max_levels, per_level, threads_for
__all__ = ["register", "optimise", "run_level", "LevelObjective", "RegistrationPlan", "DEFAULTS", "DEFAULT_WEIGHTS",
           "DEFAULT_SIMILARITY", "DEFAULT_MATRIX_SIMILARITY",
           "MIN_LEVEL_SIZE", "SMALL_PROBLEM_VOXELS"]


# --------------------------------------------------------------------------------------------
# 1. planning
# --------------------------------------------------------------------------------------------

def _make_model(fn: str, transform: str | TransformationModel, shape, batch: int, model_kwargs: dict) -> TransformationModel:
    if isinstance(transform, TransformationModel):
        if model_kwargs:
            raise TypeError(f"{fn}: extra keyword arguments {sorted(model_kwargs)} cannot be applied to a model instance")
        if transform.full_shape != tuple(shape):
            raise ValueError(f"{fn}: the model was built for shape {transform.full_shape} but the images are {tuple(shape)}")
        return transform
    if not isinstance(transform, str) or transform not in MODELS:
        raise ValueError(
            f"{fn}: transform must be one of {', '.join(repr(k) for k in MODELS)} (or a TransformationModel), "
            f"got {transform!r}; for demons use regedu.registration.demons(...)"
        )
    try:
        return MODELS[transform](shape, batch=batch, **model_kwargs)
    except TypeError as err:
        raise TypeError(f"{fn}: unknown keyword argument for transform={transform!r}: {err}") from None


def _optimiser_key(fn: str, optimiser) -> str:
    """``"adam"``, ``"lbfgs"``, ... for a name, ``"custom"`` for a class; raises for anything else."""
    if isinstance(optimiser, str):
        key = optimiser.lower()
        if key not in OPTIMISERS:
            raise ValueError(f"{fn}: optimiser must be one of {', '.join(repr(k) for k in OPTIMISERS)} or a torch.optim class, got {optimiser!r}")
        return key
    if not callable(optimiser):
        raise TypeError(f"{fn}: optimiser must be a name or a torch.optim.Optimizer class, got {type(optimiser).__name__}")
    return "custom"


def _mi_loss_sampled_when_large(fixed: torch.Tensor, moved: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``register``'s ``"mi"`` loss: :func:`regedu.similarity.mi_loss`, on a fixed random
    :data:`MI_SAMPLES` share of the voxels for 3D levels above :data:`MI_SAMPLE_ABOVE` voxels (every
    voxel otherwise, so 2D and small 3D registrations are unchanged)."""
    return mi_loss(fixed, moved, mask, samples=MI_SAMPLES if _mi_level_is_sampled(fixed) else None)


def _mi_level_is_sampled(fixed: torch.Tensor) -> bool:
    """Whether ``register``'s MI for a matrix model samples the voxels of this level: 3D, above :data:`MI_SAMPLE_ABOVE`."""
    return fixed.dim() == 5 and math.prod(fixed.shape[2:]) > MI_SAMPLE_ABOVE


class _SampledMatrixMI:
    """The loss of :func:`_mi_loss_sampled_when_large` for a matrix model, computed from the sampled voxels
    only: the moving image is interpolated at the :data:`MI_SAMPLES` share of the voxels the histogram uses
    (the same seeded subset), not warped whole. A quarter of the interpolation and none of the affine grid
    (measured on the real b=0 <- T1 pair of benchmarks/iterative.py: the affine stage 0.73 -> 0.44 s CPU).

    One difference from ``mi_loss(fixed, moved, samples=MI_SAMPLES)``: the moved intensities are mapped to the
    histogram's [0, 1] with the moving image's intensity range instead of the warped image's (the two agree
    unless the warp leaves the brightest or darkest voxel out of view; ANTs also fixes the range beforehand).
    """

    def __init__(self, fixed: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor | None, bins: int = 32):
        shape = tuple(fixed.shape[2:])
        index = _sample_index("register", MI_SAMPLES, 0, shape, fixed.device)
        assert index is not None  # a large level: fewer samples than voxels
        self.bins, self.shape, self.moving = bins, shape, moving
        self.fixed_unit = _to_unit(fixed, None, index)  # (B or 1, N), the fixed range from the whole image
        self.weight = None if mask is None else mask.flatten(1).index_select(1, index)
        # homogeneous voxel coordinates (tensor axis order) of the samples, (ndim + 1, N)
        coords = torch.stack(torch.unravel_index(index, shape)).to(moving.dtype)
        self.points = torch.cat([coords, torch.ones_like(coords[:1])])
        self.to_normalised = voxel_to_normalised_matrix(shape, dtype=moving.dtype, device=moving.device)
        self.low, self.high = _data_range(moving)

    def __call__(self, A: torch.Tensor) -> torch.Tensor:
        """The loss (-MI, mean over the batch) for the voxel matrices ``A`` ``(B, ndim+1, ndim+1)`` (fixed -> moving)."""
        ndim = len(self.shape)
        grid = (self.to_normalised @ A)[:, :ndim] @ self.points  # (B, ndim, N), normalised, (x, y[, z]) order
        B, N = grid.shape[0], grid.shape[2]
        moving = self.moving if self.moving.shape[0] == B else self.moving.expand(B, *self.moving.shape[1:])
        grid = grid.transpose(1, 2).reshape(B, *([1] * (ndim - 1)), N, ndim)
        values = torch.grid_sampler(moving, grid, 0, _PADDING_CODE["border"], True).reshape(B, N)  # = affine_warp's sampling
        low, high = (t if t.shape[0] == B else t.expand(B, 1) for t in (self.low, self.high))
        m = _scale_to_unit(values, low, high)
        f = self.fixed_unit.expand(B, -1)
        weight = None if self.weight is None else self.weight.expand(B, -1)
        return -_mi_of_histogram(_histogram_of_unit_samples(f, m, self.bins, weight)).mean()


def _choose_similarity(fn: str, similarity, sample_mi: bool = False) -> tuple[Callable[..., torch.Tensor], str]:
    """The loss function and its name (``"callable"`` for a user's function); ``sample_mi``: ``"mi"`` samples
    the voxels of large 3D levels (:func:`_mi_loss_sampled_when_large`; for the matrix models only)."""
    if callable(similarity):
        return get_loss(similarity), "callable"
    if not isinstance(similarity, str) or similarity.lower() not in LOSSES:
        raise ValueError(f"{fn}: similarity must be one of {', '.join(repr(k) for k in LOSSES)} or a callable loss(fixed, moved, mask=None), got {similarity!r}")
    if similarity.lower() == "mi" and sample_mi:
        return _mi_loss_sampled_when_large, "mi"
    if similarity.lower() == "lncc":
        return _lncc_loss_checked_inputs, "lncc"  # the same loss; the images are checked once, in check_pair
    return get_loss(similarity.lower()), similarity.lower()


def _choose_regulariser(fn: str, regulariser, weight, default: str | None, sim_name: str) -> tuple[Callable | None, float]:
    """The regulariser function (``None``: none) and its weight, defaults filled in."""
    if isinstance(regulariser, str) and regulariser == "auto":
        regulariser = default
    reg_fn = None
    if regulariser is not None:
        if not callable(regulariser) and not (isinstance(regulariser, str) and regulariser in ("diffusion", "bending", "bending_energy")):
            raise ValueError(f"{fn}: regulariser must be 'diffusion', 'bending', 'auto', None or a callable, got {regulariser!r}")
        reg_fn = get_regulariser(regulariser)
        if weight is None:
            key = "bending" if regulariser in ("bending", "bending_energy") else "diffusion"
            weight = DEFAULT_WEIGHTS[key].get(sim_name, DEFAULT_WEIGHTS[key]["callable"]) if isinstance(regulariser, str) else 0.1
    weight = 0.0 if weight is None else weight
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        raise ValueError(f"{fn}: weight must be a finite number >= 0, got {weight!r}")
    if weight > 0 and reg_fn is None:
        raise ValueError(f"{fn}: weight={weight} was given but regulariser is None; name a regulariser ('diffusion', 'bending')")
    return (reg_fn if weight > 0 else None), float(weight)


def _init_transform(fn: str, init, ndim: int, shape, batch: int, device, dtype):
    """``init`` as ``("matrix", A)`` (full-resolution voxels) or ``("dvf", u)`` or ``None``."""
    if init is None:
        return None
    if isinstance(init, RegistrationResult):
        init = init.matrix if init.matrix is not None else init.dvf
    if not isinstance(init, torch.Tensor):
        raise TypeError(f"{fn}: init must be a RegistrationResult, an affine matrix or a DVF tensor, got {type(init).__name__}")
    if init.device != device and init.device.type != "cpu":
        check_same_device(fn, "fixed", torch.empty(0, device=device), "init", init)
    init = init.detach().to(device=device, dtype=dtype)
    if init.dim() in (2, 3) and init.shape[-1] == init.shape[-2]:
        A = check_affine(fn, "init", init, ndim=ndim)
        if A.dim() == 2:
            A = A.unsqueeze(0)
        if A.shape[0] not in (1, batch):
            raise ValueError(f"{fn}: init has {A.shape[0]} matrices but {batch} image pairs are registered")
        return "matrix", A
    u = check_dvf(fn, "init", init, spatial=shape)
    if u.shape[1] != ndim:
        raise ValueError(f"{fn}: init is a {u.shape[1]}D field but the images are {ndim}D")
    if u.shape[0] not in (1, batch):
        raise ValueError(f"{fn}: init has {u.shape[0]} fields but {batch} image pairs are registered")
    return "dvf", u


@dataclasses.dataclass
class RegistrationPlan:
    """Everything :func:`register` decides before it optimises.

    Attributes:
        fn: the public function's name (for messages).
        model: the transformation model (on the device and in the dtype of the images).
        loss: ``loss(fixed, moved[, mask]) -> scalar`` to minimise; ``similarity`` its name.
        regulariser: ``field -> scalar`` or ``None``; ``weight`` its weight :math:`\\lambda`.
        shapes: the pyramid's level shapes, coarsest first (the last is the full resolution).
        iterations, lrs: per level (coarse to fine).
        optimiser: a name or a ``torch.optim`` class; ``opt_key`` its lower-case name (``"custom"``).
        init: ``("matrix", A)`` or ``("dvf", u)`` at full resolution, or ``None``.
    """

    fn: str
    model: TransformationModel
    loss: Callable[..., torch.Tensor]
    similarity: str
    regulariser: Callable[[torch.Tensor], torch.Tensor] | None
    weight: float
    shapes: list[tuple[int, ...]]
    iterations: list[int]
    lrs: list[float]
    optimiser: Any
    opt_key: str
    init: tuple[str, torch.Tensor] | None

    @property
    def levels(self) -> int:
        return len(self.shapes)

    @property
    def full_shape(self) -> tuple[int, ...]:
        return self.shapes[-1]


# --------------------------------------------------------------------------------------------
# transformations on a level
# --------------------------------------------------------------------------------------------

def _init_at(init, full_shape, shape):
    """The initial transformation on a pyramid level's grid."""
    if init is None:
        return None
    kind, value = init
    if kind == "matrix":
        return kind, rescale_matrix(value, full_shape, shape)
    return kind, resize_dvf(value, shape) if tuple(shape) != tuple(full_shape) else value


def _total_displacement(u: torch.Tensor, init) -> torch.Tensor:
    r"""Deformable ``u`` after an initial transformation: ``moved(x) = moving(T_init(x + u(x)))``.

    For a matrix, exactly :math:`A(x + u) - x = (A x - x) + L u` (``L`` its linear part); for a DVF
    ``w``, :math:`u(x) + w(x + u(x))` (:func:`regedu.compose`).
    """
    if init is None:
        return u
    kind, value = init
    if kind == "matrix":
        ndim = u.shape[1]
        L = value[:, :ndim, :ndim]
        Lu = torch.einsum("bij,bj...->bi...", L, u) if L.shape[0] == u.shape[0] else torch.einsum("ij,bj...->bi...", L[0], u)
        return affine_to_dvf(value, u.shape[2:]) + Lu
    return compose(value.expand(u.shape[0], *value.shape[1:]) if value.shape[0] != u.shape[0] else value, u)


def _total_matrix(A: torch.Tensor, init) -> torch.Tensor:
    if init is None:
        return A
    return init[1] @ A


def _level_matrix(model: TransformationModel) -> torch.Tensor:
    """A parametric model's matrix on its current level."""
    A = model.matrix()
    if A is None:
        raise TypeError(f"{type(model).__name__} is parametric but its matrix() returned None")
    return A


def transformed(model: TransformationModel, moving: torch.Tensor, init, with_field: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``moving`` warped by ``model`` (after ``init``) on the model's current level, and the field to
    regularise (``None`` unless ``with_field``)."""
    if model.parametric:
        moved = affine_warp(moving, _total_matrix(_level_matrix(model), init))
        return moved, model.displacement() if with_field else None
    # the moving image was checked when the registration started and the parameters are finite (every
    # gradient is checked before a step), so the displacement is too: warp without its input test
    u, field = model() if with_field else (model.displacement(), None)
    return _warp_checked_inputs(moving, _total_displacement(u, init)), field


def full_resolution(plan: RegistrationPlan, model: TransformationModel, moving: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """``(matrix or None, dvf, moved)`` of the model's current parameters on the full-resolution grid."""
    shape = plan.full_shape
    with torch.no_grad():
        if model.parametric:
            full = getattr(model, "full_matrix", None)
            A = full() if callable(full) else rescale_matrix(_level_matrix(model), model.shape, shape)
            A = _total_matrix(A, plan.init)
            return A, affine_to_dvf(A, shape), affine_warp(moving, A)
        u = model.displacement()
        if model.shape != shape:
            u = resize_dvf(u, shape)
        total = _total_displacement(u, plan.init)
        return None, total, warp(moving, total)


# --------------------------------------------------------------------------------------------
# 2. the per-level loop
# --------------------------------------------------------------------------------------------

class _Stop(Exception):
    """Raised inside the optimisation when the callback asks to stop."""


class _BudgetSpent(Exception):
    """Raised when an L-BFGS line search asks for more evaluations than the level's budget."""


class LevelObjective:
    """The loss on one pyramid level, as the closure an optimiser calls.

    Each call evaluates :math:`\\mathcal{L}_{sim}(F_l, M_l \\circ T) + \\lambda R(u)` at the model's current
    parameters, back-propagates, records the iteration in the history, and remembers the best
    parameters evaluated so far (:meth:`restore_best` puts them back). L-BFGS calls it again at the point
    where it stopped; that repeat is answered from memory and not counted.

    Args:
        plan: the registration plan; ``level`` the level's index (0 = coarsest).
        fixed, moving, mask: the images on this level (``mask`` may be ``None``).
        recorder: the history recorder.
    """

    def __init__(self, plan: RegistrationPlan, level: int, fixed: torch.Tensor, moving: torch.Tensor,
                 mask: torch.Tensor | None, recorder: HistoryRecorder):
        self.plan, self.level, self.recorder = plan, level, recorder
        self.fixed, self.moving, self.mask = fixed, moving, mask
        self.init = _init_at(plan.init, plan.full_shape, plan.shapes[level])
        self.params = list(plan.model.parameters())
        self.budget = plan.iterations[level]
        self.evaluations = 0
        self.best_loss = math.inf
        self.best_params: list[torch.Tensor] | None = None
        self._last: tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]] | None = None  # (params, loss, grads)
        # a matrix model with sampled MI on a large 3D level: interpolate the moving image at the samples only
        self.sampled_mi = None
        # (register chooses _mi_loss_sampled_when_large for the matrix models only)
        if plan.loss is _mi_loss_sampled_when_large and plan.regulariser is None and fixed.shape[1] == 1 and _mi_level_is_sampled(fixed):
            self.sampled_mi = _SampledMatrixMI(fixed, moving, mask)

    def terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(similarity loss, weighted regulariser)`` at the current parameters (scalars, with graph)."""
        plan = self.plan
        if self.sampled_mi is not None:
            sim = self.sampled_mi(_total_matrix(_level_matrix(plan.model), self.init))
            return sim, torch.zeros((), device=sim.device, dtype=sim.dtype)
        # a model that computes its regulariser without the dense field (B-splines, on the control grid) says so
        exact = None if plan.regulariser is None else plan.model.regulariser_value(plan.regulariser)
        moved, field = transformed(plan.model, self.moving, self.init, plan.regulariser is not None and exact is None)
        sim = plan.loss(self.fixed, moved, mask=self.mask) if self.mask is not None else plan.loss(self.fixed, moved)
        if not isinstance(sim, torch.Tensor) or sim.numel() != 1:
            got = type(sim).__name__ + ("" if not isinstance(sim, torch.Tensor) else f" of shape {tuple(sim.shape)}")
            raise ValueError(f"{plan.fn}: the similarity loss must return a scalar tensor, got {got}")
        sim = sim.reshape(())
        if exact is not None:
            return sim, plan.weight * exact.mean().to(sim.dtype)
        if field is None or plan.regulariser is None:
            return sim, torch.zeros((), device=sim.device, dtype=sim.dtype)
        return sim, plan.weight * plan.regulariser(field)

    def _is_repeat(self) -> bool:
        return self._last is not None and all(torch.equal(p, q) for p, q in zip(self.params, self._last[0]))

    def __call__(self) -> torch.Tensor:
        plan = self.plan
        if self._is_repeat():
            assert self._last is not None
            for p, g in zip(self.params, self._last[2]):
                p.grad = g.clone()
            return self._last[1]
        if plan.opt_key == "lbfgs" and self.evaluations >= self.budget:
            raise _BudgetSpent
        for p in self.params:  # = opt.zero_grad(), without its per-call profiling overhead
            p.grad = None
        sim, reg = self.terms()
        loss = sim + reg
        if not bool(torch.isfinite(loss)):
            raise FloatingPointError(self._not_finite_message(float(loss.detach()), float(sim.detach()), float(reg.detach())))
        loss.backward()
        grads = [torch.zeros_like(p) if p.grad is None else p.grad.detach() for p in self.params]
        if not all(bool(torch.isfinite(g).all()) for g in grads):
            raise FloatingPointError(
                f"{plan.fn}: the gradient of the loss is not finite at level {self.level}, iteration {self.evaluations} "
                f"(loss {float(loss.detach()):.6g}: similarity {plan.similarity!r} {float(sim.detach()):.6g}, regulariser "
                f"{float(reg.detach()):.6g}); the similarity or the regulariser has no derivative here, e.g. "
                f"'ncc'/'lncc' on an image without contrast (constant intensities)"
            )
        value = float(loss.detach())
        current = [p.detach().clone() for p in self.params]
        if plan.opt_key == "lbfgs":
            self._last = (current, loss.detach(), [g.clone() for g in grads])
        if value < self.best_loss:
            self.best_loss, self.best_params = value, current
        iteration = self.evaluations
        self.evaluations += 1
        if self.recorder.record(self.level, iteration, value, float(sim.detach()), float(reg.detach()), plan.model,
                                level_budget=self.budget):
            raise _Stop
        return loss

    def _not_finite_message(self, loss: float, sim: float, reg: float) -> str:
        plan = self.plan
        where = f"{plan.fn}: the loss became {loss} at level {self.level}, iteration {self.evaluations} (similarity {sim}, regulariser {reg})"
        if not math.isfinite(reg):
            return where + f"; the regulariser is not finite for a field of shape {plan.shapes[self.level]} (an axis too short for its differences?)"
        if self.level == 0 and self.evaluations == 0 and plan.init is None:
            return where + (f"; the similarity {plan.similarity!r} is not defined for these images at the identity "
                            f"(e.g. an image without contrast for 'ncc'/'lncc'/'mi'), so no learning rate helps")
        return where + f"; try a smaller lr (now {plan.lrs[self.level]})"

    def restore_best(self) -> None:
        """Put the best parameters evaluated on this level back into the model."""
        if self.best_params is not None:
            with torch.no_grad():
                for p, b in zip(self.params, self.best_params):
                    p.copy_(b)


def _make_optimiser(plan: RegistrationPlan, params, lr: float, evaluations: int) -> torch.optim.Optimizer:
    if plan.opt_key == "lbfgs":
        # one call of step() runs the whole level: quasi-Newton iterations with a strong-Wolfe line
        # search, at most `evaluations` evaluations of loss and gradient (each one is an "iteration")
        return torch.optim.LBFGS(params, lr=lr, max_iter=evaluations, max_eval=evaluations,
                                 line_search_fn="strong_wolfe", history_size=20, **LBFGS_OPTIONS)
    cls = OPTIMISERS[plan.opt_key] if plan.opt_key != "custom" else plan.optimiser
    return cls(params, lr=lr)  # type: ignore[call-arg]


def _lbfgs_level(opt: torch.optim.Optimizer, objective: LevelObjective, lr: float) -> None:
    """Run L-BFGS on one level with a well-scaled first step.

    PyTorch's L-BFGS starts its first line search at a step of L1 norm one, which for a field of
    many voxels moves each of them by a negligible amount (below float32 resolution of the loss).
    Instead the first trial step moves the largest parameter by ``model.first_step * lr``; later
    iterations use the quasi-Newton step (trial length ``lr``) as usual.
    """
    objective()
    flat = torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).flatten() for p in objective.params])
    g_max, g_sum = float(flat.abs().max()), float(flat.abs().sum())
    group = opt.param_groups[0]
    if g_max > 0:
        group["lr"] = getattr(objective.plan.model, "first_step", 1.0) * lr / (g_max * min(1.0, 1.0 / g_sum))
        group["max_iter"] = 1
        opt.step(objective)  # type: ignore[arg-type]
    group.update(lr=lr, max_iter=objective.budget, max_eval=objective.budget)
    opt.step(objective)  # type: ignore[arg-type]


def run_level(objective: LevelObjective) -> bool:
    """Minimise one level's objective within its budget and leave the best point evaluated in the model.

    Returns ``True`` if the callback asked to stop.
    """
    plan, level = objective.plan, objective.level
    opt = _make_optimiser(plan, objective.params, plan.lrs[level], objective.budget)
    stopped = False
    try:
        if plan.opt_key == "lbfgs":
            _lbfgs_level(opt, objective, plan.lrs[level])  # at most `budget` evaluations
        else:
            for _ in range(objective.budget):
                opt.step(objective)  # type: ignore[arg-type]
    except _BudgetSpent:
        pass  # the budget ran out inside a line search
    except _Stop:
        stopped = True
    objective.restore_best()
    return stopped


class _NullRecorder(HistoryRecorder):
    """Records nothing (for evaluations outside the optimisation)."""

    def __init__(self) -> None:  # no progress bar, no history
        pass

    def record(self, *args, **kwargs) -> bool:
        return False


def _loss_at(plan: RegistrationPlan, model: TransformationModel, fixed, moving, mask) -> float:
    """The loss of ``model`` on the full-resolution grid (no gradient, nothing recorded)."""
    objective = LevelObjective(dataclasses.replace(plan, model=model), plan.levels - 1, fixed, moving, mask, _NullRecorder())
    with torch.no_grad():
        sim, reg = objective.terms()
    return float(sim + reg)


def optimise(plan: RegistrationPlan, pair: ImagePair, recorder: HistoryRecorder) -> tuple[TransformationModel, bool, float | None]:
    """The per-level loop: optimise ``plan.model`` on every level, coarse to fine.

    Each level starts from the previous level's best point moved onto its grid
    (``model.set_level``). The result is never worse than the start: if the finest level's best loss
    is above the loss of the starting transformation (e.g. two identical images, where any step is a
    step away), the starting transformation is returned.

    Returns ``(model, stopped_early, loss)``: the model on the full-resolution grid, whether the callback
    stopped the optimisation, and the loss of the returned transformation at full resolution (``None``
    if the callback stopped before the finest level finished).
    """
    model = plan.model
    start_model = copy.deepcopy(model) if plan.levels > 1 else None
    fixed_pyr, moving_pyr = pyramid(pair.fixed, plan.shapes), pyramid(pair.moving, plan.shapes)
    mask_pyr = pyramid(pair.mask, plan.shapes) if pair.mask is not None else [None] * plan.levels
    stopped = False
    final: float | None = None
    with torch.enable_grad():  # also inside a caller's torch.no_grad()
        for level, shape in enumerate(plan.shapes):
            model.set_level(shape)
            if plan.iterations[level] == 0:
                continue
            objective = LevelObjective(plan, level, fixed_pyr[level], moving_pyr[level], mask_pyr[level], recorder)
            stopped = run_level(objective)
            if level == plan.levels - 1:
                final = objective.best_loss
            if stopped:
                break
    model.set_level(plan.full_shape)
    if stopped:
        return model, True, final
    if final is None:  # the finest level did not run: the loss of the coarse result at full resolution
        final = _loss_at(plan, model, pair.fixed, pair.moving, pair.mask)
    if start_model is not None:
        start_model.set_level(plan.full_shape)
        start_loss = _loss_at(plan, start_model, pair.fixed, pair.moving, pair.mask)
        if start_loss < final:
            return start_model, False, start_loss
    return model, False, final


# --------------------------------------------------------------------------------------------
# the public function
# --------------------------------------------------------------------------------------------

def register(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    transform: str | TransformationModel = "affine",
    similarity: str | Callable[..., torch.Tensor] | None = None,
    regulariser: str | Callable[[torch.Tensor], torch.Tensor] | None = "auto",
    weight: float | None = None,
    levels: int | None = None,
    iterations: int | Sequence[int] | None = None,
    lr: float | Sequence[float] | None = None,
    mask: torch.Tensor | None = None,
    init: RegistrationResult | torch.Tensor | None = None,
    optimiser: str | type[torch.optim.Optimizer] | None = None,
    progress: bool = True,
    callback: Callback | None = None,
    snapshot_every: int = 0,
    **model_kwargs: Any,
) -> RegistrationResult:
    r"""Register ``moving`` to ``fixed`` by iterative optimisation on a resolution pyramid.

    Minimises :math:`\mathcal{L}_{sim}(F, M \circ T_\theta) + \lambda R(u_\theta)` over the parameters
    of the transformation model, level by level from coarse to fine; each level starts from the
    previous level's transformation moved onto its grid.

    Args:
        fixed, moving: images ``(B, C, H, W)`` or ``(B, C, D, H, W)`` of the same spatial size (batch 1
            is broadcast). ``B`` pairs are registered at once, each with its own transformation.
        transform: ``"translation"``, ``"rigid"``, ``"affine"`` (matrices, parameterised about the image
            centre), ``"bspline"`` (free-form deformation; keywords ``spacing`` = control-point spacing in
            voxels, ``diffeomorphic`` = read the B-spline field as a velocity and integrate it, ``steps``;
            register's defaults: spacing 4, diffeomorphic with 4 squarings, i.e. no folding), ``"dense"``
            (one vector per grid point; keywords ``sigma`` = Gaussian smoothing of the parameter field,
            default 1, and ``grid_factor`` = parameter grid this many times coarser than the image,
            default 2 in 3D and 1 in 2D), ``"svf"`` (diffeomorphic: stationary velocity integrated by
            scaling and squaring; keywords ``sigma``, ``grid_factor``, ``steps`` = 7), or a
            :class:`~regedu.registration.models.TransformationModel` instance (used as it is).
        similarity: ``"mse"``, ``"ssd"``, ``"ncc"``, ``"lncc"``, ``"mi"`` (mutual information, for
            multi-modal pairs; with a matrix model a 3D level above ``MI_SAMPLE_ABOVE`` = 2^14 voxels builds
            its histogram from a fixed random ``MI_SAMPLES`` = 25 % of the voxels, see
            ``mutual_information(samples=)``, and interpolates the moving image at those voxels only)
            or any callable ``loss(fixed, moved, mask=None) -> scalar`` to minimise
            (a learned similarity network plugs in here unchanged). Default (``None``): ``"lncc"``
            (``DEFAULT_SIMILARITY``) for the deformable models, robust to the intensity differences between
            two scans of one modality, and global ``"ncc"`` (``DEFAULT_MATRIX_SIMILARITY``) for the matrix
            models, as accurate there and ~10x cheaper per evaluation; use ``"mi"`` for two modalities.
        regulariser: ``"diffusion"``, ``"bending"``, a callable ``field -> scalar``, ``None`` (none), or
            ``"auto"``: none for matrices, bending energy for B-splines, diffusion for dense and SVF
            (acting on the velocity).
        weight: :math:`\lambda`. ``None`` picks a default for the regulariser and the similarity
            (``DEFAULT_WEIGHTS``); ``0`` switches the regulariser off.
        levels: pyramid levels (each halves the size). Default: up to 3, each halving every axis that
            keeps at least 16 voxels (matrices) or 32 voxels (deformable models) on the coarsest level;
            thinner axes keep their size (e.g. matrices: 3 levels for a 96 x 80 slice and for a
            128 x 128 x 10 slab; deformable: 2 for 96 x 80, 3 for 192 x 160). A similarity callable
            marked ``full_resolution_only = True`` (the learned similarities ``SimilarityNet.as_loss()`` and
            ``feature_similarity``, trained on full-resolution images) gets one level by default.
        iterations: per level, one number or one per level (coarse to fine). One iteration is one
            evaluation of loss and gradient: a step of Adam, or one evaluation of L-BFGS (its line
            searches included). Defaults in ``DEFAULTS``: Adam (100, 60, 30) for matrices; L-BFGS
            (20, 15, 8) for B-splines and (20, 20, 10) for dense and SVF (the finest entries when there are fewer levels; a
            single level gets the budget of the two finest).
        lr: learning rate (one number or one per level). Units for Adam: voxels for deformable models;
            for matrices the linear part and the translation in units of the image radius (scale-aware, so
            one rate suits rotation and translation). Default 0.02 (translation, rigid), 0.01 (affine),
            0.2 (deformable); 1 for L-BFGS (the step its line search starts from).
        mask: optional fixed-image mask ``(B or 1, 1, *spatial)``; the similarity is computed inside it
            (a Gaussian-smoothed copy on coarser levels).
        init: an initial transformation (a previous :class:`RegistrationResult`, a matrix ``(n+1, n+1)``
            or ``(B, n+1, n+1)``, or a DVF): the model starts at the identity and is composed with it,
            ``moved(x) = moving(T_init(T_model(x)))`` (e.g. affine first, then deformable).
        optimiser: ``"adam"``, ``"adamw"``, ``"sgd"``, ``"rmsprop"``, ``"lbfgs"`` or a ``torch.optim``
            class (called as ``cls(params, lr=lr)``). Default: Adam for matrices, L-BFGS (strong-Wolfe line
            search) for deformable models.
        progress: show a ``tqdm.auto`` progress bar.
        callback: ``callback(level, iteration, loss, model)`` after every iteration; return ``True`` to
            stop early.
        snapshot_every: record ``(iteration, moved, dvf)`` at full resolution every that many iterations
            (0: never) in ``history["snapshots"]``, for playback widgets.
        **model_kwargs: passed to the model (``spacing``, ``sigma``, ``steps``).

    Returns:
        A :class:`RegistrationResult` (``matrix``, ``dvf``, ``moved``, ``warp``, ``warp_labels``,
        ``history``, ``time``).

    Example:
        >>> affine = regedu.register(fixed, moving, transform="affine")
        >>> result = regedu.register(fixed, moving, transform="bspline", init=affine)  # the recommended model
        >>> multimodal = regedu.register(t2, t1, transform="affine", similarity="mi")
    """
    fn = "register"
    start = time.perf_counter()
    pair = check_pair(fn, fixed, moving, mask)
    with threads_for(pair.fixed.device, math.prod(pair.shape)):
        if isinstance(transform, str) and transform in DEFAULTS:
            model_kwargs = {**DEFAULTS[transform].get("model", {}), **model_kwargs}
        model = _make_model(fn, transform, pair.shape, pair.batch, model_kwargs)
        defaults = DEFAULTS.get(model.name, DEFAULTS["dense"])
        if similarity is None:
            similarity = DEFAULT_MATRIX_SIMILARITY if model.parametric else DEFAULT_SIMILARITY
        loss_fn, sim_name = _choose_similarity(fn, similarity,
                                               sample_mi=model.parametric)
        reg_fn, weight = _choose_regulariser(fn, regulariser, weight, defaults["regulariser"], sim_name)
        if levels is None and getattr(similarity, FULL_RESOLUTION_ONLY, False):
            levels = 1  # a learned similarity knows only the image scale it was trained on (see FULL_RESOLUTION_ONLY)
        shapes = plan_levels(fn, pair.shape, levels, DEFAULT_LEVELS, defaults.get("coarsest", MIN_LEVEL_SIZE))
        opt_key = _optimiser_key(fn, defaults["optimiser"] if optimiser is None else optimiser)
        default_iters, default_lr = defaults["lbfgs" if opt_key == "lbfgs" else "adam"]
        lrs = per_level(fn, "lr", default_lr if lr is None else lr, len(shapes), float)
        if any(not (v > 0 and math.isfinite(v)) for v in lrs):
            raise ValueError(f"{fn}: lr must be a positive finite number (or one per level), got {lr!r}")
        init_t = _init_transform(fn, init, pair.ndim, pair.shape, pair.batch, pair.fixed.device, pair.fixed.dtype)
        if init_t is not None and init_t[0] == "dvf" and model.parametric:
            raise ValueError(f"{fn}: a {model.name!r} model can only start from a matrix, but init is a displacement field")
        plan = RegistrationPlan(
            fn=fn, model=model.to(device=pair.fixed.device, dtype=pair.fixed.dtype), loss=loss_fn, similarity=sim_name,
            regulariser=reg_fn, weight=weight, shapes=shapes, iterations=plan_iterations(fn, iterations, default_iters, len(shapes)),
            lrs=lrs, optimiser=defaults["optimiser"] if optimiser is None else optimiser, opt_key=opt_key, init=init_t,
        )
        recorder = HistoryRecorder(fn, sum(plan.iterations), f"register ({model.name}, {sim_name})", progress, snapshot_every,
                                   snapshot=lambda: _moved_and_dvf(plan, pair.moving),
                                   callback=callback, start=start)
        try:
            model, stopped, final_loss = optimise(plan, pair, recorder)
        finally:
            recorder.close()
        matrix, dvf, moved = full_resolution(plan, model, pair.moving)
    return RegistrationResult(
        dvf=dvf.detach(),
        moved=_as_input_dtype(moved.detach(), moving),
        matrix=None if matrix is None else matrix.detach(),
        history=recorder.history,
        time=time.perf_counter() - start,
        transform=model.name,
        model=model,
        velocity=model.velocity().detach() if isinstance(model, SVFModel) else None,
        stopped_early=stopped,
        loss=final_loss,
    )


def _moved_and_dvf(plan: RegistrationPlan, moving: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(moved, dvf)`` at full resolution, for the history's snapshots."""
    _, dvf, moved = full_resolution(plan, plan.model, moving)
    return moved, dvf


def _as_input_dtype(moved: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
    """The moved image in the moving image's dtype if that is a floating dtype (half precision is computed in float32)."""
    return moved.to(moving.dtype) if moving.is_floating_point() else moved
