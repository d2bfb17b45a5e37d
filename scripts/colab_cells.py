"""Put an 'Open in Colab' badge and a Colab set-up cell at the top of each lecture, and badges in the README.

    python scripts/colab_cells.py                 # every notebooks/*.ipynb and the README's syllabus
    python scripts/colab_cells.py notebooks/15_training_recipes.ipynb
    python scripts/colab_cells.py --check         # exit 1 if a lecture or the README is not up to date

Idempotent: a lecture that already has the badge (the line after its title) and the set-up cell (the first
code cell, tagged "colab-setup") with the current text is left as it is, so it can run again on new chapters.
The links come from `course_utils.site.REPOSITORY` (a fork changes that one line and runs this again). A
lecture it changes must be executed again, one at a time:

    OMP_NUM_THREADS=2 .venv/bin/python scripts/execute_notebooks.py notebooks/NN_topic.ipynb

The README's syllabus rows that link to an existing lecture get its badge after the link. Solutions get no
cell (they open on Colab through the same URL with `solutions/` in place of `notebooks/`).
"""
import argparse
import pathlib
import re
import sys

import nbformat

REPO_DIR = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_DIR))

from course_utils.site import REPOSITORY, colab_badge  # noqa: E402  (the path above first)

SETUP_TAG = "colab-setup"
BADGE_LINE = re.compile(r"^\[!\[Open in Colab\]\([^)]*\)\]\([^)]*\)$", re.MULTILINE)
# a syllabus row's chapter cell: "[Title](notebooks/NN_topic.ipynb)" and maybe its badge
README_LINK = re.compile(r"(\[[^\]]+\]\((notebooks/\d\d_[a-z0-9_]+\.ipynb)\))"
                         r"( \[!\[Open in Colab\]\([^)]*\)\]\([^)]*\))?")


def setup_source(repository=REPOSITORY):
    """The first code cell of a lecture: installs the course on Colab, does nothing (and prints nothing) elsewhere."""
    name = repository.split("/")[1]
    return (
        "# On Colab only: fetch the course and install its requirements (torch is already there).\n"
        "# Anywhere else (a clone, Binder) this cell does nothing.\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        "    import os\n"
        "    import subprocess\n"
        f'    course, url = "/content/{name}", "https://github.com/{repository}"\n'
        "    if not os.path.isdir(course):\n"
        '        subprocess.run(["git", "clone", "--depth", "1", url, course], check=True)\n'
        '    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-r", "requirements.txt"],\n'
        "                   cwd=course, check=True)\n"
        "    sys.path.insert(0, course)  # course_utils without restarting the kernel\n"
        '    os.chdir(f"{course}/notebooks")  # relative paths work as in a clone'
    )


def with_badge(title_source, relative_path):
    """The title cell's text with the badge on the line after the `# NN Title` line (replacing an old badge)."""
    badge = colab_badge(relative_path)
    if BADGE_LINE.search(title_source):
        return BADGE_LINE.sub(lambda match: badge, title_source, count=1)
    title, _, rest = title_source.partition("\n")
    return f"{title}\n\n{badge}\n" + (f"\n{rest.lstrip(chr(10))}" if rest.strip() else "")


def is_setup_cell(cell):
    return cell.cell_type == "code" and SETUP_TAG in cell.metadata.get("tags", [])


def update_lecture(notebook, relative_path):
    """Badge in the title cell, set-up cell first among the code cells; returns True if anything changed."""
    changed = False
    title = notebook.cells[0]
    if title.cell_type != "markdown" or not title.source.startswith("# "):
        raise ValueError(f"{relative_path}: the first cell must be the '# NN Title' Markdown cell")
    source = with_badge(title.source, relative_path)
    if source != title.source:
        title.source = source
        changed = True
    setups = [cell for cell in notebook.cells if is_setup_cell(cell)]
    expected = setup_source()
    if setups and notebook.cells[1] is setups[0] and len(setups) == 1:
        if setups[0].source != expected:
            setups[0].source = expected
            changed = True
        return changed
    for cell in setups:
        notebook.cells.remove(cell)
    cell = nbformat.v4.new_code_cell(expected, metadata={"tags": [SETUP_TAG]})
    notebook.cells.insert(1, cell)
    return True


def update_readme(text, repo_dir=REPO_DIR):
    """The README with a badge after each syllabus link to a lecture that exists."""
    def badge(match):
        path = match.group(2)
        if not (repo_dir / path).exists():
            return match.group(1)
        return f"{match.group(1)} {colab_badge(path)}"
    return README_LINK.sub(badge, text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=pathlib.Path, help="lectures (default: every notebooks/*.ipynb)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if something is out of date")
    args = parser.parse_args(argv)
    paths = [p.resolve() for p in args.paths] or sorted((REPO_DIR / "notebooks").glob("*.ipynb"))
    stale = []
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        if update_lecture(notebook, path.relative_to(REPO_DIR).as_posix()):
            stale.append(path.relative_to(REPO_DIR).as_posix())
            if not args.check:
                nbformat.write(notebook, path)
    readme = REPO_DIR / "README.md"
    text = readme.read_text(encoding="utf-8")
    if update_readme(text) != text:
        stale.append("README.md")
        if not args.check:
            readme.write_text(update_readme(text), encoding="utf-8")
    for name in stale:
        print(("out of date: " if args.check else "updated: ") + name)
    if stale and not args.check:
        print("execute each updated lecture again, one at a time: scripts/execute_notebooks.py notebooks/NN_x.ipynb")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
