"""Grade a folder of submissions into a gradebook (CSV and JSON).

Layouts understood (``<root>`` is the folder given on the command line):

* ``<root>/<student>/<assignment>.ipynb``
* ``<root>/<student>/<assignment>/<assignment>.ipynb`` (nbgrader's ``submitted/`` folder, as
  ``nbgrader collect`` leaves it; any single ``.ipynb`` in that folder is accepted)

Every (student, assignment) pair gets a row, with a reason when it scored zero. The batch process
is the only one that writes the gradebook, after all grading; it never runs student code itself.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .kernel import namespaces_available
from .sandbox import Limits, end_processes
from .spec import ROOT, SOURCE, Assignment, load_assignment, source_notebooks

REPO = ROOT.parent
HARD_GRACE = 30.0     # the worker stops itself at the notebook limit; we kill it this much later
STARTUP = 120.0       # the worker's allowance for starting the first kernel (see worker.STARTUP)


@dataclass
class Row:
    student: str
    assignment: str
    status: str = "graded"              # graded | timeout | died | invalid | missing | error
    reason: str = ""
    total: float = 0.0
    max_total: float = 0.0
    questions: dict = field(default_factory=dict)
    cells: list = field(default_factory=list)
    time_s: float = 0.0
    notebook: str = ""
    timing: dict = field(default_factory=dict)
    restarts: int = 0                   # kernels restarted after a cell or a call hung or killed the kernel


def find_submissions(root: Path, assignments: list[str]) -> list[tuple[str, str, Path | None]]:
    out = []
    for student_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for a in assignments:
            nb = student_dir / f"{a}.ipynb"
            if not nb.is_file():
                folder = student_dir / a
                nb = folder / f"{a}.ipynb"
                if not nb.is_file() and folder.is_dir():
                    found = sorted(folder.glob("*.ipynb"))
                    nb = found[0] if len(found) == 1 else None
                elif not nb.is_file():
                    nb = None
            if nb is not None and nb.is_symlink():  # a link could point at anything: refuse it
                nb = None
            out.append((student_dir.name, a, nb))
    return out


class Guard:
    """Snapshot of the files a submission must not change; verify() restores and reports changes.

    Only used with the process-only fallback (macOS, Linux without user namespaces), where a kernel
    runs as the grader's user and could write the course. (With the namespace sandbox these files are
    read-only or invisible to the kernel.) Grading is serial in that mode, so a change is blamed on
    the submission that was running. Do not edit the course while grading in that mode.
    """

    def __init__(self, folders: list[Path], skip: list[Path]):
        self.files: dict[Path, bytes] = {}
        skip = [s.resolve() for s in skip]
        for folder in folders:
            for p in folder.rglob("*"):
                rp = p.resolve()
                if p.is_file() and "__pycache__" not in p.parts and not any(rp.is_relative_to(s) for s in skip):
                    self.files[p] = p.read_bytes()
        self.folders = folders

    def verify(self) -> list[str]:
        changed = []
        for p, data in self.files.items():
            try:
                same = p.read_bytes() == data
            except OSError:
                same = False
            if not same:
                changed.append(str(p))
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
        return changed


class BatchGrader:
    def __init__(self, assignments: dict[str, Assignment], limits: dict[str, Limits], jobs: int = 1,
                 isolation: str = "auto", threads: int = 1, log=print):
        self.assignments, self.limits, self.threads, self.log = assignments, limits, threads, log
        if isolation == "auto":
            isolation = "namespace" if namespaces_available() else "process"
        self.isolation = isolation
        # same-user kernels could interfere with each other: the process-only fallback grades one at a time
        self.jobs = max(1, jobs) if isolation == "namespace" else 1
        self.tmp = Path(tempfile.mkdtemp(prefix="cw-"))
        self._prepare_cache()

    def _prepare_cache(self) -> None:
        """A private copy of regedu's data cache for the workers (the kernels get their own copies)."""
        self.cache = self.tmp / "cache"
        self.cache.mkdir()
        default = Path(os.environ.get("REGEDU_CACHE") or Path.home() / ".cache" / "regedu")
        for f in default.glob("*.npz") if default.is_dir() else []:
            shutil.copyfile(f, self.cache / f.name)
        env = dict(os.environ, REGEDU_CACHE=str(self.cache))
        code = "import regedu.data as d\nfor r in (2, 4):\n    d.load_brain(resolution=r)"
        subprocess.run([sys.executable, "-c", code], env=env, cwd=str(self.tmp), capture_output=True, timeout=300)

    # ------------------------------------------------------------------ one submission
    def grade_one(self, student: str, assignment: str, notebook: Path | None) -> Row:
        a = self.assignments[assignment]
        row = Row(student, assignment, max_total=a.max_points, notebook=str(notebook or ""))
        row.questions = {t.grade_id: {"points": 0.0, "max_points": t.points, "passed": False, "feedback": ""} for t in a.tests}
        if notebook is None:
            row.status, row.reason = "missing", f"no notebook found for {assignment}"
            return self._fill(row)
        lim = self.limits[assignment]
        job_dir = Path(tempfile.mkdtemp(prefix="job-", dir=self.tmp))
        work, conn = job_dir / "work", job_dir / "conn"
        work.mkdir()
        conn.mkdir(mode=0o700)
        shutil.copyfile(notebook, work / f"{assignment}.ipynb")
        if self.cache.exists():
            shutil.copytree(self.cache, work / ".cache" / "regedu")
        job = dict(assignment=assignment, notebook=f"{assignment}.ipynb", workdir=str(work), conndir=str(conn),
                   tests=[asdict(t) for t in a.tests], student_names=a.student_names, limits=asdict(lim),
                   isolation=self.isolation, threads=self.threads)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
                   REGEDU_CACHE=str(self.cache), OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads),
                   TQDM_DISABLE="1", MPLBACKEND="Agg", COURSEWORK_GRADING="1")
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "coursework.grading.worker"], cwd=str(job_dir), env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            out, err = proc.communicate(json.dumps(job).encode(), timeout=STARTUP + lim.notebook + HARD_GRACE)
            result = json.loads(out.decode() or "{}") if proc.returncode == 0 else None
            if result is None:
                row.status, row.reason = "error", f"grading worker failed (exit {proc.returncode}): {err.decode(errors='replace')[-300:]}"
        except subprocess.TimeoutExpired:
            result = None
            row.status, row.reason = "timeout", f"timed out after {lim.notebook:.0f} s"
        except ValueError as e:
            result = None
            row.status, row.reason = "error", f"grading worker sent a bad result: {e}"
        finally:
            end_processes(proc.pid, groups=(proc.pid,))
            proc.wait()
            shutil.rmtree(job_dir, ignore_errors=True)
        row.time_s = round(time.monotonic() - t0, 2)
        if result is not None:
            row.status, row.reason = result.get("status", "error"), result.get("reason", "")
            row.cells = result.get("cells", [])
            row.timing = result.get("timing", {})
            row.restarts = int(result.get("restarts", 0))
            for gid, q in result.get("questions", {}).items():
                if gid in row.questions:
                    row.questions[gid].update(points=float(q.get("points", 0.0)), passed=bool(q.get("passed")),
                                              feedback=str(q.get("feedback", ""))[:600])
        return self._fill(row)

    @staticmethod
    def _fill(row: Row) -> Row:
        for q in row.questions.values():
            q["points"] = min(q["points"], q["max_points"])
            if row.status != "graded":  # the row's reason says why
                q["points"], q["passed"], q["feedback"] = 0.0, False, ""
        row.total = round(sum(q["points"] for q in row.questions.values()), 4)
        if row.total == 0 and not row.reason:
            failed = [f"{g}: {q['feedback']}" for g, q in row.questions.items() if q["feedback"]]
            row.reason = "no test passed" + (f" ({failed[0][:200]})" if failed else "")
        return row

    # ------------------------------------------------------------------ a batch
    def grade(self, submissions: list[tuple[str, str, Path | None]], guard: Guard | None = None) -> list[Row]:
        self.log(f"grading {len(submissions)} submission(s), {self.jobs} at a time, sandbox: {self.isolation}")
        rows: list[Row | None] = [None] * len(submissions)

        def task(i: int) -> None:
            student, assignment, nb = submissions[i]
            try:
                row = self.grade_one(student, assignment, nb)
            except Exception as e:  # noqa: BLE001 - one broken submission must not stop the batch
                row = self._fill(Row(student, assignment, status="error", reason=f"grader error: {e}",
                                     max_total=self.assignments[assignment].max_points,
                                     questions={t.grade_id: {"points": 0.0, "max_points": t.points, "passed": False,
                                                             "feedback": ""} for t in self.assignments[assignment].tests}))
            if guard is not None:
                changed = guard.verify()
                if changed:  # restored already; this (serial) or a concurrent submission changed them
                    row.status, row.reason = "error", "changed course files (restored): " + ", ".join(changed)[:300]
                    self._fill(row)
            rows[i] = row
            self.log(f"  {row.student}/{row.assignment}: {row.total:g}/{row.max_total:g} {row.status}"
                     f"{' - ' + row.reason if row.reason else ''} ({row.time_s:.1f} s)")

        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            list(pool.map(task, range(len(submissions))))
        return [r for r in rows if r is not None]

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------- gradebook
def write_gradebook(rows: list[Row], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    js, cs = out / "gradebook.json", out / "gradebook.csv"
    tmp = out / ".gradebook.json.tmp"
    tmp.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    os.replace(tmp, js)
    cols: list[tuple[str, str]] = []          # (assignment, grade_id) in order of first appearance
    for r in rows:
        cols += [(r.assignment, g) for g in r.questions if (r.assignment, g) not in cols]
    with open(out / ".gradebook.csv.tmp", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", "assignment", "total", "max_total", "status", "reason", *(f"{a}:{g}" for a, g in cols), "feedback"])
        for r in rows:
            qs = [f"{r.questions[g]['points']:g}" if a == r.assignment else "" for a, g in cols]
            fb = "; ".join(f"{g}: {q['feedback']}" for g, q in r.questions.items() if q["feedback"] and not q["passed"])
            w.writerow([r.student, r.assignment, f"{r.total:g}", f"{r.max_total:g}", r.status, r.reason, *qs, fb])
    os.replace(out / ".gradebook.csv.tmp", cs)
    return cs, js


def load_assignments(names: list[str] | None = None, source: Path = SOURCE) -> dict[str, Assignment]:
    notebooks = source_notebooks(source)
    names = names or list(notebooks)
    missing = [n for n in names if n not in notebooks]
    if missing:
        raise SystemExit(f"unknown assignment(s) {', '.join(missing)}; the source folder has {', '.join(notebooks)}")
    return {n: load_assignment(notebooks[n]) for n in names}

