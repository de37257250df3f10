"""Planning a multi-resolution registration: checked inputs, pyramid levels and per-level budgets.

Shared by :func:`regedu.register` and :func:`regedu.registration.demons` (the two engines differ in what
they do on a level, not in how the levels are chosen):

* :func:`check_pair` checks ``fixed``, ``moving`` and an optional ``mask`` (rank, sizes, channels, dtype,
  device, finiteness) and returns them detached, on one device and in one floating dtype;
* :func:`level_shapes` / :func:`max_levels` / :func:`plan_levels` choose the pyramid (coarsest first:
  each level halves every axis of more than one voxel, ``align_corners=True`` geometry, as
  :func:`regedu.image_pyramid`);
* :func:`per_level` spreads a number (iterations, learning rate) over the levels;
* :func:`threads_for` runs small CPU problems on one thread.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from .._checks import _shape, check_image, check_mask, check_same_device, check_same_spatial
from .._checks import check_number as _check_number
from ..resampling import coarse_shape
from ..utils import cpu_threads

#: no pyramid level may be smaller than this along an axis of more than one voxel
MIN_LEVEL_SIZE = 8
#: CPU problems with fewer voxels per image than this run on one thread (see :func:`threads_for`)
SMALL_PROBLEM_VOXELS = 2**18


@dataclass
class ImagePair:
    """Checked registration inputs: ``fixed`` and ``moving`` ``(B or 1, C, *spatial)`` in one dtype on one
    device, detached from any autograd graph; ``mask`` ``(B or 1, 1, *spatial)`` or ``None``."""

    fixed: torch.Tensor
    moving: torch.Tensor
    mask: torch.Tensor | None

    @property
    def shape(self) -> tuple[int, ...]:
        """The spatial shape ``(H, W)`` or ``(D, H, W)``."""
        return tuple(self.fixed.shape[2:])

    @property
    def ndim(self) -> int:
        return self.fixed.dim() - 2

    @property
    def batch(self) -> int:
        """Number of pairs registered at once (a batch of 1 is broadcast against the other)."""
        return max(self.fixed.shape[0], self.moving.shape[0])


def check_pair(fn: str, fixed: Any, moving: Any, mask: Any = None, channels: int | None = None) -> ImagePair:
    """Check the images (and mask) of a registration and return them as an :class:`ImagePair`.

    Integer and bool images are promoted to float32 (the intensities are compared as numbers); ``moving``
    takes ``fixed``'s floating dtype. ``channels`` (e.g. 1 for demons) fixes the channel count. The
    tensors are detached: registration optimises the transformation, never the images, so an image
    that requires a gradient (e.g. a network's output) is used as a constant.
    """
    fixed = check_image(fn, "fixed", fixed)
    moving = check_image(fn, "moving", moving)
    check_same_spatial(fn, "fixed", fixed, "moving", moving,
                       hint=f"resample the moving image first, e.g. regedu.resize(moving, shape={tuple(fixed.shape[2:])})")
    check_same_device(fn, "fixed", fixed, "moving", moving)
    if fixed.shape[1] != moving.shape[1]:
        raise ValueError(f"{fn}: fixed and moving must have the same number of channels, got {fixed.shape[1]} and {moving.shape[1]}")
    if channels is not None and fixed.shape[1] != channels:
        raise ValueError(f"{fn}: fixed and moving must have {channels} channel(s), got {fixed.shape[1]} and {moving.shape[1]}")
    if fixed.numel() == 0:
        raise ValueError(f"{fn}: fixed is empty, shape {_shape(fixed)}")
    dtype = fixed.dtype if fixed.is_floating_point() else (moving.dtype if moving.is_floating_point() else torch.float32)
    if dtype in (torch.float16, torch.bfloat16):
        dtype = torch.float32  # the optimisation runs in float32 (parameters, sums over many voxels)
    fixed = fixed.detach().to(dtype)
    moving = moving.detach().to(dtype)
    if mask is not None:
        mask = check_image(fn, "mask", mask)
        check_same_spatial(fn, "fixed", fixed, "mask", mask)
        check_same_device(fn, "fixed", fixed, "mask", mask)
        if mask.shape[1] != 1:
            raise ValueError(f"{fn}: mask must have one channel, got shape {_shape(mask)}")
        mask = check_mask(fn, "mask", mask.detach(), like=fixed, dtype=dtype)  # non-negative, not all zero
    return ImagePair(fixed, moving, mask)


def coarser_shape(shape: Sequence[int], factor: float = 2.0) -> tuple[int, ...]:
    """The shape of the next coarser pyramid level, :func:`regedu.resampling.coarse_shape`, except that an
    axis of one voxel stays one voxel (a single slice has nothing to downsample)."""
    return tuple(1 if s == 1 else c for s, c in zip(shape, coarse_shape(shape, factor)))


def level_shapes(shape: Sequence[int], levels: int) -> list[tuple[int, ...]]:
    """Spatial shapes of the pyramid levels, coarsest first (the last one is ``shape``)."""
    out = [tuple(int(s) for s in shape)]
    for _ in range(levels - 1):
        out.append(coarser_shape(out[-1]))
    return out[::-1]


def _smallest(shape: Sequence[int]) -> int:
    """The smallest size along an axis of more than one voxel (axes of size 1 are not downsampled)."""
    sizes = [s for s in shape if s > 1]
    return min(sizes) if sizes else 1


def max_levels(shape: Sequence[int], coarsest: int = MIN_LEVEL_SIZE, most: int = 8) -> int:
    """The most levels (up to ``most``) whose coarsest level keeps ``coarsest`` voxels along every axis."""
    n = 1
    while n < most and _smallest(level_shapes(shape, n + 1)[0]) >= coarsest:
        n += 1
    return n


def check_count(fn: str, name: str, value: Any, minimum: int = 0) -> int:
    """``value`` as an ``int`` if it is a whole number ``>= minimum`` (bools are not numbers here)."""
    return _check_number(fn, name, value, low=minimum, integer=True)


def check_number(fn: str, name: str, value: Any, minimum: float = 0.0, strict: bool = False) -> float:
    """``value`` as a finite ``float`` that is ``>= minimum`` (``> minimum`` if ``strict``)."""
    return _check_number(fn, name, value, low=minimum, low_inclusive=not strict)


def per_level(fn: str, name: str, value: Any, levels: int, cast: Callable[[Any], Any]) -> list:
    """A value per level (coarse to fine) from one value or a sequence of exactly ``levels`` values."""
    if isinstance(value, (list, tuple)):
        if len(value) != levels:
            raise ValueError(f"{fn}: {name} must be one value or {levels} values (one per level, coarse to fine), got {value!r}")
        return [cast(v) for v in value]
    return [cast(value)] * levels


def default_level_shapes(shape: Sequence[int], most: int, coarsest: int) -> list[tuple[int, ...]]:
    """The default pyramid, coarsest first: each level halves every axis whose halved size keeps at least
    ``coarsest`` voxels (thinner axes keep their size, e.g. the few slices of a thick-slice volume), up
    to ``most`` levels; fewer when no axis can be halved any more."""
    out = [tuple(int(s) for s in shape)]
    while len(out) < most:
        halved = coarser_shape(out[-1])
        nxt = tuple(h if h >= coarsest else s for h, s in zip(halved, out[-1]))
        if nxt == out[-1]:
            break
        out.append(nxt)
    return out[::-1]


def plan_levels(fn: str, shape: Sequence[int], levels: int | None, default_levels: int, coarsest: int) -> list[tuple[int, ...]]:
    """The pyramid's level shapes (coarsest first).

    ``levels=None``: :func:`default_level_shapes` (at most ``default_levels``, every axis kept at
    ``coarsest`` voxels or more). A number: that many levels, each halving every axis of more than one
    voxel, with a clear error when the coarsest level would be smaller than ``MIN_LEVEL_SIZE``.
    """
    if levels is None:
        return default_level_shapes(shape, default_levels, coarsest)
    levels = check_count(fn, "levels", levels, minimum=1)
    shapes = level_shapes(shape, levels)
    if levels > 1 and _smallest(shapes[0]) < MIN_LEVEL_SIZE:
        raise ValueError(
            f"{fn}: levels={levels} makes the coarsest level {shapes[0]} smaller than {MIN_LEVEL_SIZE} voxels along an axis; "
            f"use levels <= {max_levels(shape)} for an image of shape {tuple(shape)}"
        )
    return shapes


def plan_iterations(fn: str, iterations: Any, default: Sequence[int], levels: int) -> list[int]:
    """Iterations per level (coarse to fine). ``None`` takes ``default``'s finest entries (a single level
    gets the budget of the two finest; more levels than entries repeat the coarsest entry)."""
    if iterations is None:
        default = list(default)
        if levels == 1:
            return [sum(default[-2:])]
        return default[-levels:] if levels <= len(default) else [default[0]] * (levels - len(default)) + default
    values = iterations if isinstance(iterations, (list, tuple)) else [iterations] * levels
    if len(values) != levels:
        raise ValueError(f"{fn}: iterations must be one value or {levels} values (one per level, coarse to fine), got {iterations!r}")
    return [check_count(fn, "iterations", v) for v in values]


def threads_for(device: torch.device, voxels: int) -> contextlib.AbstractContextManager:
    """Run small CPU problems on one thread (:func:`regedu.utils.cpu_threads`).

    Below ``SMALL_PROBLEM_VOXELS`` voxels per image every operation is so short that splitting it over
    threads costs more than it gains (on a busy machine, much more); the setting is restored after.
    """
    return cpu_threads(1 if device.type == "cpu" and voxels < SMALL_PROBLEM_VOXELS else None)


def pyramid(image: torch.Tensor, shapes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """``image`` on every level of ``shapes`` (coarsest first; the last is the image's own shape).

    As :func:`regedu.image_pyramid`: each level is made from the next finer one by a Gaussian blur
    (sigma = 1 voxel, along the axes that shrink) and linear resampling; an axis of one voxel is kept.
    """
    from ..filters import gaussian_blur
    from ..spatial_transformer import resize

    out = [image]
    for shape in reversed(shapes[:-1]):
        current = out[-1]
        sigma = [1.0 if s != c else 0.0 for s, c in zip(shape, current.shape[2:])]
        smooth = gaussian_blur(current, sigma) if any(sigma) else current
        out.append(resize(smooth, shape=tuple(shape)) if tuple(shape) != tuple(current.shape[2:]) else smooth)
    return out[::-1]
