"""Tiny synthetic data for the tests of :mod:`regedu.learning` (fast, no files, 2D and 3D).

A 'phantom' is a smooth random blob with three nested tissue classes (1 outer, 2 middle, 3 inner),
a T1-like image (intensity rising inwards) and a T2-like one (falling inwards). :class:`ToyPairs`
makes registration pairs from it in the item format of :class:`regedu.data.PairDataset`
(``fixed``, ``moving``, ``dvf``, ``fixed_labels``, ``moving_labels``, ``mask``): the moving image is a
randomly deformed phantom and ``fixed = warp(moving, dvf)`` with a known smooth ``dvf``.
The course's real data and datasets live in :mod:`regedu.data`; this module only keeps the
tests of the learning package independent and quick.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import Dataset

from ..fields import random_dvf
from ..filters import gaussian_blur
from ..spatial_transformer import identity_grid, resize_dvf, warp, warp_labels

T1_LEVELS = (0.0, 0.35, 0.6, 0.9)
T2_LEVELS = (0.0, 0.9, 0.55, 0.25)


def phantom(shape: Sequence[int] = (64, 64), seed: int = 0, wobble: float = 0.12) -> tuple[torch.Tensor, torch.Tensor]:
    """A random nested-blob phantom: ``(labels (1,1,*shape) int64, radius field)``.

    The boundary radius of each class varies smoothly with direction (``wobble``), so different
    seeds give different but similar 'anatomies'.
    """
    shape = tuple(int(s) for s in shape)
    g = torch.Generator().manual_seed(int(seed))
    grid = identity_grid(shape)
    centre = torch.tensor([(s - 1) / 2 for s in shape]).reshape(-1, *([1] * len(shape)))
    rel = (grid - centre) / centre
    # smooth random radial modulation
    noise = torch.randn(1, 1, *shape, generator=g)
    mod = gaussian_blur(noise, max(shape) / 6)[0, 0]
    mod = mod / mod.abs().max().clamp_min(1e-6)
    r = rel.pow(2).sum(0).sqrt() * (1 + wobble * mod)
    labels = torch.zeros(shape, dtype=torch.int64)
    for lab, radius in ((1, 0.85), (2, 0.6), (3, 0.35)):
        labels[r < radius] = lab
    return labels[None, None], r


def render(labels: torch.Tensor, levels: Sequence[float] = T1_LEVELS, blur: float = 0.7) -> torch.Tensor:
    """Image ``(B,1,*S)`` float from a label map with one intensity per class, lightly blurred."""
    lut = torch.tensor(levels, dtype=torch.float32, device=labels.device)
    img = lut[labels.clamp(0, len(levels) - 1)].float()
    return gaussian_blur(img, blur) if blur > 0 else img


def smooth_dvf(shape: Sequence[int], max_displacement: float, smoothness: float, seed: int | None = None) -> torch.Tensor:
    """:func:`regedu.random_dvf` drawn on a 4x coarser grid and upsampled (same look, ~10x cheaper)."""
    coarse = [max(4, s // 4) for s in shape]
    u = random_dvf(coarse, 1.0, max(smoothness / 4, 0.5), seed=seed)
    u = resize_dvf(u, shape)
    return u * (max_displacement / u.pow(2).sum(1).sqrt().max().clamp_min(1e-12))


class ToyPairs(Dataset):
    """Registration pairs of deformed phantoms with known ground truth (item format of ``PairDataset``).

    Item ``i``: moving = phantom ``p`` (one of ``subjects`` anatomies) deformed by a random field
    (intra-class variation), fixed = ``warp(moving, dvf)`` with a random smooth ``dvf`` of at most
    ``max_displacement`` voxels. ``mode="train"`` draws fresh random fields every call (on the fly);
    ``mode="eval"`` uses fixed seeds per index (held-out, reproducible). ``modality="t2"`` renders
    the moving image T2-like (multi-modal pairs).
    """

    def __init__(self, shape: Sequence[int] = (64, 64), size: int = 64, mode: str = "train", subjects: int = 4,
                 max_displacement: float = 4.0, smoothness: float | None = None, modality: str = "t1", seed: int = 0):
        self.shape = tuple(int(s) for s in shape)
        self.size, self.mode, self.max_displacement, self.modality, self.seed = size, mode, max_displacement, modality, seed
        self.smoothness = smoothness if smoothness is not None else max(self.shape) / 8
        offset = 1000 if mode == "eval" else 0
        self.labels = [phantom(self.shape, seed=seed + offset + k)[0] for k in range(subjects)]

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = None if self.mode == "train" else 10_000 * (self.seed + 1) + i
        s2 = None if g is None else g + 5000
        labels = self.labels[i % len(self.labels)]
        pre = smooth_dvf(self.shape, self.max_displacement / 2, self.smoothness, seed=s2)
        moving_labels = warp_labels(labels, pre)
        dvf = smooth_dvf(self.shape, self.max_displacement, self.smoothness, seed=g)
        fixed_labels = warp_labels(moving_labels, dvf)
        moving = render(moving_labels, T2_LEVELS if self.modality == "t2" else T1_LEVELS)
        fixed = warp(render(moving_labels), dvf)
        return {"fixed": fixed[0], "moving": moving[0], "dvf": dvf[0], "fixed_labels": fixed_labels[0],
                "moving_labels": moving_labels[0], "mask": (fixed_labels[0] > 0).float()}
