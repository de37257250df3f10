"""Input validation shared by every public function.

Each check raises an error that names the function, the argument, what was expected and what
was given, so a student sees ``warp: dvf must have 2 channels ...`` instead of a traceback from
deep inside ``torch.nn.functional.grid_sample``.
"""

from __future__ import annotations

from typing import Sequence

import torch


def _shape(x: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in x.shape) + ")"


def check_tensor(fn: str, name: str, x: object) -> torch.Tensor:
    """Raise ``TypeError`` unless ``x`` is a ``torch.Tensor``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{fn}: {name} must be a torch.Tensor, got {type(x).__name__}"
            + (" (convert it with torch.as_tensor)" if hasattr(x, "__array__") or isinstance(x, (list, tuple)) else "")
        )
    return x


def check_finite(fn: str, name: str, x: torch.Tensor) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or infinite values (floating tensors only)."""
    # one reduction pass: the sum is finite unless some entry is NaN/inf (or the sum overflows,
    # which the exact count below tells apart)
    if x.is_floating_point() and x.numel() and not bool(torch.isfinite(x.sum())):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        if n_nan or n_inf:
            raise ValueError(f"{fn}: {name} contains {n_nan} NaN and {n_inf} infinite values; expected finite numbers")


def check_image(fn: str, name: str, x: object, ndim: int | None = None, finite: bool = True) -> torch.Tensor:
    """Check an image batch ``(B, C, *spatial)`` with 2 or 3 spatial dimensions.

    Returns the tensor. ``ndim`` (2 or 3) fixes the number of spatial dimensions.
    """
    x = check_tensor(fn, name, x)
    allowed = (ndim + 2,) if ndim is not None else (4, 5)
    if x.dim() not in allowed:
        want = " or ".join(f"{a}D" for a in allowed)
        raise ValueError(
            f"{fn}: {name} must be a {want} tensor (B, C, H, W) for 2D or (B, C, D, H, W) for 3D, "
            f"got a {x.dim()}D tensor of shape {_shape(x)}"
        )
    if finite:
        check_finite(fn, name, x)
    return x


def check_dvf(fn: str, name: str, dvf: object, spatial: Sequence[int] | None = None, finite: bool = True) -> torch.Tensor:
    """Check a displacement field ``(B, ndim, *spatial)`` in voxel units.

    ``spatial`` (if given) is the spatial shape the field must have.
    """
    dvf = check_tensor(fn, name, dvf)
    if dvf.dim() not in (4, 5):
        raise ValueError(
            f"{fn}: {name} must be a displacement field of shape (B, 2, H, W) or (B, 3, D, H, W), "
            f"got a {dvf.dim()}D tensor of shape {_shape(dvf)}"
        )
    ndim = dvf.dim() - 2
    if dvf.shape[1] != ndim:
        raise ValueError(
            f"{fn}: {name} must have {ndim} channels (one displacement per spatial axis of a {ndim}D field), "
            f"got shape {_shape(dvf)} with {dvf.shape[1]} channels"
        )
    if not dvf.is_floating_point():
        raise TypeError(f"{fn}: {name} must be a floating-point tensor, got dtype {dvf.dtype}")
    if spatial is not None and tuple(dvf.shape[2:]) != tuple(spatial):
        raise ValueError(
            f"{fn}: {name} has spatial size {tuple(dvf.shape[2:])}, expected {tuple(spatial)} (the image's spatial size)"
        )
    if finite:
        check_finite(fn, name, dvf)
    return dvf


def check_same_spatial(fn: str, name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor, hint: str = "") -> None:
    """Raise unless ``a`` and ``b`` are both 2D or both 3D, with the same spatial size and compatible
    batch sizes. ``hint`` (e.g. how to resample) is appended to the size-mismatch message."""
    if a.dim() != b.dim():
        raise ValueError(
            f"{fn}: {name_a} and {name_b} must have the same number of spatial dimensions, "
            f"got {name_a} {_shape(a)} ({a.dim() - 2}D) and {name_b} {_shape(b)} ({b.dim() - 2}D)"
        )
    if a.shape[2:] != b.shape[2:]:
        raise ValueError(
            f"{fn}: {name_a} and {name_b} must have the same spatial size, "
            f"got {name_a} {tuple(a.shape[2:])} and {name_b} {tuple(b.shape[2:])}" + (f"; {hint}" if hint else "")
        )
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise ValueError(
            f"{fn}: {name_a} and {name_b} must have the same batch size (or one of them 1), "
            f"got {a.shape[0]} and {b.shape[0]}"
        )


def check_choice(fn: str, name: str, value: object, choices: Sequence[str]) -> str:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{fn}: {name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value  # type: ignore[return-value]


def check_affine(fn: str, name: str, A: object, ndim: int | None = None) -> torch.Tensor:
    """Check a homogeneous affine matrix ``(ndim+1, ndim+1)`` or a batch ``(B, ndim+1, ndim+1)``."""
    A = check_tensor(fn, name, A)
    if A.dim() not in (2, 3) or A.shape[-1] != A.shape[-2] or A.shape[-1] not in (3, 4):
        raise ValueError(
            f"{fn}: {name} must be a homogeneous affine matrix of shape (3, 3) or (4, 4), optionally batched "
            f"(B, 3, 3) / (B, 4, 4), got shape {_shape(A)}"
        )
    if ndim is not None and A.shape[-1] != ndim + 1:
        raise ValueError(
            f"{fn}: {name} must be ({ndim + 1}, {ndim + 1}) for {ndim}D images, got shape {_shape(A)}"
        )
    check_finite(fn, name, A)
    return A
