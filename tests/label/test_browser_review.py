"""The ``mistakes`` review in a real browser: the cell the review doubts is marked on the image's
labels, in its caption and on its grid tile, with a title saying what was given and what the
model says; fixing that label takes the mark away."""

import re

import test_review_queue as review
from browsing import IDLE, press, severe, wait
from test_review_queue import FLIPPED

reviewed = review.reviewed  # the fixture: 48 of 60 digits labelled, row FLIPPED wrongly


def shown_suspect(driver):
    return driver.execute_script("return window.patchcfg.batch[window.patchcfg.pos].suspect")


def test_the_review_marks_the_suspect_cell(reviewed, served, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    config_path, _, root, _ = reviewed
    app = served(config_path, root)
    driver = browser
    driver.get(app.url)
    wait(driver, "return document.querySelectorAll('#classes .cls').length === 2", "the classes")
    wait(driver, "return window.patchcfg.batchVersion >= 1", "images ranked by the first model", timeout=60)
    wait(driver, IDLE, "the first images")
    assert not driver.find_elements(By.CSS_SELECTOR, ".suspect"), "another strategy doubts nothing"
    Select(driver.find_element(By.ID, "strategy")).select_by_value("mistakes")
    wait(driver, IDLE, "the review queue")
    wait(driver, f"return document.getElementById('single').dataset.row === '{FLIPPED}'",
         "the mislabelled image first", timeout=30)

    suspect = shown_suspect(driver)
    assert suspect and suspect["class"] in ("zero", "one"), suspect
    title = re.compile(rf"likely wrong: labelled {suspect['given']}, model says (\d\.\d\d) \(out of fold\)$")

    def says_the_model(element):
        found = title.match(element.get_attribute("title"))
        assert found, element.get_attribute("title")
        assert abs(float(found.group(1)) - suspect["p"]) <= 0.0051

    cells = driver.find_elements(By.CSS_SELECTOR, "#classes .cls.suspect")
    assert [c.get_attribute("data-cls") for c in cells] == [suspect["class"]]
    says_the_model(cells[0])
    chips = driver.find_elements(By.CSS_SELECTOR, "#caption .chip.suspect")
    assert [c.text for c in chips] == [suspect["class"]]
    says_the_model(chips[0])

    press(driver, "g")  # the grid: the tile shows the doubted cell, present or absent
    wait(driver, f"return !!document.querySelector('#grid .tile[data-row=\"{FLIPPED}\"]')", "the grid")
    tile = driver.find_element(By.CSS_SELECTOR, f'#grid .tile[data-row="{FLIPPED}"]')
    chips = tile.find_elements(By.CSS_SELECTOR, ".chip.suspect")
    assert [c.text for c in chips] == [suspect["class"]]
    says_the_model(chips[0])
    press(driver, "g")
    wait(driver, f"return document.getElementById('single').dataset.row === '{FLIPPED}'", "the image alone")

    # the label fixed: the review's doubt no longer holds, nothing is marked
    key = str(["zero", "one"].index(suspect["class"]) + 1)
    press(driver, Keys.SHIFT + key if suspect["given"] == 1 else key)
    assert not driver.find_elements(By.CSS_SELECTOR, "#classes .cls.suspect, #caption .chip.suspect")
    press(driver, "z")  # undo: doubted again
    wait(driver, "return document.querySelectorAll('#classes .cls.suspect').length === 1", "the mark back")
    assert not severe(driver, []), "no error in the console"
