"""Step 4 of ``course-grade``: the gradebook CSV and one Markdown feedback file per learner.

Both are written after every submission has finished (``grade.grade_class``). The gradebook has one
row per learner (each check's points, total, max, percent, status, notes) and a final row of pass
rates; the feedback says what happened while grading and why each check failed (hidden checks say
only that they failed, unless ``--show-hidden-messages``). See ``docs/grading.md``, section 4.
"""
import csv
import pathlib
import re


def as_number(value):
    """Points as they are printed: ``2`` for 2.0, ``1.33`` for 4/3."""
    return int(value) if float(value).is_integer() else round(float(value), 2)


def write_gradebook(results, assignment, path):
    """One row per learner (per-check points, total, max, percent, status, notes), then pass rates."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = [c.check_id for c in assignment.checks]
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["learner"] + ids + ["total", "max", "percent", "status", "notes"])
        for result in results:
            points = {c.check_id: c.points for c in result.checks}
            percent = 100 * result.total / result.max_points if result.max_points else 0
            writer.writerow([result.learner] + [as_number(points[i]) for i in ids] +
                            [as_number(result.total), as_number(result.max_points), round(percent, 1), result.status,
                             " | ".join(n.splitlines()[0] for n in result.notes)])
        graded = [r for r in results if r.status != "missing"] or results
        rates = []
        for check_id in ids:
            passed = sum(1 for r in graded for c in r.checks if c.check_id == check_id and c.passed)
            rates.append(f"{100 * passed / len(graded):.0f}%" if graded else "")
        mean = (sum(100 * r.total / r.max_points for r in graded if r.max_points) / len(graded)) if graded else 0
        writer.writerow(["pass rate"] + rates + ["", "", round(mean, 1), f"{len(graded)} graded", ""])


def _safe_name(learner):
    return re.sub(r"[^A-Za-z0-9._@-]", "_", learner) or "learner"


def feedback_markdown(result, assignment, options):
    """One learner's feedback: the score, what happened while grading, each check, and why checks failed."""
    percent = 100 * result.total / result.max_points if result.max_points else 0
    lines = [f"# {assignment.name}: feedback for {result.learner}", "",
             f"**Score: {as_number(result.total)} / {as_number(result.max_points)}** ({percent:.0f}%) "
             f"— status: {result.status}", ""]
    if result.notes:
        lines += ["## What happened while grading", ""] + [f"- {note}" for note in result.notes] + [""]
    lines += ["## Checks", "", "| check | points | result |", "|---|---|---|"]
    for check in result.checks:
        label = f"`{check.check_id}`" + (" (hidden)" if check.hidden else "")
        lines.append(f"| {label} | {as_number(check.points)} / {as_number(check.max_points)} | "
                     f"{'passed' if check.passed else 'failed'} |")
    failed = [c for c in result.checks if not c.passed]
    if failed:
        lines += ["", "## Why checks failed", ""]
        for check in failed:
            message = check.message
            if check.hidden and not options.show_hidden_messages and not message.startswith("not run"):
                message = "this hidden check failed (its message is not shown)"
            lines += [f"### `{check.check_id}`", "", "```", message.strip()[:3000] or "failed", "```", ""]
    return "\n".join(lines) + "\n"


def write_feedback(results, assignment, folder, options):
    """Write ``<folder>/<learner>.md`` (``feedback_markdown``) for every learner."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for result in results:
        (folder / f"{_safe_name(result.learner)}.md").write_text(feedback_markdown(result, assignment, options),
                                                                 encoding="utf-8")

