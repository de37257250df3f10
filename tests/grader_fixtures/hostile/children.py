"""Leaves 20 sleeping child processes behind, plus one grandchild that left the session
(double fork + setsid). All of them must be gone after grading: full marks, no survivors."""
# %% after q1_rotation
import subprocess
import sys

MARK = "cw-hostile-children-marker"
sleepers = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", MARK]) for _ in range(20)]
subprocess.Popen([sys.executable, "-c", "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(600)", MARK],
                 start_new_session=True)
