"""A real HTTP endpoint for webhook tests: records every POST (event id, type, whether its signature verifies) and
answers as a test tells it (fail the first N, a fixed status, hold the first request open)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from routing.notify import EVENT_ID_HEADER, SIGNATURE_HEADER, verify


@dataclass
class Receiver:
    """An HTTP endpoint that records every POST (event id, type, signature valid) and answers as told."""

    secrets: dict[str, str] = field(default_factory=dict)  # path → secret that must sign the body
    fail_first: int = 0  # answer 500 to this many requests first
    status: int = 200
    hold: threading.Event | None = None  # when set, the first request waits for it before answering
    seen: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, path: str, headers: Any, payload: bytes) -> int:
        """Record one request and decide its status."""
        with self._lock:
            n = len(self.seen)
            doc = json.loads(payload)
            self.seen.append({
                "path": path, "id": headers[EVENT_ID_HEADER], "type": doc["type"], "doc": doc,
                "signed": verify(self.secrets.get(path, ""), headers[SIGNATURE_HEADER], payload, time.time()),
                "attempt": int(headers["X-Yoloq-Attempt"]),
            })  # fmt: skip
        if n == 0 and self.hold is not None:
            self.hold.wait(30)
        return 500 if n < self.fail_first else self.status

    def ids(self, event_type: str | None = None) -> list[str]:
        """Event ids received (of one type), in arrival order, duplicates kept."""
        return [s["id"] for s in list(self.seen) if event_type in (None, s["type"])]


@contextmanager
def serving_receiver() -> Iterator[Receiver]:
    """A receiver on a free local port, in a thread, shut down at the end."""
    recv = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            payload = self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(recv.handle(self.path, self.headers, payload))
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    recv.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield recv
    if recv.hold is not None:
        recv.hold.set()
    server.shutdown()
    server.server_close()
