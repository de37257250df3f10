"""Volume viewer: three orthogonal slices of a 3D volume with slice sliders, fixed/moved comparison
modes (overlay, checkerboard, difference) and label contours.

Comparison modes, for a fixed image ``F`` and a moved image ``M∘φ`` on the same grid:

* ``overlay``: ``F`` in magenta and ``M∘φ`` in green; where they agree the result is grey, a
  misalignment shows as coloured fringes;
* ``checkerboard``: alternating squares of ``F`` and ``M∘φ``; edges that continue across the
  squares are aligned;
* ``difference``: ``F − M∘φ`` (blue negative, red positive, white zero).
"""

from __future__ import annotations

from typing import Sequence

import ipywidgets
import numpy as np
import torch
from matplotlib import colormaps

from .._checks import check_choice, check_tensor
from ._base import FigureWidget, as_image, slider, to_numpy, value_range

MODES = ("fixed", "moved", "overlay", "checkerboard", "difference")
ORIENTATIONS = ("RAS", "index")
#: RAS display (as regedu.data.brain_slice): plane -> (cut axis, (row axis, flipped), (column axis, flipped))
_RAS_VIEWS = {
    "sagittal": (0, (2, True), (1, True)),
    "coronal": (1, (2, True), (0, False)),
    "axial": (2, (1, True), (0, False)),
}
_INDEX_VIEWS = {
    "axis0": (0, (1, False), (2, False)),
    "axis1": (1, (0, False), (2, False)),
    "axis2": (2, (0, False), (1, False)),
}


def _as_labels(fn: str, name: str, x: object, shape: Sequence[int]) -> np.ndarray:
    if hasattr(x, "labels") and not isinstance(x, (torch.Tensor, np.ndarray)):
        x = x.labels
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    x = check_tensor(fn, name, x)
    if tuple(x.shape[-3:]) != tuple(shape) or x.numel() != int(np.prod(shape)):
        raise ValueError(f"{fn}: {name} must be one label map of spatial size {tuple(shape)}, got shape {tuple(x.shape)}")
    return x.detach().reshape(*shape).to("cpu", torch.int64).numpy()


def label_boundaries(labels: np.ndarray) -> np.ndarray:
    """Boolean mask of one-voxel-thick boundaries of a 2D label map: of two 4-neighbours with different
    labels, the one with the larger label is marked (so each interface is drawn once, never on the
    background, label 0)."""
    b = np.zeros(labels.shape, dtype=bool)
    for a, c in ((labels[:-1, :], labels[1:, :]), (labels[:, :-1], labels[:, 1:])):
        diff = a != c
        first = diff & (a > c)
        second = diff & (c > a)
        if a.shape[0] < labels.shape[0]:
            b[:-1, :] |= first
            b[1:, :] |= second
        else:
            b[:, :-1] |= first
            b[:, 1:] |= second
    return b


class VolumeViewer(FigureWidget):
    """Three orthogonal slices of a 3D volume, optionally compared with a moved volume.

    Args:
        fixed: the volume ``(D, H, W)``, ``(1, 1, D, H, W)`` or a :class:`regedu.data.Volume`.
        moved: optional second volume on the same grid (e.g. a registration result's ``moved``).
        labels: optional label map of ``fixed`` (default: ``fixed.labels`` for a Volume); its
            boundaries are drawn in one colour per class.
        moved_labels: optional label map of the moved volume; its boundaries are drawn in white.
        spacing: voxel size per axis (default ``fixed.spacing`` for a Volume, else 1): sets the aspect ratio.
        orientation: ``"RAS"`` (default; tensor axes 0, 1, 2 = left->right, posterior->anterior,
            inferior->superior as in :func:`regedu.data.load_brain`): sagittal, coronal and axial
            views oriented like :func:`regedu.data.brain_slice`; ``"index"``: plain slices
            ``volume[i, :, :]``, ``volume[:, j, :]``, ``volume[:, :, k]``.
        mode: the initial comparison mode (one of ``MODES``; only ``"fixed"`` without ``moved``).
        checker: checkerboard square size, voxels.
        contours: draw label boundaries (if there are labels).

    Controls: one slice slider per view (``"sagittal"``, ``"coronal"``, ``"axial"`` for RAS,
    ``"axis0"``, ``"axis1"``, ``"axis2"`` for index; :attr:`views` lists them), ``mode``, ``checker``
    and ``contours``.

    :attr:`displayed`: ``fixed`` / ``moved`` / ``labels`` (``{view: 2D slice as displayed}``),
    ``shown`` (``{view: RGB image drawn}``), ``contours`` (``{view: boundary mask}``), ``indices``
    (``{view: slice index along its cut axis}``), ``mode``.
    """

    def __init__(
        self,
        fixed: object,
        moved: object | None = None,
        labels: object | None = None,
        *,
        moved_labels: object | None = None,
        spacing: Sequence[float] | None = None,
        orientation: str = "RAS",
        mode: str = "fixed",
        checker: int = 8,
        contours: bool = True,
        dpi: int = 72,
    ) -> None:
        fn = "VolumeViewer"
        check_choice(fn, "orientation", orientation, ORIENTATIONS)
        if spacing is None:
            spacing = getattr(fixed, "spacing", None) if not isinstance(fixed, (torch.Tensor, np.ndarray)) else None
        if labels is None and not isinstance(fixed, (torch.Tensor, np.ndarray)) and getattr(fixed, "labels", None) is not None:
            labels = getattr(fixed, "labels")
        self.fixed = to_numpy(as_image(fn, "fixed", fixed, ndim=3)[0, 0])
        self.shape = self.fixed.shape
        self.moved = None if moved is None else to_numpy(as_image(fn, "moved", moved, ndim=3)[0, 0])
        if self.moved is not None and self.moved.shape != self.shape:
            raise ValueError(f"{fn}: moved must have the spatial size of fixed {self.shape}, got {self.moved.shape}")
        self.labels = None if labels is None else _as_labels(fn, "labels", labels, self.shape)
        self.moved_labels = None if moved_labels is None else _as_labels(fn, "moved_labels", moved_labels, self.shape)
        self.spacing = tuple(float(s) for s in (spacing if spacing is not None else (1.0, 1.0, 1.0)))
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(f"{fn}: spacing must be 3 positive numbers, got {spacing}")
        modes = MODES if self.moved is not None else ("fixed",)
        check_choice(fn, "mode", mode, modes)
        self._views = _RAS_VIEWS if orientation == "RAS" else _INDEX_VIEWS
        self.views = tuple(self._views)
        self.orientation = orientation
        images = [self.fixed] + ([self.moved] if self.moved is not None else [])
        self._lo, self._hi = value_range(*images)
        self._dmax = float(np.abs(self.fixed - self.moved).max()) if self.moved is not None else 1.0
        self._dmax = max(self._dmax, 1e-6)

        super().__init__(figsize=(12.0, 4.2), dpi=dpi)
        ctl = self._add_control
        sliders = []
        for view, (axis, _, _) in self._views.items():
            n = self.shape[axis]
            sliders.append(ctl(view, slider(f"{view} (axis {axis})", n // 2, 0, n - 1, 1, integer=True)))
        mode_ctl = ctl("mode", ipywidgets.Dropdown(options=list(modes), value=mode, description="mode",
                                                   style={"description_width": "110px"}, layout=ipywidgets.Layout(width="380px")))
        mode_ctl.disabled = self.moved is None
        side = [mode_ctl, ctl("checker", slider("checker (vox)", int(checker), 2, 32, 1, integer=True))]
        has_labels = self.labels is not None or self.moved_labels is not None
        contour_ctl = ctl("contours", ipywidgets.Checkbox(value=bool(contours) and has_labels, description="label contours",
                                                          disabled=not has_labels))
        side.append(contour_ctl)
        controls = ipywidgets.HBox([ipywidgets.VBox(sliders), ipywidgets.VBox(side)])

        axes = self.figure.subplots(1, 3)
        self._panels = {}
        self._label_colors = colormaps["tab10"](np.arange(10))[:, :3]
        for ax, (view, (axis, (ra, _), (ca, _))) in zip(axes, self._views.items()):
            rows, cols = self.shape[ra], self.shape[ca]
            blank = np.zeros((rows, cols, 3))
            im = self._animate(ax.imshow(blank, interpolation="nearest", aspect=self.spacing[ra] / self.spacing[ca]))
            ov = self._animate(ax.imshow(np.zeros((rows, cols, 4)), interpolation="nearest", aspect=self.spacing[ra] / self.spacing[ca]))
            h = self._animate(ax.axhline(0, color="#00e0ff", lw=0.6, alpha=0.8))
            v = self._animate(ax.axvline(0, color="#00e0ff", lw=0.6, alpha=0.8))
            title = self._animate(ax.set_title(f"{view} 000 / 000", fontsize=10))  # text reserves room in the layout
            ax.set_axis_off()
            self._panels[view] = (im, ov, h, v, title)
        self._finish(controls)

    # ------------------------------------------------------------------------------------
    def _cut(self, volume: np.ndarray, view: str, index: int) -> np.ndarray:
        axis, (ra, fr), (ca, fc) = self._views[view]
        s = np.take(volume, index, axis=axis)  # remaining axes in increasing order
        rest = [a for a in range(3) if a != axis]
        if rest.index(ra) != 0:
            s = s.T
        if fr:
            s = s[::-1, :]
        if fc:
            s = s[:, ::-1]
        return np.ascontiguousarray(s)

    def _position(self, axis: int, flipped: bool, index: int) -> float:
        return self.shape[axis] - 1 - index if flipped else index

    def _gray(self, a: np.ndarray) -> np.ndarray:
        g = np.clip((a - self._lo) / (self._hi - self._lo), 0, 1)
        return np.repeat(g[..., None], 3, axis=-1)

    def _compose(self, f: np.ndarray, m: np.ndarray | None, mode: str, checker: int) -> np.ndarray:
        if mode == "fixed" or m is None:
            return self._gray(f)
        if mode == "moved":
            return self._gray(m)
        if mode == "overlay":
            gf, gm = self._gray(f)[..., 0], self._gray(m)[..., 0]
            return np.stack([gf, gm, gf], -1)
        if mode == "checkerboard":
            r, c = np.indices(f.shape)
            first = ((r // checker + c // checker) % 2) == 0
            return np.where(first[..., None], self._gray(f), self._gray(m))
        d = np.clip((f - m) / self._dmax * 0.5 + 0.5, 0, 1)
        return colormaps["RdBu_r"](d)[..., :3]

    def _redraw(self) -> None:
        s = self.state()
        mode, checker = s["mode"], int(s["checker"])
        indices = {view: int(s[view]) for view in self._views}
        by_axis = {self._views[v][0]: i for v, i in indices.items()}
        shown, fixed_sl, moved_sl, label_sl, contour_sl = {}, {}, {}, {}, {}
        for view, (axis, (ra, fr), (ca, fc)) in self._views.items():
            im, ov, h, v, title = self._panels[view]
            f = self._cut(self.fixed, view, indices[view])
            m = self._cut(self.moved, view, indices[view]) if self.moved is not None else None
            rgb = self._compose(f, m, mode, checker)
            im.set_data(rgb)
            overlay = np.zeros((*f.shape, 4), dtype=np.float32)
            boundary = np.zeros(f.shape, dtype=bool)
            if s["contours"]:
                if self.labels is not None:
                    lab = self._cut(self.labels, view, indices[view])
                    label_sl[view] = lab
                    boundary = label_boundaries(lab)
                    overlay[boundary, :3] = self._label_colors[(lab[boundary] - 1) % 10]
                    overlay[boundary, 3] = 1.0
                if self.moved_labels is not None:
                    mb = label_boundaries(self._cut(self.moved_labels, view, indices[view]))
                    overlay[mb] = (1.0, 1.0, 1.0, 1.0)
                    boundary = boundary | mb
            ov.set_data(overlay)
            h.set_ydata([self._position(ra, fr, by_axis[ra])] * 2)
            v.set_xdata([self._position(ca, fc, by_axis[ca])] * 2)
            title.set_text(f"{view} {indices[view]} / {self.shape[axis] - 1}")
            shown[view], fixed_sl[view] = rgb, f
            if m is not None:
                moved_sl[view] = m
            contour_sl[view] = boundary
        self.info.value = (
            f"mode: <b>{mode}</b>"
            + {"overlay": " (fixed magenta, moved green, grey where they agree)",
               "checkerboard": f" ({checker}-voxel squares: fixed / moved)",
               "difference": " (fixed − moved: blue negative, red positive)"}.get(mode, "")
            + " &nbsp; slices: " + ", ".join(f"{v} {i}" for v, i in indices.items())
        )
        self.displayed = {
            "mode": mode,
            "indices": indices,
            "fixed": fixed_sl,
            "moved": moved_sl,
            "labels": label_sl,
            "shown": shown,
            "contours": contour_sl,
        }
