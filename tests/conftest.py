import os

os.environ.setdefault("MPLBACKEND", "Agg")  # figures are drawn off-screen in the tests

# Under pytest-xdist each worker runs its own notebooks; one thread per worker keeps the
# workers from fighting over the cores (oversubscribed OpenMP threads spin and slow
# everything down). The variables are inherited by the notebook kernels each worker starts.
if "PYTEST_XDIST_WORKER" in os.environ:
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(variable, "1")
