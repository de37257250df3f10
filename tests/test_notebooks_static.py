"""Static checks of the lecture notebooks (nbval runs them; these check their form).

Choice (issue 7): notebooks are stored **without outputs**: diffs stay readable, the repository small,
and every output a student sees comes from running the code on their machine. This test enforces it.
"""

import json
import re
from pathlib import Path

import pytest

LECTURES = Path(__file__).resolve().parents[1] / "lectures"
EXPECTED = ["01_recap", "02_dvfs", "03_deep_iterative", "04_supervised", "05_unsupervised", "06_stn"]
NOTEBOOKS = sorted(LECTURES.glob("[0-9][0-9]*_*.ipynb"))   # 05_name and split parts 05b_name


def load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def source(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_the_six_lecture_notebooks_exist():
    # one notebook per lecture section, possibly split into parts or extended ("05_...", "05b_...")
    stems = [p.stem for p in NOTEBOOKS]
    for expected in EXPECTED:
        number = expected[:2]
        assert expected in stems or any(s.startswith(number) for s in stems), f"no notebook for section {number} ({expected})"
    assert all(re.fullmatch(r"\d\d[a-z]?_[a-z0-9_]+", s) for s in stems), f"notebook names must look like 05_name or 05b_name: {stems}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs(path):
    for i, cell in enumerate(load(path)["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{path.name} cell {i} has stored outputs: clear them before committing"
            assert cell.get("execution_count") is None, f"{path.name} cell {i} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_structure(path):
    nb = load(path)
    cells = nb["cells"]
    first, last = source(cells[0]), source(cells[-1])
    assert cells[0]["cell_type"] == "markdown" and "Learning goals" in first, f"{path.name} must open with the learning goals"
    assert "## References" in last and "## Summary" in last, f"{path.name} must end with a summary and the references"
    text = "\n".join(source(c) for c in cells if c["cell_type"] == "markdown")
    assert re.search(r"## Try it", text), f"{path.name} needs 'Try it' exercises"
    assert "<details>" in text, f"{path.name} needs answers hidden in <details>"
    code = "\n".join(source(c) for c in cells if c["cell_type"] == "code")
    assert re.search(r"^\s*assert ", code, re.M), f"{path.name} must check its claims with assertions"
    assert "import regedu" in code, f"{path.name} must use the library"
    assert 'REGEDU_FULL' in code, f"{path.name} needs the instructor-size switch"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_plain_tqdm_and_no_downloads(path):
    code = "\n".join(source(c) for c in load(path)["cells"] if c["cell_type"] == "code")
    assert not re.search(r"^\s*from tqdm import|^\s*import tqdm\b", code, re.M), "use tqdm.auto (plain tqdm breaks nbval)"
    assert not re.search(r"urlretrieve|requests\.get|fetch_|download", code), f"{path.name} must not download anything"


# ------------------------------------------------------------------------------------------------
# One way to do each thing (issue 12): notebooks use the library, they do not paste it
# ------------------------------------------------------------------------------------------------

FROM_SCRATCH = "# from scratch"   # marks a def that rebuilds a library function on purpose, to teach it (then checked against it)


def notebook_functions(path):
    """Names of the functions and classes defined at the top level of a notebook's code cells -> cell indices.

    A definition whose ``def`` line carries the comment ``# from scratch`` is a deliberate teaching copy
    (DESIGN: built from scratch, then checked against the library) and is left out.
    """
    import ast

    found = {}
    for i, cell in enumerate(load(path)["cells"]):
        if cell["cell_type"] != "code":
            continue
        lines = source(cell).splitlines()
        code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in lines)   # IPython magics
        for node in ast.parse(code).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if FROM_SCRATCH not in lines[node.lineno - 1]:
                    found.setdefault(node.name, []).append(i)
    return found


def library_names():
    """Public functions and classes defined in any module of the regedu package -> the modules defining them."""
    import importlib
    import inspect
    import pkgutil

    import regedu

    names = {}
    for info in pkgutil.walk_packages(regedu.__path__, "regedu."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            if getattr(obj, "__module__", "") == info.name:
                names.setdefault(name, set()).add(info.name)
    return names


def test_no_function_is_defined_in_two_notebooks():
    where = {}
    for path in NOTEBOOKS:
        for name in notebook_functions(path):
            where.setdefault(name, []).append(path.stem)
    twice = {name: stems for name, stems in where.items() if len(stems) > 1}
    assert not twice, (
        "functions defined in more than one notebook (put them in the library and import them): "
        + "; ".join(f"{name} in {', '.join(stems)}" for name, stems in sorted(twice.items()))
    )


def test_no_notebook_function_shadows_the_library():
    lib = library_names()
    shadows = []
    for path in NOTEBOOKS:
        for name, cells in notebook_functions(path).items():
            if name in lib:
                shadows.append(f"{path.stem} cell {cells[0]} defines {name} (library: {', '.join(sorted(lib[name]))})")
    assert not shadows, ("notebook functions that shadow a public regedu function (use the library's, or mark a "
                         f"deliberate teaching copy with '{FROM_SCRATCH}' and check it against the library): " + "; ".join(shadows))


def test_the_static_checks_see_definitions(tmp_path):
    # the checks above must be able to fail: a fake notebook pasting regedu.plot.view is caught, a marked copy is not
    nb = {"cells": [{"cell_type": "code", "source": "%matplotlib inline\ndef view(x):\n    return x\n\nclass Thing:\n    pass\n"},
                    {"cell_type": "code", "source": "def warp(m, u):  # from scratch\n    return m\n"}]}
    p = tmp_path / "99_fake.ipynb"
    p.write_text(json.dumps(nb), encoding="utf-8")
    found = notebook_functions(p)
    assert found == {"view": [0], "Thing": [0]}
    lib = library_names()
    assert "view" in lib and "warp" in lib and "train" in lib
