"""Train the pretrained registration networks shipped in ``regedu/learning/weights/``.

    python scripts/train_weights.py                      # the default (CPU, 2D) model, about 6 minutes of CPU
    python scripts/train_weights.py --steps 600 --out /tmp/w   # a quick try, written elsewhere

The default model, ``"unsupervised-2d"``: a VoxelMorph-style :class:`regedu.learning.RegistrationNet`
working at half resolution (``scale=0.5``; the field is upsampled to the image), trained without ground
truth (LNCC + lambda * diffusion, :class:`regedu.learning.Unsupervised`) on fresh random pairs of 64 x 64
axial brain slices (``regedu.data.PairDataset(brain_slice(size=64), mode="train")``), with Adam and a
cosine learning-rate decay, on one CPU thread. After training it is scored on the held-out evaluation
pairs (``PairDataset(..., mode="eval")``: another deformation model and other seeds), and the weights
(``<name>.pt``, a state dict), their SHA-256 checksum, the model's class and config, the data, this
command and the held-out scores are written to ``manifest.json``, which
:func:`regedu.learning.pretrained.load` reads.

Seeded (``--seed``, default 0) and run on one thread. Measured for the shipped weights (2-core shared
machine, torch 2.13 CPU): 15000 steps in 350 s CPU; held-out Dice 0.883 (identity 0.670, dipy SyN 0.891),
no folding, EPE 0.32 voxels; with ``regedu.learning.pretrained.load(..., passes=2)`` Dice 0.899
(``python benchmarks/learned.py``). 6000 steps (157 s CPU) gave Dice 0.872.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import regedu  # noqa: E402
from regedu import learning as L  # noqa: E402
from regedu.data import PairDataset, brain_slice, load_brain  # noqa: E402
from regedu.learning import pretrained  # noqa: E402

MODELS = {
    "unsupervised-2d": dict(
        model=dict(ndim=2, channels=1, features=[16, 32, 32, 32], scale=0.5, norm="instance"),
        data=dict(size=64, plane="axial"),
        objective=dict(similarity="lncc", regulariser="diffusion", weight=0.5),
        steps=15000, batch_size=4, lr=3e-3,
    ),
    # the instructor mode's 3D model (lectures/05 with REGEDU_FULL=1: 80 x 96 x 80 volumes at 2 mm); trained on
    # the CPU here (no GPU was lent), so briefly: a starting point that a GPU run should replace
    "unsupervised-3d": dict(
        model=dict(ndim=3, channels=1, features=[16, 32, 32, 32], scale=0.5, norm="instance"),
        data=dict(kind="volume", resolution=2, size=[80, 96, 80]),
        objective=dict(similarity="lncc", regulariser="diffusion", weight=0.5),
        steps=1200, batch_size=2, lr=3e-3,
    ),
}


def template(spec: dict):
    """The training template: a 2D axial slice (default) or the 3D brain volume of ``spec["data"]``."""
    d = spec["data"]
    if d.get("kind") == "volume":
        return load_brain(resolution=d["resolution"], size=tuple(d["size"]))
    return brain_slice(d["plane"], size=d["size"])


def describe_data(spec: dict) -> str:
    d = spec["data"]
    if d.get("kind") == "volume":
        size = " x ".join(map(str, d["size"]))
        return (f"regedu.data.PairDataset(load_brain(resolution={d['resolution']}, size={tuple(d['size'])}), mode='train') "
                f"({size} volumes of the MNI ICBM152 template at {d['resolution']} mm, the package's default max_displacement, "
                f"intensities in [0, 1])")
    return (f"regedu.data.PairDataset(brain_slice({d['plane']!r}, size={d['size']}), mode='train') "
            f"({d['size']} x {d['size']} {d['plane']} slices of the MNI ICBM152 template at the package's default "
            f"max_displacement, intensities in [0, 1])")


def train_one(name: str, spec: dict, steps: int, seed: int, eval_pairs: int, out: Path, command: str) -> dict:
    regedu.seed_everything(seed, deterministic=False)
    source = template(spec)
    train_set = PairDataset(source, mode="train", size=10**9, seed=seed)
    eval_set = PairDataset(source, mode="eval", size=eval_pairs)
    net = L.RegistrationNet(**spec["model"])
    optimizer = torch.optim.Adam(net.parameters(), lr=spec["lr"])
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 0.5 * (1 + math.cos(math.pi * min(k, steps) / steps)))

    def callback(epoch: int, step: int, loss: float, model: torch.nn.Module) -> None:
        schedule.step()

    identity = L.evaluate(L.IdentityNet(), eval_set, "unsupervised", batch_size=eval_pairs, **spec["objective"])
    cpu0 = time.process_time()
    history = L.train(net, train_set, "unsupervised", steps=steps, batch_size=spec["batch_size"], optimizer=optimizer,
                      device="cpu", seed=seed, callback=callback, progress=True, **spec["objective"])
    cpu = time.process_time() - cpu0
    scores = L.evaluate(net, eval_set, "unsupervised", batch_size=1, **spec["objective"])
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.pt"
    torch.save({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, path)
    result = {"dice": round(scores["dice"], 4), "identity_dice": round(identity["dice"], 4),
              "folding": scores["folding"], "epe": round(scores["epe"], 3), "eval_pairs": eval_pairs,
              "train_cpu_seconds": round(cpu, 1), "final_train_loss": round(sum(history.train["loss"][-50:]) / 50, 4)}
    print(f"{name}: {steps} steps in {cpu:.0f} s CPU; held-out Dice {scores['dice']:.4f} (identity {identity['dice']:.4f}), "
          f"folding {scores['folding']:.5f}, EPE {scores['epe']:.3f} voxels; {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return {
        "file": path.name,
        "sha256": pretrained.sha256(path),
        "class": type(net).__name__,
        "config": net.config,
        "data": describe_data(spec),
        "objective": {"name": "unsupervised", **spec["objective"]},
        "training": {"steps": steps, "batch_size": spec["batch_size"], "lr": spec["lr"], "schedule": "cosine", "seed": seed,
                     "threads": torch.get_num_threads(), "torch": torch.__version__},
        "command": command,
        "result": result,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["unsupervised-2d"], choices=list(MODELS),
                    help="which models (default: the 2D one; the 3D one takes ~30 CPU minutes)")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: each model's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-pairs", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=pretrained.WEIGHTS_DIR, help="folder of the weights and manifest.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    manifest_path = args.out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"format": pretrained.FORMAT, "models": {}}
    for name in args.models:
        spec = MODELS[name]
        steps = args.steps or spec["steps"]
        command = "python scripts/train_weights.py --models " + name + (f" --steps {steps}" if args.steps else "") + \
                  (f" --seed {args.seed}" if args.seed else "")
        manifest["models"][name] = train_one(name, spec, steps, args.seed, args.eval_pairs, args.out, shlex.join(shlex.split(command)))
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        print(f"wrote {manifest_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
