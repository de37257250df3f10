"""Pretrained registration networks shipped with the package (no download, no network access).

Training a good network takes longer than a lecture allows; these weights were trained once by
``scripts/train_weights.py`` (the command and its measured result are stored with each entry) and are
loaded from ``regedu/learning/weights/``::

    from regedu.learning import pretrained
    net = pretrained.load("unsupervised-2d")     # an eval-mode RegistrationNet, ready to use
    out = net(fixed, moving)                     # {"dvf", "moved", ...}
    pretrained.info("unsupervised-2d")["data"]   # what it was trained on (and what it expects)

Every entry of ``weights/manifest.json`` names the weight file, its SHA-256 checksum, the model class and
constructor ``config`` (rebuilt with :func:`regedu.learning.layers.build_model`), the data it was trained
on and the training command. :func:`load` checks the checksum (a truncated or altered file is an error,
never a silently different network) and the shape of every tensor against the rebuilt model, then loads
the weights with ``torch.load(weights_only=True)`` (no code is executed from the file).

A network works on the kind of images it was trained on: the 2D weights expect 64 x 64 axial brain
slices with intensities in [0, 1], as ``regedu.data.brain_slice(size=64)`` and
``regedu.data.PairDataset`` produce them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .._checks import check_choice, check_number
from .layers import build_model
from .networks import RegistrationChain

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST = WEIGHTS_DIR / "manifest.json"
FORMAT = "regedu.learning.pretrained/1"

__all__ = ["load", "info", "available", "sha256", "WEIGHTS_DIR", "MANIFEST"]


def sha256(path: str | Path) -> str:
    """The SHA-256 checksum of a file, as a hex string."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _manifest(manifest: str | Path | None = None) -> dict[str, dict[str, Any]]:
    path = Path(manifest) if manifest is not None else MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"pretrained: no weights manifest at {str(path)!r}; create the weights with "
                                "`python scripts/train_weights.py`")
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"pretrained: the manifest {str(path)!r} is not valid JSON ({exc})") from None
    if not isinstance(entries, dict) or entries.get("format") != FORMAT:
        raise ValueError(f"pretrained: {str(path)!r} is not a regedu weights manifest (expected format {FORMAT!r})")
    return entries["models"]


def available(manifest: str | Path | None = None) -> list[str]:
    """Names of the pretrained models listed in the manifest."""
    return sorted(_manifest(manifest))


def info(name: str, manifest: str | Path | None = None) -> dict[str, Any]:
    """The manifest entry of ``name``: ``file``, ``sha256``, ``class``, ``config``, ``data`` (what it was
    trained on), ``command`` (how to retrain it) and ``result`` (held-out scores measured after training)."""
    models = _manifest(manifest)
    check_choice("pretrained", "name", name, tuple(sorted(models)))
    return dict(models[name])


def load(name: str = "unsupervised-2d", device: str | torch.device | None = None,
         manifest: str | Path | None = None, passes: int = 1) -> nn.Module:
    """Load the pretrained model ``name`` (see :func:`available`) from the package, offline.

    Checks the file's SHA-256 checksum against the manifest and every tensor's shape against the model
    rebuilt from the manifest's class and config; returns the model in ``eval()`` mode on ``device``
    (default CPU), with the manifest entry as ``model.pretrained``. Raises ``FileNotFoundError`` if the
    weight file is missing and ``ValueError`` if its checksum or a shape does not match.

    ``passes > 1`` applies the same network again to its own result, ``passes`` times, composing the
    fields (a :class:`~regedu.learning.RegistrationChain` of one shared network: a recursive cascade as in
    Zhao et al., 2019, Recursive cascaded networks for unsupervised medical image registration, ICCV).
    Each pass costs one forward pass; the second corrects what the first left (on the 16 held-out 2D pairs:
    Dice 0.883 with one pass, 0.899 with two; dipy's SyN 0.891; ``benchmarks/learned.py``).
    """
    passes = check_number("pretrained", "passes", passes, low=1, integer=True)
    entry = info(name, manifest)
    folder = Path(manifest).resolve().parent if manifest is not None else WEIGHTS_DIR
    path = folder / entry["file"]
    if not path.is_file():
        raise FileNotFoundError(f"pretrained: the weights of {name!r} are missing ({str(path)!r}); recreate them with "
                                f"`{entry.get('command', 'python scripts/train_weights.py')}`")
    digest = sha256(path)
    if digest != entry["sha256"]:
        raise ValueError(f"pretrained: the checksum of {str(path)!r} does not match the manifest (SHA-256 {digest[:12]}... "
                         f"instead of {entry['sha256'][:12]}...): the file is damaged or was replaced; recreate it with "
                         f"`{entry.get('command', 'python scripts/train_weights.py')}`")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"pretrained: {str(path)!r} does not hold a state dict of tensors")
    model = build_model(entry["class"], entry["config"])
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"pretrained: the weights of {name!r} do not fit a {entry['class']}({entry['config']}): "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ValueError(f"pretrained: weight {key!r} of {name!r} has shape {tuple(state[key].shape)}, the model "
                             f"{entry['class']} expects {tuple(tensor.shape)}")
    model.load_state_dict(state)
    setattr(model, "pretrained", entry)  # noqa: B010 (nn.Module's attribute typing)
    if passes > 1:
        model = RegistrationChain([model] * passes)
        setattr(model, "pretrained", entry)  # noqa: B010
    return model.to(torch.device(device) if device is not None else "cpu").eval()
