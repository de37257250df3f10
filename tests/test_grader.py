"""The coursework grader: solutions score full marks, releases score zero, hostile submissions change
nothing but their own row, and nothing they start survives grading.

Two batches are graded with the real command line (``python -m coursework grade``), once per module:

* the three instructor solutions and the three released student versions;
* assignment 1 submitted by a correct student and by one broken or hostile student per attack
  (tests/grader_fixtures/hostile/*.py, applied to the A1 solution without its ungraded demo cells),
  plus a notebook that is not JSON, a student folder without a notebook, a loose notebook named as an
  LMS download names it, a symbolic link to the instructor's solution and a file that is no submission;
  graded while CPU burners load every core (limits are CPU time, so the verdicts must not change).

Sandbox properties, the unprivileged user, stopping a batch, ``--resume`` and the regrade after the
wall-clock backstop are in tests/test_grader_sandbox.py; fast unit tests in tests/test_grader_units.py.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest

psutil = pytest.importorskip("psutil")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from coursework.grading.batch import load_assignments  # noqa: E402
from coursework.grading.kernel import namespaces_available  # noqa: E402
from coursework.grading.spec import RELEASE, SOURCE, check_assignment, is_solution_cell, is_test_cell, nbgrader_meta  # noqa: E402

ASSIGNMENTS = ["a1_transforms", "a2_dvfs", "a3_learning"]
FIXTURES = REPO / "tests" / "grader_fixtures" / "hostile"
MARKERS = ("cw-hostile-children-marker", "cw-hostile-slow-marker")
NAMESPACES = namespaces_available()
A1_POINTS = {"q1_rotation_tests": 2, "q2_grid_tests": 2, "q3_sample_tests": 2, "q4_ssd_tests": 1,
             "q5_ncc_tests": 2, "q6_register_tests": 3}


def run_grader(submissions: Path, out: Path, *args: str, tmp: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "coursework", "grade", str(submissions), "--out", str(out), "--jobs", "2", *args]
    env = dict(os.environ, TMPDIR=str(tmp)) if tmp else None
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def rows_by(out: Path) -> dict[tuple[str, str], dict]:
    rows = json.loads((out / "gradebook.json").read_text())
    return {(r["student"], r["assignment"]): r for r in rows}


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


# ------------------------------------------------------------------------------------------ fixtures
def parse_fixture(path: Path) -> list[tuple[str, str, str]]:
    """``[(action, grade_id, code)]`` from the ``# %% after|replace <grade_id>`` markers."""
    ops, current = [], None
    for line in path.read_text().splitlines():
        if line.startswith("# %% "):
            action, gid = line[5:].split()
            current = [action, gid, []]
            ops.append(current)
        elif current is not None:
            current[2].append(line)
    return [(a, g, "\n".join(code).strip() + "\n") for a, g, code in ops]


def trimmed_a1():
    """A correct A1 submission: the released notebook with the solutions filled in, without markdown
    and ungraded demo cells (faster to grade). Like a real submission it has no hidden tests."""
    nb = nbformat.read(RELEASE / "a1_transforms" / "a1_transforms.ipynb", as_version=4)
    solutions = {nbgrader_meta(c)["grade_id"]: c.source
                 for c in nbformat.read(SOURCE / "a1_transforms" / "a1_transforms.ipynb", as_version=4).cells
                 if is_solution_cell(c)}
    code = [c for c in nb.cells if c.cell_type == "code"]
    setup = code[0]
    setup.metadata["nbgrader"] = {"grade_id": "setup"}  # a marker for the fixtures, not graded
    nb.cells = [setup] + [c for c in code[1:] if is_solution_cell(c) or is_test_cell(c)]
    for c in nb.cells:
        if is_solution_cell(c):
            c.source = solutions[nbgrader_meta(c)["grade_id"]]
    assert "HIDDEN" not in nbformat.writes(nb)
    return nb


def hostile_notebook(path: Path):
    nb = trimmed_a1()
    for action, gid, src in parse_fixture(path):
        index = next(i for i, c in enumerate(nb.cells) if nbgrader_meta(c).get("grade_id") == gid)
        if action == "replace":
            nb.cells[index].source = src
        elif action == "after":
            nb.cells.insert(index + 1, nbformat.v4.new_code_cell(src))
        else:
            raise ValueError(f"{path.name}: unknown action {action!r}")
    return nb


def survivors() -> list[int]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(m in " ".join(p.info["cmdline"] or []) for m in MARKERS):
                found.append(p.pid)
        except psutil.Error:
            continue
    return found


@pytest.fixture(scope="module")
def course_batch(tmp_path_factory):
    """Solutions and released versions of all three assignments."""
    subs = tmp_path_factory.mktemp("course_subs")
    for student, folder in (("solution", SOURCE), ("release", RELEASE)):
        for a in ASSIGNMENTS:
            (subs / student / a).mkdir(parents=True)
            (subs / student / a / f"{a}.ipynb").write_bytes((folder / a / f"{a}.ipynb").read_bytes())
    out = tmp_path_factory.mktemp("course_gradebook")
    run_grader(subs, out, "--timeout", "300", "--cell-timeout", "120")
    return rows_by(out)


@contextlib.contextmanager
def cpu_burners():
    """Load every core with a busy process for as long as the block runs (the grader must stay fair)."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    try:
        yield len(burners)
    finally:
        for b in burners:
            b.kill()
            b.wait()


def ipc_objects() -> str:
    """The host's SysV shared-memory segments and message queues (to see whether a kernel left any)."""
    out = subprocess.run(["ipcs", "-m", "-q"], capture_output=True, text=True) if shutil.which("ipcs") else None
    queues = os.listdir("/dev/mqueue") if os.path.isdir("/dev/mqueue") else []
    return (out.stdout if out else "") + " ".join(queues)


@pytest.fixture(scope="module")
def hostile_batch(tmp_path_factory):
    subs = tmp_path_factory.mktemp("hostile_subs")
    names = sorted(p.stem for p in FIXTURES.glob("*.py"))
    if not NAMESPACES:  # without the sandbox, kill(-1) would hit the user's own processes
        names.remove("tamper")
    for name in names:
        (subs / name).mkdir()
        nbformat.write(hostile_notebook(FIXTURES / f"{name}.py"), subs / name / "a1_transforms.ipynb")
    if "ipc_leak" in names:  # a second submission looks for what the first left behind
        (subs / "ipc_leak_again").mkdir()
        nbformat.write(hostile_notebook(FIXTURES / "ipc_leak.py"), subs / "ipc_leak_again" / "a1_transforms.ipynb")
    (subs / "correct").mkdir()
    nbformat.write(trimmed_a1(), subs / "correct" / "a1_transforms.ipynb")
    nbformat.write(trimmed_a1(), subs / "a1_transforms (1).ipynb")              # loose, named as an LMS download names it
    (subs / "invalid_json").mkdir()
    (subs / "invalid_json" / "a1_transforms.ipynb").write_text('{"cells": [')
    (subs / "missing").mkdir()
    (subs / "linked").symlink_to(SOURCE / "a1_transforms")                      # the instructor's solution: refused
    (subs / "notes.txt").write_text("not a submission")
    out = tmp_path_factory.mktemp("hostile_gradebook")
    (out / "gradebook.csv").write_text("stale,gradebook\n")  # must be replaced, not appended to
    watched = {p: digest(p) for p in (REPO / "coursework" / "source", REPO / "coursework" / "grading")}
    ipc_before = ipc_objects()
    tmp = Path(tempfile.mkdtemp(prefix="cwtest-"))   # the batch's TMPDIR: must be empty afterwards
    tmp.chmod(0o711)
    with cpu_burners():
        proc = run_grader(subs, out, "--assignment", "a1_transforms", "--timeout", "12", "--cell-timeout", "4",
                          "--wall-factor", "3", "--wall-margin", "30", tmp=tmp)
    temp_left = sorted(map(str, tmp.iterdir()))
    shutil.rmtree(tmp, ignore_errors=True)
    return {"rows": rows_by(out), "out": out, "names": names, "log": proc.stdout + proc.stderr,
            "changed": [str(p) for p, d in watched.items() if digest(p) != d], "survivors": survivors(),
            "ipc_before": ipc_before, "ipc_after": ipc_objects(),
            "temp_left": temp_left}


# ------------------------------------------------------------------------------------------ the course
def test_sources_pass_their_own_checks():
    for a in load_assignments(ASSIGNMENTS).values():
        assert check_assignment(a) == []
        assert a.tests and a.max_points >= 10


def test_solutions_score_full_marks(course_batch):
    for a in ASSIGNMENTS:
        row = course_batch[("solution", a)]
        failed = {g: q["feedback"] for g, q in row["questions"].items() if not q["passed"]}
        assert row["status"] == "graded" and row["total"] == row["max_total"], failed


def test_releases_run_and_score_zero(course_batch):
    for a in ASSIGNMENTS:
        row = course_batch[("release", a)]
        assert row["status"] == "graded" and row["total"] == 0, row
        assert all(c["status"] in ("ok", "error") for c in row["cells"]), "a released cell hung or killed the kernel"
        errors = {c["error"].split(":")[0] for c in row["cells"] if c["status"] == "error"}
        # stubs raise; later cells may miss a name that a failed cell (or a skipped test cell) would define
        assert errors <= {"NotImplementedError", "NameError"}, errors
        for q in row["questions"].values():
            assert "NotImplementedError" in q["feedback"], q


def test_release_is_nbgraders_output_and_hides_solutions(tmp_path):
    """The committed student versions are what nbgrader generates now (tags for nbval aside)."""
    from coursework.release import release

    fresh = release(ASSIGNMENTS, check=False, out=tmp_path, log=lambda *a: None)
    for path in fresh:
        a = path.stem
        committed = nbformat.read(RELEASE / a / f"{a}.ipynb", as_version=4)
        generated = nbformat.read(path, as_version=4)
        assert [c.source for c in committed.cells] == [c.source for c in generated.cells], f"{a}: run `python -m coursework release`"
        assert [nbgrader_meta(c) for c in committed.cells] == [nbgrader_meta(c) for c in generated.cells]
        text = (RELEASE / a / f"{a}.ipynb").read_text()
        for secret in ("BEGIN SOLUTION", "END SOLUTION", "HIDDEN TESTS"):
            assert secret not in text, f"{a}: released notebook contains {secret!r}"
        for cell in committed.cells:
            if is_solution_cell(cell):
                assert "raise NotImplementedError()" in cell.source
            tags = cell.metadata.get("tags", [])
            assert tags in ([], ["raises-exception"]), tags


# ------------------------------------------------------------------------------------------ hostile batch
EXPECTED = {  # student: (total, status)
    "correct": (12, "graded"),
    "a1_transforms (1)": (12, "graded"),
    "infinite_loop": (12, "graded"),
    "ignores_interrupt": (12, "graded"),
    "exceptions": (11, "graded"),
    "exits": (10, "graded"),
    "huge_print": (12, "graded"),
    "children": (12, "graded"),
    "slow_notebook": (0, "timeout"),
    "late_timeout": (7, "timeout"),
    "sleeper": (12, "graded"),
    "read_hidden_tests": (12, "graded"),
    "tamper": (12, "graded"),
    "fake_points": (0, "graded"),
    "empty_answers": (0, "graded"),
    "lying_shape": (0, "graded"),
    "root_escapes": (12, "graded"),
    "ipc_leak": (12, "graded"),
    "ipc_leak_again": (12, "graded"),
    "terminal_forgery": (11, "graded"),
    "memory_flood": (11, "graded"),
    "invalid_json": (0, "invalid"),
    "missing": (0, "missing"),
    "linked": (0, "invalid"),
}
NEEDS_SANDBOX = {"tamper", "read_hidden_tests", "root_escapes", "ipc_leak", "ipc_leak_again"}


def test_every_fixture_has_an_expectation():
    extra = {"correct", "a1_transforms (1)", "invalid_json", "missing", "linked", "ipc_leak_again"}
    assert {p.stem for p in FIXTURES.glob("*.py")} | extra == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hostile_submission_scores_as_expected(hostile_batch, name):
    if name in NEEDS_SANDBOX and not NAMESPACES:
        # without bubblewrap the kernel runs as the instructor's user; coursework/README.md says what that allows
        pytest.skip("needs the bubblewrap sandbox")
    row = hostile_batch["rows"][(name, "a1_transforms")]
    total, status = EXPECTED[name]
    detail = {g: q["feedback"] for g, q in row["questions"].items() if q["feedback"]}
    assert (row["total"], row["status"]) == (total, status), (row["reason"], detail, row["cells"])
    if total == 0:
        assert row["reason"], "a zero needs a reason"
    else:
        assert set(row["questions"]) == set(A1_POINTS)
    assert row["sandbox"], "the row says what contained the kernel"


def test_hostile_details(hostile_batch):
    rows = {k[0]: r for k, r in hostile_batch["rows"].items()}
    cells = lambda name: rows[name]["cells"]  # noqa: E731
    assert any(c["status"] == "timeout" and c["limit"] == "cpu" for c in cells("infinite_loop"))
    assert rows["infinite_loop"]["restarts"] == 0, "an interruptible loop needs no restart"
    assert rows["ignores_interrupt"]["restarts"] >= 1 and any(c["status"] == "timeout" for c in cells("ignores_interrupt"))
    assert any(c["status"] == "timeout" and c["limit"] == "wall" for c in cells("sleeper")), "waiting is stopped by the backstop"
    assert "cell" in rows["sleeper"]["stopped"] and "wall-clock" in rows["sleeper"]["stopped"], "the row says which cell stopped and why"
    assert "ValueError" in rows["exceptions"]["questions"]["q4_ssd_tests"]["feedback"]
    assert any("MemoryError" in c["error"] for c in cells("exceptions"))
    assert any("RuntimeError" in c["error"] for c in cells("exceptions"))
    assert any("SystemExit" in c["error"] for c in cells("exits"))
    assert sum(c["status"] == "died" for c in cells("exits")) == 2, "os._exit and exit() each kill a kernel"
    assert rows["exits"]["restarts"] >= 3, "two cells and one call killed the kernel"
    q5 = rows["exits"]["questions"]["q5_ncc_tests"]
    assert q5["points"] == 0 and "kernel" in q5["feedback"]
    flood = [c for c in cells("huge_print") if c["output_lost"] or c["output_bytes"] > 5_000_000]
    assert flood, "the flood of output was not noticed"
    assert len(json.dumps(rows["huge_print"])) < 100_000, "captured output must be capped"
    assert rows["slow_notebook"]["reason"].startswith("used more than 12 s of CPU time in total")
    late = rows["late_timeout"]
    assert [g for g, q in late["questions"].items() if q["passed"]] == ["q1_rotation_tests", "q2_grid_tests",
                                                                         "q3_sample_tests", "q4_ssd_tests"]
    assert "CPU time" in late["reason"] and "not graded" in late["questions"]["q6_register_tests"]["feedback"]
    for name in ("fake_points", "empty_answers", "lying_shape"):
        assert all(q["points"] == 0 for q in rows[name]["questions"].values()), name
    assert "not valid JSON" in rows["invalid_json"]["reason"]
    assert rows["missing"]["reason"] == "no notebook found for a1_transforms"
    assert "symbolic link" in rows["linked"]["reason"]
    assert "elements" in rows["memory_flood"]["questions"]["q4_ssd_tests"]["feedback"]
    assert rows["memory_flood"]["timing"]["worker_peak_mb"] < 1200, "the worker's memory stays bounded"
    if NAMESPACES:
        for name in ("root_escapes", "ipc_leak", "ipc_leak_again"):
            assert rows[name]["questions"]["q1_rotation_tests"]["passed"], rows[name]["questions"]["q1_rotation_tests"]["feedback"]


def test_console_log_is_sanitised_and_lists_what_was_not_graded(hostile_batch):
    log = hostile_batch["log"]
    assert "\x1b" not in log and "\r" not in log, "a submission's escape sequences reached the console"
    assert "\\x1b[1A" in log, "the forged error is shown, escaped"
    assert "notes.txt" in log and "notes.txt" in (hostile_batch["out"] / "not_graded.csv").read_text()


def test_nothing_survives_grading(hostile_batch):
    assert hostile_batch["survivors"] == [], "processes started by submissions are still running"
    assert survivors() == []
    assert hostile_batch["ipc_after"] == hostile_batch["ipc_before"], "a kernel left IPC objects on the host"
    assert hostile_batch["temp_left"] == [], "temporary folders of the batch are left"


def test_course_files_and_gradebook_are_intact(hostile_batch):
    assert hostile_batch["changed"] == [], "a submission changed course files"
    out = hostile_batch["out"]
    with open(out / "gradebook.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert {r["student"] for r in table} == set(EXPECTED) - ({"tamper"} - set(hostile_batch["names"])), \
        "every submission gets exactly one row"
    for r in table:
        assert float(r["total"]) == sum(float(r[f"a1_transforms:{g}"]) for g in A1_POINTS)
        assert r["max_total"] == "12"
    assert "tampered" not in (out / "gradebook.csv").read_text() + (out / "gradebook.json").read_text()
    with open(out / "grades.csv", newline="") as f:
        export = list(csv.DictReader(f))
    assert {r["student_id"] for r in export} == {r["student"] for r in table}
    feedback = out / "feedback" / "correct" / "a1_transforms" / "a1_transforms.html"
    assert "Full marks" in feedback.read_text()


