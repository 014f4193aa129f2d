"""SMTP backend over kept-open connections (reconnected when the server drops one).

Reusing the connection skips the TCP + EHLO (+ STARTTLS + AUTH) handshake per
message, which is most of the cost of a small marketing email. The password never
sits in nudge.toml: it is read from the environment (NUDGE_SMTP_PASSWORD by default).

SMTP 4xx replies and connection problems are transient (retried); 5xx replies are
permanent (the action goes dead with the server's reply recorded).
"""

from __future__ import annotations

import os
import smtplib
import ssl
import threading

from engine.delivery.channels import OutgoingEmail
from engine.delivery.context import PermanentDeliveryError, TransientDeliveryError


class SmtpChannel:
    """SMTP over kept-open connections: one by default, up to `connections` at once.

    With `connections` > 1 the channel is a pool (its `concurrency`): the dispatcher
    sends that many messages at once (engine.delivery.channels.parallel), each on an
    idle connection, a new one opened while fewer than `connections` exist.

    `pipelined` (one connection; `[delivery.email] pipelined`, on by default): the
    dispatcher sends through `pipeline()` (engine.delivery.channels.smtp_pipeline) on
    its own thread, reading each reply only when it needs it, so that the server works
    on one email while the next is built; with a server that offers PIPELINING, one
    exchange per email instead of four. Off, each email is sent by `send` and every
    reply waited for, as smtplib's sendmail does.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        starttls: bool = False,
        use_ssl: bool = False,
        user: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        connections: int = 1,
        pipelined: bool = True,
    ):
        self.host, self.port = host, port
        self.starttls, self.use_ssl = starttls, use_ssl
        self.user, self.password = user, password
        self.timeout = timeout
        self.concurrency = max(1, connections)
        self.pipelined = pipelined
        self._idle: list[smtplib.SMTP] = []
        self._lock = threading.Lock()
        self.connections_opened = 0

    @classmethod
    def from_config(cls, config) -> SmtpChannel:
        return cls(
            config.host,
            config.port,
            starttls=config.starttls,
            use_ssl=config.ssl,
            user=config.user,
            password=os.environ.get(config.password_env),
            timeout=config.timeout,
            connections=config.connections,
            pipelined=config.pipelined,
        )

    def connect(self) -> smtplib.SMTP:
        if self.use_ssl:
            connection: smtplib.SMTP = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=self._tls()
            )
        else:
            connection = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            if self.starttls:
                connection.starttls(context=self._tls())
        if self.user:
            connection.login(self.user, self.password or "")
        with self._lock:
            self.connections_opened += 1
        return connection

    def _tls(self) -> ssl.SSLContext:
        # Made only when asked for: loading the system's CA certificates takes ~10 ms.
        return ssl.create_default_context()

    def take_idle(self) -> smtplib.SMTP | None:
        """An idle connection, or None (the caller opens one). At most `concurrency`
        sends run at once (the dispatcher's slots), so at most that many exist."""
        with self._lock:
            return self._idle.pop() if self._idle else None

    def give_back(self, connection: smtplib.SMTP | None) -> None:
        if connection is not None:
            with self._lock:
                self._idle.append(connection)

    def pipeline(self):
        """New pipelined sends on one connection (engine.delivery.channels.smtp_pipeline)
        for the caller's thread: what the dispatcher uses when `pipelined`."""
        from engine.delivery.channels.smtp_pipeline import SmtpPipeline  # (imports this)

        return SmtpPipeline(self)

    def send(self, message: OutgoingEmail) -> None:
        connection = self.take_idle()
        try:
            # One reconnect: an idle connection may have been closed by the server.
            for attempt in (1, 2):
                try:
                    if connection is None:
                        connection = self.connect()
                    refused = _transmit(connection, message)
                except smtplib.SMTPServerDisconnected as exc:
                    connection = None
                    if attempt == 2:
                        raise TransientDeliveryError(
                            f"SMTP {self.host}:{self.port}: {exc}"
                        ) from exc
                    continue
                except smtplib.SMTPRecipientsRefused as exc:
                    connection = _reset(connection)
                    raise classify_reply(*next(iter(exc.recipients.values()))) from exc
                except smtplib.SMTPResponseException as exc:
                    connection = _reset(connection)
                    raise classify_reply(exc.smtp_code, exc.smtp_error) from exc
                except (OSError, smtplib.SMTPException) as exc:
                    quit_quietly(connection)
                    connection = None
                    raise TransientDeliveryError(f"SMTP {self.host}:{self.port}: {exc}") from exc
                if refused:  # some recipients refused, others accepted: one per message
                    raise classify_reply(*next(iter(refused.values())))
                return
        finally:
            self.give_back(connection)  # still usable (or None: dropped)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            quit_quietly(connection)


def _transmit(connection: smtplib.SMTP, message: OutgoingEmail) -> dict:
    """Send one message on `connection`; the recipients refused (as send_message)."""
    wire = getattr(message, "wire", None)
    if wire is None:
        return connection.send_message(message.message)
    # What send_message would do with it, without parsing and flattening it again.
    return connection.sendmail(wire.sender, list(wire.recipients), wire.data)


def _reset(connection: smtplib.SMTP | None) -> smtplib.SMTP | None:
    # After a refused transaction the connection stays usable once RSET.
    try:
        if connection is not None:
            connection.rset()
        return connection
    except (OSError, smtplib.SMTPException):
        quit_quietly(connection)
        return None


def quit_quietly(connection: smtplib.SMTP | None) -> None:
    if connection is not None:
        try:
            connection.quit()
        except (OSError, smtplib.SMTPException):
            pass


def classify_reply(code: int, reply: bytes | str) -> Exception:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    detail = f"SMTP {code} {text}"
    if 400 <= code < 500:
        return TransientDeliveryError(detail)
    return PermanentDeliveryError(detail)
