"""A webhook endpoint in a thread (for tests that drive processes synchronously):
records every POST; answers ``status``, after ``delay`` seconds."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Post:
    """One request the sink received (and what it answered)."""

    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


class Sink:
    """``with Sink() as sink``: ``sink.url`` takes POSTs into ``sink.posts``."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.status = status
        self.delay = delay
        self.posts: list[Post] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = min(int(self.headers.get("Content-Length", "0")), 1 << 20)
                body = self.rfile.read(length)
                if sink.delay:
                    time.sleep(sink.delay)
                status = sink.status
                with sink._lock:
                    sink.posts.append(Post(dict(self.headers.items()), body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Sink:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def acknowledged(self) -> list[Post]:
        """The posts answered 2xx, in arrival order."""
        with self._lock:
            return [p for p in self.posts if 200 <= p.status < 300]

    def wait(self, predicate: Any, timeout: float = 30.0) -> None:
        """Until ``predicate(self)`` holds (AssertionError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            assert time.monotonic() < deadline, f"webhooks did not arrive: {len(self.posts)} posts"
            time.sleep(0.05)
