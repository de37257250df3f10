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
NOTEBOOKS = sorted(LECTURES.glob("[0-9][0-9]_*.ipynb"))


def load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def source(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_the_six_lecture_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


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
