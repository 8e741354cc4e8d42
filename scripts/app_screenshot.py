"""Take the screenshot of the web app shown in the docs (``docs/app-screenshot.png``).

It trains a small linear classifier of the retina cell types (the 2,000 most expressed
genes, a few epochs) into a temporary models folder, unless ``--models`` names a folder
of models, starts ``scprint app`` on a free local port, uploads the retina file in
headless Chromium, runs the predictions and saves the page.

Usage
-----
::

    apt-get install chromium chromium-driver      # Debian; plus pip install selenium
    python scripts/app_screenshot.py                # writes docs/app-screenshot.png
    python scripts/app_screenshot.py --view embedding --out umap.png
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RETINA = ROOT / ".." / "shared" / "data" / "retina_1k.h5ad"

logger = logging.getLogger("app_screenshot")


def train_model(adata_path: Path, folder: Path) -> Path:
    """A linear classifier of ``cell_type`` on the 2,000 most expressed genes."""
    import anndata as ad
    import numpy as np

    from scprint import tabular

    adata = ad.read_h5ad(adata_path)
    top = np.argsort(-np.asarray(adata.X.sum(axis=0)).ravel(), kind="stable")[:2000]
    clf = tabular.fit(adata, label_key="cell_type", model="linear", genes=list(adata.var_names[top]),
                      max_epochs=5, progress=False, accelerator="cpu")  # fmt: skip
    return clf.save(folder / "retina_linear.pt")


def _chrome(width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or "/usr/lib/chromium/chromedriver"
    if binary is None or not Path(driver).exists():
        raise SystemExit(
            "needs Chromium and chromedriver: apt-get install chromium chromium-driver"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def screenshot(url: str, adata_path: Path, out: Path, *, view: str, size: tuple[int, int]) -> None:
    """Upload, predict (and compute the UMAP for ``view="embedding"``), then save the page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    def button(text: str):
        return By.XPATH, f"//button[.//p[normalize-space()='{text}']]"

    def showing(text: str):
        return By.XPATH, f"//*[contains(normalize-space(), '{text}')]"

    drv = _chrome(*size)
    try:
        wait = WebDriverWait(drv, 180)
        drv.get(url)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]")))
        drv.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(adata_path.resolve()))
        wait.until(ec.element_to_be_clickable(button("Run predictions"))).click()
        wait.until(ec.presence_of_element_located(showing("Predicted ")))
        if view == "embedding":
            drv.find_element(By.XPATH, "//*[@role='tab'][.//p[text()='Embedding']]").click()
            wait.until(ec.element_to_be_clickable(button("Compute UMAP (expression PCA)"))).click()
            wait.until(ec.presence_of_element_located(showing("Colour by")))
            wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "img[src*='media']")))
        time.sleep(2)  # let the tables and images settle
        out.parent.mkdir(parents=True, exist_ok=True)
        drv.save_screenshot(str(out))
    finally:
        drv.quit()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adata", type=Path, default=RETINA, help="the file uploaded")
    parser.add_argument("--models", type=Path, default=None,
                        help="models folder (default: train a small model)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "app-screenshot.png")
    parser.add_argument("--view", choices=("predictions", "embedding"), default="predictions")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1200)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.adata.exists():
        raise SystemExit(f"{args.adata}: no such file (pass --adata)")

    from scprint.app import serve

    with tempfile.TemporaryDirectory(prefix="scprint_app_models_") as tmp:
        models = args.models
        if models is None:
            models = Path(tmp)
            logger.info("training a small linear classifier ...")
            train_model(args.adata, models)
        with serve(models, timeout=120) as url:
            logger.info("app at %s; driving Chromium ...", url)
            screenshot(url, args.adata, args.out, view=args.view, size=(args.width, args.height))
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
