"""Timing helpers shared by the benchmarks: interleaved repeats, median, device synchronisation."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def compare(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int = 7, warmup: int = 2) -> dict[str, float]:
    """Median wall time (seconds) of each function, measured interleaved (A, B, A, B, ...) so that
    machine noise hits all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}
