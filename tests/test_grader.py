"""The coursework grader: solutions score full marks, releases score zero, hostile submissions change
nothing but their own row, and nothing they start survives grading.

Two batches are graded with the real command line (``python -m coursework grade``), once per module:

* the three instructor solutions and the three released student versions;
* assignment 1 submitted by a correct student and by one broken or hostile student per attack
  (tests/grader_fixtures/hostile/*.py, applied to the A1 solution without its ungraded demo cells),
  plus a notebook that is not JSON and a student folder without a notebook.
"""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

psutil = pytest.importorskip("psutil")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from coursework.grading import rpc  # noqa: E402
from coursework.grading.batch import Guard, load_assignments  # noqa: E402
from coursework.grading.kernel import namespaces_available  # noqa: E402
from coursework.grading.spec import RELEASE, SOURCE, check_assignment, is_solution_cell, is_test_cell, nbgrader_meta  # noqa: E402

ASSIGNMENTS = ["a1_transforms", "a2_dvfs", "a3_learning"]
FIXTURES = REPO / "tests" / "grader_fixtures" / "hostile"
MARKERS = ("cw-hostile-children-marker", "cw-hostile-slow-marker")
NAMESPACES = namespaces_available()
A1_POINTS = {"q1_rotation_tests": 2, "q2_grid_tests": 2, "q3_sample_tests": 2, "q4_ssd_tests": 1,
             "q5_ncc_tests": 2, "q6_register_tests": 3}


def run_grader(submissions: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "coursework", "grade", str(submissions), "--out", str(out), "--jobs", "2", *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
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


@pytest.fixture(scope="module")
def hostile_batch(tmp_path_factory):
    subs = tmp_path_factory.mktemp("hostile_subs")
    names = sorted(p.stem for p in FIXTURES.glob("*.py"))
    if not NAMESPACES:  # without namespaces, kill(-1) would hit the user's own processes
        names.remove("tamper")
    for name in names:
        (subs / name).mkdir()
        nbformat.write(hostile_notebook(FIXTURES / f"{name}.py"), subs / name / "a1_transforms.ipynb")
    (subs / "correct").mkdir()
    nbformat.write(trimmed_a1(), subs / "correct" / "a1_transforms.ipynb")
    (subs / "invalid_json").mkdir()
    (subs / "invalid_json" / "a1_transforms.ipynb").write_text('{"cells": [')
    (subs / "missing").mkdir()
    out = tmp_path_factory.mktemp("hostile_gradebook")
    (out / "gradebook.csv").write_text("stale,gradebook\n")  # must be replaced, not appended to
    watched = {p: digest(p) for p in (REPO / "coursework" / "source", REPO / "coursework" / "grading")}
    proc = run_grader(subs, out, "--assignment", "a1_transforms", "--timeout", "40", "--cell-timeout", "6")
    return {"rows": rows_by(out), "out": out, "names": names, "log": proc.stdout,
            "changed": [str(p) for p, d in watched.items() if digest(p) != d], "survivors": survivors()}


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
EXPECTED = {  # fixture: (total, status)
    "correct": (12, "graded"),
    "infinite_loop": (12, "graded"),
    "ignores_interrupt": (12, "graded"),
    "exceptions": (11, "graded"),
    "exits": (10, "graded"),
    "huge_print": (12, "graded"),
    "children": (12, "graded"),
    "slow_notebook": (0, "timeout"),
    "read_hidden_tests": (12, "graded"),
    "tamper": (12, "graded"),
    "fake_points": (0, "graded"),
    "invalid_json": (0, "invalid"),
    "missing": (0, "missing"),
}


def test_every_fixture_has_an_expectation():
    assert {p.stem for p in FIXTURES.glob("*.py")} | {"correct", "invalid_json", "missing"} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hostile_submission_scores_as_expected(hostile_batch, name):
    if name == "tamper" and name not in hostile_batch["names"]:
        pytest.skip("needs the namespace sandbox")
    if name == "read_hidden_tests" and not NAMESPACES:
        # without namespaces the kernel runs as the instructor's user and can read the course folder;
        # coursework/README.md ("Security design") says so: grade on Linux with user namespaces
        pytest.skip("hiding the hidden tests from a submission needs the namespace sandbox")
    row = hostile_batch["rows"][(name, "a1_transforms")]
    total, status = EXPECTED[name]
    detail = {g: q["feedback"] for g, q in row["questions"].items() if q["feedback"]}
    assert (row["total"], row["status"]) == (total, status), (row["reason"], detail, row["cells"])
    if total == 0:
        assert row["reason"], "a zero needs a reason"
    else:
        assert set(row["questions"]) == set(A1_POINTS)


def test_hostile_details(hostile_batch):
    rows = {k[0]: r for k, r in hostile_batch["rows"].items()}
    cells = lambda name: rows[name]["cells"]  # noqa: E731
    assert any(c["status"] == "timeout" for c in cells("infinite_loop"))
    assert rows["infinite_loop"]["restarts"] == 0, "an interruptible loop needs no restart"
    assert rows["ignores_interrupt"]["restarts"] >= 1 and any(c["status"] == "timeout" for c in cells("ignores_interrupt"))
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
    assert rows["slow_notebook"]["reason"] == "timed out after 40 s"
    assert all(q["points"] == 0 for q in rows["fake_points"]["questions"].values())
    assert "not valid JSON" in rows["invalid_json"]["reason"]
    assert rows["missing"]["reason"] == "no notebook found for a1_transforms"


def test_nothing_survives_grading(hostile_batch):
    assert hostile_batch["survivors"] == [], "processes started by submissions are still running"
    assert survivors() == []


def test_course_files_and_gradebook_are_intact(hostile_batch):
    assert hostile_batch["changed"] == [], "a submission changed course files"
    out = hostile_batch["out"]
    with open(out / "gradebook.csv", newline="") as f:
        table = list(csv.DictReader(f))
    expected_students = set(hostile_batch["names"]) | {"correct", "invalid_json", "missing"}
    assert {r["student"] for r in table} == expected_students, "every submission gets exactly one row"
    for r in table:
        assert float(r["total"]) == sum(float(r[f"a1_transforms:{g}"]) for g in A1_POINTS)
        assert r["max_total"] == "12"
    assert "tampered" not in (out / "gradebook.csv").read_text() + (out / "gradebook.json").read_text()


# ------------------------------------------------------------------------------------------ units (fast)
def test_results_from_the_kernel_are_decoded_strictly():
    remote = rpc.Remote(kernel=None)
    ok = json.dumps({"ok": rpc.encode((1, [2.5, "x"], {"a": None}))})
    assert rpc.decode(ok, remote) == {"ok": (1, [2.5, "x"], {"a": None})}
    t = rpc.decode(json.dumps({"ok": rpc.encode(__import__("torch").arange(6.0).reshape(2, 3))}), remote)["ok"]
    assert t.shape == (2, 3) and float(t.sum()) == 15.0
    bad_dtype = {"ok": {"__ndarray__": {"dtype": "object", "shape": [1], "data": ""}}}
    bad_shape = {"ok": {"__tensor__": {"dtype": "float32", "shape": [1000], "data": "AAAAAA=="}}}
    for payload in (bad_dtype, bad_shape):
        with pytest.raises(rpc.KernelUnavailable, match="malformed"):
            rpc.decode(json.dumps(payload), remote)
    with pytest.raises(rpc.KernelUnavailable, match="malformed"):
        rpc.decode("[" * 100_000, remote)
    with pytest.raises(TypeError, match="cannot send"):
        rpc.encode(object())


def test_student_errors_keep_their_type():
    err = rpc._error_type("ValueError")("ValueError: bad")
    assert isinstance(err, ValueError) and isinstance(err, rpc.StudentError)
    assert not isinstance(rpc._error_type("MyError")("x"), ValueError)


def test_guard_restores_changed_files(tmp_path):
    (tmp_path / "a.py").write_text("original")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.ipynb").write_text("{}")
    guard = Guard([tmp_path], skip=[])
    assert guard.verify() == []
    (tmp_path / "a.py").write_text("tampered")
    (tmp_path / "sub" / "b.ipynb").unlink()
    assert sorted(Path(p).name for p in guard.verify()) == ["a.py", "b.ipynb"]
    assert (tmp_path / "a.py").read_text() == "original" and (tmp_path / "sub" / "b.ipynb").read_text() == "{}"


def test_sandbox_works_for_a_course_below_tmp(tmp_path):
    """A course cloned below /tmp (CI may clone there) must still get the namespace sandbox: the
    sandbox's private /tmp must not hide the read-only course paths below it."""
    if not NAMESPACES:
        pytest.skip("no user namespaces on this machine")
    from coursework.grading import kernel as K

    below = tmp_path / "venvlike"
    if not str(below).startswith("/tmp/"):
        pytest.skip(f"pytest's temporary folder {tmp_path} is not below /tmp")
    below.mkdir()
    (below / "marker.txt").write_text("visible")
    root = tmp_path / "root"
    root.mkdir()
    spec = dict(root=str(root), readonly=[*K.readonly_paths(), str(below)], writable=[], cwd="/", env={"PATH": "/usr/bin:/bin"},
                cmd=[sys.executable, "-I", "-S", "-c", f"print(open('{below}/marker.txt').read())"])
    out = subprocess.run([*K.UNSHARE, sys.executable, "-I", "-S", K.NSINIT, json.dumps(spec)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "visible" in out.stdout, out.stderr[-1000:]
