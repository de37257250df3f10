"""Grade a folder of submissions into a gradebook (CSV and JSON), nbgrader's export and feedback files.

Layouts understood (``<root>`` is the folder given on the command line):

* ``<root>/<student>/<assignment>.ipynb``
* ``<root>/<student>/<assignment>/<assignment>.ipynb`` (nbgrader's ``submitted/`` folder, as
  ``nbgrader collect`` leaves it; any single ``.ipynb`` in that folder is accepted)
* names as a download from a learning platform gives them, in a student folder or loose in
  ``<root>``: ``a1_transforms (1).ipynb``, ``a1_transforms-2.ipynb``, ``smith_1234_a1_transforms.ipynb``
  (a loose notebook's student is the rest of its name, or the whole name when nothing else is left).

**Nothing is lost.** Every entry of ``<root>`` gets a row or a listed reason (``not_graded.csv``):
folders whose name starts with a dot are students like any other, symbolic links are refused *with a
row that says so*, loose notebooks are recognised, files that are not notebooks are listed. The
gradebook is rewritten atomically after every submission, so a killed batch keeps every finished row
and ``--resume`` grades only what is missing. SIGTERM / SIGINT stop the workers and their kernels,
remove the temporary files and keep the rows graded so far. Every string that comes from a
submission is sanitised before it reaches the console (no terminal escape sequences).

The batch process never runs student code itself.
"""

from __future__ import annotations

import csv
import hashlib
import html
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import bwrap as bw
from .kernel import namespaces_available, sandbox_description
from .sandbox import Limits, die_with_parent, end_processes
from .spec import ROOT, SOURCE, Assignment, load_assignment, source_notebooks

REPO = ROOT.parent
HARD_GRACE = 60.0     # the worker stops itself at the notebook's backstop; we kill it this much later
STARTUP = 120.0       # the worker's allowance for starting the first kernel (see worker.STARTUP)
IGNORED = {".ipynb_checkpoints", ".DS_Store", "__MACOSX", "Thumbs.db", ".git", "desktop.ini"}
NBGRADER_COLUMNS = ["assignment", "duedate", "timestamp", "student_id", "last_name", "first_name", "email",
                    "raw_score", "late_submission_penalty", "score", "max_score"]   # nbgrader export's CSV


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
    stopped: str = ""                   # which cells were stopped, and why
    sandbox: str = ""                   # what contained the kernel (the fallback says that it is weaker)
    sha256: str = ""                    # of the graded notebook (for --resume)
    regraded: bool = False              # graded again alone after the wall-clock backstop


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def clean(text: object, limit: int = 300) -> str:
    """A submission's string made safe for a terminal: control characters (ESC, CR, ...) and
    bidirectional overrides shown as escapes, newlines as ``\\n``, length capped."""
    s = str(text)[: limit * 4]
    s = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), s.replace("\n", "\\n"))
    return s[:limit] + ("..." if len(s) > limit else "")


# ---------------------------------------------------------------------------------------- finding submissions
def _lms_match(stem: str, assignments: list[str]) -> tuple[str, str] | None:
    """``(assignment, rest)`` when a file name stem names an assignment as LMS downloads do."""
    norm = re.sub(r"\s*\(\d+\)$|[-_ ]\d+$", "", stem.strip())          # "a1_transforms (1)", "a1_transforms-2"
    for a in sorted(assignments, key=len, reverse=True):
        i = norm.lower().find(a.lower())
        if i >= 0:
            rest = (norm[:i] + norm[i + len(a):]).strip(" _-.")
            return a, rest
    return None


def _inside(path: Path, folder: Path) -> bool:
    return os.path.realpath(path).startswith(os.path.realpath(folder) + os.sep)


def find_submissions(root: Path, assignments: list[str]) -> tuple[list[tuple[str, str, Path | None, str]], list[tuple[str, str]]]:
    """``(submissions, notes)``: ``(student, assignment, notebook or None, reason)`` per row, and
    ``(entry, reason)`` for every entry of ``root`` that gets no row."""
    subs: list[tuple[str, str, Path | None, str]] = []
    notes: list[tuple[str, str]] = []
    loose: dict[tuple[str, str], list[Path]] = {}
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        name = entry.name
        if name in IGNORED:
            notes.append((name, "ignored: system or checkpoint folder/file"))
        elif entry.is_symlink():
            target = os.readlink(entry)
            if entry.is_dir() or not name.endswith(".ipynb"):
                subs += [(name, a, None, f"refused: the submission folder is a symbolic link (to {target})") for a in assignments]
            else:
                notes.append((name, f"refused: a symbolic link (to {target})"))
        elif entry.is_dir():
            subs += _student_folder(entry, assignments, notes)
        elif name.endswith(".ipynb"):
            m = _lms_match(entry.stem, assignments)
            if m is None:
                notes.append((name, f"ignored: the name names none of the assignments ({', '.join(assignments)})"))
            else:
                loose.setdefault((m[1] or entry.stem, m[0]), []).append(entry)
        else:
            notes.append((name, "ignored: not a notebook and not a folder"))
    for (student, a), files in sorted(loose.items()):
        files.sort(key=lambda p: p.stat().st_mtime)
        for older in files[:-1]:
            notes.append((older.name, f"not graded: {files[-1].name} is a later submission of {a} by {student}"))
        subs.append((student, a, files[-1], ""))
    return subs, notes


def _student_folder(folder: Path, assignments: list[str], notes: list[tuple[str, str]]) -> list:
    out = []
    used: set[Path] = set()
    notebooks = [p for p in folder.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts]
    for a in assignments:
        exact = [folder / f"{a}.ipynb", folder / a / f"{a}.ipynb"]
        found = [p for p in exact if os.path.lexists(p)]
        if not found and (folder / a).is_dir() and not (folder / a).is_symlink():
            inner = sorted(p for p in (folder / a).glob("*.ipynb"))
            found = inner if len(inner) == 1 else []
        if not found:   # LMS-style names: "a1_transforms (1).ipynb", "smith_a1_transforms.ipynb"
            found = sorted((p for p in notebooks if p.parent == folder and (m := _lms_match(p.stem, [a])) and m[0] == a),
                           key=lambda p: p.stat().st_mtime, reverse=True)
        if not found:
            out.append((folder.name, a, None, f"no notebook found for {a}"))
            continue
        nb = found[0]
        used.update(found)
        if any(q.is_symlink() for q in (nb, nb.parent)) or not _inside(nb, folder):
            out.append((folder.name, a, None, f"refused: {nb.relative_to(folder)} is a symbolic link"))
        elif not nb.is_file():
            out.append((folder.name, a, None, f"refused: {nb.relative_to(folder)} is not a regular file"))
        else:
            out.append((folder.name, a, nb, ""))
            for other in found[1:]:
                notes.append((f"{folder.name}/{other.relative_to(folder)}", f"not graded: {nb.name} was graded for {a}"))
    for p in notebooks:
        if p not in used:
            notes.append((f"{folder.name}/{p.relative_to(folder)}", "ignored: names none of the assignments graded"))
    return out


class Guard:
    """Snapshot of the files a submission must not change; verify() restores and reports changes.

    Only used with the process-only fallback (macOS, Linux without bubblewrap), where a kernel runs
    as the grader's user and could write the course. (In the sandbox these files are read-only or
    invisible to the kernel.) Grading is serial in that mode, so a change is blamed on the submission
    that was running. Do not edit the course while grading in that mode.
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


def _limit_worker(memory_gb: float):
    def apply() -> None:
        die_with_parent()
        # a soft limit: the worker (our code) keeps to it, and may still give its kernel a larger one
        resource.setrlimit(resource.RLIMIT_AS, (int(memory_gb * 1024**3), resource.getrlimit(resource.RLIMIT_AS)[1]))
    return apply


class BatchGrader:
    def __init__(self, assignments: dict[str, Assignment], limits: dict[str, Limits], jobs: int = 1,
                 isolation: str = "auto", threads: int = 1, log=print, worker_memory_gb: float = 3.0):
        self.assignments, self.limits, self.threads, self.log = assignments, limits, threads, log
        self.worker_memory_gb = worker_memory_gb
        if isolation == "namespace":
            isolation = "bubblewrap"
        if isolation == "auto":
            isolation = "bubblewrap" if namespaces_available() else "process"
        self.isolation = isolation
        self.sandbox = sandbox_description(isolation)
        # same-user kernels could interfere with each other: the process-only fallback grades one at a time
        self.jobs = max(1, jobs) if isolation == "bubblewrap" else 1
        self.tmp = Path(tempfile.mkdtemp(prefix="cw-"))
        os.chmod(self.tmp, 0o711)      # the sandbox's uid (root mode) passes through, lists nothing
        self.running: dict[int, subprocess.Popen] = {}
        self.lock = threading.Lock()
        self.stopping = False
        self._prepare_cache()

    def _prepare_cache(self) -> None:
        """A private copy of regedu's data cache, read-only for the kernels."""
        self.cache = self.tmp / "cache"
        self.cache.mkdir()
        default = Path(os.environ.get("REGEDU_CACHE") or Path.home() / ".cache" / "regedu")
        for f in default.glob("*.npz") if default.is_dir() else []:
            shutil.copyfile(f, self.cache / f.name)
        env = dict(os.environ, REGEDU_CACHE=str(self.cache))
        code = "import regedu.data as d\nfor r in (2, 4):\n    d.load_brain(resolution=r)"
        subprocess.run([sys.executable, "-c", code], env=env, cwd=str(self.tmp), capture_output=True, timeout=300)
        self.cache.chmod(0o755)
        for f in self.cache.iterdir():
            f.chmod(0o644)

    def _new_row(self, student: str, assignment: str, notebook: Path | None) -> Row:
        a = self.assignments[assignment]
        row = Row(student, assignment, max_total=a.max_points, notebook=str(notebook or ""), sandbox=self.sandbox)
        row.questions = {t.grade_id: {"points": 0.0, "max_points": t.points, "passed": False, "feedback": ""} for t in a.tests}
        return row

    # ------------------------------------------------------------------ one submission
    def grade_one(self, student: str, assignment: str, notebook: Path | None, reason: str = "") -> Row:
        row = self._new_row(student, assignment, notebook)
        if notebook is None:
            row.status = "invalid" if reason.startswith("refused") else "missing"
            row.reason = reason or f"no notebook found for {assignment}"
            return self._fill(row)
        lim = self.limits[assignment]
        job_dir = Path(tempfile.mkdtemp(prefix="job-", dir=self.tmp))
        os.chmod(job_dir, 0o711)
        work, conn = job_dir / "work", job_dir / "conn"
        work.mkdir()
        conn.mkdir(mode=0o700)
        data = notebook.read_bytes()
        row.sha256 = hashlib.sha256(data).hexdigest()
        (work / f"{assignment}.ipynb").write_bytes(data)
        job = dict(assignment=assignment, notebook=f"{assignment}.ipynb", workdir=str(work), conndir=str(conn),
                   cache=str(self.cache), tests=[asdict(t) for t in self.assignments[assignment].tests],
                   student_names=self.assignments[assignment].student_names, limits=asdict(lim),
                   isolation=self.isolation, threads=self.threads)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
                   REGEDU_CACHE=str(self.cache), OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads),
                   TQDM_DISABLE="1", MPLBACKEND="Agg", COURSEWORK_GRADING="1")
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "coursework.grading.worker"], cwd=str(job_dir), env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, preexec_fn=_limit_worker(self.worker_memory_gb))
        with self.lock:
            self.running[proc.pid] = proc
        result = None
        try:
            out, err = proc.communicate(json.dumps(job).encode(), timeout=STARTUP + lim.notebook_wall() + HARD_GRACE)
            result = json.loads(out.decode() or "{}") if proc.returncode == 0 else None
            if result is None:
                row.status, row.reason = "error", f"grading worker failed (exit {proc.returncode}): {err.decode(errors='replace')[-300:]}"
        except subprocess.TimeoutExpired:
            row.status, row.reason = "timeout", f"the grading worker did not finish within {STARTUP + lim.notebook_wall():.0f} s"
            result = {"backstop": True}
        except ValueError as e:
            row.status, row.reason = "error", f"grading worker sent a bad result: {e}"
        finally:
            end_processes(proc.pid, groups=(proc.pid,))
            proc.wait()
            with self.lock:
                self.running.pop(proc.pid, None)
            shutil.rmtree(job_dir, ignore_errors=True)
        row.time_s = round(time.monotonic() - t0, 2)
        if result and "status" in result:
            row.status, row.reason = result.get("status", "error"), str(result.get("reason", ""))
            row.cells = result.get("cells", [])
            row.timing = result.get("timing", {})
            row.restarts = int(result.get("restarts", 0))
            row.stopped = str(result.get("stopped", ""))
            for gid, q in result.get("questions", {}).items():
                if gid in row.questions:
                    row.questions[gid].update(points=float(q.get("points", 0.0)), passed=bool(q.get("passed")),
                                              feedback=str(q.get("feedback", ""))[:600])
        row.timing["backstop"] = bool(result and result.get("backstop"))
        return self._fill(row)

    @staticmethod
    def _fill(row: Row) -> Row:
        for q in row.questions.values():
            q["points"] = min(q["points"], q["max_points"]) if q["passed"] else 0.0
            if row.status in ("invalid", "missing", "error"):  # nothing was graded; the row's reason says why
                q["points"], q["passed"] = 0.0, False
        row.total = round(sum(q["points"] for q in row.questions.values()), 4)
        if row.total == 0 and not row.reason:
            failed = [f"{g}: {q['feedback']}" for g, q in row.questions.items() if q["feedback"]]
            row.reason = "no test passed" + (f" ({failed[0][:200]})" if failed else "")
        return row

    # ------------------------------------------------------------------ a batch
    def grade(self, submissions: list, guard: Guard | None = None, done: list[Row] | None = None,
              on_row=None) -> list[Row]:
        """Grade ``submissions`` (``(student, assignment, notebook, reason)``); ``done`` rows (from
        ``--resume``) are kept as they are; ``on_row(rows)`` is called after every new row."""
        rows: list[Row] = list(done or [])
        have = {(r.student, r.assignment) for r in rows}
        todo = [s for s in submissions if (s[0], s[1]) not in have]
        self.log(f"grading {len(todo)} submission(s), {self.jobs} at a time; sandbox: {self.sandbox}"
                 + (f" ({len(have)} already in the gradebook)" if have else ""))

        def finish(row: Row) -> None:
            if guard is not None:
                changed = guard.verify()
                if changed:  # restored already; this (serial) submission changed them
                    row.status, row.reason = "error", "changed course files (restored): " + ", ".join(changed)[:300]
                    self._fill(row)
            with self.lock:
                rows[:] = [r for r in rows if (r.student, r.assignment) != (row.student, row.assignment)] + [row]
                if on_row is not None:
                    on_row(list(rows))
            failed = [f"{g} ({q['feedback']})" for g, q in row.questions.items() if not q["passed"] and q["feedback"]]
            detail = row.reason or (f"failed: {failed[0]}" + (f" and {len(failed) - 1} more" if len(failed) > 1 else "")
                                    if failed else "")
            self.log(f"  {clean(row.student, 80)}/{row.assignment}: {row.total:g}/{row.max_total:g} {row.status}"
                     f"{' - ' + clean(detail, 200) if detail else ''} ({row.time_s:.1f} s)")

        def task(sub) -> Row:
            student, assignment, nb, reason = sub
            if self.stopping:
                raise SystemExit
            try:
                row = self.grade_one(student, assignment, nb, reason)
            except Exception as e:  # noqa: BLE001 - one broken submission must not stop the batch
                row = self._fill(self._new_row(student, assignment, nb))
                row.status, row.reason = "error", f"grader error: {type(e).__name__}: {e}"
            if not self.stopping:
                finish(row)
            return row

        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            graded = list(pool.map(task, todo))
        # a submission stopped by the wall-clock backstop may have suffered from the load: once more, alone
        again = [(s, r) for s, r in zip(todo, graded) if r.status == "timeout" and r.timing.get("backstop")]
        for sub, first in again:
            self.log(f"  {clean(sub[0], 80)}/{sub[1]}: hit the wall-clock backstop; grading it again, alone")
            row = task(sub)
            row.regraded = True
            row.reason = (row.reason + "; " if row.reason else "") + f"graded again alone (first try: {first.reason})"
            finish(row)
        return rows

    def stop(self) -> None:
        """Stop every worker (and so every kernel) and remove the temporary files."""
        self.stopping = True
        with self.lock:
            procs = list(self.running.values())
        for proc in procs:   # a worker ends its kernel and cleans up on SIGTERM ...
            try:
                proc.terminate()
            except OSError:
                pass
        end = time.monotonic() + 10
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            end_processes(proc.pid, groups=(proc.pid,))   # ... and whatever is left is killed
        self.close()

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------- gradebook
def _cell(value: str) -> str:
    """A CSV field that a spreadsheet will not run as a formula."""
    value = _CONTROL.sub(" ", value)
    return "'" + value if value[:1] in ("=", "+", "-", "@") and not re.fullmatch(r"-?[\d.]+", value) else value


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_gradebook(rows: list[Row], out: Path, notes: list[tuple[str, str]] | None = None) -> tuple[Path, Path]:
    """gradebook.json (everything), gradebook.csv (a row per student and assignment), grades.csv
    (``nbgrader export``'s columns) and not_graded.csv, each replaced atomically."""
    out.mkdir(parents=True, exist_ok=True)
    rows = sorted(rows, key=lambda r: (r.assignment, r.student))
    js, cs = out / "gradebook.json", out / "gradebook.csv"
    _atomic(js, lambda f: f.write(json.dumps([asdict(r) for r in rows], indent=1)))
    cols: list[tuple[str, str]] = []          # (assignment, grade_id) in order of first appearance
    for r in rows:
        cols += [(r.assignment, g) for g in r.questions if (r.assignment, g) not in cols]

    def ours(f) -> None:
        w = csv.writer(f)
        w.writerow(["student", "assignment", "total", "max_total", "status", "reason", *(f"{a}:{g}" for a, g in cols),
                    "feedback", "stopped", "sandbox"])
        for r in rows:
            qs = [f"{r.questions[g]['points']:g}" if a == r.assignment else "" for a, g in cols]
            fb = "; ".join(f"{g}: {q['feedback']}" for g, q in r.questions.items() if q["feedback"] and not q["passed"])
            w.writerow([_cell(x) for x in (r.student, r.assignment, f"{r.total:g}", f"{r.max_total:g}", r.status,
                                           r.reason, *qs, fb, r.stopped, r.sandbox)])

    def nbgrader(f) -> None:
        w = csv.writer(f)
        w.writerow(NBGRADER_COLUMNS)
        for r in rows:   # (nbgrader exports a student without a submission with score 0 too)
            w.writerow([_cell(x) for x in (r.assignment, "", "", r.student, "", "", "", f"{r.total:g}", "0",
                                           f"{r.total:g}", f"{r.max_total:g}")])

    _atomic(cs, ours)
    _atomic(out / "grades.csv", nbgrader)
    if notes is not None:
        _atomic(out / "not_graded.csv", lambda f: csv.writer(f).writerows([("entry", "reason"), *[(_cell(a), _cell(b)) for a, b in notes]]))
    return cs, js


def load_rows(out: Path) -> list[Row]:
    """The rows of an existing gradebook.json (for ``--resume``)."""
    path = out / "gradebook.json"
    if not path.is_file():
        return []
    fields = set(Row.__dataclass_fields__)
    return [Row(**{k: v for k, v in r.items() if k in fields}) for r in json.loads(path.read_text())]


def feedback_html(row: Row) -> str:
    """One student's feedback on one assignment (like ``nbgrader generate_feedback``)."""
    e = html.escape
    full = row.status == "graded" and row.total == row.max_total and row.max_total > 0
    lines = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(row.assignment)}: feedback</title>",
             "<style>body{font-family:sans-serif;max-width:50em;margin:2em auto}td,th{padding:.3em .6em;text-align:left;"
             "vertical-align:top}.ok{color:#17612d}.no{color:#a1121b}</style></head><body>",
             f"<h1>{e(row.assignment)}</h1><p>Student: {e(row.student)}</p>",
             f"<h2>Score: {row.total:g} / {row.max_total:g}</h2>"]
    if full:
        lines.append("<p class='ok'><b>Full marks: every test passed. Well done!</b></p>")
    elif row.reason:
        lines.append(f"<p>{e(row.reason)}</p>")
    if row.stopped:
        lines.append(f"<p>Cells that were stopped: {e(row.stopped)}</p>")
    lines.append("<table><tr><th>question</th><th>points</th><th>feedback</th></tr>")
    for gid, q in row.questions.items():
        mark = "<span class='ok'>passed</span>" if q["passed"] else f"<span class='no'>{e(q['feedback'] or 'failed')}</span>"
        lines.append(f"<tr><td>{e(gid)}</td><td>{q['points']:g} / {q['max_points']:g}</td><td>{mark}</td></tr>")
    lines.append("</table>")
    errors = [c for c in row.cells if c.get("status") != "ok"]
    if errors:
        lines.append("<h3>Cells of your notebook that did not run cleanly</h3><ul>")
        lines += [f"<li>cell {c['cell']}: {e(str(c.get('error') or c.get('status')))}</li>" for c in errors]
        lines.append("</ul>")
    lines.append("</body></html>")
    return "\n".join(lines)


def _safe_name(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._ ()@+-]", "_", name).strip(". ") or "_"
    return safe[:120]


def write_feedback(rows: list[Row], out: Path) -> list[Path]:
    """``feedback/<student>/<assignment>/<assignment>.html`` (nbgrader's layout) for every graded row."""
    written = []
    for r in rows:
        if r.status == "missing":
            continue
        path = out / "feedback" / _safe_name(r.student) / r.assignment / f"{r.assignment}.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic(path, lambda f, r=r: f.write(feedback_html(r)))
        written.append(path)
    return written


def write_nbgrader_db(rows: list[Row], db_url: str, assignments: dict[str, Assignment]) -> int:
    """Scores into nbgrader's gradebook database (formgrader shows them): returns the rows written."""
    from nbgrader.api import Gradebook, MissingEntry

    bindir = str(Path(sys.executable).parent)   # nbgrader runs its environment's `alembic` command
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    n = 0
    with Gradebook(db_url) as gb:
        for name, a in assignments.items():
            gb.update_or_create_assignment(name)
            try:
                gb.find_notebook(name, name)
            except MissingEntry:
                gb.add_notebook(name, name)
            for t in a.tests:
                try:
                    gb.find_grade_cell(t.grade_id, name, name)
                except MissingEntry:
                    gb.add_grade_cell(t.grade_id, name, name, max_score=t.points, cell_type="code")
        for r in rows:
            if r.status == "missing" or r.assignment not in assignments:
                continue
            try:
                gb.find_student(r.student)
            except MissingEntry:
                gb.add_student(r.student)
            try:
                gb.find_submission(r.assignment, r.student)
            except MissingEntry:
                gb.add_submission(r.assignment, r.student)
            for gid, q in r.questions.items():
                grade = gb.find_grade(gid, r.assignment, r.assignment, r.student)
                grade.auto_score = float(q["points"])
            gb.db.commit()
            n += 1
    return n


def load_assignments(names: list[str] | None = None, source: Path = SOURCE) -> dict[str, Assignment]:
    notebooks = source_notebooks(source)
    names = names or list(notebooks)
    missing = [n for n in names if n not in notebooks]
    if missing:
        raise SystemExit(f"unknown assignment(s) {', '.join(missing)}; the source folder has {', '.join(notebooks)}")
    return {n: load_assignment(notebooks[n]) for n in names}


def install_stop_handlers(grader: BatchGrader, save) -> None:
    """SIGTERM / SIGINT: stop workers and kernels, remove temporary files, keep the rows graded so far."""
    def handler(signum, frame):
        grader.log(f"stopping ({signal.Signals(signum).name}): ending workers and kernels, keeping the rows graded so far")
        grader.stop()
        save()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


__all__ = ["BatchGrader", "Guard", "Row", "clean", "find_submissions", "load_assignments", "load_rows",
           "write_feedback", "write_gradebook", "write_nbgrader_db", "bw"]
