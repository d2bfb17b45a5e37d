"""What the release and the grader share: the course's folders (see ``docs/grading.md``)."""
import pathlib

REPO_DIR = pathlib.Path(__file__).resolve().parents[2]  # course_utils/grading/ is two levels below the repository
SOLUTIONS_DIR = REPO_DIR / "solutions"  # the single source of every exercise, and of the graded checks
EXERCISES_DIR = REPO_DIR / "exercises"  # written by the release, never edited by hand
