r"""Affine explorer: move sliders for rotation, translation, scaling and shear and watch the image,
the sampling grid, the matrix and the similarity to a fixed image change.

The transform is the one of :func:`regedu.transforms.affine_matrix`, about the image centre ``c``:

.. math:: x' = R(\phi)\,H(h)\,S(s_0, s_1)\,(x - c) + c + t,

with :math:`H = \begin{bmatrix} 1 & h \\ 0 & 1 \end{bmatrix}` (the lecture's shear with
:math:`h_y = 0`, which keeps the parameters unique). The matrix maps a fixed-image voxel to the
moving-image voxel sampled there (pull-back): ``moved(x) = moving(A x)``.
"""

from __future__ import annotations

import math

import ipywidgets
import numpy as np
import torch
from matplotlib.collections import LineCollection

from .. import similarity
from .._checks import check_choice
from ..warping import PADDING, affine_warp
from ..transforms import affine_matrix, image_center
from ._base import (
    FigureWidget,
    as_image,
    identity_positions,
    image_axes,
    matrix_html,
    sampling_grid_lines,
    slider,
    to_numpy,
    value_range,
)


class AffineExplorer(FigureWidget):
    """Interactive 2D affine transform of ``moving``, compared with ``fixed``.

    Args:
        fixed: the fixed image, ``(H, W)``, ``(1, H, W)`` or ``(1, 1, H, W)`` (tensor or array).
        moving: the image to transform (same shape); default: ``fixed`` itself.
        grid_spacing: distance between the lines of the drawn sampling grid, in voxels.
        bins: histogram bins of the mutual information.
        padding_mode: value outside the moving image (see :func:`regedu.affine_warp`), default ``"zeros"``.
        dpi: resolution of the rendered figure.

    Controls (names for :meth:`set`): ``rotation`` (degrees), ``t0`` / ``t1`` (translation along
    tensor axis 0 = rows / axis 1 = columns, voxels), ``s0`` / ``s1`` (scaling), ``shear`` (``h``).

    :attr:`displayed` holds ``fixed``, ``moving``, ``moved`` (``affine_warp(moving, matrix)``),
    ``difference`` (``fixed - moved``), ``phi`` (``(2, H, W)`` sampling positions ``A x`` drawn as the
    grid on the moving image), ``matrix`` (3x3) and the numbers ``ssd``, ``ncc``, ``mi``.

    Example::

        w = AffineExplorer(fixed, moving)   # the last expression of a cell displays it
        w.set(rotation=30, t1=5)
        w.displayed["ncc"]
    """

    def __init__(
        self,
        fixed: object,
        moving: object | None = None,
        *,
        grid_spacing: int = 8,
        bins: int = 32,
        padding_mode: str = "zeros",
        dpi: int = 72,
    ) -> None:
        fn = "AffineExplorer"
        self.fixed = as_image(fn, "fixed", fixed)
        self.moving = self.fixed.clone() if moving is None else as_image(fn, "moving", moving)
        if self.moving.shape != self.fixed.shape:
            raise ValueError(
                f"{fn}: fixed and moving must have the same shape, got {tuple(self.fixed.shape[2:])} and {tuple(self.moving.shape[2:])}"
            )
        if grid_spacing < 1:
            raise ValueError(f"{fn}: grid_spacing must be a positive number of voxels, got {grid_spacing}")
        self.padding_mode = check_choice(fn, "padding_mode", padding_mode, PADDING)
        self.bins = int(bins)
        self.grid_spacing = int(grid_spacing)
        H, W = self.shape = tuple(self.fixed.shape[2:])
        self.center = image_center(self.shape)
        super().__init__(figsize=(12.0, 3.3), dpi=dpi)

        ctl = self._add_control
        controls = ipywidgets.HBox([
            ipywidgets.VBox([
                ctl("rotation", slider("rotation (°)", 0.0, -180.0, 180.0, 1.0, readout_format=".0f")),
                ctl("t0", slider("t₀ (rows, vox)", 0.0, -H / 2, H / 2, 0.5, readout_format=".1f")),
                ctl("t1", slider("t₁ (cols, vox)", 0.0, -W / 2, W / 2, 0.5, readout_format=".1f")),
            ]),
            ipywidgets.VBox([
                ctl("s0", slider("s₀ (rows)", 1.0, 0.5, 2.0, 0.01)),
                ctl("s1", slider("s₁ (cols)", 1.0, 0.5, 2.0, 0.01)),
                ctl("shear", slider("shear h", 0.0, -1.0, 1.0, 0.01)),
            ]),
        ])

        f, m = to_numpy(self.fixed), to_numpy(self.moving)
        lo, hi = value_range(f, m)
        axes = self.figure.subplots(1, 4)
        kw = dict(cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        axes[0].imshow(f, **kw)
        image_axes(axes[0], "fixed F")
        axes[1].imshow(m, **kw)
        image_axes(axes[1], "moving M with sampling grid φ(x) = Ax")
        self._grid = self._animate(LineCollection([], colors="#ffcc00", linewidths=0.8))
        axes[1].add_collection(self._grid)
        axes[1].set_xlim(-0.5, W - 0.5)
        axes[1].set_ylim(H - 0.5, -0.5)
        self._moved = self._animate(axes[2].imshow(m, **kw))
        image_axes(axes[2], "moved M∘φ")
        d = hi - lo
        self._diff = self._animate(axes[3].imshow(f - m, cmap="RdBu_r", vmin=-d, vmax=d, interpolation="nearest"))
        image_axes(axes[3], "difference F − M∘φ")
        self._identity = identity_positions(self.shape)
        self._finish(controls)

    # ------------------------------------------------------------------------------------
    def params(self) -> torch.Tensor:
        """The parameter vector of :func:`regedu.transforms.affine_matrix`: (angle rad, s0, s1, shear, t0, t1)."""
        s = self.state()
        return torch.tensor(
            [math.radians(s["rotation"]), s["s0"], s["s1"], s["shear"], s["t0"], s["t1"]], dtype=self.fixed.dtype
        )

    @property
    def matrix(self) -> torch.Tensor:
        """The current homogeneous matrix ``(3, 3)`` (fixed voxel -> moving voxel)."""
        return affine_matrix(self.params(), center=self.center.to(self.fixed.dtype))

    def _redraw(self) -> None:
        A = self.matrix
        moved = affine_warp(self.moving, A, padding_mode=self.padding_mode)
        sims = {
            "ssd": float(similarity.ssd(self.fixed, moved)),
            "ncc": float(similarity.ncc(self.fixed, moved)),
            "mi": float(similarity.mutual_information(self.fixed, moved, bins=self.bins)),
        }
        A_np = A.detach().cpu().numpy().astype(np.float64)
        x = self._identity.reshape(2, -1)
        phi = (A_np[:2, :2] @ x + A_np[:2, 2:]).reshape(2, *self.shape).astype(np.float32)
        moved_np = to_numpy(moved)
        diff = to_numpy(self.fixed) - moved_np

        self._moved.set_data(moved_np)
        self._diff.set_data(diff)
        self._grid.set_segments(sampling_grid_lines(phi, self.grid_spacing))
        self.info.value = (
            "<div style='display:flex;gap:24px;align-items:center'>"
            f"<div>A (fixed voxel → moving voxel, (row, col, 1)):</div>{matrix_html(A_np)}"
            f"<div>SSD = {sims['ssd']:.4g} &nbsp; NCC = {sims['ncc']:.4f} &nbsp; MI = {sims['mi']:.4f} nats</div></div>"
        )
        self.displayed = {
            "fixed": to_numpy(self.fixed),
            "moving": to_numpy(self.moving),
            "moved": moved_np,
            "difference": diff,
            "phi": phi,
            "matrix": A_np,
            **sims,
        }
