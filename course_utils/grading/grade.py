"""Grade a class's submissions of one assignment: ``course-grade`` (or ``python -m course_utils.grading.grade``).

Usage::

    course-grade SUBMISSIONS_DIR --assignment 01_convolution \\
        [--out grades.csv] [--feedback DIR] [--jobs N] [--timeout S]

A submission is ``SUBMISSIONS_DIR/<learner>/<assignment>.ipynb`` or
``SUBMISSIONS_DIR/<learner>.ipynb``; a learner folder without the notebook is graded
"missing". The walkthrough for instructors is ``docs/grading.md``. For each submission:

0. **Read** the assignment (``assignment.py``): the check cells of ``solutions/<assignment>.ipynb``
   and the check modules they import, before any learner's code runs.
1. **Open** the submission without following symbolic links: it must be a regular file of the
   submissions folder with no other hard link, else it is graded "invalid-notebook".
2. **Rebuild** (``rebuild.py``). The learner's code cells are kept; every check cell comes from
   ``solutions/<assignment>.ipynb`` by its ``check_id`` (hidden checks included). A check
   cell the learner edited, deleted, moved or split is put back in its released place and
   the feedback says so.
3. **Execute** (``execute.py``): a worker process of the grader runs the learner's cells in a
   sandboxed kernel (``kernel.py``, ``sandbox.py``: memory, CPU and file-size limits, Landlock) and
   every check cell in the worker itself, sending the kernel only plain-data requests to run the
   learner's functions (``course_utils.checks.learner``).
4. **Score** (``score.py``): a check scores its points when the grader's run of it raised nothing;
   otherwise zero, with the reason. stderr output and warnings cost nothing.
5. **Write** the gradebook CSV (one row per learner, a final row of pass rates) and one
   Markdown feedback file per learner, after every submission has finished (``gradebook.py``).

This module holds the command and runs the steps for every submission, ``--jobs`` at a time; it
stops every process the kernels left behind (``processes.py``) before it writes the outputs.
"""
import argparse
import concurrent.futures
import dataclasses
import os
import pathlib
import stat
import sys
import time

import nbformat

from course_utils.grading.assignment import find_submissions, load_assignment
from course_utils.grading.constants import SOLUTIONS_DIR
from course_utils.grading.execute import RUNNING, execute
from course_utils.grading.gradebook import as_number, write_feedback, write_gradebook
from course_utils.grading.processes import become_subreaper, child_pids, helper_pids, kill_leftovers, kill_tree
from course_utils.grading.rebuild import plan, rebuild
from course_utils.grading.sandbox import isolation
from course_utils.grading.score import CheckResult, LearnerResult, score


@dataclasses.dataclass
class Options:
    """How submissions are graded; ``main`` fills it from the command line."""
    cell_timeout: float = 120.0  # seconds one cell may run (--timeout)
    submission_timeout: float = 900.0  # seconds a whole submission may run
    memory_mb: int = 8192  # address-space limit (RLIMIT_AS) of one kernel, MiB
    jobs: int = 1  # submissions executed at the same time
    allow_read: tuple = ()  # further folders the learners' code may read (--allow-read)
    show_hidden_messages: bool = False  # hidden checks' failure messages in the feedback


MAX_NOTEBOOK_BYTES = 64 * 2**20


def read_submission(path, submissions_dir):
    """The text of the submission at ``path``, opened without following symbolic links.

    Raises ``ValueError`` unless it is a regular file with one hard link whose folders, up to
    ``submissions_dir``, are real folders (no symbolic link): a link to the solution notebook or to a
    classmate's submission is never read.
    """
    path = pathlib.Path(path)
    if submissions_dir is not None:
        base = pathlib.Path(submissions_dir)
        relative = path.relative_to(base)
        folder = base
        for part in relative.parts[:-1]:
            folder = folder / part
            if folder.is_symlink() or not folder.is_dir():
                raise ValueError(f"{relative.parent} is a symbolic link, not a folder of the submissions folder")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        if path.is_symlink():
            raise ValueError(f"{path.name} is a symbolic link, not a notebook file") from None
        raise
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path.name} is not a regular file")
        if info.st_nlink != 1:
            raise ValueError(f"{path.name} has {info.st_nlink} hard links: it may be another notebook's file")
        if info.st_size > MAX_NOTEBOOK_BYTES:
            raise ValueError(f"{path.name} holds {info.st_size:,} bytes, over the limit of {MAX_NOTEBOOK_BYTES:,}")
        return file.read(MAX_NOTEBOOK_BYTES + 1).decode("utf-8", errors="replace")


def grade_submission(learner, path, assignment, options, submissions_dir=None):
    """Grade one learner's notebook; never raises."""
    start = time.monotonic()

    def zero(status, note):
        checks = [CheckResult(c.check_id, 0, c.points, c.hidden, False, note) for c in assignment.checks]
        return LearnerResult(learner, str(path or ""), status, checks, [note], time.monotonic() - start)

    if path is None:
        return zero("missing", f"no {assignment.name}.ipynb was submitted")
    try:
        text = read_submission(path, submissions_dir)
    except (OSError, ValueError) as error:
        return zero("invalid-notebook", f"the submission was not read: {error}"[:500])
    try:
        submission = nbformat.reads(text, as_version=4)
        if not isinstance(submission, dict) or not isinstance(submission.get("cells"), list):
            raise ValueError("it has no list of cells")
    except Exception as error:
        return zero("invalid-notebook", f"the notebook could not be read: {type(error).__name__}: {error}"[:500])
    try:
        notebook, cells, notes = rebuild(submission, assignment)
        for attempt in range(2):  # a kernel that fails to start before any learner code ran gets a second try
            records, event = execute(plan(notebook, cells), assignment, options)
            checks, status, run_notes = score(assignment, cells, records, event, options)
            if status != "grader-error":
                break
        return LearnerResult(learner, str(path), status, checks, notes + run_notes, time.monotonic() - start)
    except Exception as error:  # a grader bug must not stop the class's grading
        return zero("grader-error", f"the grader failed on this submission: {type(error).__name__}: {error}")


def grade_class(submissions_dir, assignment_name, solutions_dir=SOLUTIONS_DIR, options=None,
                out=None, feedback=None, progress=None):
    """Grade every submission; write the gradebook and feedback; return the list of ``LearnerResult``."""
    options = options or Options()
    assignment = load_assignment(solutions_dir, assignment_name)
    submissions = find_submissions(submissions_dir, assignment.name)
    become_subreaper()  # the orphans of the kernels come to this process, so they can be stopped
    earlier_children = set(child_pids())  # when called from a notebook or a test: not ours to stop
    results = []
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, options.jobs))
    try:
        futures = [pool.submit(grade_submission, learner, path, assignment, options, submissions_dir)
                   for learner, path in submissions]
        for future in futures:
            result = future.result()
            results.append(result)
            if progress:
                progress(result)
    finally:  # also on Ctrl-C: no kernel is left running
        pool.shutdown(wait=False, cancel_futures=True)
        for pid in list(RUNNING):
            kill_tree(pid)
        pool.shutdown(wait=True)
    # what a kernel left running (a daemon that escaped its session) is stopped before the outputs are written
    kill_leftovers(spare=earlier_children | helper_pids())
    if out is not None:
        write_gradebook(results, assignment, out)
    if feedback is not None:
        write_feedback(results, assignment, feedback, options)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(prog="course-grade", description=__doc__.splitlines()[0])
    parser.add_argument("submissions", type=pathlib.Path, help="folder of submissions (<learner>/<assignment>.ipynb)")
    parser.add_argument("--assignment", required=True, help="assignment name, e.g. 01_convolution")
    parser.add_argument("--out", type=pathlib.Path, help="gradebook CSV (default: <assignment>_grades.csv)")
    parser.add_argument("--feedback", type=pathlib.Path, help="feedback folder (default: <assignment>_feedback/)")
    parser.add_argument("--jobs", type=int, default=max(1, os.cpu_count() or 1), help="submissions run at once")
    parser.add_argument("--timeout", type=float, default=120, help="time limit per cell, seconds (default 120)")
    parser.add_argument("--submission-timeout", type=float, default=900,
                        help="time limit for a whole submission, seconds (default 900)")
    parser.add_argument("--memory-mb", type=int, default=8192,
                        help="address-space limit per kernel, MiB (default 8192)")
    parser.add_argument("--solutions", type=pathlib.Path, default=SOLUTIONS_DIR,
                        help="folder of the solution notebooks (default: the course's solutions/)")
    parser.add_argument("--allow-read", action="append", default=[], metavar="PATH",
                        help="another folder the learners' code may read (repeatable)")
    parser.add_argument("--show-hidden-messages", action="store_true", help="show hidden checks' failure messages")
    args = parser.parse_args(argv)
    name = pathlib.Path(args.assignment).stem
    options = Options(cell_timeout=args.timeout, submission_timeout=args.submission_timeout, memory_mb=args.memory_mb,
                      jobs=args.jobs, allow_read=tuple(args.allow_read), show_hidden_messages=args.show_hidden_messages)
    out = args.out or pathlib.Path(f"{name}_grades.csv")
    feedback = args.feedback or pathlib.Path(f"{name}_feedback")

    def progress(result):
        print(f"{result.learner}: {as_number(result.total)}/{as_number(result.max_points)} {result.status} "
              f"({result.seconds:.1f} s)", flush=True)

    print(f"course-grade: isolation of the learners' kernels: {isolation()}", flush=True)
    try:
        results = grade_class(args.submissions, name, args.solutions, options, out, feedback, progress)
    except (FileNotFoundError, ValueError) as error:
        print(f"course-grade: {error}", file=sys.stderr)
        return 2
    print(f"graded {len(results)} submissions; gradebook {out}, feedback in {feedback}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
