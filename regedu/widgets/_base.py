"""Shared machinery of the interactive widgets.

Every widget is a :class:`FigureWidget`: a few ipywidgets controls and one matplotlib figure that is
rendered with the Agg backend into a PNG shown by an ``ipywidgets.Image``. That works in any
JupyterLab (ipywidgets 8 ships its JupyterLab extension) without ipympl, and the picture is an
ordinary ``<img>`` element that a browser test can screenshot.

A slider move updates the matplotlib artists in place (``set_data``, ``set_segments``,
``set_UVC``) and re-renders; nothing is re-plotted. The same update runs when the state is set
from code with :meth:`FigureWidget.set`, and :attr:`FigureWidget.displayed` holds the arrays and
numbers currently shown, so a widget can be driven and checked without a browser.
"""

from __future__ import annotations

import contextlib
import html
import io
import time
from typing import Any, Iterator, Sequence

import ipywidgets
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from .._checks import check_tensor
from ..utils import cpu_threads
from ..warping import identity_grid


# --------------------------------------------------------------------------------------------
# input conversion
# --------------------------------------------------------------------------------------------

def as_image(fn: str, name: str, x: object, ndim: int = 2) -> torch.Tensor:
    """``x`` as a float tensor ``(1, 1, *spatial)`` on the CPU with ``ndim`` spatial dimensions.

    Accepts a torch tensor or a NumPy array of shape ``spatial``, ``(1, *spatial)`` or
    ``(1, 1, *spatial)``, or an object with an ``image`` attribute (``regedu.data.Volume``).
    """
    if hasattr(x, "image") and not isinstance(x, (torch.Tensor, np.ndarray)):
        x = x.image
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    x = check_tensor(fn, name, x)
    if x.dim() not in (ndim, ndim + 1, ndim + 2) or any(s != 1 for s in x.shape[: x.dim() - ndim]):
        raise ValueError(
            f"{fn}: {name} must be one {ndim}D image of shape {_spatial_name(ndim)}, (1, {_spatial_name(ndim)[1:]} "
            f"or (1, 1, {_spatial_name(ndim)[1:]}, got shape {tuple(x.shape)}"
        )
    if min(x.shape[-ndim:]) < 2:
        raise ValueError(f"{fn}: {name} must be at least 2 voxels along every axis, got shape {tuple(x.shape)}")
    # widgets compute on the CPU: at display sizes a GPU round trip per slider move costs more than it saves
    x = x.detach().to("cpu").reshape(1, 1, *x.shape[-ndim:])
    x = x.float() if not x.is_floating_point() else x
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{fn}: {name} contains NaN or infinite values; expected finite numbers")
    return x


def as_dvf(fn: str, name: str, u: object, spatial: Sequence[int]) -> torch.Tensor:
    """``u`` as a float tensor ``(1, ndim, *spatial)`` (accepts ``(ndim, *spatial)`` too)."""
    if isinstance(u, np.ndarray):
        u = torch.from_numpy(np.ascontiguousarray(u))
    u = check_tensor(fn, name, u)
    ndim = len(spatial)
    if u.dim() == ndim + 1:
        u = u.unsqueeze(0)
    if u.dim() != ndim + 2 or u.shape[0] != 1 or u.shape[1] != ndim:
        raise ValueError(
            f"{fn}: {name} must be one displacement field of shape (1, {ndim}, {_spatial_name(ndim)[1:]} "
            f"or ({ndim}, {_spatial_name(ndim)[1:]}, got shape {tuple(u.shape)}"
        )
    return u.detach().to("cpu", torch.float32)


def _spatial_name(ndim: int) -> str:
    return "(H, W)" if ndim == 2 else "(D, H, W)"


def to_numpy(x: torch.Tensor) -> np.ndarray:
    """A detached float32 NumPy copy of ``x`` on the CPU, with the ``(1, 1)`` (or ``(1,)``) batch axes dropped."""
    a = x.detach().to("cpu", torch.float32).numpy()
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    return a.copy()


def sampling_grid_lines(phi: np.ndarray, spacing: int) -> list[np.ndarray]:
    """Polylines of the deformed grid for plotting: ``phi`` ``(2, H, W)`` holds the positions
    ``phi(x) = x + u(x)`` in voxels (row, column).

    Returns the rows ``0, spacing, ...`` and the columns ``0, spacing, ...`` of ``phi`` as arrays
    ``(n_points, 2)`` in matplotlib's ``(x, y)`` = (column, row) order.
    """
    H, W = phi.shape[1:]
    rows = list(range(0, H, spacing)) + ([H - 1] if (H - 1) % spacing else [])
    cols = list(range(0, W, spacing)) + ([W - 1] if (W - 1) % spacing else [])
    lines = [np.stack([phi[1, i, :], phi[0, i, :]], -1) for i in rows]
    lines += [np.stack([phi[1, :, j], phi[0, :, j]], -1) for j in cols]
    return lines


def identity_positions(shape: Sequence[int]) -> np.ndarray:
    """Voxel coordinates ``(2, H, W)`` (row, column) of every voxel of a 2D grid, as float32 NumPy
    (:func:`regedu.warping.identity_grid`)."""
    return identity_grid(shape, dtype=torch.float32).numpy()


def value_range(*images: np.ndarray) -> tuple[float, float]:
    """Common display range (min, max) of the images, never empty."""
    lo = float(min(np.min(a) for a in images))
    hi = float(max(np.max(a) for a in images))
    return (lo, hi if hi > lo else lo + 1.0)


def matrix_html(A: np.ndarray, digits: int = 3) -> str:
    """An HTML table of a small matrix."""
    rows = "".join(
        "<tr>" + "".join(f"<td style='padding:0 6px;text-align:right'>{v:.{digits}f}</td>" for v in row) + "</tr>"
        for row in A
    )
    return f"<table style='font-family:monospace;border-left:1px solid;border-right:1px solid'>{rows}</table>"


# --------------------------------------------------------------------------------------------
# the widget base class
# --------------------------------------------------------------------------------------------

class FigureWidget:
    """Base class: controls + a matplotlib figure rendered to PNG + a line of HTML text.

    Subclasses create their controls with :meth:`_add_control`, build the figure in ``__init__``
    (using :attr:`figure`), implement :meth:`_redraw` (compute, update the artists, fill
    :attr:`displayed`) and finally call :meth:`_finish`.

    Attributes:
        widget: the ipywidgets box to display (``display(w.widget)``; ``w`` alone also displays it).
        figure: the matplotlib :class:`~matplotlib.figure.Figure` (Agg canvas, not managed by pyplot).
        image: the ``ipywidgets.Image`` that shows the rendered figure.
        info: an ``ipywidgets.HTML`` with the numbers (matrix, similarities, counts).
        displayed: dict of what is shown now: NumPy arrays and numbers.
        timings: seconds spent in the last update: ``compute`` (maths + artists), ``render`` (Agg draw
            and PNG encoding) and ``total``.
    """

    png_compress_level = 1  # fast PNG encoding; the image is small
    #: torch intra-op threads during an update (None: leave torch's setting). An update is a handful of
    #: small tensor operations (128x128): extra threads gain nothing there, and on a busy 2-core machine
    #: their synchronisation made updates 10-20x slower in our measurements.
    threads: int | None = 1

    def __init__(self, figsize: tuple[float, float], dpi: int = 72) -> None:
        self.figure = Figure(figsize=figsize, dpi=dpi)
        FigureCanvasAgg(self.figure)
        # flex-start: shown at its natural size (not stretched to the notebook's width), shrunk if narrower
        self.image = ipywidgets.Image(format="png", layout=ipywidgets.Layout(align_self="flex-start", max_width="100%"))
        self.info = ipywidgets.HTML()
        self.status = ipywidgets.HTML()
        self.displayed: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self._controls: dict[str, ipywidgets.ValueWidget] = {}
        self._hold = False
        self._animated: list = []
        self._background = None
        self.widget: ipywidgets.Widget | None = None

    # ----------------------------------------------------------------------------- building
    def _add_control(self, name: str, control: ipywidgets.ValueWidget) -> ipywidgets.ValueWidget:
        self._controls[name] = control
        control.observe(self._on_change, names="value")
        return control

    def _animate(self, artist):
        """Mark ``artist`` as changing with the controls: it is redrawn on every update over a cached
        rendering of everything else (blitting), which is what keeps an update fast."""
        artist.set_animated(True)
        self._animated.append(artist)
        return artist

    def _invalidate(self) -> None:
        """Forget the cached static background (call when a non-animated artist changes)."""
        self._background = None

    def _finish(self, controls: ipywidgets.Widget, extra: Sequence[ipywidgets.Widget] = (),
                rect: tuple[float, float, float, float] = (0, 0, 1, 1)) -> None:
        """Lay out ``controls`` above the image and the info line, then draw for the first time.

        ``rect`` is the part of the figure the subplots fill (room for figure-level text).
        """
        self.figure.tight_layout(pad=0.6, rect=rect)
        self.widget = ipywidgets.VBox([controls, *extra, self.image, self.info, self.status])
        self.widget.add_class("regedu-widget")
        self.update()

    # ----------------------------------------------------------------------------- state
    @property
    def controls(self) -> dict[str, ipywidgets.ValueWidget]:
        """The control widgets by name (moving one of them, e.g. ``w.controls["rotation"].value = 30``,
        updates the figure exactly as a slider move in the browser does)."""
        return dict(self._controls)

    def state(self) -> dict[str, Any]:
        """The current value of every control, by name (what :meth:`set` accepts)."""
        return {name: c.value for name, c in self._controls.items()}

    def set(self, **values: Any) -> "FigureWidget":
        """Set controls by name (e.g. ``w.set(rotation=30)``) and update once; returns the widget.

        Raises ``ValueError`` for an unknown name or a value outside the control's range/options.
        """
        fn = f"{type(self).__name__}.set"
        for name, value in values.items():
            if name not in self._controls:
                raise ValueError(f"{fn}: unknown control {name!r}; the controls are {', '.join(self._controls)}")
            self._check_value(fn, name, self._controls[name], value)
        with self._holding():
            for name, value in values.items():
                self._controls[name].value = value
        self.update()
        return self

    @staticmethod
    def _check_value(fn: str, name: str, control: ipywidgets.ValueWidget, value: Any) -> None:
        if hasattr(control, "min") and hasattr(control, "max") and not isinstance(control, ipywidgets.Play):
            if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool):
                raise ValueError(f"{fn}: {name} must be a number, got {value!r}")
            if not control.min <= value <= control.max:
                raise ValueError(f"{fn}: {name} must be between {control.min} and {control.max}, got {value}")
            if isinstance(control, (ipywidgets.IntSlider, ipywidgets.BoundedIntText)) and int(value) != value:
                raise ValueError(f"{fn}: {name} must be an integer, got {value}")
        elif hasattr(control, "options"):
            allowed = [o[1] if isinstance(o, tuple) else o for o in control.options]
            if value not in allowed:
                raise ValueError(f"{fn}: {name} must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}")

    @contextlib.contextmanager
    def _holding(self) -> Iterator[None]:
        """Change several controls without an update per change."""
        old, self._hold = self._hold, True
        try:
            yield
        finally:
            self._hold = old

    def _on_change(self, change: dict) -> None:
        if self._hold:
            return
        try:
            self.update()
            self.status.value = ""
        except Exception as err:  # a slider callback must never leave a broken widget in class
            self.status.value = f"<span style='color:#b00'>{html.escape(type(err).__name__)}: {html.escape(str(err))}</span>"

    # ----------------------------------------------------------------------------- drawing
    def update(self) -> None:
        """Recompute what is shown from the controls and re-render the figure."""
        t0 = time.perf_counter()
        with torch.no_grad(), cpu_threads(self.threads):
            self._redraw()
        t1 = time.perf_counter()
        self.image.value = self.render_png()
        t2 = time.perf_counter()
        self.timings = {"compute": t1 - t0, "render": t2 - t1, "total": t2 - t0}

    def _redraw(self) -> None:  # pragma: no cover - implemented by every widget
        raise NotImplementedError

    def render_png(self) -> bytes:
        """Draw the figure with Agg and encode it as PNG."""
        canvas: Any = self.figure.canvas  # an Agg canvas (FigureCanvasAgg in __init__)
        if not self._animated:
            canvas.draw()
        else:
            if self._background is None:
                canvas.draw()  # everything except the animated artists
                self._background = canvas.copy_from_bbox(self.figure.bbox)
            else:
                canvas.restore_region(self._background)
            for artist in self._animated:
                if artist.get_visible():
                    self.figure.draw_artist(artist)
        rgba = np.asarray(canvas.buffer_rgba())
        buf = io.BytesIO()
        Image.fromarray(rgba).save(buf, format="png", compress_level=self.png_compress_level)
        return buf.getvalue()

    @property
    def png(self) -> bytes:
        """The PNG currently shown."""
        return self.image.value

    def close(self) -> None:
        """Close the ipywidgets (front-end views go away) and release the figure."""
        def close_tree(w: ipywidgets.Widget) -> None:
            for child in getattr(w, "children", ()):
                close_tree(child)
            w.close()

        if self.widget is not None:
            close_tree(self.widget)
        self.figure.clear()

    # ----------------------------------------------------------------------------- display
    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def __repr__(self) -> str:
        values = ", ".join(f"{k}={v!r}" for k, v in self.state().items())
        return f"{type(self).__name__}({values})"


_torch_threads = cpu_threads  # old private name, kept for code that imported it


def slider(description: str, value: float, lo: float, hi: float, step: float, integer: bool = False,
           readout_format: str = ".2f", width: str = "380px") -> ipywidgets.ValueWidget:
    """A labelled slider with continuous updates and room for its description."""
    common = dict(value=value, min=lo, max=hi, step=step, description=description, continuous_update=True,
                  style={"description_width": "110px"}, layout=ipywidgets.Layout(width=width))
    if integer:
        return ipywidgets.IntSlider(**common)
    return ipywidgets.FloatSlider(readout_format=readout_format, **common)


def image_axes(ax, title: str) -> None:
    """Image panel: no ticks, a small title."""
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
