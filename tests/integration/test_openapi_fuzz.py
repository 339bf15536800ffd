"""Issue 16: a schemathesis run against the OpenAPI document of a real `yoloq api` finds no 5xx, no response that
breaks its declared schema and no undocumented status.

Every operation of ``/openapi.json`` (fetched with the admin token, as a client would) is fuzzed over HTTP with
schemathesis's generated requests in three passes: valid ones (positive mode), ones that break the schema (negative
mode) and valid ones on objects that exist (a queued job, model ``parts`` with two versions, ``parts@prod``
deployed, a stand-in replica answering its queue), with a fixed seed and :data:`EXAMPLES` per operation and pass,
against the session's real Redis and S3. Then the schemathesis command line runs its own phases over the same
document (the schema's examples, coverage, fuzzing, stateful sequences over inferred links). Jobs the fuzzer submits
stay queued (no worker runs here); the registry is wiped before and after. ``YOLOQ_FUZZ_SEED`` and
``YOLOQ_FUZZ_EXAMPLES`` make a deeper run (seed 7 with 250 examples: 15,501 requests, nothing found)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fleet import clean_redis
from tests.integration.test_api import TOKEN, Api, serving_api
from tests.integration.test_detect_api import Replica, deploy

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("YOLOQ_FUZZ_SEED", "16"))  # a deeper run: YOLOQ_FUZZ_SEED, YOLOQ_FUZZ_EXAMPLES
EXAMPLES = int(
    os.environ.get("YOLOQ_FUZZ_EXAMPLES", "40")
)  # per operation and pass: ~24 operations x 2-3 passes x 40 ~ 2,500 requests, under a minute here
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]  # fmt: skip
PHASES = [Phase.explicit, Phase.generate, Phase.shrink]  # no replay database: every run is the seed's run
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# A rate high enough that the fuzzer reaches the upload checks rather than only the 429, and a short replica wait
SETTINGS = {"YOLOQ_DETECT_TIMEOUT_S": "2", "YOLOQ_DETECT_RATE": "1000", "YOLOQ_DETECT_BURST": "1000"}
Tally = dict[str, Counter[int]]


@pytest.fixture(scope="module")
def api(services: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One `yoloq api` on a wiped registry holding model ``parts`` (v1, v2), ``parts@prod`` → v1, deployed."""
    clean_redis(services)
    deploy(services, tmp_path_factory.mktemp("fuzz-models"), versions=2)
    with serving_api(services, "openapi-fuzz", SETTINGS) as running:
        yield running
    clean_redis(services)


def fuzz(strategy: st.SearchStrategy[Case[Any]], base: str, seen: Counter[int]) -> Callable[[], None]:
    """A Hypothesis test over ``strategy`` that sends each case with the admin token and runs :data:`CHECKS`."""

    @seed(SEED)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=False, phases=PHASES,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=strategy)
    def run(case: Case[Any]) -> None:
        response = case.call_and_validate(base_url=base, headers=AUTH, checks=CHECKS, timeout=30)
        seen[response.status_code] += 1

    return run


def passes(
    operation: APIOperation[Any, Any, Any, Any], known: dict[str, str]
) -> Iterator[tuple[str, st.SearchStrategy[Case[Any]]]]:
    """Valid requests, invalid ones, and (for an operation with path parameters) valid ones on objects that exist."""
    yield "positive", operation.as_strategy(GenerationMode.POSITIVE)
    yield "negative", operation.as_strategy(GenerationMode.NEGATIVE)
    names = {p.name for p in operation.path_parameters}
    if names:
        pinned = {name: known[name] for name in names}
        yield "existing", operation.as_strategy(GenerationMode.POSITIVE, path_parameters=pinned)


def test_the_document_says_what_the_api_does(api: Api) -> None:
    code, document = api.call("GET", "/openapi.json")
    assert code == 200 and "HTTPValidationError" not in json.dumps(document)  # a body that does not fit is a 400
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            errors = {status: answer for status, answer in operation["responses"].items() if status >= "400"}
            assert path == "/healthz" or {"400", "401", "403", "413", "503"} <= set(errors), (method, path)
            schemas = {answer["content"]["application/json"]["schema"]["$ref"] for answer in errors.values()}
            assert schemas <= {"#/components/schemas/ErrorBody"}, (method, path, schemas)
    specs = document["components"]["schemas"]
    assert all(
        "kind" in specs[name]["required"] for name in ("TrainSpec", "InferSpec", "ExportSpec", "ProbeSpec", "ServeSpec")
    )
    # A spec without its kind was "request body must be a JSON object"
    assert api.call("POST", "/api/v1/jobs", {"team": "vision"}) == (
        400,
        {"error": "invalid job spec: kind: Field required"},
    )
    code, doc = api.call("POST", "/api/v1/jobs", {"kind": "nap", "team": "vision"})
    assert code == 400 and doc["error"].startswith("invalid job spec: kind: 'nap' is not one of 'train', 'infer'"), doc


def test_schemathesis_finds_no_5xx_and_no_schema_violation(api: Api, services: Any) -> None:
    # Given a job (queued: no worker runs here), model parts with an alias and a deployment, and a replica
    code, submitted = api.call("POST", "/api/v1/jobs", {"kind": "probe", "seconds": 1, "tier": "low", "team": "vision"})
    assert code == 201, submitted
    code, hook = api.call("POST", "/api/v1/webhooks", {"url": "http://127.0.0.1:9/fuzz", "team": "vision"})
    assert code == 201, hook  # (port 9: a test POST to it is refused at once)
    known = {
        "job_id": submitted["job_id"],
        "name": "parts",
        "label": "prod",
        "alias": "parts",
        "webhook_id": hook["id"],
    }
    code, document = api.call("GET", "/openapi.json")
    assert code == 200
    schema = schemathesis.openapi.from_dict(document)
    failures: dict[str, str] = {}
    tally: Tally = {}
    with Replica(services) as replica:  # answers what reaches parts@prod's queue (200, or 422 if it does not decode)
        for result in schema.get_all_operations():
            if not isinstance(result, Ok):
                failures[f"the document: {result.err()}"] = "an operation schemathesis cannot read"
                continue
            operation = result.ok()
            for name, strategy in passes(operation, known):
                label = f"{operation.method.upper()} {operation.path} [{name}]"
                try:
                    fuzz(strategy, api.base, tally.setdefault(label, Counter()))()
                except Unsatisfiable:  # negative mode on an operation with nothing to break (no parameter, no body)
                    tally.pop(label)
                except (Exception, BaseExceptionGroup) as err:  # every operation runs; the report lists what failed
                    failures[label] = _short(err)
    _report(tally, len(replica.seen))
    assert not failures, "\n\n".join(f"{label}:\n{why}" for label, why in failures.items())
    # Every operation was reached, and deep enough to answer its own statuses, not only the gate's 400
    operations = {label.rsplit(" [", 1)[0] for label in tally}
    assert len(operations) == sum(len(methods) for methods in document["paths"].values()) >= 24
    total = sum(tally.values(), Counter())
    assert {200, 201, 400, 404, 409, 415} <= set(total), total
    assert not [code for code in total if code >= 500]


def test_the_schemathesis_cli_over_every_phase_finds_nothing(api: Api, services: Any, tmp_path: Path) -> None:
    # The command line's run adds what the loop above does not: the schema's examples, the coverage phase (boundary
    # and missing values, each parameter alone) and stateful sequences over inferred links (a submitted job's id fed
    # to its actions)
    code, document = api.call("GET", "/openapi.json")
    assert code == 200
    (tmp_path / "openapi.json").write_text(json.dumps(document))
    checks = ",".join(check.__name__ for check in CHECKS)
    command = [sys.executable, "-m", "schemathesis.cli", "run", str(tmp_path / "openapi.json"), "--url", api.base,
               "--header", f"Authorization: Bearer {TOKEN}", "--checks", checks, "--max-examples", str(EXAMPLES // 2),
               "--seed", str(SEED), "--phases", "examples,coverage,fuzzing,stateful", "--no-color"]  # fmt: skip
    with Replica(services):
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    summary = done.stdout[done.stdout.find("SUMMARY") :]
    print(f"\nschemathesis run: {summary}")
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    tested = re.search(r"Tested: (\d+)", summary)
    generated = re.search(r"(\d+) generated, (\d+) passed", summary)
    assert tested and int(tested[1]) == sum(len(methods) for methods in document["paths"].values())
    assert generated and generated[1] == generated[2] and int(generated[1]) > 500, summary


def _report(tally: Tally, replied: int) -> None:
    """What ran, for the log (pytest -s): requests and statuses per operation and pass."""
    total = sum(tally.values(), Counter())
    print(f"\n{len(tally)} passes, {sum(total.values())} requests, statuses {dict(sorted(total.items()))}, "
          f"{replied} answered by the replica")  # fmt: skip
    for label, seen in tally.items():
        print(f"  {label}: {dict(sorted(seen.items()))}")


def _short(err: BaseException) -> str:
    """A failure's first lines (what, the response and the curl that reproduces it)."""
    return "\n".join(str(err).splitlines()[:14])
