"""Fast tests of the grader's parts (no kernel): finding submissions, sanitising, the gradebook files,
feedback, the strict result codec, and the assignments' visible tests (they must catch the common
mistakes and pass the solutions)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from coursework.grading import rpc  # noqa: E402
from coursework.grading.batch import (  # noqa: E402
    NBGRADER_COLUMNS, BatchGrader, Guard, Row, clean, feedback_html, find_submissions, load_rows, write_feedback,
    write_gradebook,
)
from coursework.grading.spec import SOURCE, is_locked_code_cell, is_solution_cell, nbgrader_meta  # noqa: E402

A = ["a1_transforms", "a2_dvfs"]


# ------------------------------------------------------------------------------------------ finding submissions
def test_every_entry_gets_a_row_or_a_reason(tmp_path):
    root = tmp_path / "subs"
    root.mkdir()
    nb = "{}"
    (root / "alice").mkdir()
    (root / "alice" / "a1_transforms.ipynb").write_text(nb)
    (root / "..51-dotdot-name").mkdir()                                   # dotted: a student like any other
    (root / "..51-dotdot-name" / "a1_transforms.ipynb").write_text(nb)
    (root / "bob").mkdir()
    (root / "bob" / "a1_transforms (1).ipynb").write_text(nb)            # LMS-style name in a student folder
    (root / "bob" / "a2_dvfs").mkdir()
    (root / "bob" / "a2_dvfs" / "whatever.ipynb").write_text(nb)         # nbgrader's submitted/ layout
    (root / "a1_transforms (1).ipynb").write_text(nb)                      # loose, LMS-style
    (root / "smith_1234_a2_dvfs.ipynb").write_text(nb)                     # loose, Canvas-style
    (root / "untitled.ipynb").write_text(nb)                               # loose, names no assignment
    (root / "notes.txt").write_text("x")
    (root / ".ipynb_checkpoints").mkdir()
    (root / "linked").symlink_to(SOURCE / "a1_transforms")                 # a link to the instructor's solution
    (root / "carol").mkdir()
    (root / "carol" / "a1_transforms.ipynb").symlink_to(SOURCE / "a1_transforms" / "a1_transforms.ipynb")
    (root / "dave").mkdir()                                                # nothing inside
    subs, notes = find_submissions(root, A)
    rows = {(s, a): (nb, why) for s, a, nb, why in subs}
    assert rows[("alice", "a1_transforms")][0].name == "a1_transforms.ipynb"
    assert rows[("..51-dotdot-name", "a1_transforms")][0] is not None
    assert rows[("bob", "a1_transforms")][0].name == "a1_transforms (1).ipynb"
    assert rows[("bob", "a2_dvfs")][0].name == "whatever.ipynb"
    assert rows[("a1_transforms (1)", "a1_transforms")][0].name == "a1_transforms (1).ipynb"
    assert rows[("smith_1234", "a2_dvfs")][0].name == "smith_1234_a2_dvfs.ipynb"
    for a in A:
        nb_, why = rows[("linked", a)]
        assert nb_ is None and why.startswith("refused") and "symbolic link" in why
    assert rows[("carol", "a1_transforms")][0] is None and "symbolic link" in rows[("carol", "a1_transforms")][1]
    assert rows[("dave", "a1_transforms")] == (None, "no notebook found for a1_transforms")
    listed = dict(notes)
    assert "not a notebook" in listed["notes.txt"]
    assert "names none of the assignments" in listed["untitled.ipynb"]
    assert "ignored" in listed[".ipynb_checkpoints"]
    # every top-level entry is accounted for
    accounted = {s for s, _ in rows} | set(listed) | {f"{s}.ipynb" for s, _ in rows} | {"smith_1234_a2_dvfs.ipynb"}
    assert {p.name for p in root.iterdir()} <= accounted


def test_console_strings_are_sanitised():
    forged = "\x1b[1A\x1b[2K\r  someone/a1: 12/12 graded\x1b]0;owned\x07\u202e"
    out = clean(forged)
    assert "\x1b" not in out and "\r" not in out and "\x07" not in out and "\u202e" not in out
    assert "\\x1b" in out and "12/12" in out
    assert len(clean("x" * 10_000)) < 400


# ------------------------------------------------------------------------------------------ gradebook files
def _row(student, total=1.0, status="graded", passed=True):
    return Row(student, "a1_transforms", status=status, total=total, max_total=2.0,
               questions={"q1": {"points": total, "max_points": 2.0, "passed": passed, "feedback": "" if passed else "=cmd()"}})


def test_gradebook_files_nbgrader_columns_and_resume(tmp_path):
    rows = [_row("alice", 2.0), _row("=HYPERLINK(evil)", 0.0, passed=False), _row("bob", 0.0, status="missing")]
    rows[1].reason = "=cmd()"
    write_gradebook(rows, tmp_path, notes=[("notes.txt", "ignored: not a notebook")])
    with open(tmp_path / "grades.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == NBGRADER_COLUMNS                       # nbgrader export's columns, in its order
    assert {r["student_id"] for r in table} == {"alice", "'=HYPERLINK(evil)", "bob"}   # no formula runs in a spreadsheet
    assert {r["student_id"]: float(r["score"]) for r in table}["alice"] == 2.0
    assert "'=cmd()" in (tmp_path / "gradebook.csv").read_text()
    assert "notes.txt" in (tmp_path / "not_graded.csv").read_text()
    assert not list(tmp_path.glob(".*.tmp")), "temporary files are renamed into place"
    again = load_rows(tmp_path)
    assert {(r.student, r.total) for r in again} == {(r.student, r.total) for r in rows}


def test_feedback_files(tmp_path):
    full, part = _row("alice", 2.0), _row("<script>", 0.0, passed=False)
    full.reason = ""
    part.reason = "no test passed"
    paths = write_feedback([full, part, _row("bob", 0.0, status="missing")], tmp_path)
    assert len(paths) == 2 and all(p.parent.parent.parent.name == "feedback" for p in paths)
    text = {p.parent.parent.name: p.read_text() for p in paths}
    assert "Full marks" in text["alice"] and "Well done" in text["alice"]
    html = feedback_html(part)
    assert "<script>" not in html and "&lt;script&gt;" in html and "Full marks" not in html


def test_guard_restores_changed_files(tmp_path):
    (tmp_path / "a.py").write_text("original")
    guard = Guard([tmp_path], skip=[])
    (tmp_path / "a.py").write_text("tampered")
    assert [Path(p).name for p in guard.verify()] == ["a.py"] and (tmp_path / "a.py").read_text() == "original"


def test_partial_credit_is_kept_after_a_timeout():
    row = Row("s", "a", status="timeout", reason="used more than 12 s of CPU time in total",
              questions={"q1": {"points": 2.0, "max_points": 2.0, "passed": True, "feedback": ""},
                         "q2": {"points": 0.0, "max_points": 3.0, "passed": False, "feedback": "not graded"}})
    assert BatchGrader._fill(row).total == 2.0
    lie = Row("s", "a", questions={"q1": {"points": 99.0, "max_points": 2.0, "passed": True, "feedback": ""}})
    assert BatchGrader._fill(lie).total == 2.0
    missing = Row("s", "a", status="invalid", questions={"q1": {"points": 2.0, "max_points": 2.0, "passed": True, "feedback": ""}})
    assert BatchGrader._fill(missing).total == 0.0


# ------------------------------------------------------------------------------------------ the result codec
def test_results_from_the_kernel_are_decoded_strictly():
    import torch

    remote = rpc.Remote(kernel=None)
    ok = json.dumps({"ok": rpc.encode((1, [2.5, "x"], {"a": None}))})
    assert rpc.decode(ok, remote) == {"ok": (1, [2.5, "x"], {"a": None})}
    t = rpc.decode(json.dumps({"ok": rpc.encode(torch.arange(6.0).reshape(2, 3))}), remote)["ok"]
    assert type(t) is torch.Tensor and t.shape == (2, 3) and float(t.sum()) == 15.0
    bad_dtype = {"ok": {"__ndarray__": {"dtype": "object", "shape": [1], "data": ""}}}
    bad_shape = {"ok": {"__tensor__": {"dtype": "float32", "shape": [1000], "data": "AAAAAA=="}}}
    for payload in (bad_dtype, bad_shape):
        with pytest.raises(rpc.KernelUnavailable, match="malformed"):
            rpc.decode(json.dumps(payload), remote)
    with pytest.raises(rpc.KernelUnavailable, match="malformed"):
        rpc.decode("[" * 100_000, remote)
    huge = {"ok": {"__tensor__": {"dtype": "uint8", "shape": [rpc.MAX_ELEMENTS + 1], "data": ""}}}
    with pytest.raises(rpc.ResultTooLarge, match="elements"):
        rpc.decode(json.dumps(huge), remote)
    with pytest.raises(TypeError, match="cannot send"):
        rpc.encode(object())


def test_empty_tensors_are_not_close_to_anything_in_our_checks():
    """The trap the hidden tests avoid: allclose calls an empty tensor close to anything."""
    import torch

    assert torch.allclose(torch.empty(0, 1, 3), torch.eye(3))            # why allclose alone is not enough
    ns = {"torch": torch}
    exec(SAME_SOURCE, ns)
    with pytest.raises(AssertionError, match="shape"):
        ns["same"](torch.empty(0, 1, 3), torch.eye(3), "empty")
    ns["same"](torch.eye(3), torch.eye(3), "identity")


# ------------------------------------------------------------------------------------------ visible tests teach
def _cells(assignment):
    nb = nbformat.read(SOURCE / assignment / f"{assignment}.ipynb", as_version=4)
    sol = {nbgrader_meta(c)["grade_id"]: c.source for c in nb.cells if is_solution_cell(c) or is_locked_code_cell(c)}
    tests = {nbgrader_meta(c)["grade_id"]: c.source.split("### BEGIN HIDDEN TESTS")[0] for c in nb.cells
             if nbgrader_meta(c).get("grade")}
    return sol, tests


def _namespace():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    import regedu
    import regedu.learning  # noqa: F401

    return {"torch": torch, "nn": nn, "F": F, "math": math, "regedu": regedu, "time": __import__("time")}


SAME_SOURCE = _cells("a1_transforms")[1]["q1_rotation_tests"].split("def same")[1].split("\n\n")[0]
SAME_SOURCE = "def same" + SAME_SOURCE


@pytest.mark.parametrize("assignment", ["a1_transforms", "a2_dvfs", "a3_learning"])
def test_solutions_pass_every_visible_test_and_say_so(assignment, one_thread):
    sol, tests = _cells(assignment)
    ns = _namespace()
    for code in sol.values():
        exec(code, ns)
    for gid, code in tests.items():
        out = io.StringIO()
        with redirect_stdout(out):
            exec(code, dict(ns))
        assert "visible tests passed" in out.getvalue(), gid


MISTAKES = {  # (assignment, test cell): {description: wrong answer}
    ("a1_transforms", "q1_rotation_tests"): {
        "wrong sign of the rotation": "def rotation_matrix(angle, center):\n    c, s = math.cos(angle), math.sin(angle)\n"
        "    c0, c1 = center\n    R = torch.tensor([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])\n"
        "    T = torch.tensor([[1.0, 0, c0], [0, 1.0, c1], [0, 0, 1.0]])\n    return T @ R @ torch.linalg.inv(T)",
        "rotation about the corner": "def rotation_matrix(angle, center):\n    c, s = math.cos(angle), math.sin(angle)\n"
        "    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])",
        "wrong order of the centre shifts": "def rotation_matrix(angle, center):\n    c, s = math.cos(angle), math.sin(angle)\n"
        "    c0, c1 = center\n    R = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])\n"
        "    T = torch.tensor([[1.0, 0, c0], [0, 1.0, c1], [0, 0, 1.0]])\n    return torch.linalg.inv(T) @ R @ T",
        "an empty tensor": "def rotation_matrix(angle, center):\n    return torch.empty(0, 1, 3)",
    },
    ("a1_transforms", "q2_grid_tests"): {
        "transposed axes": "def sampling_grid(A, shape):\n    H, W = shape\n"
        "    i, j = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing='ij')\n"
        "    p = torch.stack([j, i, torch.ones_like(i)]).reshape(3, -1)\n    return (A.float() @ p)[:2].reshape(2, H, W)",
    },
    ("a1_transforms", "q3_sample_tests"): {
        "(row, column) order for grid_sample": "def sample(image, grid):\n    H, W = image.shape[-2:]\n"
        "    g = torch.stack([2 * grid[0] / (H - 1) - 1, 2 * grid[1] / (W - 1) - 1], -1)[None]\n"
        "    return F.grid_sample(image, g, padding_mode='border', align_corners=True)",
        "voxel coordinates instead of normalised ones": "def sample(image, grid):\n"
        "    g = torch.stack([grid[1], grid[0]], -1)[None]\n"
        "    return F.grid_sample(image, g, padding_mode='border', align_corners=True)",
    },
    ("a1_transforms", "q4_ssd_tests"): {"a mean": "def ssd(fixed, moving):\n    return ((fixed - moving) ** 2).mean()"},
    ("a1_transforms", "q5_ncc_tests"): {
        "no mean subtraction": "def ncc(f, m):\n    return (f * m).sum() / torch.sqrt((f * f).sum() * (m * m).sum())"},
    ("a2_dvfs", "q1_warp_tests"): {
        "push-forward sign": "def warp_dvf(image, dvf):\n    return regedu.warp(image, -dvf)",
        "swapped channels": "def warp_dvf(image, dvf):\n    return regedu.warp(image, dvf.flip(1))",
    },
    ("a2_dvfs", "q2_jacobian_tests"): {
        "no identity in J": "def jacobian_determinant(dvf):\n    a, b = torch.gradient(dvf[:, 0], dim=(1, 2))\n"
        "    c, d = torch.gradient(dvf[:, 1], dim=(1, 2))\n    return a * d - b * c"},
    ("a2_dvfs", "q4_diffusion_tests"): {
        "a sum": "def diffusion(u):\n    return ((u[:, :, 1:] - u[:, :, :-1]) ** 2).sum() + ((u[..., 1:] - u[..., :-1]) ** 2).sum()"},
    ("a3_learning", "q2_epe_tests"): {
        "mean over every voxel": "def masked_epe(p, t, m):\n    return ((p - t).pow(2).sum(1).sqrt() * m[:, 0]).mean()"},
    ("a3_learning", "q6_agent_tests"): {
        "argmin": "def agent_step(p, q, a, t):\n    n = p + a[int(torch.argmin(q))]\n"
        "    return n, float(torch.linalg.vector_norm(p - t) - torch.linalg.vector_norm(n - t))",
        "reward with the wrong sign": "def agent_step(p, q, a, t):\n    n = p + a[int(torch.argmax(q))]\n"
        "    return n, float(torch.linalg.vector_norm(n - t) - torch.linalg.vector_norm(p - t))",
    },
}


@pytest.mark.parametrize("key", sorted(MISTAKES), ids=lambda k: f"{k[0]}-{k[1]}")
def test_visible_tests_catch_common_mistakes(key, one_thread):
    assignment, gid = key
    visible = _cells(assignment)[1][gid]
    for what, wrong in MISTAKES[key].items():
        ns = _namespace()
        exec(wrong, ns)
        with pytest.raises(AssertionError):
            with redirect_stdout(io.StringIO()):
                exec(visible, ns)
        assert what


def test_release_without_nbgrader_names_the_extra():
    code = ("import sys; sys.modules['nbgrader'] = None\n"
            "from coursework.__main__ import main\nmain(['release'])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.returncode != 0 and "pip install" in out.stderr and "[grading]" in out.stderr, out.stderr


def test_scores_go_into_nbgraders_gradebook(tmp_path):
    pytest.importorskip("nbgrader")
    from nbgrader.api import Gradebook

    from coursework.grading.batch import load_assignments, write_nbgrader_db

    assignments = load_assignments(["a2_dvfs"])
    rows = [Row("alice", "a2_dvfs", total=3.0, max_total=11.0,
                questions={t.grade_id: {"points": float(t.points) if i < 2 else 0.0, "max_points": t.points,
                                        "passed": i < 2, "feedback": ""}
                           for i, t in enumerate(assignments["a2_dvfs"].tests)}),
            Row("bob", "a2_dvfs", status="missing", max_total=11.0)]
    url = f"sqlite:///{tmp_path / 'gradebook.db'}"
    assert write_nbgrader_db(rows, url, assignments) == 1
    assert write_nbgrader_db(rows, url, assignments) == 1, "writing again updates, it does not fail"
    with Gradebook(url) as gb:
        sub = gb.find_submission("a2_dvfs", "alice")
        assert sub.score == 4.0 and sub.max_score == 11.0      # q1 (2) + q2 (2) passed


def test_the_fallback_says_it_is_weaker():
    from coursework.grading.kernel import sandbox_description

    assert "WEAKER" in sandbox_description("process")
    assert "bubblewrap" in sandbox_description("bubblewrap") or "bubblewrap" in sandbox_description("process")
