"""How much slower is ``course-grade`` than executing the same notebooks once with plain nbval?

Usage::

    .venv/bin/python benchmarks/grading_overhead.py                 # 30 submissions, --jobs 2
    .venv/bin/python benchmarks/grading_overhead.py --n 10 --jobs 2 --solution solutions/01_convolution.ipynb

Both sides execute the same N solved notebooks in the course's environment:

* baseline: one ``pytest --nbval-lax --nbval-current-env`` over the N notebooks (one kernel
  per notebook, one after the other); with ``--baseline-jobs J`` the baseline runs them J at a
  time with pytest-xdist instead (``-n J --dist loadfile``), the stricter comparison;
* grading: ``course-grade SUBMISSIONS --assignment NAME --jobs J`` (rebuild, sandbox, one
  nbval run per submission, J at a time, gradebook and feedback).

It prints both wall-clock times and their ratio (grading / baseline); issue 10 asks for at
most 1.1 against the baseline with the same parallelism (``--baseline-jobs 2``). Without ``--solution`` the notebook is a
small synthetic chapter that imports torch and compares a NumPy convolution with
``torch.nn.functional.conv2d``: like the course's notebooks, its time is mostly kernel
start-up and the torch import.
"""
import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import nbformat

REPO_DIR = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_DIR))
from course_utils.grading import release  # noqa: E402

CHECKS = '''"""Checks of the benchmark's synthetic chapter."""
import numpy as np
import torch
import torch.nn.functional as F

from course_utils.checks import common


def check_conv2d(conv2d):
    rng = np.random.default_rng(0)
    for case in range(3):
        x = rng.normal(size=(2, 3, 8, 8))  # (N, C, H, W)
        w = rng.normal(size=(4, 3, 3, 3))  # (F, C, KH, KW)
        expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(w)).numpy()
        received = common.call(conv2d, x, w, case=f"case {case}")
        common.assert_close(received, expected, case=f"case {case}", rtol=1e-6, atol=1e-8)
    common.passed("conv2d", 3)


def check_output_size(output_size):
    for n, k, s, p in [(28, 3, 1, 0), (28, 5, 2, 2), (7, 3, 1, 1)]:
        expected = F.conv2d(torch.zeros(1, 1, n, n), torch.zeros(1, 1, k, k), stride=s, padding=p).shape[-1]
        common.assert_equal(common.call(output_size, n, k, s, p, case=f"n={n}"), expected, case=f"n={n}")
    common.passed("output_size", 3)
'''


def synthetic_solution():
    v4 = nbformat.v4

    def check(check_id, call, points, hidden=False):
        cell = v4.new_code_cell(f'"""Check: {call}."""\nimport bench_checks as checks\nchecks.check_{call}({call})')
        cell.metadata["course"] = {"check_id": check_id, "points": points, **({"hidden": True} if hidden else {})}
        return cell

    return v4.new_notebook(cells=[
        v4.new_markdown_cell("# Benchmark chapter"),
        v4.new_code_cell("import numpy as np\nimport torch\nfrom torch import nn\ntorch.manual_seed(0)"),
        v4.new_code_cell("def output_size(n, k, s=1, p=0):\n    ### BEGIN SOLUTION\n"
                         "    return (n + 2 * p - k) // s + 1\n    ### END SOLUTION"),
        check("b-size", "output_size", 1),
        v4.new_code_cell("def conv2d(x, w):\n    ### BEGIN SOLUTION\n    N, C, H, W = x.shape\n"
                         "    F, _, KH, KW = w.shape\n    out = np.zeros((N, F, H - KH + 1, W - KW + 1))\n"
                         "    for i in range(H - KH + 1):\n        for j in range(W - KW + 1):\n"
                         "            patch = x[:, :, i:i + KH, j:j + KW].reshape(N, -1)  # (N, C*KH*KW)\n"
                         "            out[:, :, i, j] = patch @ w.reshape(F, -1).T  # (N, F)\n"
                         "    return out\n    ### END SOLUTION"),
        check("b-conv", "conv2d", 3), check("b-conv-hidden", "conv2d", 2, hidden=True),
        v4.new_code_cell("model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(),\n"
                         "                      nn.Linear(8 * 26 * 26, 10))\n"
                         "loss = model(torch.randn(64, 1, 28, 28)).logsumexp(1).mean()\nloss.backward()\n"
                         "print(float(loss))"),
    ])


def run(command, env, cwd):
    start = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        print(result.stdout[-3000:])
        raise SystemExit(f"{command[:4]}... failed with status {result.returncode}")
    return seconds, result.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30, help="number of submissions (default 30)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--solution", type=pathlib.Path, help="a solution notebook (default: synthetic chapter)")
    parser.add_argument("--baseline-jobs", type=int, default=1,
                        help="run the plain-nbval baseline this many notebooks at a time (pytest-xdist)")
    parser.add_argument("--json", type=pathlib.Path, help="also write the timings here")
    args = parser.parse_args()

    work = pathlib.Path(tempfile.mkdtemp(prefix="grading-bench-"))
    try:
        env = dict(os.environ, MPLBACKEND="Agg", PYDEVD_DISABLE_FILE_VALIDATION="1")
        if args.solution:
            solution_path = args.solution.resolve()
        else:
            (work / "bench_checks.py").write_text(CHECKS, encoding="utf-8")
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(work), env.get("PYTHONPATH")]))
            (work / "solutions").mkdir()
            solution_path = work / "solutions" / "bench.ipynb"
            nbformat.write(synthetic_solution(), solution_path)
        name = solution_path.stem
        solution = nbformat.read(solution_path, as_version=4)
        release.validate_checks(solution, solution_path.name)
        solved = nbformat.reads(nbformat.writes(solution), as_version=4)
        solved.cells = [c for c in solved.cells if not release.course_metadata(c).get("hidden")]
        submitted = nbformat.writes(solved)
        plain_dir, class_dir = work / "plain", work / "submissions"
        plain_dir.mkdir()
        notebooks = []
        for i in range(args.n):
            (class_dir / f"learner{i:02d}").mkdir(parents=True)
            (class_dir / f"learner{i:02d}" / f"{name}.ipynb").write_text(submitted, encoding="utf-8")
            notebooks.append(plain_dir / f"learner{i:02d}.ipynb")
            notebooks[-1].write_text(submitted, encoding="utf-8")
        (work / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")

        parallel = ["-n", str(args.baseline_jobs), "--dist", "loadfile"] if args.baseline_jobs > 1 else ["-p", "no:xdist"]
        plain_s, _ = run([sys.executable, "-m", "pytest", "-c", str(work / "pytest.ini"), "-p", "no:cacheprovider",
                          *parallel, "--nbval-lax", "--nbval-current-env", "-q"] + [str(p) for p in notebooks],
                         env, work)
        grade_s, output = run([sys.executable, "-m", "course_utils.grading.grade", str(class_dir), "--assignment", name,
                               "--solutions", str(solution_path.parent), "--jobs", str(args.jobs),
                               "--out", str(work / "grades.csv"), "--feedback", str(work / "feedback")], env, work)
        rows = (work / "grades.csv").read_text(encoding="utf-8").splitlines()
        full = sum(1 for row in rows[1:-1] if row.split(",")[-3] == "100.0")
        timings = {"submissions": args.n, "jobs": args.jobs, "baseline_jobs": args.baseline_jobs,
                   "cpus": os.cpu_count(), "notebook": name,
                   "plain_nbval_s": round(plain_s, 1), "course_grade_s": round(grade_s, 1),
                   "ratio": round(grade_s / plain_s, 3), "full_marks": full}
        print(json.dumps(timings, indent=2))
        if full != args.n:
            print(f"warning: only {full} of {args.n} solved submissions got full marks", file=sys.stderr)
        if args.json:
            args.json.write_text(json.dumps(timings, indent=2) + "\n", encoding="utf-8")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
