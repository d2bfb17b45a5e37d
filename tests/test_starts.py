"""The one-click starts: every 'Open in Colab' badge (README and lectures) opens an existing notebook of the
configured repository, every lecture's first code cell is the Colab set-up cell (which does nothing elsewhere),
and the Binder configuration installs the course's requirements.
"""
import contextlib
import io
import os
import re
import subprocess
import sys
import types

import nbformat
import pytest

from course_utils import site

REPO = site.REPO_DIR
sys.path.insert(0, str(REPO / "scripts"))
import colab_cells  # noqa: E402  (scripts/ is not a package)

LECTURES = sorted((REPO / "notebooks").glob("*.ipynb"))
COLAB = re.compile(r"https://colab\.research\.google\.com/github/([^/]+/[^/]+)/blob/([^/]+)/([^)\s\"']+)")
README = (REPO / "README.md").read_text(encoding="utf-8")


def colab_targets(text):
    return [match.groups() for match in COLAB.finditer(text)]


def test_every_readme_badge_opens_an_existing_notebook_of_the_repository():
    targets = colab_targets(README)
    assert targets, "the README has no Colab badge"
    for repository, branch, path in targets:
        assert (repository, branch) == (site.REPOSITORY, site.BRANCH), (
            f"the badge for {path} points at {repository}@{branch}")
        assert (REPO / path).is_file(), f"a README badge points at {path}, which does not exist"


def test_every_syllabus_link_to_a_lecture_has_its_badge_next_to_it():
    for row in site.syllabus(README):
        if row["path"]:
            assert f"]({row['path']}) {site.colab_badge(row['path'])}" in README, f"no badge after {row['path']}"


@pytest.mark.parametrize("path", LECTURES, ids=[p.name for p in LECTURES])
def test_every_lecture_opens_with_its_badge_and_the_colab_cell(path):
    notebook = nbformat.read(path, as_version=4)
    relative = path.relative_to(REPO).as_posix()
    title = notebook.cells[0].source
    assert title.splitlines()[0].startswith("# "), f"{path.name}: the first cell is not the title"
    assert colab_targets(title) == [(site.REPOSITORY, site.BRANCH, relative)], (
        f"{path.name}: the title cell's badge must open {relative}; run scripts/colab_cells.py")
    first_code = next(cell for cell in notebook.cells if cell.cell_type == "code")
    assert first_code is notebook.cells[1] and colab_cells.is_setup_cell(first_code), (
        f"{path.name}: the first code cell (right after the title) must be the Colab set-up cell")
    assert first_code.source == colab_cells.setup_source(), f"{path.name}: old set-up cell; run scripts/colab_cells.py"
    assert first_code.outputs == [], f"{path.name}: the set-up cell printed something outside Colab"


def test_colab_cells_is_idempotent_and_everything_is_up_to_date():
    notebook = nbformat.read(LECTURES[0], as_version=4)
    relative = LECTURES[0].relative_to(REPO).as_posix()
    assert not colab_cells.update_lecture(notebook, relative)
    assert colab_cells.update_readme(README) == README
    assert colab_cells.main(["--check"]) == 0


def test_colab_cells_adds_the_badge_and_the_cell_once_and_replaces_an_old_one():
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 15 Training recipes\n\nText."),
                                               nbformat.v4.new_code_cell("import torch")])
    assert colab_cells.update_lecture(notebook, "notebooks/15_training_recipes.ipynb")
    assert notebook.cells[0].source == ("# 15 Training recipes\n\n"
                                        f"{site.colab_badge('notebooks/15_training_recipes.ipynb')}\n\nText.")
    assert colab_cells.is_setup_cell(notebook.cells[1]) and notebook.cells[2].source == "import torch"
    assert not colab_cells.update_lecture(notebook, "notebooks/15_training_recipes.ipynb")
    notebook.cells[1].source = "old"
    notebook.cells[0].source = notebook.cells[0].source.replace("cnn-course", "someone-else")
    assert colab_cells.update_lecture(notebook, "notebooks/15_training_recipes.ipynb")
    assert len(notebook.cells) == 3 and notebook.cells[1].source == colab_cells.setup_source()
    assert "someone-else" not in notebook.cells[0].source


def test_colab_cells_refuses_a_lecture_without_a_title_cell():
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    with pytest.raises(ValueError, match="first cell must be the '# NN Title' Markdown cell"):
        colab_cells.update_lecture(notebook, "notebooks/99_x.ipynb")


def test_the_colab_cell_does_nothing_outside_colab():
    source = colab_cells.setup_source()
    done = subprocess.run([sys.executable, "-c", source + "\nimport os; print(os.getcwd())"], cwd=REPO,
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str(REPO) and done.stderr == ""


def test_on_colab_the_cell_clones_the_repository_installs_the_requirements_and_enters_notebooks(monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", lambda command, **options: calls.append((command, options)))
    monkeypatch.setattr(os, "chdir", lambda folder: calls.append(("chdir", folder)))
    monkeypatch.setattr(sys, "path", list(sys.path))
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(colab_cells.setup_source(), {})
    name = site.REPOSITORY.split("/")[1]
    clone, install, chdir = calls
    assert clone[0] == ["git", "clone", "--depth", "1", f"https://github.com/{site.REPOSITORY}", f"/content/{name}"]
    assert install[0][-2:] == ["-r", "requirements.txt"] and install[1]["cwd"] == f"/content/{name}"
    assert chdir == ("chdir", f"/content/{name}/notebooks") and sys.path[0] == f"/content/{name}"
    assert printed.getvalue() == ""


def test_binder_installs_the_course_requirements():
    post_build = REPO / "binder" / "postBuild"
    assert post_build.is_file() and os.access(post_build, os.X_OK), "binder/postBuild must exist and be executable"
    text = post_build.read_text(encoding="utf-8")
    assert "-r requirements.txt" in text, "binder/postBuild must install the course's requirements.txt"
    assert (REPO / "requirements.txt").is_file()
    assert (REPO / "binder" / "runtime.txt").read_text(encoding="utf-8").startswith("python-3.")


def test_the_readme_has_the_binder_badge_of_the_repository():
    assert f"]({site.binder_url()})" in README
