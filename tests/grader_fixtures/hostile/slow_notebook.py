"""Every cell stays under the cell's CPU-time limit, but together they use more CPU time than the
notebook may; it also leaves children behind. The whole submission times out before any test
runs: zero, with the reason "used more than ... s of CPU time in total", and no process survives."""
# %% after q1_rotation
import subprocess
import sys
import time

MARK = "cw-hostile-slow-marker"
sleepers = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", MARK]) for _ in range(3)]


def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


burn(3)
# %% after q2_grid
burn(3)
# %% after q3_sample
burn(3)
# %% after q4_ssd
burn(3)
# %% after q5_ncc
burn(3)
