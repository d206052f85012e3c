"""Lesson 06 in a real JupyterLab, driven by headless Chromium: run the panel cell, click Run, move the KL slider,
click Run again, and check that the figure redraws with both runs on it (the legend under it names both curves) and
the readout shows the new KL coefficient.
Set RLHF_NB_BROWSER_SCREENSHOT=path.png to also save a picture of the panel when it passes.

Skipped when /usr/bin/chromium (or the playwright package) is missing, unless RLHF_NB_REQUIRE_BROWSER=1 (`make
test-browser`), which turns the skip into a failure. Works on a temp copy of notebooks/ with temp Jupyter dirs, so it
never touches the committed notebook or your Jupyter settings. On failure: runs/browser_test_failure.png.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from rlhf_nb.course.experiments import LESSON_RUN

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "06_training_loop.ipynb"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
FAILURE_SHOT = ROOT / "runs" / "browser_test_failure.png"
RUN_TIMEOUT_MS = 180_000  # a panel run trains 100 steps (about 13 s, more on a loaded machine); a cold disk slows imports

pytestmark = pytest.mark.browser


def _require_browser():
    """Skip with the reason, or fail with it when RLHF_NB_REQUIRE_BROWSER=1."""
    reason = None
    if not Path(CHROMIUM).exists():
        reason = f"{CHROMIUM} not found (Debian: apt-get install -y chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "the playwright package is not installed (pip install playwright; no browser download needed)"
    if reason:
        if os.environ.get("RLHF_NB_REQUIRE_BROWSER") == "1":
            pytest.fail(f"RLHF_NB_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 over a temp copy of notebooks/, with the venv's kernel as `rlhf_nb`."""
    _require_browser()
    root = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    env = {**os.environ,
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTER_DATA_DIR": str(tmp_path / "data"), "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"), "TOKENIZERS_PARALLELISM": "false",
           "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    py = sys.executable  # the venv's python: the kernel below must be the one that has rlhf_nb installed
    # the notebook's kernelspec is `rlhf_nb`; --user installs into the temp JUPYTER_DATA_DIR, shadowing any other
    subprocess.run([py, "-m", "ipykernel", "install", "--user", "--name", "rlhf_nb", "--display-name",
                    "Python (rlhf_nb)"], env=env, check=True, capture_output=True)
    subprocess.run([py, "-m", "jupyter", "labextension", "disable", "--level=user",
                    "@jupyterlab/apputils-extension:announcements"], env=env, check=True, capture_output=True)
    port, token = _free_port(), secrets.token_hex(16)
    log = open(tmp_path / "lab.log", "wb")
    cmd = [py, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=0"]
    if os.geteuid() == 0:  # containers and CI often run as root; jupyter refuses without this
        cmd.append("--allow-root")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"jupyter lab did not start:\n{(tmp_path / 'lab.log').read_text()[-3000:]}")
                time.sleep(0.25)
        yield base, token
    finally:
        proc.terminate()  # the server shuts its kernels down on SIGTERM
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _run_cell(page, has_text: str) -> None:
    """Put the cursor in the code cell containing `has_text`, Shift+Enter, and wait until it has run.

    On a cold start JupyterLab can drop a Shift+Enter that arrives while the notebook panel is still wiring itself
    up (seen once in a fresh clone: the cell stayed `[ ]` with the kernel idle), so the key press is repeated until
    the cell shows it is queued or running (`[*]`) or done (`[n]`)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    cell = page.locator(".jp-Notebook .jp-CodeCell").filter(has_text=has_text).first
    prompt = cell.locator(".jp-InputArea-prompt")
    for attempt in range(4):
        _dismiss_dialog(page, attempt)
        try:
            cell.scroll_into_view_if_needed()
            cell.locator(".jp-InputArea-editor").click(timeout=15_000)  # a dialog over the cell times this out
            page.keyboard.press("Shift+Enter")
            page.wait_for_function("el => /\\[(\\d+|\\*)\\]/.test(el.textContent)", arg=prompt.element_handle(),
                                   timeout=15_000)
            break
        except PlaywrightTimeout:
            if attempt == 3:
                raise
    page.wait_for_function("el => /\\[\\d+\\]/.test(el.textContent)", arg=prompt.element_handle(),
                           timeout=RUN_TIMEOUT_MS)
    stderr = cell.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    for i in range(stderr.count()):  # JupyterLab renders tracebacks as stderr
        assert "Error" not in stderr.nth(i).inner_text(), f"cell with {has_text!r} raised: {stderr.nth(i).inner_text()[-2000:]}"


def _dismiss_dialog(page, attempt: int) -> None:
    """A JupyterLab dialog over the notebook (under a loaded CPU, make test once met one after the first cell ran)
    takes every click: say what it was, close it with Escape, and go on; on the last attempt, fail with its text."""
    dialog = page.locator(".jp-Dialog")
    if dialog.count() == 0 or not dialog.first.is_visible():
        return
    text = dialog.first.inner_text()[:500]
    if attempt == 3:
        raise AssertionError(f"a JupyterLab dialog stayed over the notebook: {text!r}")
    print(f"closing a JupyterLab dialog: {text!r}", file=sys.stderr)
    page.keyboard.press("Escape")
    dialog.first.wait_for(state="hidden", timeout=10_000)


def _png_digest(page, img) -> str:
    """Fetch the <img> blob in the page and hash its bytes: a redraw changes them, not just the blob URL."""
    return page.evaluate("""async (el) => {
        const buf = new Uint8Array(await (await fetch(el.src)).arrayBuffer());
        let h = 0; for (const b of buf) { h = (h * 31 + b) >>> 0; }
        return buf.length + ':' + h; }""", img.element_handle())


def _click_run_and_wait(page, panel, kl_text: str) -> None:
    panel.locator("button", has_text="Run").click()
    page.wait_for_function(
        """([el, kl]) => { const r = el.querySelector('.rlhf-readout');
               return r && r.textContent.includes('last-quarter mean') && r.querySelector('.rlhf-kl').textContent === kl; }""",
        arg=[panel.element_handle(), kl_text], timeout=RUN_TIMEOUT_MS)


def test_kl_slider_and_run_redraw_the_curve(lab):
    from playwright.sync_api import sync_playwright

    base, token = lab
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}")
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
            page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=30_000)

            _run_cell(page, "start(seed=0)")
            _run_cell(page, "make_panel(")
            panel = page.locator(".rlhf-panel").first
            panel.wait_for(state="visible", timeout=30_000)
            kl_slider = panel.locator(".widget-slider").filter(has_text="kl_coef")
            assert kl_slider.locator(".widget-readout").inner_text().strip() == "0.05"

            # run once with the defaults: the figure appears and the readout names beta = 0.05
            _click_run_and_wait(page, panel, "0.05")
            img = panel.locator("img").first
            src1, png1 = img.get_attribute("src"), _png_digest(page, img)
            assert src1 and src1.startswith("blob:")

            # move the KL slider one step with the keyboard, as a user would
            kl_slider.locator(".noUi-handle").focus()
            page.keyboard.press("ArrowRight")
            page.wait_for_function("el => el.textContent.trim() === '0.06'",
                                   arg=kl_slider.locator(".widget-readout").element_handle(), timeout=10_000)

            _click_run_and_wait(page, panel, "0.06")
            src2, png2 = img.get_attribute("src"), _png_digest(page, img)
            assert src2 != src1, "the figure's image was not replaced"
            assert png2 != png1, "the figure's PNG bytes did not change"
            text = panel.locator(".rlhf-readout").inner_text()
            assert re.search(r"KL coefficient in use:\s*0\.06", text), text
            # the second run is drawn over the first: the legend names both curves, oldest first
            curves = [c.strip() for c in panel.locator(".rlhf-legend .rlhf-curve").all_inner_texts()]
            assert len(curves) == 2, curves
            B = LESSON_RUN["batch_size"]
            assert curves[0].startswith(f"β=0.05 B={B}") and curves[1].startswith(f"β=0.06 B={B}"), curves
            if os.environ.get("RLHF_NB_BROWSER_SCREENSHOT"):  # a picture of the passing state, for a human to look at
                panel.screenshot(path=os.environ["RLHF_NB_BROWSER_SCREENSHOT"])
        except BaseException:
            FAILURE_SHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(FAILURE_SHOT), full_page=True)
            raise
        finally:
            browser.close()
