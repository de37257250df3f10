"""Every cell stays under the cell time limit, but together they exceed the notebook limit; it
also leaves children behind. The whole submission times out: zero, with the reason
"timed out after ... s", and no process of it survives."""
# %% after q1_rotation
import subprocess
import sys
import time

MARK = "cw-hostile-slow-marker"
sleepers = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", MARK]) for _ in range(3)]
time.sleep(5)
# %% after q2_grid
import time

time.sleep(5)
# %% after q3_sample
import time

time.sleep(5)
# %% after q4_ssd
import time

time.sleep(5)
# %% after q5_ncc
import time

time.sleep(5)
# %% after q6_register
import time

time.sleep(5)
# %% after setup
import time

time.sleep(5)
# %% after q6_register_tests
import time

time.sleep(5)
