r"""DVF explorer: a random smooth displacement field, its deformed grid, arrows, warped image and
Jacobian determinant, with folding highlighted and counted.

The deformation is :math:`\varphi = \mathrm{Id} + u`; the image is warped by pulling back,
``warped(x) = image(x + u(x))``. Where :math:`\det J_\varphi(x) = \det(I + \nabla u(x)) \le 0` the
deformation folds (is not invertible); the count shown is
``regedu.folding_fraction(u) * N`` with ``N`` the number of voxels.

Two field models (:mod:`regedu.fields`):

* ``"gaussian"``: Gaussian-smoothed white noise (:func:`regedu.random_dvf`), smoothness = the
  Gaussian's standard deviation in voxels;
* ``"bspline"``: random displacements of a cubic B-spline control grid (:func:`regedu.random_bspline_dvf`,
  free-form deformation, Rueckert et al., 1999), smoothness = the control-point spacing in voxels.

Both are scaled so that the largest displacement equals the amplitude (in voxels).
"""

from __future__ import annotations

import ipywidgets
import numpy as np
import torch
from matplotlib.collections import LineCollection

from .._checks import check_choice
from ..fields import bspline_grid_shape, folding_fraction, jacobian_determinant, random_bspline_dvf, random_dvf
from ..warping import warp
from ._base import FigureWidget, as_image, identity_positions, image_axes, sampling_grid_lines, slider, to_numpy, value_range

MODELS = ("gaussian", "bspline")


class DVFExplorer(FigureWidget):
    """Interactive random displacement field on a 2D image.

    Args:
        image: the image to deform, ``(H, W)`` (or ``(1, 1, H, W)``, tensor or array).
        model: ``"gaussian"`` (smoothed noise) or ``"bspline"`` (B-spline control grid).
        amplitude: largest displacement, voxels.
        smoothness: Gaussian standard deviation, voxels (``"gaussian"`` model).
        spacing: control-point spacing, voxels (``"bspline"`` model).
        seed: random seed of the field.
        grid_spacing: distance between drawn grid lines, voxels.
        quiver_step: one arrow every ``quiver_step`` voxels.

    Controls (names for :meth:`set`): ``model``, ``amplitude``, ``smoothness``, ``spacing``, ``seed``.

    :attr:`displayed`: ``image``, ``dvf`` ``(2, H, W)``, ``phi`` (``x + u(x)``, the drawn grid),
    ``warped``, ``jacobian`` (``det J``), ``folding`` (bool mask ``det J <= 0``), ``folding_count``
    (int), ``folding_fraction``, ``control_points`` (``(n, 2)`` row/column positions, B-spline only),
    ``quiver`` (positions and arrows drawn).
    """

    def __init__(
        self,
        image: object,
        *,
        model: str = "gaussian",
        amplitude: float = 4.0,
        smoothness: float = 8.0,
        spacing: int = 16,
        seed: int = 0,
        grid_spacing: int = 6,
        quiver_step: int = 8,
        dpi: int = 72,
    ) -> None:
        fn = "DVFExplorer"
        self.moving = as_image(fn, "image", image)
        check_choice(fn, "model", model, MODELS)
        self.shape = H, W = tuple(self.moving.shape[2:])
        if grid_spacing < 1 or quiver_step < 1:
            raise ValueError(f"{fn}: grid_spacing and quiver_step must be positive, got {grid_spacing} and {quiver_step}")
        self.grid_spacing, self.quiver_step = int(grid_spacing), int(quiver_step)
        max_spacing = max(4, (min(H, W) - 1) // 4 * 4)
        super().__init__(figsize=(12.0, 3.4), dpi=dpi)
        ctl = self._add_control
        model_ctl = ctl("model", ipywidgets.Dropdown(
            options=[("smooth noise (Gaussian)", "gaussian"), ("B-spline control grid", "bspline")], value=model,
            description="model", style={"description_width": "110px"}, layout=ipywidgets.Layout(width="380px")))
        controls = ipywidgets.HBox([
            ipywidgets.VBox([
                model_ctl,
                ctl("amplitude", slider("amplitude (vox)", amplitude, 0.0, max(20.0, amplitude), 0.25)),
                ctl("seed", slider("seed", seed, 0, max(50, seed), 1, integer=True)),
            ]),
            ipywidgets.VBox([
                ctl("smoothness", slider("smoothness σ (vox)", smoothness, 1.0, max(24.0, smoothness), 0.5, readout_format=".1f")),
                ctl("spacing", slider("control spacing", int(spacing), 4, max(max_spacing, int(spacing)), 2, integer=True)),
            ]),
        ])
        self._cache: dict = {}
        self._identity = identity_positions(self.shape)
        img = to_numpy(self.moving)
        lo, hi = value_range(img)
        kw = dict(cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        axes = self.figure.subplots(1, 4)
        axes[0].imshow(img, **kw)
        image_axes(axes[0], "grid φ(x) = x + u(x) on the image")
        self._grid = self._animate(LineCollection([], colors="#ffcc00", linewidths=0.7))
        axes[0].add_collection(self._grid)
        self._mag = self._animate(axes[1].imshow(np.zeros(self.shape), cmap="magma", vmin=0, vmax=1, interpolation="nearest"))
        image_axes(axes[1], "displacement u (arrows) and |u|")
        qs = self.quiver_step
        self._qy, self._qx = np.meshgrid(np.arange(qs // 2, H, qs), np.arange(qs // 2, W, qs), indexing="ij")
        self._quiver = self._animate(axes[1].quiver(
            self._qx, self._qy, np.zeros(self._qx.shape), np.zeros(self._qx.shape),
            angles="xy", scale_units="xy", scale=1.0, color="#40c0ff", width=0.006))
        self._ctrl = self._animate(axes[1].plot([], [], "+", color="w", ms=5, mew=1)[0])
        self._warped = self._animate(axes[2].imshow(img, **kw))
        image_axes(axes[2], "warped image(x + u(x))")
        self._jac = self._animate(axes[3].imshow(np.ones(self.shape), cmap="RdBu_r", vmin=0.0, vmax=2.0, interpolation="nearest"))
        self._fold = self._animate(axes[3].imshow(np.zeros((*self.shape, 4)), interpolation="nearest"))
        self._jac_title = self._animate(axes[3].set_title("det J, folding: 0 voxels (0.00 %)", fontsize=10))
        axes[3].set_axis_off()
        self._axes_limits(axes)
        self._finish(controls)

    def _axes_limits(self, axes) -> None:
        H, W = self.shape
        for ax in axes:
            ax.set_xlim(-0.5, W - 0.5)
            ax.set_ylim(H - 0.5, -0.5)

    # ------------------------------------------------------------------------------------
    def field(self) -> torch.Tensor:
        """The current displacement field ``(1, 2, H, W)`` in voxels (the same as calling
        :func:`regedu.random_dvf` / :func:`regedu.random_bspline_dvf` with the current settings)."""
        s = self.state()
        key = (s["model"], s["smoothness"] if s["model"] == "gaussian" else s["spacing"], s["seed"])
        if key not in self._cache:
            if len(self._cache) > 16:
                self._cache.clear()
            # unit amplitude: both generators scale linearly with max_displacement
            seed, dtype, device = int(s["seed"]), self.moving.dtype, self.moving.device
            if s["model"] == "gaussian":
                self._cache[key] = random_dvf(self.shape, max_displacement=1.0, smoothness=float(s["smoothness"]), seed=seed,
                                              dtype=dtype, device=device)
            else:
                self._cache[key] = random_bspline_dvf(self.shape, spacing=float(s["spacing"]), max_displacement=1.0, seed=seed,
                                                      dtype=dtype, device=device)
        return self._cache[key] * float(s["amplitude"])

    def _redraw(self) -> None:
        s = self.state()
        bspline = s["model"] == "bspline"
        self._controls["smoothness"].disabled = bspline
        self._controls["spacing"].disabled = not bspline
        u = self.field()
        warped = warp(self.moving, u)
        det = jacobian_determinant(u)
        frac = float(folding_fraction(u)[0])
        u_np = to_numpy(u)
        det_np = to_numpy(det)
        fold = det_np <= 0
        count = int(fold.sum())
        phi = self._identity + u_np
        mag = np.sqrt((u_np ** 2).sum(0))

        self._grid.set_segments(sampling_grid_lines(phi, self.grid_spacing))
        self._mag.set_data(mag)
        self._mag.set_clim(0, max(float(mag.max()), 1e-6))
        qu, qv = u_np[1][self._qy, self._qx], u_np[0][self._qy, self._qx]
        self._quiver.set_UVC(qu, qv)
        ctrl = np.zeros((0, 2))
        if bspline:
            sp = float(s["spacing"])
            grid = bspline_grid_shape(self.shape, sp)
            ctrl = np.stack(np.meshgrid(*[(np.arange(n) - 1) * sp for n in grid], indexing="ij"), -1).reshape(-1, 2)
        self._ctrl.set_data(ctrl[:, 1], ctrl[:, 0])
        self._warped.set_data(to_numpy(warped))
        self._jac.set_data(det_np)
        overlay = np.zeros((*self.shape, 4), dtype=np.float32)
        overlay[fold] = (1.0, 0.9, 0.0, 1.0)
        self._fold.set_data(overlay)
        n = det_np.size
        self._jac_title.set_text(f"det J, folding: {count} voxels ({100 * count / n:.2f} %)")
        self.info.value = (
            f"max |u| = {mag.max():.2f} voxels &nbsp; min det J = {det_np.min():.3f} &nbsp; max det J = {det_np.max():.3f}"
            f" &nbsp; <b>folding (det J ≤ 0, yellow): {count} of {n} voxels = {100 * frac:.2f} %</b>"
            " &nbsp; (det J: blue &lt; 1 compression, red &gt; 1 expansion)"
        )
        self.displayed = {
            "image": to_numpy(self.moving),
            "dvf": u_np,
            "phi": phi,
            "warped": to_numpy(warped),
            "jacobian": det_np,
            "folding": fold,
            "folding_count": count,
            "folding_fraction": frac,
            "control_points": ctrl,
            "quiver": {"x": self._qx, "y": self._qy, "u": qu, "v": qv},
        }
