"""Learned registration against dipy's SyN and regedu.register, on the same held-out pairs, in one run.

    python benchmarks/learned.py                  # the pretrained 2D network (regedu.learning.pretrained)
    python benchmarks/learned.py --train 6000     # train the same network from scratch first (a few CPU minutes)
    python benchmarks/learned.py --pairs 8 --repeats 3
    python benchmarks/learned.py --device cuda --3d   # on a GPU: also a 3D network (trained here) vs regedu.register

The pairs: ``regedu.data.PairDataset(brain_slice(size=64), mode="eval")``, held-out 64 x 64 axial brain
slices with a known synthetic deformation (a B-spline model the training data does not use, other seeds)
and independent intensity changes. Every method registers every pair; each is scored the same way: the
moving labels are warped with the method's displacement field (nearest neighbour) and compared with the
fixed labels (mean Dice over CSF, grey and white matter); folding = share of voxels with det J <= 0.

The methods: the network (``--weights``: a pretrained model, or ``--train N`` steps from scratch with the
recipe of ``scripts/train_weights.py``); dipy's SymmetricDiffeomorphicRegistration with CCMetric(radius=4,
sigma_diff=2), level_iters=[100, 50, 25] (dipy's SyN tutorial values, as in ``benchmarks/iterative.py``);
``regedu.register(fixed, moving, transform="bspline", similarity="lncc")`` with its defaults.

Timing: CPU time (``time.process_time``, one thread for everybody: dipy's SyN runs on one core) and wall
time of each registration call, measured pair by pair in the same process, interleaved, after an untimed
warm-up; the network's time is the median of ``--repeats`` forward passes (batch 1, ``torch.inference_mode``),
and also per pair of one batch of all pairs. CPU time is the figure that counts on a shared machine.
Targets (issue 16): the network's Dice within 0.01 of SyN's, inference at least 100x faster than SyN, no folding.
"""

from __future__ import annotations

import argparse
import logging
import math
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
from regedu.learning import pretrained  # noqa: E402
from regedu.utils import describe_device  # noqa: E402

LABELS = [1, 2, 3]  # CSF, grey matter, white matter


def score(item: dict, dvf: torch.Tensor) -> tuple[float, float]:
    """Dice of the fixed labels vs the moving labels warped by ``dvf`` (nearest), and the folding fraction."""
    dvf = dvf.detach().float().cpu()
    warped = regedu.warp_labels(item["moving_labels"][None], dvf, mode="nearest")
    return float(regedu.dice(item["fixed_labels"][None], warped, labels=LABELS)), float(regedu.folding_fraction(dvf).max())


def clock(fn):
    """``(output, cpu seconds, wall seconds)`` of one call."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c0, time.perf_counter() - t0


def run_syn(item: dict):
    from iterative import run_dipy

    dvf, _, _ = run_dipy(item["fixed"][None], item["moving"][None])
    return dvf


def run_register(item: dict, transform: str):
    return regedu.register(item["fixed"][None], item["moving"][None], transform=transform, similarity="lncc", progress=False).dvf


def network_times(net: torch.nn.Module, item: dict, device: torch.device, repeats: int) -> tuple[torch.Tensor, float, float]:
    """The network's DVF for one pair, and the median CPU and wall seconds of ``repeats`` forward passes (batch 1)."""
    f, m = item["fixed"][None].to(device), item["moving"][None].to(device)
    cpu, wall = [], []
    with torch.inference_mode():
        net(f, m)
        for _ in range(repeats):
            sync(device)
            out, c, w = clock(lambda: net(f, m))
            sync(device)
            cpu.append(c)
            wall.append(w)
    return out["dvf"], statistics.median(cpu), statistics.median(wall)


def train_network(steps: int, seed: int, device: torch.device) -> torch.nn.Module:
    """The network of ``scripts/train_weights.py`` ("unsupervised-2d"), trained here from scratch."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from train_weights import MODELS, template

    spec = MODELS["unsupervised-2d"]
    regedu.seed_everything(seed, deterministic=False)
    train_set = PairDataset(template(spec), mode="train", size=10**9, seed=seed)
    net = L.RegistrationNet(**spec["model"])
    opt = torch.optim.Adam(net.parameters(), lr=spec["lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * min(k, steps) / steps)))
    _, cpu, wall = clock(lambda: L.train(net, train_set, "unsupervised", steps=steps, batch_size=spec["batch_size"], optimizer=opt,
                                         device=device, seed=seed, callback=lambda *a: sched.step(), progress=False,
                                         **spec["objective"]))
    print(f"trained RegistrationNet{tuple(spec['model']['features'])} at scale {spec['model']['scale']} for {steps} steps "
          f"(batch {spec['batch_size']}, LNCC + {spec['objective']['weight']} diffusion, cosine lr from {spec['lr']}): "
          f"{cpu:.0f} s CPU, {wall:.0f} s wall")
    return net


def benchmark_2d(args, device: torch.device) -> bool:
    if args.train:
        net = train_network(args.train, args.seed, device)
        name = f"network ({args.train} steps here)"
    else:
        net = pretrained.load(args.weights, device=device)
        r = net.pretrained
        name = f"network ({args.weights!r})"
        print(f"network: pretrained {args.weights!r} ({r['class']}, features {r['config']['features']}, scale "
              f"{r['config']['scale']}), trained by `{r['command']}`: {r['training']['steps']} steps, "
              f"{r['result']['train_cpu_seconds']:.0f} s CPU")
    net.to(device).eval()
    nets = {"network": (net, name)}
    if args.passes > 1:  # the same network applied again to its result (a recursive cascade), fields composed
        nets["network2"] = (L.RegistrationChain([net] * args.passes).to(device).eval(), f"{name} x{args.passes} passes")
    eval_set = PairDataset(brain_slice(size=args.size), mode="eval", size=args.pairs)
    pairs = [eval_set[i] for i in range(len(eval_set))]
    print(f"\n== 2D: {len(pairs)} held-out pairs {tuple(pairs[0]['fixed'].shape[1:])}; network on {describe_device(device)}, "
          f"{torch.get_num_threads()} CPU thread(s); dipy SyN and regedu.register on the CPU")

    # warm-up (untimed): lazy initialisation in every library
    run_syn(pairs[0])
    run_register(pairs[0], args.transform)

    rows = {k: {"dice": [], "fold": [], "cpu": [], "wall": []} for k in ("identity", *nets, "syn", "register")}
    for item in pairs:
        d0 = float(regedu.dice(item["fixed_labels"][None], item["moving_labels"][None], labels=LABELS))
        rows["identity"]["dice"].append(d0)
        rows["identity"]["fold"].append(0.0)
        results = {key: network_times(model, item, device, args.repeats) for key, (model, _) in nets.items()}
        dvf_s, c_s, w_s = clock(lambda: run_syn(item))
        results["syn"] = (dvf_s, c_s, w_s)
        dvf_r, c_r, w_r = clock(lambda: run_register(item, args.transform))
        results["register"] = (dvf_r, c_r, w_r)
        for key, (dvf, c, w) in results.items():
            d, fo = score(item, dvf)
            rows[key]["dice"].append(d)
            rows[key]["fold"].append(fo)
            rows[key]["cpu"].append(c)
            rows[key]["wall"].append(w)

    F = torch.stack([it["fixed"] for it in pairs]).to(device)
    M = torch.stack([it["moving"] for it in pairs]).to(device)
    batched = {}
    with torch.inference_mode():
        for key, (model, _) in nets.items():
            model(F, M)
            batched[key] = statistics.median(clock(lambda: model(F, M))[1] for _ in range(args.repeats)) / len(pairs)

    labels = {"identity": "identity (no registration)", **{k: v[1] for k, v in nets.items()}, "syn": "dipy SyN (CC)",
              "register": f"regedu.register({args.transform!r}, 'lncc')"}
    print(f"{'method':44s} {'Dice':>7s} {'min Dice':>8s} {'folding %':>10s} {'CPU ms/pair':>12s} {'wall ms/pair':>13s}")
    for key, r in rows.items():
        cpu = f"{1e3 * statistics.median(r['cpu']):10.2f}" if r["cpu"] else ""
        wall = f"{1e3 * statistics.median(r['wall']):11.2f}" if r["wall"] else ""
        print(f"{labels[key]:44s} {statistics.mean(r['dice']):7.4f} {min(r['dice']):8.4f} {100 * max(r['fold']):10.4f} "
              f"{cpu:>12s} {wall:>13s}")
    for key in nets:
        print(f"{labels[key] + ', one batch of all pairs':44s} {'':7s} {'':8s} {'':10s} {1e3 * batched[key]:10.2f}")

    syn_cpu = statistics.median(rows["syn"]["cpu"])
    reg_cpu = statistics.median(rows["register"]["cpu"])
    all_ok = False
    for key in nets:
        net_cpu = statistics.median(rows[key]["cpu"])
        gap = statistics.mean(rows[key]["dice"]) - statistics.mean(rows["syn"]["dice"])
        wins = sum(a >= b for a, b in zip(rows[key]["dice"], rows["syn"]["dice"]))
        speed, speed_b = syn_cpu / net_cpu, syn_cpu / batched[key]
        folding = max(rows[key]["fold"])
        dice_ok, speed_ok, fold_ok = gap >= -0.01, speed >= 100, folding == 0.0
        print(f"\n{labels[key]} vs SyN: Dice {gap:+.4f} (network >= SyN on {wins}/{len(pairs)} pairs) [target >= -0.01: "
              f"{'met' if dice_ok else 'NOT met'}]; inference {speed:.0f}x faster in CPU time at batch 1, {speed_b:.0f}x "
              f"batched [target >= 100x: {'met' if speed_ok else 'NOT met'}]; max folding {100 * folding:.4f} % "
              f"[target 0: {'met' if fold_ok else 'NOT met'}]")
        print(f"{labels[key]} vs regedu.register({args.transform!r}): Dice "
              f"{statistics.mean(rows[key]['dice']) - statistics.mean(rows['register']['dice']):+.4f}, "
              f"{reg_cpu / net_cpu:.0f}x faster (CPU time, batch 1)")
        all_ok |= dice_ok and speed_ok and fold_ok
    return all_ok


def benchmark_3d(args, device: torch.device) -> None:
    """3D (GPU): a half-resolution network trained here vs regedu.register, no SyN (minutes per pair on a CPU)."""
    kw = dict(ndim=3, resolution=args.resolution_3d)
    train_set = PairDataset("brain", mode="train", size=10**6, seed=args.seed, **kw)
    pairs = [PairDataset("brain", mode="eval", size=args.pairs_3d, **kw)[i] for i in range(args.pairs_3d)]
    net = L.RegistrationNet(3, features=(16, 32, 32, 32), scale=0.5)
    _, cpu, wall = clock(lambda: L.train(net, train_set, "unsupervised", steps=args.steps_3d, lr=1e-3, batch_size=2,
                                         device=device, seed=args.seed, progress=False, similarity="lncc", weight=0.05))
    print(f"\n== 3D ({args.resolution_3d} mm, {len(pairs)} pairs): trained {args.steps_3d} steps in {wall:.0f} s on "
          f"{describe_device(device)}")
    net.eval()
    for key in ("network", "register"):
        dice, fold, times = [], [], []
        for item in pairs:
            if key == "network":
                f, m = item["fixed"][None].to(device), item["moving"][None].to(device)
                with torch.inference_mode():
                    net(f, m)
                    sync(device)
                    out, _, w = clock(lambda: net(f, m))
                    sync(device)
                dvf = out["dvf"]
            else:
                dvf, _, w = clock(lambda: run_register(item, args.transform))
            d, fo = score(item, dvf)
            dice.append(d)
            fold.append(fo)
            times.append(w)
        print(f"{key:10s} Dice {statistics.mean(dice):.4f}  max folding {100 * max(fold):.4f} %  wall {1e3 * statistics.median(times):.1f} ms/pair")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="unsupervised-2d", help="pretrained model name (regedu.learning.pretrained)")
    ap.add_argument("--train", type=int, default=0, metavar="STEPS", help="train the network from scratch for STEPS steps instead")
    ap.add_argument("--passes", type=int, default=2, help="also the network applied this many times (recursive cascade); 1: only once")
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--size", type=int, default=64, help="2D image size (the pretrained network expects 64)")
    ap.add_argument("--repeats", type=int, default=10, help="timed forward passes of the network per pair (median counts)")
    ap.add_argument("--transform", default="bspline", help="regedu.register's transformation model")
    ap.add_argument("--device", default="cpu", help="where the network runs (the peers run on the CPU)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--3d", dest="with_3d", action="store_true", help="also a 3D network vs regedu.register (for a GPU)")
    ap.add_argument("--steps-3d", type=int, default=2000)
    ap.add_argument("--pairs-3d", type=int, default=4)
    ap.add_argument("--resolution-3d", type=int, default=4, choices=(2, 4))
    args = ap.parse_args(argv)
    logging.getLogger("dipy").setLevel(logging.WARNING)
    logging.disable(logging.INFO)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    import dipy

    print(f"regedu {regedu.__version__}, torch {torch.__version__}, dipy {dipy.__version__}")
    ok = benchmark_2d(args, device)
    if args.with_3d:
        benchmark_3d(args, device)
    print("\nall 2D targets met" if ok else "\nsome 2D targets NOT met (see above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
