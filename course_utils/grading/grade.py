"""Grade a class's submissions of one assignment: ``course-grade`` (or ``python -m course_utils.grading.grade``).

Usage::

    course-grade SUBMISSIONS_DIR --assignment 01_convolution \\
        [--out grades.csv] [--feedback DIR] [--jobs N] [--timeout S]

A submission is ``SUBMISSIONS_DIR/<learner>/<assignment>.ipynb`` or
``SUBMISSIONS_DIR/<learner>.ipynb``; a learner folder without the notebook is graded
"missing". The walkthrough for instructors is ``docs/grading.md``. For each submission:

0. **Read** the assignment (``assignment.py``): the check cells of
   ``solutions/<assignment>.ipynb`` and the sources of the check packages and of the kernel side,
   once, before any learner's code runs.
1. **Rebuild** (``rebuild.py``). The learner's code cells are kept; every check cell comes from
   ``solutions/<assignment>.ipynb`` by its ``check_id`` (hidden checks included). A check
   cell the learner edited, deleted, moved or split is put back in its released place and
   the feedback says so.
2. **Execute** the rebuilt notebook with nbval (``execute.py``: one ``pytest --nbval-lax`` process
   per submission, forked from a server that imported pytest once, ``--jobs`` at a time) in a
   private temporary folder holding only that notebook, with a per-cell time-out, an overall
   time-out, a memory and a CPU limit, an output limit and, where Linux offers Landlock, a
   file-system sandbox (``sandbox.py``, applied by ``kernel.py``, which also keeps the checks out
   of the learner's reach; ``plugin.py`` reports each cell to the grader).
3. **Score** (``score.py``). A check scores its points when its cell raised nothing *and* published the
   grader's secret token for that check; otherwise zero, with the reason (the check's
   message, or the cell it depended on that timed out or failed, or the kernel's death).
   stderr output and warnings cost nothing.
4. **Write** the gradebook CSV (one row per learner, a final row of pass rates) and one
   Markdown feedback file per learner, after every submission has finished (``gradebook.py``).

This module holds the command and runs the steps for every submission, ``--jobs`` at a time; it
stops every process the kernels left behind (``processes.py``) before it writes the outputs.
"""
import argparse
import concurrent.futures
import dataclasses
import os
import pathlib
import secrets
import sys
import time

import nbformat

from course_utils.grading.assignment import find_submissions, load_assignment
from course_utils.grading.constants import SOLUTIONS_DIR
from course_utils.grading.execute import RUNNING, execute
from course_utils.grading.gradebook import as_number, write_feedback, write_gradebook
from course_utils.grading.processes import become_subreaper, child_pids, helper_pids, kill_leftovers, kill_tree
from course_utils.grading.rebuild import rebuild
from course_utils.grading.score import CheckResult, LearnerResult, score


@dataclasses.dataclass
class Options:
    """How submissions are graded; ``main`` fills it from the command line."""
    cell_timeout: float = 120.0  # seconds one cell may run (--timeout)
    submission_timeout: float = 900.0  # seconds a whole submission may run
    memory_mb: int = 8192  # address-space limit (RLIMIT_AS) of one kernel, MiB
    output_chars: int = 2_000_000  # stdout and stderr of a kernel together, past which output is dropped
    jobs: int = 1  # submissions executed at the same time
    allow_read: tuple = ()  # further folders the learners' code may read (--allow-read)
    show_hidden_messages: bool = False  # hidden checks' failure messages in the feedback


def grade_submission(learner, path, assignment, options):
    """Grade one learner's notebook; never raises."""
    start = time.monotonic()

    def zero(status, note):
        checks = [CheckResult(c.check_id, 0, c.points, c.hidden, False, note) for c in assignment.checks]
        return LearnerResult(learner, str(path or ""), status, checks, [note], time.monotonic() - start)

    if path is None:
        return zero("missing", f"no {assignment.name}.ipynb was submitted")
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8", errors="replace")
        submission = nbformat.reads(text, as_version=4)
        if not isinstance(submission, dict) or not isinstance(submission.get("cells"), list):
            raise ValueError("it has no list of cells")
    except Exception as error:
        return zero("invalid-notebook", f"the notebook could not be read: {type(error).__name__}: {error}"[:500])
    try:
        notebook, cells, notes = rebuild(submission, assignment)
        for attempt in range(2):  # a kernel that fails to start before any learner code ran gets a second try
            key = secrets.token_hex(32)
            records, event, log = execute(notebook, assignment, options, key)
            checks, status, run_notes = score(assignment, cells, records, event, options, key, log)
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
        futures = [pool.submit(grade_submission, learner, path, assignment, options) for learner, path in submissions]
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

    try:
        results = grade_class(args.submissions, name, args.solutions, options, out, feedback, progress)
    except (FileNotFoundError, ValueError) as error:
        print(f"course-grade: {error}", file=sys.stderr)
        return 2
    print(f"graded {len(results)} submissions; gradebook {out}, feedback in {feedback}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
