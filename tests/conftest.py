# Note: do not set MPLBACKEND here. The nbval kernels inherit the environment of this process and an Agg
# backend would stop plt.show() from displaying figures, so their outputs would differ from the notebooks.
import matplotlib

matplotlib.use("Agg")  # this test process only (no display needed)
