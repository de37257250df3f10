"""sys.exit() in one cell and IPython's exit() (which shuts the kernel down) in another. The
kernel is restarted without them: full marks."""
# %% after q1_rotation
import sys

sys.exit(3)
# %% after q3_sample
exit()
