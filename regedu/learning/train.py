"""The one training loop of the course, validation, and checkpoints.

Every model of :mod:`regedu.learning` (U-Net, affine net, chain, STN classifier, learned similarity,
RL Q-network) is trained by :func:`train`; what differs is the **objective**
(:mod:`regedu.learning.objectives`), which says how to run the model on a batch, what loss to
minimise and what to measure on held-out data. The loop itself is the textbook one::

    for step in range(steps):
        batch = next(data)                        # fresh on-the-fly pairs for a train-mode PairDataset
        output = objective.forward(model, batch)  # e.g. model(fixed, moving) -> {"dvf", "moved", ...}
        loss, logs = objective(output, batch)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        every `val_every` steps (default: once per epoch): history.val <- evaluate(model, val_data)
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from ..utils import get_device, seed_everything
from .objectives import Objective, get_objective


@dataclass
class History:
    """What happened during training, for plotting.

    ``train``: per optimisation step, lists under ``"step"``, ``"loss"`` and the objective's other logs.
    ``val``: per validation (once per epoch by default), lists under ``"epoch"``, ``"step"``,
    ``"loss"``, ``"time_per_pair"`` (seconds per pair of a forward pass) and the objective's metrics
    (``"dice"``, ``"epe"``, ``"folding"``, ``"mse"`` for registration; ``"accuracy"`` for classifiers).
    ``optimizer``: the optimizer of the run (not saved by :meth:`to_dict`), so that
    ``train(model, data, history=history)`` continues where it stopped.
    """

    train: dict[str, list[float]] = field(default_factory=dict)
    val: dict[str, list[float]] = field(default_factory=dict)
    optimizer: torch.optim.Optimizer | None = field(default=None, repr=False, compare=False)

    def append(self, part: str, values: dict[str, float]) -> None:
        store = getattr(self, part)
        n = len(next(iter(store.values()))) if store else 0
        for k, v in values.items():
            store.setdefault(k, [math.nan] * n).append(float(v))
        for k, lst in store.items():  # keys missing this time
            if len(lst) < n + 1:
                lst.append(math.nan)

    @property
    def steps(self) -> int:
        """Number of optimisation steps taken so far."""
        return int(self.train["step"][-1]) if self.train.get("step") else 0

    def to_dict(self) -> dict[str, dict[str, list[float]]]:
        return {"train": {k: list(v) for k, v in self.train.items()}, "val": {k: list(v) for k, v in self.val.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(train={k: list(v) for k, v in d.get("train", {}).items()}, val={k: list(v) for k, v in d.get("val", {}).items()})

    def plot(self, keys: Iterable[str] | None = None, smooth: int = 10):
        """Training loss (moving average over ``smooth`` steps) and validation metrics against the step.

        Returns the matplotlib figure.
        """
        import matplotlib.pyplot as plt

        keys = list(keys) if keys is not None else [k for k in ("loss", "dice", "epe", "folding", "accuracy") if k in self.val or k in self.train]
        fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), squeeze=False)
        for ax, key in zip(axes[0], keys):
            if key in self.train:
                y = torch.tensor(self.train[key])
                k = max(1, min(smooth, len(y)))
                ys = torch.nn.functional.avg_pool1d(y[None, None], k, 1)[0, 0] if len(y) >= k else y
                ax.plot(self.train["step"][k - 1:], ys.tolist(), label="train")
            if key in self.val:
                ax.plot(self.val["step"], self.val[key], "o-", label="validation")
            ax.set_title(key)
            ax.set_xlabel("step")
            ax.legend()
        fig.tight_layout()
        return fig


MAX_SHUFFLE = 1_000_000  # data sets with more items are read in order (no permutation in memory)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a (nested dict / list / tuple) batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _loader(data: Any, batch_size: int, shuffle: bool, seed: int) -> Iterable:
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        g = torch.Generator()
        g.manual_seed(seed)
        # a random permutation of a huge on-the-fly dataset (e.g. size=10**9) would not fit in memory,
        # and its items are random anyway: read those in order
        shuffle = shuffle and len(data) <= MAX_SHUFFLE
        return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=g, num_workers=0)
    if isinstance(data, Iterable):
        return data
    raise TypeError(f"train: data must be a torch Dataset, a DataLoader or an iterable of batches, got {type(data).__name__}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _batch_size(batch: Any) -> int:
    if isinstance(batch, dict):
        return int(next(v for v in batch.values() if isinstance(v, torch.Tensor)).shape[0])
    if isinstance(batch, (list, tuple)):
        return int(batch[0].shape[0])
    return int(batch.shape[0])


def _model_device(model: nn.Module) -> torch.device:
    p = next(itertools.chain(model.parameters(), model.buffers()), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Any,
    objective: str | Objective = "unsupervised",
    batch_size: int = 1,
    device: str | torch.device | None = None,
    max_batches: int | None = None,
    **objective_kwargs: Any,
) -> dict[str, float]:
    """Mean validation metrics of ``model`` on ``data`` (a Dataset, DataLoader or iterable of batches).

    Returns the objective's metrics averaged over pairs (e.g. ``dice``, ``epe``, ``folding``, ``mse``),
    the objective's ``loss`` and ``time_per_pair``: seconds of the forward pass per pair (inference
    time, synchronised on GPUs). Runs the model in ``eval()`` mode and restores the previous mode.
    """
    obj = get_objective(objective, **objective_kwargs)
    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    n, seconds = 0, 0.0
    try:
        for k, batch in enumerate(_loader(data, batch_size, False, 0)):
            if max_batches is not None and k >= max_batches:
                break
            batch = to_device(batch, device)
            b = _batch_size(batch)
            _sync(device)
            t0 = time.perf_counter()
            output = obj.forward(model, batch)
            _sync(device)
            seconds += time.perf_counter() - t0
            values = dict(obj.metrics(output, batch))
            try:
                values.setdefault("loss", float(obj(output, batch)[0]))
            except (KeyError, ValueError):
                pass
            for key, v in values.items():
                sums[key] = sums.get(key, 0.0) + v * b
            n += b
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("evaluate: data yielded no batches")
    result = {k: v / n for k, v in sums.items()}
    result["time_per_pair"] = seconds / n
    return result


def train(
    model: nn.Module,
    data: Any,
    objective: str | Objective = "unsupervised",
    steps: int | None = None,
    epochs: int | None = None,
    lr: float = 1e-3,
    batch_size: int = 4,
    device: str | torch.device | None = None,
    val_data: Any = None,
    val_every: int | None = None,
    val_batch_size: int = 4,
    optimizer: torch.optim.Optimizer | None = None,
    history: History | None = None,
    seed: int | None = 0,
    progress: bool = True,
    checkpoint: str | Path | None = None,
    grad_clip: float | None = None,
    **objective_kwargs: Any,
) -> History:
    """Train ``model`` on ``data`` with ``objective``: the single loop for every model of the course.

    Args:
        model: any module whose output the objective understands (see :mod:`~regedu.learning.networks`).
        data: a torch ``Dataset`` (wrapped in a ``DataLoader`` of ``batch_size``, shuffled unless it has more
            than a million items; a train-mode
            :class:`regedu.data.PairDataset` makes fresh random pairs every item), a ``DataLoader``, or any
            iterable of batches (re-iterated when exhausted).
        objective: name (``"supervised"``, ``"weak"``, ``"unsupervised"``, ``"diffeomorphic"``, ``"cycle"``,
            ``"classification"``, ``"regression"``) or an :class:`~regedu.learning.objectives.Objective`;
            ``**objective_kwargs`` go to its constructor (e.g. ``similarity="ncc", weight=0.5``).
        steps / epochs: training length in optimisation steps, or in passes over ``data`` (give one;
            default 1 epoch).
        lr: Adam learning rate (ignored if ``optimizer`` is given).
        device: where to train (default :func:`regedu.get_device`: CUDA, MPS, then CPU; or the environment
            variable ``REGEDU_DEVICE``); the model is moved there.
        val_data: held-out data (e.g. ``PairDataset(..., mode="eval")``), evaluated with :func:`evaluate`
            every ``val_every`` steps (default: once per epoch) and at the end.
        optimizer / history: continue a previous run: pass its history (which keeps the run's optimizer),
            or the ones of :func:`load_checkpoint`. Steps are counted on from ``history.steps``.
        seed: seeds Python, NumPy and torch (:func:`regedu.seed_everything`) and the data order; ``None`` keeps the state.
        progress: show a ``tqdm.auto`` progress bar.
        checkpoint: path; if given, :func:`save_checkpoint` writes model, optimizer, history and the
            training configuration there after every validation and at the end.
        grad_clip: clip the gradient norm to this value.

    Returns:
        The :class:`History` (also stored as ``model.history``).
    """
    from tqdm.auto import tqdm

    obj = get_objective(objective, **objective_kwargs)
    if steps is not None and epochs is not None:
        raise ValueError(f"train: give steps or epochs, not both (got steps={steps}, epochs={epochs})")
    if seed is not None:
        seed_everything(seed, deterministic=False)
    device = torch.device(device) if device is not None else get_device()
    model.to(device)
    loader = _loader(data, batch_size, True, 0 if seed is None else seed)
    epoch_len = len(loader) if hasattr(loader, "__len__") else None
    if steps is None:
        if epoch_len is None:
            raise ValueError("train: data has no length, so give steps (not epochs)")
        steps = (1 if epochs is None else int(epochs)) * epoch_len
    if steps < 1:
        raise ValueError(f"train: steps must be at least 1, got {steps}")
    val_every = int(val_every) if val_every is not None else (epoch_len or steps)
    history = history if history is not None else History()
    optimizer = optimizer or history.optimizer or torch.optim.Adam(model.parameters(), lr=lr)
    history.optimizer = optimizer
    start = history.steps
    config = {"objective": type(obj).__name__, "objective_config": {k: v for k, v in vars(obj).items()
                                                                     if not k.startswith("_") and isinstance(v, (int, float, str, bool, type(None)))},
              "lr": lr, "batch_size": batch_size, "seed": seed, "steps": start + steps}

    def validate(step: int) -> None:
        metrics = evaluate(model, val_data, obj, batch_size=val_batch_size, device=device)
        history.append("val", {"step": step, "epoch": step / epoch_len if epoch_len else step / val_every, **metrics})
        if checkpoint is not None:
            save_checkpoint(checkpoint, model, optimizer, history, config)

    model.train()
    iterator = iter(loader)
    bar = tqdm(total=steps, disable=not progress, desc=f"train ({obj.name})", leave=False)
    try:
        for step in range(start + 1, start + steps + 1):
            try:
                batch = next(iterator)
            except StopIteration:
                iterator = iter(loader)
                batch = next(iterator)
            batch = to_device(batch, device)
            output = obj.forward(model, batch)
            loss, logs = obj(output, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"train: the loss became {float(loss.detach())} at step {step}; lower lr or the weights")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            history.append("train", {"step": step, **logs})
            bar.update(1)
            bar.set_postfix(loss=f"{logs.get('loss', float(loss.detach())):.4g}")
            if val_data is not None and (step - start) % val_every == 0:
                validate(step)
    finally:
        bar.close()
    if val_data is not None and (not history.val.get("step") or history.val["step"][-1] != start + steps):
        validate(start + steps)
    if checkpoint is not None:
        save_checkpoint(checkpoint, model, optimizer, history, config)
    model.history = history
    return history


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------

@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns: the model, its optimizer (or None), the history and the config."""

    model: nn.Module
    optimizer: torch.optim.Optimizer | None
    history: History
    config: dict[str, Any]


def save_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    history: History | None = None, config: dict[str, Any] | None = None) -> Path:
    """Save model weights, the model's class and constructor ``config``, optimizer state, history and a
    free ``config`` dict (plain Python values) to ``path``, so that :func:`load_checkpoint` rebuilds
    everything exactly."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": "regedu.learning.checkpoint/1",
        "model_class": type(model).__name__,
        "model_config": getattr(model, "config", None),
        "model_state": model.state_dict(),
        "optimizer_class": type(optimizer).__name__ if optimizer is not None else None,
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "history": (history or getattr(model, "history", None) or History()).to_dict(),
        "config": dict(config or {}),
    }
    torch.save(state, path)
    return path


def load_checkpoint(path: str | Path, model: nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None,
                    map_location: str | torch.device | None = "cpu") -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint` (or by :func:`train` with ``checkpoint=``).

    ``model``: load the weights into this module; if None, the model is rebuilt from the stored class
    name and config. ``optimizer``: load the state into it; if None and a state was saved, an optimizer
    of the saved class is created for the model's parameters. ``map_location``: where tensors go.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_checkpoint: no checkpoint file at {str(path)!r}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a corrupt or foreign file
        raise ValueError(f"load_checkpoint: {str(path)!r} is not a readable regedu checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or state.get("format") != "regedu.learning.checkpoint/1":
        raise ValueError(f"load_checkpoint: {str(path)!r} is not a regedu.learning checkpoint (missing format tag)")
    if model is None:
        from .networks import build_model

        if state["model_config"] is None:
            raise ValueError(f"load_checkpoint: the checkpoint holds a {state['model_class']} without a config; pass model=")
        model = build_model(state["model_class"], state["model_config"])
    model.load_state_dict(state["model_state"])
    if map_location is not None:
        model.to(map_location)
    if state["optimizer_state"] is not None:
        if optimizer is None:
            optimizer = getattr(torch.optim, state["optimizer_class"])(model.parameters())
        optimizer.load_state_dict(state["optimizer_state"])
    history = History.from_dict(state["history"])
    history.optimizer = optimizer
    model.history = history
    return Checkpoint(model, optimizer, history, state["config"])
