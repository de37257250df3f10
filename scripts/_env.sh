# Shared by scripts/course.sh and scripts/test.sh: create .venv (if missing) and install regedu
# with the given extras, pinned by constraints.txt so the course does not change under students.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "regedu needs Python >= 3.10; set PYTHON=/path/to/python3.x" >&2
  exit 1
fi
VENV="${REGEDU_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
install_regedu() {
  local extras="$1"
  echo "==> installing regedu[$extras] (pinned by constraints.txt)"
  # torch first: constraints.txt pins torch==2.13.0. A CUDA or CPU build of that version that is
  # already installed (see README, "GPU") satisfies the pin and is kept.
  "$PY" -m pip install --quiet --disable-pip-version-check -c constraints.txt torch
  "$PY" -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[$extras]"
}
