#!/usr/bin/env bash
# Set up what the tests need and run the whole suite: unit tests, notebooks (nbval), grader, browser.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k warp`.
source "$(dirname "$0")/_env.sh"
install_regedu "course,test,grading"
export MPLBACKEND=Agg PYTHONHASHSEED=0
exec "$PY" -m pytest "$@"
