#!/usr/bin/env bash
# Set up what the tests need and run the whole suite: unit tests, notebooks (nbval), grader, browser.
#   bash scripts/test.sh            everything (what CI runs)
#   bash scripts/test.sh --fast     the fast tier for students and contributors: skips tests marked
#                                   `slow` (notebooks, grader batches, the browser test)
# Other arguments go to pytest, e.g. `bash scripts/test.sh -k warp -x`.
source "$(dirname "$0")/_env.sh"
install_regedu "course,test,grading"
export MPLBACKEND=Agg PYTHONHASHSEED=0
ARGS=()
for a in "$@"; do
  if [ "$a" = "--fast" ]; then ARGS+=(-m "not slow"); else ARGS+=("$a"); fi
done
exec "$PY" -m pytest ${ARGS[@]+"${ARGS[@]}"}
