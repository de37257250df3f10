r"""The evaluation card: the numbers the field reports for a registration, computed one way everywhere.

:func:`evaluate` returns an :class:`EvaluationCard` with

* **Dice** per label and mean, :math:`2|A \cap B| / (|A| + |B|)` between the fixed labels and the
  warped moving labels (overlap, 1 is best);
* **HD95** per label and mean, the 95 % Hausdorff distance in **mm** (:func:`hausdorff95`): the
  larger of the two directed 95th percentiles of the distances from one label's surface to the
  other's (MONAI's ``compute_hausdorff_distance(percentile=95)``; robust to a few outlier voxels);
* **TRE**, the mean target registration error on landmarks in **mm**,
  :math:`\frac1N \sum_i \|S(\varphi(p_i) - q_i)\|` (``S`` = diag(spacing));
* **SDlogJ**, the standard deviation of :math:`\log \det J_\varphi` (Learn2Reg's smoothness measure;
  determinants clipped to :math:`[10^{-9}, 10^9]` as Learn2Reg does), and the **folding fraction**
  (share of voxels with :math:`\det J_\varphi \le 0`);
* **inverse consistency** where both directions exist: the mean length in mm of the displacement of
  :math:`\varphi_{AB} \circ \varphi_{BA}` (0 for exact inverses);
* **run time** and **peak memory** of the registration (measure them with :func:`measure`).

Conventions as everywhere in regedu: ``dvf`` ``(1, ndim, *S)`` in voxels, pull-back
(``moved(x) = moving(x + u(x))``), labels ``(1, 1, *S)`` integer, landmarks ``(N, ndim)`` voxel
coordinates in tensor axis order. References: Learn2Reg (Hering et al., IEEE TMI 2023) for SDlogJ,
HD95, TRE and Dice as a set; Taha & Hanbury, "Metrics for evaluating 3D medical image
segmentation", BMC Medical Imaging 2015, for HD95.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ._checks import check_dvf, check_image, check_same_spatial
from .fields import compose, jacobian_determinant
from .similarity import target_registration_error
from .warping import warp


def _spacing(fn: str, spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    sp = tuple(float(s) for s in spacing)
    if len(sp) != ndim or not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"{fn}: spacing must be {ndim} positive voxel sizes in mm (one per spatial axis), got {sp}")
    return sp


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with at least one face neighbour outside it (the image border counts as outside)."""
    from scipy import ndimage as ndi

    inner = ndi.binary_erosion(mask, structure=ndi.generate_binary_structure(mask.ndim, 1), border_value=0)
    return mask & ~inner


def surface_distances(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from every surface voxel of mask ``a`` to the nearest surface voxel of ``b``, and back.

    Exact Euclidean distance transforms (``scipy.ndimage.distance_transform_edt`` with ``sampling=spacing``).
    """
    from scipy import ndimage as ndi

    sa, sb = _surface(a), _surface(b)
    to_b = ndi.distance_transform_edt(~sb, sampling=spacing)
    to_a = ndi.distance_transform_edt(~sa, sampling=spacing)
    return to_b[sa], to_a[sb]


def hausdorff95(labels_a: torch.Tensor, labels_b: torch.Tensor, label: int = 1,
                spacing: Sequence[float] | None = None, percentile: float = 95.0) -> float:
    r"""95 % Hausdorff distance (mm) between the regions ``labels == label`` of two label maps ``(1, 1, *S)``.

    :math:`\mathrm{HD}_{95} = \max(P_{95}\{d(a, \partial B): a \in \partial A\}, P_{95}\{d(b, \partial A): b \in \partial B\})`
    with surface voxels :math:`\partial A` and Euclidean distances in mm (``spacing``, default 1).
    ``percentile=100`` gives the classical Hausdorff distance. Returns ``nan`` when the label is
    missing from exactly one map (no distance exists) and 0 when it is missing from both.
    """
    a_t = check_image("hausdorff95", "labels_a", labels_a, finite=False)
    b_t = check_image("hausdorff95", "labels_b", labels_b, finite=False)
    check_same_spatial("hausdorff95", "labels_a", a_t, "labels_b", b_t)
    if a_t.shape[:2] != (1, 1) or b_t.shape[:2] != (1, 1):
        raise ValueError(f"hausdorff95: label maps must be (1, 1, *S), got {tuple(a_t.shape)} and {tuple(b_t.shape)}")
    if not 0 < percentile <= 100:
        raise ValueError(f"hausdorff95: percentile must be in (0, 100], got {percentile}")
    sp = _spacing("hausdorff95", spacing, a_t.dim() - 2)
    a = a_t[0, 0].detach().cpu().numpy() == label
    b = b_t[0, 0].detach().cpu().numpy() == label
    if not a.any() and not b.any():
        return 0.0
    if not a.any() or not b.any():
        return float("nan")
    d_ab, d_ba = surface_distances(a, b, sp)
    return float(max(np.percentile(d_ab, percentile), np.percentile(d_ba, percentile)))


def sdlogj(dvf: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    r"""Standard deviation of :math:`\log \det J_\varphi` over the voxels (inside ``mask`` if given).

    Determinants are clipped to :math:`[10^{-9}, 10^9]` before the log (Learn2Reg's rule, so folded
    voxels count as very compressed instead of producing NaN). 0 for any affine transform (constant
    :math:`\det J`); typical smooth deformable registrations score 0.05-0.2. Spacing-free: the
    determinant is the same in voxel and mm units.
    """
    dvf = check_dvf("sdlogj", "dvf", dvf)
    logj = jacobian_determinant(dvf).double().clamp(1e-9, 1e9).log()
    if mask is not None:
        m = mask.reshape(logj.shape).bool() if mask.numel() == logj.numel() else None
        if m is None:
            raise ValueError(f"sdlogj: mask must have the field's spatial size {tuple(dvf.shape[2:])}, got {tuple(mask.shape)}")
        logj = logj[m]
    return float(logj.std(unbiased=False))


def inverse_consistency(forward: torch.Tensor, backward: torch.Tensor, spacing: Sequence[float] | None = None,
                        mask: torch.Tensor | None = None) -> float:
    r"""Mean length (mm) of the displacement of :math:`\varphi_f \circ \varphi_b` (``compose(forward, backward)``).

    ``forward`` maps fixed to moving, ``backward`` moving to fixed, both ``(1, ndim, *S)`` on the same
    grid; exact inverses give 0. Computed inside ``mask`` (``(1, 1, *S)``) if given.
    """
    forward = check_dvf("inverse_consistency", "forward", forward)
    backward = check_dvf("inverse_consistency", "backward", backward, spatial=forward.shape[2:])
    ndim = forward.dim() - 2
    sp = torch.tensor(_spacing("inverse_consistency", spacing, ndim), dtype=forward.dtype, device=forward.device)
    r = compose(forward, backward) * sp.reshape(1, ndim, *([1] * ndim))
    length = r.pow(2).sum(1).sqrt()
    if mask is not None:
        return float(length[mask.reshape(length.shape).bool()].mean())
    return float(length.mean())


# ----------------------------------------------------------------------------- run time and memory
def _release_free_memory() -> None:
    """Give memory that was freed but kept by the C allocator back to the system (glibc's ``malloc_trim``),
    so that the next measurement starts from what is really in use. A no-op where unavailable."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows)
        pass


def _rss() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:  # pragma: no cover - psutil ships with Jupyter
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


@dataclass
class Measurement:
    """What :func:`measure` saw: ``value`` (the function's result), ``seconds`` (wall), ``cpu_seconds``
    (process CPU time, all threads), ``peak_mb`` (peak extra memory in MiB: CUDA's peak allocation on a
    GPU, else the peak increase of the process's resident memory, sampled every ``interval`` s)."""

    value: Any
    seconds: float
    cpu_seconds: float
    peak_mb: float
    device: str


def measure(fn: Callable[..., Any], *args: Any, device: str | torch.device | None = None,
            interval: float = 0.002, **kwargs: Any) -> Measurement:
    """Run ``fn(*args, **kwargs)`` and measure its wall time, CPU time and peak memory.

    On CUDA (``device`` or the device of the first tensor argument) the peak is
    ``torch.cuda.max_memory_allocated`` above the allocation at the start; on the CPU a background thread
    samples the resident set size (a lower bound of the true peak, exact to the sampling interval), after
    returning memory freed by earlier calls to the system (glibc ``malloc_trim``; elsewhere memory cached
    from an earlier, larger call can hide part of the peak).
    """
    if device is None:
        device = next((a.device for a in args if isinstance(a, torch.Tensor)), torch.device("cpu"))
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        t0, c0 = time.perf_counter(), time.process_time()
        value = fn(*args, **kwargs)
        torch.cuda.synchronize(device)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        peak = torch.cuda.max_memory_allocated(device) - base
        return Measurement(value, seconds, cpu, peak / 2**20, str(device))
    _release_free_memory()
    base = _rss()
    peak_rss = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak_rss[0] = max(peak_rss[0], _rss())
            stop.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        value = fn(*args, **kwargs)
    finally:
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        stop.set()
        sampler.join()
    peak_rss[0] = max(peak_rss[0], _rss())
    return Measurement(value, seconds, cpu, (peak_rss[0] - base) / 2**20, str(device))


# ----------------------------------------------------------------------------- the card
@dataclass
class EvaluationCard:
    """The evaluation of one registration (``None``: not computed because its inputs were not given).

    Attributes:
        dice: per label ``{label: Dice}``; dice_mean: their mean.
        hd95: per label ``{label: HD95 in mm}``; hd95_mean: their mean (over labels where it exists).
        tre: mean TRE in mm after registration; tre_before: with the identity transform (the initial error).
        sdlogj: std of log det J; folding: share of voxels with det J <= 0.
        inverse_consistency: mean mm of phi_f o phi_b (needs ``inverse``).
        seconds, peak_mb: run time and peak memory, copied from a :class:`Measurement` or given.
        label_names: optional names used by :meth:`table`.
    """

    dice: dict[int, float] | None = None
    dice_mean: float | None = None
    hd95: dict[int, float] | None = None
    hd95_mean: float | None = None
    tre: float | None = None
    tre_before: float | None = None
    sdlogj: float | None = None
    folding: float | None = None
    inverse_consistency: float | None = None
    seconds: float | None = None
    peak_mb: float | None = None
    label_names: dict[int, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The card as a plain dict (for tables, JSON or pandas)."""
        return asdict(self)

    def table(self) -> str:
        """A two-column text table of every computed number (what ``print(card)`` shows)."""
        rows: list[tuple[str, str]] = []
        if self.dice is not None:
            for k, v in self.dice.items():
                rows.append((f"Dice {self.label_names.get(k, k)}", f"{v:.3f}"))
            rows.append(("Dice mean", f"{self.dice_mean:.3f}"))
        if self.hd95 is not None:
            for k, v in self.hd95.items():
                rows.append((f"HD95 {self.label_names.get(k, k)} (mm)", f"{v:.2f}"))
            rows.append(("HD95 mean (mm)", f"{self.hd95_mean:.2f}"))
        if self.tre is not None:
            rows.append(("TRE (mm)", f"{self.tre:.2f} (before {self.tre_before:.2f})"))
        for name, val, fmt in (("SDlogJ", self.sdlogj, ".3f"), ("folding (%)", None if self.folding is None else 100 * self.folding, ".3f"),
                               ("inverse consistency (mm)", self.inverse_consistency, ".3f"), ("run time (s)", self.seconds, ".2f"),
                               ("peak memory (MiB)", self.peak_mb, ".1f")):
            if val is not None:
                rows.append((name, format(val, fmt)))
        width = max((len(r[0]) for r in rows), default=0)
        return "\n".join(f"{a:<{width}}  {b}" for a, b in rows)

    def __str__(self) -> str:
        return self.table()


def evaluate(
    dvf: torch.Tensor,
    fixed_labels: torch.Tensor | None = None,
    moving_labels: torch.Tensor | None = None,
    spacing: Sequence[float] | None = None,
    fixed_points: torch.Tensor | None = None,
    moving_points: torch.Tensor | None = None,
    inverse: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    labels: Sequence[int] | None = None,
    measurement: Measurement | None = None,
    label_names: dict[int, str] | None = None,
) -> EvaluationCard:
    """Evaluate a registration given by its displacement field ``dvf`` ``(1, ndim, *S)`` (fixed -> moving, voxels).

    Args:
        fixed_labels, moving_labels: ``(1, 1, *S)`` integer label maps: the moving labels are warped with
            ``dvf`` (nearest neighbour) and compared with the fixed labels (Dice, HD95 per label in ``labels``,
            default every label > 0 in either map).
        spacing: voxel size in mm per axis (default 1): HD95, TRE and inverse consistency are in mm.
        fixed_points, moving_points: corresponding landmarks ``(N, ndim)`` (voxels) for TRE.
        inverse: the backward field (moving -> fixed) for inverse consistency.
        mask: ``(1, 1, *S)`` region for SDlogJ, folding and inverse consistency (default: everywhere).
        measurement: a :class:`Measurement` of the registration, for run time and peak memory.

    Returns:
        :class:`EvaluationCard`. SDlogJ and folding are always computed.
    """
    dvf = check_dvf("evaluate", "dvf", dvf)
    if dvf.shape[0] != 1:
        raise ValueError(f"evaluate: dvf must hold one registration (batch 1), got batch {dvf.shape[0]}")
    ndim = dvf.dim() - 2
    sp = _spacing("evaluate", spacing, ndim)
    card = EvaluationCard(label_names=dict(label_names or {}))
    if (fixed_labels is None) != (moving_labels is None):
        raise ValueError("evaluate: give both fixed_labels and moving_labels (or neither)")
    if fixed_labels is not None and moving_labels is not None:
        check_image("evaluate", "fixed_labels", fixed_labels, ndim=ndim, finite=False)
        check_image("evaluate", "moving_labels", moving_labels, ndim=ndim, finite=False)
        check_same_spatial("evaluate", "fixed_labels", fixed_labels, "dvf", dvf)
        check_same_spatial("evaluate", "moving_labels", moving_labels, "dvf", dvf)
        moved = warp(moving_labels, dvf.to(torch.float32) if not moving_labels.is_floating_point() else dvf, mode="nearest")
        fl, ml = fixed_labels.round().long(), moved.round().long()
        if labels is None:
            labels = sorted(int(v) for v in torch.unique(torch.cat([fl.flatten(), ml.flatten()])) if v > 0)
        if not labels:
            raise ValueError("evaluate: both label maps are all background (0); nothing to score")
        card.dice, card.hd95 = {}, {}
        for lab in labels:
            a, b = fl == lab, ml == lab
            total = int(a.sum()) + int(b.sum())
            card.dice[int(lab)] = 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total
            card.hd95[int(lab)] = hausdorff95(fl, ml, int(lab), sp)
        card.dice_mean = float(np.mean(list(card.dice.values())))
        finite = [v for v in card.hd95.values() if math.isfinite(v)]
        card.hd95_mean = float(np.mean(finite)) if finite else float("nan")
    if (fixed_points is None) != (moving_points is None):
        raise ValueError("evaluate: give both fixed_points and moving_points (or neither)")
    if fixed_points is not None and moving_points is not None:
        p = torch.as_tensor(fixed_points, dtype=dvf.dtype, device=dvf.device)
        q = torch.as_tensor(moving_points, dtype=dvf.dtype, device=dvf.device)
        card.tre = float(target_registration_error(p, q, dvf, spacing=sp)[0])
        card.tre_before = float(target_registration_error(p, q, torch.zeros_like(dvf), spacing=sp)[0])
    if mask is not None and mask.numel() != dvf[0, 0].numel():
        raise ValueError(f"evaluate: mask must have the field's spatial size {tuple(dvf.shape[2:])}, got {tuple(mask.shape)}")
    card.sdlogj = sdlogj(dvf, mask)
    det = jacobian_determinant(dvf)
    fold = det <= 0
    card.folding = float(fold[mask.reshape(det.shape).bool()].double().mean()) if mask is not None else float(fold.double().mean())
    if inverse is not None:
        card.inverse_consistency = inverse_consistency(dvf, inverse, sp, mask)
    if measurement is not None:
        card.seconds, card.peak_mb = measurement.seconds, measurement.peak_mb
    return card


__all__ = ["EvaluationCard", "Measurement", "evaluate", "hausdorff95", "inverse_consistency", "measure", "sdlogj",
           "surface_distances"]
