"""Driving the labelling page in a real browser (headless Chromium through Selenium and Debian's
chromedriver), shared by the browser tests of ``tests/label``. Under ``CI=true`` a missing browser
fails the test; elsewhere it is skipped with the reason. The browser's console is kept
(``driver.get_log("browser")``)."""

import os
import time

import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
#: the page has nothing in flight
IDLE = "return window.patchcfg && window.patchcfg.busy === 0 && !window.patchcfg.loading"


def open_browser(chromium=None, chromedriver=None):
    chromium, chromedriver = chromium or CHROMIUM, chromedriver or CHROMEDRIVER
    missing = [p for p in (chromium, chromedriver) if not os.path.exists(p)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        reason = (f"{', '.join(missing)} missing "
                  "(apt-get install chromium chromium-driver; pip install selenium)")
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900",
                "--disable-gpu", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, for get_log("browser")
    return webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)


def wait(driver, condition, what, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = driver.execute_script(condition)
        if value:
            return value
        time.sleep(0.05)
    log = driver.execute_script("return document.getElementById('log').innerText")
    raise AssertionError(f"timed out waiting for {what}; page log: {log}")


def press(driver, keys):
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(keys).perform()
    wait(driver, IDLE, f"the page to finish {keys!r}")


def current_row(driver):
    script = "const r = document.getElementById('single').dataset.row; return r === undefined ? null : r"
    return int(wait(driver, script, "an image"))


def severe(driver, seen):
    """The console's errors since the last call, added to ``seen`` (get_log empties the browser's buffer)."""
    seen.extend(e for e in driver.get_log("browser") if e["level"] == "SEVERE")
    return seen
