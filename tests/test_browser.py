"""The notebooks in a real browser: JupyterLab on 127.0.0.1 with a token, driven by headless Chromium.

- every numbered notebook opens and renders (all its cells, its title, no error dialog, a kernel
  that starts and goes idle), is not marked modified by opening, and saving it (what autosave does)
  leaves `git status` clean;
- on a kernel of another Python patch release (a notebook committed with another
  ``language_info.version``) opening marks the notebook modified, and `make lab`'s pre-save hook
  saves it unchanged all the same;
- a short notebook (01_features with the smoke parameters, about 15 s) is run from the page through
  the Run menu ("Run All Cells"), saved through the File menu, and every code cell then has an
  execution count and no error output;
- the server started the way `make lab` starts it pairs the notebooks with jupytext: saving an
  ``.ipynb`` rewrites its ``.py`` (and a ``.py`` opens as a notebook).

The server works on copies of the notebooks in a temporary git repository (a run writes outputs:
the committed files must stay untouched), started as `make lab` starts it (the pre-save hook), with
its own config, runtime, data and settings directories so a developer's JupyterLab settings play no
part.
Screenshots go to ``artifacts/browser/<notebook>.png``.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and ``selenium``
(the ``dev`` extra). Without them the browser tests skip with the reason, except under CI
(``CI=true``), where they fail: a green CI means the browser really ran.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

from vgcore import workflow
from vgcore.report import outputs

from _ci import DEV_EXTRA, NOTEBOOKS_EXTRA, in_ci, require, unavailable
from _site import build_site
from _smoke_build import ROOT, env

NOTEBOOKS = ROOT / "notebooks"
ARTIFACTS = ROOT / "artifacts" / "browser"
SHORT = "smoke_01_features"  # the notebook run from the page: 01_features with these parameters
OTHER = "other_python_03_variance"  # 03_variance committed with another language_info version
LAB_PRE_SAVE_HOOK = "--ContentsManager.pre_save_hook=vgcore.notebooks.pre_save_hook"  # as `make lab`
SHORT_PARAMETERS = {"profile": "smoke", "dataset": "synthetic", "n_images": 4}

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000")
# Debian's /usr/bin/chromium is a shell wrapper; chromedriver wants the real binary.
CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser", "google-chrome")
KERNEL_IDLE = "Python 3 (ipykernel) | Idle"  # the status bar once the notebook's kernel is up
PAGE_TIMEOUT = 60  # s: JupyterLab loads and a notebook renders
RUN_TIMEOUT = 240  # s: the short notebook runs from the page
BROWSER_FIX = ".ci/run installs chromium, chromium-driver and the dev extra"


def _find(names) -> str | None:
    for name in names:
        path = name if os.path.isabs(name) else shutil.which(name)
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server on 127.0.0.1:<free port> with a random token, on a copy of notebooks/."""

    def __init__(self, base: Path):
        self.base = base
        self.root = base / "root"
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "jupyterlab.log"
        self.root.mkdir(parents=True)
        for path in sorted(NOTEBOOKS.glob("*.py")) + sorted(NOTEBOOKS.glob("*.ipynb")):
            shutil.copy2(path, self.root / path.name)
        self._write_short_notebook()
        self._write_other_python_notebook()
        git = ["git", "-C", str(self.root), "-c", "user.name=t", "-c", "user.email=t@t"]
        subprocess.run([*git, "init", "-q"], check=True)
        subprocess.run([*git, "add", "."], check=True)
        subprocess.run([*git, "commit", "-qm", "the committed notebooks"], check=True)
        for d in ("config/labconfig", "runtime", "data", "ipython", "workspaces",
                  "settings/@jupyterlab/notebook-extension"):
            (base / d).mkdir(parents=True, exist_ok=True)
        # no news toast covering the screenshots
        (base / "config/labconfig/page_config.json").write_text(
            json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
        # render every cell (no virtual scrolling), so that the DOM holds the whole notebook
        (base / "settings/@jupyterlab/notebook-extension/tracker.jupyterlab-settings").write_text(
            json.dumps({"windowingMode": "none"}))

    def _write_short_notebook(self) -> None:
        from papermill.iorw import load_notebook_node
        from papermill.parameterize import parameterize_notebook

        nb = load_notebook_node(str(NOTEBOOKS / "01_features.ipynb"))
        nb = parameterize_notebook(nb, dict(SHORT_PARAMETERS), kernel_name=workflow.KERNEL, language="python")
        nbformat.write(nb, self.root / f"{SHORT}.ipynb")

    def _write_other_python_notebook(self) -> None:
        """03_variance as committed from another Python patch release than the kernel's."""
        nb = nbformat.read(NOTEBOOKS / "03_variance.ipynb", as_version=4)
        nb.metadata["language_info"]["version"] = "3.11.0" if platform.python_version() != "3.11.0" else "3.11.1"
        nbformat.write(nb, self.root / f"{OTHER}.ipynb")
        shutil.copy2(NOTEBOOKS / "03_variance.py", self.root / f"{OTHER}.py")

    def git_status(self, *names: str) -> str:
        paths = [f"{n}.{ext}" for n in names for ext in ("ipynb", "py")]
        return subprocess.run(["git", "-C", str(self.root), "status", "--porcelain", "--", *paths],
                              capture_output=True, text=True, check=True).stdout

    def command(self) -> list[str]:
        return [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
                "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
                f"--LabApp.workspaces_dir={self.base / 'workspaces'}",
                f"--LabApp.user_settings_dir={self.base / 'settings'}",
                "--LabApp.extension_manager=readonly", "--LabApp.default_url=/lab/tree/notebooks",
                LAB_PRE_SAVE_HOOK]

    def start(self) -> None:
        b = self.base
        self.log = open(self.log_path, "w")  # closed in stop()
        self.proc = subprocess.Popen(
            self.command(), cwd=self.root, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            env=env(JUPYTER_CONFIG_DIR=str(b / "config"), JUPYTER_RUNTIME_DIR=str(b / "runtime"),
                    JUPYTER_DATA_DIR=str(b / "data"), IPYTHONDIR=str(b / "ipython"),
                    JUPYTER_PLATFORM_DIRS="1", VGCORE_CACHE=str(b / "cache")))
        deadline = time.monotonic() + PAGE_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited ({self.proc.returncode}):\n{self.read_log()}")
            try:
                self.api("GET", "status")
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"JupyterLab did not answer on {self.url} in {PAGE_TIMEOUT} s:\n{self.read_log()}")

    def api(self, method: str, path: str, body: dict | None = None):
        req = urllib.request.Request(f"{self.url}/api/{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"token {self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def read_log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        try:
            for kernel in self.api("GET", "kernels"):
                self.api("DELETE", f"kernels/{kernel['id']}")
        except OSError:
            pass
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)  # the group this test started (start_new_session)
            self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require("jupyterlab", NOTEBOOKS_EXTRA)
    server = Lab(tmp_path_factory.mktemp("jupyterlab"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable(f"selenium is not installed ({DEV_EXTRA})", BROWSER_FIX)
    chromium = _find([os.environ["VGCORE_CHROMIUM"]] if os.environ.get("VGCORE_CHROMIUM") else CHROMIUM_CANDIDATES)
    driver_path = _find([os.environ.get("VGCORE_CHROMEDRIVER") or "chromedriver", "/usr/bin/chromedriver"])
    if not chromium or not driver_path:
        unavailable("headless Chromium and chromedriver are not installed "
                    "(Debian: apt-get install chromium chromium-driver)", BROWSER_FIX)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(PAGE_TIMEOUT)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


# ---------------------------------------------------------------------------------------------
# the page
# ---------------------------------------------------------------------------------------------

_STATE_JS = r"""
const panel = Array.from(document.querySelectorAll('.jp-NotebookPanel'))
  .find(p => !p.classList.contains('lm-mod-hidden'));
if (!panel) return null;
const prompts = Array.from(panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt'))
  .map(e => e.textContent.trim());
const indicator = document.querySelector('.jp-Notebook-ExecutionIndicator');
return {
  cells: panel.querySelectorAll('.jp-Notebook .jp-Cell').length,
  code_cells: prompts.length,
  prompts: prompts,
  title: (panel.querySelector('.jp-MarkdownCell h1') || {textContent: ''}).textContent,
  // JupyterLab renders errors and stderr alike (mime application/vnd.jupyter.stderr): tell them by text
  errors: Array.from(panel.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'))
    .map(e => e.textContent).filter(t => /Traceback|^\w*(Error|Exception)\b/m.test(t)),
  dialogs: Array.from(document.querySelectorAll('.jp-Dialog')).map(d => d.textContent.slice(0, 300)),
  status: indicator ? indicator.getAttribute('data-status') : null,
  kernel: Array.from(document.querySelectorAll('#jp-main-statusbar .jp-StatusBar-TextItem'))
    .map(e => e.textContent).find(t => / \| \w+$/.test(t)) || null,  // e.g. "Python 3 (ipykernel) | Idle"
  dirty: !!document.querySelector('.lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current.jp-mod-dirty'),
  tab: (document.querySelector('.lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabLabel') || {textContent: ''}).textContent,
};
"""


def page_state(driver) -> dict | None:
    return driver.execute_script(_STATE_JS)


def wait_for(driver, condition, timeout: float, what: str) -> dict:
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = page_state(driver)
        if state and condition(state):
            return state
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; page state: {state}")


def open_notebook(driver, lab: Lab, name: str) -> dict:
    """Open ``<name>.ipynb`` in a fresh workspace and wait until all its cells render and its kernel is idle."""
    expected = len(nbformat.read(lab.root / f"{name}.ipynb", as_version=4).cells)
    driver.get("about:blank")
    for session in lab.api("GET", "sessions"):  # one kernel at a time
        lab.api("DELETE", f"sessions/{session['id']}")
    driver.get(f"{lab.url}/lab/tree/{name}.ipynb?reset&token={lab.token}")
    return wait_for(driver, lambda s: (s["tab"] == f"{name}.ipynb" and s["cells"] == expected and s["status"] == "idle"
                                       and s["kernel"] == KERNEL_IDLE),
                    PAGE_TIMEOUT, f"{name}.ipynb to render its {expected} cells with an idle {KERNEL_IDLE!r}")


def click_menu(driver, menu: str, command: str) -> None:
    """Click ``menu`` in the menu bar, then its item for ``command`` (JupyterLab's data-command)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    item = next(e for e in driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item") if e.text == menu)
    item.click()
    selector = f'.lm-Menu-item[data-command="{command}"]'
    entry = WebDriverWait(driver, 10).until(EC.element_to_be_clickable((By.CSS_SELECTOR, selector)))
    time.sleep(0.3)  # let the menu settle before clicking its item
    entry.click()
    WebDriverWait(driver, 10).until(EC.invisibility_of_element_located((By.CSS_SELECTOR, selector)))


def read_saved(path: Path, n_code: int, timeout: float = 30):
    """The notebook JupyterLab saved, once the file is complete and holds the run (the write may lag)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            nb = nbformat.read(path, as_version=4)
            code = [c for c in nb.cells if c.cell_type == "code"]
            if len(code) == n_code and all(c.execution_count for c in code):
                return nb
        except (ValueError, OSError):  # caught mid-write
            pass
        if time.monotonic() > deadline:
            return nbformat.read(path, as_version=4)  # let the assertions say what is missing
        time.sleep(0.3)


def screenshot(driver, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


# ---------------------------------------------------------------------------------------------
# the tests
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", outputs.NOTEBOOKS)
def test_notebook_renders_in_jupyterlab(browser, lab, name):
    state = open_notebook(browser, lab, name)
    time.sleep(1)  # a dialog (kernel choice, file error) would open just after the kernel starts
    state = page_state(browser)
    shot = screenshot(browser, name)
    assert not state["dialogs"], f"{name}: a dialog is open: {state['dialogs']} (screenshot {shot})"
    assert state["title"].startswith(f"{name[:2]} ·"), f"{name}: title {state['title']!r} (screenshot {shot})"
    assert state["code_cells"] > 0 and not state["errors"], state
    assert all(p == "[ ]:" for p in state["prompts"]), f"{name}: the committed notebook should be unexecuted: {state}"
    assert not state["dirty"], f"{name}: opening it marked it modified (language_info?): screenshot {shot}"
    click_menu(browser, "File", "docmanager:save")  # what autosave does
    wait_for(browser, lambda s: not s["dirty"], 30, "File > Save to finish")
    time.sleep(1)
    assert lab.git_status(name) == "", f"{name}: opening and saving it changed the files:\n{lab.git_status(name)}"


@pytest.mark.slow
def test_another_python_patch_release_does_not_change_a_saved_notebook(browser, lab):
    open_notebook(browser, lab, OTHER)
    time.sleep(1)
    assert page_state(browser)["dirty"], "the kernel's language_info.version differs: JupyterLab marks it modified"
    click_menu(browser, "File", "docmanager:save")
    wait_for(browser, lambda s: not s["dirty"], 30, "File > Save to finish")
    time.sleep(1)
    assert lab.git_status(OTHER) == "", f"the pre-save hook should keep the committed language_info:\n" \
                                        f"{lab.git_status(OTHER)}"


def test_the_browser_test_starts_jupyterlab_as_make_lab_does():
    """Every option `make lab` passes (its dry run, as this user: --allow-root as root) is passed by the
    browser test's server too, so the test starts the lab as a user's `make lab` does."""
    made = subprocess.run(["make", "-n", "lab"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.replace("\\\n", " ")
    line = next(ln for ln in made.splitlines() if " lab " in ln and "jupyter" in ln)
    options = {opt.split("=")[0] for opt in line.split() if opt.startswith("--")}
    assert LAB_PRE_SAVE_HOOK.split("=")[0] in options
    assert ("--allow-root" in options) == (os.geteuid() == 0)
    placeholders = SimpleNamespace(port=0, token="t", root=ROOT, base=ROOT)  # only the option names count
    ours = {opt.split("=")[0] for opt in Lab.command(placeholders) if opt.startswith("--")}
    assert options <= ours, f"make lab passes {sorted(options - ours)}, the browser test does not"


@pytest.mark.slow
def test_short_notebook_runs_from_the_page(browser, lab):
    """01_features on the smoke profile, run with Run > Run All Cells and saved with File > Save."""
    before = open_notebook(browser, lab, SHORT)
    click_menu(browser, "Run", "runmenu:run-all")
    wait_for(browser, lambda s: any(p != "[ ]:" for p in s["prompts"]), 30, "Run All Cells to start")
    done = wait_for(browser, lambda s: s["kernel"] == KERNEL_IDLE and all(p[1:-2].isdigit() for p in s["prompts"]),
                    RUN_TIMEOUT, f"every cell of {SHORT}.ipynb to run")
    assert done["code_cells"] == before["code_cells"]
    shot = screenshot(browser, SHORT)
    assert not done["errors"], f"error output on the page (screenshot {shot})"
    assert not done["dialogs"], f"a dialog is open: {done['dialogs']} (screenshot {shot})"
    counts = [int(p[1:-2]) for p in done["prompts"]]
    assert counts == sorted(counts) and len(set(counts)) == len(counts), f"cells ran out of order: {counts}"

    # save from the page, then read what JupyterLab wrote: the run is on disk, and jupytext paired it
    assert done["dirty"], "the run should have left unsaved changes (the tab's dirty mark)"
    click_menu(browser, "File", "docmanager:save")
    wait_for(browser, lambda s: not s["dirty"], 30, "File > Save to finish")
    nb = read_saved(lab.root / f"{SHORT}.ipynb", done["code_cells"])
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(isinstance(c.execution_count, int) for c in code), [c.execution_count for c in code]
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    text = "".join(o.get("text", "") for c in code for o in c.outputs if o.output_type == "stream")
    assert "samples x" in text and "features ready" in text, text[-2000:]
    assert any(o.output_type == "display_data" and "image/png" in o.data for c in code for o in c.outputs), \
        "the PCA figure was not drawn"
    paired = lab.root / f"{SHORT}.py"
    assert paired.exists() and 'profile = "smoke"' in paired.read_text(), "jupytext did not write the paired .py"
    # the end of the notebook, with the PCA figure
    browser.execute_script("document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell:last-child')"
                           ".scrollIntoView()")
    time.sleep(0.5)
    screenshot(browser, f"{SHORT}_end")


def test_jupyterlab_pairs_ipynb_and_py_through_jupytext(lab):
    """What `make lab` relies on: the server's contents manager is jupytext's (no browser needed)."""
    as_notebook = lab.api("GET", "contents/03_variance.py?type=notebook&content=1")
    assert as_notebook["type"] == "notebook"
    assert as_notebook["content"]["cells"][0]["source"].startswith("# 03 ·")
    model = lab.api("GET", "contents/04_greediness.ipynb?content=1")
    model["content"]["cells"].append(nbformat.v4.new_markdown_cell("Added from the contents API."))
    lab.api("PUT", "contents/04_greediness.ipynb", {"type": "notebook", "format": "json", "content": model["content"]})
    assert "# Added from the contents API." in (lab.root / "04_greediness.py").read_text()
    assert "Added from the contents API." not in (NOTEBOOKS / "04_greediness.py").read_text()


@pytest.mark.slow
def test_a_site_page_shows_its_figure(browser, tmp_path):
    """The site (`make site`) opened in the browser: a notebook page loads and its figures are drawn."""
    from selenium.webdriver.support.ui import WebDriverWait

    require("myst_nb", "the docs extra (pip install -e '.[docs]')")
    site = tmp_path / "html"
    proc = build_site(site)
    assert proc.returncode == 0, proc.stderr[-4000:]
    browser.get((site / "index.html").as_uri())  # the redirect to docs/index.html
    WebDriverWait(browser, PAGE_TIMEOUT).until(lambda d: d.current_url.endswith("docs/index.html"))
    browser.get((site / "figures" / "demo" / "notebooks" / "03_variance.html").as_uri())
    widths = browser.execute_script(
        "return Array.from(document.querySelectorAll('img')).filter(i => i.src.includes('/_images/'))"
        ".map(i => i.complete ? i.naturalWidth : 0);")
    assert widths and min(widths) > 100, f"figures not drawn: natural widths {widths}"
    assert "VARIANCE" in browser.title
    screenshot(browser, "site_03_variance")


def test_browser_check_cannot_silently_skip_in_ci():
    """Under CI the browser tools must be there (the fixtures fail rather than skip)."""
    if not in_ci():
        pytest.skip("only checked under CI=true")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.fail("selenium missing under CI")
    assert _find(CHROMIUM_CANDIDATES), "chromium missing under CI"
    assert _find(["chromedriver", "/usr/bin/chromedriver"]), "chromedriver missing under CI"
