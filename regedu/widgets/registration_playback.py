r"""Registration playback: step through the snapshots of an iterative registration (or of the training
epochs of a learned model) and see the moved image, the difference to the fixed image, the
deformation grid and the loss curve with the current iteration marked.

Snapshot ``k`` is a pair ``(moved_k, u_k)`` with ``moved_k = M \circ (\mathrm{Id} + u_k)`` (pull-back)
and the iteration (or epoch) at which it was taken; :func:`regedu.register` records them with
``snapshot_every=n`` in ``result.history["snapshots"]`` as ``(iteration, moved, dvf)``.
"""

from __future__ import annotations

from typing import Any, Sequence, cast

import ipywidgets
import numpy as np
import torch
from matplotlib.collections import LineCollection

from ._base import FigureWidget, as_dvf, as_image, identity_positions, image_axes, sampling_grid_lines, slider, to_numpy, value_range


def _first(x: object) -> object:
    """Batch element 0 of a batched tensor ``(B, C, *spatial)`` (B > 1)."""
    if isinstance(x, torch.Tensor) and x.dim() >= 4 and x.shape[0] > 1:
        return x[:1]
    return x


class RegistrationPlayback(FigureWidget):
    """Slider (and play button) over registration snapshots.

    Args:
        fixed: the fixed image, 2D ``(H, W)`` / ``(1, 1, H, W)`` or 3D ``(1, 1, D, H, W)``.
        snapshots: a sequence of ``(moved, dvf)`` or ``(iteration, moved, dvf)``: ``moved`` like
            ``fixed``, ``dvf`` ``(1, ndim, *spatial)`` in voxels (or ``None`` if there is no field).
            Batched tensors show batch element 0.
        loss: the loss curve (one value per iteration or epoch), optional.
        moving: the moving image; when given, the deformation grid is drawn on it (else on the moved image).
        iterations: the iteration of every snapshot (x position on the loss curve); taken from
            ``(iteration, moved, dvf)`` tuples, else ``0, 1, ...`` (which must then match the loss
            curve's length, e.g. one snapshot per epoch).
        loss_steps: x values of the loss curve (default ``0, 1, ...``).
        levels: pyramid level of every loss value (draws level boundaries), optional.
        xlabel: ``"iteration"`` or e.g. ``"epoch"``.
        slice_axis, slice_index: for 3D images, the axis and index of the slice shown (default the middle).
        grid_spacing: distance between drawn grid lines, voxels.

    Controls: ``snapshot`` (index into ``snapshots``) and a play button.

    :attr:`displayed`: ``snapshot`` (index), ``iteration``, ``loss`` (the value marked, or None),
    ``fixed``, ``moved``, ``difference`` (``fixed - moved``), ``dvf`` ``(2, H, W)``, ``phi`` (grid).
    """

    def __init__(
        self,
        fixed: object,
        snapshots: Sequence,
        loss: Sequence[float] | None = None,
        *,
        moving: object | None = None,
        iterations: Sequence[int] | None = None,
        loss_steps: Sequence[float] | None = None,
        levels: Sequence[int] | None = None,
        xlabel: str = "iteration",
        slice_axis: int = 0,
        slice_index: int | None = None,
        grid_spacing: int = 8,
        dpi: int = 72,
    ) -> None:
        fn = "RegistrationPlayback"
        ndim = 3 if isinstance(fixed, torch.Tensor) and fixed.dim() == 5 else 2
        fixed_t = as_image(fn, "fixed", fixed, ndim=ndim)
        spatial = tuple(fixed_t.shape[2:])
        if len(snapshots) == 0:
            raise ValueError(f"{fn}: snapshots is empty; record some, e.g. regedu.register(..., snapshot_every=10)")
        its, moved_list, dvf_list = [], [], []
        for k, snap in enumerate(snapshots):
            if not isinstance(snap, (tuple, list)) or len(snap) not in (2, 3):
                raise ValueError(f"{fn}: snapshots[{k}] must be (moved, dvf) or (iteration, moved, dvf), got {type(snap).__name__}")
            if len(snap) == 3:
                its.append(int(snap[0]))
            moved_k = as_image(fn, f"snapshots[{k}] moved", _first(snap[-2]), ndim=ndim)
            if tuple(moved_k.shape[2:]) != spatial:
                raise ValueError(f"{fn}: snapshots[{k}] moved has spatial size {tuple(moved_k.shape[2:])}, expected that of fixed {spatial}")
            moved_list.append(moved_k)
            dvf_list.append(None if snap[-1] is None else as_dvf(fn, f"snapshots[{k}] dvf", _first(snap[-1]), spatial))
        if iterations is not None:
            its = [int(i) for i in iterations]
        elif len(its) != len(moved_list):
            its = list(range(len(moved_list)))
            if loss is not None and len(loss) != len(its):
                raise ValueError(
                    f"{fn}: {len(its)} snapshots without iteration numbers but a loss curve of {len(loss)} values; "
                    "give iterations= (the loss-curve position of every snapshot)"
                )
        if len(its) != len(moved_list):
            raise ValueError(f"{fn}: iterations must have one entry per snapshot ({len(moved_list)}), got {len(its)}")
        self.iterations = its
        self.loss: np.ndarray | None = None if loss is None else np.asarray(loss, dtype=np.float64)
        self.loss_steps: Any = cast(Any, (np.arange(len(self.loss)) if loss_steps is None else np.asarray(loss_steps, dtype=np.float64))
                                    if self.loss is not None else None)
        if self.loss is not None and len(self.loss_steps) != len(self.loss):
            raise ValueError(f"{fn}: loss_steps must have one entry per loss value ({len(self.loss)}), got {len(self.loss_steps)}")

        # everything as 2D slices (NumPy), once
        self.ndim = ndim
        if ndim == 3:
            if slice_axis not in (0, 1, 2):
                raise ValueError(f"{fn}: slice_axis must be 0, 1 or 2, got {slice_axis}")
            n = spatial[slice_axis]
            slice_index = n // 2 if slice_index is None else int(slice_index)
            if not 0 <= slice_index < n:
                raise ValueError(f"{fn}: slice_index must be in [0, {n - 1}] along axis {slice_axis}, got {slice_index}")
        self.slice_axis, self.slice_index = slice_axis, int(slice_index or 0)  # unused in 2D
        self.fixed = self._slice_image(fixed_t)
        self.moving = None if moving is None else self._slice_image(as_image(fn, "moving", _first(moving), ndim=ndim))
        if self.moving is not None and self.moving.shape != self.fixed.shape:
            raise ValueError(f"{fn}: moving must have the spatial size of fixed {spatial}")
        self.moved = [self._slice_image(m) for m in moved_list]
        self.dvfs = [self._slice_dvf(u) for u in dvf_list]
        self.grid_spacing = int(grid_spacing)
        self.xlabel = xlabel
        self._identity = identity_positions(self.fixed.shape)

        super().__init__(figsize=(12.0, 3.3), dpi=dpi)
        K = len(self.moved)
        index = self._add_control("snapshot", slider("snapshot", 0, 0, K - 1, 1, integer=True))
        self.play = ipywidgets.Play(value=0, min=0, max=K - 1, step=1, interval=300, description="play")
        ipywidgets.jslink((self.play, "value"), (index, "value"))
        self._build_figure(levels, xlabel)
        self._finish(ipywidgets.HBox([self.play, index]))

    @classmethod
    def from_result(cls, fixed: object, moving: object | None, result, **kwargs) -> "RegistrationPlayback":
        """Playback of a :class:`regedu.registration.RegistrationResult` (run with ``snapshot_every > 0``)."""
        history = getattr(result, "history", None)
        if not isinstance(history, dict) or not history.get("snapshots"):
            raise ValueError(
                "RegistrationPlayback.from_result: the result has no snapshots; run "
                "regedu.register(..., snapshot_every=10) to record them"
            )
        kwargs.setdefault("loss_steps", history.get("iteration") or None)
        kwargs.setdefault("levels", history.get("level") or None)
        return cls(fixed, history["snapshots"], history.get("loss"), moving=moving, **kwargs)

    # ------------------------------------------------------------------------------------
    def _slice_image(self, x: torch.Tensor) -> np.ndarray:
        a = to_numpy(x[0, 0])
        return a if self.ndim == 2 else np.take(a, self.slice_index, axis=self.slice_axis)

    def _slice_dvf(self, u: torch.Tensor | None) -> np.ndarray | None:
        if u is None:
            return None
        a = to_numpy(u[0])
        if self.ndim == 2:
            return a
        inplane = [k for k in range(3) if k != self.slice_axis]
        return np.take(a[inplane], self.slice_index, axis=1 + self.slice_axis)

    def _build_figure(self, levels, xlabel: str) -> None:
        axes = self.figure.subplots(1, 4, gridspec_kw={"width_ratios": [1, 1, 1, 1.35]})
        lo, hi = value_range(self.fixed, *self.moved)
        kw = dict(cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        self._moved_im = self._animate(axes[0].imshow(self.moved[0], **kw))
        self._moved_title = self._animate(axes[0].set_title(f"moved M∘φ at {self.xlabel} 0", fontsize=10))
        axes[0].set_axis_off()
        d = max(max(float(np.abs(self.fixed - m).max()) for m in self.moved), 1e-6)
        self._diff_im = self._animate(axes[1].imshow(self.fixed - self.moved[0], cmap="RdBu_r", vmin=-d, vmax=d, interpolation="nearest"))
        image_axes(axes[1], "difference F − M∘φ")
        back = self.moving if self.moving is not None else self.moved[0]
        self._grid_back = axes[2].imshow(back, **kw)
        if self.moving is None:
            self._animate(self._grid_back)
        image_axes(axes[2], "grid φ = x + u on " + ("M" if self.moving is not None else "M∘φ"))
        self._grid = self._animate(LineCollection([], colors="#ffcc00", linewidths=0.7))
        axes[2].add_collection(self._grid)
        H, W = self.fixed.shape
        axes[2].set_xlim(-0.5, W - 0.5)
        axes[2].set_ylim(H - 0.5, -0.5)
        ax = axes[3]
        ax.tick_params(labelsize=8)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_title("loss", fontsize=10)
        self._loss_marker: Any = None
        self._loss_line: Any = None
        if self.loss is not None:
            ax.plot(self.loss_steps, self.loss, color="C0", lw=1.2)
            if levels is not None and len(levels) == len(self.loss):
                lv = np.asarray(levels)
                for b in np.nonzero(np.diff(lv))[0]:
                    ax.axvline(self.loss_steps[b + 1], color="0.6", lw=0.8, ls=":")
            span = max(self.loss_steps[-1], max(self.iterations)) - min(self.loss_steps[0], min(self.iterations))
            ax.set_xlim(min(self.loss_steps[0], min(self.iterations)) - 0.02 * span,
                        max(self.loss_steps[-1], max(self.iterations)) + 0.02 * span)
            self._loss_line = self._animate(ax.axvline(self.iterations[0], color="C3", lw=1.0))
            self._loss_marker = self._animate(ax.plot([], [], "o", color="C3", ms=7)[0])
        else:
            ax.text(0.5, 0.5, "no loss curve given", ha="center", va="center", transform=ax.transAxes, color="0.5")

    def _loss_at(self, iteration: int) -> float | None:
        if self.loss is None:
            return None
        k = int(np.argmin(np.abs(self.loss_steps - iteration)))
        return float(self.loss[k])

    def _redraw(self) -> None:
        k = int(self._controls["snapshot"].value)
        it = self.iterations[k]
        moved = self.moved[k]
        diff = self.fixed - moved
        u = self.dvfs[k]
        self._moved_im.set_data(moved)
        self._moved_title.set_text(f"moved M∘φ at {self.xlabel} {it}")
        self._diff_im.set_data(diff)
        if self.moving is None:
            self._grid_back.set_data(moved)
        phi = None
        if u is not None:
            phi = self._identity + u
            self._grid.set_segments(sampling_grid_lines(phi, self.grid_spacing))
        else:
            self._grid.set_segments([])
        loss = self._loss_at(it)
        if self._loss_line is not None:
            self._loss_line.set_xdata([it, it])
            self._loss_marker.set_data([it], [loss])
        mse = float(np.mean(diff ** 2))
        self.info.value = (
            f"snapshot {k} (of 0-{len(self.moved) - 1}, as on the slider) &nbsp; {self.xlabel} {it}"
            + (f" &nbsp; loss = {loss:.5g}" if loss is not None else "")
            + f" &nbsp; MSE(F, M∘φ) = {mse:.5g}"
            + (f" &nbsp; max |u| = {np.sqrt((u ** 2).sum(0)).max():.2f} voxels" if u is not None else "")
        )
        self.displayed = {
            "snapshot": k,
            "iteration": it,
            "loss": loss,
            "fixed": self.fixed,
            "moved": moved,
            "difference": diff,
            "dvf": u,
            "phi": phi,
        }

