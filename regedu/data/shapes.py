"""Toy shapes with exact labels (a circle, a square, a "C") for first demos and fast tests.

Each shape is drawn analytically, so its label map is exact: label 1 inside the shape, 0 outside.
The image is the label map, optionally with smooth (anti-aliased) edges, a smooth blur, and noise.
The "C" (an annulus with a gap on the right) is the classic test for deformable registration:
the moving circle must be pulled into the gap, which needs large, non-affine deformations.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .._checks import check_choice
from ..filters import gaussian_blur

SHAPES = ("circle", "square", "c")


def _coords(size: tuple[int, int], center: Sequence[float] | None, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    H, W = size
    cy, cx = ((H - 1) / 2.0, (W - 1) / 2.0) if center is None else (float(center[0]), float(center[1]))
    y = torch.arange(H, dtype=dtype, device=device).reshape(H, 1) - cy
    x = torch.arange(W, dtype=dtype, device=device).reshape(1, W) - cx
    return y.expand(H, W), x.expand(H, W)


def make_shape(
    kind: str = "circle",
    size: int | Sequence[int] = 64,
    radius: float | None = None,
    center: Sequence[float] | None = None,
    thickness: float | None = None,
    smooth: float = 0.0,
    noise: float = 0.0,
    seed: int | None = None,
    device=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw a toy shape.

    Args:
        kind: ``"circle"`` (disc of ``radius``), ``"square"`` (side ``2 * radius``, axis-aligned) or
            ``"c"`` (annulus of outer ``radius`` and width ``thickness`` with an opening to the right).
        size: image size ``H = W`` or ``(H, W)`` in pixels.
        radius: in pixels (default ``0.3 * min(H, W)``).
        center: ``(row, col)`` of the centre in pixels (default: the image centre).
        thickness: ring width of the "C" in pixels (default ``0.4 * radius``).
        smooth: standard deviation (pixels) of a Gaussian blur of the image (labels stay exact).
        noise: standard deviation of additive Gaussian noise (seeded by ``seed``).

    Returns:
        ``(image, labels)``: ``(1, 1, H, W)`` float32 in ``[0, 1]`` (before noise) and ``(1, 1, H, W)``
        int64 in ``{0, 1}``.
    """
    check_choice("make_shape", "kind", kind, SHAPES)
    H, W = (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))
    if H < 4 or W < 4:
        raise ValueError(f"make_shape: size must be at least 4 pixels per axis, got {(H, W)}")
    r = 0.3 * min(H, W) if radius is None else float(radius)
    if r <= 0:
        raise ValueError(f"make_shape: radius must be positive, got {radius}")
    y, x = _coords((H, W), center, torch.float32, device)
    if kind == "circle":
        inside = y * y + x * x <= r * r
    elif kind == "square":
        inside = (y.abs() <= r) & (x.abs() <= r)
    else:
        t = 0.4 * r if thickness is None else float(thickness)
        if not 0 < t < r:
            raise ValueError(f"make_shape: thickness must be in (0, radius={r}), got {thickness}")
        d2 = y * y + x * x
        ring = (d2 <= r * r) & (d2 >= (r - t) ** 2)
        gap = (x > 0) & (y.abs() < 0.35 * r)
        inside = ring & ~gap
    labels = inside.long()[None, None]
    image = inside.float()[None, None]
    if smooth > 0:
        image = gaussian_blur(image, smooth)
    if noise > 0:
        g = torch.Generator().manual_seed(0 if seed is None else int(seed))
        image = image + noise * torch.randn(image.shape, generator=g).to(image.device)
    return image, labels


__all__ = ["SHAPES", "make_shape"]
