r"""Plotting helpers for the notebooks: how images, displacement fields and label maps are shown.

One place for the figures every lecture draws, so that they all follow the same rules:

* an image ``(B, C, *spatial)`` tensor (2D or 3D) or a 2D array is shown as its first batch item and
  channel; a 3D volume as its middle slice along the first spatial axis (:func:`view`);
* a displacement field ``(B, ndim, *spatial)`` (voxels, channel ``k`` along tensor axis ``k``) is shown
  by its in-plane components (rows, columns) on the same slice (:func:`view_dvf`), as arrows
  (:func:`arrows`, with a scale key) or as the deformed grid :math:`\varphi(x) = x + u(x)` (:func:`grid`);
* every panel that shows a **signed** quantity (a difference image, a displacement component, a
  velocity) or a **scaled** one (an error in voxels, a Jacobian determinant, a variance) gets a colour
  bar; a signed one a symmetric diverging map centred at zero;
* every **label map** gets a legend naming its labels (the brain's tissues by default).

Functions: :func:`view`, :func:`view_dvf`, :func:`imshow`, :func:`labelshow`, :func:`contours`,
:func:`arrows`, :func:`grid`, :func:`panels`, :func:`show`, and :func:`as_batch` (a dataset item as a
batch of one, the notebooks' usual first step).

Example::

    from regedu import plot
    plot.show([fixed, moved, fixed - moved, labels], ["fixed", "moved", "fixed - moved", "labels"],
              kinds=["image", "image", "signed", "labels"])
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .data.brain import LABEL_NAMES

KINDS = ("image", "scalar", "signed", "labels")
LABEL_COLOURS = ["#000000", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf"]  # label 0 (background) black, then matplotlib's tab10


def _array(fn: str, name: str, x: Any) -> np.ndarray:
    if torch.is_tensor(x):
        return x.detach().float().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"{fn}: {name} must be a torch.Tensor or a NumPy array, got {type(x).__name__}")


def view(x: torch.Tensor | np.ndarray, channel: int = 0, index: int | None = None) -> np.ndarray:
    """The 2D array to display for an image.

    Args:
        x: a tensor ``(B, C, H, W)`` or ``(B, C, D, H, W)`` (batch item 0 and ``channel`` are shown), or
            an array / tensor that is already 2D ``(H, W)``.
        channel: which channel of a batched tensor.
        index: the slice along the first spatial axis of a 3D volume (default: the middle one).

    Returns:
        A float array ``(H, W)``.
    """
    a = _array("view", "x", x)
    if a.ndim == 2:
        return a
    if a.ndim not in (4, 5):
        raise ValueError(f"view: x must be 2D (H, W), (B, C, H, W) or (B, C, D, H, W), got shape {tuple(a.shape)}")
    if not 0 <= channel < a.shape[1]:
        raise ValueError(f"view: channel must be in [0, {a.shape[1]}), got {channel}")
    a = a[0, channel]
    if a.ndim == 3:
        a = a[a.shape[0] // 2 if index is None else index]
    return a


def view_dvf(u: torch.Tensor | np.ndarray, index: int | None = None) -> np.ndarray:
    """The in-plane displacement on the displayed slice: ``(2, H, W)``, (rows, columns), in voxels.

    ``u`` is ``(B, 2, H, W)`` or ``(B, 3, D, H, W)``; for 3D the slice ``index`` along the first axis
    (default: the middle one) and its components along the two in-plane axes (channels 1 and 2).
    """
    a = _array("view_dvf", "u", u)
    if a.ndim not in (4, 5) or a.shape[1] != a.ndim - 2:
        raise ValueError(f"view_dvf: u must be (B, 2, H, W) or (B, 3, D, H, W) (voxel displacements), got shape {tuple(a.shape)}")
    a = a[0]
    if a.ndim == 4:
        a = a[1:, a.shape[1] // 2 if index is None else index]
    return a


def _colorbar(ax: Axes, mappable: Any, unit: str | None) -> None:
    cb = ax.figure.colorbar(mappable, ax=ax, fraction=0.046, pad=0.03)
    if unit:
        cb.set_label(unit, fontsize=8)
    cb.ax.tick_params(labelsize=7)


def imshow(ax: Axes, x: Any, title: str | None = None, kind: str = "image", unit: str | None = None,
           cmap: str | None = None, vmin: float | None = None, vmax: float | None = None, colorbar: bool | None = None,
           **kwargs: Any) -> Any:
    """Draw one image panel on ``ax`` (axis ticks off).

    ``kind``:
        ``"image"`` grey values, no colour bar (intensities are not read off a picture);
        ``"scalar"`` a scaled quantity (an error in voxels, det J, a variance): ``magma`` and a colour bar;
        ``"signed"`` a signed quantity (a difference image, a displacement component): ``RdBu_r`` with limits
        symmetric about zero (white = 0) and a colour bar;
        ``"labels"`` a label map: see :func:`labelshow`.

    ``unit`` labels the colour bar; ``colorbar`` overrides the default of the kind. Returns the image artist.
    """
    if kind not in KINDS:
        raise ValueError(f"imshow: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "labels":
        return labelshow(ax, x, title=title)
    a = view(x)
    if kind == "signed":
        m = float(np.nanmax(np.abs(a))) if vmin is None and vmax is None else max(abs(vmin or 0.0), abs(vmax or 0.0))
        m = m if m > 0 else 1.0
        vmin, vmax = -m, m
    default_cmap = {"image": "gray", "scalar": "magma", "signed": "RdBu_r"}[kind]
    im = ax.imshow(a, cmap=cmap or default_cmap, vmin=vmin, vmax=vmax, **kwargs)
    if title is not None:
        ax.set_title(title, fontsize=9)
    ax.axis("off")
    if colorbar if colorbar is not None else kind != "image":
        _colorbar(ax, im, unit)
    return im


def _label_names(values: Sequence[int], names: Mapping[int, str] | None) -> dict[int, str]:
    names = LABEL_NAMES if names is None else names
    return {v: names.get(v, f"label {v}") for v in values}


def labelshow(ax: Axes, labels: Any, title: str | None = None, names: Mapping[int, str] | None = None,
              legend: bool = True, background: bool = False) -> Any:
    """Draw an integer label map with one colour per label and a legend naming them.

    ``names`` maps label values to names (default: the brain's tissues, :data:`regedu.data.LABEL_NAMES`:
    0 background, 1 CSF, 2 grey matter, 3 white matter); ``background=True`` also lists label 0.
    Returns the image artist.
    """
    a = np.rint(view(labels)).astype(int)
    if a.min() < 0 or a.max() >= len(LABEL_COLOURS):
        raise ValueError(f"labelshow: labels must be integers in [0, {len(LABEL_COLOURS)}), got values in [{a.min()}, {a.max()}]")
    n = len(LABEL_COLOURS)
    im = ax.imshow(a, cmap=ListedColormap(LABEL_COLOURS), norm=BoundaryNorm(np.arange(n + 1) - 0.5, n), interpolation="nearest")
    if title is not None:
        ax.set_title(title, fontsize=9)
    ax.axis("off")
    if legend:
        present = [int(v) for v in np.unique(a) if background or v != 0]
        handles = [Patch(color=LABEL_COLOURS[v], label=name) for v, name in _label_names(present, names).items()]
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, borderaxespad=0.2)
    return im


def contours(ax: Axes, labels: Any, names: Mapping[int, str] | None = None, legend: bool = True,
             linewidths: float = 0.8, linestyle: str = "-") -> None:
    """Outline each label (> 0) of a label map on ``ax`` in its label colour, with a legend naming them."""
    a = np.rint(view(labels)).astype(int)
    values = [int(v) for v in np.unique(a) if v != 0]
    for v in values:
        ax.contour((a == v).astype(float), levels=[0.5], colors=[LABEL_COLOURS[v % len(LABEL_COLOURS)]],
                   linewidths=linewidths, linestyles=linestyle)
    if legend and values:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=LABEL_COLOURS[v % len(LABEL_COLOURS)], ls=linestyle, label=name)
                   for v, name in _label_names(values, names).items()]
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, borderaxespad=0.2)


def arrows(ax: Axes, u: Any, image: Any = None, step: int = 4, color: str = "r", gain: float = 1.0,
           key: float | None = None, title: str | None = None) -> Any:
    r"""The displacement :math:`u(x)` as arrows from every ``step``-th voxel, on ``image`` if given.

    Arrows point from :math:`x` to :math:`x + u(x)` (where the moving image is sampled, pull-back),
    drawn ``gain`` times their true length. A key arrow of ``key`` voxels (default: about the largest
    displacement shown, rounded) states the scale. Returns the quiver artist.
    """
    d = view_dvf(u)
    if step < 1 or gain <= 0:
        raise ValueError(f"arrows: step must be >= 1 and gain > 0, got step={step}, gain={gain}")
    if image is not None:
        ax.imshow(view(image), cmap="gray")
    yy, xx = np.mgrid[0:d.shape[1]:step, 0:d.shape[2]:step]
    q = ax.quiver(xx, yy, d[1, ::step, ::step], d[0, ::step, ::step], color=color, angles="xy", scale_units="xy",
                  scale=1 / gain)
    if key is None:
        biggest = float(np.sqrt((d ** 2).sum(0)).max())
        key = float(max(1, round(biggest))) if biggest >= 1 else round(max(biggest, 0.1), 1)
    label = f"{key:g} voxel{'s' if key != 1 else ''}" + (f" (drawn x{gain:g})" if gain != 1 else "")
    ax.quiverkey(q, 0.98, -0.04, key, label, labelpos="W", coordinates="axes", fontproperties={"size": 7})
    ax.set_xlim(-0.5, d.shape[2] - 0.5)
    ax.set_ylim(d.shape[1] - 0.5, -0.5)
    ax.axis("off")
    if title is not None:
        ax.set_title(title, fontsize=9)
    return q


def grid(ax: Axes, u: Any, step: int = 6, image: Any = None, color: str = "y", **kwargs: Any) -> None:
    r"""The deformed grid :math:`\varphi(x) = x + u(x)`: rows and columns of the fixed grid drawn where
    :math:`\varphi` maps them (in the moving image's frame), on ``image`` if given."""
    d = view_dvf(u)
    h, w = d.shape[1:]
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    py, px = yy + d[0], xx + d[1]
    if image is not None:
        ax.imshow(view(image), cmap="gray")
    kw = {"lw": 0.6, "color": color, **kwargs}
    for i in range(0, h, step):
        ax.plot(px[i, :], py[i, :], **kw)
    for j in range(0, w, step):
        ax.plot(px[:, j], py[:, j], **kw)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.axis("off")


def panels(images: Sequence[Any], titles: Sequence[str] | None = None, kinds: str | Sequence[str] = "image",
           units: str | Sequence[str | None] | None = None, size: float = 3.0, **kwargs: Any) -> Figure:
    """A row of image panels (see :func:`imshow`): one per entry of ``images``.

    ``kinds`` and ``units``: one for all panels or one per panel. Extra keyword arguments (``vmin``,
    ``vmax``, ``cmap``) go to every non-label panel. Returns the figure (not shown: see :func:`show`).
    """
    n = len(images)
    if n == 0:
        raise ValueError("panels: images must contain at least one image")
    titles_: list[str | None] = list(titles) if titles is not None else [None] * n
    kinds = [kinds] * n if isinstance(kinds, str) else list(kinds)
    units = [units] * n if units is None or isinstance(units, str) else list(units)
    for name, seq in (("titles", titles_), ("kinds", kinds), ("units", units)):
        if len(seq) != n:
            raise ValueError(f"panels: {name} must have one entry per image ({n}), got {len(seq)}")
    extra = sum(k != "image" for k in kinds) * 0.45
    fig, axes = plt.subplots(1, n, figsize=(size * n + extra, size), squeeze=False)
    for ax, im, title, kind, unit in zip(axes[0], images, titles_, kinds, units):
        if kind == "labels":
            labelshow(ax, im, title=title)
        else:
            imshow(ax, im, title=title, kind=kind, unit=unit, **kwargs)
    fig.tight_layout()
    return fig


def show(images: Sequence[Any], titles: Sequence[str] | None = None, kinds: str | Sequence[str] = "image",
         units: str | Sequence[str | None] | None = None, size: float = 3.0, **kwargs: Any) -> None:
    """Draw :func:`panels` and display them (``plt.show()``)."""
    panels(images, titles, kinds, units, size, **kwargs)
    plt.show()


def as_batch(item: Mapping[str, Any], device: str | torch.device | None = None) -> dict[str, Any]:
    """A dataset item (a dict of tensors without batch axis, e.g. from :class:`regedu.data.PairDataset`)
    as a batch of one: every tensor gets a leading axis of size 1 and moves to ``device`` (if given)."""
    if not isinstance(item, Mapping):
        raise TypeError(f"as_batch: item must be a dict of tensors (a dataset item), got {type(item).__name__}")
    out = {}
    for k, v in item.items():
        if torch.is_tensor(v):
            v = v[None]
            out[k] = v.to(device) if device is not None else v
        else:
            out[k] = v
    return out


__all__ = ["view", "view_dvf", "imshow", "labelshow", "contours", "arrows", "grid", "panels", "show", "as_batch", "KINDS",
           "LABEL_COLOURS"]
