# Note: do not set MPLBACKEND here. The nbval kernels inherit the environment of this process and an Agg
# backend would stop plt.show() from displaying figures, so their outputs would differ from the notebooks.
import os

import matplotlib

# Commands the tests start run in their own process; the warm server (ivighelpers/server.py) is tested on its own
# in tests/test_server.py, with a private socket folder, and stopped there.
os.environ["IVIG_SERVER"] = "0"

matplotlib.use("Agg")  # this test process only (no display needed)
