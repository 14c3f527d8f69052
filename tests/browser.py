"""Debian's headless Chromium driven through its chromedriver by Selenium: what the review page's browser test and
bench_audit.py's screenshot use. `make browser` installs both; nothing is downloaded here (Selenium is given the
system's driver, so its own driver manager never runs)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

# Debian's names first; other distributions name the same programs otherwise.
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVER = "chromedriver"


def missing_browser() -> str | None:
    """Why no headless Chromium can be driven here, or None when it can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if not any(shutil.which(b) for b in BROWSERS) or not shutil.which(DRIVER):
        return "no chromium / chromedriver installed (`make browser` installs Debian's chromium and chromium-driver)"
    return None


@contextmanager
def chromium(width: int = 1366, height: int = 768) -> Iterator:
    """A headless Chromium window of a laptop's size, closed after the block."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = next(shutil.which(b) for b in BROWSERS if shutil.which(b))
    # --no-sandbox: CI and containers run as root, where Chromium refuses its sandbox.
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--no-first-run",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium's driver manager must not look for downloads
    driver = webdriver.Chrome(service=Service(shutil.which(DRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
