"""The operators' pages: static HTML whose scripts read the JSON views with the browser's credentials.

``/status`` (the fleet), ``/submit`` (a job form posting to ``POST /api/v1/jobs``) and ``/jobs/{id}`` (one job's
history and the operator actions). The pages hold no data and no key: their scripts fetch the JSON routes, reads with
the browser's basic auth, writes with a bearer key the operator enters once per tab (kept in ``sessionStorage``; the
gate refuses basic auth for writes and cross-origin writes, so there is no cookie and nothing to forge). Each answer
carries a Content-Security-Policy that allows only the page's own inline script (by hash) and same-origin fetches.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from pathlib import Path

from fastapi import APIRouter, Response

from yoloq.http.jobs import JobId
from yoloq.http.openapi import errors

router = APIRouter(tags=["page"], responses=errors())
HERE = Path(__file__).parent
COMMON = "/* yoloq:common */"  # where page_common.js goes in a page's script
_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


@functools.cache
def rendered(name: str) -> tuple[bytes, str]:
    """A page's HTML (the shared script inlined) and its Content-Security-Policy: read once, they ship with yoloq."""
    html = (HERE / name).read_text().replace(COMMON, (HERE / "page_common.js").read_text())
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in _SCRIPT.findall(html)
    )
    policy = (f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; connect-src 'self'; "
              "img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")  # fmt: skip
    return html.encode(), policy


def _page(name: str) -> Response:
    """Serve a page (never cached: it is small and changes with yoloq; never framed: its buttons act)."""
    html, policy = rendered(name)
    return Response(html, media_type="text/html; charset=utf-8",
                    headers={"Cache-Control": "no-store", "Content-Security-Policy": policy})  # fmt: skip


@router.get("/", response_class=Response, include_in_schema=False)
@router.get("/status", response_class=Response)
def status_page() -> Response:
    """The fleet: queues, GPUs, waiting jobs, decisions, SLA."""
    return _page("status_page.html")


@router.get("/submit", response_class=Response, include_in_schema=False)
def submit_page() -> Response:
    """A form for one job, sent through the same route and validation as ``yoloq submit`` and the Python API."""
    return _page("submit_page.html")


@router.get("/jobs/{job_id}", response_class=Response, include_in_schema=False)
def job_page(job_id: JobId) -> Response:
    """One job: history, progress, attempts and the actions (its script reads the id from the URL)."""
    return _page("job_page.html")
