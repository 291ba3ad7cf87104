"""Run chapter 02 in JupyterLab the way a reader does, in headless Chromium (`make lab-check`).

Papermill (`make study`, `make test`) proves that the chapters execute; it does not prove that
they work in the place a reader meets them: JupyterLab in a browser, started as `make lab`
starts it. This script is that check, on chapter 02 (the loss derivation) in the smoke profile:

1. Debian's Chromium and its driver are installed (/usr/bin/chromium, /usr/bin/chromedriver).
2. A copy of the chapter with ``profile = "smoke"`` in its ``parameters`` cell and no stored
   outputs is written to results/lab-check/ (results/ is not committed).
3. JupyterLab starts from .venv on a free port with a random token, the repository's
   settings override (notebooks/lab-overrides.json, which turns off the "official Jupyter
   news" prompt) and fresh user settings and workspaces, so that what the browser shows
   depends on the repository alone. It is always stopped at the end.
4. Selenium drives headless Chromium: open the notebook, wait for its kernel to be idle, open
   the Run menu and click "Run All Cells", wait until every code cell has an execution count
   and the kernel is idle again.
5. No output is an error (a traceback; warnings on stderr are fine), no news prompt shows, and
   at least one figure is rendered.
6. Screenshots go to results/lab-check/: the page after opening, the page after the run, then
   each output area holding a figure or a widget, numbered in that order.

A step that goes wrong ends the script with one line on stderr and a non-zero exit: 2 when
Chromium is missing (the line says how to install it), 1 otherwise. It is a script, not a
pytest test (pytest collects only test_*.py).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

import nbformat

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from selenium.webdriver.remote.webdriver import WebDriver

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv"
CHAPTER = REPO / "notebooks" / "02_loss_derivation.ipynb"
OVERRIDES = REPO / "notebooks" / "lab-overrides.json"
LAB_SETTINGS = VENV / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
OUT = REPO / "results" / "lab-check"
COPY = OUT / CHAPTER.name

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_CHROMIUM = "apt-get install -y chromium chromium-driver"
# 4.52.0 needs certifi>=2026.10.23, which the package index this project installs from does not
# have yet; 4.51.0 installs with the certifi that requirements.txt brings.
SELENIUM = "selenium==4.51.0"
CHROME_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1600,1200",
]

START_TIMEOUT = 120  # s: JupyterLab answering on its port; the notebook open with an idle kernel
RUN_TIMEOUT = 600  # s: Run All Cells finished (the smoke profile needs well under a minute)
NEWS_PROMPT = "Jupyter news"  # in the toast JupyterLab shows unless fetchNews is set
# A traceback as JupyterLab renders an error output (on stderr, like warnings): IPython's
# header, its "Cell In[n], line m" (also for a SyntaxError), or a bare "SomeError: message".
TRACEBACK = re.compile(
    r"Traceback \(most recent call last\)|^\s*Cell In\[\d+\], line \d+"
    r"|^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)(:|$)",
    re.MULTILINE,
)
STDERR = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'


class CheckFailed(Exception):
    """One step went wrong; the message is the one line the script ends with."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- 1. the browser is there


def require_chromium() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        raise CheckFailed(f"{', '.join(missing)} missing; install with: {INSTALL_CHROMIUM}", 2)


def import_selenium():
    """The selenium package, installed into .venv first when it is missing."""
    if Path(sys.prefix).resolve() != VENV.resolve():
        raise CheckFailed(f"run with {VENV}/bin/python (make lab-check), not {sys.executable}")
    try:
        return importlib.import_module("selenium.webdriver")
    except ImportError:
        print(f"installing {SELENIUM} into .venv", flush=True)
        pip = subprocess.run([str(VENV / "bin" / "pip"), "install", "--quiet", SELENIUM],
                             capture_output=True, text=True)
        if pip.returncode != 0:
            last = (pip.stderr.strip().splitlines() or ["no output"])[-1]
            raise CheckFailed(f"pip install {SELENIUM} failed: {last}") from None
        importlib.invalidate_caches()
        return importlib.import_module("selenium.webdriver")


# ---------------------------------------------------------------- 2. the smoke copy


def write_smoke_copy() -> int:
    """Copy the chapter with profile "smoke" and no stored outputs; returns its code cells."""
    nb = nbformat.read(CHAPTER, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if len(params) != 1:
        raise CheckFailed(f"{CHAPTER.name}: {len(params)} cells tagged 'parameters', expected 1")
    source, n = re.subn(r"^profile\s*=.*$", 'profile = "smoke"  # set by tests/lab_check.py',
                        params[0].source, flags=re.MULTILINE)
    if n == 0:
        raise CheckFailed(f"{CHAPTER.name}: no 'profile = ...' line in the parameters cell")
    params[0].source = source
    code = [c for c in nb.cells if c.cell_type == "code"]
    for cell in code:  # what the screenshots show must come from this run
        cell.outputs, cell.execution_count = [], None
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.png"):
        old.unlink()
    nbformat.write(nb, COPY)
    return len(code)


# ---------------------------------------------------------------- 3. JupyterLab


def ensure_settings_override() -> None:
    """make lab's settings override (no news prompt) in .venv, as the Makefile installs it."""
    wanted = json.loads(OVERRIDES.read_text())
    if not LAB_SETTINGS.exists():
        LAB_SETTINGS.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(OVERRIDES, LAB_SETTINGS)
    installed = json.loads(LAB_SETTINGS.read_text())
    for plugin, settings in wanted.items():
        if any(installed.get(plugin, {}).get(k) != v for k, v in settings.items()):
            raise CheckFailed(f"{LAB_SETTINGS} differs from {OVERRIDES.name} on {plugin}; "
                              f"copy it over (make lab does)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lab_is_up(port: int, token: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}",
                                    timeout=5) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def jupyter_lab(scratch: Path) -> Iterator[tuple[int, str]]:
    """JupyterLab on a free port as `make lab` runs it; yields (port, token); always stops it."""
    port, token = free_port(), secrets.token_hex(24)
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(scratch / "user-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(scratch / "workspaces")}
    command = [str(VENV / "bin" / "jupyter"), "lab", "--no-browser", "--ip=127.0.0.1",
               f"--port={port}", "--ServerApp.port_retries=0", f"--ServerApp.token={token}",
               f"--ServerApp.root_dir={REPO}"] + (["--allow-root"] if os.geteuid() == 0 else [])
    log = (OUT / "jupyterlab.log").open("w")
    server = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        wait_for(lambda: server.poll() is not None or lab_is_up(port, token), START_TIMEOUT,
                 "JupyterLab to answer on its port")
        if server.poll() is not None:
            raise CheckFailed(f"JupyterLab exited with {server.returncode}; see {log.name}")
        yield port, token
    finally:
        stop_lab(server, port, token)
        log.close()


def stop_lab(server: subprocess.Popen, port: int, token: str) -> None:
    """Shut down the server (and so its kernels) through its API, then by signal if need be."""
    if server.poll() is None:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/shutdown", method="POST",
                                         headers={"Authorization": f"token {token}"})
        try:
            urllib.request.urlopen(request, timeout=10).close()
            server.wait(timeout=20)
        except (urllib.error.URLError, OSError, subprocess.TimeoutExpired):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if server.poll() is None:
                    os.killpg(server.pid, sig)
                    try:
                        server.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        pass


# ---------------------------------------------------------------- 4. the browser


@contextmanager
def chromium(webdriver, scratch: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*CHROME_FLAGS, f"--user-data-dir={scratch / 'chromium'}"]:
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    try:
        driver = webdriver.Chrome(options=options, service=service)
    except Exception as error:  # selenium's errors carry a multi-line message
        raise CheckFailed(f"Chromium did not start: {str(error).strip().splitlines()[0]}") from None
    try:
        driver.set_window_size(1600, 1200)
        driver.set_page_load_timeout(START_TIMEOUT)
        yield driver
    finally:
        driver.quit()


def wait_for(ready: Callable[[], object], timeout: float, what: str) -> object:
    """Poll ready() once a second until it returns something true; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = ready()
        if value:
            return value
        if time.monotonic() > deadline:
            raise CheckFailed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(1)


# The notebook as a reader sees it: each code cell's prompt ("[ ]", "[*]", "[3]"), the kernel
# status of the toolbar's execution indicator, any dialog, any news toast.
NOTEBOOK_STATE = """
const panel = document.querySelector('.jp-NotebookPanel');
const dialog = document.querySelector('.jp-Dialog');
const news = [...document.querySelectorAll('.jp-Notification-Toast, .Toastify__toast')]
  .map(t => t.innerText).filter(t => t.includes(arguments[0]));
if (!panel) return {opened: false, dialog: dialog && dialog.innerText, news};
const indicator = panel.querySelector('.jp-Notebook-ExecutionIndicator');
return {
  opened: true,
  prompts: [...panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]
    .map(p => p.textContent.trim()),
  kernel: indicator ? indicator.dataset.status : null,
  dialog: dialog && dialog.innerText,
  news,
};
"""


def notebook_state(driver: WebDriver) -> dict:
    state = driver.execute_script(NOTEBOOK_STATE, NEWS_PROMPT)
    if state["dialog"]:
        raise CheckFailed(f"unexpected dialog: {' '.join(state['dialog'].split())[:200]}")
    if state["news"]:
        raise CheckFailed(f"the news prompt shows: {' '.join(state['news'][0].split())[:200]}")
    return state


def open_notebook(driver: WebDriver, port: int, token: str, code_cells: int) -> None:
    path = COPY.relative_to(REPO).as_posix()
    driver.get(f"http://127.0.0.1:{port}/lab/tree/{path}?token={token}")

    def ready() -> bool:
        state = notebook_state(driver)
        return (state["opened"] and len(state["prompts"]) == code_cells
                and state["kernel"] == "idle")

    wait_for(ready, START_TIMEOUT, f"{COPY.name} open with an idle kernel")


def run_all_cells(driver: WebDriver, by) -> None:
    """Open the Run menu of the menu bar and click "Run All Cells", as a reader does."""
    menus = driver.find_elements(by.CSS_SELECTOR, ".lm-MenuBar-item")
    run_menu = [m for m in menus if m.text.strip() == "Run"]
    if not run_menu:
        raise CheckFailed(f"no Run menu in the menu bar ({[m.text for m in menus]})")
    run_menu[0].click()

    def run_all_item() -> list:
        items = driver.find_elements(by.CSS_SELECTOR, ".lm-Menu-item:not(.lm-mod-disabled)")
        return [i for i in items if i.is_displayed() and i.text.startswith("Run All Cells")]

    wait_for(run_all_item, 10, 'an enabled "Run All Cells" in the Run menu')[0].click()


def wait_until_run(driver: WebDriver, code_cells: int) -> list[str]:
    """Wait for every code cell to have a count and the kernel to be idle; the prompts.

    An error stops Run All Cells with the later cells unrun, so an idle kernel with no cell
    running and an error shown also ends the wait (the error is reported next)."""
    started = time.monotonic()

    def finished() -> list[str] | None:
        state = notebook_state(driver)
        prompts = state["prompts"]
        if len(prompts) != code_cells or state["kernel"] != "idle" or "[*]:" in prompts:
            return None
        counted = all(re.fullmatch(r"\[\d+\]:", p) for p in prompts)
        # a moment's grace so an idle kernel before the first cell starts is not taken as done
        if counted or (time.monotonic() - started > 5 and error_outputs(driver)):
            return prompts
        return None

    return wait_for(finished, RUN_TIMEOUT, "Run All Cells to finish")


# ---------------------------------------------------------------- 5. what the reader sees

OUTPUTS = """
const cells = [...document.querySelectorAll('.jp-NotebookPanel .jp-Cell')];
return cells.map((cell, i) => {
  const area = cell.querySelector('.jp-Cell-outputArea');
  const imgs = area ? [...area.querySelectorAll('.jp-OutputArea-output img')] : [];
  return {
    cell: i + 1,
    images: imgs.map(img => [img.naturalWidth, img.naturalHeight, img.width, img.height]),
    widgets: area ? [...area.querySelectorAll('.jupyter-widgets')]  // outermost widgets
      .filter(w => !w.parentElement.closest('.jupyter-widgets')).length : 0,
    sliders: area ? area.querySelectorAll('.widget-slider').length : 0,
    stderr: area ? [...area.querySelectorAll(arguments[0])].map(o => o.textContent) : [],
  };
}).filter(o => o.images.length || o.widgets || o.stderr.length);
"""


def outputs(driver: WebDriver) -> list[dict]:
    """Per cell (1-based, markdown cells counted) that shows a figure, a widget or stderr."""
    return driver.execute_script(OUTPUTS, STDERR)


def error_outputs(driver: WebDriver) -> list[tuple[int, str]]:
    """(cell, last line of the traceback) for each error output shown."""
    return [(o["cell"], text.strip().splitlines()[-1] if text.strip() else "error")
            for o in outputs(driver) for text in o["stderr"] if TRACEBACK.search(text)]


def check_outputs(shown: list[dict], prompts: list[str], errors: list[tuple[int, str]]) -> None:
    if errors:
        cell, line = errors[0]
        raise CheckFailed(f"cell {cell} shows an error: {line[:200]}"
                          + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))
    unrun = [i + 1 for i, p in enumerate(prompts) if not re.fullmatch(r"\[\d+\]:", p)]
    if unrun:
        raise CheckFailed(f"code cells {unrun} have no execution count after Run All Cells")
    broken = [o["cell"] for o in shown for natural in o["images"] if natural[0] == 0]
    if broken:
        raise CheckFailed(f"figures in cells {broken} did not load")
    if not any(o["images"] for o in shown):
        raise CheckFailed("no figure rendered (no img in any output area)")


# ---------------------------------------------------------------- 6. screenshots


def screenshot(driver: WebDriver, name: str, written: list[Path]) -> None:
    path = OUT / f"{len(written) + 1:02d}_{name}.png"
    if not driver.save_screenshot(str(path)):
        raise CheckFailed(f"could not write {path}")
    written.append(path)


def output_screenshots(driver: WebDriver, by, shown: list[dict], written: list[Path]) -> None:
    """An element screenshot of each output area holding a figure or a widget, in view."""
    cells = driver.find_elements(by.CSS_SELECTOR, ".jp-NotebookPanel .jp-Cell")
    for o in shown:
        if not (o["images"] or o["widgets"]):
            continue
        area = cells[o["cell"] - 1].find_element(by.CSS_SELECTOR, ".jp-Cell-outputArea")
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", area)
        time.sleep(0.5)  # content-visibility: the browser paints the area once it is in view
        kind = "widget" if o["widgets"] else "figure"
        path = OUT / f"{len(written) + 1:02d}_cell{o['cell']:02d}_{kind}.png"
        if not area.screenshot(str(path)):
            raise CheckFailed(f"could not write {path}")
        written.append(path)


# ---------------------------------------------------------------- the check


def main() -> int:
    started = time.monotonic()
    written: list[Path] = []
    require_chromium()
    webdriver = import_selenium()
    by = importlib.import_module("selenium.webdriver.common.by").By
    code_cells = write_smoke_copy()
    ensure_settings_override()
    with tempfile.TemporaryDirectory(prefix="lab-check-") as scratch, \
            jupyter_lab(Path(scratch)) as (port, token), \
            chromium(webdriver, Path(scratch)) as driver:
        try:
            open_notebook(driver, port, token, code_cells)
            screenshot(driver, "opened", written)
            run_started = time.monotonic()
            run_all_cells(driver, by)
            prompts = wait_until_run(driver, code_cells)
            run_seconds = time.monotonic() - run_started
            time.sleep(1)  # let the last figure load before the screenshot
            notebook_state(driver)  # still no dialog, no news prompt
            screenshot(driver, "after_run", written)
            shown = outputs(driver)
            output_screenshots(driver, by, shown, written)
            check_outputs(shown, prompts, error_outputs(driver))
        except Exception:
            with suppress(Exception):  # the page as it was, when the browser still answers
                screenshot(driver, "failed", written)
            raise
        finally:
            files = [COPY, *written, OUT / "jupyterlab.log"]
            print("written:", *[p.relative_to(REPO) for p in files], sep="\n  ")
    figures = sum(len(o["images"]) for o in shown)
    widgets = sum(o["widgets"] for o in shown)
    sliders = sum(o["sliders"] for o in shown)
    warnings = sum(len(o["stderr"]) for o in shown)
    print(f"lab-check passed: {len(prompts)} code cells run, {figures} figures, {widgets} widgets "
          f"({sliders} sliders), {warnings} stderr outputs without a traceback; "
          f"run {run_seconds:.0f} s, total {time.monotonic() - started:.0f} s")
    return 0


def run() -> int:
    """main() with each failure turned into one line on stderr and an exit status."""
    try:
        return main()
    except CheckFailed as failure:
        print(f"lab-check FAILED: {failure}", file=sys.stderr)
        return failure.code
    except Exception as error:  # selenium's own errors: their first line is enough
        first = (str(error).strip().splitlines() or [""])[0]
        print(f"lab-check FAILED: {type(error).__name__}: {first}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(run())
