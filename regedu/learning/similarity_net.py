r"""A learned (multi-modal) similarity for deep iterative registration (lecture section A).

Instead of a hand-crafted measure (SSD, NCC, MI), a small CNN learns to judge alignment: given a
fixed image and a moved image, possibly of different contrasts (T2-like vs T1), it **regresses the
local registration error** :math:`\|v(x)\|` (voxels) of patch pairs that were misaligned by known
random deformations :math:`v` (Eppenhof et al., 2018, error estimation of deformable registration;
Haskins et al., 2019 and Cheng et al., 2018, learned multi-modal similarity). The network is fully
convolutional: each output cell is the prediction for one patch (its receptive field), so it scores
all patches of an image at once.

The learned similarity of a pair is minus the mean predicted error,

.. math:: S_\theta(F, M) = -\frac{1}{|\Omega'|} \sum_{x \in \Omega'} \hat e_\theta(F, M)(x),

and :meth:`SimilarityNet.as_loss` gives the loss :math:`-S_\theta` as a callable
``loss(fixed, moved, mask=None) -> scalar``, differentiable with respect to ``moved``, which plugs
unchanged into :func:`regedu.register` (``similarity=net.as_loss()``): classical iterative optimisation
with a learned component.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from .._checks import check_mask, check_number
from ..fields import magnitude, random_dvf
from ..spatial_transformer import affine_to_dvf, resize, warp
from ..transforms import rigid_matrix
from .layers import ConvBlock, check_channels, check_features, check_ndim, conv_class, pair_input, register_model, strided_encoder


@register_model
class SimilarityNet(nn.Module):
    r"""Fully convolutional regressor of the local misalignment of an image pair.

    ``forward(fixed, moved)`` -> predicted error map :math:`\hat e \ge 0` in voxels,
    ``(B, 1, *spatial / 2**(len(features) - 1))`` (one value per patch; softplus output).

    Args:
        ndim: 2 or 3.
        channels: channels of each image.
        features: channels per level; every level after the first halves the resolution.
        norm: normalisation after each convolution (``"instance"`` makes the score insensitive to
            global intensity scaling, useful across modalities).
    """

    def __init__(self, ndim: int = 2, channels: int = 1, features: Sequence[int] = (16, 32, 32), norm: str | None = "instance"):
        super().__init__()
        ndim = check_ndim("SimilarityNet", ndim)
        channels = check_channels("SimilarityNet", "channels", channels)
        feats = check_features("SimilarityNet", features)
        c = feats[-1]
        self.body = strided_encoder(ndim, 2 * channels, feats, norm)  # the shared encoder, then one more block
        self.body.append(ConvBlock(ndim, c, c, norm=norm))
        self.head = conv_class(ndim)(c, 1, kernel_size=1)
        self.ndim, self.channels, self.halvings = ndim, channels, len(feats) - 1
        self.config = dict(ndim=ndim, channels=channels, features=list(feats), norm=norm)

    def forward(self, fixed: torch.Tensor, moved: torch.Tensor) -> torch.Tensor:
        x = pair_input("SimilarityNet", fixed, moved, self.ndim, self.channels, module=self)
        return F.softplus(self.head(self.body(x)))

    def error_map(self, fixed: torch.Tensor, moved: torch.Tensor) -> torch.Tensor:
        """The predicted error map at the images' size, ``(B, 1, *spatial)`` voxels (the per-patch
        predictions of :meth:`forward`, resized linearly): Eppenhof et al.'s registration error map."""
        e = self(fixed, moved)
        return resize(e, shape=tuple(fixed.shape[2:]))

    def _pooled_mask(self, mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        return F.adaptive_avg_pool2d(mask, size) if self.ndim == 2 else F.adaptive_avg_pool3d(mask, size)  # type: ignore[arg-type]

    def error(self, fixed: torch.Tensor, moved: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean predicted misalignment per pair, ``(B,)`` voxels (inside ``mask`` if given)."""
        e = self(fixed, moved)
        if mask is None:
            return e.flatten(1).mean(1)
        mask = check_mask("SimilarityNet.error", "mask", mask, like=fixed[:, :1] if fixed.shape[1] > 1 else fixed, dtype=e.dtype)
        m = self._pooled_mask(mask[:, :1], e.shape[2:]).expand_as(e)
        return (e * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1e-6)

    def similarity(self, fixed: torch.Tensor, moved: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        r"""The learned similarity :math:`S_\theta(F, M) = -\mathrm{mean}\,\hat e`, ``(B,)`` (higher = better aligned)."""
        return -self.error(fixed, moved, mask)

    def as_loss(self) -> Callable[..., torch.Tensor]:
        """A loss ``loss(fixed, moved, mask=None) -> scalar`` (mean predicted error, to minimise) for
        :func:`regedu.register` or the training objectives. Freezes the network (eval mode, no
        parameter gradients); the loss stays differentiable with respect to ``moved``. Marked
        ``full_resolution_only``: ``register`` uses it on a single pyramid level unless told otherwise."""
        self.eval()
        self.requires_grad_(False)
        self.zero_grad(set_to_none=True)

        def learned_similarity_loss(fixed: torch.Tensor, moved: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
            p = next(self.parameters())
            if fixed.device != p.device:
                self.to(fixed.device)
            b = max(fixed.shape[0], moved.shape[0])
            fixed_b = fixed.expand(b, *fixed.shape[1:])
            moved_b = moved.expand(b, *moved.shape[1:])
            if mask is not None:
                mask = mask.expand(b, *mask.shape[1:])
            return self.error(fixed_b.to(p.dtype), moved_b.to(p.dtype), mask).mean()

        # the network was trained on full-resolution images: register runs it on one pyramid level by default
        # (on coarser levels it scores images of a scale it never saw, which can send a registration far off)
        learned_similarity_loss.full_resolution_only = True  # type: ignore[attr-defined]
        return learned_similarity_loss


class MisalignedPairs(Dataset):
    r"""Training data for :class:`SimilarityNet`: aligned pairs, then misaligned by a known random field.

    Wraps a registration dataset (e.g. ``regedu.data.PairDataset(vol, modality="t2")``, whose items
    have ``fixed``, ``moving`` and the ground truth ``dvf``). Item ``i``: the pair is first aligned,
    ``aligned = warp(moving, dvf)``, then misaligned by a random smooth field :math:`v` whose largest
    displacement is uniform in ``[0, max_displacement]`` voxels (so perfectly aligned pairs occur too):
    ``moving = warp(aligned, v)``. With probability ``rigid`` the field is instead a random rigid
    transformation about the image centre (rotation up to ``max_rotation`` degrees, translation up to
    ``max_displacement / 2`` voxels per axis; 2D only), the global misalignment the learned similarity
    is mostly used for. The regression ``target`` is the misalignment :math:`\|v(x)\|`
    averaged over each output cell of the network (a network that halves the resolution ``halvings``
    times, as :class:`SimilarityNet` with ``len(features) - 1`` halvings).

    Items: ``fixed``, ``moving`` ``(C, *S)``, ``target`` ``(1, *S')`` with ``S' = ceil(S / 2**halvings)``.
    """

    def __init__(self, pairs: Dataset, max_displacement: float = 10.0, smoothness: float | None = None, halvings: int = 2,
                 rigid: float = 0.5, max_rotation: float = 10.0, seed: int | None = None):
        fn = "MisalignedPairs"
        self.pairs = pairs
        self.max_displacement = check_number(fn, "max_displacement", max_displacement, low=0)
        self.smoothness = None if smoothness is None else check_number(fn, "smoothness", smoothness, low=0, low_inclusive=False)
        self.halvings = check_number(fn, "halvings", halvings, low=0, integer=True)
        self.rigid = check_number(fn, "rigid", rigid, low=0, high=1)
        self.max_rotation = check_number(fn, "max_rotation", max_rotation, low=0)
        self.seed = None if seed is None else check_number(fn, "seed", seed, low=0, integer=True)
        if len(pairs) == 0:  # type: ignore[arg-type]  # a map-style dataset with __len__
            raise ValueError(f"{fn}: pairs is empty; expected a registration dataset with at least one item")

    def __len__(self) -> int:
        return len(self.pairs)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = self.pairs[i]
        fixed, moving, dvf = item["fixed"][None], item["moving"][None], item["dvf"][None]
        shape = tuple(fixed.shape[2:])
        g = torch.Generator().manual_seed(self.seed * 100_003 + i) if self.seed is not None else None
        amp = float(torch.rand((), generator=g)) * self.max_displacement
        if len(shape) == 2 and float(torch.rand((), generator=g)) < self.rigid:
            u = (2 * torch.rand(3, generator=g) - 1) * (amp / self.max_displacement if self.max_displacement > 0 else 0.0)
            params = torch.stack([u[0] * math.radians(self.max_rotation), u[1] * amp / 2, u[2] * amp / 2])
            v = affine_to_dvf(rigid_matrix(params, center=[(s - 1) / 2 for s in shape]), shape)
        else:
            smooth = self.smoothness if self.smoothness is not None else min(shape) / 8
            v = random_dvf(shape, amp, smooth, seed=None if g is None else int(torch.randint(0, 2**31 - 1, (), generator=g)))
        moved = warp(warp(moving, dvf), v)
        out = list(shape)
        for _ in range(self.halvings):
            out = [(s + 1) // 2 for s in out]  # the size after a stride-2, padding-1 convolution
        pool = F.adaptive_avg_pool2d if len(shape) == 2 else F.adaptive_avg_pool3d
        target = pool(magnitude(v)[:, None], out)  # type: ignore[arg-type]
        return {"fixed": fixed[0], "moving": moved[0], "target": target[0]}


def train_similarity(net: SimilarityNet, pairs: Dataset, steps: int = 300, max_displacement: float = 10.0,
                     val_pairs: Dataset | None = None, **train_kwargs: Any):
    """Train ``net`` to regress misalignment on :class:`MisalignedPairs` of ``pairs`` with the one
    training loop (:func:`regedu.learning.train`, objective ``"regression"``). Returns the history."""
    from .train import train

    steps = check_number("train_similarity", "steps", steps, low=1, integer=True)
    data = MisalignedPairs(pairs, max_displacement, halvings=net.halvings)
    val = MisalignedPairs(val_pairs, max_displacement, halvings=net.halvings, seed=1) if val_pairs is not None else None
    return train(net, data, "regression", steps=steps, val_data=val, **train_kwargs)
