"""The web app end to end: a real server on localhost driven by headless Chromium.

A small linear classifier is trained on the retina cells into a temporary models folder;
the test uploads the retina file in the browser, runs the predictions, reads the table of
predicted labels, downloads the CSV and saves a screenshot.

Browser: Debian's ``chromium`` and ``chromium-driver`` through Selenium (Playwright's own
browser download is not reachable offline). When they are missing, the session installs
them with apt-get once (as root, under a lock file so that pytest-xdist workers do not run
apt twice); set ``SCPRINT_E2E_NO_INSTALL=1`` to never install. Without a browser the test
is skipped with the reason.
"""

from __future__ import annotations

import fcntl
import io
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

_BROWSERS = ("chromium", "chromium-browser", "google-chrome")
_DRIVERS = ("chromedriver", "/usr/lib/chromium/chromedriver", "/usr/bin/chromedriver")
_APT_PACKAGES = ["chromium", "chromium-driver"]
_LOCK = Path(tempfile.gettempdir()) / "scprint-app-e2e-browser.lock"


def _which(names) -> str | None:
    for name in names:
        found = shutil.which(name) or (name if os.path.isfile(name) else None)
        if found:
            return found
    return None


def _browser() -> tuple[str, str] | None:
    """(chromium binary, chromedriver) when both are installed."""
    binary, driver = _which(_BROWSERS), _which(_DRIVERS)
    return (binary, driver) if binary and driver else None


def _apt_install() -> str | None:
    """Install chromium and its driver with apt-get; the reason when that is impossible."""
    if os.environ.get("SCPRINT_E2E_NO_INSTALL"):
        return "SCPRINT_E2E_NO_INSTALL is set"
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine"
    if os.geteuid() != 0:
        return "installing with apt-get needs root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *_APT_PACKAGES]
    attempts = [[install], [["apt-get", "update"], install]]  # the lists may be stale
    last = ""
    for commands in attempts:
        try:
            for cmd in commands:
                done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
                if done.returncode != 0:
                    last = f"{' '.join(cmd)} failed: {done.stderr.strip()[-300:]}"
                    break
            else:
                return None
        except (OSError, subprocess.TimeoutExpired) as e:
            last = f"{type(e).__name__}: {e}"
    return last


@pytest.fixture(scope="session")
def browser() -> tuple[str, str]:
    """Paths of Chromium and chromedriver, installed with apt-get once when missing."""
    pytest.importorskip("selenium", reason="the end-to-end test needs selenium (dev extra)")
    found = _browser()
    if found is None:
        with open(_LOCK, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one xdist worker installs, the others wait
            found = _browser()
            if found is None:
                why = _apt_install()
                found = _browser()
                if found is None:
                    pytest.skip(
                        "no Chromium for the end-to-end test "
                        f"(apt-get install {' '.join(_APT_PACKAGES)}: {why or 'not found after'})"
                    )
    return found


@pytest.fixture(scope="module")
def models(retina_path, tmp_path_factory) -> Path:
    """A models folder holding a linear classifier of the retina cell types."""
    import anndata as ad

    from scprint import tabular

    adata = ad.read_h5ad(retina_path)
    top = np.argsort(-np.asarray(adata.X.sum(axis=0)).ravel(), kind="stable")[:500]
    clf = tabular.fit(adata, label_key="cell_type", model="linear", genes=list(adata.var_names[top]),
                      max_epochs=2, progress=False, accelerator="cpu")  # fmt: skip
    folder = tmp_path_factory.mktemp("app_models")
    clf.save(folder / "retina_linear.pt")
    return folder


@pytest.fixture(scope="module")
def app_url(models, tmp_path_factory):
    pytest.importorskip("streamlit", reason="the app needs streamlit (app extra)")
    from scprint.app import serve

    log = tmp_path_factory.mktemp("app_server") / "server.log"
    with serve(models, max_upload_mb=200, log=log) as url:
        yield url


@pytest.fixture
def driver(browser, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, chromedriver = browser
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000"):  # fmt: skip
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    drv = webdriver.Chrome(service=Service(chromedriver), options=options)
    drv.execute_cdp_cmd(
        "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    drv.downloads = downloads
    yield drv
    drv.quit()


def _button(text: str) -> tuple[str, str]:
    from selenium.webdriver.common.by import By

    return By.XPATH, f"//button[.//p[normalize-space()='{text}']]"


def _text(text: str) -> tuple[str, str]:
    from selenium.webdriver.common.by import By

    return By.XPATH, f"//*[contains(normalize-space(), '{text}')]"


def _label_counts(driver) -> dict[str, int] | bool:
    """Predicted label -> cells, read from the page's table; False until it is drawn."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    css = "[data-testid=stMain] [data-testid=stTable] tbody tr"
    try:
        rows = [
            [
                c.get_attribute("textContent").strip()
                for c in row.find_elements(By.CSS_SELECTOR, "th, td")
            ]
            for row in driver.find_elements(By.CSS_SELECTOR, css)
        ]
        return {row[0]: int(row[1]) for row in rows} or False
    except (StaleElementReferenceException, IndexError, ValueError):
        return False


def _error_box(driver, text: str):
    """The error box showing ``text``, or False."""
    from selenium.webdriver.common.by import By

    boxes = driver.find_elements(By.CSS_SELECTOR, "[data-testid=stAlertContentError]")
    return next((b for b in boxes if text in b.text), False)


def _downloaded(folder: Path, timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [p for p in folder.iterdir() if not p.name.endswith((".crdownload", ".tmp"))]
        if done:
            return done[0]
        time.sleep(0.2)
    raise AssertionError(f"nothing downloaded into {folder} within {timeout} s")


def test_upload_predict_download(app_url, driver, retina_path, models, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, 180)  # generous: CI machines are small and shared
    driver.get(app_url)
    wait.until(ec.presence_of_element_located(_text("scPRINT: label your cells")))
    sidebar = wait.until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "[data-testid=stSidebar]"))
    )
    wait.until(lambda _: "retina_linear" in sidebar.text and "500" in sidebar.text)
    assert "tabular linear classifier" in sidebar.text and "human" in sidebar.text

    upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]")))
    upload.send_keys(str(Path(retina_path).resolve()))
    wait.until(ec.presence_of_element_located(_text("1,000 cells x 70,116 genes")))
    assert "500 of the model's 500 genes found" in driver.find_element(By.TAG_NAME, "body").text

    wait.until(ec.element_to_be_clickable(_button("Run predictions"))).click()
    done = wait.until(ec.presence_of_element_located(_text("Predicted 1,000 cells")))
    assert "unknown" in done.text
    assert driver.find_elements(By.CSS_SELECTOR, "[data-testid=stAlertContentError]") == []

    # the table of cells per predicted label (waiting for it to be drawn)
    counts = wait.until(_label_counts)
    assert sum(counts.values()) == 1000
    assert max(counts, key=counts.get) == "retinal rod cell"
    assert {"amacrine cell", "retinal cone cell", "Mueller cell"} <= set(counts)

    # the CSV download holds one row per cell, the same labels as the table
    wait.until(ec.element_to_be_clickable(_button("Download predictions (CSV)"))).click()
    csv = pd.read_csv(io.BytesIO(_downloaded(driver.downloads).read_bytes()), index_col="cell")
    assert len(csv) == 1000
    assert list(csv.columns[:3]) == ["label", "name", "confidence"]
    assert csv["name"].value_counts().to_dict() == counts
    shot = tmp_path / "app.png"
    driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def test_wrong_files_get_a_clear_message(app_url, driver, retina_full, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from scdataloader.preprocess import log_normalize

    table = tmp_path / "cells.csv"
    table.write_text("cell,GAPDH\nc1,3\n")
    lognorm = retina_full[:100].copy()
    lognorm.X = log_normalize(lognorm)
    lognorm.write_h5ad(tmp_path / "lognorm.h5ad")

    wait = WebDriverWait(driver, 180)  # generous: CI machines are small and shared
    driver.get(app_url)
    upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]")))
    for path, problem, hint in [
        (table, "cells.csv is not an .h5ad file", "write_h5ad"),
        (tmp_path / "lognorm.h5ad", "X holds log-normalised values", "raw integer counts"),
    ]:
        upload.send_keys(str(path))
        box = wait.until(lambda d, problem=problem: _error_box(d, problem))
        assert hint in box.text
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "Traceback" not in body and "Run predictions" not in body
