"""Step 3 of ``course-grade``: the points of each check, from the records of the grader's worker (``execute.py``).

A check scores its points when the grader's own run of its code raised nothing; otherwise zero, with the
reason: the check's message, or the cell it depended on that timed out or failed, or the kernel's death.
stderr output and warnings cost nothing, and a fault of the learner's kernel after a check passed (closed
stdout, a deleted working folder, a crash) never takes that check's points back.
"""
import dataclasses
import re

from course_utils.grading.names import used_names


@dataclasses.dataclass
class CheckResult:
    """The points one learner scored on one check, and why a failed check failed."""
    check_id: str
    points: float
    max_points: float
    hidden: bool
    passed: bool
    message: str = ""
    excerpt: str = ""


@dataclasses.dataclass
class LearnerResult:
    """One learner's row of the gradebook: each check's result, the status and the notes for the feedback."""
    learner: str
    path: str
    status: str
    checks: list
    notes: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self):
        return sum(c.points for c in self.checks)

    @property
    def max_points(self):
        return sum(c.max_points for c in self.checks)


def _failure_reason(record, options):
    kind, message = record.get("kind"), record.get("message") or ""
    if kind == "timeout":
        return f"the check timed out after {options.cell_timeout:g} s"
    if kind == "kernel-died":
        return f"the kernel died while the check ran ({message})"
    if kind == "kernel-dead":
        return "not run: the kernel had stopped earlier"
    return message or "the check failed"


def score(assignment, cells, records, event, options):
    """Turn the per-cell reports into ``(check results, status, notes)``."""
    by_index = {}
    for record in records:
        if isinstance(record.get("index"), int):
            by_index.setdefault(record["index"], record)
    notes, status, stopped = [], "completed", None
    for index, (kind, *rest) in enumerate(cells):
        record = by_index.get(index)
        where = "a check cell" if kind == "check" else f"cell {rest[0]}"
        if record and record.get("kind") == "timeout" and status == "completed":
            status = "cell-timeout"
            notes.append(f"{where} timed out after {options.cell_timeout:g} s and was interrupted")
        if record and record.get("kind") == "kernel-died" and stopped is None:
            status, stopped = "kernel-died", f"{where}: {record.get('message')}"
            notes.append(f"the kernel died in {stopped}; the cells after it did not run")
    errors = [(rest[0], by_index[i]) for i, (kind, *rest) in enumerate(cells) if kind == "learner"
              and by_index.get(i) and by_index[i].get("kind") == "error"]
    for number, record in errors[:5]:
        first_line = (record.get("message") or "an error").splitlines()[0][:300]
        notes.append(f"cell {number} raised {first_line}")
    if len(errors) > 5:
        notes.append(f"{len(errors) - 5} more of your cells raised errors")
    if event == "time-limit":
        status = "time-limit"
        notes.append(f"the submission ran past the overall limit of {options.submission_timeout:g} s and was stopped")
    start_failure = next((r for r in records if r.get("kind") == "kernel-start"), None)
    if start_failure is not None:
        status = "grader-error"
        notes.append(f"the kernel could not be started: {start_failure.get('message')}")
    if not records and event is None:
        status = "grader-error"
        notes.append("the grader's worker reported no cell (it was killed?)")
    notes += [str(r["note"])[:500] for r in records if r.get("index") is None and r.get("note")]
    replaced = [rest[0] for i, (kind, *rest) in enumerate(cells) if kind == "learner"
                and by_index.get(i, {}).get("replaced_text")]
    if replaced:
        notes.append(f"cell {', '.join(map(str, replaced))} held characters that are not valid Unicode (lone "
                     "surrogates); they were replaced by '?' before the cell ran")

    results = []
    definers = {}  # name -> (number of the learner cell, its record) for the latest definition so far
    for index, (kind, *rest) in enumerate(cells):
        record = by_index.get(index)
        if kind == "learner":
            number, names = rest
            for name in names:
                definers[name] = (number, record)
            continue
        check = rest[0]
        passed = bool(record and record.get("ok") and record.get("check") == check.check_id)
        message = ""
        if not passed:
            if record is None:
                message = {"time-limit": "not run: the submission was stopped at the overall time limit"}.get(
                    event, f"not run: the kernel had stopped ({stopped})" if stopped else "not run")
            elif record.get("kind") == "kernel-dead" and stopped:
                message = f"not run: the kernel died earlier, in {stopped}"
            else:
                message = _failure_reason(record, options)
                causes = []
                for name in sorted(used_names(check.source)):
                    number, dep = definers.get(name, (None, None))
                    if dep is not None and not dep.get("ok") and dep.get("kind") in ("timeout", "error", "kernel-died"):
                        what = (f"timed out after {options.cell_timeout:g} s" if dep["kind"] == "timeout"
                                else f"failed with {dep.get('message')}")
                        causes.append(f"it depends on `{name}` from cell {number}, which {what}")
                if causes and record.get("kind") == "error":
                    message = "; ".join(dict.fromkeys(causes)) + f" (the check said: {message})"
                elif "NameError" in message:
                    name = re.search(r"name '([^']+)' is not defined", message)
                    if name:
                        message += f" (is `{name[1]}` missing or renamed in your notebook?)"
        results.append(CheckResult(check.check_id, check.points if passed else 0, check.points, check.hidden,
                                   passed, message, (record or {}).get("excerpt", "")))
    return results, status, notes

