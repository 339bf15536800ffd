"""Issue 18 item 8: the submit form and the job page in headless Chromium, against a real `yoloq api` and the
session's real Redis (no worker: submitted jobs stay queued). The form's errors are the CLI's lines for the same input,
job strings are text (a hostile name runs nothing), and a limited key's refusal is shown on the page."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from infra.api_keys import ApiKeys
from infra.redis_client import connect
from tasks.states import JobState
from tests.fleet import poll, yoloq_cli
from tests.integration.test_api import TOKEN, Api, serving_api
from yoloq.client import Client

pytestmark = pytest.mark.integration

HOSTILE = '<img src=x onerror="window.pwned=1">"><script>window.pwned=2</script>'
GOOD = {"dataset": "s3://datasets/coco8", "team": "vision"}


@pytest.fixture(scope="module")
def api(services: Any) -> Iterator[Api]:
    with serving_api(services, "api-web") as client:
        yield client


@pytest.fixture
def browser() -> Iterator[Any]:
    """A fresh headless Chromium per test: no basic-auth cache or sessionStorage carried from one test to the next."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _open(browser: Any, api: Api, key: str, path: str) -> None:
    """Open a page as the status page is opened (basic auth, the key as password) and enter the key for actions."""
    from selenium.webdriver.common.by import By

    browser.get(api.base.replace("http://", f"http://ops:{key}@") + path)
    browser.find_element(By.ID, "key").send_keys(key)
    browser.find_element(By.ID, "key-use").click()
    assert browser.find_element(By.ID, "key").get_attribute("value") == ""  # kept in sessionStorage, not the field


def _text(browser: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    text: str = browser.find_element(By.ID, element_id).text
    return text


def _submit(browser: Any, fields: dict[str, str], kind: str = "train", tier: str = "medium") -> None:
    """Fill the form (every text field: the ones not given are cleared) and press Submit once the schema loaded."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    button = browser.find_element(By.ID, "f-submit")
    poll(button.is_enabled, 15, "the form to read the spec schema")
    Select(browser.find_element(By.ID, "f-kind")).select_by_visible_text(kind)
    Select(browser.find_element(By.ID, "f-tier")).select_by_visible_text(tier)
    for name in ("dataset", "model", "epochs", "imgsz", "batch", "team", "name"):
        field = browser.find_element(By.ID, f"f-{name}")
        field.clear()
        if name in fields:
            field.send_keys(fields[name])
    button.click()


def _act(browser: Any, action: str) -> str:
    """Press an action's button and return the line the page shows for it."""
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, f'#actions button[data-action="{action}"]').click()
    line: str = poll(lambda: (t := _text(browser, "action-result")) and not t.endswith("…") and t, 15, action)
    return line


def _fact(browser: Any, name: str) -> str:
    from selenium.webdriver.common.by import By

    for row in browser.find_elements(By.CSS_SELECTOR, "#facts tr"):
        if row.find_element(By.TAG_NAME, "th").text == name:
            value: str = row.find_element(By.TAG_NAME, "td").text
            return value
    raise AssertionError(f"no {name!r} on the job page")


def test_a_job_from_the_form_is_registered_and_its_page_acts_on_it(api: Api, wiped: Client, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    # Given the form, opened and keyed as an operator would (the admin key)
    _open(browser, api, TOKEN, "/submit")
    # When a train job with a hostile name is submitted from it
    _submit(browser, {**GOOD, "epochs": "3", "imgsz": "320", "batch": "8", "name": HOSTILE}, tier="low")
    link = poll(lambda: browser.find_elements(By.CSS_SELECTOR, "#submitted a"), 15, "the submitted job's link")[0]
    # Then the registry has it as the form said, signed by the key
    record = wiped.job(link.text)
    assert (record.kind, record.tier.value, record.team, record.name) == ("train", "low", "vision", HOSTILE)
    assert {k: record.spec[k] for k in ("data", "epochs", "imgsz", "batch")} == {
        "data": "s3://datasets/coco8", "epochs": 3, "imgsz": 320, "batch": 8}  # fmt: skip
    assert record.submitted_by == "key:admin" and record.state is JobState.QUEUED
    # And its page shows it, the hostile name as text that ran nothing
    link.click()
    poll(lambda: _text(browser, "history") and "submitted" in _text(browser, "history"), 15, "the job's history")
    assert _fact(browser, "name") == HOSTILE and _fact(browser, "state") == "queued"
    assert browser.execute_script("return window.pwned === undefined")
    assert _fact(browser, "ETA to start") and "yoloq.low." in _fact(browser, "queue")
    # When the operator freezes, then cancels it from the page, Then the registry changes and the page says so
    assert _act(browser, "freeze") == "freeze: done"
    assert wiped.job(record.job_id).frozen
    assert _act(browser, "cancel") == "cancel: cancelled"
    assert wiped.job(record.job_id).state is JobState.CANCELLED
    poll(lambda: _fact(browser, "state") == "cancelled", 15, "the page to show the cancelled state")
    assert "key:admin" in _text(browser, "history")
    assert browser.execute_script("return window.pwned === undefined")


# Bad input as a user types it into the form and into `yoloq submit train` (same fields).
BAD = [{"epochs": "0"}, {"imgsz": "100"}, {"team": "Bad Team"}, {"dataset": "file:///etc/passwd"}]
FLAG = {"dataset": "--data", "team": "--team", "epochs": "--epochs", "imgsz": "--imgsz"}


def test_bad_input_shows_the_line_the_cli_prints(api: Api, wiped: Client, browser: Any, services: Any) -> None:
    _open(browser, api, TOKEN, "/submit")
    for bad in BAD:
        fields = {**GOOD, **bad}
        _submit(browser, fields)
        shown = poll(lambda: _text(browser, "submit-error"), 15, f"the form's error for {bad}")
        cli = yoloq_cli(services, "submit", "train", *[a for k, v in fields.items() for a in (FLAG[k], v)])
        assert cli.returncode == 1 and cli.stderr.strip() == f"yoloq: error: {shown}", (bad, shown, cli.stderr)
        assert "\n" not in shown and shown.startswith("invalid job spec: ")
    assert wiped.jobs() == []


def test_a_limited_key_sees_its_refusal_and_nothing_changes(api: Api, wiped: Client, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    keys = ApiKeys(connect(wiped.settings.redis_url), wiped.settings.redis_url)
    alice, cam = keys.create("alice", "vision", ["submit"], "test"), keys.create("cam", "vision", ["detect"], "test")
    job = wiped.submit({"kind": "probe", "seconds": 5, "tier": "low", "team": "vision"})
    # Given alice's page for her team's job (her key may submit and cancel, not freeze)
    _open(browser, api, alice, f"/jobs/{job.job_id}")
    poll(lambda: _text(browser, "history"), 15, "the job's history")
    # When she freezes it, Then the page shows the API's refusal, still shows the job, and nothing changed
    assert _act(browser, "freeze") == "key 'alice' may not freeze: that needs the admin or operate scope"
    assert not wiped.job(job.job_id).frozen and _fact(browser, "state") == "queued"
    assert _act(browser, "cancel") == "cancel: cancelled"
    # And the form refuses her another team's job, and a detect key any job
    browser.get(api.base + "/submit")
    _submit(browser, {**GOOD, "team": "risk"})
    assert poll(lambda: _text(browser, "submit-error"), 15, "the refusal") == (
        "key 'alice' acts for team vision, not for team risk")  # fmt: skip
    # (a detect key cannot open the page at all: it reads nothing; here it is entered on alice's page)
    browser.find_element(By.ID, "key").send_keys(cam)
    browser.find_element(By.ID, "key-use").click()
    _submit(browser, GOOD)
    assert poll(lambda: _text(browser, "submit-error"), 15, "the refusal") == (
        "key 'cam' may not submit: that needs the admin or submit scope")  # fmt: skip
    assert [j.job_id for j in wiped.jobs()] == [job.job_id]
