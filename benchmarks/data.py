"""Speed of regedu.data's generators on one CPU thread (the issue's targets).

    python benchmarks/data.py [--repeats N] [--threads 1] [--device cpu]

Targets (one CPU core, ``torch.set_num_threads(1)``):
* a 2D training pair (PairDataset item, 96x80 brain slice, on the fly): <= 5 ms,
* a 3D synthetic subject of 80x96x80 voxels (synthetic_subject on the 2 mm template): <= 1 s.

Also printed (no target): a 3D training pair at 2 and 4 mm, a DistortedDigits item, loading the
template (first call in this process, and cached), the real scans of ``regedu.data.real`` (loading,
brain mask and GMM segmentation included), the evaluation card of a 3D field (Dice + HD95 of three
labels, SDlogJ, folding), and for scale one bare trilinear ``grid_sample`` of an 80x96x80 image,
measured interleaved with the 3D subject.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import compare  # noqa: E402

from regedu import data  # noqa: E402
from regedu import evaluation  # noqa: E402
from regedu.utils import describe_device, get_device  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = get_device(args.device)
    print(f"device: {describe_device(device)}  (torch {torch.__version__})")

    t0 = time.perf_counter()
    vol = data.load_brain(2, device=device)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    data.load_brain(2)
    cached = time.perf_counter() - t0

    ds2 = data.PairDataset("brain", mode="train", size=10_000, ndim=2, seed=0, device=device)
    ds3 = data.PairDataset("brain", mode="train", size=100, ndim=3, resolution=2, seed=0, device=device)
    ds3_4 = data.PairDataset("brain", mode="train", size=100, ndim=3, resolution=4, seed=0, device=device)
    digits = data.DistortedDigits("train", clutter=4)
    counter = iter(range(10**9))
    n2 = 50

    def pairs_2d():
        for _ in range(n2):
            ds2[next(counter) % len(ds2)]

    def subject_3d():
        data.synthetic_subject(vol, seed=next(counter))

    img = vol.image
    grid = torch.rand(1, *vol.shape, 3, device=device) * 2 - 1

    def bare_warp_3d():
        F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)

    t = compare({"pairs_2d": pairs_2d, "subject_3d": subject_3d, "bare": bare_warp_3d}, device, repeats=args.repeats)
    t_pair2 = t["pairs_2d"] / n2
    t_subj = t["subject_3d"]
    more = compare({"pair_3d_2mm": lambda: ds3[0], "pair_3d_4mm": lambda: ds3_4[0],
                    "digit": lambda: digits[next(counter) % len(digits)]}, device, repeats=args.repeats)

    t0 = time.perf_counter()
    data.load_t1_slice()
    t_t1 = time.perf_counter() - t0
    t0 = time.perf_counter()
    data.load_b0_volume()
    t_b0 = time.perf_counter() - t0
    subj = data.synthetic_subject(vol.to("cpu"), seed=0)
    card = compare({"card": lambda: evaluation.evaluate(subj["dvf"], vol.labels.cpu(), subj["labels"], spacing=vol.spacing)},
                   torch.device("cpu"), repeats=max(1, args.repeats // 3))

    print(f"{'what':<46} {'time':>10}  target")
    rows = [
        (f"2D training pair {tuple(ds2.shape)}", t_pair2 * 1e3, "ms", 5.0),
        (f"3D synthetic subject {vol.shape}", t_subj, "s", 1.0),
        (f"3D training pair {ds3.shape} (2 mm)", more["pair_3d_2mm"], "s", None),
        (f"3D training pair {ds3_4.shape} (4 mm)", more["pair_3d_4mm"] * 1e3, "ms", None),
        ("DistortedDigits item 40x40, clutter 4", more["digit"] * 1e3, "ms", None),
        ("load_brain(2), first call in this process", first, "s", None),
        ("load_brain(2), cached", cached * 1e3, "ms", None),
        (f"(scale) one bare grid_sample {vol.shape}", t["bare"] * 1e3, "ms", None),
        ("real T1 slice + brain mask + GMM segmentation", t_t1, "s", None),
        ("real b=0 volume 58x58x24 + brain mask", t_b0, "s", None),
        (f"evaluation card of a 3D field {vol.shape}", card["card"], "s", None),
    ]
    ok = True
    for name, value, unit, target in rows:
        verdict = ""
        if target is not None:
            good = value <= target
            ok &= good
            verdict = f"<= {target:g} {unit}  {'ok' if good else 'OVER'}"
        print(f"{name:<46} {value:8.3f} {unit:<2} {verdict}")
    print(f"3D subject / bare 3D grid_sample: {t_subj / t['bare']:.1f}x (side by side)")
    print("all targets met" if ok else "SOME TARGETS MISSED")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
