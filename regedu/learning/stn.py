r"""Spatial transformer networks (Jaderberg et al., 2015, *Spatial Transformer Networks*, NeurIPS).

A spatial transformer is a differentiable module with three parts:

1. a **localisation network** :math:`f_{loc}` that looks at the input :math:`U` and regresses the
   parameters :math:`\theta = f_{loc}(U)` of a transform (here affine, 6 numbers in 2D);
2. a **grid generator** that maps every output (target) pixel :math:`G_i = (x_i^t, y_i^t)` to a source
   position, :math:`(x_i^s, y_i^s)^T = A_\theta (x_i^t, y_i^t, 1)^T`;
3. a **sampler** that reads the input at the source positions (bilinear interpolation).

Steps 2 and 3 are :func:`regedu.affine_warp` (``F.affine_grid`` + ``F.grid_sample``); the library's
voxel matrix of :math:`\theta` is :func:`regedu.transforms.theta_to_affine`. Inserted in front of a
classifier, the module learns to *canonicalise* its input (undo rotation, scale, translation), which
a plain CNN is not invariant to.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .. import transforms
from .._checks import as_float, check_image
from ..spatial_transformer import affine_warp
from .layers import ConvRegressor, check_channels, check_features, check_ndim, module_dtype, register_model, strided_encoder


@register_model
class SpatialTransformer(nn.Module):
    r"""Affine spatial transformer: localisation net -> :math:`\theta` -> grid generator -> sampler.

    Args:
        ndim: 2 or 3.
        in_channels: channels of the input.
        features: localisation-network channels per level.
        output_shape: spatial size of the output (default: the input's), e.g. to zoom in on a region.

    ``forward(x)`` returns ``(warped, matrix)``: ``warped`` ``(B, C, *output_shape)`` and the voxel
    matrix ``(B, ndim+1, ndim+1)`` (output voxel -> input voxel, regedu's convention). ``theta(x)``
    gives PyTorch's normalised ``(B, ndim, ndim+1)``. The localisation net starts at the identity.
    """

    def __init__(self, ndim: int = 2, in_channels: int = 1, features: Sequence[int] = (8, 16, 32),
                 output_shape: Sequence[int] | None = None, hidden: int = 32):
        super().__init__()
        ndim = check_ndim("SpatialTransformer", ndim)
        in_channels = check_channels("SpatialTransformer", "in_channels", in_channels)
        self.ndim = ndim
        out_shape = None if output_shape is None else tuple(int(s) for s in output_shape)
        self.output_shape = out_shape
        eye = torch.eye(ndim, ndim + 1)
        self.localisation = ConvRegressor(ndim, in_channels, ndim * (ndim + 1), check_features("SpatialTransformer", features),
                                          hidden=hidden, pool=4, init_bias=eye)
        self.config = dict(ndim=ndim, in_channels=in_channels, features=list(features),
                           output_shape=None if out_shape is None else list(out_shape), hidden=hidden)

    def theta(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\theta = f_{loc}(x)`, ``(B, ndim, ndim+1)`` in PyTorch's normalised coordinates."""
        x = as_float("SpatialTransformer", "x", check_image("SpatialTransformer", "x", x, ndim=self.ndim), module_dtype(self))
        return self.localisation(x).reshape(-1, self.ndim, self.ndim + 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = as_float("SpatialTransformer", "x", check_image("SpatialTransformer", "x", x, ndim=self.ndim), module_dtype(self))
        theta = self.theta(x)
        out_shape = self.output_shape or tuple(x.shape[2:])
        A = transforms.theta_to_affine(theta, out_shape, tuple(x.shape[2:]))
        return affine_warp(x, A, shape=out_shape), A


@register_model
class CNNClassifier(nn.Module):
    """A plain CNN classifier: conv blocks (stride 2 after the first), average pooling to a ``pool x pool``
    grid, and a fully connected layer (as the CNN baselines of Jaderberg et al., 2015).

    The fully connected layer sees *where* features are, so the network is not invariant to where
    the digit lies, nor to its rotation or scale: it has to learn every pose from the data (the
    weakness a spatial transformer addresses). ``pool=1`` (global pooling) makes it translation
    invariant. ``norm``: normalisation after each convolution (instance norm: the same in training and
    evaluation). ``(B, in_channels, H, W)`` -> logits ``(B, num_classes)``. The backbone of
    :class:`STNClassifier`, so the two differ only by the spatial transformer.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, features: Sequence[int] = (16, 32, 64), ndim: int = 2,
                 dropout: float = 0.0, pool: int = 4, norm: str | None = "instance"):
        super().__init__()
        ndim = check_ndim("CNNClassifier", ndim)
        num_classes = check_channels("CNNClassifier", "num_classes", num_classes)
        in_channels = check_channels("CNNClassifier", "in_channels", in_channels)
        feats = check_features("CNNClassifier", features)
        blocks, c = strided_encoder(ndim, in_channels, feats, norm), feats[-1]
        pooling = nn.AdaptiveAvgPool2d(pool) if ndim == 2 else nn.AdaptiveAvgPool3d(pool)
        self.ndim = ndim
        self.body = nn.Sequential(*blocks, pooling, nn.Flatten(), nn.Dropout(dropout), nn.Linear(c * pool**ndim, num_classes))
        self.config = dict(num_classes=num_classes, in_channels=in_channels, features=list(feats), ndim=ndim, dropout=dropout,
                           pool=pool, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_image(type(self).__name__, "x", x, ndim=self.ndim)
        return self.body(as_float(type(self).__name__, "x", x, module_dtype(self)))


@register_model
class STNClassifier(nn.Module):
    """A :class:`SpatialTransformer` in front of a :class:`CNNClassifier` with the same backbone.

    ``forward(x)`` -> logits; ``canonicalise(x)`` -> ``(warped, matrix)``, the images the classifier sees.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, features: Sequence[int] = (16, 32, 64),
                 stn_features: Sequence[int] = (8, 16, 32), ndim: int = 2, output_shape: Sequence[int] | None = None,
                 dropout: float = 0.0, pool: int = 4):
        super().__init__()
        self.stn = SpatialTransformer(ndim, in_channels, stn_features, output_shape)
        self.classifier = CNNClassifier(num_classes, in_channels, features, ndim, dropout, pool)
        self.config = dict(num_classes=num_classes, in_channels=in_channels, features=list(features),
                           stn_features=list(stn_features), ndim=ndim,
                           output_shape=None if output_shape is None else list(output_shape), dropout=dropout, pool=pool)

    def canonicalise(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The transformed input ``(B, C, *output_shape)`` and its voxel matrix ``(B, ndim+1, ndim+1)``."""
        return self.stn(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        warped, _ = self.stn(x)
        return self.classifier(warped)
