"""Shared helpers for the course's real-browser tests (headless Chromium driven by Playwright).

Used by ``tests/test_browser.py`` (JupyterLab and the lecture explorers) and by any other test that needs a
browser, e.g. one of the built site. Import it as ``import browser_support`` (pytest puts ``tests/`` on
``sys.path``, as for ``split_mode``). What it gives:

* ``chromium_or_skip()``: the path of a Chromium executable, or ``pytest.skip`` with a message saying how to
  enable the browser tests; with ``COURSE_BROWSER_TESTS=required`` (set by ``.ci/run``) a missing browser or a
  missing Playwright is a test failure instead. The executable is ``$COURSE_CHROMIUM`` when set, else
  ``chromium``/``chromium-browser`` on the PATH. Playwright's own browser downloads (``playwright install``) are
  not used: Debian's ``chromium`` package works through ``executable_path``.
* ``launch_chromium(playwright, executable)``: a headless browser (``--no-sandbox`` when running as root, as in CI).
* ``artifacts_dir(fallback)``: where screenshots go: ``$COURSE_BROWSER_ARTIFACTS`` when set, else ``fallback``
  (pass pytest's ``tmp_path`` or ``tmp_path_factory.mktemp(...)``).
* ``free_port()``: a TCP port on 127.0.0.1 that was free a moment ago.
* ``JupyterLab(folder)``: a context manager that runs ``jupyter lab`` headless on 127.0.0.1 with a token, serving
  ``folder``, with its own config, data, runtime, settings and workspaces folders (nothing of the user's own
  JupyterLab set-up is read or written), virtual scrolling off (``windowingMode: none``, so that every cell is in
  the page) and no news or update notifications covering the page.

A typical test module::

    import browser_support

    @pytest.fixture(scope="module")
    def browser():
        executable = browser_support.chromium_or_skip()  # skips (or fails in CI) without Chromium or Playwright
        from playwright.sync_api import sync_playwright
        with sync_playwright() as playwright:
            browser = browser_support.launch_chromium(playwright, executable)
            yield browser
            browser.close()
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from course_utils import site

REQUIRED_VARIABLE = "COURSE_BROWSER_TESTS"  # "required": a missing browser fails instead of skipping (CI)
CHROMIUM_VARIABLE = "COURSE_CHROMIUM"  # path of the Chromium executable to use
ARTIFACTS_VARIABLE = "COURSE_BROWSER_ARTIFACTS"  # folder for screenshots
CHROMIUM_NAMES = ("chromium", "chromium-browser")

HOW_TO_ENABLE = (
    "the browser tests need Chromium and Playwright: install Chromium (Debian/Ubuntu: `sudo apt-get install "
    "chromium`) or point COURSE_CHROMIUM at a Chromium or Chrome executable; Playwright comes with "
    "requirements.txt (`playwright install` is not needed). Set COURSE_BROWSER_TESTS=required to make a missing "
    "browser a failure, as CI does."
)

# JupyterLab user settings written into the server's own settings folder.
LAB_SETTINGS = {
    # JupyterLab 4 renders only the cells in view by default; the tests need every cell in the page.
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    # The news and "new version" toasts would cover the page (and ask for the network).
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                         "checkForUpdates": False},
}


def browser_tests_required():
    """True when ``COURSE_BROWSER_TESTS=required``: a missing browser is then a failure, not a skip."""
    return os.environ.get(REQUIRED_VARIABLE, "").strip().lower() == "required"


def _unavailable(reason):
    if browser_tests_required():
        pytest.fail(f"{reason}, and {REQUIRED_VARIABLE}=required; {HOW_TO_ENABLE}", pytrace=False)
    pytest.skip(f"{reason}: {HOW_TO_ENABLE}")


def find_chromium():
    """The Chromium executable to use (``$COURSE_CHROMIUM``, else one on the PATH), or None: one definition, the
    site's (``course_utils.site.find_chromium``), so the site's offline check and these tests pick the same."""
    found = site.find_chromium()
    return str(found) if found else None


def chromium_or_skip():
    """The path of a Chromium executable; skip the test (fail when required) if it or Playwright is missing."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("Playwright is not installed")
    executable = find_chromium()
    if executable is None:
        configured = os.environ.get(CHROMIUM_VARIABLE, "").strip()
        if configured:
            _unavailable(f"{CHROMIUM_VARIABLE}={configured!r} is not an executable file")
        _unavailable(f"no Chromium found (looked for {', '.join(CHROMIUM_NAMES)} on the PATH)")
    return executable


def launch_chromium(playwright, executable):
    """A headless Chromium from ``executable`` (``--no-sandbox`` as root: Chromium refuses its sandbox there)."""
    arguments = ["--disable-dev-shm-usage"]  # small /dev/shm in containers
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        arguments.append("--no-sandbox")
    return playwright.chromium.launch(executable_path=executable, headless=True, args=arguments)


def artifacts_dir(fallback):
    """The folder for screenshots: ``$COURSE_BROWSER_ARTIFACTS`` (created) when set, else ``fallback``."""
    configured = os.environ.get(ARTIFACTS_VARIABLE, "").strip()
    folder = Path(configured) if configured else Path(fallback)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def free_port():
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class JupyterLab:
    """``jupyter lab`` running headless on 127.0.0.1, serving ``folder``; use as a context manager.

    Attributes once started: ``url`` (``http://127.0.0.1:PORT``), ``token``, ``folder``, ``log_path`` (the
    server's output, quoted in errors). ``open_url(relative)`` gives the address of a notebook with the token.
    The kernels it starts run the current Python (``sys.executable``); the environment is this process's
    minus ``MPLBACKEND`` (so that figures are drawn inline, as in a learner's notebook).
    """

    def __init__(self, folder, startup_timeout=90, attempts=3):
        self.folder = Path(folder)
        self.startup_timeout = startup_timeout
        self.attempts = attempts
        self.token = uuid.uuid4().hex
        self.process = None
        self.url = None
        self.home = None
        self.log_path = None

    # ------------------------------------------------------------------ set-up
    def _environment(self):
        environment = dict(os.environ)
        environment.pop("MPLBACKEND", None)  # tests set Agg; a learner's kernel draws inline
        for variable, name in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                               ("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTERLAB_SETTINGS_DIR", "settings"),
                               ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"), ("IPYTHONDIR", "ipython")):
            path = self.home / name
            path.mkdir(exist_ok=True)
            environment[variable] = str(path)
        environment["JUPYTER_PLATFORM_DIRS"] = "1"
        environment["PYTHONUNBUFFERED"] = "1"
        return environment

    def _write_settings(self):
        for relative, values in LAB_SETTINGS.items():
            path = self.home / "settings" / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values, indent=2))

    def _command(self, port):
        command = [
            sys.executable, "-m", "jupyterlab",
            "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.folder}",
            "--ServerApp.terminals_enabled=False",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.news_url=None",  # no announcements feed (offline)
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-root")
        return command

    def _ready(self):
        try:
            with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, OSError):
            return False

    def log(self, tail=4000):
        """The last ``tail`` characters of the server's output."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-tail:]

    def start(self):
        self.home = Path(tempfile.mkdtemp(prefix="course-jupyterlab-"))
        self._write_settings()
        environment = self._environment()
        failures = []
        for attempt in range(self.attempts):  # another process may take the free port before the server binds it
            port = free_port()
            self.url = f"http://127.0.0.1:{port}"
            self.log_path = self.home / f"server-{attempt + 1}.log"
            with open(self.log_path, "w") as log:
                self.process = subprocess.Popen(self._command(port), cwd=self.folder, env=environment,
                                                stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + self.startup_timeout
            while time.monotonic() < deadline and self.process.poll() is None:
                if self._ready():
                    return self
                time.sleep(0.25)
            failures.append(f"attempt {attempt + 1} (port {port}): exit code {self.process.poll()}\n{self.log()}")
            self._stop_process()
        raise RuntimeError("jupyter lab did not start:\n" + "\n".join(failures))

    def open_url(self, relative):
        """The address that opens ``relative`` (a path under ``folder``) in JupyterLab, with the token.

        Each address names a fresh workspace (and asks to reset it): JupyterLab would otherwise restore the tabs of
        the previous page, and the notebooks opened earlier would share the page with this one.
        """
        return f"{self.url}/lab/workspaces/{uuid.uuid4().hex}/tree/{relative}?reset&token={self.token}"

    def api(self, method, path):
        """A call to the server's REST API (``/api/...``); returns the decoded JSON, or None when empty."""
        request = urllib.request.Request(f"{self.url}{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self):
        """Stop every kernel the server runs (a closed page leaves its kernel running)."""
        for kernel in self.api("GET", "/api/kernels"):
            try:
                self.api("DELETE", f"/api/kernels/{kernel['id']}")
            except urllib.error.HTTPError as error:
                if error.code != 404:  # already gone
                    raise

    # ------------------------------------------------------------------ tear-down
    def _stop_process(self):
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()  # jupyter_server shuts its kernels down on SIGTERM
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def stop(self):
        self._stop_process()
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
