"""The HTTP side: routes, a threaded server that stops at once, and the request handler.

The handler turns bytes into a :class:`~.state.Context`, applies the faults that replace a
response (resets, 429/5xx, broken bodies), asks :func:`.rules.handle` for the answer and writes it
with an exact ``Content-Length``; then it records the request in the state's log.
"""

from __future__ import annotations

import contextlib
import http.server
import re
import selectors
import socket
import socketserver
import struct
import sys
import threading
import time
import traceback
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from airflow_provider_reportruns.testing.simulator.errors import (
    ApiError,
    Response,
    error_response,
    fault_response,
)
from airflow_provider_reportruns.testing.simulator.faults import Fault
from airflow_provider_reportruns.testing.simulator.forms import FormError, decode_form
from airflow_provider_reportruns.testing.simulator.rules import handle
from airflow_provider_reportruns.testing.simulator.state import Context, SimulatorRequest, SimulatorState

__all__ = ["API_VERSION", "ROUTES", "Handler", "Server", "route"]

API_VERSION = "2023-08-16"

ROUTES = (
    ("POST", re.compile(r"/v1/reporting/report_runs/?"), "create"),
    ("GET", re.compile(r"/v1/reporting/report_runs/?"), "list"),
    ("GET", re.compile(r"/v1/reporting/report_runs/(?P<id>[^/]+)/?"), "retrieve"),
    ("GET", re.compile(r"/v1/reporting/report_types/?"), "report_types"),
    ("GET", re.compile(r"/v1/reporting/report_types/(?P<id>[^/]+)/?"), "report_type"),
    ("GET", re.compile(r"/v1/files/(?P<id>[^/]+)/contents/?"), "file_contents"),
    ("GET", re.compile(r"/v1/files/(?P<id>[^/]+)/?"), "file"),
)


def route(method: str, path: str) -> tuple[str, dict[str, str]]:
    """The request kind (one of ``REQUEST_KINDS``) and the ids in the path."""
    for m, pattern, kind in ROUTES:
        match = pattern.fullmatch(path)
        if match and m == method:
            return kind, match.groupdict()
    return "unknown", {}


class Server(http.server.ThreadingHTTPServer):
    """A threaded HTTP server that tracks its connections so ``stop()`` can drop idle ones."""

    daemon_threads = True
    allow_reuse_address = True
    # Hundreds of clients connect at once in benchmarks; the default backlog of 5 would turn
    # that burst into SYN retries of a second or more.
    request_queue_size = 1024
    state: SimulatorState

    def __init__(self, address: tuple[str, int], handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()

    def serve_until_woken(self) -> None:
        """Accept connections until :meth:`wake`.

        serve_forever() only notices shutdown() at its next poll, which made every stop() (one per
        test) cost up to a poll interval; a socketpair wakes the selector at once instead.
        """
        with selectors.DefaultSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = selector.select()
                if any(key.fileobj is self._wake_r for key, _ in ready):
                    return
                self.handle_request()

    def wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def server_close(self) -> None:
        super().server_close()
        self._wake_r.close()
        self._wake_w.close()

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def close_connections(self) -> None:
        # Idle keep-alive handlers would otherwise keep answering after stop().
        with self._connections_lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can stall for seconds on a
        # machine without DNS; the name is never used here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # clients going away mid-response are routine here
            return
        super().handle_error(request, client_address)


class Handler(http.server.BaseHTTPRequestHandler):
    """Answers one connection's requests (HTTP/1.1 keep-alive) from the shared state."""

    protocol_version = "HTTP/1.1"
    # Without it every keep-alive response waits ~40 ms on delayed ACK over loopback.
    disable_nagle_algorithm = True
    server_version = "stripe-simulator"
    sys_version = ""
    server: Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is sim.requests(); stderr noise would swamp benchmarks

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self, method: str) -> None:
        sim = self.server.state
        started, clock = sim.clock(), time.perf_counter()
        seq = sim.arrival()
        split = urlsplit(self.path)
        path = split.path
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        kind, args = route(method, path)
        query_pairs = parse_qsl(split.query, keep_blank_values=True)
        form_pairs: list[tuple[str, str]] = []
        if method == "POST" and body:
            form_pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        logged = {
            name: value
            for name in ("Idempotency-Key", "Stripe-Account", "Stripe-Version")
            if (value := self.headers.get(name)) is not None
        }
        ctx = Context(
            method=method,
            path=path,
            kind=kind,
            args=args,
            query_pairs=query_pairs,
            form_pairs=form_pairs,
            headers=self.headers,
            request_id=sim.next_request_id(),
            account=self.headers.get("Stripe-Account") or None,
        )
        fault = sim.pick_fault(kind)
        name = fault.fault if fault else None
        status: int | None = None
        try:
            status = self._respond(sim, ctx, fault)
        finally:
            try:
                form: dict[str, Any] = decode_form(form_pairs)
            except FormError:
                form = dict(form_pairs)
            sim.record(
                SimulatorRequest(
                    seq=seq,
                    kind=kind,
                    method=method,
                    path=path,
                    query=dict(query_pairs),
                    form=form,
                    form_pairs=tuple(form_pairs),
                    headers=logged,
                    authorization_present="Authorization" in self.headers,
                    status=status,
                    fault=name,
                    timestamp=started,
                    replayed=ctx.replayed,
                    request_id=ctx.request_id if status is not None else "",
                    duration=time.perf_counter() - clock,
                    run_id=ctx.run_id,
                    account=ctx.account,
                    client=f"{self.client_address[0]}:{self.client_address[1]}",
                )
            )

    def _respond(self, sim: SimulatorState, ctx: Context, fault: Fault | None) -> int | None:
        """Produce and send the response; returns the status sent, or None if none was."""
        name = fault.fault if fault else None
        if name == "reset":
            self._reset()
            return None
        pre_execution_5xx = name in ("500", "502", "503", "500_should_retry_false") and not (
            fault is not None and fault.stored and ctx.kind == "create" and "Idempotency-Key" in ctx.headers
        )
        if name is not None and (name.startswith("429") or pre_execution_5xx):
            response = fault_response(name, ctx.request_id)
        elif name == "bad_json":
            body = b"<html><head><title>502 Bad Gateway</title></head><body>Bad gateway</body></html>\n"
            response = Response(200, [("Content-Type", "text/html")], body)
        else:
            try:
                response = handle(sim, ctx, fault)
            except ApiError as exc:
                response = error_response(exc, ctx.request_id)
            except Exception:
                # A simulator bug: show it, but still answer like Stripe so the connection stays usable.
                traceback.print_exc()
                error = ApiError(500, "An unknown error occurred in the simulator.", type="api_error")
                response = error_response(error, ctx.request_id)
        if name == "lost_response":
            self.close_connection = True
            return None
        if name == "truncated_json" and response.stream is None:
            cut = min(len(response.body) - 1, max(1, int(len(response.body) * fault.fraction)))  # type: ignore[union-attr]
            response = Response(response.status, response.headers, response.body[: max(0, cut)])
        limit = None
        if name == "cut_download":
            limit = int(response.content_length * fault.fraction)  # type: ignore[union-attr]
            self.close_connection = True
        self._send(ctx, response, limit)
        return response.status

    def _reset(self) -> None:
        # SO_LINGER 0 makes close() send RST: the client sees a reset, not a clean end of stream.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            self.rfile.close()
        with contextlib.suppress(OSError):
            self.connection.close()
        self.close_connection = True

    def _send(self, ctx: Context, response: Response, limit: int | None) -> None:
        length = response.content_length
        lines = [f"HTTP/1.1 {response.status} {self.responses.get(response.status, ('',))[0]}"]
        headers = [
            ("Server", "stripe-simulator"),
            ("Date", formatdate(usegmt=True)),
            *response.headers,
            ("Content-Length", str(length)),
            ("Request-Id", ctx.request_id),
            ("Stripe-Version", ctx.headers.get("Stripe-Version") or API_VERSION),
            ("Cache-Control", "no-cache, no-store"),
            ("Connection", "close" if self.close_connection else "keep-alive"),
        ]
        lines.extend(f"{k}: {v}" for k, v in headers)
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            if response.stream is None:
                body = response.body if limit is None else response.body[:limit]
                self.wfile.write(head + body)  # one write: header and body in a single segment
            else:
                self.wfile.write(head)
                remaining = length if limit is None else limit
                for piece in response.stream():
                    if remaining <= 0:
                        break
                    view = memoryview(piece)
                    if len(view) > remaining:
                        view = view[:remaining]
                    self.wfile.write(view)
                    remaining -= len(view)
        except OSError:
            self.close_connection = True
