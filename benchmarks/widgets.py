"""Update time of the interactive widgets after a slider move (target: <= 100 ms for the 2D widgets
at the course's image size, 128 x 128, on a 2-core CPU).

    python benchmarks/widgets.py [--repeats N] [--size 128]

A slider move is simulated exactly as the browser does it: the control's value is set and its
observer runs the update (maths, matplotlib artists, Agg rendering, PNG encoding). The moves of all
widgets are interleaved so that machine noise hits them alike; the table gives the median and the
90th percentile per widget, split into compute (maths + artists) and render (Agg + PNG). The machine's
load average is printed because on a shared machine it dominates the numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

import regedu
from regedu import data
from regedu.utils import describe_device
from regedu.widgets import AffineExplorer, DVFExplorer, RegistrationPlayback, SimilarityLandscape, VolumeViewer
from regedu.widgets._base import FigureWidget

TARGET_MS = 100.0


def cases(size: int) -> dict:
    """name -> (widget, control name, list of values to cycle through, counts against the target)."""
    sl = data.brain_slice("axial", size=size)
    fixed = sl.image
    shape = tuple(fixed.shape[2:])
    moving = regedu.warp(fixed, regedu.random_dvf(shape, 3.0, 10.0, seed=1))
    snaps = [(k, regedu.warp(moving, u), u) for k, u in
             ((k, regedu.random_dvf(shape, 1.0 + 0.2 * k, 10.0, seed=k)) for k in range(20))]
    vol = data.load_brain(2)
    vol_moved = regedu.warp(vol.image, regedu.random_dvf(vol.shape, 2.0, 6.0, seed=0))
    ramp = lambda lo, hi, n=20: list(np.round(np.linspace(lo, hi, n), 2))  # noqa: E731
    return {
        "AffineExplorer (rotation)": (AffineExplorer(fixed, moving), "rotation", ramp(-40, 40), True),
        "AffineExplorer (scale s0)": (AffineExplorer(fixed, moving), "s0", ramp(0.7, 1.4), True),
        "SimilarityLandscape 1D (t1)": (SimilarityLandscape(fixed, multimodal=data.t2_like(sl), parameters="t1", progress=False),
                                         "t1", None, True),
        "SimilarityLandscape 2D (rotation)": (SimilarityLandscape(fixed, multimodal=data.t2_like(sl), parameters=("rotation", "t1"),
                                                                  steps=11, progress=False), "rotation", None, True),
        "DVFExplorer (amplitude)": (DVFExplorer(fixed), "amplitude", ramp(1, 12), True),
        "DVFExplorer (smoothness: new field)": (DVFExplorer(fixed), "smoothness", ramp(2, 16), True),
        "DVFExplorer (B-spline spacing)": (DVFExplorer(fixed, model="bspline"), "spacing", list(range(8, 48, 2)), True),
        "RegistrationPlayback (snapshot)": (RegistrationPlayback(fixed, snaps, list(np.linspace(1, 0.1, 20)), moving=moving,
                                                                 iterations=list(range(20))), "snapshot", list(range(20)), True),
        "VolumeViewer 3D 80x96x80 (axial, overlay)": (VolumeViewer(vol, vol_moved, mode="overlay"), "axial", list(range(20, 60, 2)), False),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20, help="slider moves per widget (default 20)")
    parser.add_argument("--size", type=int, default=128, help="2D image size (default 128)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads during an update (default: the widgets' setting, FigureWidget.threads = 1; "
                             "0 = leave torch's own setting)")
    args = parser.parse_args()
    if args.threads is not None:
        FigureWidget.threads = args.threads or None

    print(f"building the widgets ({args.size}x{args.size}) ...", flush=True)
    all_cases = cases(args.size)
    for name, (w, control, values, _) in all_cases.items():
        if values is None:  # landscape: step along its grid
            all_cases[name] = (w, control, [float(v) for v in w.axes_values[control]], all_cases[name][3])
    times = {name: {"total": [], "compute": [], "render": []} for name in all_cases}
    for r in range(args.repeats + 2):  # 2 warm-up rounds
        for name, (w, control, values, _) in all_cases.items():
            c = w.controls[control]
            value = values[(r + 1) % len(values)]
            if c.value == value:
                value = values[(r + 2) % len(values)]
            t0 = time.perf_counter()
            c.value = value  # exactly what a slider move in the browser does
            elapsed = time.perf_counter() - t0
            if w.status.value:
                raise RuntimeError(f"{name}: the update failed: {w.status.value}")
            if r >= 2:
                times[name]["total"].append(elapsed * 1e3)
                times[name]["compute"].append(w.timings["compute"] * 1e3)
                times[name]["render"].append(w.timings["render"] * 1e3)

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"\ndevice: {describe_device(torch.device('cpu'))}, CPU cores: {os.cpu_count()}, "
          f"load average (1 min): {load[0]:.1f}, updates run torch with "
          f"{FigureWidget.threads or torch.get_num_threads()} thread(s)")
    print(f"{args.repeats} slider moves per widget, interleaved; times in ms; target {TARGET_MS:.0f} ms for 2D widgets\n")
    header = f"{'widget (control moved)':44s} {'median':>7s} {'p90':>7s} {'compute':>8s} {'render':>7s} {'/target':>8s}  verdict"
    print(header)
    print("-" * len(header))
    worst = 0.0
    for name, t in times.items():
        med = statistics.median(t["total"])
        p90 = float(np.percentile(t["total"], 90))
        counts = all_cases[name][3]
        verdict = ("ok" if med <= TARGET_MS else "SLOW") if counts else "(3D, not in target)"
        if counts:
            worst = max(worst, med)
        print(f"{name:44s} {med:7.1f} {p90:7.1f} {statistics.median(t['compute']):8.1f} "
              f"{statistics.median(t['render']):7.1f} {med / TARGET_MS:8.2f}  {verdict}")
    print(f"\nslowest 2D widget: median {worst:.1f} ms = {worst / TARGET_MS:.2f} x the {TARGET_MS:.0f} ms target")


if __name__ == "__main__":
    main()
