"""The operators' status page: static HTML whose script reads the JSON views with the browser's credentials."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Response

from yoloq.http.openapi import errors

router = APIRouter(tags=["page"], responses=errors())
PAGE = Path(__file__).with_name("status_page.html")


@router.get("/", response_class=Response, include_in_schema=False)
@router.get("/status", response_class=Response)
def status_page() -> Response:
    """Serve the page (never cached: it is small and changes with yoloq)."""
    return Response(PAGE.read_bytes(), media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-store"})
