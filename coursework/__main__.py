"""Instructor commands: ``python -m coursework {release,grade,check} ...`` (see coursework/README.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _limits(args, names):
    from .grading.sandbox import Limits

    defaults = {"a1_transforms": Limits(notebook=180, cell=60), "a2_dvfs": Limits(notebook=240, cell=90),
                "a3_learning": Limits(notebook=420, cell=180)}

    def parse(values):
        out, default = {}, None
        for v in values or []:
            if "=" in v:
                k, x = v.split("=", 1)
                out[k] = float(x)
            else:
                default = float(v)
        return out, default

    nb_over, nb_all = parse(args.timeout)
    cell_over, cell_all = parse(args.cell_timeout)
    limits = {}
    for n in names:
        lim = defaults.get(n, Limits())
        lim = Limits(notebook=nb_over.get(n, nb_all or lim.notebook), cell=cell_over.get(n, cell_all or lim.cell),
                     memory_gb=args.memory_gb, output_kb=lim.output_kb, wall_factor=args.wall_factor,
                     wall_margin=args.wall_margin)
        limits[n] = lim
    return limits


def cmd_grade(args) -> int:
    from .grading.batch import (BatchGrader, Guard, clean, find_submissions, install_stop_handlers, load_assignments,
                                load_rows, write_feedback, write_gradebook, write_nbgrader_db)
    from .grading.spec import ROOT

    assignments = load_assignments(args.assignment)
    root = Path(args.submissions)
    if not root.is_dir():
        sys.exit(f"grade: {root} is not a folder of submissions (<student>/<assignment>.ipynb)")
    out = Path(args.out)
    subs, notes = find_submissions(root, list(assignments))
    if not args.assignment:  # grade the assignments that somebody submitted
        submitted = {a for _, a, nb, _ in subs if nb is not None}
        subs = [s for s in subs if s[1] in submitted]
    for entry, why in notes:
        print(f"not graded: {clean(entry, 120)}: {clean(why)}")
    if not subs:
        print(f"grade: no submissions found in {root}. Expected <student>/<assignment>.ipynb, "
              f"<student>/<assignment>/<assignment>.ipynb or loose notebooks named after an assignment "
              f"({', '.join(assignments)}); see coursework/README.md")
    done = load_rows(out) if args.resume else []
    if done:
        done = [r for r in done if r.status in ("graded", "invalid", "missing")]   # errors and timeouts: again
    grader = BatchGrader(assignments, _limits(args, list(assignments)), jobs=args.jobs, isolation=args.isolation,
                         threads=args.threads, worker_memory_gb=args.worker_memory_gb)
    rows: list = list(done)

    def save(current=None) -> None:
        if current is not None:
            rows[:] = current
        write_gradebook(rows, out, notes)

    install_stop_handlers(grader, save)
    guard = None
    if grader.isolation == "process":  # kernels could write the course: snapshot it, restore and flag changes
        import regedu

        print("warning: no bubblewrap sandbox here (" + grader.sandbox + "); submissions run as your user. Do not "
              "edit coursework/ or regedu/ while grading: any change is undone and blamed on the submission being graded.")
        guard = Guard([ROOT, Path(regedu.__file__).parent], skip=[out.resolve(), root.resolve()])
    try:
        grader.grade(subs, guard=guard, done=done, on_row=save)
    finally:
        grader.close()
    save()
    feedback = write_feedback(rows, out)
    print(f"gradebook: {out / 'gradebook.csv'}, {out / 'gradebook.json'}, nbgrader export format: {out / 'grades.csv'} "
          f"({len(rows)} rows); feedback files: {len(feedback)} in {out / 'feedback'}"
          + (f"; not graded: {len(notes)} entries, see {out / 'not_graded.csv'}" if notes else ""))
    if args.nbgrader_db:
        print(f"nbgrader gradebook {args.nbgrader_db}: {write_nbgrader_db(rows, args.nbgrader_db, assignments)} submissions")
    return 0


def cmd_release(args) -> int:
    try:
        import nbgrader  # noqa: F401
    except ImportError:
        sys.exit("release: needs nbgrader, which the course set-up does not install. Install the grading extra: "
                 "pip install -e '.[grading]'  (see coursework/README.md)")
    from .release import release

    release(args.assignment or None, check=not args.no_check)
    return 0


def cmd_check(args) -> int:
    from .grading.batch import load_assignments
    from .grading.spec import check_assignment

    problems = []
    for a in load_assignments(args.assignment).values():
        problems += check_assignment(a)
        print(f"{a.name}: {len(a.tests)} graded test cells, {a.max_points:g} points, student names: {', '.join(a.student_names)}")
    for p in problems:
        print("problem:", p)
    return 1 if problems else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m coursework", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("release", help="generate the student versions in coursework/release with nbgrader")
    r.add_argument("assignment", nargs="*", help="assignment names (default: all in coursework/source)")
    r.add_argument("--no-check", action="store_true", help="do not execute the released notebooks to tag cells for nbval")
    r.set_defaults(func=cmd_release)

    g = sub.add_parser("grade", help="grade a folder of submissions into a gradebook (CSV and JSON)")
    g.add_argument("submissions", help="folder with <student>/<assignment>.ipynb or <student>/<assignment>/<assignment>.ipynb")
    g.add_argument("--out", default="gradebook", help="folder for gradebook.csv and gradebook.json (default: ./gradebook)")
    g.add_argument("--assignment", action="append", help="grade only this assignment (repeatable; default: every assignment somebody submitted)")
    g.add_argument("--jobs", type=int, default=1, help="submissions graded at the same time (bubblewrap sandbox only)")
    g.add_argument("--timeout", action="append", metavar="[ASSIGNMENT=]SECONDS",
                   help="CPU seconds per notebook (defaults: a1 180, a2 240, a3 420); a wall-clock backstop is 4x + 60 s")
    g.add_argument("--cell-timeout", action="append", metavar="[ASSIGNMENT=]SECONDS",
                   help="CPU seconds per cell and per test cell (defaults: a1 60, a2 90, a3 180)")
    g.add_argument("--wall-factor", type=float, default=4.0,
                   help="wall-clock backstops: this many times the CPU limits, plus --wall-margin (default 4)")
    g.add_argument("--wall-margin", type=float, default=60.0,
                   help="seconds added to the notebook's backstop (half of it to a cell's; default 60)")
    g.add_argument("--memory-gb", type=float, default=8.0, help="address-space limit of each kernel (default 8)")
    g.add_argument("--worker-memory-gb", type=float, default=3.0, help="address-space limit of each grading worker (default 3)")
    g.add_argument("--threads", type=int, default=1, help="CPU threads per kernel (default 1)")
    g.add_argument("--resume", action="store_true", help="keep the rows of an existing gradebook in --out; grade the rest")
    g.add_argument("--nbgrader-db", metavar="URL", help="also write the scores into this nbgrader gradebook "
                   "(e.g. sqlite:///coursework/gradebook.db) so that formgrader shows them")
    g.add_argument("--isolation", choices=["auto", "bubblewrap", "namespace", "process"], default="auto",
                   help="bubblewrap: the sandbox (default where it works); process: the weaker fallback")
    g.set_defaults(func=cmd_grade)

    c = sub.add_parser("check", help="check the source notebooks' nbgrader metadata and test cells")
    c.add_argument("assignment", nargs="*")
    c.set_defaults(func=cmd_check)

    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
