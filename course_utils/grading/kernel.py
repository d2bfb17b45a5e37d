"""The learner's kernel under ``course-grade``: ``python -m course_utils.grading.kernel PARAMS -f CONNECTION``.

``execute.py`` starts every learner's kernel with this command instead of ``ipykernel_launcher``. Before
ipykernel is even imported (so before any thread of the kernel exists) it

1. reads its parameters from ``PARAMS`` (a file in the grader's folder, deleted at once);
2. applies the limits of ``sandbox.py``: memory (``RLIMIT_AS``), CPU seconds, the size of a written file;
3. applies the Landlock sandbox where Linux offers it: the kernel reads only the Python installation, the course
   package and its data, writes only its private working folder, and (Landlock ABI 6) cannot signal any process
   outside itself; every thread and child process inherits this;

then starts ipykernel with one addition: a comm target ``course-grader`` through which the grader sends the
requests of its checks (``course_utils.checks.learner``: run this learner's function on these inputs) as plain
data, answered by ``learner.Server`` on the notebook's namespace.

Nothing here decides a grade: no key, no check, no reference and no expected value is ever in this process.
The learner's code can replace all of it; that changes only the answers this kernel sends, which the grader
compares with references it computes itself.
"""
import json
import os
import sys

COMM_TARGET = "course-grader"


def _serve_comm(server):
    """The comm handler: one request per comm, answered on the same comm, which is then closed."""
    def handle(comm, message):
        from course_utils.checks import plain_data

        data = message.get("content", {}).get("data", {})
        header, buffers = data.get("header"), message.get("buffers") or []
        try:
            reply_header, reply_buffers = server.serve(header, buffers)
        except BaseException as error:  # KeyboardInterrupt from the grader's interrupt, or a bug
            reply_header, reply_buffers = plain_data.encode(
                {"ok": False, "interrupted": isinstance(error, KeyboardInterrupt),
                 "grader_error": {"type": type(error).__name__, "message": str(error)[:500]}})
        comm.send(data={"header": reply_header}, buffers=[bytes(b) for b in reply_buffers])
        comm.close()
    return handle


def main(argv):
    params_path, kernel_args = argv[0], argv[1:]
    with open(params_path, encoding="utf-8") as file:
        params = json.load(file)
    try:
        os.remove(params_path)
    except OSError:
        pass
    from course_utils.grading import sandbox

    sandbox.set_limits(memory_bytes=params.get("memory_bytes"), cpu_seconds=params.get("cpu_seconds"),
                       file_bytes=params.get("file_bytes"))
    sandbox.restrict(params.get("read_paths", []), params.get("write_paths", []))
    os.chdir(params["work_dir"])

    from ipykernel.kernelapp import IPKernelApp

    from course_utils.checks.learner import Server

    app = IPKernelApp.instance()
    app.initialize(kernel_args)
    server = Server(app.shell.user_ns)
    app.kernel.comm_manager.register_target(COMM_TARGET, _serve_comm(server))
    app.start()


if __name__ == "__main__":
    main(sys.argv[1:])
