"""A real CloudEvents subscriber for broker tests (stdlib only, run as a process).

    python tests/event_sink.py PORT

``POST /<name>`` records each delivery attempt and answers by its query string:
``fail=N`` the first N attempts of each event id get ``status`` (503); ``ok=1`` answers
"OK" (what ``@functions_framework.cloud_event`` does); ``reply=TYPE`` answers a binary
CloudEvent of that type; otherwise 202 with an empty body. ``GET /_events`` lists the
attempts; ``GET /ready`` answers at once.
"""

from __future__ import annotations

import json
import sys
import threading
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

attempts: list[dict[str, Any]] = []
seen: Counter[tuple[str, str]] = Counter()
lock = threading.Lock()


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        with lock:
            body = json.dumps(attempts if self.path == "/_events" else {"ready": True}).encode()
        self._send(200, body, {"Content-Type": "application/json"})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        event_id = headers.get("ce-id", "")
        with lock:
            seen[(url.path, event_id)] += 1
            number = seen[(url.path, event_id)]
            failing = number <= int(query.get("fail", "0"))
            attempts.append(
                {
                    "path": url.path,
                    "attempt": number,
                    "failed": failing,
                    "headers": headers,
                    "data": data.decode(),
                }
            )
        if failing:
            self._send(
                int(query.get("status", "503")), b"induced failure", {"Content-Type": "text/plain"}
            )
        elif "ok" in query:
            self._send(200, b"OK", {"Content-Type": "text/plain"})
        elif "reply" in query:
            reply = {
                "ce-specversion": "1.0",
                "ce-id": str(uuid.uuid4()),
                "ce-source": "/tests/event-sink",
                "ce-type": query["reply"],
                "Content-Type": "application/json",
            }
            self._send(200, data or b"{}", reply)
        else:
            self._send(202, b"", {})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
