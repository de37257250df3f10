"""Shared pytest fixtures."""

import ipaddress
import socket

import pytest

import regedu

_LOCAL_NAMES = {"localhost", "localhost.localdomain", ""}


def _is_local(address) -> bool:
    """Unix sockets and loopback addresses (JupyterLab, kernels, the browser test) are allowed."""
    if not isinstance(address, tuple):
        return True  # AF_UNIX path
    host = str(address[0]).strip("[]").lower()
    if host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """The course must work offline: any test that connects to a non-loopback address fails."""
    real_connect, real_connect_ex, real_create = socket.socket.connect, socket.socket.connect_ex, socket.create_connection

    def guard(address):
        if not _is_local(address):
            raise AssertionError(f"a test tried to open a network connection to {address!r}; the course must work offline")

    def connect(self, address):
        guard(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        guard(address)
        return real_connect_ex(self, address)

    def create_connection(address, *args, **kwargs):
        guard(address)
        return real_create(address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    yield


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state."""
    regedu.seed_everything(0, deterministic=False)
    yield



@pytest.fixture(scope="module")
def one_thread():
    """Small convolutions run fastest on one thread, and far faster than two when the cores are shared.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# Hostile and broken submissions used by the grader tests are data, not tests: nbval must never run them.
collect_ignore_glob = ["grader_fixtures/*", "**/grader_fixtures/*"]


# --- markers ---------------------------------------------------------------------------------------
# `slow`: notebooks (nbval), grader batches and the browser test, plus tests marked by hand;
# `bash scripts/test.sh --fast` (pytest -m "not slow") leaves them out.
# `gpu`: needs a CUDA or MPS device; skipped, with the reason in the summary, where there is none
# (a comparison of the CPU with itself proves nothing).
_SLOW_PATHS = ("test_grader", "browser/")


def pytest_collection_modifyitems(config, items):
    have_gpu = len(regedu.utils.available_devices()) > 1  # more than the CPU
    for item in items:
        path = str(item.fspath).replace("\\", "/")
        if path.endswith(".ipynb") or any(part in path for part in _SLOW_PATHS) or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("gpu") and not have_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA or MPS device; none on this machine"))
