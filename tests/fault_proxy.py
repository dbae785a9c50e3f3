"""An HTTP proxy for tests, in a thread, in front of the moto S3 server: it can refuse or
hang every connection (an outage), cut short a share of the GET bodies it forwards,
answer a share of requests with S3's 503 SlowDown, a 500 or a reset before they reach
the server, and add latency to every request.

One request per connection (the answer says ``Connection: close``), so a mode switch
takes effect at the next request. Successful PUTs are counted by path, to find
duplicate writes.
"""

from __future__ import annotations

import contextlib
import http.client
import random
import socket
import struct
import threading
import urllib.parse
from collections import Counter


class FaultProxy:
    """``mode`` is ``"pass"``, ``"refuse"`` (connections reset at once) or ``"hang"``
    (connections accepted, never answered); ``truncate`` is the share of GET answers
    whose body is cut in half and the connection reset; ``faults`` is the share of requests
    answered, in turn, with 503 SlowDown, 500 InternalError or a reset, without reaching
    the server (as a throttling front end does); ``latency`` is added to every request."""

    def __init__(self, upstream: str, truncate: float = 0.0, seed: int = 0):
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.mode = "pass"
        self.truncate = truncate
        self.truncated = 0
        self.faults = 0.0
        self.latency = 0.0
        self.injected: Counter[str] = Counter()
        self.puts: Counter[str] = Counter()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._stopped.set()
        self._sock.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            if self.mode == "refuse":
                _reset(conn)
                return
            if self.mode == "hang":
                self._stopped.wait(600)
                return
            if self.latency:
                self._stopped.wait(self.latency)
            with contextlib.suppress(OSError):
                self._forward(conn)

    def _forward(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        request_line = reader.readline().decode("latin-1").rstrip("\r\n")
        if not request_line:
            return
        method, target, _ = request_line.split(" ", 2)
        headers: list[tuple[str, str]] = []
        while True:
            line = reader.readline().decode("latin-1").rstrip("\r\n")
            if not line:
                break
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        length = int(next((v for n, v in headers if n.lower() == "content-length"), "0"))
        body = reader.read(length) if length else b""
        with self._lock:
            fault = None
            if self.faults and self._random.random() < self.faults:
                fault = ("503", "500", "reset")[sum(self.injected.values()) % 3]
                self.injected[fault] += 1
        if fault == "reset":
            _reset(conn)
            return
        if fault is not None:
            code, reason = ("SlowDown", "Slow Down") if fault == "503" else ("InternalError", "")
            xml = (
                f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                f"<Message>injected by the test proxy</Message></Error>"
            ).encode()
            conn.sendall(
                f"HTTP/1.1 {fault} {reason or 'Internal Server Error'}\r\n"
                f"Content-Type: application/xml\r\nContent-Length: {len(xml)}\r\n"
                "Connection: close\r\n\r\n".encode("latin-1")
                + xml
            )
            return
        upstream = http.client.HTTPConnection(*self.upstream, timeout=60)
        upstream.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            if name.lower() not in ("connection", "keep-alive"):
                upstream.putheader(name, value)
        upstream.putheader("Connection", "close")
        upstream.endheaders(body or None)
        response = upstream.getresponse()
        data = response.read()
        upstream.close()
        if self.mode != "pass":  # the outage began while this request was forwarded
            _reset(conn)
            return
        if method == "PUT" and response.status == 200:
            with self._lock:
                self.puts[urllib.parse.urlsplit(target).path] += 1
        head = [f"HTTP/1.1 {response.status} {response.reason}"]
        for name, value in response.getheaders():
            if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                head.append(f"{name}: {value}")
        head += [f"Content-Length: {len(data)}", "Connection: close", "", ""]
        conn.sendall("\r\n".join(head).encode("latin-1"))
        with self._lock:
            cut = method == "GET" and len(data) > 64 and self._random.random() < self.truncate
            self.truncated += cut
        if cut:
            conn.sendall(data[: len(data) // 2])
            _reset(conn)
            return
        conn.sendall(data)


def _reset(conn: socket.socket) -> None:
    """Close with a TCP reset, as a dropped connection looks to the client."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
