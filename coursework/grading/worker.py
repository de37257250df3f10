"""Grade ONE submission: ``python -m coursework.grading.worker`` reads a job (JSON) on stdin and
writes the result (JSON) on stdout. The batch grader runs one worker per submission, each in its
own session, and kills the worker's whole process tree if it overruns.

Order of events (the hidden tests never enter the kernel):

1. read the job (tests included) from stdin, completely, before anything of the student runs;
2. start the kernel in the sandbox (see :mod:`kernel`, :mod:`nsinit`), cwd = a folder holding only
   a copy of the submission;
3. run the student's code cells (every code cell except nbgrader test cells), each with a time
   limit; a cell that errors or times out is recorded and the next cell runs; if the kernel dies
   or hangs, start a fresh one and replay the cells that worked, skipping the bad one;
4. install the small call helper (:data:`rpc.KERNEL_HELPER`) in the kernel;
5. run each test cell *here*, in a fresh namespace, with the student's functions as proxies
   (:mod:`rpc`); a test cell earns its points if it raises nothing;
6. end the kernel and every process it left behind.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import os
import signal
import sys
import threading
import time
import traceback

from .kernel import RPC_MIME, Kernel, KernelDied
from .rpc import KernelUnavailable, Remote, StudentError, StudentFunction, kernel_helper
from .sandbox import Limits, become_subreaper, end_processes
from .spec import is_test_cell, python_source

MAX_NOTEBOOK = 20 * 1024**2
STARTUP = 120.0     # seconds allowed for starting the first kernel and importing PRELOAD
MAX_RESTARTS = 5
# imported into every fresh kernel before the student's cells (timed against the notebook limit only),
# so that a cell's time limit measures the student's code and not the start-up of torch
PRELOAD = ("numpy", "torch", "torch.nn.functional", "matplotlib.pyplot", "regedu", "regedu.data", "regedu.learning")


class NotebookTimeout(Exception):
    def __init__(self, reason: str, backstop: bool = False):
        super().__init__(reason)
        self.reason, self.backstop = reason, backstop


class Grader:
    def __init__(self, job: dict):
        self.job = job
        self.limits = Limits(**job["limits"])
        self.start = time.monotonic()
        # the notebook's clocks start once the first kernel is ready (start-up is the grader's time)
        self.deadline = self.start + STARTUP + self.limits.hard_wall(self.limits.notebook_wall())
        self.cpu_used = 0.0                 # CPU seconds of the student's code, all kernels together
        self.waited = 0.0                   # seconds in which the student's code waited instead of computing
        self.kernel: Kernel | None = None
        self.remote: Remote | None = None
        self.cells: list[str] = []          # student code cells
        self.good: list[int] = []           # indices of cells that ran without timing out or killing the kernel
        self.skip: set[int] = set()
        self.stopped: dict[int, str] = {}   # cell index -> why it was stopped (timeout, kernel death)
        self.cell_log: list[dict] = []
        self.restarts = 0
        self.current = ""                   # what runs now (for the reason of a notebook timeout)

    # ------------------------------------------------------------------ helpers
    def left(self) -> float:
        """Wall-clock seconds left before the notebook's hard backstop; raises when none are left."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise NotebookTimeout(f"stopped by the hard wall-clock backstop after "
                                  f"{self.limits.hard_wall(self.limits.notebook_wall()):.0f} s ({self.current} was running)",
                                  backstop=True)
        return remaining

    def wait_left(self) -> float:
        """Seconds the notebook may still wait without computing; raises when none are left."""
        remaining = self.limits.notebook_wall() - self.waited
        if remaining <= 0:
            raise NotebookTimeout(f"waited more than {self.limits.notebook_wall():.0f} s without computing (wall-clock "
                                  f"backstop; {self.current} was running)", backstop=True)
        return remaining

    def cpu_left(self) -> float:
        remaining = self.limits.notebook - self.cpu_used
        if remaining <= 0:
            raise NotebookTimeout(f"used more than {self.limits.notebook:.0f} s of CPU time in total "
                                  f"({self.current} was running)")
        return remaining

    def new_kernel(self) -> None:
        """A fresh kernel with the usual imports; its start-up is the grader's time, not the student's."""
        t0 = time.monotonic()
        if self.kernel is not None:
            self.kernel.kill()
        self.kernel = Kernel(self.job["workdir"], self.job["conndir"], self.limits, isolation=self.job["isolation"],
                             threads=self.job.get("threads", 1), cache=self.job.get("cache"))
        self.kernel.start(timeout=min(STARTUP, self.left()))
        self.remote = Remote(self.kernel)
        preload = ("def __coursework_preload(names):\n    import importlib\n    for n in names:\n        try:\n"
                   "            importlib.import_module(n)\n        except Exception:\n            pass\n"
                   f"__coursework_preload({list(self.job.get('preload', PRELOAD))!r})\ndel __coursework_preload\n")
        self.kernel.execute(preload, timeout=min(STARTUP, self.left()))
        self.deadline += time.monotonic() - t0      # (a restart on a loaded machine must not eat the student's time)

    def run_cell(self, i: int, charge: bool = True):
        """Run student cell ``i``; its CPU time counts against the notebook's limit unless it is a replay."""
        self.current = f"cell {i + 1}"
        cpu = min(self.limits.cell, self.cpu_left()) if charge else self.limits.cell
        wait = min(self.limits.cell_wall(), self.wait_left()) if charge else self.limits.cell_wall()
        r = self.kernel.execute(self.cells[i], timeout=min(self.limits.hard_wall(self.limits.cell_wall()), self.left()),
                                cpu=cpu, wait=wait)
        if charge:  # never more than the limits: the interrupt's grace is the grader's time
            self.cpu_used += min(r.cpu_s, cpu)
            self.waited += min(r.waited, wait)
        return r

    def restart(self, why: str, helper: bool = True) -> None:
        """A fresh kernel with the cells that worked replayed (their errors were recorded already)."""
        self.restarts += 1
        if self.restarts > MAX_RESTARTS:
            raise KernelDied(f"the kernel had to be restarted more than {MAX_RESTARTS} times (last: {why})")
        self.new_kernel()
        for i in self.good:   # replays repeat work that was counted once already
            self.run_cell(i, charge=False)
        if helper:
            self.install_helper()

    def install_helper(self) -> None:
        r = self.kernel.execute(kernel_helper(RPC_MIME), timeout=min(30.0, self.left()))
        if r.status != "ok":
            self.remote.broken = f"the grader could not talk to the kernel ({r.summary()})"

    def explain(self, error: str) -> str:
        """A NameError after a stopped cell says so (instead of a silent cascade of NameErrors)."""
        if self.stopped and "NameError" in error:
            name = error.split("'")[1] if error.count("'") >= 2 else ""
            for i, why in self.stopped.items():
                if name and name in defines(self.cells[i]):
                    return f"{error} (cell {i + 1}, which defines it, was stopped: {why})"
            first = min(self.stopped)
            return f"{error} (cell {first + 1} was stopped before it finished: {self.stopped[first]})"
        return error

    # ------------------------------------------------------------------ steps
    def run_student_cells(self) -> None:
        i = 0
        while i < len(self.cells):
            if i in self.skip:
                i += 1
                continue
            r = self.run_cell(i)
            entry = {"cell": i + 1, "status": r.status, "error": self.explain(r.summary()) if r.status != "ok" else "",
                     "output_bytes": r.output_bytes, "output_lost": r.output_lost, "cpu_s": r.cpu_s, "limit": r.limit}
            self.cell_log.append(entry)
            if r.status in ("ok", "error"):
                self.good.append(i)
                i += 1
                continue
            # timed out or killed the kernel: skip this cell from now on
            self.skip.add(i)
            self.stopped[i] = r.summary()
            if r.status == "timeout" and self.kernel.alive():
                probe = self.kernel.execute("pass", timeout=min(10.0, self.left()))
                if probe.status == "ok":  # the interrupt worked; keep going in the same kernel
                    i += 1
                    continue
            self.restart(f"cell {i + 1}: {r.summary()}", helper=False)
            i += 1

    def run_test(self, test: dict) -> dict:
        out = {"points": 0.0, "max_points": test["points"], "passed": False, "feedback": ""}
        self.current = f"the test {test['grade_id']}"
        if self.remote is None or self.remote.broken:
            self.restart(self.remote.broken if self.remote else "no kernel")
        ns = {"__name__": "__coursework_test__", "__builtins__": builtins}
        for name in self.job["student_names"]:
            ns[name] = StudentFunction(self.remote, name)
        self.remote.deadline = time.monotonic() + min(self.limits.hard_wall(self.limits.cell_wall()), self.left())
        self.remote.cpu_budget = min(self.limits.cell, self.cpu_left())
        self.remote.wait_budget = min(self.limits.cell_wall(), self.wait_left())
        printed = io.StringIO()
        try:
            code = compile(test["code"], f"<test {test['grade_id']}>", "exec")
            with contextlib.redirect_stdout(printed):   # "visible tests passed" is for students, not for our stdout
                exec(code, ns)
            out["points"], out["passed"] = float(test["points"]), True
        except NotebookTimeout:
            raise
        except BaseException as e:  # noqa: BLE001 - every failure of a test is feedback
            out["feedback"] = self.explain(feedback(e, test))
        finally:
            self.cpu_used += self.remote.cpu_spent
            self.waited += self.remote.waited
        return out

    def grade(self) -> dict:
        tests = self.job["tests"]
        result = {"status": "graded", "reason": "", "questions": {}, "cells": self.cell_log, "stopped": ""}
        text = open(os.path.join(self.job["workdir"], self.job["notebook"]), "rb").read(MAX_NOTEBOOK + 1)
        if len(text) > MAX_NOTEBOOK:
            return {**result, "status": "invalid", "reason": f"notebook is larger than {MAX_NOTEBOOK // 1024**2} MB"}
        try:
            nb = json.loads(text.decode("utf-8"))
        except (ValueError, RecursionError) as e:
            return {**result, "status": "invalid", "reason": f"notebook is not valid JSON: {str(e)[:200]}"}
        try:
            self.cells = student_cells(nb)
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            return {**result, "status": "invalid", "reason": f"notebook is not a Jupyter notebook (version 4): {str(e)[:200]}"}
        timing = result["timing"] = {}
        try:
            t0 = time.monotonic()
            self.current = "the kernel's start"
            self.new_kernel()
            timing["kernel_start"] = round(time.monotonic() - t0, 2)
            self.deadline = time.monotonic() + self.limits.hard_wall(self.limits.notebook_wall())
            self.run_student_cells()
            timing["student_cells"] = round(time.monotonic() - t0 - timing["kernel_start"], 2)
            self.install_helper()
            for t in tests:
                t1 = time.monotonic()
                result["questions"][t["grade_id"]] = self.run_test(t)
                timing[t["grade_id"]] = round(time.monotonic() - t1, 2)
        except NotebookTimeout as e:
            result["status"], result["reason"], result["backstop"] = "timeout", e.reason, e.backstop
        except KernelDied as e:
            result["status"] = "died"
            result["reason"] = f"kernel died: {e}"
        finally:
            if self.kernel is not None:
                self.kernel.kill()
        timing["cpu_s"] = round(self.cpu_used, 2)
        timing["waited_s"] = round(self.waited, 2)
        if self.stopped:
            result["stopped"] = "; ".join(f"cell {i + 1}: {why}" for i, why in sorted(self.stopped.items()))
        # questions that passed before a timeout or a kernel death keep their points (as in nbgrader)
        for t in tests:
            result["questions"].setdefault(t["grade_id"], {"points": 0.0, "max_points": t["points"], "passed": False,
                                                           "feedback": f"not graded: {result['reason']}" if result["reason"] else "not run"})
        result["restarts"] = self.restarts
        return result


def defines(source: str) -> set[str]:
    """Names a cell assigns, imports or defines at top level (best effort; a syntax error gives none)."""
    import ast

    try:
        tree = ast.parse(python_source(source))
    except (SyntaxError, ValueError):
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def student_cells(nb: dict) -> list[str]:
    """The code of every code cell except nbgrader test cells (plain JSON; nbformat is slow to import)."""
    if not isinstance(nb, dict) or nb.get("nbformat") != 4 or not isinstance(nb.get("cells"), list):
        raise ValueError("expected a dict with nbformat 4 and a list of cells")
    out = []
    for cell in nb["cells"]:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code" or is_test_cell(cell):
            continue
        src = cell.get("source", "")
        out.append("".join(src) if isinstance(src, list) else str(src))
    return out


def feedback(e: BaseException, test: dict) -> str:
    """One line for the student: the failing assertion (its message or its source line) or the error."""
    if isinstance(e, StudentError):
        return f"your code raised {str(e).rstrip(': ')}"[:600]
    if isinstance(e, TimeoutError):
        return f"timed out: {e}"[:600]
    if isinstance(e, KernelUnavailable):
        return f"no answer from your kernel: {e}"[:600]
    line = ""
    for frame in reversed(traceback.extract_tb(e.__traceback__)):
        if frame.filename == f"<test {test['grade_id']}>":
            lines = test["code"].splitlines()
            if 0 < (frame.lineno or 0) <= len(lines):
                line = lines[frame.lineno - 1].strip()
            break
    msg = str(e)
    if isinstance(e, AssertionError):
        return (f"test failed: {msg}" if msg else f"test failed: {line}")[:600]
    return f"{type(e).__name__}: {msg}"[:400] + (f" (at: {line})" if line else "")


def main() -> None:
    job = json.loads(sys.stdin.read())
    sys.stdin.close()
    result_out = os.fdopen(os.dup(1), "w")   # only the result goes to stdout; anything else printed goes to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    become_subreaper()
    grader_box: list[Grader] = []

    def stop(signum, frame):  # the batch is stopping: end the kernel and everything below us, then go
        for g in grader_box:
            if g.kernel is not None:
                g.kernel.kill()
        end_processes(os.getpid())
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def load_torch() -> None:  # the tests need torch; import it while the kernel starts
        import torch
        torch.set_num_threads(int(job.get("threads", 1)))

    threading.Thread(target=load_torch, daemon=True).start()
    try:
        grader_box.append(Grader(job))
        result = grader_box[0].grade()
    except Exception as e:  # noqa: BLE001 - a grader bug must still give a row
        result = {"status": "error", "reason": f"grader error: {type(e).__name__}: {e}"[:500], "questions": {}, "cells": []}
    end_processes(os.getpid())  # anything orphaned and re-parented to us (we are a subreaper)
    import resource

    result.setdefault("timing", {})["worker_peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result_out.write(json.dumps(result))
    result_out.flush()


if __name__ == "__main__":
    main()
