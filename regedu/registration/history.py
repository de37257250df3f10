"""The optimisation history of a registration, recorded the same way by every engine.

:class:`HistoryRecorder` keeps the per-iteration lists that :class:`RegistrationResult` documents
(``loss``, ``similarity``, ``regulariser``, ``level``, ``iteration``, ``time``, ``snapshots``), drives the
``tqdm.auto`` progress bar, takes full-resolution snapshots every ``snapshot_every`` iterations and calls
the user's callback. An engine calls :meth:`HistoryRecorder.record` once per evaluation and stops when
it returns ``True`` (the callback asked to stop).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch


class HistoryRecorder:
    """Records one registration's iterations.

    Args:
        fn: the engine's name (for error messages).
        total: the iteration budget (for the progress bar).
        desc: the progress bar's label.
        progress: show the progress bar.
        snapshot_every: record a snapshot every that many iterations (0: never).
        snapshot: ``snapshot() -> (moved, dvf)`` at full resolution, called only when one is due.
        callback: ``callback(level, iteration, loss, state) -> True to stop`` or ``None``.
        start: ``time.perf_counter()`` at the start of the registration (``time`` is measured from it).
    """

    KEYS = ("loss", "similarity", "regulariser", "level", "iteration", "time")

    def __init__(self, fn: str, total: int, desc: str, progress: bool = True, snapshot_every: int = 0,
                 snapshot: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None,
                 callback: Callable[..., Any] | None = None, start: float | None = None):
        if isinstance(snapshot_every, bool) or not isinstance(snapshot_every, int) or snapshot_every < 0:
            raise ValueError(f"{fn}: snapshot_every must be a non-negative integer, got {snapshot_every!r}")
        if callback is not None and not callable(callback):
            raise TypeError(f"{fn}: callback must be callable as callback(level, iteration, loss, state), got {type(callback).__name__}")
        from tqdm.auto import tqdm

        self.history: dict[str, list[Any]] = {k: [] for k in self.KEYS}
        self.history["snapshots"] = []
        self.snapshot_every = snapshot_every
        self.snapshot = snapshot
        self.callback = callback
        self.start = time.perf_counter() if start is None else start
        self.progress = progress
        self.bar = tqdm(total=total, desc=desc, disable=not progress, leave=False)
        self.step = 0  # iterations recorded so far, over all levels
        self.stopped = False

    def record(self, level: int, iteration: int, loss: float, similarity: float, regulariser: float, state: Any,
               level_budget: int | None = None) -> bool:
        """Record one iteration (``iteration`` counts within the level) and return ``True`` if the callback
        asked to stop. ``state`` is what the callback receives (the model, or demons' field)."""
        h = self.history
        h["loss"].append(loss)
        h["similarity"].append(similarity)
        h["regulariser"].append(regulariser)
        h["level"].append(level)
        h["iteration"].append(self.step)
        h["time"].append(time.perf_counter() - self.start)
        self.step += 1
        self.bar.update(1)
        if self.progress and (iteration % 10 == 0 or (level_budget is not None and iteration == level_budget - 1)):
            self.bar.set_postfix(level=level, loss=f"{loss:.4g}")
        if self.snapshot_every and self.step % self.snapshot_every == 0 and self.snapshot is not None:
            moved, dvf = self.snapshot()
            h["snapshots"].append((self.step, moved.detach().cpu(), dvf.detach().cpu()))
        if self.callback is not None and self.callback(level, iteration, loss, state) is True:
            self.stopped = True
        return self.stopped

    def close(self) -> None:
        self.bar.close()
