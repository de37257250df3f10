r"""Probabilistic (variational) registration: a network that predicts a *distribution* of velocity fields.

Dalca et al. (2018, MICCAI; 2019, MedIA) treat the stationary velocity field :math:`z` of a
diffeomorphic registration as a latent variable. A U-Net predicts, per voxel and component, the
mean :math:`\mu(x)` and the log-variance :math:`\log\sigma^2(x)` of a Gaussian
:math:`q(z \mid F, M) = \mathcal N(\mu, \mathrm{diag}\,\sigma^2)`. Training maximises the evidence
lower bound, i.e. minimises

.. math::
    L = \underbrace{\frac{1}{2\sigma_I^2}\,\overline{\big(F - M \circ \exp(z)\big)^2}}_{\text{image likelihood}}
      + \underbrace{\tfrac{1}{N}\,\mathrm{KL}\big(q(z \mid F, M)\,\|\,p(z)\big)}_{\text{prior}},
    \qquad z = \mu + \sigma \odot \varepsilon,\ \varepsilon \sim \mathcal N(0, I)

(one sample per pair and step: the *reparameterisation trick* keeps it differentiable in
:math:`\mu, \sigma`). The prior is a smoothness prior, :math:`p(z) = \mathcal N(0, \Lambda^{-1})` with
precision :math:`\Lambda = \lambda L`, :math:`L = D - A` the Laplacian of the voxel grid graph
(:math:`D = 2\,\mathrm{ndim}` neighbours per voxel). Then, per voxel (:math:`N` voxels),

.. math::
    \tfrac{1}{N}\mathrm{KL} = \tfrac12\Big[\lambda D\, \overline{\textstyle\sum_k \sigma_k^2}
        - \overline{\textstyle\sum_k \log \sigma_k^2} + \lambda\, R_{\text{diff}}(\mu)\Big] + \text{const},

with :math:`R_{\text{diff}}(\mu) = \overline{\|\nabla\mu\|^2}` the diffusion regulariser
(:math:`\mu^\top L \mu` is the sum of squared differences over the grid's edges): the *mean* is
regularised as in VoxelMorph, and without image information each variance goes to its prior value
:math:`\sigma^2 = 1/(\lambda D)`. Where the moving image has contrast, a random displacement changes
the moved image and costs likelihood, so the network learns a *smaller* variance there: the variance
map is an uncertainty map, large where the images cannot tell where a point went.

At test time the network returns the mean (``model.eval()``); :meth:`ProbabilisticNet.sample` draws
deformations from :math:`q`.

Krebs et al. (2018, DLMIA; 2019, IEEE TMI) use the same variational idea with a *low-dimensional*
latent code (a conditional variational autoencoder whose decoder produces the velocity, smoothed by a
Gaussian) and a standard normal prior; the voxel-wise model here is Dalca et al.'s.

References: Dalca, Balakrishnan, Guttag & Sabuncu (2018), Unsupervised learning for fast
probabilistic diffeomorphic registration, MICCAI, 729-738; (2019) Unsupervised learning of
probabilistic diffeomorphic registration for images and surfaces, Medical Image Analysis 57, 226-236.
Krebs, Mansi, Mailhé, Ayache & Delingette (2018), Unsupervised probabilistic deformation modeling for
robust diffeomorphic registration, DLMIA (MICCAI workshops), 101-109.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

from ..fields import integrate_velocity
from ..regularisers import diffusion
from ..spatial_transformer import resize, resize_dvf, warp
from .layers import pair_input, register_model
from .networks import UNet
from .objectives import Objective, _num


def kl_divergence(mean: torch.Tensor, log_var: torch.Tensor, prior_weight: float = 1.0) -> torch.Tensor:
    r"""Per-voxel KL divergence of :math:`\mathcal N(\mu, \mathrm{diag}\,\sigma^2)` from the Laplacian
    smoothness prior :math:`\mathcal N(0, (\lambda L)^{-1})`, up to a constant (Dalca et al., 2019):

    .. math:: \tfrac12\Big[\lambda D\,\overline{\textstyle\sum_k \sigma_k^2} - \overline{\textstyle\sum_k \log\sigma_k^2}
              + \lambda\,\overline{\|\nabla\mu\|^2}\Big], \qquad D = 2\,\mathrm{ndim}.

    Args:
        mean, log_var: ``(B, ndim, *spatial)`` velocity mean (voxels) and log-variance (log voxels^2).
        prior_weight: :math:`\lambda` (precision of the prior; the prior variance is :math:`1/(\lambda D)`).

    Returns:
        A scalar (mean over the batch) to minimise. Minimal in ``log_var`` at :math:`\sigma^2 = 1/(\lambda D)`.
    """
    if mean.shape != log_var.shape or mean.dim() not in (4, 5) or mean.shape[1] != mean.dim() - 2:
        raise ValueError("kl_divergence: mean and log_var must both be (B, ndim, *spatial) velocity fields, "
                         f"got {tuple(mean.shape)} and {tuple(log_var.shape)}")
    if prior_weight <= 0:
        raise ValueError(f"kl_divergence: prior_weight must be > 0, got {prior_weight!r}")
    degree = 2 * (mean.dim() - 2)
    var_term = prior_weight * degree * log_var.exp().sum(1).flatten(1).mean(1)
    log_term = log_var.sum(1).flatten(1).mean(1)
    smooth = prior_weight * diffusion(mean, reduction="none")
    return (0.5 * (var_term - log_term + smooth)).mean()


def prior_variance(ndim: int, prior_weight: float) -> float:
    r"""The variance :math:`1/(\lambda D)`, :math:`D = 2\,\mathrm{ndim}`, that the KL term alone gives every voxel."""
    return 1.0 / (prior_weight * 2 * ndim)


@register_model
class ProbabilisticNet(nn.Module):
    r"""Probabilistic diffeomorphic registration network (Dalca et al., 2018/2019).

    A :class:`~regedu.learning.networks.UNet` on the concatenated pair outputs ``2 * ndim`` channels: the
    mean :math:`\mu` and the log-variance :math:`\log\sigma^2` of the velocity field. In training mode
    (``model.train()``) the velocity is a sample :math:`z = \mu + \sigma\varepsilon`; in eval mode it is
    :math:`\mu` (override with ``forward(..., sample=True/False)``). The deformation is
    :math:`\varphi = \exp(z)` by scaling and squaring (:func:`regedu.integrate_velocity`).

    Args:
        ndim: 2 or 3.
        channels: channels of each of fixed and moving.
        features: U-Net channels per level.
        integration_steps: scaling-and-squaring steps.
        scale: resolution factor of the network (and of the velocity, as Dalca et al.'s half-resolution
            velocity); the displacement is upsampled to the input size.
        init_log_var: initial log-variance (the bias of the log-variance channels): start almost deterministic.
        final_init_std, norm: as in :class:`~regedu.learning.networks.RegistrationNet`.

    ``forward(fixed, moving)`` returns a registration output (``"dvf"``, ``"moved"``, ``"velocity"`` (the
    sample used), ``"regularise"`` (empty: the KL term regularises)) plus ``"mean"`` and ``"log_var"``
    ``(B, ndim, *spatial')`` at the network's resolution.
    """

    def __init__(self, ndim: int = 2, channels: int = 1, features: Sequence[int] = (16, 32, 32, 32), integration_steps: int = 7,
                 scale: float = 1.0, init_log_var: float = -6.0, final_init_std: float = 1e-2, norm: str | None = "instance"):
        super().__init__()
        if not 0 < scale <= 1:
            raise ValueError(f"ProbabilisticNet: scale must be in (0, 1], got {scale!r}")
        self.ndim, self.channels, self.integration_steps, self.scale = ndim, channels, int(integration_steps), float(scale)
        self.unet = UNet(ndim, 2 * channels, 2 * ndim, features, final_init_std=final_init_std, norm=norm)
        bias = self.unet.head.bias
        assert bias is not None  # the U-Net's last convolution has a bias
        with torch.no_grad():
            bias[ndim:] = init_log_var
        self.config = dict(ndim=ndim, channels=channels, features=list(features), integration_steps=int(integration_steps),
                           scale=float(scale), init_log_var=init_log_var, final_init_std=final_init_std, norm=norm)

    def distribution(self, fixed: torch.Tensor, moving: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The predicted ``(mean, log_var)`` of the velocity, each ``(B, ndim, *spatial')``."""
        x = pair_input("ProbabilisticNet", fixed, moving, self.ndim, self.channels, module=self)
        if self.scale != 1.0:
            x = resize(x, scale=self.scale)
        out = self.unet(x)
        return out[:, : self.ndim], out[:, self.ndim:]

    def _deform(self, moving: torch.Tensor, z: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        dvf = integrate_velocity(z, self.integration_steps)
        if tuple(dvf.shape[2:]) != shape:
            dvf = resize_dvf(dvf, shape)
        return dvf, warp(moving, dvf)

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor, sample: bool | None = None) -> dict[str, Any]:
        mean, log_var = self.distribution(fixed, moving)
        draw = self.training if sample is None else sample
        z = mean + torch.randn_like(mean) * (0.5 * log_var).exp() if draw else mean
        dvf, moved = self._deform(moving, z, tuple(fixed.shape[2:]))
        return {"dvf": dvf, "moved": moved, "velocity": z, "mean": mean, "log_var": log_var, "regularise": []}

    @torch.no_grad()
    def sample(self, fixed: torch.Tensor, moving: torch.Tensor, n: int = 8, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""``n`` displacement fields drawn from :math:`q(z \mid F, M)`: ``(n, B, ndim, *spatial)`` (voxels).

        Their spread (e.g. ``samples.std(0)``) is the registration's uncertainty propagated to the
        displacement. ``generator`` makes the draws reproducible.
        """
        if n < 1:
            raise ValueError(f"ProbabilisticNet.sample: n must be >= 1, got {n!r}")
        mean, log_var = self.distribution(fixed, moving)
        std = (0.5 * log_var).exp()
        shape = tuple(fixed.shape[2:])
        out = []
        for _ in range(n):
            eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device="cpu").to(mean.device)
            out.append(self._deform(moving, mean + std * eps, shape)[0])
        return torch.stack(out)


class Probabilistic(Objective):
    r"""The variational loss of :class:`ProbabilisticNet` (Dalca et al., 2019): image likelihood + KL.

    .. math:: L = \frac{1}{2\sigma_I^2}\,\overline{(F - M \circ \exp(z))^2} + \tfrac1N \mathrm{KL}(q \,\|\, p)

    ``image_sigma`` :math:`\sigma_I` is the assumed image noise (intensity units; smaller: trust the
    images more, sharper but rougher fields); ``prior_weight`` :math:`\lambda` the prior precision
    (:func:`kl_divergence`). Logs ``similarity`` (the likelihood term), ``kl`` and ``sigma``, the mean
    predicted velocity standard deviation (voxels).
    """

    name = "probabilistic"

    def __init__(self, image_sigma: float = 0.05, prior_weight: float = 1.0):
        if image_sigma <= 0 or prior_weight <= 0:
            raise ValueError(f"Probabilistic: image_sigma and prior_weight must be > 0, got {image_sigma!r} and {prior_weight!r}")
        self.image_sigma, self.prior_weight = float(image_sigma), float(prior_weight)

    def __call__(self, output: Any, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        for key in ("mean", "log_var", "moved"):
            if key not in output:
                raise ValueError(f"Probabilistic: the model output has no {key!r}; use a model that predicts a velocity "
                                 "distribution, e.g. ProbabilisticNet")
        sim = (batch["fixed"] - output["moved"]).pow(2).mean() / (2 * self.image_sigma ** 2)
        kl = kl_divergence(output["mean"], output["log_var"], self.prior_weight)
        loss = sim + kl
        sigma = (0.5 * output["log_var"].detach()).exp().mean()
        return loss, {"loss": _num(loss), "similarity": _num(sim), "kl": _num(kl), "sigma": _num(sigma)}


__all__ = ["ProbabilisticNet", "Probabilistic", "kl_divergence", "prior_variance"]
