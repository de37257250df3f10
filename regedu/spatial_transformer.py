"""Backward-compatible alias of :mod:`regedu.warping` and :mod:`regedu.resampling`.

This module used to hold warping and resampling. Its name collided with
:class:`regedu.learning.SpatialTransformer` (what the lecture means by the term), so the code now lives
in :mod:`regedu.warping` (``warp``, ``warp_labels``, ``affine_warp``, ``affine_to_dvf``,
``identity_grid``, the voxel <-> normalised coordinate conversion) and :mod:`regedu.resampling`
(``resize``, ``resize_dvf``, ``image_pyramid``, ``coarse_shape``). The old import path keeps working
for notebooks that use it; new code should import from the new modules (or from ``regedu``).
"""

from .resampling import coarse_shape, image_pyramid, resize, resize_dvf
from .warping import (
    MODES,
    PADDING,
    _DvfToGrid,
    _grid,
    _grid_mode,
    _normalised_axes,
    affine_to_dvf,
    affine_warp,
    dvf_to_grid,
    identity_grid,
    warp,
    warp_labels,
)

__all__ = [
    "MODES", "PADDING", "affine_to_dvf", "affine_warp", "coarse_shape", "dvf_to_grid", "identity_grid", "image_pyramid",
    "resize", "resize_dvf", "warp", "warp_labels", "_DvfToGrid", "_grid", "_grid_mode", "_normalised_axes",
]
