"""A real HTTP receiver for webhook tests: a threaded http.server on 127.0.0.1 that records
every POST, can answer with an error code, and can be down (its port closed) then up again
on the same port."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.helpers import free_port, wait_until


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def delivery(self) -> str:
        return self.headers.get("x-opsmedic-delivery", "")


class Receiver:
    """POSTs are recorded only when answered 2xx; `answer_next(n, code)` fails the next n."""

    def __init__(self) -> None:
        self.port = free_port()
        self.posts: list[Received] = []
        self.refused: list[Received] = []
        self._codes: list[tuple[int, str]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer_next(self, n: int, code: int, body: str = "busy") -> None:
        with self._lock:
            self._codes += [(code, body)] * n

    def _answer(self, got: Received) -> tuple[int, str]:
        with self._lock:
            code, body = self._codes.pop(0) if self._codes else (200, "ok")
            (self.posts if code < 300 else self.refused).append(got)
        return code, body

    def up(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length", "0"))
                got = Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                               self.rfile.read(size))  # fmt: skip
                code, body = receiver._answer(got)
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def down(self) -> None:
        """Close the port: connections are refused until up() again."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_posts(self, count: int, timeout: float = 30.0) -> list[Received]:
        wait_until(lambda: len(self.posts) >= count, timeout=timeout)
        return list(self.posts)
