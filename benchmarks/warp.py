"""Overhead of regedu.warp over a bare F.grid_sample call on the same data (target: ratio <= 1.1).

    python benchmarks/warp.py [--device cpu|cuda|mps] [--repeats N] [--threads 1]

regedu.warp converts the voxel DVF to grid_sample's normalised grid and validates its input (shapes,
NaNs); the baseline receives an already normalised grid for free, stored contiguously (the layout
grid_sample reads fastest, as F.affine_grid returns it). Both run interleaved in one process, forward
and forward+backward (gradients for the image and the DVF / grid).

On the CPU the times are CPU time of this process (``time.process_time``, median of the repeats): with
one thread that is the compute time, unaffected by other processes taking the core (on a shared
machine wall times of sub-millisecond calls vary by 2x from run to run). On a GPU they are wall times
with synchronisation.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import compare  # noqa: E402

import regedu  # noqa: E402
from regedu.warping import dvf_to_grid  # noqa: E402
from regedu.utils import describe_device, get_device  # noqa: E402

CASES = {"2D 256x256": (256, 256), "3D 160x192x224": (160, 192, 224)}


def inner(shape) -> int:
    """Calls per timed block: enough that a block lasts well above the CPU clock's resolution."""
    return 20 if len(shape) == 2 else 1


def cpu_times(fns, repeats: int, inner: int = 1, warmup: int = 2) -> dict[str, float]:
    """Median CPU time (seconds per call) of each function over ``repeats // inner`` blocks of ``inner``
    calls, interleaved (A, B, A, B, ...)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(max(1, repeats // inner)):
        for name, fn in fns.items():
            t0 = time.process_time()
            for _ in range(inner):
                fn()
            times[name].append((time.process_time() - t0) / inner)
    return {k: statistics.median(v) for k, v in times.items()}


def run_case(shape, device, repeats):
    ndim = len(shape)
    img = torch.rand(1, 1, *shape, device=device)
    dvf = regedu.random_dvf(shape, 5.0, 8.0 if ndim == 2 else 4.0, seed=0, device=device)
    grid = dvf_to_grid(dvf).contiguous()  # the baseline gets the normalised grid for free

    def ours_fwd():
        return regedu.warp(img, dvf)

    def bare_fwd():
        return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)

    img_g = img.clone().requires_grad_(True)
    dvf_g = dvf.clone().requires_grad_(True)
    grid_g = grid.clone().requires_grad_(True)

    def ours_bwd():
        regedu.warp(img_g, dvf_g).sum().backward()

    def bare_bwd():
        F.grid_sample(img_g, grid_g, mode="bilinear", padding_mode="border", align_corners=True).sum().backward()

    rows = []
    for label, a, b in (("forward", ours_fwd, bare_fwd), ("forward+backward", ours_bwd, bare_bwd)):
        if device.type == "cpu":
            t = cpu_times({"regedu": a, "grid_sample": b}, repeats=repeats * inner(shape), inner=inner(shape))
        else:
            t = compare({"regedu": a, "grid_sample": b}, device, repeats=repeats)
        rows.append((label, t["regedu"], t["grid_sample"], t["regedu"] / t["grid_sample"]))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--only", choices=list(CASES), default=None)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = get_device(args.device)
    print(f"device: {describe_device(device)}  (torch {torch.__version__}); "
          f"{'CPU time per call' if device.type == 'cpu' else 'wall time per call'}, median")
    print(f"{'case':<16} {'pass':<17} {'regedu [ms]':>12} {'grid_sample [ms]':>17} {'ratio':>7}  target <= 1.10")
    worst = 0.0
    for name, shape in CASES.items():
        if args.only and name != args.only:
            continue
        for label, ours, bare, ratio in run_case(shape, device, args.repeats):
            worst = max(worst, ratio)
            print(f"{name:<16} {label:<17} {ours * 1e3:12.2f} {bare * 1e3:17.2f} {ratio:7.3f}  {'ok' if ratio <= 1.1 else 'OVER'}")
    print(f"worst ratio: {worst:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
