"""A loopback JSON-over-HTTP server for tests and dry runs of remote judges (OpenAI-compatible stubs).

    class Echo(LoopbackServer):
        def answer(self, path, body):
            return 200, json.dumps({"choices": [{"index": 0, "text": "4"}]}).encode()

    with Echo() as server:            # serves on 127.0.0.1:<free port>
        backend = OpenAIBackend(RaterConfig(url=server.url, ...))

A subclass decides each POST's (status, body bytes) from the request path and JSON body; requests are
served on threads, so `answer` must be thread-safe when it keeps counts.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LoopbackServer:
    """Serves POSTs on 127.0.0.1 with `answer(path, body)`; `url` ends in /v1 like an OpenAI endpoint."""

    def __init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        raise NotImplementedError

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, payload = server.answer(self.path, body)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        return Handler

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
