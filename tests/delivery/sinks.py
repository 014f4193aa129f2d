"""Real local servers for delivery tests: an SMTP sink (aiosmtpd) and an HTTP sink.

Imported by name from tests/delivery (tests/ has no packages).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SmtpSink:
    """aiosmtpd on 127.0.0.1; refuses senders in `refuse` with 553 and recipients with 550.

    `on_message(number, message)` (1-based) runs in the server's thread once a message
    is accepted, before the client gets its 250: what it commits to the database has
    happened before the sender can go on to its next message.

    `pipelining`: the server offers PIPELINING (RFC 2920) in its EHLO reply, as
    Postfix and the big providers do; aiosmtpd reads pipelined commands correctly but
    does not offer it by itself. `drop_connections(reply)` closes every open
    connection from the server's side, as a server does with a connection idle too
    long (Postfix and Exim first say "421 ... timeout"). `mail_options` lists the
    parameters of each accepted MAIL FROM (SIZE=...), in order.
    """

    def __init__(
        self,
        refuse: set[str] | None = None,
        on_message: Callable[[int, object], None] | None = None,
        *,
        pipelining: bool = False,
    ):
        self.messages = []
        self.envelopes = []  # (MAIL FROM, RCPT TOs, the bytes received), in order
        self.mail_options = []
        self.refuse = refuse or set()
        self.on_message = on_message
        self.pipelining = pipelining
        self.sessions = set()
        self.servers = []  # aiosmtpd's SMTP protocol object of each connection
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        session.host_name = hostname
        self.servers.append(server)
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: N802
        if address in self.refuse:
            return "553 5.7.1 sender refused"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        self.mail_options.append(list(mail_options))
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.sessions.add(id(session))
        message = message_from_bytes(envelope.content, policy=policy.default)
        self.messages.append(message)
        self.envelopes.append(
            (envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        )
        if self.on_message is not None:
            self.on_message(len(self.messages), message)
        return "250 OK"

    def drop_connections(self, reply: str | None = None) -> None:
        done = threading.Event()

        def drop():
            for server in self.servers:
                if server.transport is not None:
                    if reply is not None:
                        server.transport.write(f"{reply}\r\n".encode())
                    server.transport.close()
            done.set()

        self.controller.loop.call_soon_threadsafe(drop)
        assert done.wait(10)

    def __enter__(self) -> SmtpSink:
        self.controller.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.controller.stop()


class HttpSink:
    """An idempotent webhook receiver: dedupes by `webhook-id` and counts duplicates.

    `fail_first` requests get 503; paths starting /reject get 400; when `hold_at` is
    set, the request with that number signals `reached` and waits for `release`
    (so a test can kill the sender while a request is in flight, without sleeping).

    With a `clock` (the test's injected clock), the sink checks `webhook-timestamp` as a
    Standard Webhooks receiver does: a timestamp more than `tolerance` away from the
    clock's now is refused with 400 (replay protection), and every request records
    `received_at`. `on_request(number, request)` (1-based) runs in the server's thread
    before the reply, so what it commits happens before the sender's next request.
    """

    def __init__(
        self,
        *,
        fail_first: int = 0,
        hold_at: int | None = None,
        clock: Callable[[], datetime] | None = None,
        tolerance: timedelta = timedelta(minutes=5),
        on_request: Callable[[int, dict], None] | None = None,
    ):
        self.on_request = on_request
        self.fail_first = fail_first
        self.hold_at = hold_at
        self.clock = clock
        self.tolerance = tolerance
        self.reached = threading.Event()
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.accepted: dict[str, dict] = {}
        self.duplicates = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["content-length"]))
                received_at = sink.clock() if sink.clock is not None else None
                with sink.lock:
                    number = len(sink.requests) + 1
                    sink.requests.append(
                        {
                            "path": self.path,
                            "headers": dict(self.headers),
                            "body": body,
                            "received_at": received_at,
                        }
                    )
                if sink.on_request is not None:
                    sink.on_request(number, sink.requests[number - 1])
                if number == sink.hold_at:
                    sink.reached.set()
                    sink.release.wait(timeout=60)
                if number <= sink.fail_first:
                    return self._reply(503, b"busy")
                if self.path.startswith("/reject"):
                    return self._reply(400, b'{"error": "unknown recipient"}')
                if received_at is not None:
                    sent = datetime.fromtimestamp(int(self.headers["webhook-timestamp"]), UTC)
                    if abs(received_at - sent) > sink.tolerance:
                        return self._reply(400, b'{"error": "message timestamp too old"}')
                key = self.headers["webhook-id"]
                with sink.lock:
                    if key in sink.accepted:
                        sink.duplicates += 1
                    else:
                        sink.accepted[key] = json.loads(body)
                self._reply(200, b"ok")

            def _reply(self, status, body):
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HttpSink:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
