r"""Iterative registration: transformation model x similarity measure x optimisation.

:func:`register` solves the lecture's optimisation problem

.. math:: \hat\theta = \arg\min_\theta \; \mathcal{L}_{sim}\big(F, M \circ T_\theta\big) + \lambda\, R(u_\theta)

by gradient descent (Adam by default) on a resolution pyramid, coarse to fine. The pieces are
interchangeable: the transformation model (:mod:`regedu.registration.models`), the similarity loss
(:func:`regedu.similarity.get_loss`: a name or any callable ``loss(fixed, moved, mask=None)``, e.g. a
learned similarity network), the regulariser :math:`R` with its weight :math:`\lambda`
(:mod:`regedu.regularisers`) and the optimiser (any ``torch.optim`` class).
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .._checks import _shape, check_affine, check_choice, check_dvf, check_image, check_same_spatial
from ..fields import compose
from ..regularisers import get_regulariser
from ..similarity import LOSSES, get_loss
from ..spatial_transformer import affine_to_dvf, affine_warp, image_pyramid, resize_dvf, warp
from .models import MODELS, SVFModel, TransformationModel, rescale_matrix
from .result import RegistrationResult

# Defaults per transformation model, tuned on 2D brain slices (80-192 voxels a side) and brain volumes
# (benchmarks/iterative.py). "optimiser" is the default optimiser; "adam"/"lbfgs" give (iterations per
# level, coarse to fine: with fewer levels the finest entries are used; learning rate) for that
# optimiser (other optimisers use the "adam" entry; a one-level pyramid gets the sum of the two finest
# entries). For L-BFGS an iteration is one evaluation of loss and gradient (line searches included). "coarsest": the default pyramid has as many levels (at most
# 3) as keep the coarsest level at least this many voxels along every axis.
DEFAULTS: dict[str, dict[str, Any]] = {
    "translation": dict(optimiser="adam", adam=((100, 60, 30), 0.02), lbfgs=((20, 10, 5), 1.0), regulariser=None, coarsest=16),
    "rigid": dict(optimiser="adam", adam=((100, 60, 30), 0.02), lbfgs=((20, 10, 5), 1.0), regulariser=None, coarsest=16),
    "affine": dict(optimiser="adam", adam=((100, 60, 30), 0.01), lbfgs=((20, 10, 5), 1.0), regulariser=None, coarsest=16),
    "bspline": dict(optimiser="lbfgs", adam=((100, 80, 50), 0.2), lbfgs=((20, 20, 10), 1.0), regulariser="bending", coarsest=32),
    "dense": dict(optimiser="lbfgs", adam=((100, 80, 50), 0.2), lbfgs=((40, 40, 30), 1.0), regulariser="diffusion", coarsest=32),
    "svf": dict(optimiser="lbfgs", adam=((100, 80, 50), 0.2), lbfgs=((40, 40, 30), 1.0), regulariser="diffusion", coarsest=32),
}
# regulariser weights per similarity (the similarities have different scales: the MSE of [0, 1] images
# is small, LNCC/NCC/MI losses are of order 1; SSD grows with the number of voxels, its weights suit
# images of about 10^4 voxels: prefer "mse")
DEFAULT_WEIGHTS: dict[str, dict[str, float]] = {
    "diffusion": {"mse": 0.01, "ssd": 100.0, "ncc": 0.5, "lncc": 0.5, "mi": 0.5, "callable": 0.1},
    "bending": {"mse": 0.1, "ssd": 1000.0, "ncc": 1.0, "lncc": 1.0, "mi": 1.0, "callable": 0.1},
}
DEFAULT_LEVELS = 3
MIN_LEVEL_SIZE = 8
# L-BFGS stops a level early when the loss changes by less than this between two iterations
LBFGS_OPTIONS: dict[str, float] = {"tolerance_change": 0.0, "tolerance_grad": 0.0}

OPTIMISERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "lbfgs": torch.optim.LBFGS,
}

Callback = Callable[[int, int, float, nn.Module], Any]


def _level_shapes(shape: Sequence[int], levels: int) -> list[tuple[int, ...]]:
    """Spatial shapes of :func:`regedu.image_pyramid`, coarsest first."""
    out = [tuple(shape)]
    for _ in range(levels - 1):
        out.append(tuple(max(2, int(round((s - 1) / 2.0)) + 1) for s in out[-1]))
    return out[::-1]


def _max_levels(shape: Sequence[int], coarsest: int = MIN_LEVEL_SIZE, most: int = 8) -> int:
    """The most levels (up to ``most``) whose coarsest level keeps ``coarsest`` voxels along every axis."""
    n = 1
    while n < most and min(_level_shapes(shape, n + 1)[0]) >= coarsest:
        n += 1
    return n


def _per_level(fn: str, name: str, value: Any, levels: int, cast: type) -> list:
    """A value per level (coarse to fine) from one value or a sequence; a longer default sequence keeps its finest entries."""
    if isinstance(value, (list, tuple)):
        if len(value) != levels:
            raise ValueError(f"{fn}: {name} must be one value or {levels} values (one per level, coarse to fine), got {value!r}")
        return [cast(v) for v in value]
    return [cast(value)] * levels


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


class _Stop(Exception):
    """Raised inside the optimisation when the callback asks to stop."""


class _BudgetSpent(Exception):
    """Raised when an L-BFGS line search asks for more evaluations than the level's budget."""


def _make_optimiser(optimiser, key: str, params, lr: float, evaluations: int) -> torch.optim.Optimizer:
    if key == "lbfgs":
        # one call of step() runs the whole level: quasi-Newton iterations with a strong-Wolfe line
        # search, at most `evaluations` evaluations of loss and gradient (each one is an "iteration")
        return torch.optim.LBFGS(params, lr=lr, max_iter=evaluations, max_eval=evaluations,
                                 line_search_fn="strong_wolfe", history_size=20, **LBFGS_OPTIONS)
    cls = OPTIMISERS[key] if key != "custom" else optimiser
    return cls(params, lr=lr)


def _similarity_name(similarity) -> str:
    if isinstance(similarity, str):
        return similarity.lower()
    return "callable"


def _init_transform(fn: str, init, ndim: int, shape, batch: int, device, dtype):
    """``init`` as ``("matrix", A)`` (full-resolution voxels) or ``("dvf", u)`` or ``None``."""
    if init is None:
        return None
    if isinstance(init, RegistrationResult):
        init = init.matrix if init.matrix is not None else init.dvf
    if not isinstance(init, torch.Tensor):
        raise TypeError(f"{fn}: init must be a RegistrationResult, an affine matrix or a DVF tensor, got {type(init).__name__}")
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


SMALL_PROBLEM_VOXELS = 2**18


@contextlib.contextmanager
def _threads_for(device: torch.device, voxels: int):
    """Run small CPU problems on one thread.

    Below ``SMALL_PROBLEM_VOXELS`` voxels per image every operation is so short that splitting it over
    threads costs more than it gains (on a busy machine, much more); the setting is restored after.
    """
    if device.type != "cpu" or voxels >= SMALL_PROBLEM_VOXELS or torch.get_num_threads() == 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def register(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    transform: str | TransformationModel = "affine",
    similarity: str | Callable[..., torch.Tensor] = "mse",
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
            centre), ``"bspline"`` (free-form deformation; keyword ``spacing`` = control-point spacing in
            voxels, default 8), ``"dense"`` (one vector per voxel; keyword ``sigma`` = Gaussian smoothing
            of the parameter field, default 1 voxel), ``"svf"`` (diffeomorphic: stationary velocity
            integrated by scaling and squaring; keywords ``sigma``, ``steps`` = 7), or a
            :class:`~regedu.registration.models.TransformationModel` instance.
        similarity: ``"mse"``, ``"ssd"``, ``"ncc"``, ``"lncc"``, ``"mi"`` (mutual information, for
            multi-modal pairs) or any callable ``loss(fixed, moved, mask=None) -> scalar`` to minimise
            (a learned similarity network plugs in here unchanged).
        regulariser: ``"diffusion"``, ``"bending"``, a callable ``field -> scalar``, ``None`` (none), or
            ``"auto"``: none for matrices, bending energy for B-splines, diffusion for dense and SVF
            (acting on the velocity).
        weight: :math:`\lambda`. ``None`` picks a default for the regulariser and the similarity
            (``DEFAULT_WEIGHTS``); ``0`` switches the regulariser off.
        levels: pyramid levels (each halves the size). Default: 3 for matrices; for deformable models as
            many (at most 3) as keep the coarsest level at least 32 voxels along every axis (e.g. 2 for a
            96 x 80 slice, 3 for 192 x 160).
        iterations: per level, one number or one per level (coarse to fine). One iteration is one
            evaluation of loss and gradient: a step of Adam, or one evaluation of L-BFGS (its line
            searches included). Defaults in ``DEFAULTS``: Adam (100, 60, 30) for matrices; L-BFGS
            (20, 20, 10) for B-splines and (40, 40, 30) for dense and SVF (the finest entries when there
            are fewer levels; a single level gets the budget of the two finest).
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
        >>> result = regedu.register(fixed, moving, transform="affine", similarity="mi")
        >>> deformable = regedu.register(fixed, moving, transform="svf", similarity="lncc", init=result)
    """
    # bad input is reported by _register; only a valid image batch chooses the thread count
    threads = (_threads_for(fixed.device, math.prod(fixed.shape[2:]))
               if isinstance(fixed, torch.Tensor) and fixed.dim() in (4, 5) else contextlib.nullcontext())
    with threads:
        return _register(fixed, moving, transform, similarity, regulariser, weight, levels, iterations, lr, mask,
                         init, optimiser, progress, callback, snapshot_every, **model_kwargs)


def _register(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    transform: str | TransformationModel = "affine",
    similarity: str | Callable[..., torch.Tensor] = "mse",
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
    """Implementation of :func:`register` (arguments already documented there)."""
    fn = "register"
    start = time.perf_counter()
    fixed = check_image(fn, "fixed", fixed)
    moving = check_image(fn, "moving", moving)
    check_same_spatial(fn, "fixed", fixed, "moving", moving,
                       hint=f"resample the moving image first, e.g. regedu.resize(moving, shape={tuple(fixed.shape[2:])})")
    if fixed.shape[1] != moving.shape[1]:
        raise ValueError(f"{fn}: fixed and moving must have the same number of channels, got {fixed.shape[1]} and {moving.shape[1]}")
    if not fixed.is_floating_point() or not moving.is_floating_point():
        raise TypeError(f"{fn}: fixed and moving must be floating-point images, got {fixed.dtype} and {moving.dtype}")
    moving = moving.to(fixed.dtype)
    ndim = fixed.dim() - 2
    shape = tuple(fixed.shape[2:])
    batch = max(fixed.shape[0], moving.shape[0])
    device, dtype = fixed.device, fixed.dtype
    if mask is not None:
        mask = check_image(fn, "mask", mask)
        check_same_spatial(fn, "fixed", fixed, "mask", mask)
        if mask.shape[1] != 1:
            raise ValueError(f"{fn}: mask must have one channel, got shape {_shape(mask)}")
        mask = mask.to(device=device, dtype=dtype)
        if float(mask.sum()) == 0:
            raise ValueError(f"{fn}: mask is empty (all zero); nothing to compare")

    loss_fn = get_loss(similarity) if callable(similarity) else None
    if loss_fn is None:
        if not isinstance(similarity, str) or similarity.lower() not in LOSSES:
            raise ValueError(f"{fn}: similarity must be one of {', '.join(repr(k) for k in LOSSES)} or a callable loss(fixed, moved, mask=None), got {similarity!r}")
        loss_fn = get_loss(similarity)
    sim_name = _similarity_name(similarity)

    model = _make_model(fn, transform, shape, batch, model_kwargs)
    name = model.name
    defaults = DEFAULTS.get(name, DEFAULTS["dense"])

    # regulariser and weight
    if isinstance(regulariser, str) and regulariser == "auto":
        regulariser = defaults["regulariser"]
    reg_fn = None
    if regulariser is not None:
        if not callable(regulariser) and not (isinstance(regulariser, str) and regulariser in ("diffusion", "bending", "bending_energy")):
            raise ValueError(f"{fn}: regulariser must be 'diffusion', 'bending', 'auto', None or a callable, got {regulariser!r}")
        reg_fn = get_regulariser(regulariser)
        if weight is None:
            key = "bending" if regulariser in ("bending", "bending_energy") else "diffusion"
            weight = DEFAULT_WEIGHTS[key].get(sim_name, DEFAULT_WEIGHTS[key]["callable"]) if isinstance(regulariser, str) else 0.1
    weight = 0.0 if weight is None else float(weight)
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"{fn}: weight must be a finite number >= 0, got {weight}")
    if weight > 0 and reg_fn is None:
        raise ValueError(f"{fn}: weight={weight} was given but regulariser is None; name a regulariser ('diffusion', 'bending')")

    # pyramid
    if levels is None:
        levels = _max_levels(shape, defaults.get("coarsest", MIN_LEVEL_SIZE), DEFAULT_LEVELS)
    if not isinstance(levels, int) or levels < 1:
        raise ValueError(f"{fn}: levels must be a positive integer, got {levels!r}")
    shapes = _level_shapes(shape, levels)
    if levels > 1 and min(shapes[0]) < MIN_LEVEL_SIZE:
        raise ValueError(
            f"{fn}: levels={levels} makes the coarsest level {shapes[0]} smaller than {MIN_LEVEL_SIZE} voxels along an axis; "
            f"use levels <= {_max_levels(shape)} for an image of shape {shape}"
        )
    if optimiser is None:
        optimiser = defaults["optimiser"]
    opt_key = _optimiser_key(fn, optimiser)
    default_iters, default_lr = defaults["lbfgs" if opt_key == "lbfgs" else "adam"]
    default_iters = list(default_iters)
    if iterations is None:
        if levels == 1:  # no pyramid: the whole budget of the two finest levels goes to the one level
            iterations = [sum(default_iters[-2:])]
        else:
            iterations = default_iters[-levels:] if levels <= len(default_iters) else [default_iters[0]] * (levels - len(default_iters)) + default_iters
    iters = _per_level(fn, "iterations", iterations, levels, int)
    if any(i < 0 for i in iters):
        raise ValueError(f"{fn}: iterations must be >= 0, got {iterations!r}")
    lrs = _per_level(fn, "lr", default_lr if lr is None else lr, levels, float)
    if any(not (v > 0 and math.isfinite(v)) for v in lrs):
        raise ValueError(f"{fn}: lr must be positive, got {lr!r}")
    if not isinstance(snapshot_every, int) or snapshot_every < 0:
        raise ValueError(f"{fn}: snapshot_every must be a non-negative integer, got {snapshot_every!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"{fn}: callback must be callable as callback(level, iteration, loss, model), got {type(callback).__name__}")
    init_t = _init_transform(fn, init, ndim, shape, batch, device, dtype)
    if init_t is not None and init_t[0] == "dvf" and model.parametric:
        raise ValueError(f"{fn}: a {name!r} model can only start from a matrix, but init is a displacement field")

    model = model.to(device=device, dtype=dtype)
    fixed_pyr = image_pyramid(fixed, levels)
    moving_pyr = image_pyramid(moving, levels)
    mask_pyr = image_pyramid(mask, levels) if mask is not None else [None] * levels

    history: dict[str, list[Any]] = {k: [] for k in ("loss", "similarity", "regulariser", "level", "iteration", "time")}
    history["snapshots"] = []

    def transformed(m_img: torch.Tensor, init_l) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The moved image on the current level and the field to regularise."""
        if model.parametric:
            A = _total_matrix(model.matrix(), init_l)
            moved = affine_warp(m_img, A)
            field = model.displacement() if reg_fn is not None and weight > 0 else None
            return moved, field
        u, field = model()
        moved = warp(m_img, _total_displacement(u, init_l))
        return moved, field if reg_fn is not None and weight > 0 else None

    def full_resolution() -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """(matrix, dvf, moved) of the current parameters on the full-resolution grid."""
        with torch.no_grad():
            if model.parametric:
                A = model.full_matrix() if hasattr(model, "full_matrix") else rescale_matrix(model.matrix(), model.shape, shape)
                A = _total_matrix(A, init_t)
                return A, affine_to_dvf(A, shape), affine_warp(moving, A)
            u = model.displacement()
            if model.shape != shape:
                u = resize_dvf(u, shape)
            total = _total_displacement(u, init_t)
            return None, total, warp(moving, total)

    from tqdm.auto import tqdm

    bar = tqdm(total=sum(iters), desc=f"register ({name}, {sim_name})", disable=not progress, leave=False)
    counter: dict[str, Any] = {"step": 0, "it": 0, "stopped": False}

    def evaluate(level: int, f_l, m_l, k_l, init_l, opt) -> torch.Tensor:
        """One evaluation of loss and gradient: records the history, takes snapshots, calls the callback."""
        if memo["params"] is not None and all(torch.equal(p, q) for p, q in zip(params, memo["params"])):
            # L-BFGS re-evaluates the point it stopped at when step() is called again: reuse it
            for p, g in zip(params, memo["grads"]):
                p.grad = g.clone()
            return memo["loss"]
        if opt_key == "lbfgs" and counter["it"] >= iters[level]:
            raise _BudgetSpent
        for p in params:  # = opt.zero_grad(), without its per-call profiling overhead
            p.grad = None
        moved, field = transformed(m_l, init_l)
        sim = loss_fn(f_l, moved, mask=k_l) if k_l is not None else loss_fn(f_l, moved)
        if not isinstance(sim, torch.Tensor) or sim.numel() != 1:
            got = type(sim).__name__ + ("" if not isinstance(sim, torch.Tensor) else f" of shape {tuple(sim.shape)}")
            raise ValueError(f"{fn}: the similarity loss must return a scalar tensor, got {got}")
        sim = sim.reshape(())
        reg = weight * reg_fn(field) if field is not None else torch.zeros((), device=device, dtype=dtype)
        loss = sim + reg
        it = counter["it"]
        if not bool(torch.isfinite(loss)):
            raise FloatingPointError(
                f"{fn}: the loss became {float(loss.detach())} at level {level}, iteration {it} "
                f"(similarity {float(sim.detach())}, regulariser {float(reg.detach())}); try a smaller lr (now {lrs[level]})"
            )
        loss.backward()
        loss_value = float(loss.detach())
        if opt_key == "lbfgs":
            memo.update(params=[p.detach().clone() for p in params], loss=loss.detach(),
                        grads=[torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params])
            if loss_value < best["loss"]:
                best["loss"], best["params"] = loss_value, memo["params"]
        history["loss"].append(loss_value)
        history["similarity"].append(float(sim.detach()))
        history["regulariser"].append(float(reg.detach()))
        history["level"].append(level)
        history["iteration"].append(counter["step"])
        history["time"].append(time.perf_counter() - start)
        counter["step"] += 1
        counter["it"] += 1
        bar.update(1)
        if progress and (it % 10 == 0 or it == iters[level] - 1):
            bar.set_postfix(level=level, loss=f"{loss_value:.4g}")
        if snapshot_every and counter["step"] % snapshot_every == 0:
            _, dvf_s, moved_s = full_resolution()
            history["snapshots"].append((counter["step"], moved_s.detach().cpu(), dvf_s.detach().cpu()))
        if callback is not None and callback(level, it, loss_value, model) is True:
            raise _Stop
        return loss

    params: list[torch.Tensor] = []
    best: dict[str, Any] = {}
    memo: dict[str, Any] = {"params": None}

    def lbfgs_level(opt: torch.optim.Optimizer, closure, level: int) -> None:
        """Run L-BFGS on one level with a well-scaled first step.

        PyTorch's L-BFGS starts its first line search at a step of L1 norm one, which for a field of
        many voxels moves each of them by a negligible amount (below float32 resolution of the loss).
        Instead the first trial step moves the largest parameter by ``model.first_step * lr``; later
        iterations use the quasi-Newton step (trial length ``lr``) as usual.
        """
        closure()
        flat = torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).flatten() for p in params])
        g_max, g_sum = float(flat.abs().max()), float(flat.abs().sum())
        group = opt.param_groups[0]
        if g_max > 0:
            group["lr"] = getattr(model, "first_step", 1.0) * lrs[level] / (g_max * min(1.0, 1.0 / g_sum))
            group["max_iter"] = 1
            opt.step(closure)
        group.update(lr=lrs[level], max_iter=iters[level], max_eval=iters[level])
        opt.step(closure)

    def run_levels() -> None:
        for level in range(levels):
            model.set_level(shapes[level])
            if iters[level] == 0:
                continue
            f_l, m_l, k_l = fixed_pyr[level], moving_pyr[level], mask_pyr[level]
            init_l = _init_at(init_t, shape, shapes[level])
            params[:] = list(model.parameters())
            opt = _make_optimiser(optimiser, opt_key, params, lrs[level], iters[level])
            closure = functools.partial(evaluate, level, f_l, m_l, k_l, init_l, opt)
            counter["it"] = 0
            best.update(loss=math.inf, params=None)
            memo.update(params=None)
            try:
                if opt_key == "lbfgs":
                    lbfgs_level(opt, closure, level)  # the whole level (at most iters[level] evaluations)
                else:
                    for _ in range(iters[level]):
                        opt.step(closure)
            except _BudgetSpent:
                # the budget ran out inside a line search: go back to the best point evaluated
                with torch.no_grad():
                    for p, b in zip(params, best["params"]):
                        p.copy_(b)
            except _Stop:
                counter["stopped"] = True
                return

    try:
        with torch.enable_grad():  # also inside a caller's torch.no_grad()
            run_levels()
    finally:
        bar.close()

    model.set_level(shape)
    matrix, dvf, moved = full_resolution()
    velocity = model.velocity().detach() if isinstance(model, SVFModel) else None
    return RegistrationResult(
        dvf=dvf.detach(),
        moved=moved.detach(),
        matrix=None if matrix is None else matrix.detach(),
        history=history,
        time=time.perf_counter() - start,
        transform=name,
        model=model,
        velocity=velocity,
        stopped_early=counter["stopped"],
    )
