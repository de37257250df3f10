"""What the grader knows about an assignment, read from the instructor's SOURCE notebook.

nbgrader's cell metadata decides everything (``metadata.nbgrader``, schema version 3):

* an *autograded answer* cell (``solution: true, grade: false``) holds the student's code; the
  functions and classes it defines at top level are names the tests may call;
* a *read-only* code cell (``locked: true``) may define helpers the tests call in the student's kernel
  (e.g. a reference network to train); whatever comes back is checked in the grader;
* an *autograder test* cell (``grade: true, solution: false``, with ``points``) is one graded
  question: all its points if it runs without an exception, none otherwise (as in nbgrader).
"""

from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass, field
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]           # coursework/
SOURCE = ROOT / "source"
RELEASE = ROOT / "release"


@dataclass
class Test:
    grade_id: str
    points: float
    code: str                      # visible and hidden tests (the full source cell)


@dataclass
class Assignment:
    name: str
    path: Path
    tests: list[Test]
    student_names: list[str]       # functions / classes defined by solution cells and read-only cells
    max_points: float = field(init=False)

    def __post_init__(self):
        self.max_points = sum(t.points for t in self.tests)


def nbgrader_meta(cell) -> dict:
    meta = cell.get("metadata", {})
    meta = meta.get("nbgrader", {}) if isinstance(meta, dict) else {}
    return meta if isinstance(meta, dict) else {}


def is_test_cell(cell) -> bool:
    m = nbgrader_meta(cell)
    return cell.get("cell_type") == "code" and bool(m.get("grade")) and not m.get("solution")


def is_locked_code_cell(cell) -> bool:
    m = nbgrader_meta(cell)
    return cell.get("cell_type") == "code" and bool(m.get("locked")) and not m.get("grade") and not m.get("solution")


def is_solution_cell(cell) -> bool:
    m = nbgrader_meta(cell)
    return cell.get("cell_type") == "code" and bool(m.get("solution")) and not m.get("grade")


_MAGIC = re.compile(r"^\s*[%!]")


def python_source(source: str) -> str:
    """Cell source with IPython magics / shell lines blanked, so that ``ast`` can parse it."""
    return "\n".join("pass" if _MAGIC.match(line) else line for line in source.splitlines())


def defined_names(source: str) -> list[str]:
    tree = ast.parse(python_source(source))
    return [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]


def free_names(source: str) -> set[str]:
    """Names a cell reads but neither assigns, imports nor gets from builtins."""
    tree = ast.parse(python_source(source))
    bound, loaded = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return loaded - bound - set(dir(builtins))


def load_assignment(path: str | Path) -> Assignment:
    import nbformat  # slow to import (jsonschema): only where needed

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    tests, names = [], []
    for cell in nb.cells:
        if is_solution_cell(cell) or is_locked_code_cell(cell):
            names += [n for n in defined_names(cell.source) if n not in names]
        elif is_test_cell(cell):
            m = nbgrader_meta(cell)
            tests.append(Test(str(m["grade_id"]), float(m.get("points", 0)), cell.source))
    return Assignment(path.stem, path, tests, names)


def source_notebooks(source: Path = SOURCE) -> dict[str, Path]:
    """``{assignment: notebook}`` for ``source/<assignment>/<assignment>.ipynb``."""
    return {p.parent.name: p for p in sorted(source.glob("*/*.ipynb")) if p.stem == p.parent.name}


def check_assignment(a: Assignment) -> list[str]:
    """Problems that would make grading unfair; an empty list means fine."""
    problems = []
    ids = [t.grade_id for t in a.tests]
    if len(set(ids)) != len(ids):
        problems.append(f"{a.name}: duplicate grade_id among test cells")
    for t in a.tests:
        if t.points <= 0:
            problems.append(f"{a.name}/{t.grade_id}: a test cell needs points > 0")
        unknown = free_names(t.code) - set(a.student_names)
        if unknown:
            problems.append(f"{a.name}/{t.grade_id}: test uses names that it does not define or import and that no "
                            f"solution or read-only cell defines as a function or class: {', '.join(sorted(unknown))}")
    return problems
