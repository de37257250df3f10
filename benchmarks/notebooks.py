"""Execute every lecture notebook top to bottom and print its wall time against the budget.

    python benchmarks/notebooks.py [lectures/0*.ipynb ...] [--timeout 600]

Budget (issues 7, 14): at most 90 s per notebook and 12 minutes for all of them, on 2 CPU cores without a GPU.
Each notebook runs in a fresh kernel of this Python environment, as nbval runs it in the test suite.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
BUDGET_EACH, BUDGET_ALL = 90.0, 720.0


def run(path: Path, timeout: int) -> tuple[float, str]:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    try:
        client.execute()
        status = "ok"
    except Exception as exc:  # report and go on with the next notebook
        status = f"FAILED: {type(exc).__name__}: {str(exc).strip().splitlines()[-1][:120]}"
    return time.perf_counter() - t0, status


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", type=Path)
    ap.add_argument("--timeout", type=int, default=600, help="per cell, seconds")
    args = ap.parse_args()
    paths = args.notebooks or sorted((ROOT / "lectures").glob("[0-9][0-9]*.ipynb"))
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cuda={torch.cuda.is_available()}")
    print(f"{'notebook':<28}{'seconds':>9}{'budget':>8}  status")
    total, ok = 0.0, True
    for p in paths:
        seconds, status = run(p, args.timeout)
        total += seconds
        within = seconds <= BUDGET_EACH
        ok &= within and status == "ok"
        print(f"{p.name:<28}{seconds:9.1f}{BUDGET_EACH:8.0f}  {status}{'' if within else '  OVER BUDGET'}", flush=True)
    print(f"{'all':<28}{total:9.1f}{BUDGET_ALL:8.0f}  {'ok' if total <= BUDGET_ALL else 'OVER BUDGET'}")
    return 0 if ok and total <= BUDGET_ALL else 1


if __name__ == "__main__":
    sys.exit(main())
