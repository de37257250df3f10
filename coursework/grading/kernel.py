"""A Jupyter kernel for one submission, driven with hard time limits and capped output.

We talk to ipykernel with ``jupyter_client`` directly (not nbclient) so that every wait has a
deadline, a dead kernel is noticed at once, output is counted and dropped beyond a cap, and the
kernel can be interrupted, killed and restarted without affecting the grader.
"""

from __future__ import annotations

import ast
import functools
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from queue import Empty

import zmq
from jupyter_client import BlockingKernelClient
from jupyter_client.connect import write_connection_file

from . import bwrap as bw
from .sandbox import Limits, clean_env, end_processes, limit_child

RPC_MIME = "application/x-coursework-rpc"
RPC_RESULT_EXPR = "__coursework_rpc__.result"
MAX_MESSAGE = 32 * 1024**2  # a kernel message larger than this drops the connection instead of eating memory
GRACE = 15.0                # seconds a stopped cell gets to react to the interrupt (a loaded machine is slow)


@dataclass
class CellResult:
    status: str                      # "ok", "error", "timeout", "died"
    ename: str = ""
    evalue: str = ""
    output: str = ""                 # captured text, capped
    output_bytes: int = 0            # all text the cell produced
    rpc: str | None = None           # the result of a grader call (see coursework.grading.rpc)
    idle: bool = False
    output_lost: bool = False        # a message over the size cap broke the output connection
    limit: str = ""                  # "cpu" or "wall": which limit stopped it
    cpu_s: float = 0.0               # CPU seconds the cell used (when measured)
    waited: float = 0.0              # wall-clock seconds in which nothing of the kernel ran (when measured)

    def summary(self) -> str:
        if self.status == "error":
            return f"{self.ename}: {self.evalue}".strip()[:500]
        return f"{self.status}: {self.evalue}"[:500] if self.evalue else self.status


class KernelDied(RuntimeError):
    pass


SYSTEM = bw.SYSTEM


@functools.lru_cache(maxsize=1)
def readonly_paths() -> list[str]:
    """What the kernel may see (read-only): system folders, Python, the venv, editable installs.

    Editable installs (``pip install -e``; regedu during development) live outside the venv: their
    package folders are found in setuptools' ``__editable__`` finders and plain ``.pth`` path lines.
    """
    paths = [p for p in SYSTEM if os.path.lexists(p)]
    paths += [os.path.realpath(p) for p in {sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable))}]
    for site in {p for p in sys.path if p.endswith("site-packages") and os.path.isdir(p)}:
        for name in os.listdir(site):
            full = os.path.join(site, name)
            if name.startswith("__editable__") and name.endswith("_finder.py"):
                try:
                    tree = ast.parse(open(full).read())
                except (OSError, SyntaxError):
                    continue
                for node in tree.body:
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
                    if targets and node.value is not None and any(getattr(t, "id", "") == "MAPPING" for t in targets):
                        try:
                            paths += [str(v) for v in ast.literal_eval(node.value).values()]
                        except ValueError:
                            pass
            elif name.endswith(".pth"):
                try:
                    lines = open(full).read().splitlines()
                except OSError:
                    continue
                paths += [line.strip() for line in lines if line.strip().startswith("/") and os.path.isdir(line.strip())]
    out = []
    for p in paths:  # drop duplicates and paths inside another one
        if os.path.lexists(p) and p not in out:
            out.append(p)
    return [p for p in out if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in out)]


def namespaces_available() -> bool:
    """True where the kernel can run in the bubblewrap sandbox (Linux with user namespaces and bwrap)."""
    if not sys.platform.startswith("linux") or os.environ.get("COURSEWORK_ISOLATION") == "process":
        return False
    return bw.find_bwrap()[0] is not None


def sandbox_description(isolation: str) -> str:
    """One line for the gradebook: what contained the kernel."""
    if isolation == "process":
        why = bw.find_bwrap()[1] if sys.platform.startswith("linux") else f"no bubblewrap on {sys.platform}"
        return ("process-only fallback (WEAKER: the kernel runs as the grader's user and could read its files; "
                f"{why})")
    return bw.find_bwrap()[1]


class Kernel:
    """One ipykernel process in a sandbox: its own session, limits, clean environment, cwd ``workdir``."""

    def __init__(self, workdir: str, conndir: str, limits: Limits, isolation: str = "process", threads: int = 1,
                 cache: str | None = None):
        self.workdir, self.conndir, self.limits, self.threads, self.cache = workdir, conndir, limits, threads, cache
        self.isolation = isolation
        self.token = secrets.token_hex(16)
        self.kernel_pid: int | None = None
        self.proc: subprocess.Popen | None = None
        self.kc: BlockingKernelClient | None = None
        self.stage: str | None = None     # root mode: the stage's mount points (removed by kill)

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 60.0) -> None:
        ns = self.isolation != "process"
        conn = os.path.join(self.conndir, "kernel.json")
        if ns:  # no network inside: Unix sockets in the (private) connection folder
            write_connection_file(conn, transport="ipc", ip=os.path.join(self.conndir, "k"), key=secrets.token_hex(32).encode())
        else:
            write_connection_file(conn, ip="127.0.0.1", key=secrets.token_hex(32).encode())
        os.chmod(conn, 0o600)
        kernel_cmd = [sys.executable, "-m", "ipykernel_launcher", "-f", conn,
                      "--HistoryManager.enabled=False", "--IPKernelApp.capture_fd_output=False"]
        if ns:
            bw.prepare_dirs(self.conndir, conn)
            env = clean_env(bw.HOME, self.token, self.threads)
            self.stage = stage = bw.new_stage_dir(os.path.dirname(self.conndir))
            cmd = bw.sandboxed(bw.find_bwrap()[0], readonly_paths(), self.conndir, kernel_cmd,
                               nproc=self.limits.processes, cpu_s=int(self.limits.cpu_backstop()),
                               home_mb=self.limits.disk_mb, tmp_mb=self.limits.disk_mb // 2, cache=self.cache,
                               stage_dir=stage)
        else:
            env = clean_env(self.workdir, self.token, self.threads)
            cmd = kernel_cmd
        self.log = os.path.join(os.path.dirname(self.conndir), "kernel.log")   # start-up errors; outside the sandbox
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=self.workdir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, preexec_fn=limit_child(self.limits),
            )
        kc = BlockingKernelClient()
        kc.load_connection_file(conn)
        # a single message larger than this drops the connection instead of filling our memory
        kc.context.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        # and at most a few of them wait in the queue (the kernel's side drops the rest): bounded memory
        kc.context.setsockopt(zmq.RCVHWM, 4)
        kc.start_channels()
        self.kc = kc
        try:
            deadline = time.monotonic() + timeout
            while True:
                if not self.alive():
                    raise KernelDied(f"the kernel exited while starting: {self.startup_log()}")
                try:
                    kc.wait_for_ready(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
                    break
                except RuntimeError:
                    if time.monotonic() > deadline:
                        raise KernelDied(f"the kernel did not start within {timeout:.0f} s")
        finally:
            try:  # the kernel has read its connection file; nobody else needs the key
                os.remove(conn)
            except OSError:
                pass
        self.kernel_pid = self._find_kernel_pid() if ns else self.proc.pid

    def _find_kernel_pid(self) -> int:
        """The ipykernel process inside bwrap (the child of bwrap's own PID 1)."""
        import psutil

        for _ in range(50):
            try:
                for p in psutil.Process(self.proc.pid).children(recursive=True):
                    # the kernel itself (bwrap's own processes carry the kernel's command line as arguments)
                    if p.cmdline()[1:3] == ["-m", "ipykernel_launcher"]:
                        return p.pid
            except psutil.Error:
                pass
            time.sleep(0.05)
        return self.proc.pid

    def _tree(self) -> list:
        import psutil

        try:
            root = psutil.Process(self.kernel_pid or self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def running(self) -> bool:
        """True if a process of the kernel is running, runnable or in uninterruptible sleep (I/O)."""
        import psutil

        for p in self._tree():
            try:
                if p.status() in (psutil.STATUS_RUNNING, psutil.STATUS_DISK_SLEEP):
                    return True
            except psutil.Error:
                continue
        return False

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the kernel and every process below it."""
        import psutil

        total = 0.0
        try:
            root = psutil.Process(self.kernel_pid or self.proc.pid)
            for p in [root, *root.children(recursive=True)]:
                try:
                    t = p.cpu_times()
                    total += t.user + t.system + t.children_user + t.children_system
                except psutil.Error:
                    continue
        except psutil.Error:
            pass
        return total

    def startup_log(self) -> str:
        try:
            with open(self.log, "rb") as f:
                return f.read(2000).decode(errors="replace").strip()[-500:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def interrupt(self) -> None:
        if self.alive():
            try:
                os.kill(self.kernel_pid or self.proc.pid, signal.SIGINT)
            except (ProcessLookupError, PermissionError):
                pass

    def kill(self) -> None:
        if self.kc is not None:
            try:
                self.kc.stop_channels()
            except Exception:
                pass
            self.kc = None
        if self.proc is not None:
            end_processes(self.proc.pid, groups=(self.proc.pid,), token=self.token)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
        if self.stage:
            import shutil

            shutil.rmtree(self.stage, ignore_errors=True)
            self.stage = None

    # ------------------------------------------------------------------ execution
    def execute(self, code: str, timeout: float, rpc: bool = False, cpu: float | None = None,
                wait: float | None = None) -> CellResult:
        """Run ``code`` with three limits, whichever comes first:

        * ``cpu``: seconds of CPU time (the kernel's and its children's): what the student's code
          computed, the same on a busy machine as on an idle one;
        * ``wait``: seconds of wall-clock time during which no process of the kernel was running or
          runnable (``sleep``, a blocked read): waiting, not computing. A process that computes slowly
          because the machine is busy is runnable, so load does not count here either;
        * ``timeout``: a hard wall-clock backstop, for whatever the other two miss.

        A stopped cell is interrupted and given ``GRACE`` seconds to stop. Completion is the shell
        channel's reply; outputs are read from iopub on the way. With ``rpc`` the reply carries the result
        of the grader's call (``user_expressions``), so calls work even when the student's output has
        broken the iopub connection.
        """
        if not self.alive() or self.kc is None:
            return CellResult("died", "KernelDied", "the kernel is not running")
        kc = self.kc
        expr = {"rpc": RPC_RESULT_EXPR} if rpc else {}
        cpu0 = self.cpu_seconds() if cpu is not None else 0.0
        msg_id = kc.execute(code, silent=False, store_history=False, allow_stdin=False, stop_on_error=False,
                            user_expressions=expr)
        res = CellResult("ok")
        cap = self.limits.output_kb * 1024
        start = last_check = time.monotonic()
        deadline = start + timeout
        interrupted_at = reply = None
        why = ""
        while reply is None:
            now = time.monotonic()
            if interrupted_at is None:
                if now > deadline:
                    why, res.limit = f"stopped by the hard wall-clock backstop after {timeout:.0f} s", "wall"
                elif now > last_check + 0.25:
                    if wait is not None and not self.running():
                        res.waited += now - last_check
                    last_check = now
                    if wait is not None and res.waited > wait:
                        why, res.limit = f"waited {wait:.0f} s without computing (wall-clock backstop)", "wall"
                    elif cpu is not None and self.cpu_seconds() - cpu0 > cpu:
                        why, res.limit = f"used more than {cpu:.0f} s of CPU time", "cpu"
                if why:
                    self.interrupt()
                    interrupted_at = now
            if interrupted_at is not None and now > interrupted_at + GRACE:
                res.status, res.ename, res.evalue = "timeout", "TimeoutError", f"{why}; did not stop when interrupted"
                res.cpu_s = round(self.cpu_seconds() - cpu0, 2)
                return res
            self._drain_iopub(msg_id, res, cap, wait=0.05)
            try:
                r = kc.get_shell_msg(timeout=0.05)
                if r.get("parent_header", {}).get("msg_id") == msg_id:
                    reply = r
            except Empty:
                if not self.alive():
                    res.status, res.ename, res.evalue = "died", "KernelDied", "the kernel died (os._exit, a crash, or the memory limit)"
                    return res
            except Exception:  # a message that does not parse: treat like silence
                pass
        # outputs come before the idle status; give iopub a moment, and reconnect it if it is gone
        end = time.monotonic() + 1.0
        while not res.idle and time.monotonic() < end:
            self._drain_iopub(msg_id, res, cap, wait=0.05)
        if not res.idle:
            self._reconnect_iopub()
            res.output_lost = True
        if cpu is not None:
            res.cpu_s = round(self.cpu_seconds() - cpu0, 2)
        content = reply.get("content", {})
        payload = content.get("payload") if isinstance(content.get("payload"), list) else []
        if any(isinstance(p, dict) and p.get("source") == "ask_exit" for p in payload):
            # exit() / quit(): the kernel shuts down right after this reply
            res.status, res.ename, res.evalue = "died", "KernelExit", "the cell asked the kernel to exit"
        elif interrupted_at is not None:
            res.status, res.ename, res.evalue = "timeout", "TimeoutError", f"{why} (interrupted)"
        elif content.get("status") == "error":
            res.status, res.ename, res.evalue = "error", str(content.get("ename", ""))[:200], str(content.get("evalue", ""))[:1000]
        if rpc:
            data = content.get("user_expressions", {}).get("rpc", {}).get("data", {})
            if isinstance(data, dict) and isinstance(data.get(RPC_MIME), str):
                res.rpc = data[RPC_MIME]
        return res

    def _drain_iopub(self, msg_id: str, res: "CellResult", cap: int, wait: float) -> None:
        try:
            msg = self.kc.get_iopub_msg(timeout=wait)
        except Empty:
            return
        except Exception:
            return
        while msg is not None:
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                self._handle(msg, res, cap)
            try:
                msg = self.kc.get_iopub_msg(timeout=0)
            except Exception:
                msg = None

    def _reconnect_iopub(self) -> None:
        """A message over the size cap makes zmq drop the connection: open a new one."""
        try:
            self.kc.iopub_channel.stop()
        except Exception:
            pass
        self.kc._iopub_channel = None
        self.kc.iopub_channel.start()

    @staticmethod
    def _handle(msg: dict, res: CellResult, cap: int) -> None:
        t, c = msg["msg_type"], msg.get("content", {})
        if t == "stream":
            text = str(c.get("text", ""))
            res.output_bytes += len(text)
            room = cap - len(res.output)
            if room > 0:
                res.output += text[:room]
        elif t == "error":
            res.status, res.ename, res.evalue = "error", str(c.get("ename", ""))[:200], str(c.get("evalue", ""))[:1000]
        elif t == "status" and c.get("execution_state") == "idle":
            res.idle = True
