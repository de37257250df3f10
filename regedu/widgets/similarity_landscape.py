r"""Similarity landscape: SSD, NCC and MI as functions of the transform parameters.

For a mono-modal pair (the same contrast) and a multi-modal pair (another contrast of the same
anatomy) the widget evaluates, once, on a grid of rigid parameters :math:`\theta` (rotation about
the centre and/or translations along the tensor axes, optionally an isotropic scale),

.. math:: \mathrm{SSD}(F, M \circ \varphi_\theta),\quad \mathrm{NCC}(F, M \circ \varphi_\theta),\quad
          \mathrm{MI}(F, M \circ \varphi_\theta),

and draws the curves (one parameter) or maps (two parameters). The sliders then only move the marker
of the current position (and the small preview of the moved images): nothing is recomputed.

What it shows: for the multi-modal pair the intensities are not equal (nor linearly related) at the
true alignment, so SSD and NCC have their optimum elsewhere, while MI, which only needs the
intensities to be statistically dependent, still peaks at the true alignment (Viola & Wells, 1997;
Maes et al., 1997). Local optima (small circles) are where a gradient-based optimiser can get stuck.
"""

from __future__ import annotations

from typing import Sequence

import ipywidgets
import numpy as np
import torch
from tqdm.auto import tqdm

from .. import similarity
from .._checks import check_choice
from ..data import Volume, t2_like
from ..resampling import resize
from ..warping import PADDING, affine_warp
from ..transforms import affine_matrix, image_center
from ._base import FigureWidget, as_image, image_axes, slider, to_numpy, value_range

PARAMETERS = ("rotation", "t0", "t1", "scale")
MEASURES = ("ssd", "ncc", "mi")
#: whether each measure is better when larger (similarity) or smaller (loss)
MAXIMISE = {"ssd": False, "ncc": True, "mi": True}
_LABELS = {"rotation": "rotation (°)", "t0": "t₀ (rows, vox)", "t1": "t₁ (cols, vox)", "scale": "scale"}
_TITLES = {"ssd": "SSD (lower is better)", "ncc": "NCC (higher is better)", "mi": "MI (higher is better)"}


def second_contrast(image: object) -> torch.Tensor:
    r"""A second MR contrast aligned with ``image`` (a stand-in for T1 -> T2).

    Given tissue labels, a :class:`regedu.data.Volume` or an integer label map ``(B, 1, *S)``, this is
    :func:`regedu.data.t2_like`, the course's T2 model (CSF bright, grey matter intermediate, white
    matter dark). A plain intensity image has no labels, so its intensities are remapped instead:
    mapped to [0, 1], the background (below ~5 % of the range) stays dark and the tissue is inverted,
    :math:`I' = w(I)\,(1 - 0.8\,I)` with a smooth step :math:`w` from 0.02 to 0.1, so bright tissue
    becomes dark and dark tissue bright, as CSF and white matter swap between T1 and T2. Either way
    the relation between the contrasts is not monotonic (SSD and NCC fail) but the intensities stay
    statistically dependent (MI works).
    """
    if isinstance(image, Volume) or (isinstance(image, torch.Tensor) and not image.is_floating_point()
                                     and image.dim() in (4, 5) and image.shape[1] == 1):
        return t2_like(image)
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"second_contrast: image must be a torch.Tensor or a regedu.data.Volume, got {type(image).__name__}")
    lo, hi = image.amin(), image.amax()
    x = (image - lo) / (hi - lo).clamp_min(1e-12)
    t = ((x - 0.02) / 0.08).clamp(0, 1)
    w = t * t * (3 - 2 * t)
    return w * (1 - 0.8 * x)


def local_optima(values: np.ndarray, maximise: bool) -> np.ndarray:
    """Indices ``(n, values.ndim)`` of strict-ish local optima (no neighbour is better) that are not on the border
    plateau of a constant landscape."""
    v = values if maximise else -values
    pad = np.pad(v, 1, mode="constant", constant_values=-np.inf)
    core = pad[(slice(1, -1),) * v.ndim]
    is_opt = np.ones(v.shape, dtype=bool)
    for offset in np.ndindex(*([3] * v.ndim)):
        if all(o == 1 for o in offset):
            continue
        shifted = pad[tuple(slice(o, o + s) for o, s in zip(offset, v.shape))]
        is_opt &= core >= shifted
    # drop flat regions (e.g. no overlap at all): an optimum must beat at least one neighbour
    strict = np.zeros(v.shape, dtype=bool)
    for offset in np.ndindex(*([3] * v.ndim)):
        if all(o == 1 for o in offset):
            continue
        shifted = pad[tuple(slice(o, o + s) for o, s in zip(offset, v.shape))]
        strict |= (core > shifted) & np.isfinite(shifted)
    return np.argwhere(is_opt & strict)


class SimilarityLandscape(FigureWidget):
    """SSD/NCC/MI landscapes of a mono-modal and a multi-modal pair, with the current position marked.

    Args:
        fixed: the fixed image ``(H, W)`` (or ``(1, 1, H, W)``, tensor or array).
        moving: the mono-modal moving image (same contrast as ``fixed``); default ``fixed`` itself.
        multimodal: the moving image in another contrast; default :func:`second_contrast` of ``moving``
            (:func:`regedu.data.t2_like` when ``moving`` is a :class:`regedu.data.Volume`).
            Both moving images are taken as truly aligned with ``fixed`` at the zero transform.
        parameters: one or two of ``"rotation"`` (degrees), ``"t0"``, ``"t1"`` (voxels of the input
            images, along rows / columns) and ``"scale"`` (isotropic); a single name is fine.
        ranges: ``{name: (low, high)}``; defaults: rotation (-60, 60), translations a quarter of the
            image size either way, scale (0.7, 1.4).
        steps: grid points per parameter (odd, so that the zero transform is on the grid).
            Default 41 for one parameter, 17 for two.
        size: the landscape is computed on images resized to at most ``size`` voxels per axis
            (default 64; ``None`` keeps the full size). Translations stay in voxels of the input.
        bins: histogram bins of the mutual information.
        batch: transforms evaluated at once (memory: ``batch * H * W * bins`` floats for MI).
        progress: show a progress bar while the landscape is computed (a few seconds).

    Controls: one slider per parameter, named as in ``parameters``, stepping along the grid.

    :attr:`displayed`: ``axes`` (grid values per parameter), ``landscapes`` (``{"mono"|"multi":
    {measure: array}}``, one value per grid point), ``index`` (grid index of the marker),
    ``current`` (``{pair: {measure: value at the marker}}``), ``best`` (``{pair: {measure: parameter
    values of the global optimum}}``), ``optima`` (``{pair: {measure: list of local optima}}``),
    ``moved`` (``{pair: moved image at the marker}``), ``fixed``.
    """

    def __init__(
        self,
        fixed: object,
        moving: object | None = None,
        multimodal: object | None = None,
        *,
        parameters: str | Sequence[str] = ("t1",),
        ranges: dict[str, tuple[float, float]] | None = None,
        steps: int | None = None,
        size: int | None = 64,
        bins: int = 32,
        padding_mode: str = "zeros",
        batch: int = 64,
        progress: bool = True,
        dpi: int = 72,
    ) -> None:
        fn = "SimilarityLandscape"
        fixed_t = as_image(fn, "fixed", fixed)
        moving_t = fixed_t.clone() if moving is None else as_image(fn, "moving", moving)
        if multimodal is None:  # a Volume has tissue labels: use the course's T2 model of it
            multi_t = as_image(fn, "multimodal", second_contrast(moving if isinstance(moving, Volume) else moving_t))
        else:
            multi_t = as_image(fn, "multimodal", multimodal)
        for name, x in (("moving", moving_t), ("multimodal", multi_t)):
            if x.shape != fixed_t.shape:
                raise ValueError(f"{fn}: {name} must have the shape of fixed {tuple(fixed_t.shape[2:])}, got {tuple(x.shape[2:])}")
        params = (parameters,) if isinstance(parameters, str) else tuple(parameters)
        if len(params) not in (1, 2) or len(set(params)) != len(params):
            raise ValueError(f"{fn}: parameters must be one or two different names, got {parameters!r}")
        for p in params:
            check_choice(fn, "parameters", p, PARAMETERS)
        self.parameters = params
        self.padding_mode = check_choice(fn, "padding_mode", padding_mode, PADDING)
        steps = steps if steps is not None else (41 if len(params) == 1 else 17)
        if steps < 3 or steps % 2 == 0:
            raise ValueError(f"{fn}: steps must be an odd number >= 3 (so that the zero transform is on the grid), got {steps}")
        H, W = fixed_t.shape[2:]
        default = {"rotation": (-60.0, 60.0), "t0": (-H / 4, H / 4), "t1": (-W / 4, W / 4), "scale": (0.7, 1.4)}
        ranges = {**default, **(ranges or {})}
        self.axes_values = {}
        for p in params:
            lo, hi = (float(v) for v in ranges[p])
            if not lo < hi:
                raise ValueError(f"{fn}: ranges[{p!r}] must be (low, high) with low < high, got {ranges[p]}")
            self.axes_values[p] = np.linspace(lo, hi, steps)

        # images at the landscape's resolution; translations are rescaled to its voxels
        self.input_shape = (H, W)
        if size is not None and max(H, W) > size:
            f = size / max(H, W)
            shape = (max(2, round(H * f)), max(2, round(W * f)))
            fixed_t, moving_t, multi_t = (resize(x, shape=shape) for x in (fixed_t, moving_t, multi_t))
        self.shape = tuple(fixed_t.shape[2:])
        self._voxel_scale = [(s - 1) / (S - 1) for s, S in zip(self.shape, self.input_shape)]
        self.fixed, self.moving, self.multimodal = fixed_t, moving_t, multi_t
        self.bins = int(bins)

        grids = np.meshgrid(*[self.axes_values[p] for p in params], indexing="ij")
        flat = {p: g.ravel() for p, g in zip(params, grids)}
        mats = self._matrices(flat)
        bar = tqdm(total=2 * mats.shape[0], desc="similarity landscape", disable=not progress, leave=False)
        with bar:
            self.landscapes = {
                pair: {m: v.reshape(grids[0].shape) for m, v in self._evaluate(img, mats, batch, bar).items()}
                for pair, img in (("mono", moving_t), ("multi", multi_t))
            }
        self.optima = {
            pair: {m: [self._values_at(tuple(i)) for i in local_optima(land[m], MAXIMISE[m])] for m in MEASURES}
            for pair, land in self.landscapes.items()
        }
        self.best = {
            pair: {m: self._values_at(np.unravel_index(np.argmax(land[m]) if MAXIMISE[m] else np.argmin(land[m]), land[m].shape))
                   for m in MEASURES}
            for pair, land in self.landscapes.items()
        }

        super().__init__(figsize=(12.5, 5.6 if len(params) == 1 else 6.2), dpi=dpi)
        sliders = []
        for p in params:
            vals = self.axes_values[p]
            step = float(vals[1] - vals[0])
            zero = 1.0 if p == "scale" else 0.0
            start = float(vals[np.argmin(np.abs(vals - zero))])
            sliders.append(self._add_control(p, slider(_LABELS[p], start, float(vals[0]), float(vals[-1]), step,
                                                       readout_format=".3g")))
        self._build_figure()
        self._finish(ipywidgets.HBox(sliders), rect=(0, 0, 1, 0.96))

    # ------------------------------------------------------------------------------------
    def _values_at(self, index: tuple) -> tuple[float, ...]:
        return tuple(float(self.axes_values[p][i]) for p, i in zip(self.parameters, index))

    def _matrices(self, values: dict[str, np.ndarray]) -> torch.Tensor:
        """Affine matrices ``(N, 3, 3)`` (landscape voxels) for parameter values given in input voxels/degrees."""
        n = len(next(iter(values.values())))
        get = lambda p, default: torch.as_tensor(values.get(p, np.full(n, default)), dtype=self.fixed.dtype)  # noqa: E731
        angle = torch.deg2rad(get("rotation", 0.0))
        scale = get("scale", 1.0)
        t0 = get("t0", 0.0) * self._voxel_scale[0]
        t1 = get("t1", 0.0) * self._voxel_scale[1]
        zeros = torch.zeros(n, dtype=self.fixed.dtype)
        params = torch.stack([angle, scale, scale, zeros, t0, t1], -1)
        return affine_matrix(params, center=image_center(self.shape).to(self.fixed.dtype))

    def _evaluate(self, moving: torch.Tensor, mats: torch.Tensor, batch: int, bar) -> dict[str, np.ndarray]:
        out: dict[str, list[torch.Tensor]] = {m: [] for m in MEASURES}
        with torch.no_grad():
            for k in range(0, mats.shape[0], batch):
                moved = affine_warp(moving, mats[k:k + batch], padding_mode=self.padding_mode)
                out["ssd"].append(similarity.ssd(self.fixed, moved, reduction="none"))
                out["ncc"].append(similarity.ncc(self.fixed, moved, reduction="none"))
                out["mi"].append(similarity.mutual_information(self.fixed, moved, bins=self.bins, reduction="none"))
                bar.update(moved.shape[0])
        return {m: torch.cat(v).cpu().numpy().astype(np.float64) for m, v in out.items()}

    def _build_figure(self) -> None:
        fig = self.figure
        axes = fig.subplots(2, 4, gridspec_kw={"width_ratios": [0.8, 1, 1, 1]})
        self._previews, self._markers = {}, []
        f = to_numpy(self.fixed)
        one_d = len(self.parameters) == 1
        for row, pair in enumerate(("mono", "multi")):
            img = self.moving if pair == "mono" else self.multimodal
            lo, hi = value_range(to_numpy(img))
            self._previews[pair] = self._animate(
                axes[row, 0].imshow(to_numpy(img), cmap="gray", vmin=lo, vmax=hi, interpolation="nearest"))
            self._animate(axes[row, 0].contour(f, levels=[0.5 * (f.min() + f.max())], colors="#ff3030", linewidths=0.7))
            image_axes(axes[row, 0], ("mono-modal" if pair == "mono" else "multi-modal") + " M∘φ, red: F edge")
            for col, m in enumerate(MEASURES, start=1):
                ax, land = axes[row, col], self.landscapes[pair][m]
                ax.set_title(f"{pair}: {_TITLES[m]}", fontsize=9)
                ax.tick_params(labelsize=8)
                if one_d:
                    x = self.axes_values[self.parameters[0]]
                    ax.plot(x, land, color="C0", lw=1.2)
                    opt = self.optima[pair][m]
                    if opt:
                        xs = [o[0] for o in opt]
                        ax.plot(xs, np.interp(xs, x, land), "o", mfc="none", mec="C1", ms=6)
                    ax.plot([self.best[pair][m][0]], [np.interp(self.best[pair][m][0], x, land)], "*", color="C2", ms=11)
                    ax.axvline(0.0 if self.parameters[0] != "scale" else 1.0, color="0.6", lw=0.8, ls=":")
                    ax.set_xlabel(_LABELS[self.parameters[0]], fontsize=8)
                    vline = self._animate(ax.axvline(0.0, color="C3", lw=1.0))
                    marker = self._animate(ax.plot([], [], "o", color="C3", ms=8)[0])
                    self._markers.append((pair, m, marker, vline))
                else:
                    p0, p1 = self.parameters
                    y, x = self.axes_values[p0], self.axes_values[p1]
                    ext = [x[0], x[-1], y[-1], y[0]]
                    ax.imshow(land, extent=ext, aspect="auto", cmap="viridis" if MAXIMISE[m] else "viridis_r",
                              interpolation="nearest")
                    opt = self.optima[pair][m]
                    if opt:
                        ax.plot([o[1] for o in opt], [o[0] for o in opt], "o", mfc="none", mec="w", ms=6)
                    b = self.best[pair][m]
                    ax.plot([b[1]], [b[0]], "*", color="C1", ms=11)
                    ax.set_xlabel(_LABELS[p1], fontsize=8)
                    ax.set_ylabel(_LABELS[p0], fontsize=8)
                    marker = self._animate(ax.plot([], [], "+", color="C3", ms=14, mew=2)[0])
                    self._markers.append((pair, m, marker, None))
        legend = "★ global optimum    ○ local optima    red: current position    true alignment: "
        legend += "dotted line" if one_d else "rotation 0, translation 0, scale 1"
        fig.text(0.5, 0.995, legend, ha="center", va="top", fontsize=9)

    def _redraw(self) -> None:
        s = self.state()
        index = tuple(int(np.argmin(np.abs(self.axes_values[p] - s[p]))) for p in self.parameters)
        values = self._values_at(index)
        current = {pair: {m: float(self.landscapes[pair][m][index]) for m in MEASURES} for pair in self.landscapes}
        for pair, m, marker, vline in self._markers:
            if vline is not None:
                marker.set_data([values[0]], [current[pair][m]])
                vline.set_xdata([values[0], values[0]])
            else:
                marker.set_data([values[1]], [values[0]])
        A = self._matrices({p: np.array([v]) for p, v in zip(self.parameters, values)})[0]
        moved = {}
        for pair, img in (("mono", self.moving), ("multi", self.multimodal)):
            moved[pair] = to_numpy(affine_warp(img, A, padding_mode=self.padding_mode))
            self._previews[pair].set_data(moved[pair])
        where = ", ".join(f"{p} = {v:.3g}" for p, v in zip(self.parameters, values))
        rows = "".join(
            f"<tr><td>{pair}-modal</td>" + "".join(f"<td style='padding:0 10px'>{m.upper()} = {current[pair][m]:.4g}</td>" for m in MEASURES)
            + "<td>best at " + "; ".join(f"{m.upper()}: " + ", ".join(f"{p} = {float(v):.3g}" for p, v in zip(self.parameters, self.best[pair][m]))
                                         for m in MEASURES) + "</td></tr>"
            for pair in ("mono", "multi")
        )
        self.info.value = f"<div>at {where}</div><table style='font-family:monospace'>{rows}</table>"
        self.displayed = {
            "fixed": to_numpy(self.fixed),
            "axes": dict(self.axes_values),
            "landscapes": self.landscapes,
            "index": index,
            "position": values,
            "current": current,
            "best": self.best,
            "optima": self.optima,
            "moved": moved,
        }
