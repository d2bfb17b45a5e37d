"""What the release and the grader share: the course's folders and the names of the grader's channels.

Every module of ``course_utils.grading`` imports these from here (see ``docs/grading.md``). The kernel
side (``kernel.py``, ``sandbox.py``) imports nothing from the package: it receives what it needs, the
token's MIME type included, in its parameters file.
"""
import pathlib

REPO_DIR = pathlib.Path(__file__).resolve().parents[2]  # course_utils/grading/ is two levels below the repository
SOLUTIONS_DIR = REPO_DIR / "solutions"  # the single source of every exercise, and of the graded checks
EXERCISES_DIR = REPO_DIR / "exercises"  # written by the release, never edited by hand

# A passing check publishes its HMAC token under this MIME type; the pytest plugin collects it from there.
TOKEN_MIME = "application/x-course-grader-token"
# The environment variable that hands the pytest plugin the file descriptor of its report pipe.
REPORT_FD_ENV = "COURSE_GRADER_REPORT_FD"
