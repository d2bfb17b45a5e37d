"""Step 1 of ``course-grade``: the notebook to execute, rebuilt from a submission and the solution.

The learner's code cells are kept; every check cell comes from ``solutions/<assignment>.ipynb`` by
its ``check_id`` (hidden checks included); the grader runs those in its own process (``execute.py``),
never in the learner's kernel. A check cell the learner edited, deleted, moved or split is put back in
its released place, found from the cells around it, and a note says so.
"""
import nbformat

from course_utils.grading.names import defined_names
from course_utils.grading.release import is_check_cell, strip_solution


def _normalise(source):
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def _check_id(cell):
    """The check id of a submitted cell, or None (a learner's notebook may hold any metadata)."""
    metadata = cell.get("metadata")
    course = metadata.get("course") if isinstance(metadata, dict) else None
    check_id = course.get("check_id") if isinstance(course, dict) else None
    return check_id if isinstance(check_id, str) else None


def _released_source(cell):
    try:
        return strip_solution(cell.source, cell.cell_type, "cell")
    except ValueError:
        return cell.source


def rebuild(submission, assignment):
    """The notebook to execute: learner's code cells, check cells from the solution placed by id.

    Returns ``(notebook, cells, notes)``; ``cells[k]`` describes code cell ``k`` of the rebuilt
    notebook: ``("check", Check)`` or ``("learner", number in the submission (1-based), names)``.
    ``plan(notebook, cells)`` turns them into what ``execute.execute`` runs.
    """
    solution_cells = assignment.solution.cells
    checks_by_id = {c.check_id: c for c in assignment.checks}
    learner_cells = [c for c in submission.get("cells", []) if isinstance(c, dict)]

    def find_anchor(solution_cell):
        """Where the learner's notebook has this cell of the released notebook: same id, else same text."""
        cell_id = solution_cell.get("id")
        for index, cell in enumerate(learner_cells):
            if cell_id and cell.get("id") == cell_id and _check_id(cell) is None:
                return index
        texts = {_normalise(solution_cell.source), _normalise(_released_source(solution_cell))}
        for index, cell in enumerate(learner_cells):
            if cell.get("cell_type") == solution_cell.cell_type and _check_id(cell) is None and \
                    _normalise(str(cell.get("source", ""))) in texts:
                return index
        return None

    anchors = {}
    for position, cell in enumerate(solution_cells):
        if not is_check_cell(cell):
            anchors[position] = find_anchor(cell)

    replace_at, insert_before, notes = {}, {}, []
    for check in assignment.checks:
        occurrences = [i for i, c in enumerate(learner_cells) if _check_id(c) == check.check_id]
        previous = [anchors[p] for p in range(check.position - 1, -1, -1) if anchors.get(p) is not None]
        low = previous[0] if previous else -1
        following = [anchors[p] for p in range(check.position + 1, len(solution_cells))
                     if anchors.get(p) is not None and anchors[p] > low]
        high = following[0] if following else len(learner_cells)
        if len(occurrences) == 1 and low < occurrences[0] < high:
            replace_at[occurrences[0]] = check
            if _normalise(str(learner_cells[occurrences[0]].get("source", ""))) != _normalise(check.source):
                notes.append(f"check `{check.check_id}` was edited; it was restored from the released assignment")
            continue
        insert_before.setdefault(high, []).append(check)
        if check.hidden and not occurrences:
            continue
        if not occurrences:
            notes.append(f"check `{check.check_id}` was deleted; it was restored from the released assignment")
        elif len(occurrences) > 1:
            notes.append(f"check `{check.check_id}` was split or copied into {len(occurrences)} cells; "
                         "it was restored from the released assignment")
        else:
            notes.append(f"check `{check.check_id}` was moved; it was put back in its released place")

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cells = []

    def add(source, description):
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["course_grader"] = {"index": len(cells)}
        if description[0] == "check":
            cell.metadata["course_grader"]["check_id"] = description[1].check_id
        notebook.cells.append(cell)
        cells.append(description)

    def add_check(check):
        add(check.source, ("check", check))

    for index, cell in enumerate(learner_cells + [None]):
        for check in insert_before.get(index, []):
            add_check(check)
        if cell is None:
            break
        if index in replace_at:
            add_check(replace_at[index])
        elif _check_id(cell) in checks_by_id:
            continue  # an edited, moved or split copy: the original is placed instead
        elif cell.get("cell_type") == "code":
            source = cell.get("source", "")
            source = "".join(source) if isinstance(source, list) else str(source)
            add(source, ("learner", index + 1, defined_names(source)))
    return notebook, cells, notes



def plan(notebook, cells):
    """``[(index, "check", Check) or (index, "learner", source)]``: what the grader's worker runs, in order."""
    return [(index, "check", rest[0]) if kind == "check" else (index, "learner", cell.source)
            for index, (cell, (kind, *rest)) in enumerate(zip(notebook.cells, cells))]
