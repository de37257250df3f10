r"""Patch-based training and whole-image inference (sliding windows with blending).

3D registration networks are mostly trained on **patches** (e.g. :math:`128^3` voxels cut from larger
scans; the lecture's "mostly patch-based"): a whole volume with its feature maps does not fit in GPU
memory for training. A fully convolutional network trained on patches can then be applied

* to the **whole volume** at once (:func:`predict` without ``patch_size``), if it fits for inference; or
* **tile by tile** (a sliding window, ``patch_size=...``). Near a tile's border the network lacks the
  context beyond the tile (its receptive field reaches into zero padding, and displacements pointing
  out of the tile cannot be seen): predictions there are worse, and adjacent tiles disagree, which
  shows as **seams**, jumps of the field along the tile borders. The fix: **overlapping tiles**
  whose predictions are **blended** with a weight that is largest at the tile centre and small at its
  border (``overlap=0.5, blend="gaussian"``), so every voxel is predicted mainly by a tile that sees
  it in the middle.

Displacements are in voxels and do not change when an image is cropped, so a crop of a pair is a pair
with the crop of its ground-truth field (:class:`PatchDataset`).

References: Eppenhof & Pluim (2018), Pulmonary CT registration through supervised learning with
convolutional neural networks, IEEE TMI 38(5) (patch-based training and inference); Sokooti et al.
(2017), RegNet, MICCAI (patches); the sliding-window inference with Gaussian blending is the scheme of
e.g. MONAI's ``sliding_window_inference`` (``mode="gaussian"``).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Sequence

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from .._checks import check_choice, check_image, check_same_spatial
from ..spatial_transformer import warp

BLENDS = ("gaussian", "constant")


def _size(fn: str, name: str, size: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    s = (int(size),) * ndim if isinstance(size, int) else tuple(int(v) for v in size)
    if len(s) != ndim or min(s) < 1:
        raise ValueError(f"{fn}: {name} must be a positive int or {ndim} positive ints, got {size!r}")
    return s


def tile_starts(length: int, patch: int, overlap: float = 0.0) -> list[int]:
    """Start indices of tiles of ``patch`` voxels that cover ``range(length)``, consecutive tiles
    overlapping by (at least) ``overlap`` of a patch; the last tile ends at ``length`` (it may overlap more).

    >>> tile_starts(10, 4)
    [0, 4, 6]
    >>> tile_starts(10, 4, overlap=0.5)
    [0, 2, 4, 6]
    """
    if patch < 1 or patch > length:
        raise ValueError(f"tile_starts: patch must be in [1, length={length}], got {patch}")
    if not 0 <= overlap < 1:
        raise ValueError(f"tile_starts: overlap must be in [0, 1), got {overlap!r}")
    stride = max(1, int(math.floor(patch * (1 - overlap))))
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)
    return starts


def blend_window(size: Sequence[int], kind: str = "gaussian", sigma: float = 0.125) -> torch.Tensor:
    r"""Blending weights of one tile, ``(1, 1, *size)``, maximal (1) at the centre.

    ``"gaussian"``: :math:`\prod_k \exp(-\tfrac12 (x_k - c_k)^2 / (\sigma s_k)^2)` (``sigma`` as a share
    of the tile size :math:`s_k`; MONAI's default is 0.125), floored at 1e-3 so that every voxel keeps a
    positive weight; ``"constant"``: all ones (plain averaging of overlapping tiles).
    """
    check_choice("blend_window", "kind", kind, BLENDS)
    w = torch.ones(1, 1, *size)
    if kind == "constant":
        return w
    for k, s in enumerate(size):
        x = torch.arange(s, dtype=torch.float32) - (s - 1) / 2
        g = torch.exp(-0.5 * (x / (sigma * s)) ** 2)
        shape = [1] * (len(size) + 2)
        shape[k + 2] = s
        w = w * g.reshape(shape)
    return w.clamp_min(1e-3)


def crop(batch: dict[str, Any], start: Sequence[int], size: Sequence[int]) -> dict[str, Any]:
    """The same spatial crop ``[start, start + size)`` of every tensor ``(..., *spatial)`` in a pair batch
    (images, labels, mask, and the displacement field, whose voxel values stay valid)."""
    ndim = len(size)
    index: tuple[Any, ...] = (Ellipsis,) + tuple(slice(a, a + s) for a, s in zip(start, size))
    return {k: v[index] if torch.is_tensor(v) and v.dim() >= ndim else v for k, v in batch.items()}


class PatchDataset(Dataset):
    """Random patches of the pairs of another dataset (e.g. :class:`regedu.data.PairDataset`).

    Item ``i`` is item ``i`` of ``dataset`` (a dict of tensors ``(C, *spatial)`` without batch axis) cropped
    at a random position to ``patch_size``; the position is drawn from ``seed`` and ``i`` (reproducible;
    a train-mode ``PairDataset`` still gives a new pair every read). Used to train on patches.
    """

    def __init__(self, dataset: Dataset, patch_size: int | Sequence[int], seed: int = 0):
        self.dataset, self.seed = dataset, int(seed)
        first = dataset[0]
        self.spatial = tuple(first["fixed"].shape[1:])
        self.patch_size = _size("PatchDataset", "patch_size", patch_size, len(self.spatial))
        if any(p > s for p, s in zip(self.patch_size, self.spatial)):
            raise ValueError(f"PatchDataset: patch_size {self.patch_size} is larger than the images {self.spatial}")

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(i))
        start = [int(torch.randint(0, s - p + 1, (1,), generator=g)) for s, p in zip(self.spatial, self.patch_size)]
        return crop(self.dataset[i], start, self.patch_size)


@torch.no_grad()
def predict(model: nn.Module, fixed: torch.Tensor, moving: torch.Tensor, patch_size: int | Sequence[int] | None = None,
            overlap: float = 0.0, blend: str = "gaussian") -> dict[str, Any]:
    r"""A registration model's output for a pair, without gradients, in eval mode (the mode is restored).

    Without ``patch_size``: one forward pass on the whole images. With ``patch_size``: a sliding window,
    tiles of that size overlapping by ``overlap`` (:func:`tile_starts`); the tiles' displacement fields are
    blended with :func:`blend_window` weights :math:`w`, :math:`u(x) = \sum_t w_t(x) u_t(x) / \sum_t w_t(x)`,
    and the moving image is warped once with the blended field.

    Returns ``{"dvf", "moved"}`` (plus ``"tiles"``, the list of tile start positions, for a sliding window);
    for a whole-image pass, the model's full output.
    """
    fixed = check_image("predict", "fixed", fixed)
    moving = check_image("predict", "moving", moving)
    check_same_spatial("predict", "fixed", fixed, "moving", moving)
    was = model.training
    model.eval()
    try:
        if patch_size is None:
            return model(fixed, moving)
        spatial = tuple(fixed.shape[2:])
        size = _size("predict", "patch_size", patch_size, len(spatial))
        if any(p > s for p, s in zip(size, spatial)):
            raise ValueError(f"predict: patch_size {size} is larger than the images {spatial}")
        w = blend_window(size, blend).to(fixed.device, fixed.dtype)
        total = fixed.new_zeros(fixed.shape[0], len(spatial), *spatial)
        weight = fixed.new_zeros(1, 1, *spatial)
        tiles = list(itertools.product(*(tile_starts(s, p, overlap) for s, p in zip(spatial, size))))
        for start in tiles:
            index: tuple[Any, ...] = (Ellipsis,) + tuple(slice(a, a + p) for a, p in zip(start, size))
            u = model(fixed[index], moving[index])["dvf"]
            total[index] += w * u
            weight[index] += w
        dvf = total / weight
        return {"dvf": dvf, "moved": warp(moving, dvf), "tiles": tiles}
    finally:
        model.train(was)


def tile_border_distance(shape: Sequence[int], patch_size: int | Sequence[int]) -> torch.Tensor:
    """For the non-overlapping tiling of ``shape`` (:func:`tile_starts` with ``overlap=0``): every voxel's
    distance (in voxels) to the nearest border of its tile that is *inside* the image (image borders do
    not count), ``(*shape)`` float; ``inf`` for a single tile. Where seams appear, the distance is 0."""
    size = _size("tile_border_distance", "patch_size", patch_size, len(shape))
    out = torch.full(tuple(shape), math.inf)
    for k, (s, p) in enumerate(zip(shape, size)):
        d = torch.full((s,), math.inf)
        starts = tile_starts(s, p, 0.0)
        x = torch.arange(s, dtype=torch.float32)
        for a in starts:
            inside = (x >= a) & (x < a + p)
            if a > 0:                     # the tile's lower face is interior
                d = torch.where(inside, torch.minimum(d, x - a), d)
            if a + p < s:                 # the upper face is interior
                d = torch.where(inside, torch.minimum(d, a + p - 1 - x), d)
        view = [1] * len(shape)
        view[k] = s
        out = torch.minimum(out, d.reshape(view).expand(tuple(shape)))
    return out


__all__ = ["tile_starts", "blend_window", "crop", "PatchDataset", "predict", "tile_border_distance", "BLENDS"]
