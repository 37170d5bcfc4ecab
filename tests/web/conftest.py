"""Browser fixtures: a real headless Chromium (Debian chromium + chromium-driver) driven by selenium.

``chromium`` skips with the reason when the browser, its driver or selenium is missing (under CI
that is a failure: the CI rule treats a skipped browser test as missing prerequisites).
"""

from __future__ import annotations

import shutil

import pytest

from support import require

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def chromium_missing() -> str | None:
    if not shutil.which(CHROMIUM):
        return "chromium is not installed (Debian package chromium; scripts/dev setup)"
    if not shutil.which(CHROMEDRIVER):
        return "chromedriver is not installed (Debian package chromium-driver; scripts/dev setup)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not importable (Debian package python3-selenium; venv with --system-site-packages)"
    return None


@pytest.fixture
def chromium(tmp_path):
    """A headless Chromium WebDriver; quit after the test."""
    reason = chromium_missing()
    if reason:
        require(False, f"browser test: {reason}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-default-apps", "--ignore-certificate-errors"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
