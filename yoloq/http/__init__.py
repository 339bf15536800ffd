"""The HTTP API (FastAPI, served by uvicorn through ``yoloq api``): routers per resource, one auth dependency,
JSON errors, the status page and ``/metrics``. Build it with :func:`yoloq.http.app.make_app`."""
