"""The rendered site (course_utils.site): it builds with no warning, every ready chapter has its page, local links
resolve, no script or style sheet comes from a CDN, and offline in Chromium the math is typeset and a saved widget
is drawn.

The full site is built once for the module (about 30 s; npm installs the vendored JavaScript the first time and
caches it in site/_build). Without npm and without that cache the tests skip, unless COURSE_SITE_TESTS=required
(CI), which makes it a failure.
"""
import json
import os
import pathlib

import nbformat
import pytest

import browser_support
from course_utils import site

README = (site.REPO_DIR / "README.md").read_text(encoding="utf-8")
LECTURES = sorted((site.REPO_DIR / "notebooks").glob("*.ipynb"))
SOLUTIONS = sorted((site.REPO_DIR / "solutions").glob("*.ipynb"))


def site_tests_required():
    return os.environ.get("COURSE_SITE_TESTS", "").strip().lower() == "required"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "html"
    try:
        site.build(out)
    except site.NpmMissing as error:
        if site_tests_required():
            pytest.fail(f"{error} (COURSE_SITE_TESTS=required)", pytrace=False)
        pytest.skip(str(error))
    return out


def test_the_site_builds_with_no_warning_and_passes_its_own_checks(built):
    assert (built / "index.html").exists()
    assert site.check_site(built, README) == []


@pytest.mark.parametrize("row", [r for r in site.syllabus(README) if r["status"] == "ready"],
                         ids=lambda r: r["number"])
def test_every_ready_chapter_of_the_syllabus_has_its_page(built, row):
    assert row["path"], f"chapter {row['number']} is ready but the syllabus links to no lecture"
    assert (built / row["path"]).with_suffix(".html").exists(), f"no page for {row['path']}"


def test_every_lecture_and_solution_has_a_page_linked_from_the_front_page(built):
    front = (built / "index.html").read_text(encoding="utf-8")
    for path in LECTURES + SOLUTIONS:
        page = f"{path.parent.name}/{path.stem}.html"
        assert (built / page).exists(), f"no page {page}"
        assert f'href="{page}"' in front, f"the front page does not link to {page}"


def test_the_front_page_is_the_syllabus(built):
    front = (built / "index.html").read_text(encoding="utf-8")
    assert "<table" in front and "Syllabus" in front
    for row in site.syllabus(README):
        assert f"<td><p>{row['number']}</p></td>" in front, f"chapter {row['number']} is not in the front page's table"


def test_figures_and_saved_widget_states_are_in_the_pages(built):
    for path in LECTURES:
        notebook = nbformat.read(path, as_version=4)
        page = (built / "notebooks" / f"{path.stem}.html").read_text(encoding="utf-8")
        if any("image/png" in output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", [])):
            assert "<img" in page, f"{path.name} has figures, its page none"
        if "widgets" in notebook.metadata:
            assert 'type="application/vnd.jupyter.widget-state+json"' in page, f"{path.name}: widget state not embedded"
            assert 'type="application/vnd.jupyter.widget-view+json"' in page, f"{path.name}: no widget view"


def test_no_page_loads_a_script_or_style_sheet_from_another_host(built):
    for page in built.rglob("*.html"):
        parser = site._References()
        parser.feed(page.read_text(encoding="utf-8"))
        assert not [r for r in parser.loaded if r.startswith(("http:", "https:", "//"))], page.name


def test_the_checks_find_a_missing_chapter_a_broken_link_and_a_cdn(tmp_path):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "index.html").write_text(
        '<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>'
        '<link rel="stylesheet" href="//example.org/style.css">'
        '<a href="notebooks/99_gone.html#top">gone</a> <a href="https://arxiv.org/abs/1512.03385">fine</a>'
        '<img src="_images/fig.png"> <a href="#local">fine</a>', encoding="utf-8")
    problems = "\n".join(site.check_site(tmp_path, README))
    assert "has no page notebooks/01_convolution.html" in problems
    assert "loads https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js from another host" in problems
    assert "loads //example.org/style.css from another host" in problems
    assert "links to notebooks/99_gone.html#top, which does not exist" in problems
    assert "links to _images/fig.png, which does not exist" in problems
    assert "arxiv" not in problems and "#local" not in problems


def test_a_ready_chapter_without_a_link_is_a_problem(tmp_path):
    readme = README.replace("| [Setup](notebooks/00_setup.ipynb)", "| Setup")
    assert "syllabus chapter 00 is ready but links to no lecture" in site.check_site(tmp_path, readme)


def test_a_sphinx_warning_fails_the_build(tmp_path):
    repo = tmp_path / "repo"
    for folder in ("notebooks", "solutions"):
        (repo / folder).mkdir(parents=True)
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        "# 00 Setup\n\nSee [the missing chapter](99_missing.ipynb).")])
    nbformat.write(notebook, repo / "notebooks" / "00_setup.ipynb")
    solution = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 00 Setup: exercises")])
    nbformat.write(solution, repo / "solutions" / "00_setup.ipynb")
    readme = "# Course\n\nIntro.\n\n## Syllabus\n\n| # | chapter | you build | status |\n|---|---|---|---|\n" \
             "| 00 | [Setup](notebooks/00_setup.ipynb) | the set-up | ready |\n"
    (repo / "README.md").write_text(readme, encoding="utf-8")
    try:
        missing = r"(?s)sphinx-build failed.*cross-reference target not found: '99_missing.ipynb'"
        with pytest.raises(site.SiteError, match=missing):
            site.build(tmp_path / "html", repo_dir=repo)
    except site.NpmMissing as error:
        pytest.skip(str(error))


def test_a_syllabus_row_that_does_not_parse_is_an_error():
    with pytest.raises(site.SiteError, match="a syllabus row does not read"):
        site.syllabus("# C\n\nI.\n\n## Syllabus\n\n| # | chapter |\n|---|---|\n| 00 | Setup |\n")


def test_the_vendored_packages_are_pinned_and_match_ipywidgets_8():
    lock = json.loads((site.SITE_DIR / "package-lock.json").read_text(encoding="utf-8"))["packages"]
    assert lock["node_modules/@jupyter-widgets/html-manager"]["version"].startswith("1.0.")  # ipywidgets 8
    assert lock["node_modules/mathjax"]["version"].startswith("3.")  # es5/tex-mml-chtml.js
    assert "node_modules/requirejs" in lock


def test_offline_in_chromium_the_math_is_typeset_and_a_saved_widget_is_drawn(built):
    chromium = browser_support.chromium_or_skip()
    result = site.offline_check(built / "notebooks" / "01_convolution.html", pathlib.Path(chromium))
    assert result["typeset"] > 0, "MathJax typeset nothing"
    assert result["raw_tex"] == [], f"raw TeX left on the page: {result['raw_tex']}"
    assert result["widgets"] > 0, "no saved widget was drawn"
    assert site.code_from_elsewhere(result) == [], "the page asked for code, style or fonts from another host"
