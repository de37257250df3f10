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

import difflib
import inspect
import itertools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sized

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Sampler

from .._checks import check_number
from ..utils import get_device, seed_everything
from .objectives import Objective, UnknownKeywordError, get_objective


@dataclass
class History:
    """What happened during training, for plotting.

    ``train``: per optimisation step, lists under ``"step"``, ``"loss"`` and the objective's other logs.
    ``val``: per validation (once per epoch by default), lists under ``"epoch"``, ``"step"``,
    ``"loss"``, ``"time_per_pair"`` (seconds per pair of a forward pass) and the objective's metrics
    (``"dice"``, ``"epe"``, ``"folding"``, ``"mse"`` for registration; ``"accuracy"`` for classifiers).
    ``optimizer``: the optimizer of the run (not saved by :meth:`to_dict`), so that
    ``train(model, data, history=history)`` continues where it stopped.
    ``data``: where the run is in its data: ``{"seed": s, "batches": n}``, the seed of the data order
    and the number of batches read so far; a continued run reads on from batch ``n`` (new items, not a
    replay of the first ones).
    ``snapshots``: ``(step, moved, dvf)`` of the model on one pair (detached, on the CPU), recorded every
    ``snapshot_every`` steps (and at the start), as :func:`regedu.register`'s ``history["snapshots"]``:
    what :class:`regedu.widgets.RegistrationPlayback` plays back. Not saved by :meth:`to_dict`.
    ``stopped_early``: the callback asked to stop.
    """

    train: dict[str, list[float]] = field(default_factory=dict)
    val: dict[str, list[float]] = field(default_factory=dict)
    optimizer: torch.optim.Optimizer | None = field(default=None, repr=False, compare=False)
    data: dict[str, int] = field(default_factory=dict)
    snapshots: list[tuple[int, torch.Tensor, torch.Tensor]] = field(default_factory=list, repr=False, compare=False)
    stopped_early: bool = False

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

    def to_dict(self) -> dict[str, Any]:
        return {"train": {k: list(v) for k, v in self.train.items()}, "val": {k: list(v) for k, v in self.val.items()},
                "data": dict(self.data)}

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(train={k: list(v) for k, v in d.get("train", {}).items()}, val={k: list(v) for k, v in d.get("val", {}).items()},
                   data={k: int(v) for k, v in d.get("data", {}).items()})

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


def _loader(data: Any, batch_size: int, shuffle: bool, seed: int, fn: str = "train") -> Iterable:
    """One pass over ``data``: a ``DataLoader`` for a sized Dataset, the iterable itself otherwise."""
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        if len(data) == 0:
            raise ValueError(f"{fn}: data is an empty dataset (0 items); expected at least one item")
        g = torch.Generator()
        g.manual_seed(seed)
        # a random permutation of a huge on-the-fly dataset (e.g. size=10**9) would not fit in memory,
        # and its items are random anyway: read those in order
        shuffle = shuffle and len(data) <= MAX_SHUFFLE
        return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=g, num_workers=0)
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes)):
        return data
    raise TypeError(f"{fn}: data must be a torch Dataset, a DataLoader or an iterable of batches, got {type(data).__name__}")


class EpochBatches(Sampler[list[int]]):
    """The batches of a training run over a sized dataset, epoch after epoch, from any position.

    Epoch ``e`` reads a permutation of ``range(n)`` drawn from a generator seeded with ``(seed, e)``
    (in order, without a permutation, when ``n > MAX_SHUFFLE`` or ``shuffle=False``), cut into batches
    of ``batch_size`` (the last one of an epoch may be smaller). Iteration starts at batch ``start``
    (counted from the run's beginning) and never ends, so a continued run (:attr:`History.data`)
    reads the items that come next instead of the first ones again. ``len()`` is the batches per epoch.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int, start: int = 0):
        self.n, self.batch_size, self.seed, self.start = n, batch_size, seed, start
        self.shuffle = shuffle and n <= MAX_SHUFFLE

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def _order(self, epoch: int) -> torch.Tensor | range:
        if not self.shuffle:
            return range(self.n)
        g = torch.Generator()
        g.manual_seed((self.seed * 1_000_003 + epoch) % 2**63)
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> Iterator[list[int]]:
        per_epoch = len(self)
        epoch, k = divmod(self.start, per_epoch)
        while True:
            order = self._order(epoch)
            for b in range(k, per_epoch):
                yield [int(i) for i in order[b * self.batch_size:(b + 1) * self.batch_size]]
            epoch, k = epoch + 1, 0


def _train_batches(data: Any, batch_size: int, seed: int, start: int) -> tuple[Iterator[Any], int | None]:
    """``(an endless iterator of training batches starting at batch start, batches per epoch or None)``."""
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        if len(data) == 0:
            raise ValueError("train: data is an empty dataset (0 items); expected at least one item")
        sampler = EpochBatches(len(data), batch_size, True, seed, start)
        return iter(DataLoader(data, batch_sampler=sampler, num_workers=0)), len(sampler)
    loader = _loader(data, batch_size, True, seed)
    epoch_len = len(loader) if isinstance(loader, Sized) else None
    if epoch_len == 0:
        raise ValueError("train: data is empty (no batches); expected a Dataset or an iterable with at least one batch")

    def endless() -> Iterator[Any]:
        skip = start % epoch_len if epoch_len else 0  # a list of batches continues where the run stopped
        while True:
            n = 0
            for k, batch in enumerate(loader):
                if k < skip:
                    continue
                n += 1
                yield batch
            if n == 0 and skip == 0:
                raise ValueError("train: data yielded no batches (an empty or exhausted iterator); "
                                 "pass a Dataset, a list of batches or a DataLoader, which can be read again")
            skip = 0

    return endless(), epoch_len


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
    obj = _objective_for("evaluate", objective, objective_kwargs)
    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    n, seconds = 0, 0.0
    try:
        for k, batch in enumerate(_loader(data, batch_size, False, 0, fn="evaluate")):
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


Callback = Callable[[int, int, float, nn.Module], Any]


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
    callback: Callback | None = None,
    snapshot_every: int = 0,
    snapshot_pair: Any = None,
    **objective_kwargs: Any,
) -> History:
    """Train ``model`` on ``data`` with ``objective``: the single loop for every model of the course.

    Args:
        model: any module whose output the objective understands (see :mod:`~regedu.learning.networks`).
        data: a torch ``Dataset`` (read in batches of ``batch_size``, a new random order every epoch unless it
            has more than a million items; a train-mode
            :class:`regedu.data.PairDataset` makes fresh random pairs every item), a ``DataLoader``, or any
            iterable of batches (re-iterated when exhausted).
        objective: name (``"supervised"``, ``"weak"``, ``"unsupervised"``, ``"diffeomorphic"``, ``"cycle"``,
            ``"inverse_consistent"``, ``"classification"``, ``"regression"``) or an
            :class:`~regedu.learning.objectives.Objective`; ``**objective_kwargs`` go to its constructor
            (e.g. ``similarity="ncc", weight=0.5``). A keyword that neither ``train`` nor the objective takes
            is an error that lists the valid ones (a typo such as ``val_evry`` is not passed on silently).
        steps / epochs: training length in optimisation steps, or in passes over ``data`` (give one;
            default 1 epoch).
        lr: Adam learning rate (ignored if ``optimizer`` is given).
        batch_size: items per batch when ``data`` is a Dataset.
        device: where to train (default :func:`regedu.get_device`: CUDA, MPS, then CPU; or the environment
            variable ``REGEDU_DEVICE``); the model is moved there.
        val_data: held-out data (e.g. ``PairDataset(..., mode="eval")``), evaluated with :func:`evaluate`
            every ``val_every`` steps (default: once per epoch) and at the end.
        optimizer / history: continue a previous run: pass its history (which keeps the run's optimizer
            and its position in the data), or the ones of :func:`load_checkpoint`. Steps are counted on
            from ``history.steps`` and the data is read on from where the run stopped
            (``history.data``), so a continued run sees new items, not the first ones again.
        seed: a new run seeds Python, NumPy and torch with it (:func:`regedu.seed_everything`) and draws the
            data order from it; a continued run seeds them with ``seed + history.steps`` (reproducible, and
            not a replay of the first call's random numbers) and keeps the data order of its history.
            ``None`` leaves the random state as it is.
        progress: show a ``tqdm.auto`` progress bar.
        checkpoint: path; if given, :func:`save_checkpoint` writes model, optimizer, history and the
            training configuration there after every validation and at the end.
        grad_clip: clip the gradient norm to this value.
        callback: ``callback(epoch, step, loss, model)`` after every optimisation step (``epoch`` counts from 0,
            ``step`` from 1 over the whole run), as :func:`regedu.register`'s ``callback(level, iteration, loss,
            model)`` with the epoch in place of the pyramid level; return ``True`` to stop early
            (``history.stopped_early``).
        snapshot_every: record ``(step, moved, dvf)`` of the model on ``snapshot_pair`` every that many steps
            (0: never), and once before the first step of a new run, in ``history.snapshots`` (as
            :func:`regedu.register`'s ``snapshot_every``; play them back with
            :class:`regedu.widgets.RegistrationPlayback`).
        snapshot_pair: the pair to record: a batch dict with ``"fixed"`` and ``"moving"`` (a
            :class:`~regedu.data.PairDataset` item, with or without the batch dimension) or a tuple
            ``(fixed, moving)``. Default: the first item of ``val_data``.

    Returns:
        The :class:`History` (also stored as ``model.history``).
    """
    from tqdm.auto import tqdm

    obj = _objective_for("train", objective, objective_kwargs)
    if steps is not None and epochs is not None:
        raise ValueError(f"train: give steps or epochs, not both (got steps={steps}, epochs={epochs})")
    if not isinstance(model, nn.Module):
        raise TypeError(f"train: model must be a torch.nn.Module, got {type(model).__name__}")
    steps = None if steps is None else check_number("train", "steps", steps, low=1, integer=True)
    epochs = None if epochs is None else check_number("train", "epochs", epochs, low=1, integer=True)
    lr = check_number("train", "lr", lr, low=0, low_inclusive=False)
    batch_size = check_number("train", "batch_size", batch_size, low=1, integer=True)
    val_batch_size = check_number("train", "val_batch_size", val_batch_size, low=1, integer=True)
    val_every = None if val_every is None else check_number("train", "val_every", val_every, low=1, integer=True)
    grad_clip = None if grad_clip is None else check_number("train", "grad_clip", grad_clip, low=0, low_inclusive=False)
    snapshot_every = check_number("train", "snapshot_every", snapshot_every, low=0, integer=True)
    if seed is not None:
        seed = check_number("train", "seed", seed, low=0, integer=True)
    if callback is not None and not callable(callback):
        raise TypeError(f"train: callback must be callable as callback(epoch, step, loss, model), got {type(callback).__name__}")
    if history is not None and not isinstance(history, History):
        raise TypeError(f"train: history must be a regedu.learning.History (of a previous run), got {type(history).__name__}")
    history = history if history is not None else History()
    start = history.steps
    if seed is not None:
        seed_everything(seed + start, deterministic=False)
    device = torch.device(device) if device is not None else get_device()
    model.to(device)

    if "seed" not in history.data:  # a new run: its data order comes from the seed (or from torch's generator)
        history.data = {"seed": seed if seed is not None else int(torch.randint(0, 2**31 - 1, ())), "batches": 0}
    batches, epoch_len = _train_batches(data, batch_size, history.data["seed"], history.data["batches"])
    pair = None
    if snapshot_every:
        first = next(batches)  # the training data's dimensionality tells a dataset item from a batch
        batches = itertools.chain([first], batches)
        images = first["fixed"] if isinstance(first, dict) else first[0]
        pair = _snapshot_batch(snapshot_pair, val_data, device, images.dim())
    if steps is None:
        if epoch_len is None:
            raise ValueError("train: data has no length, so give steps (not epochs)")
        steps = (1 if epochs is None else epochs) * epoch_len
    val_every = val_every if val_every is not None else (epoch_len or steps)
    optimizer = optimizer or history.optimizer or torch.optim.Adam(model.parameters(), lr=lr)
    history.optimizer = optimizer
    history.stopped_early = False
    config = {"objective": type(obj).__name__, "objective_config": {k: v for k, v in vars(obj).items()
                                                                     if not k.startswith("_") and isinstance(v, (int, float, str, bool, type(None)))},
              "lr": lr, "batch_size": batch_size, "seed": seed, "steps": start + steps}

    def validate(step: int) -> None:
        metrics = evaluate(model, val_data, obj, batch_size=val_batch_size, device=device)
        history.append("val", {"step": step, "epoch": step / epoch_len if epoch_len else step / val_every, **metrics})
        if checkpoint is not None:
            save_checkpoint(checkpoint, model, optimizer, history, config)

    if pair is not None and not history.snapshots:
        history.snapshots.append(_snapshot(model, obj, pair, start))
    model.train()
    bar = tqdm(total=steps, disable=not progress, desc=f"train ({obj.name})", leave=False)
    step = start
    try:
        for step in range(start + 1, start + steps + 1):
            batch = to_device(next(batches), device)
            history.data["batches"] += 1
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
            loss_value = logs.get("loss", float(loss.detach()))
            bar.set_postfix(loss=f"{loss_value:.4g}")
            if val_data is not None and (step - start) % val_every == 0:
                validate(step)
            if pair is not None and (step - start) % snapshot_every == 0:
                history.snapshots.append(_snapshot(model, obj, pair, step))
            if callback is not None and callback((step - 1) // epoch_len if epoch_len else 0, step, loss_value, model) is True:
                history.stopped_early = True
                break
    finally:
        bar.close()
    if val_data is not None and (not history.val.get("step") or history.val["step"][-1] != step):
        validate(step)
    if checkpoint is not None:
        save_checkpoint(checkpoint, model, optimizer, history, config)
    setattr(model, "history", history)  # noqa: B010 (nn.Module's attribute typing)
    return history


_TRAIN_ARGS = tuple(inspect.signature(train).parameters)[2:-1]


def _objective_for(fn: str, objective: str | Objective, kwargs: dict[str, Any]) -> Objective:
    """:func:`get_objective`, with unknown keywords reported against ``fn``'s own arguments as well."""
    try:
        return get_objective(objective, **kwargs)
    except UnknownKeywordError as exc:
        own = _TRAIN_ARGS if fn == "train" else ("batch_size", "device", "max_batches")
        hints = []
        for k in exc.unknown:
            close = difflib.get_close_matches(k, [*own, *exc.valid], n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise TypeError(
            f"{fn}: unknown keyword argument(s) {', '.join(hints)}; {fn} takes {', '.join(own)}, and the objective "
            f"{exc.objective!r} takes {', '.join(exc.valid) or 'no keywords'}"
        ) from None


def _snapshot_batch(pair: Any, val_data: Any, device: torch.device, batch_dim: int) -> dict[str, torch.Tensor]:
    """The pair that ``snapshot_every`` records, as a batch of one on ``device``. ``batch_dim``: the number
    of dimensions of a training batch's images (a dataset item has one less)."""
    if pair is None:
        if val_data is None:
            raise ValueError("train: snapshot_every needs a pair to record: give snapshot_pair=(fixed, moving) or val_data")
        pair = val_data[0] if isinstance(val_data, (Dataset, list, tuple)) and isinstance(val_data, Sized) and len(val_data) \
            else next(iter(val_data))
    if isinstance(pair, (tuple, list)) and len(pair) == 2:
        pair = {"fixed": pair[0], "moving": pair[1]}
    if not isinstance(pair, dict) or "fixed" not in pair or "moving" not in pair:
        raise TypeError(f"train: snapshot_pair must be a dict with 'fixed' and 'moving' or a tuple (fixed, moving), got {type(pair).__name__}")
    out = {}
    for k in ("fixed", "moving"):
        v = pair[k]
        if not isinstance(v, torch.Tensor) or v.dim() not in (batch_dim - 1, batch_dim):
            raise ValueError(f"train: snapshot_pair[{k!r}] must be a tensor with {batch_dim} (a batch) or {batch_dim - 1} "
                             f"(a dataset item) dimensions like the training data, got {getattr(v, 'shape', type(v).__name__)}")
        out[k] = (v[None] if v.dim() == batch_dim - 1 else v[:1]).to(device)
    return out


@torch.no_grad()
def _snapshot(model: nn.Module, obj: Objective, pair: dict, step: int) -> tuple[int, torch.Tensor, torch.Tensor]:
    was_training = model.training
    model.eval()
    try:
        out = obj.forward(model, {"fixed": pair["fixed"], "moving": pair["moving"]})
    finally:
        model.train(was_training)
    out = out["forward"] if isinstance(out, dict) and "forward" in out else out
    if not isinstance(out, dict) or "moved" not in out or "dvf" not in out:
        raise TypeError("train: snapshot_every records registration outputs ('moved' and 'dvf'); this model returns "
                        f"{type(out).__name__}")
    return step, out["moved"].detach().cpu(), out["dvf"].detach().cpu()


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
    setattr(model, "history", history)  # noqa: B010 (nn.Module's attribute typing)
    return Checkpoint(model, optimizer, history, state["config"])
