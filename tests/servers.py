"""Real HTTP servers on 127.0.0.1 for the fetch tests (no mocks of the HTTP layer).

:class:`ArchiveServer` serves a folder (an SAS-like tree), and optionally
dynamic endpoints (a DAS-like cutout service behind basic auth, a SkyServer-like
SQL endpoint). It counts every request per path, records their times, tracks
the largest number of requests served at once, and injects faults per path:

- ``("status", code)`` — answer ``code`` (e.g. 500);
- ``("retry_after", code, seconds)`` — answer ``code`` (429/503) with ``Retry-After``;
- ``("stall", seconds)`` — say nothing for ``seconds`` (the client times out);
- ``("cut", fraction)`` — announce the full length, send a fraction, close;
- ``("short", fraction)`` — send a consistent but truncated file;
- ``("delay", seconds)`` — answer normally after a pause (for concurrency).
"""

from __future__ import annotations

import base64
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

__all__ = ["ArchiveServer", "closed_port"]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True


class ArchiveServer:
    """A threaded HTTP server on an ephemeral port of 127.0.0.1.

    Parameters
    ----------
    root : Path, optional
        Folder served for paths not claimed by an endpoint.
    endpoints : dict, optional
        ``{path: handler}`` where ``handler(params) -> (status, bytes, content_type)``
        and ``params`` maps query names to single values.
    auth : tuple of str, optional
        ``(user, password)`` required (basic auth) on ``auth_paths``.
    auth_paths : tuple of str
        Path prefixes that need ``auth``.
    """

    def __init__(
        self,
        root: Path | None = None,
        endpoints: dict[str, Callable] | None = None,
        auth: tuple[str, str] | None = None,
        auth_paths: tuple[str, ...] = (),
    ):
        self.root = Path(root) if root else None
        self.endpoints = dict(endpoints or {})
        self.auth = auth
        self.auth_paths = auth_paths
        self.faults: dict[str, list[tuple]] = defaultdict(list)
        self.counts: Counter[str] = Counter()
        self.times: dict[str, list[float]] = defaultdict(list)
        self.statuses: list[tuple[str, int]] = []
        self.auth_headers: list[str] = []
        self._lock = threading.Lock()
        self._inflight = 0
        self.max_inflight = 0
        self._httpd = _Server(("127.0.0.1", 0), self._handler_class())
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> ArchiveServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def add_fault(self, path: str, *faults: tuple) -> None:
        """Queue faults for the next requests of ``path`` (one per request)."""
        self.faults["/" + path.lstrip("/")].extend(faults)

    def requests_under(self, prefix: str) -> int:
        """Number of requests whose path starts with ``prefix``."""
        prefix = "/" + prefix.lstrip("/")
        return sum(n for p, n in self.counts.items() if p.startswith(prefix))

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(
                self,
                status: int,
                body: bytes,
                ctype: str = "application/octet-stream",
                headers: dict | None = None,
                length: int | None = None,
                send: bytes | None = None,
            ):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                try:
                    self.wfile.write(body if send is None else send)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                with server._lock:
                    server.statuses.append((self.path, status))

            def do_GET(self):  # noqa: N802 (http.server API)
                parts = urlsplit(self.path)
                path = parts.path
                with server._lock:
                    server.counts[path] += 1
                    server.times[path].append(time.monotonic())
                    fault = server.faults[path].pop(0) if server.faults.get(path) else None
                    server.auth_headers.append(self.headers.get("Authorization", ""))
                if fault and fault[0] == "stall":
                    time.sleep(fault[1])
                    self.close_connection = True
                    return
                with server._lock:
                    server._inflight += 1
                    server.max_inflight = max(server.max_inflight, server._inflight)
                try:
                    self._answer(path, parts.query, fault)
                finally:
                    with server._lock:
                        server._inflight -= 1

            def _answer(self, path, query, fault):
                if fault and fault[0] == "delay":
                    time.sleep(fault[1])
                    fault = None
                if fault and fault[0] == "status":
                    self._send(fault[1], b"server error\n", "text/plain")
                    return
                if fault and fault[0] == "retry_after":
                    self._send(fault[1], b"slow down\n", "text/plain", {"Retry-After": str(fault[2])})
                    return
                if server.auth and path.startswith(server.auth_paths):
                    expected = "Basic " + base64.b64encode(":".join(server.auth).encode()).decode()
                    if self.headers.get("Authorization") != expected:
                        self._send(
                            401, b"unauthorized\n", "text/plain", {"WWW-Authenticate": 'Basic realm="das"'}
                        )
                        return
                if path in server.endpoints:
                    params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
                    status, body, ctype = server.endpoints[path](params)
                else:
                    file = (server.root / path.lstrip("/")) if server.root else None
                    if file is None or not file.is_file():
                        self._send(404, b"not found\n", "text/plain")
                        return
                    status, body, ctype = 200, file.read_bytes(), "application/octet-stream"
                if fault and fault[0] == "cut":
                    n = int(len(body) * fault[1])
                    self._send(status, body, ctype, length=len(body), send=body[:n])
                    self.close_connection = True
                    return
                if fault and fault[0] == "short":
                    body = body[: int(len(body) * fault[1])]
                self._send(status, body, ctype)

        return Handler


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (connection refused)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
