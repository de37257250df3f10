"""Learned (unsupervised, VoxelMorph-style) registration against the iterative engine on the same held-out pairs.

    python benchmarks/learned.py --threads 1      # 2D, 64x64 brain slices, 1600 training steps on the CPU
    python benchmarks/learned.py --quick          # 300 steps (a notebook-sized budget)
    python benchmarks/learned.py --steps 3000 --size 96
    python benchmarks/learned.py --device cuda    # on a GPU: 2D and also 3D (4 mm brain volumes)

One run: (1) trains an unsupervised network (by default ``regedu.learning.multi_stage(2, affine=False,
scales=(0.5, 0.5, 0.5))``: three VoxelMorph-style U-Nets at half resolution, each refining the previous,
composed as in DLIR; ``--scales 1`` trains one full-resolution ``RegistrationNet``) with the
unsupervised objective (LNCC + lambda * diffusion) on fresh random pairs of ``regedu.data.PairDataset`` (train mode) for a fixed number
of steps; (2) registers the same held-out pairs (``PairDataset`` eval mode: a different deformation
model and seeds) with the network and with ``regedu.register`` (LNCC, defaults of the chosen
transformation models); (3) prints Dice (mean over CSF, grey and white matter of the fixed labels
against the moving labels warped by each method's DVF, nearest neighbour), folding (share of voxels with
det J <= 0) and inference time per pair, and the speed ratio.

Timing: wall time of the network's forward pass (batch 1, the median of ``--repeats`` runs per pair, and
batched over all pairs) and of one ``regedu.register`` call per pair, measured in the same process with
the same number of threads (``regedu.register`` runs small CPU problems on one thread anyway: use
``--threads 1`` on the CPU). Targets: network inference at least 100x faster than the iterative engine,
with Dice within 0.03 of it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import regedu  # noqa: E402
from _timing import sync  # noqa: E402
from regedu import learning as L  # noqa: E402
from regedu.data import PairDataset, brain_slice  # noqa: E402
from regedu.utils import describe_device  # noqa: E402


def scores(item: dict, dvf: torch.Tensor) -> tuple[float, float]:
    """Dice of fixed labels vs warped moving labels, and the folding fraction of ``dvf``."""
    warped = regedu.warp_labels(item["moving_labels"][None].to(dvf.device), dvf)
    return float(regedu.dice(item["fixed_labels"][None].to(dvf.device), warped)), float(regedu.folding_fraction(dvf))


def run_network(net: torch.nn.Module, pairs: list[dict], device: torch.device, repeats: int) -> dict:
    net.eval()
    dice, fold, times = [], [], []
    with torch.no_grad():
        for it in pairs:
            f, m = it["fixed"][None].to(device), it["moving"][None].to(device)
            net(f, m)  # warm-up
            ts = []
            for _ in range(repeats):
                sync(device)
                t0 = time.perf_counter()
                out = net(f, m)
                sync(device)
                ts.append(time.perf_counter() - t0)
            times.append(statistics.median(ts))
            d, fo = scores(it, out["dvf"])
            dice.append(d)
            fold.append(fo)
        F = torch.stack([it["fixed"] for it in pairs]).to(device)
        M = torch.stack([it["moving"] for it in pairs]).to(device)
        net(F, M)
        ts = []
        for _ in range(repeats):
            sync(device)
            t0 = time.perf_counter()
            net(F, M)
            sync(device)
            ts.append(time.perf_counter() - t0)
    return {"dice": dice, "folding": fold, "time": statistics.median(times), "time_batched": statistics.median(ts) / len(pairs)}


def run_engine(pairs: list[dict], device: torch.device, transform: str) -> dict:
    dice, fold, times = [], [], []
    warm = pairs[0]
    regedu.register(warm["fixed"][None].to(device), warm["moving"][None].to(device), transform=transform,
                    similarity="lncc", progress=False)
    for it in pairs:
        f, m = it["fixed"][None].to(device), it["moving"][None].to(device)
        sync(device)
        t0 = time.perf_counter()
        result = regedu.register(f, m, transform=transform, similarity="lncc", progress=False)
        sync(device)
        times.append(time.perf_counter() - t0)
        d, fo = scores(it, result.dvf)
        dice.append(d)
        fold.append(fo)
    return {"dice": dice, "folding": fold, "time": statistics.median(times)}


def identity(pairs: list[dict]) -> list[float]:
    return [float(regedu.dice(it["fixed_labels"][None], it["moving_labels"][None])) for it in pairs]


def benchmark(ndim: int, args, device: torch.device) -> bool:
    regedu.seed_everything(args.seed, deterministic=False)
    if ndim == 2:
        source = brain_slice(size=args.size)
        label = f"2D axial brain slice {tuple(source.image.shape[2:])}"
        steps, features = args.steps, tuple(args.features)
    else:
        source = "brain"
        label = f"3D brain volume at {args.resolution_3d} mm"
        steps, features = args.steps_3d, tuple(args.features)
    kw = dict(ndim=ndim, resolution=args.resolution_3d) if ndim == 3 else {}
    train_set = PairDataset(source, mode="train", size=10**9 if ndim == 2 else 10**6, seed=args.seed, **kw)
    eval_set = PairDataset(source, mode="eval", size=args.pairs if ndim == 2 else args.pairs_3d, **kw)
    pairs = [eval_set[i] for i in range(len(eval_set))]
    print(f"\n== {label}: {len(pairs)} held-out pairs, device {describe_device(device)}, "
          f"{torch.get_num_threads()} CPU thread(s)")

    if len(args.scales) == 1:
        net = L.RegistrationNet(ndim, features=features, scale=args.scales[0], diffeomorphic=args.diffeomorphic)
    else:
        net = L.multi_stage(ndim, affine=False, scales=args.scales, features=features, diffeomorphic=args.diffeomorphic)
    t0 = time.perf_counter()
    lr = args.lr if ndim == 2 else args.lr_3d
    L.train(net, train_set, "unsupervised", steps=steps, lr=lr, batch_size=args.batch_size, device=device,
            progress=not args.no_progress, seed=args.seed, similarity="lncc", weight=args.weight)
    train_time = time.perf_counter() - t0
    print(f"trained {type(net).__name__} (stages at scales {args.scales}, features={features}, "
          f"diffeomorphic={args.diffeomorphic}) for {steps} steps (batch {args.batch_size}, lr {lr}, "
          f"LNCC + {args.weight} * diffusion) in {train_time:.0f} s")

    base = identity(pairs)
    nres = run_network(net, pairs, device, args.repeats)
    rows = [("identity", statistics.mean(base), 0.0, None)]
    rows.append(("network (batch 1)", statistics.mean(nres["dice"]), statistics.mean(nres["folding"]), nres["time"]))
    rows.append(("network (batched)", statistics.mean(nres["dice"]), statistics.mean(nres["folding"]), nres["time_batched"]))
    engines = {}
    for transform in args.transforms:
        eres = run_engine(pairs, device, transform)
        engines[transform] = eres
        rows.append((f"register({transform!r}, 'lncc')", statistics.mean(eres["dice"]), statistics.mean(eres["folding"]), eres["time"]))

    print(f"{'method':32s} {'Dice':>7s} {'folding %':>10s} {'time/pair':>12s}")
    for name, d, fo, t in rows:
        print(f"{name:32s} {d:7.3f} {100 * fo:10.3f} {'' if t is None else f'{1000 * t:9.2f} ms':>12s}")
    ok = True
    for transform, eres in engines.items():
        e_time, e_dice = eres["time"], statistics.mean(eres["dice"])
        gap = statistics.mean(nres["dice"]) - e_dice
        r1, rb = e_time / nres["time"], e_time / nres["time_batched"]
        speed_ok, dice_ok = r1 >= 100, gap >= -0.03
        ok &= speed_ok and dice_ok
        print(f"vs register({transform!r}): speed ratio {r1:.0f}x (batch 1), {rb:.0f}x (batched)  "
              f"[target >= 100x: {'met' if speed_ok else 'NOT met'}];  Dice difference {gap:+.3f}  "
              f"[target >= -0.03: {'met' if dice_ok else 'NOT met'}]")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cpu, cuda, mps (default: regedu.get_device())")
    ap.add_argument("--size", type=int, default=64, help="2D image size (the brain slice is fit into size x size)")
    ap.add_argument("--steps", type=int, default=1600, help="training steps (2D)")
    ap.add_argument("--quick", action="store_true", help="300 training steps and 8 pairs")
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight", type=float, default=0.05, help="lambda of the diffusion regulariser")
    ap.add_argument("--features", type=int, nargs="+", default=[16, 32, 32, 32])
    ap.add_argument("--scales", type=float, nargs="+", default=[0.5, 0.5, 0.5],
                    help="one RegistrationNet per entry, chained (regedu.learning.multi_stage without affine); each works at "
                         "that fraction of the resolution. Default 0.5 0.5 0.5: three half-resolution stages (a cascade). "
                         "Use --scales 1 for a single full-resolution U-Net")
    ap.add_argument("--diffeomorphic", action="store_true", help="predict a velocity field (scaling and squaring)")
    ap.add_argument("--transforms", nargs="+", default=["bspline", "svf"], help="engine models to compare with")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--no-3d", action="store_true")
    ap.add_argument("--3d", dest="with_3d", action="store_true", help="run the 3D part on the CPU too (slow)")
    ap.add_argument("--steps-3d", type=int, default=2000)
    ap.add_argument("--pairs-3d", type=int, default=4)
    ap.add_argument("--lr-3d", type=float, default=1e-3)
    ap.add_argument("--resolution-3d", type=int, default=4, choices=(2, 4))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.pairs = 300, 8
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else regedu.get_device()
    ok = benchmark(2, args, device)
    if (device.type != "cpu" or args.with_3d) and not args.no_3d:
        ok &= benchmark(3, args, device)
    elif not args.no_3d:
        print("\n(3D figures are reported on a GPU only: run with --device cuda, or --3d to force them on the CPU)")
    print("\nall targets met" if ok else "\nsome targets NOT met (see above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
