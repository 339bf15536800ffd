"""The operators' pages in-process (TestClient over a fake Client): behind the same gate as the API, never cached or
framed, scripts pinned by hash in their Content-Security-Policy, and the submit form's fields named as the specs
name them. Driven in Chromium against a real API in tests/integration/test_web_pages.py."""

from __future__ import annotations

import base64
import hashlib
import re
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from routing.access import Principal
from tasks.specs import ExportSpec, InferSpec, TrainSpec
from yoloq.http.app import make_app
from yoloq.http.page import HERE, rendered

pytestmark = pytest.mark.unit

TOKEN = "t0ken"
KEYS = {"k-detect": Principal("cam", "vision", frozenset({"detect"})),
        "k-submit": Principal("alice", "vision", frozenset({"submit"}))}  # fmt: skip
PAGES = ("/status", "/", "/submit", "/jobs/j-1")


def _basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"ops:{key}".encode()).decode()}


class NoJobs:
    registry = SimpleNamespace(client=None)

    def prepare(self) -> NoJobs:
        return self


@pytest.fixture
def http() -> TestClient:
    return TestClient(make_app(NoJobs(), TOKEN, KEYS.get), raise_server_exceptions=False)  # type: ignore[arg-type]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_is_behind_the_gate_as_a_read(http: TestClient, path: str) -> None:
    assert http.get(path).status_code == 401
    assert http.get(path, headers=_basic("wrong")).status_code == 401
    refused = http.get(path, headers=_basic("k-detect"))  # a detect key opens no view of the fleet
    assert refused.status_code == 403 and "may not read" in refused.json()["error"]
    page = http.get(path, headers=_basic("k-submit"))
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_a_job_page_takes_only_a_job_id(http: TestClient) -> None:
    assert http.get("/jobs/j%20<b>", headers=_basic("k-submit")).status_code == 400
    assert http.get("/jobs/a/b", headers=_basic("k-submit")).status_code == 404


@pytest.mark.parametrize("name", ["status_page.html", "submit_page.html", "job_page.html"])
def test_the_policy_allows_exactly_the_pages_own_scripts(name: str) -> None:
    html, policy = rendered(name)
    scripts = re.findall(r"<script>(.*?)</script>", html.decode(), re.DOTALL)
    assert scripts and "/* yoloq:common */" not in html.decode()
    allowed = re.findall(r"'sha256-([A-Za-z0-9+/=]+)'", policy)
    assert allowed == [base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() for s in scripts]
    assert "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    assert not re.search(r"\son[a-z]+\s*=", html.decode()), "inline handlers would be blocked by the policy"


@pytest.mark.parametrize("name", ["submit_page.html", "job_page.html", "page_common.js"])
def test_job_strings_reach_the_page_only_as_text(name: str) -> None:
    source = (HERE / name).read_text()
    assert "innerHTML" not in source and "insertAdjacentHTML" not in source and "document.write" not in source
    assert "localStorage" not in source and "document.cookie" not in source  # the key lives in this tab only


# Fields the form renders that a spec does not have yet (other work adds them); sent only once /openapi.json has them.
PENDING = {"gpus"}


def test_the_form_names_the_spec_properties() -> None:
    source = (HERE / "submit_page.html").read_text()
    block = source.split("const PROPERTY = {", 1)[1].split("};", 1)[0]
    named = set(re.findall(r'"([a-z_]+)"', block))
    specs = {**TrainSpec.model_fields, **InferSpec.model_fields, **ExportSpec.model_fields}
    assert named - PENDING <= set(specs), named - set(specs)
    assert {"data", "source", "model", "epochs", "imgsz", "batch", "tier", "team"} <= named
