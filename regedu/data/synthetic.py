r"""Synthetic subjects, registration pairs with a known ground truth, and a second MR contrast.

**Synthetic subjects.** A subject is the template warped by a random deformation (pull-back):

.. math:: S(x) = T(\varphi(x)), \qquad \varphi(x) = A\,(x + v(x)), \qquad u = \varphi - \mathrm{Id},

where ``v`` is the displacement of :math:`\exp(w)` for a random smooth stationary velocity field
``w``, integrated by scaling and squaring (:func:`regedu.fields.integrate_velocity`; Arsigny et al.
2006), so the non-linear part is a diffeomorphism, and ``A`` an optional random affine matrix about
the image centre. Labels are warped with nearest neighbour. Then the intensities change
independently of the anatomy: a gamma curve :math:`I \mapsto I^{\gamma}`, a smooth multiplicative bias
field :math:`e^{b(x)}` (cubic B-spline of a coarse random grid) and Gaussian noise.
Everything is drawn from a ``torch.Generator`` seeded with ``seed``: the same seed gives the same
subject on every machine.

**Two deformation models, two seed ranges.** Training and held-out evaluation deliberately use
*different* generators, so a network cannot score well by learning to undo its own generator:

* ``model="svf"`` (training): Gaussian-smoothed white noise on a coarse grid, upsampled (standard
  deviation ``smoothness`` voxels), as velocity; seeds of training items are drawn from
  ``[0, 2**31)``.
* ``model="bspline"`` (evaluation): cubic B-spline control grid (control-point spacing ``spacing``
  voxels) with random coefficients as velocity; evaluation items use seeds
  ``EVAL_SEED_OFFSET + 100_000 * seed + i`` (``>= 2**31``, disjoint from training).

**Pairs** (:class:`PairDataset`). Each item starts from a random subject ``M0 = T o phi_a``
(``moving``) and a random ground-truth deformation ``u`` (pull-back):

.. math:: F_0(x) = M_0(x + u(x)) \quad\text{computed as}\quad F_0 = T \circ \varphi_a \circ (\mathrm{Id} + u)
          = \mathrm{warp}(T, \mathrm{compose}(u_a, u)),

one interpolation of the template for each image, so both are equally sharp and
``warp(moving_clean, dvf) == fixed_clean`` up to interpolation. The fixed labels are the moving
labels warped by the ground truth (nearest neighbour), so ``warp(moving_labels, dvf, mode="nearest")``
equals ``fixed_labels`` exactly. Intensity changes are then added independently to the fixed and the
moving image. Training mode draws a fresh pair for every item
("on the fly": Eppenhof & Pluim, 2018, *Pulmonary CT registration through supervised learning with
convolutional neural networks*, IEEE TMI 38(5)); evaluation mode returns the same seeded pairs every
time.

**Second contrast.** :func:`t2_like` maps tissue probabilities to T2-like intensities (CSF bright,
grey matter intermediate, white matter dark), smoothed, plus noise: a pair with known alignment
for mutual information.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import torch
from torch.utils.data import Dataset

from .._checks import check_choice
from ..fields import bspline_grid_shape, bspline_weights, compose, integrate_velocity, scale_to_max
from ..filters import gaussian_blur
from ..filters import separable_apply as _separable_apply
from ..resampling import resize_dvf
from ..transforms import affine_matrix
from ..warping import identity_grid, warp
from .volume import Volume

MODELS = ("svf", "bspline")
EVAL_SEED_OFFSET = 2**31
T2_CONTRAST = (0.0, 1.0, 0.55, 0.3)  # background, CSF, grey matter, white matter


# ----------------------------------------------------------------------------- random fields
def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _randn(gen: torch.Generator, shape, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=like.dtype).to(like.device)


def _rand(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen))


def _coarse_shape(shape: Sequence[int], factor: float) -> tuple[int, ...]:
    # ceil, not regedu.resampling.coarse_shape's round: changing it would change every seeded data set
    return tuple(max(2, int(math.ceil((s - 1) / factor)) + 1) for s in shape)


def _nonneg(fn: str, name: str, value: object, allow_none: bool = False) -> None:
    """Raise unless ``value`` is a finite number >= 0 (a strength, a noise level, a displacement in voxels)."""
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    if not ok:
        raise ValueError(f"{fn}: {name} must be a finite number >= 0, got {value!r}")


def _amplitudes(fn: str, amplitude: float | Sequence[float] | torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
    a = torch.as_tensor(amplitude, dtype=like.dtype).to(like.device).reshape(-1)
    if a.numel() == 1:
        a = a.expand(batch)
    if a.numel() != batch or bool((a < 0).any()):
        raise ValueError(f"{fn}: the amplitude must be one non-negative number or one per field ({batch}), "
                         f"got {amplitude!r}")
    return a


def _bspline_field(coef: torch.Tensor, shape: Sequence[int], spacing: Sequence[float]) -> torch.Tensor:
    """Cubic B-spline interpolation of control-point values ``(B, C, *grid)`` onto ``shape`` (any C)."""
    mats = [bspline_weights(int(n), float(sp), coef.shape[2 + axis], coef.dtype, coef.device)
            for axis, (n, sp) in enumerate(zip(shape, spacing))]
    return _separable_apply(coef, mats)


@lru_cache(maxsize=64)
def _smoothing_matrix(n_out: int, n_coarse: int, sigma: float) -> torch.Tensor:
    """``(n_out, n_coarse)``: Gaussian smoothing (std ``sigma`` coarse voxels, radius 3 sigma, kernel
    renormalised at the borders) followed by linear upsampling (``align_corners=True``)."""
    i = torch.arange(n_coarse, dtype=torch.float64)
    K = torch.exp(-0.5 * ((i[:, None] - i[None, :]) / sigma) ** 2)
    K = K * ((i[:, None] - i[None, :]).abs() <= max(1.0, math.ceil(3 * sigma)))
    K = K / K.sum(1, keepdim=True)
    x = torch.arange(n_out, dtype=torch.float64) * (n_coarse - 1) / max(n_out - 1, 1)
    U = (1 - (x[:, None] - i[None, :]).abs()).clamp_min(0)  # linear interpolation weights
    return (U @ K).float()


def random_velocity(
    shape: Sequence[int],
    max_velocity: float | Sequence[float] | torch.Tensor,
    model: str = "svf",
    smoothness: float | None = None,
    spacing: float | None = None,
    seed: int | torch.Generator = 0,
    batch: int = 1,
    like: torch.Tensor | None = None,
) -> torch.Tensor:
    """Random smooth stationary velocity fields ``(batch, ndim, *shape)`` in voxels, zero mean.

    ``model="svf"``: white noise on a grid ``smoothness / 2`` times coarser, Gaussian-smoothed with
    standard deviation ``smoothness`` voxels (default ``min(shape) / 10``) and linearly upsampled.
    ``model="bspline"``: cubic B-spline with control points every ``spacing`` voxels (default
    ``min(shape) / 5``) and standard-normal coefficients. Field ``b`` is scaled so that its longest
    vector has length ``max_velocity`` (one number, or one per field). ``like``: a tensor whose dtype
    and device the result takes (default float32 on the CPU).
    """
    check_choice("random_velocity", "model", model, MODELS)
    shape = tuple(int(s) for s in shape)
    ndim = len(shape)
    if ndim not in (2, 3) or min(shape) < 4:
        raise ValueError(f"random_velocity: shape must be 2 or 3 sizes of at least 4, got {shape}")
    gen = seed if isinstance(seed, torch.Generator) else _gen(seed)
    like = torch.empty(0) if like is None else like
    amp = _amplitudes("random_velocity", max_velocity, batch, like)
    if model == "svf":
        sigma = min(shape) / 10.0 if smoothness is None else float(smoothness)
        if sigma <= 0:
            raise ValueError(f"random_velocity: smoothness must be positive, got {smoothness}")
        factor = max(1.0, sigma / 2.0)
        coarse = _coarse_shape(shape, factor)
        noise = _randn(gen, (batch, ndim, *coarse), like)
        # Gaussian blur on the coarse grid, then linear upsampling: one small matrix per axis
        v = _separable_apply(noise, [_smoothing_matrix(n, c, sigma / factor) for n, c in zip(shape, coarse)])
    else:
        sp = min(shape) / 5.0 if spacing is None else float(spacing)
        if sp <= 0:
            raise ValueError(f"random_velocity: spacing must be positive, got {spacing}")
        sp = min(sp, min(shape) - 1.0)
        grid = bspline_grid_shape(shape, sp)
        v = _bspline_field(_randn(gen, (batch, ndim, *grid), like), shape, [sp] * ndim)
    # zero mean (no global drift), then the longest vector of field b has length amp[b]
    return scale_to_max(v - v.mean(dim=tuple(range(2, v.dim())), keepdim=True), amp)


def random_diffeomorphism(
    shape: Sequence[int],
    max_displacement: float | Sequence[float],
    model: str = "svf",
    smoothness: float | None = None,
    spacing: float | None = None,
    seed: int | torch.Generator = 0,
    batch: int = 1,
    steps: int | None = None,
    like: torch.Tensor | None = None,
) -> torch.Tensor:
    """Displacements ``(batch, ndim, *shape)`` (voxels) of ``exp(w)`` for :func:`random_velocity` fields ``w``.

    The velocity's longest vector is ``max_displacement``; the integrated displacement has a similar
    size. The velocity is integrated by scaling and squaring on a grid half as fine per axis, with
    ``steps`` squarings (default: enough that ``max|w| / 2**steps <= 1/4`` voxel, between 3 and 10);
    the displacement is then upsampled (:func:`regedu.resize_dvf`): 4 (2D) or 8 (3D) times cheaper,
    and still smooth because the velocity varies over many voxels. The upsampled field *is* the
    ground truth (images are warped with it), so nothing is approximated there.
    """
    shape = tuple(int(s) for s in shape)
    half = min(shape) >= 24
    work = tuple((s - 1) // 2 + 1 for s in shape) if half else shape
    r = (min(work) - 1) / (min(shape) - 1)
    like = torch.empty(0) if like is None else like
    amp = _amplitudes("random_diffeomorphism", max_displacement, batch, like) * r
    v = random_velocity(work, amp, model,
                        None if smoothness is None else smoothness * r,
                        None if spacing is None else spacing * r, seed, batch, like)
    if steps is None:  # enough squarings that the first step moves at most 1/4 voxel
        steps = int(min(10, max(3, math.ceil(math.log2(max(4.0 * float(amp.max()), 1.0))))))
    u = integrate_velocity(v, steps=steps)
    return resize_dvf(u, shape) if half else u


def random_affine(ndim: int, strength: float, seed: int | torch.Generator, shape: Sequence[int]) -> torch.Tensor:
    """A random affine matrix ``(ndim+1, ndim+1)`` (float64) about the centre of an image of ``shape``.

    With ``strength = 1``: rotations up to 10 degrees per axis, scalings in ``[0.9, 1.1]``, shears up
    to 0.05 and translations up to 4% of the image size; ``strength`` scales all ranges linearly.
    """
    gen = seed if isinstance(seed, torch.Generator) else _gen(seed)
    s = float(strength)

    def u(n):  # uniform in [-1, 1]
        return (2 * torch.rand(n, generator=gen, dtype=torch.float64) - 1) * s

    n_rot, n_shear = (1, 1) if ndim == 2 else (3, 3)
    angles = u(n_rot) * math.radians(10.0)
    scales = 1.0 + 0.1 * u(ndim)
    shears = 0.05 * u(n_shear)
    trans = 0.04 * u(ndim) * torch.tensor([float(n) for n in shape], dtype=torch.float64)
    params = torch.cat([angles, scales, shears, trans])
    centre = torch.tensor([(n - 1) / 2.0 for n in shape], dtype=torch.float64)
    return affine_matrix(params, center=centre)


def _affine_after(A: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Displacement of ``x -> A (x + v(x))`` (exact, no interpolation): ``A (x + v) - x``."""
    ndim = v.shape[1]
    grid = identity_grid(v.shape[2:], dtype=v.dtype, device=v.device).unsqueeze(0)
    p = grid + v
    Af = A.tolist()
    comps = [sum(Af[i][j] * p[:, j] for j in range(ndim)) + Af[i][ndim] - grid[:, i] for i in range(ndim)]
    return torch.stack(comps, 1)


def bias_field(
    shape: Sequence[int],
    strength: float | Sequence[float] | torch.Tensor,
    seed: int | torch.Generator = 0,
    batch: int = 1,
    points: int = 4,
    like: torch.Tensor | None = None,
) -> torch.Tensor:
    """Smooth multiplicative bias fields ``exp(b(x))``, ``(batch, 1, *shape)``, with ``max |b| = strength``.

    ``b`` is a cubic B-spline through ``points`` random control values per axis (``strength`` one
    number or one per field).
    """
    gen = seed if isinstance(seed, torch.Generator) else _gen(seed)
    like = torch.empty(0) if like is None else like
    shape = tuple(int(s) for s in shape)
    sp = [(s - 1) / max(points - 1, 1) for s in shape]
    grid = bspline_grid_shape(shape, sp)
    b = _bspline_field(_randn(gen, (batch, 1, *grid), like), shape, sp)
    amp = _amplitudes("bias_field", strength, batch, like)
    b = b * (amp / b.abs().flatten(1).amax(1).clamp_min(1e-12)).reshape(-1, *([1] * (b.dim() - 1)))
    return b.exp()


def random_intensity(
    image: torch.Tensor,
    seed: int | torch.Generator = 0,
    gamma: float = 0.2,
    bias: float = 0.2,
    noise: float = 0.02,
) -> torch.Tensor:
    r"""Random intensity change of images in ``[0, 1]``: :math:`I^{\gamma} e^{b} + n`, clipped to ``[0, 1]``.

    Per batch element: ``log(gamma)`` uniform in ``[-gamma, gamma]``, a :func:`bias_field` with
    ``max |b|`` uniform in ``[0, bias]``, and Gaussian noise of standard deviation ``noise``.
    A parameter of 0 switches that change off.
    """
    for name, value in (("gamma", gamma), ("bias", bias), ("noise", noise)):
        _nonneg("random_intensity", name, value)
    gen = seed if isinstance(seed, torch.Generator) else _gen(seed)
    B = image.shape[0]
    view = (B, *([1] * (image.dim() - 1)))
    x = image.clamp(0, 1)
    if gamma > 0:
        g = (torch.rand(B, generator=gen, dtype=x.dtype) * 2 - 1) * gamma
        x = x.pow(g.exp().to(x.device).reshape(view))
    if bias > 0:
        strength = torch.rand(B, generator=gen, dtype=x.dtype) * bias
        x = x * bias_field(image.shape[2:], strength, gen, batch=B, like=x)
    if noise > 0:
        x = x + noise * _randn(gen, x.shape, x)
    return x.clamp(0, 1)


# ----------------------------------------------------------------------------- subjects
def _as_source(fn: str, source) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(image, labels, tissues) from a Volume or an (image, labels) pair."""
    if isinstance(source, Volume):
        return source.image, source.labels, source.tissues
    if isinstance(source, (tuple, list)) and len(source) == 2 and all(isinstance(t, torch.Tensor) for t in source):
        image, labels = source
        if image.dim() not in (4, 5) or image.shape[0] != 1 or labels.shape != (1, 1, *image.shape[2:]):
            raise ValueError(f"{fn}: (image, labels) must be (1, C, *S) and (1, 1, *S), got "
                             f"{tuple(image.shape)} and {tuple(labels.shape)}")
        return image.float() if not image.is_floating_point() else image, labels.long(), None
    raise TypeError(f"{fn}: source must be a regedu.data.Volume (e.g. load_brain(), brain_slice()) or an "
                    f"(image, labels) pair of tensors, got {type(source).__name__}")


def synthetic_subject(
    volume: Volume | tuple[torch.Tensor, torch.Tensor],
    seed: int = 0,
    model: str = "svf",
    max_displacement: float | None = None,
    smoothness: float | None = None,
    spacing: float | None = None,
    affine: float = 0.0,
    gamma: float = 0.2,
    bias: float = 0.2,
    noise: float = 0.02,
) -> dict[str, torch.Tensor]:
    """A random subject: the template warped by a random diffeomorphism (and affine), new intensities.

    Args:
        volume: the template, a :class:`Volume` (2D or 3D) or ``(image, labels)``.
        seed: the same seed gives the same subject.
        model: ``"svf"`` (Gaussian-smoothed velocity, for training) or ``"bspline"`` (B-spline
            velocity, for evaluation): see the module docstring.
        max_displacement: longest velocity vector in voxels (default ``min(shape) / 16``,
            5 voxels = 10 mm for the 2 mm brain).
        smoothness, spacing: of the velocity field (see :func:`random_velocity`).
        affine: strength of a random affine part (0: none; 1: up to 10 degrees, 10% scaling,
            4% translation; see :func:`random_affine`).
        gamma, bias, noise: intensity changes (see :func:`random_intensity`; 0 switches one off).

    Returns:
        dict with ``image`` ``(1, C, *S)`` float32 in ``[0, 1]``, ``labels`` ``(1, 1, *S)`` int64,
        ``dvf`` ``(1, ndim, *S)`` (voxels, pull-back: ``image_clean = warp(template, dvf)`` and
        ``labels = warp(template_labels, dvf, mode="nearest")``), ``mask`` ``(1, 1, *S)`` float32
        (``labels > 0``) and ``affine`` ``(ndim+1, ndim+1)`` (the affine part, identity if none).
    """
    image, labels, _ = _as_source("synthetic_subject", volume)
    check_choice("synthetic_subject", "model", model, MODELS)
    shape = tuple(image.shape[2:])
    ndim = len(shape)
    amp = min(shape) / 16.0 if max_displacement is None else float(max_displacement)
    gen = _gen(seed)
    u = random_diffeomorphism(shape, amp, model, smoothness, spacing, gen, like=image)
    A = torch.eye(ndim + 1, dtype=torch.float64)
    if affine > 0:
        A = random_affine(ndim, affine, gen, shape)
        u = _affine_after(A, u)
    moved = warp(image, u)
    lab = warp(labels, u, mode="nearest")
    out = random_intensity(moved, gen, gamma=gamma, bias=bias, noise=noise)
    return {"image": out, "labels": lab, "dvf": u, "mask": (lab > 0).to(image.dtype), "affine": A}


# ----------------------------------------------------------------------------- second contrast
def t2_like(
    labels_or_volume: Volume | torch.Tensor,
    contrast: Sequence[float] = T2_CONTRAST,
    smooth: float = 0.5,
    noise: float = 0.0,
    seed: int = 0,
) -> torch.Tensor:
    """A T2-weighted-like image aligned with the input: CSF bright, grey matter intermediate, white matter dark.

    :math:`I(x) = \\sum_k c_k\\, p_k(x)` with tissue probabilities ``p_k`` (a :class:`Volume`'s
    ``tissues``; for a label map its one-hot encoding) and intensities ``contrast`` =
    ``(c_background, c_CSF, c_GM, c_WM)`` (default ``(0, 1, 0.55, 0.3)``), Gaussian-smoothed by
    ``smooth`` voxels, plus Gaussian noise of standard deviation ``noise``, clipped to ``[0, 1]``.
    Image and its T1 share every voxel position, so the true alignment is the identity, but their
    intensities are not related by any monotone function: MSE and NCC fail, mutual information works.

    Returns ``(1, 1, *S)`` float32 (batch as the input).
    """
    c = torch.as_tensor(list(contrast), dtype=torch.float32)
    if isinstance(labels_or_volume, Volume):
        vol = labels_or_volume
        if vol.tissues is not None and vol.tissues.shape[1] == len(c) - 1:
            p = vol.tissues
            img = (p * c[1:].to(p).reshape(1, -1, *([1] * (p.dim() - 2)))).sum(1, keepdim=True)
            img = img + c[0] * (1 - p.sum(1, keepdim=True)).clamp(0, 1)
        else:
            img = c.to(vol.image.device)[vol.labels[:, 0].long()].unsqueeze(1)
    elif isinstance(labels_or_volume, torch.Tensor):
        lab = labels_or_volume
        if lab.dim() not in (4, 5) or lab.shape[1] != 1 or lab.is_floating_point():
            raise ValueError(f"t2_like: labels must be an integer tensor (B, 1, *S), got dtype {lab.dtype} and "
                             f"shape {tuple(lab.shape)}")
        if int(lab.max()) >= len(c) or int(lab.min()) < 0:
            raise ValueError(f"t2_like: labels must lie in [0, {len(c) - 1}] (one contrast value per class), "
                             f"got values in [{int(lab.min())}, {int(lab.max())}]")
        img = c.to(lab.device)[lab[:, 0]].unsqueeze(1)
    else:
        raise TypeError(f"t2_like: labels_or_volume must be a Volume or a label tensor, got {type(labels_or_volume).__name__}")
    if smooth > 0:
        img = gaussian_blur(img, smooth)
    if noise > 0:
        img = img + noise * _randn(_gen(seed), img.shape, img)
    return img.clamp(0, 1)


# ----------------------------------------------------------------------------- pairs
class PairDataset(Dataset):
    """Registration pairs with a known ground-truth DVF, generated from a template (2D or 3D).

    Args:
        source: ``"brain"`` (``ndim=2``: the middle axial slice, ``ndim=3``: the volume, at
            ``resolution`` mm), a :class:`Volume` (2D or 3D, e.g. any :func:`brain_slice`), or
            ``(image, labels)`` tensors ``(1, C, *S)`` and ``(1, 1, *S)``.
        mode: ``"train"`` (a fresh random pair every time an item is read) or ``"eval"`` (item ``i``
            is always the same pair; a different deformation model and seed range, see module doc).
        size: number of items (the length of an "epoch").
        ndim: 2 or 3 (only used when ``source`` is ``"brain"``; otherwise the source's).
        seed: base seed; same seed, same sequence of training pairs / same evaluation set.
        max_displacement: longest velocity vector of the ground-truth deformation in voxels (default
            ``min(shape) / 16``; the per-pair size is drawn in ``[0.25, 1]`` (train) or ``[0.5, 1]``
            (eval) times this).
        subject_displacement: the same for the deformation that makes the moving "subject" from the
            template (default: equal to ``max_displacement``; 0 uses the template itself).
        affine: strength of a random affine part of the ground truth (0: none; see :func:`random_affine`).
        model: override the deformation model (default ``"svf"`` for train, ``"bspline"`` for eval).
        modality: ``"same"`` (both T1) or ``"t2"`` (fixed is :func:`t2_like`, moving T1: multi-modal).
        gamma, bias, noise: intensity changes applied independently to fixed and moving.
        resolution: mm, for ``source="brain"``. shape: optional spatial size (fit by resampling,
            see :func:`regedu.data.volume.fit_volume`).
        device: where items are generated (default CPU).

    Items are dicts (tensors without the batch axis; ``DataLoader`` adds it):
    ``fixed``, ``moving`` ``(1, *S)`` float32 in ``[0, 1]``; ``dvf`` ``(ndim, *S)`` float32 in voxels with
    ``warp(moving, dvf) ~= fixed`` (pull-back); ``fixed_labels``, ``moving_labels`` ``(1, *S)`` int64 with
    ``warp(moving_labels, dvf, mode="nearest") == fixed_labels`` (exactly); ``mask`` ``(1, *S)`` float32, the
    fixed image's foreground (``fixed_labels > 0``).
    """

    def __init__(
        self,
        source="brain",
        mode: str = "train",
        size: int = 1000,
        ndim: int = 2,
        seed: int = 0,
        max_displacement: float | None = None,
        subject_displacement: float | None = None,
        affine: float = 0.0,
        model: str | None = None,
        modality: str = "same",
        gamma: float = 0.2,
        bias: float = 0.2,
        noise: float = 0.02,
        resolution: int = 2,
        shape: int | Sequence[int] | None = None,
        device=None,
    ):
        check_choice("PairDataset", "mode", mode, ("train", "eval"))
        check_choice("PairDataset", "modality", modality, ("same", "t2"))
        if model is not None:
            check_choice("PairDataset", "model", model, MODELS)
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"PairDataset: size (the number of items) must be a positive integer, got {size!r}")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"PairDataset: seed must be an integer >= 0, got {seed!r}")
        for name, value in (("max_displacement", max_displacement), ("subject_displacement", subject_displacement)):
            _nonneg("PairDataset", name, value, allow_none=True)
        for name, value in (("affine", affine), ("gamma", gamma), ("bias", bias), ("noise", noise)):
            _nonneg("PairDataset", name, value)
        from .brain import brain_slice, load_brain
        from .volume import fit_volume

        if isinstance(source, str):
            check_choice("PairDataset", "source", source, ("brain",))
            check_choice("PairDataset", "ndim", ndim, (2, 3))
            source = brain_slice(resolution=resolution) if ndim == 2 else load_brain(resolution)
        if isinstance(source, Volume) and shape is not None:
            source = fit_volume(source, shape)
        image, labels, _ = _as_source("PairDataset", source)
        if modality == "t2":
            if not isinstance(source, Volume):
                raise ValueError("PairDataset: modality='t2' needs a Volume source (tissue labels define the contrast)")
            self._t2: torch.Tensor | None = t2_like(source).to(device)
        else:
            self._t2 = None
        self.image = image.to(device)
        self.labels = labels.to(device)
        self.ndim = self.image.dim() - 2
        self.shape = tuple(self.image.shape[2:])
        self.mode, self.size, self.seed = mode, size, int(seed)
        self.model = model or ("svf" if mode == "train" else "bspline")
        self.max_displacement = min(self.shape) / 16.0 if max_displacement is None else float(max_displacement)
        self.subject_displacement = self.max_displacement if subject_displacement is None else float(subject_displacement)
        self.affine, self.modality = float(affine), modality
        self.intensity = {"gamma": gamma, "bias": bias, "noise": noise}
        self._stream = _gen(self.seed)
        self._worker: int | None = None

    def __len__(self) -> int:
        return self.size

    def item_seed(self, index: int) -> int:
        """The seed of item ``index``: eval mode ``EVAL_SEED_OFFSET + 100000 * seed + index``; train mode a
        fresh draw in ``[0, 2**31)`` from the dataset's stream, seeded by ``seed`` (in a ``DataLoader``
        worker additionally by the worker's seed, which PyTorch draws anew every epoch from the main
        process's generator: seed that with :func:`regedu.seed_everything` for reproducible runs)."""
        if self.mode == "eval":
            return EVAL_SEED_OFFSET + 100_000 * self.seed + int(index)
        info = torch.utils.data.get_worker_info()
        if info is not None and self._worker != info.seed:
            self._worker = info.seed
            self._stream = _gen((self.seed * 1_000_003 + info.seed) % 2**63)
        return int(torch.randint(0, 2**31 - 1, (), generator=self._stream))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -self.size <= index < self.size:
            raise IndexError(f"PairDataset: index {index} out of range for {self.size} items")
        return self.pair(self.item_seed(index % self.size))

    def pair(self, seed: int) -> dict[str, torch.Tensor]:
        """The pair generated from ``seed`` (what ``__getitem__`` returns for that item seed)."""
        gen = _gen(seed)
        lo = 0.25 if self.mode == "train" else 0.5
        T, L = self.image, self.labels
        # one batch of two deformations: the subject's (u_a) and the ground truth (u)
        amps = [self.subject_displacement * _rand(gen, lo, 1.0), self.max_displacement * _rand(gen, lo, 1.0)]
        uu = random_diffeomorphism(self.shape, amps, self.model, seed=gen, batch=2, like=T)
        ua, u = uu[:1], uu[1:]
        if self.affine > 0:
            u = _affine_after(random_affine(self.ndim, self.affine, gen, self.shape), u)
        w = compose(ua, u)  # x -> phi_a(x + u(x)): one interpolation of the template for the fixed image
        fields = torch.cat([ua, w])
        if self._t2 is None:
            images = warp(T, fields)
        else:
            images = warp(torch.cat([T, self._t2]), fields)
        moving_labels = warp(L, ua, mode="nearest")
        # the fixed labels are the moving labels carried by the ground truth, so that
        # warp(moving_labels, dvf, mode="nearest") == fixed_labels exactly (Dice 1 for the true DVF)
        fixed_labels = warp(moving_labels, u, mode="nearest")
        images = random_intensity(images, gen, **self.intensity)
        return {
            "fixed": images[1], "moving": images[0], "dvf": u[0],
            "fixed_labels": fixed_labels[0], "moving_labels": moving_labels[0],
            "mask": (fixed_labels[0] > 0).to(images.dtype),
        }

    def __repr__(self) -> str:
        return (f"PairDataset(mode={self.mode!r}, model={self.model!r}, {self.size} items, shape={self.shape}, "
                f"max_displacement={self.max_displacement:g}, modality={self.modality!r})")


__all__ = [
    "EVAL_SEED_OFFSET", "MODELS", "PairDataset", "bias_field", "random_affine", "random_diffeomorphism",
    "random_intensity", "random_velocity", "synthetic_subject", "t2_like",
]
