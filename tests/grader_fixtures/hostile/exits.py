"""Every way out: sys.exit() (an ordinary SystemExit), IPython's exit() (shuts the kernel down after
the cell), os._exit() at top level, and os._exit() inside an answer (ncc, q5, 2 points) while the
grader is calling it. Each dead kernel is replaced by a fresh one that replays the other cells; only
q5 is lost."""
# %% after q1_rotation
import sys

sys.exit(3)
# %% after q2_grid
import os

os._exit(1)
# %% after q3_sample
exit()
# %% replace q5_ncc
def ncc(fixed, moving):
    import os

    os._exit(0)
