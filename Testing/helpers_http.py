"""A real HTTP server on 127.0.0.1 for download tests: Range support, dropped connections, errors.

    with LocalServer() as server:
        server.add("/w.pth", data, drop_at=1000, drops=1)   # first answer stops after byte 1000
        url = server.url("/w.pth")
        ...
        server.requests   # [Request(path, range), ...] in arrival order
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_RANGE = re.compile(r"^bytes=(\d+)-$")


@dataclass
class Served:
    data: bytes
    ranges: bool = True  # False: ignore Range headers and answer 200 with everything
    drop_at: int | None = None  # close the connection once this file offset is reached ...
    drops: int | None = None  # ... this many times (None: every time)
    status: int = 200  # e.g. 404
    hang: bool = False  # accept the request, never answer (timeouts)
    length: bool = True  # False: no Content-Length, the body ends when the connection closes


@dataclass(frozen=True)
class Request:
    path: str
    range: str | None


class LocalServer:
    def __init__(self):
        self.files: dict[str, Served] = {}
        self.requests: list[Request] = []
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        # A short poll interval keeps shutdown (each test's teardown) quick.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> "LocalServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def add(self, path: str, data: bytes, **options) -> str:
        self.files[path] = Served(data, **options)
        return self.url(path)

    def url(self, path: str) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def ranged_requests(self) -> list[Request]:
        return [request for request in self.requests if request.range is not None]


def _handler_for(server: LocalServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_GET(self):
            server.requests.append(Request(self.path, self.headers.get("Range")))
            served = server.files.get(self.path)
            if served is None or served.status != 200:
                self.close_connection = True
                self.send_error(404 if served is None else served.status)
                return
            if served.hang:
                server._stop.wait(30)
                self.close_connection = True
                return
            self._answer(served)

        def _answer(self, served: Served):
            size = len(served.data)
            start = self._range_start(served)
            if start is not None and start >= size:
                self.close_connection = True
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._send_headers(served, start or 0, start is not None)
            self._send_body(served, start or 0)

        def _range_start(self, served: Served) -> int | None:
            match = _RANGE.match(self.headers.get("Range") or "")
            return int(match.group(1)) if served.ranges and match else None

        def _send_headers(self, served: Served, start: int, partial: bool):
            size = len(served.data)
            self.send_response(206 if partial else 200)
            if partial:
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            if served.ranges:
                self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            if served.length:
                self.send_header("Content-Length", str(size - start))
            else:
                self.close_connection = True
            self.end_headers()

        def _send_body(self, served: Served, start: int):
            end = len(served.data)
            dropping = served.drop_at is not None and served.drop_at > start and served.drops != 0
            if dropping:
                end = served.drop_at
                if served.drops is not None:
                    served.drops -= 1
                self.close_connection = True  # the socket closes after this short body
            self.wfile.write(served.data[start:end])
            self.wfile.flush()

    return Handler
