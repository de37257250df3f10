"""Input validation and the dtype policy shared by every public function.

Each check raises an error that names the function, the argument, what was expected and what
was given, so a student sees ``warp: dvf must have 2 channels ...`` instead of a traceback from
deep inside ``torch.nn.functional.grid_sample``.
"""

from __future__ import annotations

import difflib
import math
import numbers
from typing import Any, Iterable, Sequence

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
    if x.is_floating_point() and x.numel() and x.device.type != "meta" and not bool(torch.isfinite(x.sum())):
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
    check_nonempty(fn, name, x)
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
    check_nonempty(fn, name, dvf)
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


def check_choice(fn: str, name: str, value: Any, choices: Sequence[Any]) -> Any:
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


# --------------------------------------------------------------------------------------------
# the dtype policy (DESIGN.md, "Dtypes"): the one place that decides
# --------------------------------------------------------------------------------------------
#
# * integer and bool images are promoted to float32 where the operation is meaningful on them
#   (similarities, resampling, smoothing); where it is not (linear interpolation of a label map)
#   the function raises a clear error instead;
# * half precision (float16, bfloat16) is computed in float32 internally (sampling grids, local sums,
#   histograms); images (warped, resized) are returned in the input dtype, while measures (similarities,
#   losses, regularisers: reductions over many voxels, whose value can exceed half precision's range,
#   e.g. an SSD of 40 voxels of intensity 100) are returned in float32, as torch.autocast does for losses;
# * float32 and float64 are kept as they are.

HALF_DTYPES = (torch.float16, torch.bfloat16)


def result_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """The dtype a result takes for inputs of ``dtypes``: integer and bool count as float32, the
    floating dtypes promote as in torch (float16 with float16 stays float16, float16 with float64 is
    float64, float16 with bfloat16 is float32)."""
    out: torch.dtype | None = None
    for d in dtypes:
        if d.is_complex:
            raise TypeError(f"complex tensors are not supported, got {d}")
        d = d if d.is_floating_point else torch.float32
        out = d if out is None else torch.promote_types(out, d)
    return torch.float32 if out is None else out


def measure_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """The dtype of a scalar measure (similarity, loss, regulariser) of inputs of ``dtypes``:
    :func:`result_dtype`, except that half precision gives float32 (a sum over many voxels overflows
    float16; ``torch.autocast`` computes losses in float32 for the same reason)."""
    out = result_dtype(*dtypes)
    return torch.float32 if out in HALF_DTYPES else out


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the arithmetic runs in for a result of ``dtype``: float32 for half precision and for
    integer/bool inputs, ``dtype`` itself for float32 and float64."""
    if dtype in HALF_DTYPES or not dtype.is_floating_point:
        return torch.float32
    return dtype


def as_float(fn: str, name: str, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``x`` in the dtype the computation runs in: ``dtype`` if given, else :func:`compute_dtype`
    of ``x``'s (integer, bool and half precision become float32; float32/float64 are unchanged,
    without a copy)."""
    check_tensor(fn, name, x)
    if x.dtype.is_complex:
        raise TypeError(f"{fn}: {name} must be a real tensor, got dtype {x.dtype}")
    target = compute_dtype(x.dtype) if dtype is None else dtype
    return x if x.dtype == target else x.to(target)


def float_inputs(fn: str, measure: bool = False, **tensors: torch.Tensor | None) -> tuple[list[Any], torch.dtype]:
    """Apply the dtype policy to several inputs of one function at once.

    Returns the tensors converted to the common compute dtype (``None`` stays ``None``) and the dtype
    the result must be cast back to (:func:`result_dtype` of the inputs; :func:`measure_dtype` with
    ``measure=True``)::

        (fixed, moving), out = float_inputs("mse", fixed=fixed, moving=moving)
        return value.to(out)
    """
    present = [t for t in tensors.values() if t is not None]
    for name, t in tensors.items():
        if t is not None:
            check_tensor(fn, name, t)
    out = result_dtype(*(t.dtype for t in present))
    work = compute_dtype(out)
    if measure:
        out = measure_dtype(out)
    return [None if t is None else as_float(fn, name, t, work) for name, t in tensors.items()], out


def reject_integer(fn: str, name: str, x: torch.Tensor, why: str) -> None:
    """Raise ``TypeError`` when ``x`` is integer or bool and the operation is meaningless on it
    (``why`` says what to do instead, e.g. ``"use mode='nearest' for label maps"``)."""
    if not x.is_floating_point():
        raise TypeError(f"{fn}: {name} must be a floating-point tensor here, got dtype {x.dtype}; {why}")


# --------------------------------------------------------------------------------------------
# pairs, masks, devices, numbers
# --------------------------------------------------------------------------------------------

def check_nonempty(fn: str, name: str, x: torch.Tensor) -> None:
    """Raise ``ValueError`` if ``x`` has no elements (a batch of 0, a channel count of 0 or a spatial size of 0)."""
    if x.numel() == 0:
        raise ValueError(f"{fn}: {name} is empty (shape {_shape(x)}); expected at least one element along every axis")


def check_same_device(fn: str, name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    """Raise ``ValueError`` naming both devices unless ``a`` and ``b`` live on the same device."""
    if a.device != b.device:
        raise ValueError(
            f"{fn}: {name_a} and {name_b} must be on the same device, got {name_a} on {a.device} and {name_b} on "
            f"{b.device}; move one with .to({str(a.device)!r})"
        )


def check_same_channels(fn: str, name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` have the same number of channels (dimension 1):
    a 1-channel image is never silently broadcast against a multi-channel one."""
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{fn}: {name_a} and {name_b} must have the same number of channels, got {name_a} {_shape(a)} with "
            f"{a.shape[1]} and {name_b} {_shape(b)} with {b.shape[1]} (no broadcasting between channels)"
        )


def check_pair(fn: str, name_a: str, a: object, name_b: str, b: object, ndim: int | None = None, hint: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """Check two images that are compared voxel by voxel: both ``(B, C, *spatial)``, finite, non-empty,
    the same spatial size, the same number of channels, the same device, and the same batch size
    (or one of them 1, which is broadcast: the documented exception). Returns both tensors."""
    a = check_image(fn, name_a, a, ndim=ndim)
    b = check_image(fn, name_b, b, ndim=ndim)
    check_same_spatial(fn, name_a, a, name_b, b, hint=hint)
    check_same_channels(fn, name_a, a, name_b, b)
    check_same_device(fn, name_a, a, name_b, b)
    return a, b


def check_mask(fn: str, name: str, mask: object, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Check a region-of-interest mask for the image ``like`` ``(B, C, *spatial)`` and return it as weights.

    The mask must be ``(B or 1, 1 or C, *spatial)`` (bool, integer or float), on ``like``'s device, finite,
    non-negative, and not all zero for any batch element (an empty mask compares nothing; ``register``
    applies the same rule). Returned in ``dtype`` (default ``like``'s compute dtype).
    """
    mask = check_image(fn, name, mask, ndim=like.dim() - 2)
    check_same_spatial(fn, "image", like, name, mask)
    if mask.shape[1] not in (1, like.shape[1]):
        raise ValueError(
            f"{fn}: {name} must have 1 channel or as many as the image ({like.shape[1]}), got shape {_shape(mask)}"
        )
    check_same_device(fn, "image", like, name, mask)
    m = mask.to(dtype or compute_dtype(like.dtype))
    if bool((m < 0).any()):
        raise ValueError(f"{fn}: {name} must be non-negative (a 0/1 mask or weights), got a minimum of {float(m.min()):g}")
    empty = m.flatten(1).sum(1) == 0
    if bool(empty.any()):
        which = [int(i) for i in torch.nonzero(empty).flatten()]
        raise ValueError(f"{fn}: {name} is empty (all zero) for batch element(s) {which}; nothing to compare")
    return m


def check_number(
    fn: str,
    name: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    integer: bool = False,
) -> Any:
    """Check a numeric parameter: a real number (not bool), finite, an integer if ``integer``, and
    within ``[low, high]`` (bounds optional, open with ``low_inclusive``/``high_inclusive=False``).

    Returns the value as ``int`` (``integer=True``) or ``float``. Tensors with one element are accepted.
    """
    v = value
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        kind = "an integer" if integer else "a number"
        raise TypeError(f"{fn}: {name} must be {kind}, got {value!r} ({type(value).__name__})")
    if not math.isfinite(float(v)):
        raise ValueError(f"{fn}: {name} must be a finite number, got {v}")
    if integer:
        if isinstance(v, numbers.Integral):
            v = int(v)
        elif float(v).is_integer():
            v = int(float(v))
        else:
            raise ValueError(f"{fn}: {name} must be an integer, got {v}")
    else:
        v = float(v)
    lo_bad = low is not None and (v < low if low_inclusive else v <= low)
    hi_bad = high is not None and (v > high if high_inclusive else v >= high)
    if lo_bad or hi_bad:
        parts = []
        if low is not None:
            parts.append(f"{'>=' if low_inclusive else '>'} {low:g}")
        if high is not None:
            parts.append(f"{'<=' if high_inclusive else '<'} {high:g}")
        raise ValueError(f"{fn}: {name} must be {' and '.join(parts)}, got {v}")
    return v


def check_keywords(fn: str, given: Iterable[str], valid: Iterable[str]) -> None:
    """Raise ``TypeError`` for keyword arguments of ``given`` that are not in ``valid``, naming the valid
    ones and the closest match (``train(..., val_evry=1)`` -> ``did you mean 'val_every'?``)."""
    valid = sorted(set(valid))
    unknown = [k for k in given if k not in valid]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, valid, n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise TypeError(f"{fn}: unknown keyword argument{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; "
                        f"the valid ones are {', '.join(valid)}")
