"""Tries to overwrite the source notebooks, the grader's code and any gradebook it can find, to
rewrite its own notebook, and to kill every process it can signal (its parent, the grader, the
whole batch). None of this may change a file or another row: its own answers are correct, so it
scores full marks, and the files are unchanged."""
# %% after q6_register
import glob
import os
import signal

import regedu

repo = os.path.dirname(os.path.dirname(regedu.__file__))
targets = glob.glob(os.path.join(repo, "coursework", "**", "*.*"), recursive=True)
targets += glob.glob(os.path.join(repo, "regedu", "*.py")) + glob.glob("/tmp/**/gradebook.*", recursive=True)
targets += glob.glob(os.path.join(os.getcwd(), "..", "**", "*"), recursive=True)
written = []
for path in targets:
    try:
        with open(path, "a") as f:
            f.write("\n# tampered\n")
        written.append(path)
    except Exception:
        pass
for path in glob.glob("*.ipynb"):  # its own copy: allowed, and it changes nothing
    with open(path, "w") as f:
        f.write("{}")
print("written:", written)
# %% after q6_register_tests
import os
import signal

for sig_target in (os.getppid(), 1, -1):
    try:
        os.kill(sig_target, signal.SIGKILL)
    except Exception:
        pass
