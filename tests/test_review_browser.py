"""The review page in a real headless Chromium against `mmgbm review` on 127.0.0.1: three suspects answered with the
keyboard and one through the label search land in labels/articleType.csv, the page moves on after each, and a title
holding a script shows as text without running. Skipped where no Chromium is installed (`make browser` installs
Debian's); CI installs it, so there a missing browser fails instead of skipping."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.browser import chromium, missing_browser
from tests.review_project import SCRIPT, audit_suspects, decisions, review_project
from tests.service import service_process

REPO = Path(__file__).resolve().parents[1]
WAIT_S = 10

reason = missing_browser()
if reason and os.environ.get("CI"):
    raise RuntimeError(f"CI must run the review page's browser test, but {reason}")
# A real browser and a served model: ~6 s, in the slow lane (CI runs it there, `make test-slow`).
pytestmark = [pytest.mark.slow, pytest.mark.skipif(reason is not None, reason=reason or "")]


def wait_for(check, what: str):
    """Poll the page until `check()` is truthy (bounded)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"the page did not show {what} within {WAIT_S}s")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, str]:
    return review_project(tmp_path_factory.mktemp("review-browser"))


def test_a_reviewer_answers_suspects_with_the_keyboard_and_the_label_search(project):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    path, scripted = project
    suspects = audit_suspects(path)
    with service_process(path, ["articleType"], command="review", cwd=REPO) as url, chromium() as browser:
        browser.get(f"{url}/review/articleType")
        wait_for(lambda: browser.execute_script("return document.body.dataset.ready"), "the first suspect")
        shown = lambda: browser.find_element(By.ID, "product-id").text  # noqa: E731
        body = browser.find_element(By.TAG_NAME, "body")
        first = suspects.iloc[0]
        assert shown() == first["id"]
        assert browser.find_element(By.ID, "given").text == first["given_label"]
        assert browser.find_element(By.ID, "suggested").text == first["suggested_label"]

        answers = []
        for key, column in (("a", "suggested_label"), ("k", "given_label"), ("a", "suggested_label")):
            current = suspects.set_index("id").loc[shown()]
            body.send_keys(key)
            answers.append((current.name, current[column]))
            wait_for(lambda before=current.name: shown() != before, "the next suspect")
        # The fourth with the label search: O, a few letters, down to the second match, Enter.
        fourth = shown()
        body.send_keys("o")
        search = browser.switch_to.active_element
        assert search.get_attribute("id") == "search"
        search.send_keys("sh")
        matches = lambda: [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#matches li")]  # noqa: E731
        wait_for(lambda: matches(), "labels matching 'sh'")
        assert all("sh" in label.lower() for label in matches()) and matches()[0].lower().startswith("sh")
        picked = matches()[1]
        search.send_keys(Keys.ARROW_DOWN, Keys.ENTER)
        answers.append((fourth, picked))
        wait_for(lambda: shown() != fourth, "the suspect after the searched answer")

        assert decisions(path)[["id", "decided"]].values.tolist() == [list(a) for a in answers]
        assert shown() == suspects["id"].iloc[4]
        assert browser.find_element(By.ID, "progress").text.startswith(f"{len(suspects) - 4} left to review")

        # Skipping on to the product whose title holds a script: it is there as text, and nothing ran.
        for _ in range(len(suspects)):
            if shown() == scripted:
                break
            body.send_keys("s")
            time.sleep(0.05)
        assert shown() == scripted
        assert browser.find_element(By.ID, "title").text.startswith(SCRIPT.strip())
        assert browser.execute_script("return window.pwned") is None
        browser.save_screenshot(str(path.parent / "review.png"))
    assert len(decisions(path)) == 4  # skipping records nothing
