"""The README's Python example runs as printed and registers its pair well (a README that stops working is
the first thing a new user meets)."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_example_runs_and_registers(one_thread, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    example = [b for b in blocks if "regedu.register(" in b]
    assert len(example) == 1, "the README has one registration example"
    namespace: dict = {}
    exec(compile(example[0], "README.md example", "exec"), namespace)
    result = namespace["result"]
    dice = namespace["regedu"].dice(namespace["brain"].labels, result.warp_labels(namespace["moving_labels"]))
    assert float(dice) > 0.9, float(dice)
    printed = capsys.readouterr().out
    assert "Dice mean" in printed and "folding (%)" in printed  # the evaluation card was printed
    assert torch.isfinite(result.dvf).all() and float(namespace["regedu"].folding_fraction(result.dvf)[0]) < 1e-3
