#!/usr/bin/env bash
# Static checks that keep the tree tidy: ruff (pyflakes and syntax rules, see pyproject.toml) on the
# whole repository and mypy on the library. `.ci/run` runs this before the tests.
source "$(dirname "$0")/_env.sh"
install_regedu "course,test,grading"
echo "==> ruff"
"$VENV/bin/ruff" check .
echo "==> mypy regedu/"
"$VENV/bin/mypy"
