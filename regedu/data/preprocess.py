r"""Preprocessing of real scans as an inspectable pipeline of small steps, each usable (and tested) on its own.

Scans from different sites differ in orientation, voxel size, field of view and intensity scale;
registration (and every network) assumes they do not. The usual recipe, in order:

1. :func:`reorient` to the closest canonical orientation (RAS+: array axes run to the subject's
   Right, Anterior, Superior), so that "axis 0" means the same thing in every scan;
2. :func:`resample` to a target voxel spacing in mm (linear for intensities, nearest neighbour for
   labels), so that a voxel is the same size everywhere (or :func:`resample_to` another scan's grid,
   using both world affines);
3. :func:`crop_or_pad` to a fixed shape about the centre (networks need one input size);
4. :func:`normalise` intensities: clip to percentiles (robust to a few hot voxels), then z-score
   (zero mean, unit standard deviation inside the foreground) or rescale to ``[0, 1]``;
5. optionally :func:`align_to` a template by affine registration (:func:`regedu.register` with
   ``transform="affine"``), the pre-alignment that Learn2Reg's data already has.

Every step takes a :class:`~regedu.data.Volume` and returns a new one (the input is not changed),
with ``affine``, ``spacing``, ``labels`` and landmarks (``points``, voxel coordinates) updated so
that world coordinates stay correct. :class:`Pipeline` chains steps and records what each did.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import torch

from .volume import Volume, fit_volume


def _matrix3(M: torch.Tensor, n: int) -> torch.Tensor:
    """Embed an (n+1) x (n+1) voxel matrix into 4 x 4 (a 2D slice keeps its third, unit axis)."""
    M3 = torch.eye(4, dtype=torch.float64)
    M3[:n, :n] = M[:n, :n].double()
    M3[:n, 3] = M[:n, n].double()
    return M3


def _map_points(points: torch.Tensor | None, M: torch.Tensor) -> torch.Tensor | None:
    """Points of the old grid -> the new grid, where ``M`` maps new voxels to old voxels."""
    if points is None:
        return None
    Minv = torch.linalg.inv(M.double())
    n = M.shape[0] - 1
    return (points.double() @ Minv[:n, :n].T + Minv[:n, n]).to(points.dtype)


def _warp_volume(volume: Volume, M: torch.Tensor, shape: Sequence[int], mode: str = "linear") -> Volume:
    """Resample every layer of ``volume`` with ``M`` (new voxel -> old voxel) onto ``shape``."""
    from ..warping import affine_warp

    n = volume.ndim
    Mi = M.to(volume.image.device)
    image = affine_warp(volume.image, Mi.to(volume.image.dtype), shape=shape, mode=mode, padding_mode="zeros")
    labels = affine_warp(volume.labels, Mi.float(), shape=shape, mode="nearest", padding_mode="zeros")
    tissues = None
    if volume.tissues is not None:
        tissues = affine_warp(volume.tissues, Mi.to(volume.tissues.dtype), shape=shape, mode=mode, padding_mode="zeros")
    affine = volume.affine @ _matrix3(M, n)
    spacing = tuple(float(v) for v in np.linalg.norm(affine[:3, :n].numpy(), axis=0))
    return replace(volume, image=image, labels=labels, tissues=tissues, affine=affine, spacing=spacing,
                   points=_map_points(volume.points, M))


def reorient(volume: Volume) -> Volume:
    """Flip/permute the array axes to the closest canonical orientation (RAS+). Exact (no interpolation).

    3D volumes only (a 2D slice has no third axis to permute). The world position of every voxel is
    unchanged: ``affine`` is updated with the same permutation.
    """
    import nibabel as nib

    if volume.ndim != 3:
        raise ValueError(f"reorient: needs a 3D volume, got a {volume.ndim}D one")
    A = volume.affine.numpy()
    ornt = nib.orientations.io_orientation(A)
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return replace(volume)
    # new voxel -> old voxel: inv_ornt_aff gives exactly that matrix
    M = torch.from_numpy(nib.orientations.inv_ornt_aff(ornt, volume.shape))
    shape = tuple(int(volume.shape[int(k)]) for k in np.argsort(ornt[:, 0]))  # new axis j = old axis k
    return _warp_volume(volume, M, shape, mode="nearest")


def resample(volume: Volume, spacing: float | Sequence[float], mode: str = "linear") -> Volume:
    """Resample to voxel size ``spacing`` (mm, one value or one per axis), keeping the first voxel's centre
    and the field of view: new shape ``round((S - 1) * old / new) + 1`` per axis."""
    n = volume.ndim
    sp = (float(spacing),) * n if isinstance(spacing, (int, float)) else tuple(float(s) for s in spacing)
    if len(sp) != n or not all(np.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"resample: spacing must be one positive number or {n} (one per axis), got {spacing!r}")
    factors = [new / old for new, old in zip(sp, volume.spacing)]
    shape = tuple(max(1, int(round((s - 1) / f)) + 1) for s, f in zip(volume.shape, factors))
    M = torch.diag(torch.tensor(factors + [1.0], dtype=torch.float64))
    return _warp_volume(volume, M, shape, mode)


def resample_to(volume: Volume, reference: Volume, mode: str = "linear") -> Volume:
    r"""Resample ``volume`` onto ``reference``'s grid using both world affines: the voxel ``x`` of the
    reference takes the value at :math:`A_{vol}^{-1} A_{ref} x` (the same point in mm). Outside: 0."""
    if volume.ndim != reference.ndim:
        raise ValueError(f"resample_to: volume is {volume.ndim}D but reference is {reference.ndim}D")
    n = volume.ndim
    M4 = torch.linalg.inv(volume.affine) @ reference.affine
    M = torch.eye(n + 1, dtype=torch.float64)
    M[:n, :n], M[:n, n] = M4[:n, :n], M4[:n, 3]
    out = _warp_volume(volume, M, reference.shape, mode)
    return replace(out, affine=reference.affine.clone(), spacing=tuple(reference.spacing))


def crop_or_pad(volume: Volume, shape: int | Sequence[int], centre: Sequence[float] | str | None = None) -> Volume:
    """Crop and/or zero-pad to ``shape`` (whole voxels: no interpolation; spacing kept).

    ``centre``: the voxel of the input that becomes the centre of the output (rounded to whole voxels):
    default the input's centre; ``"foreground"`` the centre of mass of ``labels > 0`` (e.g. the brain).
    """
    n = volume.ndim
    size = (int(shape),) * n if isinstance(shape, int) else tuple(int(s) for s in shape)
    if len(size) != n or min(size) < 1:
        raise ValueError(f"crop_or_pad: shape must be one positive int or {n}, got {shape!r}")
    if centre is None:
        return fit_volume(volume, size, mode="pad")
    if isinstance(centre, str):
        if centre != "foreground":
            raise ValueError(f"crop_or_pad: centre must be None, 'foreground' or {n} voxel coordinates, got {centre!r}")
        fg = (volume.labels[0, 0] > 0).nonzero()
        if fg.numel() == 0:
            raise ValueError("crop_or_pad: centre='foreground' needs labels > 0 somewhere; the label map is empty")
        c = fg.double().mean(0).tolist()
    else:
        c = [float(v) for v in centre]
        if len(c) != n:
            raise ValueError(f"crop_or_pad: centre must have {n} coordinates, got {centre!r}")
    M = torch.eye(n + 1, dtype=torch.float64)
    for k in range(n):
        M[k, n] = float(round(c[k] - (size[k] - 1) / 2.0))
    return _warp_volume(volume, M, size, mode="nearest")


def normalise(volume: Volume, percentiles: tuple[float, float] = (1.0, 99.0), method: str = "zscore",
              mask: torch.Tensor | None = None) -> Volume:
    r"""Intensity normalisation: clip to the ``percentiles`` of the intensities inside ``mask`` (default: the
    volume's foreground ``labels > 0`` if it has one, else every voxel), then

    * ``"zscore"``: :math:`(I - \mu) / \sigma` with mean and standard deviation inside the mask;
    * ``"minmax"``: :math:`(I - p_{lo}) / (p_{hi} - p_{lo})`, so the result lies in ``[0, 1]``.
    """
    if method not in ("zscore", "minmax"):
        raise ValueError(f"normalise: method must be 'zscore' or 'minmax', got {method!r}")
    lo_p, hi_p = percentiles
    if not 0 <= lo_p < hi_p <= 100:
        raise ValueError(f"normalise: percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    x = volume.image
    m = (volume.labels > 0) if mask is None else mask.bool()
    if not bool(m.any()):
        m = torch.ones_like(x, dtype=torch.bool)
    vals = x[m.expand_as(x)].double()
    lo, hi = torch.quantile(vals, torch.tensor([lo_p / 100, hi_p / 100], dtype=torch.float64)).tolist()
    y = x.clamp(lo, hi)
    if method == "minmax":
        y = ((y - lo) / max(hi - lo, 1e-12)).clamp(0, 1)
    else:
        inside = y[m.expand_as(y)].double()
        y = (y - float(inside.mean())) / max(float(inside.std()), 1e-12)
    return replace(volume, image=y.to(x.dtype))


def align_to(volume: Volume, template: Volume, transform: str = "affine", similarity: str = "mi",
             **register_kwargs) -> Volume:
    """Affine pre-alignment to ``template``: resample ``volume`` onto the template's grid by world
    coordinates (:func:`resample_to`), register it to the template with :func:`regedu.register`, and
    warp image, labels and landmarks with the found matrix. The result lives on the template's grid.

    ``similarity="mi"`` works across contrasts; pass e.g. ``iterations``/``levels`` on to ``register``.
    The registration result is stored in the returned volume's ``name`` (matrix in ``.alignment``).
    """
    from ..registration import register

    on_grid = resample_to(volume, template)
    result = register(template.image, on_grid.image, transform=transform, similarity=similarity,
                      progress=False, **register_kwargs)
    if result.matrix is None:
        raise ValueError(f"align_to: transform must be a matrix model ('translation', 'rigid', 'affine'), got {transform!r}")
    M = result.matrix[0].detach().double().cpu()
    out = _warp_volume(on_grid, M, template.shape)
    out = replace(out, affine=template.affine.clone(), spacing=tuple(template.spacing))
    out.alignment = M  # type: ignore[attr-defined]
    return out


@dataclass
class Pipeline:
    """Preprocessing steps applied in order; each step is ``(name, function Volume -> Volume)``.

    ``pipeline(volume)`` returns the result; ``pipeline.log`` lists, per step, the shape, spacing and
    intensity range after it, for inspection (``print(pipeline.describe())``).

    Example::

        prep = Pipeline([("reorient", reorient), ("1.5 mm", lambda v: resample(v, 1.5)),
                         ("crop", lambda v: crop_or_pad(v, (128, 128, 128))), ("z-score", normalise)])
        volume = prep(volume)
    """

    steps: list[tuple[str, Callable[[Volume], Volume]]]
    log: list[dict] = field(default_factory=list)

    def __call__(self, volume: Volume) -> Volume:
        self.log = [self._entry("input", volume)]
        for name, step in self.steps:
            volume = step(volume)
            if not isinstance(volume, Volume):
                raise TypeError(f"Pipeline: step {name!r} returned {type(volume).__name__}, expected a Volume")
            self.log.append(self._entry(name, volume))
        return volume

    @staticmethod
    def _entry(name: str, v: Volume) -> dict:
        return {"step": name, "shape": v.shape, "spacing": tuple(round(s, 3) for s in v.spacing),
                "min": float(v.image.min()), "max": float(v.image.max())}

    def describe(self) -> str:
        """One line per step of the last run: shape, spacing (mm), intensity range."""
        return "\n".join(f"{e['step']:<16} shape {e['shape']}  spacing {e['spacing']}  "
                         f"intensity [{e['min']:.3g}, {e['max']:.3g}]" for e in self.log)


__all__ = ["Pipeline", "align_to", "crop_or_pad", "normalise", "reorient", "resample", "resample_to"]
