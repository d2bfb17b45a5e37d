"""Root pytest configuration: how nbval starts the notebook kernels.

nbval starts each notebook's kernel on TCP ports that jupyter_client picks by binding and
releasing them; two pytest-xdist workers (or a grading test starting kernels of its own) can
pick the same port between that release and the kernel's bind, and the kernel then dies
before replying ("Kernel died before replying to kernel_info"). Here each kernel talks over
IPC sockets in a folder of its own, so no two kernels can collide, and a kernel that still
fails to start is retried once with its stderr kept, so the error says why.
"""
import atexit
import os
import shutil
import tempfile

import nbval.kernel
from jupyter_client.manager import KernelManager

START_ATTEMPTS = 2


def _start_kernel_over_ipc(startup_timeout=60, kernel_name="python3", stderr=None, **kwargs):
    """Start a kernel whose sockets are files in a fresh private folder; return (manager, client)."""
    failures = []
    for attempt in range(START_ATTEMPTS):
        socket_folder = tempfile.mkdtemp(prefix="nbval-kernel-")
        log_path = os.path.join(socket_folder, "stderr.log")
        log = open(log_path, "w")
        atexit.register(shutil.rmtree, socket_folder, ignore_errors=True)
        manager = KernelManager(kernel_name=kernel_name, transport="ipc",
                                ip=os.path.join(socket_folder, "socket"),
                                kernel_spec_manager=nbval.kernel.NbvalKernelspecManager())
        manager.start_kernel(stderr=log, **kwargs)
        client = manager.client()
        client.start_channels()
        try:
            client.wait_for_ready(timeout=startup_timeout)
        except RuntimeError as error:
            client.stop_channels()
            manager.shutdown_kernel(now=True)
            log.close()
            with open(log_path, errors="replace") as handle:
                failures.append(f"attempt {attempt + 1}: {error}; kernel stderr:\n{handle.read()[-4000:]}")
            continue
        return manager, client
    raise RuntimeError("the notebook kernel did not start:\n" + "\n".join(failures))


nbval.kernel.start_new_kernel = _start_kernel_over_ipc
