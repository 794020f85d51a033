"""A local merchant endpoint for webhooks: an HTTP server on 127.0.0.1 that answers as told.

Notebooks and tests point a webhook endpoint at ``Receiver().url`` and watch what arrives, and how the deliverer
copes when the merchant misbehaves::

    with Receiver([secret]) as receiver:            # verifies Payment-Signature: a bad one gets 400
        endpoints.add("m_1", receiver.url)
        ...                                         # deliver
        receiver.behaviour = "error"                # from now on: 500
        print(receiver.ids())                       # event ids delivered with a 2xx, in arrival order

Behaviours: ``ok`` (200 once the signature verifies, when secrets are given), ``fail`` (400), ``error`` (500),
``timeout`` (no answer: holds the request ``delay`` s, 30 s by default, then drops it), ``slow`` (200 after
``delay`` s), ``flaky`` (500 for the first ``fail_first`` requests, then as ``ok``). Every request is recorded in
``received``, answered or not. Sleeps wait on an event that ``__exit__`` sets, so leaving the ``with`` block is
quick even while a request hangs, and it returns only once every thread it started has ended.
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from payment_examples.core.clock import Clock, SystemClock
from payment_examples.core.signatures import SIGNATURE_HEADER, SignatureVerificationError, verify_signature

Behaviour = Literal["ok", "fail", "error", "timeout", "slow", "flaky"]
BEHAVIOURS: tuple[Behaviour, ...] = ("ok", "fail", "error", "timeout", "slow", "flaky")
TIMEOUT_HOLD_S = 30.0  # "timeout" without a delay: longer than any client's timeout


@dataclass(frozen=True)
class Received:
    """One request as it arrived. ``status`` is None when it got no answer (``timeout``, or the receiver stopped);
    ``error`` is the signature check's reason when that refused it."""

    at: datetime
    headers: dict[str, str]
    body: bytes
    status: int | None
    error: str | None = None


class Receiver:
    """A merchant endpoint on 127.0.0.1 for the span of a ``with`` block (see the module's docstring)."""

    def __init__(
        self,
        secrets: Sequence[str] = (),
        *,
        behaviour: Behaviour = "ok",
        delay: float = 0.0,
        tolerance: int = 300,
        fail_first: int = 1,
        clock: Clock | None = None,
        port: int = 0,
    ) -> None:
        """``clock`` is what signatures are checked against: pass the deliverer's when it signs with a fixed one.
        ``port``: 0 for a free one; a given port brings an endpoint that was down up where it was registered."""
        if not 0 <= port <= 65535:
            raise ValueError("port must be between 0 and 65535")
        self.port = port
        self.secrets = list(secrets)
        self.delay = delay
        self.tolerance = tolerance
        self.fail_first = fail_first
        self.clock = clock or SystemClock()
        self.behaviour = behaviour
        self._received: list[Received] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def behaviour(self) -> Behaviour:
        return self._behaviour

    @behaviour.setter
    def behaviour(self, value: Behaviour) -> None:
        if value not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {value!r}; one of {', '.join(BEHAVIOURS)}")
        self._behaviour = value
        self._flaky_seen = 0  # "flaky" counts its failures from when it is set

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the receiver is not running: use it in a with block")
        return f"http://127.0.0.1:{self._server.server_address[1]}/webhooks"

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def events(self) -> list[dict[str, Any]]:
        """The parsed bodies of the requests answered with a 2xx, in arrival order."""
        return [json.loads(r.body) for r in self.received if r.status is not None and 200 <= r.status < 300]

    def ids(self) -> list[str]:
        return [event["id"] for event in self.events()]

    @staticmethod
    def down() -> str:
        """A URL nothing listens on (a port bound, then closed): connections to it are refused."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        return f"http://127.0.0.1:{port}/webhooks"

    def __enter__(self) -> Receiver:
        if self._server is not None:
            raise RuntimeError("the receiver is already running")
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", self.port), _Handler, self)
        # A short poll interval: shutdown() waits for the loop to notice.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="receiver", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()  # wakes the requests that sleep
        server.shutdown()  # no new connections
        thread.join()
        server.hang_up()  # and none left waiting for a request that never comes
        server.server_close()  # closes the socket and joins the request threads
        self._server = self._thread = None

    # -- one request (on its own thread) ------------------------------------------------------------------------------

    def _answer(self, headers: dict[str, str], signature: str | None, body: bytes) -> int | None:
        with self._lock:
            index = len(self._received)
            self._received.append(Received(self.clock.now(), headers, body, None))
            behaviour = self._behaviour
            if behaviour == "flaky":
                self._flaky_seen += 1
                behaviour = "error" if self._flaky_seen <= self.fail_first else "ok"
        status, error = self._decide(behaviour, signature, body)
        with self._lock:
            self._received[index] = replace(self._received[index], status=status, error=error)
        return status

    def _decide(self, behaviour: Behaviour, signature: str | None, body: bytes) -> tuple[int | None, str | None]:
        if behaviour == "fail":
            return 400, None
        if behaviour == "error":
            return 500, None
        if behaviour == "timeout":
            self._stopping.wait(self.delay or TIMEOUT_HOLD_S)
            return None, None
        if self.secrets:
            try:
                now = self.clock.now().timestamp()
                verify_signature(body, signature, self.secrets, self.tolerance, now=now)
            except SignatureVerificationError as refused:
                return 400, refused.reason
        if behaviour == "slow" and self._stopping.wait(self.delay):
            return None, None  # stopped while waiting: no answer
        return 200, None


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # never keeps the interpreter alive; __exit__ still joins them (block_on_close)

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], receiver: Receiver) -> None:
        self.receiver = receiver
        self.connections: set[socket.socket] = set()  # open ones, for hang_up
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def server_bind(self) -> None:  # HTTPServer's own also resolves the host's name (slow on some machines)
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def hang_up(self) -> None:
        with self.connections_lock:
            connections = list(self.connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)  # a read blocked on it returns at once


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        if self.server.receiver._stopping.is_set():  # a request cut short by __exit__: not one to record
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status = self.server.receiver._answer(dict(self.headers.items()), self.headers.get(SIGNATURE_HEADER), body)
        if status is None:
            self.close_connection = True
            return
        try:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok" if status < 300 else b"no")
        except ConnectionError:  # the client gave up waiting
            pass

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: a notebook shows ``received``, not an access log."""
