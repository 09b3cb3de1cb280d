"""A real, deliberately slow HTTP backend for gateway tests (stdlib only, run as a process).

    python tests/echo_server.py PORT
Every request answers JSON with its method, path and headers after sleeping ``?sleep=S``
seconds; ``GET /ready`` answers at once.
"""

from __future__ import annotations

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        url = urlsplit(self.path)
        time.sleep(float(parse_qs(url.query).get("sleep", ["0"])[0]))
        length = int(self.headers.get("Content-Length") or 0)
        body = json.dumps(
            {
                "method": self.command,
                "path": url.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body_bytes": len(self.rfile.read(length)),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
