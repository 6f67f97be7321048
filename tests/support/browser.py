"""A real browser for the dashboard's tests: Debian's headless Chromium driven by Selenium
through the system's chromedriver. Nothing is downloaded: Selenium Manager is told to stay
offline and is never asked for a driver (the Service names /usr/bin/chromedriver)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = os.environ.get("LEDGER_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("LEDGER_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOTS = Path(os.environ.get("LEDGER_TEST_SCREENSHOTS",
                                  Path(__file__).parents[2] / "test-artifacts" / "screenshots"))
LAPTOP, PHONE = (1366, 900), (390, 844)
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--disable-extensions", "--no-default-browser-check")


def require_chromium() -> None:
    """Fail (never skip) when the browser is missing: a skipped browser test hides a
    dashboard nobody looked at."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(f"the dashboard's tests need Debian's Chromium: {', '.join(missing)} "
                    "missing; install it with `apt-get install -y chromium chromium-driver` "
                    "(.ci/run does)", pytrace=False)


@contextmanager
def chromium(size: tuple[int, int] = LAPTOP) -> Iterator[WebDriver]:
    """A fresh headless Chromium (its own profile directory) at `size`, closed after."""
    require_chromium()
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch anything
    profile = tempfile.mkdtemp(prefix="ledger-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver: WebDriver, condition: Callable[[WebDriver], Any],
             within: float = 10.0, what: str = "the page") -> Any:
    """What `condition` returns once truthy; fails the test naming `what` if never."""
    return WebDriverWait(driver, within, poll_frequency=0.02).until(
        condition, f"{what} did not appear within {within:g} s")


def sign_in(driver: WebDriver, base: str, token: str) -> None:
    """Open the dashboard and sign in with `token`, as a person would."""
    driver.get(f"{base}/dashboard")
    box = wait_for(driver, lambda d: d.find_element(By.ID, "token"), what="the sign-in form")
    box.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#sign-in button[type=submit]").click()
    wait_for(driver, lambda d: d.find_element(By.ID, "who").is_displayed(), what="signed in")


def figure(driver: WebDriver, name: str) -> str | None:
    """The raw value behind a figure on the page (`data-value`), or None if not shown."""
    # Read in one script: the page redraws on every live event, so an element found in
    # one call may be gone by the next.
    value: str | None = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.dataset.value : null",
        f'[data-figure="{name}"]')
    return value


def screenshot(driver: WebDriver, name: str) -> Path:
    """Save the page as test-artifacts/screenshots/NAME.png and say where."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def table_rows(driver: WebDriver, name: str) -> list[list[str]]:
    """The cells' text of a table's body rows (`data-table` NAME), read in one script."""
    rows: list[list[str]] = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map("
        "(row) => [...row.cells].map((cell) => cell.textContent))",
        f'[data-table="{name}"] tbody tr')
    return rows
