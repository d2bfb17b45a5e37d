"""The course's rendered site and its one-click starts (Colab, Binder).

    python -m course_utils.site                      # site/_build/html/index.html
    python -m course_utils.site --out /tmp/site --offline-check

The site is Sphinx + myst-nb over the committed, executed lecture and solution notebooks (nothing is
executed): the README's syllabus is the front page, one page per lecture and per solution, with figures, saved
widget states and typeset math. Its JavaScript (MathJax 3, require.js, the ipywidgets HTML manager) comes from
the npm packages pinned in site/package.json and site/package-lock.json, installed once into
site/_build/node_modules (the first build needs the npm registry, later ones run offline) and copied into the
site's _static folder, so the pages render with no network. The build fails on any Sphinx warning, on a
syllabus chapter marked ready without a page, on a link of a page to a local file that does not exist, and on a
<script src> or <link href> that leaves the site (no CDN). `--offline-check` then opens a lecture in headless
Chromium with every non-file request aborted and checks that MathJax typeset its math and a saved widget is drawn.

REPOSITORY below is the one place that names the course's GitHub repository: the Colab badges, the Colab
set-up cell of each lecture (scripts/colab_cells.py) and the Binder badge come from it. Introduced by no
chapter; the README's "Starting elsewhere" section points here.
"""
import argparse
import html.parser
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

REPOSITORY = "cnn-course/cnn-architectures"  # GitHub owner/name; a fork changes this line only
BRANCH = "main"

REPO_DIR = pathlib.Path(__file__).resolve().parents[1]
SITE_DIR = REPO_DIR / "site"  # conf.py, the front page's template, package.json and its lock
BUILD_DIR = SITE_DIR / "_build"  # not in git: node_modules, the generated Sphinx sources, the HTML
# what the site serves from _static/vendor/: destination -> source inside node_modules (file or folder)
VENDORED = {
    "mathjax/tex-mml-chtml.js": "mathjax/es5/tex-mml-chtml.js",
    "mathjax/input": "mathjax/es5/input",  # TeX extensions MathJax loads on demand
    "mathjax/output/chtml": "mathjax/es5/output/chtml",  # its fonts
    "mathjax/ui": "mathjax/es5/ui",  # the right-click menu
    "mathjax/a11y": "mathjax/es5/a11y",  # what the menu's accessibility options load
    "require.js": "requirejs/require.js",
    "html-manager": "@jupyter-widgets/html-manager/dist",  # embed-amd.js and its icon fonts
}
VENDOR_SKIP = ("*.map", "embed.js", "embed.js.LICENSE.txt", "libembed-amd.js")


class SiteError(RuntimeError):
    """The site cannot be built, or a built site breaks a rule (warning, missing chapter, broken link, CDN)."""


class NpmMissing(SiteError):
    """npm is not on the PATH and the vendored packages are not installed yet."""


def colab_url(relative_path):
    """The Colab address of a notebook of the repository, e.g. colab_url("notebooks/01_convolution.ipynb")."""
    return f"https://colab.research.google.com/github/{REPOSITORY}/blob/{BRANCH}/{relative_path}"


def colab_badge(relative_path):
    """The Markdown 'Open in Colab' badge of a notebook."""
    return f"[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(relative_path)})"


def binder_url():
    """The mybinder.org address that builds the repository from binder/ and opens JupyterLab."""
    return f"https://mybinder.org/v2/gh/{REPOSITORY}/{BRANCH}?urlpath=lab"


# --- the syllabus ------------------------------------------------------------------------------------------

SYLLABUS_ROW = re.compile(r"^\|\s*(\d\d)\s*\|(.*)\|(.*)\|\s*([a-z ]+?)\s*\|\s*$")


def syllabus_table(readme_text):
    """The lines of the README's syllabus table (header included), as a list of strings."""
    lines = readme_text.splitlines()
    try:
        start = lines.index("## Syllabus")
    except ValueError:
        raise SiteError("README.md has no '## Syllabus' section") from None
    table = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    if len(table) < 3:
        raise SiteError("README.md's syllabus has no table rows")
    return table


def syllabus(readme_text):
    """The syllabus rows: a list of dicts with number ("01"), status ("ready", "planned") and path (or None)."""
    rows = []
    for line in syllabus_table(readme_text)[2:]:
        match = SYLLABUS_ROW.match(line)
        if not match:
            raise SiteError(f"README.md: a syllabus row does not read '| NN | chapter | you build | status |': {line}")
        number, chapter, _, status = match.groups()
        link = re.search(r"\]\((notebooks/\d\d_[a-z0-9_]+\.ipynb)\)", chapter)
        rows.append({"number": number, "status": status, "path": link.group(1) if link else None})
    return rows


def notebook_title(path):
    """The text of a notebook's '# NN Title' line."""
    first = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))["cells"][0]["source"]
    first = "".join(first) if isinstance(first, list) else first
    return first.splitlines()[0].lstrip("# ").strip()


def front_page(readme_text, solutions, template):
    """The Markdown of the front page: the template with the README's first paragraph, syllabus and solutions."""
    paragraphs = readme_text.split("\n\n")
    intro = paragraphs[1].strip()  # paragraphs[0] is the title
    solution_lines = "\n".join(f"* [{notebook_title(path)}](solutions/{path.name})" for path in solutions)
    return template.format(intro=intro, syllabus="\n".join(syllabus_table(readme_text)), solutions=solution_lines)


# --- the vendored JavaScript -------------------------------------------------------------------------------

def node_modules(cache=BUILD_DIR):
    """Install site/package-lock.json into cache/node_modules once (npm ci), and return that folder.

    Reruns are offline: npm runs again only when the lock file changed. Without npm, a SiteError says what to do.
    """
    modules = cache / "node_modules"
    lock = cache / "package-lock.json"
    wanted = (SITE_DIR / "package-lock.json").read_text(encoding="utf-8")
    if modules.is_dir() and lock.exists() and lock.read_text(encoding="utf-8") == wanted:
        return modules
    npm = shutil.which("npm")
    if npm is None:
        raise NpmMissing("npm was not found: the site serves MathJax, require.js and the ipywidgets HTML manager "
                        "from npm packages (site/package.json). Install Node.js with npm (e.g. apt install npm) and "
                        "build again; the first build needs the npm registry, later ones run offline.")
    cache.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(SITE_DIR / name, cache / name)
    done = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=cache,
                          capture_output=True, text=True)
    if done.returncode != 0:
        lock.unlink(missing_ok=True)  # so the next build tries again
        raise SiteError(f"npm ci in {cache} failed (does this machine reach the npm registry?):\n{done.stderr[-2000:]}")
    return modules


def vendor(modules, static):
    """Copy VENDORED from node_modules into static/vendor."""
    for destination, source in VENDORED.items():
        source, destination = modules / source, static / "vendor" / destination
        if not source.exists():
            raise SiteError(f"{source} is missing: is site/package.json's version the one VENDORED expects?")
        destination.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, destination, ignore=shutil.ignore_patterns(*VENDOR_SKIP), dirs_exist_ok=True)
        else:
            shutil.copyfile(source, destination)


# --- the build ---------------------------------------------------------------------------------------------

def write_sources(src, repo_dir=REPO_DIR, notebooks=None):
    """A fresh Sphinx source folder: conf.py, index.md, notebooks/, solutions/ (copies of the repository's).

    `notebooks` (names like "01_convolution.ipynb") limits the lectures and solutions to those; default all.
    """
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    shutil.copyfile(SITE_DIR / "conf.py", src / "conf.py")
    copied = {}
    for folder in ("notebooks", "solutions"):
        (src / folder).mkdir()
        copied[folder] = []
        for path in sorted((repo_dir / folder).glob("*.ipynb")):
            if notebooks is None or path.name in notebooks:
                shutil.copyfile(path, src / folder / path.name)
                copied[folder].append(path)
    readme = (repo_dir / "README.md").read_text(encoding="utf-8")
    template = (SITE_DIR / "index.md").read_text(encoding="utf-8")
    (src / "index.md").write_text(front_page(readme, copied["solutions"], template), encoding="utf-8")
    return copied


def run_sphinx(src, out):
    """sphinx-build -W --keep-going -n (every warning, nitpicky ones too, fails the build); returns the seconds."""
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-n", "-q",
               "-d", str(src.parent / "doctrees"), str(src), str(out)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SiteError(f"sphinx-build failed (warnings are errors):\n{done.stderr[-4000:]}")
    return seconds


class _References(html.parser.HTMLParser):
    """Every href/src of a page, and the ones that load code or style (script src, link href)."""

    def __init__(self):
        super().__init__()
        self.references, self.loaded = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("href", "src"):
            if attrs.get(name):
                self.references.append(attrs[name])
        if tag == "script" and attrs.get("src"):
            self.loaded.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            self.loaded.append(attrs["href"])


def check_site(out, readme_text, notebooks=None):
    """The problems of a built site (a list of strings, empty when it is right).

    A syllabus chapter marked ready (limited to `notebooks` when given) must have its page; every local href/src
    must name an existing file; no script or style sheet may come from another host.
    """
    problems = []
    for row in syllabus(readme_text):
        if row["status"] != "ready":
            continue
        if row["path"] is None:
            problems.append(f"syllabus chapter {row['number']} is ready but links to no lecture")
            continue
        name = pathlib.PurePosixPath(row["path"]).name
        if notebooks is not None and name not in notebooks:
            continue
        if not (out / row["path"]).with_suffix(".html").exists():
            problems.append(f"syllabus chapter {row['number']} has no page {row['path'][:-6]}.html")
    for page in sorted(out.rglob("*.html")):
        parser = _References()
        parser.feed(page.read_text(encoding="utf-8"))
        where = page.relative_to(out).as_posix()
        for reference in parser.loaded:
            if re.match(r"(https?:)?//", reference):
                problems.append(f"{where} loads {reference} from another host (serve it from _static)")
        for reference in parser.references:
            if re.match(r"[a-z][a-z0-9+.-]*:|//|#", reference):  # http:, mailto:, data:, a fragment
                continue
            target = reference.split("#")[0].split("?")[0]
            if target and not (page.parent / target).exists():
                problems.append(f"{where} links to {reference}, which does not exist")
    return problems


def build(out=None, repo_dir=REPO_DIR, notebooks=None, cache=BUILD_DIR):
    """Build the site into `out` (default site/_build/html) and check it; returns Sphinx's seconds.

    Raises SiteError on a Sphinx warning or a problem found by check_site.
    """
    out = pathlib.Path(out) if out is not None else cache / "html"
    modules = node_modules(cache)
    src = out.parent / (out.name + "-sources")
    write_sources(src, repo_dir, notebooks)
    vendor(modules, src / "_static")
    if out.exists():
        shutil.rmtree(out)
    seconds = run_sphinx(src, out)
    problems = check_site(out, (repo_dir / "README.md").read_text(encoding="utf-8"), notebooks)
    if problems:
        raise SiteError("the built site breaks its rules:\n" + "\n".join(problems))
    return seconds


# --- the offline check in a browser ------------------------------------------------------------------------

def offline_check(page, chromium):
    """Open `page` (an .html file) in headless Chromium with every non-file request aborted.

    Returns a dict: typeset (MathJax elements drawn), raw_tex (delimiters left in the text), widgets (widget
    views drawn and visible), blocked (the requests that tried to leave the machine, as (resource type, url)).
    """
    from playwright.sync_api import sync_playwright  # only this check needs playwright

    blocked = []

    def only_files(route):
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            blocked.append((route.request.resource_type, route.request.url))
            route.abort()

    with sync_playwright() as playwright:
        arguments = ["--disable-dev-shm-usage"]  # small /dev/shm in containers
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            arguments.append("--no-sandbox")  # Chromium refuses its sandbox as root
        browser = playwright.chromium.launch(executable_path=str(chromium), headless=True, args=arguments)
        try:
            tab = browser.new_page()
            tab.route("**/*", only_files)
            tab.goto(pathlib.Path(page).resolve().as_uri(), wait_until="load")
            tab.wait_for_selector("mjx-container", timeout=30_000)
            tab.wait_for_selector(".jupyter-widgets", state="visible", timeout=30_000)
            tab.wait_for_timeout(500)  # MathJax typesets the rest of the page
            text = tab.inner_text("article, [role=main], body")
            result = {
                "typeset": tab.locator("mjx-container").count(),
                "raw_tex": [s for s in ("\\(", "\\)", "\\[", "$$") if s in text],
                "widgets": sum(element.is_visible() for element in tab.locator(".jupyter-widgets").all()),
                "blocked": blocked,
            }
        finally:
            browser.close()
    return result


def code_from_elsewhere(result):
    """The blocked requests of an offline_check that were code, style or fonts (the page needs none from elsewhere)."""
    return [url for kind, url in result["blocked"] if kind in ("script", "stylesheet", "font", "xhr", "fetch")]


def find_chromium():
    """$COURSE_CHROMIUM, else a chromium / chromium-browser on the PATH, or None (tests/browser_support.py uses it)."""
    configured = os.environ.get("COURSE_CHROMIUM", "").strip()
    if configured:
        found = shutil.which(configured)
        return pathlib.Path(found) if found else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return pathlib.Path(found)
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description="Build the course's static HTML site from the executed notebooks.")
    parser.add_argument("--out", type=pathlib.Path, default=BUILD_DIR / "html",
                        help="HTML folder (default %(default)s)")
    parser.add_argument("--offline-check", action="store_true",
                        help="then open chapter 01 in headless Chromium offline: math typeset, saved widget drawn")
    args = parser.parse_args(argv)
    try:
        seconds = build(args.out)
    except SiteError as error:
        print(f"site: {error}", file=sys.stderr)
        return 1
    print(f"site built in {seconds:.1f} s (Sphinx): {args.out / 'index.html'}")
    if args.offline_check:
        chromium = find_chromium()
        if chromium is None:
            print("site: --offline-check needs Chromium (apt install chromium, or set COURSE_CHROMIUM)",
                  file=sys.stderr)
            return 1
        result = offline_check(args.out / "notebooks" / "01_convolution.html", chromium)
        print(f"offline: {result['typeset']} formulas typeset, raw TeX left: {result['raw_tex'] or 'none'}, "
              f"{result['widgets']} widgets drawn, {len(result['blocked'])} requests blocked")
        if not result["typeset"] or result["raw_tex"] or not result["widgets"] or code_from_elsewhere(result):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
