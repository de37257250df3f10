r"""Unsupervised feature learning for similarity (lecture section A; Wu et al., 2013, 2016).

Instead of comparing intensities voxel by voxel, describe every voxel by a short vector of
**features of the patch around it**, learned without any labels or known correspondences by an
**autoencoder**: an encoder :math:`f` maps a patch :math:`x` (``patch``\ :sup:`ndim` voxels) to a code
:math:`z = f(x) \in \mathbb{R}^K` with :math:`K` much smaller than the patch, and a decoder :math:`g`
reconstructs the patch from it; both are trained to minimise the reconstruction error
:math:`\mathbb{E}_x \|g(f(x)) - x\|^2` on patches drawn at random from unlabelled images. The code
keeps what varies most between patches of this kind of image and drops what it cannot encode,
such as noise. Wu et al. use a (convolutional) stacked autoencoder this way and use the codes as
the voxels' "morphological signatures" in feature-based deformable registration (HAMMER).

Here the encoder is a small MLP on the patch (a convolution with a ``patch``-sized kernel and a
1x1 convolution), so applying it convolutionally gives dense feature maps ``(B, K, *spatial)``: the
code of the patch centred at every voxel. :func:`feature_similarity` turns it into a loss for the
iterative engine, the mean squared difference of the (standardised) features,

.. math:: \mathcal{L}(F, M) = \frac{c}{K |\Omega|} \sum_{x \in \Omega} \| \hat f(F)(x) - \hat f(M)(x) \|^2,

which plugs into :func:`regedu.register` as ``similarity=...`` like any callable.

References: Wu, Kim, Wang, Gao, Liao & Shen (2013), Unsupervised deep feature learning for
deformable registration of MR brain images, MICCAI; Wu, Kim, Wang, Munsell & Shen (2016), Scalable
high-performance image registration framework by unsupervised deep feature representations
learning, IEEE TBME 63(7).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._checks import as_float, check_image, check_mask, check_number, check_pair
from .layers import check_ndim, conv_class, module_dtype, register_model


@register_model
class PatchAutoencoder(nn.Module):
    r"""An autoencoder of image patches whose encoder runs densely over whole images.

    Encoder: ``patch``\ :sup:`ndim` patch -> ``hidden`` sigmoid units -> ``features`` sigmoid units
    (the code :math:`z`); decoder: code -> ``hidden`` -> the patch. :meth:`encode` applies the encoder
    at every voxel (the image is padded by edge replication), standardised per feature channel with
    the mean and standard deviation measured by :meth:`fit_standardisation` (identity before).

    Args:
        ndim: 2 or 3. patch: patch size (odd, >= 3). features: code size :math:`K`. hidden: hidden units.
    """

    mean: torch.Tensor  # buffers (typed for mypy: nn.Module's attributes are Tensor | Module)
    std: torch.Tensor
    intensity_var: torch.Tensor

    def __init__(self, ndim: int = 2, patch: int = 7, features: int = 16, hidden: int = 64):
        super().__init__()
        fn = "PatchAutoencoder"
        self.ndim = check_ndim(fn, ndim)
        self.patch = check_number(fn, "patch", patch, low=3, integer=True)
        if self.patch % 2 == 0:
            raise ValueError(f"{fn}: patch must be odd (a patch centred on its voxel), got {patch}")
        features = check_number(fn, "features", features, low=1, integer=True)
        hidden = check_number(fn, "hidden", hidden, low=1, integer=True)
        conv = conv_class(self.ndim)
        self.encoder = nn.Sequential(conv(1, hidden, self.patch), nn.Sigmoid(), conv(hidden, features, 1), nn.Sigmoid())
        self.decoder = nn.Sequential(nn.Linear(features, hidden), nn.Sigmoid(), nn.Linear(hidden, self.patch**self.ndim))
        self.register_buffer("mean", torch.zeros(1, features, *[1] * self.ndim))
        self.register_buffer("std", torch.ones(1, features, *[1] * self.ndim))
        self.register_buffer("intensity_var", torch.ones(()))
        self.config = dict(ndim=self.ndim, patch=self.patch, features=features, hidden=hidden)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """Reconstruct patches ``(N, 1, p, ..., p)`` -> ``(N, 1, p, ..., p)`` (through the code)."""
        z = self.encoder(as_float("PatchAutoencoder", "patches", patches, module_dtype(self))).flatten(1)
        return self.decoder(z).reshape(patches.shape)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Dense standardised features ``(B, K, *spatial)`` of an image ``(B, 1, *spatial)`` (differentiable)."""
        image = check_image("PatchAutoencoder.encode", "image", image, ndim=self.ndim)
        if image.shape[1] != 1:
            raise ValueError(f"PatchAutoencoder.encode: image must have 1 channel, got shape {tuple(image.shape)}")
        x = as_float("PatchAutoencoder.encode", "image", image, module_dtype(self))
        r = self.patch // 2
        x = F.pad(x, [r] * (2 * self.ndim), mode="replicate")
        return (self.encoder(x) - self.mean) / self.std

    @torch.no_grad()
    def fit_standardisation(self, images: torch.Tensor) -> "PatchAutoencoder":
        """Measure the mean and standard deviation of every feature channel (and the intensity
        variance, used by :func:`feature_similarity`) on ``images`` ``(N, 1, *spatial)``."""
        images = check_image("PatchAutoencoder.fit_standardisation", "images", images, ndim=self.ndim)
        self.mean.zero_()
        self.std.fill_(1.0)
        f = self.encode(images)
        dims = [0] + list(range(2, f.dim()))
        self.mean.copy_(f.mean(dims, keepdim=True))
        self.std.copy_(f.std(dims, keepdim=True).clamp_min(1e-6))
        self.intensity_var.copy_(as_float("fit", "images", images).var())
        return self


def random_patches(images: torch.Tensor, n: int, patch: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` patches ``(n, 1, patch, ..., patch)`` cut at random positions from random images of ``images`` ``(N, 1, *S)``."""
    images = check_image("random_patches", "images", images)
    n = check_number("random_patches", "n", n, low=1, integer=True)
    spatial = images.shape[2:]
    if any(s < patch for s in spatial):
        raise ValueError(f"random_patches: images {tuple(spatial)} are smaller than the patch size {patch}")
    idx = torch.randint(0, images.shape[0], (n,), generator=generator)
    starts = [torch.randint(0, s - patch + 1, (n,), generator=generator) for s in spatial]
    out = []
    for i in range(n):
        sl = tuple(slice(int(st[i]), int(st[i]) + patch) for st in starts)
        out.append(images[int(idx[i])][(slice(None),) + sl])
    return torch.stack(out)


def train_autoencoder(ae: PatchAutoencoder, images: torch.Tensor, steps: int = 400, batch: int = 256, lr: float = 3e-3,
                      seed: int = 0) -> list[float]:
    """Train ``ae`` to reconstruct random patches of the unlabelled ``images`` ``(N, 1, *spatial)`` (Adam,
    mean squared reconstruction error), then :meth:`~PatchAutoencoder.fit_standardisation` on them.
    No labels and no correspondences are used. Returns the loss of every step."""
    fn = "train_autoencoder"
    images = as_float(fn, "images", check_image(fn, "images", images, ndim=ae.ndim))
    steps = check_number(fn, "steps", steps, low=1, integer=True)
    batch = check_number(fn, "batch", batch, low=1, integer=True)
    lr = check_number(fn, "lr", lr, low=0, low_inclusive=False)
    g = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam(ae.parameters(), lr=lr)
    device = next(ae.parameters()).device
    losses = []
    ae.train()
    for _ in range(steps):
        x = random_patches(images, batch, ae.patch, g).to(device)
        loss = F.mse_loss(ae(x), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    ae.eval()
    ae.fit_standardisation(images.to(device))
    return losses


def feature_similarity(ae: PatchAutoencoder) -> Callable[..., torch.Tensor]:
    r"""A loss ``loss(fixed, moved, mask=None) -> scalar`` for :func:`regedu.register`: the mean squared
    difference of the standardised learned features,
    :math:`c \cdot \mathrm{mean}_{x, k} (\hat f_k(F)(x) - \hat f_k(M)(x))^2`, with :math:`c` the intensity
    variance of the training images (so the loss has the scale of the intensity MSE and the same
    regulariser weight suits both). Differentiable with respect to ``moved``; the autoencoder is frozen."""
    ae.eval()
    ae.requires_grad_(False)
    ae.zero_grad(set_to_none=True)

    def learned_feature_loss(fixed: torch.Tensor, moved: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        fixed, moved = check_pair("feature_similarity", "fixed", fixed, "moved", moved)
        d = (ae.encode(fixed) - ae.encode(moved)).pow(2).mean(1, keepdim=True)
        if mask is None:
            return d.mean() * ae.intensity_var
        m = check_mask("feature_similarity", "mask", mask, like=d, dtype=d.dtype)
        m = m.expand(d.shape[0], *m.shape[1:])
        return (d * m).sum() / m.sum() * ae.intensity_var

    learned_feature_loss.full_resolution_only = True  # type: ignore[attr-defined]  # trained on full-resolution patches
    return learned_feature_loss
