r"""Training objectives: one small class per training strategy of the lecture.

An objective does two things for the single training loop (:func:`regedu.learning.train`):

* ``objective.forward(model, batch)`` runs the model on a batch (by default
  ``model(batch["fixed"], batch["moving"])``; the cycle-consistent objective runs it both ways);
* ``objective(output, batch)`` returns ``(loss, logs)``: a scalar tensor to minimise and a dict of
  floats for the history;
* ``objective.metrics(output, batch)`` returns validation metrics (registration: Dice, end-point
  error, folding fraction; classification: accuracy).

Registration batches are dicts as produced by :class:`regedu.data.PairDataset`: ``fixed``, ``moving``
``(B, C, *S)``, and optionally ``dvf`` (ground truth, pull-back: ``warp(moving, dvf) ~= fixed``),
``fixed_labels``/``moving_labels`` ``(B, 1, *S)`` int64 and ``mask`` ``(B, 1, *S)`` (fixed frame).

=====================  =======================================================================  =====================
objective              loss                                                                     reference
=====================  =======================================================================  =====================
``"supervised"``       :math:`\sum_x M(T(x))\,|u(x) - \hat u(x)| / \sum_x M(T(x))`              Eppenhof & Pluim 2018
``"weak"``             :math:`1 - \mathrm{Dice}(L_F, L_M \circ \varphi) [+ \alpha\,\mathcal{L}_{sim}] + \lambda R(u)`  Hu et al. 2018
``"unsupervised"``     :math:`\mathcal{L}_{sim}(F, M \circ \varphi) + \lambda R(u)`             Balakrishnan et al. 2019
``"diffeomorphic"``    as unsupervised, :math:`\varphi = \exp(v)`, :math:`R(v)`                 Dalca et al. 2018
``"cycle"``            both ways + :math:`\alpha |M - (\hat M \text{ registered to } \hat F)|_1 + \beta L_{id}`  Kim et al. 2019 (CycleMorph)
``"inverse_consistent"``  both ways + :math:`\gamma \|u_{F\to M} \circ u_{M\to F}\|^2`            Zhang 2018 (ICNet)
``"classification"``   cross-entropy (STN / CNN classifiers)                                    Jaderberg et al. 2015
``"regression"``       mean squared error to ``batch["target"]`` (learned similarity, Q-values)
=====================  =======================================================================  =====================
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._checks import check_choice
from ..fields import compose, endpoint_error, folding_fraction
from ..regularisers import get_regulariser
from ..similarity import dice, get_loss, one_hot, soft_dice
from ..spatial_transformer import warp, warp_labels

Output = Any
Batch = Any
Logs = dict[str, float]


def _num(x: torch.Tensor | float) -> float:
    """A Python float of a (possibly graph-attached) scalar, without a warning."""
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


def _main_output(output: Output) -> dict:
    """The forward registration output (a cycle objective's output holds both directions)."""
    return output["forward"] if isinstance(output, dict) and "forward" in output else output


def registration_metrics(output: Output, batch: Batch) -> Logs:
    """Validation metrics of a registration output: whatever the batch allows.

    ``dice`` (mean hard Dice over labels > 0 of ``fixed_labels`` vs the warped ``moving_labels``),
    ``epe`` (mean end-point error to the ground-truth ``dvf``, inside ``mask`` when given, voxels),
    ``folding`` (share of voxels with :math:`\\det J_\\varphi \\le 0`), ``mse`` (fixed vs moved).
    """
    out = _main_output(output)
    dvf = out["dvf"]
    logs: Logs = {"folding": _num(folding_fraction(dvf.detach()).mean())}
    if "fixed_labels" in batch and "moving_labels" in batch:
        warped = warp_labels(batch["moving_labels"], dvf.detach())
        logs["dice"] = _num(dice(batch["fixed_labels"], warped))
    if "dvf" in batch:
        logs["epe"] = _num(endpoint_error(dvf.detach(), batch["dvf"], batch.get("mask")).mean())
    logs["mse"] = _num((batch["fixed"] - out["moved"].detach()).pow(2).mean())
    return logs


class Objective:
    """Base class: registration forward pass and metrics; subclasses implement ``__call__``."""

    name = "objective"

    def forward(self, model: nn.Module, batch: Batch) -> Output:
        return model(batch["fixed"], batch["moving"])

    def __call__(self, output: Output, batch: Batch) -> tuple[torch.Tensor, Logs]:
        raise NotImplementedError

    def metrics(self, output: Output, batch: Batch) -> Logs:
        return registration_metrics(output, batch)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def _smoothness(output: dict, regulariser: Callable, weight: float) -> torch.Tensor:
    fields = output.get("regularise", [output["dvf"]])
    if weight == 0 or not fields:
        return output["dvf"].new_zeros(())
    return weight * sum(regulariser(f) for f in fields)


class Supervised(Objective):
    r"""Supervised end-point error against a known (simulated) displacement field.

    .. math:: L = \frac{\sum_{x \in \Omega_F} M(T_{augm}(x))\, \|u(x) - \hat u(x)\|}{\sum_{x \in \Omega_F} M(T_{augm}(x))}

    (Eppenhof & Pluim, 2018, IEEE TMI), with ``batch["mask"]`` the mask in the fixed frame,
    :math:`M \circ T_{augm}` (the moving image's mask pulled back by the ground truth). With
    ``masked=False`` (or no mask in the batch) the mean is over all voxels. ``u`` is ``batch["dvf"]``
    (voxels), :math:`\hat u` the model's ``"dvf"``.
    """

    name = "supervised"

    def __init__(self, masked: bool = True):
        self.masked = masked

    def __call__(self, output: Output, batch: Batch) -> tuple[torch.Tensor, Logs]:
        if "dvf" not in batch:
            raise KeyError("Supervised: the batch has no ground-truth 'dvf'; use a dataset with known deformations "
                           "(e.g. regedu.data.PairDataset) or an unsupervised objective")
        mask = batch.get("mask") if self.masked else None
        loss = endpoint_error(output["dvf"], batch["dvf"], mask).mean()
        return loss, {"loss": _num(loss), "epe": _num(loss)}


class WeaklySupervised(Objective):
    r"""Weak supervision with label maps (Hu et al., 2018, MedIA): soft Dice of warped one-hot labels.

    .. math:: L = 1 - \mathrm{softDice}(\mathbf 1_{L_F}, \mathbf 1_{L_M} \circ \varphi) + \alpha\,\mathcal L_{sim}(F, M \circ \varphi) + \lambda R(u)

    The moving labels are one-hot encoded and warped *linearly* so the loss is differentiable in
    :math:`u`. ``similarity`` (name or callable) with ``similarity_weight`` :math:`\alpha` adds an
    image term; ``regulariser`` with ``weight`` :math:`\lambda` (Hu et al. use bending energy).
    ``num_classes`` defaults to the largest label in the batch + 1 (background 0 is not scored).
    """

    name = "weak"

    def __init__(self, num_classes: int | None = None, similarity: str | Callable | None = None, similarity_weight: float = 0.0,
                 regulariser: str | Callable = "bending", weight: float = 1.0):
        self.num_classes, self.similarity, self.similarity_weight = num_classes, similarity, similarity_weight
        self.regulariser, self.weight = regulariser, weight
        self._sim = get_loss(similarity) if similarity is not None else None
        self._reg = get_regulariser(regulariser)

    def __call__(self, output: Output, batch: Batch) -> tuple[torch.Tensor, Logs]:
        for key in ("fixed_labels", "moving_labels"):
            if key not in batch:
                raise KeyError(f"WeaklySupervised: the batch has no {key!r}; weak supervision needs label maps")
        k = self.num_classes or int(max(batch["fixed_labels"].max(), batch["moving_labels"].max())) + 1
        dvf = output["dvf"]
        target = one_hot(batch["fixed_labels"], k).to(dvf.dtype)
        warped = warp(one_hot(batch["moving_labels"], k).to(dvf.dtype), dvf)
        overlap = soft_dice(target, warped)
        loss = 1 - overlap
        logs = {"soft_dice": _num(overlap)}
        if self._sim is not None and self.similarity_weight:
            sim = self._sim(batch["fixed"], output["moved"], mask=None)
            loss = loss + self.similarity_weight * sim
            logs["similarity"] = _num(sim)
        reg = _smoothness(output, self._reg, self.weight)
        loss = loss + reg
        logs.update(regulariser=_num(reg), loss=_num(loss))
        return loss, logs


class Unsupervised(Objective):
    r"""Unsupervised (VoxelMorph) loss, Balakrishnan et al. (2019), IEEE TMI.

    .. math:: L = \mathcal L_{sim}(F, M \circ \varphi) + \lambda\, R(u)

    ``similarity``: a loss name (``"mse"``, ``"ncc"``, ``"lncc"``, ``"mi"``, ``"ssd"``) or a callable
    ``loss(fixed, moved, mask=None)``; ``regulariser``: ``"diffusion"`` (:math:`\|\nabla u\|^2`,
    VoxelMorph) or ``"bending"``; ``weight`` = :math:`\lambda`. The defaults (LNCC, window 9, and
    :math:`\lambda = 0.05`) suit brain slices with intensity changes; with ``"mse"`` on ``[0, 1]`` images
    use :math:`\lambda \approx 0.01`. ``masked=True`` passes ``batch["mask"]``
    to the similarity. The regulariser acts on ``output["regularise"]`` (the DVF, the velocity of a
    diffeomorphic model, the deformable stages of a chain).
    """

    name = "unsupervised"

    def __init__(self, similarity: str | Callable = "lncc", regulariser: str | Callable = "diffusion", weight: float = 0.05,
                 masked: bool = False):
        self.similarity, self.regulariser, self.weight, self.masked = similarity, regulariser, weight, masked
        self._sim = get_loss(similarity)
        self._reg = get_regulariser(regulariser)

    def _terms(self, fixed: torch.Tensor, output: dict, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return self._sim(fixed, output["moved"], mask=mask), _smoothness(output, self._reg, self.weight)

    def __call__(self, output: Output, batch: Batch) -> tuple[torch.Tensor, Logs]:
        sim, reg = self._terms(batch["fixed"], output, batch.get("mask") if self.masked else None)
        loss = sim + reg
        return loss, {"loss": _num(loss), "similarity": _num(sim), "regulariser": _num(reg)}


class Diffeomorphic(Unsupervised):
    r"""Unsupervised loss for a diffeomorphic model (Dalca et al., 2018, MICCAI).

    The model predicts a stationary velocity field :math:`v`; :math:`\varphi = \exp(v)` by scaling and
    squaring (:class:`~regedu.learning.RegistrationNet` with ``diffeomorphic=True``), and
    :math:`L = \mathcal L_{sim}(F, M \circ \exp(v)) + \lambda R(v)`. Refuses models without a velocity.
    """

    name = "diffeomorphic"

    def __call__(self, output: Output, batch: Batch) -> tuple[torch.Tensor, Logs]:
        if "velocity" not in output:
            raise ValueError("Diffeomorphic: the model output has no 'velocity'; use a model that predicts a velocity "
                             "field, e.g. RegistrationNet(ndim, diffeomorphic=True)")
        return super().__call__(output, batch)


class CycleConsistent(Unsupervised):
    r"""Cycle-consistent unsupervised loss, CycleMorph (Kim et al., 2019 MICCAI; 2021 Medical Image Analysis).

    The network registers the pair both ways: :math:`\hat M = M \circ \varphi_{MF}` (``model(F, M)``,
    :math:`\approx F`) and :math:`\hat F = F \circ \varphi_{FM}` (``model(M, F)``, :math:`\approx M`). The
    **cycle**: the *deformed* images are registered again, the other way round, and must give back the
    originals, compared in image space (L1):

    .. math:: L_{cyc} = \overline{|M - \hat M \circ \tilde\varphi_{M}|} + \overline{|F - \hat F \circ \tilde\varphi_{F}|}

    with :math:`\hat M \circ \tilde\varphi_{M}` = ``model(F_hat, M_hat)["moved"]`` (:math:`\hat M` registered onto
    :math:`\hat F \approx M`) and :math:`\hat F \circ \tilde\varphi_F` = ``model(M_hat, F_hat)["moved"]``. The
    **identity** loss asks the network to leave an image registered to itself unchanged:
    :math:`L_{id} = \mathcal L_{sim}(F, F \circ \varphi_{FF}) + \mathcal L_{sim}(M, M \circ \varphi_{MM})`.
    In total

    .. math:: L = \mathcal L_{sim}(F, \hat M) + \mathcal L_{sim}(M, \hat F) + \lambda (R(u) + R(w))
              + \alpha L_{cyc} + \beta L_{id}

    with ``weight`` :math:`\lambda`, ``cycle_weight`` :math:`\alpha` and ``identity_weight`` :math:`\beta`
    (0 skips the term and its forward passes). Kim et al. train two networks, one per direction; here
    one network registers both ways (the order of its inputs tells it which). The cycle compares
    *images*: it is blind to displacements inside uniform regions. Compare :class:`InverseConsistent`,
    which penalises the round-trip *displacement* instead.
    """

    name = "cycle"

    def __init__(self, similarity: str | Callable = "lncc", regulariser: str | Callable = "diffusion", weight: float = 0.05,
                 cycle_weight: float = 0.1, identity_weight: float = 0.5, masked: bool = False):
        super().__init__(similarity, regulariser, weight, masked)
        self.cycle_weight, self.identity_weight = cycle_weight, identity_weight

    def forward(self, model: nn.Module, batch: Batch) -> Output:
        fixed, moving = batch["fixed"], batch["moving"]
        fwd, bwd = model(fixed, moving), model(moving, fixed)
        out = {"forward": fwd, "backward": bwd}
        if self.cycle_weight:
            # the deformed images, registered back: M^ onto F^ (~ M) and F^ onto M^ (~ F)
            out["cycle_moving"] = model(bwd["moved"], fwd["moved"])["moved"]
            out["cycle_fixed"] = model(fwd["moved"], bwd["moved"])["moved"]
        if self.identity_weight:
            out["identity_fixed"] = model(fixed, fixed)["moved"]
            out["identity_moving"] = model(moving, moving)["moved"]
        return out

    def __call__(self, output: Output, batch: Batch) -> tuple[torch.Tensor, Logs]:
        fixed, moving = batch["fixed"], batch["moving"]
        fwd, bwd = output["forward"], output["backward"]
        sim_f, reg_f = self._terms(fixed, fwd, None)
        sim_b, reg_b = self._terms(moving, bwd, None)
        loss = sim_f + sim_b + reg_f + reg_b
        logs = {"similarity": _num(sim_f + sim_b), "regulariser": _num(reg_f + reg_b)}
        if self.cycle_weight:
            to_fixed = fixed.to(output["cycle_fixed"].dtype)
            to_moving = moving.to(output["cycle_moving"].dtype)
            cycle = (output["cycle_moving"] - to_moving).abs().mean() + (output["cycle_fixed"] - to_fixed).abs().mean()
            loss = loss + self.cycle_weight * cycle
            logs["cycle"] = _num(cycle)
        if self.identity_weight:
            identity = self._sim(fixed, output["identity_fixed"], mask=None) + self._sim(moving, output["identity_moving"], mask=None)
            loss = loss + self.identity_weight * identity
            logs["identity"] = _num(identity)
        logs["loss"] = _num(loss)
        return loss, logs


class InverseConsistent(Unsupervised):
    r"""Inverse-consistent unsupervised loss: the round trip of the two registrations is the identity.

    The model registers the pair both ways, :math:`\varphi_{F \to M} = \mathrm{Id} + u` (warps ``moving``
    onto ``fixed``) and :math:`\varphi_{M \to F} = \mathrm{Id} + w`; their compositions should be the
    identity, so their *displacements* are penalised:

    .. math:: L = \mathcal L_{sim}(F, M \circ \varphi_u) + \mathcal L_{sim}(M, F \circ \varphi_w)
              + \lambda (R(u) + R(w)) + \gamma\, \tfrac12\left(\overline{\|u \circ w\|^2} + \overline{\|w \circ u\|^2}\right)

    with :math:`u \circ w` the displacement of :math:`\varphi_u \circ \varphi_w` (:func:`regedu.compose`),
    in voxels squared; ``inverse_weight`` = :math:`\gamma`. Inverse consistency goes back to Christensen &
    Johnson (2001), Consistent image registration, IEEE TMI; as a loss of a registration network it is
    ICNet (Zhang, 2018, Inverse-consistent deep networks for unsupervised deformable image registration,
    arXiv:1809.03443). Unlike :class:`CycleConsistent` (CycleMorph), it sees the fields, not the images:
    it also acts where the image is uniform.
    """

    name = "inverse_consistent"

    def __init__(self, similarity: str | Callable = "lncc", regulariser: str | Callable = "diffusion", weight: float = 0.05,
                 inverse_weight: float = 0.01, masked: bool = False):
        super().__init__(similarity, regulariser, weight, masked)
        self.inverse_weight = inverse_weight

    def forward(self, model: nn.Module, batch: Batch) -> Output:
        return {"forward": model(batch["fixed"], batch["moving"]), "backward": model(batch["moving"], batch["fixed"])}

    def __call__(self, output: Output, batch: Batch) -> tuple[torch.Tensor, Logs]:
        fwd, bwd = output["forward"], output["backward"]
        sim_f, reg_f = self._terms(batch["fixed"], fwd, None)
        sim_b, reg_b = self._terms(batch["moving"], bwd, None)
        u, w = fwd["dvf"], bwd["dvf"]
        inverse = 0.5 * (compose(u, w).pow(2).sum(1).mean() + compose(w, u).pow(2).sum(1).mean())
        loss = sim_f + sim_b + reg_f + reg_b + self.inverse_weight * inverse
        return loss, {"loss": _num(loss), "similarity": _num(sim_f + sim_b), "regulariser": _num(reg_f + reg_b),
                      "inverse_consistency": _num(inverse)}


def _xy(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, dict):
        return batch["image"], batch["label"]
    return batch[0], batch[1]


class Classification(Objective):
    """Cross-entropy for classifiers (STN / CNN); batches are ``(images, labels)`` or dicts with ``image``/``label``."""

    name = "classification"

    def forward(self, model: nn.Module, batch: Batch) -> Output:
        return model(_xy(batch)[0])

    def __call__(self, output: Output, batch: Batch) -> tuple[torch.Tensor, Logs]:
        y = _xy(batch)[1]
        loss = F.cross_entropy(output, y)
        return loss, {"loss": _num(loss), "accuracy": _num((output.argmax(1) == y).float().mean())}

    def metrics(self, output: Output, batch: Batch) -> Logs:
        y = _xy(batch)[1]
        return {"accuracy": _num((output.argmax(1) == y).float().mean()), "loss": _num(F.cross_entropy(output, y))}


class Regression(Objective):
    """Mean squared error between ``model(batch["fixed"], batch["moving"])`` and ``batch["target"]``.

    Trains the learned similarity (target: the misalignment) and the RL agent's Q-network (target:
    the distance reduction of every action). Metrics: ``mse``, ``mae`` and, for vector targets,
    ``argmax_accuracy`` (does the best predicted entry match the best target entry).
    """

    name = "regression"

    def __call__(self, output: Output, batch: Batch) -> tuple[torch.Tensor, Logs]:
        target = batch["target"].to(output.dtype)
        if output.shape != target.shape:
            raise ValueError(f"Regression: model output {tuple(output.shape)} and batch['target'] {tuple(target.shape)} must have the same shape")
        loss = F.mse_loss(output, target)
        return loss, {"loss": _num(loss)}

    def metrics(self, output: Output, batch: Batch) -> Logs:
        target = batch["target"].to(output.dtype)
        logs = {"mse": _num(F.mse_loss(output, target)), "mae": _num((output - target).abs().mean())}
        if output.dim() == 2 and output.shape[1] > 1:
            logs["argmax_accuracy"] = _num((output.argmax(1) == target.argmax(1)).float().mean())
        return logs


OBJECTIVES: dict[str, type[Objective]] = {
    "supervised": Supervised,
    "weak": WeaklySupervised,
    "unsupervised": Unsupervised,
    "diffeomorphic": Diffeomorphic,
    "cycle": CycleConsistent,
    "inverse_consistent": InverseConsistent,
    "classification": Classification,
    "regression": Regression,
}


class UnknownKeywordError(TypeError):
    """A keyword argument that the objective's constructor does not take (``unknown``; ``valid`` lists the ones it does)."""

    def __init__(self, objective: str, unknown: list[str], valid: list[str]):
        self.objective, self.unknown, self.valid = objective, unknown, valid
        super().__init__(f"get_objective: unknown keyword argument(s) {', '.join(map(repr, unknown))} for the objective "
                         f"{objective!r}; it takes {', '.join(valid) or 'no keywords'}")


def objective_keywords(cls: type[Objective]) -> list[str]:
    """The keyword arguments of an objective's constructor."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def get_objective(objective: str | Objective, **kwargs: Any) -> Objective:
    """An :class:`Objective` from a name (``"supervised"``, ``"weak"``, ``"unsupervised"``, ``"diffeomorphic"``,
    ``"cycle"``, ``"inverse_consistent"``, ``"classification"``, ``"regression"``) and its keyword arguments,
    or an instance unchanged. A keyword the objective does not take raises :class:`UnknownKeywordError`
    (a ``TypeError``) that lists the valid ones."""
    if isinstance(objective, Objective):
        if kwargs:
            raise ValueError(f"get_objective: keyword arguments {sorted(kwargs)} given with an Objective instance; "
                             "pass them to its constructor instead")
        return objective
    check_choice("get_objective", "objective", objective, tuple(OBJECTIVES))
    cls = OBJECTIVES[objective]
    valid = objective_keywords(cls)
    unknown = [k for k in kwargs if k not in valid]
    if unknown:
        raise UnknownKeywordError(objective, unknown, valid)
    return cls(**kwargs)
