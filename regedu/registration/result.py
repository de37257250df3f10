"""The result of a registration: the transformation, the moved image, and how the optimisation went."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .._checks import check_image
from ..spatial_transformer import affine_warp, warp, warp_labels


@dataclass
class RegistrationResult:
    """What :func:`regedu.register` and :func:`regedu.registration.demons` return.

    Attributes:
        dvf: ``(B, ndim, *spatial)`` displacement in voxels (pull-back, ``moved(x) = moving(x + dvf(x))``),
            always present (for a matrix it is ``affine_to_dvf(matrix)``), including any ``init`` transform.
        moved: the moving image warped onto the fixed image, ``(B, C, *spatial)``.
        matrix: ``(B, ndim+1, ndim+1)`` (fixed voxel -> moving voxel) for translation, rigid and affine
            registration, ``None`` for deformable models.
        history: per-iteration lists ``"loss"``, ``"similarity"``, ``"regulariser"`` (the weighted
            term), ``"level"`` (0 = coarsest), ``"iteration"`` (global counter), ``"time"`` (seconds since
            the start); ``"snapshots"`` is a list of ``(iteration, moved, dvf)`` at full resolution,
            detached and on the CPU, recorded every ``snapshot_every`` iterations (empty if 0).
        time: wall time of the registration in seconds.
        transform: the name of the transformation model.
        model: the optimised model (``torch.nn.Module``, on the full-resolution grid), or ``None``.
        velocity: the stationary velocity field for ``transform="svf"`` (else ``None``).
        stopped_early: ``True`` if the callback stopped the optimisation.
        loss: the loss of the returned transformation on the full-resolution grid (``None`` when not
            computed, e.g. after an early stop). It can be below ``history["loss"][-1]``: the engine
            returns the best point it evaluated, never one worse than the start.
    """

    dvf: torch.Tensor
    moved: torch.Tensor
    matrix: torch.Tensor | None = None
    history: dict[str, list[Any]] = field(default_factory=dict)
    time: float = 0.0
    transform: str = ""
    model: torch.nn.Module | None = None
    velocity: torch.Tensor | None = None
    stopped_early: bool = False
    loss: float | None = None

    @property
    def ndim(self) -> int:
        return self.dvf.dim() - 2

    @property
    def final_loss(self) -> float | None:
        """The loss of the returned transformation (:attr:`loss`), else the last recorded loss (``None`` if no iteration ran)."""
        if self.loss is not None:
            return self.loss
        losses = self.history.get("loss", [])
        return losses[-1] if losses else None

    def _check(self, fn: str, image: torch.Tensor) -> torch.Tensor:
        image = check_image(f"RegistrationResult.{fn}", "image", image, finite=False)
        if tuple(image.shape[2:]) != tuple(self.dvf.shape[2:]):
            raise ValueError(
                f"RegistrationResult.{fn}: image must have the spatial size of the registered images "
                f"{tuple(self.dvf.shape[2:])}, got {tuple(image.shape[2:])}; resample it first with regedu.resize"
            )
        return image

    def warp(self, image: torch.Tensor, mode: str = "linear", padding_mode: str = "border") -> torch.Tensor:
        """Apply the transformation to another image on the moving image's grid, ``(B, C, *spatial)``.

        ``mode``: ``"linear"`` or ``"nearest"``. A matrix result warps with the exact matrix.
        """
        image = self._check("warp", image)
        if self.matrix is not None:
            return affine_warp(image, self.matrix.to(image.device), mode=mode, padding_mode=padding_mode)
        return warp(image, self.dvf.to(image.device), mode=mode, padding_mode=padding_mode)

    def warp_labels(self, labels: torch.Tensor, mode: str = "nearest", num_classes: int | None = None) -> torch.Tensor:
        """Apply the transformation to a label map ``(B, 1, *spatial)`` of integer classes.

        ``mode="nearest"`` takes the nearest label; ``mode="linear"`` warps the one-hot encoding linearly
        and takes the arg-max (smoother boundaries).
        """
        labels = self._check("warp_labels", labels)
        if self.matrix is not None and mode == "nearest":
            return affine_warp(labels, self.matrix.to(labels.device), mode="nearest")
        return warp_labels(labels, self.dvf.to(labels.device), num_classes=num_classes, mode=mode)

    def __repr__(self) -> str:
        loss = self.final_loss
        shape = tuple(self.dvf.shape)
        kind = "matrix + dvf" if self.matrix is not None else "dvf"
        iters = len(self.history.get("loss", []))
        loss_s = f"{loss:.4g}" if loss is not None else "n/a"
        return (f"RegistrationResult(transform={self.transform!r}, {kind} {shape}, iterations={iters}, "
                f"final loss={loss_s}, time={self.time:.2f} s)")
