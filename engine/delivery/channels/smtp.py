"""SMTP backend over one kept-open connection (reconnected when the server drops it).

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

from engine.delivery.channels import OutgoingEmail
from engine.delivery.context import PermanentDeliveryError, TransientDeliveryError


class SmtpChannel:
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
    ):
        self.host, self.port = host, port
        self.starttls, self.use_ssl = starttls, use_ssl
        self.user, self.password = user, password
        self.timeout = timeout
        self._connection: smtplib.SMTP | None = None
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
        )

    def _connect(self) -> smtplib.SMTP:
        context = ssl.create_default_context()
        if self.use_ssl:
            connection: smtplib.SMTP = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=context
            )
        else:
            connection = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            if self.starttls:
                connection.starttls(context=context)
        if self.user:
            connection.login(self.user, self.password or "")
        self.connections_opened += 1
        return connection

    def send(self, message: OutgoingEmail) -> None:
        # One reconnect: a pooled connection may have been closed by the server while idle.
        for attempt in (1, 2):
            try:
                if self._connection is None:
                    self._connection = self._connect()
                refused = self._connection.send_message(message.message)
            except smtplib.SMTPServerDisconnected as exc:
                self._connection = None
                if attempt == 2:
                    raise TransientDeliveryError(f"SMTP {self.host}:{self.port}: {exc}") from exc
                continue
            except smtplib.SMTPRecipientsRefused as exc:
                self._reset()
                raise _classify(*next(iter(exc.recipients.values()))) from exc
            except smtplib.SMTPResponseException as exc:
                self._reset()
                raise _classify(exc.smtp_code, exc.smtp_error) from exc
            except (OSError, smtplib.SMTPException) as exc:
                self.close()
                raise TransientDeliveryError(f"SMTP {self.host}:{self.port}: {exc}") from exc
            if refused:  # some recipients refused, others accepted: one recipient per message
                raise _classify(*next(iter(refused.values())))
            return

    def _reset(self) -> None:
        # After a refused transaction the connection stays usable once RSET.
        try:
            if self._connection is not None:
                self._connection.rset()
        except (OSError, smtplib.SMTPException):
            self.close()

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.quit()
            except (OSError, smtplib.SMTPException):
                pass
            self._connection = None


def _classify(code: int, reply: bytes | str) -> Exception:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    detail = f"SMTP {code} {text}"
    if 400 <= code < 500:
        return TransientDeliveryError(detail)
    return PermanentDeliveryError(detail)
