# Shared by scripts/course.sh, scripts/test.sh and scripts/lint.sh: create .venv (if missing) and install
# regedu with the given extras, pinned by constraints.txt so the course does not change under students.
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

# The install is skipped when nothing it depends on changed since the last one (a stamp in the venv
# holds a hash of pyproject.toml, constraints.txt and the extras); the library itself is installed in
# editable mode, so edits to regedu/ need no reinstall.
# pip's lines, less the ones that say nothing ("already satisfied"); pipefail keeps pip's exit status
quiet_pip() { awk '!/^(Requirement already satisfied|Looking in|WARNING: Location)/ { print; fflush() }'; }

install_regedu() {
  local extras="$1"
  local stamp="$VENV/.regedu-installed-${extras//,/-}"
  local want
  want="$(cat pyproject.toml constraints.txt | "$PY" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "==> regedu[$extras] is installed and up to date in $VENV"
    return 0
  fi
  local t0=$SECONDS
  # torch first: constraints.txt pins torch==2.13.0. A CUDA or CPU build of that version that is
  # already installed (see README, "GPU") satisfies the pin and is kept.
  echo "==> [1/2] PyTorch 2.13.0 (first run: about a minute; several minutes if pip must download it)"
  "$PY" -m pip install --disable-pip-version-check -c constraints.txt torch \
    2>&1 | quiet_pip
  echo "==> [2/2] regedu[$extras] and its pinned dependencies (first run: about 3 minutes)"
  "$PY" -m pip install --disable-pip-version-check -c constraints.txt -e ".[$extras]" \
    2>&1 | quiet_pip
  "$PY" -c 'import regedu' || { echo "installation failed: regedu cannot be imported" >&2; exit 1; }
  echo "$want" > "$stamp"
  echo "==> set-up done in $((SECONDS - t0)) s"
}
