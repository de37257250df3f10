"""Throughput of the grader: a batch of generated honest A1 submissions graded with --jobs 1, 2, 4.

    python benchmarks/grading.py [--n 60] [--jobs 1 2 4] [--keep DIR]

Each generated student answers a different subset of the six questions (the others keep the
released stub, as an unfinished student's notebook does), so the expected scores vary between 0 and
12. The script grades the same folder once per ``--jobs`` setting with the real command line
(``python -m coursework grade``), prints submissions per minute (wall clock) and the grader's CPU
time per submission, and checks that every setting gives every student the same score, and the
expected one. Limits are CPU time, so the scores must not depend on how many run at once. On a
machine with C cores, ``--jobs`` above C only adds waiting.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from coursework.grading.spec import RELEASE, SOURCE, is_solution_cell, is_test_cell, nbgrader_meta  # noqa: E402

POINTS = {"q1_rotation": 2, "q2_grid": 2, "q3_sample": 2, "q4_ssd": 1, "q5_ncc": 2, "q6_register": 3}


def honest_submission(answered: set[str]):
    """The released A1 (graded cells only) with the solutions of the ``answered`` questions filled in."""
    nb = nbformat.read(RELEASE / "a1_transforms" / "a1_transforms.ipynb", as_version=4)
    solutions = {nbgrader_meta(c)["grade_id"]: c.source
                 for c in nbformat.read(SOURCE / "a1_transforms" / "a1_transforms.ipynb", as_version=4).cells
                 if is_solution_cell(c)}
    code = [c for c in nb.cells if c.cell_type == "code"]
    nb.cells = [code[0]] + [c for c in code[1:] if is_solution_cell(c) or is_test_cell(c)]
    for c in nb.cells:
        gid = nbgrader_meta(c).get("grade_id")
        if is_solution_cell(c) and gid in answered:
            c.source = solutions[gid]
    return nb


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=60, help="number of generated submissions (default 60)")
    p.add_argument("--jobs", type=int, nargs="+", default=[1, 2, 4], help="settings to compare (default 1 2 4)")
    p.add_argument("--keep", help="write submissions and gradebooks here (default: a temporary folder)")
    args = p.parse_args()
    rng = random.Random(0)
    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="cw-bench-")
    work = Path(args.keep or tmp.name)
    subs = work / "submissions"
    expected = {}
    for i in range(args.n):
        answered = {q for q in POINTS if rng.random() < 0.7}
        student = f"student{i:03d}"
        (subs / student).mkdir(parents=True, exist_ok=True)
        nbformat.write(honest_submission(answered), subs / student / "a1_transforms.ipynb")
        expected[student] = float(sum(POINTS[q] for q in answered))
    print(f"{args.n} submissions in {subs}; expected mean score {sum(expected.values()) / args.n:.2f} / 12")
    scores: dict[int, dict[str, float]] = {}
    for jobs in args.jobs:
        out = work / f"gradebook-jobs{jobs}"
        t0 = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "coursework", "grade", str(subs), "--out", str(out), "--jobs", str(jobs),
                              "--assignment", "a1_transforms"], cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if run.returncode != 0:
            sys.exit(f"--jobs {jobs}: the grader failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
        rows = json.loads((out / "gradebook.json").read_text())
        scores[jobs] = {r["student"]: r["total"] for r in rows}
        cpu = sum(r["timing"].get("cpu_s", 0.0) for r in rows) / max(1, len(rows))
        print(f"--jobs {jobs}: {len(rows)} graded in {wall:.0f} s = {60 * len(rows) / wall:.1f} submissions/min "
              f"(student code: {cpu:.2f} s CPU per submission)")
    first = scores[args.jobs[0]]
    same = all(s == first for s in scores.values())
    right = first == expected
    print("scores identical across --jobs settings:", same)
    print("scores equal the expected ones:", right)
    if not (same and right):
        wrong = {k: (expected[k], {j: s.get(k) for j, s in scores.items()}) for k in expected
                 if any(s.get(k) != expected[k] for s in scores.values())}
        sys.exit(f"mismatch (student: expected, by --jobs): {wrong}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
