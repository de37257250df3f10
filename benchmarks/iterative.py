"""Iterative deformable registration: regedu against dipy's SyN on the same held-out pairs.

Both methods register the same pairs (regedu.data's evaluation pairs: several 2D brain slices and one
3D brain volume, each with a known synthetic deformation and independent intensity changes), measured
in one run, and are scored the same way: the moving labels are warped with each method's displacement
field (nearest neighbour, regedu.warp_labels) and compared with the fixed labels (mean Dice over CSF,
grey and white matter); folding = share of voxels with det(J) <= 0 (regedu.folding_fraction). dipy's
displacement field is converted to regedu's convention (voxels, tensor axis order, pull-back) and the
conversion is checked against dipy's own warp of the moving image.

Real scans (``--real``, on by default): dipy's real T1 coronal slice of one adult (256 x 256, ~1 mm;
``regedu.data.real.load_t1_slice``, labelled by its own intensity-only tissue segmentation) registered
from the MNI template's coronal slice at three levels (1 mm), as atlas-based segmentation transfer.
Both methods run two stages and are timed together: regedu ``register(transform="affine")`` then
``register(transform="bspline", init=affine)``; dipy centre of mass -> translation -> rigid -> affine
(MI, dipy's affine tutorial settings) then SyN (CC) started from that affine. dipy's total mapping is
converted to a voxel displacement field by mapping the coordinate images.

Timing is the CPU time of the registration call only (both run in this process on one thread, so CPU
time is the time on an otherwise idle core; wall time on a shared machine measures the neighbours too) (each method builds its own pyramid), after one
untimed warm-up run of each; every pair is timed --repeats times (default 3) per method and the fastest
run counts, for both methods alike (the run least disturbed by other work on the machine; this machine's
CPU time of one run varies by 10-30 %). The peer is dipy's SymmetricDiffeomorphicRegistration with CCMetric(radius=4,
sigma_diff=2), level_iters=[100, 50, 25] (the values of dipy's SyN tutorial); regedu runs
``regedu.register(fixed, moving, transform=..., similarity="lncc")`` with its defaults.

Usage:
    python benchmarks/iterative.py               # 8 2D pairs (4 slices x 2) and one 3D pair (2 mm)
    python benchmarks/iterative.py --quick       # 4 2D pairs and a 4 mm 3D pair
    python benchmarks/iterative.py --no-3d --transform svf

ANTs (``pip install antspyx``; skipped where it is not installed, or with ``--no-ants``) registers the real
pairs as well, on one thread: ``ants.registration`` with "SyNCC" for the T1 slices and "SyN" (mutual
information) for the multi-modal volume, converted to a voxel DVF the same way and checked against ANTs' own
warp.

Target on the CPU (issue 16): Dice above the peer's by at least 0.01, time at most 0.2x the peer's, no folding
(below 0.1 % of the labelled voxels), for each group (2D, 3D, real 2D, real 3D MI); and the lecture's
non-parametric models (dense, svf) within 2x of the B-spline model's time on the 3D pair (``--no-models`` skips
that comparison).
On a GPU, regedu's 2D and 3D times on the GPU are printed as well.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")  # ANTs (where installed) on one thread, like the others

import regedu  # noqa: E402
import regedu.data as data  # noqa: E402
from regedu.utils import describe_device  # noqa: E402

SLICES = [("axial", None), ("axial", -12), ("coronal", None), ("sagittal", None)]


def make_pairs(n_per_slice: int, resolution: int, with_3d: bool, resolution_3d: int) -> list[tuple[str, dict]]:
    pairs = []
    for plane, offset in SLICES:
        vol = data.load_brain(resolution)
        axis = {"sagittal": 2, "coronal": 1, "axial": 0}[plane]
        index = None if offset is None else vol.image.shape[2 + axis] // 2 + offset
        sl = data.brain_slice(plane, index, resolution=resolution)
        ds = data.PairDataset(sl, mode="eval", size=n_per_slice)
        name = f"2D {plane}" + ("" if offset is None else f"{offset:+d}")
        pairs += [(f"{name} #{i}", ds[i]) for i in range(n_per_slice)]
    if with_3d:
        ds = data.PairDataset("brain", mode="eval", size=1, ndim=3, resolution=resolution_3d)
        pairs.append((f"3D {resolution_3d} mm", ds[0]))
    return pairs


def clock() -> float:
    """CPU time of this process (both methods run here on one thread): on a machine shared with other work
    the wall time measures the neighbours as much as the method; GPU runs use the wall time."""
    return time.process_time()


def real_slice_pairs(levels=(None, -10, 10)) -> list[tuple[str, dict]]:
    """The real T1 slice (fixed) and the template's coronal slices at 1 mm zero-padded to 256 x 256 (moving)."""
    from regedu.data import real

    subject = real.load_t1_slice()
    H, W = subject.image.shape[2:]
    pairs = []
    for offset in levels:
        vol = data.load_brain(1)
        index = None if offset is None else vol.image.shape[3] // 2 + offset
        sl = data.brain_slice("coronal", index, resolution=1)
        h, w = sl.image.shape[2:]

        def pad(t: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(1, 1, H, W, dtype=t.dtype)
            out[..., (H - h) // 2:(H - h) // 2 + h, (W - w) // 2:(W - w) // 2 + w] = t
            return out[0]

        item = {"fixed": subject.image[0], "fixed_labels": subject.labels[0],
                "moving": pad(sl.image), "moving_labels": pad(sl.labels)}
        pairs.append((f"real T1 cor{'' if offset is None else f'{offset:+d}'}", item))
    return pairs


def real_multimodal_pair() -> tuple[str, dict]:
    """dipy's real whole-brain b = 0 (T2-weighted) volume, 58 x 58 x 24 at 4 x 4 x 5 mm (fixed), and the MNI T1
    template (2 mm) resampled onto its grid after matching the brains' centres of mass in world coordinates
    (moving). Labels: 1 CSF, 2 the rest of the brain; the fixed ones from the b = 0 image's own intensity
    segmentation (``regedu.data.real.tissue_segmentation``, T2 contrast), never from an atlas."""
    from regedu.data import real

    b0 = real.load_b0_volume()
    template = data.load_brain(2)

    def centre(v) -> torch.Tensor:  # world centre of mass of the brain mask (mm)
        idx = torch.nonzero(v.labels[0, 0] > 0).double().mean(0)
        return (v.affine @ torch.cat([idx, torch.ones(1, dtype=torch.float64)]))[:3]

    shift = torch.eye(4, dtype=torch.float64)
    shift[:3, 3] = centre(template) - centre(b0)
    A = torch.linalg.inv(template.affine) @ shift @ b0.affine  # b0 voxel -> template voxel
    smooth = regedu.filters.gaussian_blur(template.image, 1.0)
    moving = regedu.affine_warp(smooth, A.float(), shape=b0.image.shape[2:], padding_mode="zeros")
    t_labels = template.labels.clamp(max=2)  # 1 CSF, 2 grey + white matter
    moving_labels = regedu.affine_warp(t_labels, A.float(), shape=b0.image.shape[2:], mode="nearest", padding_mode="zeros")
    fixed_labels = real.tissue_segmentation(b0.image, b0.labels, contrast="t2").clamp(max=2)
    return "real b0 <- T1 (MI)", {"fixed": b0.image[0], "moving": moving[0], "fixed_labels": fixed_labels[0],
                                   "moving_labels": moving_labels[0], "labels": [1, 2]}


def run_dipy_affine_syn_3d(fixed: torch.Tensor, moving: torch.Tensor) -> tuple[torch.Tensor, float, object]:
    """dipy, multi-modal: translation -> rigid -> affine (MI), then SyN with its multi-modal EM metric."""
    from dipy.align.imaffine import AffineRegistration, MutualInformationMetric
    from dipy.align.imwarp import SymmetricDiffeomorphicRegistration
    from dipy.align.metrics import EMMetric
    from dipy.align.transforms import AffineTransform3D, RigidTransform3D, TranslationTransform3D

    f = fixed[0, 0].double().cpu().numpy()
    m = moving[0, 0].double().cpu().numpy()
    eye = np.eye(4)
    start = clock()
    affreg = AffineRegistration(metric=MutualInformationMetric(32, None), level_iters=[1000, 100, 10],
                                sigmas=[3.0, 1.0, 0.0], factors=[4, 2, 1], verbosity=0)
    current = None
    for transform in (TranslationTransform3D(), RigidTransform3D(), AffineTransform3D()):
        current = affreg.optimize(f, m, transform, None, eye, eye, starting_affine=None if current is None else current.affine)
    assert current is not None
    sdr = SymmetricDiffeomorphicRegistration(EMMetric(3), level_iters=[100, 50, 25])
    mapping = sdr.optimize(f, m, eye, eye, current.affine)
    elapsed = clock() - start
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in f.shape], indexing="ij")
    dvf = np.stack([mapping.transform(g, interpolation="linear") - g for g in grids])
    return torch.from_numpy(dvf).float()[None], elapsed, mapping


def run_dipy_affine_syn(fixed: torch.Tensor, moving: torch.Tensor) -> tuple[torch.Tensor, float, object]:
    """dipy: centre of mass -> translation -> rigid -> affine (MI), then SyN (CC) from that affine (2D)."""
    from dipy.align.imaffine import AffineRegistration, MutualInformationMetric, transform_centers_of_mass
    from dipy.align.imwarp import SymmetricDiffeomorphicRegistration
    from dipy.align.metrics import CCMetric
    from dipy.align.transforms import AffineTransform2D, RigidTransform2D, TranslationTransform2D

    f = fixed[0, 0].double().cpu().numpy()
    m = moving[0, 0].double().cpu().numpy()
    eye = np.eye(3)
    start = clock()
    current = transform_centers_of_mass(f, eye, m, eye)
    affreg = AffineRegistration(metric=MutualInformationMetric(32, None), level_iters=[1000, 100, 10],
                                sigmas=[3.0, 1.0, 0.0], factors=[4, 2, 1], verbosity=0)
    for transform in (TranslationTransform2D(), RigidTransform2D(), AffineTransform2D()):
        current = affreg.optimize(f, m, transform, None, eye, eye, starting_affine=current.affine)
    sdr = SymmetricDiffeomorphicRegistration(CCMetric(2, sigma_diff=2.0, radius=4), level_iters=[100, 50, 25])
    mapping = sdr.optimize(f, m, eye, eye, current.affine)
    elapsed = clock() - start
    # the total pull-back map x -> prealign(x + d(x)) evaluated on the coordinate images
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in f.shape], indexing="ij")
    dvf = np.stack([mapping.transform(g, interpolation="linear") - g for g in grids])
    return torch.from_numpy(dvf).float()[None], elapsed, mapping


def ants_available() -> bool:
    try:
        import ants  # noqa: F401  (antspyx, optional: pip install antspyx)
    except ImportError:
        return False
    return True


def run_ants(fixed: torch.Tensor, moving: torch.Tensor, kind: str) -> tuple[torch.Tensor, float, float]:
    """ANTs (antspyx) ``ants.registration(type_of_transform=kind)`` with its defaults, on one thread: "SyNCC"
    (rigid + affine + SyN with cross-correlation) for one modality, "SyN" (mutual information throughout) for
    two. Both images get the identity geometry (spacing 1, origin 0), as dipy does here, so ANTs' index
    space is the tensor's axis order. Returns the total pull-back map as a voxel DVF (the moving grid's
    coordinate images pushed through ANTs' forward transforms), the CPU time of the registration call,
    and the largest difference between regedu.warp with that DVF and ANTs' own warped image."""
    import ants

    f = ants.from_numpy(fixed[0, 0].cpu().numpy().astype(np.float32))
    m = ants.from_numpy(moving[0, 0].cpu().numpy().astype(np.float32))
    start = clock()
    reg = ants.registration(f, m, type_of_transform=kind, verbose=False)
    elapsed = clock() - start
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in fixed.shape[2:]], indexing="ij")
    dvf = torch.from_numpy(np.stack([ants.apply_transforms(f, ants.from_numpy(g), reg["fwdtransforms"],
                                                           interpolator="linear").numpy() - g for g in grids]))[None]
    err = float((regedu.warp(moving.cpu(), dvf)[0, 0] - torch.from_numpy(reg["warpedmovout"].numpy())).abs().max())
    return dvf, elapsed, err


def compare_ants(pairs: list[tuple[str, dict]], rows: list[dict], repeats: int) -> bool:
    """ANTs on the real pairs (where antspyx is installed), against the regedu runs of the main table.
    Target (issue 16): on the real multi-modal 3D pair, regedu's time at or below ANTs SyN's."""
    import ants

    print()
    print(f"ANTs (antspyx {ants.__version__}, one thread) on the real pairs: SyNCC for one modality, SyN (MI) for two; "
          f"fastest of {repeats}")
    ok = True
    by_name = {r["name"]: r for r in rows}
    groups: dict[str, list[tuple[float, float, float, float]]] = {}
    for name, item in pairs:
        if not name.startswith("real") or name not in by_name:
            continue
        it = batched(item)
        kind = "SyN" if "MI" in name else "SyNCC"
        dvf, t_a, err = timed(lambda: run_ants(it["fixed"], it["moving"], kind), repeats)
        d_a, fold_a = score(it, dvf)
        r = by_name[name]
        groups.setdefault(r["ndim"], []).append((d_a, r["d_o"], t_a, r["t_o"]))
        print(f"  {name:<20} ANTs {kind:<6} Dice {d_a:.4f} folding {100 * fold_a:.3f}% time {t_a:6.2f} s | ours Dice {r['d_o']:.4f} "
              f"time {r['t_o']:5.2f} s (ratio {r['t_o'] / t_a:.2f}) | check: regedu.warp with ANTs' field reproduces its warp to {err:.1e}")
    for group, vals in groups.items():
        d_a = statistics.mean(v[0] for v in vals)
        d_o = statistics.mean(v[1] for v in vals)
        t_a = sum(v[2] for v in vals)
        t_o = sum(v[3] for v in vals)
        line = f"  {group}: mean Dice ANTs {d_a:.4f}, ours {d_o:.4f} ({d_o - d_a:+.4f}); time ANTs {t_a:.2f} s, ours {t_o:.2f} s (ratio {t_o / t_a:.2f})"
        if group == "real 3D MI":
            met = t_o <= t_a
            ok &= met
            line += f"; target (time at or below ANTs SyN's): {'met' if met else 'NOT met'}"
        print(line)
    return ok


def run_regedu_two_stage(fixed, moving, transform: str, similarity: str | None) -> tuple[torch.Tensor, float]:
    start = clock()
    affine = regedu.register(fixed, moving, transform="affine", similarity=similarity, progress=False)
    result = regedu.register(fixed, moving, transform=transform, similarity=similarity, init=affine, progress=False)
    return result.dvf, clock() - start


def batched(item: dict, device=None) -> dict:
    return {k: v[None].to(device) if isinstance(v, torch.Tensor) else v for k, v in item.items()}


def run_dipy(fixed: torch.Tensor, moving: torch.Tensor) -> tuple[torch.Tensor, float, object]:
    from dipy.align.imwarp import SymmetricDiffeomorphicRegistration
    from dipy.align.metrics import CCMetric

    ndim = fixed.dim() - 2
    sdr = SymmetricDiffeomorphicRegistration(CCMetric(ndim, sigma_diff=2.0, radius=4), level_iters=[100, 50, 25])
    f = fixed[0, 0].double().cpu().numpy()
    m = moving[0, 0].double().cpu().numpy()
    start = clock()
    mapping = sdr.optimize(f, m)
    elapsed = clock() - start
    # dipy's forward field: (*S, ndim) displacement in voxels (identity grid-to-world affines), axis order
    # of the array, pulling the moving image back onto the static grid: moved(x) = moving(x + d(x))
    field = torch.from_numpy(np.asarray(mapping.get_forward_field())).float()
    dvf = field.movedim(-1, 0)[None].contiguous()
    return dvf, elapsed, mapping


def run_regedu(fixed, moving, transform: str, similarity: str | None) -> tuple[torch.Tensor, float]:
    if fixed.is_cuda:
        torch.cuda.synchronize()
    now = time.perf_counter if fixed.is_cuda else clock
    start = now()
    result = regedu.register(fixed, moving, transform=transform, similarity=similarity, progress=False)
    if fixed.is_cuda:
        torch.cuda.synchronize()
    return result.dvf, now() - start


def score(item: dict, dvf: torch.Tensor) -> tuple[float, float]:
    """Mean Dice over CSF/GM/WM and the folding fraction inside the fixed image's labelled region
    (the real pairs' background is empty space, where the map is unconstrained)."""
    dvf = dvf.to(item["moving_labels"].device)
    warped = regedu.warp_labels(item["moving_labels"], dvf, mode="nearest")
    region = (item["fixed_labels"] > 0).float()
    labels = item.get("labels", [1, 2, 3])
    return float(regedu.dice(item["fixed_labels"], warped, labels=labels)), float(regedu.folding_fraction(dvf, mask=region)[0])


def timed(fn, repeats: int):
    """Run ``fn`` ``repeats`` times; keep the output of the fastest run."""
    best = None
    for _ in range(repeats):
        out = fn()
        if best is None or out[1] < best[1]:
            best = out
    return best


MODEL_TIME_LIMIT = 2.0  # issue 16: the non-parametric models within 2x of the B-spline model's time in 3D


def compare_models(pairs: list[tuple[str, dict]], repeats: int) -> bool:
    """The lecture's three deformable models on the same 3D pair(s), each with register's defaults: Dice,
    folding and CPU time (fastest of ``repeats``), and the time of dense and SVF relative to the B-spline
    model (target <= 2x)."""
    if not pairs:
        return True
    print()
    print(f"deformable models on the 3D pair (register's defaults; target: dense and svf within {MODEL_TIME_LIMIT:.0f}x "
          f"of bspline's time, no folding; fastest of {repeats})")
    ok = True
    for name, item in pairs:
        it = batched(item)
        results = {}
        for transform in ("bspline", "dense", "svf"):
            dvf, t = timed(lambda: run_regedu(it["fixed"], it["moving"], transform, None), repeats)
            d, fold = score(it, dvf)
            results[transform] = (d, fold, t)
        t_b = results["bspline"][2]
        for transform, (d, fold, t) in results.items():
            ratio = t / t_b
            met = transform == "bspline" or (ratio <= MODEL_TIME_LIMIT and fold < 0.001)
            ok &= met
            print(f"  {name:<12} {transform:<8} Dice {d:.4f}  folding {100 * fold:.3f}%  time {t:6.2f} s  "
                  f"({ratio:.2f}x bspline){'' if transform == 'bspline' else '  ' + ('met' if met else 'NOT met')}")
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 2D pairs and a 4 mm 3D volume")
    parser.add_argument("--no-3d", action="store_true", help="skip the 3D pair")
    parser.add_argument("--transform", default="bspline", help="regedu transformation model (default bspline)")
    parser.add_argument("--similarity", default=None, help="regedu similarity (default: register's default)")
    parser.add_argument("--no-real", action="store_true", help="skip the real-scan pairs")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per pair and method (the fastest counts, for both methods alike)")
    parser.add_argument("--resolution-3d", type=int, default=None, help="mm of the 3D volume (default 2, --quick 4)")
    parser.add_argument("--only-3d", action="store_true", help="skip the 2D pairs")
    parser.add_argument("--no-ants", action="store_true",
                        help="skip ANTs on the real pairs (run where antspyx is installed; SyNCC takes ~20 s per real 2D pair)")
    parser.add_argument("--no-models", action="store_true",
                        help="skip the comparison of the deformable models (bspline, dense, svf) on the 3D pair")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for regedu (default 1: dipy's SyN runs on one core, so both get the same CPU)")
    args = parser.parse_args(argv)
    logging.getLogger("dipy").setLevel(logging.WARNING)
    logging.disable(logging.INFO)

    import dipy

    res3d = args.resolution_3d or (4 if args.quick else 2)
    torch.set_num_threads(args.threads)
    pairs = make_pairs(1 if args.quick else 2, 2, not args.no_3d, res3d)
    if not args.no_real and not args.only_3d:
        pairs += real_slice_pairs((None,) if args.quick else (None, -10, 10))
    if not args.no_real and not args.no_3d:
        pairs.append(real_multimodal_pair())
    if args.only_3d:
        pairs = [p for p in pairs if p[0].startswith("3D")]
    cpu = torch.device("cpu")
    print(f"regedu {regedu.__version__} (torch {torch.__version__}) vs dipy {dipy.__version__} SyN")
    print(f"CPU: {describe_device(cpu)} for regedu, 1 thread for dipy's SyN; regedu: register(transform={args.transform!r}, "
          f"similarity={args.similarity!r}) with its defaults")
    gpu = torch.device("cuda") if torch.cuda.is_available() else None
    if gpu is not None:
        print(f"GPU: {describe_device(gpu)}")

    # warm-up (not timed): first calls pay for lazy initialisation in both libraries
    warm = batched(pairs[0][1])
    run_dipy(warm["fixed"], warm["moving"])
    run_regedu(warm["fixed"], warm["moving"], args.transform, args.similarity)

    header = f"{'pair':<20} {'size':>12} {'Dice before':>11} | {'Dice SyN':>8} {'Dice ours':>9} | {'fold SyN':>8} {'fold ours':>9} | {'t SyN':>7} {'t ours':>7} {'ratio':>6}"
    if gpu is not None:
        header += f" | {'t GPU':>7}"
    print(header)
    print("-" * len(header))
    rows = []
    for name, item in pairs:
        it = batched(item)
        f, m = it["fixed"], it["moving"]
        real = name.startswith("real")
        multimodal = "MI" in name
        reps = args.repeats
        peer = run_dipy_affine_syn_3d if multimodal else run_dipy_affine_syn if real else run_dipy
        dvf_p, t_p, mapping = timed(lambda: peer(f, m), reps)
        # check the conversion of dipy's field: regedu.warp with it must reproduce dipy's own warp
        own = torch.from_numpy(np.asarray(mapping.transform(m[0, 0].double().numpy()))).float()
        conv_err = float((regedu.warp(m, dvf_p)[0, 0] - own).abs().max()) if not real else 0.0
        sim = "mi" if multimodal else args.similarity
        dvf_o, t_o = timed(lambda: (run_regedu_two_stage if real else run_regedu)(f, m, args.transform, sim), reps)
        t_g = None
        if gpu is not None:
            g = batched(item, gpu)
            run_regedu(g["fixed"], g["moving"], args.transform, args.similarity)  # warm-up on this size
            _, t_g = timed(lambda: run_regedu(g["fixed"], g["moving"], args.transform, args.similarity), reps)
        before = float(regedu.dice(it["fixed_labels"], it["moving_labels"], labels=item.get("labels", [1, 2, 3])))
        d_p, fold_p = score(it, dvf_p)
        d_o, fold_o = score(it, dvf_o)
        group = ("real 3D MI" if multimodal else "real 2D") if real else f"{f.dim() - 2}D"
        rows.append(dict(name=name, ndim=group, before=before, d_p=d_p, d_o=d_o, fold_p=fold_p, fold_o=fold_o,
                         t_p=t_p, t_o=t_o, t_g=t_g, conv_err=conv_err))
        size = "x".join(str(s) for s in f.shape[2:])
        line = (f"{name:<20} {size:>12} {before:>11.4f} | {d_p:>8.4f} {d_o:>9.4f} | {100 * fold_p:>7.3f}% {100 * fold_o:>8.3f}% | "
                f"{t_p:>6.2f}s {t_o:>6.2f}s {t_o / t_p:>6.2f}")
        if gpu is not None:
            line += f" | {t_g:>6.3f}s"
        print(line, flush=True)

    print()
    ok = True
    for ndim in ("2D", "3D", "real 2D", "real 3D MI"):
        sel = [r for r in rows if r["ndim"] == ndim]
        if not sel:
            continue
        d_p = statistics.mean(r["d_p"] for r in sel)
        d_o = statistics.mean(r["d_o"] for r in sel)
        t_p = sum(r["t_p"] for r in sel)
        t_o = sum(r["t_o"] for r in sel)
        fold_o = max(r["fold_o"] for r in sel)
        fold_p = max(r["fold_p"] for r in sel)
        wins = sum(r["d_o"] >= r["d_p"] for r in sel)
        print(f"{ndim} ({len(sel)} pair{'s' if len(sel) > 1 else ''}): mean Dice SyN {d_p:.4f}, ours {d_o:.4f} "
              f"(ratio {d_o / d_p:.3f}; ours >= SyN on {wins}/{len(sel)}); max folding SyN {100 * fold_p:.3f}%, "
              f"ours {100 * fold_o:.3f}%; total time SyN {t_p:.2f} s, ours {t_o:.2f} s (ratio {t_o / t_p:.2f})")
        if gpu is not None:
            print(f"    regedu on {describe_device(gpu)}: total {sum(r['t_g'] for r in sel):.3f} s")
        met = d_o >= d_p + 0.01 and t_o <= 0.2 * t_p and fold_o < 0.001
        print(f"    target (Dice >= SyN + 0.01, time <= 0.2x, folding < 0.1 %): {'met' if met else 'NOT met'}")
        ok &= met
    if not args.no_ants and any(r["name"].startswith("real") for r in rows):
        if ants_available():
            ok &= compare_ants(pairs, rows, args.repeats)
        else:
            print("\nANTs: not installed (pip install antspyx), so not compared")
    if not args.no_models:
        ok &= compare_models([(name, item) for name, item in pairs if name.startswith("3D")], args.repeats)
    worst = max(r["conv_err"] for r in rows)
    print(f"check: dipy's field converted to regedu's convention reproduces dipy's warp to {worst:.1e} (max abs intensity)")
    print(f"all targets (CPU: Dice >= SyN + 0.01, time <= 0.2x, folding < 0.1 %): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
