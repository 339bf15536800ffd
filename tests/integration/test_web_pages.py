"""Issue 18 item 8: the submit form and the job page in headless Chromium, against a real `yoloq api` and the
session's real Redis (no worker: submitted jobs stay queued). The form's errors are the CLI's lines for the same input,
job strings are text (a hostile name runs nothing), and a limited key's refusal is shown on the page."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from infra.api_keys import ApiKeys
from infra.redis_client import connect
from tasks.specs import TrainSpec
from tasks.states import JobState
from tests.fleet import poll, yoloq_cli
from tests.integration.test_api import ARTEFACTS, TOKEN, Api, serving_api
from yoloq.client import Client

pytestmark = pytest.mark.integration

HOSTILE = '<img src=x onerror="window.pwned=1">"><script>window.pwned=2</script>'
WAIT = 30  # seconds: a deadline for the page, never a timing claim (a loaded CI box is slow)
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
    driver.set_window_size(1280, 1000)  # whole forms in the kept screenshots
    yield driver
    driver.quit()


def _open(browser: Any, api: Api, key: str, path: str) -> None:
    """Open a page as the status page is opened (basic auth, the key as password) and enter the key for actions."""

    browser.get(api.base.replace("http://", f"http://ops:{key}@") + path)
    _enter_key(browser, key)


def _enter_key(browser: Any, key: str) -> None:
    """Type the key into the page's key box (once the page is there) and keep it for this tab."""
    from selenium.webdriver.common.by import By

    poll(lambda: browser.find_elements(By.ID, "key"), WAIT, "the page's key box")[0].send_keys(key)
    browser.find_element(By.ID, "key-use").click()
    assert browser.find_element(By.ID, "key").get_attribute("value") == ""  # kept in sessionStorage, not the field


def _text(browser: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    text: str = browser.find_element(By.ID, element_id).text
    return text


def _submit(browser: Any, fields: dict[str, str], kind: str = "train", tier: str = "") -> None:
    """Fill the form (every enabled text field: the ones not given are cleared; tier "": the team's default) and press
    Submit once the schema loaded."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    button = browser.find_element(By.ID, "f-submit")
    poll(button.is_enabled, WAIT, "the form to read the spec schema")
    Select(browser.find_element(By.ID, "f-kind")).select_by_visible_text(kind)
    tiers = Select(browser.find_element(By.ID, "f-tier"))
    tiers.select_by_visible_text(tier) if tier else tiers.select_by_value("")
    for name in ("dataset", "model", "epochs", "imgsz", "batch", "team", "name", "runtime", "gpus"):
        field = browser.find_element(By.ID, f"f-{name}")
        if not field.is_enabled():  # the kind (or this server's spec) has no such property: never sent
            assert name not in fields, name
            continue
        field.clear()
        if name in fields:
            field.send_keys(fields[name])
    button.click()


def _refused(browser: Any) -> None:
    """Fail at once with the form's error, when it shows one."""
    if shown := _text(browser, "submit-error"):
        raise AssertionError(f"the form shows an error: {shown}")


def _act(browser: Any, action: str) -> str:
    """Press an action's button and return the line the page shows for it."""
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, f'#actions button[data-action="{action}"]').click()
    line: str = poll(lambda: (t := _text(browser, "action-result")) and not t.endswith("…") and t, WAIT, action)
    return line


def _fact(browser: Any, name: str) -> str:
    """One row of the job's facts, read in one script (the page rebuilds its rows on every refresh)."""
    value = browser.execute_script(
        "const row = [...document.querySelectorAll('#facts tr')].find(r => r.cells[0].textContent === arguments[0]);"
        "return row ? row.cells[1].textContent : null;",
        name,
    )
    assert isinstance(value, str), f"no {name!r} on the job page"
    return value


# Form fields for spec properties that other work adds (issue 18): filled where the spec has them.
LATER = {"runtime": ("expected_minutes", "90"), "gpus": ("gpus", "1")}


def _kind_fits_the_form(browser: Any) -> None:
    """Each kind enables the fields its spec has: export has no dataset, epochs or batch; infer no epochs."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    poll(browser.find_element(By.ID, "f-submit").is_enabled, WAIT, "the form to read the spec schema")
    enabled = {}
    for kind in ("export", "infer", "train"):
        Select(browser.find_element(By.ID, "f-kind")).select_by_visible_text(kind)
        fields = ("dataset", "epochs", "batch", "imgsz")
        enabled[kind] = {f for f in fields if browser.find_element(By.ID, f"f-{f}").is_enabled()}
    assert enabled == {"export": {"imgsz"}, "infer": {"dataset", "batch", "imgsz"},
                       "train": {"dataset", "epochs", "batch", "imgsz"}}  # fmt: skip
    for field, (name, _) in LATER.items():
        assert browser.find_element(By.ID, f"f-{field}").is_enabled() == (name in TrainSpec.model_fields), field


def test_a_job_from_the_form_is_registered_and_its_page_acts_on_it(api: Api, wiped: Client, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    # Given the form, opened and keyed as an operator would (the admin key)
    _open(browser, api, TOKEN, "/submit")
    _kind_fits_the_form(browser)
    # When a train job with a hostile name is submitted from it (and the fields other work adds, where the spec has
    # them: the form reads the spec's schema from /openapi.json, and sends a property only where it exists)
    extra = {field: value for field, (name, value) in LATER.items() if name in TrainSpec.model_fields}
    _submit(browser, {**GOOD, "epochs": "3", "imgsz": "320", "batch": "8", "name": HOSTILE, **extra}, tier="low")
    link = poll(lambda: browser.find_elements(By.CSS_SELECTOR, "#submitted a") or _refused(browser), WAIT, "a link")[0]
    # Then the registry has it as the form said, signed by the key
    record = wiped.job(link.text)
    assert (record.kind, record.tier.value, record.team, record.name) == ("train", "low", "vision", HOSTILE)
    assert {k: record.spec[k] for k in ("data", "epochs", "imgsz", "batch")} == {
        "data": "s3://datasets/coco8", "epochs": 3, "imgsz": 320, "batch": 8}  # fmt: skip
    assert {LATER[f][0]: record.spec[LATER[f][0]] for f in extra} == {LATER[f][0]: int(v) for f, v in extra.items()}
    assert record.submitted_by == "key:admin" and record.state is JobState.QUEUED
    # And its page shows it, the hostile name as text that ran nothing
    link.click()
    poll(lambda: _text(browser, "history") and "submitted" in _text(browser, "history"), WAIT, "the job's history")
    assert _fact(browser, "name") == HOSTILE and _fact(browser, "state") == "queued"
    assert browser.execute_script("return window.pwned === undefined")
    assert _fact(browser, "ETA to start") and "yoloq.low." in _fact(browser, "queue")
    if "runtime" in extra:  # the submitter's expectation is the estimate while no history of its shape exists
        assert _fact(browser, "expected runtime").startswith("90.0 min")
    # When the operator freezes, promotes, then cancels it from the page, Then the registry changes and the page says so
    assert _act(browser, "freeze") == "freeze: done"
    assert wiped.job(record.job_id).frozen
    Select(browser.find_element(By.ID, "promote-tier")).select_by_visible_text("high")
    assert _act(browser, "promote").startswith("promote: {")
    assert wiped.job(record.job_id).tier.value == "high"
    assert _act(browser, "cancel") == "cancel: cancelled"
    assert wiped.job(record.job_id).state is JobState.CANCELLED
    poll(lambda: _fact(browser, "state") == "cancelled", WAIT, "the page to show the cancelled state")
    assert "key:admin" in _text(browser, "history")
    assert browser.execute_script("return window.pwned === undefined")
    ARTEFACTS.mkdir(exist_ok=True)
    browser.set_window_size(1280, 1600)  # the whole job page
    assert browser.save_screenshot(str(ARTEFACTS / "job-page.png"))


# Bad input as a user types it into the form and into `yoloq submit train` (same fields).
BAD = [{"epochs": "0"}, {"imgsz": "100"}, {"team": "Bad Team"}, {"dataset": "file:///etc/passwd"}]
FLAG = {
    "dataset": "--data",
    "team": "--team",
    "epochs": "--epochs",
    "imgsz": "--imgsz",
    "runtime": "--expected-minutes",
}


def test_bad_input_shows_the_line_the_cli_prints(api: Api, wiped: Client, browser: Any, services: Any) -> None:
    _open(browser, api, TOKEN, "/submit")
    for bad in BAD + ([{"runtime": "0"}] if "expected_minutes" in TrainSpec.model_fields else []):
        fields = {**GOOD, **bad}
        _submit(browser, fields)
        shown = poll(lambda: _text(browser, "submit-error"), WAIT, f"the form's error for {bad}")
        cli = yoloq_cli(services, "submit", "train", *[a for k, v in fields.items() for a in (FLAG[k], v)])
        assert cli.returncode == 1 and cli.stderr.strip() == f"yoloq: error: {shown}", (bad, shown, cli.stderr)
        assert "\n" not in shown and shown.startswith("invalid job spec: ")
    assert wiped.jobs() == []
    ARTEFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTEFACTS / "submit-page.png"))


def test_a_limited_key_sees_its_refusal_and_nothing_changes(api: Api, wiped: Client, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    keys = ApiKeys(connect(wiped.settings.redis_url), wiped.settings.redis_url)
    alice, cam = keys.create("alice", "vision", ["submit"], "test"), keys.create("cam", "vision", ["detect"], "test")
    job = wiped.submit({"kind": "probe", "seconds": 5, "tier": "low", "team": "vision"})
    # Given alice's page for her team's job, reached from the status page (her key may submit and cancel, not freeze)
    browser.get(api.base.replace("http://", f"http://ops:{alice}@") + "/status")
    to_job = f'#waiting a[href="/jobs/{job.job_id}"]'
    poll(lambda: browser.find_elements(By.CSS_SELECTOR, to_job), WAIT, "the status page's link to the job")[0].click()
    _enter_key(browser, alice)
    poll(lambda: _text(browser, "history"), WAIT, "the job's history")
    # When she freezes it, Then the page shows the API's refusal, still shows the job, and nothing changed
    assert _act(browser, "freeze") == "key 'alice' may not freeze: that needs the admin or operate scope"
    assert not wiped.job(job.job_id).frozen and _fact(browser, "state") == "queued"
    assert _act(browser, "cancel") == "cancel: cancelled"
    # And the form refuses her another team's job, and a detect key any job
    browser.get(api.base + "/submit")
    _submit(browser, {**GOOD, "team": "risk"})
    assert poll(lambda: _text(browser, "submit-error"), WAIT, "the refusal") == (
        "key 'alice' acts for team vision, not for team risk")  # fmt: skip
    # (a detect key cannot open the page at all: it reads nothing; here it is entered on alice's page)
    _enter_key(browser, cam)
    _submit(browser, GOOD)
    assert poll(lambda: _text(browser, "submit-error"), WAIT, "the refusal") == (
        "key 'cam' may not submit: that needs the admin or submit scope")  # fmt: skip
    assert [j.job_id for j in wiped.jobs()] == [job.job_id]
