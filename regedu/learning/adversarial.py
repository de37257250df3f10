r"""Adversarial registration: a discriminator network judges the registration network's output.

The registration network :math:`f_w` (the *generator*) and a discriminator :math:`D` (a small CNN
that outputs the logit of "real") are trained in turn, as in a GAN (Goodfellow et al., 2014). What
the discriminator looks at decides what it teaches; the lecture names two uses:

* **A learned alignment metric** (``judge="alignment"``; Yan et al., 2018; Fan et al., 2019). :math:`D`
  sees an image *pair* :math:`(F, I)` and learns to tell well-aligned pairs ("real": here the moving
  image warped with the known true field, :math:`(F, M \circ \varphi_{true})`, as Yan et al.'s
  pairs registered by the clinical fusion system) from the network's results ("fake":
  :math:`(F, M \circ \varphi_w)`). The generator is trained to make its results look aligned: no
  hand-made similarity measure is needed (for multi-modal pairs such a measure is hard to choose),
  and the trained :math:`D` is itself a metric of registration quality (:func:`alignment_score`).
  Fan et al. build the "aligned" reference pairs without a ground truth (for images of one modality
  from the fixed image itself); the principle is the same.
* **A learned deformation prior** (``judge="deformation"``; Hu et al., 2018, adversarial deformation
  regularisation). :math:`D` sees a displacement field and learns to tell plausible deformations
  ("real": samples from a reference, for Hu et al. finite-element simulations of the prostate; here
  the data set's simulated ground-truth fields) from the network's predictions. The generator's
  loss is its usual one (e.g. label overlap, weak supervision) plus the adversarial term, which
  replaces or complements a hand-made smoothness penalty such as the bending energy.

Losses (binary cross-entropy on logits, the *non-saturating* generator loss):

.. math::
    L_D = -\log \sigma(D(\text{real})) - \log\big(1 - \sigma(D(\text{fake}))\big), \qquad
    L_G = L_{base} + \beta\,\big[-\log \sigma(D(\text{fake}))\big] + \lambda R(u).

The two players chase each other: the losses oscillate instead of decreasing, and the result depends
on the balance of learning rates, capacities and seeds. :func:`train_adversarial` records both
players' losses and the discriminator's outputs on real and fake examples at every step, so that this
instability can be seen.

References: Yan, Xu, Rastinehad & Wood (2018), Adversarial image registration with application for
MR and TRUS image fusion, MLMI (MICCAI workshops) / arXiv:1804.11024; Fan, Cao, Wang, Yap & Shen
(2019), Adversarial learning for mono- or multi-modal registration, Medical Image Analysis 58, 101545;
Hu, Gibson, Ghavami, Bonmati, Moore, Emberton, Vercauteren, Noble & Barratt (2018), Adversarial
deformation regularization for training image registration neural networks, MICCAI, 774-782.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .._checks import check_choice
from ..regularisers import get_regulariser
from ..spatial_transformer import warp
from ..utils import get_device, seed_everything
from .layers import register_model, strided_encoder
from .objectives import Objective, _num, get_objective
from .train import History, evaluate, to_device

JUDGES = ("alignment", "deformation")


@register_model
class Discriminator(nn.Module):
    """A small CNN critic: strided conv blocks -> global average -> linear -> one logit per item.

    ``forward(x)``: ``(B, in_channels, *spatial)`` -> ``(B,)`` logits (positive: "real").
    """

    def __init__(self, ndim: int = 2, in_channels: int = 2, features: Sequence[int] = (8, 16, 32, 32), norm: str | None = None):
        super().__init__()
        self.ndim, self.in_channels = ndim, in_channels
        self.encoder = strided_encoder(ndim, in_channels, features, norm)
        self.head = nn.Linear(int(features[-1]), 1)
        self.config = dict(ndim=ndim, in_channels=in_channels, features=list(features), norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.ndim + 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"Discriminator: x must be (B, {self.in_channels}, *spatial) with {self.ndim} spatial axes, "
                             f"got {tuple(x.shape)}")
        h = self.encoder(x).flatten(2).mean(2)
        return self.head(h)[:, 0]


@register_model
class AlignmentDiscriminator(Discriminator):
    """Judges whether ``image`` is aligned with ``fixed``: ``forward(fixed, image)`` -> ``(B,)`` logits (Yan et al., 2018)."""

    def __init__(self, ndim: int = 2, channels: int = 1, features: Sequence[int] = (16, 32, 64, 64), norm: str | None = "instance"):
        super().__init__(ndim, 2 * channels, features, norm)
        self.config = dict(ndim=ndim, channels=channels, features=list(features), norm=norm)

    def forward(self, fixed: torch.Tensor, image: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(torch.cat([fixed, image], dim=1))


@register_model
class DeformationDiscriminator(Discriminator):
    """Judges whether a displacement field ``(B, ndim, *spatial)`` looks like the reference deformations (Hu et al., 2018)."""

    def __init__(self, ndim: int = 2, features: Sequence[int] = (8, 16, 32, 32), norm: str | None = None):
        super().__init__(ndim, ndim, features, norm)
        self.config = dict(ndim=ndim, features=list(features), norm=norm)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    r""":math:`L_D = -\overline{\log\sigma(D(\text{real}))} - \overline{\log(1 - \sigma(D(\text{fake})))}` (binary cross-entropy)."""
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    r"""Non-saturating generator loss :math:`-\overline{\log\sigma(D(\text{fake}))}`: small when the fakes pass as real."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


@torch.no_grad()
def alignment_score(discriminator: AlignmentDiscriminator, fixed: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    r"""The trained alignment discriminator as a metric: :math:`\sigma(D(F, I)) \in (0, 1)` per pair, ``(B,)``
    (1: looks aligned). Runs in eval mode and restores the previous mode."""
    was = discriminator.training
    discriminator.eval()
    try:
        return torch.sigmoid(discriminator(fixed, image))
    finally:
        discriminator.train(was)


def _real_and_fake(judge: str, output: dict, batch: dict) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    if "dvf" not in batch:
        raise KeyError(f"train_adversarial: judge={judge!r} needs reference examples: the batch has no ground-truth 'dvf' "
                       "(use regedu.data.PairDataset)")
    if judge == "alignment":
        return (batch["fixed"], warp(batch["moving"], batch["dvf"])), (batch["fixed"], output["moved"])
    return (batch["dvf"],), (output["dvf"],)


def train_adversarial(
    model: nn.Module,
    discriminator: Discriminator,
    data: Any,
    judge: str = "alignment",
    steps: int = 200,
    objective: str | Objective | None = None,
    adversarial_weight: float = 1.0,
    regulariser: str = "diffusion",
    weight: float = 0.0,
    lr: float = 1e-3,
    lr_d: float = 1e-3,
    batch_size: int = 4,
    device: str | torch.device | None = None,
    val_data: Any = None,
    val_every: int | None = None,
    seed: int | None = 0,
    progress: bool = True,
) -> History:
    r"""Train ``model`` (the generator) and ``discriminator`` in turn: per step one discriminator update on
    the batch (the generator's output detached), then one generator update.

    Args:
        model: a registration network (output ``"dvf"``, ``"moved"``).
        discriminator: an :class:`AlignmentDiscriminator` (``judge="alignment"``) or a
            :class:`DeformationDiscriminator` (``judge="deformation"``).
        data: a dataset of pairs with ground-truth ``"dvf"`` (the reference examples; e.g. a train-mode
            :class:`regedu.data.PairDataset`).
        judge: ``"alignment"`` (real: ``(F, M o phi_true)``, fake: ``(F, M o phi_w)``) or ``"deformation"``
            (real: the true fields, fake: the predicted ones).
        objective: an optional base loss for the generator (name or :class:`~regedu.learning.objectives.Objective`,
            e.g. ``WeaklySupervised(weight=0)`` as in Hu et al.); its logs are recorded with a ``base_`` prefix.
        adversarial_weight: :math:`\beta`. regulariser / weight: an optional smoothness term :math:`\lambda R(u)`.
        lr / lr_d: Adam learning rates of generator and discriminator.
        val_data / val_every: held-out pairs evaluated with :func:`~regedu.learning.train.evaluate` (default: at the end).
        seed: seeds everything (data order and draws); ``None`` keeps the state.

    Returns:
        A :class:`~regedu.learning.train.History`; ``train`` holds per step ``d_loss``, ``g_adv`` (the generator's
        adversarial loss), ``d_real`` / ``d_fake`` (the discriminator's mean probability of "real" on real and
        fake examples), ``loss`` (the generator's total) and the base objective's logs.
    """
    from tqdm.auto import tqdm

    check_choice("train_adversarial", "judge", judge, JUDGES)
    if steps < 1:
        raise ValueError(f"train_adversarial: steps must be at least 1, got {steps}")
    expected = AlignmentDiscriminator if judge == "alignment" else DeformationDiscriminator
    if not isinstance(discriminator, expected):
        raise TypeError(f"train_adversarial: judge={judge!r} needs a {expected.__name__}, got {type(discriminator).__name__}")
    if seed is not None:
        seed_everything(seed, deterministic=False)
    device = torch.device(device) if device is not None else get_device()
    model.to(device)
    discriminator.to(device)
    base = get_objective(objective) if objective is not None else None
    reg = get_regulariser(regulariser)
    opt_g = torch.optim.Adam(model.parameters(), lr=lr)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr_d, betas=(0.5, 0.999))
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=0)
    history = History()
    iterator = iter(loader)
    model.train()
    discriminator.train()
    bar = tqdm(total=steps, disable=not progress, desc=f"adversarial ({judge})", leave=False)
    try:
        for step in range(1, steps + 1):
            try:
                batch = next(iterator)
            except StopIteration:
                iterator = iter(loader)
                batch = next(iterator)
            batch = to_device(batch, device)
            output = model(batch["fixed"], batch["moving"])
            real, fake = _real_and_fake(judge, output, batch)

            # 1. the discriminator learns to tell real from fake (the generator's output is a constant here)
            d_real, d_fake = discriminator(*real), discriminator(*(t.detach() for t in fake))
            d_loss = discriminator_loss(d_real, d_fake)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()

            # 2. the generator learns to make its output pass as real (plus its base loss)
            g_adv = generator_loss(discriminator(*fake))
            loss = adversarial_weight * g_adv
            logs: dict[str, float] = {}
            if base is not None:
                base_loss, base_logs = base(output, batch)
                loss = loss + base_loss
                logs.update({f"base_{k}": v for k, v in base_logs.items()})
            if weight:
                loss = loss + weight * reg(output["dvf"])
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_g.step()
            # the discriminator's gradients from the generator step are discarded (zeroed before its next step)

            history.append("train", {"step": step, "loss": _num(loss), "d_loss": _num(d_loss), "g_adv": _num(g_adv),
                                     "d_real": _num(torch.sigmoid(d_real).mean()), "d_fake": _num(torch.sigmoid(d_fake).mean()),
                                     **logs})
            bar.update(1)
            if val_data is not None and val_every and step % val_every == 0 and step != steps:
                history.append("val", {"step": step, **evaluate(model, val_data, "unsupervised", device=device)})
    finally:
        bar.close()
    if val_data is not None:
        history.append("val", {"step": steps, **evaluate(model, val_data, "unsupervised", device=device)})
    setattr(model, "history", history)
    return history


__all__ = ["Discriminator", "AlignmentDiscriminator", "DeformationDiscriminator", "discriminator_loss", "generator_loss",
           "alignment_score", "train_adversarial", "JUDGES"]
