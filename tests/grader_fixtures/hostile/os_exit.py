"""os._exit() kills the kernel process, once at top level and once inside an answer (ncc, q5,
2 points), i.e. while the grader is calling it. The kernel is restarted each time; only q5 is lost."""
# %% after q2_grid
import os

os._exit(1)
# %% replace q5_ncc
def ncc(fixed, moving):
    import os

    os._exit(0)
