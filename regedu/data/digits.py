r"""Handwritten digits for the spatial-transformer notebook: upsampled, distorted, cluttered.

The 1797 digits of the UCI "Optical Recognition of Handwritten Digits" data set (Alpaydin & Kaynak,
1998) ship inside scikit-learn (``sklearn/datasets/data/digits.csv.gz``, read by
``sklearn.datasets.load_digits``): 8 x 8 images with 17 grey levels (0..16) and their class 0..9.
We read that file directly (no download; scikit-learn is imported only as a fall-back) and upsample
the digits smoothly (bicubic) to ``digit_size`` pixels.

:class:`DistortedDigits` places a digit in the centre of a ``size`` x ``size`` canvas and distorts it
with a random affine transformation (rotation, isotropic scaling, translation) about the centre,
``distorted(x) = canvas(A x)`` (pull-back, as everywhere in regedu), then optionally adds clutter:
random fragments of other digits, as in the cluttered MNIST of Mnih et al. (2014) used by Jaderberg
et al. (2015), *Spatial Transformer Networks*. Item ``i`` depends only on ``(seed, i)``.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .._checks import check_choice
from ..warping import affine_warp
from ..transforms import affine_matrix

_RAW: tuple[torch.Tensor, torch.Tensor] | None = None
SPLIT_SEED = 20150605  # fixed permutation for the train/test split (the same everywhere)


def _read_raw() -> tuple[torch.Tensor, torch.Tensor]:
    """The 1797 digits as ``(N, 8, 8)`` float32 in [0, 16] and ``(N,)`` int64."""
    global _RAW
    if _RAW is None:
        spec = importlib.util.find_spec("sklearn")
        path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
        data = None
        if path is not None and path.is_file():
            with gzip.open(path, "rt") as f:
                data = np.loadtxt(f, delimiter=",", dtype=np.float32)
            if data.ndim != 2 or data.shape[1] != 65:
                data = None
        if data is not None:
            images, target = data[:, :64].reshape(-1, 8, 8), data[:, 64].astype(np.int64)
        else:  # another layout: let scikit-learn read its own file
            from sklearn.datasets import load_digits as _sk_load_digits

            d = _sk_load_digits()
            images, target = d.images.astype(np.float32), d.target.astype(np.int64)
        _RAW = (torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(target))
    return _RAW


def load_digits(size: int = 32, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits upsampled to ``size`` x ``size``: ``(N, 1, size, size)`` float32 in ``[0, 1]`` and ``(N,)`` int64 labels.

    Bicubic interpolation of the 8 x 8 originals (each original pixel covers ``size / 8`` pixels),
    clipped to ``[0, 1]`` after dividing by 16.
    """
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"load_digits: size must be an integer of at least 8 pixels, got {size!r}")
    images, target = _read_raw()
    up = F.interpolate(images[:, None] / 16.0, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    return (up.to(device), target.to(device)) if device is not None else (up, target.clone())


class DistortedDigits(Dataset):
    """Digits with random rotation, scaling, translation and clutter: ``(image (1, size, size), label)``.

    Args:
        split: ``"train"`` (80% of the digits, a fixed random subset) or ``"test"`` (the other 20%).
        size: canvas size in pixels (default 40).
        digit_size: size of the upsampled digit before distortion (default ``0.6 * size``).
        rotation: largest rotation in degrees (uniform in ``[-rotation, rotation]``).
        scale: range of the isotropic scale factor of the *digit* (uniform).
        translation: largest shift as a fraction of ``size`` per axis (uniform).
        clutter: number of fragments of other digits added (each ``digit_size / 3`` pixels wide).
        seed: distortions of item ``i`` are drawn from a generator seeded with ``(seed, i)``.
        length: number of items (default: the number of digits in the split; items beyond it reuse
            digits with new distortions).

    ``image`` is float32 in ``[0, 1]``, ``label`` an int in 0..9. ``matrix(i)`` gives the affine
    matrix (pull-back, canvas voxels) used for item ``i``; ``clean(i)`` the undistorted canvas.
    """

    def __init__(
        self,
        split: str = "train",
        size: int = 40,
        digit_size: int | None = None,
        rotation: float = 45.0,
        scale: tuple[float, float] = (0.8, 1.2),
        translation: float = 0.15,
        clutter: int = 0,
        seed: int = 0,
        length: int | None = None,
    ):
        check_choice("DistortedDigits", "split", split, ("train", "test"))
        if not isinstance(size, int) or size < 8:
            raise ValueError(f"DistortedDigits: size must be an integer of at least 8, got {size!r}")
        self.digit_size = int(round(0.6 * size)) if digit_size is None else int(digit_size)
        if not 8 <= self.digit_size <= size:
            raise ValueError(f"DistortedDigits: digit_size must be in [8, size={size}], got {digit_size!r}")
        if not (0 < scale[0] <= scale[1]):
            raise ValueError(f"DistortedDigits: scale must be a range (low, high) with 0 < low <= high, got {scale!r}")
        images, target = load_digits(self.digit_size)
        perm = torch.randperm(len(target), generator=torch.Generator().manual_seed(SPLIT_SEED))
        n_train = int(round(0.8 * len(target)))
        idx = perm[:n_train] if split == "train" else perm[n_train:]
        self.images, self.targets = images[idx], target[idx]
        self.all_images = images
        self.split, self.size, self.seed = split, size, int(seed)
        self.rotation, self.scale = float(rotation), tuple(scale)
        self.translation, self.clutter = float(translation), int(clutter)
        self.length = len(self.targets) if length is None else int(length)
        pad = size - self.digit_size
        self._pad = (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2)

    def __len__(self) -> int:
        return self.length

    def _generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + int(index))

    def clean(self, index: int) -> torch.Tensor:
        """The undistorted digit of item ``index`` in the centre of the canvas, ``(1, size, size)``."""
        return F.pad(self.images[index % len(self.targets)], self._pad)

    def matrix(self, index: int) -> torch.Tensor:
        """The ``(3, 3)`` affine (canvas voxels, pull-back) that distorts item ``index``."""
        g = self._generator(index)
        u = torch.rand(4, generator=g, dtype=torch.float64)
        angle = math.radians(self.rotation) * (2 * u[0] - 1)
        s = self.scale[0] + (self.scale[1] - self.scale[0]) * u[1]
        t = self.translation * self.size * (2 * u[2:] - 1)
        c = (self.size - 1) / 2.0
        # pull-back: sampling the canvas at A x shows the digit scaled by s, i.e. A scales by 1/s
        return affine_matrix(torch.stack([angle, 1 / s, 1 / s, torch.zeros((), dtype=torch.float64), t[0], t[1]]), center=(c, c))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not -self.length <= index < self.length:
            raise IndexError(f"DistortedDigits: index {index} out of range for {self.length} items")
        index %= self.length
        canvas = self.clean(index)[None]
        image = affine_warp(canvas, self.matrix(index).float(), mode="linear", padding_mode="zeros")[0]
        if self.clutter > 0:
            g = self._generator(index)
            torch.rand(4, generator=g)  # skip the draws used by matrix()
            w = max(2, self.digit_size // 3)
            for _ in range(self.clutter):
                k = int(torch.randint(0, len(self.all_images), (), generator=g))
                y0, x0 = (int(v) for v in torch.randint(0, self.digit_size - w + 1, (2,), generator=g))
                y1, x1 = (int(v) for v in torch.randint(0, self.size - w + 1, (2,), generator=g))
                piece = self.all_images[k, 0, y0:y0 + w, x0:x0 + w]
                image[0, y1:y1 + w, x1:x1 + w] = torch.maximum(image[0, y1:y1 + w, x1:x1 + w], piece)
        return image.clamp(0, 1), int(self.targets[index % len(self.targets)])


__all__ = ["DistortedDigits", "load_digits"]
