import os

os.environ.setdefault("MPLBACKEND", "Agg")  # figures are drawn off-screen in the tests
