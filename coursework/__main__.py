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
                     memory_gb=args.memory_gb, output_kb=lim.output_kb)
        limits[n] = lim
    return limits


def cmd_grade(args) -> int:
    from .grading.batch import BatchGrader, Guard, find_submissions, load_assignments, write_gradebook
    from .grading.spec import ROOT

    assignments = load_assignments(args.assignment)
    root = Path(args.submissions)
    if not root.is_dir():
        sys.exit(f"grade: {root} is not a folder of submissions (<student>/<assignment>.ipynb)")
    out = Path(args.out)
    subs = find_submissions(root, list(assignments))
    if not args.assignment:  # grade the assignments that somebody submitted
        submitted = {a for _, a, nb in subs if nb is not None}
        subs = [s for s in subs if s[1] in submitted]
    grader = BatchGrader(assignments, _limits(args, list(assignments)), jobs=args.jobs, isolation=args.isolation,
                         threads=args.threads)
    guard = None
    if grader.isolation == "process":  # kernels could write the course: snapshot it, restore and flag changes
        import regedu

        print("warning: no namespace sandbox here; submissions run as your user. Do not edit coursework/ or regedu/ "
              "while grading: any change is undone and blamed on the submission being graded.")
        guard = Guard([ROOT, Path(regedu.__file__).parent], skip=[out.resolve(), root.resolve()])
    try:
        rows = grader.grade(subs, guard=guard)
    finally:
        grader.close()
    csv_path, json_path = write_gradebook(rows, out)
    print(f"gradebook: {csv_path} and {json_path} ({len(rows)} rows)")
    return 0


def cmd_release(args) -> int:
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
    g.add_argument("--jobs", type=int, default=1, help="submissions graded at the same time (namespace sandbox only)")
    g.add_argument("--timeout", action="append", metavar="[ASSIGNMENT=]SECONDS",
                   help="time limit per notebook, after kernel start-up (defaults: a1 180, a2 240, a3 420)")
    g.add_argument("--cell-timeout", action="append", metavar="[ASSIGNMENT=]SECONDS",
                   help="time limit per cell and per test cell (defaults: a1 60, a2 90, a3 180)")
    g.add_argument("--memory-gb", type=float, default=8.0, help="address-space limit of each kernel (default 8)")
    g.add_argument("--threads", type=int, default=1, help="CPU threads per kernel (default 1)")
    g.add_argument("--isolation", choices=["auto", "namespace", "process"], default="auto",
                   help="namespace: Linux user/mount/PID/network namespaces (default where available); process: fallback")
    g.set_defaults(func=cmd_grade)

    c = sub.add_parser("check", help="check the source notebooks' nbgrader metadata and test cells")
    c.add_argument("assignment", nargs="*")
    c.set_defaults(func=cmd_check)

    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
