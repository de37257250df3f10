#!/usr/bin/env bash
# Set up the course (first run: a few minutes; later runs: seconds) and open JupyterLab on it.
source "$(dirname "$0")/_env.sh"
install_regedu course
echo "==> device: $("$PY" -c 'import regedu.utils as u; print(u.describe_device())')"
ARGS=(--notebook-dir="$ROOT" "lectures/01_recap.ipynb")
[ "$(id -u)" = 0 ] && ARGS+=(--allow-root)
exec "$VENV/bin/jupyter" lab "${ARGS[@]}" "$@"
