"""The kernel in a real browser: JupyterLab on 127.0.0.1 with no token, Debian's chromium driven
by selenium through Debian's chromium-driver (installed with apt by the set-up here, never
downloaded at run time). The faces notebook is run from JupyterLab's own command, and what the
page shows is checked: the rolled-back traceback, the figure. Then a sleeping cell is
interrupted and the kernel restarted, by JupyterLab's commands, as its menus do. A screenshot
is kept next to the test's files when it fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel_client import install_spec

pytestmark = [pytest.mark.slow, pytest.mark.browser]
webdriver = pytest.importorskip("selenium.webdriver")
pytest.importorskip("jupyterlab")

NOTEBOOK = Path(__file__).parent.parent / "examples" / "faces.ipynb"


def _browser() -> tuple[str, str]:
    """chromium and chromedriver, from apt if they are not there yet (root only)."""
    found = shutil.which("chromium"), shutil.which("chromedriver")
    if all(found):
        return found  # type: ignore[return-value]
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("chromium and chromium-driver are not installed, and apt-get cannot be run here")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium", "chromium-driver"],
    )
    for step in steps:
        done = subprocess.run(step, env=env, capture_output=True, text=True, timeout=1200)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(step)} failed: {done.stderr[-2000:]}")
    found = shutil.which("chromium"), shutil.which("chromedriver")
    assert all(found), "apt installed chromium but it is not on PATH"
    return found  # type: ignore[return-value]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """JupyterLab serving tmp_path on a free port, stopped by its pid afterwards."""
    install_spec(tmp_path, monkeypatch)
    for var in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR"):
        folder = tmp_path / var.lower()
        folder.mkdir()
        monkeypatch.setenv(var, str(folder))
    shutil.copy(NOTEBOOK, tmp_path / "faces.ipynb")
    settings = tmp_path / "lab-settings"
    tracker = settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text('{"windowingMode": "none"}')  # every cell in the page, not only those in view
    news = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false"}')
    port = _free_port()
    argv = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.token=",
        "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
        f"--ServerApp.root_dir={tmp_path}", "--LabApp.expose_app_in_browser=True",
        f"--LabApp.user_settings_dir={settings}",
    ]  # fmt: skip
    log = open(tmp_path / "jupyterlab.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/api", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise AssertionError(
                        f"JupyterLab did not start: {(tmp_path / 'jupyterlab.log').read_text()[-3000:]}"
                    ) from None
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
        log.close()


@pytest.fixture
def browser(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[object]:
    chromium, driver = _browser()
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    page = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield page
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is None or report.failed:
            shot = tmp_path / "browser-failure.png"
            page.save_screenshot(str(shot))
            print(f"screenshot: {shot}")
        page.quit()


def _command(page: object, name: str, args: str = "{}") -> None:
    """Run a JupyterLab command as its menu would; fails with the command's own error."""
    error = page.execute_async_script(  # type: ignore[attr-defined]
        f"const done = arguments[arguments.length - 1];"
        f"window.jupyterapp.commands.execute({name!r}, {args}).then(() => done(null), e => done(String(e)));"
    )
    assert error is None, f"{name}: {error}"


def _text(page: object) -> str:
    return str(page.execute_script("return document.body.innerText;"))  # type: ignore[attr-defined]


def _wait_for(page: object, predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what} did not show in {timeout:.0f} s; the page says:\n{_text(page)[-3000:]}"
            )
        time.sleep(0.5)


def _kernel_idle(page: object) -> bool:
    return bool(
        page.execute_script(  # type: ignore[attr-defined]
            "const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
            "const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
            "return !!k && k.status === 'idle';"
        )
    )


_CELLS = (
    "const nb = window.jupyterapp.shell.currentWidget.content.model; const cells = [];"
    "for (let i = 0; i < nb.cells.length; i++) cells.push(nb.cells.get(i).toJSON());"
    "return JSON.stringify(cells.filter(c => c.cell_type === 'code'));"
)


def _code_cells(page: object) -> list[dict[str, object]]:
    """The open notebook's code cells as its model holds them (what the kernel sent)."""
    import json

    return list(json.loads(page.execute_script(_CELLS)))  # type: ignore[attr-defined]


def _outputs(page: object) -> str:
    import json

    return "\n".join(json.dumps(o) for c in _code_cells(page) for o in c.get("outputs") or [])  # type: ignore[attr-defined]


def test_the_notebook_in_jupyterlab_rolls_back_draws_interrupts_and_restarts(
    lab: str, browser: object
) -> None:
    page = browser
    page.get(f"{lab}/lab/tree/faces.ipynb")  # type: ignore[attr-defined]
    _wait_for(page, lambda: _kernel_idle(page), 120, "an idle forkpoint kernel")
    assert "Python (forkpoint)" in _text(page)
    count = len(_code_cells(page))
    _command(page, "notebook:run-all-cells")
    _wait_for(
        page,
        lambda: all(c.get("execution_count") for c in _code_cells(page)) and _kernel_idle(page),
        300,
        f"all {count} cells run",
    )
    outputs = _outputs(page)
    assert "rolled back to [" in outputs and "24 frames went to 1 file(s)" in outputs
    assert "wrote 24 frames: frame000.jpg .. frame023.jpg" in outputs
    shown = _text(page)  # and what the page shows of them
    assert "rolled back to [" in shown and "wrote 24 frames" in shown
    images = page.execute_script("return document.querySelectorAll('.jp-OutputArea-output img').length;")  # type: ignore[attr-defined]
    assert images >= 1  # the matplotlib figure, inline
    # a sleeping cell at the end, interrupted by JupyterLab's Kernel menu command
    _command(page, "notebook:insert-cell-below")
    page.execute_script(  # type: ignore[attr-defined]
        "window.jupyterapp.shell.currentWidget.content.activeCell.model.sharedModel.setSource("
        "'marker = 1\\nimport time\\nprint(\"napping\", flush=True)\\ntime.sleep(120)');"
    )
    page.execute_script("window.jupyterapp.commands.execute('notebook:run-cell');")  # type: ignore[attr-defined]
    _wait_for(page, lambda: "napping" in _outputs(page), 60, "the sleeping cell's output")
    _command(page, "kernelmenu:interrupt")
    _wait_for(
        page,
        lambda: "interrupted; rolled back to [" in _outputs(page),
        60,
        "the interrupted cell rolled back",
    )
    assert "interrupted; rolled back to [" in _text(page)
    page.execute_script("window.jupyterapp.commands.execute('kernelmenu:restart');")  # type: ignore[attr-defined]
    accept = "return !!document.querySelector('.jp-Dialog .jp-mod-accept');"
    _wait_for(page, lambda: bool(page.execute_script(accept)), 30, "the restart dialog")  # type: ignore[attr-defined]
    page.execute_script("document.querySelector('.jp-Dialog .jp-mod-accept').click();")  # type: ignore[attr-defined]
    time.sleep(2)
    _wait_for(page, lambda: _kernel_idle(page), 120, "the restarted kernel, idle")
