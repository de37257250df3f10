r"""Warping: sampling grids and (pull-back) warping of images and label maps.

Warping **pulls back**: the moved image at a fixed-image voxel ``x`` is the moving image sampled at
``phi(x) = x + u(x)``,

.. math:: (M \circ \varphi)(x) = M(x + u(x)),

with ``u`` a displacement field ``(B, ndim, *spatial)`` in voxel units, channel ``k`` the displacement
along tensor axis ``k``. Sampling is (bi/tri)linear for images and nearest for label maps, with
``align_corners=True`` (voxel ``0`` and voxel ``S-1`` are the centres of the first and last voxel).

This is the sampler of Jaderberg et al. (2015), *Spatial Transformer Networks*, NeurIPS, and the warp
layer of VoxelMorph (Balakrishnan et al., 2019). It is differentiable with respect to both the image
and the displacement field.

**Voxel and normalised coordinates.** ``torch.nn.functional.grid_sample`` and ``affine_grid`` take
*normalised* coordinates in ``[-1, 1]`` listed in ``(x, y[, z])`` order, i.e. the **last** tensor axis
first. With ``align_corners=True`` voxel index ``i`` of an axis of size ``S`` is the normalised
coordinate ``n = 2 i / (S - 1) - 1``. :func:`axis_scale` is the one place that states this rule;
:func:`voxel_to_normalised`, :func:`normalised_to_voxel`, :func:`voxel_to_normalised_matrix`,
:func:`dvf_to_grid`, :func:`affine_to_theta` and :func:`theta_to_affine` all derive from it.

**Dtypes** (the policy of :mod:`regedu._checks`): the sampling grid is always built in float32 or
float64, never in half precision (a float16 grid cannot address the voxels of a 256-voxel axis
exactly); a half-precision image is sampled in float32 and returned in its own dtype; integer and
bool images can only be warped with ``mode="nearest"`` (label maps) and keep their dtype.
"""

from __future__ import annotations

import math
import threading
from functools import lru_cache
from typing import Sequence

import torch
import torch.nn.functional as F

from ._checks import (
    HALF_DTYPES,
    _shape,
    check_affine,
    check_choice,
    check_dvf,
    check_image,
    check_same_device,
    check_same_spatial,
    check_tensor,
)

MODES = ("linear", "bilinear", "trilinear", "nearest", "bicubic")
PADDING = ("border", "zeros", "reflection")


# --------------------------------------------------------------------------------------------
# voxel <-> normalised coordinates: the one conversion
# --------------------------------------------------------------------------------------------

def axis_scale(size: int) -> tuple[float, float]:
    """``(scale, offset)`` with ``normalised = scale * voxel + offset`` for an axis of ``size`` voxels
    (``align_corners=True``): ``(2 / (S - 1), -1)``; ``(1, 0)`` for ``S = 1``, whose only voxel is at 0."""
    size = int(size)
    if size < 1:
        raise ValueError(f"axis_scale: an axis must have at least one voxel, got {size}")
    return (2.0 / (size - 1), -1.0) if size > 1 else (1.0, 0.0)


def voxel_to_normalised(points: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Voxel coordinates ``(..., ndim)`` in tensor axis order -> grid_sample's normalised coordinates
    ``(..., ndim)`` in ``(x, y[, z])`` order (the axis order reversed)."""
    points = check_tensor("voxel_to_normalised", "points", points)
    if points.shape[-1] != len(shape):
        raise ValueError(f"voxel_to_normalised: points must have {len(shape)} coordinates, got shape {_shape(points)}")
    s = torch.tensor([axis_scale(n) for n in shape], dtype=points.dtype if points.is_floating_point() else torch.float32,
                     device=points.device)
    return (points * s[:, 0] + s[:, 1]).flip(-1)


def normalised_to_voxel(points: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`voxel_to_normalised`: ``(x, y[, z])``-ordered normalised -> voxel coordinates."""
    points = check_tensor("normalised_to_voxel", "points", points)
    if points.shape[-1] != len(shape):
        raise ValueError(f"normalised_to_voxel: points must have {len(shape)} coordinates, got shape {_shape(points)}")
    s = torch.tensor([axis_scale(n) for n in shape], dtype=points.dtype, device=points.device)
    return (points.flip(-1) - s[:, 1]) / s[:, 0]


def voxel_to_normalised_matrix(shape: Sequence[int], dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """The homogeneous matrix ``(ndim+1, ndim+1)`` of :func:`voxel_to_normalised`: voxel indices in
    tensor order -> normalised coordinates in ``(x, y[, z])`` order."""
    n = len(shape)
    N = torch.zeros(n + 1, n + 1, dtype=dtype or torch.get_default_dtype(), device=device)
    for k, s in enumerate(shape):
        scale, offset = axis_scale(s)
        row = n - 1 - k  # reversed axis order
        N[row, k] = scale
        N[row, n] = offset
    N[n, n] = 1.0
    return N


def affine_to_theta(A: torch.Tensor, shape: Sequence[int], moving_shape: Sequence[int] | None = None) -> torch.Tensor:
    """Voxel-space matrix ``A`` (fixed voxel -> moving voxel) to PyTorch's ``theta``.

    ``theta`` has shape ``(B, ndim, ndim+1)`` and is what ``F.affine_grid(theta, size,
    align_corners=True)`` expects: ``theta = N_moving A N_fixed^-1`` with ``N`` from
    :func:`voxel_to_normalised_matrix`. ``shape`` is the fixed (output) spatial shape, ``moving_shape``
    the moving (input) one (default: the same).
    """
    A = check_affine("affine_to_theta", "A", A, ndim=len(shape))
    moving_shape = shape if moving_shape is None else moving_shape
    N_out = voxel_to_normalised_matrix(shape, A.dtype, A.device)
    N_in = voxel_to_normalised_matrix(moving_shape, A.dtype, A.device)
    T = N_in @ A @ torch.linalg.inv(N_out)
    if T.dim() == 2:
        T = T.unsqueeze(0)
    return T[:, :-1, :]


def theta_to_affine(theta: torch.Tensor, shape: Sequence[int], moving_shape: Sequence[int] | None = None) -> torch.Tensor:
    """Inverse of :func:`affine_to_theta`: ``theta`` ``(B, ndim, ndim+1)`` -> ``(B, ndim+1, ndim+1)``."""
    theta = check_tensor("theta_to_affine", "theta", theta)
    n = len(shape)
    if theta.dim() == 2:
        theta = theta.unsqueeze(0)
    if theta.shape[-2:] != (n, n + 1):
        raise ValueError(f"theta_to_affine: theta must have shape (B, {n}, {n + 1}) for {n}D, got {tuple(theta.shape)}")
    moving_shape = shape if moving_shape is None else moving_shape
    bottom = torch.zeros(theta.shape[0], 1, n + 1, dtype=theta.dtype, device=theta.device)
    bottom[..., 0, n] = 1
    T = torch.cat([theta, bottom], dim=1)
    N_out = voxel_to_normalised_matrix(shape, theta.dtype, theta.device)
    N_in = voxel_to_normalised_matrix(moving_shape, theta.dtype, theta.device)
    return torch.linalg.inv(N_in) @ T @ N_out


# --------------------------------------------------------------------------------------------
# grids
# --------------------------------------------------------------------------------------------

def identity_grid(shape: Sequence[int], dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """Voxel coordinates of every voxel: ``(ndim, *shape)``, entry ``[k, i, j]`` = index along axis ``k``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"identity_grid: shape must have 2 or 3 positive entries, got {shape}")
    axes = [torch.arange(s, dtype=dtype or torch.get_default_dtype(), device=device) for s in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)


@lru_cache(maxsize=32)
def _normalised_axes(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> tuple[tuple[torch.Tensor, float], ...]:
    """The normalised identity grid in separable form, cached per shape, dtype and device: per spatial
    axis, the normalised coordinate of every index (shaped to broadcast along that axis) and the
    voxel -> normalised scale of :func:`axis_scale`."""
    ndim = len(shape)
    out = []
    for k, s in enumerate(shape):
        view = [1] * ndim
        view[k] = s
        scale, offset = axis_scale(s)
        coords = torch.arange(s, dtype=torch.float64).mul_(scale).add_(offset).to(dtype=dtype, device=device)
        out.append((coords.reshape(1, *view), scale))
    return tuple(out)


_scratch = threading.local()


def _scratch_buffer(like: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor]:
    """A reusable grid buffer shaped like ``like`` (one per thread, the latest shape only), for grids that
    nobody keeps: a fresh allocation of a large 3D grid costs more (page faults) than filling it.
    Returns the buffer, its per-channel planes and its channel-last view (kept, not rebuilt per call)."""
    entry = getattr(_scratch, "entry", None)
    if entry is None or entry[0].shape != like.shape or entry[0].dtype != like.dtype or entry[0].device != like.device:
        buf = torch.empty_like(like, memory_format=torch.contiguous_format)
        entry = (buf, buf.unbind(1), buf.movedim(1, -1))
        _scratch.entry = entry
    return entry


def _adopt_scratch(tensor: torch.Tensor) -> None:
    """Hand the thread's scratch buffer out for good (the caller returns it) and take ``tensor``'s memory,
    which nobody else holds, as the next one (when it has the size and layout of a buffer; else none)."""
    old = _scratch.entry[0]
    _scratch.entry = None
    if tensor.is_contiguous() and tensor.numel() == old.numel() and tensor.dtype == old.dtype and tensor.device == old.device:
        buf = tensor.view(old.shape)
        _scratch.entry = (buf, buf.unbind(1), buf.movedim(1, -1))


def clear_cache() -> None:
    """Free the cached identity grids and this thread's scratch grid buffer (see :func:`warp`)."""
    _normalised_axes.cache_clear()
    _scratch.entry = None


def _grid(dvf: torch.Tensor, scratch: bool = False) -> tuple[torch.Tensor, list[float]]:
    """The normalised grid of ``dvf`` (see :func:`dvf_to_grid`) and the per-axis scales used.

    One fused add-multiply per axis, ``grid[..., ndim-1-k] = coords_k + scale_k * u_k``, against the
    cached separable identity grid (:func:`_normalised_axes`), written channel-first (contiguous
    writes) and handed to ``grid_sample`` as the channel-last view it expects (it reads any strides).
    ``scratch=True`` writes into the thread's reusable buffer (only for a grid used once, right away).
    """
    axes = _normalised_axes(tuple(dvf.shape[2:]), dvf.dtype, dvf.device)
    if scratch:
        _, planes, grid = _scratch_buffer(dvf)
    else:
        buf = torch.empty_like(dvf, memory_format=torch.contiguous_format)
        planes, grid = buf.unbind(1), buf.movedim(1, -1)
    for (coords, scale), u_k, out in zip(axes, dvf.unbind(1), reversed(planes)):
        torch.add(coords, u_k, alpha=scale, out=out)
    return grid, [scale for _, scale in axes]


class _DvfToGrid(torch.autograd.Function):
    """Voxel DVF -> normalised grid in one pass per axis; the backward pass is one scaled copy per axis.

    (A plain ``torch.stack`` of per-axis terms costs two extra passes forward and backward.)
    """

    @staticmethod
    def forward(ctx, dvf: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grid, ctx.scales = _grid(dvf)
        return grid

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_grid: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ndim = grad_grid.shape[-1]
        grad = torch.empty(grad_grid.shape[0], ndim, *grad_grid.shape[1:-1], dtype=grad_grid.dtype, device=grad_grid.device)
        for k, scale in enumerate(ctx.scales):
            torch.mul(grad_grid[..., ndim - 1 - k], scale, out=grad[:, k])
        return grad


_PADDING_CODE = {"zeros": 0, "border": 1, "reflection": 2}  # aten's grid_sampler enums (bilinear = 0)


class _LinearWarp(torch.autograd.Function):
    """``grid_sample(image, dvf_to_grid(dvf))`` (bilinear/trilinear) as one autograd node.

    2D: the grid is kept for the backward pass (it is small: a 256 x 256 grid is 0.5 MB). 3D: no grid is
    kept; it is written into the thread's scratch buffer in the forward pass and rebuilt there in the
    backward pass (one cheap pass), so neither pass allocates a fresh grid-sized tensor: for a large 3D
    field a fresh allocation (page faults) costs more than filling it. The backward pass is aten's own
    ``grid_sampler_*d_backward``, followed by the voxel scaling of :class:`_DvfToGrid`, which also moves
    the gradient from grid_sample's channel-last layout to the DVF's channel-first one (a strided copy:
    the largest part of the remaining cost against a bare ``grid_sample``, see ``benchmarks/warp.py``).

    Only first derivatives. A plain backward pass runs :func:`_linear_warp_gradients` directly; one asked for a graph
    (``create_graph=True``) runs it through ``once_differentiable``, so differentiating the gradients raises
    a clear error instead of giving wrong second derivatives (the wrapper costs ~5 % of a 2D warp's
    forward+backward, so the common case skips it).
    """

    @staticmethod
    def forward(ctx, image: torch.Tensor, dvf: torch.Tensor, padding_mode: str) -> torch.Tensor:  # type: ignore[override]
        keep = image.dim() == 4
        grid, ctx.scales = _grid(dvf, scratch=not keep)
        ctx.padding_mode, ctx.kept_grid = padding_mode, keep
        ctx.save_for_backward(image, grid if keep else dvf)
        # what F.grid_sample(mode="bilinear", align_corners=True) calls, without its Python-level checks
        return torch.grid_sampler(image, grid, 0, _PADDING_CODE[padding_mode], True)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        if torch.is_grad_enabled():  # create_graph=True
            return _linear_warp_gradients_once(ctx, grad_out)
        return _linear_warp_gradients(ctx, grad_out)


def _linear_warp_gradients(ctx, grad_out: torch.Tensor):
    """The gradients of :class:`_LinearWarp` (its backward pass, without autograd bookkeeping)."""
    image, saved = ctx.saved_tensors
    need_image, need_dvf = bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1])
    grid = saved if ctx.kept_grid else _grid(saved, scratch=True)[0]
    op = torch.ops.aten.grid_sampler_2d_backward if image.dim() == 4 else torch.ops.aten.grid_sampler_3d_backward
    grad_image, grad_grid = op(grad_out, image, grid, 0, _PADDING_CODE[ctx.padding_mode], True, [need_image, need_dvf])
    del grid
    grad_dvf = None
    if need_dvf:
        ndim = image.dim() - 2
        if ctx.kept_grid:
            grad_dvf = torch.empty(grad_grid.shape[0], ndim, *grad_grid.shape[1:-1], dtype=grad_grid.dtype, device=grad_grid.device)
            planes: Sequence[torch.Tensor] = grad_dvf.unbind(1)
        else:
            # the scratch buffer is free again (the grid is no longer needed): the gradient goes there, and
            # aten's freshly allocated grad_grid (same size, ours alone) becomes the thread's next scratch
            # buffer, so no grid-sized tensor is allocated here (a large fresh one costs page faults)
            grad_dvf, planes, _ = _scratch_buffer(saved)
        for k, scale in enumerate(ctx.scales):
            torch.mul(grad_grid[..., ndim - 1 - k], scale, out=planes[k])
        if not ctx.kept_grid:
            _adopt_scratch(grad_grid)
    return (grad_image if need_image else None), grad_dvf, None


_linear_warp_gradients_once = torch.autograd.function.once_differentiable(_linear_warp_gradients)


def dvf_to_grid(dvf: torch.Tensor) -> torch.Tensor:
    """Displacement field (voxels) -> the ``grid`` argument of ``F.grid_sample`` (``align_corners=True``).

    ``grid[..., ndim-1-k] = 2 (x_k + u_k(x)) / (S_k - 1) - 1``: channel-last, axes in x/y(/z) order.
    A half-precision field gives a float32 grid (half precision cannot address the voxels exactly).
    """
    if dvf.dtype in HALF_DTYPES:
        dvf = dvf.float()
    if dvf.requires_grad and torch.is_grad_enabled():
        return _DvfToGrid.apply(dvf)
    return _grid(dvf)[0]  # no autograd bookkeeping when no gradient is needed


def _grid_mode(fn: str, mode: str) -> str:
    check_choice(fn, "mode", mode, MODES)
    return "bilinear" if mode in ("linear", "bilinear", "trilinear") else mode


def _label_compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Floating dtype that holds every value of an integer dtype exactly (float32 up to 2^24)."""
    return torch.float64 if dtype in (torch.int32, torch.int64, torch.uint32, torch.uint64) else torch.float32


# --------------------------------------------------------------------------------------------
# warping
# --------------------------------------------------------------------------------------------

_LINEAR = ("linear", "bilinear", "trilinear")
_PLAIN_DTYPES = (torch.float32, torch.float64)


def _plain_case(image: object, dvf: object, mode: str, padding_mode: str) -> bool:
    """Whether :func:`warp` can skip straight to sampling: two tensors of one float32/float64 dtype on
    one (non-meta) device, matching 2D/3D shapes and batch, a DVF with ndim channels, linear mode."""
    return (
        type(image) is torch.Tensor and type(dvf) is torch.Tensor
        and image.dtype in _PLAIN_DTYPES and dvf.dtype == image.dtype
        and dvf.dim() in (4, 5) and image.dim() == dvf.dim() and dvf.shape[1] == dvf.dim() - 2
        and image.shape[0] == dvf.shape[0] and image.shape[2:] == dvf.shape[2:] and image.numel() > 0
        and image.device == dvf.device and image.device.type != "meta"
        and mode in _LINEAR and padding_mode in PADDING
    )


#: below this many voxels a warp that needs gradients is built from plain torch operations (their backward
#: runs in C++), above it :class:`_LinearWarp`: for small grids the Python backward of the custom function
#: costs more than it saves (measured forward+backward, one thread: 48 x 40 132 vs 158 us, 80 x 96 226 vs
#: 223 us, 256 x 256 1238 vs 1022 us; 16^3 419 vs 432 us, 24^3 1217 vs 1173 us)
SMALL_WARP_VOXELS = 10_000


def _small_linear_warp(image: torch.Tensor, dvf: torch.Tensor, padding_mode: str) -> torch.Tensor:
    """Linear warp of a small grid as plain differentiable torch operations (see ``SMALL_WARP_VOXELS``)."""
    axes = _normalised_axes(tuple(dvf.shape[2:]), dvf.dtype, dvf.device)
    comps = [torch.add(coords, u_k, alpha=scale) for (coords, scale), u_k in zip(axes, dvf.unbind(1))]
    return torch.grid_sampler(image, torch.stack(comps[::-1], -1), 0, _PADDING_CODE[padding_mode], True)


def _linear_warp_with_grad(image: torch.Tensor, dvf: torch.Tensor, padding_mode: str) -> torch.Tensor:
    if math.prod(dvf.shape[2:]) < SMALL_WARP_VOXELS:
        return _small_linear_warp(image, dvf, padding_mode)
    return _LinearWarp.apply(image, dvf, padding_mode)


def _plain_linear_warp(image: torch.Tensor, dvf: torch.Tensor, padding_mode: str) -> torch.Tensor:
    """Linear warp of a checked plain case (:func:`_plain_case`, finite inputs)."""
    if torch.is_grad_enabled() and (image.requires_grad or dvf.requires_grad):
        return _linear_warp_with_grad(image, dvf, padding_mode)
    grid = _grid(dvf, scratch=True)[0]  # used once: reuse the thread's buffer
    return torch.grid_sampler(image, grid, 0, _PADDING_CODE[padding_mode], True)  # = F.grid_sample, bilinear


def _warp_checked_inputs(image: torch.Tensor, dvf: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """Linear :func:`warp` of inputs the caller knows to be finite (e.g. the repeated squarings of a checked
    velocity field, whose every step is finite when its input is): the same result without the finiteness
    test (a pass over both tensors and a synchronisation per call). Anything but the plain case takes
    :func:`warp`'s full path."""
    if not _plain_case(image, dvf, "linear", padding_mode):
        return warp(image, dvf, padding_mode=padding_mode)
    return _plain_linear_warp(image, dvf, padding_mode)


def warp(image: torch.Tensor, dvf: torch.Tensor, mode: str = "linear", padding_mode: str = "border") -> torch.Tensor:
    r"""Warp ``image`` by the displacement field ``dvf`` (pull-back): ``moved(x) = image(x + dvf(x))``.

    Args:
        image: ``(B, C, *spatial)``, 2D or 3D; batch 1 is broadcast against ``dvf``'s batch.
        dvf: ``(B, ndim, *spatial)`` displacement in voxels, channel ``k`` along tensor axis ``k``.
        mode: ``"linear"`` (bi/trilinear; ``"bilinear"``/``"trilinear"`` are aliases),
            ``"nearest"`` (label maps) or ``"bicubic"`` (2D only).
        padding_mode: value outside the image: ``"border"`` (nearest edge value, the default),
            ``"zeros"`` or ``"reflection"``.

    Returns:
        The moved image, ``(B, C, *spatial)``, on the device and with the dtype of ``image``.
        Half-precision images are sampled in float32 (grid and interpolation) and cast back;
        integer/bool images need ``mode="nearest"`` and keep every value exactly.

    Speed: the identity grid is cached per shape, dtype and device, the voxel -> normalised scaling is one
    fused add-multiply per axis, and the sampling grid lives in one reusable buffer per thread (rebuilt
    in the backward pass instead of being kept; :func:`clear_cache` frees both). ``benchmarks/warp.py``
    compares it with a bare ``grid_sample``.
    """
    if _plain_case(image, dvf, mode, padding_mode):
        # the common case, checked with a few attribute comparisons and one fused finiteness test;
        # anything unusual (including a non-finite sum, which may be an overflow) takes the full checks
        if math.isfinite(float(image.detach().sum()) + float(dvf.detach().sum())):
            return _plain_linear_warp(image, dvf, padding_mode)
    image = check_image("warp", "image", image)
    dvf = check_dvf("warp", "dvf", dvf)
    check_same_spatial("warp", "image", image, "dvf", dvf, hint="resample one of them first (regedu.resize / regedu.resize_dvf)")
    check_same_device("warp", "image", image, "dvf", dvf)
    m = _grid_mode("warp", mode)
    if padding_mode not in PADDING:
        check_choice("warp", "padding_mode", padding_mode, PADDING)
    if m == "bicubic" and image.dim() != 4:
        raise ValueError("warp: mode 'bicubic' is only available in 2D")
    if image.shape[0] != dvf.shape[0]:
        b = max(image.shape[0], dvf.shape[0])
        image = image.expand(b, *image.shape[1:])
        dvf = dvf.expand(b, *dvf.shape[1:])
    dtype = image.dtype
    if not image.is_floating_point():
        if m != "nearest":
            raise TypeError(f"warp: an integer image ({dtype}) can only be warped with mode='nearest' (label maps); "
                            "convert it with .float() to interpolate intensities")
        work = _label_compute_dtype(dtype)
        moved = F.grid_sample(image.to(work), dvf_to_grid(dvf.to(work)), mode="nearest", padding_mode=padding_mode,
                              align_corners=True)
        return moved.round().to(dtype)
    if dtype in HALF_DTYPES:
        grid = dvf_to_grid(dvf if dvf.dtype == torch.float64 else dvf.float())
        return F.grid_sample(image.to(grid.dtype), grid, mode=m, padding_mode=padding_mode, align_corners=True).to(dtype)
    if dvf.dtype != dtype:
        dvf = dvf.to(dtype)
    return F.grid_sample(image, dvf_to_grid(dvf), mode=m, padding_mode=padding_mode, align_corners=True)


def warp_labels(labels: torch.Tensor, dvf: torch.Tensor, num_classes: int | None = None, mode: str = "nearest") -> torch.Tensor:
    """Warp a label map ``(B, 1, *spatial)`` of integer classes.

    ``mode="nearest"`` samples the nearest label; ``mode="linear"`` warps the one-hot encoding
    linearly and takes the arg-max (smoother boundaries). The result has the dtype of ``labels``
    and every label value is kept exactly.
    """
    labels = check_image("warp_labels", "labels", labels)
    dvf = check_dvf("warp_labels", "dvf", dvf)
    check_choice("warp_labels", "mode", mode, ("nearest", "linear"))
    if labels.shape[1] != 1:
        raise ValueError(f"warp_labels: labels must have one channel of class indices, got shape {_shape(labels)}")
    if mode == "nearest":
        return warp(labels, dvf, mode="nearest")
    if bool((labels < 0).any()):
        raise ValueError("warp_labels: mode='linear' needs non-negative class indices (one-hot encoding)")
    k = int(labels.max()) + 1 if num_classes is None else num_classes
    work = dvf.dtype if dvf.dtype not in HALF_DTYPES else torch.float32
    onehot = F.one_hot(labels[:, 0].long(), k).movedim(-1, 1).to(work)
    return warp(onehot, dvf.to(work), mode="linear").argmax(1, keepdim=True).to(labels.dtype)


def affine_to_dvf(A: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The displacement field of an affine matrix: ``u(x) = A x - x`` on a grid of ``shape``.

    ``A`` is ``(ndim+1, ndim+1)`` or ``(B, ndim+1, ndim+1)`` (voxel coordinates, fixed -> moving);
    returns ``(B, ndim, *shape)``. ``warp(m, affine_to_dvf(A, s))`` equals ``affine_warp(m, A)``.
    """
    ndim = len(shape)
    A = check_affine("affine_to_dvf", "A", A, ndim=ndim)
    if A.dim() == 2:
        A = A.unsqueeze(0)
    grid = identity_grid(shape, dtype=A.dtype, device=A.device).reshape(ndim, -1)
    mapped = A[:, :ndim, :ndim] @ grid + A[:, :ndim, ndim:]
    return (mapped - grid).reshape(A.shape[0], ndim, *shape)


def affine_warp(
    image: torch.Tensor,
    A: torch.Tensor,
    shape: Sequence[int] | None = None,
    mode: str = "linear",
    padding_mode: str = "border",
) -> torch.Tensor:
    """Warp ``image`` by an affine matrix (pull-back): ``moved(x) = image(A x)``.

    ``A`` maps output (fixed) voxel coordinates to input (moving) voxel coordinates;
    ``shape`` is the output spatial size (default: the image's). Dtypes as in :func:`warp`:
    half precision is sampled in float32 and cast back, integer images need ``mode="nearest"``.
    """
    image = check_image("affine_warp", "image", image)
    ndim = image.dim() - 2
    A = check_affine("affine_warp", "A", A, ndim=ndim)
    check_same_device("affine_warp", "image", image, "A", A)
    shape = tuple(image.shape[2:]) if shape is None else tuple(int(s) for s in shape)
    if len(shape) != ndim or min(shape) < 1:
        raise ValueError(f"affine_warp: shape must have {ndim} positive entries for a {ndim}D image, got {shape}")
    m = _grid_mode("affine_warp", mode)
    check_choice("affine_warp", "padding_mode", padding_mode, PADDING)
    if m == "bicubic" and ndim != 2:
        raise ValueError("affine_warp: mode 'bicubic' is only available in 2D")
    dtype = image.dtype
    if image.is_floating_point():
        work = torch.float32 if dtype in HALF_DTYPES else dtype
    else:
        if m != "nearest":
            raise TypeError(f"affine_warp: an integer image ({dtype}) can only be warped with mode='nearest' (label maps); "
                            "convert it with .float() to interpolate intensities")
        work = _label_compute_dtype(dtype)
    A_w = A if A.dtype == torch.float64 and work == torch.float32 else A.to(work)
    theta = affine_to_theta(A_w, shape, tuple(image.shape[2:])).to(work)
    B = max(image.shape[0], theta.shape[0])
    if theta.shape[0] != B:
        theta = theta.expand(B, -1, -1)
    if image.shape[0] != B:
        if image.shape[0] != 1:
            raise ValueError(f"affine_warp: image and A must have the same batch size (or one of them 1), "
                             f"got {image.shape[0]} and {theta.shape[0]}")
        image = image.expand(B, *image.shape[1:])
    src = image if image.dtype == work else image.to(work)
    grid = F.affine_grid(theta, [B, image.shape[1], *shape], align_corners=True)
    out = F.grid_sample(src, grid, mode=m, padding_mode=padding_mode, align_corners=True)
    if image.is_floating_point():
        return out if out.dtype == dtype else out.to(dtype)
    return out.round().to(dtype)


__all__ = [
    "MODES", "PADDING", "axis_scale", "voxel_to_normalised", "normalised_to_voxel", "voxel_to_normalised_matrix",
    "affine_to_theta", "theta_to_affine", "identity_grid", "dvf_to_grid", "warp", "warp_labels", "affine_to_dvf",
    "affine_warp", "clear_cache",
]
