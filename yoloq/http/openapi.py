"""What the OpenAPI document says beyond what FastAPI generates: the error answers, and the request rules it misses.

The document is a contract clients (and schemathesis, ``tests/integration/test_openapi_fuzz.py``) check answers
against, so each route lists the statuses it can really give, each with the ``{"error": "..."}`` body: the gate's on
every route (400 for a malformed Content-Length or a parameter or body that does not fit, 401, 403, 413 for a body
over the cap, 503 when Redis cannot check a key) and the route's own (404, 409; the detect route's 415, 422, 429 with
``Retry-After``). :func:`finish` drops FastAPI's generated 422 (a ``HTTPValidationError`` list: this API answers a
request that does not fit its model with a 400 and one line, :func:`yoloq.http.app._invalid`) and marks a
discriminator's property required in each schema it maps to (a job spec's ``kind`` has a default in Python, but the
JSON body must name it)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

GATE = (400, 401, 403, 413, 503)  # the gate: a malformed or oversized body, the key, its scope, Redis
WHY = {
    400: "bad input (a parameter, the body or its Content-Length); nothing changed",
    401: "no API key, or an unknown or revoked one",
    403: "the key's scope or team does not allow this",
    404: "no such job, model, alias or deployment",
    409: "the job's state does not allow this action now",
    413: "the request body is over the cap (1 MiB; the detect route's is YOLOQ_DETECT_MAX_MIB)",
    503: "Redis (the broker and registry) cannot be reached; retry later",
}


class ErrorBody(BaseModel):
    """Every error: one line, as the CLI prints it."""

    error: str


def errors(*codes: int, why: dict[int, str] | None = None, headers: dict[int, dict[str, Any]] | None = None) -> dict[
    int | str, dict[str, Any]
]:  # fmt: skip
    """A route's ``responses=``: the gate's statuses and ``codes``, each with the error body, so that the document
    lists every error the route gives; ``why`` overrides a description, ``headers`` documents response headers."""
    described = {**WHY, **(why or {})}
    answers: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorBody, "description": described[code]} for code in sorted({*GATE, *codes})
    }
    for code, documented in (headers or {}).items():
        answers[code]["headers"] = documented
    return answers


def finish(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` as the API behaves: no generated 422 answers, and every discriminator's property required."""
    schemas = document.get("components", {}).get("schemas", {})
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            _drop_validation_422(operation.get("responses", {}))
            for content in operation.get("requestBody", {}).get("content", {}).values():
                _require_discriminator(content.get("schema", {}), schemas)
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return document


def _drop_validation_422(responses: dict[str, Any]) -> None:
    schema = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
    if schema.get("$ref", "").endswith("/HTTPValidationError"):
        del responses["422"]


def _require_discriminator(schema: dict[str, Any], schemas: dict[str, Any]) -> None:
    """A pydantic tagged union refuses a body without its tag, whatever default the tag's field has."""
    tag = schema.get("discriminator", {}).get("propertyName")
    for ref in schema.get("discriminator", {}).get("mapping", {}).values() if tag else ():
        target = schemas.get(ref.rsplit("/", 1)[-1], {})
        if tag not in target.setdefault("required", []):
            target["required"].append(tag)
