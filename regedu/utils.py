"""Helpers: choose a device, seed every random generator, limit CPU threads, describe the environment."""

from __future__ import annotations

import contextlib
import os
import random
from typing import Iterator

import numpy as np
import torch


def get_device(prefer: str | None = None) -> torch.device:
    """The best available device: CUDA, then Apple MPS, then CPU.

    ``prefer`` (e.g. ``"cpu"``) or the environment variable ``REGEDU_DEVICE`` overrides the choice.
    """
    choice = prefer or os.environ.get("REGEDU_DEVICE")
    if choice:
        return torch.device(choice)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch (all devices); with ``deterministic`` ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        if hasattr(torch.backends, "cudnn"):
            torch.backends.cudnn.benchmark = False


def describe_device(device: torch.device | str | None = None) -> str:
    """A one-line description such as ``'cpu (2 threads)'`` or ``'cuda: NVIDIA H100'``."""
    device = torch.device(device) if device is not None else get_device()
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "mps: Apple GPU"
    return f"cpu ({torch.get_num_threads()} threads)"


def available_devices() -> list[str]:
    """Every device torch can use here, CPU first: e.g. ``['cpu', 'cuda']``."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op CPU threads, restoring the previous setting afterwards.

    ``n=None`` leaves the setting as it is. Small problems (a 128x128 image, a small network) run
    fastest on one thread: splitting a short operation over threads costs more than it gains, much
    more on a busy machine. The one thread limiter of the library (the registration engine and the
    widgets use it)::

        with cpu_threads(1):
            result = register(fixed, moving)
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"cpu_threads: n must be a positive integer or None, got {n!r}")
    old = torch.get_num_threads()
    if n is None or n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
