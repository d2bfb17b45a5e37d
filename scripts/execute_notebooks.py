"""Execute notebooks in place, so that lectures and solutions are committed with their outputs.

    python scripts/execute_notebooks.py notebooks/01_convolution.ipynb solutions/01_convolution.ipynb
    python scripts/execute_notebooks.py --all      # every lecture and solution notebook

Each notebook runs top to bottom in a fresh kernel of the current Python, in its own
folder, with MPLBACKEND unset (figures inline). The wall time of each is printed, so
this is also how the course measures "about a minute per notebook". A notebook that
raises is not written, and the command exits 1.
"""
import argparse
import pathlib
import sys

import nbformat
from nbclient import NotebookClient

from course_utils.timing import time_call

REPO_DIR = pathlib.Path(__file__).resolve().parents[1]


def execute(path, timeout=600):
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        record_timing=False,
        store_widget_state=True,
    )
    seconds = time_call(client.execute, repeats=1, warmup=0).best  # one run: executing fills in the outputs
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
    nbformat.write(notebook, path)
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=pathlib.Path)
    parser.add_argument("--all", action="store_true", help="every notebook in notebooks/ and solutions/")
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    paths = list(args.paths)
    if args.all:
        paths += sorted((REPO_DIR / "notebooks").glob("*.ipynb")) + sorted((REPO_DIR / "solutions").glob("*.ipynb"))
    if not paths:
        parser.error("name notebooks to execute, or pass --all")
    failed = False
    for path in paths:
        try:
            seconds = execute(path.resolve(), args.timeout)
            print(f"{seconds:7.1f} s  {path}")
        except Exception as error:  # report and go on with the others
            failed = True
            print(f"FAILED   {path}: {type(error).__name__}: {str(error)[-2000:]}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
