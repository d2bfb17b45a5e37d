"""The lecture explorers in a real browser: JupyterLab, headless Chromium, Playwright.

One ``jupyter lab`` server for the module (``browser_support.JupyterLab``: 127.0.0.1, a token, its own
settings), serving copies of the lecture notebooks with their outputs cleared; one fresh page per notebook.
For each explorer the test waits for the kernel to be idle, runs the cells the explorer needs (the set-up
cell, then the explorer's cell) by selecting each and pressing Ctrl+Enter, waits for the widget and its
picture, then moves each control as a learner would (arrow keys on a slider, a choice in a dropdown) and
asserts that the explorer's text says what the move did and that its picture is a new image. A screenshot
of the explorer after each move goes to ``$COURSE_BROWSER_ARTIFACTS`` (default: pytest's temporary folder).

Which cells run: the explorer's cell carries ``{"course": {"explorer": "<name>"}}`` in its metadata, and each
cell it needs carries ``{"course": {"explorer_setup": true}}`` (or the explorer's name, or a list of names).

Without Chromium these tests are skipped with a message saying how to enable them; with
``COURSE_BROWSER_TESTS=required`` (CI) a missing browser fails them.
"""
import re
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

import browser_support

REPO_DIR = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO_DIR / "notebooks"

KERNEL_READY_TIMEOUT = 120  # s: page loaded, kernel started and idle
CELL_TIMEOUT = 180  # s: one set-up cell (chapter 14 builds a network)
DROPPED_AFTER = 15  # s: a cell still without "[*]" this long after Ctrl+Enter was dropped; run it again once
MOVE_TIMEOUT = 60  # s: one move redrawn


@dataclass(frozen=True)
class Move:
    """One action on an explorer's control and what its text must say afterwards."""

    control: str  # the control's description (its label in the page)
    action: str  # "ArrowRight"/"ArrowLeft" (a slider), "select:<option>" or "select-index:<i>" (a dropdown)
    expect: str  # text the explorer shows afterwards; "{value}" is the control's new value as the page shows it


@dataclass(frozen=True)
class Explorer:
    name: str  # the tag: cell metadata {"course": {"explorer": name}}
    notebook: str  # file name in notebooks/
    moves: tuple


EXPLORERS = [
    Explorer("conv_geometry", "01_convolution.ipynb", (
        Move("stride s", "ArrowRight", "stride {value}, padding 1, dilation 1 → output 3×3"),
        Move("kernel k", "ArrowLeft", "kernel {value}×{value}, stride 3"),
    )),
    Explorer("receptive_field", "02_pooling.ipynb", (
        Move("preset", "select:dilated 3x3, d = 1, 2, 4", "receptive field 15×15"),
        Move("dilation 3", "ArrowLeft", "receptive field 13×13"),
    )),
    Explorer("activation", "03_activations_normalization.ipynb", (
        Move("activation", "select:tanh", "tanh at x = -1.00"),
        Move("x", "ArrowRight", "tanh at x = {value}"),
    )),
    Explorer("grad_cam", "14_visualising_cnns.ipynb", (
        Move("layer", "select:blocks.10", "layer blocks.10 (14x14 feature map)"),
        Move("class", "select-index:1", "class {value}"),
    )),
    Explorer("augmentation", "15_training_recipes.ipynb", (
        Move("augmentation", "select:rotation", "RandomRotation(degrees="),
        Move("seed", "ArrowRight", "seed {value}"),
    )),
]


def _wants(cell, explorer):
    """True when ``cell`` is tagged as a set-up cell of ``explorer``."""
    setup = cell.metadata.get("course", {}).get("explorer_setup")
    return setup is True or setup == explorer.name or (isinstance(setup, list) and explorer.name in setup)


def cells_to_run(notebook, explorer):
    """Indices of the cells to run, set-up cells first and the explorer's cell last; None when there is none."""
    code = [(i, cell) for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"]
    tagged = [i for i, cell in code if cell.metadata.get("course", {}).get("explorer") == explorer.name]
    if not tagged:
        return None
    return [i for i, cell in code if _wants(cell, explorer) and i < tagged[0]] + tagged[:1]


def clean_copy(source, folder):
    """A copy of ``source`` in ``folder`` without outputs or saved widget state (the test must draw them)."""
    notebook = nbformat.read(source, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    notebook.metadata.pop("widgets", None)
    nbformat.write(notebook, folder / source.name)
    return notebook


@pytest.fixture(scope="module")
def browser():
    executable = browser_support.chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = browser_support.launch_chromium(playwright, executable)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def lab(browser, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lab-notebooks")
    with browser_support.JupyterLab(folder) as server:
        yield server


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    return browser_support.artifacts_dir(tmp_path_factory.mktemp("browser-artifacts"))


# --------------------------------------------------------------------------- page helpers

class NotebookPage:
    """A JupyterLab page with one notebook open; failures quote what the page shows."""

    def __init__(self, page, lab, notebook, name):
        self.page, self.lab, self.notebook, self.name = page, lab, notebook, name

    def fail(self, message, cell=None):
        status = " / ".join(self.kernel_status())
        shown = ""
        if cell is not None:
            shown = f"\n--- the cell's output in the page:\n{self.output_text(cell)[-3000:]}"
        body = self.page.locator("body").inner_text()[-2000:]
        pytest.fail(f"{self.name}: {message}\nkernel status: {status}{shown}\n--- the page's text (end):\n{body}\n"
                    f"--- jupyter lab's log (end):\n{self.lab.log(2000)}", pytrace=False)

    def kernel_status(self):
        """The status bar's kernel items, e.g. ["Python 3 (ipykernel) | Idle"]."""
        return self.page.evaluate("""() => Array.from(document.querySelectorAll('.jp-StatusBar-TextItem'))
                                     .map(e => e.textContent).filter(t => t.includes(' | '))""")

    def cell(self, index):
        return self.page.locator(".jp-Notebook .jp-Cell").nth(index)

    def output_text(self, cell):
        outputs = cell.locator(".jp-Cell-outputArea")
        try:
            return outputs.first.inner_text(timeout=5000) if outputs.count() else ""
        except Exception as error:  # the page may be gone: say so instead of hiding the first failure
            return f"(could not read the output: {error})"

    def wait_for_kernel_idle(self, timeout=KERNEL_READY_TIMEOUT):
        """Every cell in the page and the kernel idle: a cell run before the kernel connects is dropped."""
        deadline = time.monotonic() + timeout
        expected = len(self.notebook.cells)
        while time.monotonic() < deadline:
            cells = self.page.locator(".jp-Notebook .jp-Cell").count()
            if cells == expected and any(text.endswith("| Idle") for text in self.kernel_status()):
                return
            time.sleep(0.25)
        self.fail(f"the kernel was not idle with all {expected} cells shown after {timeout} s "
                  f"({self.page.locator('.jp-Notebook .jp-Cell').count()} cells in the page)")

    def prompt(self, cell):
        return cell.locator(".jp-InputPrompt").inner_text().strip()

    def run_cell(self, index, timeout=CELL_TIMEOUT):
        """Select code cell ``index``, press Ctrl+Enter, wait for its execution count; run it again if dropped."""
        cell = self.cell(index)
        for attempt in (1, 2):
            self.wait_for_kernel_idle()
            cell.locator(".jp-InputPrompt").click()  # selects the cell, command mode
            self.page.keyboard.press("Control+Enter")  # run the selected cell, stay on it
            started = time.monotonic()
            while time.monotonic() - started < timeout:
                prompt = self.prompt(cell)
                if re.fullmatch(r"\[\d+\]:", prompt):
                    break
                if prompt != "[*]:" and time.monotonic() - started > DROPPED_AFTER:
                    break  # never queued: dropped
                time.sleep(0.25)
            else:
                self.fail(f"cell {index} still runs after {timeout} s", cell)
            if re.fullmatch(r"\[\d+\]:", self.prompt(cell)):
                break
        else:
            self.fail(f"cell {index} did not run after two tries (its prompt: {self.prompt(cell)!r})", cell)
        errors = cell.locator('.jp-Cell-outputArea > .jp-OutputArea-child > .jp-OutputArea-output'
                              '[data-mime-type="application/vnd.jupyter.stderr"]')
        traceback = [text for text in errors.all_inner_texts() if "Traceback" in text or "Error" in text]
        if traceback:
            self.fail(f"cell {index} raised:\n{traceback[0][-3000:]}", cell)
        return cell


class ExplorerInPage:
    """The explorer widget in the output of its cell."""

    def __init__(self, notebook_page, cell, index):
        self.notebook_page, self.cell, self.index = notebook_page, cell, index
        self.page = notebook_page.page
        self.box = cell.locator(".jp-OutputArea .widget-vbox").first

    def wait_until_drawn(self):
        try:
            self.box.wait_for(timeout=MOVE_TIMEOUT * 1000)
            self.box.locator("img").first.wait_for(timeout=MOVE_TIMEOUT * 1000)
        except Exception as error:  # playwright's TimeoutError: say what the page shows
            self.notebook_page.fail(f"the explorer of cell {self.index} did not appear with a picture: {error}",
                                    self.cell)

    def text(self):
        return self.box.inner_text()

    def images(self):
        return self.box.locator("img").evaluate_all("images => images.map(image => image.src)")

    def control(self, description):
        label = self.page.locator("label.widget-label", has_text=re.compile(rf"^\s*{re.escape(description)}\s*$"))
        found = self.box.locator(".widget-slider, .widget-dropdown").filter(has=label)
        if found.count() != 1:
            self.notebook_page.fail(f"expected one control labelled {description!r}; found {found.count()}",
                                    self.cell)
        return found.first

    def move(self, move):
        """Do ``move``; return the control's new value as the page shows it (readout or chosen option)."""
        control = self.control(move.control)
        if move.action.startswith("Arrow"):
            handle = control.locator(".noUi-handle")
            before = handle.get_attribute("aria-valuenow")
            handle.focus()
            handle.press(move.action)
            deadline = time.monotonic() + 10
            while handle.get_attribute("aria-valuenow") == before and time.monotonic() < deadline:
                time.sleep(0.1)
            if handle.get_attribute("aria-valuenow") == before:
                self.notebook_page.fail(f"{move.action} on slider {move.control!r} did not move it from {before}",
                                        self.cell)
            readout = control.locator(".widget-readout").inner_text().strip()
            return readout.replace("\u2212", "-")  # the readout writes a minus sign, Python's text a hyphen
        select = control.locator("select")
        if move.action.startswith("select-index:"):
            select.select_option(index=int(move.action.split(":", 1)[1]))
        else:
            select.select_option(label=move.action.split(":", 1)[1])
        chosen = " ".join(select.evaluate("element => element.options[element.selectedIndex].text").split())
        return re.sub(r" \([0-9.]+\)$", "", chosen)  # "tabby (0.42)" -> "tabby": the class menu shows p

    def move_and_check(self, move, screenshot):
        text_before, images_before = self.text(), self.images()
        value = self.move(move)
        expected = move.expect.format(value=value)
        deadline = time.monotonic() + MOVE_TIMEOUT
        while time.monotonic() < deadline:
            text, images = self.text(), self.images()
            if expected in text and text != text_before and images and images != images_before:
                self.cell.screenshot(path=str(screenshot))
                return
            time.sleep(0.25)
        self.cell.screenshot(path=str(screenshot))
        what = []
        if expected not in text:
            what.append(f"the text does not contain {expected!r}")
        if text == text_before:
            what.append("the text did not change")
        if not images or images == images_before:
            what.append("no new picture was drawn")
        self.notebook_page.fail(f"after {move.action} on {move.control!r} (value {value!r}): {'; '.join(what)} "
                                f"within {MOVE_TIMEOUT} s (screenshot: {screenshot})", self.cell)


# --------------------------------------------------------------------------- the test

@pytest.mark.parametrize("explorer", EXPLORERS, ids=[explorer.name for explorer in EXPLORERS])
def test_explorer_reacts_to_its_controls_in_jupyterlab(explorer, request):
    source = NOTEBOOKS / explorer.notebook
    notebook = nbformat.read(source, as_version=4)
    indices = cells_to_run(notebook, explorer)
    assert indices, f"notebooks/{explorer.notebook} has no cell tagged {{'course': {{'explorer': '{explorer.name}'}}}}"
    browser, lab, artifacts = (request.getfixturevalue(name) for name in ("browser", "lab", "artifacts"))
    clean_copy(source, lab.folder)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        page.goto(lab.open_url(explorer.notebook))
        in_page = NotebookPage(page, lab, notebook, explorer.notebook)
        in_page.wait_for_kernel_idle()
        for index in indices:
            cell = in_page.run_cell(index)
        widget = ExplorerInPage(in_page, cell, indices[-1])
        widget.wait_until_drawn()
        cell.screenshot(path=str(artifacts / f"{explorer.name}-0-start.png"))
        for number, move in enumerate(explorer.moves, start=1):
            slug = re.sub(r"[^a-z0-9]+", "-", move.control.lower()).strip("-")
            widget.move_and_check(move, artifacts / f"{explorer.name}-{number}-{slug}.png")
    finally:
        context.close()
        lab.shutdown_kernels()


def test_every_explorer_finds_its_cells_in_its_lecture():
    """The cells each explorer runs exist in the lecture (a renamed marker or a lost tag shows here, no browser)."""
    for explorer in EXPLORERS:
        notebook = nbformat.read(NOTEBOOKS / explorer.notebook, as_version=4)
        indices = cells_to_run(notebook, explorer)
        assert indices, f"{explorer.notebook}: no cell tagged {{'course': {{'explorer': {explorer.name!r}}}}}"
        assert indices == sorted(indices), f"{explorer.notebook}: the set-up cells must come before the explorer"
        assert all(notebook.cells[i].cell_type == "code" for i in indices)
