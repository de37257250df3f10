"""Process-level isolation shared by both sandbox modes, and ending everything a submission started.

Every kernel gets its own session and process group, resource limits set in the child before
``exec`` (address space, file size, no core dumps), a clean environment (nothing of the grader's)
carrying a random token, and a fresh working folder. :mod:`coursework.grading.nsinit` adds the
namespace layer on Linux. See coursework/README.md, "Security design".

:func:`end_processes` freezes every descendant with SIGSTOP (so nothing can fork while we look),
kills them, kills the process groups and finally any process whose environment carries the token.
The grading worker makes itself a *child subreaper* (Linux), so processes that were orphaned on
purpose (double fork, ``setsid``) are re-parented to it and stay findable as descendants.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys
from dataclasses import dataclass

try:  # psutil ships with ipykernel; without it only process groups are ended
    import psutil
except ImportError:  # pragma: no cover
    psutil = None

TOKEN_VAR = "COURSEWORK_GRADING_TOKEN"


@dataclass
class Limits:
    """Limits for grading one notebook (seconds, GiB, MiB, KiB).

    ``notebook`` and ``cell`` are **CPU time** (the kernel's and its children's, measured by the worker),
    so a correct submission gets the same verdict on a busy server as on an idle laptop. Code that
    waits instead of computing is stopped by wall-clock backstops on the time *nothing of the kernel
    ran* (:meth:`cell_wall`, :meth:`notebook_wall`: ``wall_factor`` times the CPU limit plus a margin),
    and by hard backstops four times longer on plain wall-clock time; a submission stopped by a
    notebook backstop is graded again, alone, before a zero is recorded (see :mod:`.batch`).
    """

    notebook: float = 300.0   # CPU seconds for the student's cells and the tests together
    cell: float = 60.0        # CPU seconds for one student cell, or one test cell's calls into the kernel
    memory_gb: float = 8.0    # RLIMIT_AS of the kernel; torch alone reserves a few GB of address space
    file_mb: int = 512        # largest file the kernel may write
    output_kb: int = 64       # captured text output kept per cell (the rest is counted and dropped)
    processes: int = 256      # RLIMIT_NPROC in the sandbox (processes and threads)
    disk_mb: int = 512        # size of the kernel's home folder (tmpfs); /tmp gets half of it
    wall_factor: float = 4.0  # wall-clock backstops: wall_factor x the CPU limit, plus a margin
    wall_margin: float = 60.0  # seconds added to the notebook's backstop (half of it to a cell's)

    def cell_wall(self) -> float:
        """Seconds a cell may wait without computing."""
        return self.cell * self.wall_factor + self.wall_margin / 2

    def notebook_wall(self) -> float:
        """Seconds the whole notebook may wait without computing."""
        return self.notebook * self.wall_factor + self.wall_margin

    def hard_wall(self, waiting: float) -> float:
        """The plain wall-clock backstop that goes with a waiting limit."""
        return 4 * waiting

    def cpu_backstop(self) -> float:
        """RLIMIT_CPU of each kernel process: the kernel kills a runaway process that ignores everything."""
        return self.notebook * 2 + 120.0


def limit_child(limits: Limits):
    """A ``preexec_fn`` that sets the resource limits in the child before it execs."""
    values = ((resource.RLIMIT_AS, int(limits.memory_gb * 1024**3)),
              (resource.RLIMIT_FSIZE, int(limits.file_mb * 1024**2)),
              (resource.RLIMIT_CORE, 0))

    def apply() -> None:
        die_with_parent()
        for res, value in values:
            try:
                resource.setrlimit(res, (value, value))
            except (ValueError, OSError):  # not supported here (e.g. RLIMIT_AS on macOS)
                pass

    return apply


try:  # loaded once here: a preexec_fn must not load libraries after fork
    _libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
except OSError:  # pragma: no cover
    _libc = None


def die_with_parent() -> None:
    """Linux: this process gets SIGKILL when its parent ends (a killed batch leaves no worker or kernel)."""
    if _libc is not None:
        _libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def become_subreaper() -> bool:
    """Linux: orphaned descendants are re-parented to this process instead of init."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):  # pragma: no cover
        return False


def clean_env(home: str, token: str, threads: int = 1) -> dict[str, str]:
    """Environment for the kernel: nothing from the grader except PATH and the locale."""
    env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "SYSTEMROOT") if k in os.environ}
    j = lambda *p: os.path.join(home, *p)  # noqa: E731
    env.update(
        HOME=home, TMPDIR=home, PWD=home, IPYTHONDIR=j(".ipython"), MPLCONFIGDIR=j(".matplotlib"),
        JUPYTER_RUNTIME_DIR=j(".jupyter"), JUPYTER_CONFIG_DIR=j(".jupyter"), JUPYTER_DATA_DIR=j(".jupyter"),
        XDG_CACHE_HOME=j(".cache"), REGEDU_CACHE=j(".cache", "regedu"),
        MPLBACKEND="Agg", PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1", TQDM_DISABLE="1",
        OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), REGEDU_DEVICE="cpu", COURSEWORK_GRADING="1",
    )
    env[TOKEN_VAR] = token
    return env


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def descendants(pid: int) -> set[int]:
    if psutil is None:
        return set()
    try:
        return {c.pid for c in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return set()


def end_processes(root_pid: int | None = None, groups: tuple[int, ...] = (), token: str | None = None) -> int:
    """SIGKILL a process tree, process groups, and processes whose environment has ``token``.

    ``root_pid`` is killed with its descendants, unless it is the calling process (then only its
    descendants are). Never signals the caller or its own group. Returns how many were signalled.
    """
    me = os.getpid()
    seen: set[int] = set()
    if root_pid is not None:
        if root_pid != me:
            seen.add(root_pid)
            _signal(root_pid, signal.SIGSTOP)
        for _ in range(50):  # freeze, look again, until nothing new appears
            new = descendants(root_pid) - seen - {me}
            if not new:
                break
            for p in new:
                _signal(p, signal.SIGSTOP)
            seen |= new
    if psutil is not None and token:
        for p in psutil.process_iter():
            try:
                if p.pid != me and p.pid not in seen and p.environ().get(TOKEN_VAR) == token:
                    seen.add(p.pid)
                    _signal(p.pid, signal.SIGSTOP)
            except psutil.Error:
                continue
    for p in seen:
        _signal(p, signal.SIGKILL)
        _signal(p, signal.SIGCONT)
    own = os.getpgid(0)
    for g in groups:
        if g != own:
            try:
                os.killpg(g, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    reap_children()
    return len(seen)


def reap_children() -> None:
    """Collect exit statuses of dead children (a subreaper inherits orphans and their zombies)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
